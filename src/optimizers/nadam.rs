use super::{clipping_access, schedule_setter, Optimizer, Slots};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor, Var};

/// Nadam, as `keras.optimizers.Nadam` (Keras 3): Adam with Nesterov momentum and Keras'
/// momentum schedule `u_t = beta_1 (1 - 0.5 * 0.96^t)`.
///
/// Defaults: `learning_rate 0.001`, `beta_1 0.9`, `beta_2 0.999`, `epsilon 1e-7`.
///
/// ```
/// use kandle::optimizers::{Nadam, Optimizer};
/// assert_eq!(Nadam::default().learning_rate(), 0.001);
/// ```
#[derive(Debug, Clone)]
pub struct Nadam {
    lr: f64,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    u_product: f64,
    slots: Slots,
}

impl Default for Nadam {
    fn default() -> Self {
        Nadam { lr: 1e-3, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, u_product: 1.0, slots: Slots::default() }
    }
}

impl Nadam {
    /// Nadam with learning rate `lr` and Keras' other defaults.
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
    /// Decay of the second moment (default 0.999).
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

impl Optimizer for Nadam {
    fn config(&self) -> Vec<(&'static str, f64)> {
        [("beta_1", self.beta_1), ("beta_2", self.beta_2), ("epsilon", self.epsilon)].to_vec()
    }
    fn name(&self) -> &'static str {
        "nadam"
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
        let t = (self.slots.iterations() + 1) as f64;
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        // Keras keeps the momentum product with the Python floats, and casts beta_1, beta_2
        // and the decay 0.96 through float32 in the step itself: the same here.
        self.u_product *= b1 * (1.0 - 0.5 * 0.96f64.powf(t));
        let (b1, b2, decay) = (super::f32_rounded(b1), super::f32_rounded(b2), super::f32_rounded(0.96));
        let u_t = b1 * (1.0 - 0.5 * decay.powf(t));
        let u_t1 = b1 * (1.0 - 0.5 * decay.powf(t + 1.0));
        let (up_t, up_t1) = (self.u_product, self.u_product * u_t1);
        let b2p = b2.powf(t);
        self.slots.step(2, vars, grads, |s, w, g| {
            s[0] = (&s[0] + ((g - &s[0])? * (1.0 - b1))?)?;
            s[1] = (&s[1] + ((g.sqr()? - &s[1])? * (1.0 - b2))?)?;
            let m_hat = ((&s[0] * (u_t1 / (1.0 - up_t1)))? + (g * ((1.0 - u_t) / (1.0 - up_t)))?)?;
            let v_hat = (&s[1] / (1.0 - b2p))?;
            Ok((w - ((m_hat * lr)? / (v_hat.sqrt()? + eps)?)?)?)
        })
    }
    fn slots(&self) -> Vec<Tensor> {
        let mut v = self.slots.flat();
        if let Ok(t) = Tensor::new(&[self.u_product], &Device::Cpu) {
            v.push(t);
        }
        v
    }
    fn set_slots(&mut self, mut slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        let u = slots.pop().ok_or_else(|| Error::invalid("slots", "Nadam's state ends with its momentum product"))?;
        self.u_product =
            u.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?.first().copied().unwrap_or(1.0);
        self.slots.restore(2, slots, iterations)
    }
    clipping_access!();
}
