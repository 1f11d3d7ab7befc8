//! Max and average pooling in NHWC.
//!
//! Windows are clipped to the image: padding never wins a max and is not counted in an average
//! (TensorFlow's 'same' semantics). The max backward sends each output gradient to the first
//! maximum of its window in row-major order, as TensorFlow does, and is correct for odd sizes
//! (candle 0.11's is not).

use super::{contiguous, dispatch1, Float};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Max or average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The window's largest value.
    Max,
    /// The mean of the window's values inside the image.
    Avg,
}

/// Window, strides and implicit padding of a pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    /// Window `(rows, cols)`.
    pub pool: (usize, usize),
    /// `(rows, cols)` strides.
    pub stride: (usize, usize),
    /// Padding `(top, bottom, left, right)`, never part of a result.
    pub padding: (usize, usize, usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    p: PoolParams,
}

impl Geom {
    fn new(x: &[usize], p: PoolParams) -> candle_core::Result<Self> {
        let (pt, pb, pl, pr) = p.padding;
        if x.len() != 4 || x[1] + pt + pb < p.pool.0 || x[2] + pl + pr < p.pool.1 || p.stride.0 == 0 || p.stride.1 == 0
        {
            candle_core::bail!("pool2d: window {p:?} does not fit input {x:?}");
        }
        Ok(Geom {
            n: x[0],
            h: x[1],
            w: x[2],
            c: x[3],
            oh: (x[1] + pt + pb - p.pool.0) / p.stride.0 + 1,
            ow: (x[2] + pl + pr - p.pool.1) / p.stride.1 + 1,
            p,
        })
    }

    /// The input rows and columns of output pixel `(r, q)`, clipped to the image.
    fn window(&self, r: usize, q: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (pt, _, pl, _) = self.p.padding;
        let r0 = (r * self.p.stride.0) as isize - pt as isize;
        let q0 = (q * self.p.stride.1) as isize - pl as isize;
        let clip = |a: isize, len: usize, max: usize| {
            (a.max(0) as usize).min(max)..((a + len as isize).max(0) as usize).min(max)
        };
        (clip(r0, self.p.pool.0, self.h), clip(q0, self.p.pool.1, self.w))
    }
}

fn forward<T: Float>(g: &Geom, kind: PoolKind, x: &[T]) -> Vec<T> {
    let (img_in, img_out) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    let write = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(img_out.max(1)).enumerate().for_each(|(n, yn)| {
            let xn = &x[n * img_in..(n + 1) * img_in];
            with_avx512!(forward_image(g: &Geom, kind: PoolKind, xn: &[T], yn: &mut [MaybeUninit<T>]))
        })
    };
    // SAFETY: forward_image fills each window's output before it accumulates into it, and the
    // windows cover the image's output.
    unsafe { super::output_vec(g.n * img_out, write) }
}

/// One image of [`forward`].
#[inline(always)]
fn forward_image<T: Float>(g: &Geom, kind: PoolKind, xn: &[T], yn: &mut [MaybeUninit<T>]) {
    for r in 0..g.oh {
        for q in 0..g.ow {
            let (rows, cols) = g.window(r, q);
            let out = &mut yn[(r * g.ow + q) * g.c..(r * g.ow + q + 1) * g.c];
            let out = match kind {
                PoolKind::Max => super::fill_uninit(out, T::NEG_INF),
                PoolKind::Avg => super::fill_uninit(out, T::ZERO),
            };
            let count = rows.len() * cols.len();
            for i in rows {
                for j in cols.clone() {
                    let src = &xn[(i * g.w + j) * g.c..(i * g.w + j + 1) * g.c];
                    match kind {
                        // A select, not a branch, so that the loop vectorises; NaN wins.
                        PoolKind::Max => out.iter_mut().zip(src).for_each(|(o, &v)| {
                            *o = if v > *o || v.is_nan() { v } else { *o };
                        }),
                        PoolKind::Avg => out.iter_mut().zip(src).for_each(|(o, &v)| *o += v),
                    }
                }
            }
            if kind == PoolKind::Avg {
                let inv = T::ONE / T::from_usize(count.max(1));
                out.iter_mut().for_each(|o| *o *= inv);
            }
        }
    }
}

