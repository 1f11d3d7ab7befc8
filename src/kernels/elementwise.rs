//! Element-wise CPU operations in one parallel pass (`f32`): the activations between the layers
//! of ImageNet networks, Keras' general ReLU, and the spatial mean of global average pooling;
//! candle custom operations with their gradients, so autograd runs through them (candle's own
//! element-wise operations run on one thread).

use super::{contiguous, cpu_kernels, cpu_slice};
use candle_core::Layout;

/// `f` over `v` in parallel chunks, into a new vector.
fn par_unary(v: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; v.len()];
    out.par_chunks_mut(1 << 14).zip(v.par_chunks(1 << 14)).for_each(|(o, a)| {
        for (o, &a) in o.iter_mut().zip(a) {
            *o = f(a);
        }
    });
    out
}

/// `f(x, y)` element by element in one parallel pass, for `f32` tensors on the CPU (`y`: a
/// second tensor of the same shape, or none: `f(x, 0)`); `None` for other devices or types,
/// whose callers use candle's operations.
pub(crate) fn map_f32(
    x: &candle_core::Tensor,
    y: Option<&candle_core::Tensor>,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    use rayon::prelude::*;
    let f32_cpu = |t: &candle_core::Tensor| cpu_kernels(t.device()) && t.dtype() == candle_core::DType::F32;
    if !f32_cpu(x) || y.is_some_and(|y| !f32_cpu(y) || y.dims() != x.dims()) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let xv: &[f32] = cpu_slice(&xs, xl, "map")?;
    let mut out = vec![0f32; xv.len()];
    const CHUNK: usize = 1 << 14;
    match y {
        Some(y) => {
            let y = y.contiguous()?;
            let (ys, yl) = y.storage_and_layout();
            let yv: &[f32] = cpu_slice(&ys, yl, "map")?;
            out.par_chunks_mut(CHUNK).zip(xv.par_chunks(CHUNK)).zip(yv.par_chunks(CHUNK)).for_each(|((o, a), b)| {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = f(a, b);
                }
            });
        }
        None => out.par_chunks_mut(CHUNK).zip(xv.par_chunks(CHUNK)).for_each(|(o, a)| {
            for (o, &a) in o.iter_mut().zip(a) {
                *o = f(a, 0.0);
            }
        }),
    }
    Ok(Some(candle_core::Tensor::from_vec(out, x.dims(), x.device())?))
}

/// Keras' `ReLU(max_value, negative_slope, threshold)` on the CPU in one pass:
/// `x >= threshold ? x : negative_slope * (x - threshold)`, capped at `max_value`; a candle
/// operation whose gradient candle's autograd takes (`None` for other devices and types).
pub(crate) fn relu_general(
    x: &candle_core::Tensor,
    threshold: f64,
    negative_slope: f64,
    max_value: Option<f64>,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    if !(cpu_kernels(x.device()) && x.dtype() == candle_core::DType::F32) {
        return Ok(None);
    }
    let op = ReluGeneral { t: threshold as f32, s: negative_slope as f32, max: max_value.map(|m| m as f32) };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

/// [`relu_general`]'s operation.
#[derive(Clone, Copy)]
struct ReluGeneral {
    t: f32,
    s: f32,
    max: Option<f32>,
}

impl ReluGeneral {
    fn value(&self, v: f32) -> f32 {
        let y = if v >= self.t { v } else { self.s * (v - self.t) };
        self.max.map_or(y, |m| y.min(m))
    }

    /// The gradient for `dy` `g` at `v`: 1 on the linear part (below `max`), the slope below
    /// the threshold, 0 at or above `max`.
    pub(crate) fn grad(&self, v: f32, g: f32) -> f32 {
        if v < self.t {
            self.s * g
        } else if self.max.is_some_and(|m| v >= m) {
            0.0
        } else {
            g
        }
    }
}

impl candle_core::CustomOp1 for ReluGeneral {
    fn name(&self) -> &'static str {
        "kandle-relu"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(v) = s else { candle_core::bail!("kandle-relu: expected f32") };
        let out = par_unary(contiguous(v, l, "relu")?, |a| self.value(a));
        Ok((candle_core::CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        x: &candle_core::Tensor,
        _y: &candle_core::Tensor,
        dy: &candle_core::Tensor,
    ) -> candle_core::Result<Option<candle_core::Tensor>> {
        let op = *self;
        map_f32(&x.detach(), Some(&dy.detach()), move |v, g| op.grad(v, g))
    }
}

/// `act(x)` on the CPU in one parallel pass, for the activations ImageNet networks use between
/// layers (ReLU, ReLU6, sigmoid, SiLU/swish), the same values as candle's operations give; a
/// candle operation whose gradient candle's autograd takes. `None` for other activations,
/// devices and types.
pub(crate) fn activation_f32(x: &candle_core::Tensor, act: Unary) -> candle_core::Result<Option<candle_core::Tensor>> {
    if !(cpu_kernels(x.device()) && x.dtype() == candle_core::DType::F32 && x.elem_count() >= 1 << 12) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(ActivationOp(act))?))
}

