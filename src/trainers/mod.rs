//! How a model learns, as Keras 3's `trainers/`: the training loop shared by
//! [`Sequential`](crate::models::Sequential) and [`Model`], its options,
//! batching, the driving of callbacks and the backward walk over the model's nodes.

mod data;
mod fit;
mod options;
pub(crate) mod prefetch;
mod profile;
mod replicas;
pub(crate) mod walk;

pub use data::Arrays;
pub(crate) use data::{ArrayBatches, Data};
pub(crate) use fit::{fit_arrays, fit_batches};
pub use options::{Evaluation, FitOptions, GeneratorOptions, ValidationFreq};
pub use profile::{LayerTime, Profile};

use crate::error::{Error, Result};
use crate::models::Model;
use candle_core::Tensor;

/// What a callback can see and change during training: the learning rate and the weights, and
/// saving the model. The training loop holds no lock on the model while a callback runs, so a
/// callback may also use a clone of the model itself (`model.save(..)`, `model.predict(..)`).
pub struct TrainingContext<'a> {
    pub(crate) model: &'a Model,
    /// Where a run saved now would resume: `(epoch, step)`.
    pub(crate) epoch: usize,
    pub(crate) step: usize,
    pub(crate) resume: Option<(usize, usize)>,
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
    pub fn new(model: &'a Model) -> Self {
        TrainingContext { model, epoch: 0, step: 0, resume: None }
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
    pub fn save_backup(&mut self, path: &std::path::Path) -> Result<()> {
        let (e, s) = (self.epoch, self.step);
        self.model.lock().save_to_with(path, &[("resume_epoch", e.to_string()), ("resume_step", s.to_string())])
    }
    /// Loads a backup written by [`TrainingContext::save_backup`] and returns its position.
    ///
    /// # Errors
    /// A missing, corrupt or foreign file; nothing is loaded then.
    pub fn load_backup(&mut self, path: &std::path::Path) -> Result<(usize, usize)> {
        let meta = self.model.lock().load_from(path)?;
        let get = |k: &str| meta.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((get("resume_epoch"), get("resume_step")))
    }
    /// The optimizer's learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.model.lock().compiled.as_ref().map(|c| c.optimizer.learning_rate()).unwrap_or(0.0)
    }
    /// Changes the optimizer's learning rate.
    ///
    /// # Errors
    /// When the learning rate comes from a schedule, as in Keras ("its learning rate is not
    /// settable"): `ReduceLROnPlateau` and `LearningRateScheduler` cannot drive it.
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        if let Some(c) = self.model.lock().compiled.as_mut() {
            crate::optimizers::set_learning_rate(c.optimizer.as_mut(), lr)?;
        }
        Ok(())
    }
    /// The number of optimizer steps taken so far (Keras' `model.optimizer.iterations`).
    pub fn iterations(&self) -> u64 {
        self.model.lock().compiled.as_ref().map(|c| c.optimizer.iterations()).unwrap_or(0)
    }
    /// Copies of the weights with their paths as Keras 3 names them (`weight.path`):
    /// `sequential/conv2d/kernel` in a `Sequential` (its layers are built in its name scope),
    /// `conv2d/kernel` in a functional model.
    ///
    /// # Errors
    /// If candle cannot copy them.
    pub fn named_weights(&mut self) -> Result<Vec<(String, Tensor)>> {
        let mut inner = self.model.lock();
        let scope = if inner.graph.is_none() { format!("{}/", inner.name) } else { String::new() };
        inner
            .named_weight_vars()?
            .into_iter()
            .map(|(n, v)| Ok((format!("{scope}{n}"), v.as_tensor().copy()?)))
            .collect()
    }
    /// Copies of the weights, as `Model::get_weights`.
    ///
    /// # Errors
    /// If candle cannot copy them.
    pub fn get_weights(&mut self) -> Result<Vec<Tensor>> {
        self.model
            .lock()
            .named_weight_vars()?
            .into_iter()
            .map(|(_, v)| v.as_tensor().copy().map_err(Error::from))
            .collect()
    }
    /// Replaces the weights, as `Model::set_weights`.
    ///
    /// # Errors
    /// A wrong number or shape of tensors.
    pub fn set_weights(&mut self, weights: &[Tensor]) -> Result<()> {
        self.model.lock().set_weights(weights)
    }
    /// Saves the weights, as `Model::save_weights`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.model.lock().save_weights_to(path.as_ref())
    }
    /// Saves weights and training state, as `Model::save`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.model.lock().save_to(path.as_ref())
    }
}