/// Sends each output gradient to the first input of its window (row-major) equal to the
/// window's maximum `y`: branch-free, so that the channel loop vectorises. `open[ch]` is 1
/// until channel `ch` of the window has found its maximum.
fn max_backward<T: Float>(g: &Geom, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
    let (img_in, img_out) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    // Zeroed image by image on the worker threads (a single-threaded memset of the whole
    // batch first would be a wasted pass).
    let write = |dx: &mut [MaybeUninit<T>]| {
        dx.par_chunks_mut(img_in.max(1)).enumerate().for_each_init(
            || vec![T::ONE; g.c],
            |open, (n, dxn)| {
                let (xn, yn, dyn_) = (
                    &x[n * img_in..(n + 1) * img_in],
                    &y[n * img_out..(n + 1) * img_out],
                    &dy[n * img_out..(n + 1) * img_out],
                );
                let dxn = super::fill_uninit(dxn, T::ZERO);
                with_avx512!(max_backward_image(g: &Geom, xn: &[T], yn: &[T], dyn_: &[T], dxn: &mut [T], open: &mut [T]))
            },
        )
    };
    // SAFETY: each image's chunk is zeroed (fill_uninit) before anything accumulates into it.
    unsafe { super::output_vec(g.n * img_in, write) }
}

/// One image of [`max_backward`]; zips, not indices, so that the channel loop vectorises.
#[inline(always)]
fn max_backward_image<T: Float>(g: &Geom, xn: &[T], yn: &[T], dyn_: &[T], dxn: &mut [T], open: &mut [T]) {
    for r in 0..g.oh {
        for q in 0..g.ow {
            let (rows, cols) = g.window(r, q);
            let o = (r * g.ow + q) * g.c;
            let (ym, d) = (&yn[o..o + g.c], &dyn_[o..o + g.c]);
            open.fill(T::ONE);
            for i in rows {
                for j in cols.clone() {
                    let base = (i * g.w + j) * g.c;
                    let (xs, dxs) = (&xn[base..base + g.c], &mut dxn[base..base + g.c]);
                    for ((dx, &xv), ((&m, &dv), o)) in dxs.iter_mut().zip(xs).zip(ym.iter().zip(d).zip(open.iter_mut()))
                    {
                        let hit = if xv == m { *o } else { T::ZERO };
                        *dx += hit * dv;
                        *o -= hit;
                    }
                }
            }
        }
    }
}

fn avg_backward<T: Float>(g: &Geom, dy: &[T]) -> Vec<T> {
    let (img_in, img_out) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    let write = |dx: &mut [MaybeUninit<T>]| {
        dx.par_chunks_mut(img_in.max(1)).enumerate().for_each(|(n, dxn)| {
            let dxn = super::fill_uninit(dxn, T::ZERO); // zeroed on the worker threads, then accumulated
            let dyn_ = &dy[n * img_out..(n + 1) * img_out];
            for r in 0..g.oh {
                for q in 0..g.ow {
                    let (rows, cols) = g.window(r, q);
                    let inv = T::ONE / T::from_usize((rows.len() * cols.len()).max(1));
                    let d = &dyn_[(r * g.ow + q) * g.c..(r * g.ow + q + 1) * g.c];
                    for i in rows {
                        for j in cols.clone() {
                            let base = (i * g.w + j) * g.c;
                            dxn[base..base + g.c].iter_mut().zip(d).for_each(|(o, &v)| *o += v * inv);
                        }
                    }
                }
            }
        })
    };
    // SAFETY: each image's chunk is zeroed (fill_uninit) before anything accumulates into it.
    unsafe { super::output_vec(g.n * img_in, write) }
}

struct PoolOp(PoolKind, PoolParams);
struct MaxPoolGrad(PoolParams);
struct AvgPoolGrad(PoolParams, Vec<usize>);

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "kandle-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::new(l.dims(), self.1)?;
        let out = dispatch1!(self.name(), s, |x| forward(&g, self.0, contiguous(x, l, "pool2d")?));
        Ok((out, Shape::from((g.n, g.oh, g.ow, g.c))))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        Ok(Some(match self.0 {
            PoolKind::Max => x.apply_op3_no_bwd(res, &dy, &MaxPoolGrad(self.1))?,
            PoolKind::Avg => dy.apply_op1_no_bwd(&AvgPoolGrad(self.1, x.dims().to_vec()))?,
        }))
    }
}

