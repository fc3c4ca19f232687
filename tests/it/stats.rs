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

/// The names of the tensors in expected.json whose components satisfy `pred`.
fn torch_names(expected: &Json, pred: impl Fn(&str, &Json) -> bool) -> Vec<String> {
    let tensors = expected["tensors"].as_object().expect("tensors");
    tensors
        .iter()
        .filter(|(_, t)| {
            let dtype = t["dtype"].as_str().unwrap_or_default();
            ["values", "real", "imag"]
                .iter()
                .any(|k| t.get(*k).is_some_and(|c| pred(dtype, c)))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn findings_name_the_tensors_torch_finds() {
    let dir = fixtures_dir().join("stats");
    let expected: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"))
            .expect("JSON");
    let count = |c: &Json, k: &str| c[k].as_u64().unwrap_or(0);
    let castable = |dtype: &str| dtype != "float16" && dtype != "complex32";
    let ckpt = ckpt::open(dir.join("planted.pth")).expect("planted.pth");
    let stats = ckpt.stats().expect("stats");
    let f = stats.findings();
    assert_eq!(f.nan(), torch_names(&expected, |_, c| count(c, "nan") > 0));
    assert_eq!(
        f.inf(),
        torch_names(&expected, |_, c| count(c, "pos_inf") + count(c, "neg_inf") > 0)
    );
    let all_zero: Vec<String> = expected["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, t)| {
            let zeros = t.get("zeros").or(t["values"].get("zeros")).and_then(Json::as_u64);
            t["numel"].as_u64().unwrap_or(0) > 0 && zeros == t["numel"].as_u64()
        })
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(f.all_zero(), all_zero);
    assert_eq!(
        f.above_f16(),
        torch_names(&expected, |d, c| castable(d) && count(c, "above_f16") > 0)
    );
    assert_eq!(
        f.below_f16_normal(),
        torch_names(&expected, |d, c| castable(d) && count(c, "below_f16_normal") > 0)
    );
    let identical: Vec<Vec<String>> = serde_json::from_value(expected["identical"].clone()).expect("groups");
    assert_eq!(f.identical(), identical);
    assert!(
        !f.nan().is_empty() && !f.identical().is_empty(),
        "the fixture plants both"
    );
    // Stats of the whole file are those of each tensor alone.
    let t = ckpt.tensor("f32_planted").unwrap();
    assert_eq!(stats.get("f32_planted"), Some(&t.stats().unwrap()));
    assert_eq!(stats.tensors().len(), ckpt.len());
}

#[test]
fn tied_weights_are_not_reported_as_identical_copies() {
    // generate.py asserts emb.weight and head.weight share one storage in this file.
    let ckpt = ckpt::open(fixtures_dir().join("tied_state_dict.pth")).expect("tied_state_dict.pth");
    let stats = ckpt.stats().expect("stats");
    assert!(stats.get("emb.weight").is_some() && stats.get("head.weight").is_some());
    assert!(
        stats.findings().identical().is_empty(),
        "{:?}",
        stats.findings().identical()
    );
}

/// The tensor names of a `stats --json` report, in its order.
fn tensor_names(report: &Json) -> Vec<&str> {
    report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

fn ckpt_cmd() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("ckpt").expect("binary builds")
}

#[test]
fn cli_json_carries_the_numbers_and_findings_and_exits_0() {
    let path = fixtures_dir().join("stats/planted.pth");
    let out = ckpt_cmd().args(["stats", "--json"]).arg(&path).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Json = serde_json::from_slice(&out.stdout).expect("JSON");
    let ckpt = ckpt::open(&path).expect("planted.pth");
    let names = tensor_names(&report);
    assert_eq!(names, ckpt.tensors().map(|t| t.name()).collect::<Vec<_>>());
    let stats = ckpt.stats().unwrap();
    assert_eq!(
        report["findings"]["identical"],
        serde_json::json!(stats.findings().identical())
    );
    let f32p = &report["tensors"][0];
    assert_eq!(
        (f32p["name"].as_str(), f32p["values"]["nan"].as_u64()),
        (Some("f32_planted"), Some(1))
    );
    let i64x = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "i64_extremes")
        .unwrap();
    assert_eq!(i64x["int_min"].as_i64(), Some(i64::MIN));
}

#[test]
fn cli_filter_narrows_and_a_filter_matching_nothing_is_an_error() {
    let path = fixtures_dir().join("cnn_state_dict.pth");
    let out = ckpt_cmd()
        .args(["stats", "--json", "--filter", "fc3.*"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let report: Json = serde_json::from_slice(&out.stdout).expect("JSON");
    let names = tensor_names(&report);
    assert_eq!(names, ["fc3.weight", "fc3.bias"]);
    let out = ckpt_cmd()
        .args(["stats", "--filter", "nosuch.*"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
}

#[test]
fn cli_text_names_each_finding() {
    let out = ckpt_cmd()
        .arg("stats")
        .arg(fixtures_dir().join("stats/planted.pth"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "NaN",
        "inf",
        "all zero",
        "float16 overflow",
        "float16 underflow",
        "identical",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "no '{line}' line in:\n{text}"
        );
    }
    assert!(text.contains("f32_clean = f32_copy"));
}

#[test]
fn cli_unreadable_input_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pth");
    std::fs::write(&bad, b"PK\x03\x04 not really a zip").unwrap();
    let out = ckpt_cmd().arg("stats").arg(&bad).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.pth"));
}
