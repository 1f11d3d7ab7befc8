use super::base::optimizer;
use super::UpdateRule;
use crate::error::Result;
use candle_core::Tensor;

optimizer! {
    /// Adagrad, as `keras.optimizers.Adagrad` (Keras 3):
    /// `acc += g^2; w -= lr * g / sqrt(acc + epsilon)`.
    ///
    /// Defaults: `learning_rate 0.001`, `initial_accumulator_value 0.1`, `epsilon 1e-7`.
    ///
    /// ```
    /// use kandle::optimizers::{Adagrad, Optimizer};
    /// assert_eq!(Adagrad::default().learning_rate(), 0.001);
    /// ```
    Adagrad("adagrad", learning_rate = 1e-3) {
        /// The accumulators' starting value (default 0.1).
        initial_accumulator_value: f64 = 0.1,
        /// Epsilon (default 1e-7).
        epsilon: f64 = 1e-7,
    }
}

impl UpdateRule for Adagrad {
    fn slot_count(&self) -> usize {
        1
    }

    fn slot_init(&self) -> f64 {
        self.initial_accumulator_value
    }

    fn update_step(&self, lr: f64, _t: u64, s: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor> {
        s[0] = (&s[0] + g.sqr()?)?;
        Ok((w - ((g * lr)? / (&s[0] + self.epsilon)?.sqrt()?)?)?)
    }
}
