//! Depthwise and depthwise-separable convolutions, as `keras.layers.DepthwiseConv2D` and
//! `keras.layers.SeparableConv2D`, channels-last, with their own backward passes.
//!
//! The depthwise convolution is written as `kh * kw` shifted element-wise products (each
//! channel has its own small kernel, so there is no matrix product to batch); the pointwise
//! convolution of `SeparableConv2D` is one matrix product.

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels::depthwise::Geometry;
use crate::layers::{
    check_input, common_layer_methods, common_trait_methods, expect_rank, not_built, single_input, Backward,
    BuildContext, CallContext, Capabilities, Common, Config, Ending, IntoPair, Layer, Padding, Saved, Weight,
};
use crate::regularizers::Regularizer;
use candle_core::{DType, Tensor, Var};

/// The kernel geometry of a depthwise convolution over `input`, its settings checked.
#[allow(clippy::too_many_arguments)]
fn geometry_of(
    label: &str,
    input: &[usize],
    kernel: (usize, usize),
    strides: (usize, usize),
    dilation: (usize, usize),
    padding: Padding,
    multiplier: usize,
) -> Result<Geometry> {
    expect_rank(|| label.to_string(), input, 3, "(height, width, channels)")?;
    if kernel.0 == 0 || kernel.1 == 0 || strides.0 == 0 || strides.1 == 0 || dilation.0 == 0 || dilation.1 == 0 {
        return Err(Error::invalid(
            "kernel_size",
            format!("{label}: kernel_size, strides and dilation_rate must be positive"),
        ));
    }
    if multiplier == 0 {
        return Err(Error::invalid("depth_multiplier", format!("{label}: expected a positive number, received 0")));
    }
    if (strides.0 > 1 || strides.1 > 1) && (dilation.0 > 1 || dilation.1 > 1) {
        return Err(Error::invalid(
            "strides",
            format!("{label}: strides > 1 with dilation_rate > 1 is not supported, as in Keras"),
        ));
    }
    let window = |k: usize, d: usize| (k - 1) * d + 1;
    let fit = |i: usize, k: usize, d: usize, s: usize| padding.along(i, window(k, d), s);
    match (fit(input[0], kernel.0, dilation.0, strides.0), fit(input[1], kernel.1, dilation.1, strides.1)) {
        (Some((t, b, oh)), Some((l, r, ow))) if oh > 0 && ow > 0 => Ok(Geometry {
            kernel,
            strides,
            dilation,
            pad: ((t, b), (l, r)),
            input: (input[0], input[1], input[2]),
            out: (oh, ow),
            multiplier,
        }),
        _ => Err(Error::Shape {
            context: label.to_string(),
            expected: format!(
                "an image of at least the kernel's size {:?} (with dilation {:?})",
                (window(kernel.0, dilation.0), window(kernel.1, dilation.1)),
                dilation
            ),
            received: crate::error::fmt_shape(true, input),
        }),
    }
}

/// Settings shared by the two layers.
#[derive(Debug, Clone)]
struct Settings {
    kernel_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    dilation_rate: (usize, usize),
    depth_multiplier: usize,
    activation: Activation,
    use_bias: bool,
}

impl Settings {
    fn new(kernel_size: (usize, usize)) -> Self {
        Settings {
            kernel_size,
            strides: (1, 1),
            padding: Padding::Valid,
            dilation_rate: (1, 1),
            depth_multiplier: 1,
            activation: Activation::Linear,
            use_bias: true,
        }
    }
    fn geometry(&self, label: &str, input: &[usize]) -> Result<Geometry> {
        geometry_of(
            label,
            input,
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
            self.depth_multiplier,
        )
    }
    fn config(&self) -> Config {
        Config::new()
            .set("kernel_size", [self.kernel_size.0, self.kernel_size.1])
            .set("strides", [self.strides.0, self.strides.1])
            .set("padding", self.padding.name())
            .set("dilation_rate", [self.dilation_rate.0, self.dilation_rate.1])
            .set("depth_multiplier", self.depth_multiplier)
            .set("activation", self.activation.name())
            .set("use_bias", self.use_bias)
    }
}

