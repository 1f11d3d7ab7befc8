use super::monitor::{monitor_setters, Mode, Monitor};
use super::{Callback, Control, Logs, TrainingContext};
use crate::error::Result;

/// Reduces the learning rate when a monitored value has stopped improving, as
/// `keras.callbacks.ReduceLROnPlateau`.
///
/// Keras' defaults: `monitor "val_loss"`, `factor 0.1`, `patience 10`, `mode auto`,
/// `min_delta 1e-4`, `cooldown 0`, `min_lr 0`.
///
/// ```
/// use kandle::callbacks::ReduceLROnPlateau;
/// let cb = ReduceLROnPlateau::new().factor(0.5).patience(2).min_lr(1e-5);
/// # let _ = cb;
/// ```
pub struct ReduceLROnPlateau {
    monitor: Monitor,
    factor: f64,
    patience: usize,
    cooldown: usize,
    min_lr: f64,
    verbose: u8,
    wait: usize,
    cooldown_counter: usize,
}

impl Default for ReduceLROnPlateau {
    fn default() -> Self {
        ReduceLROnPlateau {
            monitor: Monitor::new("val_loss", Mode::Auto, 1e-4),
            factor: 0.1,
            patience: 10,
            cooldown: 0,
            min_lr: 0.0,
            verbose: 0,
            wait: 0,
            cooldown_counter: 0,
        }
    }
}

impl ReduceLROnPlateau {
    /// Keras' defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// The learning rate is multiplied by it (default 0.1; must be < 1).
    pub fn factor(mut self, f: f64) -> Self {
        self.factor = f;
        self
    }
    /// Epochs without improvement before reducing (default 10).
    pub fn patience(mut self, p: usize) -> Self {
        self.patience = p;
        self
    }
    /// Epochs to wait after a reduction before watching again (default 0).
    pub fn cooldown(mut self, c: usize) -> Self {
        self.cooldown = c;
        self
    }
    /// The learning rate never goes below it (default 0).
    pub fn min_lr(mut self, lr: f64) -> Self {
        self.min_lr = lr;
        self
    }
    /// 1 prints each reduction (default 0).
    pub fn verbose(mut self, v: u8) -> Self {
        self.verbose = v;
        self
    }
}

monitor_setters!(ReduceLROnPlateau, min_delta = "1e-4");

impl Callback for ReduceLROnPlateau {
    fn on_train_begin(&mut self, _ctx: &mut TrainingContext) -> Result<()> {
        if !(self.factor < 1.0 && self.factor >= 0.0) {
            return Err(crate::error::Error::invalid(
                "factor",
                format!("ReduceLROnPlateau needs a factor in [0, 1), received {}", self.factor),
            ));
        }
        self.wait = 0;
        self.cooldown_counter = 0;
        self.monitor.reset();
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        // Keras logs the rate this epoch ran at, before any reduction.
        ctx.set_log("learning_rate", ctx.learning_rate());
        self.monitor.resolve(ctx, "ReduceLROnPlateau")?;
        let Some(current) = self.monitor.current(logs, "ReduceLROnPlateau") else { return Ok(Control::Continue) };
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if self.monitor.is_improvement(current, self.monitor.best) {
            self.monitor.best = Some(current);
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            self.wait += 1;
            if self.wait >= self.patience {
                let old = ctx.learning_rate();
                if old > self.min_lr {
                    let new = (old * self.factor).max(self.min_lr);
                    ctx.set_learning_rate(new)?;
                    if self.verbose > 0 {
                        println!("Epoch {}: ReduceLROnPlateau reducing learning rate to {new}.", epoch + 1);
                    }
                    self.cooldown_counter = self.cooldown;
                    self.wait = 0;
                }
            }
        }
        Ok(Control::Continue)
    }
}
