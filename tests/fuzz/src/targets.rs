//! One fuzz target per MixAtlas parser: each feeds arbitrary bytes to the library function
//! that reads that format (from text, or from a file in a scratch directory when the library
//! reads files) and checks what it must always hold: no panic (the callers catch or abort on
//! one), errors that are typed and say something, and a few invariants of what is accepted.
//! Shared by the AFL binary (`src/bin/afl_target.rs`), the mutation fuzzer
//! (`src/bin/mutfuzz.rs`) and the bounded run in the test suite (`tests/fuzz_smoke.rs`),
//! which includes this file by path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mixatlas::acquisition::{SearchSpace, SpaceCells, SpaceConstraints, SpaceKind};
use mixatlas::bench::steps_to_loss::{self, LogColumns, Smoothing};
use mixatlas::config::Config;
use mixatlas::data::corpus::Manifest;
use mixatlas::data::kmeans::KMeans;
use mixatlas::data::megatron::IndexedDataset;
use mixatlas::data::mixture::{self, Mixture};
use mixatlas::data::raw::{self, OnError};
use mixatlas::model::weights;
use mixatlas::rng::SplitMix64;
use mixatlas::search::config::Metric;
use mixatlas::search::curve::Curve;
use mixatlas::search::objective;
use mixatlas::search::state::SearchState;
use mixatlas::search::trials::{self, ObjectiveSpec};

/// Every target, by the name `scripts/fuzz.sh` and the corpus folders use.
pub const TARGETS: &[&str] = &[
    "raw",
    "manifest",
    "megatron",
    "trials_jsonl",
    "trials_csv",
    "events",
    "mixture",
    "space",
    "config",
    "steps_log",
    "metrics",
    "centroids",
    "model_config",
];

/// Inputs above this size are skipped: the formats are read whole, so a longer input only
/// slows the fuzzer without reaching new code.
pub const MAX_INPUT: usize = 1 << 20;

/// The cells the mixture, trials and space targets check names against.
pub const CELLS: &[&str] = &["c00/ocr", "c00/vqa", "c01/ocr", "c01/vqa"];

