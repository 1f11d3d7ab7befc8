//! What the augmentation layers share: their seeded draws (reproducible whatever the batch is
//! split into: each image's draw depends on the layer's seed, the call and the image's place in
//! the whole batch), running a batch image by image on all cores, and the layer plumbing.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// A factor range, as Keras reads `factor`: a number `f` is `[-f, f]` (clipped to the layer's
/// bounds), a pair `(a, b)` is `[min, max]`.
///
/// ```
/// use kandle::layers::IntoFactor;
/// assert_eq!(0.2.into_factor(), (-0.2, 0.2));
/// assert_eq!((0.3, -0.1).into_factor(), (-0.1, 0.3));
/// assert_eq!(2.0.into_factor(), (-1.0, 2.0)); // a number is clipped to the bounds, a pair is not
/// ```
pub trait IntoFactor {
    /// `(lower, upper)`: a number `f` is `(max(-f, lowest), f)`, a pair is sorted (Keras'
    /// `_set_factor`, whose bounds clip only a number).
    fn into_factor_above(self, lowest: f64) -> (f64, f64);

    /// `(lower, upper)` for bounds of `[-1, 1]`.
    fn into_factor(self) -> (f64, f64)
    where
        Self: Sized,
    {
        self.into_factor_above(-1.0)
    }
}

impl IntoFactor for f64 {
    fn into_factor_above(self, lowest: f64) -> (f64, f64) {
        ((-self.abs()).max(lowest), self.abs())
    }
}

impl IntoFactor for (f64, f64) {
    fn into_factor_above(self, _lowest: f64) -> (f64, f64) {
        (self.0.min(self.1), self.0.max(self.1))
    }
}

/// A value drawn uniformly in `[lo, hi]` (`lo` when they are equal).
pub(crate) fn uniform(rng: &mut StdRng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// A layer's seed and the number of batches it has augmented.
#[derive(Debug, Default)]
pub(crate) struct Draws {
    pub seed: Option<u64>,
    calls: AtomicU64,
}

impl Draws {
    pub fn new(seed: Option<u64>) -> Self {
        Draws { seed, calls: AtomicU64::new(0) }
    }

    /// Takes a seed from the model's generator unless the layer has its own.
    pub fn build(&mut self, rng: &mut StdRng) {
        if self.seed.is_none() {
            self.seed = Some(rand::RngCore::next_u64(rng));
        }
    }

    /// One generator per image of a batch whose first row is row `row_offset` of the whole
    /// batch; a new call draws new values.
    pub fn generators(&self, n: usize, row_offset: usize) -> Vec<StdRng> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut state = self.seed.unwrap_or(0) ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23);
        let base = crate::random::splitmix64(&mut state);
        (0..n)
            .map(|i| {
                let mut s = base ^ ((row_offset + i) as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
                StdRng::seed_from_u64(crate::random::splitmix64(&mut s))
            })
            .collect()
    }

    pub fn state(&self) -> Vec<u64> {
        vec![self.seed.unwrap_or(0), self.calls.load(Ordering::Relaxed)]
    }

    pub fn set_state(&mut self, state: &[u64]) {
        if let [seed, calls] = *state {
            self.seed = Some(seed);
            self.calls.store(calls, Ordering::Relaxed);
        }
    }
}

/// Runs `f(i, image, out)` over the images of a channels-last batch `x` (`n x h x w x c`) in
/// parallel, into a batch of `(oh, ow)` images of the same channels, dtype and device.
pub(crate) fn map_images(
    x: &Tensor,
    (oh, ow): (usize, usize),
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let data: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut out = vec![0f32; n * oh * ow * c];
    let (isz, osz) = (h * w * c, oh * ow * c);
    if isz > 0 && osz > 0 {
        out.par_chunks_mut(osz).zip(data.par_chunks(isz)).enumerate().for_each(|(i, (o, img))| f(i, img, o));
    }
    Ok(Tensor::from_vec(out, (n, oh, ow, c), &candle_core::Device::Cpu)?.to_dtype(x.dtype())?.to_device(x.device())?)
}

