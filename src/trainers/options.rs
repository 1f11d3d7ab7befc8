//! The options of `fit` and `fit_generator` (one struct, with Keras' names and defaults), and
//! Keras' `validation_freq`.

use super::data::BatchGenerator;
use super::Arrays;
use crate::callbacks::Callback;
use crate::distribute::MirroredStrategy;
use candle_core::Tensor;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

/// Options of [`Model::fit`](crate::models::Model::fit) and
/// [`Model::fit_generator`](crate::models::Model::fit_generator), with Keras' defaults.
///
/// ```
/// use kandle::models::FitOptions;
/// let opts = FitOptions::default().batch_size(256).epochs(10).validation_split(0.1).seed(0);
/// let generator_opts = FitOptions::default().epochs(10).workers(4).max_queue_size(10);
/// # let _ = (opts, generator_opts);
/// ```
///
/// The type parameter only tells which spelling of [`FitOptions::validation_generator`] the
/// options take: [`ForArrays`] (the default, `validation_generator(gen, steps)`) or
/// [`ForGenerator`] ([`GeneratorOptions`], the name `fit_generator`'s options had,
/// `validation_generator(gen)` with `validation_steps(n)`). Both serve `fit` and `fit_generator`.
pub struct FitOptions<'a, K = ForArrays> {
    pub(crate) batch_size: usize,
    pub(crate) epochs: usize,
    pub(crate) verbose: u8,
    pub(crate) shuffle: bool,
    pub(crate) validation_data: Option<(Vec<Tensor>, Vec<Tensor>)>,
    pub(crate) validation_sample_weight: Option<Tensor>,
    pub(crate) validation_split: f64,
    pub(crate) validation_batch_size: Option<usize>,
    pub(crate) validation_generator: Option<Arc<dyn BatchGenerator>>,
    pub(crate) validation_steps: Option<usize>,
    pub(crate) validation_freq: ValidationFreq,
    pub(crate) initial_epoch: usize,
    pub(crate) steps_per_epoch: Option<usize>,
    pub(crate) seed: Option<u64>,
    pub(crate) callbacks: Vec<Box<dyn Callback>>,
    pub(crate) sample_weight: Option<Tensor>,
    pub(crate) class_weight: Option<HashMap<usize, f64>>,
    pub(crate) workers: Option<usize>,
    pub(crate) max_queue_size: usize,
    pub(crate) strategy: Option<MirroredStrategy>,
    pub(crate) _data: PhantomData<(&'a Tensor, K)>,
}

/// [`FitOptions`] as `fit` takes them: `validation_generator(gen, steps)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForArrays;

/// [`FitOptions`] as `fit_generator` took them ([`GeneratorOptions`]):
/// `validation_generator(gen)` and `validation_steps(n)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForGenerator;

/// The options `fit_generator` took, by their former name: [`FitOptions`] whose
/// `validation_generator` takes the generator alone (with `validation_steps`).
///
/// ```
/// use kandle::models::GeneratorOptions;
/// let opts = GeneratorOptions::default().epochs(10).workers(2).max_queue_size(10);
/// # let _ = opts;
/// ```
pub type GeneratorOptions<'a> = FitOptions<'a, ForGenerator>;

/// Keras' `validation_freq`: validate every `n` epochs (`n` counting from 1: 2 validates after
/// epochs 2, 4, ...), or after the listed epochs (counting from 1).
///
/// ```
/// use kandle::models::{FitOptions, ValidationFreq};
/// let every_2 = FitOptions::default().validation_freq(2);
/// let listed = FitOptions::default().validation_freq(vec![1, 5, 10]);
/// assert!(ValidationFreq::from(2).at(1) && !ValidationFreq::from(2).at(0));
/// # let _ = (every_2, listed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationFreq {
    /// Every `n` epochs.
    Every(usize),
    /// After these epochs (counting from 1).
    Epochs(Vec<usize>),
}

impl ValidationFreq {
    /// Whether to validate after the epoch `epoch` (counting from 0), as Keras'
    /// `_should_eval`.
    pub fn at(&self, epoch: usize) -> bool {
        match self {
            ValidationFreq::Every(n) => *n > 0 && (epoch + 1).is_multiple_of(*n),
            ValidationFreq::Epochs(e) => e.contains(&(epoch + 1)),
        }
    }
}

