//! The pickle machine on arbitrary bytes: never panics, never runs away (its Limits bound it).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ckpt::pickle::parse(data, &ckpt::pickle::Limits::default()) {
        // Walk everything the heap holds, as the decoder and the scanner do.
        for i in 0..p.heap.len() {
            let obj = p.heap.get(ckpt::pickle::ObjId(i as u32));
            std::hint::black_box(obj);
        }
        assert!(p.end <= data.len());
    }
});
