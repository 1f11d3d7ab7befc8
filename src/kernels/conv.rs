//! 2-D convolution in NHWC with kernels laid out as Keras' `(kh, kw, in, out)`.
//!
//! Each kernel tap `(kh, kw)` is one matrix product between a shifted view of the (padded) input
//! and the tap's `in x out` weight matrix. With stride 1 the view of a whole image is a single
//! matrix whose rows are input pixels ("wide" output rows that fall past the right edge are
//! computed and dropped), so nothing like im2col's column matrix is ever built. The input
//! gradient is the same product with the transposed tap accumulated into the shifted view, and
//! the weight gradient is the product of the view's transpose with the output gradient, each
//! image's share computed on its own thread and summed.

use super::{contiguous, dispatch2, Float};
use candle_core::{CpuStorage, CustomOp2, Device, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

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

/// Copies one image into a zero-padded buffer of `hp x wp x ci`.
fn pad_image<T: Float>(g: &Geom, img: &[T], out: &mut Vec<T>) {
    out.clear();
    out.resize(g.hp * g.wp * g.ci, T::ZERO);
    let (pt, _, pl, _) = g.p.padding;
    let row = g.w * g.ci;
    for r in 0..g.h {
        let dst = ((r + pt) * g.wp + pl) * g.ci;
        out[dst..dst + row].copy_from_slice(&img[r * row..(r + 1) * row]);
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

fn forward<T: Float>(g: &Geom, x: &[T], k: &[T]) -> Vec<T> {
    let img_out = g.oh * g.ow * g.co;
    let mut y = vec![T::ZERO; g.n * img_out];
    let par = g.inner_par();
    y.par_chunks_mut(img_out.max(1)).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(xp, wide), (n, yn)| {
            let img = &x[n * g.h * g.w * g.ci..(n + 1) * g.h * g.w * g.ci];
            let xs: &[T] = if g.padded() {
                pad_image(g, img, xp);
                xp
            } else {
                img
            };
            let tap = g.ci * g.co;
            if g.unit_stride() {
                let m = g.wide_rows();
                wide.clear();
                wide.resize(m * g.co, T::ZERO);
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let t = i * g.kw + j;
                        // SAFETY: rows off..off+m of the padded image lie inside it (the last
                        // valid output pixel plus the largest tap offset is its last pixel).
                        unsafe {
                            mm(
                                m,
                                g.co,
                                g.ci,
                                wide.as_mut_ptr(),
                                g.co,
                                t > 0,
                                xs.as_ptr().add(g.tap_offset(i, j) * g.ci),
                                g.ci,
                                1,
                                k.as_ptr().add(t * tap),
                                g.co,
                                1,
                                par,
                            )
                        }
                    }
                }
                for r in 0..g.oh {
                    let src = r * g.wp * g.co;
                    yn[r * g.ow * g.co..(r + 1) * g.ow * g.co].copy_from_slice(&wide[src..src + g.ow * g.co]);
                }
            } else {
                let (sh, sw) = g.p.stride;
                for r in 0..g.oh {
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let t = i * g.kw + j;
                            let start = ((r * sh) * g.wp) * g.ci + g.tap_offset(i, j) * g.ci;
                            // SAFETY: the strided rows stay inside the padded image by the
                            // definition of the output size.
                            unsafe {
                                mm(
                                    g.ow,
                                    g.co,
                                    g.ci,
                                    yn.as_mut_ptr().add(r * g.ow * g.co),
                                    g.co,
                                    t > 0,
                                    xs.as_ptr().add(start),
                                    sw * g.ci,
                                    1,
                                    k.as_ptr().add(t * tap),
                                    g.co,
                                    1,
                                    par,
                                )
                            }
                        }
                    }
                }
            }
        },
    );
    y
}

/// Scatters one image's output gradient into the wide layout (zeros past the right edge).
fn widen<T: Float>(g: &Geom, dyn_: &[T], wide: &mut Vec<T>) {
    let m = g.wide_rows();
    wide.clear();
    wide.resize(m * g.co, T::ZERO);
    for r in 0..g.oh {
        let dst = r * g.wp * g.co;
        wide[dst..dst + g.ow * g.co].copy_from_slice(&dyn_[r * g.ow * g.co..(r + 1) * g.ow * g.co]);
    }
}

