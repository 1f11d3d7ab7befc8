//! Winograd's per-thread buffers ([`Buffers`]): the transformed tiles of a block and their
//! products, kept from call to call on each thread, and how a block's tiles are laid out in
//! them ([`Tiling`]).

use super::{Tile, TILE_BLOCK};
use crate::kernels::AlignedBuf;

/// Per-thread buffers of [`super::corr3x3`] and [`super::GradAcc`], reused from image to image, and from
/// call to call: [`Buffers::default`] takes the ones a finished call on this thread left
/// (their contents are always written before they are read), so that a layer's pass does not
/// allocate and zero-fill fresh ones for every piece of work rayon splits off (hundreds of KiB
/// each, a few MiB a layer).
pub(crate) struct Buffers {
    pub(super) v: AlignedBuf,
    pub(super) m: AlignedBuf,
}

/// The most buffers kept per thread for later calls (a backward pass holds two at a time per
/// thread: the input gradient's and the weight gradient's), and the most values a pair of
/// them may hold to be kept (2 MiB; larger layers allocate theirs per task, which their
/// products dwarf), so that a machine of many threads keeps a few MiB per thread at most.
const SPARE_BUFFERS: usize = 2;
pub(super) const SPARE_MAX_VALUES: usize = 1 << 19;

thread_local! {
    /// The `v` and `m` buffers of finished calls on this thread, for the next ones.
    static SPARE: std::cell::RefCell<Vec<(AlignedBuf, AlignedBuf)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Buffers {
    /// Empty buffers, not taken from the spares.
    const fn empty() -> Self {
        Buffers { v: AlignedBuf::new(), m: AlignedBuf::new() }
    }
}

impl Default for Buffers {
    /// The buffers a finished call on this thread left, if any.
    fn default() -> Self {
        match SPARE.try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop())) {
            Ok(Some((v, m))) => Buffers { v, m },
            _ => Buffers::empty(),
        }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        if self.v.is_empty() && self.m.is_empty() {
            return;
        }
        let kept = (std::mem::take(&mut self.v), std::mem::take(&mut self.m));
        if kept.0.len() + kept.1.len() > SPARE_MAX_VALUES {
            return;
        }
        // (During the thread's exit the spares are gone, and past the limit they are full: the
        // buffers are then freed.)
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.len() < SPARE_BUFFERS {
                    s.push(kept);
                }
            }
        });
    }
}

/// How the outputs of `rows x cols` pixels are cut into tiles of `m x m`, processed `tb` at a
/// time: `tc` tiles per row, `tiles` in all (over all images); the positions of a block are
/// `vs` apart in the input's buffer (`c` channels) and `ms` apart in the other (`o` channels).
pub(super) struct Tiling {
    pub(super) tc: usize,
    pub(super) tiles: usize,
    pub(super) tb: usize,
    pub(super) vs: usize,
    pub(super) ms: usize,
}

impl Buffers {
    /// The tiling of `images` outputs of `rows x cols` by `tile`, the tiles of all images cut
    /// into blocks of (nearly) equal size, with both buffers large enough for a block.
    pub(super) fn prepare(
        &mut self,
        (rows, cols): (usize, usize),
        images: usize,
        c: usize,
        o: usize,
        tile: Tile,
    ) -> Tiling {
        let (m, positions) = (tile.m(), tile.positions());
        let tc = cols.div_ceil(m);
        let tiles = rows.div_ceil(m) * tc * images;
        let most = TILE_BLOCK * 16 / positions;
        let tb = tiles.div_ceil(tiles.div_ceil(most).max(1)).max(1);
        // One cache line between the positions' matrices: with strides that are multiples of
        // 4 KiB the rows of one tile would fall into the same L1 cache set.
        let (vs, ms) = (tb * c + 16, tb * o + 16);
        if self.v.len() < positions * vs {
            self.v.resize(positions * vs, 0.0);
        }
        if self.m.len() < positions * ms {
            self.m.resize(positions * ms, 0.0);
        }
        Tiling { tc, tiles, tb, vs, ms }
    }
}
