//! The backward pass of [`super`]: the input gradient (the output gradient's correlation with
//! the flipped kernel), the weight gradient (per group of images, summed in a fixed order) and
//! both fused with ReLU's mask and the bias gradient in one pass over the batch.

use super::*;

/// Scatters one image's output gradient into the wide layout (zeros past the right edge).
pub(super) fn widen<T: Float>(g: &Geom, dyn_: &[T], wide: &mut Vec<T>) {
    let m = g.wide_rows();
    wide.clear();
    wide.resize(m * g.co, T::ZERO);
    for r in 0..g.oh {
        let dst = r * g.wp * g.co;
        wide[dst..dst + g.ow * g.co].copy_from_slice(&dyn_[r * g.ow * g.co..(r + 1) * g.ow * g.co]);
    }
}

/// Per-thread buffers of the gradient kernels, reused from image to image.
pub(super) struct Scratch<T> {
    xp: AlignedVec<T>,
    wide: Vec<T>,
    dypad: AlignedVec<T>,
    dxp: Vec<T>,
    dz: AlignedVec<T>,
    wbuf: winograd::Buffers,
    /// The weight gradient of the images so far in Winograd's domain, when it runs there;
    /// [`finish_weight_grad`] adds it to the group's partial sum.
    wm: Option<winograd::GradAcc>,
    /// A strided convolution's pixels of one tap, gathered (`oh * ow` rows of channels).
    gather: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch {
            xp: AlignedVec::default(),
            wide: Vec::new(),
            dypad: AlignedVec::default(),
            dxp: Vec::new(),
            dz: AlignedVec::default(),
            wbuf: winograd::Buffers::default(),
            wm: None,
            gather: Vec::new(),
        }
    }
}

/// The kernel as the input gradient uses it: whether the stride-1 "full correlation" path
/// applies, the flipped kernel of [`flipped_kernel`], and that kernel in Winograd's domain
/// when [`winograd::corr3x3`] runs it.
#[derive(Clone, Copy)]
pub(super) struct Flipped<'a, T> {
    full: bool,
    kf: &'a [T],
    wk: Option<&'a winograd::Kernel>,
}

