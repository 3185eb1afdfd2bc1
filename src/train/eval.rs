//! Per-benchmark evaluation on the corpus's held-out sets: answer-token loss, exact-match
//! accuracy of greedy decoding of the answer span and, at the end of a run, the benchmark's
//! own score of the greedily generated answer ([`Metric`]: exact match, ANLS, token F1 or
//! item F1, the metric families of the public benchmarks the built-in ones are named after).
//!
//! Exact match is computed in one teacher-forced pass, which is exactly equivalent to greedy
//! decoding: greedy decoding reproduces the reference answer (and its `<eos>`) if and only if,
//! at every answer position, the arg-max given the reference prefix is the reference token
//! (induction over the answer: while the generated prefix equals the reference prefix, the
//! next greedy token is that arg-max). Loss-masked positions are the answer and `<eos>`.

use std::collections::BTreeMap;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::error::TrainError;
use super::loss::{target_log_probs, Targets};
use crate::data::corpus::Corpus;
use crate::model::{ImageInput, Qwen2Model};

/// One evaluation document: tokens, mask and image patches (f32, `patches × D`).
#[derive(Debug, Clone)]
struct EvalDoc {
    tokens: Vec<u32>,
    mask: Vec<u8>,
    image: Vec<f32>,
    /// Index of the first answer token (the first loss-masked position after the first).
    prompt_len: usize,
}

impl EvalDoc {
    /// The reference answer: the loss-masked tokens, without a final `<eos>`.
    fn reference(&self, eos: u32) -> Vec<u32> {
        let mut r: Vec<u32> = (self.prompt_len..self.tokens.len())
            .filter(|&i| self.mask[i] != 0)
            .map(|i| self.tokens[i])
            .collect();
        if r.last() == Some(&eos) {
            r.pop();
        }
        r
    }
}

/// How a benchmark scores a generated answer against its reference (token sequences without
/// `<eos>`); every score lies in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// 1 when the answer equals the reference (VQA-style short answers, grounding).
    #[default]
    ExactMatch,
    /// Average normalised Levenshtein similarity (DocVQA, ST-VQA): `1 − d/max(len)` when that
    /// distance ratio is below 0.5, else 0; partial credit for reading most of the text.
    Anls,
    /// F1 of the token multisets (SQuAD-style; a stand-in for caption metrics like CIDEr).
    TokenF1,
    /// F1 of the items separated by `;` (detection: an item is `class @position` and counts
    /// only when both are right; a stand-in for detection mAP).
    ItemF1,
}

impl Metric {
    /// The metric for a benchmark called `name`, following the public benchmark it is named
    /// after: names containing `docvqa`, `textvqa`, `st-vqa`, `infovqa` or `ocr` → ANLS;
    /// `cap` (coco-caption, nocaps, textcaps) → token F1; `det` (lvis-det) → item F1; anything
    /// else → exact match. `[train] eval_metrics` overrides it per benchmark.
    pub fn default_for(name: &str) -> Self {
        let n = name.to_ascii_lowercase();
        if ["docvqa", "textvqa", "st-vqa", "infovqa", "ocr"]
            .iter()
            .any(|k| n.contains(k))
        {
            Self::Anls
        } else if n.contains("cap") {
            Self::TokenF1
        } else if n.contains("det") {
            Self::ItemF1
        } else {
            Self::ExactMatch
        }
    }

