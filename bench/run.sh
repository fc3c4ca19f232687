#!/usr/bin/env bash
# Speed and memory of ckpt against `cp` and the Python route, on a ~1.4 GB GPT-2-medium-shaped
# checkpoint written by real PyTorch. Prints wall times (best of $REPS), ratios and peak RSS.
#
#   bench/run.sh [PYTHON]     PYTHON: an interpreter with torch and safetensors
#                             (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
reps=${REPS:-3}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/ckpt-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

cargo build --release --quiet
ckpt=target/release/ckpt
"$py" bench/make_gpt2_medium.py "$dir/x.pth"
cat "$dir/x.pth" > /dev/null   # every run reads from the page cache, so they compare fairly

# best wall seconds and its peak RSS (KiB) over $reps runs: prints "SECONDS KIB"
measure() {
  local best="" rss=""
  for _ in $(seq "$reps"); do
    rm -f "$dir"/out.*
    /usr/bin/time -f '%e %M' -o "$dir/time" "$@" > /dev/null
    read -r t m < "$dir/time"
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; rss=$m; fi
  done
  echo "$best $rss"
}

python_route='import sys, torch, safetensors.torch as st
sd = torch.load(sys.argv[1], weights_only=True)
st.save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])'

read -r t_cp m_cp < <(measure cp "$dir/x.pth" "$dir/out.copy")
read -r t_conv m_conv < <(measure "$ckpt" convert "$dir/x.pth" "$dir/out.safetensors")
read -r t_py m_py < <(measure "$py" -c "$python_route" "$dir/x.pth" "$dir/out.safetensors")
read -r t_bf16 m_bf16 < <(measure "$ckpt" convert "$dir/x.pth" "$dir/out.safetensors" --dtype bf16)
read -r t_insp m_insp < <(measure "$ckpt" inspect "$dir/x.pth")

size=$(stat -c %s "$dir/x.pth")
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }
printf '\ncheckpoint: %s bytes (%s tensors)\n' "$size" "$("$ckpt" inspect --json "$dir/x.pth" | "$py" -c 'import json,sys; print(len(json.load(sys.stdin)["tensors"]))')"
printf '%-44s %9s %12s\n' "command" "wall s" "peak RSS"
row() { printf '%-44s %9s %9s MiB\n' "$1" "$2" "$(( $3 / 1024 ))"; }
row "cp x.pth y" "$t_cp" "$m_cp"
row "ckpt convert x.pth x.safetensors" "$t_conv" "$m_conv"
row "python: torch.load + save_file" "$t_py" "$m_py"
row "ckpt convert x.pth x.safetensors --dtype bf16" "$t_bf16" "$m_bf16"
row "ckpt inspect x.pth" "$t_insp" "$m_insp"
printf '\nconvert / cp            %s   (target <= 1.2)\n' "$(ratio "$t_conv" "$t_cp")"
printf 'python / convert        %s   (target >= 4)\n' "$(ratio "$t_py" "$t_conv")"
printf 'bf16 convert / python   %s   (target <= 1)\n' "$(ratio "$t_bf16" "$t_py")"
printf 'inspect                 %s s (target < 0.05)\n' "$t_insp"
