//! Fused CPU kernels with hand-written backward passes for the training hot spots: causal GQA
//! attention with rotary embeddings, RMSNorm, SwiGLU, masked cross-entropy and the placement of
//! image patches. candle differentiates a composition node by node, allocating a zero gradient
//! plus a sum for every node and materialising every `[B, heads, T, T]` intermediate of the
//! softmax; one custom op per block does the same arithmetic in a few passes (see the
//! "Performance" section of `docs/model.md`).
//!
//! Every op here is a `candle_core::CustomOp{1,2,3}` whose `bwd` is called by candle's
//! backprop. Only CPU f32/f64 tensors are served ([`supported`]); callers fall back to the
//! elementary compositions for other dtypes and devices. Work is split into a fixed partition
//! (per batch row and key/value head, or fixed row chunks) and every reduction is summed in a
//! fixed order, so results do not depend on thread scheduling (exact resume needs that).

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor,
    WithDType,
};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Row block of the causal attention kernels: each block of query rows only multiplies the
/// key columns up to its own end.
const BLOCK: usize = 64;

/// Rows per task of the row-wise kernels (RMSNorm, SwiGLU, cross-entropy).
const ROWS_PER_TASK: usize = 32;

/// Float element types the fused kernels are written for (f32 and f64).
pub trait Real: WithDType {
    /// `e^x`.
    fn exp_(self) -> Self;
    /// Natural logarithm.
    fn ln_(self) -> Self;
    /// Square root.
    fn sqrt_(self) -> Self;
    /// `x ← e^x` for every element (f32: a polynomial the compiler vectorises, ~1 ulp; f64:
    /// the standard library's).
    fn exp_slice(xs: &mut [Self]) {
        for x in xs {
            *x = x.exp_();
        }
    }
    /// Sum in a fixed order (eight interleaved partial sums, then those in order), so that it
    /// vectorises and still gives the same bits every run.
    fn sum_slice(xs: &[Self]) -> Self {
        let zero = Self::from_f64(0.0);
        let mut acc = [zero; 8];
        let mut chunks = xs.chunks_exact(8);
        for c in &mut chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        let mut s = zero;
        for a in acc {
            s += a;
        }
        for &x in chunks.remainder() {
            s += x;
        }
        s
    }
}

/// `e^x` in f32 without a library call (Cephes' `expf`: `x = n ln 2 + r`, degree-6 polynomial
/// in `r`, `2^n` from the exponent bits), within ~2 ulp of `f32::exp` on `[−87, 88]`;
/// clamped to that range (so `e^(−∞)` gives ~1e−38, not 0).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    // Round to nearest by adding and subtracting 1.5·2²³ (vectorises without SSE4.1).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

impl Real for f32 {
    fn exp_(self) -> Self {
        self.exp()
    }
    fn exp_slice(xs: &mut [Self]) {
        for x in xs {
            *x = exp_f32(*x);
        }
    }
    fn ln_(self) -> Self {
        self.ln()
    }
    fn sqrt_(self) -> Self {
        self.sqrt()
    }
}

impl Real for f64 {
    fn exp_(self) -> Self {
        self.exp()
    }
    fn ln_(self) -> Self {
        self.ln()
    }
    fn sqrt_(self) -> Self {
        self.sqrt()
    }
}

/// Whether the fused kernels serve `t`: a CPU tensor of f32 or f64.
pub fn supported(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The contiguous data of a CPU storage under `layout`.
fn slice<'a, T: WithDType>(s: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fused op: input is not contiguous"),
    }
}

/// A read guard on a contiguous CPU tensor, for the backward passes.
struct Read<'a>(candle_core::StorageRef<'a>, (usize, usize));

impl Read<'_> {
    fn get<T: WithDType>(&self) -> Result<&[T]> {
        match &*self.0 {
            Storage::Cpu(c) => Ok(&T::cpu_storage_as_slice(c)?[self.1 .0..self.1 .1]),
            _ => bail!("fused ops run on the CPU only"),
        }
    }
}

fn read(t: &Tensor) -> Result<Read<'_>> {
    let (s, l) = t.storage_and_layout();
    match l.contiguous_offsets() {
        Some(off) => Ok(Read(s, off)),
        None => bail!("fused op: tensor is not contiguous"),
    }
}

/// A raw pointer that several tasks write through, each to its own disjoint elements.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer `offset` elements in (a method, so closures capture the whole wrapper).
    fn at(self, offset: usize) -> *mut T {
        // SAFETY: callers stay inside the allocation the pointer came from.
        unsafe { self.0.add(offset) }
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, single-threaded, with explicit row and column
/// strides (in elements) for each matrix.
///
/// # Safety
/// Every pointer must address the whole strided matrix it describes, and `dst` must not alias
/// the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn mm<T: 'static + WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const T,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        T::from_f64(1.0),
        T::from_f64(1.0),
        false,
        false,
        false,
        Parallelism::None,
    )
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

// ---------------------------------------------------------------------------------------------
// Linear layers

