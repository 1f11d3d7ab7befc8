//! The forward pass of [`super`]: one image per task, through Winograd's, the direct or the
//! `gemm` kernels, with the bias and ReLU fused in.

use super::*;

pub(super) fn forward<T: Float>(g: &Geom, x: &[T], k: &[T], bias: Option<&[T]>, relu: bool) -> Vec<T> {
    forward_rounding(g, x, k, bias, relu, false)
}

/// [`forward`], each image's output rounded to bf16 while in cache when `round` (f32 only).
pub(super) fn forward_rounding<T: Float>(
    g: &Geom,
    x: &[T],
    k: &[T],
    bias: Option<&[T]>,
    relu: bool,
    round: bool,
) -> Vec<T> {
    let (img_in, img_out) = (g.h * g.w * g.ci, g.oh * g.ow * g.co);
    let par = g.inner_par();
    let wino = g.winograd_kernel(k, g.ci, g.co, (g.oh, g.ow));
    // Images per task: several where Winograd's tiles of one would fill a block only in part.
    let per = wino.as_ref().map_or(1, |u| u.images_per_call((g.oh, g.ow)));
    let write = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut((per * img_out).max(1)).enumerate().for_each_init(
            || (AlignedVec::default(), Vec::new(), winograd::Buffers::default()),
            |(xp, wide, wbuf), (i, ys)| {
                let (n0, count) = (i * per, ys.len() / img_out);
                let imgs = &x[n0 * img_in..(n0 + count) * img_in];
                forward_images(g, imgs, count, k, wino.as_ref(), (bias, relu), ys, (xp, wide, wbuf), par);
                if let (true, Some(ys)) = (round, as_f32_uninit(ys)) {
                    // SAFETY: forward_images wrote every value of ys.
                    let ys = unsafe { &mut *(ys as *mut [MaybeUninit<f32>] as *mut [f32]) };
                    super::rounding::round_in_place_serial(ys);
                }
            },
        )
    };
    // SAFETY: every output value of an image is written by forward_images (see there).
    unsafe { crate::kernels::output_vec(g.n * img_out, write) }
}

/// The convolution of `count` consecutive images `imgs` into `ys`: through Winograd's
/// kernels all together (their tiles in shared blocks), else one by one ([`forward_image`]).
/// Every value of `ys` is written, by the Winograd kernel's store or by `forward_image`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(super) fn forward_images<T: Float>(
    g: &Geom,
    imgs: &[T],
    count: usize,
    k: &[T],
    wino: Option<&winograd::Kernel>,
    (bias, relu): (Option<&[T]>, bool),
    ys: &mut [MaybeUninit<T>],
    (xp, wide, wbuf): (&mut AlignedVec<T>, &mut Vec<T>, &mut winograd::Buffers),
    par: Parallelism,
) {
    let (img_in, img_out) = (g.h * g.w * g.ci, g.oh * g.ow * g.co);
    let xs: &[T] = match wino {
        Some(_) if g.padded() => {
            pad_images(g, imgs, count, xp);
            xp
        }
        _ => imgs,
    };
    // (A kernel in Winograd's domain exists for f32 only.)
    if let (Some(u), Some(xs), Some(ys)) = (wino, as_f32(xs), as_f32_uninit(&mut *ys)) {
        let bias = bias.and_then(as_f32);
        let store = Store { width: g.wp, r0: 0, c0: 0, rows: g.oh, cols: g.ow, bias, relu };
        let batch = winograd::Batch { images: count, src: g.hp * g.wp * g.ci, dst: img_out };
        // SAFETY: `winograd_fits` checked the SIMD level and the channel counts; the (padded)
        // images hold hp x wp pixels each, and `ys` the `count` outputs.
        unsafe { winograd::corr3x3(xs, (g.hp, g.wp, g.ci), batch, u, g.co, ys, &store, wbuf) };
        return;
    }
    for (img, yn) in imgs.chunks_exact(img_in.max(1)).zip(ys.chunks_exact_mut(img_out.max(1))).take(count) {
        forward_image(g, img, k, (bias, relu), yn, (xp, wide), par);
    }
}

