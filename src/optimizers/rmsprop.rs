use super::{clipping_access, schedule_setter, Optimizer, Slots};
use crate::error::Result;
use candle_core::{Tensor, Var};

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
#[derive(Debug, Clone)]
pub struct RMSprop {
    lr: f64,
    rho: f64,
    momentum: f64,
    epsilon: f64,
    centered: bool,
    slots: Slots,
}

impl Default for RMSprop {
    fn default() -> Self {
        RMSprop { lr: 1e-3, rho: 0.9, momentum: 0.0, epsilon: 1e-7, centered: false, slots: Slots::default() }
    }
}

impl RMSprop {
    /// RMSprop with Keras' defaults and learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self::default().with_learning_rate(lr)
    }
    /// The learning rate (default 0.001).
    pub fn with_learning_rate(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    schedule_setter!();
    /// The discount of the squared-gradient average (default 0.9).
    pub fn rho(mut self, rho: f64) -> Self {
        self.rho = rho;
        self
    }
    /// Momentum (default 0.0).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Epsilon (default 1e-7).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }
    /// Centered RMSprop (default false).
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }
    fn n_slots(&self) -> usize {
        1 + usize::from(self.momentum > 0.0) + usize::from(self.centered)
    }
}

impl Optimizer for RMSprop {
    fn config(&self) -> Vec<(&'static str, f64)> {
        [
            ("rho", self.rho),
            ("momentum", self.momentum),
            ("epsilon", self.epsilon),
            ("centered", f64::from(u8::from(self.centered))),
        ]
        .to_vec()
    }
    fn name(&self) -> &'static str {
        "rmsprop"
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
        let (rho, mom, eps, centered) = (self.rho, self.momentum, self.epsilon, self.centered);
        self.slots.step(self.n_slots(), vars, grads, |s, w, g| {
            let v = ((&s[0] * rho)? + (g.sqr()? * (1.0 - rho))?)?;
            s[0] = v.clone();
            let denom = if centered {
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
        })
    }

    fn slots(&self) -> Vec<Tensor> {
        self.slots.flat()
    }

    fn set_slots(&mut self, slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        let n = self.n_slots();
        self.slots.restore(n, slots, iterations)
    }
    clipping_access!();
}
