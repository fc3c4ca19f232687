#!/usr/bin/env bash
# Consolidating a distributed checkpoint: a ~1.4 GB GPT-2-medium-shaped DCP directory saved by
# 4 gloo ranks (bench/make_dcp.py: Shard(0), Shard(1), an uneven split, replicated norms).
# Compares `ckpt convert dcp_dir out.safetensors` with `cp -r dcp_dir` (wall, target <= 1.3x)
# and torch's route (dcp_to_torch_save, torch.load, save_file), with peak RSS of each
# (ckpt's target <= 64 MiB). Same method as bench/run.sh: shuffled rounds, outputs deleted,
# `sync` and a pause before each command, medians compared. cp and convert alternate in REPS
# rounds of their own; torch's route, 20-30 times slower and writing twice the checkpoint,
# runs TORCH_REPS times after them, so its writeback does not fall into their timings.
#
#   bench/dcp.sh [PYTHON]     PYTHON: an interpreter with torch and safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/rounds.sh
py=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
reps=${REPS:-7}
torch_reps=${TORCH_REPS:-2}
settle=${SETTLE:-2}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/ckpt-bench-dcp.XXXXXX")
trap 'rm -rf "$dir"' EXIT

cargo build --release --quiet --bin ckpt
ckpt=$PWD/target/release/ckpt
"$py" bench/make_dcp.py "$dir/x" 2> /dev/null
cat "$dir"/x/* > /dev/null   # every run reads from the page cache, so they compare fairly

torch_route='import sys, torch, safetensors.torch as st
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
dcp_to_torch_save(sys.argv[1], sys.argv[2] + ".pth")
sd = torch.load(sys.argv[2] + ".pth", weights_only=True)["model"]
st.save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])'

run_one() {
  case $1 in
    cp) cp -r "$dir/x" "$dir/out.copy" ;;
    convert) "$ckpt" convert "$dir/x" "$dir/out.safetensors" ;;
    torch) "$py" -c "$torch_route" "$dir/x" "$dir/out.safetensors" ;;
  esac
}
export -f run_one
export dir ckpt py torch_route

: > "$dir/times"
rounds cp convert
reps=$torch_reps rounds torch

# The two consolidations agree (names, dtypes, bytes), checked once outside the timing.
# torch's route keeps the state dict's "model" level, so ckpt selects it to match the names.
rm -rf "$dir"/out.*
"$ckpt" convert "$dir/x" "$dir/out.safetensors" --select model > /dev/null
"$py" -c "$torch_route" "$dir/x" "$dir/out.torch.safetensors"
if cmp -s "$dir/out.safetensors" "$dir/out.torch.safetensors"; then
  echo "ckpt convert --select model is byte-identical to torch's route"
else
  echo "ckpt convert --select model DIFFERS from torch's route"
fi

size=$(du -sb "$dir/x" | cut -f1)
"$py" - "$dir/times" "$size" "$reps" "$torch_reps" "$(uptime)" <<'EOF'
import statistics, sys
path, size, reps, torch_reps, load = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
runs = {}
for line in open(path):
    parts = line.split()
    if len(parts) == 3:
        runs.setdefault(parts[0], []).append((int(parts[1]) / 1e6, int(parts[2])))
label = {
    "cp": "cp -r dcp_dir",
    "convert": "ckpt convert dcp_dir out.safetensors",
    "torch": "torch: dcp_to_torch_save + save_file",
}
med = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
print(f"\nDCP checkpoint: {size} bytes, 4 ranks; {reps} rounds of cp and convert, {torch_reps} of torch;")
print(f"times in seconds; {load.strip()}")
print(f"{'command':40} {'median':>7} {'min':>7} {'max':>7} {'peak RSS':>10}")
for k in label:
    ts = [t for t, _ in runs[k]]
    rss = max(m for _, m in runs[k]) // 1024
    print(f"{label[k]:40} {med[k]:7.3f} {min(ts):7.3f} {max(ts):7.3f} {rss:6d} MiB")
print("every run, in order:")
for k in ("cp", "convert"):
    print(f"  {k:8}" + " ".join(f"{t:.3f}" for t, _ in runs[k]))
print()
print(f"convert / cp -r   {med['convert'] / med['cp']:5.2f}   (target <= 1.3)")
print(f"torch / convert   {med['torch'] / med['convert']:5.2f}")
EOF
