//! Direct AVX-512 micro-kernels for the stride-1 convolutions of `conv.rs`, in f32.
//!
//! The products of a convolution in NHWC have a special shape: the rows of the input operand
//! are pixels that overlap (row `m + 1` starts `c_in` values after row `m`), and the other
//! operand, a kernel row of Keras' `(kh, kw, in, out)` weights, is small and already laid out
//! with the output channels contiguous. A general GEMM packs both operands for every product;
//! these kernels read the pixels in place, broadcasting one input value at a time against 16
//! or 32 output channels held in registers (12 pixels x 32 channels = 24 accumulators), and
//! write each output once, with the bias and ReLU applied on the way out and the "wide" rows
//! that fall past the image's edge never stored.
//!
//! Used when the CPU has AVX-512F and the channel count of the result is a multiple of 16;
//! otherwise `conv.rs` keeps its `gemm` path.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
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
    #[cfg(target_arch = "x86_64")]
    {
        n > 0 && n.is_multiple_of(16) && super::avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = n;
        false
    }
}

/// `dst <- store(sum over groups (off, boff, kdim), k < kdim of a[(off + m) * lda + k] * b[boff + k * n + j])`
/// for the wide rows `m < m_total` and the channels `j < n`.
///
/// # Safety
/// [`available`]`(n)`; every row read, `(off + m) * lda + kdim <= a.len()`, and
/// `boff + kdim * n <= b.len()`; the destination holds `rows * cols * n` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
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
    // A row stride known at compile time (32 or 64 channels) lets every broadcast address the
    // row as a constant displacement, instead of a pointer bumped row by row.
    match lda {
        32 => corr_l::<32>(m_total, n, a, lda, groups, b, dst, store),
        64 => corr_l::<64>(m_total, n, a, lda, groups, b, dst, store),
        _ => corr_l::<0>(m_total, n, a, lda, groups, b, dst, store),
    }
}

