//! The [`Layer`] trait: what every layer implements, kandle's own and a user's alike. A
//! user-defined layer needs `forward`; everything else has a default, as Keras' `Layer` has:
//!
//! ```
//! use kandle::prelude::*;
//! use kandle::layers::{BuildContext, Config};
//! use candle_core::Var;
//!
//! /// `x * scale`, one learnable scale (Keras: `self.add_weight(shape=(1,), initializer="ones")`).
//! #[derive(Debug, Default)]
//! struct Scale { scale: Option<Var> }
//!
//! impl Layer for Scale {
//!     fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> kandle::Result<Vec<usize>> {
//!         self.scale = Some(ctx.add_weight("scale", &[1], Initializer::Ones, true)?);
//!         Ok(input_shape.to_vec())
//!     }
//!     fn forward(&self, x: &Tensor, _training: bool) -> kandle::Result<Tensor> {
//!         let scale = self.scale.as_ref().ok_or_else(|| Error::invalid("layer", "Scale is not built"))?;
//!         Ok(x.broadcast_mul(scale.as_tensor())?)
//!     }
//! }
//!
//! let model = Sequential::new().add(Dense::new(4).input_shape(3)).add(Scale::default());
//! assert_eq!(model.count_params()?, 3 * 4 + 4 + 1);
//! assert_eq!(model.layer_names(), ["dense", "scale"]);
//! # Ok::<(), kandle::Error>(())
//! ```
//!
//! kandle's built-in layers also implement the opt-in capabilities of
//! [`super::capabilities`] (several inputs, their own backward pass, fusion with the layer that
//! follows), which a user's layer leaves alone: candle's autograd differentiates it.

use super::capabilities::Capabilities;
use super::Config;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::mixed_precision::DTypePolicy;
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;

/// The layer abstraction: object-safe, with the training mode an explicit argument. Only
/// [`Layer::forward`] has no default.
pub trait Layer: Send + std::fmt::Debug {
    /// Calls the layer on a batch; `training` turns on training-only behaviour (dropout).
    ///
    /// # Errors
    /// If the layer is not built or the input does not fit.
    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor>;

    /// Keras' class name (`Conv2D`), shown by `summary` and saved with the model. Default: the
    /// type's name without its module path (`Scale` for `my_crate::layers::Scale`).
    fn class_name(&self) -> &'static str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// The layer's own name, if it keeps one (kandle's layers do: `.name("conv1")`). Default:
    /// none; the model names the layer (`scale`, `scale_1` ...) and keeps the name itself.
    fn name(&self) -> Option<&str> {
        None
    }

    /// Told the name the model gave the layer (kandle's layers use it in their errors).
    fn set_name(&mut self, _name: String) {}

    /// The output shape for an input shape (both without the batch axis). Default: the input
    /// shape (a layer that keeps the shape, as most element-wise layers do).
    ///
    /// # Errors
    /// If the input shape does not fit the layer.
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        Ok(input_shape.to_vec())
    }

    /// Creates the weights for `input_shape` (with [`BuildContext::add_weight`]) and returns the
    /// output shape. Default: no weights, the output shape of [`Layer::compute_output_shape`].
    ///
    /// # Errors
    /// If the input shape does not fit the layer or an argument is invalid.
    fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
        self.compute_output_shape(input_shape)
    }

    /// Whether the layer was built before a model holds it (a layer built by hand). Default:
    /// false; the model remembers which of its layers it built.
    fn built(&self) -> bool {
        false
    }

    /// The weights the layer keeps itself, in Keras' order (`kernel`, then `bias`). Weights made
    /// with [`BuildContext::add_weight`] are kept by the model and need not be listed here.
    fn weights(&self) -> Vec<Weight> {
        Vec::new()
    }

    /// The layer's configuration, as Keras' `get_config()`: what a constructor needs to make the
    /// layer again ([`super::CustomObjects`]). Default: empty, or what the deprecated
    /// [`Layer::config`] gives, as strings.
    fn get_config(&self) -> Config {
        #[allow(deprecated)]
        self.config().into_iter().fold(Config::new(), |c, (k, v)| c.set(k, v))
    }

    /// The configuration as kandle 0.1 wrote it, values as strings.
    #[deprecated(note = "implement `get_config`, whose values are JSON")]
    fn config(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// [`Layer::forward`] as the model's graph calls it, with what the pass knows
    /// ([`CallContext`]). Override it only when the result depends on more than the training
    /// flag: dropout draws each row's mask by that row's place in the whole batch.
    ///
    /// # Errors
    /// As [`Layer::forward`].
    fn forward_in(&self, x: &Tensor, ctx: &CallContext) -> Result<Tensor> {
        self.forward(x, ctx.training)
    }

    /// The input shape declared with `.input_shape(...)`, if any (the first layer of a
    /// `Sequential` needs one).
    fn declared_input_shape(&self) -> Option<&[usize]> {
        None
    }

    /// Declares the input shape (used when a model is rebuilt from a file).
    fn set_input_shape(&mut self, _shape: Vec<usize>) {}

    /// The layer's dtype policy ([`crate::mixed_precision`]); `float32` unless the layer keeps
    /// one.
    fn dtype_policy(&self) -> DTypePolicy {
        DTypePolicy::Float32
    }

    /// Sets the layer's dtype policy (used when a model is rebuilt from a file); layers without
    /// one ignore it.
    fn set_dtype_policy(&mut self, _policy: DTypePolicy) {}

    /// Counters that a resumed run must restore (a dropout layer's number of masks drawn).
    fn state(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Restores [`Layer::state`].
    fn set_state(&mut self, _state: &[u64]) {}

    /// Told when the layer is frozen or unfrozen (Keras' `layer.trainable = ...`). The model
    /// keeps the flag and leaves frozen weights alone; a layer whose computation depends on it
    /// (`BatchNormalization` runs in inference mode while frozen, as in Keras 3) overrides this.
    fn set_trainable(&mut self, _trainable: bool) {}

    /// The layer as `Any`, for code that knows its type (a model used as a layer gives itself
    /// back to `LayerRef::as_model`). Default: none.
    #[doc(hidden)]
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// What the layer can do beyond this trait: take several inputs, compute its own gradients,
    /// run fused with its neighbours ([`super::capabilities`]). Default: none of these, as for a
    /// user's layer, which candle's autograd differentiates.
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities::default()
    }

    /// A layer of several inputs, for building: the same object as
    /// [`Capabilities::multi_input`](super::Capabilities::multi_input), mutable.
    fn multi_input_mut(&mut self) -> Option<&mut dyn super::MultiInput> {
        None
    }
}

