//! The weight gradient in Winograd's domain: F(3x3, 2x2) and F(3x3, 4x4), the tiles of several
//! images gathered into blocks (see the parent module's summary).

use super::*;

/// The weight gradient of a 3x3 correlation in Winograd's domain, gathered over a group of
/// images: each image's tiles are transformed into a block shared across images (a small map
/// fills a block with several images' tiles, so the products run over long sums), the
/// products run when a block is full, and [`GradAcc::finish`] brings the sum back to the
/// `(3, 3, c, o)` gradient.
///
/// With F(3x3, 2x2) each 2x2 tile of the output gradient `y` and the 4x4 patch under it add
/// `(G' y G'^T) . (B^T d B)` to the 16 positions; with F(3x3, 4x4), 4x4 tiles and 6x6 patches,
/// `(A y A^T) . (B^T d B)` to 36 (F(4x4, 3x3)'s `A` and `B`: the weight gradient
/// `dw_k = sum_i d_(i+k) y_i` is the derivative of F(4x4, 3x3)'s output, so
/// `dw = G^T [(A y) . (B^T d)]`), and the back-transform is `G^T m G`.
pub(crate) struct GradAcc {
    tile: Tile,
    c: usize,
    o: usize,
    /// Tiles per block, and the tiles of the current block transformed so far.
    tb: usize,
    filled: usize,
    buf: Buffers,
    /// `positions` matrices of `c x o`.
    acc: AlignedBuf,
    /// Whether `acc` holds products not yet brought back by [`GradAcc::finish`].
    dirty: bool,
}

thread_local! {
    /// The (zeroed) sums of finished gradients on this thread, for the next ones: a layer's
    /// backward pass makes one per group of images (see [`super::Buffers`]).
    static SPARE_SUMS: std::cell::RefCell<Vec<AlignedBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for GradAcc {
    fn drop(&mut self) {
        let mut acc = std::mem::take(&mut self.acc);
        // (As for the buffers: one kept per thread, up to half their size; freed when the
        // spares are gone or full.)
        if acc.len() > super::SPARE_MAX_VALUES / 2 {
            return;
        }
        if self.dirty {
            acc.fill(0.0);
        }
        let _ = SPARE_SUMS.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.is_empty() {
                    s.push(acc);
                }
            }
        });
    }
}

impl GradAcc {
    /// An empty sum for `c` input and `o` output channels, with the tile `Tile::for_grad`
    /// picks for the output gradient's `rows x cols` map.
    pub(crate) fn new(c: usize, o: usize, (rows, cols): (usize, usize)) -> Self {
        let tile = Tile::for_grad(rows, cols);
        let positions = tile.positions();
        let tb = TILE_BLOCK * 16 / positions;
        // A whole block's buffers, laid out as [`Buffers::prepare`] does for `tb` tiles (those
        // of an earlier call when this thread has some: their contents are written before
        // they are read).
        let mut buf = Buffers::default();
        for (b, len) in [(&mut buf.v, positions * (tb * c + 16)), (&mut buf.m, positions * (tb * o + 16))] {
            if b.len() < len {
                b.resize(len, 0.0);
            }
        }
        // A sum of zeros: a finished one of this thread (all zeros), cut or grown with zeros.
        let mut acc = SPARE_SUMS
            .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
            .ok()
            .flatten()
            .unwrap_or_default();
        acc.resize(positions * c * o, 0.0);
        GradAcc { tile, c, o, tb, filled: 0, buf, acc, dirty: false }
    }

