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
//! pair-interleaved output gradient. Elsewhere the direct f32 kernels run on the rounded
//! values, which gives the same products (a product of two bf16 values is exact in f32);
//! not Winograd's, whose transformed operands are no longer bf16 values.

use super::amx::{self, bf16_bits, vec16, Tiles};
use super::backward::{add_pixels, fused_backward_rounding, group_size, mask_and_sum, sum_partials};
use super::rounding::{round_in_place_serial, rounded};
use super::*;

/// Whether the AMX kernels take this convolution.
fn amx_fits(g: &Geom) -> bool {
    g.unit_stride() && g.p.dilation == (1, 1) && g.ci.is_multiple_of(32) && g.co.is_multiple_of(32) && amx::available()
}

/// `relu(conv(x, k) + bias)` with bf16 products, the output rounded to bf16.
pub(super) fn forward(g: &Geom, x: &[f32], k: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    if !amx_fits(g) {
        // Winograd's transformed operands are no longer bf16: the direct kernels' products are.
        let g = Geom { exact: true, ..*g };
        return super::forward::forward_rounding(&g, &rounded(x), &rounded(k), bias, relu, true);
    }
    let taps = g.kh * g.kw;
    let packed = pack_kernel(taps, g.ci, g.co, |t, c, o| k[(t * g.ci + c) * g.co + o]);
    let plan = Plan::new(g.hp, g.wp, g.kh, g.kw, g.oh, g.ow);
    let bias = bias.map_or_else(|| vec![0.0; g.co], |b| b.to_vec());
    let img_out = g.oh * g.ow * g.co;
    let write = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(img_out.max(1)).enumerate().for_each_init(
            || (Aligned::default(), Aligned::default()),
            |(xp, wide), (n, yn)| {
                let img = &x[n * g.h * g.w * g.ci..(n + 1) * g.h * g.w * g.ci];
                let (pt, _, pl, _) = g.p.padding;
                // SAFETY: amx_fits checked AMX (and so AVX-512, AVX512-BF16).
                unsafe { plan.pad(img, (g.h, g.w, g.ci), (pt, pl), xp) };
                plan.correlate(xp, g.ci, &packed, g.co, wide);
                let wide = wide.as_slice();
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
        let g = Geom { exact: true, ..*g };
        return fused_backward_rounding(&g, &rounded(x), &rounded(k), y, dy, need_dx, true);
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
                let mut db = vec![0f32; g.co];
                s.unused.resize(g.co, 0.0);
                s.dkt.clear();
                s.dkt.resize(klen, 0.0);
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
                    // SAFETY: amx_fits checked AMX (and so AVX-512, AVX512-BF16).
                    unsafe {
                        wplan.weight_grad(
                            img,
                            (g.h, g.w, g.ci),
                            (pt, pl),
                            dz,
                            g.co,
                            &mut s.dkt,
                            (&mut s.xv, &mut s.dza),
                        )
                    };
                    if let (Some(dxg), Some(kf)) = (dx_grp.as_deref_mut(), &flipped) {
                        let pad = (g.kh - 1 - pt, g.kw - 1 - pl);
                        // SAFETY: as for the weight gradient.
                        unsafe { dplan.pad(dz, (g.oh, g.ow, g.co), pad, &mut s.xp) };
                        dplan.correlate(&s.xp, g.co, kf, g.ci, &mut s.wide);
                        let dxn = &mut dxg[i * img_in..(i + 1) * img_in];
                        for r in 0..g.h {
                            let src = &s.wide.as_slice()[r * dw * g.ci..][..g.w * g.ci];
                            for (d, &v) in dxn[r * g.w * g.ci..][..g.w * g.ci].iter_mut().zip(src) {
                                d.write(v);
                            }
                        }
                    }
                }
                // dk[t][c][o] from the transposed sums
                let mut dk = vec![0f32; klen];
                for (t, blk) in s.dkt.chunks_exact(g.co * g.ci).enumerate() {
                    for (o, row) in blk.chunks_exact(g.ci).enumerate() {
                        for (c, &v) in row.iter().enumerate() {
                            dk[(t * g.ci + c) * g.co + o] = v;
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
    /// The weight gradient of a group, per tap transposed (`cout x cin`).
    dkt: Vec<f32>,
    xp: Aligned<u16>,
    wide: Aligned<f32>,
    xv: [Aligned<u16>; 2],
    dza: Aligned<u16>,
}

/// A kernel `w(tap, in, out)` as AMX B tiles: for each block of 16 outputs, each tap and each
/// block of 32 inputs, 16 rows of 16 (input pair, output) values.
fn pack_kernel(taps: usize, cin: usize, cout: usize, w: impl Fn(usize, usize, usize) -> f32) -> Aligned<u16> {
    let mut buf = Aligned::default();
    buf.resize(taps * cin * cout);
    let out = buf.as_mut_slice();
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
    buf
}

/// A buffer of `T` (`u16` or `f32`, for which zero bytes are zero) aligned to 64 bytes, a
/// cache line: AMX tile loads and stores that start mid-line run at half speed or less.
pub(super) struct Aligned<T> {
    lines: Vec<Line>,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl<T: Copy> Default for Aligned<T> {
    fn default() -> Self {
        Aligned { lines: Vec::new(), len: 0, _t: std::marker::PhantomData }
    }
}

impl<T: Copy> Aligned<T> {
    /// `len` values; zeros when the length changes, else the values left there (each user
    /// writes the same positions of a buffer of the same length, so the rest stays zero).
    fn resize(&mut self, len: usize) {
        if len != self.len {
            self.lines.clear();
            self.lines.resize((len * std::mem::size_of::<T>()).div_ceil(64), Line([0; 64]));
            self.len = len;
        }
    }

    fn as_slice(&self) -> &[T] {
        // SAFETY: the lines hold at least len values of T (u16 or f32: any bytes are valid).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in as_slice, and the lines are borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
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
        let pixels = (hp * wp).max(rows + taps.last().copied().unwrap_or(0)) + 2;
        Plan { wp, taps, rows, pixels, hp, oh, ow }
    }

    /// Copies an `h x w x c` image into `xp` as bf16, at row `pad.0` and column `pad.1` of
    /// the zero-padded `hp x wp` image (and zeros past it), in blocks of 32 channels: block
    /// `cb` is `pixels x 32` values, so that an A tile (16 pixels of one block) is 1 KB in a row.
    ///
    /// # Safety
    /// The AMX path: the CPU has AVX-512 and AVX512-BF16.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16"))]
    unsafe fn pad(&self, img: &[f32], (h, w, c): (usize, usize, usize), pad: (usize, usize), xp: &mut Aligned<u16>) {
        debug_assert!(pad.0 + h <= self.hp && pad.1 + w <= self.wp && c.is_multiple_of(32));
        xp.resize(self.pixels * c);
        let xp = xp.as_mut_slice();
        for r in 0..h {
            for q in 0..w {
                let p = (r + pad.0) * self.wp + q + pad.1;
                let px = &img[(r * w + q) * c..][..c];
                for cb in 0..c / 32 {
                    let dst = &mut xp[(cb * self.pixels + p) * 32..][..32];
                    // SAFETY: only called on the AMX path (AVX-512 and AVX512-BF16); 32 values.
                    unsafe { vec16::convert(&px[cb * 32..][..32], dst) };
                }
            }
        }
    }

    /// `wide (rows x cout) = sum over taps of xp shifted by the tap (rows x cin) * the tap's
    /// kernel`, on AMX tiles; `cin` and `cout` multiples of 32, `xp` from [`Plan::pad`].
    fn correlate(&self, xp: &Aligned<u16>, cin: usize, packed: &Aligned<u16>, cout: usize, wide: &mut Aligned<f32>) {
        let (xp, packed) = (xp.as_slice(), packed.as_slice());
        assert!(cin.is_multiple_of(32) && cout.is_multiple_of(32) && xp.len() >= self.pixels * cin);
        assert!(packed.len() == self.taps.len() * cin * cout);
        // Every value is stored by the tiles: no zeroing needed.
        wide.resize(self.rows * cout);
        let wide = wide.as_mut_slice();
        let (kb, ntaps) = (cin / 32, self.taps.len());
        // SAFETY: amx_fits checked AMX; every A tile read (pixels m0 + off .. m0 + off + 32 of a
        // block) ends before `pixels` (the plan's room for the last block), every B tile is
        // inside `packed`, every C block inside `wide` (rows in 32s, columns in 32s).
        unsafe {
            let mut tiles = Tiles::new();
            for m0 in (0..self.rows).step_by(32) {
                for n0 in (0..cout).step_by(32) {
                    tiles.zero();
                    for (t, &off) in self.taps.iter().enumerate() {
                        let b0 = packed.as_ptr().add(((n0 / 16) * ntaps + t) * kb * 512);
                        let b1 = b0.add(ntaps * kb * 512);
                        for cb in 0..kb {
                            let a = xp.as_ptr().add((cb * self.pixels + m0 + off) * 32);
                            tiles.step(a, a.add(16 * 32), 64, b0.add(cb * 512), b1.add(cb * 512), 64);
                        }
                    }
                    tiles.store_c(wide.as_mut_ptr().add(m0 * cout + n0), cout * 4);
                }
            }
        }
    }

    /// Adds to `dkt` (`taps x cout x cin`, the transpose of Keras' layout per tap) one image's
    /// weight gradient: `dkt[t][o][c] += sum over q of dz_wide[q][o] * xp[q + tap t][c]`. The
    /// output gradient goes into A tiles (16 outputs x 32 wide rows, each 1 KB in a row), the
    /// image into B tiles as pairs of consecutive pixels, once paired from even pixels and once
    /// from odd ones (a tap at an odd offset starts on an odd pixel), every tile 64-byte aligned.
    ///
    /// # Safety
    /// The AMX path: the CPU has AMX, AVX-512 and AVX512-BF16.
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16"))]
    unsafe fn weight_grad(
        &self,
        img: &[f32],
        (h, w, cin): (usize, usize, usize),
        pad: (usize, usize),
        dz: &[f32],
        cout: usize,
        dkt: &mut [f32],
        (xv, dza): (&mut [Aligned<u16>; 2], &mut Aligned<u16>),
    ) {
        assert!(cin.is_multiple_of(32) && cout.is_multiple_of(32) && dkt.len() == self.taps.len() * cin * cout);
        assert!(dz.len() == self.oh * self.ow * cout && img.len() == h * w * cin);
        // The image pixel at padded position p, if it is one.
        let px = |p: usize| {
            let (r, q) = (p / self.wp, p % self.wp);
            (r >= pad.0 && r < pad.0 + h && q >= pad.1 && q < pad.1 + w)
                .then(|| &img[((r - pad.0) * w + q - pad.1) * cin..][..cin])
        };
        let pairs = self.pixels / 2;
        for (parity, xv) in xv.iter_mut().enumerate() {
            xv.resize(pairs * 2 * cin);
            for (j, pair) in xv.as_mut_slice().chunks_exact_mut(2 * cin).enumerate() {
                let p = 2 * j + parity;
                // SAFETY: the AMX path (AVX-512, AVX512-BF16); rows of cin values.
                unsafe { vec16::interleave(px(p), px(p + 1), pair) };
            }
        }
        // A tiles of the output gradient: tile (qb, ob) holds rows o of block ob, columns q of
        // block qb (32 wide rows), zero in the dropped columns.
        let obs = cout / 16;
        dza.resize(self.rows * cout);
        let valid = (self.oh - 1) * self.wp + self.ow;
        let offsets: Vec<i32> = (0..self.rows)
            .map(|q| {
                if q < valid && q % self.wp < self.ow {
                    (((q / self.wp) * self.ow + q % self.wp) * cout) as i32
                } else {
                    -1
                }
            })
            .collect();
        for (qb, tiles) in dza.as_mut_slice().chunks_exact_mut(obs * 512).enumerate() {
            // SAFETY: the AMX path; offsets index dz (or are -1, masked off), tiles are obs
            // tiles of 16 x 32 values.
            unsafe { vec16::gather_tiles(dz, &offsets[qb * 32..][..32], cout, tiles) };
        }
        let (dza, ntaps) = (dza.as_slice(), self.taps.len());
        // SAFETY: amx_fits checked AMX; A tiles are whole tiles of dza, B tiles read pairs
        // j .. j + 16 <= (rows + largest tap) / 2 < pairs of a parity's copy, 32 channels from
        // c0, and C blocks rows t * cout + o0 .. + 32, columns c0 .. c0 + 32 of dkt.
        unsafe {
            let mut tiles = Tiles::new();
            for (t, &off) in self.taps.iter().enumerate() {
                let xv = xv[off % 2].as_slice();
                for ob in (0..obs).step_by(2) {
                    for c0 in (0..cin).step_by(32) {
                        let c = dkt.as_mut_ptr().add((t * cout + ob * 16) * cin + c0);
                        tiles.load_c(c, cin * 4);
                        for q0 in (0..self.rows).step_by(32) {
                            let a = dza.as_ptr().add(((q0 / 32) * obs + ob) * 512);
                            let b = xv.as_ptr().add(((q0 + off) / 2 * cin + c0) * 2);
                            tiles.step(a, a.add(512), 64, b, b.add(32), cin * 4);
                        }
                        tiles.store_c(c, cin * 4);
                    }
                }
                debug_assert!(ntaps * cout * cin == dkt.len());
            }
        }
    }
}
