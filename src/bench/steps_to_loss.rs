//! Steps to baseline loss: the baseline's final smoothed loss L*, the first step at which a
//! candidate's smoothed loss is ≤ L*, speedup = baseline steps / that step; over seeds, the
//! mean with a percentile bootstrap interval. Reads MixAtlas training logs and the logs of
//! other trainers: CSV or JSON lines with configurable step and loss columns, and Megatron-LM's
//! text log (`iteration N/ M | … | lm loss: X |`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::rng::SplitMix64;

/// A loss curve: losses at increasing steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Steps (strictly increasing).
    pub steps: Vec<u64>,
    /// Loss at each step.
    pub loss: Vec<f64>,
}

/// How a curve is smoothed before comparing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoothing {
    /// As logged.
    None,
    /// Exponential moving average with weight `alpha` on the newest point (bias-corrected
    /// start: the first value is the first point).
    Ema(f64),
    /// Trailing mean over the last `n` points.
    Window(usize),
}

/// A smoothing flag that is not `none`, `ema:ALPHA` (0 < α ≤ 1) or `window:N` (N ≥ 1).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("smoothing {input:?}: expected none, ema:ALPHA (0 < α ≤ 1) or window:N")]
pub struct SmoothingError {
    /// The flag as given.
    pub input: String,
}

impl std::str::FromStr for Smoothing {
    type Err = SmoothingError;
    fn from_str(s: &str) -> Result<Self, SmoothingError> {
        let bad = || SmoothingError {
            input: s.to_string(),
        };
        if s == "none" {
            return Ok(Smoothing::None);
        }
        let (k, v) = s.split_once(':').ok_or_else(bad)?;
        match k {
            "ema" => {
                let a: f64 = v.parse().map_err(|_| bad())?;
                if !(a > 0.0 && a <= 1.0) {
                    return Err(bad());
                }
                Ok(Smoothing::Ema(a))
            }
            "window" => {
                let n: usize = v.parse().map_err(|_| bad())?;
                if n == 0 {
                    return Err(bad());
                }
                Ok(Smoothing::Window(n))
            }
            _ => Err(bad()),
        }
    }
}

/// Applies `s` to the losses.
pub fn smooth(series: &Series, s: Smoothing) -> Series {
    let loss = match s {
        Smoothing::None => series.loss.clone(),
        Smoothing::Ema(a) => {
            let mut out = Vec::with_capacity(series.loss.len());
            let mut m = f64::NAN;
            for &x in &series.loss {
                m = if m.is_nan() { x } else { a * x + (1.0 - a) * m };
                out.push(m);
            }
            out
        }
        Smoothing::Window(n) => (0..series.loss.len())
            .map(|i| {
                let lo = (i + 1).saturating_sub(n);
                let w = &series.loss[lo..=i];
                w.iter().sum::<f64>() / w.len() as f64
            })
            .collect(),
    };
    Series {
        steps: series.steps.clone(),
        loss,
    }
}

/// The comparison of one candidate run with one baseline run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StepsToLoss {
    /// L*: the baseline's final smoothed loss.
    pub target: f64,
    /// The baseline's last step.
    pub baseline_steps: u64,
    /// The first step at which the candidate's smoothed loss ≤ L* (None: never).
    pub candidate_step: Option<u64>,
    /// `baseline_steps / candidate_step`.
    pub speedup: Option<f64>,
    /// The candidate's final smoothed loss.
    pub candidate_final: f64,
}

/// Compares `candidate` with `baseline` under smoothing `s`.
pub fn steps_to_loss(baseline: &Series, candidate: &Series, s: Smoothing) -> StepsToLoss {
    let b = smooth(baseline, s);
    let c = smooth(candidate, s);
    let target = *b.loss.last().expect("non-empty baseline");
    let baseline_steps = *b.steps.last().expect("non-empty baseline");
    let candidate_step = c
        .steps
        .iter()
        .zip(&c.loss)
        .find(|(_, &l)| l <= target)
        .map(|(&st, _)| st);
    StepsToLoss {
        target,
        baseline_steps,
        candidate_step,
        speedup: candidate_step.map(|st| baseline_steps as f64 / st.max(1) as f64),
        candidate_final: *c.loss.last().expect("non-empty candidate"),
    }
}

