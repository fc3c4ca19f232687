"""`ckpt stats --json` against torch's own reductions, on checkpoints torch wrote.

torch computes every expected number here, at test time, from `torch.load`'s tensors: counts
(NaN, +inf, -inf, zeros, subnormals) over all elements, and `aminmax`, `mean`, `std`
(correction=1), `abs().max()` and `linalg.vector_norm` over the finite ones, in float64.
Tolerances: counts and extremes exact; mean and norm within 1e-12 relative; std within 1e-8
relative (it inherits the data's conditioning: a mean of 1e4 with a spread of 1e-3 costs
1e-7 x float64's epsilon in any method).
"""

import json
import math
import subprocess

import pytest
import torch

from conftest import FIXTURES

FILES = ["stats/planted.pth", "stats/planted.safetensors", "cnn_state_dict.pth", "dtypes.pth", "views.pth",
         "complex32.pth", "training_checkpoint.pth"]


def load(path):
    if path.suffix == ".safetensors":
        import safetensors.torch
        return safetensors.torch.load_file(str(path))
    return torch.load(path, weights_only=False)


def flat_tensors(obj, prefix=""):
    """Tensors of a loaded object under the dotted names ckpt gives them."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flat_tensors(v, f"{prefix}.{i}" if prefix else str(i))


def expected_component(t):
    x = t.detach().to(torch.float64)
    fin = x[torch.isfinite(x)]
    r = {"count": t.numel(), "nan": int(torch.isnan(x).sum()), "pos_inf": int(torch.isposinf(x).sum()),
         "neg_inf": int(torch.isneginf(x).sum()), "zeros": int((x == 0).sum()), "finite": fin.numel()}
    if t.dtype.is_floating_point:
        r["subnormal"] = int(((fin != 0) & (fin.abs() < torch.finfo(t.dtype).smallest_normal)).sum())
    if fin.numel():
        lo, hi = torch.aminmax(fin)
        m = float(fin.abs().max())
        scaled = fin / m if m else fin
        r.update(min=float(lo), max=float(hi), absmax=m, mean=float(fin.mean()),
                 norm=m * float(torch.linalg.vector_norm(scaled)),
                 std=m * float(scaled.std(correction=1)) if fin.numel() > 1 else None)
    else:
        r.update(min=None, max=None, absmax=None, mean=None, std=None, norm=0.0)
    return r


def close(got, want, rtol):
    if want is None or got is None:
        return got == want
    return got == want or abs(got - want) <= rtol * max(abs(got), abs(want))


def compare(name, got, want):
    bad = []
    for key in ("count", "nan", "pos_inf", "neg_inf", "zeros", "finite", "subnormal", "min", "max", "absmax"):
        if key in want and got[key] != want[key]:
            bad.append(f"{name}: {key} ckpt {got[key]} torch {want[key]}")
    for key, rtol in (("mean", 1e-12), ("norm", 1e-12), ("std", 1e-8)):
        if not close(got[key], want[key], rtol):
            bad.append(f"{name}: {key} ckpt {got[key]} torch {want[key]}")
    return bad


@pytest.mark.parametrize("rel", FILES)
def test_stats_agree_with_torch(ckpt_bin, rel):
    path = FIXTURES / rel
    out = subprocess.run([ckpt_bin, "stats", "--json", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    got = {t["name"]: t for t in report["tensors"]}
    loaded = dict(flat_tensors(load(path)))
    assert set(got) <= set(loaded) and len(got) >= 1, (sorted(set(got) - set(loaded)))
    bad = []
    for name, g in got.items():
        t = loaded[name]
        assert g["numel"] == t.numel() and g["dtype"] == str(t.dtype).removeprefix("torch."), name
        if t.is_complex():
            bad += compare(name + ".real", g["real"], expected_component(t.real))
            bad += compare(name + ".imag", g["imag"], expected_component(t.imag))
            assert g["zeros"] == int((t == 0).sum()), name
        else:
            bad += compare(name, g["values"], expected_component(t))
            if not t.dtype.is_floating_point and t.numel():
                values = t.flatten().tolist()  # exact Python ints (torch has no min for uint16/32/64)
                assert (g["int_min"], g["int_max"]) == (int(min(values)), int(max(values))), name
            if t.dtype == torch.bool:
                assert g["true_count"] == int(t.sum()), name
    assert not bad, "\n".join(bad)
    nan = [n for n, t in loaded.items() if n in got and torch.isnan(t.detach().to(torch.complex128 if t.is_complex() else torch.float64)).any()]
    assert report["findings"]["nan"] == [n for n in got if n in nan]


def test_filter_that_matches_nothing_is_an_error(ckpt_bin):
    out = subprocess.run([ckpt_bin, "stats", str(FIXTURES / "cnn_state_dict.pth"), "--filter", "nosuch.*"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "nosuch" in out.stderr
