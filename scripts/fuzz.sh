#!/usr/bin/env bash
# Runs one fuzz target at length: scripts/fuzz.sh TARGET SECONDS [ENGINE]
#
# ENGINE is `afl` (coverage-guided AFL++ through cargo-afl, the default when `cargo afl` is
# installed: `cargo install cargo-afl`) or `mut` (the self-written mutation fuzzer, no
# instrumentation). Targets: raw manifest megatron trials_jsonl trials_csv events mixture space
# config steps_log metrics centroids model_config (tests/fuzz/src/targets.rs). The fuzz crate
# builds in its own target directory, tests/fuzz/target; findings go to tests/fuzz/out/TARGET/
# (crashes in .../crashes/). A crash, once fixed, is kept in tests/fuzz/regressions/TARGET/ so
# that the test suite (tests/fuzz_smoke.rs) replays it. Appends a line to tests/fuzz/out/runs.log:
# target, engine, seconds, executions, crashes.
set -euo pipefail
cd "$(dirname "$0")/../tests/fuzz"

target="${1:?usage: scripts/fuzz.sh TARGET SECONDS [afl|mut]}"
secs="${2:?usage: scripts/fuzz.sh TARGET SECONDS [afl|mut]}"
engine="${3:-}"
if [ -z "$engine" ]; then
  if cargo afl --version >/dev/null 2>&1; then engine=afl; else engine=mut; fi
fi
export CARGO_TARGET_DIR="$PWD/target"
mkdir -p "out/$target"

case "$engine" in
  afl)
    cargo afl build --release --bin afl_target
    seeds="out/$target/seeds"
    rm -rf "$seeds"; mkdir -p "$seeds"
    cp corpus/"$target"/* "$seeds"/ 2>/dev/null || true
    cp regressions/"$target"/* "$seeds"/ 2>/dev/null || true
    [ -n "$(ls -A "$seeds")" ] || printf '\n' > "$seeds/empty"
    # Resume a previous run's queue when there is one (-i -).
    input="$seeds"; [ -d "out/$target/afl/default/queue" ] && input=-
    # -m: a 2 GiB address-space limit turns an unbounded allocation into a crash.
    AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
      AFL_AUTORESUME=1 cargo afl fuzz -V "$secs" -m 2048 -t 2000 -x mixatlas.dict -i "$input" -o "out/$target/afl" \
      -- "$CARGO_TARGET_DIR/release/afl_target" "$target" >"out/$target/afl.log" 2>&1 || true
    stats="out/$target/afl/default/fuzzer_stats"
    execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats")
    crashes=$(awk -F: '/^saved_crashes/ {gsub(/ /, "", $2); print $2}' "$stats")
    ;;
  mut)
    cargo build --release --bin mutfuzz
    out=$("$CARGO_TARGET_DIR/release/mutfuzz" "$target" "$secs" "${SEED:-$RANDOM}" | tail -1)
    echo "$out"
    execs=$(echo "$out" | awk '{print $2}')
    crashes=$(echo "$out" | awk '{print $(NF-1)}')
    ;;
  *) echo "unknown engine $engine (expected afl or mut)" >&2; exit 2 ;;
esac
echo "$target $engine ${secs}s execs=$execs crashes=$crashes" | tee -a out/runs.log