    /// Adds one image's share: every tile of the output gradient `dy` (`oh x ow x o`, zeros
    /// past its edge; its rows `dy_row` pixels apart, `dy_row >= ow`, so that `oh x ow` may be
    /// the part of a larger map where the gradient is not all zeros) with the patch of `src`
    /// (`h x w x c`, zeros past its edge) under it.
    ///
    /// # Safety
    /// [`available`]`(c, o)`; `src` holds `h * w * c` values and `dy` `((oh - 1) * dy_row + ow)
    /// * o`.
    pub(crate) unsafe fn add_image(
        &mut self,
        src: &[f32],
        dims: (usize, usize, usize),
        dy: &[f32],
        out: (usize, usize, usize),
        dy_row: usize,
    ) {
        debug_assert!(available(dims.2, out.2) && dims.2 == self.c && out.2 == self.o && dy_row >= out.1);
        debug_assert!(out.0 == 0 || dy.len() >= ((out.0 - 1) * dy_row + out.1) * out.2);
        // SAFETY: the caller's contract.
        unsafe {
            match self.tile {
                Tile::F2 => grad_f2_entry(src, dims, dy, out, dy_row, self),
                // (`for_grad` never picks F(6x6).)
                Tile::F4 | Tile::F6 => grad_f4_entry(src, dims, dy, out, dy_row, self),
            }
        }
    }

    /// Adds the gradient gathered so far to `dk` (`(3, 3, c, o)`) and empties the sum.
    pub(crate) fn finish(&mut self, dk: &mut [f32]) {
        // SAFETY: `new` checked nothing, but a non-empty block exists only after `add_image`,
        // whose contract covers the products.
        unsafe {
            match self.tile {
                Tile::F2 => flush_f2_entry(self),
                Tile::F4 | Tile::F6 => flush_f4_entry(self),
            }
        }
        let (c, o) = (self.c, self.o);
        let co = c * o;
        debug_assert!(dk.len() >= 9 * co);
        let n = self.tile.m() + 2;
        // The back-transform: F(3x3, 2x2)'s `A'^T` (the halves are in its gradient
        // transform), or F(4x4, 3x3)'s `G^T`, one row per kernel tap along an axis.
        const B2: [[f64; 6]; 3] =
            [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]];
        const B4: [[f64; 6]; 3] = [
            [0.25, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 24.0, 1.0 / 24.0, 0.0],
            [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 12.0, -1.0 / 12.0, 0.0],
            [0.0, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 1.0],
        ];
        let back = if self.tile == Tile::F2 { &B2 } else { &B4 };
        // dk[a][b] += sum over positions (i, j) of back[a][i] back[b][j] acc[i][j], one
        // contiguous row of `c x o` values at a time.
        for (a, ra) in back.iter().enumerate() {
            for (b, rb) in back.iter().enumerate() {
                let dst = &mut dk[(a * 3 + b) * co..(a * 3 + b + 1) * co];
                for (i, &x) in ra.iter().enumerate().take(n) {
                    for (j, &y) in rb.iter().enumerate().take(n) {
                        let coef = (x * y) as f32;
                        if coef != 0.0 {
                            add_scaled(dst, coef, &self.acc[(i * n + j) * co..(i * n + j + 1) * co]);
                        }
                    }
                }
            }
        }
        self.acc.fill(0.0);
        self.dirty = false;
    }
}

/// `dst += coef * src`, element by element, for the SIMD level.
fn add_scaled<T: Float>(dst: &mut [T], coef: T, src: &[T]) {
    #[inline(always)]
    fn body<T: Float>(dst: &mut [T], coef: T, src: &[T]) {
        dst.iter_mut().zip(src).for_each(|(d, &v)| *d += coef * v);
    }
    with_simd!(body(dst: &mut [T], coef: T, src: &[T]))
}

impl Tile {
    /// The tile of the weight gradient for a `rows x cols` output gradient: F(3x3, 4x4) where
    /// it needs fewer products than F(3x3, 2x2) and the map has [`MIN_F4_GRAD_TILES`] of its
    /// tiles, F(3x3, 2x2) otherwise, unless `KANDLE_WINOGRAD` forces one (`f6`, which the
    /// weight gradient does not have, gives F(3x3, 4x4)).
    fn for_grad(rows: usize, cols: usize) -> Tile {
        let tiles = |m: usize| rows.div_ceil(m) * cols.div_ceil(m);
        match Tile::forced() {
            Some(Tile::F6) => Tile::F4,
            Some(t) => t,
            None if tiles(4) * 36 < tiles(2) * 16 && tiles(4) >= MIN_F4_GRAD_TILES => Tile::F4,
            None => Tile::F2,
        }
    }
}

