//! Fused causal grouped-query attention with rotary embeddings, from the q/k/v projections to
//! the concatenated head outputs (`docs/model.md` step 3 between the projections and `o_proj`).
//!
//! Work is split per (batch row, key/value head): one task rotates that head's keys once and
//! serves every query head of its group, in blocks of [`BLOCK`] query rows that only multiply
//! the key columns up to their own end. The forward keeps the log-sum-exp of every score row;
//! the backward recomputes the probabilities from it (memory O(B·n_h·T), not O(T²)).

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu::{read, slice, SyncPtr};
use super::real::Real;
use crate::strided::{mm, Dst, Src};

/// Row block of the causal attention kernels: each block of query rows only multiplies the
/// key columns up to its own end.
const BLOCK: usize = 64;

/// The shapes of a fused attention call: `batch` rows of `seq_len` positions, `heads` query
/// heads sharing `kv_heads` key/value heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Batch rows B.
    pub batch: usize,
    /// Positions per row T.
    pub seq_len: usize,
    /// Query heads n_h.
    pub heads: usize,
    /// Key/value heads n_kv (divides `heads`).
    pub kv_heads: usize,
}

/// `out = mul · R x` for one head vector `x` (rotary rotation by the angles `cos`/`sin` of
/// its position, half-size tables): `[a, b] ↦ [a·c − b·s, b·c + a·s]`.
fn rope_row<T: Real>(x: &[T], cos: &[T], sin: &[T], mul: T, out: &mut [T]) {
    let h2 = cos.len();
    for i in 0..h2 {
        let (a, b) = (x[i], x[i + h2]);
        out[i] = (a * cos[i] - b * sin[i]) * mul;
        out[i + h2] = (b * cos[i] + a * sin[i]) * mul;
    }
}

/// `out = mul · Rᵀ y`: the rotation by the negative angles (the rotary backward).
fn unrope_row<T: Real>(y: &[T], cos: &[T], sin: &[T], mul: T, out: &mut [T]) {
    let h2 = cos.len();
    for i in 0..h2 {
        let (a, b) = (y[i], y[i + h2]);
        out[i] = (a * cos[i] + b * sin[i]) * mul;
        out[i + h2] = (b * cos[i] - a * sin[i]) * mul;
    }
}

/// The half-size rotary tables `[T, hd/2]` in the kernel's element type.
struct Tables<T> {
    cos: Vec<T>,
    sin: Vec<T>,
    /// `hd/2`.
    half: usize,
}

impl<T> Tables<T> {
    /// The cos and sin rows of position `i`.
    fn at(&self, i: usize) -> (&[T], &[T]) {
        let h2 = self.half;
        (
            &self.cos[i * h2..(i + 1) * h2],
            &self.sin[i * h2..(i + 1) * h2],
        )
    }
}

/// One head of one batch row in a projection `[B·T, n·hd]` (rows `b·T + t`, heads side by
/// side).
#[derive(Clone, Copy)]
struct Head<'a, T> {
    /// The projection.
    data: &'a [T],
    /// Heads in the projection (n).
    heads: usize,
    /// Batch row.
    row: usize,
    /// Head index.
    head: usize,
}

/// Causal grouped-query attention with rotary embeddings and `1/√hd` scaling, from the q/k/v
/// projections (`[B·T, n·hd]`, rows `b·T + t`, heads side by side) to the concatenated head
/// outputs `[B·T, n_h·hd]`.
struct AttentionOp {
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Half-size rotary tables `[T, hd/2]`, f64.
    cos: Vec<f64>,
    sin: Vec<f64>,
    /// Log-sum-exp `[B, n_h, T]` saved by the forward.
    lse: Mutex<Option<CpuStorage>>,
}

/// The inputs of the backward pass: the projections, the forward's output, its gradient
/// and the saved log-sum-exp.
struct BackwardInputs<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    o: &'a [T],
    dout: &'a [T],
    lse: &'a [T],
}

