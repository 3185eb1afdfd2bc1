//! A data mixture: one weight per (concept, task) cell, named `concept/task`.
//!
//! A mixture travels from the search (a proposer's weights in the space's cell order) through
//! `trials.jsonl` and a trial's `mixture.json` (weights by name) to the trainer and the sampler
//! (weights in the manifest's cell order) and to Megatron (a `--data-path` blend string). This
//! file is the one place that carries it across those shapes:
//!
//! - [`Mixture`] is a mixture checked once against the cells it is for: every name is one of
//!   them, every weight finite and non-negative, and the weights, summed in the cells' order,
//!   are 1 within [`WEIGHT_SUM_TOLERANCE`]. Orders are always matched by name, never assumed
//!   equal (a search space's cells and a manifest's cells may be listed differently).
//! - [`in_order`] and [`by_name`] are the two mappings between weights by name and weights in a
//!   cell order; [`valid_weight`] and [`valid_sum`] are the tolerance policy the sampler shares.
//! - [`megatron_blend`] writes Megatron's blend (`W1 PREFIX1 W2 PREFIX2 …`).
//! - [`Renormalised`] is the one policy for mixtures **read from files** (`train --mixture`,
//!   recipes and baselines of `transfer`, ask/tell trial files, `predict --at`): weights
//!   summing to 1 within [`FILE_SUM_TOLERANCE`] (0.01: files print rounded weights, RegMix's
//!   three decimals sum to 1 ± 0.005) are divided by their sum, and each file gets one
//!   warning counting the mixtures so renormalised and the largest deviation; a sum further
//!   off is an error naming the file, the row and the sum. Mixtures MixAtlas computes keep
//!   the strict [`WEIGHT_SUM_TOLERANCE`].
//! - [`UniqueMap`] reads a JSON object refusing a key given twice (serde_json would keep the
//!   last one silently, and the mixture would then sum to less than 1 far from the cause).
//!
//! Floating point is kept exactly as the callers had it: sums run left to right in the order
//! the check names, and [`Mixture::normalised_in`] divides by the manifest-order sum.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::Serialize;

use super::corpus::Manifest;

/// How far a mixture's weights may sum from 1.
pub const WEIGHT_SUM_TOLERANCE: f64 = 1e-6;

/// How far from 1 the weights of a mixture read from a file may sum: within it they are
/// divided by their sum (with a warning, see [`Renormalised`]); beyond it the file is refused.
pub const FILE_SUM_TOLERANCE: f64 = 1e-2;

/// A name that is not one of the cells a mixture is for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown cell {name:?}; expected a concept/task name such as {examples} ({cells} cells in the corpus)")]
pub struct UnknownCell {
    /// The name given.
    pub name: String,
    /// A few valid names, quoted.
    pub examples: String,
    /// How many cells exist.
    pub cells: usize,
}

/// A mixture that cannot be used. Every variant names what was expected.
#[derive(Debug, thiserror::Error)]
pub enum MixtureError {
    /// A name is not one of the cells.
    #[error(transparent)]
    UnknownCell(#[from] UnknownCell),
    /// A weight is negative, NaN or infinite.
    #[error("weight of {name:?} is {value}; expected a finite, non-negative number")]
    BadWeight {
        /// The cell.
        name: String,
        /// The offending weight.
        value: f64,
    },
    /// The weights do not sum to 1.
    #[error("weights sum to {sum}; expected 1 (within 1e-6)")]
    WeightSum {
        /// Their sum (in the cells' order).
        sum: f64,
    },
    /// The weights of a mixture read from a file sum too far from 1 to be rounded weights.
    #[error(
        "weights sum to {sum}; expected 1 (within {FILE_SUM_TOLERANCE}: rounded weights are \
         divided by their sum)"
    )]
    FileSum {
        /// Their sum.
        sum: f64,
    },
    /// A mixture read from a file names no cell.
    #[error("no weights given; expected a weight for at least one concept/task cell")]
    Empty,
    /// A weight vector and its cell list differ in length.
    #[error("{weights} weights given for {cells} cells; expected one weight per cell")]
    WeightCount {
        /// Weights given.
        weights: usize,
        /// Cells listed.
        cells: usize,
    },
    /// A cell list names a cell twice.
    #[error("cell {name:?} is listed twice; expected every cell once")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
    /// A mixture file is not JSON.
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A mixture file is JSON of the wrong shape (or names a cell twice).
    #[error("expected {{\"weights\": {{\"concept/task\": weight, …}}}}: {0}")]
    Shape(#[source] serde_json::Error),
}

