//! [`Model`]: a model of any shape (Keras' functional API), and the methods every model has
//! (`compile`, `fit`, `evaluate`, `predict`, saving, layer access). A
//! [`Sequential`](super::Sequential) is a `Model` whose layers form a line, as in Keras. What a
//! model holds is its [`ModelState`]: its graph and settings, and once compiled, its compile
//! state; how it trains is [`crate::trainers`]' business, through the `Trainee` interface this
//! file implements.

use crate::callbacks::History;
use crate::error::{Error, Result};
use crate::graph::{BuildSettings, Graph};
use crate::layers::layer_ref::Cell;
use crate::layers::LayerRef;
use crate::optimizers::IntoOptimizer;
use crate::trainers::{Arrays, BatchGenerator, Compiled, Evaluation, FitOptions, IntoLosses, IntoMetrics, TrainData};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// What a model is: its graph and its settings, and once compiled, its compile state. Behind
/// the [`Model`] handle's lock; its fields are the `models` module's.
pub(crate) struct ModelState {
    pub(super) name: String,
    /// Whether the name was given (`Model::name`, a file): a model of the default name used
    /// as a layer is named by the model that holds it (`sequential`, `sequential_1`, ...).
    pub(super) name_set: bool,
    pub(super) graph: Graph,
    /// How many layers of each base name were named (Keras' `conv2d`, `conv2d_1` ...).
    pub(super) names: HashMap<String, usize>,
    pub(super) seed: u64,
    /// Whether the user fixed the seed (a nested model that did not takes one from its parent).
    pub(super) seed_set: bool,
    pub(super) device: Device,
    pub(super) dtype: DType,
    pub(super) compiled: Option<Compiled>,
    /// Values the weights may take in all when built (bounded by `load_model`).
    pub(super) weight_budget: usize,
    /// The handle of this model as a layer of other models (`Model::as_layer`), kept weakly.
    pub(super) as_layer: Option<Weak<Mutex<Cell>>>,
    /// Differentiate every layer with candle's autograd (`Model::use_autograd`).
    pub(super) autograd: bool,
    /// A `fit` is running (it locks the model step by step, not for the whole run).
    pub(super) training: bool,
    /// The symbolic inputs and outputs (Keras' `model.inputs`, `model.outputs`): a functional
    /// model's own, a stack's made when first asked for. They keep every layer's `output()`
    /// alive.
    pub(super) symbolic: Option<(Vec<crate::layers::KerasTensor>, Vec<crate::layers::KerasTensor>)>,
}

impl ModelState {
    pub(super) fn new(name: &str, graph: Graph) -> Self {
        ModelState {
            name: name.into(),
            name_set: false,
            graph,
            names: HashMap::new(),
            seed: rand::random(),
            seed_set: false,
            device: Device::Cpu,
            dtype: DType::F32,
            compiled: None,
            weight_budget: usize::MAX,
            as_layer: None,
            autograd: false,
            training: false,
            symbolic: None,
        }
    }

    /// Names an unnamed layer as Keras does (`conv2d`, `conv2d_1` ...) and counts named ones,
    /// so that names stay unique in the model.
    pub(super) fn name_layer(&mut self, layer: &LayerRef) {
        let mut cell = layer.lock();
        let base = match &cell.name {
            Some(n) => n.clone(),
            None => snake_case(cell.layer.class_name()),
        };
        let count = self.names.entry(base.clone()).or_insert(0);
        if cell.name.is_none() {
            cell.set_name(if *count == 0 { base } else { format!("{base}_{count}") });
        }
        *count += 1;
    }

    /// Creates the weights of every layer that has none yet, from one generator seeded by the
    /// model's seed.
    ///
    /// # Errors
    /// A dtype kandle does not train in, no input shape, or a layer that does not fit its input.
    pub(super) fn build(&mut self) -> Result<()> {
        if self.graph.is_built() {
            return Ok(());
        }
        if !matches!(self.dtype, DType::F32 | DType::F64) {
            return Err(Error::invalid(
                "dtype",
                format!(
                    "model {:?}: expected f32 or f64 (kandle trains in those; mixed precision is not supported yet), received {:?}",
                    self.name, self.dtype
                ),
            ));
        }
        let settings =
            BuildSettings { dtype: self.dtype, device: &self.device, seed: self.seed, budget: self.weight_budget };
        self.graph.build(&settings)
    }
}