/// [`activation_f32`]'s operation.
#[derive(Clone, Copy)]
struct ActivationOp(Unary);

/// The activations [`activation_f32`] computes (the callers map Keras' activations to them, so
/// that the kernels need not know the activations module above them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unary {
    Relu,
    Relu6,
    Sigmoid,
    Silu,
}

#[inline]
fn sigmoid_f32(v: f32) -> f32 {
    // 1 / (1 + exp(-v)) from exp(-|v|), as Activation::Sigmoid.
    let e = (-v.abs()).exp();
    (if v >= 0.0 { 1.0 } else { e }) / (e + 1.0)
}

impl candle_core::CustomOp1 for ActivationOp {
    fn name(&self) -> &'static str {
        "kandle-activation"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use Unary as A;
        let candle_core::CpuStorage::F32(v) = s else { candle_core::bail!("kandle-activation: expected f32") };
        let v = contiguous(v, l, "activation")?;
        let out = match self.0 {
            A::Relu => par_unary(v, |v| v * if v > 0.0 { 1.0 } else { 0.0 }),
            A::Relu6 => par_unary(v, |v| v.clamp(0.0, 6.0)),
            A::Sigmoid => par_unary(v, sigmoid_f32),
            _ => par_unary(v, |v| v / (1.0 + (-v).exp())),
        };
        Ok((candle_core::CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        x: &candle_core::Tensor,
        y: &candle_core::Tensor,
        dy: &candle_core::Tensor,
    ) -> candle_core::Result<Option<candle_core::Tensor>> {
        use Unary as A;
        let (x, y, dy) = (x.detach(), y.detach(), dy.detach());
        match self.0 {
            A::Relu => map_f32(&y, Some(&dy), |y, g| if y > 0.0 { g } else { 0.0 }),
            A::Relu6 => map_f32(&y, Some(&dy), |y, g| if y > 0.0 && y < 6.0 { g } else { 0.0 }),
            A::Sigmoid => map_f32(&y, Some(&dy), |y, g| g * y * (1.0 - y)),
            _ => map_f32(&x, Some(&dy), |x, g| {
                let s = sigmoid_f32(x);
                g * s * (1.0 + x * (1.0 - s))
            }),
        }
    }
}

/// The mean over the spatial axes of channels-last images `(n, h, w, c)` -> `(n, c)` on the CPU,
/// images in parallel, each pixel's channels added along the contiguous axis; a candle
/// operation whose gradient candle's autograd takes (`None` for other devices and types).
pub(crate) fn spatial_mean_f32(x: &candle_core::Tensor) -> candle_core::Result<Option<candle_core::Tensor>> {
    if !(cpu_kernels(x.device()) && x.dtype() == candle_core::DType::F32 && x.rank() == 4) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(SpatialMean)?))
}

/// [`spatial_mean_f32`]'s operation.
struct SpatialMean;

