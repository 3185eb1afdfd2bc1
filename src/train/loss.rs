//! The masked next-token loss and the per-document answer scores used by evaluation.
//!
//! Position `t` predicts token `t+1` and counts when the loss mask of `t+1` is 1 (the corpus
//! marks answer tokens and `<eos>`). Only counted positions go through the LM head, which is
//! where most of a small-vocabulary model's time would otherwise go.

use candle_core::{DType, Tensor, D};

use crate::model::{fused, ImageInput, ModelError, Qwen2Model};

/// The counted positions of a `[B, T]` batch: flat index of the predicting position and the
/// target token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// Flat positions `row · T + t` whose output is scored.
    pub positions: Vec<u32>,
    /// The token each of them must predict (`tokens[row · T + t + 1]`).
    pub tokens: Vec<u32>,
}

impl Targets {
    /// Targets of `tokens`/`mask` (`B × T`, row-major).
    pub fn from_mask(tokens: &[u32], mask: &[u8], b: usize, t: usize) -> Self {
        let mut out = Self::default();
        for r in 0..b {
            for p in 0..t.saturating_sub(1) {
                let next = r * t + p + 1;
                if mask[next] != 0 {
                    out.positions.push((r * t + p) as u32);
                    out.tokens.push(tokens[next]);
                }
            }
        }
        out
    }

    /// Number of counted positions.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// Logits `[N, V]` at the counted positions.
fn target_logits(
    model: &Qwen2Model,
    tokens: &[u32],
    b: usize,
    t: usize,
    images: Option<&ImageInput>,
    targets: &Targets,
) -> Result<Tensor, ModelError> {
    let h = model.hidden(tokens, b, t, images)?;
    let device = h.device().clone();
    let sel = Tensor::from_slice(&targets.positions, targets.len(), &device)?;
    model.logits(&h.index_select(&sel, 0)?)
}

/// Log-probabilities `[N, V]` at the counted positions (f32 for half-precision models).
pub fn target_log_probs(
    model: &Qwen2Model,
    tokens: &[u32],
    b: usize,
    t: usize,
    images: Option<&ImageInput>,
    targets: &Targets,
) -> Result<Tensor, ModelError> {
    let logits = target_logits(model, tokens, b, t, images, targets)?;
    // Half-precision logits are upcast for the log-softmax; f32 and f64 stay as they are.
    let logits = match logits.dtype() {
        DType::BF16 | DType::F16 => logits.to_dtype(DType::F32)?,
        _ => logits,
    };
    Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
}

/// A `[B, T]` batch of token ids with its image patches, as [`masked_loss`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct LossInput<'b> {
    /// Token ids, `rows × seq_len`, row-major.
    pub tokens: &'b [u32],
    /// Rows B.
    pub rows: usize,
    /// Tokens per row T.
    pub seq_len: usize,
    /// Image patches placed at image-token positions.
    pub images: Option<&'b ImageInput>,
}

/// Sum of the cross-entropy over the counted positions divided by `denominator` (the number
/// of counted positions of the whole global batch, so micro-batches and ranks add up to the
/// mean). Returns a scalar tensor with a gradient path to every parameter. With the model's
/// fused kernels on, the cross-entropy is one fused op ([`fused::cross_entropy_sum`]).
pub fn masked_loss(
    model: &Qwen2Model,
    input: LossInput<'_>,
    targets: &Targets,
    denominator: usize,
) -> Result<Tensor, ModelError> {
    let LossInput {
        tokens,
        rows: b,
        seq_len: t,
        images,
    } = input;
    if targets.is_empty() {
        return Err(ModelError::Input(
            "the batch has no position with a loss mask of 1".into(),
        ));
    }
    if model.fused() {
        let logits = target_logits(model, tokens, b, t, images, targets)?;
        let tgt = Tensor::from_slice(&targets.tokens, targets.len(), logits.device())?;
        let sum = fused::cross_entropy_sum(&logits, &tgt)?;
        return Ok((sum / denominator as f64)?);
    }
    let logp = target_log_probs(model, tokens, b, t, images, targets)?;
    let tgt = Tensor::from_slice(&targets.tokens, (targets.len(), 1), logp.device())?;
    let picked = logp.gather(&tgt, 1)?;
    Ok((picked.sum_all()?.neg()? / denominator as f64)?)
}
