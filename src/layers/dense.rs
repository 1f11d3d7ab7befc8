//! `Dense`, as `keras.layers.Dense`.

use super::{
    check_input, common_layer_methods, common_trait_methods, not_built, single_input, Backward, BuildContext,
    CallContext, Capabilities, Common, Config, Ending, Fusion, Layer, Saved, Weight,
};
use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels;
use crate::mixed_precision::DTypePolicy;
use crate::regularizers::Regularizer;
use candle_core::{Tensor, Var};

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

    /// The activation a pass ends with: none before a fused loss, else the fused standalone
    /// activation or the layer's own.
    fn ends_with(&self, ending: Ending) -> Activation {
        if ending.pre_activation() {
            Activation::Linear
        } else {
            ending.fused_activation().unwrap_or(self.activation)
        }
    }

    /// The training forward pass, ending as `ending` says.
    fn saved_pass(&self, x: &Tensor, ending: Ending) -> Result<(Tensor, Saved)> {
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
        let act = self.ends_with(ending);
        let z = y;
        let y = act.apply(&z)?;
        let y = self.output(y)?;
        // GELU and SiLU differentiate from their input: keep it.
        let tensors = if act.needs_input() { vec![x.clone(), y.clone(), z] } else { vec![x.clone(), y.clone()] };
        Ok((y, Saved { tensors, ending, ..Saved::default() }))
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

    fn weights(&self) -> Vec<Weight> {
        let Some((_, k, b)) = &self.built else { return Vec::new() };
        let mut w = vec![Weight::new("kernel", k.clone()).regularizer(self.kernel_regularizer)];
        if let Some(b) = b {
            w.push(Weight::new("bias", b.clone()).regularizer(self.bias_regularizer));
        }
        w
    }

    fn get_config(&self) -> Config {
        let c = Config::new()
            .set("units", self.units)
            .set("activation", self.activation.name())
            .set("use_bias", self.use_bias)
            .set("kernel_regularizer", self.kernel_regularizer.map(|r| r.to_string()))
            .set("bias_regularizer", self.bias_regularizer.map(|r| r.to_string()));
        crate::layers::config::with_initializers(c, self.kernel_initializer, self.bias_initializer)
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), fusion: Some(self), ..Capabilities::default() }
    }
}

impl Fusion for Dense {
    fn activation(&self) -> Activation {
        self.activation
    }

    fn forward_ending(&self, x: &Tensor, ending: Ending, _ctx: &CallContext) -> Result<Tensor> {
        let z = self.linear(x)?;
        self.output(match ending {
            Ending::PreActivation => z,
            Ending::Activation(a) => a.apply(&z)?,
            Ending::Own => self.activation.apply(&z)?,
            Ending::Pooled { .. } => {
                return Err(Error::invalid("layer", format!("{} cannot end with a max pooling", self.label())))
            }
        })
    }

    fn can_end_with(&self, ending: Ending) -> bool {
        matches!(ending, Ending::Activation(_)) && self.activation == Activation::Linear && self.has_backward()
    }
}

impl Backward for Dense {
    fn has_backward(&self) -> bool {
        let Some((input, kernel, _)) = &self.built else { return false };
        crate::kernels::cpu_kernels(kernel.device()) && input.len() == 1
    }

    fn forward_saved(&self, xs: &[Tensor], ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        self.saved_pass(single_input(|| self.label(), xs)?, ending)
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let (_, kernel, bias) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let (x, y) = (&saved.tensors[0], &saved.tensors[1]);
        let act = self.ends_with(saved.ending);
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
        Ok((vec![dx], grads))
    }
}
