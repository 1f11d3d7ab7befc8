//! Winograd's minimal filtering F(2x2, 3x3), F(4x4, 3x3) and F(6x6, 3x3) for the 3x3 stride-1 correlations
//! of `conv`, in f32, written once over the SIMD layer ([`super::simd`]).
//!
//! A 2x2 block of outputs of a 3x3 correlation needs 2 x 2 x 9 = 36 products per input and
//! output channel pair; Winograd's algorithm gets it from 16, in a transformed domain: each
//! 4x4 input patch `d` becomes `B^T d B`, the kernel `g` becomes `G g G^T` (once per call), the
//! 16 positions of the transformed domain are 16 independent matrix products over the
//! channels (tiles x c_in times c_in x c_out, run by [`direct::corr`]), and `A^T m A` brings
//! each 4x4 result back to its 2x2 outputs, with the bias and ReLU applied on the way out.
//! F(4x4, 3x3) does the same with 6x6 patches and 36 positions for a 4x4 block of outputs:
//! 2.25 products per output instead of F(2x2, 3x3)'s 4 (and the direct kernel's 9), and
//! fewer loads and stores per output in the transforms; its transforms multiply by 2, 4, 5
//! and 8 and its kernel transform by sixths, so its f32 results round more (a test compares
//! both with f64). F(6x6, 3x3) takes 8x8 patches and 64 positions for a 6x6 block: 1.78
//! products per output, with the points 0, +-1, +-1/2, +-2 (its f32 error measured about 1.5x
//! F(4x4)'s); it pays where its tiles cover a map with less waste, as on the tutorial's 30x30
//! maps (25 tiles, where F(4x4)'s 64 cover 32x32). [`Tile::for_output`] picks the tile with
//! the fewest products among those the map is large enough for.
//! The products are what the convolution layers of the tutorial CNN spend most of their time
//! on.
//!
//! The weight gradient is the dual algorithm, F(3x3, 2x2) (or F(3x3, 4x4) on large maps): each
//! tile of the output gradient `y` and the input patch under it give the tile's share of the
//! 3x3 kernel gradient as `A'^T [(G' y G'^T) . (B^T d B)] A'`; the patches are transformed as in
//! the forward pass, the positions are products summed over the tiles (run by
//! [`direct::corr_weight_grad`]'s kernel), in blocks that gather the tiles of several images
//! when the map is small ([`GradAcc`]), and since the back-transform is linear it is applied
//! once per group of images, not per tile.
//!
//! Used when the SIMD level has kernels and both channel counts are multiples of its lanes.

use super::direct::{self, Store};
use crate::kernels::simd::{simd_entry, Simd};
use crate::kernels::{AlignedBuf, Float};
use rayon::prelude::*;
use std::mem::MaybeUninit;

mod buffers;
mod grad;

pub(crate) use buffers::Buffers;
use buffers::{Tiling, SPARE_MAX_VALUES};

pub(crate) use grad::GradAcc;

/// Whether the Winograd path runs here for `c` input and `o` output channels.
pub(crate) fn available(c: usize, o: usize) -> bool {
    let lanes = crate::kernels::simd::lanes();
    lanes > 0 && c > 0 && c.is_multiple_of(lanes) && direct::available(o)
}

/// Tiles whose transformed inputs and products are computed together with F(2x2, 3x3): small
/// enough for both to stay in the core's L2 cache with 64 channels. F(4x4, 3x3) takes as many
/// positions' worth (16/36 as many tiles).
const TILE_BLOCK: usize = 96;

/// The fewest F(4x4, 3x3) tiles per image for which [`Tile::for_output`] picks it (13x13 maps
/// and larger).
const MIN_F4_TILES: usize = 16;

/// The fewest F(6x6, 3x3) tiles per image for which [`Tile::for_output`] picks it.
const MIN_F6_TILES: usize = 16;

/// The fewest F(3x3, 4x4) tiles per image for which the weight gradient takes it (maps of
/// 9x9 to 12x12 and larger): on a 4x4 map (one tile) it ran 18% slower than F(3x3, 2x2); on
/// the tutorial's 15x15 and 13x13 maps 25% and 12% faster, and 26% on the 12x12 that a 13x13
/// map's pooling covers (medians of 30, alternating with F(3x3, 2x2) in one process).
const MIN_F4_GRAD_TILES: usize = 9;