    /// The score of `answer` against `reference`; `sep` splits items for [`Metric::ItemF1`]
    /// (no separator: the whole answer is one item).
    pub fn score(self, answer: &[u32], reference: &[u32], sep: Option<u32>) -> f64 {
        match self {
            Self::ExactMatch => (answer == reference) as u8 as f64,
            Self::Anls => {
                let longest = answer.len().max(reference.len());
                if longest == 0 {
                    return 1.0;
                }
                let d = levenshtein(answer, reference) as f64 / longest as f64;
                if d < 0.5 {
                    1.0 - d
                } else {
                    0.0
                }
            }
            Self::TokenF1 => {
                let a: Vec<&[u32]> = answer.chunks(1).collect();
                let r: Vec<&[u32]> = reference.chunks(1).collect();
                multiset_f1(&a, &r)
            }
            Self::ItemF1 => {
                let items = |s: &[u32]| -> Vec<Vec<u32>> {
                    s.split(|&t| Some(t) == sep)
                        .filter(|i| !i.is_empty())
                        .map(<[u32]>::to_vec)
                        .collect()
                };
                let (a, r) = (items(answer), items(reference));
                let a: Vec<&[u32]> = a.iter().map(Vec::as_slice).collect();
                let r: Vec<&[u32]> = r.iter().map(Vec::as_slice).collect();
                multiset_f1(&a, &r)
            }
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that width and alignment (`{:<12}`) apply.
        f.pad(match self {
            Self::ExactMatch => "exact_match",
            Self::Anls => "anls",
            Self::TokenF1 => "token_f1",
            Self::ItemF1 => "item_f1",
        })
    }
}

/// Edit distance (insertions, deletions, substitutions of one token each).
fn levenshtein(a: &[u32], b: &[u32]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (x != y) as usize)
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// F1 of two multisets: matches are counted with multiplicity; both empty scores 1.
fn multiset_f1(answer: &[&[u32]], reference: &[&[u32]]) -> f64 {
    if answer.is_empty() && reference.is_empty() {
        return 1.0;
    }
    let mut left: Vec<&[u32]> = reference.to_vec();
    let mut hits = 0usize;
    for a in answer {
        if let Some(k) = left.iter().position(|r| r == a) {
            left.swap_remove(k);
            hits += 1;
        }
    }
    if hits == 0 {
        return 0.0;
    }
    let p = hits as f64 / answer.len() as f64;
    let r = hits as f64 / reference.len() as f64;
    2.0 * p * r / (p + r)
}

/// One held-out benchmark: its documents and how its answers are scored.
#[derive(Debug, Clone)]
struct Benchmark {
    name: String,
    metric: Metric,
    docs: Vec<EvalDoc>,
}

/// The held-out documents of every benchmark, read once.
#[derive(Debug, Clone)]
pub struct EvalSet {
    benchmarks: Vec<Benchmark>,
    pad: u32,
    eos: u32,
    /// The item separator of [`Metric::ItemF1`] (`;` in the corpus's vocabulary, if any).
    sep: Option<u32>,
    image_token: Option<u32>,
    image_dim: usize,
}

/// One benchmark's scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BenchScore {
    /// Mean over documents of the mean answer-token cross-entropy (nats).
    pub loss: f64,
    /// Fraction of documents whose greedy answer equals the reference exactly.
    pub accuracy: f64,
    /// Documents evaluated.
    pub docs: usize,
    /// Mean [`Metric`] score of the greedily generated answers (the benchmark's own score);
    /// computed at the end of a run, absent at intermediate evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The metric behind `score`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
}

impl EvalSet {
    /// The first `samples` documents of each benchmark of `corpus` (documents without any
    /// loss-masked token are skipped).
    pub fn from_corpus(corpus: &Corpus, samples: usize) -> Result<Self, TrainError> {
        let m = &corpus.manifest;
        let mut benchmarks = Vec::new();
        for (entry, store) in m.benchmarks.iter().zip(&corpus.benchmarks) {
            let mut docs = Vec::new();
            for d in 0..store.documents() {
                if docs.len() >= samples {
                    break;
                }
                let tokens = store.tokens.document(d).map_err(|e| {
                    TrainError::Incompatible(format!("benchmark {}: {e}", entry.name))
                })?;
                let mask = store
                    .mask(d)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_else(|| vec![1; tokens.len()]);
                if mask.iter().skip(1).all(|&x| x == 0) {
                    continue;
                }
                let image = store.image_f32(d).unwrap_or_default();
                let prompt_len = (1..mask.len()).find(|&i| mask[i] != 0).unwrap_or(1);
                docs.push(EvalDoc {
                    tokens,
                    mask,
                    image,
                    prompt_len,
                });
            }
            benchmarks.push(Benchmark {
                name: entry.name.clone(),
                metric: Metric::default_for(&entry.name),
                docs,
            });
        }
        Ok(Self {
            benchmarks,
            pad: m.special_tokens.pad,
            eos: m.special_tokens.eos,
            sep: read_separator(corpus),
            image_token: m.image.as_ref().map(|_| m.special_tokens.image),
            image_dim: m.image.as_ref().map_or(0, |i| i.dim),
        })
    }