impl candle_core::CustomOp1 for SpatialMean {
    fn name(&self) -> &'static str {
        "kandle-spatial-mean"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let candle_core::CpuStorage::F32(v) = s else { candle_core::bail!("kandle-spatial-mean: expected f32") };
        let v = contiguous(v, l, "spatial_mean")?;
        let (n, h, w, c) = l.shape().dims4()?;
        let mut out = vec![0f32; n * c];
        if c > 0 && h * w > 0 {
            let count = (h * w) as f32;
            out.par_chunks_mut(c).zip(v.par_chunks(h * w * c)).for_each(|(o, img)| {
                for px in img.chunks(c) {
                    for (o, &p) in o.iter_mut().zip(px) {
                        *o += p;
                    }
                }
                o.iter_mut().for_each(|o| *o /= count);
            });
        }
        Ok((candle_core::CpuStorage::F32(out), candle_core::Shape::from((n, c))))
    }

    fn bwd(
        &self,
        x: &candle_core::Tensor,
        _y: &candle_core::Tensor,
        dy: &candle_core::Tensor,
    ) -> candle_core::Result<Option<candle_core::Tensor>> {
        let (n, h, w, c) = x.dims4()?;
        let d = (dy.reshape((n, 1, 1, c))? / (h * w) as f64)?;
        Ok(Some(d.broadcast_as((n, h, w, c))?.contiguous()?))
    }
}

/// The gradient of [`relu_general`] for `dy` at the input `x` (`None` as there).
pub(crate) fn relu_general_grad(
    x: &candle_core::Tensor,
    dy: &candle_core::Tensor,
    threshold: f64,
    negative_slope: f64,
    max_value: Option<f64>,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    let op = ReluGeneral { t: threshold as f32, s: negative_slope as f32, max: max_value.map(|m| m as f32) };
    map_f32(x, Some(dy), move |v, g| op.grad(v, g))
}

/// `a + b`, then `max(a + b, 0)` when `relu`, in one parallel pass for same-shaped f32 or f64
/// tensors on the CPU (a residual connection and the ReLU after it: candle's addition runs on
/// one thread, the ReLU would be a second pass); a candle operation whose gradient candle's
/// autograd takes. `None` for other devices, types, shapes, and small tensors.
pub(crate) fn add_relu(
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
    relu: bool,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    use candle_core::DType;
    let ok = cpu_kernels(a.device())
        && a.dtype() == b.dtype()
        && matches!(a.dtype(), DType::F32 | DType::F64)
        && a.dims() == b.dims()
        && a.elem_count() >= 1 << 12;
    if !ok {
        return Ok(None);
    }
    Ok(Some(a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu { relu })?))
}

/// [`add_relu`]'s operation.
#[derive(Clone, Copy)]
struct AddRelu {
    relu: bool,
}

impl AddRelu {
    fn run<T: super::Float>(&self, a: &[T], b: &[T]) -> Vec<T> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 14;
        let relu = self.relu;
        let mut out = vec![T::ZERO; a.len()];
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((o, a), b)| {
            if relu {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = (a + b).fmax(T::ZERO);
                }
            } else {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = a + b;
                }
            }
        });
        out
    }
}

impl candle_core::CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "kandle-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &Layout,
        s2: &candle_core::CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        let out = match (s1, s2) {
            (S::F32(a), S::F32(b)) => S::F32(self.run(contiguous(a, l1, "add")?, contiguous(b, l2, "add")?)),
            (S::F64(a), S::F64(b)) => S::F64(self.run(contiguous(a, l1, "add")?, contiguous(b, l2, "add")?)),
            _ => candle_core::bail!("kandle-add-relu: expected two f32 or two f64 tensors"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &candle_core::Tensor,
        _b: &candle_core::Tensor,
        y: &candle_core::Tensor,
        dy: &candle_core::Tensor,
    ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)> {
        let g = if self.relu { (dy * y.gt(0.0)?.to_dtype(dy.dtype())?)? } else { dy.clone() };
        Ok((Some(g.clone()), Some(g)))
    }
}

/// Zero padding of channels-last images `(n, h, w, c)` by `(top, bottom, left, right)` pixels in
/// one parallel pass on the CPU (candle's `pad_with_zeros` concatenates zeros on each side,
/// axis by axis, on one thread); a candle operation whose gradient (the crop back) candle's
/// autograd takes. `None` for other devices, types and ranks.
pub(crate) fn zero_pad(
    x: &candle_core::Tensor,
    pads: (usize, usize, usize, usize),
) -> candle_core::Result<Option<candle_core::Tensor>> {
    use candle_core::DType;
    if !(cpu_kernels(x.device()) && matches!(x.dtype(), DType::F32 | DType::F64) && x.rank() == 4) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(ZeroPad(pads))?))
}

