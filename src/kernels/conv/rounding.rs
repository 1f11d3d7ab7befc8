//! Rounding f32 values to bf16 (to nearest, ties to even), kept as f32: the casts of Keras'
//! `mixed_bfloat16` policy, vectorized where the CPU converts to bf16 itself (AVX512-BF16).

use super::amx::{self, round_bf16, vec16};
use rayon::prelude::*;

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
pub(crate) fn round_in_place_serial(v: &mut [f32]) {
    if amx::available() {
        // SAFETY: AMX's CPUs have AVX512-BF16 (checked by amx::available).
        unsafe { vec16::round(v) }
    } else {
        v.iter_mut().for_each(|x| *x = round_bf16(*x))
    }
}
