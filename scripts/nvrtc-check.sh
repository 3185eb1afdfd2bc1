#!/usr/bin/env bash
# Compiles every kernels/*.cu to PTX and CUBIN for sm_80 and sm_90 with NVRTC, on a machine
# without a GPU: fetches NVRTC from the PyPI wheel nvidia-cuda-nvrtc-cu12 into a cache (once),
# then runs `mixatlas gpu compile-kernels` (a binary built with --features cuda), which checks
# each PTX has `.target sm_XX` and every kernel entry, and each CUBIN is an ELF image.
#
#   scripts/nvrtc-check.sh            fetch if needed, then compile and check (CI)
#   scripts/nvrtc-check.sh libdir     fetch if needed, print the library directory
#
# Environment: MIXATLAS_NVRTC_CACHE (default $HOME/.cache/mixatlas/nvrtc),
# MIXATLAS_NVRTC_WHEEL (a wheel file to use instead of downloading), MIXATLAS_NVRTC_VERSION
# (default 12.9.86, the version checked), MIXATLAS_BIN (default ${CARGO_TARGET_DIR:-target}/release/mixatlas),
# MIXATLAS_KERNEL_OUT (default ${CARGO_TARGET_DIR:-target}/kernels: PTX, CUBIN and source
# hashes, usable as MIXATLAS_KERNEL_DIR on a GPU machine without NVRTC).
# No network and no cached wheel is an error, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${MIXATLAS_NVRTC_CACHE:-$HOME/.cache/mixatlas/nvrtc}"
LIBDIR="$CACHE/nvidia/cuda_nvrtc/lib"
TARGET="${CARGO_TARGET_DIR:-target}"

fail() { echo "nvrtc-check: error: $*" >&2; exit 1; }

fetch() {
  if [ -e "$LIBDIR/libnvrtc.so.12" ]; then return 0; fi
  mkdir -p "$CACHE/wheel"
  local wheel="${MIXATLAS_NVRTC_WHEEL:-}"
  if [ -z "$wheel" ]; then
    wheel="$(ls "$CACHE"/wheel/nvidia_cuda_nvrtc_cu12-*.whl 2>/dev/null | head -n1 || true)"
  fi
  if [ -z "$wheel" ]; then
    python3 -m pip --version >/dev/null 2>&1 \
      || fail "pip is missing (python3 -m pip); install python3-pip, or set MIXATLAS_NVRTC_WHEEL to a downloaded nvidia-cuda-nvrtc-cu12 wheel"
    local spec="nvidia-cuda-nvrtc-cu12==${MIXATLAS_NVRTC_VERSION:-12.9.86}"
    echo "nvrtc-check: downloading $spec (PyPI wheel, ~90 MB) into $CACHE/wheel" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$CACHE/wheel" "$spec" >&2 \
      || fail "could not download $spec (no network?); set MIXATLAS_NVRTC_WHEEL to a local copy of the wheel"
    wheel="$(ls "$CACHE"/wheel/nvidia_cuda_nvrtc_cu12-*.whl | head -n1)"
  fi
  [ -f "$wheel" ] || fail "no such wheel: $wheel"
  # A wheel is a zip; python's zipfile needs no unzip binary.
  python3 -m zipfile -e "$wheel" "$CACHE" || fail "could not unpack $wheel"
  [ -e "$LIBDIR/libnvrtc.so.12" ] || fail "$wheel has no nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
}

fetch
# cudarc also looks for the unversioned name.
ln -sf libnvrtc.so.12 "$LIBDIR/libnvrtc.so"

if [ "${1:-}" = libdir ]; then
  echo "$LIBDIR"
  exit 0
fi

BIN="${MIXATLAS_BIN:-$TARGET/release/mixatlas}"
[ -x "$BIN" ] || fail "$BIN not found; build it first: cargo build --release --features cuda"
OUT="${MIXATLAS_KERNEL_OUT:-$TARGET/kernels}"
LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  "$BIN" gpu compile-kernels --arch sm_80,sm_90 --out "$OUT"