/// Setters shared by the two layers.
macro_rules! settings_setters {
    () => {
        /// Step of the window (default 1).
        pub fn strides(mut self, strides: impl IntoPair) -> Self {
            self.s.strides = strides.into_pair();
            self
        }
        /// `valid` (default) or `same`.
        pub fn padding(mut self, padding: Padding) -> Self {
            self.s.padding = padding;
            self
        }
        /// Spacing of the kernel's taps (default 1).
        pub fn dilation_rate(mut self, rate: impl IntoPair) -> Self {
            self.s.dilation_rate = rate.into_pair();
            self
        }
        /// Output channels per input channel of the depthwise step (default 1).
        pub fn depth_multiplier(mut self, m: usize) -> Self {
            self.s.depth_multiplier = m;
            self
        }
        /// The activation applied to the output (default linear).
        pub fn activation(mut self, activation: Activation) -> Self {
            self.s.activation = activation;
            self
        }
        /// Add a bias (default true).
        pub fn use_bias(mut self, use_bias: bool) -> Self {
            self.s.use_bias = use_bias;
            self
        }
    };
}

/// `z + bias` along the channels: one parallel pass on the CPU (a candle operation with its
/// gradient), candle's broadcast elsewhere.
fn add_bias(z: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if crate::kernels::cpu_kernels(z.device()) && matches!(z.dtype(), DType::F32 | DType::F64) {
        return Ok(crate::kernels::channel_affine(z, &bias.ones_like()?, bias, None)?);
    }
    Ok(z.broadcast_add(bias)?)
}

/// The activation's output and what its gradient needs: `(y, tensors to save)`.
fn activate(act: Activation, z: Tensor) -> Result<(Tensor, Option<Tensor>)> {
    let y = act.apply(&z)?;
    Ok((y, act.needs_input().then_some(z)))
}

fn activation_gradient(act: Activation, y: &Tensor, z: Option<&Tensor>, dy: &Tensor) -> Result<Tensor> {
    match z {
        Some(z) => act.gradient_with_input(z, y, dy),
        None => act.gradient(y, dy),
    }
}

/// A depthwise convolution, as `keras.layers.DepthwiseConv2D`: each input channel convolved
/// with its own `depth_multiplier` kernels, `(h, w, c)` -> `(oh, ow, c * depth_multiplier)`.
///
/// Keras' defaults: `strides 1`, `padding valid`, `depth_multiplier 1`, `dilation_rate 1`, no
/// activation, a bias, a `glorot_uniform` kernel of shape `(kh, kw, c, depth_multiplier)`
/// (named `kernel`, as Keras 3).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::DepthwiseConv2D;
/// let m = Sequential::new().add(DepthwiseConv2D::new(3).depth_multiplier(2).padding(Padding::Same).input_shape((8, 8, 4)));
/// assert_eq!(m.output_shape()?, vec![8, 8, 8]);
/// assert_eq!(m.count_params()?, 3 * 3 * 4 * 2 + 8);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct DepthwiseConv2D {
    common: Common,
    s: Settings,
    kernel_regularizer: Option<Regularizer>,
    built: Option<(Vec<usize>, Geometry, Var, Option<Var>)>,
}

impl DepthwiseConv2D {
    /// A depthwise convolution with a `kernel_size` window (a number or `(rows, cols)`).
    pub fn new(kernel_size: impl IntoPair) -> Self {
        DepthwiseConv2D {
            common: Common::default(),
            s: Settings::new(kernel_size.into_pair()),
            kernel_regularizer: None,
            built: None,
        }
    }
    common_layer_methods!();
    settings_setters!();
    /// Keras' `depthwise_regularizer`.
    pub fn depthwise_regularizer(mut self, r: Regularizer) -> Self {
        self.kernel_regularizer = Some(r);
        self
    }
    fn label(&self) -> String {
        self.common.label("DepthwiseConv2D")
    }
    fn saved_pass(&self, x: &Tensor) -> Result<(Tensor, Saved)> {
        let (input, g, k, b) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), input, x)?;
        let mut z = g.forward(x, &k.as_tensor().detach())?;
        if let Some(b) = b {
            z = add_bias(&z, &b.as_tensor().detach())?;
        }
        let (y, pre) = activate(self.s.activation, z)?;
        let mut tensors = vec![x.clone(), y.clone()];
        tensors.extend(pre);
        Ok((y, Saved { tensors, ..Saved::default() }))
    }
}