/// Keras' `to_snake_case`: `MaxPooling2D` -> `max_pooling2d`.
pub(crate) fn snake_case(name: &str) -> String {
    let c: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &ch) in c.iter().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            let next_lower = c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if c[i - 1].is_ascii_lowercase() || (next_lower && c[i - 1] != '_') {
                out.push('_');
            }
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

/// A model: layers called on each other's outputs from its inputs to its outputs, as Keras'
/// functional `Model(inputs, outputs)`. Any directed acyclic graph: skip connections, shared
/// layers, several inputs and outputs, models inside models.
///
/// ```
/// use kandle::prelude::*;
/// let inputs = Input::new((32, 32, 3));
/// let x = Conv2D::new(16, (3, 3)).padding(Padding::Same).call(&inputs)?;
/// let x = BatchNormalization::new().call(&x)?;
/// let x = Activation::Relu.call(&x)?;
/// let y = Conv2D::new(16, (3, 3)).padding(Padding::Same).call(&x)?;
/// let y = Add::new().call(&[x.clone(), y])?;
/// let outputs = Dense::new(10).activation(Activation::Softmax).call(&Flatten::new().call(&y)?)?;
/// let model = Model::new(&[inputs], &[outputs])?;
/// model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
/// assert!(model.summary_string()?.contains("Connected to"));
/// model.get_layer("conv2d")?.set_trainable(false);
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// Like a Keras model object, a `Model` is a handle: clones share the same model.
#[derive(Clone)]
pub struct Model {
    pub(crate) inner: Arc<Mutex<ModelState>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Model").field("name", &inner.name).field("layers", &inner.graph.layers()).finish()
    }
}

impl Model {
    pub(crate) fn from_state(state: ModelState) -> Self {
        Model { inner: Arc::new(Mutex::new(state)) }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ModelState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fixes the seed of weight initialisation, dropout masks and shuffling, so that a run is
    /// reproducible. Takes effect when the model is built.
    pub fn seed(&self, seed: u64) -> Self {
        let mut inner = self.lock();
        inner.seed = seed;
        inner.seed_set = true;
        drop(inner);
        self.clone()
    }

    /// The device to build the weights on (default CPU).
    pub fn device(&self, device: Device) -> Self {
        self.lock().device = device;
        self.clone()
    }

    /// The weights' element type (default `F32`; `F64` for gradient checks).
    pub fn dtype(&self, dtype: DType) -> Self {
        self.lock().dtype = dtype;
        self.clone()
    }

    /// Differentiates every layer with candle's autograd instead of the layers' own backward
    /// passes (default off; the environment variable `KANDLE_AUTOGRAD` does the same for every
    /// model): slower, for checking kandle's backward passes against autograd.
    pub fn use_autograd(&self, on: bool) -> Self {
        self.lock().autograd = on;
        self.clone()
    }

    /// Renames the model (default `"sequential"` or `"functional"`).
    pub fn name(&self, name: impl Into<String>) -> Self {
        let mut inner = self.lock();
        inner.name = name.into();
        inner.name_set = true;
        drop(inner);
        self.clone()
    }

    /// The model's name.
    pub fn model_name(&self) -> String {
        self.lock().name.clone()
    }

    /// The layers, as Keras' `model.layers`, in Keras' order: for a functional model, by depth
    /// from the inputs (the longest path to an output), ties in the order a walk back from the
    /// outputs meets them, as Keras 3's `ops/function.py`; `get_weights` and `set_weights`
    /// follow it, so a list of weights from Keras fits.
    pub fn layers(&self) -> Vec<LayerRef> {
        let inner = self.lock();
        let g = &inner.graph;
        g.keras_order()
            .into_iter()
            .map(|op| match op {
                crate::graph::Op::Input(i) => g.input_layers()[i].clone(),
                crate::graph::Op::Layer(j) => g.layers()[j].clone(),
            })
            .collect()
    }

    /// The layers' names, in [`Model::layers`] order.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers().iter().map(|l| l.name()).collect()
    }

