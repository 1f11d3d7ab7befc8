//! Fast CPU compute behind candle `CustomOp`s, in the channels-last (NHWC) layout that the
//! public API uses.
//!
//! candle 0.11's CPU convolution gradient (`conv_transpose2d`) is a naive loop and its
//! `max_pool2d` backward is wrong when the input size is odd, so kandle brings its own kernels.
//! On other devices the same entry points forward to candle's ops.

/// `$body($args)`, where `$body` is an `#[inline(always)]` function generic over
/// `T: Float`, compiled for AVX-512F or AVX2+FMA where [`simd_level`] allows it and for
/// baseline x86-64 otherwise (the crate is built for the baseline, so loops vectorise with SSE
/// unless a function is compiled for more): the element-wise passes (pooling, dropout, batch
/// normalisation), which the compiler vectorises at each width. Each argument is given with
/// its type, as in a signature; `T` names the element type.
macro_rules! with_simd {
    ($body:ident($($arg:ident: $ty:ty),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match $crate::kernels::simd_level() {
                $crate::kernels::SimdLevel::Avx512 => {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn wide<T: Float>($($arg: $ty),*) {
                        $body($($arg),*)
                    }
                    // SAFETY: the CPU has AVX-512F, checked by simd_level.
                    return unsafe { wide($($arg),*) };
                }
                $crate::kernels::SimdLevel::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn narrow<T: Float>($($arg: $ty),*) {
                        $body($($arg),*)
                    }
                    // SAFETY: the CPU has AVX2 and FMA, checked by simd_level.
                    return unsafe { narrow($($arg),*) };
                }
                _ => {}
            }
        }
        $body($($arg),*)
    }};
}

mod allocator;
pub mod batchnorm;
pub mod conv;
pub(crate) mod depthwise;
pub mod dropout;
mod elementwise;
pub mod pool;
pub(crate) mod simd;

use candle_core::{Layout, Tensor};
use std::mem::MaybeUninit;

pub use allocator::tune_allocator;
pub use batchnorm::{
    batch_moments, batch_norm, batch_norm_act, batch_norm_backward, batch_norm_backward_act, batch_norm_backward_relu,
    batch_norm_relu, channel_affine, BnActivation,
};
pub use conv::{
    conv2d, conv2d_backward, conv2d_backward_with, conv2d_fused, conv2d_fused_with, conv2d_max_pool,
    conv2d_max_pool_backward, relu_backward, ConvParams, Precision,
};
pub use dropout::{dropout, dropout_at};
pub(crate) use elementwise::{
    activation_f32, add_relu, crop_window, relu_general, relu_general_grad, spatial_mean_f32, zero_pad, Unary,
};
pub use pool::{pool2d, pool2d_backward, pool2d_backward_gather, pool2d_gather, PoolKind, PoolParams};

/// The instruction sets kandle's own CPU kernels may use, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Baseline x86-64 (SSE2) or the target's baseline: loops vectorised by the compiler only.
    Scalar,
    /// NEON (aarch64): kandle's direct and Winograd convolution kernels.
    Neon,
    /// AVX2 and FMA: kandle's direct and Winograd convolution kernels, the element-wise
    /// passes compiled for it.
    Avx2,
    /// AVX-512F: kandle's direct and Winograd convolution kernels, its pooling and dropout.
    Avx512,
}

impl SimdLevel {
    fn detected() -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return SimdLevel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return SimdLevel::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            return SimdLevel::Neon;
        }
        #[allow(unreachable_code)]
        SimdLevel::Scalar
    }
}

