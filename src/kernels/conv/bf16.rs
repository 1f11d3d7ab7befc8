//! The convolution with bf16 products and f32 accumulation, for Keras' `mixed_bfloat16`
//! policy: the input, the kernel and (backward) the output gradient are rounded to bf16
//! (to nearest, ties to even), every product of two bf16 values is summed in f32, and the
//! forward output (after bias and ReLU) is rounded to bf16 as Keras' bf16 activations are.
//!
//! Where AMX runs ([`amx::available`]) and the convolution is stride 1, undilated, with input
//! and output channels in multiples of 32, every pass is a product on AMX tiles straight
//! from a bf16 copy of the image, in the "wide" layout of the f32 path (output rows as wide
//! as the padded input, the extra columns computed and dropped), so no column matrix is
//! built: the forward pass and the input gradient read their A tiles from the padded image
//! (rows `cin` values apart), and the weight gradient reads the image transposed against the
//! pair-interleaved output gradient. Elsewhere the f32 kernels run on the rounded values,
//! which gives the same products (a product of two bf16 values is exact in f32).

use super::backward::{add_pixels, fused_backward, group_size, mask_and_sum, sum_partials};
use super::*;
use crate::kernels::amx::vec16;
use crate::kernels::amx::{self, bf16_bits, round_bf16, Tiles};

/// `v` with each value rounded to bf16.
pub(crate) fn rounded(v: &[f32]) -> Vec<f32> {
    let mut out = v.to_vec();
    round_in_place(&mut out);
    out
}

/// Rounds each value of `v` to bf16, in parallel chunks.
pub(crate) fn round_in_place(v: &mut [f32]) {
    let simd = amx::available();
    v.par_chunks_mut(1 << 14).for_each(|c| {
        if simd {
            // SAFETY: AMX's CPUs have AVX512-BF16 (checked by amx::available).
            unsafe { vec16::round(c) }
        } else {
            c.iter_mut().for_each(|x| *x = round_bf16(*x))
        }
    });
}

/// Rounds each value of `v` to bf16 on this thread.
fn round_in_place_serial(v: &mut [f32]) {
    if amx::available() {
        // SAFETY: AMX's CPUs have AVX512-BF16 (checked by amx::available).
        unsafe { vec16::round(v) }
    } else {
        v.iter_mut().for_each(|x| *x = round_bf16(*x))
    }
}

/// Whether the AMX kernels take this convolution.
fn amx_fits(g: &Geom) -> bool {
    g.unit_stride() && g.p.dilation == (1, 1) && g.ci.is_multiple_of(32) && g.co.is_multiple_of(32) && amx::available()
}

/// `relu(conv(x, k) + bias)` with bf16 products, the output rounded to bf16.
pub(super) fn forward(g: &Geom, x: &[f32], k: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    if !amx_fits(g) {
        let mut y = super::forward::forward(g, &rounded(x), &rounded(k), bias, relu);
        round_in_place(&mut y);
        return y;
    }
    let taps = g.kh * g.kw;
    let packed = pack_kernel(taps, g.ci, g.co, |t, c, o| k[(t * g.ci + c) * g.co + o]);
    let plan = Plan::new(g.hp, g.wp, g.kh, g.kw, g.oh, g.ow);
    let bias = bias.map_or_else(|| vec![0.0; g.co], |b| b.to_vec());
    let img_out = g.oh * g.ow * g.co;
    let write = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(img_out.max(1)).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(xp, wide), (n, yn)| {
                let img = &x[n * g.h * g.w * g.ci..(n + 1) * g.h * g.w * g.ci];
                let (pt, _, pl, _) = g.p.padding;
                plan.pad(img, (g.h, g.w, g.ci), (pt, pl), xp);
                plan.correlate(xp, g.ci, &packed, g.co, wide);
                for r in 0..g.oh {
                    let src = &wide[r * g.wp * g.co..][..g.ow * g.co];
                    let dst = &mut yn[r * g.ow * g.co..][..g.ow * g.co];
                    // SAFETY: AMX's CPUs have AVX-512 and AVX512-BF16 (amx_fits checked AMX);
                    // both rows hold whole pixels of g.co (a multiple of 32) values.
                    unsafe { vec16::epilogue(src, dst, &bias, relu) };
                }
            },
        )
    };
    // SAFETY: each image's chunk is written row by row, every value of every output row.
    unsafe { crate::kernels::output_vec(g.n * img_out, write) }
}

