//! [`Sequential`]: a model whose layers form a line.

use super::model::{Model, ModelState};
use crate::callbacks::CallbackModel;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::layers::{IntoLayerRef, LayerRef};
use candle_core::{DType, Device};

/// A linear stack of layers, as `keras.Sequential`: a [`Model`] whose layers form a line, with
/// every `Model` method (`compile`, `fit`, `evaluate`, `predict`, saving, `get_layer` ...).
///
/// Like a Keras model object, a `Sequential` is a handle: `add` works both in the chained
/// builder form and as a statement, and clones share the same model.
///
/// ```
/// use kandle::prelude::*;
/// // Builder form.
/// let model = Sequential::new()
///     .add(Dense::new(16).activation(Activation::Relu).input_shape(8))
///     .add(Dense::new(3).activation(Activation::Softmax));
/// // Statement form, as in Keras scripts.
/// model.add(Dense::new(2));
/// assert_eq!(model.count_params()?, 8 * 16 + 16 + 16 * 3 + 3 + 3 * 2 + 2);
/// model.pop()?;
/// assert_eq!(model.len(), 2);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Clone)]
pub struct Sequential {
    model: Model,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Sequential").field("layers", &inner.graph.layers()).field("seed", &inner.seed).finish()
    }
}

impl std::ops::Deref for Sequential {
    type Target = Model;
    fn deref(&self) -> &Model {
        &self.model
    }
}

impl std::ops::DerefMut for Sequential {
    fn deref_mut(&mut self) -> &mut Model {
        &mut self.model
    }
}

impl From<Sequential> for Model {
    fn from(s: Sequential) -> Model {
        s.model
    }
}

impl Default for Sequential {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequential {
    /// The model as a `Sequential` again (with [`Sequential::add`] and [`Sequential::pop`]),
    /// as Keras' `load_model` gives back a `Sequential` when one was saved.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new().name("tiny").add(Dense::new(2).input_shape(3));
    /// let path = std::env::temp_dir().join("kandle-doc-sequential-again.kandle");
    /// model.save(&path)?;
    /// let loaded = kandle::models::load_model(&path)?;
    /// assert_eq!(loaded.model_name(), "tiny");
    /// let seq = Sequential::from_model(loaded)?;
    /// seq.pop()?;
    /// seq.add(Dense::new(4).input_shape(3));
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// A functional model (it is not a stack of layers).
    pub fn from_model(model: Model) -> Result<Sequential> {
        if !model.lock().graph.is_stack() {
            return Err(Error::invalid(
                "model",
                format!("model {:?} is functional, not a Sequential stack of layers", model.model_name()),
            ));
        }
        Ok(Sequential { model })
    }

    /// An empty model (seeded from the system's entropy; see [`Sequential::seed`]).
    pub fn new() -> Self {
        Sequential { model: Model::from_state(ModelState::new("sequential", Graph::stack())) }
    }

    /// Appends a layer (an [`Activation`](crate::activations::Activation) adds an
    /// `Activation` layer; a [`LayerRef`] adds that layer, shared; `other.as_layer()` adds a
    /// whole model). Unnamed layers are named as Keras does: `conv2d`, `conv2d_1` ...
    pub fn add(&self, layer: impl IntoLayerRef) -> Sequential {
        let layer = layer.into_layer_ref();
        let mut inner = self.lock();
        inner.name_layer(&layer);
        inner.graph.push(layer);
        inner.symbolic = None;
        drop(inner);
        self.clone()
    }

    /// Removes the last layer and returns it, as Keras' `pop`.
    ///
    /// # Errors
    /// An empty model.
    pub fn pop(&self) -> Result<LayerRef> {
        let mut inner = self.lock();
        let layer = inner.graph.pop().ok_or_else(|| Error::invalid("pop", "the model has no layer to remove"))?;
        inner.symbolic = None;
        inner.compiled = None;
        Ok(layer)
    }

    /// Fixes the seed of weight initialisation, dropout masks and shuffling, so that a run is
    /// reproducible. Takes effect when the model is built.
    pub fn seed(&self, seed: u64) -> Sequential {
        self.model.seed(seed);
        self.clone()
    }

    /// The device to build the weights on (default CPU).
    pub fn device(&self, device: Device) -> Sequential {
        self.model.device(device);
        self.clone()
    }

    /// The weights' element type (default `F32`; `F64` for gradient checks).
    pub fn dtype(&self, dtype: DType) -> Sequential {
        self.model.dtype(dtype);
        self.clone()
    }

    /// The model's name (default `"sequential"`).
    pub fn name(&self, name: impl Into<String>) -> Sequential {
        self.model.name(name);
        self.clone()
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.lock().graph.layers().len()
    }

    /// Whether the model has no layer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The model as a plain [`Model`] handle (the same model).
    pub fn model(&self) -> Model {
        self.model.clone()
    }
}

impl CallbackModel for Sequential {
    fn optimizer_learning_rate(&self) -> f64 {
        self.model.optimizer_learning_rate()
    }
    fn set_optimizer_learning_rate(&self, lr: f64) -> crate::error::Result<()> {
        self.model.set_optimizer_learning_rate(lr)
    }
    fn optimizer_iterations(&self) -> u64 {
        self.model.optimizer_iterations()
    }
    fn weight_values(&self) -> crate::error::Result<Vec<candle_core::Tensor>> {
        self.model.weight_values()
    }
    fn set_weight_values(&self, weights: &[candle_core::Tensor]) -> crate::error::Result<()> {
        self.model.set_weight_values(weights)
    }
    fn weight_paths(&self) -> crate::error::Result<Vec<(String, candle_core::Tensor)>> {
        self.model.weight_paths()
    }
    fn save_with(&self, path: &std::path::Path, extra: &[(&str, String)]) -> crate::error::Result<()> {
        self.model.save_with(path, extra)
    }
    fn save_weights_to(&self, path: &std::path::Path) -> crate::error::Result<()> {
        self.model.save_weights_to(path)
    }
    fn load_with_metadata(
        &self,
        path: &std::path::Path,
    ) -> crate::error::Result<std::collections::HashMap<String, String>> {
        self.model.load_with_metadata(path)
    }
    fn metric_direction(&self, key: &str) -> Option<crate::metrics::Direction> {
        self.model.metric_direction(key)
    }
}