/// The output tile of the forward correlation: F(2x2, 3x3) (4x4 patches, 16 products per
/// channel pair for 4 outputs), F(4x4, 3x3) (6x6 patches, 36 for 16 outputs: 2.25
/// products per output instead of 4, for larger transforms and more rounding) or F(6x6, 3x3)
/// (8x8 patches, 64 for 36 outputs: 1.78 a output; forward only, the weight gradient stays at
/// F(3x3, 4x4)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tile {
    F2,
    F4,
    F6,
}

impl Tile {
    /// The tile for an output of `rows x cols` pixels: F(4x4, 3x3) where it needs fewer products
    /// than F(2x2, 3x3) and the map has [`MIN_F4_TILES`] of its tiles, F(6x6, 3x3) where it
    /// needs fewer still and the map has [`MIN_F6_TILES`] of its tiles (the tutorial's 30x30
    /// maps: 25 tiles that cover them exactly, where F(4x4)'s 64 cover 32x32), F(2x2, 3x3)
    /// otherwise, unless `KANDLE_WINOGRAD` (`f2`, `f4` or `f6`, read once per process) forces
    /// one, for tests and benchmarks.
    pub(crate) fn for_output(rows: usize, cols: usize) -> Tile {
        Tile::forced().unwrap_or_else(|| {
            let tiles = |m: usize| rows.div_ceil(m) * cols.div_ceil(m);
            // Fewer products, and tiles enough for the products' rows to fill the register
            // tiles: a 4x4 map is one F(4x4) tile, and a product of one row runs 2-3x slower
            // per multiplication (measured with `cargo bench --bench kernels`).
            let f4 = tiles(4) * 36 < tiles(2) * 16 && tiles(4) >= MIN_F4_TILES;
            if f4 && tiles(6) * 64 < tiles(4) * 36 && tiles(6) >= MIN_F6_TILES {
                Tile::F6
            } else if f4 {
                Tile::F4
            } else {
                Tile::F2
            }
        })
    }

    /// The tile `KANDLE_WINOGRAD` (`f2`, `f4` or `f6`, read once per process) forces, if any.
    fn forced() -> Option<Tile> {
        static FORCED: std::sync::OnceLock<Option<Tile>> = std::sync::OnceLock::new();
        *FORCED.get_or_init(|| match std::env::var("KANDLE_WINOGRAD").ok().as_deref() {
            Some("f2") => Some(Tile::F2),
            Some("f4") => Some(Tile::F4),
            Some("f6") => Some(Tile::F6),
            None | Some("") => None,
            Some(other) => {
                eprintln!("kandle: KANDLE_WINOGRAD={other:?} is not one of f2, f4, f6; ignored");
                None
            }
        })
    }

    /// Outputs per side of a tile.
    fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
            Tile::F6 => 6,
        }
    }

    /// Positions of the transformed domain (products per channel pair and tile).
    fn positions(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }
}

/// A 3x3 kernel in Winograd's domain: its tile, and `G g G^T` for each channel pair, one `c x
/// o` matrix per position (`(m + 2) * i + j` first).
pub(crate) struct Kernel {
    tile: Tile,
    u: AlignedBuf,
}

