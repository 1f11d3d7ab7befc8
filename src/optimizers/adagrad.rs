use super::{clipping_access, schedule_setter, Optimizer, Slots};
use crate::error::Result;
use candle_core::{Tensor, Var};

/// Adagrad, as `keras.optimizers.Adagrad` (Keras 3):
/// `acc += g^2; w -= lr * g / sqrt(acc + epsilon)`.
///
/// Defaults: `learning_rate 0.001`, `initial_accumulator_value 0.1`, `epsilon 1e-7`.
///
/// ```
/// use kandle::optimizers::{Adagrad, Optimizer};
/// assert_eq!(Adagrad::default().learning_rate(), 0.001);
/// ```
#[derive(Debug, Clone)]
pub struct Adagrad {
    lr: f64,
    epsilon: f64,
    slots: Slots,
}

impl Default for Adagrad {
    fn default() -> Self {
        Adagrad { lr: 1e-3, epsilon: 1e-7, slots: Slots { init: 0.1, ..Slots::default() } }
    }
}

impl Adagrad {
    /// Adagrad with learning rate `lr` and Keras' other defaults.
    pub fn new(lr: f64) -> Self {
        Self::default().with_learning_rate(lr)
    }
    /// The learning rate (default 0.001).
    pub fn with_learning_rate(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    schedule_setter!();
    /// The accumulators' starting value (default 0.1).
    pub fn initial_accumulator_value(mut self, v: f64) -> Self {
        self.slots.init = v;
        self
    }
    /// Epsilon (default 1e-7).
    pub fn epsilon(mut self, e: f64) -> Self {
        self.epsilon = e;
        self
    }
}

impl Optimizer for Adagrad {
    fn config(&self) -> Vec<(&'static str, f64)> {
        [("epsilon", self.epsilon), ("initial_accumulator_value", self.slots.init)].to_vec()
    }
    fn name(&self) -> &'static str {
        "adagrad"
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
        let eps = self.epsilon;
        self.slots.step(1, vars, grads, |s, w, g| {
            s[0] = (&s[0] + g.sqr()?)?;
            Ok((w - ((g * lr)? / (&s[0] + eps)?.sqrt()?)?)?)
        })
    }
    fn slots(&self) -> Vec<Tensor> {
        self.slots.flat()
    }
    fn set_slots(&mut self, slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        self.slots.restore(1, slots, iterations)
    }
    clipping_access!();
}
