//! What a transfer is asked to do: the baselines it compares against ([`Baseline`], each with
//! a name and a run directory as a [`NamedBaseline`], parsed from `--baselines` by
//! [`parse_baselines`]), the resolved [`MultiTransferPlan`] (corpus, recipe, larger model,
//! shared training settings, seeds; `--baseline X` is the one [`NamedBaseline::legacy`]), and
//! where each run lives ([`run_dir`]).

use std::path::{Path, PathBuf};

use crate::bench::steps_to_loss::Smoothing;
use crate::data::corpus::Corpus;
use crate::model::Qwen2Config;
use crate::train::trainer::read_mixture;
use crate::train::{TrainConfig, TrainError};

use super::error::BaselineListError;

/// The run directory name of the recipe's arm (reserved: no baseline may take it).
pub const RECIPE_ARM: &str = "recipe";

/// The run directory name of the one baseline of `--baseline` (today's layout).
pub const LEGACY_BASELINE_ARM: &str = "baseline";

/// The comparison target.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// Equal weight on every cell.
    Uniform,
    /// The corpus's natural proportions.
    Natural,
    /// A mixture file.
    File(PathBuf),
}

impl Baseline {
    /// Parses `uniform`, `natural` or a path.
    pub fn parse(s: &str) -> Self {
        match s {
            "uniform" => Baseline::Uniform,
            "natural" => Baseline::Natural,
            p => Baseline::File(PathBuf::from(p)),
        }
    }

    /// The weights over `corpus`'s cells.
    pub fn weights(&self, corpus: &Corpus) -> Result<Vec<f64>, TrainError> {
        let n = corpus.manifest.cells.len();
        Ok(match self {
            Baseline::Uniform => vec![1.0 / n as f64; n],
            Baseline::Natural => corpus.manifest.natural_weights(),
            Baseline::File(p) => read_mixture(p, &corpus.manifest)?,
        })
    }

    /// A short name for directories and tables.
    pub fn name(&self) -> String {
        match self {
            Baseline::Uniform => "uniform".into(),
            Baseline::Natural => "natural".into(),
            Baseline::File(p) => p
                .file_stem()
                .map_or("baseline".into(), |s| s.to_string_lossy().into_owned()),
        }
    }

    /// What the user named: `uniform`, `natural` or the file's path.
    pub fn source(&self) -> String {
        match self {
            Baseline::File(p) => p.display().to_string(),
            b => b.name(),
        }
    }
}

/// A baseline with the name its comparison is reported under and the directory (under the
/// transfer's output) its runs live in.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedBaseline {
    /// The name in tables, `transfer.json` and the report.
    pub name: String,
    /// The run directory name: `<out>/<arm>/seed-<s>/` (the name itself for `--baselines`,
    /// `baseline` for `--baseline`).
    pub arm: String,
    /// The mixture.
    pub baseline: Baseline,
}

impl NamedBaseline {
    /// A baseline named `name`, its runs in `<out>/<name>/` (as `--baselines NAME=…`; checked
    /// by [`check_baselines`] when the transfer starts).
    pub fn new(name: &str, baseline: Baseline) -> Self {
        Self {
            name: name.into(),
            arm: name.into(),
            baseline,
        }
    }

    /// The one baseline of `--baseline X`: named by [`Baseline::name`], its runs in
    /// `<out>/baseline/` as before several baselines existed.
    pub fn legacy(baseline: Baseline) -> Self {
        Self {
            name: baseline.name(),
            arm: LEGACY_BASELINE_ARM.into(),
            baseline,
        }
    }
}

/// Whether `name` can be a run directory: 1–64 ASCII letters, digits, `.`, `_` or `-`, not
/// starting with `.` or `-`.
fn filesystem_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses `--baselines`: comma-separated `uniform`, `natural`, a mixture file, or any of them
/// as `NAME=…` (`regmix=search-regmix/recipe.json`). Unnamed files are named by their file
/// stem. Names must be filesystem-safe, unique, and not `recipe`.
pub fn parse_baselines(list: &str) -> Result<Vec<NamedBaseline>, BaselineListError> {
    let mut out: Vec<NamedBaseline> = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(BaselineListError::Empty { list: list.into() });
        }
        let (name, baseline) = match item.split_once('=') {
            Some((n, b)) if !b.trim().is_empty() => {
                (n.trim().to_string(), Baseline::parse(b.trim()))
            }
            Some(_) => return Err(BaselineListError::Empty { list: list.into() }),
            None => {
                let b = Baseline::parse(item);
                (b.name(), b)
            }
        };
        out.push(NamedBaseline::new(&name, baseline));
    }
    check_baselines(&out)?;
    Ok(out)
}

