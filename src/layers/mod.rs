//! Layers, as in `keras.layers`.
//!
//! A layer is configured with Keras' arguments (required ones in `new`, optional ones as
//! chained setters with Keras' defaults), built once its input shape is known (which creates its
//! weights), then called with an explicit training flag. Shapes in this API are Keras'
//! channels-last shapes without the batch axis: `(32, 32, 3)` for a CIFAR-10 image.

mod activation_layers;
mod conv;
mod core;
mod depthwise;
pub(crate) mod handle;
pub(crate) mod input;
mod merge;
mod normalization;
mod pooling;
mod registry;
mod reshaping;

pub use self::activation_layers::{LeakyReLU, ReLU, Softmax};
pub use self::conv::Conv2D;
pub use self::core::{ActivationLayer, Dense, Dropout, Flatten, SpatialDropout2D};
pub use self::depthwise::{DepthwiseConv2D, SeparableConv2D};
pub use self::handle::{CallLayer, IntoInputs, LayerRef};
pub use self::input::{Input, InputLayer, KerasTensor};
pub use self::merge::{Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract};
pub use self::normalization::BatchNormalization;
pub use self::pooling::{AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D};
pub use self::registry::{from_config, from_config_with, CustomObjects, LayerConstructor};
pub use self::reshaping::{GlobalMaxPooling2D, Rescaling, Reshape, ZeroPadding2D};

use crate::activations::Activation;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use std::str::FromStr;

/// What a layer needs to create its weights.
pub struct BuildContext<'a> {
    /// The weights' element type.
    pub dtype: DType,
    /// Where the weights live.
    pub device: &'a Device,
    /// The model's seeded generator: initial weights and dropout seeds come from it.
    pub rng: &'a mut StdRng,
    /// Values the weights may still take in all (`usize::MAX` unless a file being loaded
    /// bounds them), so that a corrupt saved architecture cannot allocate gigabytes.
    pub(crate) budget: usize,
}

impl BuildContext<'_> {
    /// A new weight of `shape` drawn from `init`.
    ///
    /// # Errors
    /// A shape whose size overflows, or that exceeds what the model file being loaded holds.
    pub fn weight(&mut self, init: &crate::initializers::Initializer, shape: &[usize]) -> Result<Var> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let n = n.filter(|&n| n <= self.budget).ok_or_else(|| Error::Shape {
            context: "a weight of the model being built".into(),
            expected: if self.budget == usize::MAX {
                "a size that fits in memory".into()
            } else {
                format!("at most {} values (what the model file holds)", self.budget)
            },
            received: format!("{shape:?}"),
        })?;
        self.budget -= n;
        Ok(Var::from_tensor(&init.init(shape, self.dtype, self.device, self.rng)?)?)
    }
}

/// A named weight of a layer.
///
/// ```
/// use kandle::layers::Weight;
/// use kandle::regularizers::Regularizer;
/// use candle_core::{DType, Device, Var};
/// let var = Var::zeros((3, 2), DType::F32, &Device::Cpu)?;
/// let w = Weight::new("kernel", var).regularizer(Some(Regularizer::l2(1e-4)));
/// assert!(w.trainable);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Weight {
    /// The weight's name inside its layer (`kernel`, `bias`; `conv2d/kernel` inside a nested
    /// model).
    pub name: String,
    /// The variable.
    pub var: Var,
    /// Whether the optimizer updates it.
    pub trainable: bool,
    /// A penalty added to the loss while the weight trains (Keras' `kernel_regularizer`).
    pub regularizer: Option<crate::regularizers::Regularizer>,
}

impl Weight {
    /// A trainable weight named `name`, without regularizer.
    pub fn new(name: impl Into<String>, var: Var) -> Self {
        Weight { name: name.into(), var, trainable: true, regularizer: None }
    }
    /// Marks the weight non-trainable (statistics such as `moving_mean`).
    pub fn non_trainable(mut self) -> Self {
        self.trainable = false;
        self
    }
    /// Sets the weight's regularizer.
    pub fn regularizer(mut self, r: Option<crate::regularizers::Regularizer>) -> Self {
        self.regularizer = r;
        self
    }
}

