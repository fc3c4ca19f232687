//! PyTorch files: raw bytes as a .pth file (zip, legacy, anything), or a fuzzed data.pkl and
//! storages inside a well-formed torch zip so the decoder is reached.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Raw(&'a [u8]),
    Zip { pickle: &'a [u8], storages: Vec<Vec<u8>>, big_endian: bool, constants: bool },
}

fuzz_target!(|input: Input| {
    let bytes = match input {
        Input::Raw(b) => b.to_vec(),
        Input::Zip { pickle, storages, big_endian, constants } => {
            let extra: Vec<(String, Vec<u8>)> = if constants { vec![("constants.pkl".into(), b"\x80\x02).".to_vec())] } else { vec![] };
            common::torch_zip("archive", pickle, &storages, Some(if big_endian { b"big" } else { b"little" }), &extra)
        }
    };
    let path = common::write_input("model.pth", &bytes);
    common::read_and_hash(&path);
});