impl CustomOp3 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "kandle-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), self.0)?;
        let out_dims = [g.n, g.oh, g.ow, g.c];
        if l2.dims() != out_dims || l3.dims() != out_dims {
            candle_core::bail!("max_pool2d grad: unexpected output shapes {:?} and {:?}", l2.dims(), l3.dims());
        }
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(y), CpuStorage::F32(dy)) => CpuStorage::F32(max_backward(
                &g,
                contiguous(x, l1, "max_pool2d")?,
                contiguous(y, l2, "max_pool2d")?,
                contiguous(dy, l3, "max_pool2d")?,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(y), CpuStorage::F64(dy)) => CpuStorage::F64(max_backward(
                &g,
                contiguous(x, l1, "max_pool2d")?,
                contiguous(y, l2, "max_pool2d")?,
                contiguous(dy, l3, "max_pool2d")?,
            )),
            _ => candle_core::bail!("max_pool2d grad: expected f32 or f64 tensors of one type"),
        };
        Ok((out, l1.shape().clone()))
    }
}

impl CustomOp1 for AvgPoolGrad {
    fn name(&self) -> &'static str {
        "kandle-avg-pool2d-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::new(&self.1, self.0)?;
        if l.dims() != [g.n, g.oh, g.ow, g.c] {
            candle_core::bail!("avg_pool2d grad: unexpected output gradient shape {:?}", l.dims());
        }
        let out = dispatch1!(self.name(), s, |dy| avg_backward(&g, contiguous(dy, l, "avg_pool2d")?));
        Ok((out, Shape::from(self.1.clone())))
    }
}

/// Max or average pooling of an NHWC tensor, differentiable.
///
/// On the CPU this runs kandle's kernels; on other devices it forwards to candle's pooling,
/// which supports no padding there.
///
/// ```
/// use kandle::kernels::{pool2d, PoolKind, PoolParams};
/// use candle_core::{Device, Tensor};
/// let x = Tensor::arange(0f32, 9., &Device::Cpu)?.reshape((1, 3, 3, 1))?;
/// // 'same' on an odd size: the last window is partial and padding never wins.
/// let p = PoolParams { pool: (2, 2), stride: (2, 2), padding: (0, 1, 0, 1) };
/// let y = pool2d(&x, PoolKind::Max, p)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![4., 5., 7., 8.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn pool2d(x: &Tensor, kind: PoolKind, p: PoolParams) -> candle_core::Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op1(PoolOp(kind, p)),
        _ => {
            if p.padding != (0, 0, 0, 0) {
                candle_core::bail!("pool2d: padding 'same' with a partial window is only supported on the CPU");
            }
            let xc = x.permute((0, 3, 1, 2))?;
            let y = match kind {
                PoolKind::Max => xc.max_pool2d_with_stride(p.pool, p.stride)?,
                PoolKind::Avg => xc.avg_pool2d_with_stride(p.pool, p.stride)?,
            };
            y.permute((0, 2, 3, 1))?.contiguous()
        }
    }
}

/// The gradient of [`pool2d`] at `x` with output `y`, for the output gradient `dy` (CPU only),
/// for layers that compute their own backward pass.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kandle::kernels::{pool2d, pool2d_backward, PoolKind, PoolParams};
/// let x = Tensor::new(&[1f32, 3., 2., 3.], &Device::Cpu)?.reshape((1, 2, 2, 1))?;
/// let p = PoolParams { pool: (2, 2), stride: (2, 2), padding: (0, 0, 0, 0) };
/// let y = pool2d(&x, PoolKind::Max, p)?;
/// let dx = pool2d_backward(&x, &y, &y.ones_like()?, PoolKind::Max, p)?;
/// // The gradient goes to the first maximum only.
/// assert_eq!(dx.flatten_all()?.to_vec1::<f32>()?, vec![0., 1., 0., 0.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// Shapes that do not fit, another device than the CPU.
pub fn pool2d_backward(
    x: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    kind: PoolKind,
    p: PoolParams,
) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        candle_core::bail!("pool2d_backward: kandle's own backward pass runs on the CPU");
    }
    PoolOp(kind, p).bwd(x, y, dy)?.ok_or_else(|| candle_core::Error::Msg("pool2d_backward: no gradient".into()))
}