/// The kernel `k` (`(3, 3, c, o)`) in the domain of `tile` (computed in f64, then rounded).
pub(crate) fn transform_kernel(k: &[f32], c: usize, o: usize, tile: Tile) -> Kernel {
    let co = c * o;
    debug_assert_eq!(k.len(), 9 * co);
    // G of F(2x2, 3x3) and of F(4x4, 3x3), one row per position along an axis.
    const G2: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    const G4: [[f64; 3]; 6] = [
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    const G6: [[f64; 3]; 8] = [
        [1.0, 0.0, 0.0],
        [-2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0],
        [-2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0],
        [1.0 / 90.0, 1.0 / 45.0, 2.0 / 45.0],
        [1.0 / 90.0, -1.0 / 45.0, 2.0 / 45.0],
        [32.0 / 45.0, 16.0 / 45.0, 8.0 / 45.0],
        [32.0 / 45.0, -16.0 / 45.0, 8.0 / 45.0],
        [0.0, 0.0, 1.0],
    ];
    let g: &[[f64; 3]] = match tile {
        Tile::F2 => &G2,
        Tile::F4 => &G4,
        Tile::F6 => &G6,
    };
    let n = g.len();
    let mut u = AlignedBuf::zeros(n * n * co);
    // One position of the transformed domain per job.
    u.par_chunks_mut(co.max(1)).enumerate().for_each(|(pos, dst)| kernel_position(k, &[g[pos / n], g[pos % n]], dst));
    Kernel { tile, u }
}

/// `(G k G^T)[i][j]` of every channel pair at one position, `g` holding rows `i` and `j` of
/// `G`: `G k` (row `i`) then times row `j`, in f64, each sum in the order of the kernel's
/// rows and columns, the same for every pair (and vectorized across pairs for the SIMD level:
/// this runs at every step for every layer, forward and backward).
fn kernel_position<T: Float>(k: &[T], g: &[[f64; 3]; 2], dst: &mut [T]) {
    #[inline(always)]
    fn body<T: Float>(k: &[T], g: &[[f64; 3]; 2], dst: &mut [T]) {
        let co = dst.len();
        let taps: [&[T]; 9] = std::array::from_fn(|t| &k[t * co..(t + 1) * co]);
        let [gi, gj] = g;
        for (e, d) in dst.iter_mut().enumerate() {
            let kv = |a: usize, b: usize| taps[a * 3 + b][e].to_f64();
            let row = |b: usize| gi[0] * kv(0, b) + gi[1] * kv(1, b) + gi[2] * kv(2, b);
            *d = T::from_f64(row(0) * gj[0] + row(1) * gj[1] + row(2) * gj[2]);
        }
    }
    with_simd!(body(k: &[T], g: &[[f64; 3]; 2], dst: &mut [T]))
}

/// The 3x3 correlation of `batch.images` images (`h x w` pixels of `c` channels, image `i` at
/// `i * batch.src` of `src`) with the kernel of [`transform_kernel`], for the output pixels
/// `(store.r0 + r, store.c0 + q)`, `r < store.rows`, `q < store.cols`, written at `i *
/// batch.dst + (r * store.cols + q) * o` of `dst` with the store's bias and ReLU. Input pixels
/// past an image's edge count as zeros. (`store.width` is not used.) The tiles of all images
/// are multiplied in blocks together: a small map (a 6x6 one has 9 tiles of F(2x2, 3x3))
/// would otherwise give products of a few rows.
///
/// # Safety
/// [`available`]`(c, o)`; `src` holds the images' `h * w * c` values, the kernel was
/// transformed for `c` and `o` channels, `dst` holds the images' `rows * cols * o` values, and
/// the bias, if any, `o`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn corr3x3(
    src: &[f32],
    dims: (usize, usize, usize),
    batch: Batch,
    kernel: &Kernel,
    o: usize,
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
    buf: &mut Buffers,
) {
    debug_assert!(available(dims.2, o) && kernel.u.len() == kernel.tile.positions() * dims.2 * o);
    debug_assert!(batch.images == 0 || src.len() >= (batch.images - 1) * batch.src + dims.0 * dims.1 * dims.2);
    debug_assert!(batch.images == 0 || dst.len() >= (batch.images - 1) * batch.dst + store.rows * store.cols * o);
    // SAFETY: the caller's contract.
    unsafe {
        match kernel.tile {
            Tile::F2 => corr_f2_entry(src, dims, batch, &kernel.u, o, dst, store, buf),
            Tile::F4 => corr_f4_entry(src, dims, batch, &kernel.u, o, dst, store, buf),
            Tile::F6 => corr_f6_entry(src, dims, batch, &kernel.u, o, dst, store, buf),
        }
    }
}

/// Several images of one correlation: how many, and how far apart (in values) they are in the
/// source and in the destination.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch {
    pub images: usize,
    pub src: usize,
    pub dst: usize,
}

impl Kernel {
    /// How many images of `rows x cols` outputs to correlate together, so that their tiles fill
    /// a block of [`TILE_BLOCK`] (counted in F(2x2, 3x3) tiles): 1 for the maps of 32x32.
    pub(crate) fn images_per_call(&self, (rows, cols): (usize, usize)) -> usize {
        let m = self.tile.m();
        let tiles = rows.div_ceil(m) * cols.div_ceil(m);
        (TILE_BLOCK * 16 / self.tile.positions()).div_ceil(tiles.max(1)).max(1)
    }
}

/// One entry point per tile, each [`corr3x3_simd`] with its patch size.
macro_rules! corr_entries {
    ($($name:ident = $n:literal),*) => {$(
        simd_entry!(unsafe fn $name = corr3x3_simd::<_, $n>(
            src: &[f32],
            dims: (usize, usize, usize),
            batch: Batch,
            u: &[f32],
            o: usize,
            dst: &mut [MaybeUninit<f32>],
            store: &Store,
            buf: &mut Buffers,
        ));
    )*};
}

