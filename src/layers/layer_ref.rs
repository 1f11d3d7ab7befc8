//! [`LayerRef`], the shared handle through which models hold their layers: the layer, and what
//! the model keeps for it (its name, whether it trains, whether it is built, the weights made
//! with `add_weight`, the input shapes of its first call).

use super::{IntoLayer, Layer, Weight};
use crate::error::{Error, Result};
use candle_core::Tensor;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a [`LayerRef`] holds: the layer, and what the model keeps for it.
pub(crate) struct Cell {
    pub layer: Box<dyn Layer>,
    /// The layer's name: its own, or the one the model gave it (Keras' `conv2d_1`).
    pub name: Option<String>,
    pub trainable: bool,
    /// Whether the model built it (or it came built).
    pub built: bool,
    /// The weights made with `BuildContext::add_weight`, after the layer's own.
    pub added: Vec<Weight>,
    /// The input shapes of its first call: a layer called again must get the same shapes (it
    /// shares its weights).
    pub call_shapes: Option<Vec<Vec<usize>>>,
    /// The symbolic output of its first call (Keras' `layer.output`, a `KerasTensor`'s node,
    /// kept opaque here), held weakly: the model made from it keeps it alive.
    pub output: Option<std::sync::Weak<dyn std::any::Any + Send + Sync>>,
}

impl Cell {
    /// Names the layer, and tells it its name.
    pub fn set_name(&mut self, name: String) {
        self.layer.set_name(name.clone());
        self.name = Some(name);
    }

    /// The layer's weights and the ones it added, as the layer marks them.
    pub fn all_weights(&self) -> Vec<Weight> {
        let mut w = self.layer.weights();
        w.extend(self.added.iter().cloned());
        w
    }

    /// `conv2d (Conv2D)`, the layer's label in errors.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name.as_deref().unwrap_or("<unnamed>"), self.layer.class_name())
    }

    /// Whether the layer has its weights.
    pub fn is_built(&self) -> bool {
        self.built || self.layer.built()
    }

    /// The output shape for the shapes of the inputs: one input for most layers, several for
    /// a [`MultiInput`](super::MultiInput) layer.
    pub fn output_shape(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        match (self.layer.capabilities().multi_input, input_shapes) {
            (Some(m), _) => m.compute_output_shape_multi(input_shapes),
            (None, [one]) => self.layer.compute_output_shape(one),
            (None, _) => Err(Error::invalid(
                "inputs",
                format!("{} takes one input, received {}", self.label(), input_shapes.len()),
            )),
        }
    }

    /// Builds the layer for the shapes of its inputs (unless it is built) and returns the output
    /// shape; the weights it makes with `add_weight` are kept here.
    pub fn build(&mut self, input_shapes: &[Vec<usize>], ctx: &mut super::BuildContext) -> Result<Vec<usize>> {
        if self.is_built() {
            return self.output_shape(input_shapes);
        }
        let out = match (self.layer.multi_input_mut(), input_shapes) {
            (Some(m), _) => m.build_multi(input_shapes, ctx)?,
            (None, [one]) => self.layer.build(one, ctx)?,
            (None, _) => self.output_shape(input_shapes)?,
        };
        self.added.append(&mut ctx.added);
        self.built = true;
        Ok(out)
    }
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
        let layer = layer.into_layer();
        let (name, built) = (layer.name().map(str::to_string), layer.built());
        LayerRef(Arc::new(Mutex::new(Cell {
            layer,
            name,
            trainable: true,
            built,
            added: Vec::new(),
            call_shapes: None,
            output: None,
        })))
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
        self.lock().name.clone().unwrap_or_default()
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
        cell.all_weights()
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
        self.lock().all_weights().iter().map(|w| w.var.elem_count()).sum()
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
        let cell = self.lock();
        cell.built || cell.layer.built()
    }

    /// The layer's configuration, as Keras' `get_config()`.
    pub fn get_config(&self) -> super::Config {
        self.lock().layer.get_config()
    }

    /// The layer's configuration with its values as text, as kandle 0.1 gave it.
    #[deprecated(note = "use `get_config`, whose values are JSON")]
    pub fn config(&self) -> Vec<(&'static str, String)> {
        let mut strings: Vec<(String, String)> = self.get_config().to_strings().into_iter().collect();
        strings.sort();
        strings.into_iter().map(|(k, v)| (intern(k), v)).collect()
    }

    /// `conv2d (Conv2D)`, the layer's label in errors.
    pub(crate) fn label(&self) -> String {
        self.lock().label()
    }
}

/// A key of [`LayerRef::config`] as `&'static str`: the few argument names there are, each kept
/// once.
fn intern(key: String) -> &'static str {
    static KEYS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = keys.iter().find(|k| **k == key) {
        return k;
    }
    let k: &'static str = Box::leak(key.into_boxed_str());
    keys.push(k);
    k
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