/// The SIMD level of kandle's own kernels: the CPU's best, capped by the environment variable
/// `KANDLE_SIMD` (`avx512`, `avx2` or `scalar`; read once per process), which tests and
/// benchmarks use to run the lower paths on a machine that has more. A level above the CPU's
/// is not taken; an unknown value is reported on stderr and ignored. (gemm, which the
/// convolutions fall back to and candle's matrix products use, picks its own level at run
/// time; a build without kandle's default `avx512` feature keeps it at AVX2.)
///
/// ```
/// let level = kandle::kernels::simd_level();
/// assert!(level <= kandle::kernels::SimdLevel::Avx512);
/// ```
pub fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = SimdLevel::detected();
        let cap = match std::env::var("KANDLE_SIMD").ok().as_deref() {
            None | Some("") | Some("avx512") => SimdLevel::Avx512,
            Some("avx2") => SimdLevel::Avx2,
            Some("scalar") => SimdLevel::Scalar,
            Some(other) => {
                eprintln!("kandle: KANDLE_SIMD={other:?} is not one of avx512, avx2, scalar; ignored");
                SimdLevel::Avx512
            }
        };
        detected.min(cap)
    })
}

/// Whether this CPU (and OS) runs Intel AMX's bf16 tile products, which the `mixed_bfloat16`
/// policy's convolutions use, and `KANDLE_SIMD` allows AVX-512. Elsewhere those convolutions
/// run the f32 kernels on bf16-rounded values (the same products, summed in f32).
///
/// ```
/// let amx = kandle::kernels::amx_available();
/// assert!(!amx || kandle::kernels::simd_level() == kandle::kernels::SimdLevel::Avx512);
/// ```
pub fn amx_available() -> bool {
    conv::amx::available()
}

/// `x` with each value rounded to bf16 (to nearest, ties to even), still f32: the cast of the
/// `mixed_bfloat16` policy. Differentiable: the gradient passes through, itself rounded to
/// bf16 when `round_grad` (as the gradient of Keras' cast to bf16 is a bf16 tensor). Tensors
/// of other types pass unchanged.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[1.001f32, -3.0, 0.1], &Device::Cpu)?;
/// let r = kandle::kernels::round_bf16(&x, true)?;
/// assert_eq!(r.to_vec1::<f32>()?, vec![1.0, -3.0, 0.10009765625]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn round_bf16(x: &Tensor, round_grad: bool) -> candle_core::Result<Tensor> {
    if x.dtype() != candle_core::DType::F32 {
        return Ok(x.clone());
    }
    if x.device().is_cpu() {
        x.apply_op1(RoundBf16 { round_grad })
    } else {
        let r = x.to_dtype(candle_core::DType::BF16)?.to_dtype(candle_core::DType::F32)?;
        // the cast's gradient is itself rounded; without round_grad, a straight-through one
        if round_grad {
            Ok(r)
        } else {
            x + (r - x)?.detach()
        }
    }
}

struct RoundBf16 {
    round_grad: bool,
}

impl candle_core::CustomOp1 for RoundBf16 {
    fn name(&self) -> &'static str {
        "kandle-round-bf16"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        match s {
            candle_core::CpuStorage::F32(v) => Ok((
                candle_core::CpuStorage::F32(conv::rounding::rounded(contiguous(v, l, "round_bf16")?)),
                l.shape().clone(),
            )),
            _ => candle_core::bail!("round_bf16: expected an f32 tensor"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(if self.round_grad { round_bf16(&dy.detach(), false)?.detach() } else { dy.clone() }))
    }
}

/// Whether kandle's own CPU kernels (and the layers' own backward passes that call them) run
/// for tensors on `device`: on the CPU, unless the environment variable `KANDLE_GENERIC_OPS`
/// is set, which makes the CPU run the device-generic path that GPUs run (candle's
/// operations, candle's autograd for convolutions, dense layers and batch normalisation), so
/// that path is tested on machines without a GPU. Read once per process.
///
/// ```
/// use candle_core::Device;
/// assert_eq!(kandle::kernels::cpu_kernels(&Device::Cpu), std::env::var_os("KANDLE_GENERIC_OPS").is_none());
/// ```
pub fn cpu_kernels(device: &candle_core::Device) -> bool {
    static GENERIC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    device.is_cpu() && !*GENERIC.get_or_init(|| std::env::var_os("KANDLE_GENERIC_OPS").is_some())
}