/// The layer abstraction: object-safe, with the training mode an explicit argument.
pub trait Layer: Send + std::fmt::Debug {
    /// Keras' class name (`Conv2D`), shown by `summary`.
    fn class_name(&self) -> &'static str;
    /// The layer's name, if it has one yet (the model names unnamed layers as Keras does).
    fn name(&self) -> Option<&str>;
    /// Sets the layer's name.
    fn set_name(&mut self, name: String);
    /// The input shape declared with `.input_shape(...)`, if any.
    fn declared_input_shape(&self) -> Option<&[usize]> {
        None
    }
    /// Declares the input shape (used when a model is rebuilt from a file).
    fn set_input_shape(&mut self, _shape: Vec<usize>) {}
    /// The layer's dtype policy ([`crate::mixed_precision`]); `float32` unless the layer
    /// keeps one.
    fn dtype_policy(&self) -> crate::mixed_precision::DTypePolicy {
        crate::mixed_precision::DTypePolicy::Float32
    }
    /// Sets the layer's dtype policy (used when a model is rebuilt from a file); layers
    /// without one ignore it.
    fn set_dtype_policy(&mut self, _policy: crate::mixed_precision::DTypePolicy) {}
    /// The output shape for an input shape (both without the batch axis).
    ///
    /// # Errors
    /// If the input shape does not fit the layer.
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>>;
    /// Creates the weights for `input_shape` and returns the output shape.
    ///
    /// # Errors
    /// If the input shape does not fit the layer or an argument is invalid.
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>>;
    /// Whether `build` has run.
    fn built(&self) -> bool;
    /// Calls the layer on a batch; `train` turns on training-only behaviour (dropout).
    ///
    /// # Errors
    /// If the layer is not built or the input does not fit.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// The activation the layer ends with; losses fuse softmax and sigmoid with themselves.
    fn activation(&self) -> Activation {
        Activation::Linear
    }
    /// The layer's output before its final activation.
    ///
    /// # Errors
    /// As [`Layer::forward`].
    fn forward_pre_activation(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(x, train)
    }
    /// The layer's weights, in Keras' order (`kernel`, then `bias`).
    fn weights(&self) -> Vec<Weight> {
        Vec::new()
    }
    /// Counters that a resumed run must restore (a dropout layer's number of masks drawn).
    fn state(&self) -> Vec<u64> {
        Vec::new()
    }
    /// Restores [`Layer::state`].
    fn set_state(&mut self, _state: &[u64]) {}
    /// The layer's configuration as Keras' `get_config` keys and values.
    fn config(&self) -> Vec<(&'static str, String)>;
    /// Whether the layer computes its own gradients ([`Layer::forward_saved`] and
    /// [`Layer::backward`]), ending with its activation or, when `pre_activation`, before it.
    /// When every layer of a model on the CPU does, `fit` runs that backward pass instead of
    /// candle's autograd, which allocates and adds a zero gradient for every tensor of the
    /// graph. Default: false.
    fn has_backward(&self, _pre_activation: bool) -> bool {
        false
    }
    /// The training forward pass (dropout on), keeping what [`Layer::backward`] needs; before
    /// the final activation when `pre_activation`.
    ///
    /// # Errors
    /// As [`Layer::forward`], or a layer without its own backward pass.
    fn forward_saved(&self, _x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        Err(Error::invalid("layer", format!("{} has no backward pass of its own", self.class_name())))
    }
    /// The gradients for the output gradient `dy`: of the input (when `need_input_grad`) and
    /// of each trainable weight, in [`Layer::weights`] order.
    ///
    /// # Errors
    /// Shapes that do not fit, or a layer without its own backward pass.
    fn backward(&self, _saved: &Saved, _dy: &Tensor, _need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        Err(Error::invalid("layer", format!("{} has no backward pass of its own", self.class_name())))
    }
    /// Whether the layer, having no activation of its own, can end with `activation` in its
    /// own kernels ([`Layer::forward_fused`], [`Layer::forward_saved_fused`]); the model then
    /// runs a standalone `Activation` layer that follows it inside it (the summary, the layer
    /// list and saved files still show the `Activation` layer). Default: false.
    fn can_fuse_activation(&self, _activation: Activation) -> bool {
        false
    }
    /// [`Layer::forward`] ending with `activation`.
    ///
    /// # Errors
    /// As [`Layer::forward`].
    fn forward_fused(&self, x: &Tensor, train: bool, activation: Activation) -> Result<Tensor> {
        activation.apply(&self.forward(x, train)?)
    }
    /// [`Layer::forward_saved`] ending with `activation`, which [`Saved::activation`] records
    /// for [`Layer::backward`].
    ///
    /// # Errors
    /// As [`Layer::forward_saved`].
    fn forward_saved_fused(&self, _x: &Tensor, _activation: Activation) -> Result<(Tensor, Saved)> {
        Err(Error::invalid("layer", format!("{} cannot fuse an activation", self.class_name())))
    }
    /// For a max pooling layer whose windows neither overlap nor reach past the image (Keras'
    /// defaults: strides equal to `pool_size`, 'valid' padding), its window: what a model may
    /// fuse into the layer before it ([`Layer::can_fuse_max_pool`]). Default: `None`.
    fn standalone_max_pool(&self) -> Option<(usize, usize)> {
        None
    }
    /// Whether the layer can end with the max pooling of `pool` windows (see
    /// [`Layer::standalone_max_pool`]) after `activation` (a fused standalone activation, or
    /// `None` for the layer's own) in its own kernels ([`Layer::forward_pooled`],
    /// [`Layer::forward_saved_pooled`]); the model then runs the pooling layer that follows it
    /// inside it, and the layer's full-size output is never stored. Default: false.
    fn can_fuse_max_pool(&self, _activation: Option<Activation>, _pool: (usize, usize)) -> bool {
        false
    }
    /// [`Layer::forward`] ending with `activation` (or the layer's own) and the max pooling
    /// of `pool` windows.
    ///
    /// # Errors
    /// As [`Layer::forward`], or a layer that cannot fuse the pooling.
    fn forward_pooled(
        &self,
        _x: &Tensor,
        _train: bool,
        _activation: Option<Activation>,
        _pool: (usize, usize),
    ) -> Result<Tensor> {
        Err(Error::invalid("layer", format!("{} cannot fuse a max pooling", self.class_name())))
    }
    /// [`Layer::forward_saved`] ending with `activation` (or the layer's own) and the max
    /// pooling of `pool` windows, which [`Saved::pool`] records for [`Layer::backward`] (whose
    /// output gradient is then the pooled output's).
    ///
    /// # Errors
    /// As [`Layer::forward_saved`], or a layer that cannot fuse the pooling.
    fn forward_saved_pooled(
        &self,
        _x: &Tensor,
        _activation: Option<Activation>,
        _pool: (usize, usize),
    ) -> Result<(Tensor, Saved)> {
        Err(Error::invalid("layer", format!("{} cannot fuse a max pooling", self.class_name())))
    }
    /// For a standalone activation layer, its activation (what a model may fuse into the layer
    /// before it). Default: `None`.
    fn standalone_activation(&self) -> Option<Activation> {
        None
    }
    /// Told when the layer is frozen or unfrozen (Keras' `layer.trainable = ...`). The model
    /// keeps the flag and leaves frozen weights alone; a layer whose computation depends on it
    /// (`BatchNormalization` runs in inference mode while frozen, as in Keras 3) overrides this.
    fn set_trainable(&mut self, _trainable: bool) {}

    /// The output shape for the shapes of several inputs. Layers of one input (the default)
    /// take exactly one; merge layers ([`Add`], [`Concatenate`] ...) override the `_multi`
    /// methods.
    ///
    /// # Errors
    /// A number or shapes of inputs that do not fit the layer.
    fn compute_output_shape_multi(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        self.compute_output_shape(single(self, input_shapes.len(), &input_shapes.first())?)
    }
    /// [`Layer::build`] for several inputs.
    ///
    /// # Errors
    /// As [`Layer::compute_output_shape_multi`].
    fn build_multi(&mut self, input_shapes: &[Vec<usize>], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let one = single(self, input_shapes.len(), &input_shapes.first())?.clone();
        self.build(&one, ctx)
    }
    /// [`Layer::forward`] for several inputs.
    ///
    /// # Errors
    /// As [`Layer::forward`].
    fn forward_multi(&self, xs: &[Tensor], train: bool) -> Result<Tensor> {
        self.forward(single(self, xs.len(), &xs.first())?, train)
    }
    /// [`Layer::forward_saved`] for several inputs.
    ///
    /// # Errors
    /// As [`Layer::forward_saved`].
    fn forward_saved_multi(&self, xs: &[Tensor], pre_activation: bool) -> Result<(Tensor, Saved)> {
        self.forward_saved(single(self, xs.len(), &xs.first())?, pre_activation)
    }
    /// [`Layer::backward`] for several inputs: one input gradient per input.
    ///
    /// # Errors
    /// As [`Layer::backward`].
    fn backward_multi(
        &self,
        saved: &Saved,
        dy: &Tensor,
        need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let (dx, grads) = self.backward(saved, dy, need_input_grad)?;
        Ok((vec![dx], grads))
    }
}

/// The one input of a single-input layer, or an error naming the layer and the count.
fn single<'a, L: Layer + ?Sized, T>(layer: &L, n: usize, first: &Option<&'a T>) -> Result<&'a T> {
    match (n, first) {
        (1, Some(x)) => Ok(x),
        _ => Err(Error::invalid(
            "inputs",
            format!("{} ({}) takes one input, received {n}", layer.name().unwrap_or("<unnamed>"), layer.class_name()),
        )),
    }
}