/// A per-process scratch directory for the targets whose library function reads files.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates `$TMPDIR/mixatlas-fuzz-<pid>-<tag>`.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mixatlas-fuzz-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the fuzz scratch directory");
        Self { dir }
    }

    /// Writes `data` to `name` in the scratch directory and returns its path.
    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, data).expect("writing a fuzz input");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `target` on `data`. `Err` is a broken invariant (an empty error message, an accepted
/// value that should have been refused); a panic is left to the caller.
pub fn run(target: &str, data: &[u8], scratch: &Scratch) -> Result<(), String> {
    if data.len() > MAX_INPUT {
        return Ok(());
    }
    let text = String::from_utf8_lossy(data);
    match target {
        "raw" => raw_target(data, &text, scratch),
        "manifest" => manifest_target(data, scratch),
        "megatron" => megatron_target(data, scratch),
        "trials_jsonl" => trials_target(&text, false),
        "trials_csv" => trials_target(&text, true),
        "events" => events_target(&text),
        "mixture" => mixture_target(&text),
        "space" => space_target(&text),
        "config" => config_target(&text),
        "steps_log" => steps_log_target(data, scratch),
        "metrics" => metrics_target(data, scratch),
        "centroids" => centroids_target(data, scratch),
        "model_config" => model_config_target(data, scratch),
        other => panic!("unknown fuzz target {other:?} (expected one of {TARGETS:?})"),
    }
}

/// An error must say something (and, being typed, it is one of the parser's enums).
fn said<E: std::fmt::Display>(e: E) -> Result<(), String> {
    if e.to_string().trim().is_empty() {
        return Err("an error with an empty message".into());
    }
    Ok(())
}

fn raw_target(data: &[u8], text: &str, scratch: &Scratch) -> Result<(), String> {
    for line in text.lines() {
        let rules = raw::ReadRules {
            on_error: OnError::Fail,
            vocab_size: None,
        };
        match raw::parse_line(line, &rules) {
            Ok(s) => check_sample(&s)?,
            Err(e) => said(e)?,
        }
    }
    // The streaming reader (a thread pool per batch) is slow to fuzz; it gets the inputs that
    // are not UTF-8 (its own error path) and one in eight of the others, chosen by length.
    if std::str::from_utf8(data).is_ok() && data.len() % 8 != 0 {
        return Ok(());
    }
    let path = scratch.write("raw.jsonl", data);
    for on_error in [OnError::Fail, OnError::Skip] {
        let mut shapes = None;
        let mut broken = Ok(());
        let r = raw::read_samples::<raw::RawError>(
            std::slice::from_ref(&path),
            &raw::ReadRules {
                on_error,
                vocab_size: None,
            },
            &mut shapes,
            |s| {
                if broken.is_ok() {
                    broken = check_sample(&s);
                }
                Ok(())
            },
            &|_| {},
        );
        broken?;
        if let Err(e) = r {
            said(e)?;
        }
    }
    Ok(())
}

fn check_sample(s: &raw::RawSample) -> Result<(), String> {
    if s.tokens.is_empty() || s.tokens.len() != s.loss_mask.len() {
        return Err(format!(
            "accepted a sample with {} tokens and {} mask values",
            s.tokens.len(),
            s.loss_mask.len()
        ));
    }
    if s.loss_mask.iter().any(|&m| m > 1) || s.clip.iter().any(|x| !x.is_finite()) {
        return Err("accepted a mask value above 1 or a non-finite clip value".into());
    }
    if let Some((flat, p, d)) = &s.image {
        if flat.len() != p * d {
            return Err(format!("image of {} values for {p} × {d}", flat.len()));
        }
    }
    Ok(())
}

fn manifest_target(data: &[u8], scratch: &Scratch) -> Result<(), String> {
    scratch.write("manifest.json", data);
    let m = match Manifest::load(&scratch.dir) {
        Ok(m) => m,
        Err(e) => return said(e),
    };
    let sums = m.cells.iter().try_fold((0u64, 0u64), |(d, t), c| {
        Some((
            d.checked_add(c.data.documents)?,
            t.checked_add(c.data.tokens)?,
        ))
    });
    if sums.is_none() {
        return Err("accepted cells whose documents or tokens overflow u64 when summed".into());
    }
    let natural = m.natural_weights();
    if natural.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(format!("natural weights {natural:?}"));
    }
    let _ = m.datasets().count();
    for c in &m.cells {
        let _ = m.cell_index(&c.data.name);
    }
    let cells = mixture::manifest_cells(&m);
    if let Err(e) = Mixture::from_order(&cells, &natural) {
        said(e)?;
    }
    for kind in [SpaceKind::Joint, SpaceKind::Factorized] {
        match SearchSpace::from_manifest(&m, kind, &SpaceConstraints::default()) {
            Ok(s) => exercise_space(&s)?,
            Err(e) => said(e)?,
        }
    }
    Ok(())
}

/// The input is `[idx length: u32 LE][.idx bytes][.bin bytes]`.
fn megatron_target(data: &[u8], scratch: &Scratch) -> Result<(), String> {
    let (idx, bin) = split_megatron(data);
    scratch.write("ds.idx", idx);
    scratch.write("ds.bin", bin);
    let ds = match IndexedDataset::open(&scratch.dir.join("ds")) {
        Ok(ds) => ds,
        Err(e) => return said(e),
    };
    let mut out = Vec::new();
    let mut total = 0u64;
    for d in 0..ds.documents() {
        let _ = ds.document_sequences(d);
        let _ = (
            ds.document_bytes(d),
            ds.document_offset(d),
            ds.document_u16(d),
        );
        out.clear();
        match ds.read_document(d, &mut out) {
            Ok(()) => total += out.len() as u64,
            Err(e) => {
                said(e)?;
                total += ds.document_len(d) as u64;
                continue;
            }
        }
        if out.len() != ds.document_len(d) {
            return Err(format!(
                "document {d}: read {} tokens, length {}",
                out.len(),
                ds.document_len(d)
            ));
        }
    }
    for i in 0..ds.sequences() {
        let (len, bytes) = (ds.sequence_len(i), ds.sequence_bytes(i));
        if bytes.len() != len * ds.dtype().size() {
            return Err(format!(
                "sequence {i}: {} bytes for {len} tokens",
                bytes.len()
            ));
        }
        let _ = ds.sequence_offset(i);
    }
    if total != ds.tokens() {
        return Err(format!(
            "documents hold {total} tokens, the index says {}",
            ds.tokens()
        ));
    }
    Ok(())
}

