//! Intel AMX (Advanced Matrix Extensions): bf16 matrix products on tiles, for the
//! `mixed_bfloat16` policy's convolutions.
//!
//! A tile is a 16-row register of up to 64 bytes per row; `tdpbf16ps` adds to a 16x16 f32
//! tile C the product of a 16x32 bf16 tile A and a 32x16 bf16 tile B stored in pairs
//! ("VNNI": row `r` of B holds `B[2r][j], B[2r+1][j]` for each column `j`). Every kernel here
//! uses one layout of the eight tiles: `tmm0..tmm3` a 2x2 block of C, `tmm4`/`tmm5` two A
//! tiles (32 rows), `tmm6`/`tmm7` two B tiles (32 columns), each 16 rows of 64 bytes.
//!
//! The instructions are emitted with `asm!` (the AMX intrinsics are not stable Rust); Linux
//! hands the tile state to a process only after `arch_prctl(ARCH_REQ_XCOMP_PERM)`, which
//! [`available`] requests once. A thread loads the tile configuration with [`Tiles::new`]
//! and releases it when the guard drops.

/// Whether this CPU and OS run AMX bf16 products, and kandle's SIMD level (`KANDLE_SIMD`)
/// allows AVX-512: checked (and the tile state requested from Linux) once per process.
pub(crate) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| crate::kernels::simd_level() == crate::kernels::SimdLevel::Avx512 && imp::detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::arch::asm;

    pub(super) fn detect() -> bool {
        // CPUID leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
        // SAFETY: CPUID is always available on x86-64.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
            return false;
        }
        // The conversions around the tiles (vec16) take AVX-512BW/VL and AVX512-BF16, which
        // every AMX CPU has; checked all the same.
        if !(std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bf16"))
        {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with this request only changes the process' permitted state
        // components; it fails (non-zero) where the kernel does not support AMX.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }

    /// The tile configuration of `ldtilecfg`: palette 1, eight tiles of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    /// The tile state of the current thread, configured; released on drop.
    pub(crate) struct Tiles(());

    impl Tiles {
        /// Configures this thread's tiles.
        ///
        /// # Safety
        /// [`super::available`] returned true.
        pub(crate) unsafe fn new() -> Tiles {
            let mut cfg = Config { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
            for t in 0..8 {
                cfg.colsb[t] = 64;
                cfg.rows[t] = 16;
            }
            asm!("ldtilecfg [{}]", in(reg) &cfg as *const Config, options(nostack, readonly));
            Tiles(())
        }

        /// `C = 0` (the 2x2 block `tmm0..tmm3`).
        #[inline(always)]
        pub(crate) fn zero(&mut self) {
            // SAFETY: the tiles are configured (self exists).
            unsafe { asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem)) }
        }

        /// Loads the C block from `c`, row stride `stride` bytes: tile (i, j) at row `16 i`,
        /// column `16 j`.
        ///
        /// # Safety
        /// `c` is valid for reading 32 rows of 32 f32 at that stride.
        #[inline(always)]
        pub(crate) unsafe fn load_c(&mut self, c: *const f32, stride: usize) {
            let (c0, c1) = (c, c.add(16));
            let (c2, c3) = (c.byte_add(16 * stride), c.byte_add(16 * stride).add(16));
            asm!(
                "tileloadd tmm0, [{c0} + {s}*1]",
                "tileloadd tmm1, [{c1} + {s}*1]",
                "tileloadd tmm2, [{c2} + {s}*1]",
                "tileloadd tmm3, [{c3} + {s}*1]",
                c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) stride,
                options(nostack, readonly)
            );
        }

        /// Stores the C block to `c` (as [`Tiles::load_c`] reads it).
        ///
        /// # Safety
        /// `c` is valid for writing 32 rows of 32 f32 at that stride.
        #[inline(always)]
        pub(crate) unsafe fn store_c(&mut self, c: *mut f32, stride: usize) {
            let (c0, c1) = (c, c.add(16));
            let (c2, c3) = (c.byte_add(16 * stride), c.byte_add(16 * stride).add(16));
            asm!(
                "tilestored [{c0} + {s}*1], tmm0",
                "tilestored [{c1} + {s}*1], tmm1",
                "tilestored [{c2} + {s}*1], tmm2",
                "tilestored [{c3} + {s}*1], tmm3",
                c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) stride,
                options(nostack)
            );
        }

        /// `C += A B` for A the two 16-row tiles at `a0`, `a1` (row stride `sa` bytes, 32
        /// bf16 per row) and B the two pair-interleaved tiles at `b0`, `b1` (row stride `sb`
        /// bytes, 16 pairs per row).
        ///
        /// # Safety
        /// Each pointer is valid for reading 16 rows of 64 bytes at its stride.
        #[inline(always)]
        pub(crate) unsafe fn step(
            &mut self,
            a0: *const u16,
            a1: *const u16,
            sa: usize,
            b0: *const u16,
            b1: *const u16,
            sb: usize,
        ) {
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0, a1 = in(reg) a1, sa = in(reg) sa,
                b0 = in(reg) b0, b1 = in(reg) b1, sb = in(reg) sb,
                options(nostack, readonly)
            );
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: releases this thread's tile state, configured by Tiles::new.
            unsafe { asm!("tilerelease", options(nostack, nomem)) }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn detect() -> bool {
        false
    }

    /// No AMX on this target: [`super::available`] is false, so nothing constructs this.
    pub(crate) struct Tiles(());

    #[allow(clippy::missing_safety_doc, unused)]
    impl Tiles {
        pub(crate) unsafe fn new() -> Tiles {
            unreachable!("AMX is not available on this target")
        }
        pub(crate) fn zero(&mut self) {}
        pub(crate) unsafe fn load_c(&mut self, _c: *const f32, _stride: usize) {}
        pub(crate) unsafe fn store_c(&mut self, _c: *mut f32, _stride: usize) {}
        pub(crate) unsafe fn step(
            &mut self,
            _a0: *const u16,
            _a1: *const u16,
            _sa: usize,
            _b0: *const u16,
            _b1: *const u16,
            _sb: usize,
        ) {
        }
    }
}

