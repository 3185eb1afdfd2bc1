//! Data parallelism for the trainer, applied from outside the model (as torchtitan does):
//! gradients are flattened into buckets and all-reduced (replicated optimiser), or
//! reduce-scattered to per-rank shards that each rank's [`ShardedAdamW`] updates before the
//! parameters are all-gathered back (ZeRO stage 1: optimiser state divided by the world size).
//!
//! candle's backward pass runs as one call with no per-parameter hooks, so communication
//! starts after it rather than overlapping with it; buckets still bound the size of each
//! collective and of the staging buffer.

use super::optim::{AdamW, AdamWConfig, AdamWStep};
use crate::dist::{BufMut, Communicator, DistError, ReduceOp};
use crate::model::Params;

/// Concatenation layout of the parameters: start of each in the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatLayout {
    /// Start offset of each parameter.
    pub offsets: Vec<usize>,
    /// Length of each parameter.
    pub lens: Vec<usize>,
    /// Whether weight decay applies to each parameter.
    pub decays: Vec<bool>,
    /// Total elements.
    pub total: usize,
}

impl FlatLayout {
    /// The layout of `params`.
    pub fn of(params: &Params) -> Self {
        let mut offsets = Vec::new();
        let mut lens = Vec::new();
        let mut total = 0;
        for v in params.vars() {
            offsets.push(total);
            lens.push(v.elem_count());
            total += v.elem_count();
        }
        Self {
            offsets,
            lens,
            decays: params.specs().iter().map(|s| s.decays()).collect(),
            total,
        }
    }

    /// Concatenates per-parameter buffers, zero-padded to `padded` elements.
    pub fn flatten(&self, parts: &[Vec<f32>], padded: usize) -> Vec<f32> {
        let mut flat = Vec::with_capacity(padded);
        for p in parts {
            flat.extend_from_slice(p);
        }
        flat.resize(padded, 0.0);
        flat
    }

    /// Splits a flat buffer back into per-parameter buffers.
    pub fn unflatten(&self, flat: &[f32]) -> Vec<Vec<f32>> {
        self.offsets
            .iter()
            .zip(&self.lens)
            .map(|(&o, &n)| flat[o..o + n].to_vec())
            .collect()
    }

    /// Elements per rank shard for `world` ranks (the flat vector padded to a multiple).
    pub fn shard_len(&self, world: usize) -> usize {
        self.total.div_ceil(world.max(1))
    }
}