/// A JSON object read into a map, refusing a key given twice (serde_json keeps the last value
/// of a repeated key silently). The error names the key.
#[derive(Debug, Clone, PartialEq)]
pub struct UniqueMap<V>(pub BTreeMap<String, V>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Unique<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Unique<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object with every key once")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<V>()?;
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!(
                            "key {key:?} is given twice; expected every key once"
                        )));
                    }
                    out.insert(key, value);
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(Unique(PhantomData))
    }
}

/// A mixture file's top level: `weights` or `mixture` (an object of weights by name, read with
/// [`UniqueMap`]), or the whole object as weights when it has neither.
struct MixtureFile(BTreeMap<String, f64>);

impl<'de> Deserialize<'de> for MixtureFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = MixtureFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut weights, mut mixture) = (None, None);
                let mut plain: BTreeMap<String, serde_json::Value> = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let twice = || de::Error::custom(format!("key {key:?} is given twice"));
                    match key.as_str() {
                        "weights" if weights.is_some() => return Err(twice()),
                        "mixture" if mixture.is_some() => return Err(twice()),
                        "weights" => weights = Some(map.next_value::<UniqueMap<f64>>()?.0),
                        "mixture" => mixture = Some(map.next_value::<UniqueMap<f64>>()?.0),
                        _ if plain.contains_key(&key) => return Err(twice()),
                        _ => {
                            let v = map.next_value()?;
                            plain.insert(key, v);
                        }
                    }
                }
                if let Some(w) = weights.or(mixture) {
                    return Ok(MixtureFile(w));
                }
                let mut out = BTreeMap::new();
                for (k, v) in plain {
                    let w = v.as_f64().ok_or_else(|| {
                        de::Error::custom(format!("the weight of {k:?} is {v}, not a number"))
                    })?;
                    out.insert(k, w);
                }
                Ok(MixtureFile(out))
            }
        }
        d.deserialize_map(Top)
    }
}

/// The weights by name of one mixture as JSON text: `{"weights": {cell: w}}`,
/// `{"mixture": {cell: w}}` (besides other keys) or a plain `{cell: w}` object. A key given
/// twice at either level is an error naming it; values are not checked.
pub fn parse_weights(text: &str) -> Result<BTreeMap<String, f64>, MixtureError> {
    match serde_json::from_str::<MixtureFile>(text) {
        Ok(m) => Ok(m.0),
        Err(e) if e.is_syntax() || e.is_eof() => Err(MixtureError::Json(e)),
        Err(e) => Err(MixtureError::Shape(e)),
    }
}

/// The renormalisation policy for mixtures read from files, and its tally over one file (see
/// the module documentation): [`Renormalised::apply`] to each mixture, then
/// [`Renormalised::warn`] once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Renormalised {
    /// Mixtures divided by their sum.
    pub rows: usize,
    /// The largest `|sum − 1|` among them.
    pub max_deviation: f64,
}

impl Renormalised {
    /// Applies the policy to one mixture's weights by name: a sum within
    /// [`WEIGHT_SUM_TOLERANCE`] of 1 is kept bit for bit; within [`FILE_SUM_TOLERANCE`] the
    /// weights are divided by it (and counted); further off is [`MixtureError::FileSum`], and
    /// no weight at all [`MixtureError::Empty`]. Weights that are negative or not finite are
    /// left as they are, for [`Mixture::new`] to name.
    pub fn apply(&mut self, named: &mut BTreeMap<String, f64>) -> Result<(), MixtureError> {
        if named.is_empty() {
            return Err(MixtureError::Empty);
        }
        if named.values().any(|&v| !valid_weight(v)) {
            return Ok(());
        }
        let sum = named.values().fold(0.0, |a, &v| a + v);
        let deviation = (sum - 1.0).abs();
        if deviation > FILE_SUM_TOLERANCE {
            return Err(MixtureError::FileSum { sum });
        }
        if deviation > WEIGHT_SUM_TOLERANCE {
            named.values_mut().for_each(|v| *v /= sum);
            self.rows += 1;
            self.max_deviation = self.max_deviation.max(deviation);
        }
        Ok(())
    }