    /// The symbolic inputs, as Keras' `model.inputs`: a functional model's, or for a
    /// `Sequential` one made from its input shape (its layers are then called on it, so that
    /// each has an [`output`](LayerRef::output)).
    ///
    /// # Errors
    /// A `Sequential` without layers or without an input shape, or whose layers do not fit.
    pub fn inputs(&self) -> Result<Vec<crate::layers::KerasTensor>> {
        Ok(self.symbolic()?.0)
    }

    /// The symbolic outputs, as Keras' `model.outputs` (see [`Model::inputs`]).
    ///
    /// # Errors
    /// As [`Model::inputs`].
    pub fn outputs(&self) -> Result<Vec<crate::layers::KerasTensor>> {
        Ok(self.symbolic()?.1)
    }

    fn symbolic(&self) -> Result<(Vec<crate::layers::KerasTensor>, Vec<crate::layers::KerasTensor>)> {
        let inner = self.lock();
        if let Some(s) = &inner.symbolic {
            return Ok(s.clone());
        }
        let shape = inner.graph.topology()?.input_shapes.remove(0);
        let layers = inner.graph.layers().to_vec();
        drop(inner);
        let input = crate::layers::Input::make(shape, None);
        let mut x = input.clone();
        for l in &layers {
            x = l.call(&x)?;
        }
        let s = (vec![input], vec![x]);
        self.lock().symbolic = Some(s.clone());
        Ok(s)
    }

    /// The layer at `index` in [`Model::layers`], as Keras' `model.get_layer(index=...)`.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new().add(Dense::new(4).input_shape(3)).add(Dense::new(2).name("head"));
    /// assert_eq!(model.get_layer_at(1)?.name(), "head");
    /// assert!(model.get_layer_at(2).is_err());
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// An index past the layers, naming how many there are.
    pub fn get_layer_at(&self, index: usize) -> Result<LayerRef> {
        let layers = self.layers();
        layers.get(index).cloned().ok_or_else(|| {
            Error::invalid(
                "index",
                format!("model \"{}\" has {} layers, received index {index}", self.model_name(), layers.len()),
            )
        })
    }