pub(crate) use imp::Tiles;

/// Conversions to bf16 sixteen values at a time (AVX-512F, AVX512-BF16's `vcvtneps2bf16`,
/// ties to even), for the AMX path, whose CPUs have both. Lengths are multiples of 16 unless
/// said otherwise.
#[cfg(target_arch = "x86_64")]
pub(crate) mod vec16 {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn bf16x16(p: *const f32) -> __m256i {
        std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(p)))
    }

    /// `dst = bf16(src)`.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/VL and AVX512-BF16; `src.len() == dst.len()`, a multiple of 16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(crate) unsafe fn convert(src: &[f32], dst: &mut [u16]) {
        assert!(src.len() == dst.len() && src.len().is_multiple_of(16));
        for i in (0..src.len()).step_by(16) {
            _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), bf16x16(src.as_ptr().add(i)));
        }
    }

    /// Each value of `v` rounded to bf16 (a tail shorter than 16 included).
    ///
    /// # Safety
    /// As [`convert`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(crate) unsafe fn round(v: &mut [f32]) {
        let whole = v.len() / 16 * 16;
        for i in (0..whole).step_by(16) {
            let b = _mm512_cvtepu16_epi32(bf16x16(v.as_ptr().add(i)));
            _mm512_storeu_ps(v.as_mut_ptr().add(i), _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b)));
        }
        v[whole..].iter_mut().for_each(|x| *x = super::round_bf16(*x));
    }

    /// `dst = bf16(max?(src + bias))` per pixel of `bias.len()` channels, as f32.
    ///
    /// # Safety
    /// As [`convert`]; `src` and `dst` of equal lengths, whole pixels, `bias.len()` a
    /// multiple of 16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(crate) unsafe fn epilogue(src: &[f32], dst: &mut [std::mem::MaybeUninit<f32>], bias: &[f32], relu: bool) {
        let c = bias.len();
        assert!(src.len() == dst.len() && c.is_multiple_of(16) && src.len().is_multiple_of(c.max(1)));
        let zero = _mm512_setzero_ps();
        for px in (0..src.len()).step_by(c) {
            for o in (0..c).step_by(16) {
                let mut v =
                    _mm512_add_ps(_mm512_loadu_ps(src.as_ptr().add(px + o)), _mm512_loadu_ps(bias.as_ptr().add(o)));
                if relu {
                    v = _mm512_max_ps(v, zero);
                }
                let b = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v)));
                _mm512_storeu_ps(dst.as_mut_ptr().add(px + o).cast(), _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b)));
            }
        }
    }

    /// A tiles of `src`'s transpose: for 32 rows `q` whose values start at `offsets[q]` in
    /// `src` (`-1`: a row of zeros), tile `ob` of `tiles` gets `tiles[ob][r][k] =
    /// bf16(src[offsets[k] + 16 ob + r])`, for `cout / 16` tiles of 16 x 32.
    ///
    /// # Safety
    /// As [`convert`]; every offset other than -1 is followed by `cout` values of `src`, and
    /// `tiles` holds `cout * 32` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(crate) unsafe fn gather_tiles(src: &[f32], offsets: &[i32], cout: usize, tiles: &mut [u16]) {
        assert!(offsets.len() == 32 && tiles.len() == cout * 32 && cout.is_multiple_of(16));
        let lo = _mm512_loadu_si512(offsets.as_ptr().cast());
        let hi = _mm512_loadu_si512(offsets.as_ptr().add(16).cast());
        let (mlo, mhi) =
            (_mm512_cmpge_epi32_mask(lo, _mm512_setzero_si512()), _mm512_cmpge_epi32_mask(hi, _mm512_setzero_si512()));
        for o in 0..cout {
            let base = src.as_ptr().add(o);
            let a = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mlo, lo, base);
            let b = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mhi, hi, base);
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
            _mm512_storeu_si512(tiles.as_mut_ptr().add(((o / 16) * 16 + o % 16) * 32).cast(), v);
        }
    }

    /// `pair[2 o + e] = bf16(row_e[o])` for the two rows (zeros for a missing one).
    ///
    /// # Safety
    /// As [`convert`]; rows of `pair.len() / 2` values, a multiple of 16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(crate) unsafe fn interleave(a: Option<&[f32]>, b: Option<&[f32]>, pair: &mut [u16]) {
        let c = pair.len() / 2;
        assert!(c.is_multiple_of(16) && a.is_none_or(|a| a.len() == c) && b.is_none_or(|b| b.len() == c));
        for o in (0..c).step_by(16) {
            let lo = a.map_or(_mm512_setzero_si512(), |a| _mm512_cvtepu16_epi32(bf16x16(a.as_ptr().add(o))));
            let hi = b.map_or(_mm512_setzero_si512(), |b| _mm512_cvtepu16_epi32(bf16x16(b.as_ptr().add(o))));
            let v = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
            _mm512_storeu_si512(pair.as_mut_ptr().add(2 * o).cast(), v);
        }
    }
}