/// `dst (m×n) = [dst +] lhs · rhs` like [`mm`], split over the global rayon pool as candle's
/// own matmul is (gemm partitions the output, never the sum, so results do not depend on
/// scheduling).
///
/// # Safety
/// As for [`mm`].
#[allow(clippy::too_many_arguments)]
unsafe fn mm_par<T: 'static + WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const T,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        T::from_f64(1.0),
        T::from_f64(1.0),
        false,
        false,
        false,
        par,
    )
}

/// `y = x Wᵀ (+ b)` for `x` `[N, in]`, `W` `[out, in]`, `b` `[out]`: one gemm each way, with
/// the weight gradient computed directly in `W`'s layout and the bias gradient as a column sum
/// (candle's composition materialises a transposed copy, a broadcast and a zero-plus-add for
/// every node).
struct LinearOp;

impl LinearOp {
    fn forward<T: Real>(x: &[T], w: &[T], b: Option<&[T]>, out: usize) -> Vec<T> {
        let inp = w.len() / out;
        let n = x.len() / inp;
        let mut y = match b {
            Some(b) => b.repeat(n),
            None => vec![T::from_f64(0.0); n * out],
        };
        // SAFETY: y is n×out, x n×inp, w out×inp (read as its transpose).
        unsafe {
            mm_par(
                n,
                out,
                inp,
                y.as_mut_ptr(),
                out,
                b.is_some(),
                x.as_ptr(),
                inp,
                1,
                w.as_ptr(),
                1,
                inp,
            );
        }
        y
    }

    /// `(dx, dW, db)`: `dx = dy W` (when wanted), `dW = dyᵀ x`, `db = Σ_rows dy` (when wanted).
    fn backward<T: Real>(
        x: &[T],
        w: &[T],
        dy: &[T],
        out: usize,
        want_dx: bool,
        want_db: bool,
    ) -> (Option<Vec<T>>, Vec<T>, Option<Vec<T>>) {
        let inp = w.len() / out;
        let n = x.len() / inp;
        let zero = T::from_f64(0.0);
        let dx = want_dx.then(|| {
            let mut dx = vec![zero; n * inp];
            // SAFETY: dx n×inp, dy n×out, w out×inp.
            unsafe {
                mm_par(
                    n,
                    inp,
                    out,
                    dx.as_mut_ptr(),
                    inp,
                    false,
                    dy.as_ptr(),
                    out,
                    1,
                    w.as_ptr(),
                    inp,
                    1,
                );
            }
            dx
        });
        let mut dw = vec![zero; out * inp];
        // SAFETY: dw out×inp, dy read as its transpose out×n, x n×inp.
        unsafe {
            mm_par(
                out,
                inp,
                n,
                dw.as_mut_ptr(),
                inp,
                false,
                dy.as_ptr(),
                1,
                out,
                x.as_ptr(),
                inp,
                1,
            );
        }
        let db = want_db.then(|| {
            let mut db = vec![zero; out];
            for row in dy.chunks(out) {
                for (a, &g) in db.iter_mut().zip(row) {
                    *a += g;
                }
            }
            db
        });
        (dx, dw, db)
    }

    fn check(x: &Layout, w: &Layout) -> Result<usize> {
        match (x.dims(), w.dims()) {
            ([_, i], [o, i2]) if i == i2 => Ok(*o),
            _ => bail!("fused linear: input {:?}, weight {:?}", x.dims(), w.dims()),
        }
    }

    fn run_fwd(
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let out = Self::check(x.1, w.1)?;
        let shape = Shape::from((x.1.dims()[0], out));
        let y = match x.0.dtype() {
            DType::F32 => {
                let b = b.map(|b| slice::<f32>(b.0, b.1)).transpose()?;
                CpuStorage::F32(Self::forward(slice(x.0, x.1)?, slice(w.0, w.1)?, b, out))
            }
            DType::F64 => {
                let b = b.map(|b| slice::<f64>(b.0, b.1)).transpose()?;
                CpuStorage::F64(Self::forward(slice(x.0, x.1)?, slice(w.0, w.1)?, b, out))
            }
            dt => bail!("fused linear: unsupported dtype {dt:?}"),
        };
        Ok((y, shape))
    }

    fn run_bwd(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (rx, rw, rd) = (read(x)?, read(w)?, read(&grad)?);
        let out = w.dim(0)?;
        let want_dx = x.track_op();
        macro_rules! run {
            ($t:ty) => {{
                let (dx, dw, db) = Self::backward::<$t>(
                    rx.get()?,
                    rw.get()?,
                    rd.get()?,
                    out,
                    want_dx,
                    b.is_some(),
                );
                (
                    dx.map(|d| Tensor::from_vec(d, x.shape(), x.device()))
                        .transpose()?,
                    Tensor::from_vec(dw, w.shape(), w.device())?,
                    db.map(|d| Tensor::from_vec(d, out, w.device()))
                        .transpose()?,
                )
            }};
        }
        Ok(match x.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused linear: unsupported dtype {dt:?}"),
        })
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::run_fwd((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Self::run_bwd(x, w, None, grad)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear-bias"
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
        Self::run_fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = Self::run_bwd(x, w, Some(b), grad)?;
        Ok((dx, Some(dw), db))
    }
}

/// Fused `x Wᵀ + b` for `x` `[N, in]`, `W` `[out, in]` (PyTorch layout), `b` `[out]`.
/// CPU f32/f64 only.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => {
            if b.dims() != [w.dim(0)?] {
                bail!(
                    "fused linear: bias {:?} for weight {:?}",
                    b.shape(),
                    w.shape()
                );
            }
            x.apply_op3(&w, &b.contiguous()?, LinearOp)
        }
        None => x.apply_op2(&w, LinearOp),
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Causal grouped-query attention with rotary embeddings and `1/√hd` scaling, from the q/k/v
/// projections (`[B·T, n·hd]`, rows `b·T + t`, heads side by side) to the concatenated head
/// outputs `[B·T, n_h·hd]`: exactly `docs/model.md` step 3 between the projections and `o_proj`.
/// The forward keeps the log-sum-exp of every score row; the backward recomputes the
/// probabilities from it (memory O(B·n_h·T), not O(T²)).
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

