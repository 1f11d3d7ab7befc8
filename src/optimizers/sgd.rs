use super::{clipping_access, schedule_setter, Optimizer, Slots};
use crate::error::Result;
use candle_core::{Tensor, Var};

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
#[derive(Debug, Clone)]
pub struct SGD {
    lr: f64,
    momentum: f64,
    nesterov: bool,
    slots: Slots,
}

impl Default for SGD {
    fn default() -> Self {
        SGD { lr: 0.01, momentum: 0.0, nesterov: false, slots: Slots::default() }
    }
}

impl SGD {
    /// SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self::default().with_learning_rate(lr)
    }
    /// The learning rate (default 0.01).
    pub fn with_learning_rate(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    schedule_setter!();
    /// Momentum (default 0.0).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Nesterov momentum (default false).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
}

impl Optimizer for SGD {
    fn config(&self) -> Vec<(&'static str, f64)> {
        [("momentum", self.momentum), ("nesterov", f64::from(u8::from(self.nesterov)))].to_vec()
    }
    fn name(&self) -> &'static str {
        "sgd"
    }
    fn learning_rate(&self) -> f64 {
        self.slots.lr(self.lr)
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn iterations(&self) -> u64 {
        self.slots.iterations()
    }

    fn apply_gradients(&mut self, vars: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        let lr = self.slots.lr(self.lr);
        super::check_lr(lr)?;
        // Keras casts the Python-float momentum through float32 (`ops.cast(self.momentum, dtype)`).
        let (mom, nesterov) = (super::f32_rounded(self.momentum), self.nesterov);
        let n = usize::from(mom != 0.0);
        self.slots.step(n, vars, grads, |s, w, g| {
            let step = (g * lr)?;
            Ok(if mom != 0.0 {
                let m = ((&s[0] * mom)? - &step)?;
                s[0] = m.clone();
                if nesterov {
                    (w + ((m * mom)? - step)?)?
                } else {
                    (w + m)?
                }
            } else {
                (w - step)?
            })
        })
    }

    fn slots(&self) -> Vec<Tensor> {
        self.slots.flat()
    }

    fn set_slots(&mut self, slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        self.slots.restore(usize::from(self.momentum != 0.0), slots, iterations)
    }
    clipping_access!();
}