    /// Benchmark names, in manifest order.
    pub fn names(&self) -> Vec<String> {
        self.benchmarks.iter().map(|b| b.name.clone()).collect()
    }

    /// Replaces the default metric ([`Metric::default_for`]) of the benchmarks named in
    /// `overrides`; a name that is not a benchmark of the corpus is an error.
    pub fn with_metrics(
        mut self,
        overrides: &BTreeMap<String, Metric>,
    ) -> Result<Self, TrainError> {
        for (name, metric) in overrides {
            let k = self
                .benchmarks
                .iter()
                .position(|b| &b.name == name)
                .ok_or_else(|| {
                    TrainError::Config(format!(
                        "eval_metrics names benchmark {name:?}, which the corpus does not have (it has: {})",
                        self.names().join(", ")
                    ))
                })?;
            self.benchmarks[k].metric = *metric;
        }
        Ok(self)
    }

    /// Scores `model` on the first `samples` documents of every benchmark (of those read),
    /// `batch` documents per forward pass; with `generate`, also decodes every answer greedily
    /// and scores it with the benchmark's [`Metric`].
    pub fn evaluate(
        &self,
        model: &Qwen2Model,
        batch: usize,
        device: &Device,
        samples: usize,
        generate: bool,
    ) -> Result<BTreeMap<String, BenchScore>, TrainError> {
        let mut out = BTreeMap::new();
        for Benchmark { name, metric, docs } in &self.benchmarks {
            let (metric, docs) = (*metric, &docs[..samples.min(docs.len())]);
            let (mut loss_sum, mut correct) = (0.0, 0usize);
            // Per document: how many leading answer tokens greedy decoding reproduces, and the
            // arg-max at the first that it does not (the teacher-forced pass yields both).
            let mut drafts: Vec<Draft> = Vec::with_capacity(docs.len());
            for chunk in docs.chunks(batch.max(1)) {
                let t = chunk.iter().map(|d| d.tokens.len()).max().unwrap_or(0);
                let b = chunk.len();
                let mut tokens = vec![self.pad; b * t];
                let mut mask = vec![0u8; b * t];
                for (r, d) in chunk.iter().enumerate() {
                    tokens[r * t..r * t + d.tokens.len()].copy_from_slice(&d.tokens);
                    mask[r * t..r * t + d.mask.len()].copy_from_slice(&d.mask);
                }
                let images = self.batch_images(&tokens, b, t, chunk.iter(), device)?;
                let targets = Targets::from_mask(&tokens, &mask, b, t);
                let logp = target_log_probs(model, &tokens, b, t, images.as_ref(), &targets)?
                    .to_vec2::<f32>()?;
                // Per-row sums.
                let mut nll = vec![0.0f64; b];
                let mut count = vec![0usize; b];
                let mut ok = vec![true; b];
                let mut draft = vec![Draft::default(); b];
                for (k, row) in logp.iter().enumerate() {
                    let r = targets.positions[k] as usize / t;
                    let want = targets.tokens[k] as usize;
                    nll[r] -= row[want] as f64;
                    count[r] += 1;
                    let best = argmax(row);
                    if ok[r] && best as usize == want {
                        draft[r].agreed += 1;
                    } else if ok[r] {
                        ok[r] = false;
                        draft[r].next = Some(best);
                    }
                }
                for r in 0..b {
                    loss_sum += nll[r] / count[r].max(1) as f64;
                    correct += ok[r] as usize;
                }
                drafts.extend(draft);
            }
            let n = docs.len().max(1) as f64;
            let score = if generate && metric == Metric::ExactMatch {
                // Greedy decoding reproduces the reference iff every teacher-forced arg-max
                // does (module docs), so exact match needs no decoding.
                Some(correct as f64 / n)
            } else if generate {
                let mut sum = 0.0;
                let size = batch.max(1);
                for (chunk, draft) in docs.chunks(size).zip(drafts.chunks(size)) {
                    let answers = self.generate(model, chunk, draft, device)?;
                    for (d, answer) in chunk.iter().zip(answers) {
                        sum += metric.score(&answer, &d.reference(self.eos), self.sep);
                    }
                }
                Some(sum / n)
            } else {
                None
            };
            out.insert(
                name.clone(),
                BenchScore {
                    loss: loss_sum / n,
                    accuracy: correct as f64 / n,
                    docs: docs.len(),
                    score,
                    metric: generate.then_some(metric),
                },
            );
        }
        Ok(out)
    }

