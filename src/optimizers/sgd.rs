use super::base::optimizer;
use super::{f32_rounded, UpdateRule};
use crate::error::Result;
use candle_core::Tensor;

optimizer! {
    /// Stochastic gradient descent, as `keras.optimizers.SGD` (Keras 3):
    ///
    /// ```text
    /// m = momentum * m - lr * g;  w += m                        (momentum > 0)
    /// m = momentum * m - lr * g;  w += momentum * m - lr * g    (nesterov)
    /// w -= lr * g                                               (momentum = 0)
    /// ```
    ///
    /// Defaults: `learning_rate 0.01`, `momentum 0.0`, `nesterov false`.
    ///
    /// ```
    /// use kandle::optimizers::{Optimizer, SGD};
    /// let opt = SGD::new(0.1).momentum(0.9).nesterov(true);
    /// assert_eq!(opt.learning_rate(), 0.1);
    /// ```
    SGD("sgd", learning_rate = 0.01) {
        /// Momentum (default 0.0).
        momentum: f64 = 0.0,
        /// Nesterov momentum (default false).
        nesterov: bool = false,
    }
}

impl UpdateRule for SGD {
    fn slot_count(&self) -> usize {
        usize::from(f32_rounded(self.momentum) != 0.0)
    }

    fn update_step(&self, lr: f64, _t: u64, s: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor> {
        // Keras casts the Python-float momentum through float32 (`ops.cast(self.momentum, dtype)`).
        let mom = f32_rounded(self.momentum);
        let step = (g * lr)?;
        Ok(if mom != 0.0 {
            let m = ((&s[0] * mom)? - &step)?;
            s[0] = m.clone();
            if self.nesterov {
                (w + ((m * mom)? - step)?)?
            } else {
                (w + m)?
            }
        } else {
            (w - step)?
        })
    }
}
