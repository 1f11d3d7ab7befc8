//! Symbolic tensors for the functional API: [`Input`] makes one, every layer's `call` makes
//! more, and [`crate::models::Model::new`] reads the graph they record.

use super::layer_ref::LayerRef;
use super::{
    check_input, common_layer_methods, common_trait_methods, BuildContext, Common, Config, IntoLayer, IntoShape, Layer,
};
use crate::error::{Error, Result};
use candle_core::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A symbolic tensor, as Keras' `KerasTensor`: a shape (without the batch axis) and how it was
/// made. It holds no values; a [`crate::models::Model`] built from inputs and outputs runs the
/// recorded layers on real tensors.
#[derive(Clone)]
pub struct KerasTensor(pub(crate) Arc<Sym>);

pub(crate) struct Sym {
    pub shape: Vec<usize>,
    /// Creation order: a call's inputs always come before its output, so sorting by it orders
    /// a graph topologically, in the order the user wrote it.
    pub id: u64,
    pub origin: Origin,
}

pub(crate) enum Origin {
    /// A model input, with its `InputLayer`.
    Input(LayerRef),
    /// The output of a layer called on `inputs`, in the mode `training` fixes (`None`: the
    /// pass's).
    Call { layer: LayerRef, inputs: Vec<KerasTensor>, training: Option<bool> },
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl KerasTensor {
    pub(crate) fn new(shape: Vec<usize>, origin: Origin) -> Self {
        KerasTensor(Arc::new(Sym { shape, id: NEXT_ID.fetch_add(1, Ordering::Relaxed), origin }))
    }

    /// A weak handle on the tensor, for its layer's `output()`.
    fn weak(&self) -> std::sync::Weak<dyn std::any::Any + Send + Sync> {
        let node: Arc<dyn std::any::Any + Send + Sync> = self.0.clone();
        Arc::downgrade(&node)
    }

    /// The shape, without the batch axis.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The model inputs this tensor is computed from, in creation order (Keras'
    /// `get_source_inputs`): the tensor itself for an input.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let (a, b) = (Input::new(4), Input::new(4));
    /// let x = Rescaling::new(0.5).call(&Add::new().call(&[a, b])?)?;
    /// let sources = x.source_inputs();
    /// assert_eq!(sources.len(), 2);
    /// assert_eq!(sources[0].shape(), &[4]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn source_inputs(&self) -> Vec<KerasTensor> {
        let mut found: Vec<KerasTensor> = Vec::new();
        let mut stack = vec![self.clone()];
        let mut seen = std::collections::HashSet::new();
        while let Some(t) = stack.pop() {
            if !seen.insert(t.0.id) {
                continue;
            }
            match &t.0.origin {
                Origin::Input(_) => found.push(t.clone()),
                Origin::Call { inputs, .. } => stack.extend(inputs.iter().cloned()),
            }
        }
        found.sort_by_key(|t| t.0.id);
        found
    }

    /// The layer that made the tensor (an [`InputLayer`] for a model input).
    pub fn layer(&self) -> LayerRef {
        match &self.0.origin {
            Origin::Input(l) | Origin::Call { layer: l, .. } => l.clone(),
        }
    }
}

impl std::fmt::Debug for KerasTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layer = self.layer();
        write!(f, "<KerasTensor shape={}, from {}>", crate::error::fmt_shape(true, self.shape()), layer.label())
    }
}

/// A model input, as `keras.Input`: `Input::new((32, 32, 3))` is a symbolic tensor of that
/// shape (without the batch axis), to call layers on.
///
/// ```
/// use kandle::prelude::*;
/// let inputs = Input::new((32, 32, 3));
/// let outputs = Dense::new(10).call(&Flatten::new().call(&inputs)?)?;
/// let model = Model::new(&[inputs], &[outputs])?;
/// assert_eq!(model.output_shape()?, vec![10]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Input;

impl Input {
    /// A symbolic input of `shape`; the model names it `input_layer`, `input_layer_1` ...
    #[allow(clippy::new_ret_no_self)]
    pub fn new(shape: impl IntoShape) -> KerasTensor {
        Self::make(shape.into_dims(), None)
    }

    /// A symbolic input of `shape` named `name` (Keras' `Input(shape, name=...)`).
    pub fn named(shape: impl IntoShape, name: impl Into<String>) -> KerasTensor {
        Self::make(shape.into_dims(), Some(name.into()))
    }

