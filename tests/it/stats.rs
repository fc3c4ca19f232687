//! `TensorRef::stats` against the numbers torch computes for fixtures/stats (generate.py's
//! `stats_fixtures`): counts and extremes exactly, moments within stated tolerances.

use serde_json::Value as Json;

use crate::common::fixtures_dir;

/// Relative tolerances against torch's float64 results. The mean and the norm agree to a few
/// ulps; std loses what the data's own condition number costs (f32_clean: mean 1e4, std 1e-3,
/// so ~1e-7 relative conditioning times f64's 1e-16), far below any use of the figure.
const MEAN_RTOL: f64 = 1e-12;
const NORM_RTOL: f64 = 1e-12;
const STD_RTOL: f64 = 1e-8;

fn close(got: Option<f64>, want: &Json, rtol: f64) -> bool {
    match (got, want.as_f64()) {
        (None, None) => true,
        (Some(g), Some(w)) => (g - w).abs() <= rtol * w.abs().max(g.abs()) || g == w,
        _ => false,
    }
}

fn check_component(name: &str, m: &ckpt::stats::Moments, want: &Json) -> Vec<String> {
    let mut bad = Vec::new();
    let counts = [
        ("count", m.count()),
        ("nan", m.nan()),
        ("pos_inf", m.pos_inf()),
        ("neg_inf", m.neg_inf()),
        ("zeros", m.zeros()),
        ("finite", m.finite()),
    ];
    let float_counts = [
        ("subnormal", m.subnormal()),
        ("above_f16", m.above_f16()),
        ("below_f16_normal", m.below_f16_normal()),
    ];
    for (key, got) in counts
        .iter()
        .chain(want.get("subnormal").map_or(&[][..], |_| &float_counts[..]))
    {
        if want[key].as_u64() != Some(*got) {
            bad.push(format!("{name}: {key} {got}, torch {}", want[key]));
        }
    }
    let exact = [("min", m.min()), ("max", m.max()), ("absmax", m.absmax())];
    for (key, got) in exact {
        if got != want[key].as_f64() && !(got.is_none() && want.get(key).is_none()) {
            bad.push(format!("{name}: {key} {got:?}, torch {}", want[key]));
        }
    }
    let want_norm = want.get("norm").cloned().unwrap_or(Json::from(0.0));
    let moments = [
        ("mean", m.mean(), &want["mean"], MEAN_RTOL),
        ("std", m.std(1), &want["std"], STD_RTOL),
        ("norm", Some(m.norm()), &want_norm, NORM_RTOL),
    ];
    for (key, got, w, rtol) in moments {
        if !close(got, w, rtol) {
            bad.push(format!("{name}: {key} {got:?}, torch {w}"));
        }
    }
    bad
}

fn check_file(file: &str, skip: &[&str]) {
    let dir = fixtures_dir().join("stats");
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("stats/expected.json");
    let expected: Json = serde_json::from_str(&text).expect("JSON");
    let ckpt = ckpt::open(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut bad = Vec::new();
    let mut seen = 0;
    for (name, want) in expected["tensors"].as_object().expect("tensors") {
        if skip.contains(&name.as_str()) {
            continue;
        }
        let t = ckpt.tensor(name).unwrap_or_else(|| panic!("{file}: no tensor {name}"));
        let s = t.stats().unwrap_or_else(|e| panic!("{file}: {name}: {e}"));
        seen += 1;
        assert_eq!(s.dtype().name(), want["dtype"], "{name}");
        if let Some(imag) = want.get("imag") {
            bad.extend(check_component(&format!("{name}.real"), s.values(), &want["real"]));
            bad.extend(check_component(
                &format!("{name}.imag"),
                s.imag().expect("complex"),
                imag,
            ));
            if want["zeros"].as_u64() != Some(s.zeros()) {
                bad.push(format!("{name}: zeros {}, torch {}", s.zeros(), want["zeros"]));
            }
        } else {
            bad.extend(check_component(name, s.values(), &want["values"]));
        }
        let ints = (s.int_min(), s.int_max());
        let want_ints = (
            want["int_min"].as_i64().map(i128::from),
            want["int_max"].as_i64().map(i128::from),
        );
        if ints != want_ints {
            bad.push(format!("{name}: integer range {ints:?}, torch {want_ints:?}"));
        }
        if s.true_count() != want["true_count"].as_u64() {
            bad.push(format!(
                "{name}: true count {:?}, torch {}",
                s.true_count(),
                want["true_count"]
            ));
        }
    }
    assert!(seen >= 15, "{file}: only {seen} tensors compared");
    assert!(bad.is_empty(), "{file} disagrees with torch:\n{}", bad.join("\n"));
}

#[test]
fn tensor_stats_agree_with_torch() {
    check_file("planted.pth", &[]);
}

#[test]
fn safetensors_twin_gives_the_same_stats() {
    // safetensors has no views; the twin holds every tensor but the strided one.
    check_file("planted.safetensors", &["f32_view"]);
}
