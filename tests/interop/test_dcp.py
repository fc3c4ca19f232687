"""torch.distributed.checkpoint directories written now by the installed torch (gloo, 1, 2 and 4
spawned ranks: fixtures/gen_dcp.py), converted by ckpt and compared with torch's own
consolidation (`dcp_to_torch_save` + `torch.load`), tensor by tensor.

  CKPT_BIN  the ckpt binary
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

REPO = Path(__file__).resolve().parents[2]


def gen_dcp():
    sys.path.insert(0, str(REPO / "fixtures"))  # spawned ranks import the module by name
    spec = importlib.util.spec_from_file_location("gen_dcp", REPO / "fixtures" / "gen_dcp.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_dcp"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The DCP checkpoints of gen_dcp, written by this torch; returns their directory."""
    out = tmp_path_factory.mktemp("dcp")
    gen_dcp().write_all(str(out))
    return out / "dcp"


def consolidated(ckpt_dir, tmp_path):
    """torch's consolidation, flattened the way DCP names items."""
    out = tmp_path / "torch.pth"
    dcp_to_torch_save(str(ckpt_dir), str(out))
    tensors, meta = {}, {}
    gen_dcp().flatten(torch.load(out, weights_only=False), "", tensors, meta)
    return tensors


def run(ckpt_bin, *args):
    return subprocess.run([ckpt_bin, *map(str, args)], capture_output=True, text=True)


def assert_same(got, want):
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        g = got[name]
        assert g.dtype == t.dtype, name
        assert g.shape == t.shape, name
        assert torch.equal(g.contiguous().view(-1).view(torch.uint8), t.contiguous().view(-1).view(torch.uint8)), name


@pytest.mark.parametrize("name", ["ws1", "ws2", "ws4"])
def test_convert_equals_dcp_to_torch_save(ckpt_bin, written, tmp_path, name):
    want = consolidated(written / name, tmp_path)
    st = tmp_path / "out.safetensors"
    r = run(ckpt_bin, "convert", written / name, st)
    assert r.returncode == 0, r.stderr
    assert_same(load_file(st), want)
    pth = tmp_path / "out.pth"
    r = run(ckpt_bin, "convert", written / name, pth)
    assert r.returncode == 0, r.stderr
    # The whole state dict, nested as torch rebuilds it ({"model": {...}, "optim": {"state": ...,
    # "param_groups": [{...}]}, "epoch": ...}), non-tensor values included.
    assert_same_tree(torch.load(pth, weights_only=True), torch.load(tmp_path / "torch.pth", weights_only=False))


def assert_same_tree(got, want, where="state dict"):
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert_same({where: got}, {where: want})
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same_tree(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_tree(g, w, f"{where}[{i}]")
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def test_select_model_drops_optimizer_state(ckpt_bin, written, tmp_path):
    want = {k[len("model.") :]: v for k, v in consolidated(written / "ws4", tmp_path).items() if k.startswith("model.")}
    out = tmp_path / "model.safetensors"
    r = run(ckpt_bin, "convert", written / "ws4", out, "--select", "model")
    assert r.returncode == 0, r.stderr
    assert_same(load_file(out), want)


def test_cast_equals_torch_cast(ckpt_bin, written, tmp_path):
    want = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in consolidated(written / "ws2", tmp_path).items()}
    out = tmp_path / "f16.safetensors"
    r = run(ckpt_bin, "convert", written / "ws2", out, "--dtype", "f16")
    assert r.returncode == 0, r.stderr
    assert_same(load_file(out), want)


def test_hostile_copies_are_refused(ckpt_bin, written, tmp_path):
    for case in sorted((written / "hostile").iterdir()):
        if case.name in gen_dcp().SCAN_CASES:
            continue  # loadable by torch (test_scan_follows_what_torch_runs)
        r = run(ckpt_bin, "convert", case, tmp_path / f"{case.name}.safetensors")
        assert r.returncode == 2, (case.name, r.stderr)
        assert "panicked" not in r.stderr
        assert not (tmp_path / f"{case.name}.safetensors").exists()


def test_scan_follows_what_torch_runs(ckpt_bin, written):
    """The scan cases written now by this torch, and what its dcp.load and dcp_to_torch_save did
    with them (a counter stood in for os.getcwd): a byte item whose call ran is dangerous, a
    tensor chunk torch refused before running anything unreadable, an appended archive torch
    never read still dangerous (bytes no item covers are judged as full loads)."""
    outcomes = json.loads((written / "expected.json").read_text())["scan_cases"]
    cases = [
        ("byte_item_call", "loads", 1, "dangerous", 1),
        ("tensor_item_global", "refuses: weights_only UnpicklingError", 0, "unreadable", 2),
        ("hidden_archive", "loads", 0, "dangerous", 1),
    ]
    for case, outcome, calls, verdict, code in cases:
        for how in ["dcp_load", "dcp_to_torch_save"]:
            assert outcomes[case][how] == {"outcome": outcome, "getcwd_calls": calls}, (case, how)
        r = run(ckpt_bin, "scan", "--json", written / "hostile" / case)
        assert r.returncode == code, (case, r.stdout, r.stderr)
        files = {Path(f["path"]).name: f for f in json.loads(r.stdout)["files"]}
        assert files["__0_0.distcp"]["verdict"] == verdict, (case, files["__0_0.distcp"])
        assert files[".metadata"]["verdict"] == "needs-code", case
    for name in ["ws1", "ws2", "ws4"]:
        r = run(ckpt_bin, "scan", "--json", written / name)
        assert r.returncode == 0, (name, r.stdout)
        files = json.loads(r.stdout)["files"]
        assert all(f["verdict"] == "safe" for f in files if f["path"].endswith(".distcp")), name