/// Splits a megatron-target input into its `.idx` and `.bin` parts.
pub fn split_megatron(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 4 {
        return (data, &[]);
    }
    let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    let rest = &data[4..];
    rest.split_at(n.min(rest.len()))
}

/// The space the trials targets read against ([`CELLS`], joint).
pub fn cells_space() -> SearchSpace {
    SearchSpace::new(
        SpaceKind::Joint,
        SpaceCells {
            cells: CELLS.iter().map(|c| c.to_string()).collect(),
            cell_axes: vec![(0, 0), (0, 1), (1, 0), (1, 1)],
            concepts: vec!["c00".into(), "c01".into()],
            tasks: vec!["ocr".into(), "vqa".into()],
            prior: vec![0.25; 4],
        },
        &SpaceConstraints::default(),
    )
    .expect("the fuzz space is valid")
}

fn trials_target(text: &str, csv: bool) -> Result<(), String> {
    let space = cells_space();
    let path = Path::new(if csv { "trials.csv" } else { "trials.jsonl" });
    let parsed = if csv {
        trials::parse_csv(text, path, &space)
    } else {
        trials::parse_jsonl(text, path, &space)
    };
    let ts = match parsed {
        Ok(ts) => ts,
        Err(e) => return said(e),
    };
    for t in &ts {
        let sum: f64 = t.mixture.iter().sum();
        if t.mixture.len() != CELLS.len()
            || t.mixture.iter().any(|w| !w.is_finite() || *w < 0.0)
            || (sum - 1.0).abs() > 1e-6
        {
            return Err(format!(
                "trial {:?} accepted with mixture {:?}",
                t.id, t.mixture
            ));
        }
    }
    let mut specs = vec![ObjectiveSpec::default()];
    if let Some(t) = ts.first() {
        specs.push(ObjectiveSpec {
            weights: BTreeMap::new(),
            reference: Some(t.id.clone()),
        });
        let names: Vec<String> = t.benchmarks.keys().cloned().collect();
        specs.push(ObjectiveSpec::targeting(&names));
    }
    for spec in specs {
        if let Err(e) = spec.evaluate(&ts) {
            said(e)?;
        }
        if let Err(e) = spec.components(&ts) {
            said(e)?;
        }
    }
    Ok(())
}

fn events_target(text: &str) -> Result<(), String> {
    for max_attempts in [1, 3] {
        match SearchState::replay(text, max_attempts) {
            Ok(st) => {
                let _ = (st.pending().len(), st.finished().len());
                if let Some(t) = st
                    .trials
                    .iter()
                    .find(|t| t.round >= st.next_round() && t.round < usize::MAX)
                {
                    return Err(format!(
                        "next round {} is not after trial {}'s round {}",
                        st.next_round(),
                        t.id,
                        t.round
                    ));
                }
                if st.trials.iter().any(|t| t.round == usize::MAX) && st.next_round() != usize::MAX
                {
                    return Err(format!(
                        "next round {} after a trial of round {}",
                        st.next_round(),
                        usize::MAX
                    ));
                }
            }
            Err(e) => said(e)?,
        }
    }
    Ok(())
}

/// A corpus's `centroids.safetensors` (`KMeans::load_safetensors`): an accepted model has
/// `k × dim` finite-or-not centroids and assigns a point to one of its `k` clusters.
fn centroids_target(data: &[u8], scratch: &Scratch) -> Result<(), String> {
    let path = scratch.write("centroids.safetensors", data);
    let km = match KMeans::load_safetensors(&path) {
        Ok(km) => km,
        Err(e) => return said(e),
    };
    let (k, dim) = (km.k(), km.dim());
    if k == 0 || dim == 0 || km.centroids().len() != k * dim {
        return Err(format!(
            "accepted k {k}, dim {dim} with {} centroid values",
            km.centroids().len()
        ));
    }
    let x: Vec<f32> = (0..dim).map(|i| (i % 3) as f32 - 1.0).collect();
    match km.try_assign(&x) {
        Ok(a) if a.labels.len() == 1 && (a.labels[0] as usize) < k => Ok(()),
        Ok(a) => Err(format!(
            "one point assigned to {:?} of {k} clusters",
            a.labels
        )),
        Err(e) => said(e),
    }
}