impl AttentionOp {
    fn tables<T: Real>(&self) -> (Vec<T>, Vec<T>) {
        let c = self.cos.iter().map(|&x| T::from_f64(x)).collect();
        let s = self.sin.iter().map(|&x| T::from_f64(x)).collect();
        (c, s)
    }

    /// `qr[i] = scale · R q[b, i, h]` for all positions of one (row, head).
    #[allow(clippy::too_many_arguments)]
    fn rope_head<T: Real>(
        &self,
        src: &[T],
        n: usize,
        bi: usize,
        h: usize,
        cos: &[T],
        sin: &[T],
        mul: T,
        out: &mut [T],
    ) {
        let (t, hd) = (self.t, self.head_dim);
        let h2 = hd / 2;
        for i in 0..t {
            let off = ((bi * t + i) * n + h) * hd;
            rope_row(
                &src[off..off + hd],
                &cos[i * h2..(i + 1) * h2],
                &sin[i * h2..(i + 1) * h2],
                mul,
                &mut out[i * hd..(i + 1) * hd],
            );
        }
    }

    fn forward<T: Real>(&self, q: &[T], k: &[T], v: &[T]) -> (Vec<T>, Vec<T>) {
        let (b, t, nh, nkv, hd) = (self.b, self.t, self.heads, self.kv_heads, self.head_dim);
        let group = nh / nkv;
        let (cos, sin) = self.tables::<T>();
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
                self.rope_head(k, nkv, bi, g, &cos, &sin, T::from_f64(1.0), &mut kr);
                let v_g = &v[(bi * t * nkv + g) * hd..];
                for j in 0..group {
                    let h = g * group + j;
                    self.rope_head(q, nh, bi, h, &cos, &sin, scale, &mut qr);
                    for r0 in (0..t).step_by(BLOCK) {
                        let r1 = (r0 + BLOCK).min(t);
                        // SAFETY: s holds (r1−r0)×t, qr t×hd, kr t×hd; n = r1 ≤ t.
                        unsafe {
                            mm(
                                r1 - r0,
                                r1,
                                hd,
                                s.as_mut_ptr(),
                                t,
                                false,
                                qr[r0 * hd..].as_ptr(),
                                hd,
                                1,
                                kr.as_ptr(),
                                1,
                                hd,
                            );
                        }
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
                            lse_g[j * t + i] = m + sum.ln_();
                        }
                        // SAFETY: rows r0..r1 of head h of row bi are this task's alone; v_g
                        // addresses t rows of stride nkv·hd.
                        unsafe {
                            mm(
                                r1 - r0,
                                hd,
                                r1,
                                out_p.at(((bi * t + r0) * nh + h) * hd),
                                nh * hd,
                                false,
                                s.as_ptr(),
                                t,
                                1,
                                v_g.as_ptr(),
                                nkv * hd,
                                1,
                            );
                        }
                    }
                }
            });
        (out, lse)
    }

    #[allow(clippy::too_many_arguments)]
    fn backward<T: Real>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &[T],
        dout: &[T],
        lse: &[T],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (b, t, nh, nkv, hd) = (self.b, self.t, self.heads, self.kv_heads, self.head_dim);
        let (group, h2) = (nh / nkv, hd / 2);
        let (cos, sin) = self.tables::<T>();
        let scale = T::from_f64(1.0 / (hd as f64).sqrt());
        let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
        let mut dq = vec![zero; b * t * nh * hd];
        let mut dk = vec![zero; b * t * nkv * hd];
        let mut dv = vec![zero; b * t * nkv * hd];
        let (dq_p, dk_p, dv_p) = (
            SyncPtr(dq.as_mut_ptr()),
            SyncPtr(dk.as_mut_ptr()),
            SyncPtr(dv.as_mut_ptr()),
        );
        (0..b * nkv).into_par_iter().for_each(|task| {
            let (bi, g) = (task / nkv, task % nkv);
            let mut kr = vec![zero; t * hd];
            let mut qr = vec![zero; t * hd];
            let mut dkr = vec![zero; t * hd];
            let mut tmp = vec![zero; t * hd];
            let mut p = vec![zero; t * t];
            let mut ds = vec![zero; t * t];
            let mut d = vec![zero; t];
            self.rope_head(k, nkv, bi, g, &cos, &sin, one, &mut kr);
            let v_g = &v[(bi * t * nkv + g) * hd..];
            for j in 0..group {
                let h = g * group + j;
                self.rope_head(q, nh, bi, h, &cos, &sin, scale, &mut qr);
                let head = |i: usize| ((bi * t + i) * nh + h) * hd;
                let lse_h = &lse[(bi * nh + h) * t..(bi * nh + h + 1) * t];
                for (i, di) in d.iter_mut().enumerate() {
                    let (go, oo) = (&dout[head(i)..head(i) + hd], &o[head(i)..head(i) + hd]);
                    let mut acc = zero;
                    for x in 0..hd {
                        acc += go[x] * oo[x];
                    }
                    *di = acc;
                }
                for r0 in (0..t).step_by(BLOCK) {
                    let r1 = (r0 + BLOCK).min(t);
                    // S (into p) and dP = dO Vᵀ (into ds) for rows r0..r1, columns 0..r1.
                    // SAFETY: p, ds hold t×t; row offsets stay below t·t.
                    unsafe {
                        mm(
                            r1 - r0,
                            r1,
                            hd,
                            p[r0 * t..].as_mut_ptr(),
                            t,
                            false,
                            qr[r0 * hd..].as_ptr(),
                            hd,
                            1,
                            kr.as_ptr(),
                            1,
                            hd,
                        );
                        mm(
                            r1 - r0,
                            r1,
                            hd,
                            ds[r0 * t..].as_mut_ptr(),
                            t,
                            false,
                            dout[head(r0)..].as_ptr(),
                            nh * hd,
                            1,
                            v_g.as_ptr(),
                            1,
                            nkv * hd,
                        );
                    }
                    for i in r0..r1 {
                        let pr = &mut p[i * t..i * t + r1];
                        let dr = &mut ds[i * t..i * t + r1];
                        let (l, di) = (lse_h[i], d[i]);
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
                            tmp[r0 * hd..].as_mut_ptr(),
                            hd,
                            false,
                            ds[r0 * t..].as_ptr(),
                            t,
                            1,
                            kr.as_ptr(),
                            hd,
                            1,
                        );
                    }
                    for i in r0..r1 {
                        // SAFETY: row i of head h of row bi belongs to this task alone.
                        let dst = unsafe { std::slice::from_raw_parts_mut(dq_p.at(head(i)), hd) };
                        unrope_row(
                            &tmp[i * hd..(i + 1) * hd],
                            &cos[i * h2..(i + 1) * h2],
                            &sin[i * h2..(i + 1) * h2],
                            scale,
                            dst,
                        );
                    }
                }
                // Key blocks: dV += Pᵀ dO and dKr += dSᵀ Qr over the query rows c0..t (the
                // entries of rows in later blocks were all written above).
                for c0 in (0..t).step_by(BLOCK) {
                    let c1 = (c0 + BLOCK).min(t);
                    // SAFETY: the (b, g) rows of dv are this task's alone; p/ds are t×t.
                    unsafe {
                        mm(
                            c1 - c0,
                            hd,
                            t - c0,
                            dv_p.at(((bi * t + c0) * nkv + g) * hd),
                            nkv * hd,
                            true,
                            p[c0 * t + c0..].as_ptr(),
                            1,
                            t,
                            dout[head(c0)..].as_ptr(),
                            nh * hd,
                            1,
                        );
                        mm(
                            c1 - c0,
                            hd,
                            t - c0,
                            dkr[c0 * hd..].as_mut_ptr(),
                            hd,
                            true,
                            ds[c0 * t + c0..].as_ptr(),
                            1,
                            t,
                            qr[c0 * hd..].as_ptr(),
                            hd,
                            1,
                        );
                    }
                }
            }
            for i in 0..t {
                let off = ((bi * t + i) * nkv + g) * hd;
                // SAFETY: row i of kv head g of row bi belongs to this task alone.
                let dst = unsafe { std::slice::from_raw_parts_mut(dk_p.at(off), hd) };
                unrope_row(
                    &dkr[i * hd..(i + 1) * hd],
                    &cos[i * h2..(i + 1) * h2],
                    &sin[i * h2..(i + 1) * h2],
                    one,
                    dst,
                );
            }
        });
        (dq, dk, dv)
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
                let (dq, dk, dv) = self.backward::<$t>(
                    rq.get()?,
                    rk.get()?,
                    rv.get()?,
                    ro.get()?,
                    rg.get()?,
                    <$t>::cpu_storage_as_slice(lse)?,
                );
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
/// half-size rotary tables `[T, hd/2]` in f64. CPU f32/f64 only (see [`supported`]).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    cos: &[f64],
    sin: &[f64],
) -> Result<Tensor> {
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

// ---------------------------------------------------------------------------------------------
// Row-wise ops

/// RMSNorm over the last dimension, `y = x · r · g` with `r = 1/√(mean(x²) + ε)`.
struct RmsNormOp {
    eps: f64,
}

impl RmsNormOp {
    fn forward<T: Real>(&self, x: &[T], g: &[T]) -> Vec<T> {
        let h = g.len();
        let mut y = vec![T::from_f64(0.0); x.len()];
        let eps = T::from_f64(self.eps);
        let n = T::from_f64(h as f64);
        y.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(h).zip(xc.chunks(h)) {
                    let mut ss = T::from_f64(0.0);
                    for &v in xr {
                        ss += v * v;
                    }
                    let r = T::from_f64(1.0) / (ss / n + eps).sqrt_();
                    for ((o, &v), &gv) in yr.iter_mut().zip(xr).zip(g) {
                        *o = v * r * gv;
                    }
                }
            });
        y
    }

    /// `dx = r·(dy·g − x̂·mean(dy·g·x̂))`, `dg = Σ_rows dy·x̂` (per-chunk partials summed in
    /// chunk order).
    fn backward<T: Real>(&self, x: &[T], g: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
        let h = g.len();
        let zero = T::from_f64(0.0);
        let eps = T::from_f64(self.eps);
        let n = T::from_f64(h as f64);
        let mut dx = vec![zero; x.len()];
        let partials: Vec<Vec<T>> = dx
            .par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .zip(dy.par_chunks(h * ROWS_PER_TASK))
            .map(|((dxc, xc), dyc)| {
                let mut dg = vec![zero; h];
                for ((dxr, xr), dyr) in dxc.chunks_mut(h).zip(xc.chunks(h)).zip(dyc.chunks(h)) {
                    let mut ss = zero;
                    for &v in xr {
                        ss += v * v;
                    }
                    let r = T::from_f64(1.0) / (ss / n + eps).sqrt_();
                    let mut dot = zero;
                    for c in 0..h {
                        let xh = xr[c] * r;
                        dg[c] += dyr[c] * xh;
                        dot += dyr[c] * g[c] * xh;
                    }
                    let mean = dot / n;
                    for c in 0..h {
                        dxr[c] = r * (dyr[c] * g[c] - xr[c] * r * mean);
                    }
                }
                dg
            })
            .collect();
        let mut dg = vec![zero; h];
        for p in &partials {
            for (a, &b) in dg.iter_mut().zip(p) {
                *a += b;
            }
        }
        (dx, dg)
    }
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = match s1.dtype() {
            DType::F32 => CpuStorage::F32(self.forward::<f32>(slice(s1, l1)?, slice(s2, l2)?)),
            DType::F64 => CpuStorage::F64(self.forward::<f64>(slice(s1, l1)?, slice(s2, l2)?)),
            dt => bail!("fused rms_norm: unsupported dtype {dt:?}"),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (rx, rg, rd) = (read(x)?, read(g)?, read(&grad)?);
        macro_rules! run {
            ($t:ty) => {{
                let (dx, dg) = self.backward::<$t>(rx.get()?, rg.get()?, rd.get()?);
                (
                    Tensor::from_vec(dx, x.shape(), x.device())?,
                    Tensor::from_vec(dg, g.shape(), g.device())?,
                )
            }};
        }
        let (dx, dg) = match x.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused rms_norm: unsupported dtype {dt:?}"),
        };
        Ok((Some(dx), Some(dg)))
    }
}