    /// The layer named `name`, as Keras' `model.get_layer(name)`.
    ///
    /// # Errors
    /// No layer of that name: the error lists the names there are.
    pub fn get_layer(&self, name: &str) -> Result<LayerRef> {
        let layers = self.layers();
        layers.iter().find(|l| l.name() == name).cloned().ok_or_else(|| {
            Error::invalid(
                "name",
                format!(
                    "model \"{}\" has no layer {name:?}; its layers are {}",
                    self.model_name(),
                    layers.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// Freezes or unfreezes every layer, as Keras' `model.trainable = ...` (see
    /// [`LayerRef::set_trainable`]).
    pub fn set_trainable(&self, trainable: bool) {
        for l in self.layers() {
            l.set_trainable(trainable);
        }
    }

    /// Creates the weights of every layer that has none yet. `compile`, `summary` and `fit`
    /// call it.
    ///
    /// # Errors
    /// No input shape, or a layer that does not fit its input: the error names the layer and
    /// both shapes.
    pub fn build(&self) -> Result<()> {
        self.lock().build()
    }

    /// The shape of each input, without the batch axis.
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn input_shapes(&self) -> Result<Vec<Vec<usize>>> {
        let mut inner = self.lock();
        inner.build()?;
        Ok(inner.graph.input_shapes().to_vec())
    }

    /// The shape of each output, without the batch axis.
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn output_shapes(&self) -> Result<Vec<Vec<usize>>> {
        let mut inner = self.lock();
        inner.build()?;
        Ok(inner.graph.output_shapes())
    }

    /// The model's input shape, without the batch axis (the first input's, for several).
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn input_shape(&self) -> Result<Vec<usize>> {
        Ok(self.input_shapes()?.swap_remove(0))
    }

    /// The model's output shape, without the batch axis (the first output's, for several).
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn output_shape(&self) -> Result<Vec<usize>> {
        Ok(self.output_shapes()?.swap_remove(0))
    }

    /// The number of weights (a shared layer's counted once).
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn count_params(&self) -> Result<usize> {
        let mut inner = self.lock();
        inner.build()?;
        Ok(inner.graph.layers().iter().map(|l| l.count_params()).sum())
    }

    /// Configures training: the optimizer (a typed one or Keras' name, e.g. `"rmsprop"`), the
    /// loss (one, or one per output: [`Losses`](crate::trainers::Losses), with Keras' `loss_weights`) and the metrics
    /// (one list for every output, or one per output).
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new().add(Dense::new(3).activation(Activation::Softmax).input_shape(4));
    /// model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    /// model.compile("adam", "sparse_categorical_crossentropy", &["accuracy"])?; // Keras' strings
    /// model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, ())?; // no metrics
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// An unknown optimizer name, a model that cannot be built, or a number of losses, loss
    /// weights or metric lists that is neither 1 nor the number of outputs.
    pub fn compile(
        &self,
        optimizer: impl IntoOptimizer,
        loss: impl IntoLosses,
        metrics: impl IntoMetrics,
    ) -> Result<()> {
        let optimizer = optimizer.into_optimizer()?;
        let (flat, names) = (metrics.is_flat(), metrics.output_names());
        let (loss, mut metrics) = (loss.into_losses()?, metrics.into_metrics());
        let mut inner = self.lock();
        inner.build()?;
        let outputs = inner.graph.output_names();
        let loss = loss.ordered_by(&outputs)?;
        if let Some(names) = names {
            // Keras' dict form: each output its own list, none for an output not named.
            if let Some(bad) = names.iter().find(|n| !outputs.contains(n)) {
                return Err(Error::invalid(
                    "metrics",
                    format!("{bad:?} is not an output of the model; its outputs are {outputs:?}"),
                ));
            }
            let mut by_name: Vec<(String, Vec<crate::metrics::MetricEntry>)> = names.into_iter().zip(metrics).collect();
            metrics = outputs
                .iter()
                .map(|o| by_name.iter().position(|(n, _)| n == o).map(|i| by_name.remove(i).1).unwrap_or_default())
                .collect();
        }
        let n = inner.graph.output_shapes().len();
        if flat && n > 1 && metrics.len() == 1 && metrics[0].len() == n {
            // Keras 3: a flat list as long as the outputs is one metric per output.
            metrics = metrics.remove(0).into_iter().map(|m| vec![m]).collect();
        }
        inner.compiled = Some(Compiled::new(optimizer, loss, metrics, &inner.graph.output_shapes())?);
        Ok(())
    }

    /// The compiled optimizer's learning rate.
    ///
    /// # Errors
    /// [`Error::NotCompiled`].
    pub fn learning_rate(&self) -> Result<f64> {
        let inner = self.lock();
        Ok(inner.compiled.as_ref().ok_or(Error::NotCompiled("learning_rate"))?.optimizer.learning_rate())
    }

    /// Changes the compiled optimizer's learning rate.
    ///
    /// # Errors
    /// [`Error::NotCompiled`].
    pub fn set_learning_rate(&self, lr: f64) -> Result<()> {
        let mut inner = self.lock();
        let c = inner.compiled.as_mut().ok_or(Error::NotCompiled("set_learning_rate"))?;
        crate::optimizers::set_learning_rate(c.optimizer.as_mut(), lr)
    }

    /// Trains on `x` (one array per input, each `(N, ...input_shape)`, any numeric type, cast
    /// to the model's) and targets `y` (one per output, as its loss expects: one-hot rows for
    /// categorical cross-entropy, class indices for the sparse one), as Keras' `fit`. History
    /// keys are Keras': `loss`, the metrics, and for several outputs `<output>_loss` and
    /// `<output>_<metric>`, where `<output>` is the name of the layer that makes the output.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// use candle_core::{Device, Tensor};
    /// let x = Tensor::new(&[[0f32, 0.], [0., 1.], [1., 0.], [1., 1.]], &Device::Cpu)?;
    /// let y = Tensor::new(&[0u32, 1, 1, 0], &Device::Cpu)?;
    /// let model = Sequential::new().seed(0)
    ///     .add(Dense::new(16).activation(Activation::Tanh).input_shape(2))
    ///     .add(Dense::new(2).activation(Activation::Softmax));
    /// model.compile(Adam::new(0.05), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy])?;
    /// let history = model.fit(&x, &y, FitOptions::default().batch_size(4).epochs(200).verbose(0))?;
    /// assert_eq!(history.get("accuracy").unwrap().last(), Some(&1.0));
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// Not compiled; `x` or `y` empty, of different lengths, of the wrong shape or count;
    /// labels that do not fit the loss; `batch_size` 0; `validation_split` outside `[0, 1)`;
    /// [`Error::NonFiniteLoss`] when a batch's loss is NaN or infinite (that batch's update is
    /// not applied; with a callback that stops training, such as
    /// [`crate::callbacks::TerminateOnNaN`], the run ends gracefully instead).
    pub fn fit<K>(&self, x: impl Arrays, y: impl Arrays, opts: FitOptions<'_, K>) -> Result<History> {
        crate::trainers::fit(self, TrainData::Arrays(x.into_arrays(), y.into_arrays()), opts)
    }

    /// Trains on batches from a generator (e.g. `ImageDataGenerator::flow`), as Keras'
    /// `fit_generator`: worker threads prepare batches into a bounded queue while the model
    /// trains. `fit` and `fit_generator` share one training loop.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// use kandle::models::GeneratorOptions;
    /// use kandle::preprocessing::image::ImageDataGenerator;
    /// let x = Tensor::rand(0f32, 1., (16, 8, 8, 1), &Device::Cpu)?;
    /// let y = to_categorical(&Tensor::from_vec((0..16u32).map(|i| i % 2).collect(), 16, &Device::Cpu)?, 2)?;
    /// let model = Sequential::new().seed(0)
    ///     .add(Flatten::new().input_shape((8, 8, 1)))
    ///     .add(Dense::new(2).activation(Activation::Softmax));
    /// model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    /// let datagen = ImageDataGenerator::new().width_shift_range(0.1).horizontal_flip(true);
    /// let history = model.fit_generator(datagen.flow(&x, &y, 4).seed(0),
    ///     GeneratorOptions::default().epochs(2).verbose(0).workers(2))?;
    /// assert_eq!(history.epoch, vec![0, 1]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// Not compiled, invalid generator parameters, batches that do not fit the model (a
    /// generator yields one input and one target: a model of several needs `fit`), an
    /// unreadable image; [`Error::NonFiniteLoss`] as [`Model::fit`].
    pub fn fit_generator<K>(&self, generator: impl BatchGenerator, opts: FitOptions<'_, K>) -> Result<History> {
        crate::trainers::fit(self, TrainData::Generator(&generator), opts)
    }

    /// The loss and metrics on `x`, `y`, in batches of `batch_size` (Keras' default is 32),
    /// with inference behaviour (no dropout).
    ///
    /// # Errors
    /// As [`Model::fit`].
    pub fn evaluate(&self, x: impl Arrays, y: impl Arrays, batch_size: usize) -> Result<Evaluation> {
        crate::trainers::evaluate(self, &x.into_arrays(), &y.into_arrays(), None, batch_size)
    }

    /// [`Model::evaluate`] with Keras' `sample_weight`: one weight per sample, `(N,)`, for the
    /// loss (the metrics are not weighted, as Keras' `metrics`).
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let x = Tensor::new(&[[0f32], [1.]], &Device::Cpu)?;
    /// let y = Tensor::new(&[[1f32], [1.]], &Device::Cpu)?;
    /// let model = Sequential::new().add(Dense::new(1).use_bias(false).input_shape(1));
    /// model.compile("sgd", Loss::MeanSquaredError, ())?;
    /// model.set_weights(&[Tensor::new(&[[0f32]], &Device::Cpu)?])?;
    /// // Both samples have a squared error of 1: weights (1, 0) give 1 / 2, as in Keras.
    /// let w = Tensor::new(&[1f32, 0.], &Device::Cpu)?;
    /// assert_eq!(model.evaluate_weighted(&x, &y, &w, 32)?.loss, 0.5);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Model::evaluate`]; weights of the wrong shape, negative or not finite.
    pub fn evaluate_weighted(
        &self,
        x: impl Arrays,
        y: impl Arrays,
        sample_weight: &Tensor,
        batch_size: usize,
    ) -> Result<Evaluation> {
        crate::trainers::evaluate(self, &x.into_arrays(), &y.into_arrays(), Some(sample_weight), batch_size)
    }

    /// The gradient of the compiled loss on one batch for each trainable weight, named as
    /// [`Model::named_weights`], computed by the pass `fit` uses (training behaviour: dropout
    /// on, batch statistics; no update is applied). For checking gradients and for custom
    /// training loops.
    ///
    /// # Errors
    /// As [`Model::fit`].
    pub fn compute_gradients(&self, x: impl Arrays, y: impl Arrays) -> Result<Vec<(String, Tensor)>> {
        let offset = crate::distribute::legacy_row_offset();
        crate::trainers::gradients(self, &x.into_arrays(), &y.into_arrays(), offset)
    }

    /// Where a training step's time goes, layer by layer: the forward and backward pass `fit`
    /// runs on the batch `(x, y)` (training behaviour; no update is applied), once to warm up,
    /// then `steps` times, each layer's mean time per step. Print it for a table like
    /// [`Model::summary`]'s. (Keras has no such call; TensorBoard's profiler shows the same.)
    ///
    /// ```
    /// use kandle::prelude::*;
    /// use candle_core::{Device, Tensor};
    /// let model = Sequential::new()
    ///     .add(Conv2D::new(8, (3, 3)).activation(Activation::Relu).input_shape((8, 8, 1)))
    ///     .add(Flatten::new())
    ///     .add(Dense::new(2).activation(Activation::Softmax));
    /// model.compile("rmsprop", Loss::CategoricalCrossentropy, ())?;
    /// let x = Tensor::rand(0f32, 1.0, (4, 8, 8, 1), &Device::Cpu)?;
    /// let y = to_categorical(&Tensor::new(&[0u32, 1, 1, 0], &Device::Cpu)?, 2)?;
    /// let profile = model.profile(&x, &y, 2)?;
    /// assert_eq!(profile.layers.len(), 3);
    /// assert_eq!(profile.layers[0].class_name, "Conv2D");
    /// println!("{profile}");
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Model::fit`]; `steps` 0.
    pub fn profile(&self, x: impl Arrays, y: impl Arrays, steps: usize) -> Result<crate::models::Profile> {
        crate::trainers::profile(self, &x.into_arrays(), &y.into_arrays(), steps)
    }

    /// The model's output for `x`, computed in batches of `batch_size` with inference
    /// behaviour, as Keras' `predict` (for a model of several outputs, see
    /// [`Model::predict_outputs`]).
    ///
    /// ```
    /// use kandle::prelude::*;
    /// use candle_core::{DType, Device, Tensor};
    /// let model = Sequential::new().add(Dense::new(3).activation(Activation::Softmax).input_shape(4));
    /// let p = model.predict(&Tensor::zeros((5, 4), DType::F32, &Device::Cpu)?, 32)?;
    /// assert_eq!(p.dims(), &[5, 3]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// `x` empty or of the wrong shape; `batch_size` 0; a model of several outputs.
    pub fn predict(&self, x: impl Arrays, batch_size: usize) -> Result<Tensor> {
        let mut outs = self.predict_outputs(x, batch_size)?;
        if outs.len() != 1 {
            return Err(Error::invalid(
                "predict",
                format!("the model has {} outputs: use predict_outputs, which returns one tensor each", outs.len()),
            ));
        }
        Ok(outs.remove(0))
    }

    /// Every output of the model for `x`, as Keras' `predict` on a model of several outputs.
    ///
    /// # Errors
    /// As [`Model::predict`].
    pub fn predict_outputs(&self, x: impl Arrays, batch_size: usize) -> Result<Vec<Tensor>> {
        crate::trainers::predict(self, &x.into_arrays(), batch_size)
    }

    /// The loss and metrics on the batches of a generator (e.g. `ImageDataGenerator::flow` or
    /// `flow_from_directory`), as Keras' `evaluate(generator, steps)`: `steps` batches, or
    /// (`None`) one pass over the generator. Inference behaviour, no augmentation other than
    /// the generator's own.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let x = Tensor::rand(0f32, 1., (10, 4, 4, 1), &Device::Cpu)?;
    /// let y = Tensor::new(&[0u32, 1, 0, 1, 0, 1, 0, 1, 0, 1], &Device::Cpu)?;
    /// let model = Sequential::new().add(Flatten::new().input_shape((4, 4, 1))).add(Dense::new(2).activation(Activation::Softmax));
    /// model.compile("sgd", Loss::SparseCategoricalCrossentropy, &["accuracy"])?;
    /// let flow = ImageDataGenerator::new().flow(&x, &y, 4).shuffle(false);
    /// let ev = model.evaluate_generator(&flow, None)?;
    /// assert!((ev.loss - model.evaluate(&x, &y, 4)?.loss).abs() < 1e-6);
    /// assert_eq!(model.predict_generator(&flow, None)?.dims(), &[10, 2]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// Not compiled; invalid generator parameters; batches that do not fit the model.
    pub fn evaluate_generator(&self, generator: impl BatchGenerator, steps: Option<usize>) -> Result<Evaluation> {
        crate::trainers::evaluate_generator(self, &generator, steps)
    }

    /// The model's output on the batches of a generator, as Keras' `predict(generator,
    /// steps)`: `steps` batches, or (`None`) one pass. The generator's targets are ignored.
    ///
    /// # Errors
    /// Invalid generator parameters; batches that do not fit the model; a model of several
    /// outputs or inputs.
    pub fn predict_generator(&self, generator: impl BatchGenerator, steps: Option<usize>) -> Result<Tensor> {
        generator.validate()?;
        let steps = steps.unwrap_or_else(|| generator.len());
        if steps == 0 {
            return Err(Error::invalid("steps", "expected a positive number of batches, received 0"));
        }
        let mut parts = Vec::with_capacity(steps);
        for i in 0..steps {
            let (x, _) = generator.batch(0, i % generator.len().max(1))?;
            parts.push(self.predict(&x, x.dims().first().copied().unwrap_or(1).max(1))?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Calls the model on one batch (one tensor per input), as Keras' `model(x, training=...)`;
    /// the first output (see [`Model::call_outputs`]).
    ///
    /// # Errors
    /// `x` of the wrong shape.
    pub fn call(&self, x: impl Arrays, training: bool) -> Result<Tensor> {
        Ok(self.call_outputs(x, training)?.remove(0))
    }

    /// Every output of [`Model::call`].
    ///
    /// # Errors
    /// As [`Model::call`].
    pub fn call_outputs(&self, x: impl Arrays, training: bool) -> Result<Vec<Tensor>> {
        crate::trainers::call(self, &x.into_arrays(), training)
    }

    /// All weights, layer by layer in Keras' order (`kernel`, `bias`), with their names
    /// (`conv2d/kernel`).
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn named_weights(&self) -> Result<Vec<(String, Var)>> {
        let mut inner = self.lock();
        inner.build()?;
        Ok(inner.graph.named_weights_keras())
    }

    /// Copies of all weights, as Keras' `get_weights`.
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn get_weights(&self) -> Result<Vec<Tensor>> {
        self.named_weights()?.into_iter().map(|(_, v)| v.as_tensor().copy().map_err(Error::from)).collect()
    }

    /// Replaces all weights, as Keras' `set_weights`; nothing changes unless every tensor fits.
    ///
    /// # Errors
    /// A wrong number of tensors or a tensor of the wrong shape: the error names the weight and
    /// both shapes.
    pub fn set_weights(&self, weights: &[Tensor]) -> Result<()> {
        let mut inner = self.lock();
        inner.build()?;
        inner.graph.set_weights(weights)
    }
}