corr_entries!(corr_f2_entry = 4, corr_f4_entry = 6, corr_f6_entry = 8);

/// [`corr3x3`] with patches of `N x N` (4: F(2x2, 3x3), 6: F(4x4, 3x3), 8: F(6x6, 3x3)).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn corr3x3_simd<S: Simd, const N: usize>(
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    batch: Batch,
    u: &[f32],
    o: usize,
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
    buf: &mut Buffers,
) {
    let tile = match N {
        4 => Tile::F2,
        6 => Tile::F4,
        _ => Tile::F6,
    };
    let positions = N * N;
    debug_assert!(u.len() >= positions * c * o);
    let Tiling { tc, tiles, tb, vs, ms } = buf.prepare((store.rows, store.cols), batch.images, c, o, tile);
    let per_image = tiles / batch.images.max(1);
    let mut t0 = 0;
    while t0 < tiles {
        let nt = tb.min(tiles - t0);
        let from = (store.r0, store.c0);
        input_transform::<S, N>(src, (h, w, c), from, (tc, t0, nt, vs), (per_image, batch.src), &mut buf.v);
        for p in 0..positions {
            direct::corr_simd::<S>(
                nt,
                o,
                &buf.v[p * vs..p * vs + nt * c],
                c,
                &[(0, 0, c)],
                &u[p * c * o..(p + 1) * c * o],
                // SAFETY: direct::corr only writes (initialised values) to its destination.
                crate::kernels::as_uninit_mut(&mut buf.m[p * ms..p * ms + nt * o]),
                &Store::plain(nt),
            );
        }
        output_transform::<S, N>(&buf.m, o, store, (tc, t0, nt, ms), (per_image, batch.dst), dst);
        t0 += nt;
    }
}

/// `B^T d B` of the `N x N` input patch of each tile `t0 .. t0 + nt` (of `tc` per row and
/// `per_image` per image, images `stride` values apart in `src`, tiles `N - 2` pixels apart,
/// the first patch at pixel `(r0, c0)` of each image), into `v`: position `p` of tile `t`
/// (counted from `t0`), channel `ch`, at `p * vs + t * c + ch`.
#[inline(always)]
unsafe fn input_transform<S: Simd, const N: usize>(
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    (r0, c0): (usize, usize),
    (tc, t0, nt, vs): (usize, usize, usize, usize),
    (per_image, stride): (usize, usize),
    v: &mut [f32],
) {
    let vp = v.as_mut_ptr();
    let (zero, lanes, m) = (S::zero(), S::LANES, N - 2);
    for t in 0..nt {
        let (img, tile) = ((t0 + t) / per_image, (t0 + t) % per_image);
        let sp = src.as_ptr().add(img * stride);
        let (ti, tj) = (tile / tc, tile % tc);
        let (y0, x0) = (r0 + m * ti, c0 + m * tj);
        // The new columns of the tile four ahead: a layer's input comes from memory, and this
        // loop does too little work per load for the hardware prefetcher to keep up.
        if x0 + 5 * m - 1 < w {
            for a in 0..N.min(h.saturating_sub(y0)) {
                let p = sp.add(((y0 + a) * w + x0 + 4 * m) * c);
                for l in (0..m * c).step_by(16) {
                    S::prefetch(p.add(l));
                }
            }
        }
        let out = vp.add(t * c);
        if y0 + N <= h && x0 + N <= w {
            // Inside the image (all tiles but the last row and column of odd sizes): no checks.
            let base = sp.add((y0 * w + x0) * c);
            for cb in (0..c).step_by(lanes) {
                let p = base.add(cb);
                let mut d = [[zero; 8]; 8];
                for (a, row) in d.iter_mut().enumerate().take(N) {
                    for (b, val) in row.iter_mut().enumerate().take(N) {
                        *val = S::load(p.add((a * w + b) * c));
                    }
                }
                patch_transform::<S, N>(&d, out.add(cb), vs);
            }
            continue;
        }
        for cb in (0..c).step_by(lanes) {
            let mut d = [[zero; 8]; 8];
            for (a, row) in d.iter_mut().enumerate().take(N) {
                if y0 + a >= h {
                    continue;
                }
                for (b, val) in row.iter_mut().enumerate().take(N) {
                    if x0 + b < w {
                        *val = S::load(sp.add(((y0 + a) * w + x0 + b) * c + cb));
                    }
                }
            }
            patch_transform::<S, N>(&d, out.add(cb), vs);
        }
    }
}