/// Mean of `x` with a percentile bootstrap interval at `level` (e.g. 0.95) from `iters`
/// resamples drawn with `seed`.
pub fn bootstrap_mean(x: &[f64], level: f64, iters: usize, seed: u64) -> (f64, f64, f64) {
    let n = x.len();
    let mean = x.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, mean, mean);
    }
    let mut rng = SplitMix64::new(seed);
    let mut means: Vec<f64> = (0..iters)
        .map(|_| (0..n).map(|_| x[rng.below(n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| means[((p * (iters - 1) as f64).round() as usize).min(iters - 1)];
    (mean, q((1.0 - level) / 2.0), q(1.0 - (1.0 - level) / 2.0))
}

/// Which numbers of a log make the curve.
#[derive(Debug, Clone, PartialEq)]
pub struct LogColumns {
    /// Step column (CSV header or JSON key).
    pub step: String,
    /// Loss column.
    pub loss: String,
}

impl LogColumns {
    /// MixAtlas's held-out loss: eval records' `eval_loss`.
    pub fn eval() -> Self {
        Self {
            step: "step".into(),
            loss: "eval_loss".into(),
        }
    }

    /// MixAtlas's training loss.
    pub fn train() -> Self {
        Self {
            step: "step".into(),
            loss: "loss".into(),
        }
    }
}

/// A log could not be read. The messages start with the file; where a source error is kept,
/// it follows in the error chain.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be read.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSON-lines log is not JSON.
    #[error("{}: line {line}: not JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A CSV log without even a header.
    #[error("{}: empty CSV", path.display())]
    EmptyCsv {
        /// The file.
        path: PathBuf,
    },
    /// The CSV header lacks a requested column.
    #[error("{}: no column {column:?} (columns: {})", path.display(), columns.join(", "))]
    NoColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The header's columns.
        columns: Vec<String>,
    },
    /// A CSV field that should be a number is not one.
    #[error("{}: row {row}: {value:?} is not a number", path.display())]
    NotNumber {
        /// The file.
        path: PathBuf,
        /// The row (1-based, the header is row 1).
        row: usize,
        /// The field.
        value: String,
    },
    /// No record holds both the step and the loss column.
    #[error("{}: no records with both {step:?} and {loss:?}", path.display())]
    NoRecords {
        /// The file.
        path: PathBuf,
        /// The step column.
        step: String,
        /// The loss column.
        loss: String,
    },
    /// A loss that is NaN or infinite.
    #[error("{}: loss {loss} is not finite", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The value.
        loss: f64,
    },
}

