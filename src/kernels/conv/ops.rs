//! The convolution as candle custom operations (forward with its bias and ReLU, and each
//! gradient), so that candle's autograd can differentiate it.

use super::backward::{input_grad, weight_grad};
use super::forward::forward;
use super::*;

/// `relu(conv(x, k) [+ b])`: the convolution with its bias and ReLU fused in.
pub(super) struct Conv2dOp {
    pub(super) p: ConvParams,
    pub(super) relu: bool,
    /// bf16 products ([`super::bf16`]); f32 tensors only.
    pub(super) bf16: bool,
}
pub(super) struct Conv2dInputGrad(ConvParams, Vec<usize>);
pub(super) struct Conv2dWeightGrad(ConvParams, Vec<usize>);
/// `dy * (y > 0)`: ReLU's gradient from its output.
pub(super) struct ReluGrad;
/// Sum over every axis but the last.
pub(super) struct BiasGrad;

impl Conv2dOp {
    fn fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.p)?;
        if let Some((_, lb)) = bias {
            if lb.dims() != [g.co] {
                candle_core::bail!("conv2d: bias of shape {:?} for {} filters", lb.dims(), g.co);
            }
        }
        let out = match (s1, s2, bias) {
            (CpuStorage::F32(x), CpuStorage::F32(k), b) if self.bf16 => {
                let b = match b {
                    Some((CpuStorage::F32(b), lb)) => Some(contiguous(b, lb, "conv2d")?),
                    None => None,
                    _ => candle_core::bail!("conv2d: expected an f32 bias"),
                };
                let (x, k) = (contiguous(x, l1, "conv2d")?, contiguous(k, l2, "conv2d")?);
                CpuStorage::F32(super::bf16::forward(&g, x, k, b, self.relu))
            }
            _ if self.bf16 => candle_core::bail!("conv2d: bf16 products take f32 tensors"),
            (CpuStorage::F32(x), CpuStorage::F32(k), None) => {
                CpuStorage::F32(self.typed(&g, (x, l1), (k, l2), None)?)
            }
            (CpuStorage::F32(x), CpuStorage::F32(k), Some((CpuStorage::F32(b), lb))) => {
                CpuStorage::F32(self.typed(&g, (x, l1), (k, l2), Some((b, lb)))?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(k), None) => {
                CpuStorage::F64(self.typed(&g, (x, l1), (k, l2), None)?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(k), Some((CpuStorage::F64(b), lb))) => {
                CpuStorage::F64(self.typed(&g, (x, l1), (k, l2), Some((b, lb)))?)
            }
            _ => candle_core::bail!("conv2d: expected input, kernel and bias all f32 or all f64"),
        };
        Ok((out, Shape::from((g.n, g.oh, g.ow, g.co))))
    }

    /// The forward pass on one element type, from the storages' contiguous slices.
    fn typed<T: Float>(
        &self,
        g: &Geom,
        (x, lx): (&[T], &Layout),
        (k, lk): (&[T], &Layout),
        bias: Option<(&[T], &Layout)>,
    ) -> candle_core::Result<Vec<T>> {
        let b = match bias {
            Some((b, lb)) => Some(contiguous(b, lb, "conv2d")?),
            None => None,
        };
        Ok(forward(g, contiguous(x, lx, "conv2d")?, contiguous(k, lk, "conv2d")?, b, self.relu))
    }

    /// Gradients of input and kernel, and of the bias when `with_bias`. The input's is not
    /// computed when nothing upstream needs it (the first layer's input is the data).
    #[allow(clippy::too_many_arguments)]
    fn grads(
        &self,
        x: &Tensor,
        k: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        with_bias: bool,
        need_dx: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        if self.bf16 {
            return conv2d_backward_with(x, k, y, dy, self.relu, with_bias, self.p, need_dx, Precision::Bf16);
        }
        let dy = dy.contiguous()?;
        let dz = if self.relu { y.apply_op2_no_bwd(&dy, &ReluGrad)? } else { dy };
        let dx =
            if need_dx { Some(dz.apply_op2_no_bwd(k, &Conv2dInputGrad(self.p, x.dims().to_vec()))?) } else { None };
        let dk = x.apply_op2_no_bwd(&dz, &Conv2dWeightGrad(self.p, k.dims().to_vec()))?;
        let db = if with_bias { Some(dz.apply_op1_no_bwd(&BiasGrad)?) } else { None };
        Ok((dx, dk, db))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "kandle-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dk, _) = self.grads(x, k, y, dy, false, x.track_op())?;
        Ok((dx, Some(dk)))
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "kandle-conv2d-bias"
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
        self.fwd(s1, l1, s2, l2, Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dk, db) = self.grads(x, k, y, dy, true, x.track_op())?;
        Ok((dx, Some(dk), db))
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "kandle-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!("relu grad: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        let out =
            dispatch2!(self.name(), s1, s2, |y, dy| relu_grad(contiguous(y, l1, "relu")?, contiguous(dy, l2, "relu")?));
        Ok((out, l1.shape().clone()))
    }
}

