//! `elem::convert` against PyTorch's own `tensor.to(dtype)` results, bit for bit
//! (fixtures/casts/casts.json, written by fixtures/casts/generate_casts.py with torch 2.11).

use ckpt::dtype::DType;
use ckpt::elem;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// The committed casts.json (not regenerated with the other fixtures: `CKPT_FIXTURES` does not
/// apply), or the file `CKPT_CASTS` names (written by generate_casts.py --out with another
/// PyTorch or on another CPU).
fn casts() -> Json {
    let path = match std::env::var_os("CKPT_CASTS") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/casts/casts.json"),
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("casts.json is JSON")
}

fn dtype(name: &str) -> DType {
    DType::parse(name).unwrap_or_else(|| panic!("unknown dtype {name}"))
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex")
}

fn le(bits: &[u64], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bits.len() * size);
    for b in bits {
        out.extend_from_slice(&b.to_le_bytes()[..size]);
    }
    out
}

fn from_le(bytes: &[u8], size: usize) -> Vec<u64> {
    bytes
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect()
}

/// The input families of generate_casts.py (`family`), as bit patterns.
fn family(name: &str) -> Vec<u64> {
    const M32: u64 = (1 << 32) - 1;
    match name {
        "all8" => (0..256).collect(),
        "all16" => (0..65536).collect(),
        "f32_hash" => (0..1u64 << 20).map(|i| i.wrapping_mul(0x9E37_79B1) & M32).collect(),
        "f32_f16_round" => (0..1u64 << 19)
            .flat_map(|hi| [0x0FFF, 0x1000, 0x1001].map(|lo| (hi << 13) | lo))
            .collect(),
        "f32_bf16_round" => (0..1u64 << 16)
            .flat_map(|hi| [0x0001, 0x7FFF, 0x8000, 0x8001].map(|lo| (hi << 16) | lo))
            .collect(),
        "f64_hash" => (0..1u64 << 18).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect(),
        "f64_round" => {
            let mut out = Vec::new();
            for j in 0..1u64 << 15 {
                let h = (j * 0x9E37_79B1) & M32;
                let sign = h >> 31;
                let mut exp = 1023 - 30 + ((h >> 23) & 0x3F);
                if j % 64 == 0 {
                    exp = 1023 + 127 - 1 + ((h >> 23) & 3);
                }
                if j % 64 == 1 {
                    exp = 1023 - 149 - 2 + ((h >> 23) & 7);
                }
                for upper in [h & 0x7F_FFFF, (h & 0x7F_E000) | 0x1000, (h & 0x7F_0000) | 0x8000] {
                    for lo in [0, 1, 1 << 28, (1 << 28) - 1, (1 << 28) + 1, 0x1FFF_FFFF] {
                        out.push((sign << 63) | (exp << 52) | (upper << 29) | lo);
                    }
                }
            }
            out
        }
        other => panic!("unknown family {other}"),
    }
}

fn convert(from: DType, to: DType, src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // In uneven pieces, as a writer streams: the result must not depend on chunking.
    for piece in src.chunks(from.size() * 4099) {
        elem::convert(from, to, piece, &mut out);
    }
    out
}

#[test]
fn specials_match_pytorch_bit_for_bit() {
    let casts = casts();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (src, entry) in casts["specials"].as_object().expect("specials") {
        let from = dtype(src);
        let inputs: Vec<u64> = entry["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| hex(v.as_str().unwrap()))
            .collect();
        let bytes = le(&inputs, from.size());
        for (dst, want) in entry["to"].as_object().unwrap() {
            let to = dtype(dst);
            let Some(want) = want.as_array() else { continue };
            let got = from_le(&convert(from, to, &bytes), to.size());
            for (i, w) in want.iter().enumerate() {
                let w = hex(w.as_str().unwrap());
                checked += 1;
                if got[i] != w {
                    failures.push(format!(
                        "{src} {:#x} -> {dst}: got {:#x}, PyTorch {w:#x}",
                        inputs[i], got[i]
                    ));
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} special conversions");
    assert!(
        failures.is_empty(),
        "{} of {checked} differ from PyTorch:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn sweeps_match_pytorch_bit_for_bit() {
    let casts = casts();
    let mut failures = Vec::new();
    let mut pairs = 0;
    let mut elements = 0u64;
    let mut inputs: std::collections::HashMap<(String, DType), (usize, Vec<u8>)> = Default::default();
    for sweep in casts["sweeps"].as_array().expect("sweeps") {
        let (from, to) = (
            dtype(sweep["from"].as_str().unwrap()),
            dtype(sweep["to"].as_str().unwrap()),
        );
        let fam = sweep["family"].as_str().unwrap();
        let (count, input) = inputs.entry((fam.to_string(), from)).or_insert_with(|| {
            let bits = family(fam);
            (bits.len(), le(&bits, from.size()))
        });
        assert_eq!(
            *count as u64,
            sweep["count"].as_u64().unwrap(),
            "family {fam} differs from generate_casts.py"
        );
        let count = *count;
        let out = convert(from, to, input);
        let got: String = Sha256::digest(&out).iter().map(|b| format!("{b:02x}")).collect();
        pairs += 1;
        elements += count as u64;
        if got != sweep["sha256"].as_str().unwrap() {
            failures.push(format!("{from} -> {to} over {fam} ({count} values)"));
        }
    }
    assert!(pairs >= 90, "only {pairs} sweeps");
    assert!(
        failures.is_empty(),
        "{} of {pairs} sweeps ({elements} conversions) differ from PyTorch:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_recorded_pytorch_inconsistencies_are_the_known_ones() {
    // PyTorch's scalar tail path gives other NaN bits than its vector blocks for two pairs;
    // ckpt follows the blocks. Fail loudly if a regenerated casts.json shows more.
    let casts = casts();
    let mut pairs: Vec<(String, String)> = casts["tail_differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["from"].as_str().unwrap().to_string(),
                d["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    let known = [("float16", "float32"), ("float64", "bfloat16")];
    for (f, t) in &pairs {
        assert!(
            known.contains(&(f.as_str(), t.as_str())),
            "new tail difference {f} -> {t}"
        );
    }
    for d in casts["tail_differences"]
        .as_array()
        .unwrap()
        .iter()
        .chain(casts["path_differences"].as_array().unwrap())
    {
        // Only NaNs differ between paths.
        let key = if d.get("input_block_tail").is_some() {
            "input_block_tail"
        } else {
            "input_contiguous_strided"
        };
        for row in d[key].as_array().unwrap() {
            let from = dtype(d["from"].as_str().unwrap());
            let input = hex(row[0].as_str().unwrap());
            let v = elem::decode_f64(from, &input.to_le_bytes()[..from.size()]);
            assert!(v.is_nan(), "{} {input:#x}: paths differ on a non-NaN", d["from"]);
        }
    }
}