/// Fused RMSNorm of `x` (`[…, H]`) with gain `g` (`[H]`). CPU f32/f64 only.
pub fn rms_norm(x: &Tensor, g: &Tensor, eps: f64) -> Result<Tensor> {
    if g.rank() != 1 || x.dim(candle_core::D::Minus1)? != g.dim(0)? {
        bail!(
            "fused rms_norm: gain {:?} for input {:?}",
            g.shape(),
            x.shape()
        );
    }
    x.contiguous()?
        .apply_op2(&g.contiguous()?, RmsNormOp { eps })
}

/// SwiGLU gate `silu(a) ⊙ u`, elementwise.
struct SwiGluOp;

impl SwiGluOp {
    fn forward<T: Real>(a: &[T], u: &[T]) -> Vec<T> {
        let one = T::from_f64(1.0);
        let mut y = vec![T::from_f64(0.0); a.len()];
        y.par_chunks_mut(4096)
            .zip(a.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(yc, (ac, uc))| {
                // yc first holds e^(−a).
                for (o, &x) in yc.iter_mut().zip(ac) {
                    *o = T::from_f64(0.0) - x;
                }
                T::exp_slice(yc);
                for ((o, &x), &w) in yc.iter_mut().zip(ac).zip(uc) {
                    *o = x / (one + *o) * w;
                }
            });
        y
    }

