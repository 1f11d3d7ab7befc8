use super::{clipping_access, f32_rounded, schedule_setter, Optimizer, Slots};
use crate::error::Result;
use candle_core::{Tensor, Var};

/// Adam, as `keras.optimizers.Adam` (Keras 3):
///
/// ```text
/// t = iterations + 1
/// alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
/// m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
/// w -= alpha * m / (sqrt(v) + epsilon)
/// ```
///
/// Defaults: `learning_rate 0.001`, `beta_1 0.9`, `beta_2 0.999`, `epsilon 1e-7`,
/// `amsgrad false`.
///
/// ```
/// use kandle::optimizers::{Adam, Optimizer};
/// assert_eq!(Adam::default().learning_rate(), 0.001);
/// ```
#[derive(Debug, Clone)]
pub struct Adam {
    lr: f64,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    amsgrad: bool,
    slots: Slots,
}

impl Default for Adam {
    fn default() -> Self {
        Adam { lr: 1e-3, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, amsgrad: false, slots: Slots::default() }
    }
}

impl Adam {
    /// Adam with learning rate `lr` and Keras' other defaults.
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
    pub fn beta_1(mut self, beta_1: f64) -> Self {
        self.beta_1 = beta_1;
        self
    }
    /// Decay of the second moment (default 0.999).
    pub fn beta_2(mut self, beta_2: f64) -> Self {
        self.beta_2 = beta_2;
        self
    }
    /// Epsilon (default 1e-7).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }
    /// AMSGrad (default false).
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }
}

impl Optimizer for Adam {
    fn config(&self) -> Vec<(&'static str, f64)> {
        [
            ("beta_1", self.beta_1),
            ("beta_2", self.beta_2),
            ("epsilon", self.epsilon),
            ("amsgrad", f64::from(u8::from(self.amsgrad))),
        ]
        .to_vec()
    }
    fn name(&self) -> &'static str {
        "adam"
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
        let (b1, b2, eps, ams) = (self.beta_1, self.beta_2, self.epsilon, self.amsgrad);
        // Keras casts its Python-float betas through float32 before the bias-correction powers
        // (`ops.cast(self.beta_1, dtype)`): the same here, so that f64 runs match it to 1e-9.
        let alpha = lr * (1.0 - f32_rounded(b2).powi(t)).sqrt() / (1.0 - f32_rounded(b1).powi(t));
        self.slots.step(2 + usize::from(ams), vars, grads, |s, w, g| {
            let m = (&s[0] + ((g - &s[0])? * (1.0 - b1))?)?;
            let mut v = (&s[1] + ((g.sqr()? - &s[1])? * (1.0 - b2))?)?;
            s[0] = m.clone();
            s[1] = v.clone();
            if ams {
                v = s[2].maximum(&v)?;
                s[2] = v.clone();
            }
            Ok((w - ((m * alpha)? / (v.sqrt()? + eps)?)?)?)
        })
    }

    fn slots(&self) -> Vec<Tensor> {
        self.slots.flat()
    }

    fn set_slots(&mut self, slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        self.slots.restore(2 + usize::from(self.amsgrad), slots, iterations)
    }
    clipping_access!();
}

/// Adam with decoupled weight decay, as `keras.optimizers.AdamW`: before each Adam step,
/// `w -= w * weight_decay * lr`.
///
/// Defaults: `learning_rate 0.001`, `weight_decay 0.004`, `beta_1 0.9`, `beta_2 0.999`,
/// `epsilon 1e-7`, `amsgrad false`.
///
/// ```
/// use kandle::optimizers::{AdamW, Optimizer};
/// assert_eq!(AdamW::default().weight_decay_rate(), 0.004);
/// ```
#[derive(Debug, Clone)]
pub struct AdamW {
    adam: Adam,
    weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { adam: Adam::default(), weight_decay: 0.004 }
    }
}

impl AdamW {
    /// AdamW with learning rate `lr` and Keras' other defaults.
    pub fn new(lr: f64) -> Self {
        AdamW { adam: Adam::new(lr), weight_decay: 0.004 }
    }
    /// The decay rate (default 0.004).
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
    /// The decay rate.
    pub fn weight_decay_rate(&self) -> f64 {
        self.weight_decay
    }
    /// The underlying Adam's settings.
    pub fn adam(mut self, f: impl FnOnce(Adam) -> Adam) -> Self {
        self.adam = f(self.adam);
        self
    }
}

impl Optimizer for AdamW {
    fn config(&self) -> Vec<(&'static str, f64)> {
        let mut c = self.adam.config();
        c.push(("weight_decay", self.weight_decay));
        c
    }
    fn name(&self) -> &'static str {
        "adamw"
    }
    fn learning_rate(&self) -> f64 {
        self.adam.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.adam.set_learning_rate(lr);
    }
    fn iterations(&self) -> u64 {
        self.adam.iterations()
    }
    fn apply_gradients(&mut self, vars: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        let lr = self.adam.learning_rate();
        super::check_lr(lr)?;
        for (v, g) in vars.iter().zip(grads) {
            if g.is_some() {
                let w = v.as_detached_tensor();
                v.set(&(&w - (&w * (self.weight_decay * lr))?)?)?;
            }
        }
        self.adam.apply_gradients(vars, grads)
    }
    fn slots(&self) -> Vec<Tensor> {
        self.adam.slots()
    }
    fn set_slots(&mut self, slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        self.adam.set_slots(slots, iterations)
    }
    fn clipping(&self) -> super::Clipping {
        self.adam.clipping()
    }
    fn set_clipping(&mut self, clipping: super::Clipping) {
        self.adam.set_clipping(clipping);
    }
    fn schedule(&self) -> Option<std::sync::Arc<dyn super::LearningRateSchedule>> {
        self.adam.schedule()
    }
    fn set_schedule(&mut self, schedule: Option<std::sync::Arc<dyn super::LearningRateSchedule>>) {
        self.adam.set_schedule(schedule);
    }
}
