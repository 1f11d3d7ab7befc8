//! `BatchNormalization`, as `keras.layers.BatchNormalization`.

use super::{check_input, common_layer_methods, common_trait_methods, not_built, BuildContext, Common, Layer, Weight};
use crate::initializers::Initializer;
use crate::{Error, Result};
use candle_core::{Tensor, Var};

/// Normalises each channel (the last axis) by the batch's mean and variance in training and by
/// moving averages of them at inference, then scales by `gamma` and shifts by `beta`.
///
/// Keras' defaults: `momentum 0.99`, `epsilon 1e-3`, `center true`, `scale true`; `gamma`
/// ones, `beta` zeros, `moving_mean` zeros, `moving_variance` ones (the moving statistics are
/// non-trainable weights, updated in training as
/// `moving = moving * momentum + batch * (1 - momentum)`, with the batch's biased variance).
/// A frozen layer (`set_trainable(false)`) normalises with the moving statistics and leaves
/// them unchanged, in training too (Keras 3's rule for fine-tuning).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::BatchNormalization;
/// let m = Sequential::new().add(BatchNormalization::new().input_shape((4, 4, 8)));
/// assert_eq!(m.count_params()?, 4 * 8); // gamma, beta, moving_mean, moving_variance
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct BatchNormalization {
    common: Common,
    momentum: f64,
    epsilon: f64,
    center: bool,
    scale: bool,
    /// Frozen (`trainable = false`): inference mode even in training, as Keras 3.
    frozen: bool,
    built: Option<Built>,
}

#[derive(Debug)]
struct Built {
    input: Vec<usize>,
    gamma: Option<Var>,
    beta: Option<Var>,
    moving_mean: Var,
    moving_variance: Var,
}

impl Default for BatchNormalization {
    fn default() -> Self {
        BatchNormalization {
            common: Common::default(),
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
            frozen: false,
            built: None,
        }
    }
}

impl BatchNormalization {
    /// Keras' defaults.
    pub fn new() -> Self {
        Self::default()
    }
    common_layer_methods!();
    /// Momentum of the moving averages (default 0.99).
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    /// Added to the variance (default 1e-3).
    pub fn epsilon(mut self, e: f64) -> Self {
        self.epsilon = e;
        self
    }
    /// Learn `beta` (default true).
    pub fn center(mut self, c: bool) -> Self {
        self.center = c;
        self
    }
    /// Learn `gamma` (default true).
    pub fn scale(mut self, s: bool) -> Self {
        self.scale = s;
        self
    }
    fn label(&self) -> String {
        self.common.label("BatchNormalization")
    }
}

impl Layer for BatchNormalization {
    fn class_name(&self) -> &'static str {
        "BatchNormalization"
    }
    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if !(0.0..=1.0).contains(&self.momentum) || self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err(Error::invalid(
                "momentum",
                format!("{}: expected momentum in [0, 1] and epsilon > 0", self.label()),
            ));
        }
        if input_shape.is_empty() || input_shape.contains(&0) {
            return Err(Error::Shape {
                context: self.label(),
                expected: "an input of rank >= 1".into(),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(input_shape.to_vec())
    }

    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        let c = *input_shape.last().expect("rank >= 1");
        let make = |init: Initializer, ctx: &mut BuildContext| -> Result<Var> { ctx.weight(&init, &[c]) };
        self.built = Some(Built {
            input: input_shape.to_vec(),
            gamma: if self.scale { Some(make(Initializer::Ones, ctx)?) } else { None },
            beta: if self.center { Some(make(Initializer::Zeros, ctx)?) } else { None },
            moving_mean: make(Initializer::Zeros, ctx)?,
            moving_variance: make(Initializer::Ones, ctx)?,
        });
        Ok(out)
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), &b.input, x)?;
        let axes: Vec<usize> = (0..x.rank() - 1).collect();
        let (mean, var) = if train && !self.frozen {
            let mean = x.mean_keepdim(axes.as_slice())?;
            let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(axes.as_slice())?;
            let m = self.momentum;
            let flat = |t: &Tensor| t.detach().flatten_all();
            b.moving_mean.set(&((b.moving_mean.as_tensor() * m)? + (flat(&mean)? * (1.0 - m))?)?)?;
            b.moving_variance.set(&((b.moving_variance.as_tensor() * m)? + (flat(&var)? * (1.0 - m))?)?)?;
            (mean, var)
        } else {
            (b.moving_mean.as_detached_tensor(), b.moving_variance.as_detached_tensor())
        };
        let mut y = x.broadcast_sub(&mean)?.broadcast_div(&(var + self.epsilon)?.sqrt()?)?;
        if let Some(g) = &b.gamma {
            y = y.broadcast_mul(g.as_tensor())?;
        }
        if let Some(beta) = &b.beta {
            y = y.broadcast_add(beta.as_tensor())?;
        }
        Ok(y)
    }

    fn set_trainable(&mut self, trainable: bool) {
        self.frozen = !trainable;
    }

    fn weights(&self) -> Vec<Weight> {
        let Some(b) = &self.built else { return Vec::new() };
        let mut w = Vec::new();
        if let Some(g) = &b.gamma {
            w.push(Weight { name: "gamma".into(), var: g.clone(), trainable: true });
        }
        if let Some(beta) = &b.beta {
            w.push(Weight { name: "beta".into(), var: beta.clone(), trainable: true });
        }
        w.push(Weight { name: "moving_mean".into(), var: b.moving_mean.clone(), trainable: false });
        w.push(Weight { name: "moving_variance".into(), var: b.moving_variance.clone(), trainable: false });
        w
    }

    fn config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("momentum", self.momentum.to_string()),
            ("epsilon", self.epsilon.to_string()),
            ("center", self.center.to_string()),
            ("scale", self.scale.to_string()),
        ]
    }
}