/// What a layer keeps from [`Layer::forward_saved`] for its [`Layer::backward`]: usually its
/// input and output, and the seed of a dropout mask.
#[derive(Debug, Clone, Default)]
pub struct Saved {
    /// Tensors of the forward pass (the layer's input and output, typically).
    pub tensors: Vec<Tensor>,
    /// A seed drawn by the forward pass (dropout's mask).
    pub seed: u64,
    /// Whether the forward pass stopped before the activation.
    pub pre_activation: bool,
    /// What the layers inside a nested model saved, node by node.
    pub graph: Option<GraphState>,
    /// The activation the forward pass ended with, when not the layer's own (a standalone
    /// `Activation` layer fused into it).
    pub activation: Option<Activation>,
    /// The window of a max pooling layer fused into the forward pass, whose output was
    /// pooled (see [`Layer::forward_saved_pooled`]).
    pub pool: Option<(usize, usize)>,
}

/// What a model used as a layer saved in a training forward pass, for its backward pass
/// (opaque).
#[derive(Debug, Clone)]
pub struct GraphState(pub(crate) std::sync::Arc<crate::trainers::walk::NestedSaved>);

/// Anything that `Sequential::add` accepts: every layer, and an [`Activation`] (Keras'
/// `Activation('relu')` layer is `Activation::Relu` here).
pub trait IntoLayer {
    /// The boxed layer.
    fn into_layer(self) -> Box<dyn Layer>;
}

impl<L: Layer + 'static> IntoLayer for L {
    fn into_layer(self) -> Box<dyn Layer> {
        Box::new(self)
    }
}

impl IntoLayer for Activation {
    fn into_layer(self) -> Box<dyn Layer> {
        Box::new(ActivationLayer::new(self))
    }
}

impl IntoLayer for Box<dyn Layer> {
    fn into_layer(self) -> Box<dyn Layer> {
        self
    }
}

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

pub(crate) fn not_built(label: String) -> Error {
    Error::invalid("layer", format!("{label} is called before it is built (compile or build the model first)"))
}