pub(super) fn relu_grad<T: Float>(y: &[T], dy: &[T]) -> Vec<T> {
    // The caller checks the shapes; unequal lengths would leave values unwritten.
    assert_eq!(y.len(), dy.len(), "relu_grad: y and dy differ in length");
    let write = |dz: &mut [MaybeUninit<T>]| {
        dz.par_chunks_mut(1 << 14).zip(y.par_chunks(1 << 14).zip(dy.par_chunks(1 << 14))).for_each(|(d, (y, dy))| {
            // A select, not a branch, so that the loop vectorises.
            d.iter_mut().zip(y.iter().zip(dy)).for_each(|(d, (&y, &g))| {
                d.write(if y > T::ZERO { g } else { T::ZERO });
            })
        })
    };
    // SAFETY: the chunks of dz pair with those of y and dy (same lengths), and each value of
    // a chunk is written.
    unsafe { crate::kernels::output_vec(dy.len(), write) }
}

/// Column sums of a `(rows, c)` matrix, in fixed chunks summed in a fixed order.
pub(super) fn sum_rows<T: Float>(v: &[T], c: usize) -> Vec<T> {
    let c = c.max(1);
    let partials: Vec<Vec<T>> = v
        .par_chunks(4096 * c)
        .map(|part| {
            let mut acc = vec![T::ZERO; c];
            for px in part.chunks_exact(c) {
                acc.iter_mut().zip(px).for_each(|(a, &v)| *a += v);
            }
            acc
        })
        .collect();
    let mut acc = vec![T::ZERO; c];
    for p in partials {
        acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    acc
}

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "kandle-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let c = *l.dims().last().unwrap_or(&1);
        let out = dispatch1!(self.name(), s, |v| sum_rows(contiguous(v, l, "bias grad")?, c));
        Ok((out, Shape::from(c)))
    }
}

impl CustomOp2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "kandle-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::new(&self.1, l2.dims(), self.0)?;
        if l1.dims() != [g.n, g.oh, g.ow, g.co] {
            candle_core::bail!("conv2d input grad: unexpected output gradient shape {:?}", l1.dims());
        }
        let out = dispatch2!(self.name(), s1, s2, |dy, k| input_grad(
            &g,
            contiguous(dy, l1, "conv2d")?,
            contiguous(k, l2, "conv2d")?
        ));
        Ok((out, Shape::from(self.1.clone())))
    }
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "kandle-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), &self.1, self.0)?;
        if l2.dims() != [g.n, g.oh, g.ow, g.co] {
            candle_core::bail!("conv2d weight grad: unexpected output gradient shape {:?}", l2.dims());
        }
        let out = dispatch2!(self.name(), s1, s2, |x, dy| weight_grad(
            &g,
            contiguous(x, l1, "conv2d")?,
            contiguous(dy, l2, "conv2d")?
        ));
        Ok((out, Shape::from(self.1.clone())))
    }
}
