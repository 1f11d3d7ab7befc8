use super::{clipping_access, schedule_setter, Optimizer, Slots};
use crate::error::Result;
use candle_core::{Tensor, Var};

/// Adamax, as `keras.optimizers.Adamax` (Keras 3):
/// `m += (g - m)(1 - beta_1); u = max(beta_2 u, |g|); w -= lr m / ((1 - beta_1^t)(u + eps))`.
///
/// Defaults: `learning_rate 0.001`, `beta_1 0.9`, `beta_2 0.999`, `epsilon 1e-7`.
///
/// ```
/// use kandle::optimizers::{Adamax, Optimizer};
/// assert_eq!(Adamax::default().learning_rate(), 0.001);
/// ```
#[derive(Debug, Clone)]
pub struct Adamax {
    lr: f64,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    slots: Slots,
}

impl Default for Adamax {
    fn default() -> Self {
        Adamax { lr: 1e-3, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, slots: Slots::default() }
    }
}

impl Adamax {
    /// Adamax with learning rate `lr` and Keras' other defaults.
    pub fn new(lr: f64) -> Self {
        Self::default().with_learning_rate(lr)
    }
    /// The learning rate (default 0.001).
    pub fn with_learning_rate(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    schedule_setter!();
    /// Decay of the first moment (default 0.9).
    pub fn beta_1(mut self, b: f64) -> Self {
        self.beta_1 = b;
        self
    }
    /// Decay of the infinity norm (default 0.999).
    pub fn beta_2(mut self, b: f64) -> Self {
        self.beta_2 = b;
        self
    }
    /// Keras' `epsilon`, added to the denominator for stability (default 1e-7).
    pub fn epsilon(mut self, e: f64) -> Self {
        self.epsilon = e;
        self
    }
}

impl Optimizer for Adamax {
    fn config(&self) -> Vec<(&'static str, f64)> {
        [("beta_1", self.beta_1), ("beta_2", self.beta_2), ("epsilon", self.epsilon)].to_vec()
    }
    fn name(&self) -> &'static str {
        "adamax"
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
        let t = (self.slots.iterations() + 1) as i32;
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        // Keras casts beta_1 through float32 for its power (as Adam).
        let b1p = super::f32_rounded(b1).powi(t);
        self.slots.step(2, vars, grads, |s, w, g| {
            s[0] = (&s[0] + ((g - &s[0])? * (1.0 - b1))?)?;
            s[1] = (&s[1] * b2)?.maximum(&g.abs()?)?;
            let denom = ((&s[1] + eps)? * (1.0 - b1p))?;
            Ok((w - ((&s[0] * lr)? / denom)?)?)
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
