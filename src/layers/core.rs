use super::{
    check_input, common_layer_methods, common_trait_methods, not_built, BuildContext, Common, Layer, Saved, Weight,
};
use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels;
use crate::mixed_precision::DTypePolicy;
use crate::regularizers::Regularizer;
use candle_core::{Tensor, Var};
use rand::RngCore;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fully connected layer, as `keras.layers.Dense`: `activation(x . kernel + bias)` over the
/// last axis.
///
/// Keras' defaults: no activation, `use_bias true`, `glorot_uniform` kernel of shape
/// `(input_dim, units)`, `zeros` bias.
///
/// ```
/// use kandle::prelude::*;
/// let model = Sequential::new().add(Dense::new(10).activation(Activation::Softmax).input_shape(512));
/// assert_eq!(model.count_params()?, 5130);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct Dense {
    common: Common,
    units: usize,
    activation: Activation,
    use_bias: bool,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    kernel_regularizer: Option<Regularizer>,
    bias_regularizer: Option<Regularizer>,
    built: Option<(Vec<usize>, Var, Option<Var>)>,
}

impl Dense {
    /// A dense layer with `units` outputs.
    pub fn new(units: usize) -> Self {
        Dense {
            common: Common::default(),
            units,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            bias_regularizer: None,
            built: None,
        }
    }

    common_layer_methods!();

    /// The activation applied to the output (default: none).
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Whether to add a bias (default `true`).
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// The kernel initialiser (default glorot_uniform).
    pub fn kernel_initializer(mut self, init: Initializer) -> Self {
        self.kernel_initializer = init;
        self
    }

    /// The bias initialiser (default zeros).
    pub fn bias_initializer(mut self, init: Initializer) -> Self {
        self.bias_initializer = init;
        self
    }

    /// A penalty on the kernel added to the loss, as Keras' `kernel_regularizer` (default
    /// none): `.kernel_regularizer(Regularizer::l2(1e-4))`.
    pub fn kernel_regularizer(mut self, r: Regularizer) -> Self {
        self.kernel_regularizer = Some(r);
        self
    }

    /// A penalty on the bias added to the loss, as Keras' `bias_regularizer` (default none).
    pub fn bias_regularizer(mut self, r: Regularizer) -> Self {
        self.bias_regularizer = Some(r);
        self
    }

    fn label(&self) -> String {
        self.common.label("Dense")
    }

    /// The training forward pass ending with `fused` (or the layer's own activation).
    fn saved_pass(&self, x: &Tensor, pre_activation: bool, fused: Option<Activation>) -> Result<(Tensor, Saved)> {
        let (input, kernel, bias) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), input, x)?;
        let bf16 = self.common.dtype_policy == DTypePolicy::MixedBfloat16;
        // Under mixed_bfloat16 the products take bf16 values (summed in f32); the rounded
        // input is kept for the kernel's gradient.
        let x = &if bf16 { kernels::round_bf16(x, false)? } else { x.clone() };
        let kernel = if bf16 { kernels::round_bf16(kernel.as_tensor(), false)? } else { kernel.as_tensor().clone() };
        let mut y = x.matmul(&kernel.detach())?;
        if let Some(b) = bias {
            y = y.broadcast_add(&b.as_tensor().detach())?;
        }
        let act = if pre_activation { Activation::Linear } else { fused.unwrap_or(self.activation) };
        let z = y;
        let y = act.apply(&z)?;
        let y = self.output(y)?;
        // GELU and SiLU differentiate from their input: keep it.
        let tensors = if act.needs_input() { vec![x.clone(), y.clone(), z] } else { vec![x.clone(), y.clone()] };
        Ok((y, Saved { tensors, pre_activation, activation: fused, ..Saved::default() }))
    }

    /// The layer's output in its compute dtype: rounded to bf16 under `mixed_bfloat16`.
    fn output(&self, y: Tensor) -> Result<Tensor> {
        Ok(if self.common.dtype_policy == DTypePolicy::MixedBfloat16 { kernels::round_bf16(&y, true)? } else { y })
    }

    fn linear(&self, x: &Tensor) -> Result<Tensor> {
        let (input, kernel, bias) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), input, x)?;
        let bf16 = self.common.dtype_policy == DTypePolicy::MixedBfloat16;
        let (x, kernel) = if bf16 {
            // the gradients of input and kernel stay f32 sums, as the own backward pass's (the
            // output's rounding rounds the gradient arriving at the products)
            (kernels::round_bf16(x, false)?, kernels::round_bf16(kernel.as_tensor(), false)?)
        } else {
            (x.clone(), kernel.as_tensor().clone())
        };
        let y = if x.rank() == 2 { x.matmul(&kernel)? } else { x.broadcast_matmul(&kernel)? };
        Ok(match bias {
            Some(b) => y.broadcast_add(b.as_tensor())?,
            None => y,
        })
    }
}

