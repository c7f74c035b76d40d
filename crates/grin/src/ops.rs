//! Fused, differentiable CPU kernels for the training path.
//!
//! candle-nn's fused `rms_norm`, `softmax_last_dim` and `rope` have no
//! backward, and composing them from primitive tensor ops costs one full
//! pass, one allocation and one gradient-store entry (itself a zero tensor
//! plus an add) per primitive. Each op here is a candle custom op that does
//! its forward in one pass over the data and implements `bwd` itself, so the
//! autograd graph holds one node where the composed version held five to ten:
//!
//! - [`rms_norm`]: `x / sqrt(mean(x²) + ε) · w` over the last dimension;
//! - [`attn_softmax`]: `softmax(scale · s + mask)` over the last dimension,
//!   the additive mask broadcast over the leading dimensions;
//! - [`rope_to_heads`]: rotary embedding (`rotate_half` convention) fused with
//!   the `[b, t, h, d] → [b, h, t, d]` transpose that precedes it;
//! - [`silu_mul`]: the SwiGLU gate `silu(a) · b`;
//! - [`cross_entropy`]: per-position `−log softmax(logits)[target]`;
//! - [`linear`]: `x · wᵀ` whose backward computes only the gradients that are
//!   needed (a frozen weight gets none) and builds no graph of its own, so a
//!   gradient never keeps activations alive.
//!
//! The kernels run on CPU tensors of f32 or f64 and split rows over the
//! rayon pool candle's matrix products use (as many threads as
//! `RAYON_NUM_THREADS`, else the cores).
//! For other dtypes (bf16, f16) or other devices each function falls back to
//! the composed version in [`composed`], which is also what the gradient
//! tests compare against. The f32 exponential is a branch-free polynomial
//! (about 2 ulp) that the compiler vectorises; f64 uses the standard library.
//!
//! Not here: the AdamW update (see [`crate::train`]), attention masks
//! (see [`crate::model`]).

use std::sync::{Mutex, PoisonError};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Storage, Tensor};

// ---------------------------------------------------------------- numbers

/// The float types the kernels are written for (f32 and f64).
pub(crate) trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn fexp(self) -> Self;
    fn fsqrt(self) -> Self;
    fn fln(self) -> Self;
    /// The larger of the two; `self` when they are unordered (NaN).
    #[inline(always)]
    fn fmax(self, other: Self) -> Self {
        if other > self {
            other
        } else {
            self
        }
    }
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn storage(v: Vec<Self>) -> CpuStorage;
}

/// `e^x` for f32 without a libm call: `2^n · p(r)` with `r = x − n·ln 2`,
/// `|r| ≤ ln 2 / 2`, and Cephes' degree-6 polynomial; written without
/// branches so loops over it vectorise. Relative error about 2 ulp; inputs
/// below −87 give 0, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = (xc - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let n_int = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn fexp(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn fsqrt(self) -> Self {
        self.sqrt()
    }
    fn fln(self) -> Self {
        self.ln()
    }
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn fexp(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn fsqrt(self) -> Self {
        self.sqrt()
    }
    fn fln(self) -> Self {
        self.ln()
    }
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
}

/// Sum with eight independent accumulators (a single one would serialise
/// the adds and keep the loop from vectorising).
#[inline]
fn sum<T: Real>(x: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i] + c[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s = s + v;
    }
    s
}

#[inline]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] = acc[i] + x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        s = s + x * y;
    }
    s
}

#[inline]
fn max<T: Real>(x: &[T], init: T) -> T {
    let mut acc = [init; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].fmax(c[i]);
        }
    }
    let mut m = acc.iter().fold(init, |m, &v| m.fmax(v));
    for &v in rest {
        m = m.fmax(v);
    }
    m
}

// ---------------------------------------------------------------- threads

