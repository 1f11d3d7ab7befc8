//! What a callback sees of the model it watches (Keras' `callback.model`): the
//! [`TrainingContext`] passed to every hook, over the [`CallbackModel`] that `Model` and
//! `Sequential` are.

use crate::error::Result;
use crate::metrics::Direction;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// The model as a callback drives it: its optimizer's learning rate and step count, its
/// weights, saving. [`Model`](crate::models::Model) and
/// [`Sequential`](crate::models::Sequential) implement it; a callback reaches it through its
/// [`TrainingContext`].
pub trait CallbackModel: Sync {
    /// The compiled optimizer's learning rate (0 when the model is not compiled).
    fn optimizer_learning_rate(&self) -> f64;
    /// Sets the compiled optimizer's learning rate.
    ///
    /// # Errors
    /// When the learning rate comes from a schedule, as in Keras.
    fn set_optimizer_learning_rate(&self, lr: f64) -> Result<()>;
    /// The optimizer's step count (Keras' `optimizer.iterations`).
    fn optimizer_iterations(&self) -> u64;
    /// Copies of the weights, in the model's order (Keras' `get_weights`).
    ///
    /// # Errors
    /// If candle cannot copy them.
    fn weight_values(&self) -> Result<Vec<Tensor>>;
    /// Replaces the weights (Keras' `set_weights`).
    ///
    /// # Errors
    /// A wrong number or shape of tensors.
    fn set_weight_values(&self, weights: &[Tensor]) -> Result<()>;
    /// Copies of the weights with their Keras 3 paths (`weight.path`).
    ///
    /// # Errors
    /// If candle cannot copy them.
    fn weight_paths(&self) -> Result<Vec<(String, Tensor)>>;
    /// Saves the model with extra metadata (`Model::save`).
    ///
    /// # Errors
    /// If the file cannot be written.
    fn save_with(&self, path: &Path, extra: &[(&str, String)]) -> Result<()>;
    /// Saves the weights (`Model::save_weights`).
    ///
    /// # Errors
    /// If the file cannot be written.
    fn save_weights_to(&self, path: &Path) -> Result<()>;
    /// Loads a file written by [`CallbackModel::save_with`] and returns its metadata.
    ///
    /// # Errors
    /// A missing, corrupt or foreign file; nothing is loaded then.
    fn load_with_metadata(&self, path: &Path) -> Result<HashMap<String, String>>;
    /// Whether the compiled metric logged as `key` (`accuracy`, `out1_precision`) improves
    /// upwards or downwards (`None`: no such metric, or one that does not say).
    fn metric_direction(&self, key: &str) -> Option<Direction>;
}

/// What a callback can see and change during training: the learning rate and the weights, and
/// saving the model. The training loop holds no lock on the model while a callback runs, so a
/// callback may also use a clone of the model itself (`model.save(..)`, `model.predict(..)`).
pub struct TrainingContext<'a> {
    model: &'a dyn CallbackModel,
    /// Where a run saved now would resume: `(epoch, step)`.
    epoch: usize,
    step: usize,
    resume: Option<(usize, usize)>,
    logs: Vec<(String, f64)>,
}

