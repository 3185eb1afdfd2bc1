//! Sizes checked against limits before anything is allocated: `seq_len` against the model's
//! `max_position_embeddings`, and the memory a run needs (the batch buffers, and on the CPU
//! the parameters with their optimiser state and the activations of one micro batch) against
//! the memory available. A `seq_len` of 10⁸ used to allocate 12 GB and then abort; a
//! `batch_size` of 10⁸ grew without bound; both are now an error naming the field, the
//! estimate and the limit before the first allocation.
//!
//! The estimate is a lower bound (activations linear in the tokens: `L·(8H + 3I) + 2V` floats
//! per token kept for the backward pass; attention scores and allocator slack are not
//! counted), so a run it refuses could not have fitted. The limit is `MemAvailable` of
//! `/proc/meminfo`, lowered to what the process's cgroup (v2) still allows (a Slurm job's
//! allocation), or the value of the environment variable [`MEMORY_LIMIT_ENV`]
//! (`MIXATLAS_MEMORY_LIMIT`: bytes with an optional `K`/`M`/`G`/`T` suffix, binary units, or
//! `off` to skip the check). Where neither is known (not Linux) the memory check is skipped.
//! With several ranks on one node each rank checks its own share only.

use super::config::TrainConfig;
use super::error::TrainError;
use crate::model::Qwen2Config;

/// Environment variable overriding the memory limit (`off`, or bytes with an optional
/// `K`/`M`/`G`/`T` suffix).
pub const MEMORY_LIMIT_ENV: &str = "MIXATLAS_MEMORY_LIMIT";

/// Bytes per GiB, for messages.
const GIB: f64 = (1u64 << 30) as f64;

/// The memory one rank of a run needs at least, in bytes (f64: the products can exceed
/// `u64` for absurd settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// Token ids and loss mask of this rank's rows of a global batch (5 bytes per token).
    pub batch: f64,
    /// Parameters, gradients and AdamW's two moments, f32 (CPU only; 0 on a GPU).
    pub parameters: f64,
    /// Activations of one micro batch kept for the backward pass, f32 (CPU only).
    pub activations: f64,
}

impl MemoryEstimate {
    /// The estimate for `tc` and `model` on one of `world` ranks (`on_cpu`: the model lives
    /// in host memory too).
    pub fn of(tc: &TrainConfig, model: &Qwen2Config, on_cpu: bool, world: usize) -> Self {
        let rows = tc.batch_size.div_ceil(world.max(1)) as f64;
        let micro = (tc.micro_rows() as f64).min(rows);
        let t = tc.seq_len as f64;
        let batch = rows * t * 5.0;
        if !on_cpu {
            return Self {
                batch,
                parameters: 0.0,
                activations: 0.0,
            };
        }
        let per_token = model.activation_floats_per_token() as f64;
        Self {
            batch,
            parameters: 16.0 * model.num_params() as f64,
            activations: micro * t * per_token * 4.0,
        }
    }

    /// The total in bytes.
    pub fn total(&self) -> f64 {
        self.batch + self.parameters + self.activations
    }
}

/// Where the memory limit came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryLimit {
    /// Bytes available.
    pub bytes: u64,
    /// Where the figure came from (`MemAvailable in /proc/meminfo`, `MIXATLAS_MEMORY_LIMIT`).
    pub source: String,
}

/// Parses a memory size: bytes with an optional `K`, `M`, `G` or `T` suffix (binary units,
/// an optional trailing `B` or `iB`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        't' | 'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * (1u64 << shift) as f64) as u64)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// What this process's cgroup (v2) still allows: `memory.max − memory.current`, if limited.
fn cgroup_available() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" = unlimited
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// The memory limit of this process: [`MEMORY_LIMIT_ENV`] if set (`Ok(None)` for `off`),
/// else `MemAvailable` lowered to the cgroup's allowance; `Ok(None)` when neither is known.
pub fn memory_limit() -> Result<Option<MemoryLimit>, TrainError> {
    if let Ok(v) = std::env::var(MEMORY_LIMIT_ENV) {
        if v.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let bytes = parse_size(&v).ok_or_else(|| {
            TrainError::Config(format!(
                "{MEMORY_LIMIT_ENV}={v:?}: expected `off` or a size such as 64G (bytes, K, M, \
                 G or T)"
            ))
        })?;
        return Ok(Some(MemoryLimit {
            bytes,
            source: MEMORY_LIMIT_ENV.into(),
        }));
    }
    let Some(avail) = mem_available() else {
        return Ok(None);
    };
    Ok(Some(match cgroup_available() {
        Some(cg) if cg < avail => MemoryLimit {
            bytes: cg,
            source: "the cgroup's memory.max − memory.current".into(),
        },
        _ => MemoryLimit {
            bytes: avail,
            source: "MemAvailable in /proc/meminfo".into(),
        },
    }))
}

