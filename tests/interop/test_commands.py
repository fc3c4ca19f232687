"""The commands' outputs, loaded by real PyTorch the way users load them.

  CKPT_BIN       the ckpt binary
  CKPT_FIXTURES  the fixtures (default: <repo>/fixtures)

- a GPU-tagged checkpoint converted with `--device cpu` loads without map_location;
- drop-layers output loads into the model with strict=False reporting exactly the dropped keys;
- freeze --write output carries the flags as nn.Parameter requires_grad;
- --strip-prefix module. makes a DataParallel state dict load into the plain model, strictly;
- --dtype f16 --keep-dtype equals torch's own .to(float16), leaving the kept tensors alone;
- diff names what one optimizer step changed (tensors and non-tensor leaves) with torch's own
  allclose verdicts, and a dedupe alias compares equal to its source;
- convert --json says what it renamed and wrote, and the file is what it says.
"""

import json

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("CKPT_FIXTURES") or REPO / "fixtures").resolve()


def models():
    """The model classes of fixtures/generate.py (only their state_dict layout is used here)."""
    spec = importlib.util.spec_from_file_location("ckpt_fixture_models", REPO / "fixtures" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ckpt(ckpt_bin, *args, code=0):
    proc = subprocess.run([ckpt_bin, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, f"ckpt {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def test_gpu_tagged_converted_to_cpu_loads_without_map_location(ckpt_bin, tmp_path):
    src = FIXTURES / "gpu_tagged.pth"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(src, weights_only=True)
    out = tmp_path / "cpu.pth"
    ckpt(ckpt_bin, "convert", src, out, "--device", "cpu")
    loaded = torch.load(out, weights_only=True)
    want = torch.load(src, weights_only=True, map_location="cpu")
    assert list(loaded) == list(want)
    for name, t in want.items():
        assert loaded[name].device.type == "cpu"
        assert torch.equal(loaded[name], t), name


def test_drop_layers_output_loads_with_exactly_the_dropped_keys_missing(ckpt_bin, tmp_path):
    out = tmp_path / "headless.pth"
    ckpt(ckpt_bin, "drop-layers", FIXTURES / "cnn_state_dict.pth", out, "--pattern", "fc3", "--pattern", "conv*.bias")
    model = models().Net()
    result = model.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert sorted(result.missing_keys) == ["conv1.bias", "conv2.bias", "fc3.bias", "fc3.weight"]
    assert result.unexpected_keys == []
    original = torch.load(FIXTURES / "cnn_state_dict.pth", weights_only=True)
    assert torch.equal(model.conv1.weight.detach(), original["conv1.weight"])


def test_freeze_write_carries_the_flags(ckpt_bin, tmp_path):
    out = tmp_path / "frozen.pth"
    ckpt(ckpt_bin, "freeze", FIXTURES / "cnn_model.pth", "--unfreeze", "conv1", "--freeze", "fc1", "--write", out)
    sd = torch.load(out, weights_only=True)
    for name, t in sd.items():
        if name.startswith(("bn.running", "bn.num_batches")):
            assert not isinstance(t, torch.nn.Parameter), name
            continue
        assert isinstance(t, torch.nn.Parameter), name
        assert t.requires_grad == (not name.startswith("fc1.")), name


def test_strip_prefix_makes_a_dataparallel_state_dict_load_strictly(ckpt_bin, tmp_path):
    out = tmp_path / "plain.safetensors"
    ckpt(ckpt_bin, "convert", FIXTURES / "dataparallel.pth", out, "--strip-prefix", "module.")
    from safetensors.torch import load_file

    models().Net().load_state_dict(load_file(out), strict=True)


def test_half_cast_with_kept_norms_equals_torch(ckpt_bin, tmp_path):
    out = tmp_path / "half.pth"
    ckpt(ckpt_bin, "convert", FIXTURES / "cnn_state_dict.pth", out, "--dtype", "f16", "--keep-dtype", "bn.*")
    got = torch.load(out, weights_only=True)
    original = torch.load(FIXTURES / "cnn_state_dict.pth", weights_only=True)
    for name, t in original.items():
        if name.startswith("bn.") or not t.is_floating_point():
            assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
        else:
            want = t.to(torch.float16)
            assert got[name].dtype == torch.float16
            assert torch.equal(got[name].view(torch.int16), want.view(torch.int16)), name


def test_diff_names_what_an_optimizer_step_changed(ckpt_bin, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "epoch": 1, "losses": [1.5],
              "optimizer": {"lr": 0.1}}
    loss = model(torch.ones(1, 4)).sum()
    loss.backward()
    opt.step()
    after = {"model": model.state_dict(), "epoch": 2, "losses": [1.5, loss.item()], "optimizer": {"lr": 0.1}}
    torch.save(before, tmp_path / "a.pth")
    torch.save(after, tmp_path / "b.pth")
    report = json.loads(ckpt(ckpt_bin, "diff", "--json", tmp_path / "a.pth", tmp_path / "b.pth", code=1))
    changed = {c["name"] for c in report["values_changed"]}
    moved = {f"model.{n}" for n, t in before["model"].items() if not torch.equal(t, after["model"][n])}
    assert changed == moved == {"model.weight", "model.bias"}
    assert {c["name"] for c in report["metadata"]["changed"]} == {"epoch", "losses"}
    assert report["metadata"]["identical"] == ["optimizer.lr"]
    # Within the largest change, torch.allclose says equal and so does ckpt (exit 0).
    bias_a, bias_b = before["model"]["bias"], after["model"]["bias"]
    atol = (bias_a - bias_b).abs().max().item()
    assert torch.allclose(bias_a, bias_b, rtol=0, atol=atol)
    ckpt(ckpt_bin, "diff", "--filter", "model.bias", "--atol", repr(atol), tmp_path / "a.pth", tmp_path / "b.pth")


def test_dedupe_alias_diffs_equal_and_loads_as_tied(ckpt_bin, tmp_path):
    from safetensors import safe_open

    src = FIXTURES / "tied_state_dict.pth"
    out = tmp_path / "tied.safetensors"
    report = json.loads(ckpt(ckpt_bin, "convert", "--dedupe", "--json", src, out))
    with safe_open(out, "pt") as f:
        meta = f.metadata()
        names = set(f.keys())
    for d in report["written"]["deduplicated"]:
        assert d["name"] not in names and meta[d["name"]] == d["kept"]
    want = torch.load(src, weights_only=True)
    assert all(torch.equal(want[d["name"]], want[d["kept"]]) for d in report["written"]["deduplicated"])
    ckpt(ckpt_bin, "diff", src, out)


def test_convert_json_says_what_it_renamed_and_wrote(ckpt_bin, tmp_path):
    src = FIXTURES / "dataparallel.pth"
    out = tmp_path / "plain.safetensors"
    report = json.loads(ckpt(ckpt_bin, "convert", "--json", "--strip-prefix", "module.", src, out))
    want = torch.load(src, weights_only=True)
    renamed = next(a for a in report["actions"] if a["action"] == "renamed")
    assert [(r["from"], r["to"]) for r in renamed["items"]] == [(k, k[len("module."):]) for k in want]
    assert report["written"]["files"] == [str(out)]
    assert report["written"]["bytes"] == out.stat().st_size
    assert report["written"]["tensors"] == len(want)