fn input_grad<T: Float>(g: &Geom, dy: &[T], k: &[T]) -> Vec<T> {
    let img_in = g.h * g.w * g.ci;
    let img_out = g.oh * g.ow * g.co;
    let mut dx = vec![T::ZERO; g.n * img_in];
    let par = g.inner_par();
    let tap = g.ci * g.co;
    dx.par_chunks_mut(img_in.max(1)).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(dxp, wide), (n, dxn)| {
            let dyn_ = &dy[n * img_out..(n + 1) * img_out];
            dxp.clear();
            dxp.resize(g.hp * g.wp * g.ci, T::ZERO);
            if g.unit_stride() {
                widen(g, dyn_, wide);
                let m = g.wide_rows();
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let t = i * g.kw + j;
                        // SAFETY: as in the forward pass; the transposed tap is read with
                        // swapped strides.
                        unsafe {
                            mm(
                                m,
                                g.ci,
                                g.co,
                                dxp.as_mut_ptr().add(g.tap_offset(i, j) * g.ci),
                                g.ci,
                                true,
                                wide.as_ptr(),
                                g.co,
                                1,
                                k.as_ptr().add(t * tap),
                                1,
                                g.co,
                                par,
                            )
                        }
                    }
                }
            } else {
                let (sh, sw) = g.p.stride;
                for r in 0..g.oh {
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let t = i * g.kw + j;
                            let start = ((r * sh) * g.wp) * g.ci + g.tap_offset(i, j) * g.ci;
                            // SAFETY: the destination rows are distinct pixels (stride >= 1)
                            // inside the padded image.
                            unsafe {
                                mm(
                                    g.ow,
                                    g.ci,
                                    g.co,
                                    dxp.as_mut_ptr().add(start),
                                    sw * g.ci,
                                    true,
                                    dyn_.as_ptr().add(r * g.ow * g.co),
                                    g.co,
                                    1,
                                    k.as_ptr().add(t * tap),
                                    1,
                                    g.co,
                                    par,
                                )
                            }
                        }
                    }
                }
            }
            let (pt, _, pl, _) = g.p.padding;
            let row = g.w * g.ci;
            for r in 0..g.h {
                let src = ((r + pt) * g.wp + pl) * g.ci;
                dxn[r * row..(r + 1) * row].copy_from_slice(&dxp[src..src + row]);
            }
        },
    );
    dx
}

fn weight_grad<T: Float>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let klen = g.kh * g.kw * g.ci * g.co;
    let img_in = g.h * g.w * g.ci;
    let img_out = g.oh * g.ow * g.co;
    let par = g.inner_par();
    let tap = g.ci * g.co;
    (0..g.n)
        .into_par_iter()
        .fold(
            || (vec![T::ZERO; klen], Vec::new(), Vec::new()),
            |(mut dk, mut xp, mut wide), n| {
                let img = &x[n * img_in..(n + 1) * img_in];
                let xs: &[T] = if g.padded() {
                    pad_image(g, img, &mut xp);
                    &xp
                } else {
                    img
                };
                let dyn_ = &dy[n * img_out..(n + 1) * img_out];
                if g.unit_stride() {
                    widen(g, dyn_, &mut wide);
                    let m = g.wide_rows();
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let t = i * g.kw + j;
                            // SAFETY: reads the same rows as the forward pass, transposed.
                            unsafe {
                                mm(
                                    g.ci,
                                    g.co,
                                    m,
                                    dk.as_mut_ptr().add(t * tap),
                                    g.co,
                                    true,
                                    xs.as_ptr().add(g.tap_offset(i, j) * g.ci),
                                    1,
                                    g.ci,
                                    wide.as_ptr(),
                                    g.co,
                                    1,
                                    par,
                                )
                            }
                        }
                    }
                } else {
                    let (sh, sw) = g.p.stride;
                    for r in 0..g.oh {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let t = i * g.kw + j;
                                let start = ((r * sh) * g.wp) * g.ci + g.tap_offset(i, j) * g.ci;
                                // SAFETY: as in the forward pass.
                                unsafe {
                                    mm(
                                        g.ci,
                                        g.co,
                                        g.ow,
                                        dk.as_mut_ptr().add(t * tap),
                                        g.co,
                                        true,
                                        xs.as_ptr().add(start),
                                        1,
                                        sw * g.ci,
                                        dyn_.as_ptr().add(r * g.ow * g.co),
                                        g.co,
                                        1,
                                        par,
                                    )
                                }
                            }
                        }
                    }
                }
                (dk, xp, wide)
            },
        )
        .map(|(dk, _, _)| dk)
        .reduce(
            || vec![T::ZERO; klen],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            },
        )
}

struct Conv2dOp(ConvParams);
struct Conv2dInputGrad(ConvParams, Vec<usize>);
struct Conv2dWeightGrad(ConvParams, Vec<usize>);

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
        let g = Geom::new(l1.dims(), l2.dims(), self.0)?;
        let out = dispatch2!(self.name(), s1, s2, |x, k| forward(
            &g,
            contiguous(x, l1, "conv2d")?,
            contiguous(k, l2, "conv2d")?
        ));
        Ok((out, Shape::from((g.n, g.oh, g.ow, g.co))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(k, &Conv2dInputGrad(self.0, x.dims().to_vec()))?;
        let dk = x.apply_op2_no_bwd(&dy, &Conv2dWeightGrad(self.0, k.dims().to_vec()))?;
        Ok((Some(dx), Some(dk)))
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

/// 2-D convolution of an NHWC input `x` with a `(kh, kw, in, out)` kernel, differentiable.
///
/// On the CPU this runs kandle's kernels; on other devices it forwards to candle's `conv2d`
/// (which needs equal strides and dilations along both axes there).
pub fn conv2d(x: &Tensor, kernel: &Tensor, p: ConvParams) -> candle_core::Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op2(&kernel.contiguous()?, Conv2dOp(p)),
        _ => {
            if p.stride.0 != p.stride.1 || p.dilation.0 != p.dilation.1 {
                candle_core::bail!("conv2d: unequal strides or dilations are only supported on the CPU");
            }
            let (pt, pb, pl, pr) = p.padding;
            let xc = x.permute((0, 3, 1, 2))?.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
            let kc = kernel.permute((3, 2, 0, 1))?.contiguous()?;
            xc.conv2d(&kc, 0, p.stride.0, p.dilation.0, 1)?.permute((0, 2, 3, 1))?.contiguous()
        }
    }
}