/// `Scale` for `my_crate::layers::Scale` (generic arguments kept: `Wrapper<Dense>`).
fn short_type_name(full: &'static str) -> &'static str {
    let end = full.find('<').unwrap_or(full.len());
    let start = full[..end].rfind("::").map_or(0, |i| i + 2);
    &full[start..]
}

/// What a layer's call knows about the pass it runs in, as Keras' `CallContext`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallContext {
    /// Training-only behaviour on (dropout).
    pub training: bool,
    /// The place of the batch's first row in the whole batch: a replica of a data-parallel
    /// `fit` ([`crate::distribute::MirroredStrategy`]) trains on rows `row_offset..` of it, and
    /// dropout masks them as those rows, so that N replicas give the gradients one would.
    pub row_offset: usize,
}

impl CallContext {
    /// An inference call.
    pub fn inference() -> Self {
        CallContext::default()
    }

    /// A training call.
    pub fn training() -> Self {
        CallContext { training: true, row_offset: 0 }
    }

    /// This call with its rows at `offset` in the whole batch.
    pub fn with_row_offset(self, offset: usize) -> Self {
        CallContext { row_offset: offset, ..self }
    }
}

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
    /// The weights made with [`BuildContext::add_weight`], which the model keeps for the layer.
    pub(crate) added: Vec<Weight>,
}

impl<'a> BuildContext<'a> {
    /// A context creating weights of `dtype` on `device` from `rng`, without bound.
    pub fn new(dtype: DType, device: &'a Device, rng: &'a mut StdRng) -> Self {
        BuildContext { dtype, device, rng, budget: usize::MAX, added: Vec::new() }
    }

    /// A new weight of `shape` drawn from `init`, which the layer keeps and lists in its
    /// [`Layer::weights`].
    ///
    /// # Errors
    /// A shape whose size overflows, or that exceeds what the model file being loaded holds.
    pub fn weight(&mut self, init: &Initializer, shape: &[usize]) -> Result<Var> {
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

    /// Keras' `add_weight(name, shape, initializer, trainable)`: a new weight that the model
    /// keeps, saves and (when `trainable`) trains for the layer, which keeps the returned
    /// variable to use in `forward`.
    ///
    /// # Errors
    /// As [`BuildContext::weight`].
    pub fn add_weight(&mut self, name: &str, shape: &[usize], init: Initializer, trainable: bool) -> Result<Var> {
        let var = self.weight(&init, shape)?;
        let w = Weight::new(name, var.clone());
        self.added.push(if trainable { w } else { w.non_trainable() });
        Ok(var)
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

/// Anything that `Sequential::add` accepts: every layer, and an
/// [`Activation`](crate::activations::Activation) (Keras' `Activation('relu')` layer is
/// `Activation::Relu` here).
pub trait IntoLayer {
    /// The boxed layer.
    fn into_layer(self) -> Box<dyn Layer>;
}

impl<L: Layer + 'static> IntoLayer for L {
    fn into_layer(self) -> Box<dyn Layer> {
        Box::new(self)
    }
}

impl IntoLayer for crate::activations::Activation {
    fn into_layer(self) -> Box<dyn Layer> {
        Box::new(super::ActivationLayer::new(self))
    }
}

impl IntoLayer for Box<dyn Layer> {
    fn into_layer(self) -> Box<dyn Layer> {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_type_names() {
        assert_eq!(super::short_type_name("my_crate::layers::Scale"), "Scale");
        assert_eq!(super::short_type_name("Scale"), "Scale");
        assert_eq!(super::short_type_name("a::Wrapper<b::Dense>"), "Wrapper<b::Dense>");
    }
}