impl Layer for Dense {
    fn class_name(&self) -> &'static str {
        "Dense"
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if self.units == 0 {
            return Err(Error::invalid("units", format!("{}: expected a positive number, received 0", self.label())));
        }
        for (r, arg) in [(self.kernel_regularizer, "kernel_regularizer"), (self.bias_regularizer, "bias_regularizer")] {
            r.map(|r| r.check(arg)).transpose().map_err(|e| Error::invalid(arg, format!("{}: {e}", self.label())))?;
        }
        if input_shape.is_empty() || input_shape.contains(&0) {
            return Err(Error::Shape {
                context: self.label(),
                expected: "an input of rank >= 1 with no zero dimension".into(),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        let mut out = input_shape.to_vec();
        *out.last_mut().expect("rank >= 1") = self.units;
        Ok(out)
    }

    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        let fan_in = *input_shape.last().expect("rank >= 1");
        let kernel = ctx.weight(&self.kernel_initializer, &[fan_in, self.units])?;
        let bias = if self.use_bias { Some(ctx.weight(&self.bias_initializer, &[self.units])?) } else { None };
        self.built = Some((input_shape.to_vec(), kernel, bias));
        Ok(out)
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.output(self.activation.apply(&self.linear(x)?)?)
    }

    fn activation(&self) -> Activation {
        self.activation
    }

    fn forward_pre_activation(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.output(self.linear(x)?)
    }

    fn weights(&self) -> Vec<Weight> {
        let Some((_, k, b)) = &self.built else { return Vec::new() };
        let mut w = vec![Weight::new("kernel", k.clone()).regularizer(self.kernel_regularizer)];
        if let Some(b) = b {
            w.push(Weight::new("bias", b.clone()).regularizer(self.bias_regularizer));
        }
        w
    }

    fn has_backward(&self, _pre_activation: bool) -> bool {
        let Some((input, kernel, _)) = &self.built else { return false };
        crate::kernels::cpu_kernels(kernel.device()) && input.len() == 1
    }

    fn forward_saved(&self, x: &Tensor, pre_activation: bool) -> Result<(Tensor, Saved)> {
        self.saved_pass(x, pre_activation, None)
    }

    fn can_fuse_activation(&self, _activation: Activation) -> bool {
        self.activation == Activation::Linear && self.has_backward(false)
    }

    fn forward_fused(&self, x: &Tensor, _train: bool, activation: Activation) -> Result<Tensor> {
        self.output(activation.apply(&self.linear(x)?)?)
    }

    fn forward_saved_fused(&self, x: &Tensor, activation: Activation) -> Result<(Tensor, Saved)> {
        self.saved_pass(x, false, Some(activation))
    }

    fn backward(&self, saved: &Saved, dy: &Tensor, need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        let (_, kernel, bias) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let (x, y) = (&saved.tensors[0], &saved.tensors[1]);
        let act = if saved.pre_activation { Activation::Linear } else { saved.activation.unwrap_or(self.activation) };
        let bf16 = self.common.dtype_policy == DTypePolicy::MixedBfloat16;
        let dy = &if bf16 { kernels::round_bf16(dy, false)? } else { dy.clone() };
        let dz = match saved.tensors.get(2) {
            Some(z) => act.gradient_with_input(z, y, dy)?,
            None => act.gradient(y, dy)?,
        };
        // bf16: x was saved rounded; the gradient reaching the products is rounded too
        let dz = if bf16 { kernels::round_bf16(&dz, false)? } else { dz };
        let mut grads = vec![x.t()?.matmul(&dz)?];
        if bias.is_some() {
            grads.push(dz.sum(0)?);
        }
        let kernel = kernel.as_tensor().detach();
        let kernel = if bf16 { kernels::round_bf16(&kernel, false)? } else { kernel };
        let dx = if need_input_grad { Some(dz.matmul(&kernel.t()?)?) } else { None };
        Ok((dx, grads))
    }

    fn config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("units", self.units.to_string()),
            ("activation", self.activation.name().into()),
            ("use_bias", self.use_bias.to_string()),
            ("kernel_regularizer", self.kernel_regularizer.map_or("None".into(), |r| r.to_string())),
            ("bias_regularizer", self.bias_regularizer.map_or("None".into(), |r| r.to_string())),
        ]
    }
}

/// Flattens each sample to one axis, as `keras.layers.Flatten` (channels-last order, so the
/// weights of a following Dense layer match Keras').
#[derive(Debug, Default)]
pub struct Flatten {
    common: Common,
    built: Option<Vec<usize>>,
}