    /// Logs the file's one warning (nothing when no mixture was renormalised); `of` is the
    /// number of mixtures the file holds.
    pub fn warn(&self, file: &Path, of: usize) {
        if self.rows > 0 {
            tracing::warn!(
                "{}: renormalised {} of {} mixture(s) whose weights sum to 1 only within {} \
                 (largest deviation {:.3e}): each was divided by its sum",
                file.display(),
                self.rows,
                of,
                FILE_SUM_TOLERANCE,
                self.max_deviation
            );
        }
    }
}

/// Whether `w` may be a mixture weight: finite and non-negative.
pub fn valid_weight(w: f64) -> bool {
    w.is_finite() && w >= 0.0
}

/// Whether the (finite) sum of a mixture's weights is 1 within [`WEIGHT_SUM_TOLERANCE`].
pub fn valid_sum(sum: f64) -> bool {
    (sum - 1.0).abs() <= WEIGHT_SUM_TOLERANCE
}

/// The names of a manifest's cells, in manifest order.
pub fn manifest_cells(manifest: &Manifest) -> Vec<&str> {
    manifest
        .cells
        .iter()
        .map(|c| c.data.name.as_str())
        .collect()
}

fn unknown<S: AsRef<str>>(name: &str, cells: &[S]) -> UnknownCell {
    let examples: Vec<String> = cells
        .iter()
        .take(4)
        .map(|c| format!("{:?}", c.as_ref()))
        .collect();
    let examples = if examples.is_empty() {
        "(none: the corpus has no cells)".to_string()
    } else {
        examples.join(", ")
    };
    UnknownCell {
        name: name.to_string(),
        examples,
        cells: cells.len(),
    }
}

fn position<S: AsRef<str>>(cells: &[S], name: &str) -> Result<usize, UnknownCell> {
    cells
        .iter()
        .position(|c| c.as_ref() == name)
        .ok_or_else(|| unknown(name, cells))
}

/// Weights by name as a vector in `cells` order (cells not named get 0). Values are not
/// checked; a name that is not one of `cells` is an error.
pub fn in_order<S: AsRef<str>>(
    named: &BTreeMap<String, f64>,
    cells: &[S],
) -> Result<Vec<f64>, UnknownCell> {
    let mut w = vec![0.0; cells.len()];
    for (name, &v) in named {
        w[position(cells, name)?] = v;
    }
    Ok(w)
}

/// A weight vector in `cells` order as weights by name (pairs up to the shorter of the two;
/// values are not checked).
pub fn by_name<S: AsRef<str>>(cells: &[S], weights: &[f64]) -> BTreeMap<String, f64> {
    cells
        .iter()
        .map(|c| c.as_ref().to_string())
        .zip(weights.iter().copied())
        .collect()
}

/// Megatron's `--data-path` blend of weights by name: `W1 PREFIX1 W2 PREFIX2 …` over the
/// manifest's cells (in manifest order) with positive weight, weights with 8 decimals,
/// prefixes joined to `corpus_dir` (as given).
pub fn megatron_blend(
    weights: &BTreeMap<String, f64>,
    manifest: &Manifest,
    corpus_dir: &Path,
) -> String {
    let mut parts = Vec::new();
    for cell in &manifest.cells {
        if let Some(&w) = weights.get(&cell.data.name) {
            if w > 0.0 {
                parts.push(format!(
                    "{w:.8} {}",
                    corpus_dir.join(&cell.data.prefix).display()
                ));
            }
        }
    }
    parts.join(" ")
}

/// A mixture checked against the cells it is for (see the module docs). Serialises as its
/// weights by name (`{"c00/ocr": 0.25, …}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Mixture {
    weights: BTreeMap<String, f64>,
}

impl Mixture {
    /// Checks weights by name against `cells`: in name order, each name must be one of `cells`
    /// and its weight finite and non-negative; then the weights, summed in `cells` order,
    /// must be 1 within [`WEIGHT_SUM_TOLERANCE`]. Cells not named have weight 0.
    pub fn new<S: AsRef<str>>(
        weights: BTreeMap<String, f64>,
        cells: &[S],
    ) -> Result<Self, MixtureError> {
        let mut ordered = vec![0.0; cells.len()];
        for (name, &v) in &weights {
            let i = position(cells, name)?;
            if !valid_weight(v) {
                return Err(MixtureError::BadWeight {
                    name: name.clone(),
                    value: v,
                });
            }
            ordered[i] = v;
        }
        let sum: f64 = ordered.iter().sum();
        if !valid_sum(sum) {
            return Err(MixtureError::WeightSum { sum });
        }
        Ok(Self { weights })
    }

