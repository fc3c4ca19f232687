//! `ckpt::scan`: verdicts on real PyTorch files, on the hostile fixtures
//! (fixtures/hostile/generate.py -> expected.json), and on hand-written pickles for each rule.

use std::path::PathBuf;

use ckpt::pickle::{Global, GlobalUse, Usage};
use ckpt::read::ReadLimits;
use ckpt::scan::{self, ScanReport, Verdict};

use crate::common::fixtures_dir;

fn hostile_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("hostile")
}

fn scan_bytes(name: &str, bytes: &[u8]) -> Result<ScanReport, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    scan::scan_path(&path, &ReadLimits::default()).map_err(|e| e.to_string())
}

/// Every name a report mentions: globals of findings and their messages.
fn mentions(r: &ScanReport) -> String {
    r.findings
        .iter()
        .map(|f| format!("{} {}", f.global.clone().unwrap_or_default(), f.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn hostile_fixtures_get_their_expected_verdicts() {
    let text = std::fs::read_to_string(hostile_dir().join("expected.json")).expect("hostile/expected.json");
    let expected: serde_json::Value = serde_json::from_str(&text).expect("json");
    let files = expected["files"].as_object().expect("files");
    assert!(files.len() >= 25, "only {} hostile fixtures", files.len());
    let mut failures = Vec::new();
    for (name, want) in files {
        let path = hostile_dir().join(name);
        let report = match scan::scan_path(&path, &ReadLimits::default()) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: scan failed: {e}"));
                continue;
            }
        };
        if report.verdict.name() != want["verdict"] {
            failures.push(format!(
                "{name}: verdict {} != {}\n{}",
                report.verdict,
                want["verdict"],
                report.to_text(true)
            ));
        }
        if report.format != want["format"] {
            failures.push(format!("{name}: format {} != {}", report.format, want["format"]));
        }
        let said = mentions(&report);
        for m in want["mentions"].as_array().expect("mentions") {
            let m = m.as_str().expect("str");
            if !said.contains(m) {
                failures.push(format!("{name}: findings do not mention {m}:\n{said}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn real_fixtures_are_never_dangerous() {
    let needs_code = [
        "cnn_model.pth",
        "tied_model.pth",
        "legacy_model.pth",
        "torchscript_cnn.pt",
        "torch_objects_model.pth",
        // Whole models and TorchScript archives for `inspect --modules` (fixtures/gen_modules.py).
        "modules/zoo.pth",
        "modules/zoo_scripted.pt",
        "modules/small_legacy.pth",
        "modules/small_traced.pt",
        // A training run saved with its whole model (the Dropout the curves advice points at).
        "curves/dropout_underfit.pth",
        // torch.load(weights_only=True) admits DTensor's classes only once torch.distributed.tensor
        // is imported (it registers them with add_safe_globals); the policy does not know them yet.
        "dtensor.pth",
        "dtensor_state_dict.pth",
        "dtensor_keep_vars.pth",
    ];
    let reports = scan::scan_paths(&[fixtures_dir()], &ReadLimits::default());
    let mut checked = 0;
    for r in &reports {
        let rel = r
            .path
            .strip_prefix(&fixtures_dir().display().to_string())
            .unwrap_or(&r.path)
            .trim_start_matches('/')
            .to_string();
        // Hostile, container and distributed-checkpoint fixtures carry their own expectations
        // (scan.rs, containers_tar.rs, dcp.rs, zero.rs).
        if ["hostile/", "containers/", "dcp/", "zero/"]
            .iter()
            .any(|p| rel.starts_with(p))
        {
            continue;
        }
        let want = if needs_code.contains(&rel.as_str()) {
            Verdict::NeedsCode
        } else if rel.ends_with(".pth")
            || rel.ends_with(".pt")
            || rel.ends_with(".ckpt") // Lightning's torch.save files
            || rel.ends_with(".bin")
            || rel.ends_with(".safetensors")
            || rel.ends_with(".index.json")
        {
            Verdict::Safe
        } else {
            Verdict::NotCheckpoint
        };
        assert_eq!(r.verdict, want, "{rel}:\n{}", r.to_text(true));
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} files scanned");
    let whole = reports
        .iter()
        .find(|r| r.path.ends_with("cnn_model.pth"))
        .expect("cnn_model");
    assert!(
        whole
            .findings
            .iter()
            .any(|f| f.global.as_deref() == Some("__main__.Net")),
        "{whole:#?}"
    );
    let ts = reports
        .iter()
        .find(|r| r.path.ends_with("torchscript_cnn.pt"))
        .expect("torchscript");
    assert_eq!(ts.format, "torchscript");
    assert!(!ts.code.is_empty(), "TorchScript code files are listed");
    // Every .debug_pkl of the archive is scanned as well as data.pkl and constants.pkl.
    assert!(
        ts.pickles.len() >= 3,
        "{:?}",
        ts.pickles.iter().map(|p| &p.record).collect::<Vec<_>>()
    );
    let legacy = reports
        .iter()
        .find(|r| r.path.ends_with("legacy_state_dict.pth"))
        .expect("legacy");
    let records: Vec<&str> = legacy.pickles.iter().map(|p| p.record.as_str()).collect();
    assert_eq!(
        records,
        ["magic number", "protocol version", "sys_info", "object", "storage keys"]
    );
}

#[test]
fn exit_codes_rank_dangerous_over_unreadable() {
    let dir = tempfile::tempdir().expect("dir");
    let copy = |from: PathBuf, to: &str| std::fs::copy(from, dir.path().join(to)).expect("copy");
    copy(fixtures_dir().join("cnn_state_dict.pth"), "a_safe.pth");
    std::fs::write(dir.path().join("README.md"), "# a model\n\nIt is good.\n").expect("write");
    std::fs::write(dir.path().join("config.json"), "{\"hidden\": 4}").expect("write");
    let limits = ReadLimits::default();
    let reports = scan::scan_paths(&[dir.path().to_path_buf()], &limits);
    assert_eq!(reports.len(), 3);
    assert_eq!(scan::exit_code(&reports, false), 0, "{}", scan::to_text(&reports, true));
    assert_eq!(
        reports.iter().filter(|r| r.verdict == Verdict::NotCheckpoint).count(),
        2
    );
    // A damaged checkpoint (by extension) is exit 2.
    let bytes = std::fs::read(fixtures_dir().join("cnn_state_dict.pth")).expect("read");
    std::fs::write(dir.path().join("b_damaged.pth"), &bytes[..bytes.len() / 2]).expect("write");
    let reports = scan::scan_paths(&[dir.path().to_path_buf()], &limits);
    assert_eq!(scan::exit_code(&reports, false), 2, "{}", scan::to_text(&reports, true));
    // A whole model is needs-code: 0, or 1 with strict.
    copy(fixtures_dir().join("cnn_model.pth"), "c_model.pth");
    std::fs::remove_file(dir.path().join("b_damaged.pth")).expect("rm");
    let reports = scan::scan_paths(&[dir.path().to_path_buf()], &limits);
    assert_eq!(scan::exit_code(&reports, false), 0);
    assert_eq!(scan::exit_code(&reports, true), 1);
    // Dangerous beats unreadable.
    std::fs::write(dir.path().join("b_damaged.pth"), &bytes[..bytes.len() / 2]).expect("write");
    copy(hostile_dir().join("reduce_os_system.pth"), "d_evil.pth");
    let reports = scan::scan_paths(&[dir.path().to_path_buf()], &limits);
    assert_eq!(scan::exit_code(&reports, false), 1);
    let json = scan::to_json(&reports, false);
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["summary"]["dangerous"], 1);
    assert_eq!(json["summary"]["unreadable"], 1);
    assert!(json["files"]
        .as_array()
        .expect("files")
        .iter()
        .any(|f| f["verdict"] == "dangerous"));
    let text = scan::to_text(&reports, false);
    assert!(text.contains("DANGEROUS") && text.contains("posix.system"), "{text}");
    // A missing path is a report, not a panic.
    let reports = scan::scan_paths(&[dir.path().join("nope.pth")], &limits);
    assert_eq!(reports[0].verdict, Verdict::Unreadable);
    // An explicitly named non-checkpoint is an error for scan_path.
    assert!(scan::scan_path(&dir.path().join("README.md"), &limits).is_err());
}

#[test]
fn an_index_named_explicitly_brings_its_shards() {
    let index = fixtures_dir().join("sharded_bin").join("pytorch_model.bin.index.json");
    let reports = scan::scan_paths(&[index], &ReadLimits::default());
    assert_eq!(
        reports.len(),
        3,
        "{:#?}",
        reports.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(reports[0].format, "index-json");
    assert_eq!(reports[0].shards.len(), 2);
    assert!(reports.iter().all(|r| r.verdict == Verdict::Safe));
}

/// (name, pickle, verdict, something the findings must mention)
fn rule_cases() -> Vec<(&'static str, Vec<u8>, Verdict, &'static str)> {
    let p2 = |body: &[u8]| {
        let mut v = vec![0x80, 2];
        v.extend_from_slice(body);
        v.push(b'.');
        v
    };
    vec![
        (
            "allowlisted state dict",
            p2(b"ccollections\nOrderedDict\n)R"),
            Verdict::Safe,
            "",
        ),
        (
            "bytes via _codecs.encode",
            p2(b"c_codecs\nencode\nX\x02\x00\x00\x00hiX\x06\x00\x00\x00latin1\x86R"),
            Verdict::Safe,
            "",
        ),
        ("python 2 set", p2(b"c__builtin__\nset\n]\x85R"), Verdict::Safe, ""),
        (
            "NEWOBJ + BUILD of a class",
            p2(b"c__main__\nNet\n)\x81}b"),
            Verdict::NeedsCode,
            "__main__.Net",
        ),
        ("only referenced", p2(b"cmylib\nact\n"), Verdict::NeedsCode, "mylib.act"),
        (
            "numpy array",
            p2(b"cnumpy.core.multiarray\n_reconstruct\n)R"),
            Verdict::NeedsCode,
            "numpy.core.multiarray._reconstruct",
        ),
        (
            "REDUCE of an unknown",
            p2(b"cmylib\nfn\n)R"),
            Verdict::Dangerous,
            "mylib.fn",
        ),
        (
            "REDUCE of a class is a call",
            p2(b"c__main__\nNet\n)R"),
            Verdict::Dangerous,
            "__main__.Net",
        ),
        (
            "INST calls",
            b"(imylib\nThing\n.".to_vec(),
            Verdict::Dangerous,
            "mylib.Thing",
        ),
        ("OBJ calls", p2(b"(cmylib\nThing\no"), Verdict::Dangerous, "mylib.Thing"),
        (
            "EXT1 code",
            p2(b"\x82\x01)R"),
            Verdict::Dangerous,
            "copyreg.extension_1",
        ),
        (
            "memoized global",
            p2(b"cposix\nsystem\nq\x000h\x00X\x01\x00\x00\x00x\x85R"),
            Verdict::Dangerous,
            "posix.system",
        ),
        (
            "python 2 eval",
            p2(b"c__builtin__\neval\nX\x01\x00\x00\x001\x85R"),
            Verdict::Dangerous,
            "builtins.eval",
        ),
        (
            "commands is subprocess",
            p2(b"ccommands\ngetoutput\nX\x02\x00\x00\x00id\x85R"),
            Verdict::Dangerous,
            "subprocess.getoutput",
        ),
        (
            "attribute walk",
            {
                let mut v = vec![0x80, 4, 0x8c, 5];
                v.extend(b"torch");
                v.extend([0x8c, 23]);
                v.extend(b"serialization.os.system");
                v.extend(b"\x93N\x85R.");
                v
            },
            Verdict::Dangerous,
            "torch.serialization.os.system",
        ),
        (
            "dunder walk",
            {
                let mut v = vec![0x80, 4, 0x8c, 8];
                v.extend(b"builtins");
                v.extend([0x8c, 21]);
                v.extend(b"object.__subclasses__");
                v.extend(b"\x93.");
                v
            },
            Verdict::Dangerous,
            "dunder",
        ),
        (
            "reconstructor of a class",
            p2(b"ccopy_reg\n_reconstructor\nc__main__\nNet\nc__builtin__\nobject\nN\x87R}b"),
            Verdict::NeedsCode,
            "__main__.Net",
        ),
        (
            "reconstructor with a base that runs",
            p2(b"ccopyreg\n_reconstructor\nc__main__\nNet\ncsubprocess\nPopen\nX\x02\x00\x00\x00id\x87R"),
            Verdict::Dangerous,
            "subprocess.Popen",
        ),
        (
            "reconstructor of a computed class",
            p2(b"ccopyreg\n_reconstructor\nX\x01\x00\x00\x00xcbuiltins\nobject\nN\x87R"),
            Verdict::Dangerous,
            "not a named global",
        ),
        (
            "__newobj__ of a class",
            p2(b"ccopyreg\n__newobj__\nc__main__\nNet\n\x85R"),
            Verdict::NeedsCode,
            "__main__.Net",
        ),
        (
            "trampoline calls its argument",
            p2(b"ctorch._tensor\n_rebuild_from_type_v2\n(c__main__\nfn\nctorch\nTensor\n)}tR"),
            Verdict::Dangerous,
            "__main__.fn",
        ),
        (
            "trampoline of a computed function",
            p2(b"ctorch._tensor\n_rebuild_from_type_v2\n(X\x01\x00\x00\x00xctorch\nTensor\n)}tR"),
            Verdict::Dangerous,
            "not a named global",
        ),
        (
            "REDUCE of a constant",
            p2(b"X\x01\x00\x00\x00x)R"),
            Verdict::Dangerous,
            "not a named global",
        ),
        (
            "REDUCE of a call's result",
            p2(b"ccollections\nOrderedDict\n)R)R"),
            Verdict::Dangerous,
            "result of another call",
        ),
        (
            "REDUCE of a persistent id",
            p2(b"X\x01\x00\x00\x00xQ)R"),
            Verdict::Dangerous,
            "persistent id",
        ),
        (
            "legacy module persistent id",
            p2(b"(X\x06\x00\x00\x00modulec__main__\nNet\nNNtQ)\x81"),
            Verdict::NeedsCode,
            "__main__.Net",
        ),
        (
            "torchscript helper outside an archive",
            p2(b"ctorch.jit._pickle\nbuild_intlist\n]\x85R"),
            Verdict::Dangerous,
            "torch.jit._pickle.build_intlist",
        ),
        (
            "loader of computed bytes",
            p2(b"ctorch.storage\n_load_from_bytes\ncmylib\nmake\n)R\x85R"),
            Verdict::Dangerous,
            "computed",
        ),
        (
            "pickle.loads",
            p2(b"cpickle\nloads\nC\x02N.\x85R"),
            Verdict::Dangerous,
            "pickle.loads",
        ),
        (
            "webbrowser",
            p2(b"cwebbrowser\nopen\nX\x01\x00\x00\x00x\x85R"),
            Verdict::Dangerous,
            "webbrowser.open",
        ),
        (
            "torch.load",
            p2(b"ctorch\nload\nX\x01\x00\x00\x00x\x85R"),
            Verdict::Dangerous,
            "torch.load",
        ),
        (
            "functools.partial referenced",
            p2(b"cfunctools\npartial\n"),
            Verdict::Dangerous,
            "functools.partial",
        ),
    ]
}

#[test]
fn each_rule_on_a_hand_written_pickle() {
    let mut failures = Vec::new();
    for (name, bytes, want, mention) in rule_cases() {
        match scan_bytes("case.pkl", &bytes) {
            Ok(r) => {
                if r.verdict != want {
                    failures.push(format!("{name}: {} != {want}\n{}", r.verdict, r.to_text(true)));
                } else if !mentions(&r).contains(mention) {
                    failures.push(format!(
                        "{name}: findings do not mention {mention:?}\n{}",
                        r.to_text(true)
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn findings_point_at_the_opcode() {
    // PROTO 2 (0), GLOBAL (2..12), EMPTY_TUPLE (12), REDUCE (13).
    let r = scan_bytes("x.pkl", b"\x80\x02cmylib\nfn\n)R.").expect("scans");
    let f = r
        .findings
        .iter()
        .find(|f| f.global.as_deref() == Some("mylib.fn"))
        .expect("finding");
    assert_eq!(f.offset, Some(13), "{f:?}");
    let g = &r.pickles[0].globals[0];
    assert_eq!(g.usage, ["referenced", "called"]);
    assert_eq!(g.offsets, [2, 13]);
    assert_eq!(r.pickles[0].record, "pickle 1 (byte 0)");
    // A protocol-4 pickle lists the opcodes torch's weights_only loader lacks.
    let p4 = scan_bytes("y.pkl", b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00}\x94.").expect("scans");
    assert_eq!(p4.verdict, Verdict::Safe);
    assert!(
        p4.pickles[0].opcodes_outside_weights_only.contains(&"FRAME"),
        "{:?}",
        p4.pickles[0]
    );
}

#[test]
fn written_names_are_kept_when_python_renames_them() {
    let r = scan_bytes("x.pkl", b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R.").expect("scans");
    let g = &r.pickles[0].globals[0];
    assert_eq!(g.name, "builtins.eval");
    assert_eq!(g.written_as.as_deref(), Some("__builtin__.eval"));
}

#[test]
fn torchscript_archives_need_code_and_list_it() {
    let r = scan::scan_path(&hostile_dir().join("benign_scripted.pt"), &ReadLimits::default()).expect("scans");
    assert_eq!(r.verdict, Verdict::NeedsCode);
    assert!(r.code.iter().any(|c| c.ends_with(".py")));
    assert!(r.findings.iter().any(|f| f.message.contains("TorchScript code")));
}

/// Recorded uses, as a reader records them: (module, name, usage).
fn recorded(uses: &[(&str, &str, Usage)]) -> ckpt::model::Globals {
    let uses: Vec<GlobalUse> = uses
        .iter()
        .map(|&(module, name, usage)| GlobalUse {
            global: Global {
                module: module.into(),
                name: name.into(),
            },
            usage,
            offset: 0,
        })
        .collect();
    ckpt::model::Globals::from_uses(&uses)
}

#[test]
fn dangerous_globals_judge_recorded_uses() {
    use Usage::*;
    let globals = recorded(&[
        ("collections", "OrderedDict", Called),
        ("torch._utils", "_rebuild_tensor_v2", Called),
        ("torch", "FloatStorage", Referenced),
        ("__builtin__", "set", Called),
        ("__main__", "Net", Instantiated),
        ("posix", "system", Referenced),
        ("torch.nn.modules.conv", "Conv2d", Built),
        ("mylib", "helper", Called),
        ("transformers.trainer_utils", "IntervalStrategy", Called),
        ("torch.serialization", "os.system", Referenced),
        ("builtins", "print", Called),
        ("mylib.utils", "Popen", Called),
    ]);
    let w = scan::dangerous_globals(&globals, false);
    let got: Vec<(&str, Verdict)> = w.iter().map(|w| (w.name.as_str(), w.verdict)).collect();
    assert_eq!(
        got,
        [
            ("builtins.print", Verdict::Dangerous),
            ("mylib.helper", Verdict::Dangerous),
            ("mylib.utils.Popen", Verdict::Dangerous),
            ("posix.system", Verdict::Dangerous),
            ("torch.serialization.os.system", Verdict::Dangerous),
            ("__main__.Net", Verdict::NeedsCode),
            ("torch.nn.modules.conv.Conv2d", Verdict::NeedsCode),
            ("transformers.trainer_utils.IntervalStrategy", Verdict::NeedsCode),
        ]
    );
    // TorchScript's own classes, inside an archive only.
    let ts = recorded(&[("__torch__.Color", "Color", Called)]);
    assert_eq!(scan::dangerous_globals(&ts, true)[0].verdict, Verdict::NeedsCode);
    // What real readers record from the fixtures.
    let c = ckpt::read::open(&fixtures_dir().join("dtypes.pth")).expect("reads");
    assert!(
        scan::dangerous_globals(&c.globals, false).is_empty(),
        "{:?}",
        scan::dangerous_globals(&c.globals, false)
    );
    let c = ckpt::read::open(&hostile_dir().join("reduce_os_system.pth")).expect("reads");
    let w = scan::dangerous_globals(&c.globals, false);
    assert!(
        w.iter()
            .any(|w| w.name == "posix.system" && w.verdict == Verdict::Dangerous),
        "{w:?}"
    );
    let c = ckpt::read::open(&hostile_dir().join("benign_model.pth")).expect("reads");
    let w = scan::dangerous_globals(&c.globals, false);
    assert!(
        w.iter().all(|w| w.verdict == Verdict::NeedsCode) && !w.is_empty(),
        "{w:?}"
    );
}

#[test]
fn inspect_warns_from_what_the_reader_recorded() {
    let inspect = |path: PathBuf| {
        let out = assert_cmd::Command::cargo_bin("ckpt")
            .expect("binary")
            .args(["inspect", path.to_str().expect("utf-8 path")])
            .assert()
            .success()
            .get_output()
            .stderr
            .clone();
        String::from_utf8_lossy(&out).into_owned()
    };
    for (file, name) in [
        ("reduce_os_system.pth", "posix.system"),
        ("subprocess_popen.pth", "subprocess.Popen"),
        ("functools_partial.pth", "functools.partial"),
        ("legacy_payload.pth", "posix.system"),
        ("hidden_map_in_state_dict.pth", "builtins.map"),
    ] {
        let err = inspect(hostile_dir().join(file));
        assert!(
            err.contains("ckpt: warning:") && err.contains(name) && err.contains("(dangerous; ckpt did not run it)"),
            "{file}: {err}"
        );
    }
    // Needs-code files read quietly: their classes are not run by ckpt and are not dangerous.
    for file in [
        "benign_model.pth",
        "benign_state_dict.pth",
        "benign_referenced_function.pth",
    ] {
        let err = inspect(hostile_dir().join(file));
        assert!(!err.contains("warning"), "{file}: {err}");
    }
}

#[test]
fn reports_serialize_to_json() {
    let r = scan::scan_path(&hostile_dir().join("reduce_os_system.pth"), &ReadLimits::default()).expect("scans");
    let j = r.to_json();
    assert_eq!(j["verdict"], "dangerous");
    assert_eq!(j["format"], "pth-zip");
    assert_eq!(j["findings"][0]["verdict"], "dangerous");
    assert_eq!(j["findings"][0]["global"], "posix.system");
    assert!(j["pickles"][0]["globals"]
        .as_array()
        .expect("globals")
        .iter()
        .any(|g| g["category"] == "denylisted"));
}

#[test]
fn a_safetensors_header_larger_than_its_data_justifies_is_not_parsed_by_scan_either() {
    // 200k zero-size tensors: an 8 MB header over no data. The reader refuses it before parsing;
    // the scanner shares that check, so it neither parses it nor calls it safe.
    let mut json = String::from("{");
    for i in 0..200_000 {
        json.push_str(&format!(
            "\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}},"
        ));
    }
    json.pop();
    json.push('}');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    let start = std::time::Instant::now();
    let err = scan_bytes("big.safetensors", &bytes).unwrap_err();
    assert!(err.contains("header of"), "{err}");
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}
