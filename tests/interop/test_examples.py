"""The library examples (examples/*.rs) checked against PyTorch.

Environment:
  CKPT_EXAMPLES_DIR  the built examples: `cargo build --release --features ndarray --examples`,
                     then CKPT_EXAMPLES_DIR=target/release/examples
  CKPT_FIXTURES      folder with the fixtures (default: <repo>/fixtures)

* linear_forward reads a Linear layer's weight and bias from a fixture into ndarray and computes
  x Wᵀ + b: the output equals torch.nn.functional.linear of the same input and the weights
  torch.load reads, within 1e-6.
* write_weights builds float32, float16 and int64 arrays and writes weights.pth and
  weights.safetensors: torch.load(weights_only=True), libtorch's C++ unpickler and
  safetensors.torch.load_file give exactly the names, dtypes, shapes and values it printed;
  with --force-zip64 the .pth has zip64 records and still loads.
"""

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("CKPT_FIXTURES") or REPO / "fixtures").resolve()


@pytest.fixture(scope="session")
def examples_dir():
    value = os.environ.get("CKPT_EXAMPLES_DIR")
    if not value:
        pytest.fail("CKPT_EXAMPLES_DIR is not set: `cargo build --release --features ndarray --examples` and "
                    "export CKPT_EXAMPLES_DIR=target/release/examples", pytrace=False)
    return Path(value).resolve()


def run_example(examples_dir, name, *args):
    exe = examples_dir / name
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        pytest.fail(f"{exe} is not an executable file", pytrace=False)
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{name} exited {proc.returncode}:\n{proc.stderr}", pytrace=False)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case,layer", [("cnn_state_dict.pth", "fc3"), ("cnn_state_dict.pth", "fc2"),
                                        ("model.safetensors", "out")])
def test_linear_forward_matches_torch(examples_dir, case, layer):
    src = FIXTURES / case
    sd = st.load_file(src) if case.endswith(".safetensors") else torch.load(src, weights_only=True)
    got = run_example(examples_dir, "linear_forward", src, layer)
    x = torch.tensor(got["x"], dtype=torch.float32)
    want = torch.nn.functional.linear(x, sd[f"{layer}.weight"], sd[f"{layer}.bias"])
    y = torch.tensor(got["y"], dtype=torch.float32)
    assert y.shape == want.shape
    assert torch.allclose(y, want, rtol=0, atol=1e-6), (y - want).abs().max()


def check_written(loaded, written):
    assert set(loaded) == {t["name"] for t in written}
    for t in written:
        got = loaded[t["name"]]
        assert str(got.dtype) == f"torch.{t['dtype']}", t["name"]
        assert list(got.shape) == t["shape"], t["name"]
        want = torch.tensor(t["values"], dtype=torch.float64 if got.is_floating_point() else torch.int64)
        # float16 and float32 values widen to float64 exactly, so equality is exact.
        assert torch.equal(got.reshape(-1).to(want.dtype), want), t["name"]


@pytest.mark.parametrize("zip64", [False, True])
def test_written_weights_load_in_torch(examples_dir, tmp_path, zip64):
    written = run_example(examples_dir, "write_weights", tmp_path, *(["--force-zip64"] if zip64 else []))["tensors"]
    pth = tmp_path / "weights.pth"
    loaded = torch.load(pth, weights_only=True)
    assert list(loaded) == [t["name"] for t in written], "a state_dict in the order it was built"
    check_written(loaded, written)
    check_written(torch._C._pickle_load_obj(pth.read_bytes()), written)
    check_written(st.load_file(tmp_path / "weights.safetensors"), written)
    with zipfile.ZipFile(pth) as z:
        assert z.testzip() is None, "CRCs"
    raw = pth.read_bytes()
    has_zip64 = b"PK\x06\x06" in raw and b"PK\x06\x07" in raw
    assert has_zip64 == zip64, "zip64 end records exactly when forced"
