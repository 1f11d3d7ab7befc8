use super::base::optimizer;
use super::{f32_rounded, UpdateRule};
use crate::error::{Error, Result};
use candle_core::Tensor;

optimizer! {
    /// Nadam, as `keras.optimizers.Nadam` (Keras 3): Adam with Nesterov momentum and Keras'
    /// momentum schedule `u_t = beta_1 (1 - 0.5 * 0.96^t)`.
    ///
    /// Defaults: `learning_rate 0.001`, `beta_1 0.9`, `beta_2 0.999`, `epsilon 1e-7`.
    ///
    /// ```
    /// use kandle::optimizers::{Nadam, Optimizer};
    /// assert_eq!(Nadam::default().learning_rate(), 0.001);
    /// ```
    Nadam("nadam", learning_rate = 1e-3) {
        /// Decay of the first moment (default 0.9).
        beta_1: f64 = 0.9,
        /// Decay of the second moment (default 0.999).
        beta_2: f64 = 0.999,
        /// Keras' `epsilon`, added to the denominator for stability (default 1e-7).
        epsilon: f64 = 1e-7,
    }
    state {
        /// The product of the momentum schedule's values so far (saved after the slots).
        u_product: f64 = 1.0,
        /// This step's coefficients: `u_t`, `u_{t+1}`, their products so far, `beta_2^t`.
        step: [f64; 5] = [0.0; 5],
    }
}

impl UpdateRule for Nadam {
    fn slot_count(&self) -> usize {
        2
    }

    fn begin_step(&mut self, _lr: f64, t: u64) -> Result<()> {
        let t = t as f64;
        // Keras keeps the momentum product with the Python floats, and casts beta_1, beta_2 and
        // the decay 0.96 through float32 in the step itself: the same here.
        self.u_product *= self.beta_1 * (1.0 - 0.5 * 0.96f64.powf(t));
        let (b1, b2, decay) = (f32_rounded(self.beta_1), f32_rounded(self.beta_2), f32_rounded(0.96));
        let u_t = b1 * (1.0 - 0.5 * decay.powf(t));
        let u_t1 = b1 * (1.0 - 0.5 * decay.powf(t + 1.0));
        self.step = [u_t, u_t1, self.u_product, self.u_product * u_t1, b2.powf(t)];
        Ok(())
    }

    fn update_step(&self, lr: f64, _t: u64, s: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (b1, b2, eps) = (f32_rounded(self.beta_1), f32_rounded(self.beta_2), self.epsilon);
        let [u_t, u_t1, up_t, up_t1, b2p] = self.step;
        s[0] = (&s[0] + ((g - &s[0])? * (1.0 - b1))?)?;
        s[1] = (&s[1] + ((g.sqr()? - &s[1])? * (1.0 - b2))?)?;
        let m_hat = ((&s[0] * (u_t1 / (1.0 - up_t1)))? + (g * ((1.0 - u_t) / (1.0 - up_t)))?)?;
        let v_hat = (&s[1] / (1.0 - b2p))?;
        Ok((w - ((m_hat * lr)? / (v_hat.sqrt()? + eps)?)?)?)
    }

    fn extra_state(&self) -> Vec<f64> {
        vec![self.u_product]
    }

    fn set_extra_state(&mut self, state: &[f64]) -> Result<()> {
        self.u_product =
            *state.first().ok_or_else(|| Error::invalid("slots", "Nadam's state ends with its momentum product"))?;
        Ok(())
    }
}