    /// A mixture from one weight per cell of `cells` (every cell named, zeros included), as a
    /// proposer gives it in its space's cell order. `cells` must list each cell once.
    pub fn from_order<S: AsRef<str>>(cells: &[S], weights: &[f64]) -> Result<Self, MixtureError> {
        if weights.len() != cells.len() {
            return Err(MixtureError::WeightCount {
                weights: weights.len(),
                cells: cells.len(),
            });
        }
        let named = by_name(cells, weights);
        if named.len() != cells.len() {
            let mut seen = std::collections::BTreeSet::new();
            let name = cells
                .iter()
                .map(|c| c.as_ref())
                .find(|c| !seen.insert(*c))
                .unwrap_or_default();
            return Err(MixtureError::Duplicate {
                name: name.to_string(),
            });
        }
        Self::new(named, cells)
    }

    /// Reads the text of the mixture file `path` against `cells`: a recipe
    /// (`{"weights": {cell: w}}`), a trial mixture (`{"mixture": {cell: w}}`,
    /// `{"trial": …, "weights": …}`) or a plain `{cell: w}` object, a key given twice being an
    /// error; applies the file policy ([`Renormalised`], warning under `path`'s name), then
    /// checks it as [`Mixture::new`] does.
    pub fn from_json<S: AsRef<str>>(
        text: &str,
        path: &Path,
        cells: &[S],
    ) -> Result<Self, MixtureError> {
        let mut named = parse_weights(text)?;
        let mut tally = Renormalised::default();
        tally.apply(&mut named)?;
        tally.warn(path, 1);
        Self::new(named, cells)
    }

    /// The weights by name (the cells it was checked against that it names).
    pub fn weights(&self) -> &BTreeMap<String, f64> {
        &self.weights
    }

    /// The weights by name, by value.
    pub fn into_weights(self) -> BTreeMap<String, f64> {
        self.weights
    }

    /// The weights in `cells` order (cells not named get 0), matched by name.
    pub fn to_order<S: AsRef<str>>(&self, cells: &[S]) -> Result<Vec<f64>, UnknownCell> {
        in_order(&self.weights, cells)
    }

    /// The weights in manifest cell order, matched by name (as they are, not renormalised:
    /// what an in-process trial samples with).
    pub fn in_manifest_order(&self, manifest: &Manifest) -> Result<Vec<f64>, UnknownCell> {
        self.to_order(&manifest_cells(manifest))
    }