/// The kernel as the input gradient's correlation uses it, when stride and dilation are 1:
/// flipped and transposed, `kf[a][b][o][c] = k[kh-1-a][kw-1-b][c][o]` (empty otherwise).
pub(super) fn flipped_kernel<T: Float>(g: &Geom, k: &[T]) -> (bool, Vec<T>) {
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

pub(super) fn input_grad<T: Float>(g: &Geom, dy: &[T], k: &[T]) -> Vec<T> {
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
    unsafe { crate::kernels::output_vec(g.n * img_in, write) }
}

/// The input gradient of one image, `dxn`, from its output gradient `dyn_`. With stride and
/// dilation 1 (`full`) it is the correlation of the output gradient, zero-padded by the kernel
/// size minus one, with the flipped kernel `kf`, through the same merged products as the
/// forward pass, every product writing disjoint rows. Every value of `dxn` is written: by the
/// Winograd or direct kernel's store, or by the copy of each row out of a padded buffer.
pub(super) fn input_grad_image<T: Float>(
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
    if full {
        stage_padded(g, dyn_, 0, 1, &mut s.dypad);
        if let Some(u) = wk {
            input_grads_staged(g, u, 1, dxn, s);
            return;
        }
    }
    let Scratch { dxp, wide, dypad, gather, .. } = s;
    let (pt, _, pl, _) = g.p.padding;
    let row = g.w * g.ci;
    if full {
        let wd = g.ow + 2 * (g.kw - 1);
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
            crate::kernels::copy_uninit(&mut dxn[r * row..(r + 1) * row], &wide[src..src + row]);
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
        // Per tap, one product for all output pixels (`oh * ow` rows; a product per output row
        // would read the tap's whole kernel for `ow` rows only), then its rows added at their
        // strided input pixels.
        let pixels = g.oh * g.ow;
        gather.resize(pixels * g.ci, T::ZERO);
        for t in 0..g.kh * g.kw {
            // SAFETY: `gather` holds `pixels` rows of `ci` values; `dyn_` the output gradient.
            unsafe {
                mm(
                    pixels,
                    g.ci,
                    g.co,
                    gather.as_mut_ptr(),
                    g.ci,
                    false,
                    dyn_.as_ptr(),
                    g.co,
                    1,
                    k.as_ptr().add(t * tap),
                    1,
                    g.co,
                    par,
                )
            }
            let off = g.tap_offset(t / g.kw, t % g.kw);
            for r in 0..g.oh {
                for c in 0..g.ow {
                    let at = g.strided_at(r, c, off);
                    let src = &gather[(r * g.ow + c) * g.ci..][..g.ci];
                    for (d, &v) in dxp[at..at + g.ci].iter_mut().zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }
    for r in 0..g.h {
        let src = ((r + pt) * g.wp + pl) * g.ci;
        crate::kernels::copy_uninit(&mut dxn[r * row..(r + 1) * row], &dxp[src..src + row]);
    }
}

pub(super) fn weight_grad<T: Float>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let klen = g.kh * g.kw * g.ci * g.co;
    let img_in = g.h * g.w * g.ci;
    let img_out = g.oh * g.ow * g.co;
    // Fixed groups of images, summed in a fixed order: the result does not depend on the
    // number of threads or on scheduling, so a seeded run is bit-reproducible.
    let group = group_size(g.n);
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(group))
        .into_par_iter()
        .map_init(Scratch::default, |s, grp| {
            let mut dk = vec![T::ZERO; klen];
            for n in grp * group..((grp + 1) * group).min(g.n) {
                let (img, dyn_) = (&x[n * img_in..(n + 1) * img_in], &dy[n * img_out..(n + 1) * img_out]);
                weight_grad_image(g, img, dyn_, (g.oh, g.ow), &mut dk, s);
            }
            finish_weight_grad(s, &mut dk);
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
pub(super) fn fused_backward<T: Float>(
    g: &Geom,
    x: &[T],
    k: &[T],
    y: Option<&[T]>,
    dy: &[T],
    need_dx: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    fused_backward_rounding(g, x, k, y, dy, need_dx, false)
}

/// [`fused_backward`], each image's (masked) output gradient rounded to bf16 before anything
/// sums it when `round` (f32 only): the `mixed_bfloat16` path where AMX does not run.
#[allow(clippy::type_complexity)]
pub(super) fn fused_backward_rounding<T: Float>(
    g: &Geom,
    x: &[T],
    k: &[T],
    y: Option<&[T]>,
    dy: &[T],
    need_dx: bool,
    round: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    backward_from(g, x, k, OutGrad::Full { y, dy, round }, need_dx)
}

/// Where each image's output gradient (after the activation) comes from.
#[derive(Clone, Copy)]
pub(super) enum OutGrad<'a, T> {
    /// The gradient of the whole output, masked by ReLU (`y > 0`) when `y` is given, rounded
    /// to bf16 when `round`.
    Full { y: Option<&'a [T]>, dy: &'a [T], round: bool },
    /// The gradient of a max pooling of the output (non-overlapping `pool` windows, no
    /// padding): each pooled value's gradient goes to its window's maximum, at `argmax`
    /// (row-major in the window), and, with ReLU (`relu`), only where that maximum is positive.
    Pooled { pooled: &'a [T], argmax: &'a [u8], dpooled: &'a [T], relu: bool, pool: (usize, usize) },
}

impl<T: Float> OutGrad<'_, T> {
    /// The rows and columns of each image's output gradient that may hold other values than
    /// zeros: all of them, or with pooling those its windows cover (the tutorial's 13x13 maps
    /// pooled by 2: 12x12, whose weight gradient then takes 9 Winograd tiles instead of 16).
    fn covered(&self, g: &Geom) -> (usize, usize) {
        match *self {
            OutGrad::Full { .. } => (g.oh, g.ow),
            OutGrad::Pooled { pool, .. } => (g.oh / pool.0 * pool.0, g.ow / pool.1 * pool.1),
        }
    }

    /// The output gradient of image `n` after the activation, in `dz` when it has to be built
    /// (else `dy` itself), with the sum of its pixels added to `db`.
    fn image<'s>(&'s self, g: &Geom, n: usize, dz: &'s mut AlignedVec<T>, db: &mut [T]) -> &'s [T] {
        let img_out = g.oh * g.ow * g.co;
        match *self {
            OutGrad::Full { y, dy, round } => {
                let dyn_ = &dy[n * img_out..(n + 1) * img_out];
                match y {
                    _ if round => {
                        dz.resize(img_out, T::ZERO);
                        match y {
                            Some(y) => {
                                let mut unused = vec![T::ZERO; g.co];
                                mask_and_sum(&y[n * img_out..(n + 1) * img_out], dyn_, dz, &mut unused)
                            }
                            None => dz.copy_from_slice(dyn_),
                        }
                        if let Some(v) = as_f32_mut(dz) {
                            super::rounding::round_in_place_serial(v);
                        }
                        add_pixels(dz, db);
                        dz
                    }
                    Some(y) => {
                        dz.resize(img_out, T::ZERO);
                        mask_and_sum(&y[n * img_out..(n + 1) * img_out], dyn_, dz, db);
                        dz
                    }
                    None => {
                        add_pixels(dyn_, db);
                        dyn_
                    }
                }
            }
            OutGrad::Pooled { pooled, argmax, dpooled, relu, pool } => {
                let (poh, pow) = (g.oh / pool.0, g.ow / pool.1);
                let img_p = poh * pow * g.co;
                let range = n * img_p..(n + 1) * img_p;
                // Every value is written (zeros off the windows' maxima), so the buffer is
                // only sized, not cleared.
                dz.resize(img_out, T::ZERO);
                scatter_pooled(
                    (g.oh, g.ow, g.co),
                    (poh, pow, pool),
                    (&pooled[range.clone()], &argmax[range.clone()], &dpooled[range]),
                    relu,
                    dz,
                );
                // The bias gradient from the whole map, in the order of the unfused path, so
                // that both give the same sums bit for bit.
                add_pixels(dz, db);
                dz
            }
        }
    }
}

/// Writes each pooled gradient of one image to its window's maximum in `dz` (where the
/// maximum is positive when `relu`) and zeros everywhere else, including the rows and columns
/// past the last whole window: row by row, each window position's channels compared at once
/// (vectorized by the compiler for the SIMD level), so `dz` needs no clearing first.
#[allow(clippy::type_complexity)]
fn scatter_pooled<T: Float>(
    (oh, ow, c): (usize, usize, usize),
    (poh, pow, (ph, pw)): (usize, usize, (usize, usize)),
    (pooled, argmax, dpooled): (&[T], &[u8], &[T]),
    relu: bool,
    dz: &mut [T],
) {
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn body<T: Float>(
        geo: &((usize, usize, usize), (usize, usize, (usize, usize))),
        src: &(&[T], &[u8], &[T]),
        relu: bool,
        dz: &mut [T],
    ) {
        let &((oh, ow, c), (poh, pow, (ph, pw))) = geo;
        let &(pooled, argmax, dpooled) = src;
        let (row_len, covered) = (ow * c, pow * pw * c);
        for (i, row) in dz[..oh * row_len].chunks_exact_mut(row_len).enumerate() {
            let (r, di) = (i / ph, i % ph);
            if r >= poh {
                row.fill(T::ZERO);
                continue;
            }
            for (q, win) in row[..covered].chunks_exact_mut(pw * c).enumerate() {
                let o = (r * pow + q) * c;
                let (p, a, d) = (&pooled[o..o + c], &argmax[o..o + c], &dpooled[o..o + c]);
                for (dj, dst) in win.chunks_exact_mut(c).enumerate() {
                    let pos = (di * pw + dj) as u8;
                    for (((z, &p), &a), &d) in dst.iter_mut().zip(p).zip(a).zip(d) {
                        // Not `p > 0`: a NaN maximum passes its gradient, as ReLU's mask does.
                        let keep = (a == pos) & !(relu & (p <= T::ZERO));
                        *z = if keep { d } else { T::ZERO };
                    }
                }
            }
            row[covered..].fill(T::ZERO);
        }
    }
    let geo = &((oh, ow, c), (poh, pow, (ph, pw)));
    let src = &(pooled, argmax, dpooled);
    with_simd!(body(geo: &((usize, usize, usize), (usize, usize, (usize, usize))), src: &(&[T], &[u8], &[T]), relu: bool, dz: &mut [T]))
}

/// All gradients of a convolution in one pass over the batch (see [`fused_backward`]), the
/// output gradient of each image taken from `src`.
#[allow(clippy::type_complexity)]
pub(super) fn backward_from<T: Float>(
    g: &Geom,
    x: &[T],
    k: &[T],
    src: OutGrad<T>,
    need_dx: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let klen = g.kh * g.kw * g.ci * g.co;
    let img_in = g.h * g.w * g.ci;
    let (full, kf) = if need_dx { flipped_kernel(g, k) } else { (false, Vec::new()) };
    let wk = if full { g.winograd_kernel(&kf, g.co, g.ci, (g.h, g.w)) } else { None };
    let group = group_size(g.n);
    let chunk = (group * img_in).max(1);
    let covered = src.covered(g);
    // Images whose input gradients Winograd's kernels compute together (small maps: their
    // tiles share blocks), their output gradients staged side by side in the padded buffer.
    let together = wk.as_ref().map_or(1, |u| u.images_per_call((g.h, g.w)));
    let run = |mut dx_chunks: Vec<Option<&mut [MaybeUninit<T>]>>| -> Vec<(Vec<T>, Vec<T>)> {
        dx_chunks
            .par_iter_mut()
            .enumerate()
            // One scratch per rayon job, reused from group to group (each group's Winograd sum
            // is finished, and emptied, before the next starts: the results stay independent
            // of the scheduling).
            .map_init(Scratch::default, |s, (grp, dx_grp)| {
                let (mut dk, mut db) = (vec![T::ZERO; klen], vec![T::ZERO; g.co]);
                let images = grp * group..((grp + 1) * group).min(g.n);
                let count = images.len();
                for (i, n) in images.enumerate() {
                    let mut dz = std::mem::take(&mut s.dz);
                    let dz_img = src.image(g, n, &mut dz, &mut db);
                    weight_grad_image(g, &x[n * img_in..(n + 1) * img_in], dz_img, covered, &mut dk, s);
                    if let Some(dxg) = dx_grp.as_deref_mut() {
                        match wk.as_ref() {
                            Some(u) if together > 1 => {
                                let slot = i % together;
                                stage_padded(g, dz_img, slot, together, &mut s.dypad);
                                if slot + 1 == together || i + 1 == count {
                                    let first = i - slot;
                                    input_grads_staged(g, u, slot + 1, &mut dxg[first * img_in..(i + 1) * img_in], s);
                                }
                            }
                            _ => {
                                let flipped = Flipped { full, kf: &kf, wk: wk.as_ref() };
                                input_grad_image(g, k, flipped, dz_img, &mut dxg[i * img_in..(i + 1) * img_in], s);
                            }
                        }
                    }
                    s.dz = dz;
                }
                finish_weight_grad(s, &mut dk);
                (dk, db)
            })
            .collect()
    };
    let (dx, partials) = if need_dx {
        let mut partials = Vec::new();
        // SAFETY: the groups' chunks cover dx, and input_grad_image writes every value of each
        // image of its group.
        let dx = unsafe {
            crate::kernels::output_vec(g.n * img_in, |dx| partials = run(dx.chunks_mut(chunk).map(Some).collect()))
        };
        (Some(dx), partials)
    } else {
        (None, run((0..g.n.div_ceil(group)).map(|_| None).collect()))
    };
    let (dks, dbs): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    (dx, sum_partials(dks, klen), sum_partials(dbs, g.co))
}

/// Copies one image's output gradient `dz` into slot `slot` of `slots` in `dypad`, each slot
/// the gradient zero-padded by the kernel size minus one on every side, as the input
/// gradient's full correlation reads it (see [`input_grad_image`]). The buffer is sized, and
/// zeroed, when its size changes; the borders are never written.
fn stage_padded<T: Float>(g: &Geom, dz: &[T], slot: usize, slots: usize, dypad: &mut AlignedVec<T>) {
    let (ph, pw) = (g.kh - 1, g.kw - 1);
    let wd = g.ow + 2 * pw;
    let one = (g.oh + 2 * ph) * wd * g.co;
    if dypad.len() != slots * one {
        dypad.clear();
        dypad.resize(slots * one, T::ZERO);
    }
    let row = g.ow * g.co;
    for r in 0..g.oh {
        let dst = slot * one + ((r + ph) * wd + pw) * g.co;
        dypad[dst..dst + row].copy_from_slice(&dz[r * row..(r + 1) * row]);
    }
}

/// The input gradients of the first `count` images staged by [`stage_padded`] in
/// `s.dypad`, through Winograd's kernels together, into `dxs` (`count` images): every value
/// is written.
fn input_grads_staged<T: Float>(
    g: &Geom,
    u: &winograd::Kernel,
    count: usize,
    dxs: &mut [MaybeUninit<T>],
    s: &mut Scratch<T>,
) {
    let (ph, pw) = (g.kh - 1, g.kw - 1);
    let wd = g.ow + 2 * pw;
    let dims = (g.oh + 2 * ph, wd, g.co);
    let (pt, _, pl, _) = g.p.padding;
    let (Some(a), Some(dst)) = (as_f32(&s.dypad), as_f32_uninit(dxs)) else {
        // (A kernel in Winograd's domain exists for f32 only.)
        unreachable!("Winograd's input gradient of other values than f32");
    };
    let store = Store { width: wd, r0: pt, c0: pl, rows: g.h, cols: g.w, bias: None, relu: false };
    let batch = winograd::Batch { images: count, src: dims.0 * dims.1 * dims.2, dst: g.h * g.w * g.ci };
    // SAFETY: `winograd_fits` checked the SIMD level and the channel counts (the kernel exists);
    // the staged images hold dims pixels each, and `dxs` the `count` input gradients.
    unsafe { winograd::corr3x3(a, dims, batch, u, g.ci, dst, &store, &mut s.wbuf) };
}

/// Adds the Winograd-domain weight gradient gathered in `s` (if any) to `dk` and clears it.
pub(super) fn finish_weight_grad<T: Float>(s: &mut Scratch<T>, dk: &mut [T]) {
    if let (Some(acc), Some(dk)) = (s.wm.as_mut(), as_f32_mut(dk)) {
        acc.finish(dk);
    }
}

/// ReLU's gradient `dz = dy * (y > 0)` of one image, and the sum of its pixels added to
/// `db`, in one pass; with AVX-512 where the CPU has it.
pub(super) fn mask_and_sum<T: Float>(y: &[T], dy: &[T], dz: &mut [T], db: &mut [T]) {
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
pub(super) fn add_assign<T: Float>(acc: &mut [T], v: &[T]) {
    #[inline(always)]
    fn body<T: Float>(acc: &mut [T], v: &[T]) {
        acc.iter_mut().zip(v).for_each(|(a, &b)| *a += b);
    }
    with_simd!(body(acc: &mut [T], v: &[T]))
}

/// Adds every pixel of `v` (pixels of `acc.len()` channels) to `acc`.
pub(super) fn add_pixels<T: Float>(v: &[T], acc: &mut [T]) {
    for px in v.chunks_exact(acc.len()) {
        add_assign(acc, px);
    }
}

/// Images per group of the weight gradient's fixed-order reduction: a function of the batch
/// size alone (never of the thread count), at least 4 and about 16 groups per batch, so that
/// the per-group partial sums stay few (each is as large as the kernel).
pub(super) fn group_size(n: usize) -> usize {
    (n / 16).max(4)
}

/// The sum of `partials` in their order (fixed, so that results are bit-reproducible), split
/// over the threads by ranges of elements.
pub(super) fn sum_partials<T: Float>(partials: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut acc = vec![T::ZERO; len];
    acc.par_chunks_mut(4096).enumerate().for_each(|(c, a)| {
        for p in &partials {
            add_assign(a, &p[c * 4096..]);
        }
    });
    acc
}

/// Adds the weight gradient of one image (`img`, output gradient `dyn_`, zeros outside its
/// first `covered` rows and columns) to `dk`. Call [`finish_weight_grad`] after the last image
/// of a group.
pub(super) fn weight_grad_image<T: Float>(
    g: &Geom,
    img: &[T],
    dyn_: &[T],
    covered: (usize, usize),
    dk: &mut Vec<T>,
    s: &mut Scratch<T>,
) {
    let par = g.inner_par();
    let tap = g.ci * g.co;
    let Scratch { xp, wide, wm, gather, .. } = s;
    let xs: &[T] = if g.padded() {
        pad_image(g, img, xp);
        xp
    } else {
        img
    };
    if g.winograd_fits(g.ci, g.co) {
        if let (Some(a), Some(d)) = (as_f32(xs), as_f32(dyn_)) {
            let (rows, cols) = covered;
            let acc = wm.get_or_insert_with(|| winograd::GradAcc::new(g.ci, g.co, (rows, cols)));
            // SAFETY: `winograd_fits` checked the SIMD level and the channel counts; the
            // padded image holds hp x wp pixels and the gradient oh x ow, of which the first
            // rows x cols are read.
            unsafe { acc.add_image(a, (g.hp, g.wp, g.ci), d, (rows, cols, g.co), g.ow) };
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
        // Per tap, its strided input pixels gathered into `oh * ow` rows, then one product over
        // all of them (a product per output row would read and write the tap's whole weight
        // gradient for `ow` pixels only).
        let pixels = g.oh * g.ow;
        gather.resize(pixels * g.ci, T::ZERO);
        for t in 0..g.kh * g.kw {
            let off = g.tap_offset(t / g.kw, t % g.kw);
            for r in 0..g.oh {
                for c in 0..g.ow {
                    let at = g.strided_at(r, c, off);
                    gather[(r * g.ow + c) * g.ci..][..g.ci].copy_from_slice(&xs[at..at + g.ci]);
                }
            }
            // SAFETY: `gather` holds `pixels` rows of `ci` values, `dyn_` as many rows of `co`.
            unsafe {
                mm(
                    g.ci,
                    g.co,
                    pixels,
                    dk.as_mut_ptr().add(t * tap),
                    g.co,
                    true,
                    gather.as_ptr(),
                    1,
                    g.ci,
                    dyn_.as_ptr(),
                    g.co,
                    1,
                    par,
                )
            }
        }
    }
}
