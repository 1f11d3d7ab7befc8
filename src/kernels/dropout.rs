//! Inverted dropout as one pass: `y = x * keep / (1 - rate)`, the keep mask drawn from a
//! counter-based generator. The backward pass draws the same mask again from the same seed, so
//! no mask is stored. Chunks of the tensor draw from their own stream (seed, chunk index), so
//! the mask does not depend on the number of threads.

use super::{contiguous, dispatch1, Float};
use crate::random::splitmix64;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

const CHUNK: usize = 1 << 14;

#[derive(Clone, Copy)]
struct DropoutOp {
    seed: u64,
    rate: f64,
    /// The position of the tensor's first element in a larger tensor whose mask this one
    /// shares (a replica's slice of a global batch): element `i` draws as element
    /// `offset + i` of that tensor.
    offset: u64,
}

/// MurmurHash3's 32-bit finaliser: a bijection that mixes every input bit into every output bit.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

impl DropoutOp {
    /// Keeps element `i` of chunk `c` when `fmix32(key_c + i * golden) >= rate * 2^32`, with
    /// `key_c` drawn from (seed, c) by SplitMix64: each element's draw is computed on its own,
    /// so the loop is a vectorised select.
    fn apply<T: Float>(&self, x: &[T]) -> Vec<T> {
        let threshold = ((self.rate * 4_294_967_296.0) as u64).min(u32::MAX as u64) as u32;
        let scale = <T as candle_core::WithDType>::from_f64(1.0 / (1.0 - self.rate));
        // The chunks are those of the whole tensor the offset refers to: a first, partial piece
        // up to the next chunk boundary, then whole chunks.
        let head = ((CHUNK as u64 - self.offset % CHUNK as u64) % CHUNK as u64).min(x.len() as u64) as usize;
        let key = |global: u64| {
            let c = global / CHUNK as u64;
            let mut state = self.seed ^ c.wrapping_mul(0xD1B5_4A32_D192_ED03);
            // Element j of chunk c draws fmix32(key_c + j * golden): starting at j0 is the
            // same as starting at 0 from key_c + j0 * golden.
            (splitmix64(&mut state) as u32).wrapping_add(((global % CHUNK as u64) as u32).wrapping_mul(0x9E37_79B9))
        };
        let write = |y: &mut [MaybeUninit<T>]| {
            let (y0, y1) = y.split_at_mut(head);
            let (x0, x1) = x.split_at(head);
            if head > 0 {
                keep_scaled(y0, x0, key(self.offset), threshold, scale);
            }
            let base = self.offset + head as u64;
            y1.par_chunks_mut(CHUNK).zip(x1.par_chunks(CHUNK)).enumerate().for_each(|(c, (y, x))| {
                keep_scaled(y, x, key(base + (c * CHUNK) as u64), threshold, scale);
            })
        };
        // SAFETY: keep_scaled writes every value of its piece, and the pieces cover y.
        unsafe { super::output_vec(x.len(), write) }
    }
}

#[inline(always)]
fn keep_scaled_body<T: Float>(y: &mut [MaybeUninit<T>], x: &[T], key: u32, threshold: u32, scale: T) {
    for (i, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let draw = fmix32(key.wrapping_add((i as u32).wrapping_mul(0x9E37_79B9)));
        y.write(if draw >= threshold { x * scale } else { T::ZERO });
    }
}

/// The masked, scaled copy of one chunk; with AVX-512 where the CPU has it (the 32-bit
/// multiplies of the hash vectorise there, not on baseline x86-64).
fn keep_scaled<T: Float>(y: &mut [MaybeUninit<T>], x: &[T], key: u32, threshold: u32, scale: T) {
    with_simd!(keep_scaled_body(y: &mut [MaybeUninit<T>], x: &[T], key: u32, threshold: u32, scale: T))
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "kandle-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = dispatch1!(self.name(), s, |x| self.apply(contiguous(x, l, "dropout")?));
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // The same seed draws the same mask: d(x * m) / dx = m.
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// Inverted dropout of `x` at `rate` with the mask drawn from `seed`, differentiable.
///
/// On other devices than the CPU the mask is drawn on the CPU from the same generator and
/// multiplied in, so results are the same everywhere.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// let x = Tensor::ones(1000, DType::F32, &Device::Cpu)?;
/// let y = kandle::kernels::dropout(&x, 0.5, 7)?.to_vec1::<f32>()?;
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// assert_eq!(y, kandle::kernels::dropout(&x, 0.5, 7)?.to_vec1::<f32>()?); // same seed, same mask
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn dropout(x: &Tensor, rate: f64, seed: u64) -> candle_core::Result<Tensor> {
    dropout_at(x, rate, seed, 0)
}

/// [`dropout`] of a piece of a larger tensor: element `i` of `x` is masked as element
/// `offset + i` of the tensor it was cut from (row-major), so that the pieces of a batch split
/// across replicas get the rows of the mask the whole batch would get.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use kandle::kernels::{dropout, dropout_at};
/// let x = Tensor::ones((6, 5000), DType::F32, &Device::Cpu)?;
/// let whole = dropout(&x, 0.5, 3)?;
/// let second_half = dropout_at(&x.narrow(0, 3, 3)?, 0.5, 3, 3 * 5000)?;
/// assert_eq!(whole.narrow(0, 3, 3)?.to_vec2::<f32>()?, second_half.to_vec2::<f32>()?);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn dropout_at(x: &Tensor, rate: f64, seed: u64, offset: u64) -> candle_core::Result<Tensor> {
    if !(0.0..1.0).contains(&rate) {
        candle_core::bail!("dropout: rate must be in [0, 1), received {rate}");
    }
    let op = DropoutOp { seed, rate, offset };
    if super::cpu_kernels(x.device()) {
        return x.contiguous()?.apply_op1(op);
    }
    // Elsewhere: the same mask, drawn on the CPU in x's precision, multiplied in.
    let n = x.elem_count();
    let mask = match x.dtype() {
        candle_core::DType::F64 => Tensor::from_vec(op.apply(&vec![1f64; n]), x.shape(), &Device::Cpu)?,
        dtype => Tensor::from_vec(op.apply(&vec![1f32; n]), x.shape(), &Device::Cpu)?.to_dtype(dtype)?,
    };
    x.mul(&mask.to_device(x.device())?)
}