/// Checks that a layer's input is images `(height, width, channels)`.
pub(crate) fn expect_images(label: impl FnOnce() -> String, shape: &[usize]) -> Result<()> {
    super::super::expect_rank(label, shape, 3, "images (height, width, channels)")
}

/// An error for a gradient asked of an augmentation layer.
pub(crate) fn no_input_gradient(label: String) -> Error {
    Error::invalid(
        "layer",
        format!(
            "{label} passes no gradient to its input: put augmentation layers before the first layer with \
             weights (as Keras' guides do, right after the Input)"
        ),
    )
}

/// The `Layer` and `Backward` plumbing of an augmentation layer whose type has `common`,
/// `draws` (or none) and `built` fields and the methods `out_shape(&self, &[usize])`,
/// `apply(&self, &Tensor, training, row_offset)` and `config(&self) -> Config`.
macro_rules! augmentation_layer {
    ($ty:ident, $class:literal, draws: $draws:tt) => {
        impl $crate::layers::Layer for $ty {
            fn class_name(&self) -> &'static str {
                $class
            }
            $crate::layers::common_trait_methods!();
            fn compute_output_shape(&self, input_shape: &[usize]) -> $crate::error::Result<Vec<usize>> {
                super::augment::expect_images(|| self.common.label($class), input_shape)?;
                self.out_shape(input_shape)
            }
            fn build(
                &mut self,
                input_shape: &[usize],
                ctx: &mut $crate::layers::BuildContext,
            ) -> $crate::error::Result<Vec<usize>> {
                let out = $crate::layers::Layer::compute_output_shape(self, input_shape)?;
                augmentation_layer!(@build self, ctx, $draws);
                self.built = Some(input_shape.to_vec());
                Ok(out)
            }
            fn built(&self) -> bool {
                self.built.is_some()
            }
            fn forward(&self, x: &candle_core::Tensor, training: bool) -> $crate::error::Result<candle_core::Tensor> {
                self.forward_in(x, &$crate::layers::CallContext { training, row_offset: 0 })
            }
            fn forward_in(
                &self,
                x: &candle_core::Tensor,
                ctx: &$crate::layers::CallContext,
            ) -> $crate::error::Result<candle_core::Tensor> {
                let built = self.built.as_ref().ok_or_else(|| $crate::layers::not_built(self.common.label($class)))?;
                $crate::layers::check_input(|| self.common.label($class), built, x)?;
                self.apply(x, ctx.training, ctx.row_offset)
            }
            augmentation_layer!(@state $draws);
            fn get_config(&self) -> $crate::layers::Config {
                self.config()
            }
            fn capabilities(&self) -> $crate::layers::Capabilities<'_> {
                $crate::layers::Capabilities { backward: Some(self), ..Default::default() }
            }
        }

        impl $crate::layers::Backward for $ty {
            fn has_backward(&self) -> bool {
                true
            }
            fn forward_saved(
                &self,
                xs: &[candle_core::Tensor],
                _ending: $crate::layers::Ending,
                ctx: &$crate::layers::CallContext,
            ) -> $crate::error::Result<(candle_core::Tensor, $crate::layers::Saved)> {
                let x = $crate::layers::single_input(|| self.common.label($class), xs)?;
                Ok(($crate::layers::Layer::forward_in(self, x, ctx)?, $crate::layers::Saved::default()))
            }
            fn backward(
                &self,
                _saved: &$crate::layers::Saved,
                _dy: &candle_core::Tensor,
                need_input_grad: bool,
            ) -> $crate::error::Result<(Vec<Option<candle_core::Tensor>>, Vec<candle_core::Tensor>)> {
                if need_input_grad {
                    return Err(super::augment::no_input_gradient(self.common.label($class)));
                }
                Ok((vec![None], Vec::new()))
            }
        }
    };
    (@build $self:ident, $ctx:ident, true) => {
        $self.draws.build($ctx.rng);
    };
    (@build $self:ident, $ctx:ident, false) => {
        let _ = $ctx;
    };
    (@state true) => {
        fn state(&self) -> Vec<u64> {
            self.draws.state()
        }
        fn set_state(&mut self, state: &[u64]) {
            self.draws.set_state(state)
        }
    };
    (@state false) => {};
}
pub(crate) use augmentation_layer;
