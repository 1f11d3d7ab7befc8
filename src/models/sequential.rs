use super::history::History;
use super::summary::{self, Row};
use crate::callbacks::{Callback, Control, Logs};
use crate::layers::{BuildContext, IntoLayer, Layer};
use crate::losses::{Loss, Output};
use crate::metrics::Metric;
use crate::optimizers::{IntoOptimizer, Optimizer};
use crate::preprocessing::image::BatchGenerator;
use crate::utils::Progbar;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A linear stack of layers, as `keras.Sequential`.
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
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Clone)]
pub struct Sequential {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Sequential").field("layers", &inner.layers).field("seed", &inner.seed).finish()
    }
}

pub(crate) struct Compiled {
    pub(crate) optimizer: Box<dyn Optimizer>,
    pub(crate) loss: Loss,
    pub(crate) metrics: Vec<Metric>,
}

pub(crate) struct Inner {
    name: String,
    pub(crate) layers: Vec<Box<dyn Layer>>,
    names: HashMap<String, usize>,
    /// Input shape, then each layer's output shape, once built.
    pub(crate) shapes: Option<Vec<Vec<usize>>>,
    seed: u64,
    pub(crate) device: Device,
    pub(crate) dtype: DType,
    pub(crate) compiled: Option<Compiled>,
    /// Values the weights may take in all when built (bounded by `load_model`).
    pub(crate) weight_budget: usize,
}

/// What a callback can see and change during training: the learning rate and the weights, and
/// saving the model. (The model itself is locked while it trains.)
pub struct TrainingContext<'a> {
    inner: &'a mut Inner,
    /// Where a run saved now would resume: `(epoch, step)`.
    epoch: usize,
    step: usize,
    resume: Option<(usize, usize)>,
}

impl TrainingContext<'_> {
    /// Where a run saved now would resume: `(epoch, first batch to run)`.
    pub fn position(&self) -> (usize, usize) {
        (self.epoch, self.step)
    }
    /// From `on_train_begin`: resume the run at `(epoch, step)` (after loading its state).
    pub fn resume_at(&mut self, epoch: usize, step: usize) {
        self.resume = Some((epoch, step));
    }
    /// Saves the full training state with its position, for [`crate::callbacks::BackupAndRestore`].
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_backup(&mut self, path: &std::path::Path) -> Result<()> {
        let (e, s) = (self.epoch, self.step);
        self.inner.save_to_with(path, &[("resume_epoch", e.to_string()), ("resume_step", s.to_string())])
    }
    /// Loads a backup written by [`TrainingContext::save_backup`] and returns its position.
    ///
    /// # Errors
    /// A missing, corrupt or foreign file; nothing is loaded then.
    pub fn load_backup(&mut self, path: &std::path::Path) -> Result<(usize, usize)> {
        let meta = self.inner.load_from(path)?;
        let get = |k: &str| meta.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((get("resume_epoch"), get("resume_step")))
    }
    /// The optimizer's learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.inner.compiled.as_ref().map(|c| c.optimizer.learning_rate()).unwrap_or(0.0)
    }
    /// Changes the optimizer's learning rate.
    pub fn set_learning_rate(&mut self, lr: f64) {
        if let Some(c) = self.inner.compiled.as_mut() {
            c.optimizer.set_learning_rate(lr);
        }
    }
    /// Copies of the weights, as `Sequential::get_weights`.
    ///
    /// # Errors
    /// If candle cannot copy them.
    pub fn get_weights(&mut self) -> Result<Vec<Tensor>> {
        self.inner.named_weight_vars()?.into_iter().map(|(_, v)| v.as_tensor().copy().map_err(Error::from)).collect()
    }
    /// Replaces the weights, as `Sequential::set_weights`.
    ///
    /// # Errors
    /// A wrong number or shape of tensors.
    pub fn set_weights(&mut self, weights: &[Tensor]) -> Result<()> {
        self.inner.set_weights(weights)
    }
    /// Saves the weights, as `Sequential::save_weights`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.inner.save_weights_to(path.as_ref())
    }
    /// Saves weights and training state, as `Sequential::save`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.inner.save_to(path.as_ref())
    }
}

/// Options of [`Sequential::fit`], with Keras' defaults.
///
/// ```
/// use kandle::models::FitOptions;
/// let opts = FitOptions::default().batch_size(256).epochs(10).validation_split(0.1).seed(0);
/// # let _ = opts;
/// ```
pub struct FitOptions<'a> {
    batch_size: usize,
    epochs: usize,
    verbose: u8,
    shuffle: bool,
    validation_data: Option<(&'a Tensor, &'a Tensor)>,
    validation_split: f64,
    validation_batch_size: Option<usize>,
    initial_epoch: usize,
    steps_per_epoch: Option<usize>,
    seed: Option<u64>,
    callbacks: Vec<Box<dyn Callback>>,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions {
            batch_size: 32,
            epochs: 1,
            verbose: 1,
            shuffle: true,
            validation_data: None,
            validation_split: 0.0,
            validation_batch_size: None,
            initial_epoch: 0,
            steps_per_epoch: None,
            seed: None,
            callbacks: Vec::new(),
        }
    }
}