/// [`corr`] with the row stride `L` (0: the run-time `lda`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn corr_l<const L: usize>(
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
    // remainders that are a large share of their rows.
    let mut nb = 0;
    while nb < n {
        let mut m = 0;
        if n - nb >= 64 {
            // 6 rows x 64 channels: each broadcast feeds four registers of weights.
            while m < m_total {
                let step = match m_total - m {
                    6.. => corr_tile::<6, 4, L>(m, nb, n, a, lda, groups, b, dst, store),
                    3.. => corr_tile::<3, 4, L>(m, nb, n, a, lda, groups, b, dst, store),
                    _ => corr_tile::<1, 4, L>(m, nb, n, a, lda, groups, b, dst, store),
                };
                m += step;
            }
            nb += 64;
        } else if n - nb >= 32 {
            while m < m_total {
                let step = match m_total - m {
                    12.. => corr_tile::<12, 2, L>(m, nb, n, a, lda, groups, b, dst, store),
                    6.. => corr_tile::<6, 2, L>(m, nb, n, a, lda, groups, b, dst, store),
                    3.. => corr_tile::<3, 2, L>(m, nb, n, a, lda, groups, b, dst, store),
                    _ => corr_tile::<1, 2, L>(m, nb, n, a, lda, groups, b, dst, store),
                };
                m += step;
            }
            nb += 32;
        } else {
            while m < m_total {
                let step = match m_total - m {
                    24.. => corr_tile::<24, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                    12.. => corr_tile::<12, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                    6.. => corr_tile::<6, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                    3.. => corr_tile::<3, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                    _ => corr_tile::<1, 1, L>(m, nb, n, a, lda, groups, b, dst, store),
                };
                m += step;
            }
            nb += 16;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn corr_tile<const MR: usize, const NV: usize, const L: usize>(
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
    let lda = if L > 0 { L } else { lda };
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for &(off, boff, kdim) in groups {
        let a0 = ap.add((off + m) * lda);
        let b0 = bp.add(boff + nb);
        for k in 0..kdim {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_ps(b0.add(k * n + 16 * v));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a0.add(r * lda + k));
                for v in 0..NV {
                    acc[v] = _mm512_fmadd_ps(av, bv[v], acc[v]);
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
                val = _mm512_add_ps(val, _mm512_loadu_ps(bias.as_ptr().add(nb + 16 * v)));
            }
            if store.relu {
                val = _mm512_max_ps(val, _mm512_setzero_ps());
            }
            _mm512_storeu_ps(dp.add(px * n + nb + 16 * v), val);
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
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
    for &(off, boff, kdim) in groups {
        let mut nb = 0;
        while nb < n {
            let wide = n - nb >= 32;
            // Rows of 8 when they divide the inner dimension and 12 do not (32 or 64 channels
            // in Winograd's domain): 12, 12, 6, 1, 1 would end on latency-bound single rows.
            let eights = kdim.is_multiple_of(8) && !kdim.is_multiple_of(12);
            let mut k = 0;
            while k < kdim {
                let args = (k, nb, n, a, lda, width, (oh, ow), off, boff, dy);
                k += match (wide, kdim - k) {
                    (true, _) if eights => wgrad_tile::<8, 2>(args, dk),
                    (false, _) if eights => wgrad_tile::<8, 1>(args, dk),
                    (true, 12..) => wgrad_tile::<12, 2>(args, dk),
                    (true, 6..) => wgrad_tile::<6, 2>(args, dk),
                    (true, 3..) => wgrad_tile::<3, 2>(args, dk),
                    (true, _) => wgrad_tile::<1, 2>(args, dk),
                    (false, 12..) => wgrad_tile::<12, 1>(args, dk),
                    (false, 6..) => wgrad_tile::<6, 1>(args, dk),
                    (false, 3..) => wgrad_tile::<3, 1>(args, dk),
                    (false, _) => wgrad_tile::<1, 1>(args, dk),
                };
            }
            nb += if wide { 32 } else { 16 };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad_tile<const MR: usize, const NV: usize>(
    (k, nb, n, a, lda, width, (oh, ow), off, boff, dy): WgradArgs,
    dk: &mut [f32],
) -> usize {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let (ap, dp) = (a.as_ptr(), dy.as_ptr());
    for r in 0..oh {
        for q in 0..ow {
            let a0 = ap.add((off + r * width + q) * lda + k);
            let d0 = dp.add((r * ow + q) * n + nb);
            let mut dv = [_mm512_setzero_ps(); NV];
            for (v, dv) in dv.iter_mut().enumerate() {
                *dv = _mm512_loadu_ps(d0.add(16 * v));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a0.add(i));
                for v in 0..NV {
                    acc[v] = _mm512_fmadd_ps(av, dv[v], acc[v]);
                }
            }
        }
    }
    let kp = dk.as_mut_ptr();
    for (i, acc) in acc.iter().enumerate() {
        for (v, &val) in acc.iter().enumerate() {
            let p = kp.add(boff + (k + i) * n + nb + 16 * v);
            _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), val));
        }
    }
    MR
}

/// `(k, nb, n, a, lda, width, (oh, ow), off, boff, dy)` of a weight-gradient tile.
#[cfg(target_arch = "x86_64")]
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

/// Never called: [`available`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn corr(
    _m_total: usize,
    _n: usize,
    _a: &[f32],
    _lda: usize,
    _groups: &[(usize, usize, usize)],
    _b: &[f32],
    _dst: &mut [MaybeUninit<f32>],
    _store: &Store,
) {
    unreachable!("direct kernels are x86-64 only")
}

/// Never called: [`available`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn corr_weight_grad(
    _n: usize,
    _a: &[f32],
    _lda: usize,
    _width: usize,
    _dims: (usize, usize),
    _groups: &[(usize, usize, usize)],
    _dy: &[f32],
    _dk: &mut [f32],
) {
    unreachable!("direct kernels are x86-64 only")
}
