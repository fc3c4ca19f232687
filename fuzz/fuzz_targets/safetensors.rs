//! safetensors files: a raw file, or a fuzzed header JSON with a fuzzed data buffer.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Raw(&'a [u8]),
    Parts { header: &'a str, data: &'a [u8], lie: Option<u64> },
}

fuzz_target!(|input: Input| {
    let bytes = match input {
        Input::Raw(b) => b.to_vec(),
        Input::Parts { header, data, lie } => {
            let mut out = lie.unwrap_or(header.len() as u64).to_le_bytes().to_vec();
            out.extend(header.as_bytes());
            out.extend(data);
            out
        }
    };
    let path = common::write_input("model.safetensors", &bytes);
    common::read_and_hash(&path);
});