impl<'a> FitOptions<'a> {
    /// Samples per gradient step (default 32).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// The epoch to stop after, counting from 0 (default 1; with `initial_epoch`, the run
    /// trains `epochs - initial_epoch` epochs, as in Keras).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }
    /// 0 silent, 1 a progress bar per epoch (default), 2 one line per epoch.
    pub fn verbose(mut self, verbose: u8) -> Self {
        self.verbose = verbose;
        self
    }
    /// Reshuffle the training samples before each epoch (default true).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    /// Data to evaluate on at the end of each epoch.
    pub fn validation_data(mut self, x: &'a Tensor, y: &'a Tensor) -> Self {
        self.validation_data = Some((x, y));
        self
    }
    /// Fraction of the training data, taken from its end before shuffling as Keras does, to
    /// hold out for validation (default 0).
    pub fn validation_split(mut self, split: f64) -> Self {
        self.validation_split = split;
        self
    }
    /// Batch size of the validation pass (default: `batch_size`).
    pub fn validation_batch_size(mut self, batch_size: usize) -> Self {
        self.validation_batch_size = Some(batch_size);
        self
    }
    /// The epoch to start from, to resume a run (default 0).
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }
    /// Gradient steps per epoch (default: `ceil(samples / batch_size)`).
    pub fn steps_per_epoch(mut self, steps: usize) -> Self {
        self.steps_per_epoch = Some(steps);
        self
    }
    /// Seed of the shuffling (default: the model's seed); with the model's seed fixed too, a
    /// run is reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Adds a callback (Keras' `callbacks=[...]`), called in the order added.
    pub fn callback(mut self, cb: impl Callback + 'static) -> Self {
        self.callbacks.push(Box::new(cb));
        self
    }
}

/// Options of [`Sequential::fit_generator`], with Keras' defaults.
///
/// ```
/// use kandle::models::GeneratorOptions;
/// let opts = GeneratorOptions::default().epochs(10).workers(2).max_queue_size(10);
/// # let _ = opts;
/// ```
pub struct GeneratorOptions<'a> {
    steps_per_epoch: Option<usize>,
    epochs: usize,
    verbose: u8,
    validation_data: Option<(&'a Tensor, &'a Tensor)>,
    validation_generator: Option<Arc<dyn BatchGenerator>>,
    validation_steps: Option<usize>,
    validation_batch_size: usize,
    workers: usize,
    max_queue_size: usize,
    initial_epoch: usize,
    callbacks: Vec<Box<dyn Callback>>,
}

impl Default for GeneratorOptions<'_> {
    fn default() -> Self {
        GeneratorOptions {
            steps_per_epoch: None,
            epochs: 1,
            verbose: 1,
            validation_data: None,
            validation_generator: None,
            validation_steps: None,
            validation_batch_size: 32,
            workers: 1,
            max_queue_size: 10,
            initial_epoch: 0,
            callbacks: Vec::new(),
        }
    }
}

impl<'a> GeneratorOptions<'a> {
    /// Batches per epoch (default: the generator's `len()`, `ceil(samples / batch_size)`).
    pub fn steps_per_epoch(mut self, steps: usize) -> Self {
        self.steps_per_epoch = Some(steps);
        self
    }
    /// The epoch to stop after (default 1).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }
    /// 0 silent, 1 progress bar (default), 2 one line per epoch.
    pub fn verbose(mut self, verbose: u8) -> Self {
        self.verbose = verbose;
        self
    }
    /// In-memory validation data, evaluated at the end of each epoch.
    pub fn validation_data(mut self, x: &'a Tensor, y: &'a Tensor) -> Self {
        self.validation_data = Some((x, y));
        self
    }
    /// Batch size of the in-memory validation pass (default 32).
    pub fn validation_batch_size(mut self, n: usize) -> Self {
        self.validation_batch_size = n;
        self
    }
    /// A generator of validation batches (its epoch 0, without shuffling concerns).
    pub fn validation_generator(mut self, gen: impl BatchGenerator + 'static) -> Self {
        self.validation_generator = Some(Arc::new(gen));
        self
    }
    /// Batches of the validation generator per evaluation (default: its `len()`).
    pub fn validation_steps(mut self, steps: usize) -> Self {
        self.validation_steps = Some(steps);
        self
    }
    /// Threads preparing batches ahead of training (default 1; 0 prepares them inline).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
    /// Batches waiting in the queue at most (default 10).
    pub fn max_queue_size(mut self, n: usize) -> Self {
        self.max_queue_size = n;
        self
    }
    /// The epoch to start from, to resume (default 0).
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }
    /// Adds a callback (Keras' `callbacks=[...]`), called in the order added.
    pub fn callback(mut self, cb: impl Callback + 'static) -> Self {
        self.callbacks.push(Box::new(cb));
        self
    }
}

/// What [`Sequential::evaluate`] returns: the loss and each metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The mean loss.
    pub loss: f64,
    /// `(name, value)` of each compiled metric.
    pub metrics: Vec<(String, f64)>,
}

