//! Distributed checkpoints: a fuzzed `.metadata` beside the real data files of the 2-rank
//! fixture, or its real `.metadata` beside one fuzzed data file; read, every tensor assembled
//! and hashed.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const METADATA: &[u8] = include_bytes!("../../fixtures/dcp/ws2/.metadata");
const RANK0: &[u8] = include_bytes!("../../fixtures/dcp/ws2/__0_0.distcp");
const RANK1: &[u8] = include_bytes!("../../fixtures/dcp/ws2/__1_0.distcp");

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Metadata(&'a [u8]),
    Data { rank1: bool, bytes: &'a [u8] },
}

fuzz_target!(|input: Input| {
    let (metadata, rank0, rank1) = match input {
        Input::Metadata(m) => (m, RANK0, RANK1),
        Input::Data { rank1: false, bytes } => (METADATA, bytes, RANK1),
        Input::Data { rank1: true, bytes } => (METADATA, RANK0, bytes),
    };
    let meta = common::write_input(".metadata", metadata);
    common::write_input("__0_0.distcp", rank0);
    common::write_input("__1_0.distcp", rank1);
    common::read_and_hash(&meta);
});
