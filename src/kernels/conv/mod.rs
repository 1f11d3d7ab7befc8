//! 2-D convolution in NHWC with kernels laid out as Keras' `(kh, kw, in, out)`.
//!
//! Each kernel tap `(kh, kw)` is one matrix product between a shifted view of the (padded) input
//! and the tap's `in x out` weight matrix. With stride 1 the view of a whole image is a single
//! matrix whose rows are input pixels ("wide" output rows that fall past the right edge are
//! computed and dropped), so nothing like im2col's column matrix is ever built. The input
//! gradient is the same product with the transposed tap accumulated into the shifted view, and
//! the weight gradient is the product of the view's transpose with the output gradient, each
//! image's share computed on its own thread and summed.
//!
//! This module holds the geometry and the shared helpers, and the public functions; the
//! passes live in `forward` and `backward` (each image's choice of Winograd's, the direct or
//! the `gemm` kernels), the candle custom operations that wrap them in `ops`, the convolution
//! with a max pooling fused in in `pooled`.

use super::{contiguous, cpu_slice, dispatch1, dispatch2, AlignedVec, Float};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use direct::{as_f32, as_f32_mut, as_f32_uninit, Store};
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

pub(crate) mod amx;
mod backward;
pub(crate) mod bf16;
mod direct;
mod forward;
mod ops;
mod pooled;
pub(crate) mod rounding;
mod winograd;

use backward::fused_backward;
use ops::*;
pub use pooled::{conv2d_max_pool, conv2d_max_pool_backward};

/// Strides, dilation and explicit zero padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    /// `(rows, cols)` strides.
    pub stride: (usize, usize),
    /// `(rows, cols)` dilation.
    pub dilation: (usize, usize),
    /// Zero padding `(top, bottom, left, right)`.
    pub padding: (usize, usize, usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    h: usize,
    w: usize,
    ci: usize,
    co: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    hp: usize,
    wp: usize,
    p: ConvParams,
    /// Every product exact (the direct kernels, not Winograd's transformed operands): bf16
    /// products on the f32 kernels, whose rounded operands multiply exactly in f32.
    exact: bool,
}

impl Geom {
    fn new(x: &[usize], k: &[usize], p: ConvParams) -> candle_core::Result<Self> {
        if x.len() != 4 || k.len() != 4 || x[3] != k[2] {
            candle_core::bail!("conv2d: input {x:?} and kernel {k:?} do not fit (NHWC, (kh, kw, in, out))");
        }
        let (pt, pb, pl, pr) = p.padding;
        let (hp, wp) = (x[1] + pt + pb, x[2] + pl + pr);
        let (ekh, ekw) = ((k[0] - 1) * p.dilation.0 + 1, (k[1] - 1) * p.dilation.1 + 1);
        if hp < ekh || wp < ekw || p.stride.0 == 0 || p.stride.1 == 0 {
            candle_core::bail!("conv2d: kernel {k:?} does not fit input {x:?} with {p:?}");
        }
        Ok(Geom {
            n: x[0],
            h: x[1],
            w: x[2],
            ci: x[3],
            co: k[3],
            kh: k[0],
            kw: k[1],
            oh: (hp - ekh) / p.stride.0 + 1,
            ow: (wp - ekw) / p.stride.1 + 1,
            hp,
            wp,
            p,
            exact: false,
        })
    }

    fn unit_stride(&self) -> bool {
        self.p.stride == (1, 1)
    }

    /// Rows of the "wide" output of one image: every padded-width position up to the last
    /// valid output pixel.
    fn wide_rows(&self) -> usize {
        (self.oh - 1) * self.wp + self.ow
    }

    /// Offset, in pixels of the padded image, of tap `(i, j)`.
    fn tap_offset(&self, i: usize, j: usize) -> usize {
        i * self.p.dilation.0 * self.wp + j * self.p.dilation.1
    }

    /// Where, in values of the padded image, the input of output pixel `(r, c)` for the tap
    /// at pixel offset `off` ([`Geom::tap_offset`]) starts: its `ci` channels.
    fn strided_at(&self, r: usize, c: usize, off: usize) -> usize {
        (r * self.p.stride.0 * self.wp + c * self.p.stride.1 + off) * self.ci
    }

    /// Whether this is a 3x3 stride-1 undilated convolution that [`winograd`] runs for `c`
    /// input and `o` output channels (AVX-512F, multiples of 16, not switched off).
    fn winograd_fits(&self, c: usize, o: usize) -> bool {
        (self.kh, self.kw) == (3, 3)
            && !self.exact
            && self.unit_stride()
            && self.p.dilation == (1, 1)
            && winograd::available(c, o)
            && winograd_enabled()
    }

