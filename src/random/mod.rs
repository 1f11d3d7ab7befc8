//! The random numbers kandle draws itself, so that a seeded run is the same on every machine and
//! with any number of threads: SplitMix64 for seeds and dropout masks, and NumPy's legacy
//! Mersenne Twister where Keras' own shuffles must be reproduced bit for bit.

pub(crate) mod numpy;

/// SplitMix64: a small, fast, well-mixed generator (advances `state`, returns the next value).
#[inline]
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for stream `(a, b)` of `seed` (an epoch and a sample, say): independent streams from
/// one seed, each a pure function of its coordinates.
#[inline]
pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut s = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    splitmix64(&mut s)
}
