#!/usr/bin/env bash
# Builds ckpt with the `tch` feature (`ckpt verify`: load checkpoints with libtorch) on a fresh
# machine with Rust, Python 3 and network access.
#
#   scripts/build-tch.sh [build|test|gpu-bin|env]...     (default: build)
#
#   build    cargo build --release --features tch      -> target/tch/release/ckpt
#   test     cargo test --release --features tch       (the whole suite, verify tests included)
#   gpu-bin  a copy without debug info for scripts/gpu-check.sh -> target/tch/ckpt-gpu
#   env      print the exports, to build by hand: eval "$(scripts/build-tch.sh env)"
#
# libtorch comes from PyTorch 2.11.0 installed from PyPI into a venv (tch 0.24.0 / torch-sys
# 0.24.0 accept exactly 2.11.0, so no LIBTORCH_BYPASS_VERSION_CHECK). PyPI's Linux x86_64 wheel
# is the CUDA build (2.11.0+cu130, with libtorch_cuda.so and the nvidia-* wheels, ~4 GB);
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the CPU-only build instead (then
# `--device cuda` reports that this build has no CUDA).
#
# Environment: VENV (default ~/.cache/ckpt/torch-2.11.0; kept outside the checkout so that
# tools copying the working tree do not copy 4 GB), TORCH_INDEX, CARGO_TARGET_DIR (default
# target/tch, so the libtorch build does not disturb the default target/).
#
# The binary gets an rpath to the venv's torch/lib (build.rs), so it runs without
# LD_LIBRARY_PATH on this machine. Elsewhere, point LD_LIBRARY_PATH at a PyTorch 2.11.0 lib dir:
#   LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib ckpt verify ...
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ckpt/torch-$TORCH_VERSION}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/tch}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "== creating $VENV with torch==$TORCH_VERSION" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==$TORCH_VERSION"
fi
VENV=$(cd "$VENV" && pwd)

# torch-sys (LIBTORCH_USE_PYTORCH=1) asks the venv's python where libtorch's headers and
# libraries are; VIRTUAL_ENV makes it run `python` (the venv's) rather than `python3`.
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
unset LIBTORCH LIBTORCH_INCLUDE LIBTORCH_LIB LIBTORCH_STATIC LIBTORCH_BYPASS_VERSION_CHECK

show_binary() {
  local bin=$CARGO_TARGET_DIR/release/ckpt
  [ -x "$bin" ] || return 0
  echo "== $bin"
  readelf -d "$bin" | grep -E 'RUNPATH|RPATH|NEEDED.*(torch|c10)' || true
}

[ $# -gt 0 ] || set -- build
for step in "$@"; do
  case "$step" in
    env)
      printf 'export VIRTUAL_ENV=%q PATH=%q LIBTORCH_USE_PYTORCH=1 CARGO_TARGET_DIR=%q\n' "$VENV" "$PATH" "$CARGO_TARGET_DIR"
      ;;
    build)
      python -c 'import torch; print("== torch", torch.__version__, "cuda build:", torch.version.cuda)' >&2
      time cargo build --release --features tch
      show_binary
      ;;
    test)
      time cargo test --release --features tch
      ;;
    gpu-bin)
      [ -x "$CARGO_TARGET_DIR/release/ckpt" ] || cargo build --release --features tch
      objcopy --strip-debug "$CARGO_TARGET_DIR/release/ckpt" "$CARGO_TARGET_DIR/ckpt-gpu"
      ls -l "$CARGO_TARGET_DIR/ckpt-gpu"
      ;;
    *)
      echo "unknown step '$step' (build, test, gpu-bin, env)" >&2
      exit 2
      ;;
  esac
done
