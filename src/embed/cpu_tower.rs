//! The CLIP vision tower's forward pass on the CPU, as fused rayon-parallel loops around
//! `gemm`. Why it exists: through candle's CPU backend the tower spent about 40 % of `embed`'s
//! time outside the large matmuls, mostly on one thread: layer norms, the activation (three
//! ops, each a new 20 MB buffer), transposes to contiguous heads and the attention's 384 small
//! matmuls per batch, run one after another (perf, 2026-12-08). Here those run in parallel
//! over rows or images, biases and residuals fold into the matmuls (`dst = dst + x·W`), the
//! heads are read in place through strides, and the buffers are reused across layers.
//!
//! The equations are those of [`super::tower`]'s candle path, which CUDA keeps; the tests below
//! compare the two on random towers, and tests/embed.rs compares `embed` with a float64 numpy
//! reference.

use rayon::prelude::*;

use super::config::Activation;
use crate::strided::{mm, mm_par, Dst, Src};

/// A linear layer: `y = x · w + b`, `w` stored `[inp, out]` row major.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) w: Vec<f32>,
    pub(crate) b: Vec<f32>,
    pub(crate) inp: usize,
    pub(crate) out: usize,
}

/// A layer norm's weight, bias and epsilon.
#[derive(Debug)]
pub(crate) struct Norm {
    pub(crate) w: Vec<f32>,
    pub(crate) b: Vec<f32>,
    pub(crate) eps: f64,
}

/// One pre-norm encoder layer; `qkv` has q pre-scaled by `head_dim^-½`.
#[derive(Debug)]
pub(crate) struct CpuLayer {
    pub(crate) ln1: Norm,
    pub(crate) qkv: Linear,
    pub(crate) out: Linear,
    pub(crate) ln2: Norm,
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
}

/// The tower's weights in plain vectors.
#[derive(Debug)]
pub(crate) struct CpuTower {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) patch: usize,
    pub(crate) image_size: usize,
    pub(crate) act: Activation,
    /// `[3·patch², hidden]`.
    pub(crate) patch_w: Vec<f32>,
    /// `[1 + grid², hidden]`: position embeddings, the class embedding added to row 0.
    pub(crate) embed_add: Vec<f32>,
    pub(crate) pre_ln: Norm,
    pub(crate) layers: Vec<CpuLayer>,
    pub(crate) post_ln: Norm,
    /// `[hidden, projection_dim]`.
    pub(crate) proj: Vec<f32>,
    pub(crate) proj_dim: usize,
}

/// Rows per parallel task in the element-wise passes.
const ROWS_PER_TASK: usize = 16;

impl Linear {
    /// `dst = x · w + b` (`add` false) or `dst += x · w + b` (`add` true), over `rows` rows.
    fn apply(&self, x: &[f32], dst: &mut [f32], add: bool) {
        let rows = x.len() / self.inp;
        debug_assert_eq!(dst.len(), rows * self.out);
        dst.par_chunks_mut(self.out * ROWS_PER_TASK)
            .for_each(|chunk| {
                for row in chunk.chunks_mut(self.out) {
                    if add {
                        row.iter_mut().zip(&self.b).for_each(|(d, b)| *d += b);
                    } else {
                        row.copy_from_slice(&self.b);
                    }
                }
            });
        // SAFETY: x is rows × inp, w is inp × out, dst is rows × out, all row major and
        // distinct buffers.
        unsafe {
            mm_par(
                rows,
                self.out,
                self.inp,
                Dst::add(dst.as_mut_ptr(), self.out),
                Src::rows(x.as_ptr(), self.inp),
                Src::rows(self.w.as_ptr(), self.out),
            )
        }
    }
}

impl Norm {
    /// Layer norm of each `w.len()`-wide row of `x` into `dst` (statistics in f64).
    fn apply(&self, x: &[f32], dst: &mut [f32]) {
        let h = self.w.len();
        dst.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .for_each(|(d, s)| {
                for (dr, sr) in d.chunks_mut(h).zip(s.chunks(h)) {
                    let mean = sr.iter().map(|&v| f64::from(v)).sum::<f64>() / h as f64;
                    let var = sr
                        .iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>()
                        / h as f64;
                    let inv = 1.0 / (var + self.eps).sqrt();
                    let (mean, inv) = (mean as f32, inv as f32);
                    for (((o, &v), &w), &b) in dr.iter_mut().zip(sr).zip(&self.w).zip(&self.b) {
                        *o = (v - mean) * inv * w + b;
                    }
                }
            });
    }
}

