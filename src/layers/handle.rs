//! [`LayerRef`], the shared handle through which models hold their layers, and [`CallLayer`],
//! Keras' `layer(inputs)` on symbolic tensors.

use super::input::{KerasTensor, Origin};
use super::{IntoLayer, Layer, Weight};
use crate::error::{Error, Result};
use candle_core::Tensor;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a [`LayerRef`] holds: the layer, whether it trains, and the input shapes of its first
/// call (a layer called again must get the same shapes: it shares its weights).
pub(crate) struct Cell {
    pub layer: Box<dyn Layer>,
    pub trainable: bool,
    pub call_shapes: Option<Vec<Vec<usize>>>,
}

/// A layer held by one or more models: what `model.layers()` and `model.get_layer(name)`
/// return, and what a layer becomes when it is called on a symbolic tensor. Clones are the same
/// layer, so a layer called twice shares its weights, and a flag set through any handle
/// (`set_trainable(false)`) is seen by every model that holds it.
///
/// ```
/// use kandle::prelude::*;
/// let (left, right) = (Input::new(8), Input::new(8));
/// let shared = LayerRef::new(Dense::new(4).name("shared"));
/// let merged = Add::new().call(&[shared.call(&left)?, shared.call(&right)?])?;
/// let model = Model::new(&[left, right], &[merged])?;
/// assert_eq!(model.count_params()?, 8 * 4 + 4); // one kernel and bias, used twice
/// model.get_layer("shared")?.set_trainable(false);
/// assert!(!shared.trainable());
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Clone)]
pub struct LayerRef(pub(crate) Arc<Mutex<Cell>>);

impl std::fmt::Debug for LayerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cell = self.lock();
        f.debug_struct("LayerRef").field("layer", &cell.layer).field("trainable", &cell.trainable).finish()
    }
}

impl LayerRef {
    /// A handle to a new layer (any layer, or an [`Activation`](crate::activations::Activation)).
    pub fn new(layer: impl IntoLayer) -> Self {
        LayerRef(Arc::new(Mutex::new(Cell { layer: layer.into_layer(), trainable: true, call_shapes: None })))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Cell> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether two handles hold the same layer.
    pub fn same_layer(&self, other: &LayerRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The layer's name (empty until the layer is named, by the user or by the model that
    /// holds it).
    pub fn name(&self) -> String {
        self.lock().layer.name().unwrap_or_default().to_string()
    }

    /// Keras' class name (`Conv2D`).
    pub fn class_name(&self) -> &'static str {
        self.lock().layer.class_name()
    }

    /// Whether the optimizer updates the layer's weights (Keras' `layer.trainable`, default
    /// true).
    pub fn trainable(&self) -> bool {
        self.lock().trainable
    }

    /// Freezes (`false`) or unfreezes the layer, as Keras' `layer.trainable = ...`: a frozen
    /// layer gets no gradient and no optimizer update, and a frozen `BatchNormalization` runs in
    /// inference mode (Keras 3). On a nested model it applies to every layer inside. As in
    /// Keras, compile the model again after changing it: once the optimizer has state for one
    /// set of trainable weights, `fit` refuses another set with an error saying so.
    pub fn set_trainable(&self, trainable: bool) {
        let mut cell = self.lock();
        cell.trainable = trainable;
        cell.layer.set_trainable(trainable);
    }

    /// The layer's weights, in Keras' order, each marked trainable only when both the weight
    /// and the layer are.
    pub fn weights(&self) -> Vec<Weight> {
        let cell = self.lock();
        cell.layer
            .weights()
            .into_iter()
            .map(|mut w| {
                w.trainable &= cell.trainable;
                w
            })
            .collect()
    }

    /// Copies of the layer's weights, as Keras' `layer.get_weights()`.
    ///
    /// # Errors
    /// If candle cannot copy them.
    pub fn get_weights(&self) -> Result<Vec<Tensor>> {
        self.weights().iter().map(|w| w.var.as_tensor().copy().map_err(Error::from)).collect()
    }

    /// The number of values in the layer's weights.
    pub fn count_params(&self) -> usize {
        self.lock().layer.weights().iter().map(|w| w.var.elem_count()).sum()
    }

    /// The counters a resumed run restores (a `Dropout`'s seed and number of masks drawn).
    pub fn state(&self) -> Vec<u64> {
        self.lock().layer.state()
    }

    /// The layer's dtype policy (Keras' `layer.dtype_policy`), see [`crate::mixed_precision`].
    pub fn dtype_policy(&self) -> crate::mixed_precision::DTypePolicy {
        self.lock().layer.dtype_policy()
    }

    /// Whether the layer has created its weights.
    pub fn built(&self) -> bool {
        self.lock().layer.built()
    }

    /// The layer's configuration, as Keras' `get_config` keys and values.
    pub fn config(&self) -> Vec<(&'static str, String)> {
        self.lock().layer.config()
    }

    /// Calls the layer on symbolic tensors, as Keras' `layer(inputs)`: checks the inputs and
    /// returns the symbolic output, recording the call for [`crate::models::Model::new`]. A
    /// layer called again shares its weights and must get inputs of the same shapes.
    ///
    /// # Errors
    /// No input, inputs that do not fit the layer (the error names the layer and the shapes), or
    /// inputs of other shapes than the layer's first call.
    pub fn call(&self, inputs: impl IntoInputs) -> Result<KerasTensor> {
        let inputs = inputs.into_inputs();
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
                    context: format!(
                        "{} ({}), called again (a layer called twice shares its weights)",
                        cell.layer.name().unwrap_or("<unnamed>"),
                        cell.layer.class_name()
                    ),
                    expected: fmt_shapes(prev),
                    received: fmt_shapes(&shapes),
                });
            }
        }
        let out = cell.layer.compute_output_shape_multi(&shapes)?;
        cell.call_shapes = Some(shapes);
        drop(cell);
        Ok(KerasTensor::new(out, Origin::Call { layer: self.clone(), inputs }))
    }

    /// `conv2d (Conv2D)`, the layer's label in errors.
    pub(crate) fn label(&self) -> String {
        let cell = self.lock();
        format!("{} ({})", cell.layer.name().unwrap_or("<unnamed>"), cell.layer.class_name())
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

/// Anything a model can hold as a layer: a layer value (which becomes a new [`LayerRef`]) or
/// an existing [`LayerRef`] (the same layer, shared).
pub trait IntoLayerRef {
    /// The handle.
    fn into_layer_ref(self) -> LayerRef;
}

impl<T: IntoLayer> IntoLayerRef for T {
    fn into_layer_ref(self) -> LayerRef {
        LayerRef::new(self)
    }
}
impl IntoLayerRef for LayerRef {
    fn into_layer_ref(self) -> LayerRef {
        self
    }
}
impl IntoLayerRef for &LayerRef {
    fn into_layer_ref(self) -> LayerRef {
        self.clone()
    }
}