/// The same conversions, one value at a time, where there is no AMX (nothing calls them:
/// [`available`] is false), so that the AMX path compiles on every target.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::missing_safety_doc)]
pub(crate) mod vec16 {
    use super::{bf16_bits, round_bf16};
    pub(crate) unsafe fn convert(src: &[f32], dst: &mut [u16]) {
        dst.iter_mut().zip(src).for_each(|(d, &s)| *d = bf16_bits(s));
    }
    pub(crate) unsafe fn round(v: &mut [f32]) {
        v.iter_mut().for_each(|x| *x = round_bf16(*x));
    }
    pub(crate) unsafe fn epilogue(src: &[f32], dst: &mut [std::mem::MaybeUninit<f32>], bias: &[f32], relu: bool) {
        for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
            let v = s + bias[i % bias.len()];
            d.write(round_bf16(if relu { v.max(0.0) } else { v }));
        }
    }
    pub(crate) unsafe fn gather_tiles(src: &[f32], offsets: &[i32], cout: usize, tiles: &mut [u16]) {
        for o in 0..cout {
            for (k, &off) in offsets.iter().enumerate() {
                tiles[o * 32 + k] = if off < 0 { 0 } else { bf16_bits(src[off as usize + o]) };
            }
        }
    }
    pub(crate) unsafe fn interleave(a: Option<&[f32]>, b: Option<&[f32]>, pair: &mut [u16]) {
        for (o, p) in pair.chunks_exact_mut(2).enumerate() {
            p[0] = a.map_or(0, |a| bf16_bits(a[o]));
            p[1] = b.map_or(0, |b| bf16_bits(b[o]));
        }
    }
}

/// `v` rounded to the nearest bf16 (ties to even), as its 16 bits; NaN stays NaN.
#[inline(always)]
pub(crate) fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    // A select rather than a branch, so that loops over slices vectorise.
    (if v.is_nan() { b | 0x0040_0000 } else { rounded } >> 16) as u16
}

/// `v` rounded to the nearest bf16 (ties to even), as an f32.
#[inline(always)]
pub(crate) fn round_bf16(v: f32) -> f32 {
    f32::from_bits((bf16_bits(v) as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_bf16(1.0 + 1.5 / 256.0), 1.0 + 1.0 / 128.0);
        assert_eq!(round_bf16(-2.0), -2.0);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY); // overflows as Keras' cast does
                                                         // 0.1 is 0x3dcccccd: its low half 0xcccd is above the halfway 0x8000, so up.
        assert_eq!(bf16_bits(0.1), 0x3dcd);
        // 0x3f818000 is halfway with an odd upper half 0x3f81: up to the even 0x3f82.
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
    }
}