/// The gradients of [`forward`] (`dx` when `need_dx`, `dk`, `db`), with bf16 products: the
/// output gradient (masked by ReLU, `y > 0`, when `y` is given), the input and the kernel
/// rounded to bf16, the sums in f32.
#[allow(clippy::type_complexity)]
pub(super) fn backward(
    g: &Geom,
    x: &[f32],
    k: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    if !amx_fits(g) {
        return fused_backward(g, &rounded(x), &rounded(k), y, &rounded(dy), need_dx);
    }
    let taps = g.kh * g.kw;
    let klen = taps * g.ci * g.co;
    let (img_in, img_out) = (g.h * g.w * g.ci, g.oh * g.ow * g.co);
    // The input gradient: the output gradient padded by (kernel - 1 - padding) correlated
    // with the flipped kernel, input and output channels swapped.
    let (pt, pb, pl, pr) = g.p.padding;
    let (dh, dw) = (g.oh + 2 * (g.kh - 1) - pt - pb, g.ow + 2 * (g.kw - 1) - pl - pr);
    let flipped = need_dx.then(|| pack_kernel(taps, g.co, g.ci, |t, o, c| k[((taps - 1 - t) * g.ci + c) * g.co + o]));
    let dplan = Plan::new(dh, dw, g.kh, g.kw, g.h, g.w);
    // The weight gradient: the padded input (transposed) against the output gradient.
    let wplan = Plan::new(g.hp, g.wp, g.kh, g.kw, g.oh, g.ow);
    let group = group_size(g.n);
    let run = |mut dx_chunks: Vec<Option<&mut [MaybeUninit<f32>]>>| -> Vec<(Vec<f32>, Vec<f32>)> {
        dx_chunks
            .par_iter_mut()
            .enumerate()
            .map_init(Scratch::default, |s, (grp, dx_grp)| {
                let (mut dk, mut db) = (vec![0f32; klen], vec![0f32; g.co]);
                s.unused.resize(g.co, 0.0);
                for (i, n) in (grp * group..((grp + 1) * group).min(g.n)).enumerate() {
                    let dyn_ = &dy[n * img_out..(n + 1) * img_out];
                    s.dz.resize(img_out, 0.0);
                    match y {
                        Some(y) => mask_and_sum(&y[n * img_out..(n + 1) * img_out], dyn_, &mut s.dz, &mut s.unused),
                        None => s.dz.copy_from_slice(dyn_),
                    }
                    // Rounded before the bias gradient sums it, as the products take it.
                    round_in_place_serial(&mut s.dz);
                    add_pixels(&s.dz, &mut db);
                    let dz = &s.dz;
                    let img = &x[n * img_in..(n + 1) * img_in];
                    wplan.weight_grad(img, (g.h, g.w, g.ci), (pt, pl), dz, g.co, &mut dk, (&mut s.xt, &mut s.dzv));
                    if let (Some(dxg), Some(kf)) = (dx_grp.as_deref_mut(), &flipped) {
                        let pad = (g.kh - 1 - pt, g.kw - 1 - pl);
                        dplan.pad(dz, (g.oh, g.ow, g.co), pad, &mut s.xp);
                        dplan.correlate(&s.xp, g.co, kf, g.ci, &mut s.wide);
                        let dxn = &mut dxg[i * img_in..(i + 1) * img_in];
                        for r in 0..g.h {
                            let src = &s.wide[r * dw * g.ci..][..g.w * g.ci];
                            for (d, &v) in dxn[r * g.w * g.ci..][..g.w * g.ci].iter_mut().zip(src) {
                                d.write(v);
                            }
                        }
                    }
                }
                (dk, db)
            })
            .collect()
    };
    let chunk = (group * img_in).max(1);
    let (dx, partials) = if need_dx {
        let mut partials = Vec::new();
        // SAFETY: the groups' chunks cover dx, and each image of a group has every row of its
        // input gradient copied out of the wide buffer.
        let dx = unsafe {
            crate::kernels::output_vec(g.n * img_in, |dx| partials = run(dx.chunks_mut(chunk).map(Some).collect()))
        };
        (Some(dx), partials)
    } else {
        (None, run((0..g.n.div_ceil(group)).map(|_| None).collect()))
    };
    let (dks, dbs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = partials.into_iter().unzip();
    (dx, sum_partials(dks, klen), sum_partials(dbs, g.co))
}

/// Per-thread buffers of the backward pass.
#[derive(Default)]
struct Scratch {
    dz: Vec<f32>,
    /// The bias gradient of an unrounded `dz`, not used.
    unused: Vec<f32>,
    xp: Vec<u16>,
    wide: Vec<f32>,
    xt: Vec<u16>,
    dzv: Vec<u16>,
}

/// A kernel `w(tap, in, out)` as AMX B tiles: for each block of 16 outputs, each tap and each
/// block of 32 inputs, 16 rows of 16 (input pair, output) values.
fn pack_kernel(taps: usize, cin: usize, cout: usize, w: impl Fn(usize, usize, usize) -> f32) -> Vec<u16> {
    let mut out = vec![0u16; taps * cin * cout];
    let mut i = 0;
    for ob in 0..cout / 16 {
        for t in 0..taps {
            for cb in 0..cin / 32 {
                for r in 0..16 {
                    for j in 0..16 {
                        for e in 0..2 {
                            out[i] = bf16_bits(w(t, cb * 32 + 2 * r + e, ob * 16 + j));
                            i += 1;
                        }
                    }
                }
            }
        }
    }
    out
}

/// The geometry of one stride-1 correlation of a padded image (`hp x wp` pixels) with a
/// `kh x kw` kernel into `oh x ow` outputs, in the wide layout (output `(r, q)` at row
/// `r * wp + q`), its rows rounded up to the 32 of a block of two A tiles.
struct Plan {
    wp: usize,
    taps: Vec<usize>,
    /// Wide rows computed: `(oh - 1) * wp + ow` rounded up to 32.
    rows: usize,
    /// Pixels of the padded bf16 image: the image, and room for the last block's reads.
    pixels: usize,
    hp: usize,
    oh: usize,
    ow: usize,
}

impl Plan {
    fn new(hp: usize, wp: usize, kh: usize, kw: usize, oh: usize, ow: usize) -> Plan {
        let taps: Vec<usize> = (0..kh * kw).map(|t| (t / kw) * wp + t % kw).collect();
        let rows = ((oh - 1) * wp + ow).div_ceil(32) * 32;
        let pixels = (hp * wp).max(rows + taps.last().copied().unwrap_or(0));
        Plan { wp, taps, rows, pixels, hp, oh, ow }
    }

    /// Copies an `h x w x c` image into `xp` as bf16, at row `pad.0` and column `pad.1` of
    /// the zero-padded `hp x wp` image (and zeros past it).
    fn pad(&self, img: &[f32], (h, w, c): (usize, usize, usize), pad: (usize, usize), xp: &mut Vec<u16>) {
        debug_assert!(pad.0 + h <= self.hp && pad.1 + w <= self.wp);
        // A buffer of this plan's size keeps its zeros: only the image's pixels are written.
        if xp.len() != self.pixels * c {
            xp.clear();
            xp.resize(self.pixels * c, 0);
        }
        for r in 0..h {
            let dst = &mut xp[((r + pad.0) * self.wp + pad.1) * c..][..w * c];
            // SAFETY: only called on the AMX path (AVX-512 and AVX512-BF16); rows of w * c
            // values, c a multiple of 32.
            unsafe { vec16::convert(&img[r * w * c..(r + 1) * w * c], dst) };
        }
    }

    /// `wide (rows x cout) = sum over taps of xp shifted by the tap (rows x cin) * the tap's
    /// kernel`, on AMX tiles; `cin` and `cout` multiples of 32, `xp` from [`Plan::pad`].
    fn correlate(&self, xp: &[u16], cin: usize, packed: &[u16], cout: usize, wide: &mut Vec<f32>) {
        assert!(cin.is_multiple_of(32) && cout.is_multiple_of(32) && xp.len() >= self.pixels * cin);
        assert!(packed.len() == self.taps.len() * cin * cout);
        // Every value is stored by the tiles: no zeroing.
        wide.resize(self.rows * cout, 0.0);
        let (kb, ntaps) = (cin / 32, self.taps.len());
        // SAFETY: amx_fits checked AMX; every A tile read (rows m0 + off .. m0 + off + 32 of
        // cin values) ends before `pixels` (the plan's room for the last block), every B tile
        // inside `packed`, every C block inside `wide` (rows in 32s, columns in 32s).
        unsafe {
            let mut tiles = Tiles::new();
            for m0 in (0..self.rows).step_by(32) {
                for n0 in (0..cout).step_by(32) {
                    tiles.zero();
                    for (t, &off) in self.taps.iter().enumerate() {
                        let a0 = xp.as_ptr().add((m0 + off) * cin);
                        let b0 = packed.as_ptr().add(((n0 / 16) * ntaps + t) * kb * 512);
                        let b1 = b0.add(ntaps * kb * 512);
                        for cb in 0..kb {
                            let a = a0.add(cb * 32);
                            tiles.step(a, a.add(16 * cin), cin * 2, b0.add(cb * 512), b1.add(cb * 512), 64);
                        }
                    }
                    tiles.store_c(wide.as_mut_ptr().add(m0 * cout + n0), cout * 4);
                }
            }
        }
    }

    /// Adds to `dk` (`taps x cin x cout`, Keras' layout) one image's weight gradient:
    /// `dk[t][c][o] += sum over q of xp[q + tap t][c] * dz_wide[q][o]`, with `xt` the padded
    /// image transposed (`cin` rows) and `dzv` the output gradient in the wide layout, pair
    /// interleaved (zero in the dropped columns), both bf16.
    #[allow(clippy::too_many_arguments)]
    fn weight_grad(
        &self,
        img: &[f32],
        (h, w, cin): (usize, usize, usize),
        pad: (usize, usize),
        dz: &[f32],
        cout: usize,
        dk: &mut [f32],
        (xt, dzv): (&mut Vec<u16>, &mut Vec<u16>),
    ) {
        assert!(cin.is_multiple_of(32) && cout.is_multiple_of(32) && dk.len() == self.taps.len() * cin * cout);
        assert!(dz.len() == self.oh * self.ow * cout && img.len() == h * w * cin);
        // Row length of the transposed image: every column an A tile reads.
        let len = self.pixels;
        // As in pad: the same plan writes the same positions, the others stay zero.
        if xt.len() != cin * len {
            xt.clear();
            xt.resize(cin * len, 0);
        }
        for r in 0..h {
            let p = (r + pad.0) * self.wp + pad.1;
            // SAFETY: the AMX path (AVX-512, AVX512-BF16); row r of the image holds w pixels of
            // cin values, and each of the cin rows of xt has room for p + w <= hp * wp values.
            unsafe { vec16::transpose_row(&img[r * w * cin..(r + 1) * w * cin], cin, &mut xt[p..], len) };
        }
        dzv.resize(self.rows * cout, 0); // every pair is written below
                                         // The pixel of wide row q, if it is one (not a dropped column, not past the end).
        let row = |q: usize| {
            (q < (self.oh - 1) * self.wp + self.ow && q % self.wp < self.ow)
                .then(|| &dz[((q / self.wp) * self.ow + q % self.wp) * cout..][..cout])
        };
        for (j, pair) in dzv.chunks_exact_mut(2 * cout).enumerate() {
            // SAFETY: the AMX path (AVX-512, AVX512-BF16); rows of cout values, pair of 2 cout.
            unsafe { vec16::interleave(row(2 * j), row(2 * j + 1), pair) };
        }
        let kb = cin / 32;
        // SAFETY: amx_fits checked AMX; A tiles read columns q0 + off .. + 32 < len of rows
        // c0 .. c0 + 32 <= cin of xt, B tiles rows q0 / 2 .. + 16 < rows / 2 of dzv, and C
        // blocks rows t * cin + c0 .. + 32, columns o0 .. o0 + 32 of dk.
        unsafe {
            let mut tiles = Tiles::new();
            for (t, &off) in self.taps.iter().enumerate() {
                for cb in 0..kb {
                    for o0 in (0..cout).step_by(32) {
                        let c = dk.as_mut_ptr().add((t * cin + cb * 32) * cout + o0);
                        tiles.load_c(c, cout * 4);
                        let a0 = xt.as_ptr().add(cb * 32 * len + off);
                        for q0 in (0..self.rows).step_by(32) {
                            let a = a0.add(q0);
                            let b = dzv.as_ptr().add((q0 / 2) * cout * 2 + o0 * 2);
                            tiles.step(a, a.add(16 * len), len * 2, b, b.add(32), cout * 4);
                        }
                        tiles.store_c(c, cout * 4);
                    }
                }
            }
        }
    }
}
