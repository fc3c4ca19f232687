//! The scanner: any file (zip, tar, legacy, bare pickles), or a fuzzed pickle in a torch zip
//! next to extra members. It must never panic and never clear a file it could not read.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Raw(&'a [u8]),
    Zip { pickle: &'a [u8], extra: Vec<(String, Vec<u8>)> },
}

fuzz_target!(|input: Input| {
    let (name, bytes) = match input {
        Input::Raw(b) => ("x.pt", b.to_vec()),
        Input::Zip { pickle, extra } => ("x.pth", common::torch_zip("archive", pickle, &[], None, &extra)),
    };
    let path = common::write_input(name, &bytes);
    let limits = ckpt::read::ReadLimits::default();
    if let Ok(report) = ckpt::scan::scan_path(&path, &limits) {
        let _ = report.to_json();
        let _ = report.to_text(true);
        // Whatever the scanner clears, the pickle machine must read: a safe verdict never
        // comes from a pickle that failed to parse.
        if report.verdict == ckpt::scan::Verdict::Safe {
            assert!(report.pickles.iter().all(|p| p.error.is_none()), "{report:?}");
        }
    }
});