impl Layer for DepthwiseConv2D {
    fn class_name(&self) -> &'static str {
        "DepthwiseConv2D"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        Ok(self.s.geometry(&self.label(), input_shape)?.output_shape())
    }
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let g = self.s.geometry(&self.label(), input_shape)?;
        let (kh, kw) = self.s.kernel_size;
        let kernel = ctx.weight(&Initializer::GlorotUniform, &[kh, kw, input_shape[2], self.s.depth_multiplier])?;
        let c = input_shape[2] * self.s.depth_multiplier;
        let bias = if self.s.use_bias { Some(ctx.weight(&Initializer::Zeros, &[c])?) } else { None };
        let out = g.output_shape();
        self.built = Some((input_shape.to_vec(), g, kernel, bias));
        Ok(out)
    }
    fn built(&self) -> bool {
        self.built.is_some()
    }
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (input, g, k, b) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), input, x)?;
        let mut z = g.forward(x, k.as_tensor())?;
        if let Some(b) = b {
            z = add_bias(&z, b.as_tensor())?;
        }
        self.s.activation.apply(&z)
    }
    fn weights(&self) -> Vec<Weight> {
        let Some((_, _, k, b)) = &self.built else { return Vec::new() };
        let mut w = vec![Weight::new("kernel", k.clone()).regularizer(self.kernel_regularizer)];
        if let Some(b) = b {
            w.push(Weight::new("bias", b.clone()));
        }
        w
    }

    fn get_config(&self) -> Config {
        self.s.config().set("depthwise_regularizer", self.kernel_regularizer.map(|r| r.to_string()))
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for DepthwiseConv2D {
    fn has_backward(&self) -> bool {
        self.built.is_some()
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.label(), xs)?;
        self.saved_pass(x)
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let (_, g, k, b) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let (x, y) = (&saved.tensors[0], &saved.tensors[1]);
        let dz = activation_gradient(self.s.activation, y, saved.tensors.get(2), dy)?;
        let (dx, dk) = g.backward(x, &k.as_tensor().detach(), &dz, need_input_grad)?;
        let mut grads = vec![dk];
        if b.is_some() {
            grads.push(dz.sum((0, 1, 2))?);
        }
        Ok((vec![dx], grads))
    }
}

/// A built SeparableConv2D: input shape, geometry, depthwise and pointwise kernels, bias.
type SeparableBuilt = (Vec<usize>, Geometry, Var, Var, Option<Var>);

/// A depthwise-separable convolution, as `keras.layers.SeparableConv2D`: a depthwise
/// convolution (`depth_multiplier` kernels per input channel, no bias) then a 1x1 convolution
/// to `filters` channels with a bias, then the activation.
///
/// Keras' defaults: `strides 1`, `padding valid`, `depth_multiplier 1`, `dilation_rate 1`, no
/// activation, a bias, `glorot_uniform` kernels `depthwise_kernel (kh, kw, c, m)` and
/// `pointwise_kernel (1, 1, c * m, filters)`.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::SeparableConv2D;
/// let m = Sequential::new().add(SeparableConv2D::new(16, 3).input_shape((8, 8, 4)));
/// assert_eq!(m.output_shape()?, vec![6, 6, 16]);
/// assert_eq!(m.count_params()?, 3 * 3 * 4 + 4 * 16 + 16);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct SeparableConv2D {
    common: Common,
    filters: usize,
    s: Settings,
    built: Option<SeparableBuilt>,
}