/// Checks the sizes of a run before anything is allocated: `seq_len` within the model's
/// `max_position_embeddings`, and [`MemoryEstimate`] within `limit` (see [`memory_limit`];
/// `None` skips the memory check). The error names the fields, the estimate and the limit.
pub fn check_sizes(
    tc: &TrainConfig,
    model: &Qwen2Config,
    estimate: &MemoryEstimate,
    limit: Option<&MemoryLimit>,
) -> Result<(), TrainError> {
    if tc.seq_len > model.max_position_embeddings {
        return Err(TrainError::Config(format!(
            "seq_len {} is longer than the model's max_position_embeddings {}; lower [train] \
             seq_len (or --seq-len), or raise max_position_embeddings (--model-set)",
            tc.seq_len, model.max_position_embeddings
        )));
    }
    let Some(limit) = limit else {
        return Ok(());
    };
    let need = estimate.total();
    if need > limit.bytes as f64 {
        return Err(TrainError::Config(format!(
            "batch_size {} × seq_len {} ({} rows per forward pass) needs at least {:.1} GiB of memory per \
             rank (batch buffers {:.1} GiB, parameters and optimiser state {:.1} GiB, \
             activations {:.1} GiB) but {:.1} GiB is available ({}); lower batch_size, seq_len \
             or micro_batch, or set {MEMORY_LIMIT_ENV} (a size, or `off`)",
            tc.batch_size,
            tc.seq_len,
            tc.micro_rows(),
            need / GIB,
            estimate.batch / GIB,
            estimate.parameters / GIB,
            estimate.activations / GIB,
            limit.bytes as f64 / GIB,
            limit.source
        )));
    }
    Ok(())
}

/// `[train] eval_samples = 0` with benchmarks in the corpus would score every benchmark on no
/// documents (loss 0, a perfect objective): an error naming the key.
pub fn check_eval_samples(tc: &TrainConfig, benchmarks: usize) -> Result<(), TrainError> {
    if benchmarks > 0 && tc.eval_samples == 0 {
        return Err(TrainError::Config(format!(
            "eval_samples = 0 but the corpus has {benchmarks} benchmark(s): every benchmark \
             would be scored on no documents (loss 0); set [train] eval_samples \
             (--eval-samples) to at least 1"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("2K"), Some(2048));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("64GiB"), Some(64 << 30));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1"), None);
    }

    #[test]
    fn long_rows_and_huge_batches_are_refused_before_allocating() {
        let model = Qwen2Config::tiny();
        let limit = MemoryLimit {
            bytes: 8 << 30,
            source: "test".into(),
        };
        let ok = TrainConfig::proxy();
        let est = MemoryEstimate::of(&ok, &model, true, 1);
        assert!(est.total() < 1e9, "{est:?}");
        check_sizes(&ok, &model, &est, Some(&limit)).unwrap();

        let long = TrainConfig {
            seq_len: 100_000_000,
            ..TrainConfig::proxy()
        };
        let est = MemoryEstimate::of(&long, &model, true, 1);
        let e = check_sizes(&long, &model, &est, Some(&limit))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("seq_len 100000000") && e.contains("max_position_embeddings 4096"),
            "{e}"
        );

        let wide = TrainConfig {
            batch_size: 100_000_000,
            ..TrainConfig::proxy()
        };
        let est = MemoryEstimate::of(&wide, &model, true, 1);
        let e = check_sizes(&wide, &model, &est, Some(&limit))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batch_size 100000000") && e.contains("8.0 GiB is available (test)"),
            "{e}"
        );
        // Without a known limit only the positions are checked.
        check_sizes(&wide, &model, &est, None).unwrap();
    }

    #[test]
    fn eval_samples_zero_with_benchmarks_is_an_error() {
        let tc = TrainConfig {
            eval_samples: 0,
            ..TrainConfig::proxy()
        };
        let e = check_eval_samples(&tc, 3).unwrap_err().to_string();
        assert!(
            e.contains("eval_samples = 0") && e.contains("3 benchmark"),
            "{e}"
        );
        check_eval_samples(&tc, 0).unwrap();
        check_eval_samples(&TrainConfig::proxy(), 3).unwrap();
    }
}
