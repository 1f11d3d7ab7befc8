//! Direct micro-kernels for the stride-1 convolutions of `conv.rs`, in f32, written once over
//! the SIMD layer ([`super::simd`]) for AVX-512F, AVX2+FMA and NEON.
//!
//! The products of a convolution in NHWC have a special shape: the rows of the input operand
//! are pixels that overlap (row `m + 1` starts `c_in` values after row `m`), and the other
//! operand, a kernel row of Keras' `(kh, kw, in, out)` weights, is small and already laid out
//! with the output channels contiguous. A general GEMM packs both operands for every product;
//! these kernels read the pixels in place, broadcasting one input value at a time against one
//! to four registers of output channels (AVX-512: 12 pixels x 32 channels = 24 accumulators of
//! its 32 registers; AVX2: 6 pixels x 16 channels = 12 of its 16), and write each output once,
//! with the bias and ReLU applied on the way out and the "wide" rows that fall past the
//! image's edge never stored.
//!
//! Used when the SIMD level has kernels and the channel count of the result is a multiple of
//! its lanes (16 for AVX-512, 8 for AVX2, 4 for NEON); otherwise `conv.rs` keeps its `gemm` path.

use crate::kernels::simd::{simd_entry, Simd};
use std::mem::MaybeUninit;

/// Where row `m` of a wide product goes: it is pixel `(m / width, m % width)` of a grid, and
/// pixel `(r0 + r, c0 + c)` of that grid, for `r < rows` and `c < cols`, is stored at
/// `(r * cols + c) * n` of the destination. Other rows are dropped. A width of 0 (see
/// [`Store::plain`]) stores row `m` at `m * n`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Store<'a> {
    pub width: usize,
    pub r0: usize,
    pub c0: usize,
    pub rows: usize,
    pub cols: usize,
    pub bias: Option<&'a [f32]>,
    pub relu: bool,
}

impl Store<'_> {
    /// A plain matrix: row `m` is stored at `m * n`, every row kept.
    pub fn plain(rows: usize) -> Self {
        Store { width: 0, r0: 0, c0: 0, rows: 1, cols: rows, bias: None, relu: false }
    }

    #[inline(always)]
    fn dst(&self, m: usize) -> Option<usize> {
        if self.width == 0 {
            return Some(m);
        }
        let (r, c) = (m / self.width, m % self.width);
        let (r, c) = (r.checked_sub(self.r0)?, c.checked_sub(self.c0)?);
        (r < self.rows && c < self.cols).then_some(r * self.cols + c)
    }
}

/// Whether the direct kernels run here for a result of `n` channels.
pub(crate) fn available(n: usize) -> bool {
    let lanes = crate::kernels::simd::lanes();
    lanes > 0 && n > 0 && n.is_multiple_of(lanes)
}

/// `dst <- store(sum over groups (off, boff, kdim), k < kdim of a[(off + m) * lda + k] * b[boff + k * n + j])`
/// for the wide rows `m < m_total` and the channels `j < n`.
///
/// # Safety
/// [`available`]`(n)`; every row read, `(off + m) * lda + kdim <= a.len()`, and
/// `boff + kdim * n <= b.len()`; the destination holds `rows * cols * n` values.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn corr(
    m_total: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    groups: &[(usize, usize, usize)],
    b: &[f32],
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
) {
    debug_assert!(groups
        .iter()
        .all(|&(off, boff, kdim)| (off + m_total - 1) * lda + kdim <= a.len() && boff + kdim * n <= b.len()));
    debug_assert!(dst.len() >= store.rows * store.cols * n);
    debug_assert!(available(n));
    // SAFETY: the caller's contract.
    unsafe { corr_entry(m_total, n, a, lda, groups, b, dst, store) }
}

simd_entry!(unsafe fn corr_entry = corr_simd(
    m_total: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    groups: &[(usize, usize, usize)],
    b: &[f32],
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
));

#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn corr_simd<S: Simd>(
    m_total: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    groups: &[(usize, usize, usize)],
    b: &[f32],
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
) {
    // A row stride known at compile time (32 or 64 channels) lets every broadcast address the
    // row as a constant displacement, instead of a pointer bumped row by row.
    match lda {
        32 => corr_l::<S, 32>(m_total, n, a, lda, groups, b, dst, store),
        64 => corr_l::<S, 64>(m_total, n, a, lda, groups, b, dst, store),
        _ => corr_l::<S, 0>(m_total, n, a, lda, groups, b, dst, store),
    }
}