/// Writes per-parameter f32 values into the model's variables (cast to their dtype).
pub fn set_params(params: &Params, parts: &[Vec<f32>]) -> Result<(), crate::model::ModelError> {
    for (var, w) in params.vars().iter().zip(parts) {
        let t =
            candle_core::Tensor::from_slice(w, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// All-reduces (sums) the per-parameter gradients: gradients of at least a quarter bucket
/// directly, smaller ones packed into flat buckets of at most `bucket_elems` elements. Every
/// rank ends with the same summed gradients.
pub fn all_reduce_buckets(
    comm: &dyn Communicator,
    grads: &mut [Vec<f32>],
    bucket_elems: usize,
) -> Result<(), DistError> {
    if comm.size() == 1 {
        return Ok(());
    }
    let bucket_elems = bucket_elems.max(1);
    // The staging bucket is reused across calls (its pages are faulted in once).
    thread_local! {
        static BUCKET: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut bucket: Vec<f32> = BUCKET.with(|b| std::mem::take(&mut *b.borrow_mut()));
    bucket.clear();
    bucket.reserve(bucket_elems);
    let result = reduce_with(comm, grads, bucket_elems, &mut bucket);
    BUCKET.with(|b| *b.borrow_mut() = bucket);
    result
}

fn reduce_with(
    comm: &dyn Communicator,
    grads: &mut [Vec<f32>],
    bucket_elems: usize,
    bucket: &mut Vec<f32>,
) -> Result<(), DistError> {
    // (param, start, len) pieces of the current bucket.
    let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
    let flush = |bucket: &mut Vec<f32>,
                 pieces: &mut Vec<(usize, usize, usize)>,
                 grads: &mut [Vec<f32>]|
     -> Result<(), DistError> {
        if bucket.is_empty() {
            return Ok(());
        }
        comm.all_reduce(BufMut::F32(bucket), ReduceOp::Sum)?;
        let mut at = 0;
        for &(p, s, n) in pieces.iter() {
            grads[p][s..s + n].copy_from_slice(&bucket[at..at + n]);
            at += n;
        }
        bucket.clear();
        pieces.clear();
        Ok(())
    };
    for p in 0..grads.len() {
        // Large gradients are reduced where they are (no staging copy); small ones are
        // packed into the bucket so each collective carries a useful amount of data.
        if grads[p].len() >= bucket_elems / 4 {
            comm.all_reduce(BufMut::F32(&mut grads[p]), ReduceOp::Sum)?;
            continue;
        }
        let mut s = 0;
        while s < grads[p].len() {
            let n = (grads[p].len() - s).min(bucket_elems - bucket.len());
            bucket.extend_from_slice(&grads[p][s..s + n]);
            pieces.push((p, s, n));
            s += n;
            if bucket.len() == bucket_elems {
                flush(bucket, &mut pieces, grads)?;
            }
        }
    }
    flush(bucket, &mut pieces, grads)
}

/// AdamW over this rank's shard `[rank·S, (rank+1)·S)` of the flat parameter vector (ZeRO-1):
/// the same update rule as [`AdamW`], element for element.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardedAdamW {
    /// Hyperparameters.
    pub config: AdamWConfig,
    /// Updates applied.
    pub step: u64,
    /// First flat index owned.
    pub start: usize,
    /// Master weights of the shard (padding beyond the parameters stays 0).
    pub master: Vec<f32>,
    /// First moments of the shard.
    pub exp_avg: Vec<f32>,
    /// Second moments of the shard.
    pub exp_avg_sq: Vec<f32>,
    /// Weight decay applies to each element of the shard.
    decay: Vec<bool>,
}

impl ShardedAdamW {
    /// This rank's shard of a full optimiser state.
    pub fn from_full(full: &AdamW, layout: &FlatLayout, rank: usize, world: usize) -> Self {
        let s = layout.shard_len(world);
        let padded = s * world;
        let start = rank * s;
        let cut = |parts: &[Vec<f32>]| layout.flatten(parts, padded)[start..start + s].to_vec();
        let mut decay = vec![false; padded];
        for (i, (&o, &n)) in layout.offsets.iter().zip(&layout.lens).enumerate() {
            decay[o..o + n]
                .iter_mut()
                .for_each(|d| *d = layout.decays[i]);
        }
        Self {
            config: full.config,
            step: full.step,
            start,
            master: cut(&full.master),
            exp_avg: cut(&full.exp_avg),
            exp_avg_sq: cut(&full.exp_avg_sq),
            decay: decay[start..start + s].to_vec(),
        }
    }

    /// One update of the shard from its summed (and clipped) gradients.
    pub fn step(&mut self, grads: &[f32], lr: f64) {
        self.step += 1;
        let k = AdamWStep::new(&self.config, self.step, lr);
        for (j, &g) in grads.iter().enumerate().take(self.master.len()) {
            k.apply(
                &mut self.master[j],
                &mut self.exp_avg[j],
                &mut self.exp_avg_sq[j],
                g,
                self.decay[j],
            );
        }
    }

    /// Gathers every rank's shard into a full optimiser state (for checkpoints).
    pub fn gather(
        &self,
        comm: &dyn Communicator,
        layout: &FlatLayout,
        params: &Params,
    ) -> Result<AdamW, DistError> {
        let world = comm.size();
        let s = layout.shard_len(world);
        let mut parts = Vec::new();
        for buf in [&self.master, &self.exp_avg, &self.exp_avg_sq] {
            let mut full = vec![0.0f32; s * world];
            comm.all_gather(buf, &mut full)?;
            parts.push(layout.unflatten(&full));
        }
        let exp_avg_sq = parts.pop().expect("three");
        let exp_avg = parts.pop().expect("three");
        let master = parts.pop().expect("three");
        Ok(AdamW::from_parts(
            params,
            self.config,
            self.step,
            master,
            exp_avg,
            exp_avg_sq,
        ))
    }
}
