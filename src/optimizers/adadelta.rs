use super::base::optimizer;
use super::UpdateRule;
use crate::error::Result;
use candle_core::Tensor;

optimizer! {
    /// Adadelta, as `keras.optimizers.Adadelta` (Keras 3):
    ///
    /// ```text
    /// acc_g = rho * acc_g + (1 - rho) * g^2
    /// delta = -sqrt(acc_d + eps) * g / sqrt(acc_g + eps)
    /// acc_d = rho * acc_d + (1 - rho) * delta^2
    /// w += lr * delta
    /// ```
    ///
    /// Defaults: `learning_rate 0.001`, `rho 0.95`, `epsilon 1e-7`.
    ///
    /// ```
    /// use kandle::optimizers::{Adadelta, Optimizer};
    /// assert_eq!(Adadelta::default().learning_rate(), 0.001);
    /// ```
    Adadelta("adadelta", learning_rate = 1e-3) {
        /// Decay rate (default 0.95).
        rho: f64 = 0.95,
        /// Epsilon (default 1e-7).
        epsilon: f64 = 1e-7,
    }
}

impl UpdateRule for Adadelta {
    fn slot_count(&self) -> usize {
        2
    }

    fn update_step(&self, lr: f64, _t: u64, s: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (rho, eps) = (self.rho, self.epsilon);
        s[0] = ((&s[0] * rho)? + (g.sqr()? * (1.0 - rho))?)?;
        let delta = ((&s[1] + eps)?.sqrt()? * g)?.div(&(&s[0] + eps)?.sqrt()?)?.neg()?;
        s[1] = ((&s[1] * rho)? + (delta.sqr()? * (1.0 - rho))?)?;
        Ok((w + (delta * lr)?)?)
    }
}