    /// The weights in manifest cell order divided by their (manifest-order) sum, so they sum
    /// to 1 as exactly as `f64` allows: what `mixatlas train --mixture` samples with.
    pub fn normalised_in(&self, manifest: &Manifest) -> Result<Vec<f64>, UnknownCell> {
        let mut w = self.in_manifest_order(manifest)?;
        let sum: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= sum);
        Ok(w)
    }

    /// Megatron's `--data-path` blend of this mixture ([`megatron_blend`]).
    pub fn megatron_blend(&self, manifest: &Manifest, corpus_dir: &Path) -> String {
        megatron_blend(&self.weights, manifest, corpus_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELLS: [&str; 3] = ["a/x", "a/y", "b/x"];

    fn named(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn orders_are_matched_by_name() {
        let m = Mixture::new(named(&[("b/x", 0.75), ("a/x", 0.25)]), &CELLS).unwrap();
        assert_eq!(m.to_order(&CELLS).unwrap(), vec![0.25, 0.0, 0.75]);
        let other = ["b/x", "a/y", "a/x", "c/z"];
        assert_eq!(m.to_order(&other).unwrap(), vec![0.75, 0.0, 0.25, 0.0]);
        let e = m.to_order(&["a/x", "a/y"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown cell \"b/x\"") && e.contains("\"a/x\""),
            "{e}"
        );
        let back = Mixture::from_order(&CELLS, &[0.25, 0.0, 0.75]).unwrap();
        assert_eq!(
            back.weights().len(),
            3,
            "every cell is named, zeros included"
        );
        assert_eq!(back.to_order(&CELLS).unwrap(), vec![0.25, 0.0, 0.75]);
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            "{\"a/x\":0.25,\"a/y\":0.0,\"b/x\":0.75}"
        );
    }

    #[test]
    fn bad_mixtures_are_named() {
        let cases: [(BTreeMap<String, f64>, &str); 4] = [
            (named(&[("z/x", 1.0)]), "unknown cell \"z/x\""),
            (named(&[("a/x", 0.7)]), "sum to 0.7"),
            (named(&[("a/x", 1.0001), ("a/y", -0.0001)]), "non-negative"),
            (named(&[("a/x", f64::NAN), ("b/x", 1.0)]), "finite"),
        ];
        for (m, want) in cases {
            let e = Mixture::new(m, &CELLS).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        // Within the tolerance is fine.
        Mixture::new(named(&[("a/x", 0.5), ("a/y", 0.5 + 5e-7)]), &CELLS).unwrap();
        let e = Mixture::from_order(&["a/x", "a/x"], &[0.5, 0.5]).unwrap_err();
        assert!(
            matches!(e, MixtureError::Duplicate { ref name } if name == "a/x"),
            "{e}"
        );
        let e = Mixture::from_order(&CELLS, &[1.0]).unwrap_err();
        assert!(e.to_string().contains("1 weights given for 3 cells"), "{e}");
        let e = unknown("q", &[] as &[&str]).to_string();
        assert!(e.contains("(none: the corpus has no cells)"), "{e}");
    }

    #[test]
    fn files_of_every_shape_parse() {
        for text in [
            "{\"weights\": {\"a/x\": 1.0}}",
            "{\"trial\": \"t0001\", \"weights\": {\"a/x\": 1.0}}",
            "{\"mixture\": {\"a/x\": 1.0}}",
            "{\"a/x\": 1.0}",
        ] {
            let m = Mixture::from_json(text, Path::new("m.json"), &CELLS).unwrap();
            assert_eq!(m.to_order(&CELLS).unwrap(), vec![1.0, 0.0, 0.0], "{text}");
        }
        let from = |text: &str| Mixture::from_json(text, Path::new("m.json"), &CELLS);
        let e = from("{").unwrap_err().to_string();
        assert!(e.starts_with("not valid JSON"), "{e}");
        let e = from("{\"weights\": [1]}").unwrap_err().to_string();
        assert!(e.contains("concept/task"), "{e}");
        // A key given twice is refused, naming it, at any level.
        for text in [
            "{\"weights\": {\"a/x\": 0.5, \"a/x\": 0.5}}",
            "{\"a/x\": 0.5, \"a/x\": 0.5}",
            "{\"mixture\": {\"a/x\": 1.0}, \"mixture\": {\"a/y\": 1.0}}",
        ] {
            let e = from(text).unwrap_err().to_string();
            assert!(
                e.contains("\"a/x\" is given twice") || e.contains("\"mixture\" is given twice"),
                "{text}: {e}"
            );
        }
        // Rounded weights are renormalised; further off, or nothing, is refused.
        let m = from("{\"a/x\": 0.333, \"a/y\": 0.333, \"b/x\": 0.333}").unwrap();
        for w in m.to_order(&CELLS).unwrap() {
            assert!((w - 1.0 / 3.0).abs() < 1e-15, "{w}");
        }
        let e = from("{\"a/x\": 0.5, \"a/y\": 0.48}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sum to 0.98") && e.contains("within 0.01"),
            "{e}"
        );
        let e = from("{\"weights\": {}}").unwrap_err().to_string();
        assert!(e.contains("no weights given"), "{e}");
        assert!(!e.contains("-0"), "{e}");
    }

    #[test]
    fn the_file_policy_counts_what_it_renormalises() {
        let mut tally = Renormalised::default();
        let mut exact = named(&[("a/x", 0.25), ("b/x", 0.75)]);
        tally.apply(&mut exact).unwrap();
        assert_eq!(
            exact,
            named(&[("a/x", 0.25), ("b/x", 0.75)]),
            "kept bit for bit"
        );
        let mut rounded = named(&[("a/x", 0.5), ("b/x", 0.505)]);
        tally.apply(&mut rounded).unwrap();
        let mut rounded = named(&[("a/x", 0.5), ("b/x", 0.498)]);
        tally.apply(&mut rounded).unwrap();
        assert_eq!(tally.rows, 2);
        assert!((tally.max_deviation - 0.005).abs() < 1e-12);
        let mut off = named(&[("a/x", 0.5), ("b/x", 0.52)]);
        let e = tally.apply(&mut off).unwrap_err();
        assert!(matches!(e, MixtureError::FileSum { sum } if (sum - 1.02).abs() < 1e-12));
    }
}
