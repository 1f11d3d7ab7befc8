use super::base::optimizer;
use super::{f32_rounded, UpdateRule};
use crate::error::Result;
use candle_core::Tensor;

optimizer! {
    /// Adamax, as `keras.optimizers.Adamax` (Keras 3):
    /// `m += (g - m)(1 - beta_1); u = max(beta_2 u, |g|); w -= lr m / ((1 - beta_1^t)(u + eps))`.
    ///
    /// Defaults: `learning_rate 0.001`, `beta_1 0.9`, `beta_2 0.999`, `epsilon 1e-7`.
    ///
    /// ```
    /// use kandle::optimizers::{Adamax, Optimizer};
    /// assert_eq!(Adamax::default().learning_rate(), 0.001);
    /// ```
    Adamax("adamax", learning_rate = 1e-3) {
        /// Decay of the first moment (default 0.9).
        beta_1: f64 = 0.9,
        /// Decay of the infinity norm (default 0.999).
        beta_2: f64 = 0.999,
        /// Keras' `epsilon`, added to the denominator for stability (default 1e-7).
        epsilon: f64 = 1e-7,
    }
}

impl UpdateRule for Adamax {
    fn slot_count(&self) -> usize {
        2
    }

    fn update_step(&self, lr: f64, t: u64, s: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        // Keras casts beta_1 through float32 for its power (as Adam).
        let b1p = f32_rounded(b1).powi(t as i32);
        s[0] = (&s[0] + ((g - &s[0])? * (1.0 - b1))?)?;
        s[1] = (&s[1] * b2)?.maximum(&g.abs()?)?;
        let denom = ((&s[1] + eps)? * (1.0 - b1p))?;
        Ok((w - ((&s[0] * lr)? / denom)?)?)
    }
}
