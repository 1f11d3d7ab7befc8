//! The SIMD layer of kandle's kernels: the few vector operations they use, behind one trait,
//! with an implementation per instruction set: AVX-512F (16 lanes of f32, 32 registers),
//! AVX2 with FMA (8 lanes, 16 registers) and NEON (4 lanes, 32 registers, aarch64).
//!
//! A kernel is written once, generic over `S: Simd` and `#[inline(always)]` all the way down,
//! and instantiated inside a `#[target_feature]` function per instruction set (the
//! [`simd_entry!`] macro), so that the intrinsics are inlined into code compiled for that set;
//! [`super::simd_level`] picks the entry at run time. Register tiles are chosen per width
//! ([`Simd::REGISTERS`]). (`pulp`, already in the tree through `gemm`, follows the same scheme;
//! kandle's kernels need so few operations that a trait of its own keeps them readable and
//! lets a tile be a plain array of vectors.)
//!
//! NEON cannot be compiled or run on this project's machines (no aarch64 standard library can
//! be fetched here); its implementation is the same dozen operations, mapped one to one.

/// Vector operations on `f32` lanes.
///
/// Every method is `unsafe`: it may only run where the CPU has the instruction set (inside the
/// matching [`simd_entry!`] function), and the loads and stores read and write `LANES` values.
pub(crate) trait Simd: Copy + 'static {
    /// A register of `LANES` values.
    type V: Copy;
    /// `f32` values per register.
    const LANES: usize;
    /// Vector registers of the instruction set (tiles are sized to leave room for the
    /// operands next to the accumulators).
    const REGISTERS: usize;
    /// All lanes 0.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` values from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// `LANES` values to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`, fused.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// A hint to bring the cache line holding `p` into L1 (no effect where there is none).
    unsafe fn prefetch(p: *const f32);
    /// The larger of each pair (ReLU with [`Simd::zero`]).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
}

/// An x86-64 instruction set's [`Simd`]: the type, its geometry and its intrinsics, which
/// differ only by name between AVX-512F and AVX2.
macro_rules! x86_simd {
    ($(#[$doc:meta])* $name:ident: $v:ident, $lanes:expr, $regs:expr,
     $zero:ident, $splat:ident, $load:ident, $store:ident, $fmadd:ident, $add:ident, $sub:ident, $mul:ident, $max:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name;

        #[cfg(target_arch = "x86_64")]
        impl Simd for $name {
            type V = std::arch::x86_64::$v;
            const LANES: usize = $lanes;
            const REGISTERS: usize = $regs;
            #[inline(always)]
            unsafe fn zero() -> Self::V {
                std::arch::x86_64::$zero()
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> Self::V {
                std::arch::x86_64::$splat(x)
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self::V {
                std::arch::x86_64::$load(p)
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: Self::V) {
                std::arch::x86_64::$store(p, v)
            }
            #[inline(always)]
            unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
                std::arch::x86_64::$fmadd(a, b, c)
            }
            #[inline(always)]
            unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
                std::arch::x86_64::$add(a, b)
            }
            #[inline(always)]
            unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
                std::arch::x86_64::$sub(a, b)
            }
            #[inline(always)]
            unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
                std::arch::x86_64::$mul(a, b)
            }
            #[inline(always)]
            unsafe fn prefetch(p: *const f32) {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
            }
            #[inline(always)]
            unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
                std::arch::x86_64::$max(a, b)
            }
        }
    };
}

x86_simd!(
    /// AVX-512F.
    Avx512: __m512, 16, 32, _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps,
    _mm512_fmadd_ps, _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_max_ps
);
x86_simd!(
    /// AVX2 with FMA.
    Avx2: __m256, 8, 16, _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps,
    _mm256_fmadd_ps, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_max_ps
);

/// NEON (aarch64's baseline).
#[cfg(target_arch = "aarch64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Neon;

#[cfg(target_arch = "aarch64")]
impl Simd for Neon {
    type V = std::arch::aarch64::float32x4_t;
    const LANES: usize = 4;
    const REGISTERS: usize = 32;
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        std::arch::aarch64::vdupq_n_f32(0.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        std::arch::aarch64::vdupq_n_f32(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        std::arch::aarch64::vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        std::arch::aarch64::vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // vfmaq_f32(c, a, b) = c + a * b.
        std::arch::aarch64::vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::arch::aarch64::vaddq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        std::arch::aarch64::vsubq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        std::arch::aarch64::vmulq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        let _ = p; // aarch64's prefetch intrinsic is not stable
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        std::arch::aarch64::vmaxq_f32(a, b)
    }
}

/// The lanes of the kernels at the current [`super::simd_level`] (0: none, the kernels built on
/// this layer do not run).
pub(crate) fn lanes() -> usize {
    use super::SimdLevel;
    match super::simd_level() {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => Avx512::LANES,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => Avx2::LANES,
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => Neon::LANES,
        _ => 0,
    }
}

/// Defines `$name($args)`, which runs the generic `$body::<S>($args)` compiled for the
/// instruction set [`super::simd_level`] names: one `#[target_feature]` instantiation per set.
/// `$body::<_, 4>(..)` passes constant parameters after the instruction set's type.
/// The caller checks [`lanes`] first: at [`super::SimdLevel::Scalar`] the function panics.
macro_rules! simd_entry {
    ($(#[$m:meta])* $vis:vis unsafe fn $name:ident = $body:ident $(::<_ $(, $gen:tt)+>)? ($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $name($($arg: $ty),*) {
            use $crate::kernels::SimdLevel;
            match $crate::kernels::simd_level() {
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx512 => {
                    #[target_feature(enable = "avx512f")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn wide($($arg: $ty),*) {
                        $body::<$crate::kernels::simd::Avx512 $($(, $gen)+)?>($($arg),*)
                    }
                    // SAFETY: the CPU has AVX-512F (simd_level); the caller's contract for the rest.
                    unsafe { wide($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn narrow($($arg: $ty),*) {
                        $body::<$crate::kernels::simd::Avx2 $($(, $gen)+)?>($($arg),*)
                    }
                    // SAFETY: the CPU has AVX2 and FMA (simd_level).
                    unsafe { narrow($($arg),*) }
                }
                #[cfg(target_arch = "aarch64")]
                SimdLevel::Neon => {
                    #[target_feature(enable = "neon")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn neon($($arg: $ty),*) {
                        $body::<$crate::kernels::simd::Neon $($(, $gen)+)?>($($arg),*)
                    }
                    // SAFETY: NEON is aarch64's baseline.
                    unsafe { neon($($arg),*) }
                }
                #[allow(unreachable_patterns)]
                level => unreachable!("{}: no SIMD kernel at level {level:?}", stringify!($name)),
            }
        }
    };
}
pub(crate) use simd_entry;
