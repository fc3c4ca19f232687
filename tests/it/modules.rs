//! `ckpt inspect --modules` and the dropout line on fixtures/modules (fixtures/gen_modules.py):
//! whole models saved by torch.save (zip, legacy) and TorchScript (scripted, traced). Every
//! expected module, class, attribute, repeat and dropout rate in modules/expected.json was read
//! by Python from the live model, never from ckpt.

use std::collections::HashSet;

use serde_json::Value as Json;

use crate::common::fixtures_dir;

fn expected() -> Json {
    let path = fixtures_dir().join("modules/expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("modules/expected.json")).expect("JSON")
}

/// (file name, what Python found in it) for every fixture.
fn fixtures() -> Vec<(String, Json)> {
    let want = expected();
    let list: Vec<(String, Json)> = want["fixtures"]
        .as_object()
        .expect("fixtures")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(list.len() >= 4, "zip, legacy, scripted and traced fixtures");
    list
}

fn ckpt_cmd() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("ckpt").expect("binary builds")
}

fn path(name: &str) -> String {
    fixtures_dir().join("modules").join(name).display().to_string()
}

fn inspect_json(args: &[&str]) -> Json {
    let out = ckpt_cmd().arg("inspect").args(args).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn inspect_text(args: &[&str]) -> String {
    let out = ckpt_cmd().arg("inspect").args(args).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn array(v: &Json) -> &Vec<Json> {
    v.as_array().expect("an array")
}

#[test]
fn every_module_of_every_fixture_has_the_class_and_attributes_python_saw() {
    for (name, want) in fixtures() {
        let got = inspect_json(&["--modules", "--json", &path(&name)]);
        assert_eq!(got["format"], want["format"], "{name}");
        let (got, want) = (array(&got["modules"]), array(&want["modules"]));
        let paths = |list: &[Json]| {
            list.iter()
                .map(|m| m["path"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(got), paths(want), "{name}: modules in named_modules() order");
        for (g, w) in got.iter().zip(want) {
            let at = format!("{name} '{}'", w["path"]);
            assert_eq!(g["class"], w["class"], "{at}");
            assert_eq!(g["depth"], w["depth"], "{at}");
            assert_eq!(g.get("torch_class"), w.get("torch_class"), "{at}");
            assert_eq!(g["attributes"], w["attributes"], "{at}");
        }
    }
}

#[test]
fn the_library_reads_the_same_modules_and_dropout_rates() {
    for (name, want) in fixtures() {
        let ckpt = ckpt::open(fixtures_dir().join("modules").join(&name)).expect(&name);
        let classes: Vec<(&str, &str)> = ckpt
            .modules
            .iter()
            .map(|m| (m.path.as_str(), m.class.as_str()))
            .collect();
        let want_classes: Vec<(&str, &str)> = array(&want["modules"])
            .iter()
            .map(|m| (m["path"].as_str().unwrap(), m["class"].as_str().unwrap()))
            .collect();
        assert_eq!(classes, want_classes, "{name}");
        let training: Vec<Option<bool>> = ckpt
            .modules
            .iter()
            .map(|m| {
                m.attributes
                    .iter()
                    .find(|(n, _)| n == "training")
                    .and_then(|(_, v)| match v {
                        ckpt::model::Node::Bool(b) => Some(*b),
                        _ => None,
                    })
            })
            .collect();
        let want_training: Vec<Option<bool>> = array(&want["modules"])
            .iter()
            .map(|m| m["attributes"]["training"].as_bool())
            .collect();
        assert_eq!(training, want_training, "{name}: the training flags");

        let rates = ckpt::architecture::dropout_rates(&ckpt);
        let want_rates = array(&want["dropout"]);
        assert_eq!(rates.len(), want_rates.len(), "{name}: {rates:?}");
        for (got, w) in rates.iter().zip(want_rates) {
            assert_eq!(got.module, w["module"].as_str().unwrap(), "{name}");
            assert_eq!(got.class, w["class"].as_str().unwrap(), "{name}");
            assert_eq!(got.p, w["p"].as_f64(), "{name} {}", got.module);
        }
    }
}

#[test]
fn some_fixture_holds_each_kind_of_thing_the_tests_rely_on() {
    let all = fixtures();
    let zoo = &all.iter().find(|(n, _)| n == "zoo.pth").expect("zoo.pth").1;
    let rates: Vec<f64> = array(&zoo["dropout"]).iter().filter_map(|d| d["p"].as_f64()).collect();
    assert!(rates.iter().any(|&p| p > 0.5), "a rate above 0.5: {rates:?}");
    assert!(array(&zoo["dropout"]).iter().any(|d| d["kind"] == "between_layers"));
    let training: HashSet<bool> = array(&zoo["modules"])
        .iter()
        .map(|m| m["attributes"]["training"].as_bool().unwrap())
        .collect();
    assert_eq!(training.len(), 2, "zoo.pth mixes training and eval modules");
    assert!(array(&zoo["repeats"]).iter().any(|r| r["count"] == 6));
    let traced = &all
        .iter()
        .find(|(n, _)| n == "small_traced.pt")
        .expect("small_traced.pt")
        .1;
    assert!(array(&traced["dropout"]).iter().all(|d| d["p"].is_null()));
}

#[test]
fn identical_blocks_are_the_runs_python_found() {
    for (name, want) in fixtures() {
        let got = inspect_json(&["--modules", "--json", &path(&name)]);
        assert_eq!(got["repeats"], want["repeats"], "{name}");
        // The text shows each run on one line: `0..5 ×6`, the block's inside once.
        let text = inspect_text(&["--modules", &path(&name)]);
        for r in array(&want["repeats"]) {
            let last = |p: &Json| p.as_str().unwrap().rsplit('.').next().unwrap().to_string();
            let line = format!("{}..{} ×{}", last(&r["first"]), last(&r["last"]), r["count"]);
            assert!(text.contains(&line), "{name}: no '{line}' in\n{text}");
        }
        assert_eq!(text_module_lines(&text), shown_lines(&want, None), "{name}:\n{text}");
    }
}

/// The module lines of `inspect --modules` text: those after the `modules` line.
fn text_module_lines(text: &str) -> usize {
    let after = text.split("\nmodules   ").nth(1).expect("a modules section");
    after.lines().skip(1).filter(|l| !l.trim().is_empty()).count()
}

/// How many lines the tree shows down to `depth`: every module but the second and later
/// members of a run of identical blocks, and everything inside them.
fn shown_lines(want: &Json, depth: Option<u64>) -> usize {
    let mut hidden: Vec<String> = Vec::new();
    for r in array(&want["repeats"]) {
        let parent = r["parent"].as_str().unwrap();
        let first: u64 = r["first"]
            .as_str()
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for i in first + 1..first + r["count"].as_u64().unwrap() {
            hidden.push(if parent.is_empty() {
                i.to_string()
            } else {
                format!("{parent}.{i}")
            });
        }
    }
    array(&want["modules"])
        .iter()
        .filter(|m| depth.is_none_or(|d| m["depth"].as_u64().unwrap() <= d))
        .filter(|m| {
            let p = m["path"].as_str().unwrap();
            !hidden.iter().any(|h| p == h || p.starts_with(&format!("{h}.")))
        })
        .count()
}

#[test]
fn depth_limits_the_json_and_the_text() {
    for (name, want) in fixtures() {
        let deepest = array(&want["modules"])
            .iter()
            .map(|m| m["depth"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(deepest >= 2, "{name}: nested modules");
        for depth in 0..=deepest {
            let d = depth.to_string();
            let got = inspect_json(&["--modules", "--json", "--depth", &d, &path(&name)]);
            let paths: Vec<&Json> = array(&got["modules"]).iter().map(|m| &m["path"]).collect();
            let want_paths: Vec<&Json> = array(&want["modules"])
                .iter()
                .filter(|m| m["depth"].as_u64().unwrap() <= depth)
                .map(|m| &m["path"])
                .collect();
            assert_eq!(paths, want_paths, "{name} --depth {depth}");
            let text = inspect_text(&["--modules", "--depth", &d, &path(&name)]);
            assert_eq!(
                text_module_lines(&text),
                shown_lines(&want, Some(depth)),
                "{name} --depth {depth}:\n{text}"
            );
        }
    }
}

#[test]
fn the_dropout_line_and_json_say_the_rates_python_saw() {
    for (name, want) in fixtures() {
        let text = inspect_text(&[&path(&name)]);
        let line = format!("dropout   {}\n", want["dropout_line"].as_str().unwrap());
        assert!(text.contains(&line), "{name}: no '{line}' in\n{text}");
        let got = inspect_json(&["--json", &path(&name)]);
        let got = array(&got["dropout"]);
        let want = array(&want["dropout"]);
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(want) {
            for key in ["module", "class", "p", "kind"] {
                assert_eq!(g[key], w[key], "{name} {key}");
            }
        }
    }
}

#[test]
fn a_file_of_tensors_has_no_dropout_line_and_refuses_modules() {
    let dir = fixtures_dir();
    for rel in ["cnn_state_dict.pth", "model.safetensors"] {
        let file = dir.join(rel).display().to_string();
        let text = inspect_text(&[&file]);
        assert!(!text.contains("\ndropout"), "{rel}: a state dict cannot say\n{text}");
        assert_eq!(inspect_json(&["--json", &file])["dropout"], Json::Null, "{rel}");
        let out = ckpt_cmd().args(["inspect", "--modules", &file]).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{rel}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(rel) && err.contains("holds tensors only"), "{rel}: {err}");
    }
}

#[test]
fn depth_without_a_tree_is_an_error_and_limits_the_tensor_tree() {
    let file = fixtures_dir().join("tied_model.pth").display().to_string();
    let out = ckpt_cmd()
        .args(["inspect", "--depth", "1", &file])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--depth"));
    // tied_model: emb, blocks, head and two root tensors below "(all)"; nothing deeper.
    let text = inspect_text(&["--tree", "--depth", "1", &file]);
    let tree: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("(all)")).collect();
    assert!(tree.iter().all(|l| !l.starts_with("    ")), "{text}");
    let full = inspect_text(&["--tree", &file]);
    assert!(full.lines().any(|l| l.starts_with("    ")), "the full tree is deeper");
    for module in ["emb", "blocks", "head"] {
        assert!(
            tree.iter().any(|l| l.starts_with(&format!("  {module}  "))),
            "{module}: {text}"
        );
    }
}

#[test]
fn the_tensor_tree_names_each_module_class() {
    for (name, want) in fixtures() {
        let text = inspect_text(&["--tree", &path(&name)]);
        let tree: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("(all)")).collect();
        let tensors = inspect_json(&["--json", &path(&name)]);
        let names: Vec<&str> = array(&tensors["tensors"])
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let mut checked = 0;
        for m in array(&want["modules"]) {
            let module = m["path"].as_str().unwrap();
            let holds_tensors = names
                .iter()
                .any(|n| module.is_empty() || n.starts_with(&format!("{module}.")));
            if !holds_tensors {
                continue; // the tensor tree has no line for a module without tensors
            }
            let class = m["class"].as_str().unwrap().rsplit('.').next().unwrap();
            let (indent, label) = match module {
                "" => (String::new(), "(all)".to_string()),
                p => (
                    "  ".repeat(p.split('.').count()),
                    p.rsplit('.').next().unwrap().to_string(),
                ),
            };
            let head = format!("{indent}{label}  ");
            assert!(
                tree.iter()
                    .any(|l| l.starts_with(&head) && l.ends_with(&format!("  {class}"))),
                "{name}: no line '{head}... {class}' in\n{text}"
            );
            checked += 1;
        }
        assert!(checked >= 10, "{name}: {checked} modules checked");
    }
}
