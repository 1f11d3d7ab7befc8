//! Winograd's minimal filtering F(2x2, 3x3) for the 3x3 stride-1 correlations of `conv.rs`,
//! in f32, written once over the SIMD layer ([`super::simd`]).
//!
//! A 2x2 block of outputs of a 3x3 correlation needs 2 x 2 x 9 = 36 products per input and
//! output channel pair; Winograd's algorithm gets it from 16, in a transformed domain: each
//! 4x4 input patch `d` becomes `B^T d B`, the kernel `g` becomes `G g G^T` (once per call), the
//! 16 positions of the transformed domain are 16 independent matrix products over the
//! channels (tiles x c_in times c_in x c_out, run by [`direct::corr`]), and `A^T m A` brings
//! each 4x4 result back to its 2x2 outputs, with the bias and ReLU applied on the way out.
//! The transforms only add and subtract (and halve, for the kernel and the output gradient),
//! so the f32 results stay within a few units in the last place of the direct ones (a test
//! compares both with f64); the products are what the convolution layers of the tutorial CNN
//! spend most of their time on, and they become 2.25x fewer.
//!
//! The weight gradient is the dual algorithm, F(3x3, 2x2): each 2x2 tile of the output
//! gradient `y` and the 4x4 input patch under it give the tile's share of the 3x3 kernel
//! gradient as `A'^T [(G' y G'^T) . (B^T d B)] A'`; the patches are transformed as in the forward
//! pass, the 16 positions are 16 products summed over the tiles (run by
//! [`direct::corr_weight_grad`]), and since the back-transform is linear it is applied once
//! per group of images, not per tile.
//!
//! Used when the SIMD level has kernels and both channel counts are multiples of its lanes.

use super::direct::{self, Store};
use super::simd::{simd_entry, Simd};
use std::mem::MaybeUninit;

/// Whether the Winograd path runs here for `c` input and `o` output channels.
pub(crate) fn available(c: usize, o: usize) -> bool {
    let lanes = super::simd::lanes();
    lanes > 0 && c > 0 && c.is_multiple_of(lanes) && direct::available(o)
}

/// Tiles whose transformed inputs and products are computed together: small enough for both
/// to stay in the core's L2 cache with 64 channels.
const TILE_BLOCK: usize = 96;

/// The kernel in the transformed domain, `G g G^T` for each channel pair: 16 matrices of
/// `c x o` (position `4i + j` first) from a `(3, 3, c, o)` kernel.
pub(crate) fn transform_kernel(k: &[f32], c: usize, o: usize) -> Vec<f32> {
    let co = c * o;
    debug_assert_eq!(k.len(), 9 * co);
    let mut u = vec![0f32; 16 * co];
    for e in 0..co {
        let g = |a: usize, b: usize| k[(a * 3 + b) * co + e];
        // G g, one column of the kernel at a time.
        let col =
            |b: usize| [g(0, b), 0.5 * (g(0, b) + g(1, b) + g(2, b)), 0.5 * (g(0, b) - g(1, b) + g(2, b)), g(2, b)];
        let cols = [col(0), col(1), col(2)];
        let t: [[f32; 3]; 4] = std::array::from_fn(|i| [cols[0][i], cols[1][i], cols[2][i]]);
        for (i, t) in t.iter().enumerate() {
            let row = [t[0], 0.5 * (t[0] + t[1] + t[2]), 0.5 * (t[0] - t[1] + t[2]), t[2]];
            for (j, v) in row.into_iter().enumerate() {
                u[(i * 4 + j) * co + e] = v;
            }
        }
    }
    u
}

/// Per-thread buffers of [`corr3x3`] and [`weight_grad3x3`], reused from image to image.
#[derive(Default)]
pub(crate) struct Buffers {
    v: Vec<f32>,
    m: Vec<f32>,
}

/// How an output of `rows x cols` pixels is cut into 2x2 tiles, processed `tb` at a time: `tc`
/// tiles per row, `tiles` in all; the 16 positions of a block are `vs` apart in the input's
/// buffer (`c` channels) and `ms` apart in the other (`o` channels).
struct Tiling {
    tc: usize,
    tiles: usize,
    tb: usize,
    vs: usize,
    ms: usize,
}

