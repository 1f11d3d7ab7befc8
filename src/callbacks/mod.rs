//! Callbacks, as in `keras.callbacks`: hooks into `fit` and `fit_generator`, driven through one
//! list (Keras' `CallbackList`) that also holds the progress bar and the [`History`].
//!
//! Every method of [`Callback`] defaults to doing nothing; a callback stops training by
//! returning [`Control::Stop`]. Through the [`TrainingContext`] a callback reads and changes
//! the learning rate, reads and replaces the weights, and saves the model. `EarlyStopping`,
//! `ModelCheckpoint` and `ReduceLROnPlateau` watch a value through one shared monitor, as Keras
//! 3's `MonitorCallback`.

mod backup_and_restore;
mod callback_list;
mod context;
mod csv_logger;
mod early_stopping;
mod history;
#[cfg(feature = "plot")]
mod history_plot;
mod learning_rate_scheduler;
mod model_checkpoint;
mod monitor;
mod progbar_logger;
mod reduce_lr_on_plateau;
#[cfg(feature = "tensorboard")]
pub mod tensorboard;
mod terminate_on_nan;

pub use backup_and_restore::{BackupAndRestore, SaveFreq};
pub(crate) use callback_list::CallbackList;
pub use context::{CallbackModel, TrainingContext};
pub use csv_logger::CSVLogger;
pub use early_stopping::EarlyStopping;
pub use history::History;
#[cfg(feature = "plot")]
pub(crate) use history_plot::register_font;
pub use learning_rate_scheduler::LearningRateScheduler;
pub use model_checkpoint::ModelCheckpoint;
pub use monitor::Mode;
pub use progbar_logger::Progbar;
pub use reduce_lr_on_plateau::ReduceLROnPlateau;
#[cfg(feature = "tensorboard")]
pub use tensorboard::{TensorBoard, UpdateFreq};
pub use terminate_on_nan::TerminateOnNaN;

use crate::error::Result;

/// Whether training goes on after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this batch or epoch (Keras' `model.stop_training = True`).
    Stop,
}

/// The logs of a batch or an epoch: `loss`, the metrics, and at the end of an epoch with
/// validation `val_loss` and the `val_` metrics.
///
/// ```
/// use kandle::callbacks::Logs;
/// let mut logs = Logs(vec![("loss".into(), 0.5)]);
/// logs.set("val_loss", 0.7);
/// assert_eq!(logs.keys().collect::<Vec<_>>(), ["loss", "val_loss"]);
/// assert_eq!(logs.iter().map(|(_, v)| v).sum::<f64>(), 1.2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Logs(pub Vec<(String, f64)>);

impl Logs {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Sets `key` (replacing its value, or adding it last).
    pub fn set(&mut self, key: impl Into<String>, value: f64) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// The keys, in order (Keras: `logs.keys()`).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// `(key, value)` pairs, in order (Keras: `logs.items()`).
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl<'a> IntoIterator for &'a Logs {
    type Item = &'a (String, f64);
    type IntoIter = std::slice::Iter<'a, (String, f64)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A hook into training. All methods default to no-ops.
pub trait Callback: Send {
    /// Before the first epoch.
    ///
    /// # Errors
    /// Stops training with the error.
    fn on_train_begin(&mut self, _ctx: &mut TrainingContext) -> Result<()> {
        Ok(())
    }
    /// Before each epoch (0-based).
    ///
    /// # Errors
    /// Stops training with the error.
    fn on_epoch_begin(&mut self, _epoch: usize, _ctx: &mut TrainingContext) -> Result<()> {
        Ok(())
    }
    /// Before each training batch (0-based within the epoch).
    ///
    /// # Errors
    /// Stops training with the error.
    fn on_train_batch_begin(&mut self, _batch: usize, _ctx: &mut TrainingContext) -> Result<()> {
        Ok(())
    }
    /// After each training batch, with the epoch's running averages.
    ///
    /// # Errors
    /// Stops training with the error.
    fn on_train_batch_end(&mut self, _batch: usize, _logs: &Logs, _ctx: &mut TrainingContext) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// Before the validation pass at the end of an epoch of `fit`.
    ///
    /// # Errors
    /// Stops training with the error.
    fn on_test_begin(&mut self, _ctx: &mut TrainingContext) -> Result<()> {
        Ok(())
    }
    /// After the validation pass, with its logs named as `evaluate` names them (`loss`,
    /// `accuracy`, ..., without the `val_` prefix), as Keras calls it from `fit`.
    ///
    /// # Errors
    /// Stops training with the error.
    fn on_test_end(&mut self, _logs: &Logs, _ctx: &mut TrainingContext) -> Result<()> {
        Ok(())
    }
    /// After each epoch, with its training and validation logs.
    ///
    /// # Errors
    /// Stops training with the error.
    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, _ctx: &mut TrainingContext) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// After the last epoch (also when a callback stopped training).
    ///
    /// # Errors
    /// Returned from `fit`.
    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut TrainingContext) -> Result<()> {
        Ok(())
    }
}

