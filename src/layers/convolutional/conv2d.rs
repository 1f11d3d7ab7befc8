//! `Conv2D`, as `keras.layers.Conv2D`, on kandle's convolution kernels.

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels::{self, ConvParams};
use crate::layers::{
    check_input, common_layer_methods, common_trait_methods, expect_rank, not_built, single_input, Backward,
    BuildContext, CallContext, Capabilities, Common, Config, Ending, Folding, Fusion, IntoPair, Layer, Padding, Saved,
    Weight,
};
use crate::regularizers::Regularizer;
use candle_core::{Tensor, Var};

/// 2-D convolution over channels-last images, as `keras.layers.Conv2D`.
///
/// Keras' defaults: `strides (1, 1)`, `padding valid`, `dilation_rate (1, 1)`, no activation,
/// `use_bias true`, `glorot_uniform` kernel, `zeros` bias. The kernel has Keras' shape
/// `(kernel_h, kernel_w, in_channels, filters)`.
///
/// ```
/// use kandle::prelude::*;
/// let model = Sequential::new()
///     .add(Conv2D::new(32, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((32, 32, 3)));
/// assert_eq!(model.count_params()?, 896);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct Conv2D {
    common: Common,
    filters: usize,
    kernel_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    dilation_rate: (usize, usize),
    activation: Activation,
    use_bias: bool,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    kernel_regularizer: Option<Regularizer>,
    bias_regularizer: Option<Regularizer>,
    built: Option<Built>,
}

#[derive(Debug)]
struct Built {
    input: Vec<usize>,
    params: ConvParams,
    kernel: Var,
    bias: Option<Var>,
}

impl Conv2D {
    /// A convolution with `filters` output channels and a `kernel_size` window (`3` or `(3, 3)`).
    pub fn new(filters: usize, kernel_size: impl IntoPair) -> Self {
        Conv2D {
            common: Common::default(),
            filters,
            kernel_size: kernel_size.into_pair(),
            strides: (1, 1),
            padding: Padding::Valid,
            dilation_rate: (1, 1),
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

    /// Strides (default `(1, 1)`).
    pub fn strides(mut self, strides: impl IntoPair) -> Self {
        self.strides = strides.into_pair();
        self
    }

    /// Padding (default [`Padding::Valid`]).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Dilation rate (default `(1, 1)`); Keras allows it only with strides 1.
    pub fn dilation_rate(mut self, rate: impl IntoPair) -> Self {
        self.dilation_rate = rate.into_pair();
        self
    }

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
        self.common.label("Conv2D")
    }

    fn geometry(&self, input: &[usize]) -> Result<(ConvParams, Vec<usize>)> {
        let label = || self.label();
        if self.filters == 0 {
            return Err(Error::invalid("filters", format!("{}: expected a positive number, received 0", label())));
        }
        for (r, arg) in [(self.kernel_regularizer, "kernel_regularizer"), (self.bias_regularizer, "bias_regularizer")] {
            r.map(|r| r.check(arg)).transpose().map_err(|e| Error::invalid(arg, format!("{}: {e}", label())))?;
        }
        let (kh, kw) = self.kernel_size;
        let (sh, sw) = self.strides;
        let (dh, dw) = self.dilation_rate;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0 {
            return Err(Error::invalid(
                "kernel_size",
                format!(
                    "{}: kernel_size, strides and dilation_rate must be positive, received {:?}, {:?}, {:?}",
                    label(),
                    self.kernel_size,
                    self.strides,
                    self.dilation_rate
                ),
            ));
        }
        if (sh, sw) != (1, 1) && (dh, dw) != (1, 1) {
            return Err(Error::invalid(
                "dilation_rate",
                format!("{}: strides > 1 cannot be combined with dilation_rate > 1 (as in Keras)", label()),
            ));
        }
        expect_rank(label, input, 3, "(height, width, channels)")?;
        let (ekh, ekw) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
        let fit = |axis: usize, k: usize, s: usize| {
            self.padding.along(input[axis], k, s).ok_or_else(|| Error::Shape {
                context: label(),
                expected: format!(
                    "an input of at least {ekh}x{ekw} for a {kh}x{kw} kernel (dilation {:?}) with padding '{}'",
                    self.dilation_rate,
                    self.padding.name()
                ),
                received: crate::error::fmt_shape(true, input),
            })
        };
        let (pt, pb, oh) = fit(0, ekh, sh)?;
        let (pl, pr, ow) = fit(1, ekw, sw)?;
        Ok((ConvParams { stride: (sh, sw), dilation: (dh, dw), padding: (pt, pb, pl, pr) }, vec![oh, ow, self.filters]))
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

    /// The training forward pass, ending with an activation (see [`Conv2D::ends_with`]).
    fn saved_pass(&self, x: &Tensor, ending: Ending) -> Result<(Tensor, Saved)> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), &b.input, x)?;
        let act = self.ends_with(ending);
        let relu = act == Activation::Relu;
        let bias = b.bias.as_ref().map(|v| v.as_tensor().detach());
        let prec = self.common.dtype_policy.precision();
        let z = kernels::conv2d_fused_with(x, &b.kernel.as_tensor().detach(), bias.as_ref(), relu, b.params, prec)?;
        let y = if relu { z.clone() } else { act.apply(&z)? };
        // GELU and SiLU differentiate from their input: keep it.
        let tensors = if act.needs_input() { vec![x.clone(), y.clone(), z] } else { vec![x.clone(), y.clone()] };
        Ok((y, Saved { tensors, ending, ..Saved::default() }))
    }

    /// The convolution plus bias and `act` (ReLU or none), pooled: the pooled output and each
    /// value's position in its window.
    fn conv_pooled(&self, x: &Tensor, act: Activation, pool: (usize, usize)) -> Result<(Tensor, Tensor)> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), &b.input, x)?;
        let (k, bias) = (b.kernel.as_tensor().detach(), b.bias.as_ref().map(|v| v.as_tensor().detach()));
        let relu = act == Activation::Relu;
        Ok(kernels::conv2d_max_pool(x, &k, bias.as_ref(), relu, b.params, pool)?)
    }

    /// The convolution plus bias, with ReLU fused in when `relu`.
    fn conv(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), &b.input, x)?;
        let (k, bias) = (b.kernel.as_tensor(), b.bias.as_ref().map(|v| v.as_tensor()));
        Ok(kernels::conv2d_fused_with(x, k, bias, relu, b.params, self.common.dtype_policy.precision())?)
    }
}

