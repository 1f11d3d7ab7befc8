use super::base::optimizer;
use super::{f32_rounded, UpdateRule};
use crate::error::Result;
use candle_core::Tensor;

optimizer! {
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
    Adam("adam", learning_rate = 1e-3) {
        /// Decay of the first moment (default 0.9).
        beta_1: f64 = 0.9,
        /// Decay of the second moment (default 0.999).
        beta_2: f64 = 0.999,
        /// Epsilon (default 1e-7).
        epsilon: f64 = 1e-7,
        /// AMSGrad (default false).
        amsgrad: bool = false,
    }
}

/// Adam's step for the moments `(beta_1, beta_2, epsilon, amsgrad)`, shared by [`Adam`] and
/// [`AdamW`].
fn adam_step(
    (b1, b2, eps, ams): (f64, f64, f64, bool),
    lr: f64,
    t: u64,
    s: &mut [Tensor],
    w: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let t = t as i32;
    // Keras casts its Python-float betas through float32 before the bias-correction powers
    // (`ops.cast(self.beta_1, dtype)`): the same here, so that f64 runs match it to 1e-9.
    let alpha = lr * (1.0 - f32_rounded(b2).powi(t)).sqrt() / (1.0 - f32_rounded(b1).powi(t));
    let m = (&s[0] + ((g - &s[0])? * (1.0 - b1))?)?;
    let mut v = (&s[1] + ((g.sqr()? - &s[1])? * (1.0 - b2))?)?;
    s[0] = m.clone();
    s[1] = v.clone();
    if ams {
        v = s[2].maximum(&v)?;
        s[2] = v.clone();
    }
    Ok((w - ((m * alpha)? / (v.sqrt()? + eps)?)?)?)
}

impl UpdateRule for Adam {
    fn slot_count(&self) -> usize {
        2 + usize::from(self.amsgrad)
    }

    fn update_step(&self, lr: f64, t: u64, s: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor> {
        adam_step((self.beta_1, self.beta_2, self.epsilon, self.amsgrad), lr, t, s, w, g)
    }
}

optimizer! {
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
    AdamW("adamw", learning_rate = 1e-3, weight_decay = 0.004) {
        /// Decay of the first moment (default 0.9).
        beta_1: f64 = 0.9,
        /// Decay of the second moment (default 0.999).
        beta_2: f64 = 0.999,
        /// Epsilon (default 1e-7).
        epsilon: f64 = 1e-7,
        /// AMSGrad (default false).
        amsgrad: bool = false,
    }
}

impl AdamW {
    /// The decay rate.
    pub fn weight_decay_rate(&self) -> f64 {
        self.base.weight_decay().unwrap_or(0.0)
    }

    /// Sets the Adam settings through an [`Adam`] (`.adam(|a| a.beta_1(0.8))`).
    pub fn adam(mut self, f: impl FnOnce(Adam) -> Adam) -> Self {
        let a = f(Adam::default().beta_1(self.beta_1).beta_2(self.beta_2).epsilon(self.epsilon).amsgrad(self.amsgrad));
        (self.beta_1, self.beta_2, self.epsilon, self.amsgrad) = (a.beta_1, a.beta_2, a.epsilon, a.amsgrad);
        self
    }
}

impl UpdateRule for AdamW {
    fn slot_count(&self) -> usize {
        2 + usize::from(self.amsgrad)
    }

    fn update_step(&self, lr: f64, t: u64, s: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor> {
        adam_step((self.beta_1, self.beta_2, self.epsilon, self.amsgrad), lr, t, s, w, g)
    }
}
