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
- a --strip-prefix no name has, a --device tag torch cannot restore: refused, nothing written;
- --keep-norms keeps every tensor of torch's normalization modules in float32;
- a cast that flushes optimizer state to zero is refused with torch's own counts;
- parameters are counted as model.parameters() counts them;
- the flags.json recipe of the README applies freeze's flags to a model.
"""

import importlib.util
import json
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


def refused(ckpt_bin, *args):
    """Runs ckpt expecting exit 2; its stderr."""
    proc = subprocess.run([ckpt_bin, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, f"ckpt {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stderr


def test_strip_prefix_into_a_pth_loads_strictly_and_a_missing_prefix_is_refused(ckpt_bin, tmp_path):
    out = tmp_path / "plain.pth"
    err = refused(ckpt_bin, "convert", FIXTURES / "dataparallel.pth", out, "--strip-prefix", "foo.")
    assert "'foo.'" in err and not out.exists()
    ckpt(ckpt_bin, "convert", FIXTURES / "dataparallel.pth", out, "--strip-prefix", "module.")
    models().Net().load_state_dict(torch.load(out, weights_only=True), strict=True)


class NormZoo(torch.nn.Module):
    """Every kind of normalization module, named as models name them, between plain layers."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.gn = torch.nn.GroupNorm(2, 4)
        self.proj = torch.nn.Linear(4, 8)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
        self.input_layernorm = torch.nn.LayerNorm(8)
        self.rms_norm = torch.nn.RMSNorm(8)
        self.ln_f = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 2)


NORM_TYPES = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)


def norm_tensor_names(model):
    """The state_dict names of every tensor of a normalization module, by torch's classes."""
    return {
        f"{m}.{n}"
        for m, mod in model.named_modules()
        if isinstance(mod, NORM_TYPES)
        for n, _ in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
    }


def check_kept_norms(ckpt_bin, tmp_path, model, src):
    out = tmp_path / "bf16.pth"
    ckpt(ckpt_bin, "convert", src, out, "--dtype", "bf16", "--keep-norms", "--force")
    got = torch.load(out, weights_only=True)
    norms = norm_tensor_names(model)
    for name, t in model.state_dict().items():
        if name in norms or not t.is_floating_point():
            assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
        else:
            assert got[name].dtype == torch.bfloat16, name
            assert torch.equal(got[name].view(torch.int16), t.to(torch.bfloat16).view(torch.int16)), name
    return got


def test_keep_norms_keeps_every_normalization_module_in_float32(ckpt_bin, tmp_path):
    torch.manual_seed(0)
    model = NormZoo()
    src = tmp_path / "zoo.pth"
    torch.save(model.state_dict(), src)
    got = check_kept_norms(ckpt_bin, tmp_path, model, src)
    # The BatchNorm buffers stayed float32, and the file loads strictly.
    assert got["bn.running_var"].dtype == torch.float32
    NormZoo().load_state_dict(got, strict=True)


class NormSeq(NormZoo):
    """A LayerNorm whose name says nothing (`seq.1`): only its class tells."""

    def __init__(self):
        super().__init__()
        self.seq = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))


def test_keep_norms_reads_module_classes_of_whole_models_and_torchscript(ckpt_bin, tmp_path):
    torch.manual_seed(0)
    model = NormSeq()
    assert "seq.1.weight" in norm_tensor_names(model)
    whole = tmp_path / "whole.pth"
    torch.save(model, whole)
    check_kept_norms(ckpt_bin, tmp_path, model, whole)
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(model).save(scripted)
    check_kept_norms(ckpt_bin, tmp_path, model, scripted)


def test_device_tags_are_the_ones_torch_restores(ckpt_bin, tmp_path):
    src = FIXTURES / "gpu_tagged.pth"
    storage = torch.UntypedStorage(4)
    for bad in ["gpu", "banana", "cuda0x", "npu:0"]:
        err = refused(ckpt_bin, "convert", src, tmp_path / "bad.pth", "--device", bad)
        assert "invalid device rule" in err
        with pytest.raises(RuntimeError, match="don't know how to restore|Invalid device string"):
            torch.serialization.default_restore_location(storage, bad)
    assert not (tmp_path / "bad.pth").exists()
    for good in ["cpu", "meta", "cuda", "cuda:1", "mps", "xpu:0", "hpu", "mtia:0", "privateuseone"]:
        ckpt(ckpt_bin, "convert", src, tmp_path / "good.pth", "--device", good, "--force")
        try:
            torch.serialization.default_restore_location(storage, good)
        except RuntimeError as e:  # a restorer exists; this machine lacks the device
            assert "don't know how to restore" not in str(e), good
        except (AssertionError, AttributeError, ImportError) as e:  # backend not compiled in
            assert "don't know how to restore" not in str(e), good
    out = tmp_path / "meta.pth"
    ckpt(ckpt_bin, "convert", src, out, "--device", "meta")
    assert all(t.device.type == "meta" for t in torch.load(out, weights_only=True).values())
    err = refused(ckpt_bin, "convert", src, tmp_path / "x.safetensors", "--device", "cpu")
    assert "safetensors" in err


def test_underflow_refusal_counts_what_torch_flushes(ckpt_bin, tmp_path):
    src = FIXTURES / "training_checkpoint.pth"
    err = refused(ckpt_bin, "convert", src, tmp_path / "t.pth", "--dtype", "f16")
    want = {}

    def walk(o, path):
        if isinstance(o, torch.Tensor):
            if o.is_floating_point():
                n = int(((o != 0) & torch.isfinite(o) & (o.to(torch.float16) == 0)).sum())
                if n:
                    want[path] = n
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f"{path}.{i}" if path else str(i))

    walk(torch.load(src, weights_only=True), "")
    assert want, "the fixture's AdamW state holds values float16 flushes"
    got = {}
    for line in err.splitlines():
        if line.startswith("  ") and line.endswith(" values"):
            name, n = line.strip().rsplit(": ", 1)
            got[name] = int(n.split()[0])
    assert got == want
    assert "--select model_state_dict" in err


def test_params_are_counted_as_model_parameters_counts_them(ckpt_bin):
    want = sum(p.numel() for p in models().Net().parameters())
    for rel in ["cnn_state_dict.pth", "cnn_model.pth", "training_checkpoint.pth"]:
        report = json.loads(ckpt(ckpt_bin, "inspect", "--json", FIXTURES / rel))
        assert report["total_params"] == want, rel
        assert f"all params: {want:,} " in ckpt(ckpt_bin, "freeze", FIXTURES / rel), rel


def test_flags_json_recipe_applies_the_flags(ckpt_bin, tmp_path):
    flags_path = tmp_path / "flags.json"
    written = tmp_path / "frozen.pth"
    ckpt(ckpt_bin, "freeze", FIXTURES / "cnn_state_dict.pth", "--freeze", "conv1", "-o", flags_path, "--write", written)
    model = models().Net()
    # What --write stores, load_state_dict ignores (it copies values into the model's own
    # parameters), as the README says.
    model.load_state_dict(torch.load(written, weights_only=True))
    assert all(p.requires_grad for p in model.parameters())
    # The README's recipe:
    flags = {t["name"]: t["requires_grad"] for t in json.load(open(flags_path))["tensors"]}
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, p.requires_grad))
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith("conv1.")), name
