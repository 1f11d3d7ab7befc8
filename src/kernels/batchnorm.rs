//! Batch normalisation over channels-last data seen as `(M, C)` rows, forward and backward, in
//! a few passes over memory (candle's broadcast ops take one pass per operation).
//!
//! Per-channel sums are taken over fixed blocks of rows and the blocks' partial sums added in
//! order, so results do not depend on the number of threads. Sums are accumulated in f64.

use super::Float;
use candle_core::{Tensor, WithDType};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows per block of the parallel passes.
const ROWS: usize = 512;

/// The activation a batch normalisation's kernels end with (a `BatchNormalization` followed by
/// an activation layer, run in the same passes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BnActivation {
    /// `min(max(y, 0), max)`: ReLU (`max` infinite) or ReLU6 (`max` 6). The gradient passes
    /// where `0 < y < max` (TensorFlow's `ReluGrad`, `Relu6Grad`).
    Relu(f64),
    /// `y * sigmoid(y)` (Keras' `silu` / `swish`, EfficientNet's).
    Silu,
}

impl BnActivation {
    fn max(self) -> f64 {
        match self {
            BnActivation::Relu(m) => m,
            BnActivation::Silu => f64::INFINITY,
        }
    }
}

/// `p * sigmoid(p)`.
#[inline(always)]
fn silu<T: Float>(p: T) -> T {
    p / (T::ONE + (T::ZERO - p).exp())
}

/// `d` times the derivative of SiLU at `p`: `s (1 + p (1 - s))`, `s = sigmoid(p)`.
#[inline(always)]
fn silu_grad<T: Float>(p: T, d: T) -> T {
    let s = T::ONE / (T::ONE + (T::ZERO - p).exp());
    d * s * (T::ONE + p * (T::ONE - s))
}

fn slice<T: WithDType>(
    t: &Tensor,
    op: &str,
    f: impl FnOnce(&[T]) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let (s, l) = t.storage_and_layout();
    f(super::cpu_slice(&s, l, op)?)
}

/// The batch's per-channel mean and biased variance of `x` (`(..., C)`, contiguous), as
/// tensors of shape `(C,)` of `x`'s dtype.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[1f32, 10.], [3., 30.]], &Device::Cpu)?;
/// let (mean, var) = kandle::kernels::batch_moments(&x)?;
/// assert_eq!(mean.to_vec1::<f32>()?, vec![2., 20.]);
/// assert_eq!(var.to_vec1::<f32>()?, vec![1., 100.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// Another dtype than f32 or f64, another device than the CPU.
pub fn batch_moments(x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let x = x.contiguous()?;
    let c = *x.dims().last().unwrap_or(&1);
    match x.dtype() {
        candle_core::DType::F32 => moments_typed::<f32>(&x, c),
        candle_core::DType::F64 => moments_typed::<f64>(&x, c),
        d => candle_core::bail!("batch_moments: expected f32 or f64, received {d:?}"),
    }
}

fn moments_typed<T: Float>(x: &Tensor, c: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let dev = x.device().clone();
    let mut var_out = None;
    let mean = slice::<T>(x, "batch_moments", |xs| {
        let rows = xs.len() / c.max(1);
        // One pass over memory: each block of ROWS rows (in cache) gives its count, mean and
        // sum of squared deviations, two passes over the block; the blocks combine in f64 by
        // Chan's formula, as exact as two passes over the whole tensor.
        let blocks: Vec<(f64, Vec<f64>, Vec<f64>)> = (0..rows.div_ceil(ROWS))
            .into_par_iter()
            .map(|blk| {
                let (r0, r1) = (blk * ROWS, ((blk + 1) * ROWS).min(rows));
                let mut sum = vec![T::ZERO; c];
                for r in r0..r1 {
                    for (a, &v) in sum.iter_mut().zip(&xs[r * c..(r + 1) * c]) {
                        *a += v;
                    }
                }
                let k = (r1 - r0) as f64;
                let mean: Vec<f64> = sum.iter().map(|s| s.to_f64() / k).collect();
                let mean_t: Vec<T> = mean.iter().map(|&m| T::from_f64(m)).collect();
                let mut m2 = vec![T::ZERO; c];
                for r in r0..r1 {
                    for ((a, &v), &m) in m2.iter_mut().zip(&xs[r * c..(r + 1) * c]).zip(&mean_t) {
                        let d = v - m;
                        *a += d * d;
                    }
                }
                (k, mean, m2.iter().map(|v| v.to_f64()).collect())
            })
            .collect();
        let (mut n, mut mean, mut m2) = (0f64, vec![0f64; c], vec![0f64; c]);
        for (k, bm, bm2) in blocks {
            let total = n + k;
            for j in 0..c {
                let delta = bm[j] - mean[j];
                mean[j] += delta * k / total;
                m2[j] += bm2[j] + delta * delta * n * k / total;
            }
            n = total;
        }
        let n = n.max(1.0);
        var_out = Some(Tensor::from_vec(m2.iter().map(|&v| T::from_f64(v / n)).collect::<Vec<T>>(), c, &dev)?);
        Tensor::from_vec(mean.into_iter().map(T::from_f64).collect::<Vec<T>>(), c, &dev)
    })?;
    Ok((mean, var_out.expect("computed with the mean")))
}

