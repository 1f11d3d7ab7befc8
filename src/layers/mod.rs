//! Layers, as in `keras.layers`.
//!
//! A layer is configured with Keras' arguments (required ones in `new`, optional ones as
//! chained setters with Keras' defaults), built once its input shape is known (which creates its
//! weights), then called with an explicit training flag. Shapes in this API are Keras'
//! channels-last shapes without the batch axis: `(32, 32, 3)` for a CIFAR-10 image.

mod activation_layers;
pub mod capabilities;
mod config;
mod convolutional;
mod dense;
pub(crate) mod input;
mod layer;
pub(crate) mod layer_ref;
mod merge;
mod normalization;
mod pooling;
mod preprocessing;
#[cfg(feature = "onnx")]
pub(crate) use preprocessing::image_ops::aspect_window;
mod registry;
mod regularization;
mod reshaping;
mod resizing;

pub use self::activation_layers::{ActivationLayer, LeakyReLU, ReLU, Softmax};
pub use self::capabilities::{Backward, Capabilities, ChannelAffine, Ending, Folding, Fusion, MultiInput, Saved};
pub use self::config::{Config, ConfigValue};
pub use self::convolutional::{Conv2D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D};
pub use self::dense::Dense;
pub use self::input::{CallLayer, Input, InputLayer, IntoInputs, KerasTensor};
pub use self::layer::{BuildContext, CallContext, IntoLayer, Layer, Weight};
pub use self::layer_ref::{IntoLayerRef, LayerRef};
pub use self::merge::{Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract};
pub use self::normalization::{BatchNormalization, LayerNormalization};
pub use self::pooling::{AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D};
pub use self::preprocessing::{
    CenterCrop, FillMode, FlipMode, Interpolation, IntoFactor, Normalization, RandomBrightness, RandomContrast,
    RandomCrop, RandomFlip, RandomRotation, RandomTranslation, RandomZoom, Rescaling, Resizing,
};
pub use self::registry::{from_config, from_config_with, CustomObjects, LayerConstructor};
pub use self::regularization::{Dropout, SpatialDropout2D};
pub use self::reshaping::{Flatten, Reshape, ZeroPadding2D};
pub use self::resizing::{Cropping2D, UpSampling, UpSampling2D};

use crate::error::{Error, Result};
use candle_core::Tensor;
use std::str::FromStr;

/// A shape given as a number or a tuple: `784`, `(28, 28, 1)`, `[32, 32, 3]`, `vec![...]`.
pub trait IntoShape {
    /// The dimensions.
    fn into_dims(self) -> Vec<usize>;
}

impl IntoShape for usize {
    fn into_dims(self) -> Vec<usize> {
        vec![self]
    }
}
impl IntoShape for (usize,) {
    fn into_dims(self) -> Vec<usize> {
        vec![self.0]
    }
}
impl IntoShape for (usize, usize) {
    fn into_dims(self) -> Vec<usize> {
        vec![self.0, self.1]
    }
}
impl IntoShape for (usize, usize, usize) {
    fn into_dims(self) -> Vec<usize> {
        vec![self.0, self.1, self.2]
    }
}
impl IntoShape for Vec<usize> {
    fn into_dims(self) -> Vec<usize> {
        self
    }
}
impl IntoShape for &[usize] {
    fn into_dims(self) -> Vec<usize> {
        self.to_vec()
    }
}
impl<const N: usize> IntoShape for [usize; N] {
    fn into_dims(self) -> Vec<usize> {
        self.to_vec()
    }
}

/// A 2-D size given as one number for both axes or as `(rows, cols)`.
pub trait IntoPair {
    /// `(rows, cols)`.
    fn into_pair(self) -> (usize, usize);
}
impl IntoPair for usize {
    fn into_pair(self) -> (usize, usize) {
        (self, self)
    }
}
impl IntoPair for (usize, usize) {
    fn into_pair(self) -> (usize, usize) {
        self
    }
}

/// Keras' `padding`: `valid` (none) or `same` (the output keeps `ceil(input / stride)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding (Keras' default).
    #[default]
    Valid,
    /// Pads so that the output size is `ceil(input / stride)`; when the total padding is odd,
    /// the extra row or column goes at the bottom or right, as in TensorFlow.
    Same,
}

impl FromStr for Padding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            other => Err(Error::invalid("padding", format!("expected \"valid\" or \"same\", received {other:?}"))),
        }
    }
}

impl Padding {
    /// Keras' name.
    pub fn name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }

    /// `(pad_before, pad_after, output)` along one axis of size `input` for a window of
    /// `window` (already dilated) and stride `stride`; `None` if the window does not fit.
    pub fn along(self, input: usize, window: usize, stride: usize) -> Option<(usize, usize, usize)> {
        match self {
            Padding::Valid => (input >= window).then(|| (0, 0, (input - window) / stride + 1)),
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out.max(1) - 1) * stride + window).saturating_sub(input);
                (input > 0).then_some((total / 2, total - total / 2, out))
            }
        }
    }
}

/// Name, declared input shape and dtype policy, which every layer has.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub name: Option<String>,
    pub input_shape: Option<Vec<usize>>,
    pub dtype_policy: crate::mixed_precision::DTypePolicy,
}

