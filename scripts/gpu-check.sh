#!/usr/bin/env bash
# `ckpt verify` on a real GPU, against real PyTorch. For a GPU machine that has PyTorch 2.11.0
# (python3 in /opt/torch/.venv) but no Rust toolchain and no network: it runs a ckpt binary
# built elsewhere with `scripts/build-tch.sh build gpu-bin`.
#
#   scripts/gpu-check.sh [CKPT_BIN]      (default target/tch/release/ckpt; target/tch/ckpt-gpu
#                                         is the same binary without debug info, small enough
#                                         to copy around)
#
# Environment: PYTHON (default /opt/torch/.venv/bin/python3, else python3), CKPT_GPU_OUT (where
# the logs and JSON reports go; default $OUT if set, else a temporary directory).
#
# What it does: saves with real PyTorch, on cuda:0, a small model's state_dict (an OrderedDict
# whose storages are tagged cuda:0), a plain dict of views of one CUDA tensor, and a dict with
# dtypes libtorch's zip loader cannot read; then
#   ckpt verify model.pth --device cuda:0          (tch-zip-dict: libtorch loads it onto the GPU)
#   ckpt verify views.pth --device cuda:0          (tch-zip: views, strides, shared storage)
#   ckpt verify mixed.pth --device cuda:0          (bytes path on the GPU; uint16 skipped)
#   ckpt verify model.pth --device cpu             (cuda:0 tags mapped to the CPU)
#   ckpt verify model.pth --device cuda:N          (N = device count: must fail with exit 2)
#   ckpt convert model.pth cpu.pth --device cpu    (retag as cpu)
#   ckpt verify cpu.pth --device cuda:0            (the converted file, moved back to the GPU)
#   PyTorch: torch.load(cpu.pth) needs no map_location, every storage says cpu, and every tensor
#            equals torch.load(model.pth, map_location="cpu")
# and prints a summary. Exit status: 0 when every step passed.
set -uo pipefail

BIN=${1:-target/tch/release/ckpt}
# CKPT_GPU_CHECK_DEVICE=cpu runs the same steps without a GPU (to try the script out).
DEV=${CKPT_GPU_CHECK_DEVICE:-cuda:0}
PY=${PYTHON:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=python3
OUTDIR=${CKPT_GPU_OUT:-${OUT:-$(mktemp -d)}}
mkdir -p "$OUTDIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

declare -a RESULTS=()
FAILED=0
record() { # name, PASS|FAIL|SKIP, detail
  RESULTS+=("$(printf '%-4s  %-42s %s' "$2" "$1" "${3:-}")")
  [ "$2" = FAIL ] && FAILED=1
  return 0
}

echo "== machine"
command -v nvidia-smi >/dev/null && nvidia-smi -L
if ! TORCH_DIR=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__))'); then
  echo "cannot import torch with $PY" >&2
  exit 2
fi
export LD_LIBRARY_PATH="$TORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())'
NDEV=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
ABSENT="cuda:$NDEV"  # one past the last device: must be refused
echo "== $BIN (LD_LIBRARY_PATH=$TORCH_DIR/lib)"
if [ ! -x "$BIN" ]; then
  echo "no ckpt binary at $BIN" >&2
  exit 2
fi
ldd "$BIN" | grep -E 'torch|c10|not found'
if ldd "$BIN" | grep -q 'not found'; then record "libraries resolve" FAIL "ldd: not found"; else record "libraries resolve" PASS; fi
if ldd "$BIN" | grep -q 'libtorch_cuda'; then record "libtorch_cuda linked" PASS; else record "libtorch_cuda linked" FAIL "built against a CPU-only libtorch?"; fi

echo "== saving with PyTorch on $DEV"
cd "$WORK"
if ! DEV="$DEV" "$PY" - <<'EOF'; then
import os, torch, torch.nn as nn
torch.manual_seed(0)
dev = torch.device(os.environ["DEV"])

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 10)
        self.head = nn.Linear(10, 10, bias=False)
    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(self.fc(x.flatten(1)))

m = Net().to(dev)
m.train()
m(torch.randn(4, 3, 8, 8, device=dev))   # BatchNorm running stats move off their initial values
torch.save(m.state_dict(), "model.pth")  # an OrderedDict; every storage tagged cuda:0

base = torch.randn(6, 8, device=dev)
torch.save({                              # a plain dict: libtorch's zip loader reads it as is
    "base": base,
    "t": base.t(),
    "rows": base[1:4],
    "step": base[:, ::3],
    "expand": base[0].expand(3, 8),
    "half": base.half(),
    "bf16": base.bfloat16(),
    "i64": torch.arange(10, device=dev),
    "mask": base > 0,
    "scalar": base[2, 3],
}, "views.pth")

mixed = {"f32": torch.randn(5, device=dev), "f8": torch.randn(4, 4, device=dev).to(torch.float8_e4m3fn)}
try:
    mixed["u16"] = torch.arange(6, device=dev, dtype=torch.int32).to(torch.uint16)
except Exception as e:  # not every build has uint16 kernels on CUDA
    mixed["u16"] = torch.arange(6, dtype=torch.int32).to(torch.uint16).to(dev)
