//! `BatchNormalization`, as `keras.layers.BatchNormalization`.

use super::{
    check_input, common_layer_methods, common_trait_methods, not_built, single_input, Backward, BuildContext,
    CallContext, Capabilities, ChannelAffine, Common, Config, Ending, Fusion, Layer, Saved, Weight,
};
use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels::BnActivation;
use candle_core::{DType, Tensor, Var};

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

    /// The pass by the moving statistics (inference, or a frozen layer), ending with the
    /// activation `act`, in one pass of the CPU's kernel (differentiable by candle's
    /// autograd): `None` off the CPU and for other dtypes.
    fn fixed_pass(&self, x: &Tensor, act: Option<BnActivation>) -> Result<Option<Tensor>> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        if !(crate::kernels::cpu_kernels(x.device()) && matches!(x.dtype(), DType::F32 | DType::F64)) {
            return Ok(None);
        }
        check_input(|| self.label(), &b.input, x)?;
        let (scale, shift) = self.scale_shift(x.dtype())?;
        Ok(Some(crate::kernels::channel_affine(x, &scale, &shift, act)?))
    }

    /// The moving statistics as one scale and one shift per channel, in `dtype`:
    /// `gamma / sqrt(var + epsilon)` and `beta - mean * scale` (attached to gamma and beta, for
    /// candle's autograd).
    fn scale_shift(&self, dtype: DType) -> Result<(Tensor, Tensor)> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let var = b.moving_variance.as_detached_tensor().to_dtype(dtype)?;
        let inv_std = (var + self.epsilon)?.sqrt()?.recip()?;
        let scale = match &b.gamma {
            Some(g) => (g.as_tensor().to_dtype(dtype)? * inv_std)?,
            None => inv_std,
        };
        let shift = (b.moving_mean.as_detached_tensor().to_dtype(dtype)? * &scale)?.neg()?;
        let shift = match &b.beta {
            Some(beta) => (shift + beta.as_tensor().to_dtype(dtype)?)?,
            None => shift,
        };
        Ok((scale, shift))
    }

    /// The training pass (see [`Backward::forward_saved`]), with a fused ReLU when `ending` is
    /// `Activation(Relu)`.
    fn saved_pass(&self, x: &Tensor, ending: Ending, training: bool) -> Result<(Tensor, Saved)> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), &b.input, x)?;
        let batch = training && !self.frozen;
        let (mean, var) = if batch {
            let (mean, var) = crate::kernels::batch_moments(x)?;
            let m = self.momentum;
            b.moving_mean.set(&((b.moving_mean.as_tensor() * m)? + (&mean * (1.0 - m))?)?)?;
            b.moving_variance.set(&((b.moving_variance.as_tensor() * m)? + (&var * (1.0 - m))?)?)?;
            (mean, var)
        } else {
            (b.moving_mean.as_detached_tensor(), b.moving_variance.as_detached_tensor())
        };
        let inv_std = (var + self.epsilon)?.sqrt()?.recip()?;
        let (gamma, beta) =
            (b.gamma.as_ref().map(|g| g.as_detached_tensor()), b.beta.as_ref().map(|v| v.as_detached_tensor()));
        let act = ending.fused_activation().and_then(kernel_activation);
        let y = crate::kernels::batch_norm_act(x, &mean, &inv_std, gamma.as_ref(), beta.as_ref(), act)?;
        // `seed` 1: batch statistics, whose gradient flows through the mean and variance too.
        let saved = Saved { tensors: vec![x.clone(), mean, inv_std], seed: batch as u64, ending, ..Saved::default() };
        Ok((y, saved))
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
            // The moving statistics: on the CPU, one pass (folded into a scale and a shift).
            if let Some(y) = self.fixed_pass(x, None)? {
                return Ok(y);
            }
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
            w.push(Weight::new("gamma", g.clone()));
        }
        if let Some(beta) = &b.beta {
            w.push(Weight::new("beta", beta.clone()));
        }
        w.push(Weight::new("moving_mean", b.moving_mean.clone()).non_trainable());
        w.push(Weight::new("moving_variance", b.moving_variance.clone()).non_trainable());
        w
    }

    fn get_config(&self) -> Config {
        Config::new()
            .set("momentum", self.momentum)
            .set("epsilon", self.epsilon)
            .set("center", self.center)
            .set("scale", self.scale)
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), fusion: Some(self), channel_affine: Some(self), ..Capabilities::default() }
    }
}

impl ChannelAffine for BatchNormalization {
    /// By the moving statistics at inference and while frozen (as its own pass runs then), on
    /// the CPU in f32.
    fn fixed_affine(&self, training: bool) -> Result<Option<(Tensor, Tensor)>> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let device = b.moving_mean.device();
        if (training && !self.frozen) || !crate::kernels::cpu_kernels(device) || b.moving_mean.dtype() != DType::F32 {
            return Ok(None);
        }
        Ok(Some(self.scale_shift(DType::F32)?))
    }
}

/// The activations the normalisation's kernels end with.
fn kernel_activation(a: Activation) -> Option<BnActivation> {
    match a {
        Activation::Relu => Some(BnActivation::Relu(f64::INFINITY)),
        Activation::Relu6 => Some(BnActivation::Relu(6.0)),
        Activation::Silu => Some(BnActivation::Silu),
        _ => None,
    }
}

impl Fusion for BatchNormalization {
    /// A ReLU, ReLU6 or SiLU that follows (a standalone `Activation('relu')`, `ReLU()`,
    /// `ReLU(6.0)`, `Activation('relu6')`, `Activation('swish')`) runs inside the
    /// normalisation's passes (the ReLU bit for bit as the separate layer would; ReLU6's
    /// gradient TensorFlow's, 0 at 0 and 6).
    fn can_end_with(&self, ending: Ending) -> bool {
        matches!(ending, Ending::Activation(a) if kernel_activation(a).is_some()) && self.has_backward()
    }