    /// The kernel `k` (`3 x 3 x c x o`, as the correlation uses it) in Winograd's domain, for an
    /// output of `out` pixels, when [`Geom::winograd_fits`] and `T` is `f32`.
    fn winograd_kernel<T: 'static>(
        &self,
        k: &[T],
        c: usize,
        o: usize,
        out: (usize, usize),
    ) -> Option<winograd::Kernel> {
        let tile = winograd::Tile::for_output(out.0, out.1);
        self.winograd_fits(c, o).then(|| as_f32(k).map(|k| winograd::transform_kernel(k, c, o, tile))).flatten()
    }

    /// The products of a strided convolution: for each output row `r` and kernel tap `t`,
    /// `(r, t, start)` with `start` the offset in the padded image of the first input value
    /// the tap reads for that row (pixels `stride.1` apart from there).
    fn strided_taps(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.oh).flat_map(move |r| {
            (0..self.kh * self.kw).map(move |t| {
                let start = (r * self.p.stride.0 * self.wp + self.tap_offset(t / self.kw, t % self.kw)) * self.ci;
                (r, t, start)
            })
        })
    }

    fn padded(&self) -> bool {
        self.p.padding != (0, 0, 0, 0)
    }

    /// Parallelism inside one product: only when there are too few images to spread.
    fn inner_par(&self) -> Parallelism {
        if self.n < rayon::current_num_threads() {
            Parallelism::Rayon(0)
        } else {
            Parallelism::None
        }
    }
}

/// Whether the Winograd kernels may run: `KANDLE_NO_WINOGRAD` unset, read once per process.
fn winograd_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("KANDLE_NO_WINOGRAD").is_none())
}

/// Copies one image into a zero-padded buffer of `hp x wp x ci`. A buffer reused for
/// another image of the same size keeps its zero border: only the interior is written.
fn pad_image<T: Float>(g: &Geom, img: &[T], out: &mut AlignedVec<T>) {
    pad_images(g, img, 1, out)
}

/// [`pad_image`] of `count` consecutive images, one after the other in `out`.
fn pad_images<T: Float>(g: &Geom, imgs: &[T], count: usize, out: &mut AlignedVec<T>) {
    let (img_in, img_p) = (g.h * g.w * g.ci, g.hp * g.wp * g.ci);
    if out.len() != count * img_p {
        out.clear();
        out.resize(count * img_p, T::ZERO);
    }
    let (pt, _, pl, _) = g.p.padding;
    let row = g.w * g.ci;
    for (i, img) in imgs.chunks_exact(img_in.max(1)).take(count).enumerate() {
        for r in 0..g.h {
            let dst = i * img_p + ((r + pt) * g.wp + pl) * g.ci;
            out[dst..dst + row].copy_from_slice(&img[r * row..(r + 1) * row]);
        }
    }
}

/// `dst (m x n) (+)= lhs (m x k) * rhs (k x n)`, each operand given by its row and column strides.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn mm<T: Float>(
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
    par: Parallelism,
) {
    gemm::gemm(
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
        T::ONE,
        T::ONE,
        false,
        false,
        false,
        par,
    )
}

/// One matrix product of a correlation: the pixel offset of its input view, the offset of its
/// weight rows, and its inner dimension. In NHWC the taps of one kernel row are adjacent
/// pixels, so without column dilation a whole kernel row is one product with `K = kw * c_in`
/// (3 products of K = 96 instead of 9 of K = 32 for a 3x3 kernel over 32 channels).
fn groups(
    kh: usize,
    kw: usize,
    c_in: usize,
    c_out: usize,
    width: usize,
    dil: (usize, usize),
) -> Vec<(usize, usize, usize)> {
    if dil.1 == 1 {
        (0..kh).map(|i| (i * dil.0 * width, i * kw * c_in * c_out, kw * c_in)).collect()
    } else {
        (0..kh * kw).map(|t| ((t / kw) * dil.0 * width + (t % kw) * dil.1, t * c_in * c_out, c_in)).collect()
    }
}