    /// `da = dy·u·σ(a)·(1 + a·(1 − σ(a)))`, `du = dy·silu(a)`.
    fn backward<T: Real>(a: &[T], u: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
        let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
        let mut da = vec![zero; a.len()];
        let mut du = vec![zero; a.len()];
        da.par_chunks_mut(4096)
            .zip(du.par_chunks_mut(4096))
            .zip(a.par_chunks(4096).zip(u.par_chunks(4096)))
            .zip(dy.par_chunks(4096))
            .for_each(|(((dac, duc), (ac, uc)), dyc)| {
                // dac first holds e^(−a).
                for (o, &x) in dac.iter_mut().zip(ac) {
                    *o = zero - x;
                }
                T::exp_slice(dac);
                for i in 0..ac.len() {
                    let x = ac[i];
                    let s = one / (one + dac[i]);
                    dac[i] = dyc[i] * uc[i] * s * (one + x * (one - s));
                    duc[i] = dyc[i] * x * s;
                }
            });
        (da, du)
    }
}

impl CustomOp2 for SwiGluOp {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = match s1.dtype() {
            DType::F32 => CpuStorage::F32(Self::forward::<f32>(slice(s1, l1)?, slice(s2, l2)?)),
            DType::F64 => CpuStorage::F64(Self::forward::<f64>(slice(s1, l1)?, slice(s2, l2)?)),
            dt => bail!("fused swiglu: unsupported dtype {dt:?}"),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (ra, ru, rd) = (read(a)?, read(u)?, read(&grad)?);
        macro_rules! run {
            ($t:ty) => {{
                let (da, du) = Self::backward::<$t>(ra.get()?, ru.get()?, rd.get()?);
                (
                    Tensor::from_vec(da, a.shape(), a.device())?,
                    Tensor::from_vec(du, u.shape(), u.device())?,
                )
            }};
        }
        let (da, du) = match a.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused swiglu: unsupported dtype {dt:?}"),
        };
        Ok((Some(da), Some(du)))
    }
}