    fn forward_ending(&self, x: &Tensor, ending: Ending, ctx: &CallContext) -> Result<Tensor> {
        match ending {
            Ending::Own | Ending::PreActivation => self.forward(x, ctx.training),
            Ending::Activation(a) if !ctx.training || self.frozen => match self.fixed_pass(x, kernel_activation(a))? {
                Some(y) => Ok(y),
                None => a.apply(&self.forward(x, ctx.training)?),
            },
            Ending::Activation(a) => a.apply(&self.forward(x, ctx.training)?),
            Ending::Pooled { .. } => {
                Err(Error::invalid("layer", format!("{} cannot end with a max pooling", self.label())))
            }
        }
    }
}

impl Backward for BatchNormalization {
    fn has_backward(&self) -> bool {
        self.built.as_ref().is_some_and(|b| crate::kernels::cpu_kernels(b.moving_mean.device()))
    }

    /// With batch statistics (training, not frozen) it updates the moving averages; it keeps
    /// the input, the mean and `1 / sqrt(var + eps)` for the backward pass. Kernels of a few
    /// passes over memory on the CPU (`kernels::batch_norm`).
    fn forward_saved(&self, xs: &[Tensor], ending: Ending, ctx: &CallContext) -> Result<(Tensor, Saved)> {
        self.saved_pass(single_input(|| self.label(), xs)?, ending, ctx.training)
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let [x, mean, inv_std] = &saved.tensors[..] else {
            return Err(crate::error::Error::invalid("saved", format!("{}: no saved forward pass", self.label())));
        };
        let gamma = b.gamma.as_ref().map(|g| g.as_detached_tensor());
        let beta = b.beta.as_ref().map(|g| g.as_detached_tensor());
        let act = saved.ending.fused_activation().and_then(kernel_activation).map(|a| (beta.as_ref(), a));
        let (dx, sum_dy, sum_dy_xhat) = crate::kernels::batch_norm_backward_act(
            x,
            dy,
            mean,
            inv_std,
            gamma.as_ref(),
            act,
            saved.seed == 1,
            need_input_grad,
        )?;
        let mut grads = Vec::new();
        if b.gamma.is_some() {
            grads.push(sum_dy_xhat);
        }
        if b.beta.is_some() {
            grads.push(sum_dy);
        }
        Ok((vec![dx], grads))
    }
}

/// Normalises each sample over its last axis (the features of a token, the channels of a
/// pixel) by its own mean and variance, then scales by `gamma` and shifts by `beta`, as
/// `keras.layers.LayerNormalization(axis=-1)`. Keras' defaults: `epsilon 1e-3`, `center true`,
/// `scale true`, `gamma` ones, `beta` zeros. The same in training and inference; candle's
/// autograd differentiates it.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::LayerNormalization;
/// let m = Sequential::new().add(LayerNormalization::new().input_shape((7, 7, 16)));
/// assert_eq!(m.count_params()?, 2 * 16);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct LayerNormalization {
    common: Common,
    epsilon: f64,
    center: bool,
    scale: bool,
    built: Option<(Vec<usize>, Option<Var>, Option<Var>)>,
}

impl Default for LayerNormalization {
    fn default() -> Self {
        LayerNormalization { common: Common::default(), epsilon: 1e-3, center: true, scale: true, built: None }
    }
}

impl LayerNormalization {
    /// Keras' defaults.
    pub fn new() -> Self {
        Self::default()
    }
    common_layer_methods!();
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
}

impl Layer for LayerNormalization {
    fn class_name(&self) -> &'static str {
        "LayerNormalization"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err(Error::invalid(
                "epsilon",
                format!("{}: expected epsilon > 0, received {}", self.common.label("LayerNormalization"), self.epsilon),
            ));
        }
        if input_shape.is_empty() || input_shape.contains(&0) {
            return Err(Error::Shape {
                context: self.common.label("LayerNormalization"),
                expected: "an input of rank >= 1".into(),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(input_shape.to_vec())
    }
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        let c = *input_shape.last().expect("rank >= 1");
        let gamma = if self.scale { Some(ctx.weight(&Initializer::Ones, &[c])?) } else { None };
        let beta = if self.center { Some(ctx.weight(&Initializer::Zeros, &[c])?) } else { None };
        self.built = Some((input_shape.to_vec(), gamma, beta));
        Ok(out)
    }
    fn built(&self) -> bool {
        self.built.is_some()
    }
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (input, gamma, beta) =
            self.built.as_ref().ok_or_else(|| not_built(self.common.label("LayerNormalization")))?;
        check_input(|| self.common.label("LayerNormalization"), input, x)?;
        let last = x.rank() - 1;
        let mean = x.mean_keepdim(last)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(last)?;
        let mut y = centred.broadcast_div(&(var + self.epsilon)?.sqrt()?)?;
        if let Some(g) = gamma {
            y = y.broadcast_mul(g.as_tensor())?;
        }
        if let Some(b) = beta {
            y = y.broadcast_add(b.as_tensor())?;
        }
        Ok(y)
    }
    fn weights(&self) -> Vec<Weight> {
        let Some((_, gamma, beta)) = &self.built else { return Vec::new() };
        let mut w = Vec::new();
        if let Some(g) = gamma {
            w.push(Weight::new("gamma", g.clone()));
        }
        if let Some(b) = beta {
            w.push(Weight::new("beta", b.clone()));
        }
        w
    }
    fn get_config(&self) -> Config {
        Config::new()
            .set("axis", -1i64)
            .set("epsilon", self.epsilon)
            .set("center", self.center)
            .set("scale", self.scale)
    }
}