/// Reads a curve: a run directory (its `train_log.jsonl`), a `.jsonl`/`.json` file of records,
/// a `.csv` file with a header, or a Megatron-LM text log (`… iteration N/ M | … | lm loss: X`;
/// the column names then default to `iteration` and `lm loss`). Records without both columns
/// are skipped; duplicated steps keep the last value (a resumed run).
pub fn read_series(path: &Path, cols: &LogColumns) -> Result<Series, LogError> {
    let file = if path.is_dir() {
        path.join("train_log.jsonl")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|source| LogError::Read {
        path: file.clone(),
        source,
    })?;
    let mut points: Vec<(u64, f64)> = Vec::new();
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.trim_start().starts_with('{') {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|source| LogError::Json {
                    path: file.clone(),
                    line: i + 1,
                    source,
                })?;
            // Dotted names reach into nested records (`eval.refcoco.loss`).
            let get = |key: &str| {
                if key.contains('.') {
                    v.pointer(&format!("/{}", key.replace('.', "/")))
                        .and_then(|x| x.as_f64())
                } else {
                    v.get(key).and_then(|x| x.as_f64())
                }
            };
            if let (Some(s), Some(l)) = (get(&cols.step), get(&cols.loss)) {
                points.push((s as u64, l));
            }
        }
    } else if ext == "csv" || first.contains(',') {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .next()
            .ok_or_else(|| LogError::EmptyCsv { path: file.clone() })?
            .split(',')
            .map(str::trim)
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| LogError::NoColumn {
                    path: file.clone(),
                    column: name.to_string(),
                    columns: header.iter().map(|h| h.to_string()).collect(),
                })
        };
        let (si, li) = (col(&cols.step)?, col(&cols.loss)?);
        for (i, line) in lines.enumerate() {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let num = |k: usize| -> Result<Option<f64>, LogError> {
                match f.get(k) {
                    None | Some(&"") => Ok(None),
                    Some(x) => x.parse::<f64>().map(Some).map_err(|_| LogError::NotNumber {
                        path: file.clone(),
                        row: i + 2,
                        value: x.to_string(),
                    }),
                }
            };
            if let (Some(s), Some(l)) = (num(si)?, num(li)?) {
                points.push((s as u64, l));
            }
        }
    } else {
        // Megatron-LM: " iteration      100/    1000 | … | lm loss: 4.512E+00 | …"
        let loss_key = if cols.loss == "loss" || cols.loss == "eval_loss" {
            "lm loss".to_string()
        } else {
            cols.loss.clone()
        };
        for line in text.lines() {
            let Some(it) = line.split('|').find_map(|f| {
                f.find("iteration")
                    .map(|k| &f[k + "iteration".len()..])
                    .and_then(|r| r.split('/').next())
                    .and_then(|n| n.trim().parse::<u64>().ok())
            }) else {
                continue;
            };
            let loss = line.split('|').find_map(|f| {
                f.trim()
                    .strip_prefix(&format!("{loss_key}:"))
                    .and_then(|x| x.trim().parse::<f64>().ok())
            });
            if let Some(l) = loss {
                points.push((it, l));
            }
        }
    }
    // Keep the last value of each step, in step order.
    points.sort_by_key(|p| p.0);
    let mut steps = Vec::new();
    let mut loss = Vec::new();
    for (s, l) in points {
        if steps.last() == Some(&s) {
            *loss.last_mut().expect("paired") = l;
        } else {
            steps.push(s);
            loss.push(l);
        }
    }
    if steps.is_empty() {
        return Err(LogError::NoRecords {
            path: file,
            step: cols.step.clone(),
            loss: cols.loss.clone(),
        });
    }
    if let Some(l) = loss.iter().find(|l| !l.is_finite()) {
        return Err(LogError::NonFinite {
            path: file,
            loss: *l,
        });
    }
    Ok(Series { steps, loss })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(f: impl Fn(u64) -> f64, n: u64) -> Series {
        Series {
            steps: (1..=n).collect(),
            loss: (1..=n).map(f).collect(),
        }
    }

    #[test]
    fn exact_curves_have_known_answers() {
        // Baseline 1/s over 100 steps: L* = 0.01. Candidate 1/(2s) reaches it at step 50.
        let b = curve(|s| 1.0 / s as f64, 100);
        let c = curve(|s| 0.5 / s as f64, 100);
        let r = steps_to_loss(&b, &c, Smoothing::None);
        assert_eq!(r.target, 0.01);
        assert_eq!(r.candidate_step, Some(50));
        assert_eq!(r.speedup, Some(2.0));
        // The baseline against itself: speedup 1.
        assert_eq!(steps_to_loss(&b, &b, Smoothing::None).speedup, Some(1.0));
        // A worse candidate never reaches L*.
        let w = curve(|s| 2.0 / s as f64, 100);
        let r = steps_to_loss(&b, &w, Smoothing::None);
        assert_eq!((r.candidate_step, r.speedup), (None, None));
    }

    #[test]
    fn smoothing_recovers_the_answer_under_noise() {
        // Linear losses with alternating ±0.05 noise; a window of 2 cancels it exactly.
        let noisy = |a: f64| {
            curve(
                move |s| a - 0.001 * s as f64 + if s % 2 == 0 { 0.05 } else { -0.05 },
                1000,
            )
        };
        let b = noisy(2.0); // smoothed: 2 − 0.001 s + 0.0005 → L* = 1.0005
        let c = noisy(1.5); // smoothed: 1.5 − 0.001 s + 0.0005 ≤ 1.0005 ⇔ s ≥ 500
        let r = steps_to_loss(&b, &c, Smoothing::Window(2));
        assert!((r.target - 1.0005).abs() < 1e-12);
        assert_eq!(r.candidate_step, Some(500));
        assert_eq!(r.speedup, Some(2.0));
        // Unsmoothed, the noise makes the candidate "arrive" early.
        let raw = steps_to_loss(&b, &c, Smoothing::None);
        assert!(raw.candidate_step.unwrap() < 500);
        // EMA on a constant stays constant.
        let k = curve(|_| 3.0, 10);
        assert_eq!(smooth(&k, Smoothing::Ema(0.1)).loss, vec![3.0; 10]);
    }

    #[test]
    fn bootstrap_interval_contains_the_mean_and_shrinks_to_it() {
        let (m, lo, hi) = bootstrap_mean(&[1.8, 2.0, 2.2], 0.95, 2000, 1);
        assert!((m - 2.0).abs() < 1e-12 && lo < m && m < hi && lo >= 1.8 && hi <= 2.2);
        assert_eq!(bootstrap_mean(&[1.5, 1.5], 0.95, 100, 1), (1.5, 1.5, 1.5));
    }

    #[test]
    fn parses_flags() {
        assert_eq!("ema:0.2".parse::<Smoothing>().unwrap(), Smoothing::Ema(0.2));
        assert_eq!(
            "window:5".parse::<Smoothing>().unwrap(),
            Smoothing::Window(5)
        );
        assert!("ema:2".parse::<Smoothing>().is_err());
    }
}