/// The gradients the backward writes, each task to the rows of its own (batch row, key/value
/// head).
#[derive(Clone, Copy)]
struct GradPtrs<T> {
    dq: SyncPtr<T>,
    dk: SyncPtr<T>,
    dv: SyncPtr<T>,
}

/// One backward task's working buffers.
struct Scratch<T> {
    /// Rotated keys of the task's key/value head `[T, hd]`.
    kr: Vec<T>,
    /// Rotated, scaled queries of the current head `[T, hd]`.
    qr: Vec<T>,
    /// Gradient of `kr`, summed over the group's heads.
    dkr: Vec<T>,
    /// `dS · Kr` of the current block.
    tmp: Vec<T>,
    /// Probabilities `[T, T]`.
    p: Vec<T>,
    /// Score gradients `[T, T]`.
    ds: Vec<T>,
    /// `Σ dO ⊙ O` per row.
    d: Vec<T>,
}

/// What every task of one backward pass shares.
struct Backward<'a, T> {
    op: &'a AttentionOp,
    inp: BackwardInputs<'a, T>,
    out: GradPtrs<T>,
    tab: Tables<T>,
    scale: T,
}

/// The (batch row, key/value head, query head) a backward step works on.
#[derive(Clone, Copy)]
struct At {
    bi: usize,
    g: usize,
    h: usize,
}

impl AttentionOp {
    fn tables<T: Real>(&self) -> Tables<T> {
        Tables {
            cos: self.cos.iter().map(|&x| T::from_f64(x)).collect(),
            sin: self.sin.iter().map(|&x| T::from_f64(x)).collect(),
            half: self.head_dim / 2,
        }
    }

    /// `out[i] = mul · R src[i]` for all positions `i` of one (row, head).
    fn rope_head<T: Real>(&self, src: Head<'_, T>, tab: &Tables<T>, mul: T, out: &mut [T]) {
        let (t, hd) = (self.t, self.head_dim);
        for i in 0..t {
            let off = ((src.row * t + i) * src.heads + src.head) * hd;
            let (cos, sin) = tab.at(i);
            rope_row(
                &src.data[off..off + hd],
                cos,
                sin,
                mul,
                &mut out[i * hd..(i + 1) * hd],
            );
        }
    }

    /// The causal softmax of score rows `r0..r1` (in `s`, `r1` valid columns each) in place;
    /// row `i`'s log-sum-exp into `lse[i]`.
    fn softmax_block<T: Real>(&self, s: &mut [T], r0: usize, r1: usize, lse: &mut [T]) {
        let (t, zero) = (self.t, T::from_f64(0.0));
        for i in r0..r1 {
            let row = &mut s[(i - r0) * t..(i - r0) * t + r1];
            let (live, dead) = row.split_at_mut(i + 1);
            let mut m = live[0];
            for &x in live.iter() {
                if x > m {
                    m = x;
                }
            }
            for x in live.iter_mut() {
                *x -= m;
            }
            T::exp_slice(live);
            let sum = T::sum_slice(live);
            let inv = T::from_f64(1.0) / sum;
            for x in live.iter_mut() {
                *x *= inv;
            }
            dead.fill(zero);
            lse[i] = m + sum.ln_();
        }
    }

