use super::{Callback, Control, Logs, TrainingContext};
use crate::error::Result;

/// Stops training as soon as the loss becomes NaN or infinite, as
/// `keras.callbacks.TerminateOnNaN`, naming the epoch and batch.
///
/// Without it, kandle stops such a run too, but with an error
/// ([`crate::error::Error::NonFiniteLoss`]); with it, `fit` ends gracefully and returns the
/// history. Either way the bad batch's update is not applied.
///
/// ```
/// use kandle::callbacks::TerminateOnNaN;
/// use kandle::prelude::*;
/// let x = Tensor::full(f32::NAN, (8, 2), &Device::Cpu)?;
/// let y = Tensor::zeros(8, DType::U32, &Device::Cpu)?;
/// let model = Sequential::new().seed(0).add(Dense::new(2).activation(Activation::Softmax).input_shape(2));
/// model.compile("sgd", Loss::SparseCategoricalCrossentropy, ())?;
/// let h = model.fit(&x, &y, FitOptions::default().epochs(5).verbose(0).callback(TerminateOnNaN::new()))?;
/// assert_eq!(h.epoch, vec![0]); // stopped in the first epoch
/// // raise_error: the fit fails instead, at the batch.
/// let strict = FitOptions::default().epochs(5).verbose(0).callback(TerminateOnNaN::new().raise_error(true));
/// assert!(matches!(model.fit(&x, &y, strict), Err(kandle::Error::NonFiniteLoss { .. })));
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct TerminateOnNaN {
    epoch: usize,
    raise_error: bool,
    /// `(epoch, batch)` where the loss went bad, if it did.
    pub stopped_at: Option<(usize, usize)>,
}

impl TerminateOnNaN {
    /// The callback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keras' `raise_error` (default false): `fit` fails at once with
    /// [`Error::NonFiniteLoss`](crate::error::Error::NonFiniteLoss) instead of stopping
    /// gracefully, and the other callbacks' `on_train_end` does not run (a backup is kept).
    pub fn raise_error(mut self, on: bool) -> Self {
        self.raise_error = on;
        self
    }
}

impl Callback for TerminateOnNaN {
    fn on_epoch_begin(&mut self, epoch: usize, _ctx: &mut TrainingContext) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn on_train_batch_end(&mut self, batch: usize, logs: &Logs, _ctx: &mut TrainingContext) -> Result<Control> {
        match logs.get("loss") {
            Some(l) if !l.is_finite() => {
                self.stopped_at = Some((self.epoch, batch));
                if self.raise_error {
                    return Err(crate::error::Error::NonFiniteLoss {
                        epoch: self.epoch + 1,
                        batch: batch + 1,
                        loss: l,
                    });
                }
                println!("Epoch {}, batch {batch}: invalid loss {l}, terminating training", self.epoch + 1);
                self.stopped_at = Some((self.epoch, batch));
                Ok(Control::Stop)
            }
            _ => Ok(Control::Continue),
        }
    }
}