impl Evaluation {
    /// A metric's value by name (`"accuracy"`), or the loss for `"loss"`.
    pub fn get(&self, name: &str) -> Option<f64> {
        if name == "loss" {
            return Some(self.loss);
        }
        self.metrics.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// The accuracy, if it was compiled as a metric.
    pub fn accuracy(&self) -> Option<f64> {
        self.get("accuracy")
    }
}

/// Keras' `to_snake_case`: `MaxPooling2D` -> `max_pooling2d`.
fn snake_case(name: &str) -> String {
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

impl Default for Sequential {
    fn default() -> Self {
        Self::new()
    }
}

/// Prepared data: inputs of the model's dtype on its device, targets prepared by the loss.
struct Data {
    x: Tensor,
    y: Tensor,
}

impl Data {
    fn len(&self) -> usize {
        self.x.dims()[0]
    }
}

impl Sequential {
    /// An empty model (seeded from the system's entropy; see [`Sequential::seed`]).
    pub fn new() -> Self {
        Sequential {
            inner: Arc::new(Mutex::new(Inner {
                name: "sequential".into(),
                layers: Vec::new(),
                names: HashMap::new(),
                shapes: None,
                seed: rand::random(),
                device: Device::Cpu,
                dtype: DType::F32,
                compiled: None,
                weight_budget: usize::MAX,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a layer (an [`Activation`](crate::activations::Activation) adds an
    /// `Activation` layer). Unnamed layers are named as Keras does: `conv2d`, `conv2d_1` ...
    pub fn add(&self, layer: impl IntoLayer) -> Sequential {
        let mut layer = layer.into_layer();
        let mut inner = self.lock();
        let base = match layer.name() {
            Some(n) => n.to_string(),
            None => snake_case(layer.class_name()),
        };
        let count = inner.names.entry(base.clone()).or_insert(0);
        if layer.name().is_none() {
            layer.set_name(if *count == 0 { base } else { format!("{base}_{count}") });
        }
        *count += 1;
        inner.layers.push(layer);
        inner.shapes = None;
        drop(inner);
        self.clone()
    }

    /// Fixes the seed of weight initialisation, dropout masks and shuffling, so that a run is
    /// reproducible. Takes effect when the model is built.
    pub fn seed(&self, seed: u64) -> Sequential {
        self.lock().seed = seed;
        self.clone()
    }

    /// The device to build the weights on (default CPU).
    pub fn device(&self, device: Device) -> Sequential {
        self.lock().device = device;
        self.clone()
    }

    /// The weights' element type (default `F32`; `F64` for gradient checks).
    pub fn dtype(&self, dtype: DType) -> Sequential {
        self.lock().dtype = dtype;
        self.clone()
    }

    /// The model's name (default `"sequential"`).
    pub fn name(&self, name: impl Into<String>) -> Sequential {
        self.lock().name = name.into();
        self.clone()
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.lock().layers.len()
    }

    /// Whether the model has no layer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The layers' names, in order.
    pub fn layer_names(&self) -> Vec<String> {
        self.lock().layers.iter().map(|l| l.name().unwrap_or_default().to_string()).collect()
    }

    /// Creates the weights of every layer that has none yet, from the input shape declared on
    /// the first layer. `compile`, `summary` and `fit` call it.
    ///
    /// # Errors
    /// No input shape, or a layer that does not fit its input: the error names the layer and
    /// both shapes.
    pub fn build(&self) -> Result<()> {
        self.lock().build()
    }

    /// The model's output shape, without the batch axis.
    ///
    /// # Errors
    /// As [`Sequential::build`].
    pub fn output_shape(&self) -> Result<Vec<usize>> {
        let mut inner = self.lock();
        inner.build()?;
        Ok(inner.shapes.as_ref().and_then(|s| s.last().cloned()).unwrap_or_default())
    }

    /// The model's input shape, without the batch axis.
    ///
    /// # Errors
    /// As [`Sequential::build`].
    pub fn input_shape(&self) -> Result<Vec<usize>> {
        let mut inner = self.lock();
        inner.build()?;
        Ok(inner.shapes.as_ref().map(|s| s[0].clone()).unwrap_or_default())
    }

    /// The number of weights.
    ///
    /// # Errors
    /// As [`Sequential::build`].
    pub fn count_params(&self) -> Result<usize> {
        let mut inner = self.lock();
        inner.build()?;
        Ok(inner.layers.iter().flat_map(|l| l.weights()).map(|w| w.var.elem_count()).sum())
    }

    /// The summary table, as Keras' `model.summary()` prints it.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new().add(Dense::new(10).input_shape(784));
    /// let table = model.summary_string()?;
    /// assert!(table.contains("│ dense (Dense)                   │ (None, 10)             │         7,850 │"));
    /// assert!(table.contains("Total params: 7,850 (30.66 KB)"));
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Sequential::build`].
    pub fn summary_string(&self) -> Result<String> {
        let mut inner = self.lock();
        inner.build()?;
        let shapes = inner.shapes.clone().unwrap_or_default();
        let mut rows = Vec::new();
        let (mut trainable, mut frozen) = (0, 0);
        for (i, l) in inner.layers.iter().enumerate() {
            let mut params = 0;
            for w in l.weights() {
                params += w.var.elem_count();
                if w.trainable {
                    trainable += w.var.elem_count();
                } else {
                    frozen += w.var.elem_count();
                }
            }
            rows.push(Row {
                label: format!("{} ({})", l.name().unwrap_or_default(), l.class_name()),
                shape: shapes[i + 1].clone(),
                params,
            });
        }
        Ok(summary::render(&inner.name, &rows, trainable, frozen, inner.dtype.size_in_bytes()))
    }

    /// Prints [`Sequential::summary_string`].
    ///
    /// # Errors
    /// As [`Sequential::build`].
    pub fn summary(&self) -> Result<()> {
        print!("{}", self.summary_string()?);
        Ok(())
    }

    /// Configures training: the optimizer (a typed one or Keras' name, e.g. `"rmsprop"`), the
    /// loss and the metrics.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let mut model = Sequential::new().add(Dense::new(3).activation(Activation::Softmax).input_shape(4));
    /// model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    /// model.compile("adam", "sparse_categorical_crossentropy".parse()?, &["accuracy".parse()?])?;
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// An unknown optimizer name, or a model that cannot be built.
    pub fn compile(&mut self, optimizer: impl IntoOptimizer, loss: Loss, metrics: &[Metric]) -> Result<()> {
        let optimizer = optimizer.into_optimizer()?;
        let mut inner = self.lock();
        inner.build()?;
        inner.compiled = Some(Compiled { optimizer, loss, metrics: metrics.to_vec() });
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
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        let mut inner = self.lock();
        inner.compiled.as_mut().ok_or(Error::NotCompiled("set_learning_rate"))?.optimizer.set_learning_rate(lr);
        Ok(())
    }

    /// Trains on `x` (`(N, ...input_shape)`, any numeric type, cast to the model's) and
    /// targets `y` (as the loss expects: one-hot rows for categorical cross-entropy, class
    /// indices for the sparse one), as Keras' `fit`.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// use candle_core::{Device, Tensor};
    /// let x = Tensor::new(&[[0f32, 0.], [0., 1.], [1., 0.], [1., 1.]], &Device::Cpu)?;
    /// let y = Tensor::new(&[0u32, 1, 1, 0], &Device::Cpu)?;
    /// let mut model = Sequential::new().seed(0)
    ///     .add(Dense::new(16).activation(Activation::Tanh).input_shape(2))
    ///     .add(Dense::new(2).activation(Activation::Softmax));
    /// model.compile(Adam::new(0.05), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy])?;
    /// let history = model.fit(&x, &y, FitOptions::default().batch_size(4).epochs(200).verbose(0))?;
    /// assert_eq!(history.get("accuracy").unwrap().last(), Some(&1.0));
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// Not compiled; `x` or `y` empty, of different lengths or of the wrong shape; labels that
    /// do not fit the loss; `batch_size` 0; `validation_split` outside `[0, 1)`;
    /// [`Error::NonFiniteLoss`] when a batch's loss is NaN or infinite (that batch's update is
    /// not applied; with a callback that stops training, such as
    /// [`crate::callbacks::TerminateOnNaN`], the run ends gracefully instead).
    pub fn fit(&mut self, x: &Tensor, y: &Tensor, opts: FitOptions) -> Result<History> {
        crate::utils::tune_allocator();
        let mut inner = self.lock();
        if inner.compiled.is_none() {
            return Err(Error::NotCompiled("fit"));
        }
        if opts.batch_size == 0 {
            return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
        }
        if !(0.0..1.0).contains(&opts.validation_split) {
            return Err(Error::invalid(
                "validation_split",
                format!("expected a fraction in [0, 1), received {}", opts.validation_split),
            ));
        }
        let data = inner.prepare(x, y, "x", "y")?;
        let (train, split_val) = if opts.validation_split > 0.0 {
            let n = data.len();
            let n_val = ((n as f64) * opts.validation_split).round() as usize;
            if n_val == 0 || n_val >= n {
                return Err(Error::invalid(
                    "validation_split",
                    format!(
                        "{} of {n} samples leaves {n_val} for validation and {} for training; both need at least one",
                        opts.validation_split,
                        n - n_val
                    ),
                ));
            }
            let cut = n - n_val;
            (
                Data { x: data.x.narrow(0, 0, cut)?, y: data.y.narrow(0, 0, cut)? },
                Some(Data { x: data.x.narrow(0, cut, n_val)?, y: data.y.narrow(0, cut, n_val)? }),
            )
        } else {
            (data, None)
        };
        let validation = match (split_val, opts.validation_data) {
            (Some(v), _) => Some(v),
            (None, Some((vx, vy))) => Some(inner.prepare(vx, vy, "validation_data.x", "validation_data.y")?),
            (None, None) => None,
        };
        let n = train.len();
        let steps = opts.steps_per_epoch.unwrap_or_else(|| n.div_ceil(opts.batch_size));
        let seed = opts.seed.unwrap_or(inner.seed);
        let mut batches = ArrayBatches::new(train, opts.batch_size, opts.shuffle, seed);
        let cfg = LoopConfig {
            epochs: opts.epochs,
            initial_epoch: opts.initial_epoch,
            steps_per_epoch: steps,
            verbose: opts.verbose,
            validation: validation.map(|v| Validation::Data(v, opts.validation_batch_size.unwrap_or(opts.batch_size))),
            callbacks: opts.callbacks,
        };
        inner.train_loop(&mut |e, s| batches.batch(e, s), cfg)
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
    /// let mut model = Sequential::new().seed(0)
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
    /// Not compiled, invalid generator parameters, batches that do not fit the model, an
    /// unreadable image; [`Error::NonFiniteLoss`] as [`Sequential::fit`].
    pub fn fit_generator(
        &mut self,
        generator: impl BatchGenerator + 'static,
        opts: GeneratorOptions,
    ) -> Result<History> {
        crate::utils::tune_allocator();
        let mut inner = self.lock();
        if inner.compiled.is_none() {
            return Err(Error::NotCompiled("fit_generator"));
        }
        inner.build()?;
        generator.validate()?;
        let gen: Arc<dyn BatchGenerator> = Arc::new(generator);
        let steps = opts.steps_per_epoch.unwrap_or_else(|| gen.len());
        if steps == 0 {
            return Err(Error::invalid("steps_per_epoch", "expected a positive number of batches, received 0"));
        }
        if opts.validation_batch_size == 0 {
            return Err(Error::invalid("validation_batch_size", "expected a positive number, received 0"));
        }
        let validation = match (opts.validation_data, &opts.validation_generator) {
            (Some((vx, vy)), _) => Some(Validation::Data(
                inner.prepare(vx, vy, "validation_data.x", "validation_data.y")?,
                opts.validation_batch_size,
            )),
            (None, Some(g)) => {
                g.validate()?;
                Some(Validation::Generator(g.clone(), opts.validation_steps.unwrap_or_else(|| g.len())))
            }
            (None, None) => None,
        };
        let first = opts.initial_epoch * steps;
        let end = opts.epochs.max(opts.initial_epoch) * steps;
        let mut prefetch = super::prefetch::Prefetcher::new(gen, first, end, opts.workers, opts.max_queue_size);
        let cfg = LoopConfig {
            epochs: opts.epochs,
            initial_epoch: opts.initial_epoch,
            steps_per_epoch: steps,
            verbose: opts.verbose,
            validation,
            callbacks: opts.callbacks,
        };
        inner.train_loop(&mut |e, s| prefetch.get(e * steps + s), cfg)
    }

    /// The loss and metrics on `x`, `y`, in batches of `batch_size` (Keras' default is 32),
    /// with inference behaviour (no dropout).
    ///
    /// # Errors
    /// As [`Sequential::fit`].
    pub fn evaluate(&mut self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Evaluation> {
        crate::utils::tune_allocator();
        let mut inner = self.lock();
        if inner.compiled.is_none() {
            return Err(Error::NotCompiled("evaluate"));
        }
        if batch_size == 0 {
            return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
        }
        let data = inner.prepare(x, y, "x", "y")?;
        inner.evaluate(&data, batch_size)
    }

    /// The model's outputs for `x`, computed in batches of `batch_size` with inference
    /// behaviour, as Keras' `predict`.
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
    /// `x` empty or of the wrong shape; `batch_size` 0.
    pub fn predict(&self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        crate::utils::tune_allocator();
        let mut inner = self.lock();
        inner.build()?;
        if batch_size == 0 {
            return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
        }
        let x = inner.prepare_x(x, "x")?;
        let n = x.dims()[0];
        let mut outs = Vec::with_capacity(n.div_ceil(batch_size));
        for start in (0..n).step_by(batch_size) {
            let xb = x.narrow(0, start, batch_size.min(n - start))?;
            outs.push(inner.forward(&xb, false)?.detach());
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// Calls the model on one batch, as Keras' `model(x, training=...)`.
    ///
    /// # Errors
    /// `x` of the wrong shape.
    pub fn call(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let mut inner = self.lock();
        inner.build()?;
        let x = inner.prepare_x(x, "x")?;
        inner.forward(&x, training)
    }

    /// All weights, layer by layer in Keras' order (`kernel`, `bias`), with their names
    /// (`conv2d/kernel`).
    ///
    /// # Errors
    /// As [`Sequential::build`].
    pub fn named_weights(&self) -> Result<Vec<(String, Var)>> {
        self.lock().named_weight_vars()
    }

    /// Copies of all weights, as Keras' `get_weights`.
    ///
    /// # Errors
    /// As [`Sequential::build`].
    pub fn get_weights(&self) -> Result<Vec<Tensor>> {
        self.named_weights()?.into_iter().map(|(_, v)| v.as_tensor().copy().map_err(Error::from)).collect()
    }

    /// Replaces all weights, as Keras' `set_weights`; nothing changes unless every tensor fits.
    ///
    /// # Errors
    /// A wrong number of tensors or a tensor of the wrong shape: the error names the weight and
    /// both shapes.
    pub fn set_weights(&self, weights: &[Tensor]) -> Result<()> {
        self.lock().set_weights(weights)
    }

    /// Saves the weights to a safetensors file with one tensor per weight, named
    /// `layer/kernel` and `layer/bias` (Keras' `save_weights`). The file is written to a
    /// temporary name and renamed into place.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_weights(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.lock().save_weights_to(path.as_ref())
    }

    /// Loads weights saved by [`Sequential::save_weights`] (or [`Sequential::save`]). Every
    /// tensor's name and shape is checked before any weight changes.
    ///
    /// # Errors
    /// A missing, truncated or corrupt file; a missing tensor or a tensor of another shape
    /// (the error names it and both shapes).
    pub fn load_weights(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.lock().load_weights_from(path.as_ref())
    }

    /// Saves everything a resumed run needs: the weights, the optimizer's state (slots, step
    /// count, learning rate), the dropout counters, and a description of the architecture,
    /// in one safetensors file written atomically.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let mut model = Sequential::new().seed(0).add(Dense::new(2).input_shape(3));
    /// model.compile(RMSprop::default(), Loss::MeanSquaredError, &[])?;
    /// let path = std::env::temp_dir().join("kandle-doc-save.kandle");
    /// model.save(&path)?;
    /// let mut copy = Sequential::new().seed(1).add(Dense::new(2).input_shape(3));
    /// copy.compile(RMSprop::default(), Loss::MeanSquaredError, &[])?;
    /// copy.load(&path)?;
    /// assert_eq!(copy.get_weights()?[0].to_vec2::<f32>()?, model.get_weights()?[0].to_vec2::<f32>()?);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.lock().save_to(path.as_ref())
    }

    /// Loads a file written by [`Sequential::save`] into this model, which must have the same
    /// architecture; with the optimizer state restored, `fit(.., initial_epoch)` continues the
    /// run. Nothing changes unless the whole file fits.
    ///
    /// # Errors
    /// A missing or corrupt file, another architecture, a tensor of another shape.
    pub fn load(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.lock().load_from(path.as_ref()).map(|_| ())
    }
}

impl Inner {
    pub(crate) fn set_weights(&mut self, weights: &[Tensor]) -> Result<()> {
        let named = self.named_weight_vars()?;
        if named.len() != weights.len() {
            return Err(Error::invalid(
                "weights",
                format!("expected {} tensors, received {}", named.len(), weights.len()),
            ));
        }
        for ((name, var), w) in named.iter().zip(weights) {
            if var.dims() != w.dims() {
                return Err(Error::Shape {
                    context: format!("weight {name}"),
                    expected: format!("{:?}", var.dims()),
                    received: format!("{:?}", w.dims()),
                });
            }
        }
        for ((_, var), w) in named.iter().zip(weights) {
            var.set(&w.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

enum Validation {
    Data(Data, usize),
    Generator(Arc<dyn BatchGenerator>, usize),
}

struct LoopConfig {
    epochs: usize,
    initial_epoch: usize,
    steps_per_epoch: usize,
    verbose: u8,
    validation: Option<Validation>,
    callbacks: Vec<Box<dyn Callback>>,
}

/// Batches of in-memory data, reshuffled each epoch with a permutation that depends only on
/// the seed and the epoch, so that any batch can be produced again (a resumed run sees the
/// same batches).
struct ArrayBatches {
    data: Data,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    order: Option<(usize, Tensor)>,
}

impl ArrayBatches {
    fn new(data: Data, batch_size: usize, shuffle: bool, seed: u64) -> Self {
        ArrayBatches { data, batch_size, shuffle, seed, order: None }
    }

    /// Batch `step` of `epoch` (steps past the data wrap around within the epoch's order).
    fn batch(&mut self, epoch: usize, step: usize) -> Result<(Tensor, Tensor)> {
        let n = self.data.len();
        let start = (step % n.div_ceil(self.batch_size)) * self.batch_size;
        let len = self.batch_size.min(n - start);
        if !self.shuffle {
            return Ok((self.data.x.narrow(0, start, len)?, self.data.y.narrow(0, start, len)?));
        }
        if self.order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut idx: Vec<u32> = (0..n as u32).collect();
            let mut rng = StdRng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            idx.shuffle(&mut rng);
            self.order = Some((epoch, Tensor::from_vec(idx, n, self.data.x.device())?));
        }
        let idx = self.order.as_ref().expect("order").1.narrow(0, start, len)?;
        Ok((self.data.x.index_select(&idx, 0)?, self.data.y.index_select(&idx, 0)?))
    }
}

impl Inner {
    pub(crate) fn build(&mut self) -> Result<()> {
        if self.shapes.is_some() {
            return Ok(());
        }
        let first = self
            .layers
            .first()
            .ok_or_else(|| Error::invalid("layers", "the model has no layer: add one with `add`"))?;
        let input = first.declared_input_shape().map(|s| s.to_vec()).ok_or_else(|| {
            Error::invalid(
                "input_shape",
                format!(
                    "the first layer, {} ({}), needs an input shape: add `.input_shape((h, w, c))` to it",
                    first.name().unwrap_or_default(),
                    first.class_name()
                ),
            )
        })?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut shapes = vec![input.clone()];
        let mut shape = input;
        let mut budget = self.weight_budget;
        for layer in self.layers.iter_mut() {
            shape = if layer.built() {
                layer.compute_output_shape(&shape)?
            } else {
                let mut ctx = BuildContext { dtype: self.dtype, device: &self.device, rng: &mut rng, budget };
                let out = layer.build(&shape, &mut ctx)?;
                budget = ctx.budget;
                out
            };
            shapes.push(shape.clone());
        }
        self.shapes = Some(shapes);
        Ok(())
    }

    fn input_shape(&self) -> &[usize] {
        &self.shapes.as_ref().expect("built")[0]
    }

    fn output_shape(&self) -> &[usize] {
        self.shapes.as_ref().expect("built").last().expect("input shape")
    }

    fn prepare_x(&self, x: &Tensor, name: &'static str) -> Result<Tensor> {
        let dims = x.dims();
        if dims.is_empty() || &dims[1..] != self.input_shape() {
            return Err(Error::Shape {
                context: format!("input `{name}` of model \"{}\"", self.name),
                expected: crate::error::fmt_shape(true, self.input_shape()),
                received: format!("{dims:?}"),
            });
        }
        if dims[0] == 0 {
            return Err(Error::invalid(name, "expected at least one sample, received an empty tensor"));
        }
        Ok(x.to_device(&self.device)?.to_dtype(self.dtype)?)
    }

    fn prepare(&mut self, x: &Tensor, y: &Tensor, xname: &'static str, yname: &'static str) -> Result<Data> {
        self.build()?;
        let loss = self.compiled.as_ref().ok_or(Error::NotCompiled("fit"))?.loss;
        let xs = self.prepare_x(x, xname)?;
        let ny = y.dims().first().copied().unwrap_or(0);
        if ny != xs.dims()[0] {
            return Err(Error::invalid(
                yname,
                format!("expected as many samples as `{xname}` ({}), received {ny}", xs.dims()[0]),
            ));
        }
        let ys = loss.prepare_targets(&y.to_device(&self.device)?, self.output_shape(), self.dtype)?;
        Ok(Data { x: xs, y: ys })
    }

    /// Whether every layer computes its own gradients (see [`Layer::has_backward`]), so that a
    /// training step can skip candle's autograd. Only with every weight trainable: frozen
    /// weights are left to the autograd path.
    fn own_backward(&self) -> bool {
        let Some(c) = self.compiled.as_ref() else { return false };
        let last = self.layers.len().saturating_sub(1);
        let fused = self.layers.last().is_some_and(|l| c.loss.fuses_with(l.activation()));
        self.device.is_cpu()
            && std::env::var_os("KANDLE_AUTOGRAD").is_none()
            && self
                .layers
                .iter()
                .enumerate()
                .all(|(i, l)| l.has_backward(i == last && fused) && l.weights().iter().all(|w| w.trainable))
    }

    /// The training forward pass of [`Inner::own_backward`]: the output as the loss wants it
    /// (logits, detached, as a leaf variable) and what each layer saved.
    fn forward_saved(&self, x: &Tensor, loss: Loss) -> Result<(Output, Vec<crate::layers::Saved>)> {
        let last = self.layers.len() - 1;
        let fused = loss.fuses_with(self.layers[last].activation());
        let mut saved = Vec::with_capacity(self.layers.len());
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, s) = layer.forward_saved(&h, i == last && fused)?;
            saved.push(s);
            h = y;
        }
        let leaf = Var::from_tensor(&h)?.as_tensor().clone();
        Ok((if fused { Output::Logits(leaf, self.layers[last].activation()) } else { Output::Values(leaf) }, saved))
    }

    /// The gradients of every trainable weight, in [`Inner::trainable_vars`] order, from the
    /// loss `l` of [`Inner::forward_saved`]'s output: candle's autograd for the loss alone,
    /// then each layer's own backward pass.
    fn backward_saved(
        &self,
        l: &Tensor,
        out: &Output,
        saved: Vec<crate::layers::Saved>,
    ) -> Result<Vec<Option<Tensor>>> {
        let leaf = match out {
            Output::Values(t) | Output::Logits(t, _) => t,
        };
        let mut dy =
            l.backward()?.get(leaf).cloned().ok_or_else(|| Error::invalid("loss", "no gradient reaches the output"))?;
        let mut per_layer = vec![Vec::new(); self.layers.len()];
        for (i, (layer, s)) in self.layers.iter().zip(&saved).enumerate().rev() {
            let (dx, grads) = layer.backward(s, &dy, i > 0)?;
            per_layer[i] = grads;
            if let Some(dx) = dx {
                dy = dx;
            }
        }
        Ok(per_layer.into_iter().flatten().map(Some).collect())
    }

    fn trainable_vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(|l| l.weights()).filter(|w| w.trainable).map(|w| w.var).collect()
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h, train)?;
        }
        Ok(h)
    }

    /// The output as the loss wants it: logits when the last layer's activation fuses.
    fn forward_output(&self, x: &Tensor, train: bool, loss: Loss) -> Result<Output> {
        let (last, rest) = self.layers.split_last().expect("built model has layers");
        let mut h = x.clone();
        for layer in rest {
            h = layer.forward(&h, train)?;
        }
        let act = last.activation();
        Ok(if loss.fuses_with(act) {
            Output::Logits(last.forward_pre_activation(&h, train)?, act)
        } else {
            Output::Values(last.forward(&h, train)?)
        })
    }

    fn metric_names(&self) -> Vec<String> {
        let c = self.compiled.as_ref().expect("compiled");
        c.metrics.iter().map(|m| m.name().to_string()).collect()
    }

    /// Sums of loss and correct counts over batches, as `(loss_sum, metric_sums, samples)`.
    fn batch_stats(
        &self,
        y: &Tensor,
        out: &Output,
        loss_value: f64,
        n: usize,
        sums: &mut [f64],
        loss_sum: &mut f64,
    ) -> Result<()> {
        let c = self.compiled.as_ref().expect("compiled");
        *loss_sum += loss_value * n as f64;
        for (s, m) in sums.iter_mut().zip(&c.metrics) {
            *s += m.correct(c.loss, y, out)?;
        }
        Ok(())
    }

    fn evaluate(&self, data: &Data, batch_size: usize) -> Result<Evaluation> {
        let loss = self.compiled.as_ref().expect("compiled").loss;
        let n = data.len();
        let mut sums = vec![0.0; self.metric_names().len()];
        let mut loss_sum = 0.0;
        for start in (0..n).step_by(batch_size) {
            let len = batch_size.min(n - start);
            let (xb, yb) = (data.x.narrow(0, start, len)?, data.y.narrow(0, start, len)?);
            let out = self.forward_output(&xb, false, loss)?;
            let l = loss.compute_output(&yb, &out)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            self.batch_stats(&yb, &out, l, len, &mut sums, &mut loss_sum)?;
        }
        Ok(Evaluation {
            loss: loss_sum / n as f64,
            metrics: self.metric_names().into_iter().zip(sums.into_iter().map(|s| s / n as f64)).collect(),
        })
    }

    fn evaluate_generator(&mut self, g: &dyn BatchGenerator, steps: usize) -> Result<Evaluation> {
        let loss = self.compiled.as_ref().expect("compiled").loss;
        let mut sums = vec![0.0; self.metric_names().len()];
        let (mut loss_sum, mut n) = (0.0, 0usize);
        for i in 0..steps {
            let (xb, yb) = g.batch(0, i % g.len().max(1))?;
            let d = self.prepare(&xb, &yb, "x", "y")?;
            let out = self.forward_output(&d.x, false, loss)?;
            let l = loss.compute_output(&d.y, &out)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            self.batch_stats(&d.y, &out, l, d.len(), &mut sums, &mut loss_sum)?;
            n += d.len();
        }
        let n = n.max(1) as f64;
        Ok(Evaluation {
            loss: loss_sum / n,
            metrics: self.metric_names().into_iter().zip(sums.into_iter().map(|s| s / n)).collect(),
        })
    }

    fn train_loop(
        &mut self,
        next: &mut dyn FnMut(usize, usize) -> Result<(Tensor, Tensor)>,
        mut cfg: LoopConfig,
    ) -> Result<History> {
        let mut history = History::default();
        let vars = self.trainable_vars();
        let own_backward = self.own_backward();
        let names = self.metric_names();
        let mut callbacks = std::mem::take(&mut cfg.callbacks);
        let mut resume = None;
        for cb in callbacks.iter_mut() {
            let mut ctx = TrainingContext { inner: self, epoch: cfg.initial_epoch, step: 0, resume: None };
            cb.on_train_begin(&mut ctx)?;
            resume = ctx.resume.or(resume);
        }
        // A backup (BackupAndRestore) resumes the run where it was saved.
        let (first_epoch, mut first_step) = match resume {
            Some((e, s)) if e >= cfg.initial_epoch => (e, s),
            _ => (cfg.initial_epoch, 0),
        };
        let mut last_logs = Logs::default();
        for epoch in first_epoch..cfg.epochs {
            let start_step = std::mem::take(&mut first_step).min(cfg.steps_per_epoch);
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(epoch, &mut TrainingContext { inner: self, epoch, step: start_step, resume: None })?;
            }
            if cfg.verbose == 1 {
                println!("Epoch {}/{}", epoch + 1, cfg.epochs);
            }
            let mut bar = Progbar::new(cfg.steps_per_epoch, cfg.verbose);
            let mut sums = vec![0.0; names.len()];
            let (mut loss_sum, mut seen) = (0.0, 0usize);
            let mut logs = Vec::new();
            let mut stop = false;
            let mut steps_done = 0;
            for step in start_step..cfg.steps_per_epoch {
                let (xb, yb) = next(epoch, step)?;
                let Data { x: xb, y: yb } = self.prepare(&xb, &yb, "x", "y")?;
                let loss = self.compiled.as_ref().expect("compiled").loss;
                let (out, l, saved) = if own_backward {
                    let (out, saved) = self.forward_saved(&xb, loss)?;
                    let l = loss.compute_output(&yb, &out)?;
                    (out, l, Some(saved))
                } else {
                    let out = self.forward_output(&xb, true, loss)?;
                    let l = loss.compute_output(&yb, &out)?;
                    (out, l, None)
                };
                let lv = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                let finite = lv.is_finite();
                // A NaN or infinite loss would poison every weight: that update is skipped, and
                // training stops (gracefully when a callback such as TerminateOnNaN asks for it).
                if finite {
                    let g = match saved {
                        Some(saved) => self.backward_saved(&l, &out, saved)?,
                        None => {
                            let grads = l.backward()?;
                            vars.iter().map(|v| grads.get(v.as_tensor()).cloned()).collect()
                        }
                    };
                    self.compiled.as_mut().expect("compiled").optimizer.apply_gradients(&vars, &g)?;
                }
                let n = xb.dims()[0];
                let out = match out {
                    Output::Values(t) => Output::Values(t.detach()),
                    Output::Logits(t, a) => Output::Logits(t.detach(), a),
                };
                self.batch_stats(&yb, &out, lv, n, &mut sums, &mut loss_sum)?;
                seen += n;
                steps_done = step + 1;
                logs = names.iter().cloned().zip(sums.iter().map(|s| s / seen as f64)).collect::<Vec<_>>();
                logs.push(("loss".into(), loss_sum / seen as f64));
                logs.sort_by(|a, b| a.0.cmp(&b.0));
                bar.update(step + 1, &logs);
                if !callbacks.is_empty() {
                    let batch_logs = Logs(logs.clone());
                    for cb in callbacks.iter_mut() {
                        let mut ctx = TrainingContext { inner: self, epoch, step: step + 1, resume: None };
                        if cb.on_train_batch_end(step, &batch_logs, &mut ctx)? == Control::Stop {
                            stop = true;
                        }
                    }
                }
                if !finite && !stop {
                    bar.finish(steps_done, &logs);
                    return Err(Error::NonFiniteLoss { epoch: epoch + 1, batch: step + 1, loss: lv });
                }
                if stop {
                    break;
                }
            }
            if let (Some(val), false) = (&cfg.validation, stop) {
                let ev = match val {
                    Validation::Data(d, bs) => self.evaluate(d, *bs)?,
                    Validation::Generator(g, steps) => self.evaluate_generator(g.as_ref(), *steps)?,
                };
                let mut v: Vec<(String, f64)> = ev.metrics.iter().map(|(k, x)| (format!("val_{k}"), *x)).collect();
                v.push(("val_loss".into(), ev.loss));
                v.sort_by(|a, b| a.0.cmp(&b.0));
                logs.extend(v);
            }
            bar.finish(steps_done, &logs);
            history.push(epoch, &logs);
            last_logs = Logs(logs);
            for cb in callbacks.iter_mut() {
                if cb.on_epoch_end(
                    epoch,
                    &last_logs,
                    &mut TrainingContext { inner: self, epoch: epoch + 1, step: 0, resume: None },
                )? == Control::Stop
                {
                    stop = true;
                }
            }
            if stop {
                break;
            }
        }
        for cb in callbacks.iter_mut() {
            cb.on_train_end(
                &last_logs,
                &mut TrainingContext { inner: self, epoch: cfg.epochs, step: 0, resume: None },
            )?;
        }
        Ok(history)
    }
}
