"""torch.distributed.checkpoint directories written now by the installed torch (gloo, 1, 2 and 4
spawned ranks: fixtures/gen_dcp.py), converted by ckpt and compared with torch's own
consolidation (`dcp_to_torch_save` + `torch.load`), tensor by tensor.

  CKPT_BIN  the ckpt binary
"""

import importlib.util
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
        r = run(ckpt_bin, "convert", case, tmp_path / f"{case.name}.safetensors")
        assert r.returncode == 2, (case.name, r.stderr)
        assert "panicked" not in r.stderr
        assert not (tmp_path / f"{case.name}.safetensors").exists()
