//! Per-benchmark evaluation on the corpus's held-out sets: answer-token loss and exact-match
//! accuracy of greedy decoding of the answer span.
//!
//! Exact match is computed in one teacher-forced pass, which is exactly equivalent to greedy
//! decoding: greedy decoding reproduces the reference answer (and its `<eos>`) if and only if,
//! at every answer position, the arg-max given the reference prefix is the reference token
//! (induction over the answer: while the generated prefix equals the reference prefix, the
//! next greedy token is that arg-max). Loss-masked positions are the answer and `<eos>`.

use std::collections::BTreeMap;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::loss::{target_log_probs, Targets};
use super::TrainError;
use crate::data::corpus::Corpus;
use crate::model::{ImageInput, Qwen2Model};

/// One evaluation document: tokens, mask and image patches (f32, `patches × D`).
#[derive(Debug, Clone)]
struct EvalDoc {
    tokens: Vec<u32>,
    mask: Vec<u8>,
    image: Vec<f32>,
}

/// The held-out documents of every benchmark, read once.
#[derive(Debug, Clone)]
pub struct EvalSet {
    benchmarks: Vec<(String, Vec<EvalDoc>)>,
    pad: u32,
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
                docs.push(EvalDoc {
                    tokens,
                    mask,
                    image,
                });
            }
            benchmarks.push((entry.name.clone(), docs));
        }
        Ok(Self {
            benchmarks,
            pad: m.special_tokens.pad,
            image_token: m.image.as_ref().map(|_| m.special_tokens.image),
            image_dim: m.image.as_ref().map_or(0, |i| i.dim),
        })
    }

    /// Benchmark names, in manifest order.
    pub fn names(&self) -> Vec<String> {
        self.benchmarks.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Scores `model` on every benchmark, `batch` documents per forward pass.
    pub fn evaluate(
        &self,
        model: &Qwen2Model,
        batch: usize,
        device: &Device,
    ) -> Result<BTreeMap<String, BenchScore>, TrainError> {
        let mut out = BTreeMap::new();
        for (name, docs) in &self.benchmarks {
            let (mut loss_sum, mut correct) = (0.0, 0usize);
            for chunk in docs.chunks(batch.max(1)) {
                let t = chunk.iter().map(|d| d.tokens.len()).max().unwrap_or(0);
                let b = chunk.len();
                let mut tokens = vec![self.pad; b * t];
                let mut mask = vec![0u8; b * t];
                for (r, d) in chunk.iter().enumerate() {
                    tokens[r * t..r * t + d.tokens.len()].copy_from_slice(&d.tokens);
                    mask[r * t..r * t + d.mask.len()].copy_from_slice(&d.mask);
                }
                let images = match self.image_token {
                    Some(tok) if self.image_dim > 0 => {
                        let imgs: Vec<Vec<f32>> = chunk.iter().map(|d| d.image.clone()).collect();
                        Some(ImageInput::sequential(
                            &tokens,
                            b,
                            t,
                            tok,
                            &imgs,
                            self.image_dim,
                            device,
                        )?)
                    }
                    _ => None,
                };
                let targets = Targets::from_mask(&tokens, &mask, b, t);
                let logp = target_log_probs(model, &tokens, b, t, images.as_ref(), &targets)?
                    .to_vec2::<f32>()?;
                // Per-row sums.
                let mut nll = vec![0.0f64; b];
                let mut count = vec![0usize; b];
                let mut ok = vec![true; b];
                for (k, row) in logp.iter().enumerate() {
                    let r = targets.positions[k] as usize / t;
                    let want = targets.tokens[k] as usize;
                    nll[r] -= row[want] as f64;
                    count[r] += 1;
                    let best = row
                        .iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |acc, (i, &v)| {
                                if v > acc.1 {
                                    (i, v)
                                } else {
                                    acc
                                }
                            },
                        )
                        .0;
                    if best != want {
                        ok[r] = false;
                    }
                }
                for r in 0..b {
                    loss_sum += nll[r] / count[r].max(1) as f64;
                    correct += ok[r] as usize;
                }
            }
            let n = docs.len().max(1) as f64;
            out.insert(
                name.clone(),
                BenchScore {
                    loss: loss_sum / n,
                    accuracy: correct as f64 / n,
                    docs: docs.len(),
                },
            );
        }
        Ok(out)
    }
}