/// Stride-1 correlation of one image `src` (rows `width` pixels wide, `c_in` channels) with a
/// `(kh, kw, c_in, c_out)` kernel, into the "wide" layout: output pixel `(r, q)` at row
/// `r * width + q` of `wide`, for `r < out_h`, `q < out_w`; rows past `out_w` are scratch.
#[allow(clippy::too_many_arguments)]
fn corr_wide<T: Float>(
    src: &[T],
    width: usize,
    k: &[T],
    (kh, kw, c_in, c_out): (usize, usize, usize, usize),
    (out_h, out_w): (usize, usize),
    dil: (usize, usize),
    wide: &mut Vec<T>,
    par: Parallelism,
) {
    let m = (out_h - 1) * width + out_w;
    wide.clear();
    wide.resize(m * c_out, T::ZERO);
    for (i, (off, koff, kdim)) in groups(kh, kw, c_in, c_out, width, dil).into_iter().enumerate() {
        debug_assert!((off + m - 1) * c_in + kdim <= src.len());
        // SAFETY: the last row read, (off + m - 1) pixels in plus kdim values, is the last
        // pixel of the input window of the last output pixel, inside `src`.
        unsafe {
            mm(
                m,
                c_out,
                kdim,
                wide.as_mut_ptr(),
                c_out,
                i > 0,
                src.as_ptr().add(off * c_in),
                c_in,
                1,
                k.as_ptr().add(koff),
                c_out,
                1,
                par,
            )
        }
    }
}

/// 2-D convolution of an NHWC input `x` with a `(kh, kw, in, out)` kernel, differentiable.
///
/// On the CPU this runs kandle's kernels; on other devices it forwards to candle's `conv2d`
/// (which needs equal strides and dilations along both axes there).
///
/// ```
/// use kandle::kernels::{conv2d, ConvParams};
/// use candle_core::{DType, Device, Tensor};
/// let x = Tensor::ones((1, 5, 5, 2), DType::F32, &Device::Cpu)?;
/// let k = Tensor::ones((3, 3, 2, 4), DType::F32, &Device::Cpu)?;
/// let p = ConvParams { stride: (2, 2), dilation: (1, 1), padding: (1, 1, 1, 1) };
/// let y = conv2d(&x, &k, p)?;
/// assert_eq!(y.dims(), &[1, 3, 3, 4]);
/// assert_eq!(y.get(0)?.get(1)?.get(1)?.to_vec1::<f32>()?, vec![18.0; 4]); // 3 x 3 x 2 ones
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d(x: &Tensor, kernel: &Tensor, p: ConvParams) -> candle_core::Result<Tensor> {
    conv2d_fused(x, kernel, None, false, p)
}

/// `relu(conv2d(x, kernel) + bias)` (bias and ReLU optional), differentiable. On the CPU the
/// bias and ReLU are applied while each image's output is still in cache, and the backward
/// pass masks the gradient once and sums the bias gradient in one pass.
///
/// ```
/// use kandle::kernels::{conv2d_fused, ConvParams};
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[1f32], [2.]], [[3.], [4.]]]], &Device::Cpu)?; // (1, 2, 2, 1)
/// let k = Tensor::new(&[[[[1f32]]]], &Device::Cpu)?; // 1x1 kernel
/// let b = Tensor::new(&[-2.5f32], &Device::Cpu)?;
/// let p = ConvParams { stride: (1, 1), dilation: (1, 1), padding: (0, 0, 0, 0) };
/// let y = conv2d_fused(&x, &k, Some(&b), true, p)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![0.0, 0.0, 0.5, 1.5]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d_fused(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    p: ConvParams,
) -> candle_core::Result<Tensor> {
    conv2d_fused_with(x, kernel, bias, relu, p, Precision::F32)
}

