use super::monitor::{monitor_setters, Mode, Monitor};
use super::{Callback, Control, Logs, TrainingContext};
use crate::error::Result;
use candle_core::Tensor;

/// Stops training when a monitored value stops improving, as `keras.callbacks.EarlyStopping`.
///
/// Keras' defaults: `monitor "val_loss"`, `min_delta 0`, `patience 0`, `mode auto`, no
/// `baseline`, `restore_best_weights false`, `start_from_epoch 0`.
///
/// ```
/// use kandle::callbacks::EarlyStopping;
/// let cb = EarlyStopping::new().monitor("val_accuracy").patience(3).restore_best_weights(true);
/// # let _ = cb;
/// ```
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    baseline: Option<f64>,
    restore_best_weights: bool,
    start_from_epoch: usize,
    verbose: u8,
    wait: usize,
    best_weights: Option<Vec<Tensor>>,
    best_epoch: usize,
    stopped_epoch: Option<usize>,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping {
            monitor: Monitor::new("val_loss", Mode::Auto, 0.0),
            patience: 0,
            baseline: None,
            restore_best_weights: false,
            start_from_epoch: 0,
            verbose: 0,
            wait: 0,
            best_weights: None,
            best_epoch: 0,
            stopped_epoch: None,
        }
    }
}

impl EarlyStopping {
    /// Keras' defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Epochs without improvement before stopping (default 0).
    pub fn patience(mut self, p: usize) -> Self {
        self.patience = p;
        self
    }
    /// A value the monitored quantity must beat for the patience to reset.
    pub fn baseline(mut self, b: f64) -> Self {
        self.baseline = Some(b);
        self
    }
    /// Restore the weights of the best epoch when stopping (default false).
    pub fn restore_best_weights(mut self, r: bool) -> Self {
        self.restore_best_weights = r;
        self
    }
    /// Epochs to wait before watching (default 0).
    pub fn start_from_epoch(mut self, e: usize) -> Self {
        self.start_from_epoch = e;
        self
    }
    /// 1 prints a message when stopping (default 0).
    pub fn verbose(mut self, v: u8) -> Self {
        self.verbose = v;
        self
    }
    /// The epoch training stopped at, if it stopped early.
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }
    /// The best epoch seen.
    pub fn best_epoch(&self) -> usize {
        self.best_epoch
    }
}

monitor_setters!(EarlyStopping, min_delta = "0");

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _ctx: &mut TrainingContext) -> Result<()> {
        self.wait = 0;
        self.monitor.reset();
        self.best_weights = None;
        self.best_epoch = 0;
        self.stopped_epoch = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        self.monitor.resolve(ctx, "EarlyStopping")?;
        let Some(current) = self.monitor.current(logs, "EarlyStopping") else { return Ok(Control::Continue) };
        if epoch < self.start_from_epoch {
            return Ok(Control::Continue);
        }
        if self.restore_best_weights && self.best_weights.is_none() {
            // Never set: the current weights are the best so far (Keras 3).
            self.best_weights = Some(ctx.get_weights()?);
            self.best_epoch = epoch;
        }
        self.wait += 1;
        if self.monitor.is_improvement(current, self.monitor.best) {
            self.monitor.best = Some(current);
            self.best_epoch = epoch;
            if self.restore_best_weights {
                self.best_weights = Some(ctx.get_weights()?);
            }
            if self.baseline.is_none() || self.monitor.is_improvement(current, self.baseline) {
                self.wait = 0;
            }
            return Ok(Control::Continue);
        }
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = Some(epoch);
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }

    /// As Keras 3: the best weights are restored at the end of training whenever they were
    /// kept, also when the run completed all its epochs without stopping early.
    fn on_train_end(&mut self, _logs: &Logs, ctx: &mut TrainingContext) -> Result<()> {
        if let (Some(e), true) = (self.stopped_epoch, self.verbose > 0) {
            println!("Epoch {}: early stopping", e + 1);
        }
        if let (true, Some(w)) = (self.restore_best_weights, &self.best_weights) {
            if self.verbose > 0 {
                println!("Restoring model weights from the end of the best epoch: {}.", self.best_epoch + 1);
            }
            ctx.set_weights(w)?;
        }
        Ok(())
    }
}
