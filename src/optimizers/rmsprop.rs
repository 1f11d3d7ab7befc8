use super::base::optimizer;
use super::UpdateRule;
use crate::error::Result;
use candle_core::Tensor;

optimizer! {
    /// RMSprop, as `keras.optimizers.RMSprop` (Keras 3):
    ///
    /// ```text
    /// velocity = rho * velocity + (1 - rho) * g^2
    /// avg      = rho * avg + (1 - rho) * g                      (centered only)
    /// incr     = lr * g / sqrt(velocity [- avg^2] + epsilon)
    /// momentum = momentum * momentum_slot + incr; w -= momentum (momentum > 0)
    /// w -= incr                                                 (otherwise)
    /// ```
    ///
    /// Defaults: `learning_rate 0.001`, `rho 0.9`, `momentum 0.0`, `epsilon 1e-7`,
    /// `centered false`.
    ///
    /// ```
    /// use kandle::optimizers::{Optimizer, RMSprop};
    /// let opt = RMSprop::new(1e-4);
    /// assert_eq!(opt.learning_rate(), 1e-4);
    /// ```
    RMSprop("rmsprop", learning_rate = 1e-3) {
        /// The discount of the squared-gradient average (default 0.9).
        rho: f64 = 0.9,
        /// Momentum (default 0.0).
        momentum: f64 = 0.0,
        /// Epsilon (default 1e-7).
        epsilon: f64 = 1e-7,
        /// Centered RMSprop (default false).
        centered: bool = false,
    }
}

impl UpdateRule for RMSprop {
    fn slot_count(&self) -> usize {
        1 + usize::from(self.momentum > 0.0) + usize::from(self.centered)
    }

    fn update_step(&self, lr: f64, _t: u64, s: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (rho, mom, eps) = (self.rho, self.momentum, self.epsilon);
        let v = ((&s[0] * rho)? + (g.sqr()? * (1.0 - rho))?)?;
        s[0] = v.clone();
        let denom = if self.centered {
            let i = s.len() - 1;
            let avg = ((&s[i] * rho)? + (g * (1.0 - rho))?)?;
            let d = ((v - avg.sqr()?)? + eps)?;
            s[i] = avg;
            d
        } else {
            (v + eps)?
        };
        let incr = ((g * lr)? / denom.sqrt()?)?;
        Ok(if mom > 0.0 {
            let m = ((&s[1] * mom)? + incr)?;
            s[1] = m.clone();
            (w - m)?
        } else {
            (w - incr)?
        })
    }
}