fn vec_of<T: WithDType>(t: Option<&Tensor>, c: usize, default: T) -> candle_core::Result<Vec<T>> {
    match t {
        Some(t) => t.to_dtype(T::DTYPE)?.to_vec1::<T>(),
        None => Ok(vec![default; c]),
    }
}

/// `gamma * (x - mean) * inv_std + beta` per channel, in one pass (`gamma` 1 and `beta` 0 when
/// absent).
///
/// # Errors
/// Another dtype than f32 or f64, another device than the CPU, channel vectors of another size.
pub fn batch_norm(
    x: &Tensor,
    mean: &Tensor,
    inv_std: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    batch_norm_act(x, mean, inv_std, gamma, beta, None)
}

/// [`batch_norm`], then `max(y, 0)` when `relu`, in the same pass (a `BatchNormalization`
/// followed by a ReLU activation layer).
///
/// # Errors
/// As [`batch_norm`].
pub fn batch_norm_relu(
    x: &Tensor,
    mean: &Tensor,
    inv_std: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    relu: bool,
) -> candle_core::Result<Tensor> {
    batch_norm_act(x, mean, inv_std, gamma, beta, relu.then_some(BnActivation::Relu(f64::INFINITY)))
}

/// [`batch_norm`], then the activation `act` in the same pass: a `BatchNormalization` followed
/// by a ReLU, a ReLU6 (MobileNet's) or a SiLU (EfficientNet's swish).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kandle::kernels::BnActivation;
/// let x = Tensor::new(&[[-1f32], [3.], [9.]], &Device::Cpu)?;
/// let (mean, inv_std) = (Tensor::new(&[0f32], &Device::Cpu)?, Tensor::new(&[1f32], &Device::Cpu)?);
/// let y = kandle::kernels::batch_norm_act(&x, &mean, &inv_std, None, None, Some(BnActivation::Relu(6.0)))?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![0., 3., 6.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// As [`batch_norm`].
pub fn batch_norm_act(
    x: &Tensor,
    mean: &Tensor,
    inv_std: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    act: Option<BnActivation>,
) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let c = *x.dims().last().unwrap_or(&1);
    fn typed<T: Float>(
        x: &Tensor,
        c: usize,
        (mean, inv_std, gamma, beta): (&Tensor, &Tensor, Option<&Tensor>, Option<&Tensor>),
        act: Option<BnActivation>,
    ) -> candle_core::Result<Tensor> {
        // y = x * scale + shift, scale = gamma * inv_std, shift = beta - mean * scale.
        let (m, s, g, b) = (
            vec_of::<T>(Some(mean), c, T::ZERO)?,
            vec_of::<T>(Some(inv_std), c, T::ONE)?,
            vec_of(gamma, c, T::ONE)?,
            vec_of(beta, c, T::ZERO)?,
        );
        if [m.len(), s.len(), g.len(), b.len()].iter().any(|&n| n != c) {
            candle_core::bail!("batch_norm: channel vectors must have {c} values");
        }
        let scale: Vec<T> = (0..c).map(|j| g[j] * s[j]).collect();
        let shift: Vec<T> = (0..c).map(|j| T::from_f64(b[j].to_f64() - m[j].to_f64() * scale[j].to_f64())).collect();
        slice::<T>(x, "batch_norm", |xs| {
            if c == 0 || !xs.len().is_multiple_of(c) {
                candle_core::bail!("batch_norm: {} values are not rows of {c} channels", xs.len());
            }
            let out = affine_rows(xs, &scale, &shift, act);
            Tensor::from_vec(out, x.dims(), x.device())
        })
    }
    match x.dtype() {
        candle_core::DType::F32 => typed::<f32>(&x, c, (mean, inv_std, gamma, beta), act),
        candle_core::DType::F64 => typed::<f64>(&x, c, (mean, inv_std, gamma, beta), act),
        d => candle_core::bail!("batch_norm: expected f32 or f64, received {d:?}"),
    }
}

