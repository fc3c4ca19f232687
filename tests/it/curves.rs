//! `ckpt curves` against fixtures/curves/expected.json, which fixtures/gen_curves.py (the Python
//! reference of the curves spec) computed from what torch.load and json.load read back from real
//! training runs (plain PyTorch, a Hugging Face Trainer, Lightning) and synthetic histories.
//! ckpt runs in fixtures/curves/ on the relative path that keys each entry, as a user would.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::common::fixtures_dir;

fn curves_dir() -> PathBuf {
    fixtures_dir().join("curves")
}

fn reference() -> serde_json::Map<String, Json> {
    let path = curves_dir().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: Json = serde_json::from_str(&text).expect("expected.json is JSON");
    all["fixtures"].as_object().expect("a fixtures object").clone()
}

/// The reference's entry for `rel`; the Trainer and Lightning runs are there when transformers
/// and lightning (fixtures/requirements.txt) were installed as the fixtures were written.
fn entry(rel: &str) -> Json {
    reference().remove(rel).unwrap_or_else(|| {
        panic!("fixtures/curves/expected.json has no {rel}: regenerate with fixtures/requirements.txt")
    })
}

fn ckpt_in_fixtures() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("ckpt").expect("binary builds");
    cmd.current_dir(curves_dir()).arg("curves");
    cmd
}

