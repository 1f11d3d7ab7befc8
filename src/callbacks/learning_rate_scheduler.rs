use super::{Callback, Control, Logs, TrainingContext};
use crate::error::Result;

/// Sets the learning rate at the start of each epoch from `schedule(epoch, lr)`, as
/// `keras.callbacks.LearningRateScheduler`.
///
/// ```
/// use kandle::callbacks::LearningRateScheduler;
/// // Halve every 10 epochs.
/// let cb = LearningRateScheduler::new(|epoch, lr| if epoch > 0 && epoch % 10 == 0 { lr * 0.5 } else { lr });
/// # let _ = cb;
/// ```
pub struct LearningRateScheduler {
    schedule: Box<dyn FnMut(usize, f64) -> f64 + Send>,
    verbose: u8,
}

impl LearningRateScheduler {
    /// A scheduler calling `schedule(epoch, current_lr)`.
    pub fn new(schedule: impl FnMut(usize, f64) -> f64 + Send + 'static) -> Self {
        LearningRateScheduler { schedule: Box::new(schedule), verbose: 0 }
    }
    /// 1 prints each change (default 0).
    pub fn verbose(mut self, v: u8) -> Self {
        self.verbose = v;
        self
    }
}

impl Callback for LearningRateScheduler {
    fn on_epoch_begin(&mut self, epoch: usize, ctx: &mut TrainingContext) -> Result<()> {
        let lr = (self.schedule)(epoch, ctx.learning_rate());
        if !lr.is_finite() || lr < 0.0 {
            return Err(crate::error::Error::invalid(
                "schedule",
                format!("the schedule returned {lr} for epoch {epoch}; expected a finite number >= 0"),
            ));
        }
        ctx.set_learning_rate(lr)?;
        if self.verbose > 0 {
            println!("Epoch {}: LearningRateScheduler setting learning rate to {lr}.", epoch + 1);
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        ctx.set_log("learning_rate", ctx.learning_rate());
        Ok(Control::Continue)
    }
}