impl Layer for Conv2D {
    fn class_name(&self) -> &'static str {
        "Conv2D"
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        Ok(self.geometry(input_shape)?.1)
    }

    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let (params, out) = self.geometry(input_shape)?;
        let kshape = [self.kernel_size.0, self.kernel_size.1, input_shape[2], self.filters];
        let kernel = ctx.weight(&self.kernel_initializer, &kshape)?;
        let bias = if self.use_bias { Some(ctx.weight(&self.bias_initializer, &[self.filters])?) } else { None };
        self.built = Some(Built { input: input_shape.to_vec(), params, kernel, bias });
        Ok(out)
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        match self.activation {
            Activation::Relu => self.conv(x, true),
            act => act.apply(&self.conv(x, false)?),
        }
    }

    fn weights(&self) -> Vec<Weight> {
        let Some(b) = &self.built else { return Vec::new() };
        let mut w = vec![Weight::new("kernel", b.kernel.clone()).regularizer(self.kernel_regularizer)];
        if let Some(bias) = &b.bias {
            w.push(Weight::new("bias", bias.clone()).regularizer(self.bias_regularizer));
        }
        w
    }

    fn get_config(&self) -> Config {
        let c = Config::new()
            .set("filters", self.filters)
            .set("kernel_size", [self.kernel_size.0, self.kernel_size.1])
            .set("strides", [self.strides.0, self.strides.1])
            .set("padding", self.padding.name())
            .set("dilation_rate", [self.dilation_rate.0, self.dilation_rate.1])
            .set("activation", self.activation.name())
            .set("use_bias", self.use_bias)
            .set("kernel_regularizer", self.kernel_regularizer.map(|r| r.to_string()))
            .set("bias_regularizer", self.bias_regularizer.map(|r| r.to_string()));
        crate::layers::config::with_initializers(c, self.kernel_initializer, self.bias_initializer)
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), fusion: Some(self), folding: Some(self), ..Capabilities::default() }
    }
}

impl Folding for Conv2D {
    /// A linear convolution (its own activation `linear`) in f32 on the CPU, ending with
    /// nothing or a ReLU (which its store applies).
    fn can_fold(&self, channels: usize, ending: Ending) -> bool {
        let ends = match ending {
            Ending::Own => true,
            Ending::Activation(a) => a == Activation::Relu,
            Ending::PreActivation | Ending::Pooled { .. } => false,
        };
        ends && channels == self.filters
            && self.activation == Activation::Linear
            && self.common.dtype_policy.precision() == kernels::Precision::F32
            && self
                .built
                .as_ref()
                .is_some_and(|b| kernels::cpu_kernels(b.kernel.device()) && b.kernel.dtype() == candle_core::DType::F32)
    }