/// Fused `silu(a) ⊙ u` (same shapes). CPU f32/f64 only.
pub fn swiglu(a: &Tensor, u: &Tensor) -> Result<Tensor> {
    if a.shape() != u.shape() {
        bail!("fused swiglu: shapes {:?} and {:?}", a.shape(), u.shape());
    }
    a.contiguous()?.apply_op2(&u.contiguous()?, SwiGluOp)
}

/// Sum over rows of the cross-entropy `logsumexp(z) − z[target]` of logits `[N, V]`.
struct CrossEntropyOp;

impl CrossEntropyOp {
    /// Per-row `(max, log Σ e^(z − max))`.
    fn row_lse<T: Real>(z: &[T]) -> T {
        let mut m = z[0];
        for &x in z {
            if x > m {
                m = x;
            }
        }
        let mut s = T::from_f64(0.0);
        for &x in z {
            s += (x - m).exp_();
        }
        m + s.ln_()
    }

    fn forward<T: Real>(z: &[T], tgt: &[u32]) -> T {
        let v = z.len() / tgt.len();
        let rows: Vec<f64> = z
            .par_chunks(v * ROWS_PER_TASK)
            .zip(tgt.par_chunks(ROWS_PER_TASK))
            .flat_map_iter(|(zc, tc)| {
                zc.chunks(v)
                    .zip(tc)
                    .map(|(zr, &t)| (Self::row_lse(zr) - zr[t as usize]).to_f64())
                    .collect::<Vec<_>>()
            })
            .collect();
        T::from_f64(rows.iter().sum())
    }

    /// `dz = grad · (softmax(z) − onehot(target))`.
    fn backward<T: Real>(z: &[T], tgt: &[u32], grad: T) -> Vec<T> {
        let v = z.len() / tgt.len();
        let mut dz = vec![T::from_f64(0.0); z.len()];
        dz.par_chunks_mut(v * ROWS_PER_TASK)
            .zip(
                z.par_chunks(v * ROWS_PER_TASK)
                    .zip(tgt.par_chunks(ROWS_PER_TASK)),
            )
            .for_each(|(dc, (zc, tc))| {
                for ((dr, zr), &t) in dc.chunks_mut(v).zip(zc.chunks(v)).zip(tc) {
                    let l = Self::row_lse(zr);
                    for (d, &x) in dr.iter_mut().zip(zr) {
                        *d = (x - l).exp_() * grad;
                    }
                    dr[t as usize] -= grad;
                }
            });
        dz
    }
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let tgt: &[u32] = slice(s2, l2)?;
        let y = match s1.dtype() {
            DType::F32 => CpuStorage::F32(vec![Self::forward::<f32>(slice(s1, l1)?, tgt)]),
            DType::F64 => CpuStorage::F64(vec![Self::forward::<f64>(slice(s1, l1)?, tgt)]),
            dt => bail!("fused cross-entropy: unsupported dtype {dt:?}"),
        };
        Ok((y, Shape::from(())))
    }

    fn bwd(
        &self,
        z: &Tensor,
        tgt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rz, rt) = (read(z)?, read(tgt)?);
        let t: &[u32] = rt.get()?;
        let dz = match z.dtype() {
            DType::F32 => {
                let g = grad.to_scalar::<f32>()?;
                Tensor::from_vec(
                    Self::backward::<f32>(rz.get()?, t, g),
                    z.shape(),
                    z.device(),
                )?
            }
            DType::F64 => {
                let g = grad.to_scalar::<f64>()?;
                Tensor::from_vec(
                    Self::backward::<f64>(rz.get()?, t, g),
                    z.shape(),
                    z.device(),
                )?
            }
            dt => bail!("fused cross-entropy: unsupported dtype {dt:?}"),
        };
        Ok((Some(dz), None))
    }
}

/// `Σ_n (logsumexp(logits[n]) − logits[n, targets[n]])` for logits `[N, V]` and u32 targets
/// `[N]`: a scalar. CPU f32/f64 only.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if targets.dims() != [n] || targets.dtype() != DType::U32 || n == 0 {
        bail!(
            "fused cross-entropy: {n} logit rows, targets {:?}",
            targets.shape()
        );
    }
    let tv: Vec<u32> = targets.to_vec1()?;
    if let Some(bad) = tv.iter().find(|&&x| x as usize >= v) {
        bail!("fused cross-entropy: target {bad} outside {v} classes");
    }
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropyOp)
}