impl SeparableConv2D {
    /// `filters` output channels, a `kernel_size` window.
    pub fn new(filters: usize, kernel_size: impl IntoPair) -> Self {
        SeparableConv2D { common: Common::default(), filters, s: Settings::new(kernel_size.into_pair()), built: None }
    }
    common_layer_methods!();
    settings_setters!();
    fn label(&self) -> String {
        self.common.label("SeparableConv2D")
    }
    /// `(depthwise output, pre-activation)`, with the weights as given (detached or not).
    fn pass(&self, x: &Tensor, dk: &Tensor, pk: &Tensor, b: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (input, g, ..) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), input, x)?;
        let d = g.forward(x, dk)?;
        let (n, (oh, ow)) = (x.dims()[0], g.out);
        let cm = d.dims()[3];
        let mut z = d.reshape((n * oh * ow, cm))?.matmul(&pk.reshape((cm, self.filters))?)?;
        if let Some(b) = b {
            z = add_bias(&z, b)?;
        }
        Ok((d, z.reshape((n, oh, ow, self.filters))?))
    }
}

impl Layer for SeparableConv2D {
    fn class_name(&self) -> &'static str {
        "SeparableConv2D"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if self.filters == 0 {
            return Err(Error::invalid("filters", format!("{}: expected a positive number, received 0", self.label())));
        }
        let g = self.s.geometry(&self.label(), input_shape)?;
        Ok(vec![g.out.0, g.out.1, self.filters])
    }
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        let g = self.s.geometry(&self.label(), input_shape)?;
        let (kh, kw) = self.s.kernel_size;
        let m = self.s.depth_multiplier;
        let dk = ctx.weight(&Initializer::GlorotUniform, &[kh, kw, input_shape[2], m])?;
        let pk = ctx.weight(&Initializer::GlorotUniform, &[1, 1, input_shape[2] * m, self.filters])?;
        let bias = if self.s.use_bias { Some(ctx.weight(&Initializer::Zeros, &[self.filters])?) } else { None };
        self.built = Some((input_shape.to_vec(), g, dk, pk, bias));
        Ok(out)
    }
    fn built(&self) -> bool {
        self.built.is_some()
    }
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (_, _, dk, pk, b) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let (_, z) = self.pass(x, dk.as_tensor(), pk.as_tensor(), b.as_ref().map(|b| b.as_tensor()))?;
        self.s.activation.apply(&z)
    }
    fn weights(&self) -> Vec<Weight> {
        let Some((_, _, dk, pk, b)) = &self.built else { return Vec::new() };
        let mut w = vec![Weight::new("depthwise_kernel", dk.clone()), Weight::new("pointwise_kernel", pk.clone())];
        if let Some(b) = b {
            w.push(Weight::new("bias", b.clone()));
        }
        w
    }

    fn get_config(&self) -> Config {
        self.s.config().set("filters", self.filters)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for SeparableConv2D {
    fn has_backward(&self) -> bool {
        self.built.is_some()
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.label(), xs)?;
        let (_, _, dk, pk, b) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let b = b.as_ref().map(|b| b.as_tensor().detach());
        let (d, z) = self.pass(x, &dk.as_tensor().detach(), &pk.as_tensor().detach(), b.as_ref())?;
        let (y, pre) = activate(self.s.activation, z)?;
        let mut tensors = vec![x.clone(), d, y.clone()];
        tensors.extend(pre);
        Ok((y, Saved { tensors, ..Saved::default() }))
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let (_, g, dk, pk, b) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let (x, d, y) = (&saved.tensors[0], &saved.tensors[1], &saved.tensors[2]);
        let dz = activation_gradient(self.s.activation, y, saved.tensors.get(3), dy)?;
        let (n, (oh, ow)) = (x.dims()[0], g.out);
        let cm = d.dims()[3];
        let dz2 = dz.reshape((n * oh * ow, self.filters))?;
        let d2 = d.reshape((n * oh * ow, cm))?;
        let pk2 = pk.as_tensor().detach().reshape((cm, self.filters))?;
        let dpk = d2.t()?.matmul(&dz2)?.reshape((1, 1, cm, self.filters))?;
        let dd = dz2.matmul(&pk2.t()?)?.reshape((n, oh, ow, cm))?;
        let (dx, ddk) = g.backward(x, &dk.as_tensor().detach(), &dd, need_input_grad)?;
        let mut grads = vec![ddk, dpk];
        if b.is_some() {
            grads.push(dz2.sum(0)?);
        }
        Ok((vec![dx], grads))
    }
}