    fn forward<T: Real>(&self, q: &[T], k: &[T], v: &[T]) -> (Vec<T>, Vec<T>) {
        let (b, t, nh, nkv, hd) = (self.b, self.t, self.heads, self.kv_heads, self.head_dim);
        let group = nh / nkv;
        let tab = self.tables::<T>();
        let scale = T::from_f64(1.0 / (hd as f64).sqrt());
        let zero = T::from_f64(0.0);
        let mut out = vec![zero; b * t * nh * hd];
        let mut lse = vec![zero; b * nh * t];
        let out_p = SyncPtr(out.as_mut_ptr());
        lse.par_chunks_mut(group * t)
            .enumerate()
            .for_each(|(task, lse_g)| {
                let (bi, g) = (task / nkv, task % nkv);
                let mut kr = vec![zero; t * hd];
                let mut qr = vec![zero; t * hd];
                let mut s = vec![zero; BLOCK.min(t) * t];
                let key = Head {
                    data: k,
                    heads: nkv,
                    row: bi,
                    head: g,
                };
                self.rope_head(key, &tab, T::from_f64(1.0), &mut kr);
                let v_g = &v[(bi * t * nkv + g) * hd..];
                for j in 0..group {
                    let h = g * group + j;
                    let query = Head {
                        data: q,
                        heads: nh,
                        row: bi,
                        head: h,
                    };
                    self.rope_head(query, &tab, scale, &mut qr);
                    for r0 in (0..t).step_by(BLOCK) {
                        let r1 = (r0 + BLOCK).min(t);
                        // SAFETY: s holds (r1−r0)×t, qr t×hd, kr t×hd; n = r1 ≤ t.
                        unsafe {
                            mm(
                                r1 - r0,
                                r1,
                                hd,
                                Dst::set(s.as_mut_ptr(), t),
                                Src::rows(qr[r0 * hd..].as_ptr(), hd),
                                Src::cols(kr.as_ptr(), hd),
                            );
                        }
                        self.softmax_block(&mut s, r0, r1, &mut lse_g[j * t..(j + 1) * t]);
                        // SAFETY: rows r0..r1 of head h of row bi are this task's alone; v_g
                        // addresses t rows of stride nkv·hd.
                        unsafe {
                            mm(
                                r1 - r0,
                                hd,
                                r1,
                                Dst::set(out_p.at(((bi * t + r0) * nh + h) * hd), nh * hd),
                                Src::rows(s.as_ptr(), t),
                                Src::rows(v_g.as_ptr(), nkv * hd),
                            );
                        }
                    }
                }
            });
        (out, lse)
    }

    fn backward<T: Real>(&self, inp: BackwardInputs<'_, T>) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (b, t, nh, nkv, hd) = (self.b, self.t, self.heads, self.kv_heads, self.head_dim);
        let zero = T::from_f64(0.0);
        let mut dq = vec![zero; b * t * nh * hd];
        let mut dk = vec![zero; b * t * nkv * hd];
        let mut dv = vec![zero; b * t * nkv * hd];
        let pass = Backward {
            op: self,
            inp,
            out: GradPtrs {
                dq: SyncPtr(dq.as_mut_ptr()),
                dk: SyncPtr(dk.as_mut_ptr()),
                dv: SyncPtr(dv.as_mut_ptr()),
            },
            tab: self.tables::<T>(),
            scale: T::from_f64(1.0 / (hd as f64).sqrt()),
        };
        (0..b * nkv)
            .into_par_iter()
            .for_each(|task| pass.group(task / nkv, task % nkv));
        (dq, dk, dv)
    }
}