/// [`conv2d_fused`] with the products' [`Precision`]: with [`Precision::Bf16`] (the
/// `mixed_bfloat16` policy) the input, the kernel and, backward, the output gradient are
/// rounded to bf16, the products summed in f32 (on AMX tiles where the CPU has them), and the
/// output rounded to bf16; f32 tensors in and out.
///
/// ```
/// use kandle::kernels::{conv2d_fused_with, ConvParams, Precision};
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[1.001f32]]]], &Device::Cpu)?; // (1, 1, 1, 1)
/// let k = Tensor::new(&[[[[3f32]]]], &Device::Cpu)?;
/// let p = ConvParams { stride: (1, 1), dilation: (1, 1), padding: (0, 0, 0, 0) };
/// // 1.001 rounds to 1 in bf16 (8 significant bits).
/// let y = conv2d_fused_with(&x, &k, None, false, p, Precision::Bf16)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![3.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d_fused_with(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    p: ConvParams,
    precision: Precision,
) -> candle_core::Result<Tensor> {
    let bf16 = precision == Precision::Bf16;
    if bf16 && x.dtype() != candle_core::DType::F32 {
        candle_core::bail!("conv2d: bf16 products take f32 tensors, received {:?}", x.dtype());
    }
    if super::cpu_kernels(x.device()) {
        let (x, k) = (x.contiguous()?, kernel.contiguous()?);
        let op = Conv2dOp { p, relu, bf16 };
        match bias {
            Some(b) => x.apply_op3(&k, &b.contiguous()?, op),
            None => x.apply_op2(&k, op),
        }
    } else {
        // As the CPU path: input and kernel rounded with their gradients passed through (f32
        // sums), the output rounded with its gradient (which the products then take).
        let round = |t: &Tensor, grad: bool| -> candle_core::Result<Tensor> {
            if bf16 {
                super::round_bf16(t, grad)
            } else {
                Ok(t.clone())
            }
        };
        let (pt, pb, pl, pr) = p.padding;
        let xc = round(x, false)?.permute((0, 3, 1, 2))?.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
        let mut kc = round(kernel, false)?.permute((3, 2, 0, 1))?.contiguous()?;
        // candle's conv2d takes one stride and one dilation for both axes. Unequal dilations:
        // the kernel with zeros between its taps; unequal strides: stride 1, then every
        // stride-th row and column (both differentiable, as the rest).
        let ((sh, sw), (dh, dw)) = (p.stride, p.dilation);
        let dilation = if dh == dw {
            dh
        } else {
            kc = dilate_axis(&dilate_axis(&kc, 2, dh)?, 3, dw)?;
            1
        };
        let stride = if sh == sw { sh } else { 1 };
        let mut y = xc.conv2d(&kc, 0, stride, dilation, 1)?;
        if sh != sw {
            let every = |n: usize, s: usize| Tensor::arange_step(0u32, n as u32, s as u32, y.device());
            let (h1, w1) = (y.dims()[2], y.dims()[3]);
            y = y.index_select(&every(h1, sh)?, 2)?.index_select(&every(w1, sw)?, 3)?;
        }
        let mut y = y.permute((0, 2, 3, 1))?.contiguous()?;
        if let Some(b) = bias {
            y = y.broadcast_add(b)?;
        }
        if relu {
            // TensorFlow's gradient, 0 where the input is 0 (see Activation::Relu)
            y = (&y * y.gt(0.0)?.to_dtype(y.dtype())?)?;
        }
        round(&y, true)
    }
}

/// `t` with `s - 1` zeros between neighbours along `axis` (a dilated kernel's taps).
fn dilate_axis(t: &Tensor, axis: usize, s: usize) -> candle_core::Result<Tensor> {
    if s <= 1 {
        return Ok(t.clone());
    }
    let n = t.dims()[axis];
    let mut dims = t.dims().to_vec();
    dims[axis] = n * s;
    t.unsqueeze(axis + 1)?.pad_with_zeros(axis + 1, 0, s - 1)?.reshape(dims)?.narrow(axis, 0, (n - 1) * s + 1)
}

/// The arithmetic of a layer's products: Keras' compute dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 products and sums.
    #[default]
    F32,
    /// bf16 operands, f32 sums, bf16 outputs (`mixed_bfloat16`).
    Bf16,
}

/// The gradients of [`conv2d_fused`] at `x`, `k` with output `y`, for the output gradient
/// `dy`: `(dx, dk, db)`, with `dx` only when `need_input_grad` and `db` only when `with_bias`.
/// For layers that compute their own backward pass (CPU only).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kandle::kernels::{conv2d_backward, conv2d_fused, ConvParams};
/// let p = ConvParams { stride: (1, 1), dilation: (1, 1), padding: (0, 0, 0, 0) };
/// let x = Tensor::ones((1, 3, 3, 1), candle_core::DType::F32, &Device::Cpu)?;
/// let k = Tensor::ones((2, 2, 1, 1), candle_core::DType::F32, &Device::Cpu)?;
/// let y = conv2d_fused(&x, &k, None, true, p)?; // 2x2 output, each 4
/// let dy = y.ones_like()?;
/// let (dx, dk, db) = conv2d_backward(&x, &k, &y, &dy, true, true, p, true)?;
/// // The centre pixel is under all four windows; each weight sees four ones.
/// assert_eq!(dx.unwrap().flatten_all()?.to_vec1::<f32>()?, vec![1., 2., 1., 2., 4., 2., 1., 2., 1.]);
/// assert_eq!(dk.flatten_all()?.to_vec1::<f32>()?, vec![4., 4., 4., 4.]);
/// assert_eq!(db.unwrap().to_vec1::<f32>()?, vec![4.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// Shapes that do not fit, another device than the CPU, or mixed element types.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    x: &Tensor,
    k: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    relu: bool,
    with_bias: bool,
    p: ConvParams,
    need_input_grad: bool,
) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    conv2d_backward_with(x, k, y, dy, relu, with_bias, p, need_input_grad, Precision::F32)
}