type EpochFn = Box<dyn FnMut(usize, &Logs) + Send>;
type EndFn = Box<dyn FnMut(&Logs) + Send>;

/// A callback made of closures, as Keras' `LambdaCallback`.
///
/// ```
/// use kandle::callbacks::LambdaCallback;
/// let cb = LambdaCallback::new().on_epoch_end(|epoch, logs| println!("{epoch}: {:?}", logs.get("loss")));
/// # let _ = cb;
/// ```
#[derive(Default)]
pub struct LambdaCallback {
    epoch_begin: Option<Box<dyn FnMut(usize) + Send>>,
    epoch_end: Option<EpochFn>,
    batch_end: Option<EpochFn>,
    train_begin: Option<Box<dyn FnMut() + Send>>,
    train_end: Option<EndFn>,
}

impl LambdaCallback {
    /// A callback that does nothing yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Called with the epoch before it starts.
    pub fn on_epoch_begin(mut self, f: impl FnMut(usize) + Send + 'static) -> Self {
        self.epoch_begin = Some(Box::new(f));
        self
    }
    /// Called with the epoch and its logs after it ends.
    pub fn on_epoch_end(mut self, f: impl FnMut(usize, &Logs) + Send + 'static) -> Self {
        self.epoch_end = Some(Box::new(f));
        self
    }
    /// Called with the batch and the running logs after each batch.
    pub fn on_batch_end(mut self, f: impl FnMut(usize, &Logs) + Send + 'static) -> Self {
        self.batch_end = Some(Box::new(f));
        self
    }
    /// Called before training.
    pub fn on_train_begin(mut self, f: impl FnMut() + Send + 'static) -> Self {
        self.train_begin = Some(Box::new(f));
        self
    }
    /// Called after training with the last epoch's logs.
    pub fn on_train_end(mut self, f: impl FnMut(&Logs) + Send + 'static) -> Self {
        self.train_end = Some(Box::new(f));
        self
    }
}

impl Callback for LambdaCallback {
    fn on_train_begin(&mut self, _ctx: &mut TrainingContext) -> Result<()> {
        if let Some(f) = &mut self.train_begin {
            f();
        }
        Ok(())
    }
    fn on_epoch_begin(&mut self, epoch: usize, _ctx: &mut TrainingContext) -> Result<()> {
        if let Some(f) = &mut self.epoch_begin {
            f(epoch);
        }
        Ok(())
    }
    fn on_train_batch_end(&mut self, batch: usize, logs: &Logs, _ctx: &mut TrainingContext) -> Result<Control> {
        if let Some(f) = &mut self.batch_end {
            f(batch, logs);
        }
        Ok(Control::Continue)
    }
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _ctx: &mut TrainingContext) -> Result<Control> {
        if let Some(f) = &mut self.epoch_end {
            f(epoch, logs);
        }
        Ok(Control::Continue)
    }
    fn on_train_end(&mut self, logs: &Logs, _ctx: &mut TrainingContext) -> Result<()> {
        if let Some(f) = &mut self.train_end {
            f(logs);
        }
        Ok(())
    }
}

impl Callback for Box<dyn Callback> {
    fn on_train_begin(&mut self, ctx: &mut TrainingContext) -> Result<()> {
        (**self).on_train_begin(ctx)
    }
    fn on_epoch_begin(&mut self, epoch: usize, ctx: &mut TrainingContext) -> Result<()> {
        (**self).on_epoch_begin(epoch, ctx)
    }
    fn on_train_batch_begin(&mut self, batch: usize, ctx: &mut TrainingContext) -> Result<()> {
        (**self).on_train_batch_begin(batch, ctx)
    }
    fn on_train_batch_end(&mut self, batch: usize, logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        (**self).on_train_batch_end(batch, logs, ctx)
    }
    fn on_test_begin(&mut self, ctx: &mut TrainingContext) -> Result<()> {
        (**self).on_test_begin(ctx)
    }
    fn on_test_end(&mut self, logs: &Logs, ctx: &mut TrainingContext) -> Result<()> {
        (**self).on_test_end(logs, ctx)
    }
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        (**self).on_epoch_end(epoch, logs, ctx)
    }
    fn on_train_end(&mut self, logs: &Logs, ctx: &mut TrainingContext) -> Result<()> {
        (**self).on_train_end(logs, ctx)
    }
}