    pub(crate) fn make(shape: Vec<usize>, name: Option<String>) -> KerasTensor {
        let mut layer = InputLayer::new(shape.clone());
        if let Some(n) = name {
            layer.common.name = Some(n);
        }
        let layer = LayerRef::new(layer);
        let t = KerasTensor::new(shape, Origin::Input(layer.clone()));
        layer.lock().output = Some(t.weak());
        t
    }
}

/// The layer behind a model input, as Keras' `InputLayer`: it holds the input's shape and name
/// and passes its input through. `model.layers()` of a functional model starts with them.
#[derive(Debug)]
pub struct InputLayer {
    common: Common,
    shape: Vec<usize>,
}

impl InputLayer {
    /// An input layer of `shape` (without the batch axis).
    pub fn new(shape: impl IntoShape) -> Self {
        let shape = shape.into_dims();
        InputLayer { common: Common { input_shape: Some(shape.clone()), ..Common::default() }, shape }
    }

    common_layer_methods!();
}

impl Layer for InputLayer {
    fn class_name(&self) -> &'static str {
        "InputLayer"
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if input_shape.is_empty() || input_shape.contains(&0) || input_shape != self.shape {
            return Err(Error::Shape {
                context: self.common.label("InputLayer"),
                expected: format!("{} with no zero dimension", crate::error::fmt_shape(true, &self.shape)),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(self.shape.clone())
    }

    fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
        self.compute_output_shape(input_shape)
    }

    fn built(&self) -> bool {
        true
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        check_input(|| self.common.label("InputLayer"), &self.shape, x)?;
        Ok(x.clone())
    }

    fn get_config(&self) -> Config {
        Config::new().set("shape", self.shape.clone())
    }
}

impl LayerRef {
    /// Calls the layer on symbolic tensors, as Keras' `layer(inputs)`: checks the inputs and
    /// returns the symbolic output, recording the call for [`crate::models::Model::new`]. A
    /// layer called again shares its weights and must get inputs of the same shapes.
    ///
    /// # Errors
    /// No input, inputs that do not fit the layer (the error names the layer and the shapes), or
    /// inputs of other shapes than the layer's first call.
    pub fn call(&self, inputs: impl IntoInputs) -> Result<KerasTensor> {
        self.call_in_mode(inputs.into_inputs(), None)
    }

    /// Calls the layer as [`LayerRef::call`], always in inference mode (`training` false) or
    /// always in training mode, whatever the pass: Keras' `layer(inputs, training=False)`. The
    /// transfer-learning recipe calls its pretrained base so, and its BatchNormalization layers
    /// keep their moving statistics when the base is unfrozen for fine-tuning; the mode is
    /// saved with the model.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let base = Sequential::new().add(Dense::new(4).input_shape(3)).add(BatchNormalization::new());
    /// let inputs = Input::new(3);
    /// let x = base.as_layer().call_training(&inputs, false)?;
    /// let model = Model::new(&[inputs], &[Dense::new(1).call(&x)?])?;
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`LayerRef::call`].
    pub fn call_training(&self, inputs: impl IntoInputs, training: bool) -> Result<KerasTensor> {
        self.call_in_mode(inputs.into_inputs(), Some(training))
    }