/// Checks a plan's baselines: at least one; names unique; run directories filesystem-safe,
/// unique and not `recipe`.
pub fn check_baselines(baselines: &[NamedBaseline]) -> Result<(), BaselineListError> {
    if baselines.is_empty() {
        return Err(BaselineListError::None);
    }
    for (i, b) in baselines.iter().enumerate() {
        let item = format!("{}={}", b.name, b.baseline.source());
        if !filesystem_safe(&b.arm) {
            return Err(BaselineListError::Unsafe {
                item,
                name: b.arm.clone(),
            });
        }
        if b.arm == RECIPE_ARM {
            return Err(BaselineListError::Reserved {
                item: b.baseline.source(),
            });
        }
        if let Some(first) = baselines[..i]
            .iter()
            .find(|a| a.name == b.name || a.arm == b.arm)
        {
            return Err(BaselineListError::Duplicate {
                name: if first.name == b.name {
                    b.name.clone()
                } else {
                    b.arm.clone()
                },
                first: first.baseline.source(),
                second: b.baseline.source(),
            });
        }
    }
    Ok(())
}

/// A resolved transfer against one or more baselines: the recipe is trained once per seed,
/// each baseline with the same seeds and settings.
#[derive(Debug)]
pub struct MultiTransferPlan<'a> {
    /// The corpus.
    pub corpus: &'a Corpus,
    /// The recipe's weights.
    pub recipe: Vec<f64>,
    /// The baselines, in the order they are trained and reported (at least one; names and
    /// directories unique, none `recipe`).
    pub baselines: Vec<NamedBaseline>,
    /// The larger model.
    pub model: Qwen2Config,
    /// Training settings shared by every arm (the seed is replaced per run).
    pub train: TrainConfig,
    /// Seeds `0..seeds`.
    pub seeds: u64,
    /// Output directory: `<out>/<arm>/seed-<s>/` for each baseline's arm and `recipe`.
    pub out: PathBuf,
    /// Smoothing for steps-to-loss.
    pub smoothing: Smoothing,
    /// Runs trained at once in a single process, each on its share of the threads (1 = one
    /// after another on all of them). Small models train faster this way: the demo's six
    /// 200-step runs of `small` take 215 s as two 1-thread runs at a time against 274 s one
    /// after another on 2 threads. Ignored under MPI, where every rank joins each run.
    pub jobs: usize,
}

/// The directory of one run.
pub fn run_dir(out: &Path, arm: &str, seed: u64) -> PathBuf {
    out.join(arm).join(format!("seed-{seed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_are_named_by_keyword_stem_or_prefix() {
        let b =
            parse_baselines("natural, uniform,runs/regmix.json,chameleon=a/recipe.json").unwrap();
        let names: Vec<&str> = b.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["natural", "uniform", "regmix", "chameleon"]);
        assert_eq!(b[0].baseline, Baseline::Natural);
        assert_eq!(b[1].baseline, Baseline::Uniform);
        assert_eq!(b[2].baseline, Baseline::File("runs/regmix.json".into()));
        assert_eq!(b[3].baseline, Baseline::File("a/recipe.json".into()));
        assert!(b.iter().all(|b| b.arm == b.name));
        assert_eq!(
            b[3],
            NamedBaseline::new("chameleon", Baseline::File("a/recipe.json".into()))
        );
        let nat = parse_baselines("nat=natural").unwrap();
        assert_eq!(
            (nat[0].name.as_str(), &nat[0].baseline),
            ("nat", &Baseline::Natural)
        );
    }

    #[test]
    fn bad_baseline_lists_say_what_is_wrong() {
        let err = |s: &str| parse_baselines(s).unwrap_err().to_string();
        let e = err("natural,natural");
        assert!(e.contains("\"natural\" twice"), "{e}");
        let e = err("x=natural,x=uniform");
        assert!(e.contains("\"x\" twice"), "{e}");
        let e = err("natural,search-regmix/recipe.json");
        assert!(
            e.contains("reserved") && e.contains("NAME=search-regmix/recipe.json"),
            "{e}"
        );
        let e = err("a/b=natural");
        assert!(e.contains("\"a/b\"") && e.contains("letters"), "{e}");
        let e = err("natural,,uniform");
        assert!(e.contains("empty"), "{e}");
        let e = err("reg=");
        assert!(e.contains("empty"), "{e}");
        assert!(parse_baselines(".hidden=natural").is_err());
        assert!(parse_baselines("a b=natural").is_err());
        // Plans built in code are checked the same way.
        let clash = [
            NamedBaseline::new("x", Baseline::Natural),
            NamedBaseline::new("recipe", Baseline::Uniform),
        ];
        assert!(check_baselines(&clash)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        assert!(check_baselines(&[])
            .unwrap_err()
            .to_string()
            .contains("no baseline"));
        let legacy = [NamedBaseline::legacy(Baseline::File(
            "s/recipe.json".into(),
        ))];
        assert_eq!(
            (legacy[0].name.as_str(), legacy[0].arm.as_str()),
            ("recipe", "baseline")
        );
        assert!(check_baselines(&legacy).is_ok());
    }
}