/// The element types the CPU kernels run on: `f32` for training, `f64` for gradient checks.
pub(crate) trait Float:
    Copy
    + Send
    + Sync
    + 'static
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + candle_core::WithDType
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    fn from_usize(v: usize) -> Self;
    fn is_nan(self) -> bool;
    /// `f32::max` / `f64::max` (what candle's ReLU computes).
    fn fmax(self, other: Self) -> Self;
    /// `f32::min` / `f64::min`.
    fn fmin(self, other: Self) -> Self;
    /// `f32::exp` / `f64::exp`.
    fn exp(self) -> Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f32::NEG_INFINITY;
    fn from_usize(v: usize) -> Self {
        v as f32
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn fmax(self, other: Self) -> Self {
        self.max(other)
    }
    fn fmin(self, other: Self) -> Self {
        self.min(other)
    }
    fn exp(self) -> Self {
        self.exp()
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f64::NEG_INFINITY;
    fn from_usize(v: usize) -> Self {
        v as f64
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn fmax(self, other: Self) -> Self {
        self.max(other)
    }
    fn fmin(self, other: Self) -> Self {
        self.min(other)
    }
    fn exp(self) -> Self {
        self.exp()
    }
}

/// The contiguous slice a layout describes, or an error if it is strided.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the kernel needs a contiguous input"),
    }
}

/// The data of a tensor's CPU storage (`Tensor::storage_and_layout`) as a contiguous `T`
/// slice, or an error naming `op` for another device, another dtype or a strided layout.
pub(crate) fn cpu_slice<'a, T: candle_core::WithDType>(
    storage: &'a candle_core::Storage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    match storage {
        candle_core::Storage::Cpu(s) => contiguous(s.as_slice::<T>()?, layout, op),
        _ => candle_core::bail!("{op}: kandle's own kernels run on the CPU"),
    }
}

/// Runs `f32` or `f64` code on a pair of storages of the same type.
macro_rules! dispatch2 {
    ($op:expr, $s1:expr, $s2:expr, |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (candle_core::CpuStorage::F32($a), candle_core::CpuStorage::F32($b)) => candle_core::CpuStorage::F32($body),
            (candle_core::CpuStorage::F64($a), candle_core::CpuStorage::F64($b)) => candle_core::CpuStorage::F64($body),
            (a, b) => candle_core::bail!(
                "{}: expected two f32 or two f64 tensors, received {:?} and {:?}",
                $op,
                candle_core::backend::BackendStorage::dtype(a),
                candle_core::backend::BackendStorage::dtype(b)
            ),
        }
    };
}
pub(crate) use dispatch2;

/// Runs `f32` or `f64` code on one storage.
macro_rules! dispatch1 {
    ($op:expr, $s1:expr, |$a:ident| $body:expr) => {
        match $s1 {
            candle_core::CpuStorage::F32($a) => candle_core::CpuStorage::F32($body),
            candle_core::CpuStorage::F64($a) => candle_core::CpuStorage::F64($body),
            a => candle_core::bail!(
                "{}: expected an f32 or f64 tensor, received {:?}",
                $op,
                candle_core::backend::BackendStorage::dtype(a)
            ),
        }
    };
}
pub(crate) use dispatch1;

/// A buffer whose values start on a 64-byte cache line: the kernels' own scratch (padded
/// images, masked gradients, Winograd's transformed tiles and kernels), so that every SIMD
/// vector at a multiple of 16 values is one aligned load or store rather than one split
/// across two lines (a `Vec` from the allocator is only 16-byte aligned, and a large one sits
/// 16 bytes past a page boundary, so that every 64-byte vector in it is split).
pub(crate) struct AlignedVec<T> {
    lines: Vec<Line<T>>,
    len: usize,
}

/// Sixteen values on their own cache line(s): 64 bytes of `f32`, 128 of `f64`, no padding.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line<T>([T; 16]);

/// An aligned buffer of `f32`.
pub(crate) type AlignedBuf = AlignedVec<f32>;

impl<T> AlignedVec<T> {
    /// An empty buffer.
    pub(crate) const fn new() -> Self {
        AlignedVec { lines: Vec::new(), len: 0 }
    }
}

impl<T> Default for AlignedVec<T> {
    fn default() -> Self {
        AlignedVec::new()
    }
}