/// `act(x * scale + shift)` over rows of `scale.len()` channels, rows in parallel.
fn affine_rows<T: Float>(xs: &[T], scale: &[T], shift: &[T], act: Option<BnActivation>) -> Vec<T> {
    match act {
        None => affine_rows_with(xs, scale, shift, |p| p),
        // What candle's ReLU computes, bit for bit (min with an infinite max changes nothing).
        Some(BnActivation::Relu(max)) => {
            let max = T::from_f64(max);
            affine_rows_with(xs, scale, shift, move |p: T| p.fmax(T::ZERO).fmin(max))
        }
        Some(BnActivation::Silu) => affine_rows_with(xs, scale, shift, silu),
    }
}

/// [`affine_rows`] with the activation `f` (each its own loop, which the compiler vectorises).
fn affine_rows_with<T: Float>(xs: &[T], scale: &[T], shift: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let c = scale.len();
    let write = |out: &mut [MaybeUninit<T>]| {
        out.par_chunks_mut(ROWS * c).zip(xs.par_chunks(ROWS * c)).for_each(|(o, i)| {
            let (scale, shift) = (&scale[..c], &shift[..c]);
            for (orow, irow) in o.chunks_exact_mut(c).zip(i.chunks_exact(c)) {
                let (orow, irow) = (&mut orow[..c], &irow[..c]);
                for j in 0..c {
                    orow[j].write(f(irow[j] * scale[j] + shift[j]));
                }
            }
        })
    };
    // SAFETY: the rows of c values cover xs (the callers check that c divides its length), hence
    // the output, and each is written.
    unsafe { super::output_vec(xs.len(), write) }
}

/// Per block of rows, `sum(g)` and `sum(g * (x - mean))` per channel, `g` the gradient at the
/// normalisation's output: `grad(pre-activation, dy)`. With `g_out`, `g` is also written there.
#[allow(clippy::too_many_arguments)]
fn channel_sums<T: Float>(
    xs: &[T],
    dys: &[T],
    (m, sc, sh): (&[T], &[T], &[T]),
    g_out: Option<&mut [T]>,
    grad: impl Fn(T, T) -> T + Sync,
) -> Vec<(Vec<T>, Vec<T>)> {
    let c = m.len();
    let rows = xs.len() / c;
    let block = |blk: usize, mut g_out: Option<&mut [T]>| {
        let (mut sd, mut sdx) = (vec![T::ZERO; c], vec![T::ZERO; c]);
        let (sd_c, sdx_c) = (&mut sd[..c], &mut sdx[..c]);
        let (m_c, sc_c, sh_c) = (&m[..c], &sc[..c], &sh[..c]);
        let r0 = blk * ROWS;
        for r in r0..((blk + 1) * ROWS).min(rows) {
            let (xr, dr) = (&xs[r * c..(r + 1) * c][..c], &dys[r * c..(r + 1) * c][..c]);
            match g_out.as_deref_mut() {
                Some(go) => {
                    let gr = &mut go[(r - r0) * c..(r - r0 + 1) * c][..c];
                    for j in 0..c {
                        let x = xr[j];
                        let d = grad(x * sc_c[j] + sh_c[j], dr[j]);
                        gr[j] = d;
                        sd_c[j] += d;
                        sdx_c[j] += d * (x - m_c[j]);
                    }
                }
                None => {
                    for j in 0..c {
                        // Both values loaded, then the derivative: the loop vectorises.
                        let x = xr[j];
                        let d = grad(x * sc_c[j] + sh_c[j], dr[j]);
                        sd_c[j] += d;
                        sdx_c[j] += d * (x - m_c[j]);
                    }
                }
            }
        }
        (sd, sdx)
    };
    match g_out {
        Some(g) => g.par_chunks_mut(ROWS * c).enumerate().map(|(blk, go)| block(blk, Some(go))).collect(),
        None => (0..rows.div_ceil(ROWS)).into_par_iter().map(|blk| block(blk, None)).collect(),
    }
}