simd_entry!(unsafe fn grad_f2_entry = grad_image::<_, 4>(
    src: &[f32],
    dims: (usize, usize, usize),
    dy: &[f32],
    out: (usize, usize, usize),
    dy_row: usize,
    acc: &mut GradAcc,
));

simd_entry!(unsafe fn grad_f4_entry = grad_image::<_, 6>(
    src: &[f32],
    dims: (usize, usize, usize),
    dy: &[f32],
    out: (usize, usize, usize),
    dy_row: usize,
    acc: &mut GradAcc,
));

simd_entry!(unsafe fn flush_f2_entry = flush::<_, 4>(acc: &mut GradAcc));

simd_entry!(unsafe fn flush_f4_entry = flush::<_, 6>(acc: &mut GradAcc));

/// [`GradAcc::add_image`] with patches of `N x N`.
#[inline(always)]
unsafe fn grad_image<S: Simd, const N: usize>(
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    dy: &[f32],
    (oh, ow, o): (usize, usize, usize),
    dy_row: usize,
    acc: &mut GradAcc,
) {
    debug_assert!(src.len() >= h * w * c);
    let m = N - 2;
    let tc = ow.div_ceil(m);
    let tiles = oh.div_ceil(m) * tc;
    let (vs, ms) = (acc.tb * c + 16, acc.tb * o + 16);
    let mut t0 = 0;
    while t0 < tiles {
        let nt = (acc.tb - acc.filled).min(tiles - t0);
        let f = acc.filled;
        input_transform::<S, N>(src, (h, w, c), (0, 0), (tc, t0, nt, vs), (tiles, 0), &mut acc.buf.v[f * c..]);
        grad_transform::<S, N>(dy, (oh, ow, o), dy_row, (tc, t0, nt, ms), &mut acc.buf.m[f * o..]);
        acc.filled += nt;
        if acc.filled == acc.tb {
            flush::<S, N>(acc);
        }
        t0 += nt;
    }
}

/// The products of the block gathered so far, added to the sum.
#[inline(always)]
unsafe fn flush<S: Simd, const N: usize>(acc: &mut GradAcc) {
    let (c, o, nt) = (acc.c, acc.o, acc.filled);
    if nt == 0 {
        return;
    }
    let (vs, ms) = (acc.tb * c + 16, acc.tb * o + 16);
    acc.dirty = true;
    for p in 0..N * N {
        direct::weight_grad_simd::<S>(
            o,
            &acc.buf.v[p * vs..p * vs + nt * c],
            c,
            nt,
            1,
            nt,
            &[(0, 0, c)],
            &acc.buf.m[p * ms..p * ms + nt * o],
            &mut acc.acc[p * c * o..(p + 1) * c * o],
        );
    }
    acc.filled = 0;
}