impl Flatten {
    /// A flatten layer.
    pub fn new() -> Self {
        Self::default()
    }

    common_layer_methods!();
}

impl Layer for Flatten {
    fn class_name(&self) -> &'static str {
        "Flatten"
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if input_shape.is_empty() {
            return Err(Error::Shape {
                context: self.common.label("Flatten"),
                expected: "an input of rank >= 1".into(),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(vec![input_shape.iter().product()])
    }

    fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        self.built = Some(input_shape.to_vec());
        Ok(out)
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("Flatten")))?;
        check_input(|| self.common.label("Flatten"), input, x)?;
        Ok(x.flatten_from(1)?)
    }

    fn has_backward(&self, _pre_activation: bool) -> bool {
        true
    }

    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        Ok((self.forward(x, true)?, Saved { tensors: vec![x.clone()], ..Saved::default() }))
    }

    fn backward(&self, saved: &Saved, dy: &Tensor, _need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        Ok((Some(dy.reshape(saved.tensors[0].shape())?), Vec::new()))
    }

    fn config(&self) -> Vec<(&'static str, String)> {
        vec![("data_format", "channels_last".into())]
    }
}

/// Randomly sets a fraction `rate` of its inputs to 0 during training and scales the others by
/// `1 / (1 - rate)`, as `keras.layers.Dropout`; the identity at inference.
///
/// Masks come from a generator seeded by the model's seed, so a seeded run is reproducible.
#[derive(Debug)]
pub struct Dropout {
    common: Common,
    rate: f64,
    /// One draw per sample and channel, for whole feature maps (`SpatialDropout2D`).
    spatial: bool,
    seed: Option<u64>,
    calls: AtomicU64,
    built: Option<Vec<usize>>,
}

impl Dropout {
    /// A dropout layer dropping a fraction `rate` in `[0, 1)`.
    pub fn new(rate: f64) -> Self {
        Dropout { common: Common::default(), rate, spatial: false, seed: None, calls: AtomicU64::new(0), built: None }
    }

    /// `x` times the mask drawn from `seed`: element-wise, or one value per sample and channel
    /// broadcast over the feature map (spatial).
    ///
    /// In a replica's shard ([`crate::distribute::with_row_offset`]) the rows are masked as
    /// those rows of the whole batch.
    fn apply_mask(&self, x: &Tensor, seed: u64) -> Result<Tensor> {
        let row = crate::distribute::row_offset() as u64;
        let d = x.dims();
        let n = d.first().copied().unwrap_or(1).max(1);
        if !self.spatial {
            let per_row = (x.elem_count() / n) as u64;
            return Ok(crate::kernels::dropout_at(x, self.rate, seed, row * per_row)?);
        }
        let (n, c) = (d[0], d[d.len() - 1]);
        let ones = Tensor::ones((n, c), x.dtype(), x.device())?;
        let mask = crate::kernels::dropout_at(&ones, self.rate, seed, row * c as u64)?;
        Ok(x.broadcast_mul(&mask.reshape((n, 1, 1, c))?)?)
    }

    common_layer_methods!();

    /// Fixes the layer's own seed (default: drawn from the model's seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The number of masks drawn so far (part of a training run's state).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Sets the number of masks drawn so far, to resume a run.
    pub fn set_calls(&self, calls: u64) {
        self.calls.store(calls, Ordering::Relaxed)
    }

    /// The seed of the next mask: the layer's seed mixed with the number of masks drawn.
    fn next_seed(&self) -> u64 {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut state = self.seed.unwrap_or(0) ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        crate::random::splitmix64(&mut state)
    }
}

impl Layer for Dropout {
    fn class_name(&self) -> &'static str {
        if self.spatial {
            "SpatialDropout2D"
        } else {
            "Dropout"
        }
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::invalid(
                "rate",
                format!("{}: expected a float in [0, 1), received {}", self.common.label(self.class_name()), self.rate),
            ));
        }
        if self.spatial {
            super::expect_rank(|| self.common.label("SpatialDropout2D"), input_shape, 3, "(height, width, channels)")?;
        }
        Ok(input_shape.to_vec())
    }

    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        if self.seed.is_none() {
            self.seed = Some(ctx.rng.next_u64());
        }
        self.built = Some(input_shape.to_vec());
        Ok(out)
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.rate == 0.0 {
            return Ok(x.clone());
        }
        self.apply_mask(x, self.next_seed())
    }

    fn has_backward(&self, _pre_activation: bool) -> bool {
        true
    }

    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        if self.rate == 0.0 {
            return Ok((x.clone(), Saved::default()));
        }
        let seed = self.next_seed();
        Ok((self.apply_mask(x, seed)?, Saved { seed, ..Saved::default() }))
    }

    fn backward(&self, saved: &Saved, dy: &Tensor, _need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        if self.rate == 0.0 {
            return Ok((Some(dy.clone()), Vec::new()));
        }
        // The same seed draws the same mask: d(x * m) / dx = m.
        Ok((Some(self.apply_mask(dy, saved.seed)?), Vec::new()))
    }

    fn state(&self) -> Vec<u64> {
        vec![self.seed.unwrap_or(0), self.calls()]
    }

    fn set_state(&mut self, state: &[u64]) {
        if let [seed, calls] = *state {
            self.seed = Some(seed);
            self.set_calls(calls);
        }
    }

    fn config(&self) -> Vec<(&'static str, String)> {
        vec![("rate", self.rate.to_string())]
    }
}