    /// The image patches of a `[b, t]` batch whose rows are `docs` (`None` without images).
    fn batch_images<'a>(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        docs: impl Iterator<Item = &'a EvalDoc>,
        device: &Device,
    ) -> Result<Option<ImageInput>, TrainError> {
        Ok(match self.image_token {
            Some(tok) if self.image_dim > 0 => {
                let imgs: Vec<Vec<f32>> = docs.map(|d| d.image.clone()).collect();
                Some(ImageInput::sequential(
                    tokens,
                    crate::model::qwen2::ImageRows {
                        rows: b,
                        seq_len: t,
                        image_token: tok,
                        dim: self.image_dim,
                    },
                    &imgs,
                    device,
                )?)
            }
            _ => None,
        })
    }

    /// Greedy answers to `docs`' prompts, without the final `<eos>`: each row decodes until
    /// `<eos>`, an image token (which ends the row: an answer cannot hold one), or 5 tokens past
    /// its reference's length. The teacher-forced pass already decoded each answer up to its
    /// first disagreement with the reference and the token greedy decoding puts there
    /// (`drafts`: the reference serves as a speculative draft, verified in one pass), so
    /// decoding resumes after that token. No KV cache: every further token re-runs the whole
    /// (short) prefix.
    fn generate(
        &self,
        model: &Qwen2Model,
        docs: &[EvalDoc],
        drafts: &[Draft],
        device: &Device,
    ) -> Result<Vec<Vec<u32>>, TrainError> {
        let b = docs.len();
        let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(b);
        let mut answers: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut active: Vec<bool> = vec![true; b];
        let caps: Vec<usize> = docs
            .iter()
            .map(|d| d.reference(self.eos).len() + 5)
            .collect();
        for (r, (d, draft)) in docs.iter().zip(drafts).enumerate() {
            // The draft is the answer span right after the prompt; with gaps in the loss mask
            // it is not, and decoding starts at the prompt.
            let contiguous = d.mask[d.prompt_len..].iter().all(|&m| m != 0);
            let agreed = if contiguous { draft.agreed } else { 0 };
            let end = d.prompt_len + agreed;
            let mut seq = d.tokens[..end].to_vec();
            let mut answer = d.tokens[d.prompt_len..end].to_vec();
            match draft.next.filter(|_| contiguous) {
                // The whole reference, `<eos>` included, was reproduced.
                None if agreed > 0 && answer.last() == Some(&self.eos) => {
                    answer.pop();
                    active[r] = false;
                }
                // Otherwise (a reference cut before its `<eos>`) decoding goes on from there.
                None => {}
                Some(next) => {
                    seq.push(next);
                    if next == self.eos {
                        active[r] = false;
                    } else {
                        answer.push(next);
                        if Some(next) == self.image_token || answer.len() >= caps[r] {
                            active[r] = false;
                        }
                    }
                }
            }
            seqs.push(seq);
            answers[r] = answer;
        }
        loop {
            // Finished rows leave the batch.
            let rows: Vec<usize> = (0..b).filter(|&r| active[r]).collect();
            if rows.is_empty() {
                break;
            }
            let n = rows.len();
            let t = rows.iter().map(|&r| seqs[r].len()).max().unwrap_or(0);
            let mut tokens = vec![self.pad; n * t];
            let mut targets = Targets::default();
            for (k, &r) in rows.iter().enumerate() {
                let s = &seqs[r];
                tokens[k * t..k * t + s.len()].copy_from_slice(s);
                targets.positions.push((k * t + s.len() - 1) as u32);
                targets.tokens.push(0);
            }
            let images =
                self.batch_images(&tokens, n, t, rows.iter().map(|&r| &docs[r]), device)?;
            let logp = target_log_probs(model, &tokens, n, t, images.as_ref(), &targets)?
                .to_vec2::<f32>()?;
            for (row, r) in logp.iter().zip(rows) {
                let next = argmax(row);
                seqs[r].push(next);
                if next == self.eos {
                    active[r] = false;
                    continue;
                }
                answers[r].push(next);
                if Some(next) == self.image_token || answers[r].len() >= caps[r] {
                    active[r] = false;
                }
            }
        }
        Ok(answers)
    }
}