/// Rows of `h` (`[N, H]`) replaced by rows of `patches` (`[M, H]`): `out[pos[m]] = patches[m]`
/// (a later patch wins on a repeated position, as with `cat + index_select`).
struct PlaceRowsOp {
    /// For each row of the output, `Some(m)` when it comes from patch `m`.
    src: Vec<Option<usize>>,
}

impl PlaceRowsOp {
    fn forward<T: Real>(&self, h: &[T], p: &[T]) -> Vec<T> {
        let w = h.len() / self.src.len();
        let mut out = h.to_vec();
        for (r, s) in self.src.iter().enumerate() {
            if let Some(m) = s {
                out[r * w..(r + 1) * w].copy_from_slice(&p[m * w..(m + 1) * w]);
            }
        }
        out
    }

    fn backward<T: Real>(&self, dy: &[T], m: usize) -> (Vec<T>, Vec<T>) {
        let w = dy.len() / self.src.len();
        let mut dh = dy.to_vec();
        let mut dp = vec![T::from_f64(0.0); m * w];
        for (r, s) in self.src.iter().enumerate() {
            if let Some(k) = s {
                dp[k * w..(k + 1) * w].copy_from_slice(&dy[r * w..(r + 1) * w]);
                dh[r * w..(r + 1) * w].fill(T::from_f64(0.0));
            }
        }
        (dh, dp)
    }
}

impl CustomOp2 for PlaceRowsOp {
    fn name(&self) -> &'static str {
        "fused-place-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = match s1.dtype() {
            DType::F32 => CpuStorage::F32(self.forward::<f32>(slice(s1, l1)?, slice(s2, l2)?)),
            DType::F64 => CpuStorage::F64(self.forward::<f64>(slice(s1, l1)?, slice(s2, l2)?)),
            dt => bail!("fused place_rows: unsupported dtype {dt:?}"),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let rd = read(&grad)?;
        let m = p.dim(0)?;
        macro_rules! run {
            ($t:ty) => {{
                let (dh, dp) = self.backward::<$t>(rd.get()?, m);
                (
                    Tensor::from_vec(dh, h.shape(), h.device())?,
                    Tensor::from_vec(dp, p.shape(), p.device())?,
                )
            }};
        }
        let (dh, dp) = match h.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused place_rows: unsupported dtype {dt:?}"),
        };
        Ok((Some(dh), Some(dp)))
    }
}

/// `h` (`[N, H]`) with row `positions[m]` replaced by row `m` of `patches` (`[M, H]`).
/// Positions must be below N. CPU f32/f64 only.
pub fn place_rows(h: &Tensor, patches: &Tensor, positions: &[u32]) -> Result<Tensor> {
    let (n, w) = h.dims2()?;
    if patches.dims2()? != (positions.len(), w) {
        bail!(
            "fused place_rows: {:?} patches for {} positions",
            patches.shape(),
            positions.len()
        );
    }
    let mut src = vec![None; n];
    for (m, &p) in positions.iter().enumerate() {
        match src.get_mut(p as usize) {
            Some(s) => *s = Some(m),
            None => bail!("fused place_rows: position {p} outside {n} rows"),
        }
    }
    h.contiguous()?
        .apply_op2(&patches.contiguous()?, PlaceRowsOp { src })
}

#[cfg(test)]
mod tests {
    //! Every fused op against the composition of elementary candle ops it replaces, in f64:
    //! values and the gradients of a random linear functional of the output, to ~1e-10.

    use super::*;
    use crate::model::attention::causal_mask;
    use crate::model::norm;
    use crate::model::rotary::RotaryTables;
    use crate::rng::SplitMix64;
    use candle_core::{Device, Var, D};