torch.save(mixed, "mixed.pth")

tags = set()
torch.load("model.pth", map_location=lambda s, loc: (tags.add(loc), s)[1])
assert tags == {str(dev)}, tags
print("saved model.pth (tags %s), views.pth, mixed.pth" % sorted(tags))
EOF
  record "save on $DEV (PyTorch)" FAIL
else
  record "save on $DEV (PyTorch)" PASS
fi

logof() { printf '%s/%s.log' "$OUTDIR" "$(printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_')"; }

# ckpt_step NAME EXPECTED_RC ARGS...: runs ckpt, keeps its output, compares the exit code.
ckpt_step() {
  local name=$1 want=$2; shift 2
  local log; log=$(logof "$name")
  echo "== ckpt $*"
  timeout 180 "$BIN" "$@" >"$log" 2>"$log.err"
  local rc=$?
  tail -n 40 "$log" "$log.err"
  if [ "$rc" = "$want" ]; then record "$name" PASS "exit $rc"; else record "$name" FAIL "exit $rc, expected $want (log: $log)"; fi
}

# json_check NAME FILE LOADER DEVICE: the JSON report says DEVICE, nothing differs or is missing,
# only dtypes without a tch kind are skipped, and every tensor went through LOADER ("any": any).
json_check() {
  local name=$1 file=$2 loader=$3 device=$4
  if "$PY" - "$file" "$loader" "$device" <<'EOF'; then record "$name" PASS; else record "$name" FAIL "$file"; fi
import json, sys
r = json.load(open(sys.argv[1]))
loader, device = sys.argv[2], sys.argv[3]
print(r["device"], r["counts"], "loaders", sorted({t["loader"] for t in r["tensors"]}))
bad = [t for t in r["tensors"] if t["status"] != "matched" and not (t["status"] == "skipped" and t["dtype"] in ("uint16", "uint32", "uint64", "float8_e8m0fnu"))]
assert r["ok"] and not bad, bad
assert r["device"] == device, r["device"]
assert r["tensors"], "no tensors"
if loader != "any":
    wrong = [(t["name"], t["loader"]) for t in r["tensors"] if t["loader"] != loader]
    assert not wrong, wrong
EOF
}

ckpt_step "verify model.pth $DEV" 0 verify model.pth --device "$DEV"
ckpt_step "verify model.pth $DEV --json" 0 verify model.pth --device "$DEV" --json
json_check "  all tch-zip-dict, matched" "$(logof "verify model.pth $DEV --json")" tch-zip-dict "$DEV"
ckpt_step "verify views.pth $DEV --json" 0 verify views.pth --device "$DEV" --json
json_check "  all tch-zip, matched" "$(logof "verify views.pth $DEV --json")" tch-zip "$DEV"
ckpt_step "verify mixed.pth $DEV --json" 0 verify mixed.pth --device "$DEV" --json
json_check "  bytes path, u16 skipped" "$(logof "verify mixed.pth $DEV --json")" bytes "$DEV"
ckpt_step "verify model.pth cpu" 0 verify model.pth --device cpu
ckpt_step "verify model.pth $ABSENT (absent)" 2 verify model.pth --device "$ABSENT"
ckpt_step "convert model.pth cpu.pth --device cpu" 0 convert model.pth cpu.pth --device cpu
if [ -f cpu.pth ]; then
  ckpt_step "verify cpu.pth $DEV" 0 verify cpu.pth --device "$DEV"
  ckpt_step "verify cpu.pth $DEV --json" 0 verify cpu.pth --device "$DEV" --json
  json_check "  converted: matched on $DEV" "$(logof "verify cpu.pth $DEV --json")" any "$DEV"
  echo "== PyTorch reads cpu.pth"
  if "$PY" - <<'EOF'; then record "torch.load(cpu.pth) == original" PASS; else record "torch.load(cpu.pth) == original" FAIL; fi
import torch
tags = set()
got = torch.load("cpu.pth", map_location=lambda s, loc: (tags.add(loc), s)[1])
assert tags == {"cpu"}, "storage tags %s" % tags
plain = torch.load("cpu.pth")              # no map_location needed any more
want = torch.load("model.pth", map_location="cpu")
assert list(got) == list(want), (list(got), list(want))
for k in want:
    a, b = plain[k], want[k]
    assert a.device.type == "cpu", (k, a.device)
    assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), k
print("cpu.pth: %d tensors, tags %s, all equal to model.pth's" % (len(want), sorted(tags)))
EOF
else
  record "verify cpu.pth $DEV" FAIL "convert wrote no cpu.pth"
fi

cp -f "$WORK"/*.pth "$OUTDIR"/ 2>/dev/null || true
echo
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "== summary: device $DEV, GPU ${GPU_NAME:-none found}, $BIN"
printf '%s\n' "${RESULTS[@]}"
if [ "$FAILED" = 0 ]; then echo "GPU CHECK PASSED"; else echo "GPU CHECK FAILED (logs in $OUTDIR)"; fi
exit "$FAILED"