impl<T: Real> Backward<'_, T> {
    /// The task of batch row `bi` and key/value head `g`: every query head of the group, then
    /// the key gradient of the group.
    fn group(&self, bi: usize, g: usize) {
        let op = self.op;
        let (t, nh, nkv, hd) = (op.t, op.heads, op.kv_heads, op.head_dim);
        let group = nh / nkv;
        let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
        let mut sc = Scratch {
            kr: vec![zero; t * hd],
            qr: vec![zero; t * hd],
            dkr: vec![zero; t * hd],
            tmp: vec![zero; t * hd],
            p: vec![zero; t * t],
            ds: vec![zero; t * t],
            d: vec![zero; t],
        };
        let key = Head {
            data: self.inp.k,
            heads: nkv,
            row: bi,
            head: g,
        };
        op.rope_head(key, &self.tab, one, &mut sc.kr);
        for j in 0..group {
            self.head(
                At {
                    bi,
                    g,
                    h: g * group + j,
                },
                &mut sc,
            );
        }
        for i in 0..t {
            let off = ((bi * t + i) * nkv + g) * hd;
            // SAFETY: row i of kv head g of row bi belongs to this task alone.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.out.dk.at(off), hd) };
            let (cos, sin) = self.tab.at(i);
            unrope_row(&sc.dkr[i * hd..(i + 1) * hd], cos, sin, one, dst);
        }
    }

    /// Offset of position `i` of query head `at.h` of row `at.bi` in `[B·T, n_h·hd]`.
    fn head_off(&self, at: At, i: usize) -> usize {
        let op = self.op;
        ((at.bi * op.t + i) * op.heads + at.h) * op.head_dim
    }

    /// One query head: its rotated queries, `D = Σ dO ⊙ O` per row, the query blocks (dQ) and
    /// the key blocks (its share of dV and dKr).
    fn head(&self, at: At, sc: &mut Scratch<T>) {
        let op = self.op;
        let (t, nh, hd) = (op.t, op.heads, op.head_dim);
        let query = Head {
            data: self.inp.q,
            heads: nh,
            row: at.bi,
            head: at.h,
        };
        op.rope_head(query, &self.tab, self.scale, &mut sc.qr);
        let (dout, o) = (self.inp.dout, self.inp.o);
        for (i, di) in sc.d.iter_mut().enumerate() {
            let off = self.head_off(at, i);
            let (go, oo) = (&dout[off..off + hd], &o[off..off + hd]);
            let mut acc = T::from_f64(0.0);
            for x in 0..hd {
                acc += go[x] * oo[x];
            }
            *di = acc;
        }
        for r0 in (0..t).step_by(BLOCK) {
            self.query_block(at, r0, sc);
        }
        // Key blocks: dV += Pᵀ dO and dKr += dSᵀ Qr over the query rows c0..t (the entries of
        // rows in later blocks were all written by the query blocks).
        for c0 in (0..t).step_by(BLOCK) {
            self.key_block(at, c0, sc);
        }
    }

    /// Query rows `r0..r0 + BLOCK`: the probabilities P and score gradients dS (rows of `p`
    /// and `ds`, columns `0..r1`), and the rows of dQ.
    fn query_block(&self, at: At, r0: usize, sc: &mut Scratch<T>) {
        let op = self.op;
        let (t, nh, nkv, hd) = (op.t, op.heads, op.kv_heads, op.head_dim);
        let zero = T::from_f64(0.0);
        let r1 = (r0 + BLOCK).min(t);
        let v_g = &self.inp.v[(at.bi * t * nkv + at.g) * hd..];
        let lse_h = &self.inp.lse[(at.bi * nh + at.h) * t..(at.bi * nh + at.h + 1) * t];
        // S (into p) and dP = dO Vᵀ (into ds) for rows r0..r1, columns 0..r1.
        // SAFETY: p, ds hold t×t; row offsets stay below t·t.
        unsafe {
            mm(
                r1 - r0,
                r1,
                hd,
                Dst::set(sc.p[r0 * t..].as_mut_ptr(), t),
                Src::rows(sc.qr[r0 * hd..].as_ptr(), hd),
                Src::cols(sc.kr.as_ptr(), hd),
            );
            mm(
                r1 - r0,
                r1,
                hd,
                Dst::set(sc.ds[r0 * t..].as_mut_ptr(), t),
                Src::rows(self.inp.dout[self.head_off(at, r0)..].as_ptr(), nh * hd),
                Src::cols(v_g.as_ptr(), nkv * hd),
            );
        }
        for i in r0..r1 {
            let pr = &mut sc.p[i * t..i * t + r1];
            let dr = &mut sc.ds[i * t..i * t + r1];
            let (l, di) = (lse_h[i], sc.d[i]);
            for x in pr[..=i].iter_mut() {
                *x -= l;
            }
            T::exp_slice(&mut pr[..=i]);
            for (dc, &pc) in dr[..=i].iter_mut().zip(&pr[..=i]) {
                *dc = pc * (*dc - di);
            }
            pr[i + 1..].fill(zero);
            dr[i + 1..].fill(zero);
        }
        // dQr rows r0..r1 = dS · Kr.
        // SAFETY: tmp holds t×hd; ds rows r0..r1 hold r1 valid columns.
        unsafe {
            mm(
                r1 - r0,
                hd,
                r1,
                Dst::set(sc.tmp[r0 * hd..].as_mut_ptr(), hd),
                Src::rows(sc.ds[r0 * t..].as_ptr(), t),
                Src::rows(sc.kr.as_ptr(), hd),
            );
        }
        for i in r0..r1 {
            // SAFETY: row i of head h of row bi belongs to this task alone.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(self.out.dq.at(self.head_off(at, i)), hd) };
            let (cos, sin) = self.tab.at(i);
            unrope_row(&sc.tmp[i * hd..(i + 1) * hd], cos, sin, self.scale, dst);
        }
    }

    /// Key rows `c0..c0 + BLOCK`: `dV += Pᵀ dO` and `dKr += dSᵀ Qr` over the query rows
    /// `c0..t`.
    fn key_block(&self, at: At, c0: usize, sc: &mut Scratch<T>) {
        let op = self.op;
        let (t, nh, nkv, hd) = (op.t, op.heads, op.kv_heads, op.head_dim);
        let c1 = (c0 + BLOCK).min(t);
        // SAFETY: the (b, g) rows of dv are this task's alone; p/ds are t×t.
        unsafe {
            mm(
                c1 - c0,
                hd,
                t - c0,
                Dst::add(
                    self.out.dv.at(((at.bi * t + c0) * nkv + at.g) * hd),
                    nkv * hd,
                ),
                Src::cols(sc.p[c0 * t + c0..].as_ptr(), t),
                Src::rows(self.inp.dout[self.head_off(at, c0)..].as_ptr(), nh * hd),
            );
            mm(
                c1 - c0,
                hd,
                t - c0,
                Dst::add(sc.dkr[c0 * hd..].as_mut_ptr(), hd),
                Src::cols(sc.ds[c0 * t + c0..].as_ptr(), t),
                Src::rows(sc.qr[c0 * hd..].as_ptr(), hd),
            );
        }
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-causal-gqa-rope-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = Shape::from((self.b * self.t, self.heads * self.head_dim));
        let (out, lse) = match s1.dtype() {
            DType::F32 => {
                let (o, l) = self.forward::<f32>(slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
                (CpuStorage::F32(o), CpuStorage::F32(l))
            }
            DType::F64 => {
                let (o, l) = self.forward::<f64>(slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
                (CpuStorage::F64(o), CpuStorage::F64(l))
            }
            dt => bail!("fused attention: unsupported dtype {dt:?}"),
        };
        *self.lse.lock().unwrap() = Some(lse);
        Ok((out, shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let guard = self.lse.lock().unwrap();
        let Some(lse) = guard.as_ref() else {
            bail!("fused attention: backward before forward")
        };
        let (rq, rk, rv, ro, rg) = (read(q)?, read(k)?, read(v)?, read(res)?, read(&grad)?);
        let dev = q.device();
        macro_rules! run {
            ($t:ty) => {{
                let (dq, dk, dv) = self.backward::<$t>(BackwardInputs {
                    q: rq.get()?,
                    k: rk.get()?,
                    v: rv.get()?,
                    o: ro.get()?,
                    dout: rg.get()?,
                    lse: <$t>::cpu_storage_as_slice(lse)?,
                });
                (
                    Tensor::from_vec(dq, q.shape(), dev)?,
                    Tensor::from_vec(dk, k.shape(), dev)?,
                    Tensor::from_vec(dv, v.shape(), dev)?,
                )
            }};
        }
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused attention: unsupported dtype {dt:?}"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Fused causal GQA attention with rotary embeddings: `q` `[B·T, n_h·hd]`, `k`, `v`
/// `[B·T, n_kv·hd]` (the projections, bias included, before rope) → `[B·T, n_h·hd]`, the
/// concatenated per-head outputs `softmax(R q (R k)ᵀ/√hd + causal) v`. `cos`/`sin` are the
/// half-size rotary tables `[T, hd/2]` in f64. CPU f32/f64 only (see
/// [`supported`](super::supported)).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: AttentionShape,
    cos: &[f64],
    sin: &[f64],
) -> Result<Tensor> {
    let AttentionShape {
        batch: b,
        seq_len: t,
        heads,
        kv_heads,
    } = shape;
    let hd = q.dim(1)? / heads;
    if heads % kv_heads != 0 || hd % 2 != 0 || cos.len() < t * hd / 2 || sin.len() < t * hd / 2 {
        bail!("fused attention: bad shapes (heads {heads}, kv {kv_heads}, hd {hd})");
    }
    let op = AttentionOp {
        b,
        t,
        heads,
        kv_heads,
        head_dim: hd,
        cos: cos[..t * hd / 2].to_vec(),
        sin: sin[..t * hd / 2].to_vec(),
        lse: Mutex::new(None),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var, D};

    use super::{attention, AttentionShape};
    use crate::model::attention::causal_mask;
    use crate::model::fused::test_support::{check, max_rel, randn};
    use crate::model::rotary::RotaryTables;
    use crate::rng::SplitMix64;

    fn composed_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        shape: AttentionShape,
        rope: &RotaryTables,
    ) -> Tensor {
        let AttentionShape {
            batch: b,
            seq_len: t,
            heads: nh,
            kv_heads: nkv,
        } = shape;
        let hd = q.dim(1).unwrap() / nh;
        let group = nh / nkv;
        let split = |y: &Tensor, n: usize| {
            y.reshape((b, t, n, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let q = rope
            .apply(&split(q, nh))
            .unwrap()
            .reshape((b, nkv, group * t, hd))
            .unwrap();
        let k = rope.apply(&split(k, nkv)).unwrap();
        let v = split(v, nkv);
        let mask = causal_mask(t, group, DType::F64, &Device::Cpu).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (hd as f64).sqrt()))
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        let p = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        p.matmul(&v)
            .unwrap()
            .reshape((b, nh, t, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b * t, nh * hd))
            .unwrap()
    }

    #[test]
    fn attention_matches_composition() {
        // t = 1, one block, a partial second block (BLOCK = 64) and several full blocks;
        // grouped and multi-head.
        for (b, t, nh, nkv, hd) in [
            (1, 1, 2, 1, 4),
            (2, 13, 6, 2, 8),
            (2, 70, 4, 2, 8),
            (1, 150, 3, 3, 6),
        ] {
            let mut rng = SplitMix64::new((t * 31 + nh) as u64);
            let q = randn(&mut rng, &[b * t, nh * hd], 2.0);
            let k = randn(&mut rng, &[b * t, nkv * hd], 2.0);
            let v = randn(&mut rng, &[b * t, nkv * hd], 1.0);
            let rope = RotaryTables::new(hd, t + 3, 100.0, DType::F64, &Device::Cpu).unwrap();
            let (cos, sin) = rope.half_tables();
            let shape = AttentionShape {
                batch: b,
                seq_len: t,
                heads: nh,
                kv_heads: nkv,
            };
            check(
                &[&q, &k, &v],
                |x| attention(&x[0], &x[1], &x[2], shape, cos, sin).unwrap(),
                |x| composed_attention(&x[0], &x[1], &x[2], shape, &rope),
                1e-11,
            );
        }
    }

    #[test]
    fn attention_f32_is_close_to_f64() {
        let (b, t, nh, nkv, hd) = (2, 80, 4, 2, 16);
        let mut rng = SplitMix64::new(5);
        let q = randn(&mut rng, &[b * t, nh * hd], 2.0);
        let k = randn(&mut rng, &[b * t, nkv * hd], 2.0);
        let v = randn(&mut rng, &[b * t, nkv * hd], 1.0);
        let rope = RotaryTables::new(hd, t, 1e4, DType::F64, &Device::Cpu).unwrap();
        let (cos, sin) = rope.half_tables();
        let run = |dt: DType| {
            let c = |x: &Var| x.as_tensor().to_dtype(dt).unwrap();
            let shape = AttentionShape {
                batch: b,
                seq_len: t,
                heads: nh,
                kv_heads: nkv,
            };
            attention(&c(&q), &c(&k), &c(&v), shape, cos, sin)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
        };
        let err = max_rel(&run(DType::F32), &run(DType::F64));
        assert!(err < 1e-5, "{err:e}");
    }
}