/// `B^T x` of one column or row `x` of `N` values of a patch (the first `N` of 8).
#[inline(always)]
unsafe fn input_1d<S: Simd, const N: usize>(d: [S::V; 8]) -> [S::V; 8] {
    let z = S::zero();
    if N == 4 {
        return [S::sub(d[0], d[2]), S::add(d[1], d[2]), S::sub(d[2], d[1]), S::sub(d[1], d[3]), z, z, z, z];
    }
    if N == 8 {
        // F(6x6, 3x3)'s B^T (points 0, 1, -1, 1/2, -1/2, 2, -2), rows
        // [1 0 -21/4 0 21/4 0 -1 0], [0 1 1 -17/4 -17/4 1 1 0], [0 -1 1 17/4 -17/4 -1 1 0],
        // [0 1/2 1/4 -5/2 -5/4 2 1 0], [0 -1/2 1/4 5/2 -5/4 -2 1 0], [0 2 4 -5/2 -5 1/2 1 0],
        // [0 -2 4 5/2 -5 -1/2 1 0], [0 -1 0 21/4 0 -21/4 0 1], as sums and differences of pairs.
        let k = |x: f32| S::splat(x);
        let t1 = S::fmadd(k(-4.25), d[4], S::add(d[2], d[6]));
        let t2 = S::fmadd(k(-4.25), d[3], S::add(d[1], d[5]));
        let t3 = S::fmadd(k(0.25), d[2], S::fmadd(k(-1.25), d[4], d[6]));
        let t4 = S::fmadd(k(0.5), d[1], S::fmadd(k(-2.5), d[3], S::add(d[5], d[5])));
        let t5 = S::fmadd(k(4.0), d[2], S::fmadd(k(-5.0), d[4], d[6]));
        let t6 = S::fmadd(k(2.0), d[1], S::fmadd(k(-2.5), d[3], S::mul(k(0.5), d[5])));
        return [
            S::fmadd(k(5.25), S::sub(d[4], d[2]), S::sub(d[0], d[6])),
            S::add(t1, t2),
            S::sub(t1, t2),
            S::add(t3, t4),
            S::sub(t3, t4),
            S::add(t5, t6),
            S::sub(t5, t6),
            S::fmadd(k(5.25), S::sub(d[3], d[5]), S::sub(d[7], d[1])),
        ];
    }
    // F(4x4, 3x3)'s B^T, rows [4 0 -5 0 1 0], [0 -4 -4 1 1 0], [0 4 -4 -1 1 0],
    // [0 -2 -1 2 1 0], [0 2 -1 -2 1 0], [0 4 0 -5 0 1], with shared partial sums.
    let (four, m4, m5) = (S::splat(4.0), S::splat(-4.0), S::splat(-5.0));
    let a = S::fmadd(m4, d[2], d[4]);
    let b = S::fmadd(m4, d[1], d[3]);
    let c = S::sub(d[4], d[2]);
    let e = S::sub(d[3], d[1]);
    let e = S::add(e, e);
    [
        S::fmadd(four, d[0], S::fmadd(m5, d[2], d[4])),
        S::add(a, b),
        S::sub(a, b),
        S::add(c, e),
        S::sub(c, e),
        S::fmadd(four, d[1], S::fmadd(m5, d[3], d[5])),
        z,
        z,
    ]
}

/// `B^T d B` of one `N x N` patch of `S::LANES` channels, its positions stored `vs` apart from
/// `out`.
#[allow(clippy::needless_range_loop)] // `a` indexes the inner arrays of a transposition
#[inline(always)]
unsafe fn patch_transform<S: Simd, const N: usize>(d: &[[S::V; 8]; 8], out: *mut f32, vs: usize) {
    // B^T d, one column at a time, then each row of it times B.
    let zero = S::zero();
    let mut cols = [[zero; 8]; 8];
    for (b, col) in cols.iter_mut().enumerate().take(N) {
        *col = input_1d::<S, N>(std::array::from_fn(|a| d[a][b]));
    }
    for a in 0..N {
        let row = input_1d::<S, N>(std::array::from_fn(|b| cols[b][a]));
        for (b, &val) in row.iter().enumerate().take(N) {
            S::store(out.add((a * N + b) * vs), val);
        }
    }
}