/// Sizes the thread pools of tensor work; call it before the first tensor
/// operation (candle sizes its pools once, from the environment).
///
/// `threads` (default: the cores) goes to the rayon pool that runs matrix
/// products and the kernels here (`RAYON_NUM_THREADS`). candle's own pool
/// for element-wise operations (`CANDLE_NUM_THREADS`) is set to one thread:
/// its workers and the caller spin while they wait, so on a busy machine
/// (other jobs, other processes) a step can take ten times as long, while
/// rayon's callers sleep. Measured in docs/benchmarks.md.
pub fn configure_threads(threads: Option<usize>) {
    if let Some(n) = threads.filter(|&n| n > 0) {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Runs `f` on a thread of the pool that runs the matrix products and the
/// kernels here, and waits for it. Tensor work done inside (a training
/// step) then shares that pool's threads instead of handing every parallel
/// operation from the caller to the workers and back, which on a small
/// model costs more scheduling than the operations themselves.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    candle_core::utils::with_threadpool(f)
}

/// Work below this many element-operations stays on the calling thread.
const PAR_MIN_WORK: usize = 64 * 1024;
/// Element-operations per work unit handed to a worker.
const PAR_CHUNK_WORK: usize = 16 * 1024;

/// Runs `f(index)` for every index in `0..n` on the rayon pool that candle's
/// matrix products use (as many threads as `RAYON_NUM_THREADS`, else the
/// cores), workers taking the next index from a shared counter; on the
/// calling thread when `n < 2` or there is one thread. The caller sleeps
/// while the workers run (no spinning), which matters on a loaded machine.
fn par_indices(n: usize, f: impl Fn(usize) + Send + Sync) {
    let threads = candle_core::utils::get_num_threads().min(n);
    if threads <= 1 {
        (0..n).for_each(f);
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    candle_core::cpu::kernels::par_for_each(threads, |_| loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    });
}

/// One block of [`par_rows`]: first row, the rows, the rows of the second
/// output, the result.
type Block<'a, T, U, R> = Mutex<(usize, &'a mut [T], Option<&'a mut [U]>, Option<R>)>;

/// Runs `f(first_row, rows, rows2)` over `out` cut into blocks of whole rows
/// of `row` elements (and `out2`, empty or as long as `out`, cut alongside),
/// in parallel when the work (`work_per_row` per row) is big enough, and
/// returns each block's result in order.
fn par_rows<T: Send, U: Send, R: Send>(
    out: &mut [T],
    out2: &mut [U],
    row: usize,
    work_per_row: usize,
    f: impl Fn(usize, &mut [T], &mut [U]) -> R + Sync + Send,
) -> Vec<R> {
    let row = row.max(1);
    let n_rows = out.len() / row;
    let threads = candle_core::utils::get_num_threads();
    if threads <= 1 || n_rows < 2 || n_rows * work_per_row < PAR_MIN_WORK {
        return vec![f(0, out, out2)];
    }
    let rows_per = (PAR_CHUNK_WORK / work_per_row.max(1)).clamp(1, n_rows.div_ceil(threads));
    let paired = !out2.is_empty();
    let mut second = if paired {
        out2.chunks_mut(rows_per * row).map(Some).collect::<Vec<_>>()
    } else {
        Vec::new()
    };
    let blocks: Vec<Block<'_, T, U, R>> = out
        .chunks_mut(rows_per * row)
        .enumerate()
        .map(|(i, c)| {
            let o2 = if paired { second[i].take() } else { None };
            Mutex::new((i * rows_per, c, o2, None))
        })
        .collect();
    par_indices(blocks.len(), |i| {
        let mut guard = blocks[i].lock().unwrap_or_else(PoisonError::into_inner);
        let (first, a, b, res) = &mut *guard;
        let r = match b {
            Some(b) => f(*first, a, b),
            None => f(*first, a, &mut []),
        };
        *res = Some(r);
    });
    blocks
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .3
                .expect("every block ran")
        })
        .collect()
}

/// Runs `f` on every item, in parallel when there is more than one item and
/// more than one thread.
pub(crate) fn par_each<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    let cells: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    par_indices(cells.len(), |i| {
        let item = cells[i].lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(item) = item {
            f(item);
        }
    });
}

// ---------------------------------------------------------------- access

/// The contiguous element range of a tensor's layout, or an error naming
/// the op.
fn contiguous_range(l: &Layout, op: &'static str) -> Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => candle_core::bail!("{op}: expects a contiguous input"),
    }
}

fn slice_of<'a, T: Real>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [T]> {
    let range = contiguous_range(l, op)?;
    match T::slice(s) {
        Some(v) => Ok(&v[range]),
        None => candle_core::bail!("{op}: unexpected dtype {:?}", s.dtype()),
    }
}

