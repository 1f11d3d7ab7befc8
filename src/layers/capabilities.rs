//! What kandle's built-in layers can do beyond the [`Layer`](super::Layer) trait, each an opt-in
//! trait that a layer offers through [`Layer::capabilities`](super::Layer::capabilities):
//!
//! - [`MultiInput`]: several inputs (the merge layers: `Add`, `Concatenate` ...);
//! - [`Backward`]: its own backward pass, run by `fit` instead of candle's autograd, which
//!   allocates and adds a zero gradient for every tensor of the graph;
//! - [`Fusion`]: ending with what the next layer would do (a standalone activation, a max
//!   pooling), or stopping before its activation when the loss applies it;
//! - [`ChannelAffine`] and [`Folding`]: at inference, a per-channel scale and shift
//!   (BatchNormalization by its moving statistics) taken into the weights of the convolution
//!   before it.
//!
//! A user-defined layer offers none of them and works as it is: the model's graph runs it, and
//! candle's autograd differentiates it as one node while the rest of the model keeps the layers'
//! own backward passes (as burn keeps autodiff apart from its modules).

use crate::activations::Activation;
use crate::error::Result;
use candle_core::Tensor;
use std::any::Any;
use std::sync::Arc;

use super::CallContext;

/// The capabilities a layer offers ([`Layer::capabilities`](super::Layer::capabilities)):
///
/// ```
/// use kandle::layers::{Capabilities, Dense, Layer};
/// let dense = Dense::new(4);
/// let caps = dense.capabilities();
/// assert!(caps.backward.is_some() && caps.fusion.is_some() && caps.multi_input.is_none());
/// ```
#[derive(Clone, Copy, Default)]
pub struct Capabilities<'a> {
    /// Several inputs.
    pub multi_input: Option<&'a dyn MultiInput>,
    /// Its own backward pass.
    pub backward: Option<&'a dyn Backward>,
    /// Fusion with its neighbours, and a pass that stops before the activation.
    pub fusion: Option<&'a dyn Fusion>,
    /// At inference, a scale and a shift of each channel (BatchNormalization by its moving
    /// statistics), which the layer before may take into its weights.
    pub channel_affine: Option<&'a dyn ChannelAffine>,
    /// Weights that take a per-channel scale and shift that follows them (a convolution's
    /// output channels), so that a [`ChannelAffine`] after it runs inside its pass.
    pub folding: Option<&'a dyn Folding>,
}

/// A layer that, in some passes, scales and shifts each channel (the last axis) of its input and
/// does nothing else: BatchNormalization at inference (or frozen), by its moving statistics.
pub trait ChannelAffine {
    /// `(scale, shift)`, one value per channel, when a pass with `training` runs the layer as
    /// that affine (attached to the layer's weights, for candle's autograd); `None` when it
    /// does not (batch statistics, or a device without the kernels).
    ///
    /// # Errors
    /// A layer not built, or a tensor operation's error.
    fn fixed_affine(&self, training: bool) -> Result<Option<(Tensor, Tensor)>>;
}

/// A layer whose output channels can take the scale and shift of a [`ChannelAffine`] that
/// follows it into its weights (`kernel * scale`, `bias * scale + shift`): one pass instead of
/// two, the normalised output never stored twice.
pub trait Folding {
    /// Whether it can take a per-channel affine of its `channels` output channels, ending its
    /// pass with `ending` (an activation, or its own when that is linear).
    fn can_fold(&self, channels: usize, ending: Ending) -> bool;

    /// The inference pass with the affine folded in, ending as `ending` says, differentiable
    /// by candle's autograd (a model trained with `use_autograd` runs a nested model's
    /// inference pass under it).
    ///
    /// # Errors
    /// Inputs that do not fit the layer, or a tensor operation's error.
    fn forward_folded(&self, x: &Tensor, scale: &Tensor, shift: &Tensor, ending: Ending) -> Result<Tensor>;
}

impl std::fmt::Debug for Capabilities<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capabilities")
            .field("multi_input", &self.multi_input.is_some())
            .field("backward", &self.backward.is_some())
            .field("fusion", &self.fusion.is_some())
            .finish()
    }
}

