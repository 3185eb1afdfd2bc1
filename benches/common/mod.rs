//! Shared by the benchmarks that compare with a Python peer (scikit-learn, numpy).

use std::path::Path;
use std::process::Command;

/// Runs `benches/<script>` with `args` under `$PYTHON` (default `python3`), with the BLAS and
/// OpenMP thread counts set to `threads` so both sides use the same cores, and parses its
/// stdout as JSON. `None`, with a hint on stderr, when Python or the peer's packages are
/// missing or the script fails: the benchmark then reports only our side.
pub fn run_python_peer(script: &str, args: &[String], threads: usize) -> Option<serde_json::Value> {
    run_python_peer_hinted(
        script,
        args,
        threads,
        "install the peer with `pip install numpy scikit-learn` (or set PYTHON)",
    )
}

/// [`run_python_peer`] with its own installation hint (printed when the peer is skipped).
pub fn run_python_peer_hinted(
    script: &str,
    args: &[String],
    threads: usize,
    hint: &str,
) -> Option<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(script);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let threads = threads.to_string();
    eprintln!("running the peer ({python} {}) …", script.display());
    let out = match Command::new(&python)
        .arg(&script)
        .args(args)
        .env("OMP_NUM_THREADS", &threads)
        .env("OPENBLAS_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("peer comparison skipped: cannot run {python}: {e}; {hint}");
            return None;
        }
    };
    if !out.status.success() {
        eprintln!(
            "peer comparison skipped ({}): {}; {hint}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let parsed = serde_json::from_slice(&out.stdout).ok();
    if parsed.is_none() {
        eprintln!(
            "peer comparison skipped: unreadable output {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    parsed
}