/// A checkpoint's `config.json` (`model::weights::read_config`, for `--init` and `transfer`):
/// an accepted config lists its parameters without overflowing the count.
fn model_config_target(data: &[u8], scratch: &Scratch) -> Result<(), String> {
    scratch.write("config.json", data);
    let cfg = match weights::read_config(&scratch.dir) {
        Ok(cfg) => cfg,
        Err(e) => return said(e),
    };
    if cfg.checked_num_params().is_none() {
        return Err(format!(
            "accepted a config whose parameter count overflows: {cfg:?}"
        ));
    }
    Ok(())
}

fn mixture_target(text: &str) -> Result<(), String> {
    let m = match Mixture::from_json(text, Path::new("mixture.json"), CELLS) {
        Ok(m) => m,
        Err(e) => return said(e),
    };
    let w = m
        .to_order(CELLS)
        .map_err(|e| format!("accepted then unknown: {e}"))?;
    let sum: f64 = w.iter().sum();
    if w.iter().any(|x| !x.is_finite() || *x < 0.0) || (sum - 1.0).abs() > 1e-2 {
        return Err(format!("accepted weights {w:?}"));
    }
    Ok(())
}

/// `mixatlas suggest --space FILE`'s file, as `src/cli/ask.rs` reads it (the binary's
/// parsing is not part of the library, so its few lines are mirrored here).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    #[serde(default)]
    kind: SpaceKind,
    cells: Vec<String>,
    #[serde(default)]
    prior: Option<Vec<f64>>,
    #[serde(flatten)]
    constraints: SpaceConstraints,
}

fn space_target(text: &str) -> Result<(), String> {
    // A `--constraints FILE` over the fixed cells, both kinds.
    if let Ok(c) = serde_json::from_str::<SpaceConstraints>(text) {
        for kind in [SpaceKind::Joint, SpaceKind::Factorized] {
            let cells = match cells_space_of(kind, &c) {
                Ok(s) => s,
                Err(e) => {
                    said(e)?;
                    continue;
                }
            };
            exercise_space(&cells)?;
        }
    }
    // A `--space FILE`.
    let Ok(f) = serde_json::from_str::<SpaceFile>(text) else {
        return Ok(());
    };
    let (mut concepts, mut tasks, mut axes) =
        (Vec::<String>::new(), Vec::<String>::new(), Vec::new());
    for c in &f.cells {
        let Some((con, task)) = c.split_once('/') else {
            return Ok(());
        };
        let ci = concepts.iter().position(|x| x == con).unwrap_or_else(|| {
            concepts.push(con.to_string());
            concepts.len() - 1
        });
        let ti = tasks.iter().position(|x| x == task).unwrap_or_else(|| {
            tasks.push(task.to_string());
            tasks.len() - 1
        });
        axes.push((ci, ti));
    }
    let n = f.cells.len();
    let prior = f.prior.unwrap_or_else(|| vec![1.0 / n as f64; n]);
    if prior.len() != n {
        return Ok(());
    }
    let cells = SpaceCells {
        cells: f.cells,
        cell_axes: axes,
        concepts,
        tasks,
        prior,
    };
    match SearchSpace::new(f.kind, cells, &f.constraints) {
        Ok(s) => exercise_space(&s),
        Err(e) => said(e),
    }
}

fn cells_space_of(
    kind: SpaceKind,
    c: &SpaceConstraints,
) -> Result<SearchSpace, mixatlas::acquisition::SpaceError> {
    let base = cells_space();
    SearchSpace::new(
        kind,
        SpaceCells {
            cells: base.cells,
            cell_axes: base.cell_axes,
            concepts: base.concepts,
            tasks: base.tasks,
            prior: base.prior,
        },
        c,
    )
}

