#!/usr/bin/env bash
# Runs every MixAtlas test on a fresh machine: installs what the tests need, builds once (the
# release profile serves tests, benches and the demo), runs unit and integration tests, and
# checks that the benchmarks compile. This is what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# --- Dependencies -----------------------------------------------------------------------
# The tests need a Rust toolchain, python3 (the independent references in tests/*.py use only
# its standard library), and for the `mpi` feature Open MPI and libclang (rsmpi's bindings).
need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v mpirun >/dev/null 2>&1 || need_apt+=(openmpi-bin libopenmpi-dev)
[ -e /usr/include/x86_64-linux-gnu/openmpi/mpi.h ] || [ -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] || need_apt+=(libopenmpi-dev)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v pgrep >/dev/null 2>&1 || need_apt+=(procps)
# The HTML report is checked in headless Chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  log "installing Rust (rustup)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
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

# One build for everything, with the MPI backend so the distributed tests run under mpirun.
FEATURES="${FEATURES:-mpi}"
log "build (release, features: $FEATURES; tests, benches and binary share one profile)"
cargo build --release --all-targets --locked --features "$FEATURES"

log "unit and integration tests"
cargo test --release --locked --features "$FEATURES" -- --test-threads="${TEST_THREADS:-2}"

log "all tests passed"
