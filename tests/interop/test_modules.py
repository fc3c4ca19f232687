"""`ckpt inspect --modules --json` on whole models the installed torch saves now (zip, legacy,
scripted): every module's path, class and plain attributes, the runs of identical blocks and the
dropout rates, against what Python reads from the live model (fixtures/gen_modules.py's rules).
The pinned and the newest torch may give modules different attributes; ckpt shows what the file
holds either way."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import REPO

sys.path.insert(0, str(REPO / "fixtures"))
import gen_modules  # noqa: E402


class Mixed(nn.Module):
    """Modules the committed fixtures do not hold: a transformer encoder (attention dropout,
    three identical layers deep-copied by torch), a plain RNN, transposed and 3-d convolutions,
    group and instance norms, dropout of every kind."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.2, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
        self.rnn = nn.RNN(8, 8, num_layers=3, nonlinearity="relu", dropout=0.55)
        self.up = nn.ConvTranspose2d(4, 2, kernel_size=2, stride=2, output_padding=0)
        self.vol = nn.Conv3d(2, 2, kernel_size=(1, 3, 3), padding="same", padding_mode="reflect")
        self.gn = nn.GroupNorm(2, 4, eps=1e-4)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.drops = nn.ModuleList([nn.Dropout1d(0.1), nn.Dropout3d(0.2), nn.AlphaDropout(0.3),
                                    nn.FeatureAlphaDropout(0.9)])
        self.acts = nn.Sequential(nn.Hardtanh(-2.0, 2.0), nn.Softplus(beta=2, threshold=10), nn.PReLU(3),
                                  nn.CELU(alpha=1.5), nn.Threshold(0.1, 20.0))
        self.pool = nn.AdaptiveAvgPool2d((2, 1))
        self.flat = nn.Flatten(start_dim=1)

    def forward(self, x):
        return self.encoder(x)


def inspect(ckpt_bin, path):
    out = subprocess.run([ckpt_bin, "inspect", "--modules", "--json", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def same(got, want, name):
    assert got["format"] == want["format"], name
    assert [m["path"] for m in got["modules"]] == [m["path"] for m in want["modules"]], name
    for g, w in zip(got["modules"], want["modules"]):
        at = f"{name} {w['path']!r}"
        assert g["class"] == w["class"], at
        assert g["depth"] == w["depth"], at
        assert g.get("torch_class") == w.get("torch_class"), at
        assert g["attributes"] == w["attributes"], at
    assert got["repeats"] == want["repeats"], name
    assert got["dropout"] == want["dropout"], name


@pytest.mark.parametrize("how", ["zip", "legacy", "scripted"])
def test_modules_of_a_model_saved_now(ckpt_bin, tmp_path, how):
    torch.manual_seed(0)
    model = Mixed()
    model.acts.eval()
    path = tmp_path / f"mixed_{how}.pt"
    if how == "scripted":
        if not hasattr(torch.jit, "script"):
            pytest.skip(f"torch {torch.__version__} has no torch.jit.script")
        model.eval()
        torch.jit.save(torch.jit.script(model), path)
        want = gen_modules.script_expected(torch.jit.load(path), model, "torchscript")
    else:
        kwargs = {"_use_new_zipfile_serialization": False} if how == "legacy" else {}
        torch.save(model, path, **kwargs)
        want = gen_modules.eager_expected(torch.load(path, weights_only=False), "pth-legacy" if kwargs else "pth-zip")
    assert any(r["count"] == 3 for r in want["repeats"]), "the encoder's layers are one run"
    assert any(d["kind"] == "attention" for d in want["dropout"])
    same(inspect(ckpt_bin, path), want, how)
    text = subprocess.run([ckpt_bin, "inspect", str(path)], capture_output=True, text=True, check=True).stdout
    assert f"dropout   {want['dropout_line']}\n" in text


def test_modules_is_refused_for_a_state_dict(ckpt_bin, tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(Mixed().state_dict(), path)
    out = subprocess.run([ckpt_bin, "inspect", "--modules", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "holds tensors only" in out.stderr