/// Five per-channel vectors: the mean, `inv_std`, `gamma inv_std`, and the batch terms.
type Channels5<'a, T> = (&'a [T], &'a [T], &'a [T], &'a [T], &'a [T]);

/// The input gradient `k (g - a - x_hat b)` per channel, `g = grad(pre-activation, dy)`.
fn input_grad<T: Float>(
    xs: &[T],
    dys: &[T],
    (m, s, k, a, bb): Channels5<'_, T>,
    (sc, sh): (&[T], &[T]),
    grad: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let c = m.len();
    let write = |out: &mut [MaybeUninit<T>]| {
        out.par_chunks_mut(ROWS * c).zip(xs.par_chunks(ROWS * c)).zip(dys.par_chunks(ROWS * c)).for_each(
            |((o, xi), di)| {
                let (m, s, k, a, bb, sc, sh) = (&m[..c], &s[..c], &k[..c], &a[..c], &bb[..c], &sc[..c], &sh[..c]);
                for ((orow, xrow), drow) in o.chunks_exact_mut(c).zip(xi.chunks_exact(c)).zip(di.chunks_exact(c)) {
                    let (orow, xrow, drow) = (&mut orow[..c], &xrow[..c], &drow[..c]);
                    for j in 0..c {
                        let x = xrow[j];
                        let d = grad(x * sc[j] + sh[j], drow[j]);
                        let xh = (x - m[j]) * s[j];
                        orow[j].write(k[j] * (d - a[j] - xh * bb[j]));
                    }
                }
            },
        )
    };
    // SAFETY: c divides xs' length (x's last dimension, not 0), so the rows of c values cover
    // the output, and each row is written.
    unsafe { super::output_vec(xs.len(), write) }
}

/// The gradients of [`batch_norm`] for the output gradient `dy`: of the input (when
/// `need_dx`; through the batch statistics too when `batch`, i.e. when `mean` and `inv_std`
/// were the batch's own), and the per-channel sums `sum(dy)` (beta's gradient) and
/// `sum(dy * x_hat)` (gamma's), with `x_hat = (x - mean) * inv_std`.
///
/// # Errors
/// As [`batch_norm`], or `dy` of another shape than `x`.
pub fn batch_norm_backward(
    x: &Tensor,
    dy: &Tensor,
    mean: &Tensor,
    inv_std: &Tensor,
    gamma: Option<&Tensor>,
    batch: bool,
    need_dx: bool,
) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
    batch_norm_backward_act(x, dy, mean, inv_std, gamma, None, batch, need_dx)
}

/// [`batch_norm_backward`] of a batch normalisation followed by a ReLU
/// ([`batch_norm_relu`]) when `relu_beta` is given (`Some(beta)`, `Some(None)` without a
/// beta): the ReLU's mask comes from the pre-activation, recomputed bit for bit as the forward
/// pass computed it. One pass for both channel sums, one for the input gradient.
///
/// # Errors
/// As [`batch_norm_backward`].
#[allow(clippy::too_many_arguments, clippy::option_option)]
pub fn batch_norm_backward_relu(
    x: &Tensor,
    dy: &Tensor,
    mean: &Tensor,
    inv_std: &Tensor,
    gamma: Option<&Tensor>,
    relu_beta: Option<Option<&Tensor>>,
    batch: bool,
    need_dx: bool,
) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
    let act = relu_beta.map(|beta| (beta, BnActivation::Relu(f64::INFINITY)));
    batch_norm_backward_act(x, dy, mean, inv_std, gamma, act, batch, need_dx)
}

