#!/usr/bin/env bash
# Runs every MixAtlas test on a fresh machine: installs what the tests need, builds once (the
# release profile serves tests, benches and the demo), runs unit and integration tests, and
# checks that the benchmarks compile. This is what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# --- Dependencies -----------------------------------------------------------------------
# The tests need a Rust toolchain and python3 (the independent Megatron reader/writer in
# tests/megatron_ref.py uses only its standard library).
need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
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

log "build (release: tests, benches and binary share one profile)"
cargo build --release --all-targets --locked

log "unit and integration tests"
cargo test --release --locked -- --test-threads="${TEST_THREADS:-2}"

log "all tests passed"