/// A layer of several inputs (Keras' merge layers), offered through
/// [`Capabilities::multi_input`] and, for building, [`Layer::multi_input_mut`](super::Layer::multi_input_mut).
pub trait MultiInput {
    /// The output shape for the shapes of the inputs (without the batch axis).
    ///
    /// # Errors
    /// A number or shapes of inputs that do not fit the layer.
    fn compute_output_shape_multi(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<usize>>;

    /// Creates the weights for the inputs' shapes and returns the output shape.
    ///
    /// # Errors
    /// As [`MultiInput::compute_output_shape_multi`].
    fn build_multi(&mut self, input_shapes: &[Vec<usize>], ctx: &mut super::BuildContext) -> Result<Vec<usize>>;

    /// Calls the layer on one batch of each input.
    ///
    /// # Errors
    /// Inputs that do not fit the layer.
    fn forward_multi(&self, xs: &[Tensor], ctx: &CallContext) -> Result<Tensor>;

    /// [`MultiInput::forward_multi`] ending as `ending` says (an activation the layer's
    /// [`Fusion::can_end_with`] accepted).
    ///
    /// # Errors
    /// As [`MultiInput::forward_multi`], or an ending the layer cannot take.
    fn forward_multi_ending(&self, xs: &[Tensor], ending: Ending, ctx: &CallContext) -> Result<Tensor> {
        match ending {
            Ending::Own => self.forward_multi(xs, ctx),
            other => Err(crate::error::Error::invalid("layer", format!("this layer cannot end a pass as {other:?}"))),
        }
    }
}

/// How a layer's pass ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// With the layer's own activation.
    #[default]
    Own,
    /// Before its activation, which the loss applies ([`Fusion::activation`]: softmax with
    /// cross-entropy, as Keras' `from_logits`).
    PreActivation,
    /// With this standalone activation (an `Activation` layer that follows it, fused in).
    Activation(Activation),
    /// With a max pooling of `pool` windows that follows it, after `activation` (a fused
    /// standalone one, or `None` for its own): its full-size output is never stored.
    Pooled {
        /// The activation before the pooling (`None`: the layer's own).
        activation: Option<Activation>,
        /// The pooling's window (its stride, as Keras' defaults).
        pool: (usize, usize),
    },
}

impl Ending {
    /// Whether the pass stops before the activation.
    pub fn pre_activation(self) -> bool {
        self == Ending::PreActivation
    }

    /// The fused activation the pass ends with, when not the layer's own.
    pub fn fused_activation(self) -> Option<Activation> {
        match self {
            Ending::Activation(a) => Some(a),
            Ending::Pooled { activation, .. } => activation,
            Ending::Own | Ending::PreActivation => None,
        }
    }

    /// The window of a fused max pooling.
    pub fn pool(self) -> Option<(usize, usize)> {
        match self {
            Ending::Pooled { pool, .. } => Some(pool),
            _ => None,
        }
    }
}

/// What a layer keeps from [`Backward::forward_saved`] for its [`Backward::backward`]: usually
/// its input and output, and the seed of a dropout mask.
#[derive(Debug, Clone, Default)]
pub struct Saved {
    /// Tensors of the forward pass (the layer's input and output, typically).
    pub tensors: Vec<Tensor>,
    /// A seed drawn by the forward pass (dropout's mask).
    pub seed: u64,
    /// Where the pass's rows sat in the whole batch ([`CallContext::row_offset`]): dropout's
    /// backward pass masks the gradient's rows at the same place.
    pub row_offset: usize,
    /// How the forward pass ended.
    pub ending: Ending,
    /// Anything else the layer keeps, opaque to the model (a nested model's own saved pass).
    pub extra: Option<Arc<dyn Any + Send + Sync>>,
}

/// A layer that computes its own gradients. When every node of a model on the CPU can, `fit`
/// runs that backward walk instead of candle's autograd, node by node; a node that cannot is
/// differentiated by autograd alone.
pub trait Backward {
    /// Whether the own backward pass can run now (the layer is built on a device its kernels
    /// serve).
    fn has_backward(&self) -> bool;

    /// The training forward pass (dropout on), ending as `ending` says, with what
    /// [`Backward::backward`] needs.
    ///
    /// # Errors
    /// As [`Layer::forward`](super::Layer::forward), or an ending the layer cannot take.
    fn forward_saved(&self, xs: &[Tensor], ending: Ending, ctx: &CallContext) -> Result<(Tensor, Saved)>;

    /// The gradients for the output gradient `dy`: of each input (when `need_input_grad`) and
    /// of each trainable weight, in [`Layer::weights`](super::Layer::weights) order.
    ///
    /// # Errors
    /// Shapes that do not fit.
    fn backward(&self, saved: &Saved, dy: &Tensor, need_input_grad: bool)
        -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)>;
}

/// A layer that can run fused with its neighbours, or stop before its activation.
pub trait Fusion {
    /// The activation the layer ends with; a loss fuses softmax and sigmoid with itself.
    fn activation(&self) -> Activation {
        Activation::Linear
    }

    /// The inference pass (or a training pass without its own backward), ending as `ending`
    /// says.
    ///
    /// # Errors
    /// As [`Layer::forward`](super::Layer::forward), or an ending the layer cannot take.
    fn forward_ending(&self, x: &Tensor, ending: Ending, ctx: &CallContext) -> Result<Tensor>;

    /// Whether the layer can end as `ending` says in its own kernels
    /// ([`Ending::Activation`], [`Ending::Pooled`]); the model then runs the layers that follow
    /// it inside it (the summary, the layer list and saved files still show them).
    fn can_end_with(&self, _ending: Ending) -> bool {
        false
    }

    /// For a standalone activation layer, its activation (what a model may fuse into the layer
    /// before it).
    fn standalone_activation(&self) -> Option<Activation> {
        None
    }

    /// For a max pooling layer whose windows neither overlap nor reach past the image (Keras'
    /// defaults: strides equal to `pool_size`, 'valid' padding), its window (what a model may
    /// fuse into the layer before it).
    fn standalone_max_pool(&self) -> Option<(usize, usize)> {
        None
    }
}
