#!/usr/bin/env bash
# The GPU machine's check (docs/gpu.md): builds with --features cuda (and cuda-train when nvcc
# exists), then `mixatlas gpu check`: the fused sampling kernel against the CPU sampler bit for
# bit (i.i.d. and blend), its bandwidth against a device memcpy of the same bytes (B=256,
# T=4096, median of 50 CUDA-event timings), an NCCL all-reduce on a 1-rank communicator, and a
# short proxy training run on --device cuda when cuda-train was built. Prints one table and
# writes it as markdown.
#
#   scripts/gpu-check.sh [OUT.md]          (default: $CARGO_TARGET_DIR or target, /gpu-check.md)
#   scripts/gpu-check.sh --prepare         (on a CPU machine with cargo: see below)
#
# Needs: the NVIDIA driver (libcuda.so.1), and either cargo with the crate's dependencies
# available (vendored or a warm ~/.cargo when the machine is offline) or a prebuilt binary.
# GPU machines without Rust or network (the `device` tool's H200s): run `--prepare` here
# first. It builds `--features cuda` (no MPI: the GPU machine has no libmpi), strips the binary
# into .gpu/mixatlas (about 15 MB, glibc ≥ 2.34 only), compiles the kernels with NVRTC into
# .gpu/kernels (scripts/nvrtc-check.sh) and lists .gpu/ in .git/info/exclude; then the GPU
# run carries `.gpu` and uses that binary (GPU_CHECK_BIN overrides) without building.
# Training on --device cuda needs a cuda-train build, which needs cargo and nvcc on the
# GPU machine; without cargo the table has no training line. NVRTC is searched in
# LD_LIBRARY_PATH, the CUDA toolkit, Python's site-packages (nvidia-cuda-nvrtc-cu12) and
# scripts/nvrtc-check.sh's cache; without any, kernels prebuilt on another machine
# (`mixatlas gpu compile-kernels --out DIR`, e.g. target/kernels from scripts/nvrtc-check.sh)
# are used through MIXATLAS_KERNEL_DIR. NCCL is searched the same way (nvidia-nccl-cu12);
# without it the NCCL line says SKIP. Budget: about 8 minutes on 16 cores, build included.
# Environment: GPU_CHECK_TRAIN=0 skips the cuda-train build even when nvcc exists;
# GPU_CHECK_JOBS (default: all cores) for cargo.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TARGET_DIR="$TARGET"
OUT_MD="${1:-$TARGET/gpu-check.md}"
JOBS="${GPU_CHECK_JOBS:-$(nproc)}"
START=$SECONDS
log() { printf '\n== [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { echo "gpu-check: error: $*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || { [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"; }

if [ "${1:-}" = "--prepare" ]; then
  command -v cargo >/dev/null 2>&1 || die "--prepare needs cargo"
  log "prepare: cargo build --release --features cuda --bin mixatlas"
  cargo build --release --locked --features cuda --bin mixatlas || die "build failed"
  mkdir -p .gpu
  cp "$TARGET/release/mixatlas" .gpu/mixatlas && strip .gpu/mixatlas || die "copying the binary"
  log "prepare: kernels through NVRTC (scripts/nvrtc-check.sh)"
  scripts/nvrtc-check.sh || die "NVRTC check failed"
  rm -rf .gpu/kernels && cp -r "$TARGET/kernels" .gpu/kernels || die "copying the kernels"
  EXCLUDE="$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)"
  grep -qx '/.gpu/' "$EXCLUDE" 2>/dev/null || echo '/.gpu/' >>"$EXCLUDE"
  du -sh .gpu
  echo "prepared .gpu/: on the GPU machine run scripts/gpu-check.sh OUT.md with .gpu carried"
  exit 0
fi

BIN="${GPU_CHECK_BIN:-}"
if [ -z "$BIN" ] && [ -x "$ROOT/.gpu/mixatlas" ]; then BIN="$ROOT/.gpu/mixatlas"; fi
if [ -z "$BIN" ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found and no prebuilt binary (run scripts/gpu-check.sh --prepare on a machine with cargo and carry .gpu, or set GPU_CHECK_BIN)"
fi
if [ -z "${MIXATLAS_KERNEL_DIR:-}" ] && [ -e "$ROOT/.gpu/kernels/fused_sample.sha256" ]; then
  PREBUILT_KERNELS="$ROOT/.gpu/kernels"
else
  PREBUILT_KERNELS="${MIXATLAS_KERNEL_DIR:-$TARGET/kernels}"
fi

log "driver and devices"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || true
else
  echo "nvidia-smi not found (the check reports whether libcuda loads)"
fi

# --- Libraries: NVRTC and NCCL -----------------------------------------------------------
LIBS="$TARGET/gpu-libs"       # symlinks with the unversioned names cudarc looks for
mkdir -p "$LIBS"
# Directories where python packages of NVIDIA libraries may live.
py_dirs() {
  for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" - <<'PY' 2>/dev/null
import site, sys
for d in site.getsitepackages() + [site.getusersitepackages()]:
    print(d)
PY
  done
}
# find_lib NAME SUBDIR: first directory holding NAME (a versioned .so), else empty.
find_lib() {
  local name="$1" sub="$2" d
  local IFS=':'
  for d in ${LD_LIBRARY_PATH:-}; do [ -n "$d" ] && [ -e "$d/$name" ] && { echo "$d"; return; }; done
  unset IFS
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64 \
           $(ls -d /usr/local/cuda-*/lib64 2>/dev/null); do
    [ -e "$d/$name" ] && { echo "$d"; return; }
  done
  while read -r d; do
    [ -n "$d" ] && [ -e "$d/nvidia/$sub/lib/$name" ] && { echo "$d/nvidia/$sub/lib"; return; }
  done < <(py_dirs)
  local cache="${MIXATLAS_NVRTC_CACHE:-$HOME/.cache/mixatlas/nvrtc}/nvidia/$sub/lib"
  [ -e "$cache/$name" ] && { echo "$cache"; return; }
  echo ""
}

log "NVRTC"
NVRTC_DIR="$(find_lib libnvrtc.so.12 cuda_nvrtc)"
# Fetching the wheel needs the network: only when no prebuilt kernels were brought along.
if [ -z "$NVRTC_DIR" ] && [ ! -e "$PREBUILT_KERNELS/fused_sample.sha256" ]; then
  NVRTC_DIR="$(scripts/nvrtc-check.sh libdir 2>/dev/null || true)"
fi
if [ -n "$NVRTC_DIR" ]; then
  echo "libnvrtc: $NVRTC_DIR"
  ln -sf "$NVRTC_DIR/libnvrtc.so.12" "$LIBS/libnvrtc.so"
  export LD_LIBRARY_PATH="$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
elif [ -e "$PREBUILT_KERNELS/fused_sample.sha256" ]; then
  export MIXATLAS_KERNEL_DIR="$PREBUILT_KERNELS"
  echo "no libnvrtc.so.12: using prebuilt kernels from $MIXATLAS_KERNEL_DIR"
else
  die "no libnvrtc.so.12 (CUDA toolkit, pip nvidia-cuda-nvrtc-cu12, or scripts/nvrtc-check.sh's cache) and no prebuilt kernels (.gpu/kernels, MIXATLAS_KERNEL_DIR or $TARGET/kernels)"
fi

log "NCCL"
NCCL_DIR="$(find_lib libnccl.so.2 nccl)"
if [ -n "$NCCL_DIR" ]; then
  echo "libnccl: $NCCL_DIR"
  # cudarc loads the unversioned libnccl.so; the wheels ship only libnccl.so.2.
  ln -sf "$NCCL_DIR/libnccl.so.2" "$LIBS/libnccl.so"
  export LD_LIBRARY_PATH="$NCCL_DIR:$LD_LIBRARY_PATH"
else
  echo "no libnccl.so.2 found: the NCCL line will say SKIP"
fi
export LD_LIBRARY_PATH="$LIBS:${LD_LIBRARY_PATH:-}"

# --- Build ---------------------------------------------------------------------------------
FEATURES=cuda
NVCC="$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)"
if [ "${GPU_CHECK_TRAIN:-1}" != 0 ] && [ -n "$NVCC" ] && command -v cargo >/dev/null 2>&1; then
  TRAIN=1
  export PATH="$(dirname "$NVCC"):$PATH"
  echo "nvcc: $NVCC (will also build cuda-train)"
else
  TRAIN=0
  echo "no nvcc or no cargo (or GPU_CHECK_TRAIN=0): training on --device cuda is not built"
fi

if [ -n "$BIN" ]; then
  log "prebuilt binary: $BIN (no build)"
  [ -x "$BIN" ] || die "$BIN is not an executable"
else
  log "cargo build --release --features $FEATURES (-j $JOBS)"
  cargo build --release -j "$JOBS" --features "$FEATURES" --bin mixatlas || die "build failed"
  BIN="$TARGET/release/mixatlas"
fi

log "mixatlas gpu check (sampling kernel, bandwidth, NCCL)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mixatlas-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
timeout 240 "$BIN" gpu check --out-md "$OUT_MD" --work-dir "$WORK/check"
CHECK=$?

# --- Optional: train on the GPU (cuda-train needs nvcc; built after the main check) -------
if [ "$TRAIN" = 1 ]; then
  LEFT=$((480 - (SECONDS - START)))
  if [ "$LEFT" -lt 200 ]; then
    echo "gpu-check: ${LEFT}s left of the 8-minute budget: skipping the cuda-train build"
  else
    # Same target dir: only candle (with its CUDA kernels, nvcc) and mixatlas rebuild.
    log "cargo build --release --features cuda,cuda-train (up to $((LEFT - 90))s)"
    if timeout $((LEFT - 90)) cargo build --release -j "$JOBS" --features cuda,cuda-train \
         --bin mixatlas; then
      TBIN="$TARGET/release/mixatlas"
      log "proxy training on --device cuda"
      if timeout 60 "$TBIN" synth --out "$WORK/raw" --preset tiny --samples 3000 --force >/dev/null \
         && timeout 60 "$TBIN" prepare "$WORK/raw" --out "$WORK/corpus" --k 4 --force >/dev/null \
         && timeout 120 "$TBIN" train --corpus "$WORK/corpus" --out "$WORK/run" --device cuda \
              --steps 30 --quiet; then
        log "mixatlas gpu check again, with the training log"
        timeout 240 "$BIN" gpu check --out-md "$OUT_MD" --work-dir "$WORK/check2" \
          --train-log "$WORK/run/train_log.jsonl"
        CHECK=$?
      else
        echo "gpu-check: training on --device cuda failed (see above); the table has no training line"
        CHECK=1
      fi
    else
      echo "gpu-check: the cuda-train build failed or ran out of time; the table has no training line"
    fi
  fi
fi

log "done in $((SECONDS - START))s; table: $OUT_MD"
[ -f "$OUT_MD" ] && cat "$OUT_MD"
exit "$CHECK"