impl<'a> TrainingContext<'a> {
    /// A context on `model`, to drive a callback by hand (Keras: `callback.set_model(model)`,
    /// then `callback.on_epoch_end(epoch, logs)`), as tests and custom loops do.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// use kandle::callbacks::{Callback, Control, Logs, TrainingContext};
    /// let model = Sequential::new().add(Dense::new(1).input_shape(2));
    /// model.compile(SGD::new(0.1), Loss::MeanSquaredError, ())?;
    /// let mut cb = ReduceLROnPlateau::new().patience(0);
    /// let mut ctx = TrainingContext::new(&model);
    /// cb.on_train_begin(&mut ctx)?;
    /// for (epoch, loss) in [1.0, 1.0].into_iter().enumerate() {
    ///     cb.on_epoch_end(epoch, &Logs(vec![("val_loss".into(), loss)]), &mut ctx)?;
    /// }
    /// assert!((model.learning_rate()? - 0.01).abs() < 1e-12); // 0.1 * 0.1 after a plateau
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn new(model: &'a (impl CallbackModel + 'a)) -> Self {
        TrainingContext { model, epoch: 0, step: 0, resume: None, logs: Vec::new() }
    }

    /// A context at `(epoch, step)`, where a run saved now would resume.
    pub(crate) fn at(model: &'a dyn CallbackModel, epoch: usize, step: usize) -> Self {
        TrainingContext { model, epoch, step, resume: None, logs: Vec::new() }
    }

    /// The logs added by [`TrainingContext::set_log`], taken.
    pub(crate) fn take_logs(&mut self) -> Vec<(String, f64)> {
        std::mem::take(&mut self.logs)
    }

    /// From `on_epoch_end`: sets `key` in the epoch's logs (Keras: `logs[key] = value`), as
    /// `ReduceLROnPlateau` and `LearningRateScheduler` log `learning_rate`. The callbacks after
    /// this one, the [`History`](crate::models::History) and the progress bar see it.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// use kandle::callbacks::{Callback, Control, Logs, TrainingContext};
    /// struct Twice;
    /// impl Callback for Twice {
    ///     fn on_epoch_end(&mut self, _: usize, logs: &Logs, ctx: &mut TrainingContext) -> kandle::Result<Control> {
    ///         ctx.set_log("twice_loss", 2.0 * logs.get("loss").unwrap_or(0.0));
    ///         Ok(Control::Continue)
    ///     }
    /// }
    /// let x = Tensor::zeros((4, 2), DType::F32, &Device::Cpu)?;
    /// let model = Sequential::new().add(Dense::new(1).input_shape(2));
    /// model.compile("sgd", Loss::MeanSquaredError, ())?;
    /// let h = model.fit(&x, &Tensor::ones((4, 1), DType::F32, &Device::Cpu)?, FitOptions::default().verbose(0).callback(Twice))?;
    /// assert_eq!(h.get("twice_loss").unwrap()[0], 2.0 * h.get("loss").unwrap()[0]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn set_log(&mut self, key: impl Into<String>, value: f64) {
        let key = key.into();
        self.logs.retain(|(k, _)| *k != key);
        self.logs.push((key, value));
    }

    /// The position a callback asked to resume at ([`TrainingContext::resume_at`]).
    pub(crate) fn requested_resume(&self) -> Option<(usize, usize)> {
        self.resume
    }

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
    pub fn save_backup(&mut self, path: &Path) -> Result<()> {
        let (e, s) = (self.epoch, self.step);
        self.model.save_with(path, &[("resume_epoch", e.to_string()), ("resume_step", s.to_string())])
    }
    /// Loads a backup written by [`TrainingContext::save_backup`] and returns its position.
    ///
    /// # Errors
    /// A missing, corrupt or foreign file; nothing is loaded then.
    pub fn load_backup(&mut self, path: &Path) -> Result<(usize, usize)> {
        let meta = self.model.load_with_metadata(path)?;
        let get = |k: &str| meta.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((get("resume_epoch"), get("resume_step")))
    }
    /// The optimizer's learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.model.optimizer_learning_rate()
    }
    /// Changes the optimizer's learning rate.
    ///
    /// # Errors
    /// When the learning rate comes from a schedule, as in Keras ("its learning rate is not
    /// settable"): `ReduceLROnPlateau` and `LearningRateScheduler` cannot drive it.
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        self.model.set_optimizer_learning_rate(lr)
    }
    /// The number of optimizer steps taken so far (Keras' `model.optimizer.iterations`).
    pub fn iterations(&self) -> u64 {
        self.model.optimizer_iterations()
    }
    /// Copies of the weights with their paths as Keras 3 names them (`weight.path`):
    /// `sequential/conv2d/kernel` in a `Sequential` (its layers are built in its name scope),
    /// `conv2d/kernel` in a functional model.
    ///
    /// # Errors
    /// If candle cannot copy them.
    pub fn named_weights(&mut self) -> Result<Vec<(String, Tensor)>> {
        self.model.weight_paths()
    }
    /// Copies of the weights, as `Model::get_weights`.
    ///
    /// # Errors
    /// If candle cannot copy them.
    pub fn get_weights(&mut self) -> Result<Vec<Tensor>> {
        self.model.weight_values()
    }
    /// Replaces the weights, as `Model::set_weights`.
    ///
    /// # Errors
    /// A wrong number or shape of tensors.
    pub fn set_weights(&mut self, weights: &[Tensor]) -> Result<()> {
        self.model.set_weight_values(weights)
    }
    /// Saves the weights, as `Model::save_weights`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.model.save_weights_to(path.as_ref())
    }
    /// Saves weights and training state, as `Model::save`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.model.save_with(path.as_ref(), &[])
    }
    /// Whether the compiled metric logged as `key` improves upwards or downwards.
    pub fn metric_direction(&self, key: &str) -> Option<Direction> {
        self.model.metric_direction(key)
    }
}