impl Default for Common {
    /// No name or input shape; the global dtype policy of the moment, as Keras' layers take it.
    fn default() -> Self {
        Common { name: None, input_shape: None, dtype_policy: crate::mixed_precision::global_policy() }
    }
}

impl Common {
    /// `conv2d_1 (Conv2D)`, the layer's label in errors.
    pub fn label(&self, class: &str) -> String {
        format!("{} ({class})", self.name.as_deref().unwrap_or("<unnamed>"))
    }
}

/// Implements the setters and trait methods that come from [`Common`].
macro_rules! common_layer_methods {
    () => {
        /// Sets the layer's name (otherwise the model names it as Keras does: `conv2d_1`).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.common.name = Some(name.into());
            self
        }

        /// Declares the input shape, without the batch axis (Keras' `input_shape`); needed on
        /// the first layer of a model.
        pub fn input_shape(mut self, shape: impl $crate::layers::IntoShape) -> Self {
            self.common.input_shape = Some(shape.into_dims());
            self
        }

        /// Sets the layer's dtype policy (Keras' `dtype=`), instead of the global one of the
        /// moment it was created ([`crate::mixed_precision`]).
        pub fn dtype_policy(mut self, policy: $crate::mixed_precision::DTypePolicy) -> Self {
            self.common.dtype_policy = policy;
            self
        }
    };
}
pub(crate) use common_layer_methods;

macro_rules! common_trait_methods {
    () => {
        fn name(&self) -> Option<&str> {
            self.common.name.as_deref()
        }
        fn set_name(&mut self, name: String) {
            self.common.name = Some(name);
        }
        fn declared_input_shape(&self) -> Option<&[usize]> {
            self.common.input_shape.as_deref()
        }
        fn set_input_shape(&mut self, shape: Vec<usize>) {
            self.common.input_shape = Some(shape);
        }
        fn dtype_policy(&self) -> $crate::mixed_precision::DTypePolicy {
            self.common.dtype_policy
        }
        fn set_dtype_policy(&mut self, policy: $crate::mixed_precision::DTypePolicy) {
            self.common.dtype_policy = policy;
        }
    };
}
pub(crate) use common_trait_methods;

/// `build` and `built` of a layer without weights whose `built` field keeps its input shape.
macro_rules! weightless_build {
    () => {
        fn build(
            &mut self,
            input_shape: &[usize],
            _ctx: &mut $crate::layers::BuildContext,
        ) -> $crate::error::Result<Vec<usize>> {
            let out = self.compute_output_shape(input_shape)?;
            self.built = Some(input_shape.to_vec());
            Ok(out)
        }
        fn built(&self) -> bool {
            self.built.is_some()
        }
    };
}
pub(crate) use weightless_build;

/// The most values one sample's output may hold (2^31): a layer that grows its input
/// (`UpSampling2D`, `Conv2DTranspose`) is refused beyond, instead of overflowing or asking for
/// more memory than there is.
pub(crate) const MAX_SAMPLE_VALUES: usize = 1 << 31;

/// `dims` scaled axis by axis (`dim * factor + extra`), checked: an overflow or an output of more
/// than [`MAX_SAMPLE_VALUES`] values is an error naming the layer.
pub(crate) fn grown_shape(label: impl FnOnce() -> String, out: &[Option<usize>]) -> Result<Vec<usize>> {
    let dims: Option<Vec<usize>> = out.iter().copied().collect();
    match dims.filter(|d| d.iter().try_fold(1usize, |a, &x| a.checked_mul(x)).is_some_and(|n| n <= MAX_SAMPLE_VALUES)) {
        Some(d) => Ok(d),
        None => Err(Error::invalid(
            "size",
            format!("{}: the output would hold more than {MAX_SAMPLE_VALUES} values per sample", label()),
        )),
    }
}

/// Checks the rank of an input shape.
pub(crate) fn expect_rank(label: impl FnOnce() -> String, shape: &[usize], rank: usize, what: &str) -> Result<()> {
    if shape.len() != rank || shape.contains(&0) {
        return Err(Error::Shape {
            context: label(),
            expected: format!("{what} (rank {rank}, no zero dimension)"),
            received: crate::error::fmt_shape(true, shape),
        });
    }
    Ok(())
}

/// Checks that a batch has the shape the layer was built for.
pub(crate) fn check_input(label: impl FnOnce() -> String, built_for: &[usize], x: &Tensor) -> Result<()> {
    if x.dims().len() != built_for.len() + 1 || &x.dims()[1..] != built_for {
        return Err(Error::Shape {
            context: label(),
            expected: crate::error::fmt_shape(true, built_for),
            received: format!("{:?}", x.dims()),
        });
    }
    Ok(())
}

/// The one input of a single-input layer's pass, or an error naming the layer and the count.
pub(crate) fn single_input(label: impl FnOnce() -> String, xs: &[Tensor]) -> Result<&Tensor> {
    match xs {
        [x] => Ok(x),
        _ => Err(Error::invalid("inputs", format!("{} takes one input, received {}", label(), xs.len()))),
    }
}

pub(crate) fn not_built(label: String) -> Error {
    Error::invalid("layer", format!("{label} is called before it is built (compile or build the model first)"))
}