/// [`corr`] with the row stride `L` (0: the run-time `lda`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn corr_l<S: Simd, const L: usize>(
    m_total: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    groups: &[(usize, usize, usize)],
    b: &[f32],
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
) {
    // Tiles of 12 (or 24) rows, then 6, 3 and 1 for the rest: small maps (6x6, 4x4) leave
    // remainders that are a large share of their rows. With 16 registers (AVX2) the tiles
    // hold half as many accumulators.
    let w = S::LANES;
    let mut nb = 0;
    while nb < n {
        let mut m = 0;
        if S::REGISTERS >= 32 && n - nb >= 4 * w {
            // 6 rows x 4 registers: each broadcast feeds four registers of weights.
            while m < m_total {
                let step = match m_total - m {
                    6.. => corr_tile::<S, 6, 4, L>(m, nb, n, a, lda, groups, b, dst, store),
                    3.. => corr_tile::<S, 3, 4, L>(m, nb, n, a, lda, groups, b, dst, store),
                    _ => corr_tile::<S, 1, 4, L>(m, nb, n, a, lda, groups, b, dst, store),
                };
                m += step;
            }
            nb += 4 * w;
        } else if n - nb >= 2 * w {
            while m < m_total {
                let step = match (S::REGISTERS >= 32, m_total - m) {
                    (true, 12..) => corr_tile::<S, 12, 2, L>(m, nb, n, a, lda, groups, b, dst, store),
                    (_, 6..) => corr_tile::<S, 6, 2, L>(m, nb, n, a, lda, groups, b, dst, store),
                    (_, 3..) => corr_tile::<S, 3, 2, L>(m, nb, n, a, lda, groups, b, dst, store),
                    _ => corr_tile::<S, 1, 2, L>(m, nb, n, a, lda, groups, b, dst, store),
                };
                m += step;
            }
            nb += 2 * w;
        } else {
            while m < m_total {
                let step = match (S::REGISTERS >= 32, m_total - m) {
                    (true, 24..) => corr_tile::<S, 24, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                    (_, 12..) => corr_tile::<S, 12, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                    (_, 6..) => corr_tile::<S, 6, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                    (_, 3..) => corr_tile::<S, 3, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                    _ => corr_tile::<S, 1, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                };
                m += step;
            }
            nb += w;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn corr_tile<S: Simd, const MR: usize, const NV: usize, const L: usize>(
    m: usize,
    nb: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    groups: &[(usize, usize, usize)],
    b: &[f32],
    dst: &mut [MaybeUninit<f32>],
    store: &Store,
) -> usize {
    let w = S::LANES;
    let lda = if L > 0 { L } else { lda };
    let mut acc = [[S::zero(); NV]; MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for &(off, boff, kdim) in groups {
        let a0 = ap.add((off + m) * lda);
        let b0 = bp.add(boff + nb);
        for k in 0..kdim {
            let mut bv = [S::zero(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = S::load(b0.add(k * n + w * v));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = S::splat(*a0.add(r * lda + k));
                for v in 0..NV {
                    acc[v] = S::fmadd(av, bv[v], acc[v]);
                }
            }
        }
    }
    let dp = dst.as_mut_ptr().cast::<f32>();
    for (r, acc) in acc.iter().enumerate() {
        let Some(px) = store.dst(m + r) else { continue };
        for (v, &val) in acc.iter().enumerate() {
            let mut val = val;
            if let Some(bias) = store.bias {
                val = S::add(val, S::load(bias.as_ptr().add(nb + w * v)));
            }
            if store.relu {
                val = S::max(val, S::zero());
            }
            S::store(dp.add(px * n + nb + w * v), val);
        }
    }
    MR
}

/// The weight gradient's product: `dk[boff + k * n + j] += sum over pixels (r, q) < (oh, ow)
/// of a[(off + r * width + q) * lda + k] * dy[(r * ow + q) * n + j]`, for every group
/// `(off, boff, kdim)`.
///
/// # Safety
/// [`available`]`(n)`; the rows read lie inside `a` (as for the forward pass), `dy` holds
/// `oh * ow * n` values and `dk` every group's `boff + kdim * n`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn corr_weight_grad(
    n: usize,
    a: &[f32],
    lda: usize,
    width: usize,
    (oh, ow): (usize, usize),
    groups: &[(usize, usize, usize)],
    dy: &[f32],
    dk: &mut [f32],
) {
    debug_assert!(dy.len() >= oh * ow * n);
    debug_assert!(groups
        .iter()
        .all(|&(off, boff, kdim)| (off + (oh - 1) * width + ow - 1) * lda + kdim <= a.len()
            && boff + kdim * n <= dk.len()));
    debug_assert!(available(n));
    // SAFETY: the caller's contract.
    unsafe { weight_grad_entry(n, a, lda, width, oh, ow, groups, dy, dk) }
}

simd_entry!(unsafe fn weight_grad_entry = weight_grad_simd(
    n: usize,
    a: &[f32],
    lda: usize,
    width: usize,
    oh: usize,
    ow: usize,
    groups: &[(usize, usize, usize)],
    dy: &[f32],
    dk: &mut [f32],
));

#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn weight_grad_simd<S: Simd>(
    n: usize,
    a: &[f32],
    lda: usize,
    width: usize,
    oh: usize,
    ow: usize,
    groups: &[(usize, usize, usize)],
    dy: &[f32],
    dk: &mut [f32],
) {
    let big = S::REGISTERS >= 32;
    for &(off, boff, kdim) in groups {
        let mut nb = 0;
        while nb < n {
            let wide = n - nb >= 2 * S::LANES;
            // Rows of 8 when they divide the inner dimension and 12 do not (32 or 64 channels
            // in Winograd's domain): 12, 12, 6, 1, 1 would end on latency-bound single rows.
            let eights = big && kdim.is_multiple_of(8) && !kdim.is_multiple_of(12);
            let mut k = 0;
            while k < kdim {
                let args = (k, nb, n, a, lda, width, (oh, ow), off, boff, dy);
                k += match (wide, kdim - k) {
                    (true, _) if eights => wgrad_tile::<S, 8, 2>(args, dk),
                    (false, _) if eights => wgrad_tile::<S, 8, 1>(args, dk),
                    (true, 12..) if big => wgrad_tile::<S, 12, 2>(args, dk),
                    (true, 6..) => wgrad_tile::<S, 6, 2>(args, dk),
                    (true, 3..) => wgrad_tile::<S, 3, 2>(args, dk),
                    (true, _) => wgrad_tile::<S, 1, 2>(args, dk),
                    (false, 12..) => wgrad_tile::<S, 12, 1>(args, dk),
                    (false, 6..) => wgrad_tile::<S, 6, 1>(args, dk),
                    (false, 3..) => wgrad_tile::<S, 3, 1>(args, dk),
                    (false, _) => wgrad_tile::<S, 1, 1>(args, dk),
                };
            }
            nb += if wide { 2 * S::LANES } else { S::LANES };
        }
    }
}

#[inline(always)]
unsafe fn wgrad_tile<S: Simd, const MR: usize, const NV: usize>(
    (k, nb, n, a, lda, width, (oh, ow), off, boff, dy): WgradArgs,
    dk: &mut [f32],
) -> usize {
    let w = S::LANES;
    let mut acc = [[S::zero(); NV]; MR];
    let (ap, dp) = (a.as_ptr(), dy.as_ptr());
    for r in 0..oh {
        for q in 0..ow {
            let a0 = ap.add((off + r * width + q) * lda + k);
            let d0 = dp.add((r * ow + q) * n + nb);
            let mut dv = [S::zero(); NV];
            for (v, dv) in dv.iter_mut().enumerate() {
                *dv = S::load(d0.add(w * v));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = S::splat(*a0.add(i));
                for v in 0..NV {
                    acc[v] = S::fmadd(av, dv[v], acc[v]);
                }
            }
        }
    }
    let kp = dk.as_mut_ptr();
    for (i, acc) in acc.iter().enumerate() {
        for (v, &val) in acc.iter().enumerate() {
            let p = kp.add(boff + (k + i) * n + nb + w * v);
            S::store(p, S::add(S::load(p), val));
        }
    }
    MR
}

/// `(k, nb, n, a, lda, width, (oh, ow), off, boff, dy)` of a weight-gradient tile.
type WgradArgs<'a> = (usize, usize, usize, &'a [f32], usize, usize, (usize, usize), usize, usize, &'a [f32]);

/// `s` as `f32` values when `T` is `f32`.
pub(crate) fn as_f32<T: 'static>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: `T` is `f32`, checked by its type id.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) })
}

/// `s` as possibly uninitialised `f32` values when `T` is `f32`.
pub(crate) fn as_f32_uninit<T: 'static>(s: &mut [MaybeUninit<T>]) -> Option<&mut [MaybeUninit<f32>]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: `T` is `f32`, checked by its type id.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<MaybeUninit<f32>>(), s.len()) })
    } else {
        None
    }
}

/// `s` as mutable `f32` values when `T` is `f32`.
pub(crate) fn as_f32_mut<T: 'static>(s: &mut [T]) -> Option<&mut [f32]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: `T` is `f32`, checked by its type id.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut f32, s.len()) })
    } else {
        None
    }
}