impl From<usize> for ValidationFreq {
    fn from(n: usize) -> Self {
        ValidationFreq::Every(n)
    }
}
impl From<Vec<usize>> for ValidationFreq {
    fn from(e: Vec<usize>) -> Self {
        ValidationFreq::Epochs(e)
    }
}
impl From<&[usize]> for ValidationFreq {
    fn from(e: &[usize]) -> Self {
        ValidationFreq::Epochs(e.to_vec())
    }
}

impl<K> FitOptions<'_, K> {
    /// Keras' defaults.
    fn keras_defaults() -> Self {
        FitOptions {
            batch_size: 32,
            epochs: 1,
            verbose: 1,
            shuffle: true,
            validation_data: None,
            validation_sample_weight: None,
            validation_split: 0.0,
            validation_batch_size: None,
            validation_generator: None,
            validation_steps: None,
            validation_freq: ValidationFreq::Every(1),
            initial_epoch: 0,
            steps_per_epoch: None,
            seed: None,
            callbacks: Vec::new(),
            sample_weight: None,
            class_weight: None,
            workers: None,
            max_queue_size: 10,
            strategy: None,
            _data: PhantomData,
        }
    }
}

impl FitOptions<'_, ForArrays> {
    /// Keras' defaults (batch size 32, 1 epoch, verbose 1, shuffled). An inherent function as
    /// well as [`Default`], so that `FitOptions::default()` names these options without a type.
    #[allow(clippy::should_implement_trait)]
    pub fn default() -> Self {
        Self::keras_defaults()
    }
}

impl Default for FitOptions<'_, ForArrays> {
    fn default() -> Self {
        Self::keras_defaults()
    }
}

impl Default for FitOptions<'_, ForGenerator> {
    fn default() -> Self {
        Self::keras_defaults()
    }
}

