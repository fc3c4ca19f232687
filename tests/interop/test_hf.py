"""Hugging Face layouts, checked with real PyTorch and safetensors.

  CKPT_BIN       the ckpt binary
  CKPT_FIXTURES  the fixtures (default: <repo>/fixtures)

- HF shards load through their index: every shard opened with safetensors.safe_open carries
  metadata() == {'format': 'pt'} (what transformers' save_pretrained writes), the state dict
  rebuilt from the index's weight_map equals torch's values, and the index text is what
  `json.dumps(index, indent=2, sort_keys=True) + "\n"` (transformers' writer) prints;
- a directory output that fits is one model.safetensors and no index;
- `x.safetensors --max-shard-size` shards beside x.safetensors;
- .bin shards load with torch.load(weights_only=True) through their index;
- renamed checkpoints (--rename rules, --rename-map) load with strict load_state_dict into the
  renamed model.
"""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("CKPT_FIXTURES") or REPO / "fixtures").resolve()


def ckpt(ckpt_bin, *args, ok=True):
    proc = subprocess.run([ckpt_bin, *map(str, args)], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, f"ckpt {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def models():
    spec = importlib.util.spec_from_file_location("ckpt_fixture_models", REPO / "fixtures" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_through_index(index):
    """The state dict a loader rebuilds from the index's weight_map, and the index."""
    index = Path(index)
    text = index.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    state = {}
    for name, shard in data["weight_map"].items():
        path = index.parent / shard
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                assert f.metadata() == {"format": "pt"}, shard
                state[name] = f.get_tensor(name)
        else:
            state[name] = torch.load(path, weights_only=True)[name]
    return state, data


def assert_equal_state(got, want):
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


@pytest.mark.parametrize("case", ["cnn_state_dict.pth", "lstm_state_dict.pth", "tied_state_dict.pth"])
def test_hf_shards_load_through_their_index_with_format_pt(ckpt_bin, tmp_path, case):
    want = torch.load(FIXTURES / case, weights_only=True)
    ckpt(ckpt_bin, "convert", FIXTURES / case, f"{tmp_path}/out/", "--max-shard-size", "1KB")
    state, data = load_through_index(tmp_path / "out" / "model.safetensors.index.json")
    shards = sorted(set(data["weight_map"].values()))
    assert len(shards) > 1
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(shards + ["model.safetensors.index.json"])
    assert data["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    assert_equal_state(state, want)


def test_a_directory_that_fits_is_one_model_safetensors(ckpt_bin, tmp_path):
    want = torch.load(FIXTURES / "cnn_state_dict.pth", weights_only=True)
    out = tmp_path / "out"
    out.mkdir()
    ckpt(ckpt_bin, "convert", FIXTURES / "cnn_state_dict.pth", out)
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert_equal_state(load_file(out / "model.safetensors"), want)


def test_a_named_file_shards_beside_itself(ckpt_bin, tmp_path):
    want = torch.load(FIXTURES / "cnn_state_dict.pth", weights_only=True)
    ckpt(ckpt_bin, "convert", FIXTURES / "cnn_state_dict.pth", tmp_path / "x.safetensors", "--max-shard-size", "2KB")
    assert not (tmp_path / "x.safetensors").exists()
    state, data = load_through_index(tmp_path / "x.safetensors.index.json")
    assert all(s.startswith("x-") for s in data["weight_map"].values())
    assert_equal_state(state, want)


def test_bin_shards_load_through_their_index(ckpt_bin, tmp_path):
    want = torch.load(FIXTURES / "tied_state_dict.pth", weights_only=True)
    ckpt(ckpt_bin, "convert", FIXTURES / "tied_state_dict.pth", f"{tmp_path}/out/", "--to", "pth",
         "--max-shard-size", "1KB")
    state, data = load_through_index(tmp_path / "out" / "pytorch_model.bin.index.json")
    assert len(set(data["weight_map"].values())) > 1
    assert_equal_state(state, want)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.Linear(4, 4)
        self.ln = torch.nn.LayerNorm(4)


class GPTish(torch.nn.Module):
    """GPT-2's naming: transformer.h.N, transformer.wte."""

    def __init__(self):
        super().__init__()
        self.transformer = torch.nn.Module()
        self.transformer.wte = torch.nn.Embedding(10, 4)
        self.transformer.h = torch.nn.ModuleList([Layer() for _ in range(3)])
        self.lm_head = torch.nn.Linear(4, 10, bias=False)


class LlamaIsh(torch.nn.Module):
    """Llama's naming: model.layers.N, model.embed_tokens."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(10, 4)
        self.model.layers = torch.nn.ModuleList([Layer() for _ in range(3)])
        self.lm_head = torch.nn.Linear(4, 10, bias=False)


@pytest.mark.parametrize("out_name", ["out/", "renamed.pth", "renamed.safetensors"])
def test_rename_rules_load_strictly_into_the_renamed_model(ckpt_bin, tmp_path, out_name):
    torch.manual_seed(0)
    src = tmp_path / "gpt.bin"
    original = GPTish().state_dict()
    torch.save(original, src)
    out = tmp_path / out_name
    # pathlib drops a trailing slash: pass the name as typed.
    ckpt(ckpt_bin, "convert", src, f"{tmp_path}/{out_name}", "--max-shard-size", "300B",
         "--rename", r"s/^transformer\.h\.(\d+)\./model.layers.$1./",
         "--rename", r"s/^transformer\.wte\./model.embed_tokens./")
    if out_name == "out/":
        state, _ = load_through_index(out / "model.safetensors.index.json")
    elif out_name.endswith(".pth"):
        state, _ = load_through_index(tmp_path / "renamed.pth.index.json")
    else:
        state, _ = load_through_index(tmp_path / "renamed.safetensors.index.json")
    model = LlamaIsh()
    model.load_state_dict(state, strict=True)
    for name, t in original.items():
        new = name.replace("transformer.h.", "model.layers.").replace("transformer.wte.", "model.embed_tokens.")
        assert torch.equal(model.state_dict()[new], t), name


class Renamed(torch.nn.Module):
    """The fixture Net's modules under other names."""

    def __init__(self):
        super().__init__()
        net = models().Net()
        self.features = torch.nn.ModuleDict({"c1": net.conv1, "c2": net.conv2, "norm": net.bn})
        self.head = torch.nn.ModuleList([net.fc1, net.fc2, net.fc3])


def test_a_rename_map_and_rules_after_strip_prefix_load_strictly(ckpt_bin, tmp_path):
    mapping = {f"fc{i}.{p}": f"head.{i - 1}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    out = tmp_path / "renamed.pth"
    ckpt(ckpt_bin, "convert", FIXTURES / "dataparallel.pth", out, "--strip-prefix", "module.",
         "--rename-map", tmp_path / "map.json",
         "--rename", r"s/^conv(\d)\./features.c\1./", "--rename", r"s/^bn\./features.norm./")
    model = Renamed()
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    original = torch.load(FIXTURES / "dataparallel.pth", weights_only=True)
    assert torch.equal(model.head[2].weight.detach(), original["module.fc3.weight"])
    assert torch.equal(model.features["norm"].running_var, original["module.bn.running_var"])


def test_refusals_leave_nothing(ckpt_bin, tmp_path):
    src = FIXTURES / "cnn_state_dict.pth"
    for args in (["--rename", r"s/^transformer\./model./"], ["--metadata", "a=b"]):
        proc = ckpt(ckpt_bin, "convert", src, tmp_path / "o.pth", *args, ok=False)
        assert proc.returncode == 2 and args[1] in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_index_with_non_ascii_names_is_what_json_dumps_prints(ckpt_bin, tmp_path):
    want = torch.load(FIXTURES / "cnn_state_dict.pth", weights_only=True)
    ckpt(ckpt_bin, "convert", FIXTURES / "cnn_state_dict.pth", f"{tmp_path}/out/", "--max-shard-size", "2KB",
         "--rename", r"s/^fc1\./fc_é𝔁./")
    # load_through_index compares the text with json.dumps(..., sort_keys=True), which escapes
    # non-ASCII (ensure_ascii) and sorts by code point.
    state, _ = load_through_index(tmp_path / "out" / "model.safetensors.index.json")
    assert_equal_state(state, {k.replace("fc1.", "fc_é𝔁."): v for k, v in want.items()})
