//! A simulated executor, so that the real search controller can be driven at the scale of a
//! large allocation (1,000 slots, 10,000 trials) on one machine: `mixatlas bench scale` and
//! the tests of asynchronous scheduling use it.
//!
//! It is a discrete-event simulation: [`SimExecutor`] has `slots` slots and a simulated
//! clock; each submitted attempt gets a log-normal duration, [`Executor::poll`] advances the
//! clock to the next completion (nothing sleeps) and returns every attempt that ended within
//! one polling interval of it, as a controller polling Slurm every `poll_s` seconds would see
//! them. A finishing attempt writes the trial protocol's `metrics.json` into its directory,
//! scored by a known objective of its mixture ([`SimObjective`]) plus noise, and its event
//! is read back through [`check_metrics`] like any trainer's; a fraction of attempts fail.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use super::Executor;
use crate::fsutil::IoContext;
use crate::rng::SplitMix64;
use crate::search::attempt::{check_metrics, TrialJob};
use crate::search::error::ExecError;
use crate::search::state::Event;

/// Settings of a [`SimExecutor`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Attempts that run at once (GPUs, nodes: whatever one trial occupies).
    pub slots: usize,
    /// Median duration of an attempt in simulated seconds.
    pub median_s: f64,
    /// `σ` of the log-normal duration (`median · exp(σ z)`, `z ~ N(0, 1)`).
    pub sigma: f64,
    /// Probability that an attempt fails (exit status 1, no metrics).
    pub fail_rate: f64,
    /// Polling interval in simulated seconds: one [`Executor::poll`] returns every attempt
    /// that ended within this long after the first one that did.
    pub poll_s: f64,
    /// Seed of durations, failures and noise.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            slots: 1000,
            median_s: 3600.0,
            sigma: 0.5,
            fail_rate: 0.02,
            poll_s: 60.0,
            seed: 0,
        }
    }
}

/// A known objective of the mixture: benchmark `b` scores `1 − TV(w, t_b)` (one minus the
/// total-variation distance between the mixture and the benchmark's target mixture `t_b`,
/// so 1 at the target and 0 on disjoint support), plus Gaussian noise of `noise` standard
/// deviation. The search's objective (the mean over benchmarks) is best at a mixture between
/// the targets.
#[derive(Debug, Clone, PartialEq)]
pub struct SimObjective {
    /// Each benchmark's name and target mixture (cell name → weight).
    pub targets: Vec<(String, BTreeMap<String, f64>)>,
    /// Standard deviation of the score noise.
    pub noise: f64,
}

impl SimObjective {
    /// `benchmarks` benchmarks (`sim0`, `sim1`, …) over `cells`, each target a flat
    /// Dirichlet draw seeded by `seed`.
    pub fn new(cells: &[String], benchmarks: usize, noise: f64, seed: u64) -> Self {
        let mut rng = SplitMix64::derive(seed, 0x5349_4d4f_424a);
        let targets = (0..benchmarks)
            .map(|b| {
                let g: Vec<f64> = cells.iter().map(|_| -(1.0 - rng.next_f64()).ln()).collect();
                let sum: f64 = g.iter().sum();
                let t = cells.iter().cloned().zip(g.iter().map(|x| x / sum));
                (format!("sim{b}"), t.collect())
            })
            .collect();
        Self { targets, noise }
    }

    /// Noise-free score of `weights` (cell name → weight) on every benchmark.
    pub fn scores(&self, weights: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
        self.targets
            .iter()
            .map(|(name, t)| {
                let tv: f64 = t
                    .iter()
                    .map(|(c, x)| (weights.get(c).copied().unwrap_or(0.0) - x).abs())
                    .sum::<f64>()
                    / 2.0;
                (name.clone(), 1.0 - tv)
            })
            .collect()
    }

    /// Noise-free objective (mean score over the benchmarks).
    pub fn value(&self, weights: &BTreeMap<String, f64>) -> f64 {
        let s = self.scores(weights);
        s.values().sum::<f64>() / s.len().max(1) as f64
    }
}