    fn randn(rng: &mut SplitMix64, shape: &[usize], scale: f64) -> Var {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) * scale)
            .collect();
        Var::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / scale)
            .fold(0.0, f64::max)
    }

    /// Checks `fused(inputs)` against `composed(inputs)`: outputs, and the gradients of
    /// `Σ w ⊙ output` with respect to every input.
    fn check(
        inputs: &[&Var],
        fused: impl Fn(&[Tensor]) -> Tensor,
        composed: impl Fn(&[Tensor]) -> Tensor,
        tol: f64,
    ) {
        let xs: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let (yf, yc) = (fused(&xs), composed(&xs));
        assert_eq!(yf.shape(), yc.shape());
        let err = max_rel(&yf, &yc);
        assert!(err < tol, "values differ by {err:e}");
        let mut rng = SplitMix64::new(99);
        let w = randn(&mut rng, yf.dims(), 1.0);
        let gf = (&yf * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (&yc * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, x) in xs.iter().enumerate() {
            let (a, b) = (
                gf.get(x).expect("fused gradient"),
                gc.get(x).expect("gradient"),
            );
            let err = max_rel(a, b);
            assert!(err < tol, "gradient of input {i} differs by {err:e}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn composed_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        b: usize,
        t: usize,
        nh: usize,
        nkv: usize,
        rope: &RotaryTables,
    ) -> Tensor {
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
            check(
                &[&q, &k, &v],
                |x| attention(&x[0], &x[1], &x[2], b, t, nh, nkv, cos, sin).unwrap(),
                |x| composed_attention(&x[0], &x[1], &x[2], b, t, nh, nkv, &rope),
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
            attention(&c(&q), &c(&k), &c(&v), b, t, nh, nkv, cos, sin)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
        };
        let err = max_rel(&run(DType::F32), &run(DType::F64));
        assert!(err < 1e-5, "{err:e}");
    }

    #[test]
    fn linear_matches_composition() {
        let mut rng = SplitMix64::new(6);
        let x = randn(&mut rng, &[37, 12], 2.0);
        let w = randn(&mut rng, &[9, 12], 1.0);
        let b = randn(&mut rng, &[9], 1.0);
        check(
            &[&x, &w, &b],
            |a| linear(&a[0], &a[1], Some(&a[2])).unwrap(),
            |a| crate::model::embedding::linear(&a[0], &a[1], Some(&a[2])).unwrap(),
            1e-12,
        );
        check(
            &[&x, &w],
            |a| linear(&a[0], &a[1], None).unwrap(),
            |a| crate::model::embedding::linear(&a[0], &a[1], None).unwrap(),
            1e-12,
        );
        // An input outside the graph gets no gradient computed.
        let c = Tensor::ones((4, 12), DType::F64, &Device::Cpu).unwrap();
        let g = linear(&c, &w, None)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&c).is_none() && g.get(&w).is_some());
        assert!(linear(&c, &b, None).is_err());
    }

    #[test]
    fn fast_exp_is_within_a_few_ulp() {
        let mut worst = 0.0f64;
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + i as f32 * 175.0 / 200_000.0)
            .collect();
        let mut ys = xs.clone();
        f32::exp_slice(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).exp();
            worst = worst.max((y as f64 - want).abs() / want);
        }
        assert!(
            worst < 3.0 * f32::EPSILON as f64,
            "relative error {worst:e}"
        );
        let mut edge = [f32::NEG_INFINITY, -1e30, 0.0, 1e30];
        f32::exp_slice(&mut edge);
        assert!(edge[0] < 1e-37 && edge[1] < 1e-37 && edge[2] == 1.0 && edge[3] > 1e38);
    }

    #[test]
    fn rms_norm_matches_composition() {
        let mut rng = SplitMix64::new(1);
        // More rows than one task holds, so the gain gradient sums several partials.
        let x = randn(&mut rng, &[3 * ROWS_PER_TASK + 5, 24], 3.0);
        let g = randn(&mut rng, &[24], 1.0);
        check(
            &[&x, &g],
            |a| rms_norm(&a[0], &a[1], 1e-6).unwrap(),
            |a| norm::rms_norm(&a[0], &a[1], 1e-6).unwrap(),
            1e-12,
        );
    }

    #[test]
    fn swiglu_matches_composition() {
        let mut rng = SplitMix64::new(2);
        let a = randn(&mut rng, &[50, 200], 6.0);
        let u = randn(&mut rng, &[50, 200], 1.0);
        check(
            &[&a, &u],
            |x| swiglu(&x[0], &x[1]).unwrap(),
            |x| (candle_nn::ops::silu(&x[0]).unwrap() * &x[1]).unwrap(),
            1e-12,
        );
    }

    #[test]
    fn cross_entropy_matches_composition() {
        let mut rng = SplitMix64::new(3);
        let (n, v) = (2 * ROWS_PER_TASK + 7, 19);
        let z = randn(&mut rng, &[n, v], 5.0);
        let tv: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        let tgt = Tensor::from_vec(tv.clone(), n, &Device::Cpu).unwrap();
        let tgt2 = Tensor::from_vec(tv, (n, 1), &Device::Cpu).unwrap();
        check(
            &[&z],
            |x| cross_entropy_sum(&x[0], &tgt).unwrap(),
            |x| {
                candle_nn::ops::log_softmax(&x[0], D::Minus1)
                    .unwrap()
                    .gather(&tgt2, 1)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .neg()
                    .unwrap()
            },
            1e-12,
        );
        assert!(cross_entropy_sum(&z, &Tensor::new(&[0u32, 1], &Device::Cpu).unwrap()).is_err());
    }

    #[test]
    fn place_rows_matches_cat_and_index_select() {
        let mut rng = SplitMix64::new(4);
        let h = randn(&mut rng, &[10, 6], 1.0);
        let p = randn(&mut rng, &[4, 6], 1.0);
        // Position 7 repeats: the later patch wins, the earlier gets no gradient.
        let positions = [2u32, 7, 0, 7];
        let mut src: Vec<u32> = (0..10).collect();
        for (m, &q) in positions.iter().enumerate() {
            src[q as usize] = 10 + m as u32;
        }
        let src = Tensor::from_vec(src, 10, &Device::Cpu).unwrap();
        check(
            &[&h, &p],
            |x| place_rows(&x[0], &x[1], &positions).unwrap(),
            |x| {
                Tensor::cat(&[&x[0], &x[1]], 0)
                    .unwrap()
                    .index_select(&src, 0)
                    .unwrap()
            },
            1e-15,
        );
        assert!(place_rows(&h, &p, &[0, 1, 2, 10]).is_err());
    }
}