/// [`batch_norm_backward`] of [`batch_norm_act`] when `act` is `Some((beta, activation))`:
/// the activation's derivative at the pre-activation, recomputed as the forward pass computed
/// it, multiplies `dy` first.
///
/// # Errors
/// As [`batch_norm_backward`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_act(
    x: &Tensor,
    dy: &Tensor,
    mean: &Tensor,
    inv_std: &Tensor,
    gamma: Option<&Tensor>,
    act: Option<(Option<&Tensor>, BnActivation)>,
    batch: bool,
    need_dx: bool,
) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
    if x.dims() != dy.dims() {
        candle_core::bail!("batch_norm_backward: x {:?} and dy {:?} differ", x.dims(), dy.dims());
    }
    let (x, dy) = (x.contiguous()?, dy.contiguous()?);
    let c = *x.dims().last().unwrap_or(&1);
    type Out = (Option<Tensor>, Tensor, Tensor);
    type Args<'a> = (&'a Tensor, &'a Tensor, Option<&'a Tensor>, Option<(Option<&'a Tensor>, BnActivation)>);
    fn typed<T: Float>(
        x: &Tensor,
        dy: &Tensor,
        c: usize,
        (mean, inv_std, gamma, act): Args<'_>,
        batch: bool,
        need_dx: bool,
    ) -> candle_core::Result<Out> {
        let (m, s, g) =
            (vec_of::<T>(Some(mean), c, T::ZERO)?, vec_of::<T>(Some(inv_std), c, T::ONE)?, vec_of(gamma, c, T::ONE)?);
        // The forward pass's scale and shift, to recompute the activation's input exactly.
        let b = vec_of(act.and_then(|(beta, _)| beta), c, T::ZERO)?;
        let max = T::from_f64(act.map_or(f64::INFINITY, |(_, a)| a.max()));
        let act = act.map(|(_, a)| a);
        let scale: Vec<T> = (0..c).map(|j| g[j] * s[j]).collect();
        let shift: Vec<T> = (0..c).map(|j| T::from_f64(b[j].to_f64() - m[j].to_f64() * scale[j].to_f64())).collect();
        let dev = x.device().clone();
        let mut result = None;
        slice::<T>(x, "batch_norm_backward", |xs| {
            slice::<T>(dy, "batch_norm_backward", |dys| {
                if c == 0 {
                    candle_core::bail!("batch_norm_backward: x has no channels");
                }
                let rows = xs.len() / c;
                let (msh, relu) = ((&m[..], &scale[..], &shift[..]), |max: T| {
                    move |p: T, d: T| if (p > T::ZERO) & (p < max) { d } else { T::ZERO }
                });
                // SiLU's derivative (an exp) is taken once: the first pass keeps the gradient
                // at the normalisation's output for the second.
                let mut g_buf = matches!(act, Some(BnActivation::Silu)).then(|| vec![T::ZERO; xs.len()]);
                let blocks = match act {
                    None => channel_sums(xs, dys, msh, None, |_, d| d),
                    Some(BnActivation::Relu(_)) => channel_sums(xs, dys, msh, None, relu(max)),
                    Some(BnActivation::Silu) => channel_sums(xs, dys, msh, g_buf.as_deref_mut(), silu_grad),
                };
                let (mut sum_dy, mut sum_dy_xc) = (vec![0f64; c], vec![0f64; c]);
                for (sd, sdx) in blocks {
                    for j in 0..c {
                        sum_dy[j] += sd[j].to_f64();
                        sum_dy_xc[j] += sdx[j].to_f64();
                    }
                }
                let sum_dy_xhat: Vec<f64> = sum_dy_xc.iter().zip(&s).map(|(v, sj)| v * sj.to_f64()).collect();
                let dx = need_dx.then(|| {
                    let n = rows.max(1) as f64;
                    let k: Vec<T> = (0..c).map(|j| g[j] * s[j]).collect();
                    let (a, bb): (Vec<T>, Vec<T>) = (0..c)
                        .map(|j| {
                            if batch {
                                (T::from_f64(sum_dy[j] / n), T::from_f64(sum_dy_xhat[j] / n))
                            } else {
                                (T::ZERO, T::ZERO)
                            }
                        })
                        .unzip();
                    let consts = (&m[..], &s[..], &k[..], &a[..], &bb[..]);
                    let pre = (&scale[..], &shift[..]);
                    match (act, &g_buf) {
                        (Some(BnActivation::Silu), Some(gs)) => input_grad(xs, gs, consts, pre, |_, d| d),
                        (Some(_), _) => input_grad(xs, dys, consts, pre, relu(max)),
                        (None, _) => input_grad(xs, dys, consts, pre, |_, d| d),
                    }
                });
                let cast = |v: Vec<f64>| Tensor::from_vec(v.into_iter().map(T::from_f64).collect::<Vec<T>>(), c, &dev);
                let dx = dx.map(|v| Tensor::from_vec(v, x.dims(), &dev)).transpose()?;
                result = Some((dx, cast(sum_dy)?, cast(sum_dy_xhat)?));
                Tensor::zeros(0, T::DTYPE, &dev)
            })
        })?;
        Ok(result.expect("computed"))
    }
    match x.dtype() {
        candle_core::DType::F32 => typed::<f32>(&x, &dy, c, (mean, inv_std, gamma, act), batch, need_dx),
        candle_core::DType::F64 => typed::<f64>(&x, &dy, c, (mean, inv_std, gamma, act), batch, need_dx),
        d => candle_core::bail!("batch_norm_backward: expected f32 or f64, received {d:?}"),
    }
}