/// An attempt in flight: when it ends (simulated seconds) and how.
#[derive(Debug)]
struct InFlight {
    end: f64,
    serial: u64,
    job: TrialJob,
    started: f64,
    /// The metrics it writes, or `None` when it fails.
    metrics: Option<serde_json::Value>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    /// Reversed (earliest end first in a max-heap), ties by submission order.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .end
            .total_cmp(&self.end)
            .then(other.serial.cmp(&self.serial))
    }
}

/// What a [`SimExecutor`] saw, for benchmarks and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Attempts submitted.
    pub submitted: usize,
    /// Attempts that finished with metrics.
    pub finished: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// Most attempts running at once.
    pub max_running: usize,
    /// Submissions made while every slot was taken (must stay 0).
    pub oversubscribed: usize,
    /// Polls.
    pub polls: usize,
    /// Simulated seconds the slots were busy.
    pub busy_s: f64,
    /// Trial ids in the order their attempts were submitted.
    pub submissions: Vec<(String, usize)>,
}

/// The simulated executor (see the module documentation).
#[derive(Debug)]
pub struct SimExecutor {
    cfg: SimConfig,
    objective: SimObjective,
    rng: SplitMix64,
    now: f64,
    serial: u64,
    heap: BinaryHeap<InFlight>,
    stats: SimStats,
}

impl SimExecutor {
    /// An idle executor at simulated time 0.
    pub fn new(cfg: SimConfig, objective: SimObjective) -> Self {
        let rng = SplitMix64::derive(cfg.seed, 0x5349_4d45_5845);
        Self {
            cfg,
            objective,
            rng,
            now: 0.0,
            serial: 0,
            heap: BinaryHeap::new(),
            stats: SimStats::default(),
        }
    }

    /// The simulated clock in seconds (the campaign's makespan so far).
    pub fn now(&self) -> f64 {
        self.now
    }

    /// What it saw so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// The objective it scores with.
    pub fn objective(&self) -> &SimObjective {
        &self.objective
    }

    /// The event of an attempt that ended: its `metrics.json` is written into its
    /// directory and read back as the search reads any trainer's.
    fn conclude(&mut self, f: InFlight) -> Result<Event, ExecError> {
        let wall_s = f.end - f.started;
        self.stats.busy_s += wall_s;
        let fail = |reason: String| Event::Failed {
            trial: f.job.trial.clone(),
            attempt: f.job.attempt,
            reason,
        };
        let Some(metrics) = f.metrics else {
            self.stats.failed += 1;
            return Ok(fail("exit status 1: simulated failure".into()));
        };
        let path = f.job.dir().join("metrics.json");
        let text = serde_json::to_string(&metrics).expect("metrics serialise");
        std::fs::write(&path, text).at("writing", &path)?;
        Ok(match check_metrics(f.job.dir()) {
            Ok(metrics) => {
                self.stats.finished += 1;
                Event::Finished {
                    trial: f.job.trial.clone(),
                    attempt: f.job.attempt,
                    metrics,
                    wall_s,
                    fidelity: None,
                }
            }
            Err(e) => {
                self.stats.failed += 1;
                fail(format!("exit 0 but {e}"))
            }
        })
    }
}

impl Executor for SimExecutor {
    fn room(&self) -> usize {
        self.cfg.slots.saturating_sub(self.heap.len())
    }

    fn submit(&mut self, job: TrialJob) -> Result<Option<String>, ExecError> {
        if self.heap.len() >= self.cfg.slots {
            self.stats.oversubscribed += 1;
        }
        self.serial += 1;
        let duration = self.cfg.median_s * (self.cfg.sigma * self.rng.normal()).exp();
        let metrics = (!self.rng.chance(self.cfg.fail_rate)).then(|| {
            let mut scores = self.objective.scores(job.mixture.weights());
            for v in scores.values_mut() {
                *v += self.objective.noise * self.rng.normal();
            }
            serde_json::json!({"benchmarks": scores, "train_loss": 1.0})
        });
        self.stats.submitted += 1;
        self.stats
            .submissions
            .push((job.trial.clone(), job.attempt));
        let id = format!("sim:{}", self.serial);
        self.heap.push(InFlight {
            end: self.now + duration,
            serial: self.serial,
            started: self.now,
            job,
            metrics,
        });
        self.stats.max_running = self.stats.max_running.max(self.heap.len());
        Ok(Some(id))
    }