/// Dropout of whole feature maps, as `keras.layers.SpatialDropout2D`: each sample's channel is
/// kept (scaled by `1 / (1 - rate)`) or zeroed over all its pixels. Keras' `SpatialDropout2D`
/// is a `Dropout` with a noise shape; so here: `SpatialDropout2D::new(rate)` returns a
/// [`Dropout`] that draws one value per sample and channel, named and saved as
/// `SpatialDropout2D`.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::SpatialDropout2D;
/// let m = Sequential::new().seed(0).add(SpatialDropout2D::new(0.5).input_shape((4, 4, 8)));
/// let y = m.call(&Tensor::ones((2, 4, 4, 8), DType::F32, &Device::Cpu)?, true)?;
/// // Every channel of a sample is all kept (2.0) or all dropped (0.0).
/// let v = y.permute((0, 3, 1, 2))?.reshape((16, 16))?.to_vec2::<f32>()?;
/// assert!(v.iter().all(|row| row.iter().all(|&a| a == row[0]) && (row[0] == 0.0 || row[0] == 2.0)));
/// assert_eq!(m.layer_names(), vec!["spatial_dropout2d"]);
/// # Ok::<(), kandle::Error>(())
/// ```
pub struct SpatialDropout2D;

impl SpatialDropout2D {
    /// A dropout layer dropping a fraction `rate` in `[0, 1)` of each sample's channels.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(rate: f64) -> Dropout {
        Dropout { spatial: true, ..Dropout::new(rate) }
    }
}

/// Applies an activation, as `keras.layers.Activation`. `Sequential::add(Activation::Relu)`
/// creates one.
#[derive(Debug)]
pub struct ActivationLayer {
    common: Common,
    activation: Activation,
    built: Option<Vec<usize>>,
}

impl ActivationLayer {
    /// A layer applying `activation`.
    pub fn new(activation: Activation) -> Self {
        ActivationLayer { common: Common::default(), activation, built: None }
    }

    common_layer_methods!();
}

impl Layer for ActivationLayer {
    fn class_name(&self) -> &'static str {
        "Activation"
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if input_shape.is_empty() {
            return Err(Error::Shape {
                context: self.common.label("Activation"),
                expected: "an input of rank >= 1".into(),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(input_shape.to_vec())
    }

    fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
        self.built = Some(self.compute_output_shape(input_shape)?);
        Ok(input_shape.to_vec())
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.activation.apply(x)
    }

    fn activation(&self) -> Activation {
        self.activation
    }

    fn forward_pre_activation(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.clone())
    }

    fn has_backward(&self, _pre_activation: bool) -> bool {
        true
    }

    fn standalone_activation(&self) -> Option<Activation> {
        Some(self.activation)
    }

    fn forward_saved(&self, x: &Tensor, pre_activation: bool) -> Result<(Tensor, Saved)> {
        if pre_activation {
            return Ok((x.clone(), Saved { pre_activation, ..Saved::default() }));
        }
        let y = self.activation.apply(x)?;
        let tensors = if self.activation.needs_input() { vec![y.clone(), x.clone()] } else { vec![y.clone()] };
        Ok((y, Saved { tensors, ..Saved::default() }))
    }

    fn backward(&self, saved: &Saved, dy: &Tensor, _need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        if saved.pre_activation {
            return Ok((Some(dy.clone()), Vec::new()));
        }
        let y = &saved.tensors[0];
        let dx = match saved.tensors.get(1) {
            Some(x) => self.activation.gradient_with_input(x, y, dy)?,
            None => self.activation.gradient(y, dy)?,
        };
        Ok((Some(dx), Vec::new()))
    }

    fn config(&self) -> Vec<(&'static str, String)> {
        vec![("activation", self.activation.name().into())]
    }
}
