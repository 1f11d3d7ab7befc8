use super::{clipping_access, schedule_setter, Optimizer, Slots};
use crate::error::Result;
use candle_core::{Tensor, Var};

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
#[derive(Debug, Clone)]
pub struct Adadelta {
    lr: f64,
    rho: f64,
    epsilon: f64,
    slots: Slots,
}

impl Default for Adadelta {
    fn default() -> Self {
        Adadelta { lr: 1e-3, rho: 0.95, epsilon: 1e-7, slots: Slots::default() }
    }
}

impl Adadelta {
    /// Adadelta with learning rate `lr` and Keras' other defaults.
    pub fn new(lr: f64) -> Self {
        Self::default().with_learning_rate(lr)
    }
    /// The learning rate (default 0.001).
    pub fn with_learning_rate(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    schedule_setter!();
    /// Decay rate (default 0.95).
    pub fn rho(mut self, rho: f64) -> Self {
        self.rho = rho;
        self
    }
    /// Epsilon (default 1e-7).
    pub fn epsilon(mut self, e: f64) -> Self {
        self.epsilon = e;
        self
    }
}

impl Optimizer for Adadelta {
    fn config(&self) -> Vec<(&'static str, f64)> {
        [("rho", self.rho), ("epsilon", self.epsilon)].to_vec()
    }
    fn name(&self) -> &'static str {
        "adadelta"
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
        let (rho, eps) = (self.rho, self.epsilon);
        self.slots.step(2, vars, grads, |s, w, g| {
            s[0] = ((&s[0] * rho)? + (g.sqr()? * (1.0 - rho))?)?;
            let delta = ((&s[1] + eps)?.sqrt()? * g)?.div(&(&s[0] + eps)?.sqrt()?)?.neg()?;
            s[1] = ((&s[1] * rho)? + (delta.sqr()? * (1.0 - rho))?)?;
            Ok((w + (delta * lr)?)?)
        })
    }
    fn slots(&self) -> Vec<Tensor> {
        self.slots.flat()
    }
    fn set_slots(&mut self, slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        self.slots.restore(2, slots, iterations)
    }
    clipping_access!();
}