/// Runs `f` on the contiguous CPU data of `t` (made contiguous first).
fn with_data<T: Real, R>(t: &Tensor, op: &'static str, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice_of::<T>(s, layout, op)?),
        _ => candle_core::bail!("{op}: CPU tensors only"),
    }
}

fn tensor_from<T: Real>(v: Vec<T>, shape: impl Into<Shape>) -> Tensor {
    Tensor::from_storage(
        Storage::Cpu(T::storage(v)),
        shape,
        candle_core::op::BackpropOp::none(),
        false,
    )
}

/// Whether the fused kernels cover tensors of this dtype on this device
/// (CPU, f32 or f64); elsewhere the functions here run [`composed`].
pub fn fused_supported(dtype: DType, device: &Device) -> bool {
    matches!(dtype, DType::F32 | DType::F64) && matches!(device, Device::Cpu)
}

/// Whether the fused kernels handle these tensors together (one dtype).
fn fused_ok(ts: &[&Tensor]) -> bool {
    let Some(first) = ts.first() else { return false };
    let dtype = first.dtype();
    ts.iter()
        .all(|t| t.dtype() == dtype && fused_supported(dtype, t.device()))
}

/// Dispatches a generic kernel on the dtype of a CPU storage.
macro_rules! dispatch {
    ($s:expr, $op:expr, |$v:ident : $t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                let $v = $s;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                let $v = $s;
                $body
            }
            other => candle_core::bail!("{}: unsupported dtype {:?}", $op, other.dtype()),
        }
    };
}

// ---------------------------------------------------------------- RMSNorm

struct RmsNorm {
    eps: f64,
}