/// The output gradient's tiles `t0 .. t0 + nt` (`N - 2` pixels on a side, zeros past its
/// edge) in Winograd's domain, into `m` laid out as [`input_transform`]'s `v`: `G' y G'^T`
/// for F(3x3, 2x2), with `G'` F(3, 2)'s `[[1, 0], [1/2, 1/2], [1/2, -1/2], [0, -1]]` (its last
/// row negated to match the forward pass's `B^T`, whose last row is `d1 - d3`), or
/// `A y A^T` for F(3x3, 4x4), with `A` the transpose of F(4x4, 3x3)'s `A^T`.
#[allow(clippy::needless_range_loop)] // `i` indexes the inner arrays of a transposition
#[inline(always)]
unsafe fn grad_transform<S: Simd, const N: usize>(
    dy: &[f32],
    (oh, ow, o): (usize, usize, usize),
    dy_row: usize,
    (tc, t0, nt, ys): (usize, usize, usize, usize),
    m: &mut [f32],
) {
    let (dp, mp) = (dy.as_ptr(), m.as_mut_ptr());
    let (zero, tm) = (S::zero(), N - 2);
    for t in 0..nt {
        let (ti, tj) = ((t0 + t) / tc, (t0 + t) % tc);
        for ob in (0..o).step_by(S::LANES) {
            let at = |u: usize, v: usize| {
                let (r, q) = (tm * ti + u, tm * tj + v);
                if r < oh && q < ow {
                    S::load(dp.add((r * dy_row + q) * o + ob))
                } else {
                    zero
                }
            };
            // One column at a time, then each row of the result.
            let mut cols = [[zero; 6]; 4];
            for (v, col) in cols.iter_mut().enumerate().take(tm) {
                *col = grad_1d::<S, N>(std::array::from_fn(|u| if u < tm { at(u, v) } else { zero }));
            }
            for i in 0..N {
                let row = grad_1d::<S, N>(std::array::from_fn(|v| cols[v][i]));
                for (j, &val) in row.iter().enumerate().take(N) {
                    S::store(mp.add((i * N + j) * ys + t * o + ob), val);
                }
            }
        }
    }
}

/// One column or row of the output gradient's transform: `N - 2` values (the first of 4) to
/// `N` (the first of 6).
#[inline(always)]
unsafe fn grad_1d<S: Simd, const N: usize>(y: [S::V; 4]) -> [S::V; 6] {
    let zero = S::zero();
    if N == 4 {
        let half = S::splat(0.5);
        let (a, b) = (y[0], y[1]);
        return [a, S::mul(half, S::add(a, b)), S::mul(half, S::sub(a, b)), S::sub(zero, b), zero, zero];
    }
    // A's rows [1 0 0 0], [1 1 1 1], [1 -1 1 -1], [1 2 4 8], [1 -2 4 -8], [0 0 0 1].
    let (e, o) = (S::add(y[0], y[2]), S::add(y[1], y[3]));
    let e4 = S::fmadd(S::splat(4.0), y[2], y[0]);
    let o4 = S::fmadd(S::splat(8.0), y[3], S::add(y[1], y[1]));
    [y[0], S::add(e, o), S::sub(e, o), S::add(e4, o4), S::sub(e4, o4), y[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One image's weight gradient through a new sum, finished or dropped unfinished.
    fn one_image(finish: bool) -> Option<Vec<f32>> {
        let (c, o) = (16, 16);
        let src: Vec<f32> = (0..32 * 32 * c).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let dy: Vec<f32> = (0..30 * 30 * o).map(|i| ((i * 104_729) % 11) as f32 - 5.0).collect();
        let mut acc = GradAcc::new(c, o, (30, 30));
        // SAFETY: `available` checked by the caller; the slices hold the stated pixels.
        unsafe { acc.add_image(&src, (32, 32, c), &dy, (30, 30, o), 30) };
        finish.then(|| {
            let mut dk = vec![0.0; 9 * c * o];
            acc.finish(&mut dk);
            dk
        })
    }

    #[test]
    fn a_sum_dropped_unfinished_leaves_no_products_to_the_next() {
        if !available(16, 16) {
            return;
        }
        let fresh = one_image(true).unwrap();
        assert!(fresh.iter().any(|&v| v != 0.0));
        // 30x30 takes F(3x3, 4x4): 64 tiles, so a block of 42 was multiplied into the sum
        // before the drop, which hands the sum to this thread's next one.
        assert!(one_image(false).is_none());
        assert_eq!(one_image(true).unwrap(), fresh);
    }
}