/// `e^x` without branches or calls, so that loops over slices vectorise (Cephes' `expf`:
/// `x = n·ln 2 + r`, a degree-7 polynomial for `e^r` on `|r| ≤ ln 2 / 2`, times `2^n` built
/// from the exponent bits); within 4 ulps of the exact value on `[-87, 88]` (tested), clamped
/// outside.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // SAFETY: n + 127 is an integer in [1, 254] after the clamp (a plain `as` cast would
    // saturate, lane by lane, and not vectorise).
    let e = unsafe { (n + 127.0).to_int_unchecked::<i32>() };
    er * f32::from_bits((e as u32) << 23)
}

#[inline(always)]
fn quick_gelu(c: &mut [f32]) {
    for v in c.iter_mut() {
        *v /= 1.0 + exp_f32(-1.702 * *v);
    }
}

/// [`quick_gelu`] compiled for AVX-512F (16 lanes instead of SSE2's 4).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quick_gelu_avx512(c: &mut [f32]) {
    quick_gelu(c)
}

/// Applies the activation to every value of `c` in place (one loop per kind, so that
/// `quick_gelu`'s vectorises).
fn activate(act: Activation, c: &mut [f32]) {
    match act {
        Activation::QuickGelu => {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { quick_gelu_avx512(c) };
                return;
            }
            quick_gelu(c);
        }
        Activation::Gelu => {
            for v in c.iter_mut() {
                let x = f64::from(*v);
                let erf = candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2);
                *v = (0.5 * x * (1.0 + erf)) as f32;
            }
        }
        Activation::GeluTanh => {
            const C: f32 = 0.797_884_6; // √(2/π)
            for v in c.iter_mut() {
                let x = *v;
                *v = 0.5 * x * (1.0 + (C * x * (1.0 + 0.044715 * x * x)).tanh());
            }
        }
    }
}

impl CpuTower {
    /// Tokens per image: the class token and one per patch.
    fn tokens(&self) -> usize {
        let g = self.image_size / self.patch;
        1 + g * g
    }

    /// Runs the tower on `pixels` (`[b, 3, image_size, image_size]`): returns the image
    /// embeddings `[b, projection_dim]` and the last hidden state `[b, tokens, hidden]` (before
    /// `post_layernorm`).
    pub(crate) fn forward(&self, pixels: &[f32], b: usize) -> (Vec<f32>, Vec<f32>) {
        let (h, p, s) = (self.hidden, self.patch, self.image_size);
        let (g, t) = (s / p, self.tokens());
        let pp = 3 * p * p;
        // Patches in the convolution weight's order: row (image, gy, gx), column (c, py, px).
        let mut patches = vec![0f32; b * g * g * pp];
        patches
            .par_chunks_mut(g * g * pp)
            .zip(pixels.par_chunks(3 * s * s))
            .for_each(|(dst, img)| {
                for gy in 0..g {
                    for gx in 0..g {
                        let row = &mut dst[(gy * g + gx) * pp..(gy * g + gx + 1) * pp];
                        for c in 0..3 {
                            for py in 0..p {
                                let src = c * s * s + (gy * p + py) * s + gx * p;
                                row[(c * p + py) * p..(c * p + py + 1) * p]
                                    .copy_from_slice(&img[src..src + p]);
                            }
                        }
                    }
                }
            });
        let mut emb = vec![0f32; b * g * g * h];
        // SAFETY: patches is (b·g²) × pp, patch_w pp × h, emb (b·g²) × h.
        unsafe {
            mm_par(
                b * g * g,
                h,
                pp,
                Dst::set(emb.as_mut_ptr(), h),
                Src::rows(patches.as_ptr(), pp),
                Src::rows(self.patch_w.as_ptr(), h),
            )
        }
        drop(patches);
        let mut y = vec![0f32; b * t * h];
        y.par_chunks_mut(t * h)
            .zip(emb.par_chunks(g * g * h))
            .for_each(|(dst, e)| {
                dst[..h].copy_from_slice(&self.embed_add[..h]);
                for ((d, &v), &a) in dst[h..].iter_mut().zip(e).zip(&self.embed_add[h..]) {
                    *d = v + a;
                }
            });
        drop(emb);
        let mut x = vec![0f32; b * t * h];
        self.pre_ln.apply(&y, &mut x);
        let inter = self.layers.first().map_or(0, |l| l.fc1.out);
        let mut qkv = vec![0f32; b * t * 3 * h];
        let mut attn = vec![0f32; b * t * h];
        let mut mlp = vec![0f32; b * t * inter];
        for layer in &self.layers {
            layer.ln1.apply(&x, &mut y);
            layer.qkv.apply(&y, &mut qkv, false);
            self.attention(&qkv, &mut attn, t);
            layer.out.apply(&attn, &mut x, true);
            layer.ln2.apply(&x, &mut y);
            layer.fc1.apply(&y, &mut mlp, false);
            let act = self.act;
            mlp.par_chunks_mut(inter * ROWS_PER_TASK)
                .for_each(|c| activate(act, c));
            layer.fc2.apply(&mlp, &mut x, true);
        }
        let cls: Vec<f32> = x.chunks(t * h).flat_map(|img| img[..h].to_vec()).collect();
        let mut pooled = vec![0f32; b * h];
        self.post_ln.apply(&cls, &mut pooled);
        let mut embeds = vec![0f32; b * self.proj_dim];
        // SAFETY: pooled is b × h, proj h × d, embeds b × d.
        unsafe {
            mm(
                b,
                self.proj_dim,
                h,
                Dst::set(embeds.as_mut_ptr(), self.proj_dim),
                Src::rows(pooled.as_ptr(), h),
                Src::rows(self.proj.as_ptr(), self.proj_dim),
            )
        }
        (embeds, x)
    }

