//! The list that drives every callback of a `fit`, as Keras' `callbacks/callback_list.py`: the
//! user's callbacks, in the order given, with the progress bar (Keras' `ProgbarLogger`) and the
//! [`History`] that `fit` returns. The training loop calls one method per event.

use super::{Callback, CallbackModel, Control, History, Logs, Progbar, TrainingContext};
use crate::error::Result;

/// Every callback of one `fit`, and the bar and history that come with it.
pub(crate) struct CallbackList<'a> {
    model: &'a dyn CallbackModel,
    callbacks: Vec<Box<dyn Callback>>,
    history: History,
    verbose: u8,
    epochs: usize,
    steps: usize,
    bar: Option<Progbar>,
}

impl<'a> CallbackList<'a> {
    /// The user's `callbacks` for a run of `epochs` epochs of `steps` batches, printing at
    /// `verbose` (0 silent, 1 a bar, 2 a line per epoch).
    pub fn new(
        model: &'a dyn CallbackModel,
        callbacks: Vec<Box<dyn Callback>>,
        verbose: u8,
        epochs: usize,
        steps: usize,
    ) -> Self {
        CallbackList { model, callbacks, history: History::default(), verbose, epochs, steps, bar: None }
    }

    /// Calls `f` with every user callback and a context at `(epoch, step)`; `Stop` when any
    /// callback asked for it (all are called).
    fn each(
        &mut self,
        (epoch, step): (usize, usize),
        mut f: impl FnMut(&mut dyn Callback, &mut TrainingContext) -> Result<Control>,
    ) -> Result<Control> {
        let mut control = Control::Continue;
        for cb in &mut self.callbacks {
            let mut ctx = TrainingContext::at(self.model, epoch, step);
            if f(cb.as_mut(), &mut ctx)? == Control::Stop {
                control = Control::Stop;
            }
        }
        Ok(control)
    }

    /// Before the first epoch: where a callback (`BackupAndRestore`) asks the run to resume,
    /// the last one that asks.
    pub fn train_begin(&mut self, initial_epoch: usize) -> Result<Option<(usize, usize)>> {
        let mut resume = None;
        for cb in &mut self.callbacks {
            let mut ctx = TrainingContext::at(self.model, initial_epoch, 0);
            cb.on_train_begin(&mut ctx)?;
            resume = ctx.requested_resume().or(resume);
        }
        Ok(resume)
    }

    /// Before an epoch whose first batch is `step`: the callbacks, then Keras' `Epoch i/N`
    /// line and a new bar.
    pub fn epoch_begin(&mut self, epoch: usize, step: usize) -> Result<()> {
        self.each((epoch, step), |cb, ctx| cb.on_epoch_begin(epoch, ctx).map(|_| Control::Continue))?;
        // Keras 3's progress logger: the epoch line for verbose 1 and 2, with several epochs.
        if self.verbose >= 1 && self.epochs > 1 {
            println!("Epoch {}/{}", epoch + 1, self.epochs);
        }
        self.bar = Some(Progbar::new(self.steps, self.verbose));
        Ok(())
    }

    /// Before a training batch.
    pub fn batch_begin(&mut self, epoch: usize, step: usize) -> Result<()> {
        self.each((epoch, step), |cb, ctx| cb.on_train_batch_begin(step, ctx).map(|_| Control::Continue))?;
        Ok(())
    }

    /// After a training batch, with the epoch's running means: the bar, then the callbacks.
    pub fn batch_end(&mut self, epoch: usize, step: usize, logs: &[(String, f64)]) -> Result<Control> {
        if let Some(bar) = &mut self.bar {
            bar.update(step + 1, logs);
        }
        if self.callbacks.is_empty() {
            return Ok(Control::Continue);
        }
        let logs = Logs(logs.to_vec());
        self.each((epoch, step + 1), |cb, ctx| cb.on_train_batch_end(step, &logs, ctx))
    }

    /// Ends the epoch's bar after `steps_done` batches (also when the run stops on an error).
    pub fn finish_bar(&mut self, steps_done: usize, logs: &[(String, f64)]) {
        if let Some(mut bar) = self.bar.take() {
            bar.finish(steps_done, logs);
        }
    }

    /// Before the validation pass.
    pub fn test_begin(&mut self, epoch: usize, steps_done: usize) -> Result<()> {
        self.each((epoch, steps_done), |cb, ctx| cb.on_test_begin(ctx).map(|_| Control::Continue))?;
        Ok(())
    }

    /// After the validation pass, with its logs named as `evaluate` names them.
    pub fn test_end(&mut self, epoch: usize, steps_done: usize, logs: &[(String, f64)]) -> Result<()> {
        if self.callbacks.is_empty() {
            return Ok(());
        }
        let logs = Logs(logs.to_vec());
        self.each((epoch, steps_done), |cb, ctx| cb.on_test_end(&logs, ctx).map(|_| Control::Continue))?;
        Ok(())
    }

    /// After an epoch, in Keras' order: the user's callbacks, each seeing the logs the ones
    /// before it added ([`TrainingContext::set_log`]: `learning_rate`), then the history and
    /// the bar's last line, with every log.
    pub fn epoch_end(&mut self, epoch: usize, steps_done: usize, logs: &mut Logs) -> Result<Control> {
        let mut control = Ok(Control::Continue);
        for cb in &mut self.callbacks {
            let mut ctx = TrainingContext::at(self.model, epoch + 1, 0);
            let r = cb.on_epoch_end(epoch, logs, &mut ctx);
            for (k, v) in ctx.take_logs() {
                logs.set(k, v);
            }
            match r {
                Ok(Control::Stop) => control = Ok(Control::Stop),
                Ok(Control::Continue) => {}
                Err(e) => {
                    control = Err(e);
                    break;
                }
            }
        }
        self.finish_bar(steps_done, &logs.0);
        let control = control?;
        self.history.push(epoch, &logs.0);
        Ok(control)
    }

    /// After the last epoch (also when a callback stopped training): the callbacks, and the
    /// history of the run.
    pub fn train_end(mut self, epochs: usize, logs: &Logs) -> Result<History> {
        self.each((epochs, 0), |cb, ctx| cb.on_train_end(logs, ctx).map(|_| Control::Continue))?;
        Ok(self.history)
    }
}
