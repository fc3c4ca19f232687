#!/usr/bin/env bash
# Speed and memory of ckpt against `cp` and the Python route, on a ~1.4 GB GPT-2-medium-shaped
# checkpoint written by real PyTorch. Prints wall times (median, min, max over $REPS rounds),
# ratios of the medians, and peak RSS.
#
#   bench/run.sh [PYTHON]     PYTHON: an interpreter with torch and safetensors
#                             (default: .venv/bin/python, else python3)
#
# Machines here are noisy (shared hosts, a disk mounted with online discard, page-cache
# writeback of earlier runs), so every round runs every command once, in a shuffled order, each
# after its outputs are deleted, `sync` and a pause of $SETTLE seconds: all commands meet the
# same conditions, and medians compare them. `cp` and `ckpt convert` into a new file leave the
# data to the kernel's writeback; `ckpt convert --sync` flushes it to disk before returning,
# like `cp && sync`. All four rows are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/rounds.sh
py=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
reps=${REPS:-5}
settle=${SETTLE:-2}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/ckpt-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

cargo build --release --quiet
ckpt=$PWD/target/release/ckpt
"$py" bench/make_gpt2_medium.py "$dir/x.pth"
"$ckpt" convert "$dir/x.pth" "$dir/x.safetensors" > /dev/null   # what `diff` compares x.pth with
cat "$dir/x.pth" "$dir/x.safetensors" > /dev/null   # every run reads from the page cache, so they compare fairly

python_route='import sys, torch, safetensors.torch as st
sd = torch.load(sys.argv[1], weights_only=True)
st.save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])'

# The Python route for stats: what a user writes today to look for NaN and take each tensor's
# numbers (torch.load with mmap, then isnan/isinf/aminmax/mean/std per tensor).
python_stats='import sys, torch
sd = torch.load(sys.argv[1], weights_only=True, mmap=True)
for k, v in sd.items():
    x = v.double()
    fin = x[torch.isfinite(x)]
    print(k, int(torch.isnan(x).sum()), int(torch.isinf(x).sum()), *torch.aminmax(fin), fin.mean(), fin.std())'

names=(cp cp_sync convert convert_sync python bf16 inspect stats check hash diff python_stats)
run_one() {
  case $1 in
    cp) cp "$dir/x.pth" "$dir/out.copy" ;;
    cp_sync) cp "$dir/x.pth" "$dir/out.copy" && sync "$dir/out.copy" ;;
    convert) "$ckpt" convert "$dir/x.pth" "$dir/out.safetensors" ;;
    convert_sync) "$ckpt" convert "$dir/x.pth" "$dir/out.safetensors" --sync ;;
    python) "$py" -c "$python_route" "$dir/x.pth" "$dir/out.safetensors" ;;
    bf16) "$ckpt" convert "$dir/x.pth" "$dir/out.safetensors" --dtype bf16 ;;
    inspect) "$ckpt" inspect "$dir/x.pth" ;;
    stats) "$ckpt" stats "$dir/x.pth" ;;
    check) "$ckpt" check "$dir/x.pth" ;;
    diff) "$ckpt" diff "$dir/x.pth" "$dir/x.safetensors" ;;
    hash) "$ckpt" inspect --hash "$dir/x.pth" ;;
    python_stats) "$py" -c "$python_stats" "$dir/x.pth" ;;
  esac
}
export -f run_one
export dir ckpt py python_route python_stats

: > "$dir/times"
rounds "${names[@]}"

size=$(stat -c %s "$dir/x.pth")
tensors=$("$ckpt" inspect --json "$dir/x.pth" | "$py" -c 'import json,sys; print(len(json.load(sys.stdin)["tensors"]))')
"$py" - "$dir/times" "$size" "$tensors" "$reps" <<'EOF'
import statistics, sys
path, size, tensors, reps = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = {}
for line in open(path):
    parts = line.split()
    if len(parts) == 3:
        runs.setdefault(parts[0], []).append((int(parts[1]) / 1e6, int(parts[2])))
label = {
    "cp": "cp x.pth y",
    "cp_sync": "cp x.pth y && sync y",
    "convert": "ckpt convert x.pth x.safetensors",
    "convert_sync": "ckpt convert ... --sync",
    "python": "python: torch.load + save_file",
    "bf16": "ckpt convert ... --dtype bf16",
    "inspect": "ckpt inspect x.pth",
    "stats": "ckpt stats x.pth",
    "check": "ckpt check x.pth",
    "diff": "ckpt diff x.pth x.safetensors",
    "hash": "ckpt inspect --hash x.pth",
    "python_stats": "python: torch.load(mmap) + reductions",
}
med = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
print(f"\ncheckpoint: {size} bytes ({tensors} tensors); {reps} rounds, times in seconds")
print(f"{'command':36} {'median':>7} {'min':>7} {'max':>7} {'peak RSS':>10}")
for k in label:
    ts = [t for t, _ in runs[k]]
    rss = max(m for _, m in runs[k]) // 1024
    print(f"{label[k]:36} {med[k]:7.3f} {min(ts):7.3f} {max(ts):7.3f} {rss:6d} MiB")
r = lambda a, b: med[a] / med[b]
print()
print(f"convert / cp                  {r('convert', 'cp'):5.2f}   (target <= 1.2)")
print(f"convert --sync / (cp && sync) {r('convert_sync', 'cp_sync'):5.2f}   (both flush to disk)")
print(f"python / convert              {r('python', 'convert'):5.2f}   (target >= 4)")
print(f"bf16 convert / python         {r('bf16', 'python'):5.2f}   (target <= 1)")
print(f"inspect                       {med['inspect']:5.3f} s (target < 0.05; includes starting bash)")
print(f"stats / cp                    {r('stats', 'cp'):5.2f}   (target <= 1.0)")
print(f"check / cp                    {r('check', 'cp'):5.2f}   (target <= 1.0)")
print(f"inspect --hash / cp           {r('hash', 'cp'):5.2f}   (target <= 1.0)")
print(f"diff pth vs safetensors / cp  {r('diff', 'cp'):5.2f}   (target <= 1.5)")
print(f"bf16 convert / cp             {r('bf16', 'cp'):5.2f}   (target <= 1.2)")
print(f"python stats / stats          {r('python_stats', 'stats'):5.2f}   (target >= 5)")
EOF
