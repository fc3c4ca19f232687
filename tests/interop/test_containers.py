"""Which bytes torch.load reads in tar (torch < 0.4) and legacy files, proven with harmless twins.

  CKPT_BIN  the ckpt binary

Each file is built at test time so that two readings differ: the reading torch takes holds a
pickle that only prints MARKER (builtins.print) beside its tensors, the other reading different
tensors and no marker. Real torch.load(weights_only=False), in a subprocess, proves which pickle
ran (the marker on its stdout) and which tensors came back; `ckpt inspect --json` must show
exactly those tensors (ckpt never unpickles anything), and `ckpt scan` must judge every
candidate pickle, the one torch runs (dangerous: print is called) and the decoy.
"""

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "fixtures" / "containers" / "generate.py"


def generator():
    spec = importlib.util.spec_from_file_location("ckpt_container_fixtures", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


G = generator()
TENSORS = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor([5, -6], dtype=torch.int64)}
DECOY = {"w": torch.full((2,), 7.0)}


def tar_twins():
    """name -> (file bytes, decoy pickle bytes)."""
    s, t, p = G.layout(TENSORS, marker=True)
    _, _, decoy = G.layout(DECOY)
    member, header, END, BLOCK = G.member, G.header, G.END, G.BLOCK
    cases = {f"tar_{k}": v for k, v in G.tarfile_cases_with(s, t, p, decoy).items()}
    cases["tar_bad_checksum_tail"] = G.plain_tar(s, t, p, tail=b"\x01" * BLOCK + member(b"pickle", decoy))
    cases["tar_dir_size"] = (member(b"storages", s) + member(b"tensors", t) + member(b"pickle", decoy)
                             + header(b"d/", BLOCK * 2, kind=b"\0") + member(b"pickle", p) + END)
    twins = {k: (v, decoy) for k, v in cases.items()}
    # tar + pickle polyglot: pickle.load reads None at byte 0 (no decoy tensors), torch the tar.
    twins["polyglot_tar_pickle"] = (member(b"N.", b"") + G.plain_tar(s, t, p), None)
    return twins


def legacy_twin():
    """A legacy file (torch.save's own writer) whose object pickle prints the marker."""
    buf = io.BytesIO()
    torch.save({**TENSORS, "marker": G.Marker()}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


CASES = {**tar_twins(), "legacy_marker": (legacy_twin(), None)}

LOADER = f"""
import json, sys, torch
sys.path.insert(0, {str(GENERATOR.parent)!r})
from generate import tensor_record
obj = torch.load(sys.argv[1], weights_only=False)
print("TENSORS" + json.dumps([tensor_record(k, v) for k, v in obj.items() if isinstance(v, torch.Tensor)]))
"""


def torch_load(path):
    proc = subprocess.run([sys.executable, "-c", LOADER, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    tensors = json.loads(next(l for l in lines if l.startswith("TENSORS"))[len("TENSORS"):])
    return lines.count(G.MARKER), tensors


def ckpt_json(ckpt_bin, *args):
    proc = subprocess.run([ckpt_bin, *args], capture_output=True, text=True, timeout=300)
    assert proc.stdout, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("case", sorted(CASES))
def test_twin_reads_what_torch_reads(ckpt_bin, tmp_path, case):
    data, decoy = CASES[case]
    path = tmp_path / f"{case}.bin"
    path.write_bytes(data)
    markers, want = torch_load(path)
    assert markers == 1, "torch.load ran the marker pickle exactly once"
    assert {t["name"] for t in want} == set(TENSORS)

    if case.startswith("polyglot"):
        # Two readings: ckpt refuses to pick one (exit 2) rather than guess.
        proc = subprocess.run([ckpt_bin, "inspect", "--json", str(path)], capture_output=True, text=True)
        assert proc.returncode == 2 and "ambiguous" in proc.stderr, proc.stderr
    else:
        rc, report = ckpt_json(ckpt_bin, "inspect", "--json", "--hash", str(path))
        assert rc == 0
        got = [{k: t[k] for k in ("name", "dtype", "shape", "sha256")} for t in report["tensors"]]
        assert got == [{k: t[k] for k in ("name", "dtype", "shape", "sha256")} for t in want]

    rc, scan = ckpt_json(ckpt_bin, "scan", "--json", str(path))
    f = scan["files"][0]
    assert f["verdict"] == "dangerous" and rc == 1, f
    assert any(g["name"] == "builtins.print" for p in f["pickles"] for g in p["globals"]), f
    offsets = {p.get("offset") for p in f["pickles"]}
    if decoy is not None:
        assert data.find(decoy) in offsets, f"the decoy pickle is judged too: {f['pickles']}"
    if case.startswith("polyglot"):
        assert 0 in offsets, "the byte-0 pickle is judged too"