    /// Multi-head self-attention of each image's `t` tokens: `qkv` rows are `[q | k | v]`
    /// (`3·hidden` wide), the result goes to `out` (`hidden` wide), heads side by side. Images
    /// run in parallel; each head's two small matmuls read q, k and v in place by stride.
    fn attention(&self, qkv: &[f32], out: &mut [f32], t: usize) {
        let h = self.hidden;
        let hd = h / self.heads;
        out.par_chunks_mut(t * h)
            .zip(qkv.par_chunks(t * 3 * h))
            .for_each(|(o, img)| {
                let mut scores = vec![0f32; t * t];
                for head in 0..self.heads {
                    let q = img[head * hd..].as_ptr();
                    let k = img[h + head * hd..].as_ptr();
                    let v = img[2 * h + head * hd..].as_ptr();
                    // SAFETY: q, k, v are t rows of hd values 3·h apart inside img; scores is
                    // t × t; o's head columns are t rows of hd values h apart.
                    unsafe {
                        // scores = q · kᵀ: kᵀ's rows are k's columns (row stride 1, column
                        // stride 3·h).
                        mm(
                            t,
                            t,
                            hd,
                            Dst::set(scores.as_mut_ptr(), t),
                            Src::rows(q, 3 * h),
                            Src::cols(k, 3 * h),
                        );
                    }
                    for row in scores.chunks_mut(t) {
                        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0f32;
                        for v in row.iter_mut() {
                            *v = exp_f32(*v - max);
                            sum += *v;
                        }
                        let inv = 1.0 / sum;
                        row.iter_mut().for_each(|v| *v *= inv);
                    }
                    // SAFETY: as above.
                    unsafe {
                        mm(
                            t,
                            hd,
                            t,
                            Dst::set(o[head * hd..].as_mut_ptr(), h),
                            Src::rows(scores.as_ptr(), t),
                            Src::rows(v, 3 * h),
                        );
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp_f32` against a float64 `exp` over its whole range: within 4 f32 ulps (relative
    /// 4 · 2⁻²³), and clamped outside it.
    #[test]
    fn exp_matches_float64_within_four_ulps() {
        let mut worst = 0f64;
        for i in 0..=1_750_000 {
            let x = -87.0 + i as f32 * 1e-4;
            let want = f64::from(x).exp();
            let err = (f64::from(exp_f32(x)) - want).abs() / want;
            worst = worst.max(err);
        }
        assert!(worst < 4.0 * f64::from(f32::EPSILON), "{worst:e}");
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
        assert_eq!(exp_f32(1000.0), exp_f32(88.0));
        assert!(exp_f32(88.0).is_finite());
    }
}