    fn call_in_mode(&self, inputs: Vec<KerasTensor>, training: Option<bool>) -> Result<KerasTensor> {
        if inputs.is_empty() {
            return Err(Error::invalid(
                "inputs",
                format!("{}: expected at least one input, received none", self.label()),
            ));
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let mut cell = self.lock();
        if let Some(prev) = &cell.call_shapes {
            if prev != &shapes {
                return Err(Error::Shape {
                    context: format!("{}, called again (a layer called twice shares its weights)", cell.label()),
                    expected: fmt_shapes(prev),
                    received: fmt_shapes(&shapes),
                });
            }
        }
        let out = cell.output_shape(&shapes)?;
        cell.call_shapes = Some(shapes);
        let out = KerasTensor::new(out, Origin::Call { layer: self.clone(), inputs, training });
        if cell.output.as_ref().and_then(|w| w.upgrade()).is_none() {
            cell.output = Some(out.weak());
        }
        Ok(out)
    }

    /// The symbolic output of the layer's first call, as Keras' `layer.output`, to cut a
    /// feature extractor out of a trained model:
    /// `Model::new(&model.inputs()?, &[model.get_layer("features")?.output()?])`. An
    /// `InputLayer`'s output is its model input.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new()
    ///     .add(Dense::new(8).activation(Activation::Relu).input_shape(4))
    ///     .add(Dense::new(3).name("features"))
    ///     .add(Dense::new(2).activation(Activation::Softmax));
    /// let extractor = Model::new(&model.inputs()?, &[model.get_layer("features")?.output()?])?;
    /// assert_eq!(extractor.output_shape()?, vec![3]);
    /// assert_eq!(extractor.count_params()?, 4 * 8 + 8 + 8 * 3 + 3); // the same weights
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// A layer never called on a symbolic tensor (nor built in a model), or whose model is gone.
    pub fn output(&self) -> Result<KerasTensor> {
        let cell = self.lock();
        let node = cell.output.as_ref().and_then(|w| w.upgrade()).and_then(|a| a.downcast::<Sym>().ok());
        node.map(KerasTensor).ok_or_else(|| {
            Error::invalid(
                "output",
                format!(
                    "{} has no symbolic output: it was never called on a tensor of a model that is still alive \
                     (for a Sequential, ask the model for its inputs() first)",
                    cell.label()
                ),
            )
        })
    }

    /// The symbolic input of the layer's first call (the first one, for a merge layer), as
    /// Keras' `layer.input`.
    ///
    /// # Errors
    /// As [`LayerRef::output`].
    pub fn input(&self) -> Result<KerasTensor> {
        let out = self.output()?;
        match &out.0.origin {
            Origin::Call { inputs, .. } => Ok(inputs[0].clone()),
            Origin::Input(_) => Ok(out.clone()),
        }
    }
}

fn fmt_shapes(shapes: &[Vec<usize>]) -> String {
    shapes.iter().map(|s| crate::error::fmt_shape(true, s)).collect::<Vec<_>>().join(", ")
}

/// What a layer can be called on: one symbolic tensor, or several (merge layers), as a slice,
/// an array or a `Vec`.
pub trait IntoInputs {
    /// The tensors, in order.
    fn into_inputs(self) -> Vec<KerasTensor>;
}

impl IntoInputs for &KerasTensor {
    fn into_inputs(self) -> Vec<KerasTensor> {
        vec![self.clone()]
    }
}
impl IntoInputs for KerasTensor {
    fn into_inputs(self) -> Vec<KerasTensor> {
        vec![self]
    }
}
impl IntoInputs for &[KerasTensor] {
    fn into_inputs(self) -> Vec<KerasTensor> {
        self.to_vec()
    }
}
impl<const N: usize> IntoInputs for [KerasTensor; N] {
    fn into_inputs(self) -> Vec<KerasTensor> {
        self.to_vec()
    }
}
impl<const N: usize> IntoInputs for &[KerasTensor; N] {
    fn into_inputs(self) -> Vec<KerasTensor> {
        self.to_vec()
    }
}
impl IntoInputs for Vec<KerasTensor> {
    fn into_inputs(self) -> Vec<KerasTensor> {
        self
    }
}
impl IntoInputs for &Vec<KerasTensor> {
    fn into_inputs(self) -> Vec<KerasTensor> {
        self.clone()
    }
}

/// Keras' `layer(inputs)` for every layer value: `Conv2D::new(16, 3).call(&inputs)?`,
/// `Activation::Relu.call(&x)?`, `Add::new().call(&[x, y])?`. The layer becomes a new
/// [`LayerRef`]; to call one layer twice (shared weights), make the `LayerRef` first and call
/// that.
///
/// ```
/// use kandle::prelude::*;
/// let inputs = Input::new((8, 8, 3));
/// let x = Conv2D::new(4, (3, 3)).padding(Padding::Same).call(&inputs)?;
/// let y = Activation::Relu.call(&x)?;
/// let z = Add::new().call(&[x, y])?;
/// assert_eq!(z.shape(), &[8, 8, 4]);
/// # Ok::<(), kandle::Error>(())
/// ```
pub trait CallLayer {
    /// Calls the layer on `inputs`.
    ///
    /// # Errors
    /// As [`LayerRef::call`].
    fn call(self, inputs: impl IntoInputs) -> Result<KerasTensor>;
}

impl<T: IntoLayer> CallLayer for T {
    fn call(self, inputs: impl IntoInputs) -> Result<KerasTensor> {
        LayerRef::new(self).call(inputs)
    }
}