/// One image of [`forward_images`] without Winograd's kernels. Every value of `yn` is
/// written: by the direct kernel's store, by the copy of each row out of the wide buffer, or
/// by the first (non-accumulating) product of the strided path; only then is it read (the
/// epilogue).
#[allow(clippy::type_complexity)]
fn forward_image<T: Float>(
    g: &Geom,
    img: &[T],
    k: &[T],
    (bias, relu): (Option<&[T]>, bool),
    yn: &mut [MaybeUninit<T>],
    (xp, wide): (&mut AlignedVec<T>, &mut Vec<T>),
    par: Parallelism,
) {
    let xs: &[T] = if g.padded() {
        pad_image(g, img, xp);
        xp
    } else {
        img
    };
    let tap = g.ci * g.co;
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
            crate::kernels::copy_uninit(&mut yn[r * row..(r + 1) * row], &wide[src..src + row]);
        }
    } else if g.oh * g.ow * g.kh * g.kw * g.ci <= MAX_GATHERED {
        // Every output pixel's taps gathered side by side (`oh * ow` rows of `kh * kw * ci`
        // values, the kernel's own row order), then one product: a product per output row and
        // tap would read the tap's kernel for `ow` pixels only, with `ci` (3 for a first 7x7
        // convolution) as its whole depth.
        let (pixels, depth) = (g.oh * g.ow, g.kh * g.kw * g.ci);
        wide.resize(pixels * depth, T::ZERO);
        // Undilated, a kernel row's taps are consecutive pixels: one copy of `kw * ci` values.
        let (run, taps) = if g.p.dilation.1 == 1 { (g.kw * g.ci, g.kh) } else { (g.ci, g.kh * g.kw) };
        let offs: Vec<usize> = (0..taps)
            .map(|t| if g.p.dilation.1 == 1 { g.tap_offset(t, 0) } else { g.tap_offset(t / g.kw, t % g.kw) })
            .collect();
        for (p, row) in wide.chunks_exact_mut(depth).enumerate() {
            let (r, c) = (p / g.ow, p % g.ow);
            for (dst, &off) in row.chunks_exact_mut(run).zip(&offs) {
                let at = g.strided_at(r, c, off);
                dst.copy_from_slice(&xs[at..at + run]);
            }
        }
        // SAFETY: `wide` holds `pixels` rows of `depth` values, the kernel `depth` rows of `co`,
        // `yn` `pixels` rows of `co` (written, not read).
        unsafe {
            mm(
                pixels,
                g.co,
                depth,
                yn.as_mut_ptr().cast::<T>(),
                g.co,
                false,
                wide.as_ptr(),
                depth,
                1,
                k.as_ptr(),
                g.co,
                1,
                par,
            )
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
    epilogue(unsafe { crate::kernels::assume_init_mut(yn) }, g.co, bias, relu);
}

/// The most values a strided convolution gathers for one image (16 MiB of f32); past it,
/// a product per output row and tap.
const MAX_GATHERED: usize = 4 << 20;

/// Adds the bias and applies ReLU in place, while the image's output is still in cache.
pub(super) fn epilogue<T: Float>(y: &mut [T], channels: usize, bias: Option<&[T]>, relu: bool) {
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

/// [`forward`] followed by a max pooling of non-overlapping `pool` windows without padding
/// (`oh / pool.0 x ow / pool.1` outputs; rows and columns past the last whole window are
/// dropped, as Keras' 'valid' pooling does): each image's convolution is pooled while in cache
/// and never stored. Returns the pooled output and, for each pooled value, the position of its
/// window's first maximum in row-major order (what the max pooling's gradient follows).
pub(super) fn forward_pooled<T: Float>(
    g: &Geom,
    x: &[T],
    k: &[T],
    (bias, relu): (Option<&[T]>, bool),
    pool: (usize, usize),
) -> (Vec<T>, Vec<u8>) {
    let (poh, pow) = (g.oh / pool.0, g.ow / pool.1);
    // Only the rows and columns that a window covers are computed (the tutorial's 13x13 maps:
    // 12x12, 9 Winograd tiles instead of 16), with the tile the whole map would take, so that
    // every value is the unfused convolution's.
    let wino = g.winograd_kernel(k, g.ci, g.co, (g.oh, g.ow));
    let g = &Geom { oh: poh * pool.0, ow: pow * pool.1, ..*g };
    let img_out = g.oh * g.ow * g.co;
    let img_p = poh * pow * g.co;
    let par = g.inner_par();
    let mut argmax = vec![0u8; g.n * img_p];
    let img_in = g.h * g.w * g.ci;
    // Images per task, as in the unpooled pass (the covered map's tiles).
    let per = wino.as_ref().map_or(1, |u| u.images_per_call((g.oh, g.ow)));
    let chunk = (per * img_p).max(1);
    let write = |out: &mut [MaybeUninit<T>]| {
        out.par_chunks_mut(chunk).zip(argmax.par_chunks_mut(chunk)).enumerate().for_each_init(
            || (AlignedVec::default(), Vec::new(), winograd::Buffers::default(), AlignedVec::default()),
            |(xp, wide, wbuf, yb), (i, (ps, args))| {
                let (n0, count) = (i * per, ps.len() / img_p);
                yb.resize(count * img_out, T::ZERO);
                // SAFETY: forward_images writes only initialised values.
                let ys = unsafe { crate::kernels::as_uninit_mut(yb) };
                let imgs = &x[n0 * img_in..(n0 + count) * img_in];
                forward_images(g, imgs, count, k, wino.as_ref(), (bias, relu), ys, (xp, wide, wbuf), par);
                for ((y, pn), an) in
                    yb.chunks_exact(img_out).zip(ps.chunks_exact_mut(img_p)).zip(args.chunks_exact_mut(img_p))
                {
                    pool_image((g.ow, g.co), (poh, pow, pool), y, pn, an);
                }
            },
        )
    };
    // SAFETY: pool_image writes every pooled value of its image.
    let pooled = unsafe { crate::kernels::output_vec(g.n * img_p, write) };
    (pooled, argmax)
}

/// The max pooling of one image's output `y` (`ow` pixels a row of `c` channels) into `out`,
/// with each maximum's position in its window in `argmax`: the first maximum in row-major
/// order, as the max pooling's own gradient takes it; NaN wins, as in its forward pass.
#[allow(clippy::type_complexity)]
fn pool_image<T: Float>(
    (ow, c): (usize, usize),
    (poh, pow, (ph, pw)): (usize, usize, (usize, usize)),
    y: &[T],
    out: &mut [MaybeUninit<T>],
    argmax: &mut [u8],
) {
    #[inline(always)]
    fn body<T: Float>(dims: [usize; 6], y: &[T], out: &mut [MaybeUninit<T>], argmax: &mut [u8]) {
        let [ow, c, poh, pow, ph, pw] = dims;
        for r in 0..poh {
            for q in 0..pow {
                let o = (r * pow + q) * c;
                let (best, idx) = (&mut out[o..o + c], &mut argmax[o..o + c]);
                let first = ((r * ph) * ow + q * pw) * c;
                let best = crate::kernels::copy_uninit(best, &y[first..first + c]);
                idx.fill(0);
                for a in 1..ph * pw {
                    let px = ((r * ph + a / pw) * ow + q * pw + a % pw) * c;
                    for ((b, i), &v) in best.iter_mut().zip(idx.iter_mut()).zip(&y[px..px + c]) {
                        let take = v > *b || (v.is_nan() && !b.is_nan());
                        *b = if take { v } else { *b };
                        *i = if take { a as u8 } else { *i };
                    }
                }
            }
        }
    }
    let dims = [ow, c, poh, pow, ph, pw];
    with_simd!(body(dims: [usize; 6], y: &[T], out: &mut [MaybeUninit<T>], argmax: &mut [u8]))
}