impl AlignedVec<f32> {
    /// `n` zeros.
    pub(crate) fn zeros(n: usize) -> Self {
        let mut v = AlignedVec::default();
        v.resize(n, 0.0);
        v
    }
}

impl<T: Copy> AlignedVec<T> {
    /// Grows (with `value`) or shrinks the buffer to `n` values.
    pub(crate) fn resize(&mut self, n: usize, value: T) {
        const { assert!(std::mem::size_of::<Line<T>>() == 16 * std::mem::size_of::<T>()) };
        if n > self.len {
            // The tail of the last line (past `len`) may hold anything: write it first.
            let end = (16 * self.lines.len()).min(n);
            let old = self.len;
            self.len = end;
            self[old..end].fill(value);
            self.lines.resize(n.div_ceil(16), Line([value; 16]));
        }
        self.len = n;
    }

    /// Empties the buffer, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

impl<T> std::ops::Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `Line<T>` is 16 `T` values without padding (`repr(C)`, checked in
        // `resize`), every line is initialised, and `len <= 16 * lines.len()`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T> std::ops::DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, with the unique borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

/// A vector of `n` values that `write` fills in place: it is given the vector's spare capacity
/// as `MaybeUninit` values (nothing zeroes them first: that would be a wasted pass over tens
/// of MB at every step), and the vector takes its length only once `write` has returned.
///
/// # Safety
/// `write` must initialise every one of the `n` values it is given. (If it panics, the vector
/// is dropped empty: nothing uninitialised is ever read.)
pub(crate) unsafe fn output_vec<T>(n: usize, write: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    write(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller's contract: all `n` values are initialised.
    unsafe { v.set_len(n) };
    v
}

/// Writes `value` to every element of `s` and returns it as initialised values.
#[inline(always)]
pub(crate) fn fill_uninit<T: Copy>(s: &mut [MaybeUninit<T>], value: T) -> &mut [T] {
    for v in s.iter_mut() {
        v.write(value);
    }
    // SAFETY: every element was written just above.
    unsafe { assume_init_mut(s) }
}

/// Copies `src` into `dst` (of the same length) and returns it as initialised values.
#[inline(always)]
pub(crate) fn copy_uninit<'a, T: Copy>(dst: &'a mut [MaybeUninit<T>], src: &[T]) -> &'a mut [T] {
    assert_eq!(dst.len(), src.len(), "copy_uninit: lengths differ");
    // SAFETY: `MaybeUninit<T>` has the layout of `T`; the lengths are equal and the borrows
    // cannot overlap (one is unique).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<T>(), src.len()) };
    // SAFETY: every element was written just above.
    unsafe { assume_init_mut(dst) }
}

/// `s` as a destination for a kernel that only writes it.
///
/// # Safety
/// Nothing may write an uninitialised value (`MaybeUninit::uninit()`) through the result.
#[inline(always)]
pub(crate) unsafe fn as_uninit_mut<T>(s: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`; the caller writes only initialised values.
    unsafe { &mut *(s as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// `s` as initialised values.
///
/// # Safety
/// Every element of `s` has been written.
#[inline(always)]
pub(crate) unsafe fn assume_init_mut<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and the caller guarantees that every
    // element is initialised.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

#[cfg(test)]
mod tests {
    use super::AlignedVec;

    #[test]
    fn aligned_vec_starts_on_a_cache_line_and_resizes_like_a_vec() {
        let mut v: AlignedVec<f64> = AlignedVec::new();
        v.resize(5, 1.5);
        assert_eq!(&v[..], &[1.5; 5]);
        assert_eq!(v.as_ptr() as usize % 64, 0);
        v[4] = 3.0;
        v.resize(3, 0.0);
        v.resize(40, 2.0);
        assert_eq!(v.len(), 40);
        assert_eq!(&v[..3], &[1.5; 3]);
        assert!(v[3..].iter().all(|&x| x == 2.0), "{:?}", &v[..]);
        v.clear();
        assert!(v.is_empty());
        let z = AlignedVec::zeros(33);
        assert_eq!(z.as_ptr() as usize % 64, 0);
        assert!(z.iter().all(|&x| x == 0.0) && z.len() == 33);
    }
}