impl Buffers {
    /// The tiling of a `rows x cols` output, with both buffers large enough for a block.
    fn prepare(&mut self, (rows, cols): (usize, usize), c: usize, o: usize) -> Tiling {
        let tc = cols.div_ceil(2);
        let tiles = rows.div_ceil(2) * tc;
        let tb = TILE_BLOCK.min(tiles);
        // One cache line between the 16 positions' matrices: with strides that are multiples
        // of 4 KiB the 16 rows of one tile would fall into the same L1 cache set.
        let (vs, ms) = (tb * c + 16, tb * o + 16);
        if self.v.len() < 16 * vs {
            self.v.resize(16 * vs, 0.0);
        }
        if self.m.len() < 16 * ms {
            self.m.resize(16 * ms, 0.0);
        }
        Tiling { tc, tiles, tb, vs, ms }
    }
}

/// The 3x3 correlation of one image `src` (`h x w` pixels of `c` channels) with the kernel `u`
/// of [`transform_kernel`], for the output pixels `(store.r0 + r, store.c0 + q)`, `r <
/// store.rows`, `q < store.cols`, written at `(r * store.cols + q) * o` of `dst` with the
/// store's bias and ReLU. Input pixels past the image's edge count as zeros. (`store.width` is
/// not used.)
///
/// # Safety
/// [`available`]`(c, o)`; `src` holds `h * w * c` values, `u` `16 * c * o`, `dst`
/// `rows * cols * o`, and the bias, if any, `o`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn corr3x3(
    src: &[f32],
    dims: (usize, usize, usize),
    u: &[f32],
    o: usize,
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
    buf: &mut Buffers,
) {
    debug_assert!(available(dims.2, o));
    // SAFETY: the caller's contract.
    unsafe { corr3x3_entry(src, dims, u, o, dst, store, buf) }
}

simd_entry!(unsafe fn corr3x3_entry = corr3x3_simd(
    src: &[f32],
    dims: (usize, usize, usize),
    u: &[f32],
    o: usize,
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
    buf: &mut Buffers,
));

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn corr3x3_simd<S: Simd>(
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    u: &[f32],
    o: usize,
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
    buf: &mut Buffers,
) {
    debug_assert!(src.len() >= h * w * c && u.len() >= 16 * c * o);
    debug_assert!(dst.len() >= store.rows * store.cols * o);
    let Tiling { tc, tiles, tb, vs, ms } = buf.prepare((store.rows, store.cols), c, o);
    let mut t0 = 0;
    while t0 < tiles {
        let nt = tb.min(tiles - t0);
        input_transform::<S>(src, (h, w, c), (store.r0, store.c0), (tc, t0, nt, vs), &mut buf.v);
        for p in 0..16 {
            direct::corr_simd::<S>(
                nt,
                o,
                &buf.v[p * vs..p * vs + nt * c],
                c,
                &[(0, 0, c)],
                &u[p * c * o..(p + 1) * c * o],
                // SAFETY: direct::corr only writes (initialised values) to its destination.
                super::as_uninit_mut(&mut buf.m[p * ms..p * ms + nt * o]),
                &Store::plain(nt),
            );
        }
        output_transform::<S>(&buf.m, o, store, (tc, t0, nt, ms), dst);
        t0 += nt;
    }
}

/// `B^T d B` of the input patch of each tile `t0 .. t0 + nt` (of `tc` per row, the first
/// patch at pixel `(r0, c0)` of `src`), into `v`: position `p` of tile `t` (counted from
/// `t0`), channel `ch`, at `p * vs + t * c + ch`.
#[inline(always)]
unsafe fn input_transform<S: Simd>(
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    (r0, c0): (usize, usize),
    (tc, t0, nt, vs): (usize, usize, usize, usize),
    v: &mut [f32],
) {
    let (sp, vp) = (src.as_ptr(), v.as_mut_ptr());
    let (zero, lanes) = (S::zero(), S::LANES);
    for t in 0..nt {
        let (ti, tj) = ((t0 + t) / tc, (t0 + t) % tc);
        let (y0, x0) = (r0 + 2 * ti, c0 + 2 * tj);
        // The two new columns of the tile four ahead: a layer's input comes from memory, and
        // this loop does too little work per load for the hardware prefetcher to keep up.
        if x0 + 9 < w {
            for a in 0..4.min(h.saturating_sub(y0)) {
                let p = sp.add(((y0 + a) * w + x0 + 8) * c);
                for l in (0..2 * c).step_by(16) {
                    S::prefetch(p.add(l));
                }
            }
        }
        let out = vp.add(t * c);
        if y0 + 4 <= h && x0 + 4 <= w {
            // Inside the image (all tiles but the last row and column of odd sizes): no checks.
            let base = sp.add((y0 * w + x0) * c);
            for cb in (0..c).step_by(lanes) {
                let p = base.add(cb);
                let d: [[S::V; 4]; 4] =
                    std::array::from_fn(|a| std::array::from_fn(|b| S::load(p.add((a * w + b) * c))));
                patch_transform::<S>(&d, out.add(cb), vs);
            }
            continue;
        }
        for cb in (0..c).step_by(lanes) {
            let mut d = [[zero; 4]; 4];
            for (a, row) in d.iter_mut().enumerate() {
                if y0 + a >= h {
                    continue;
                }
                for (b, val) in row.iter_mut().enumerate() {
                    if x0 + b < w {
                        *val = S::load(sp.add(((y0 + a) * w + x0 + b) * c + cb));
                    }
                }
            }
            patch_transform::<S>(&d, out.add(cb), vs);
        }
    }
}