/// `ckpt curves --json ARGS...` in fixtures/curves, which must exit 0.
fn report(args: &[&str]) -> Json {
    let out = ckpt_in_fixtures().arg("--json").args(args).output().expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Whether `got` names the same file as `want` (both relative to fixtures/curves).
fn same_path(got: &Json, want: &str) -> bool {
    let dir = curves_dir();
    let canon = |p: &str| std::fs::canonicalize(dir.join(p)).ok();
    got.as_str()
        .is_some_and(|g| canon(g).is_some() && canon(g) == canon(want))
}

fn f(v: &Json) -> Option<f64> {
    v.as_f64()
}

/// A y value: the reference writes NaN as null and infinities as "inf"/"-inf"; ckpt writes
/// every non-finite value as null.
fn same_y(got: &Json, want: &Json) -> bool {
    match (got, want) {
        (Json::Null, Json::Null | Json::String(_)) => true,
        (g, w) => match (g.as_f64(), w.as_f64()) {
            (Some(g), Some(w)) => (g - w).abs() <= 1e-12 * w.abs().max(1e-300),
            _ => false,
        },
    }
}

fn quantity_key(q: &str) -> String {
    q.to_lowercase()
        .split(['_', '.', '-', '/'])
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

fn compare_series(rel: &str, got: &Json, want: &Json, bad: &mut Vec<String>) {
    let got = got.as_array().expect("series is a list");
    let want = want.as_array().expect("series is a list");
    let names = |list: &[Json]| {
        let mut n: Vec<String> = list
            .iter()
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect();
        n.sort();
        n
    };
    if names(got) != names(want) {
        bad.push(format!("{rel}: series {:?}, reference {:?}", names(got), names(want)));
        return;
    }
    for w in want {
        let g = got.iter().find(|g| g["name"] == w["name"]).expect("same names");
        for key in ["split", "higher_better", "axis"] {
            if g[key] != w[key] {
                bad.push(format!(
                    "{rel}: {}.{key} ckpt {} reference {}",
                    w["name"], g[key], w[key]
                ));
            }
        }
        if quantity_key(g["quantity"].as_str().unwrap_or("")) != quantity_key(w["quantity"].as_str().unwrap_or("")) {
            bad.push(format!(
                "{rel}: {}.quantity ckpt {} reference {}",
                w["name"], g["quantity"], w["quantity"]
            ));
        }
        let xs = |s: &Json| {
            s["x"]
                .as_array()
                .map(|a| a.iter().map(f).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        if xs(g) != xs(w) {
            bad.push(format!("{rel}: {}.x ckpt {} reference {}", w["name"], g["x"], w["x"]));
            continue;
        }
        let (gy, wy) = (g["y"].as_array().expect("y"), w["y"].as_array().expect("y"));
        if gy.len() != wy.len() || !gy.iter().zip(wy).all(|(g, w)| same_y(g, w)) {
            bad.push(format!("{rel}: {}.y ckpt {} reference {}", w["name"], g["y"], w["y"]));
        }
    }
}

/// The reference's numbers behind the verdict (percentages rounded to 6 decimals) against
/// ckpt's (fractions).
fn compare_numbers(rel: &str, got: &Json, want: &Json, bad: &mut Vec<String>) {
    let numbers = &got["verdict_numbers"];
    let close = |g: Option<f64>, w: Option<f64>, scale: f64| match (g, w) {
        (Some(g), Some(w)) => (g * scale - w).abs() <= 1e-5 * w.abs().max(1.0),
        (None, None) => true,
        _ => false,
    };
    let check = |name: &str, g: Option<f64>, key: &str, scale: f64| {
        let w = f(&want[key]);
        (w.is_some() && !close(g, w, scale))
            .then(|| format!("{rel}: {name} ckpt {g:?} (x{scale}) reference {key} {w:?}"))
    };
    match want["verdict"].as_str() {
        Some("overfitting") => {
            bad.extend(check("worsening", f(&numbers["worsening"]), "worsening_pct", 100.0));
            check(
                "train_improvement",
                f(&numbers["train_improvement"]),
                "train_improvement_pct",
                100.0,
            );
            bad.extend(check("gap", f(&numbers["gap"]), "gap", 1.0));
        }
        Some("underfitting") => {
            bad.extend(check("gap", f(&numbers["gap"]), "gap", 1.0));
            let signs = &numbers["signs"];
            for (mine, theirs) in [("flat_train_drop", "flat"), ("still_improving", "still_improving")] {
                if let Some(w) = want[theirs].as_bool() {
                    if signs[mine].is_number() != w {
                        bad.push(format!("{rel}: {mine} ckpt {} reference {theirs} {w}", signs[mine]));
                    }
                }
            }
            if signs["flat_train_drop"].is_number() {
                bad.extend(check(
                    "flat_train_drop",
                    f(&signs["flat_train_drop"]),
                    "train_drop_pct",
                    100.0,
                ));
            }
            if signs["still_improving"].is_number() {
                check(
                    "still_improving",
                    f(&signs["still_improving"]),
                    "recent_gain_pct",
                    100.0,
                );
            }
        }
        Some("good-fit") => bad.extend(check("gap", f(&numbers["gap"]), "gap", 1.0)),
        _ => {}
    }
}

#[test]
fn every_fixture_agrees_with_the_python_reference() {
    let reference = reference();
    assert!(reference.len() >= 30, "{} fixtures", reference.len());
    let mut bad = Vec::new();
    for (rel, want) in &reference {
        let got = report(&[rel]);
        compare_series(rel, &got["series"], &want["series"], &mut bad);
        for key in ["source", "verdict"] {
            if got[key] != want[key] {
                bad.push(format!("{rel}: {key} ckpt {} reference {}", got[key], want[key]));
            }
        }
        for side in ["train", "val"] {
            if got["primary"][side] != want["primary"][side] {
                bad.push(format!(
                    "{rel}: primary.{side} ckpt {} reference {}",
                    got["primary"][side], want["primary"][side]
                ));
            }
        }
        if f(&got["best_x"]) != f(&want["best_x"]) {
            bad.push(format!(
                "{rel}: best_x ckpt {} reference {}",
                got["best_x"], want["best_x"]
            ));
        }
        for key in ["patience", "min_delta", "stop_x", "best_x"] {
            if f(&got["early_stop"][key]) != f(&want["early_stop"][key]) {
                bad.push(format!(
                    "{rel}: early_stop.{key} ckpt {} reference {}",
                    got["early_stop"][key], want["early_stop"][key]
                ));
            }
        }
        if f(&want["early_stop"]["stop_x"]).is_some() && got["early_stop"]["reason"] != want["early_stop_reason"] {
            bad.push(format!(
                "{rel}: early-stop reason ckpt {} reference {}",
                got["early_stop"]["reason"], want["early_stop_reason"]
            ));
        }
        match want["best_path"].as_str() {
            Some(w) if !same_path(&got["best_path"], w) => {
                bad.push(format!("{rel}: best_path ckpt {} reference {w}", got["best_path"]))
            }
            None if !got["best_path"].is_null() => {
                bad.push(format!("{rel}: best_path ckpt {} reference null", got["best_path"]))
            }
            _ => {}
        }
        if want["source"] == "hf-trainer" {
            for key in ["best_metric", "best_model_checkpoint"] {
                if got[key] != want[key] {
                    bad.push(format!(
                        "{rel}: {key} ckpt {} trainer_state.json {}",
                        got[key], want[key]
                    ));
                }
            }
            if !same_path(&got["state_file"], want["state_file"].as_str().unwrap_or("")) {
                bad.push(format!(
                    "{rel}: state_file ckpt {} reference {}",
                    got["state_file"], want["state_file"]
                ));
            }
        }
        if let Some(w) = want["history_file"].as_str() {
            if !same_path(&got["history_file"], w) {
                bad.push(format!(
                    "{rel}: history_file ckpt {} reference {w}",
                    got["history_file"]
                ));
            }
        }
        compare_numbers(rel, &got, &want["numbers"], &mut bad);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn best_prints_only_the_file_holding_the_best_point() {
    let reference = reference();
    let with_files: Vec<(&String, &str)> = reference
        .iter()
        .filter_map(|(rel, e)| Some((rel, e["best_path"].as_str()?)))
        .collect();
    assert!(with_files.len() >= 8, "{with_files:?}");
    for (rel, want) in with_files {
        let out = ckpt_in_fixtures().args(["--best", rel]).output().expect("runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        assert_eq!(text.lines().count(), 1, "{rel}: {text}");
        assert!(text.ends_with('\n'));
        assert!(
            same_path(&Json::String(text.trim_end().to_string()), want),
            "{rel}: {text} vs {want}"
        );
    }
}

#[test]
fn best_on_a_trainer_run_is_the_checkpoint_folder_of_the_best_step() {
    let want = &entry("hf_trainer");
    let best_step = f(&want["best_x"]).expect("a best step");
    let out = ckpt_in_fixtures()
        .args(["--best", "hf_trainer"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        same_path(
            &Json::String(text.trim_end().into()),
            &format!("hf_trainer/checkpoint-{best_step}")
        ),
        "{text}"
    );
}

#[test]
fn best_on_one_history_checkpoint_is_an_error_that_says_why() {
    let out = ckpt_in_fixtures()
        .args(["--best", "overfit.pth"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("overfit.pth") && err.contains("no per-epoch files"),
        "{err}"
    );
}

/// Lightning's EarlyStopping rule over `ys` (min mode): (stop index, best index), written here
/// from Lightning's documentation, independent of ckpt's code.
fn lightning_early_stop(
    ys: &[f64],
    patience: usize,
    min_delta: f64,
    higher_better: bool,
) -> (Option<usize>, Option<usize>) {
    let sign = if higher_better { -1.0 } else { 1.0 };
    let (mut best, mut best_i, mut wait) = (f64::INFINITY, None, 0);
    for (i, &y) in ys.iter().enumerate() {
        if !y.is_finite() {
            return (Some(i), best_i);
        }
        if sign * y + min_delta < best {
            (best, best_i, wait) = (sign * y, Some(i), 0);
        } else {
            wait += 1;
            if wait >= patience {
                return (Some(i), best_i);
            }
        }
    }
    (None, best_i)
}

fn reference_series<'a>(entry: &'a Json, name: &str) -> (&'a Json, Vec<f64>, Vec<f64>) {
    let s = entry["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .expect("a series of that name");
    let xs = s["x"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let ys = s["y"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    (s, xs, ys)
}

#[test]
fn patience_and_min_delta_move_the_early_stop() {
    let reference = reference();
    let cases: [(&str, &str, &[&str], usize, f64); 4] = [
        (
            "synthetic/ties_and_patience.pth",
            "val_loss",
            &["--patience", "1"],
            1,
            0.0,
        ),
        (
            "synthetic/ties_and_patience.pth",
            "val_loss",
            &["--patience", "5"],
            5,
            0.0,
        ),
        (
            "overfit.pth",
            "val_loss",
            &["--patience", "2", "--min-delta", "0.002"],
            2,
            0.002,
        ),
        (
            "synthetic/acc_only_overfit.pth",
            "val_acc",
            &["--min-delta", "0.02"],
            3,
            0.02,
        ),
    ];
    for (rel, val, options, patience, min_delta) in cases {
        let (s, xs, ys) = reference_series(&reference[rel], val);
        let (stop, best) = lightning_early_stop(&ys, patience, min_delta, s["higher_better"] == true);
        let got = report(&[options, &[rel]].concat());
        let es = &got["early_stop"];
        assert_eq!(f(&es["stop_x"]), stop.map(|i| xs[i]), "{rel} {options:?}: {es}");
        assert_eq!(f(&es["best_x"]), best.map(|i| xs[i]), "{rel} {options:?}: {es}");
        assert_eq!(f(&es["patience"]), Some(patience as f64));
        assert_eq!(f(&es["min_delta"]), Some(min_delta));
    }
}

#[test]
fn series_option_judges_the_named_pair() {
    let reference = reference();
    let got = report(&["--series", "train_acc,val_acc", "overfit.pth"]);
    assert_eq!(got["primary"]["train"], "train_acc");
    assert_eq!(got["primary"]["val"], "val_acc");
    // val_acc is higher-better: the best epoch is the reference's highest val_acc.
    let (_, xs, ys) = reference_series(&reference["overfit.pth"], "val_acc");
    let best = (0..ys.len()).fold(0, |b, i| if ys[i] > ys[b] { i } else { b });
    assert_eq!(f(&got["best_x"]), Some(xs[best]));

    let one = report(&["--series", ",history.val_loss", "underfit.pth"]);
    assert_eq!(one["primary"]["train"], Json::Null);
    assert_eq!(one["primary"]["val"], "history.val_loss");
}

fn error_of(args: &[&str]) -> String {
    let out = ckpt_in_fixtures().args(args).output().expect("runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn errors_exit_2_and_say_what_is_wrong() {
    // A state_dict holds no curve: the message says what was looked for.
    let err = error_of(&["../cnn_state_dict.pth"]);
    assert!(
        err.contains("cnn_state_dict.pth") && err.contains("no learning curves found") && err.contains("looked for"),
        "{err}"
    );
    let err = error_of(&["--series", "train_loss,val_f1", "overfit.pth"]);
    assert!(err.contains("val_f1") && err.contains("val_acc"), "{err}");
    let err = error_of(&["--series", "val_loss", "overfit.pth"]);
    assert!(err.contains("TRAIN,VAL"), "{err}");
    let err = error_of(&["--min-delta", "-0.1", "overfit.pth"]);
    assert!(err.contains("--min-delta"), "{err}");
    let err = error_of(&["--plot", "chart.jpg", "overfit.pth"]);
    assert!(err.contains("chart.jpg") && err.contains(".svg"), "{err}");
    let err = error_of(&["no_such_run.pth"]);
    assert!(err.contains("no_such_run.pth"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("epoch_1.pth");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    let err = error_of(&[garbage.to_str().unwrap(), "overfit.pth"]);
    assert!(err.contains("epoch_1.pth"), "{err}");
    std::fs::remove_file(&garbage).unwrap();
    let err = error_of(&[dir.path().to_str().unwrap()]);
    assert!(err.contains("trainer_state.json") && err.contains("*.pth"), "{err}");
}

#[test]
fn the_report_explains_the_series_the_verdict_and_the_advice() {
    let out = ckpt_in_fixtures().arg("overfit_series").output().expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let want = &entry("overfit_series");
    let best = f(&want["best_x"]).unwrap();
    let (_, xs, _) = reference_series(want, "val_loss");
    for needle in [
        format!("a series of {} checkpoints", xs.len()),
        "paired: train_loss ~ val_loss (loss)".to_string(),
        format!("verdict: overfitting: val_loss was lowest at epoch {best}"),
        "advice: stop early".to_string(),
        "dropout 0.3-0.5".to_string(),
        format!(
            "early stopping (patience 3, min_delta 0): stops at epoch {}",
            f(&want["early_stop"]["stop_x"]).unwrap()
        ),
        format!("best file: {}", want["best_path"].as_str().unwrap()),
        "○· train_loss".to_string(),
        "●• val_loss".to_string(),
        format!("┃ best {best}"),
    ] {
        assert!(text.contains(&needle), "no {needle:?} in\n{text}");
    }
}

/// Underfitting advice names the dropout modules above 0.5 when the run saved its whole model
/// (dropout_underfit.pth: torch.save({"model": model, ...}) with Dropout(p=0.8)), and keeps the
/// general rule when the file holds a state dict.
#[test]
fn underfitting_advice_points_at_the_models_dropout() {
    let want = entry("dropout_underfit.pth");
    assert_eq!(want["verdict"], "underfitting");
    let rates: Vec<f64> = want["dropout_p"]
        .as_array()
        .expect("dropout_p")
        .iter()
        .filter_map(f)
        .collect();
    assert!(
        rates.iter().any(|&p| p > 0.5),
        "the fixture's dropout is above 0.5: {rates:?}"
    );
    let got = report(&["dropout_underfit.pth"]);
    let held: Vec<f64> = got["dropout"]
        .as_array()
        .expect("a dropout list")
        .iter()
        .map(|d| f(&d["p"]).unwrap())
        .collect();
    assert_eq!(held, rates);
    let advice = got["advice"].as_str().unwrap();
    for d in got["dropout"].as_array().unwrap() {
        let named = format!("{} (p = {})", d["module"].as_str().unwrap(), f(&d["p"]).unwrap());
        assert!(advice.contains(&named), "{named} not in {advice}");
    }
    assert!(
        advice.contains("lower the dropout") && !advice.contains("if dropout p > 0.5"),
        "{advice}"
    );

    let state_dict = report(&["underfit.pth"]);
    assert_eq!(entry("underfit.pth")["verdict"], "underfitting");
    assert!(state_dict["dropout"].is_null());
    assert!(state_dict["advice"]
        .as_str()
        .unwrap()
        .contains("if dropout p > 0.5, lower it"));
}

/// A polyline's points, in pixels.
type Polyline = Vec<(f64, f64)>;

/// The points of a polyline's `points` attribute.
fn polyline_points(node: &roxmltree::Node) -> Polyline {
    node.attribute("points")
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|p| {
            let (x, y) = p.split_once(',')?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

#[test]
fn svg_plot_holds_both_curves_the_legend_and_the_markers() {
    let want = &entry("overfit.pth");
    let (_, xs, _) = reference_series(want, "val_loss");
    let best = f(&want["best_x"]).unwrap();
    let stop = f(&want["early_stop"]["stop_x"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("overfit.svg");
    let out = ckpt_in_fixtures()
        .args(["--plot", svg.to_str().unwrap(), "overfit.pth"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("plot: "));
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the SVG is XML");

    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect();
    for label in [
        "train_loss",
        "val_loss",
        &format!("best epoch {best}"),
        &format!("early stop (patience 3) {stop}"),
    ] {
        assert!(
            texts.iter().any(|t| t == label),
            "no legend text {label:?} in {texts:?}"
        );
    }
    assert!(
        texts.iter().any(|t| t == "epoch") && texts.iter().any(|t| t == "loss"),
        "axis titles"
    );

    let polylines: Vec<(Option<&str>, Polyline)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .map(|n| (n.attribute("stroke"), polyline_points(&n)))
        .collect();
    // Each curve is one polyline through all 30 epochs (no NaN in this run).
    let curves: Vec<&Polyline> = polylines
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.len() == xs.len())
        .collect();
    assert_eq!(curves.len(), 2, "two curves of {} points", xs.len());
    assert_ne!(
        polylines.iter().find(|(_, p)| p == curves[0]).unwrap().0,
        polylines.iter().find(|(_, p)| p == curves[1]).unwrap().0
    );
    // The markers are vertical lines at the pixel x of the best and the early-stop epoch.
    let column = |x: f64| curves[0][xs.iter().position(|&e| e == x).unwrap()].0;
    let vertical_at = |px: f64| {
        polylines
            .iter()
            .any(|(_, p)| p.len() >= 2 && p.iter().all(|q| (q.0 - px).abs() < 1.0) && p[0].1 != p[1].1)
    };
    assert!(vertical_at(column(best)), "no marker at the best epoch {best}");
    assert!(vertical_at(column(stop)), "no marker at the early-stop epoch {stop}");
}

#[test]
fn png_plot_decodes_and_shows_both_curves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lightning.png");
    let out = ckpt_in_fixtures()
        .args(["--plot", path.to_str().unwrap(), "hf_trainer"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
    let frame = reader.next_frame(&mut pixels).expect("PNG data");
    assert_eq!((frame.width, frame.height), (960, 540));
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    let count = |rgb: [u8; 3]| {
        pixels[..frame.buffer_size()]
            .chunks_exact(3)
            .filter(|p| *p == rgb)
            .count()
    };
    // The training curve, the validation curve and the best marker, in their colours.
    for (what, rgb) in [
        ("training", [31, 119, 180]),
        ("validation", [255, 127, 14]),
        ("best", [44, 160, 44]),
    ] {
        assert!(count(rgb) > 100, "{what}: {} pixels", count(rgb));
    }
    // Text was drawn with the embedded font: black pixels beyond the axes and frame.
    assert!(count([0, 0, 0]) > 2000, "{} black pixels", count([0, 0, 0]));
}

#[test]
fn plot_writes_nothing_else_and_leaves_the_inputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = curves_dir().join("underfit.pth");
    let before = std::fs::read(&input).unwrap();
    let svg = dir.path().join("u.svg");
    let out = ckpt_in_fixtures()
        .args(["--plot", svg.to_str().unwrap(), "underfit.pth"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(&input).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("u.svg")]);
    assert!(Path::new(&svg).is_file());
}

#[test]
fn damaged_and_hostile_inputs_end_in_errors_not_panics() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let read = |paths: &[PathBuf]| {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            ckpt::curves::read(paths).map(|run| run.series.len())
        }));
        assert!(outcome.is_ok(), "{paths:?} panicked");
    };
    // The committed hostile files (a regenerated CKPT_FIXTURES set has none).
    let hostile_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile");
    let mut hostile: Vec<PathBuf> = std::fs::read_dir(hostile_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    hostile.sort();
    for path in &hostile {
        read(std::slice::from_ref(path));
    }
    read(&hostile);

    // Truncations of a history checkpoint, a Lightning checkpoint and a Trainer state.
    let dir = tempfile::tempdir().unwrap();
    // The first Lightning file by name: a regenerated run may stop at another epoch.
    let mut lightning: Vec<PathBuf> = std::fs::read_dir(curves_dir().join("lightning"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    lightning.sort();
    for path in [
        curves_dir().join("overfit.pth"),
        lightning[0].clone(),
        curves_dir().join("hf_trainer/trainer_state.json"),
    ] {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap();
        for cut in [
            0,
            1,
            2,
            10,
            100,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() - 100,
            bytes.len() - 1,
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes[..cut.min(bytes.len())]).unwrap();
            read(&[path]);
        }
    }
}

#[test]
fn best_on_one_lightning_file_is_the_best_file_its_callback_names() {
    // The callback states the path the run had (under /tmp on the machine that trained); the
    // file of that name beside the one given is the moved run's.
    let want = &entry("lightning");
    let best = want["best_path"].as_str().expect("a best file");
    // The file of the last epoch the run saved.
    let (_, xs, _) = reference_series(want, "val_loss");
    let last = xs.last().copied().expect("points") as i64;
    let name = std::fs::read_dir(curves_dir().join("lightning"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with(&format!("epoch={last}-")))
        .expect("the last epoch's file");
    let newest = format!("lightning/{name}");
    let newest = newest.as_str();
    let out = ckpt_in_fixtures().args(["--best", newest]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        same_path(&Json::String(text.trim_end().into()), best),
        "{text} vs {best}"
    );
    let got = report(&[newest]);
    assert_eq!(got["verdict"], "too-short");
    assert_eq!(got["lightning"]["monitor"], "val_loss");
    assert_eq!(
        f(&got["lightning"]["best_model_score"]),
        f(&want["lightning"]["model_checkpoint"]["best_model_score"])
    );
    let es = &want["lightning"]["early_stopping"];
    for key in ["wait_count", "stopped_epoch", "patience"] {
        assert_eq!(f(&got["lightning"]["early_stopping"][key]), f(&es[key]), "{key}");
    }
}