impl RmsNorm {
    fn fwd<T: Real>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let d = w.len();
        let eps = T::from_f64(self.eps);
        let inv_d = T::from_f64(1.0 / d as f64);
        let mut out = vec![T::ZERO; x.len()];
        par_rows(&mut out, &mut [] as &mut [T], d, d, |first, block, _| {
            for (i, y) in block.chunks_exact_mut(d).enumerate() {
                let xr = &x[(first + i) * d..(first + i + 1) * d];
                let r = T::ONE / (dot(xr, xr) * inv_d + eps).fsqrt();
                for ((y, &xv), &wv) in y.iter_mut().zip(xr).zip(w) {
                    *y = xv * r * wv;
                }
            }
        });
        out
    }

    /// `(grad_x, grad_w)`: with `r = 1/rms(x)`, `x̂ = x·r`, `gw = g·w`:
    /// `grad_w = Σ_rows g·x̂`, `grad_x = r·(gw − x̂·mean(gw·x̂))`.
    fn bwd_kernel<T: Real>(&self, x: &[T], w: &[T], g: &[T], want_w: bool) -> (Vec<T>, Option<Vec<T>>) {
        let d = w.len();
        let eps = T::from_f64(self.eps);
        let inv_d = T::from_f64(1.0 / d as f64);
        let mut gx = vec![T::ZERO; x.len()];
        let partials = par_rows(&mut gx, &mut [] as &mut [T], d, 2 * d, |first, block, _| {
            let mut gw_acc = if want_w { vec![T::ZERO; d] } else { Vec::new() };
            let mut gwx = vec![T::ZERO; d];
            for (i, out) in block.chunks_exact_mut(d).enumerate() {
                let row = first + i;
                let xr = &x[row * d..(row + 1) * d];
                let gr = &g[row * d..(row + 1) * d];
                let r = T::ONE / (dot(xr, xr) * inv_d + eps).fsqrt();
                for ((o, &gv), &wv) in gwx.iter_mut().zip(gr).zip(w) {
                    *o = gv * wv;
                }
                let c = dot(&gwx, xr) * r * r * inv_d;
                for ((o, &gv), &xv) in out.iter_mut().zip(&gwx).zip(xr) {
                    *o = r * (gv - xv * c);
                }
                if want_w {
                    for ((a, &gv), &xv) in gw_acc.iter_mut().zip(gr).zip(xr) {
                        *a = *a + gv * xv * r;
                    }
                }
            }
            gw_acc
        });
        let gw = want_w.then(|| {
            let mut acc = vec![T::ZERO; d];
            for p in partials {
                for (a, v) in acc.iter_mut().zip(p) {
                    *a = *a + v;
                }
            }
            acc
        });
        (gx, gw)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "grin-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = *l1.dims().last().unwrap_or(&0);
        if l2.dims() != [d] {
            candle_core::bail!("rms_norm: weight {:?} does not match input {:?}", l2.dims(), l1.dims());
        }
        dispatch!(s1, "rms_norm", |s: T| {
            let x = slice_of::<T>(s, l1, "rms_norm")?;
            let w = slice_of::<T>(s2, l2, "rms_norm")?;
            Ok((T::storage(self.fwd(x, w)), l1.shape().clone()))
        })
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let want_w = w.track_op();
        macro_rules! go {
            ($t:ty) => {
                with_data::<$t, _>(x, "rms_norm", |xs| {
                    with_data::<$t, _>(w, "rms_norm", |ws| {
                        with_data::<$t, _>(g, "rms_norm", |gs| {
                            let (gx, gw) = self.bwd_kernel(xs, ws, gs, want_w);
                            Ok((
                                x.track_op().then(|| tensor_from(gx, x.shape())),
                                gw.map(|v| tensor_from(v, w.shape())),
                            ))
                        })
                    })
                })
            };
        }
        match x.dtype() {
            DType::F32 => go!(f32),
            DType::F64 => go!(f64),
            dt => candle_core::bail!("rms_norm: unsupported dtype {dt:?}"),
        }
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) · w`
/// (`w`: `[d]`). Fused on CPU f32/f64, composed otherwise.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_ok(&[x, w]) {
        return composed::rms_norm(x, w, eps);
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

// ---------------------------------------------------------------- softmax

struct AttnSoftmax {
    scale: f64,
    /// Additive mask `[rows_per_block, n]`, repeated over the leading rows.
    mask: Option<Tensor>,
}

impl AttnSoftmax {
    fn fwd<T: Real>(&self, x: &[T], n: usize, mask: Option<&[T]>) -> Vec<T> {
        let scale = T::from_f64(self.scale);
        let mask_rows = mask.map_or(1, |m| m.len() / n.max(1)).max(1);
        let mut out = vec![T::ZERO; x.len()];
        par_rows(&mut out, &mut [] as &mut [T], n, 3 * n, |first, block, _| {
            for (i, y) in block.chunks_exact_mut(n).enumerate() {
                let row = first + i;
                let xr = &x[row * n..(row + 1) * n];
                match mask {
                    Some(m) => {
                        let mr = &m[(row % mask_rows) * n..(row % mask_rows + 1) * n];
                        for ((y, &xv), &mv) in y.iter_mut().zip(xr).zip(mr) {
                            *y = xv * scale + mv;
                        }
                    }
                    None => {
                        for (y, &xv) in y.iter_mut().zip(xr) {
                            *y = xv * scale;
                        }
                    }
                }
                let m = max(y, -T::from_f64(f64::INFINITY));
                for v in y.iter_mut() {
                    *v = (*v - m).fexp();
                }
                let inv = T::ONE / sum(y);
                for v in y.iter_mut() {
                    *v = *v * inv;
                }
            }
        });
        out
    }

    /// `grad_s = scale · p · (g − Σ g·p)`.
    fn bwd_kernel<T: Real>(&self, p: &[T], g: &[T], n: usize) -> Vec<T> {
        let scale = T::from_f64(self.scale);
        let mut out = vec![T::ZERO; p.len()];
        par_rows(&mut out, &mut [] as &mut [T], n, 2 * n, |first, block, _| {
            for (i, o) in block.chunks_exact_mut(n).enumerate() {
                let row = first + i;
                let pr = &p[row * n..(row + 1) * n];
                let gr = &g[row * n..(row + 1) * n];
                let s = dot(pr, gr);
                for ((o, &pv), &gv) in o.iter_mut().zip(pr).zip(gr) {
                    *o = scale * pv * (gv - s);
                }
            }
        });
        out
    }
}

impl CustomOp1 for AttnSoftmax {
    fn name(&self) -> &'static str {
        "grin-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = *l.dims().last().unwrap_or(&1);
        dispatch!(s, "softmax", |st: T| {
            let x = slice_of::<T>(st, l, "softmax")?;
            let out = match &self.mask {
                Some(m) => with_data::<T, _>(m, "softmax", |m| Ok(self.fwd(x, n, Some(m))))?,
                None => self.fwd(x, n, None),
            };
            Ok((T::storage(out), l.shape().clone()))
        })
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let n = res.dims().last().copied().unwrap_or(1);
        macro_rules! go {
            ($t:ty) => {
                with_data::<$t, _>(res, "softmax", |p| {
                    with_data::<$t, _>(g, "softmax", |gs| {
                        Ok(Some(tensor_from(self.bwd_kernel(p, gs, n), res.shape())))
                    })
                })
            };
        }
        match res.dtype() {
            DType::F32 => go!(f32),
            DType::F64 => go!(f64),
            dt => candle_core::bail!("softmax: unsupported dtype {dt:?}"),
        }
    }
}

/// `softmax(scale · x + mask)` over the last dimension. `mask` (additive,
/// `-inf` to hide) has shape `[r, n]` and repeats over `x`'s leading rows:
/// `x` is `[.., r, n]`. Fused on CPU f32/f64, composed otherwise.
pub fn attn_softmax(x: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let mut all = vec![x];
    all.extend(mask);
    if !fused_ok(&all) {
        return composed::attn_softmax(x, scale, mask);
    }
    if let Some(m) = mask {
        let (r, n) = m.dims2()?;
        let rank = x.rank();
        if rank < 2 || x.dims()[rank - 1] != n || x.dims()[rank - 2] != r {
            candle_core::bail!("attn_softmax: mask {:?} does not fit scores {:?}", m.dims(), x.dims());
        }
    }
    x.contiguous()?.apply_op1(AttnSoftmax {
        scale,
        mask: mask.map(|m| m.detach()),
    })
}

// ---------------------------------------------------------------- RoPE

struct RopeToHeads;

impl RopeToHeads {
    /// `x`: `[b, t, h, d]` → `[b, h, t, d]`; `inverse` applies the transpose
    /// of the rotation and maps `[b, h, t, d]` back to `[b, t, h, d]`.
    fn kernel<T: Real>(
        x: &[T],
        cos: &[T],
        sin: &[T],
        (_b, t, h, d): (usize, usize, usize, usize),
        inverse: bool,
    ) -> Vec<T> {
        let half = d / 2;
        let mut out = vec![T::ZERO; x.len()];
        // Output rows of `d` elements, in output order.
        par_rows(&mut out, &mut [] as &mut [T], d, d, |first, block, _| {
            for (i, y) in block.chunks_exact_mut(d).enumerate() {
                let row = first + i;
                // Output index → (batch, first, second) in output order.
                let (bi, rest) = (row / (t * h), row % (t * h));
                let (pos, src) = if inverse {
                    // out [b, t, h]: rest = ti * h + hi; input [b, h, t]
                    let (ti, hi) = (rest / h, rest % h);
                    (ti, (bi * h + hi) * t + ti)
                } else {
                    // out [b, h, t]: rest = hi * t + ti; input [b, t, h]
                    let (hi, ti) = (rest / t, rest % t);
                    (ti, (bi * t + ti) * h + hi)
                };
                let xr = &x[src * d..(src + 1) * d];
                let c = &cos[pos * half..(pos + 1) * half];
                let s = &sin[pos * half..(pos + 1) * half];
                let (x1, x2) = xr.split_at(half);
                let (y1, y2) = y.split_at_mut(half);
                if inverse {
                    for j in 0..half {
                        y1[j] = x1[j] * c[j] + x2[j] * s[j];
                        y2[j] = x2[j] * c[j] - x1[j] * s[j];
                    }
                } else {
                    for j in 0..half {
                        y1[j] = x1[j] * c[j] - x2[j] * s[j];
                        y2[j] = x2[j] * c[j] + x1[j] * s[j];
                    }
                }
            }
        });
        out
    }
}

impl CustomOp3 for RopeToHeads {
    fn name(&self) -> &'static str {
        "grin-rope"
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
        let (b, t, h, d) = l1.shape().dims4()?;
        if d % 2 != 0 || l2.dims() != [t, d / 2] || l3.dims() != [t, d / 2] {
            candle_core::bail!(
                "rope: input {:?} needs cos/sin [{t}, {}], got {:?} {:?}",
                l1.dims(),
                d / 2,
                l2.dims(),
                l3.dims()
            );
        }
        dispatch!(s1, "rope", |s: T| {
            let x = slice_of::<T>(s, l1, "rope")?;
            let c = slice_of::<T>(s2, l2, "rope")?;
            let sn = slice_of::<T>(s3, l3, "rope")?;
            Ok((
                T::storage(Self::kernel(x, c, sn, (b, t, h, d), false)),
                Shape::from((b, h, t, d)),
            ))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, h, d) = x.dims4()?;
        macro_rules! go {
            ($ty:ty) => {
                with_data::<$ty, _>(g, "rope", |gs| {
                    with_data::<$ty, _>(cos, "rope", |c| {
                        with_data::<$ty, _>(sin, "rope", |s| {
                            let v = Self::kernel(gs, c, s, (b, t, h, d), true);
                            Ok((Some(tensor_from(v, (b, t, h, d))), None, None))
                        })
                    })
                })
            };
        }
        match x.dtype() {
            DType::F32 => go!(f32),
            DType::F64 => go!(f64),
            dt => candle_core::bail!("rope: unsupported dtype {dt:?}"),
        }
    }
}

/// Rotary embedding (`rotate_half` convention, as `transformers`) of `x`
/// `[b, t, h, d]`, returned transposed to `[b, h, t, d]` (contiguous): the
/// layout attention wants. `cos`/`sin` are `[t, d/2]` (the positions of the
/// `t` tokens). Fused on CPU f32/f64, composed otherwise.
pub fn rope_to_heads(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !fused_ok(&[x, cos, sin]) {
        return composed::rope_to_heads(x, cos, sin);
    }
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, RopeToHeads)
}

// ---------------------------------------------------------------- SwiGLU

struct SiluMul;

impl SiluMul {
    fn bwd_kernel<T: Real>(a: &[T], b: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
        let mut ga = vec![T::ZERO; a.len()];
        let mut gb = vec![T::ZERO; a.len()];
        let row = 256.min(a.len()).max(1);
        if a.len() % row != 0 {
            // Odd sizes: one pass, no split.
            Self::bwd_block(a, b, g, &mut ga, &mut gb);
        } else {
            par_rows(&mut ga, &mut gb, row, row * 2, |first, oa, ob| {
                let r = first * row..first * row + oa.len();
                Self::bwd_block(&a[r.clone()], &b[r.clone()], &g[r], oa, ob);
            });
        }
        (ga, gb)
    }

    /// `s = σ(a)`: `grad_a = g·b·s·(1 + a·(1 − s))`, `grad_b = g·a·s`.
    #[inline]
    fn bwd_block<T: Real>(a: &[T], b: &[T], g: &[T], ga: &mut [T], gb: &mut [T]) {
        for i in 0..a.len().min(ga.len()) {
            let (av, bv, gv) = (a[i], b[i], g[i]);
            let s = T::ONE / (T::ONE + (-av).fexp());
            ga[i] = gv * bv * s * (T::ONE + av * (T::ONE - s));
            gb[i] = gv * av * s;
        }
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "grin-silu-mul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("silu_mul: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        dispatch!(s1, "silu_mul", |s: T| {
            let a = slice_of::<T>(s, l1, "silu_mul")?;
            let b = slice_of::<T>(s2, l2, "silu_mul")?;
            let mut out = vec![T::ZERO; a.len()];
            let row = 256.min(a.len()).max(1);
            let body = |first: usize, o: &mut [T]| {
                let base = first * row;
                for (i, y) in o.iter_mut().enumerate() {
                    let av = a[base + i];
                    *y = av / (T::ONE + (-av).fexp()) * b[base + i];
                }
            };
            if a.len() % row == 0 {
                par_rows(&mut out, &mut [] as &mut [T], row, row, |first, o, _| body(first, o));
            } else {
                body(0, &mut out);
            }
            Ok((T::storage(out), l1.shape().clone()))
        })
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        macro_rules! go {
            ($t:ty) => {
                with_data::<$t, _>(a, "silu_mul", |av| {
                    with_data::<$t, _>(b, "silu_mul", |bv| {
                        with_data::<$t, _>(g, "silu_mul", |gv| {
                            let (ga, gb) = Self::bwd_kernel(av, bv, gv);
                            Ok((
                                a.track_op().then(|| tensor_from(ga, a.shape())),
                                b.track_op().then(|| tensor_from(gb, b.shape())),
                            ))
                        })
                    })
                })
            };
        }
        match a.dtype() {
            DType::F32 => go!(f32),
            DType::F64 => go!(f64),
            dt => candle_core::bail!("silu_mul: unsupported dtype {dt:?}"),
        }
    }
}

/// The SwiGLU gate `silu(a) · b` (`silu(a) = a · σ(a)`), elementwise on
/// equal shapes. Fused on CPU f32/f64, composed otherwise.
pub fn silu_mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !fused_ok(&[a, b]) || a.shape() != b.shape() {
        return composed::silu_mul(a, b);
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, SiluMul)
}

// ---------------------------------------------------------------- cross-entropy

struct CrossEntropy;

impl CrossEntropy {
    fn fwd<T: Real>(x: &[T], targets: &[u32], v: usize) -> Result<Vec<T>> {
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v) {
            candle_core::bail!("cross_entropy: target {bad} out of range for {v} classes");
        }
        let mut out = vec![T::ZERO; targets.len()];
        par_rows(&mut out, &mut [] as &mut [T], 1, 2 * v, |first, block, _| {
            // The exponentials go through a scratch row: a plain map loop
            // vectorises, a reduction over them would not.
            let mut e = vec![T::ZERO; v];
            for (i, y) in block.iter_mut().enumerate() {
                let row = first + i;
                let xr = &x[row * v..(row + 1) * v];
                let m = max(xr, -T::from_f64(f64::INFINITY));
                for (e, &xv) in e.iter_mut().zip(xr) {
                    *e = (xv - m).fexp();
                }
                *y = m + sum(&e).fln() - xr[targets[row] as usize];
            }
        });
        Ok(out)
    }

    /// `grad_logits = g · (softmax − onehot(target))`, with the softmax
    /// recovered from the forward's result: `logsumexp = nll + logit[target]`.
    fn bwd_kernel<T: Real>(x: &[T], targets: &[u32], nll: &[T], g: &[T], v: usize) -> Vec<T> {
        let mut out = vec![T::ZERO; x.len()];
        par_rows(&mut out, &mut [] as &mut [T], v, 2 * v, |first, block, _| {
            for (i, o) in block.chunks_exact_mut(v).enumerate() {
                let row = first + i;
                let xr = &x[row * v..(row + 1) * v];
                let target = targets[row] as usize;
                let lse = nll[row] + xr[target];
                let gr = g[row];
                for (o, &xv) in o.iter_mut().zip(xr) {
                    *o = gr * (xv - lse).fexp();
                }
                o[target] = o[target] - gr;
            }
        });
        out
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "grin-cross-entropy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        let Some((&v, lead)) = dims.split_last() else {
            candle_core::bail!("cross_entropy: logits must have a class dimension");
        };
        if l2.dims() != lead {
            candle_core::bail!("cross_entropy: targets {:?} do not fit logits {:?}", l2.dims(), dims);
        }
        let targets = match s2 {
            CpuStorage::U32(t) => &t[contiguous_range(l2, "cross_entropy")?],
            other => candle_core::bail!("cross_entropy: targets must be u32, got {:?}", other.dtype()),
        };
        dispatch!(s1, "cross_entropy", |s: T| {
            let x = slice_of::<T>(s, l1, "cross_entropy")?;
            Ok((T::storage(Self::fwd(x, targets, v)?), Shape::from(lead.to_vec())))
        })
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let v = logits.dims().last().copied().unwrap_or(1);
        let t = targets.contiguous()?;
        let (ts, tl) = t.storage_and_layout();
        let tv = match &*ts {
            Storage::Cpu(CpuStorage::U32(t)) => &t[contiguous_range(tl, "cross_entropy")?],
            _ => candle_core::bail!("cross_entropy: targets must be u32 on CPU"),
        };
        macro_rules! go {
            ($ty:ty) => {
                with_data::<$ty, _>(logits, "cross_entropy", |x| {
                    with_data::<$ty, _>(res, "cross_entropy", |nll| {
                        with_data::<$ty, _>(g, "cross_entropy", |gs| {
                            let out = Self::bwd_kernel(x, tv, nll, gs, v);
                            Ok((Some(tensor_from(out, logits.shape())), None))
                        })
                    })
                })
            };
        }
        match logits.dtype() {
            DType::F32 => go!(f32),
            DType::F64 => go!(f64),
            dt => candle_core::bail!("cross_entropy: unsupported dtype {dt:?}"),
        }
    }
}

/// Per-position negative log-likelihood `−log softmax(logits)[target]`:
/// `logits` `[.., v]`, `targets` u32 `[..]`, result `[..]` in the logits'
/// dtype. Fused on CPU f32/f64, composed otherwise.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !fused_ok(&[logits]) || targets.dtype() != DType::U32 || !matches!(targets.device(), Device::Cpu) {
        return composed::cross_entropy(logits, targets);
    }
    logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy)
}

// ---------------------------------------------------------------- linear

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "grin-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("linear: input {:?} does not fit weight {:?}", l1.dims(), l2.dims());
        }
        let wt = l2.transpose(0, 1)?;
        let out = s1.matmul(s2, (1, rows, n, k), l1, &wt)?;
        Ok((out, Shape::from((rows, n))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Detached operands: the gradients carry no graph, so they do not
        // keep activations or upstream gradients alive.
        let (xd, wd, gd) = (x.detach(), w.detach(), g.detach());
        let gx = if x.track_op() { Some(gd.matmul(&wd)?) } else { None };
        let gw = if w.track_op() { Some(gd.t()?.matmul(&xd)?) } else { None };
        Ok((gx, gw))
    }
}

/// `x · wᵀ` for `x` `[rows, in]` and `w` `[out, in]`. Its backward computes
/// the input's gradient only when the input tracks one and the weight's only
/// when the weight does (candle's matmul computes both, and keeps the
/// gradient's graph). CPU only; elsewhere the composed matmul.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != w.dtype() {
        return composed::linear(x, w);
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

// ---------------------------------------------------------------- composed

/// The same functions composed from candle's differentiable primitives: the
/// fallback for dtypes and devices the fused kernels do not cover, and the
/// reference the fused kernels are tested against.
pub mod composed {
    use candle_core::{DType, Result, Tensor, D};

    fn acc(dtype: DType) -> DType {
        crate::model::accumulation_dtype(dtype)
    }

    /// RMSNorm as `transformers` computes it: normalise in f32 (or f64),
    /// scale in the input's dtype.
    pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(acc(dtype))?;
        let inv = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        xf.broadcast_mul(&inv)?.to_dtype(dtype)?.broadcast_mul(w)
    }

    /// `softmax(scale · x + mask)`, reduced in f32 (or f64).
    pub fn attn_softmax(x: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
        let dtype = x.dtype();
        let mut s = (x.to_dtype(acc(dtype))? * scale)?;
        if let Some(m) = mask {
            s = s.broadcast_add(&m.to_dtype(s.dtype())?)?;
        }
        candle_nn::ops::softmax(&s, D::Minus1)?.to_dtype(dtype)
    }

    /// Rotary embedding of `x` `[b, t, h, d]`, returned as `[b, h, t, d]`.
    pub fn rope_to_heads(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x = x.transpose(1, 2)?.contiguous()?;
        let half = x.dim(D::Minus1)? / 2;
        let cos = Tensor::cat(&[cos, cos], D::Minus1)?.to_dtype(x.dtype())?;
        let sin = Tensor::cat(&[sin, sin], D::Minus1)?.to_dtype(x.dtype())?;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }

    /// `silu(a) · b`.
    pub fn silu_mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.silu()? * b
    }

    /// `−log softmax(logits)[target]` per position, in f32 (or f64).
    pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logp = candle_nn::ops::log_softmax(&logits.to_dtype(acc(logits.dtype()))?, D::Minus1)?;
        let rank = logp.rank();
        logp.gather(&targets.unsqueeze(rank - 1)?, rank - 1)?
            .squeeze(rank - 1)?
            .neg()
    }

    /// `x · wᵀ`.
    pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
        x.matmul(&w.t()?)
    }
}
