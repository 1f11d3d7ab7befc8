//! The depthwise convolution of `DepthwiseConv2D` and `SeparableConv2D`, channels-last, forward
//! and backward: `kh * kw` shifted element-wise products (each channel has its own small
//! kernel, so there is no matrix product to batch), written with candle's operations.

use crate::error::{Error, Result};
use candle_core::Tensor;

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

    /// `(N, H, W, C)` by a kernel `(kh, kw, C, M)` -> `(N, OH, OW, C * M)`.
    pub fn forward(&self, x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
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

enum Tap {
    Narrow(usize, usize),
    Index(Tensor),
}