/// What the teacher-forced pass tells greedy decoding about one document.
#[derive(Debug, Clone, Copy, Default)]
struct Draft {
    /// Leading answer tokens (`<eos>` included) that greedy decoding reproduces.
    agreed: usize,
    /// The token greedy decoding emits at the first position it does not reproduce.
    next: Option<u32>,
}

/// Index of the largest value (the first of equal ones), as a token id.
fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
        )
        .0 as u32
}

/// The id of `;` in the corpus's vocabulary (`vocab.json`, a JSON list of token strings), the
/// item separator of [`Metric::ItemF1`]; `None` without a readable vocabulary.
fn read_separator(corpus: &Corpus) -> Option<u32> {
    let rel = corpus.manifest.vocab.as_ref()?;
    let text = std::fs::read_to_string(corpus.root.join(rel)).ok()?;
    let vocab: Vec<String> = serde_json::from_str(&text).ok()?;
    vocab.iter().position(|t| t == ";").map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_score_constructed_answers_with_known_values() {
        let em = Metric::ExactMatch;
        assert_eq!(em.score(&[5, 6], &[5, 6], None), 1.0);
        assert_eq!(em.score(&[5], &[5, 6], None), 0.0);
        // ANLS: one substitution in four → 1 − 1/4; two deletions of four → d = 0.5 → 0.
        let anls = Metric::Anls;
        assert_eq!(anls.score(&[1, 2, 3, 4], &[1, 2, 3, 9], None), 0.75);
        assert_eq!(anls.score(&[1, 2], &[1, 2, 3, 4], None), 0.0);
        assert_eq!(anls.score(&[1, 2, 3], &[1, 2, 3, 4], None), 0.75);
        assert_eq!(anls.score(&[], &[], None), 1.0);
        assert_eq!(levenshtein(&[1, 2, 3], &[2, 3, 4]), 2);
        assert_eq!(levenshtein(&[7, 8, 9, 1], &[]), 4);
        // Token F1: 2 hits, precision 2/3, recall 2/4 → 4/7; repeated tokens count once each.
        let f1 = Metric::TokenF1;
        assert!((f1.score(&[1, 2, 3], &[1, 2, 4, 5], None) - 4.0 / 7.0).abs() < 1e-15);
        assert!((f1.score(&[1, 1, 1], &[1, 2], None) - 0.4).abs() < 1e-15);
        assert_eq!(f1.score(&[3], &[4], None), 0.0);
        // Item F1 with `;` = 99: order does not matter, a half-right item does not count.
        let items = Metric::ItemF1;
        let reference = [10, 20, 99, 11, 21];
        assert_eq!(
            items.score(&[11, 21, 99, 10, 20], &reference, Some(99)),
            1.0
        );
        assert_eq!(
            items.score(&[10, 20, 99, 11, 22], &reference, Some(99)),
            0.5
        );
        assert!((items.score(&[10, 20], &reference, Some(99)) - 2.0 / 3.0).abs() < 1e-15);
        // Without a separator the whole answer is one item.
        assert_eq!(items.score(&[10, 20, 99, 11, 21], &reference, None), 1.0);
        assert_eq!(items.score(&[10, 20], &reference, None), 0.0);
    }

    #[test]
    fn benchmark_names_pick_their_public_metric_and_overrides_parse() {
        let pick = |n| Metric::default_for(n);
        assert_eq!(pick("docvqa"), Metric::Anls);
        assert_eq!(pick("TextVQA"), Metric::Anls);
        assert_eq!(pick("coco-caption"), Metric::TokenF1);
        assert_eq!(pick("nocaps"), Metric::TokenF1);
        assert_eq!(pick("lvis-det"), Metric::ItemF1);
        for n in ["refcoco", "pope", "gqa", "countbench", "chartqa"] {
            assert_eq!(pick(n), Metric::ExactMatch, "{n}");
        }
        let m: BTreeMap<String, Metric> =
            toml::from_str("docvqa = \"exact_match\"\ngqa = \"token_f1\"").unwrap();
        assert_eq!(m["docvqa"], Metric::ExactMatch);
        assert_eq!(m["gqa"].to_string(), "token_f1");
        assert_eq!(format!("[{:<10}]", Metric::Anls), "[anls      ]");
        assert!(toml::from_str::<BTreeMap<String, Metric>>("gqa = \"bleu\"").is_err());
    }
}