    fn running(&self) -> usize {
        self.heap.len()
    }

    fn poll(&mut self) -> Result<Vec<Event>, ExecError> {
        self.stats.polls += 1;
        let Some(first) = self.heap.pop() else {
            return Ok(Vec::new());
        };
        let horizon = first.end + self.cfg.poll_s;
        let mut ended = vec![first];
        while self.heap.peek().is_some_and(|f| f.end <= horizon) {
            ended.push(self.heap.pop().expect("peeked"));
        }
        self.now = self.now.max(ended.last().map_or(self.now, |f| f.end));
        ended.into_iter().map(|f| self.conclude(f)).collect()
    }
}

/// The synthetic corpus of a simulated search could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SimCorpusError {
    /// A cell's Megatron files.
    #[error(transparent)]
    Megatron(#[from] crate::data::megatron::MegatronError),
    /// The manifest or a directory.
    #[error(transparent)]
    Io(#[from] crate::fsutil::PathIoError),
}

/// Writes a minimal valid corpus of `cells` cells into `dir` (a manifest and one
/// one-document Megatron `.bin`/`.idx` pair per cell; concepts `c000…` × five tasks, no
/// images, no benchmarks): what a simulated search needs to pass the real preflight and
/// build its space. Returns the cell names in manifest order.
pub fn write_corpus(dir: &std::path::Path, cells: usize) -> Result<Vec<String>, SimCorpusError> {
    use crate::data::corpus::{
        Axes, CellEntry, ClusteringInfo, DatasetEntry, Manifest, SpecialTokens, MANIFEST_FILE,
        MANIFEST_FORMAT, MANIFEST_VERSION,
    };
    use crate::data::megatron::{DType, DatasetWriter};
    const TASKS: [&str; 5] = ["captioning", "ocr", "grounding", "detection", "vqa"];
    let tasks = TASKS.len().min(cells.max(1));
    let concepts = cells.div_ceil(tasks);
    std::fs::create_dir_all(dir.join("cells")).at("creating", dir)?;
    let mut entries = Vec::with_capacity(cells);
    for i in 0..cells {
        let (c, t) = (i / tasks, i % tasks);
        let prefix = format!("cells/c{c:03}_{}", TASKS[t]);
        let mut w = DatasetWriter::create(&dir.join(&prefix), DType::U16)?;
        w.add_document(&[1, 2, 3, 4])?;
        let written = w.finish()?;
        let mut files = Vec::new();
        for ext in ["bin", "idx"] {
            let rel = format!("{prefix}.{ext}");
            let path = dir.join(&rel);
            files.push(crate::data::corpus::FileEntry {
                bytes: std::fs::metadata(&path).at("reading", &path)?.len(),
                sha256: crate::data::corpus::sha256_file(&path, |_| {})?,
                path: rel,
            });
        }
        entries.push(CellEntry {
            concept: c,
            task: t,
            data: DatasetEntry {
                name: format!("c{c:03}/{}", TASKS[t]),
                prefix,
                documents: written.documents,
                tokens: written.tokens,
                loss_tokens: written.tokens,
                files,
            },
            embedding: None,
        });
    }
    let names = entries.iter().map(|e| e.data.name.clone()).collect();
    let m = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        axes: Axes {
            concepts: (0..concepts).map(|c| format!("c{c:03}")).collect(),
            tasks: TASKS[..tasks].iter().map(|t| t.to_string()).collect(),
        },
        vocab_size: 16,
        token_dtype: DType::U16,
        special_tokens: SpecialTokens::default(),
        image: None,
        clustering: ClusteringInfo {
            centroids: "centroids.safetensors".into(),
            embedding_dim: 4,
            metric: "euclidean".into(),
            inertia: 0.0,
            fit_sample: 0,
            sizes: vec![],
            adjusted_rand_index: None,
            purity: None,
        },
        cells: entries,
        benchmarks: vec![],
        benchmark_cells: Default::default(),
        tokenizer: None,
        vocab: None,
        source: [("tool".to_string(), "mixatlas bench scale".to_string())].into(),
    };
    let path = dir.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&m).expect("manifest serialises");
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mixture::Mixture;

    fn job(dir: &std::path::Path, trial: &str, w: f64) -> TrialJob {
        let cells = vec!["a/x".to_string(), "b/x".to_string()];
        let mixture =
            Mixture::new([("a/x".into(), w), ("b/x".into(), 1.0 - w)].into(), &cells).unwrap();
        let d = dir.join(trial);
        std::fs::create_dir_all(&d).unwrap();
        TrialJob {
            trial: trial.into(),
            attempt: 1,
            mixture,
            argv: vec![],
            env: vec![],
            log: d.join("trial.log"),
            timeout: None,
        }
    }

    /// The objective against its closed form: 1 − TV to each target, averaged.
    #[test]
    fn objective_is_one_minus_total_variation() {
        let cells = vec!["a/x".to_string(), "b/x".to_string()];
        let o = SimObjective {
            targets: vec![
                (
                    "p".into(),
                    [("a/x".into(), 0.8), ("b/x".into(), 0.2)].into(),
                ),
                (
                    "q".into(),
                    [("a/x".into(), 0.4), ("b/x".into(), 0.6)].into(),
                ),
            ],
            noise: 0.0,
        };
        let w: BTreeMap<String, f64> = [("a/x".into(), 0.5), ("b/x".into(), 0.5)].into();
        let s = o.scores(&w);
        assert!(
            (s["p"] - 0.7).abs() < 1e-12 && (s["q"] - 0.9).abs() < 1e-12,
            "{s:?}"
        );
        assert!((o.value(&w) - 0.8).abs() < 1e-12);
        let drawn = SimObjective::new(&cells, 3, 0.0, 7);
        for (_, t) in &drawn.targets {
            assert!((t.values().sum::<f64>() - 1.0).abs() < 1e-12);
            assert_eq!(
                drawn.scores(t).values().cloned().fold(f64::MIN, f64::max),
                1.0
            );
        }
    }

    /// Events come back in simulated-time order, every attempt exactly once, within the
    /// slots, with the metrics written into the attempt's directory.
    #[test]
    fn attempts_end_in_time_order_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SimConfig {
            slots: 3,
            fail_rate: 0.3,
            poll_s: 0.0,
            seed: 5,
            ..SimConfig::default()
        };
        let cells = vec!["a/x".to_string(), "b/x".to_string()];
        let mut sim = SimExecutor::new(cfg, SimObjective::new(&cells, 2, 0.01, 1));
        let mut seen = Vec::new();
        let mut next = 0;
        let mut last = 0.0;
        while next < 20 || sim.running() > 0 {
            while sim.room() > 0 && next < 20 {
                let id = sim
                    .submit(job(dir.path(), &format!("t{next}"), next as f64 / 20.0))
                    .unwrap();
                assert_eq!(id.unwrap(), format!("sim:{}", next + 1));
                next += 1;
            }
            assert!(sim.running() <= 3);
            for ev in sim.poll().unwrap() {
                assert!(sim.now() >= last);
                last = sim.now();
                match &ev {
                    Event::Finished { trial, metrics, .. } => {
                        let on_disk = check_metrics(&dir.path().join(trial)).unwrap();
                        assert_eq!(&on_disk, metrics);
                    }
                    Event::Failed { reason, .. } => assert!(reason.contains("simulated")),
                    _ => panic!("{ev:?}"),
                }
                seen.push(ev.trial().to_string());
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 20);
        let st = sim.stats();
        assert_eq!(st.finished + st.failed, 20);
        assert!(st.failed > 0 && st.finished > 0, "{st:?}");
        assert_eq!((st.max_running, st.oversubscribed), (3, 0));
    }
}