impl<'a, K> FitOptions<'a, K> {
    /// Samples per gradient step (default 32); `fit_generator` takes its batches as the
    /// generator makes them.
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
    /// Reshuffle before each epoch (default true): arrays' samples; a generator's batches,
    /// whose order is drawn anew each epoch as Keras 3's `fit(shuffle=True)` (and Keras 2's
    /// `fit_generator(shuffle=True)`) does for a generator of known length (the generator still
    /// decides what each batch holds; `flow` reshuffles the samples too), so that the last,
    /// partial batch is not always the step before validation.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    /// Data to evaluate on at the end of each epoch (one array per input and per output, as
    /// `fit`'s `x` and `y`); it takes precedence over `validation_split` and a validation
    /// generator, as in Keras.
    pub fn validation_data(mut self, x: impl Arrays, y: impl Arrays) -> Self {
        self.validation_data = Some((x.into_arrays(), y.into_arrays()));
        self.validation_sample_weight = None;
        self
    }
    /// Validation data with per-sample weights, as Keras' `validation_data=(x, y,
    /// sample_weight)`: the validation loss is weighted as `evaluate`'s with the same weights.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let (x, y) = (Tensor::zeros((4, 2), DType::F32, &Device::Cpu)?, Tensor::ones((4, 1), DType::F32, &Device::Cpu)?);
    /// let w = Tensor::new(&[1f32, 0., 0., 1.], &Device::Cpu)?;
    /// let model = Sequential::new().add(Dense::new(1).input_shape(2));
    /// model.compile("sgd", Loss::MeanSquaredError, ())?;
    /// let h = model.fit(&x, &y, FitOptions::default().verbose(0).validation_data_weighted(&x, &y, &w))?;
    /// assert!(h.get("val_loss").is_some());
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn validation_data_weighted(mut self, x: impl Arrays, y: impl Arrays, sample_weight: &Tensor) -> Self {
        self.validation_data = Some((x.into_arrays(), y.into_arrays()));
        self.validation_sample_weight = Some(sample_weight.clone());
        self
    }
    /// Fraction of the training arrays, taken from their end before shuffling as Keras does,
    /// to hold out for validation (default 0).
    pub fn validation_split(mut self, split: f64) -> Self {
        self.validation_split = split;
        self
    }
    /// Batch size of the validation pass over arrays (default: `batch_size` for `fit`, 32 for
    /// `fit_generator`).
    pub fn validation_batch_size(mut self, batch_size: usize) -> Self {
        self.validation_batch_size = Some(batch_size);
        self
    }
    /// Batches of the validation generator per evaluation (default: one pass over it).
    pub fn validation_steps(mut self, steps: usize) -> Self {
        self.validation_steps = Some(steps);
        self
    }
    /// Keras' `validation_freq`: validate every `n` epochs (default 1), or after a list of
    /// epochs (counting from 1).
    pub fn validation_freq(mut self, freq: impl Into<ValidationFreq>) -> Self {
        self.validation_freq = freq.into();
        self
    }
    /// The epoch to start from, to resume a run (default 0).
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }
    /// Gradient steps per epoch (default: one pass over the data, `ceil(samples /
    /// batch_size)`, or the generator's `len()`; 0 is "not given", as in Keras). As Keras 3's
    /// epoch iterator: fewer steps than a pass continue the same pass in the next epoch; more
    /// end the epoch at the pass's end, with Keras' "ran out of data" warning.
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
    /// Keras' `sample_weight`: one weight per training sample, `(N,)`; each sample's loss
    /// counts with its weight, and a batch's loss is `sum(w_i loss_i) / batch`, as in Keras.
    /// The metrics are not weighted (Keras weighs only its `weighted_metrics`). Arrays only.
    pub fn sample_weight(mut self, weights: &Tensor) -> Self {
        self.sample_weight = Some(weights.clone());
        self
    }
    /// Keras' `class_weight`: a weight per class index (classes not listed weigh 1), turned
    /// into sample weights from the targets (one-hot or class indices); for a model of one
    /// output, and not together with `sample_weight`.
    ///
    /// ```
    /// use kandle::models::FitOptions;
    /// let opts = FitOptions::default().class_weight([(0, 1.0), (1, 5.0)]);
    /// # let _ = opts;
    /// ```
    pub fn class_weight(mut self, weights: impl IntoIterator<Item = (usize, f64)>) -> Self {
        self.class_weight = Some(weights.into_iter().collect());
        self
    }
    /// Threads preparing batches ahead of training (Keras' `workers`; default 1 for a
    /// generator, 0 for arrays, whose batches are slices; 0 prepares them inline).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }
    /// Batches waiting in the workers' queue at most (default 10).
    pub fn max_queue_size(mut self, n: usize) -> Self {
        self.max_queue_size = n;
        self
    }
    /// Trains data-parallel over the strategy's devices (Keras: the model built and compiled
    /// in `strategy.scope()`); `batch_size` stays the global batch.
    ///
    /// ```
    /// use kandle::distribute::MirroredStrategy;
    /// use kandle::models::FitOptions;
    /// let strategy = MirroredStrategy::cpu(2)?;
    /// let opts = FitOptions::default().batch_size(64).distribute(&strategy); // 32 per replica
    /// # let _ = opts;
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn distribute(mut self, strategy: &MirroredStrategy) -> Self {
        self.strategy = Some(strategy.clone());
        self
    }
}

impl FitOptions<'_, ForArrays> {
    /// Validation data from a generator (Keras 3's `validation_data=generator`, with
    /// `validation_steps`: `None` for one pass over it); `validation_data` arrays win over it.
    pub fn validation_generator(mut self, gen: impl BatchGenerator + 'static, steps: Option<usize>) -> Self {
        self.validation_generator = Some(Arc::new(gen));
        self.validation_steps = steps;
        self
    }
}

impl FitOptions<'_, ForGenerator> {
    /// A generator of validation batches (its epoch 0), as `fit_generator`'s
    /// `validation_data=generator`; [`FitOptions::validation_steps`] sets how many batches.
    pub fn validation_generator(mut self, gen: impl BatchGenerator + 'static) -> Self {
        self.validation_generator = Some(Arc::new(gen));
        self
    }
}