/// `act(x * scale + shift)` per channel (the last axis): a batch normalisation by fixed
/// statistics (inference, or a frozen layer) folded into a scale and a shift, with the
/// activation that follows it, in one parallel pass on the CPU. A candle operation whose
/// gradient (to `x`, `scale` and `shift`) candle's autograd takes.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kandle::kernels::BnActivation;
/// let x = Tensor::new(&[[1f32, -1.], [2., 5.]], &Device::Cpu)?;
/// let (scale, shift) = (Tensor::new(&[2f32, 3.], &Device::Cpu)?, Tensor::new(&[0f32, 1.], &Device::Cpu)?);
/// let y = kandle::kernels::channel_affine(&x, &scale, &shift, Some(BnActivation::Relu(6.0)))?;
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![2., 0.], vec![4., 6.]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// Another dtype than f32 or f64, another device than the CPU, `scale` or `shift` not of the
/// channels' length.
pub fn channel_affine(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    act: Option<BnActivation>,
) -> candle_core::Result<Tensor> {
    let c = *x.dims().last().unwrap_or(&1);
    if scale.dims() != [c] || shift.dims() != [c] {
        candle_core::bail!("channel_affine: scale {:?} and shift {:?} must be ({c},)", scale.dims(), shift.dims());
    }
    x.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, ChannelAffine { act })
}

/// [`channel_affine`]'s operation.
#[derive(Clone, Copy)]
struct ChannelAffine {
    act: Option<BnActivation>,
}

impl ChannelAffine {
    fn run<T: Float>(&self, xs: &[T], sc: &[T], sh: &[T]) -> candle_core::Result<Vec<T>> {
        let c = sc.len();
        if c == 0 || sh.len() != c || !xs.len().is_multiple_of(c) {
            candle_core::bail!("channel_affine: {} values are not rows of {c} channels", xs.len());
        }
        Ok(affine_rows(xs, sc, sh, self.act))
    }
}

impl candle_core::CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "kandle-channel-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use super::contiguous as slice_of;
        use candle_core::CpuStorage as S;
        let out = match (s1, s2, s3) {
            (S::F32(x), S::F32(a), S::F32(b)) => S::F32(self.run(
                slice_of(x, l1, "channel_affine")?,
                slice_of(a, l2, "channel_affine")?,
                slice_of(b, l3, "channel_affine")?,
            )?),
            (S::F64(x), S::F64(a), S::F64(b)) => S::F64(self.run(
                slice_of(x, l1, "channel_affine")?,
                slice_of(a, l2, "channel_affine")?,
                slice_of(b, l3, "channel_affine")?,
            )?),
            _ => candle_core::bail!("channel_affine: expected f32 or f64 tensors of one dtype"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = scale.dims1()?;
        let g = match self.act {
            None => dy.clone(),
            Some(BnActivation::Relu(max)) => (dy * (y.gt(0.0)? * y.lt(max)?)?.to_dtype(dy.dtype())?)?,
            Some(BnActivation::Silu) => {
                // d/dp p sigmoid(p) = s (1 + p (1 - s)), p the pre-activation.
                let p = x.broadcast_mul(scale)?.broadcast_add(shift)?;
                let s = candle_nn::ops::sigmoid(&p)?;
                (dy * (&s * (p * s.affine(-1.0, 1.0)?)?.affine(1.0, 1.0)?)?)?
            }
        };
        let dx = g.broadcast_mul(scale)?;
        let (g2, x2) = (g.reshape(((), c))?, x.reshape(((), c))?);
        Ok((Some(dx), Some((&g2 * &x2)?.sum(0)?), Some(g2.sum(0)?)))
    }
}