/// The window `(top, left, height, width)` of channels-last images `(n, h, w, c)`, copied in
/// one parallel pass on the CPU (the gradient of [`zero_pad`]); `None` as there.
pub(crate) fn crop_window(
    x: &candle_core::Tensor,
    (top, left, height, width): (usize, usize, usize, usize),
) -> candle_core::Result<Option<candle_core::Tensor>> {
    use candle_core::DType;
    if !(cpu_kernels(x.device()) && matches!(x.dtype(), DType::F32 | DType::F64) && x.rank() == 4) {
        return Ok(None);
    }
    let (n, h, w, c) = x.dims4()?;
    if top + height > h || left + width > w {
        candle_core::bail!("crop_window: ({top}, {left}, {height}, {width}) outside images of {h}x{w}");
    }
    let x = x.contiguous()?;
    let (s, l) = x.storage_and_layout();
    fn run<T: super::Float>(v: &[T], (n, h, w, c): (usize, usize, usize, usize), win: [usize; 4]) -> Vec<T> {
        use rayon::prelude::*;
        let [top, left, height, width] = win;
        let mut out = vec![T::ZERO; n * height * width * c];
        out.par_chunks_mut((width * c).max(1)).enumerate().for_each(|(row, o)| {
            let (img, r) = (row / height.max(1), row % height.max(1));
            let at = ((img * h + top + r) * w + left) * c;
            o.copy_from_slice(&v[at..at + width * c]);
        });
        out
    }
    let dims = (n, h, w, c);
    let win = [top, left, height, width];
    let out = match &*s {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => {
            candle_core::Tensor::from_vec(run(contiguous(v, l, "crop")?, dims, win), (n, height, width, c), x.device())?
        }
        candle_core::Storage::Cpu(candle_core::CpuStorage::F64(v)) => {
            candle_core::Tensor::from_vec(run(contiguous(v, l, "crop")?, dims, win), (n, height, width, c), x.device())?
        }
        _ => candle_core::bail!("crop_window: expected f32 or f64 on the CPU"),
    };
    Ok(Some(out))
}

/// [`zero_pad`]'s operation: `(top, bottom, left, right)`.
#[derive(Clone, Copy)]
struct ZeroPad((usize, usize, usize, usize));

impl ZeroPad {
    fn run<T: super::Float>(&self, v: &[T], (n, h, w, c): (usize, usize, usize, usize)) -> Vec<T> {
        use rayon::prelude::*;
        let (t, b, l, r) = self.0;
        let (hp, wp) = (h + t + b, w + l + r);
        let mut out = vec![T::ZERO; n * hp * wp * c];
        out.par_chunks_mut((wp * c).max(1)).enumerate().for_each(|(row, o)| {
            let (img, pr) = (row / hp.max(1), row % hp.max(1));
            if pr >= t && pr < t + h {
                let at = (img * h + pr - t) * w * c;
                o[l * c..(l + w) * c].copy_from_slice(&v[at..at + w * c]);
            }
        });
        out
    }
}

impl candle_core::CustomOp1 for ZeroPad {
    fn name(&self) -> &'static str {
        "kandle-zero-pad"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (n, h, w, c) = l.shape().dims4()?;
        let (t, b, le, r) = self.0;
        let out = match s {
            candle_core::CpuStorage::F32(v) => {
                candle_core::CpuStorage::F32(self.run(contiguous(v, l, "pad")?, (n, h, w, c)))
            }
            candle_core::CpuStorage::F64(v) => {
                candle_core::CpuStorage::F64(self.run(contiguous(v, l, "pad")?, (n, h, w, c)))
            }
            _ => candle_core::bail!("kandle-zero-pad: expected f32 or f64"),
        };
        Ok((out, candle_core::Shape::from((n, h + t + b, w + le + r, c))))
    }

    fn bwd(
        &self,
        x: &candle_core::Tensor,
        _y: &candle_core::Tensor,
        dy: &candle_core::Tensor,
    ) -> candle_core::Result<Option<candle_core::Tensor>> {
        let (_, h, w, _) = x.dims4()?;
        let (t, _, l, _) = self.0;
        Ok(Some(dy.narrow(1, t, h)?.narrow(2, l, w)?))
    }
}
