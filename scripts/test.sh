#!/usr/bin/env bash
# Runs every MixAtlas test on a fresh machine: installs what the tests need, builds once (the
# release profile serves tests, benches and the demo), runs unit and integration tests, and
# checks that the benchmarks compile. This is what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# --- Dependencies -----------------------------------------------------------------------
# The tests need a Rust toolchain, python3 (the independent references in tests/*.py use its
# standard library, tests/real_data_ref.py the pip packages installed below), and for the
# `mpi` feature Open MPI and libclang (rsmpi's bindings); a C compiler also builds the vendored
# MozJPEG (libjpeg-turbo's JPEG decoder, `embed`).
need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# tests/gpu.rs builds the CUDA kernel as host C++; scripts/nvrtc-check.sh fetches NVRTC with pip.
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v mpirun >/dev/null 2>&1 || need_apt+=(openmpi-bin libopenmpi-dev)
[ -e /usr/include/x86_64-linux-gnu/openmpi/mpi.h ] || [ -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] || need_apt+=(libopenmpi-dev)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v pgrep >/dev/null 2>&1 || need_apt+=(procps)
# tests/embed.rs writes arithmetic-coded JPEGs with jpegtran (Pillow cannot write them).
command -v jpegtran >/dev/null 2>&1 || need_apt+=(libjpeg-turbo-progs)
# The HTML report is checked in headless Chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
# tests/real_data.rs: its reference (tests/real_data_ref.py) trains a Hugging Face tokenizer
# and tokenises the test pool with transformers (no torch needed), writing embeddings with numpy.
# tests/embed.rs: tests/clip_ref.py decodes and resizes with Pillow; its wheels bundle
# libjpeg-turbo (3.2 in 13.0.0), whose JPEG pixels `embed` must equal byte for byte.
log "pip: tokenizers, transformers, jinja2, numpy, pillow (tests/real_data_ref.py, tests/clip_ref.py)"
python3 -m pip install --quiet --disable-pip-version-check \
  tokenizers==0.23.3 transformers==5.25.0 jinja2==3.1.6 numpy==2.4.6 pillow==13.0.0
if ! command -v cargo >/dev/null 2>&1; then
  log "installing Rust (rustup)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
# fmt and clippy are rustup components a minimal toolchain may lack.
for c in rustfmt clippy; do
  cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done

# tests/clip_ref.py (the numpy float64 reference of `mixatlas embed`) needs numpy and Pillow 13
# (Pillow 13 changed the order of the resize passes; src/embed/resize.rs follows it).
python3 -c 'import numpy, PIL, sys; sys.exit(int(PIL.__version__.split(".")[0]) < 13)' 2>/dev/null \
  || python3 -m pip install -q numpy "pillow>=13"

# tests/embed.rs compares `embed` with transformers' CLIPVisionModelWithProjection, which needs
# torch: a venv of its own (PyPI's Linux torch wheel brings its CUDA libraries, about 5 GB the
# first time, then pip's cache). MIXATLAS_TORCH_TESTS=0 leaves it out (that test then skips).
if [ "${MIXATLAS_TORCH_TESTS:-1}" != 0 ]; then
  torch_venv="${MIXATLAS_TORCH_VENV:-$HOME/.cache/mixatlas/torch-venv}"
  log "pip: torch, transformers in $torch_venv (tests/clip_hf_check.py)"
  [ -x "$torch_venv/bin/python" ] || python3 -m venv "$torch_venv"
  "$torch_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    torch==2.15.0 transformers==5.25.0 numpy==2.4.6 pillow==13.0.0 safetensors==0.8.0
  export MIXATLAS_TORCH_PYTHON="$torch_venv/bin/python"
fi

# Two cores: keep each test process from oversubscribing them.
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"

# mpirun as root (CI containers) needs these two; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# A real single-node Slurm cluster for the Slurm tests (they skip, saying why, without one).
# MIXATLAS_SLURM_TESTS=0 leaves it out; a cluster that fails to start is reported, not fatal.
if [ "${MIXATLAS_SLURM_TESTS:-1}" != 0 ]; then
  log "starting a local Slurm cluster (scripts/slurm-local.sh)"
  if [ "$(id -u)" -eq 0 ] && scripts/slurm-local.sh start; then
    export MIXATLAS_SLURM=1
  else
    log "no local Slurm cluster: the Slurm tests will skip"
  fi
fi

# The features of every build and check below: the MPI backend, so the distributed tests run
# under mpirun, and the GPU path (feature cuda loads CUDA libraries at run time, so it builds here).
FEATURES="${FEATURES:-mpi,cuda}"

# The house rules cargo can check: formatting, then clippy with warnings as errors (check mode,
# all targets, the same features as the build below). tests/architecture.rs checks the rest.
log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy --all-targets (features: $FEATURES; warnings are errors)"
cargo clippy --all-targets --locked --features "$FEATURES" -- -D warnings

# One build for everything.
log "build (release, features: $FEATURES; tests, benches and binary share one profile)"
cargo build --release --all-targets --locked --features "$FEATURES"

case ",$FEATURES," in
  *,cuda,*)
    # Every kernels/*.cu through NVRTC for sm_80 and sm_90 (NVRTC from the PyPI wheel, cached
    # under ~/.cache/mixatlas; no network and no cache fails here, it never skips).
    log "NVRTC: compile every kernel for sm_80 and sm_90 (scripts/nvrtc-check.sh)"
    scripts/nvrtc-check.sh
    NVRTC_LIB="$(scripts/nvrtc-check.sh libdir)"
    export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export MIXATLAS_REQUIRE_NVRTC=1
    # The cuda feature without mpi must build too. A release build of the library alone
    # reuses the dependencies built above (about 80 s on 2 cores); `cargo check` would first
    # re-check every dependency in check mode (about 110 s cold).
    log "cargo build --lib --features cuda (without mpi)"
    cargo build --release --locked --features cuda --lib
    ;;
esac

log "unit and integration tests"
cargo test --release --locked --features "$FEATURES" -- --test-threads="${TEST_THREADS:-2}"

log "all tests passed"