    fn forward_folded(&self, x: &Tensor, scale: &Tensor, shift: &Tensor, ending: Ending) -> Result<Tensor> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), &b.input, x)?;
        // Each output channel's weights scaled (the kernel's last axis), in parallel.
        let kernel = kernels::channel_affine(b.kernel.as_tensor(), scale, &scale.zeros_like()?, None)?;
        let bias = match &b.bias {
            Some(bias) => ((bias.as_tensor() * scale)? + shift)?,
            None => shift.clone(),
        };
        let relu = ending == Ending::Activation(Activation::Relu);
        Ok(kernels::conv2d_fused_with(x, &kernel, Some(&bias), relu, b.params, kernels::Precision::F32)?)
    }
}

impl Fusion for Conv2D {
    fn activation(&self) -> Activation {
        self.activation
    }

    fn forward_ending(&self, x: &Tensor, ending: Ending, ctx: &CallContext) -> Result<Tensor> {
        match ending {
            Ending::Own => self.forward(x, ctx.training),
            Ending::PreActivation => self.conv(x, false),
            Ending::Activation(Activation::Relu) => self.conv(x, true),
            Ending::Activation(act) => act.apply(&self.conv(x, false)?),
            Ending::Pooled { activation, pool } => {
                Ok(self.conv_pooled(x, activation.unwrap_or(self.activation), pool)?.0)
            }
        }
    }

    fn can_end_with(&self, ending: Ending) -> bool {
        match ending {
            Ending::Activation(_) => self.activation == Activation::Linear && self.has_backward(),
            Ending::Pooled { activation, pool } => {
                let act = activation.unwrap_or(self.activation);
                // f32 products only: the mixed_bfloat16 path has its own (AMX) kernels.
                matches!(act, Activation::Relu | Activation::Linear)
                    && self.has_backward()
                    && self.common.dtype_policy.precision() == kernels::Precision::F32
                    && self.built.as_ref().and_then(|b| self.geometry(&b.input).ok()).is_some_and(|(_, out)| {
                        pool.0 >= 1 && pool.1 >= 1 && pool.0 <= out[0] && pool.1 <= out[1] && pool.0 * pool.1 <= 256
                    })
            }
            Ending::Own | Ending::PreActivation => false,
        }
    }
}

impl Backward for Conv2D {
    fn has_backward(&self) -> bool {
        self.built.as_ref().is_some_and(|b| kernels::cpu_kernels(b.kernel.device()))
    }

    fn forward_saved(&self, xs: &[Tensor], ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.label(), xs)?;
        let Ending::Pooled { activation, pool } = ending else { return self.saved_pass(x, ending) };
        let (y, argmax) = self.conv_pooled(x, activation.unwrap_or(self.activation), pool)?;
        let tensors = vec![x.clone(), y.clone(), argmax];
        Ok((y, Saved { tensors, ending, ..Saved::default() }))
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let act = self.ends_with(saved.ending);
        let relu = act == Activation::Relu;
        if let Some(pool) = saved.ending.pool() {
            let (x, pooled, argmax) = (&saved.tensors[0], &saved.tensors[1], &saved.tensors[2]);
            let k = b.kernel.as_tensor().detach();
            let (dx, dk, db) = kernels::conv2d_max_pool_backward(
                x,
                &k,
                pooled,
                argmax,
                dy,
                relu,
                b.bias.is_some(),
                b.params,
                pool,
                need_input_grad,
            )?;
            return Ok((vec![dx], std::iter::once(dk).chain(db).collect()));
        }
        let (x, y) = (&saved.tensors[0], &saved.tensors[1]);
        let k = b.kernel.as_tensor().detach();
        // ReLU is fused into the convolution's backward pass; other activations go first.
        let dy = match (relu, saved.tensors.get(2)) {
            (true, _) => dy.clone(),
            (false, Some(z)) => act.gradient_with_input(z, y, dy)?,
            (false, None) => act.gradient(y, dy)?,
        };
        let prec = self.common.dtype_policy.precision();
        let (dx, dk, db) =
            kernels::conv2d_backward_with(x, &k, y, &dy, relu, b.bias.is_some(), b.params, need_input_grad, prec)?;
        Ok((vec![dx], std::iter::once(dk).chain(db).collect()))
    }
}