/// Samples a built space and maps the points to mixtures and back.
fn exercise_space(s: &SearchSpace) -> Result<(), String> {
    let mut rng = SplitMix64::new(7);
    let mut points = s.sample(&mut rng, 4);
    let mut off = vec![0.0; s.dim()];
    for (i, x) in off.iter_mut().enumerate() {
        *x = if i % 2 == 0 { 3.0 } else { -2.0 };
    }
    s.project(&mut off);
    points.push(off);
    for x in &points {
        if x.len() != s.dim() || x.iter().any(|v| !v.is_finite()) {
            return Err(format!(
                "a sampled or projected point {x:?} of a {}-d space",
                s.dim()
            ));
        }
        let w = s.to_mixture(x);
        if w.len() != s.cells() || w.iter().any(|v| !v.is_finite()) {
            return Err(format!("mixture {w:?} of point {x:?}"));
        }
        if let Err(e) = s.from_mixture(&w) {
            said(e)?;
        }
        let _ = s.contains(x, 1e-6);
    }
    Ok(())
}

fn config_target(text: &str) -> Result<(), String> {
    let path = Path::new("fuzz.toml");
    let c = match Config::from_toml(text, path) {
        Ok(c) => c,
        Err(e) => return said(e),
    };
    if let Err(e) = c.train.validate() {
        said(e)?;
    }
    if let Err(e) = c.search.validate() {
        said(e)?;
    }
    let back = c.to_toml();
    Config::from_toml(&back, path)
        .map_err(|e| format!("the written config does not read back: {e}\n{back}"))?;
    Ok(())
}

/// The first byte picks the file's extension, the second the columns.
fn steps_log_target(data: &[u8], scratch: &Scratch) -> Result<(), String> {
    let (head, body) = data.split_at(data.len().min(2));
    let ext = ["jsonl", "csv", "log", "json"][head.first().copied().unwrap_or(0) as usize % 4];
    let cols = match head.get(1).copied().unwrap_or(0) % 4 {
        0 => LogColumns::eval(),
        1 => LogColumns::train(),
        2 => LogColumns {
            step: "iteration".into(),
            loss: "lm loss".into(),
        },
        _ => LogColumns {
            step: "step".into(),
            loss: "eval.refcoco.loss".into(),
        },
    };
    let path = scratch.write(&format!("log.{ext}"), body);
    let series = match steps_to_loss::read_series(&path, &cols) {
        Ok(s) => s,
        Err(e) => return said(e),
    };
    if series.steps.len() != series.loss.len() || series.steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "steps {:?} not strictly increasing or not one per loss",
            series.steps
        ));
    }
    for s in [Smoothing::None, Smoothing::Ema(0.3), Smoothing::Window(3)] {
        let sm = steps_to_loss::smooth(&series, s);
        let _ = steps_to_loss::steps_to_loss(&series, &sm, s);
    }
    Ok(())
}

fn metrics_target(data: &[u8], scratch: &Scratch) -> Result<(), String> {
    scratch.write("metrics.json", data);
    let v = match mixatlas::search::attempt::check_metrics(&scratch.dir) {
        Ok(v) => v,
        Err(e) => return said(e),
    };
    // What the search does with accepted metrics: scores, then the held-out curve.
    for metric in [Metric::NegLoss, Metric::Accuracy] {
        if let Err(e) = objective::scores(&v, metric) {
            said(e)?;
        }
        for curve in [Curve::Final, Curve::Last(2), Curve::Auc] {
            match objective::trial_curve(&scratch.dir, &v, metric, curve) {
                Ok(points) => {
                    if let Err(e) = mixatlas::search::curve::aggregate(curve, &points) {
                        said(e)?;
                    }
                }
                Err(e) => said(e)?,
            }
        }
    }
    Ok(())
}

/// The kept inputs of `target` under the fuzz crate's `root`: its seed corpus
/// (`corpus/TARGET/`) then its regression cases (`regressions/TARGET/`), in name order; one
/// empty input when there are none.
pub fn seeds(root: &Path, target: &str) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            files.extend(v);
        }
    }
    let mut out: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("reading a kept fuzz input"))
        .collect();
    if out.is_empty() {
        out.push(Vec::new());
    }
    out
}