/// `A^T x` of one column or row of `N` products (the first `N` of 8): `N - 2` outputs (the
/// first of 6).
#[inline(always)]
unsafe fn output_1d<S: Simd, const N: usize>(m: [S::V; 8]) -> [S::V; 6] {
    let z = S::zero();
    if N == 4 {
        return [S::add(S::add(m[0], m[1]), m[2]), S::sub(S::sub(m[1], m[2]), m[3]), z, z, z, z];
    }
    if N == 8 {
        // F(6x6, 3x3)'s A^T: row i is [1 1 1 1 1 1 1 0] for i = 0, else
        // [0 1 (-1)^i 2^i (-2)^i (1/2)^i (-1/2)^i 0], plus m[7] in the last.
        let (s12, d12) = (S::add(m[1], m[2]), S::sub(m[1], m[2]));
        let (s34, d34) = (S::add(m[3], m[4]), S::sub(m[3], m[4]));
        let (s56, d56) = (S::add(m[5], m[6]), S::sub(m[5], m[6]));
        let k = |x: f32| S::splat(x);
        return [
            S::add(S::add(m[0], s12), S::add(s34, s56)),
            S::fmadd(k(0.5), d56, S::fmadd(k(2.0), d34, d12)),
            S::fmadd(k(0.25), s56, S::fmadd(k(4.0), s34, s12)),
            S::fmadd(k(0.125), d56, S::fmadd(k(8.0), d34, d12)),
            S::fmadd(k(0.0625), s56, S::fmadd(k(16.0), s34, s12)),
            S::add(S::fmadd(k(0.03125), d56, S::fmadd(k(32.0), d34, d12)), m[7]),
        ];
    }
    // F(4x4, 3x3)'s A^T: [1 1 1 1 1 0], [0 1 -1 2 -2 0], [0 1 1 4 4 0], [0 1 -1 8 -8 1].
    let (s12, d12) = (S::add(m[1], m[2]), S::sub(m[1], m[2]));
    let (s34, d34) = (S::add(m[3], m[4]), S::sub(m[3], m[4]));
    [
        S::add(S::add(m[0], s12), s34),
        S::fmadd(S::splat(2.0), d34, d12),
        S::fmadd(S::splat(4.0), s34, s12),
        S::add(S::fmadd(S::splat(8.0), d34, d12), m[5]),
        z,
        z,
    ]
}

/// `A^T m A` of each tile's `N x N` products in `m` (laid out as `v` of [`input_transform`],
/// with `o` channels and positions `ms` apart), its bias and ReLU, stored in `dst` (images
/// `stride` values apart, `per_image` tiles each).
#[allow(clippy::needless_range_loop)] // `a` indexes the inner arrays of a transposition
#[inline(always)]
unsafe fn output_transform<S: Simd, const N: usize>(
    m: &[f32],
    o: usize,
    store: &Store,
    (tc, t0, nt, ms): (usize, usize, usize, usize),
    (per_image, stride): (usize, usize),
    dst: &mut [MaybeUninit<f32>],
) {
    let mp = m.as_ptr();
    let (zero, tm) = (S::zero(), N - 2);
    for t in 0..nt {
        let (img, tile) = ((t0 + t) / per_image, (t0 + t) % per_image);
        let dp = dst.as_mut_ptr().cast::<f32>().add(img * stride);
        let (ti, tj) = (tile / tc, tile % tc);
        for ob in (0..o).step_by(S::LANES) {
            let at = |a: usize, b: usize| S::load(mp.add((a * N + b) * ms + t * o + ob));
            // A^T m, one column at a time, then each row of it times A.
            // N columns, every one written: with 8 the compiler cleared the array with a
            // `memset` call (3 KiB) for every tile and channel block.
            let mut cols = [[zero; 6]; N];
            for (b, col) in cols.iter_mut().enumerate() {
                *col = output_1d::<S, N>(std::array::from_fn(|a| if a < N { at(a, b) } else { zero }));
            }
            let bias = store.bias.map(|b| S::load(b.as_ptr().add(ob)));
            for i in 0..tm {
                let r = tm * ti + i;
                if r >= store.rows {
                    continue;
                }
                let y = output_1d::<S, N>(std::array::from_fn(|b| if b < N { cols[b][i] } else { zero }));
                for (j, &val) in y.iter().enumerate().take(tm) {
                    let q = tm * tj + j;
                    if q >= store.cols {
                        continue;
                    }
                    let mut val = val;
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
