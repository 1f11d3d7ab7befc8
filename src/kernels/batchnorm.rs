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
    batch_norm_relu(x, mean, inv_std, gamma, beta, false)
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
    let x = x.contiguous()?;
    let c = *x.dims().last().unwrap_or(&1);
    fn typed<T: Float>(
        x: &Tensor,
        c: usize,
        (mean, inv_std, gamma, beta): (&Tensor, &Tensor, Option<&Tensor>, Option<&Tensor>),
        relu: bool,
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
            if c == 0 || xs.len() % c != 0 {
                candle_core::bail!("batch_norm: {} values are not rows of {c} channels", xs.len());
            }
            let write = |out: &mut [MaybeUninit<T>]| {
                out.par_chunks_mut(ROWS * c).zip(xs.par_chunks(ROWS * c)).for_each(|(o, i)| {
                    let (scale, shift) = (&scale[..c], &shift[..c]);
                    for (orow, irow) in o.chunks_exact_mut(c).zip(i.chunks_exact(c)) {
                        let (orow, irow) = (&mut orow[..c], &irow[..c]);
                        if relu {
                            // What candle's ReLU computes, bit for bit.
                            for j in 0..c {
                                orow[j].write((irow[j] * scale[j] + shift[j]).fmax(T::ZERO));
                            }
                        } else {
                            for j in 0..c {
                                orow[j].write(irow[j] * scale[j] + shift[j]);
                            }
                        }
                    }
                })
            };
            // SAFETY: the rows of c values cover xs, hence the output, and each is written.
            let out = unsafe { super::output_vec(xs.len(), write) };
            Tensor::from_vec(out, x.dims(), x.device())
        })
    }
    match x.dtype() {
        candle_core::DType::F32 => typed::<f32>(&x, c, (mean, inv_std, gamma, beta), relu),
        candle_core::DType::F64 => typed::<f64>(&x, c, (mean, inv_std, gamma, beta), relu),
        d => candle_core::bail!("batch_norm: expected f32 or f64, received {d:?}"),
    }
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
    batch_norm_backward_relu(x, dy, mean, inv_std, gamma, None, batch, need_dx)
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
    if x.dims() != dy.dims() {
        candle_core::bail!("batch_norm_backward: x {:?} and dy {:?} differ", x.dims(), dy.dims());
    }
    let (x, dy) = (x.contiguous()?, dy.contiguous()?);
    let c = *x.dims().last().unwrap_or(&1);
    type Out = (Option<Tensor>, Tensor, Tensor);
    #[allow(clippy::option_option)]
    fn typed<T: Float>(
        x: &Tensor,
        dy: &Tensor,
        c: usize,
        (mean, inv_std, gamma, relu_beta): (&Tensor, &Tensor, Option<&Tensor>, Option<Option<&Tensor>>),
        batch: bool,
        need_dx: bool,
    ) -> candle_core::Result<Out> {
        let (m, s, g) =
            (vec_of::<T>(Some(mean), c, T::ZERO)?, vec_of::<T>(Some(inv_std), c, T::ONE)?, vec_of(gamma, c, T::ONE)?);
        // The forward pass's scale and shift, to recompute the ReLU's input exactly.
        let relu = relu_beta.is_some();
        let b = vec_of(relu_beta.flatten(), c, T::ZERO)?;
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
                // sum(dy) and sum(dy * (x - mean)) in one pass, per block then in f64. Slices cut
                // to `c` let the compiler drop the bounds checks and vectorise.
                let (m_c, sc_c, sh_c) = (&m[..c], &scale[..c], &shift[..c]);
                let blocks: Vec<(Vec<T>, Vec<T>)> = (0..rows.div_ceil(ROWS))
                    .into_par_iter()
                    .map(|blk| {
                        let (mut sd, mut sdx) = (vec![T::ZERO; c], vec![T::ZERO; c]);
                        let (sd_c, sdx_c) = (&mut sd[..c], &mut sdx[..c]);
                        for r in blk * ROWS..((blk + 1) * ROWS).min(rows) {
                            let (xr, dr) = (&xs[r * c..(r + 1) * c][..c], &dys[r * c..(r + 1) * c][..c]);
                            if relu {
                                for j in 0..c {
                                    // Both values loaded, then a select: the loop vectorises.
                                    let (x, d) = (xr[j], dr[j]);
                                    let d = if x * sc_c[j] + sh_c[j] > T::ZERO { d } else { T::ZERO };
                                    sd_c[j] += d;
                                    sdx_c[j] += d * (x - m_c[j]);
                                }
                            } else {
                                for j in 0..c {
                                    let d = dr[j];
                                    sd_c[j] += d;
                                    sdx_c[j] += d * (xr[j] - m_c[j]);
                                }
                            }
                        }
                        (sd, sdx)
                    })
                    .collect();
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
                    let write = |out: &mut [MaybeUninit<T>]| {
                        out.par_chunks_mut(ROWS * c)
                            .zip(xs.par_chunks(ROWS * c))
                            .zip(dys.par_chunks(ROWS * c))
                            .for_each(|((o, xi), di)| {
                                let (m, s, k, a, bb) = (&m[..c], &s[..c], &k[..c], &a[..c], &bb[..c]);
                                for ((orow, xrow), drow) in
                                    o.chunks_exact_mut(c).zip(xi.chunks_exact(c)).zip(di.chunks_exact(c))
                                {
                                    let (orow, xrow, drow) = (&mut orow[..c], &xrow[..c], &drow[..c]);
                                    if relu {
                                        for j in 0..c {
                                            let (x, d) = (xrow[j], drow[j]);
                                            let d = if x * sc_c[j] + sh_c[j] > T::ZERO { d } else { T::ZERO };
                                            let xh = (x - m[j]) * s[j];
                                            orow[j].write(k[j] * (d - a[j] - xh * bb[j]));
                                        }
                                    } else {
                                        for j in 0..c {
                                            let xh = (xrow[j] - m[j]) * s[j];
                                            orow[j].write(k[j] * (drow[j] - a[j] - xh * bb[j]));
                                        }
                                    }
                                }
                            })
                    };
                    // SAFETY: c is x's last dimension (not 0, checked above), so the rows of
                    // c values cover xs, hence the output, and each row is written.
                    unsafe { super::output_vec(xs.len(), write) }
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
        candle_core::DType::F32 => typed::<f32>(&x, &dy, c, (mean, inv_std, gamma, relu_beta), batch, need_dx),
        candle_core::DType::F64 => typed::<f64>(&x, &dy, c, (mean, inv_std, gamma, relu_beta), batch, need_dx),
        d => candle_core::bail!("batch_norm_backward: expected f32 or f64, received {d:?}"),
    }
}