/// `B^T d B` of one 4x4 patch of `S::LANES` channels, its 16 positions stored `vs` apart from
/// `out`.
#[inline(always)]
unsafe fn patch_transform<S: Simd>(d: &[[S::V; 4]; 4], out: *mut f32, vs: usize) {
    // B^T d, one column at a time, then each row of it times B.
    let col = |b: usize| {
        [S::sub(d[0][b], d[2][b]), S::add(d[1][b], d[2][b]), S::sub(d[2][b], d[1][b]), S::sub(d[1][b], d[3][b])]
    };
    let cols = [col(0), col(1), col(2), col(3)];
    let rows: [[S::V; 4]; 4] = std::array::from_fn(|a| cols.map(|c| c[a]));
    for (a, s) in rows.iter().enumerate() {
        let row = [S::sub(s[0], s[2]), S::add(s[1], s[2]), S::sub(s[2], s[1]), S::sub(s[1], s[3])];
        for (b, val) in row.into_iter().enumerate() {
            S::store(out.add((a * 4 + b) * vs), val);
        }
    }
}

/// `A^T m A` of each tile's 16 products in `m` (laid out as `v` of [`input_transform`], with
/// `o` channels and positions `ms` apart), its bias and ReLU, stored in `dst`.
#[inline(always)]
unsafe fn output_transform<S: Simd>(
    m: &[f32],
    o: usize,
    store: &Store,
    (tc, t0, nt, ms): (usize, usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
) {
    let (mp, dp) = (m.as_ptr(), dst.as_mut_ptr().cast::<f32>());
    let zero = S::zero();
    for t in 0..nt {
        let (ti, tj) = ((t0 + t) / tc, (t0 + t) % tc);
        for ob in (0..o).step_by(S::LANES) {
            let at = |a: usize, b: usize| S::load(mp.add((a * 4 + b) * ms + t * o + ob));
            // A^T m, one column at a time.
            let col = |b: usize| {
                let (m0, m1, m2, m3) = (at(0, b), at(1, b), at(2, b), at(3, b));
                (S::add(S::add(m0, m1), m2), S::sub(S::sub(m1, m2), m3))
            };
            let cols = [col(0), col(1), col(2), col(3)];
            let s = [cols.map(|c| c.0), cols.map(|c| c.1)];
            let bias = store.bias.map(|b| S::load(b.as_ptr().add(ob)));
            for (i, s) in s.iter().enumerate() {
                let r = 2 * ti + i;
                if r >= store.rows {
                    continue;
                }
                let y = [S::add(S::add(s[0], s[1]), s[2]), S::sub(S::sub(s[1], s[2]), s[3])];
                for (j, mut val) in y.into_iter().enumerate() {
                    let q = 2 * tj + j;
                    if q >= store.cols {
                        continue;
                    }
                    if let Some(b) = bias {
                        val = S::add(val, b);
                    }
                    if store.relu {
                        val = S::max(val, zero);
                    }
                    S::store(dp.add((r * store.cols + q) * o + ob), val);
                }
            }
        }
    }
}

/// Adds one image's share of the weight gradient, in Winograd's domain, to `acc` (16
/// matrices of `c x o`, position-major as in [`transform_kernel`]): for every 2x2 tile of the
/// output gradient `dy` (`oh x ow x o`, zeros past its edge) and the 4x4 patch of `src`
/// (`h x w x c`, zeros past its edge) under it. [`weight_grad_finish`] turns the sum into
/// the `(3, 3, c, o)` gradient.
///
/// # Safety
/// [`available`]`(c, o)`; `src` holds `h * w * c` values, `dy` `oh * ow * o` and `acc`
/// `16 * c * o`.
pub(crate) unsafe fn weight_grad3x3(
    src: &[f32],
    dims: (usize, usize, usize),
    dy: &[f32],
    out: (usize, usize, usize),
    acc: &mut [f32],
    buf: &mut Buffers,
) {
    debug_assert!(available(dims.2, out.2));
    // SAFETY: the caller's contract.
    unsafe { weight_grad3x3_entry(src, dims, dy, out, acc, buf) }
}

simd_entry!(unsafe fn weight_grad3x3_entry = weight_grad3x3_simd(
    src: &[f32],
    dims: (usize, usize, usize),
    dy: &[f32],
    out: (usize, usize, usize),
    acc: &mut [f32],
    buf: &mut Buffers,
));

#[inline(always)]
unsafe fn weight_grad3x3_simd<S: Simd>(
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    dy: &[f32],
    (oh, ow, o): (usize, usize, usize),
    acc: &mut [f32],
    buf: &mut Buffers,
) {
    debug_assert!(src.len() >= h * w * c && dy.len() >= oh * ow * o && acc.len() >= 16 * c * o);
    let Tiling { tc, tiles, tb, vs, ms: ys } = buf.prepare((oh, ow), c, o);
    let mut t0 = 0;
    while t0 < tiles {
        let nt = tb.min(tiles - t0);
        input_transform::<S>(src, (h, w, c), (0, 0), (tc, t0, nt, vs), &mut buf.v);
        grad_transform::<S>(dy, (oh, ow, o), (tc, t0, nt, ys), &mut buf.m);
        for p in 0..16 {
            direct::weight_grad_simd::<S>(
                o,
                &buf.v[p * vs..p * vs + nt * c],
                c,
                nt,
                1,
                nt,
                &[(0, 0, c)],
                &buf.m[p * ys..p * ys + nt * o],
                &mut acc[p * c * o..(p + 1) * c * o],
            );
        }
        t0 += nt;
    }
}

/// `G' y G'^T` of each 2x2 tile `t0 .. t0 + nt` of the output gradient (zeros past its
/// edge), into `m` laid out as [`input_transform`]'s `v`. `G'` is F(3, 2)'s
/// `[[1, 0], [1/2, 1/2], [1/2, -1/2], [0, -1]]`, its last row negated to match the forward
/// pass's `B^T`, whose last row is `d1 - d3`.
#[inline(always)]
unsafe fn grad_transform<S: Simd>(
    dy: &[f32],
    (oh, ow, o): (usize, usize, usize),
    (tc, t0, nt, ys): (usize, usize, usize, usize),
    m: &mut [f32],
) {
    let (dp, mp) = (dy.as_ptr(), m.as_mut_ptr());
    let (zero, half) = (S::zero(), S::splat(0.5));
    for t in 0..nt {
        let (ti, tj) = ((t0 + t) / tc, (t0 + t) % tc);
        for ob in (0..o).step_by(S::LANES) {
            let at = |u: usize, v: usize| {
                let (r, q) = (2 * ti + u, 2 * tj + v);
                if r < oh && q < ow {
                    S::load(dp.add((r * ow + q) * o + ob))
                } else {
                    zero
                }
            };
            let lift = |a: S::V, b: S::V| [a, S::mul(half, S::add(a, b)), S::mul(half, S::sub(a, b)), S::sub(zero, b)];
            // G' y, one column at a time, then each row of it times G'^T.
            let (c0, c1) = (lift(at(0, 0), at(1, 0)), lift(at(0, 1), at(1, 1)));
            for i in 0..4 {
                for (j, val) in lift(c0[i], c1[i]).into_iter().enumerate() {
                    S::store(mp.add((i * 4 + j) * ys + t * o + ob), val);
                }
            }
        }
    }
}

/// Adds the weight gradient that `acc` (the sum of [`weight_grad3x3`]'s shares) stands for to
/// `dk` (`(3, 3, c, o)`): `A'^T m A'` for each channel pair, with F(3, 2)'s
/// `A'^T = [[1, 1, 1, 0], [0, 1, -1, 0], [0, 1, 1, 1]]`.
pub(crate) fn weight_grad_finish(acc: &[f32], c: usize, o: usize, dk: &mut [f32]) {
    let co = c * o;
    debug_assert!(acc.len() >= 16 * co && dk.len() >= 9 * co);
    let back = |m: [f32; 4]| [m[0] + m[1] + m[2], m[1] - m[2], m[1] + m[2] + m[3]];
    for e in 0..co {
        let m: [[f32; 4]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| acc[(i * 4 + j) * co + e]));
        let cols: [[f32; 3]; 4] = std::array::from_fn(|j| back([m[0][j], m[1][j], m[2][j], m[3][j]]));
        for a in 0..3 {
            for (b, v) in back([cols[0][a], cols[1][a], cols[2][a], cols[3][a]]).into_iter().enumerate() {
                dk[(a * 3 + b) * co + e] += v;
            }
        }
    }
}
