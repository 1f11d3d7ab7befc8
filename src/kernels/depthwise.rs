//! The depthwise convolution of `DepthwiseConv2D` and `SeparableConv2D`, channels-last, forward
//! and backward: `kh * kw` shifted element-wise products (each channel has its own small
//! kernel, so there is no matrix product to batch). On the CPU, one pass over the output rows
//! in parallel whose innermost loop runs along the contiguous channels (vectorized); elsewhere
//! (a GPU, bf16), candle's operations.

use super::Float;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// The geometry of a depthwise convolution over one image size.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub dilation: (usize, usize),
    /// `((top, bottom), (left, right))`.
    pub pad: ((usize, usize), (usize, usize)),
    pub input: (usize, usize, usize),
    pub out: (usize, usize),
    pub multiplier: usize,
}

impl Geometry {
    /// The output shape `(OH, OW, C * M)`, without the batch axis.
    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.out.0, self.out.1, self.input.2 * self.multiplier]
    }

    /// The padded input's rows (axis 1) and columns (axis 2) that kernel tap `(i, j)` reads.
    fn taps(&self, x: &Tensor, i: usize, j: usize) -> Result<Tensor> {
        let rows = self.axis_index(x, i, 0)?;
        let cols = self.axis_index(x, j, 1)?;
        let r = match rows {
            Tap::Narrow(start, len) => x.narrow(1, start, len)?,
            Tap::Index(idx) => x.index_select(&idx, 1)?,
        };
        Ok(match cols {
            Tap::Narrow(start, len) => r.narrow(2, start, len)?,
            Tap::Index(idx) => r.index_select(&idx, 2)?,
        })
    }

    fn axis_index(&self, x: &Tensor, k: usize, axis: usize) -> Result<Tap> {
        let (s, d, o) = if axis == 0 {
            (self.strides.0, self.dilation.0, self.out.0)
        } else {
            (self.strides.1, self.dilation.1, self.out.1)
        };
        if s == 1 {
            return Ok(Tap::Narrow(k * d, o));
        }
        let idx: Vec<u32> = (0..o).map(|p| (p * s + k * d) as u32).collect();
        Ok(Tap::Index(Tensor::from_vec(idx, o, x.device())?))
    }

    fn pad(&self, x: &Tensor) -> Result<Tensor> {
        let ((t, b), (l, r)) = self.pad;
        Ok(x.pad_with_zeros(1, t, b)?.pad_with_zeros(2, l, r)?)
    }

    /// Whether the CPU kernels run this pass (f32 or f64 on the CPU).
    fn on_cpu(x: &Tensor) -> bool {
        super::cpu_kernels(x.device()) && matches!(x.dtype(), DType::F32 | DType::F64)
    }

    /// The input row (or column) that output `o` reads at kernel tap `k` along an axis, if
    /// inside the input (else it reads the zero padding).
    #[inline]
    fn source(o: usize, k: usize, stride: usize, dilation: usize, pad: usize, len: usize) -> Option<usize> {
        (o * stride + k * dilation).checked_sub(pad).filter(|&i| i < len)
    }

    /// The output of `n` images `xv` by the kernel `kv`, on the CPU.
    fn forward_slices<T: Float>(&self, n: usize, xv: &[T], kv: &[T]) -> Vec<T> {
        let ((h, w, c), m, (oh, ow)) = (self.input, self.multiplier, self.out);
        let (kh, kw) = self.kernel;
        let cm = c * m;
        let mut out = vec![T::ZERO; n * oh * ow * cm];
        out.par_chunks_mut(ow * cm).enumerate().for_each(|(row, o_row)| {
            let (b, oy) = (row / oh, row % oh);
            for i in 0..kh {
                let Some(iy) = Self::source(oy, i, self.strides.0, self.dilation.0, self.pad.0 .0, h) else { continue };
                let x_row = &xv[(b * h + iy) * w * c..(b * h + iy + 1) * w * c];
                for j in 0..kw {
                    let k = &kv[(i * kw + j) * cm..(i * kw + j + 1) * cm];
                    for ox in 0..ow {
                        let Some(ix) = Self::source(ox, j, self.strides.1, self.dilation.1, self.pad.1 .0, w) else {
                            continue;
                        };
                        let (xp, o) = (&x_row[ix * c..(ix + 1) * c], &mut o_row[ox * cm..(ox + 1) * cm]);
                        if m == 1 {
                            for ((o, &xv), &kv) in o.iter_mut().zip(xp).zip(k) {
                                *o += xv * kv;
                            }
                        } else {
                            for (ch, &xv) in xp.iter().enumerate() {
                                for mm in 0..m {
                                    o[ch * m + mm] += xv * k[ch * m + mm];
                                }
                            }
                        }
                    }
                }
            }
        });
        out
    }

    /// The input's and the kernel's gradients on the CPU: images in parallel, each with its own
    /// share of the kernel's gradient, summed at the end.
    fn backward_cpu<T: Float>(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let (n, (h, w, c), m, (oh, ow)) = (x.dims()[0], self.input, self.multiplier, self.out);
        let (kh, kw) = self.kernel;
        let cm = c * m;
        let (x, kernel, dy) = (x.contiguous()?, kernel.contiguous()?, dy.contiguous()?);
        let (xs, xl) = x.storage_and_layout();
        let xv: &[T] = super::cpu_slice(&xs, xl, "depthwise_conv2d")?;
        let (ks, kl) = kernel.storage_and_layout();
        let kv: &[T] = super::cpu_slice(&ks, kl, "depthwise_conv2d")?;
        let (ds, dl) = dy.storage_and_layout();
        let dyv: &[T] = super::cpu_slice(&ds, dl, "depthwise_conv2d")?;
        let mut dx = vec![T::ZERO; if need_dx { n * h * w * c } else { 0 }];
        let per_image = |b: usize, dx_img: Option<&mut [T]>| -> Vec<T> {
            let mut dk = vec![T::ZERO; kh * kw * cm];
            let mut dx_img = dx_img;
            for oy in 0..oh {
                let dy_row = &dyv[(b * oh + oy) * ow * cm..(b * oh + oy + 1) * ow * cm];
                for i in 0..kh {
                    let Some(iy) = Self::source(oy, i, self.strides.0, self.dilation.0, self.pad.0 .0, h) else {
                        continue;
                    };
                    let x_row = &xv[(b * h + iy) * w * c..(b * h + iy + 1) * w * c];
                    for j in 0..kw {
                        let tap = (i * kw + j) * cm;
                        for ox in 0..ow {
                            let Some(ix) = Self::source(ox, j, self.strides.1, self.dilation.1, self.pad.1 .0, w)
                            else {
                                continue;
                            };
                            let (xp, g) = (&x_row[ix * c..(ix + 1) * c], &dy_row[ox * cm..(ox + 1) * cm]);
                            let dkp = &mut dk[tap..tap + cm];
                            if m == 1 {
                                for ((d, &xv), &gv) in dkp.iter_mut().zip(xp).zip(g) {
                                    *d += xv * gv;
                                }
                            } else {
                                for (ch, &xv) in xp.iter().enumerate() {
                                    for mm in 0..m {
                                        dkp[ch * m + mm] += xv * g[ch * m + mm];
                                    }
                                }
                            }
                            if let Some(dxi) = dx_img.as_deref_mut() {
                                let k = &kv[tap..tap + cm];
                                let d = &mut dxi[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                                if m == 1 {
                                    for ((d, &kv), &gv) in d.iter_mut().zip(k).zip(g) {
                                        *d += kv * gv;
                                    }
                                } else {
                                    for (ch, d) in d.iter_mut().enumerate() {
                                        for mm in 0..m {
                                            *d += k[ch * m + mm] * g[ch * m + mm];
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            dk
        };
        let partial: Vec<Vec<T>> = if need_dx {
            dx.par_chunks_mut(h * w * c).enumerate().map(|(b, d)| per_image(b, Some(d))).collect()
        } else {
            (0..n).into_par_iter().map(|b| per_image(b, None)).collect()
        };
        let mut dk = vec![T::ZERO; kh * kw * cm];
        for p in partial {
            for (a, v) in dk.iter_mut().zip(p) {
                *a += v;
            }
        }
        let dk = Tensor::from_vec(dk, (kh, kw, c, m), x.device())?;
        let dx = if need_dx { Some(Tensor::from_vec(dx, (n, h, w, c), x.device())?) } else { None };
        Ok((dx, dk))
    }

    /// `(N, H, W, C)` by a kernel `(kh, kw, C, M)` -> `(N, OH, OW, C * M)`.
    pub fn forward(&self, x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
        if Self::on_cpu(x) && kernel.dtype() == x.dtype() {
            // A custom operation: candle's autograd differentiates through it (the backward
            // below), for models trained with autograd and user code.
            return Ok(x.contiguous()?.apply_op2(&kernel.contiguous()?, DepthwiseOp(self.clone()))?);
        }
        let xp = self.pad(x)?;
        let (n, c, m) = (x.dims()[0], self.input.2, self.multiplier);
        let mut acc: Option<Tensor> = None;
        for i in 0..self.kernel.0 {
            for j in 0..self.kernel.1 {
                let xs = self.taps(&xp, i, j)?.unsqueeze(4)?;
                let k = kernel.get(i)?.get(j)?.reshape((1, 1, 1, c, m))?;
                let term = xs.broadcast_mul(&k)?;
                acc = Some(match acc {
                    Some(a) => (a + term)?,
                    None => term,
                });
            }
        }
        let acc = acc.ok_or_else(|| Error::invalid("kernel_size", "an empty kernel"))?;
        Ok(acc.reshape((n, self.out.0, self.out.1, c * m))?)
    }

    /// The gradients of [`Geometry::forward`] for the output gradient `dy`: of the input (when
    /// asked) and of the kernel.
    pub fn backward(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, Tensor)> {
        if Self::on_cpu(x) && kernel.dtype() == x.dtype() && dy.dtype() == x.dtype() {
            return match x.dtype() {
                DType::F64 => self.backward_cpu::<f64>(x, kernel, dy, need_dx),
                _ => self.backward_cpu::<f32>(x, kernel, dy, need_dx),
            };
        }
        let xp = self.pad(x)?;
        let (n, c, m) = (x.dims()[0], self.input.2, self.multiplier);
        let (oh, ow) = self.out;
        let dy5 = dy.reshape((n, oh, ow, c, m))?;
        let wp = xp.dims()[2];
        let mut dxp = if need_dx { Some(xp.zeros_like()?) } else { None };
        let mut dk = Vec::with_capacity(self.kernel.0 * self.kernel.1);
        for i in 0..self.kernel.0 {
            for j in 0..self.kernel.1 {
                let xs = self.taps(&xp, i, j)?.unsqueeze(4)?;
                dk.push(xs.broadcast_mul(&dy5)?.sum((0, 1, 2))?);
                if let Some(dxp) = dxp.as_mut() {
                    let k = kernel.get(i)?.get(j)?.reshape((1, 1, 1, c, m))?;
                    let dxs = dy5.broadcast_mul(&k)?.sum(4)?; // (N, OH, OW, C)
                                                              // Scatter back to the rows and columns this tap read.
                    let cols = match self.axis_index(&xp, j, 1)? {
                        Tap::Narrow(start, len) => Tensor::arange(start as u32, (start + len) as u32, xp.device())?,
                        Tap::Index(idx) => idx,
                    };
                    let rows = match self.axis_index(&xp, i, 0)? {
                        Tap::Narrow(start, len) => Tensor::arange(start as u32, (start + len) as u32, xp.device())?,
                        Tap::Index(idx) => idx,
                    };
                    let wide = Tensor::zeros((n, oh, wp, c), dxs.dtype(), dxs.device())?.index_add(&cols, &dxs, 2)?;
                    *dxp = dxp.index_add(&rows, &wide, 1)?;
                }
            }
        }
        let dk = Tensor::stack(&dk, 0)?.reshape((self.kernel.0, self.kernel.1, c, m))?;
        let dx = match dxp {
            Some(d) => {
                let ((t, _), (l, _)) = self.pad;
                Some(d.narrow(1, t, self.input.0)?.narrow(2, l, self.input.1)?.contiguous()?)
            }
            None => None,
        };
        Ok((dx, dk))
    }
}

/// The CPU depthwise convolution as a candle operation, with its gradients.
struct DepthwiseOp(Geometry);

impl candle_core::CustomOp2 for DepthwiseOp {
    fn name(&self) -> &'static str {
        "kandle-depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let g = &self.0;
        let n = l1.dims()[0];
        let shape = candle_core::Shape::from((n, g.out.0, g.out.1, g.input.2 * g.multiplier));
        let out = super::dispatch2!("depthwise_conv2d", s1, s2, |x, k| {
            let (x, k) = (super::contiguous(x, l1, "depthwise_conv2d")?, super::contiguous(k, l2, "depthwise_conv2d")?);
            g.forward_slices(n, x, k)
        });
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dk) = self
            .0
            .backward(&x.detach(), &k.detach(), &dy.detach(), x.track_op())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((dx, Some(dk)))
    }
}

enum Tap {
    Narrow(usize, usize),
    Index(Tensor),
}