/// [`conv2d_backward`] with the products' [`Precision`], for layers that compute their own
/// backward pass of [`conv2d_fused_with`] (CPU only).
///
/// # Errors
/// As [`conv2d_backward`]; bf16 products of other tensors than f32.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_with(
    x: &Tensor,
    k: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    relu: bool,
    with_bias: bool,
    p: ConvParams,
    need_input_grad: bool,
    precision: Precision,
) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    if !x.device().is_cpu() {
        candle_core::bail!("conv2d_backward: kandle's own backward pass runs on the CPU");
    }
    let g = Geom::new(x.dims(), k.dims(), p)?;
    if dy.dims() != [g.n, g.oh, g.ow, g.co] || y.dims() != dy.dims() {
        candle_core::bail!("conv2d_backward: output {:?} and its gradient {:?} do not fit", y.dims(), dy.dims());
    }
    let (x, k, y, dy) = (x.contiguous()?, k.contiguous()?, y.contiguous()?, dy.contiguous()?);
    let bf16 = precision == Precision::Bf16;
    let (dx, dk, db) = match x.dtype() {
        candle_core::DType::F32 => backward_typed::<f32>(&g, (&x, &k, &y, &dy), relu, need_input_grad, bf16)?,
        candle_core::DType::F64 if !bf16 => backward_typed::<f64>(&g, (&x, &k, &y, &dy), relu, need_input_grad, false)?,
        d => candle_core::bail!("conv2d_backward: expected f32 (or, for f32 products, f64) tensors, received {d:?}"),
    };
    Ok((dx, dk, with_bias.then_some(db)))
}

/// [`fused_backward`] on the tensors' data as `T`, the gradients back as tensors.
fn backward_typed<T: Float>(
    g: &Geom,
    (x, k, y, dy): (&Tensor, &Tensor, &Tensor, &Tensor),
    relu: bool,
    need_dx: bool,
    bf16: bool,
) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
    let guards = [x, k, y, dy].map(|t| t.storage_and_layout());
    let slices =
        guards.iter().map(|(s, l)| cpu_slice::<T>(s, l, "conv2d_backward")).collect::<candle_core::Result<Vec<_>>>()?;
    let (dx, dk, db) = match (bf16, as_f32(slices[0]), as_f32(slices[1]), as_f32(slices[2]), as_f32(slices[3])) {
        (true, Some(x), Some(k), Some(y), Some(dy)) => {
            let (dx, dk, db) = bf16::backward(g, x, k, relu.then_some(y), dy, need_dx);
            (dx.map(from_f32_vec), from_f32_vec(dk), from_f32_vec(db))
        }
        _ => fused_backward(g, slices[0], slices[1], relu.then_some(slices[2]), slices[3], need_dx),
    };
    let dev = x.device();
    let dx = dx.map(|v| Tensor::from_vec(v, x.dims(), dev)).transpose()?;
    Ok((dx, Tensor::from_vec(dk, k.dims(), dev)?, Tensor::from_vec(db, g.co, dev)?))
}

/// `v` as a `Vec<T>`, for `T` = `f32` (checked by the caller through [`as_f32`]).
fn from_f32_vec<T: 'static>(v: Vec<f32>) -> Vec<T> {
    assert_eq!(std::any::TypeId::of::<T>(), std::any::TypeId::of::<f32>());
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `T` is `f32` (asserted), so the allocation, length and capacity carry over.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

/// ReLU's gradient from its output: `dy * (y > 0)`, on the CPU.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let y = Tensor::new(&[0f32, 2., 0., 5.], &Device::Cpu)?;
/// let dy = Tensor::new(&[1f32, 1., 3., 3.], &Device::Cpu)?;
/// let dz = kandle::kernels::relu_backward(&y, &dy)?;
/// assert_eq!(dz.to_vec1::<f32>()?, vec![0., 1., 0., 3.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// Shapes that differ, another device than the CPU.
pub fn relu_backward(y: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
    if !y.device().is_cpu() {
        candle_core::bail!("relu_backward: kandle's own backward pass runs on the CPU");
    }
    y.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &ReluGrad)
}
