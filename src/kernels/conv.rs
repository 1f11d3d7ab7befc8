//! 2-D convolution in NHWC with kernels laid out as Keras' `(kh, kw, in, out)`.
//!
//! Each kernel tap `(kh, kw)` is one matrix product between a shifted view of the (padded) input
//! and the tap's `in x out` weight matrix. With stride 1 the view of a whole image is a single
//! matrix whose rows are input pixels ("wide" output rows that fall past the right edge are
//! computed and dropped), so nothing like im2col's column matrix is ever built. The input
//! gradient is the same product with the transposed tap accumulated into the shifted view, and
//! the weight gradient is the product of the view's transpose with the output gradient, each
//! image's share computed on its own thread and summed.

use super::direct::{self, as_f32, as_f32_mut, as_f32_uninit, Store};
use super::winograd;
use super::{contiguous, dispatch1, dispatch2, Float};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

    /// Whether this is a 3x3 stride-1 undilated convolution that [`winograd`] runs for `c`
    /// input and `o` output channels (AVX-512F, multiples of 16, not switched off).
    fn winograd_fits(&self, c: usize, o: usize) -> bool {
        (self.kh, self.kw) == (3, 3)
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
fn pad_image<T: Float>(g: &Geom, img: &[T], out: &mut Vec<T>) {
    if out.len() != g.hp * g.wp * g.ci {
        out.clear();
        out.resize(g.hp * g.wp * g.ci, T::ZERO);
    }
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

fn forward<T: Float>(g: &Geom, x: &[T], k: &[T], bias: Option<&[T]>, relu: bool) -> Vec<T> {
    let img_out = g.oh * g.ow * g.co;
    let par = g.inner_par();
    let wino = g.winograd_kernel(k, g.ci, g.co, (g.oh, g.ow));
    let write = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(img_out.max(1)).enumerate().for_each_init(
            || (Vec::new(), Vec::new(), winograd::Buffers::default()),
            |(xp, wide, wbuf), (n, yn)| {
                let img = &x[n * g.h * g.w * g.ci..(n + 1) * g.h * g.w * g.ci];
                forward_image(g, img, k, wino.as_ref(), (bias, relu), yn, (xp, wide, wbuf), par);
            },
        )
    };
    // SAFETY: every output value of an image is written by forward_image (see there).
    unsafe { super::output_vec(g.n * img_out, write) }
}

/// One image of [`forward`]. Every value of `yn` is written: by the Winograd or direct
/// kernel's store, by the copy of each row out of the wide buffer, or by the first
/// (non-accumulating) product of the strided path; only then is it read (the epilogue).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn forward_image<T: Float>(
    g: &Geom,
    img: &[T],
    k: &[T],
    wino: Option<&winograd::Kernel>,
    (bias, relu): (Option<&[T]>, bool),
    yn: &mut [MaybeUninit<T>],
    (xp, wide, wbuf): (&mut Vec<T>, &mut Vec<T>, &mut winograd::Buffers),
    par: Parallelism,
) {
    let xs: &[T] = if g.padded() {
        pad_image(g, img, xp);
        xp
    } else {
        img
    };
    let tap = g.ci * g.co;
    if let (Some(u), Some(xs), Some(yn)) = (wino, as_f32(xs), as_f32_uninit(yn)) {
        let bias = bias.and_then(as_f32);
        let store = Store { width: g.wp, r0: 0, c0: 0, rows: g.oh, cols: g.ow, bias, relu };
        // SAFETY: `winograd_fits` checked AVX-512 and the channel counts; the padded
        // image holds hp x wp pixels.
        unsafe { winograd::corr3x3(xs, (g.hp, g.wp, g.ci), u, g.co, yn, &store, wbuf) };
        return;
    }
    if g.unit_stride() && direct::available(g.co) {
        if let (Some(xs), Some(k), Some(yn)) = (as_f32(xs), as_f32(k), as_f32_uninit(yn)) {
            let bias = bias.and_then(as_f32);
            let store = Store { width: g.wp, r0: 0, c0: 0, rows: g.oh, cols: g.ow, bias, relu };
            let groups = groups(g.kh, g.kw, g.ci, g.co, g.wp, g.p.dilation);
            // SAFETY: AVX-512 and the channel count checked by `available`; the rows
            // read are those of the gemm path, inside the padded image.
            unsafe { direct::corr(g.wide_rows(), g.co, xs, g.ci, &groups, k, yn, &store) };
            return;
        }
    }
    if g.unit_stride() {
        corr_wide(xs, g.wp, k, (g.kh, g.kw, g.ci, g.co), (g.oh, g.ow), g.p.dilation, wide, par);
        let row = g.ow * g.co;
        for r in 0..g.oh {
            let src = r * g.wp * g.co;
            super::copy_uninit(&mut yn[r * row..(r + 1) * row], &wide[src..src + row]);
        }
    } else {
        let sw = g.p.stride.1;
        for (r, t, start) in g.strided_taps() {
            // SAFETY: the strided rows stay inside the padded image by the definition of the
            // output size; the first tap of each row (t = 0) writes it without reading it.
            unsafe {
                mm(
                    g.ow,
                    g.co,
                    g.ci,
                    yn.as_mut_ptr().cast::<T>().add(r * g.ow * g.co),
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
    // SAFETY: every value was written above, row by row.
    epilogue(unsafe { super::assume_init_mut(yn) }, g.co, bias, relu);
}

/// Adds the bias and applies ReLU in place, while the image's output is still in cache.
fn epilogue<T: Float>(y: &mut [T], channels: usize, bias: Option<&[T]>, relu: bool) {
    if bias.is_none() && !relu {
        return;
    }
    for px in y.chunks_exact_mut(channels) {
        if let Some(b) = bias {
            px.iter_mut().zip(b).for_each(|(v, &b)| *v += b);
        }
        if relu {
            px.iter_mut().for_each(|v| {
                if *v < T::ZERO {
                    *v = T::ZERO
                }
            });
        }
    }
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

/// Per-thread buffers of the gradient kernels, reused from image to image.
struct Scratch<T> {
    xp: Vec<T>,
    wide: Vec<T>,
    dypad: Vec<T>,
    dxp: Vec<T>,
    dz: Vec<T>,
    wbuf: winograd::Buffers,
    /// The weight gradient of the images so far in Winograd's domain, when it runs there;
    /// [`finish_weight_grad`] adds it to the group's partial sum.
    wm: Option<winograd::GradAcc>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch {
            xp: Vec::new(),
            wide: Vec::new(),
            dypad: Vec::new(),
            dxp: Vec::new(),
            dz: Vec::new(),
            wbuf: winograd::Buffers::default(),
            wm: None,
        }
    }
}

/// The kernel as the input gradient uses it: whether the stride-1 "full correlation" path
/// applies, the flipped kernel of [`flipped_kernel`], and that kernel in Winograd's domain
/// when [`winograd::corr3x3`] runs it.
#[derive(Clone, Copy)]
struct Flipped<'a, T> {
    full: bool,
    kf: &'a [T],
    wk: Option<&'a winograd::Kernel>,
}

/// The kernel as the input gradient's correlation uses it, when stride and dilation are 1:
/// flipped and transposed, `kf[a][b][o][c] = k[kh-1-a][kw-1-b][c][o]` (empty otherwise).
fn flipped_kernel<T: Float>(g: &Geom, k: &[T]) -> (bool, Vec<T>) {
    let full = g.unit_stride() && g.p.dilation == (1, 1);
    let kf: Vec<T> = if full {
        let mut kf = vec![T::ZERO; k.len()];
        for a in 0..g.kh {
            for b in 0..g.kw {
                let src = ((g.kh - 1 - a) * g.kw + (g.kw - 1 - b)) * g.ci * g.co;
                let dst = (a * g.kw + b) * g.co * g.ci;
                for c in 0..g.ci {
                    for o in 0..g.co {
                        kf[dst + o * g.ci + c] = k[src + c * g.co + o];
                    }
                }
            }
        }
        kf
    } else {
        Vec::new()
    };
    (full, kf)
}

fn input_grad<T: Float>(g: &Geom, dy: &[T], k: &[T]) -> Vec<T> {
    let img_in = g.h * g.w * g.ci;
    let img_out = g.oh * g.ow * g.co;
    let (full, kf) = flipped_kernel(g, k);
    let wk = if full { g.winograd_kernel(&kf, g.co, g.ci, (g.h, g.w)) } else { None };
    let write = |dx: &mut [MaybeUninit<T>]| {
        dx.par_chunks_mut(img_in.max(1)).enumerate().for_each_init(Scratch::default, |s, (n, dxn)| {
            let flipped = Flipped { full, kf: &kf, wk: wk.as_ref() };
            input_grad_image(g, k, flipped, &dy[n * img_out..(n + 1) * img_out], dxn, s)
        })
    };
    // SAFETY: input_grad_image writes every value of its image (see there).
    unsafe { super::output_vec(g.n * img_in, write) }
}

/// The input gradient of one image, `dxn`, from its output gradient `dyn_`. With stride and
/// dilation 1 (`full`) it is the correlation of the output gradient, zero-padded by the kernel
/// size minus one, with the flipped kernel `kf`, through the same merged products as the
/// forward pass, every product writing disjoint rows. Every value of `dxn` is written: by the
/// Winograd or direct kernel's store, or by the copy of each row out of a padded buffer.
fn input_grad_image<T: Float>(
    g: &Geom,
    k: &[T],
    flipped: Flipped<T>,
    dyn_: &[T],
    dxn: &mut [MaybeUninit<T>],
    s: &mut Scratch<T>,
) {
    let par = g.inner_par();
    let tap = g.ci * g.co;
    let Flipped { full, kf, wk } = flipped;
    let Scratch { dxp, wide, dypad, wbuf, .. } = s;
    let (pt, _, pl, _) = g.p.padding;
    let row = g.w * g.ci;
    if full {
        let (ph, pw) = (g.kh - 1, g.kw - 1);
        let wd = g.ow + 2 * pw;
        // Reused across images: the zero border is never written.
        if dypad.len() != (g.oh + 2 * ph) * wd * g.co {
            dypad.clear();
            dypad.resize((g.oh + 2 * ph) * wd * g.co, T::ZERO);
        }
        for r in 0..g.oh {
            let dst = ((r + ph) * wd + pw) * g.co;
            dypad[dst..dst + g.ow * g.co].copy_from_slice(&dyn_[r * g.ow * g.co..(r + 1) * g.ow * g.co]);
        }
        if let (Some(u), Some(a), Some(dst)) = (wk, as_f32(dypad), as_f32_uninit(dxn)) {
            let store = Store { width: wd, r0: pt, c0: pl, rows: g.h, cols: g.w, bias: None, relu: false };
            // SAFETY: `winograd_fits` checked AVX-512 and the channel counts; `dypad` holds
            // (oh + 2 ph) x wd pixels.
            unsafe { winograd::corr3x3(a, (g.oh + 2 * ph, wd, g.co), u, g.ci, dst, &store, wbuf) };
            return;
        }
        if direct::available(g.ci) {
            if let (Some(a), Some(b), Some(dst)) = (as_f32(dypad), as_f32(kf), as_f32_uninit(dxn)) {
                let store = Store { width: wd, r0: pt, c0: pl, rows: g.h, cols: g.w, bias: None, relu: false };
                let groups = groups(g.kh, g.kw, g.co, g.ci, wd, (1, 1));
                let m = (g.hp - 1) * wd + g.wp;
                // SAFETY: AVX-512 and the channel count checked by `available`; the
                // rows read are those of `corr_wide` below, inside `dypad`.
                unsafe { direct::corr(m, g.ci, a, g.co, &groups, b, dst, &store) };
                return;
            }
        }
        corr_wide(dypad, wd, kf, (g.kh, g.kw, g.co, g.ci), (g.hp, g.wp), (1, 1), wide, par);
        for r in 0..g.h {
            let src = ((r + pt) * wd + pl) * g.ci;
            super::copy_uninit(&mut dxn[r * row..(r + 1) * row], &wide[src..src + row]);
        }
        return;
    }
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
        let sw = g.p.stride.1;
        for (r, t, start) in g.strided_taps() {
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
    for r in 0..g.h {
        let src = ((r + pt) * g.wp + pl) * g.ci;
        super::copy_uninit(&mut dxn[r * row..(r + 1) * row], &dxp[src..src + row]);
    }
}

fn weight_grad<T: Float>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let klen = g.kh * g.kw * g.ci * g.co;
    let img_in = g.h * g.w * g.ci;
    let img_out = g.oh * g.ow * g.co;
    // Fixed groups of images, summed in a fixed order: the result does not depend on the
    // number of threads or on scheduling, so a seeded run is bit-reproducible.
    let group = group_size(g.n);
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(group))
        .into_par_iter()
        .map(|grp| {
            let (mut dk, mut s) = (vec![T::ZERO; klen], Scratch::default());
            for n in grp * group..((grp + 1) * group).min(g.n) {
                let (img, dyn_) = (&x[n * img_in..(n + 1) * img_in], &dy[n * img_out..(n + 1) * img_out]);
                weight_grad_image(g, img, dyn_, &mut dk, &mut s);
            }
            finish_weight_grad(&mut s, &mut dk);
            dk
        })
        .collect();
    sum_partials(partials, klen)
}

/// All gradients of a convolution in one pass over the batch, for [`conv2d_backward`]: each
/// group of images masks its output gradient by ReLU (`y > 0`) into a per-thread buffer, adds
/// the bias and weight gradients of each image to the group's partial sums, and writes each
/// image's input gradient, while the image's data is in cache; the partials are summed in a
/// fixed order. Returns `(dx, dk, db)`.
#[allow(clippy::type_complexity)]
fn fused_backward<T: Float>(
    g: &Geom,
    x: &[T],
    k: &[T],
    y: Option<&[T]>,
    dy: &[T],
    need_dx: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let klen = g.kh * g.kw * g.ci * g.co;
    let img_in = g.h * g.w * g.ci;
    let img_out = g.oh * g.ow * g.co;
    let (full, kf) = if need_dx { flipped_kernel(g, k) } else { (false, Vec::new()) };
    let wk = if full { g.winograd_kernel(&kf, g.co, g.ci, (g.h, g.w)) } else { None };
    let group = group_size(g.n);
    let chunk = (group * img_in).max(1);
    let run = |mut dx_chunks: Vec<Option<&mut [MaybeUninit<T>]>>| -> Vec<(Vec<T>, Vec<T>)> {
        dx_chunks
            .par_iter_mut()
            .enumerate()
            .map(|(grp, dx_grp)| {
                let (mut dk, mut db, mut s) = (vec![T::ZERO; klen], vec![T::ZERO; g.co], Scratch::default());
                for (i, n) in (grp * group..((grp + 1) * group).min(g.n)).enumerate() {
                    let dyn_ = &dy[n * img_out..(n + 1) * img_out];
                    let mut dz = std::mem::take(&mut s.dz);
                    let dz_img: &[T] = match y {
                        Some(y) => {
                            dz.resize(img_out, T::ZERO);
                            mask_and_sum(&y[n * img_out..(n + 1) * img_out], dyn_, &mut dz, &mut db);
                            &dz
                        }
                        None => {
                            add_pixels(dyn_, &mut db);
                            dyn_
                        }
                    };
                    weight_grad_image(g, &x[n * img_in..(n + 1) * img_in], dz_img, &mut dk, &mut s);
                    if let Some(dxg) = dx_grp.as_deref_mut() {
                        let flipped = Flipped { full, kf: &kf, wk: wk.as_ref() };
                        input_grad_image(g, k, flipped, dz_img, &mut dxg[i * img_in..(i + 1) * img_in], &mut s);
                    }
                    s.dz = dz;
                }
                finish_weight_grad(&mut s, &mut dk);
                (dk, db)
            })
            .collect()
    };
    let (dx, partials) = if need_dx {
        let mut partials = Vec::new();
        // SAFETY: the groups' chunks cover dx, and input_grad_image writes every value of each
        // image of its group.
        let dx =
            unsafe { super::output_vec(g.n * img_in, |dx| partials = run(dx.chunks_mut(chunk).map(Some).collect())) };
        (Some(dx), partials)
    } else {
        (None, run((0..g.n.div_ceil(group)).map(|_| None).collect()))
    };
    let (dks, dbs): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    (dx, sum_partials(dks, klen), sum_partials(dbs, g.co))
}

/// Adds the Winograd-domain weight gradient gathered in `s` (if any) to `dk` and clears it.
fn finish_weight_grad<T: Float>(s: &mut Scratch<T>, dk: &mut [T]) {
    if let (Some(acc), Some(dk)) = (s.wm.as_mut(), as_f32_mut(dk)) {
        acc.finish(dk);
    }
}

/// ReLU's gradient `dz = dy * (y > 0)` of one image, and the sum of its pixels added to
/// `db`, in one pass; with AVX-512 where the CPU has it.
fn mask_and_sum<T: Float>(y: &[T], dy: &[T], dz: &mut [T], db: &mut [T]) {
    #[inline(always)]
    fn body<T: Float>(y: &[T], dy: &[T], dz: &mut [T], db: &mut [T]) {
        let c = db.len();
        for ((y, dy), dz) in y.chunks_exact(c).zip(dy.chunks_exact(c)).zip(dz.chunks_exact_mut(c)) {
            for (((&y, &d), z), b) in y.iter().zip(dy).zip(dz.iter_mut()).zip(db.iter_mut()) {
                *z = if y > T::ZERO { d } else { T::ZERO };
                *b += *z;
            }
        }
    }
    with_simd!(body(y: &[T], dy: &[T], dz: &mut [T], db: &mut [T]))
}

/// `acc += v` element by element (`v` as long as `acc` or longer); with AVX-512 where the CPU
/// has it. Summing an image's pixels (`acc` one pixel long) goes through [`add_pixels`].
fn add_assign<T: Float>(acc: &mut [T], v: &[T]) {
    #[inline(always)]
    fn body<T: Float>(acc: &mut [T], v: &[T]) {
        acc.iter_mut().zip(v).for_each(|(a, &b)| *a += b);
    }
    with_simd!(body(acc: &mut [T], v: &[T]))
}

/// Adds every pixel of `v` (pixels of `acc.len()` channels) to `acc`.
fn add_pixels<T: Float>(v: &[T], acc: &mut [T]) {
    for px in v.chunks_exact(acc.len()) {
        add_assign(acc, px);
    }
}

/// Images per group of the weight gradient's fixed-order reduction: a function of the batch
/// size alone (never of the thread count), at least 4 and about 16 groups per batch, so that
/// the per-group partial sums stay few (each is as large as the kernel).
fn group_size(n: usize) -> usize {
    (n / 16).max(4)
}

/// The sum of `partials` in their order (fixed, so that results are bit-reproducible), split
/// over the threads by ranges of elements.
fn sum_partials<T: Float>(partials: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut acc = vec![T::ZERO; len];
    acc.par_chunks_mut(4096).enumerate().for_each(|(c, a)| {
        for p in &partials {
            add_assign(a, &p[c * 4096..]);
        }
    });
    acc
}

/// Adds the weight gradient of one image (`img`, output gradient `dyn_`) to `dk`.
/// Call [`finish_weight_grad`] after the last image of a group.
fn weight_grad_image<T: Float>(g: &Geom, img: &[T], dyn_: &[T], dk: &mut Vec<T>, s: &mut Scratch<T>) {
    let par = g.inner_par();
    let tap = g.ci * g.co;
    let Scratch { xp, wide, wm, .. } = s;
    let xs: &[T] = if g.padded() {
        pad_image(g, img, xp);
        xp
    } else {
        img
    };
    if g.winograd_fits(g.ci, g.co) {
        if let (Some(a), Some(d)) = (as_f32(xs), as_f32(dyn_)) {
            let acc = wm.get_or_insert_with(|| winograd::GradAcc::new(g.ci, g.co, (g.oh, g.ow)));
            // SAFETY: `winograd_fits` checked the SIMD level and the channel counts; the
            // padded image holds hp x wp pixels and the gradient oh x ow.
            unsafe { acc.add_image(a, (g.hp, g.wp, g.ci), d, (g.oh, g.ow, g.co)) };
            return;
        }
    }
    if g.unit_stride() && direct::available(g.co) {
        if let (Some(a), Some(d), Some(dkf)) = (as_f32(xs), as_f32(dyn_), as_f32_mut(dk)) {
            let groups = groups(g.kh, g.kw, g.ci, g.co, g.wp, g.p.dilation);
            // SAFETY: AVX-512 and the channel count checked by `available`; the
            // rows read are those of the forward pass.
            unsafe { direct::corr_weight_grad(g.co, a, g.ci, g.wp, (g.oh, g.ow), &groups, d, dkf) };
            return;
        }
    }
    if g.unit_stride() {
        widen(g, dyn_, wide);
        let m = g.wide_rows();
        for (off, koff, kdim) in groups(g.kh, g.kw, g.ci, g.co, g.wp, g.p.dilation) {
            // SAFETY: reads the same rows as the forward pass, transposed.
            unsafe {
                mm(
                    kdim,
                    g.co,
                    m,
                    dk.as_mut_ptr().add(koff),
                    g.co,
                    true,
                    xs.as_ptr().add(off * g.ci),
                    1,
                    g.ci,
                    wide.as_ptr(),
                    g.co,
                    1,
                    par,
                )
            }
        }
    } else {
        let sw = g.p.stride.1;
        for (r, t, start) in g.strided_taps() {
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

/// `relu(conv(x, k) [+ b])`: the convolution with its bias and ReLU fused in.
struct Conv2dOp {
    p: ConvParams,
    relu: bool,
}
struct Conv2dInputGrad(ConvParams, Vec<usize>);
struct Conv2dWeightGrad(ConvParams, Vec<usize>);
/// `dy * (y > 0)`: ReLU's gradient from its output.
struct ReluGrad;
/// Sum over every axis but the last.
struct BiasGrad;

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

fn relu_grad<T: Float>(y: &[T], dy: &[T]) -> Vec<T> {
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
    unsafe { super::output_vec(dy.len(), write) }
}

/// Column sums of a `(rows, c)` matrix, in fixed chunks summed in a fixed order.
fn sum_rows<T: Float>(v: &[T], c: usize) -> Vec<T> {
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
    if super::cpu_kernels(x.device()) {
        let (x, k) = (x.contiguous()?, kernel.contiguous()?);
        let op = Conv2dOp { p, relu };
        match bias {
            Some(b) => x.apply_op3(&k, &b.contiguous()?, op),
            None => x.apply_op2(&k, op),
        }
    } else {
        if p.stride.0 != p.stride.1 || p.dilation.0 != p.dilation.1 {
            candle_core::bail!("conv2d: unequal strides or dilations are only supported on the CPU");
        }
        let (pt, pb, pl, pr) = p.padding;
        let xc = x.permute((0, 3, 1, 2))?.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
        let kc = kernel.permute((3, 2, 0, 1))?.contiguous()?;
        let mut y = xc.conv2d(&kc, 0, p.stride.0, p.dilation.0, 1)?.permute((0, 2, 3, 1))?.contiguous()?;
        if let Some(b) = bias {
            y = y.broadcast_add(b)?;
        }
        if relu {
            y = y.relu()?;
        }
        Ok(y)
    }
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
    if !x.device().is_cpu() {
        candle_core::bail!("conv2d_backward: kandle's own backward pass runs on the CPU");
    }
    let g = Geom::new(x.dims(), k.dims(), p)?;
    if dy.dims() != [g.n, g.oh, g.ow, g.co] || y.dims() != dy.dims() {
        candle_core::bail!("conv2d_backward: output {:?} and its gradient {:?} do not fit", y.dims(), dy.dims());
    }
    let (x, k, y, dy) = (x.contiguous()?, k.contiguous()?, y.contiguous()?, dy.contiguous()?);
    let (dx, dk, db) = match x.dtype() {
        candle_core::DType::F32 => backward_typed::<f32>(&g, (&x, &k, &y, &dy), relu, need_input_grad)?,
        candle_core::DType::F64 => backward_typed::<f64>(&g, (&x, &k, &y, &dy), relu, need_input_grad)?,
        d => candle_core::bail!("conv2d_backward: expected f32 or f64 tensors, received {d:?}"),
    };
    Ok((dx, dk, with_bias.then_some(db)))
}

/// [`fused_backward`] on the tensors' data as `T`, the gradients back as tensors.
fn backward_typed<T: Float>(
    g: &Geom,
    (x, k, y, dy): (&Tensor, &Tensor, &Tensor, &Tensor),
    relu: bool,
    need_dx: bool,
) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
    let guards = [x, k, y, dy].map(|t| t.storage_and_layout());
    let mut slices = Vec::with_capacity(4);
    for (s, l) in &guards {
        match &**s {
            candle_core::Storage::Cpu(s) => slices.push(contiguous(s.as_slice::<T>()?, l, "conv2d_backward")?),
            _ => candle_core::bail!("conv2d_backward: kandle's own backward pass runs on the CPU"),
        }
    }
    let (dx, dk, db) = fused_backward(g, slices[0], slices[1], relu.then_some(slices[2]), slices[3], need_dx);
    let dev = x.device();
    let dx = dx.map(|v| Tensor::from_vec(v, x.dims(), dev)).transpose()?;
    Ok((dx, Tensor::from_vec(dk, k.dims(), dev)?, Tensor::from_vec(db, g.co, dev)?))
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
