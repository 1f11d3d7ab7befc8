//! Depthwise and depthwise-separable convolutions, as `keras.layers.DepthwiseConv2D` and
//! `keras.layers.SeparableConv2D`, channels-last, with their own backward passes.
//!
//! The depthwise convolution is written as `kh * kw` shifted element-wise products (each
//! channel has its own small kernel, so there is no matrix product to batch); the pointwise
//! convolution of `SeparableConv2D` is one matrix product.

use super::{
    check_input, common_layer_methods, common_trait_methods, expect_rank, not_built, BuildContext, Common, IntoPair,
    Layer, Padding, Saved, Weight,
};
use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use candle_core::{Tensor, Var};

/// The geometry of a depthwise convolution over one image size.
#[derive(Debug, Clone)]
struct Geometry {
    kernel: (usize, usize),
    strides: (usize, usize),
    dilation: (usize, usize),
    /// `((top, bottom), (left, right))`.
    pad: ((usize, usize), (usize, usize)),
    input: (usize, usize, usize),
    out: (usize, usize),
    multiplier: usize,
}

impl Geometry {
    #[allow(clippy::too_many_arguments)]
    fn new(
        label: &str,
        input: &[usize],
        kernel: (usize, usize),
        strides: (usize, usize),
        dilation: (usize, usize),
        padding: Padding,
        multiplier: usize,
    ) -> Result<Self> {
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

    fn output_shape(&self) -> Vec<usize> {
        vec![self.out.0, self.out.1, self.input.2 * self.multiplier]
    }

    /// The padded input's rows (axis 1) and columns (axis 2) that kernel tap `(i, j)` reads.
    fn taps(&self, x: &Tensor, i: usize, j: usize) -> Result<Tensor> {
        let rows = self.axis_index(x, i, 0)?;
        let cols = self.axis_index(x, j, 1)?;
        let r = match rows {
            Tap::Narrow(start, len) => x.narrow(1, start, len)?,
            Tap::Index(idx) => x.index_select(&idx, 1)?,
        };
        Ok(match cols {
            Tap::Narrow(start, len) => r.narrow(2, start, len)?,
            Tap::Index(idx) => r.index_select(&idx, 2)?,
        })
    }

    fn axis_index(&self, x: &Tensor, k: usize, axis: usize) -> Result<Tap> {
        let (s, d, o) = if axis == 0 {
            (self.strides.0, self.dilation.0, self.out.0)
        } else {
            (self.strides.1, self.dilation.1, self.out.1)
        };
        if s == 1 {
            return Ok(Tap::Narrow(k * d, o));
        }
        let idx: Vec<u32> = (0..o).map(|p| (p * s + k * d) as u32).collect();
        Ok(Tap::Index(Tensor::from_vec(idx, o, x.device())?))
    }

    fn pad(&self, x: &Tensor) -> Result<Tensor> {
        let ((t, b), (l, r)) = self.pad;
        Ok(x.pad_with_zeros(1, t, b)?.pad_with_zeros(2, l, r)?)
    }

    /// `(N, H, W, C)` by a kernel `(kh, kw, C, M)` -> `(N, OH, OW, C * M)`.
    fn forward(&self, x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
        let xp = self.pad(x)?;
        let (n, c, m) = (x.dims()[0], self.input.2, self.multiplier);
        let mut acc: Option<Tensor> = None;
        for i in 0..self.kernel.0 {
            for j in 0..self.kernel.1 {
                let xs = self.taps(&xp, i, j)?.unsqueeze(4)?;
                let k = kernel.get(i)?.get(j)?.reshape((1, 1, 1, c, m))?;
                let term = xs.broadcast_mul(&k)?;
                acc = Some(match acc {
                    Some(a) => (a + term)?,
                    None => term,
                });
            }
        }
        let acc = acc.ok_or_else(|| Error::invalid("kernel_size", "an empty kernel"))?;
        Ok(acc.reshape((n, self.out.0, self.out.1, c * m))?)
    }

    /// The gradients of [`Geometry::forward`] for the output gradient `dy`: of the input (when
    /// asked) and of the kernel.
    fn backward(&self, x: &Tensor, kernel: &Tensor, dy: &Tensor, need_dx: bool) -> Result<(Option<Tensor>, Tensor)> {
        let xp = self.pad(x)?;
        let (n, c, m) = (x.dims()[0], self.input.2, self.multiplier);
        let (oh, ow) = self.out;
        let dy5 = dy.reshape((n, oh, ow, c, m))?;
        let wp = xp.dims()[2];
        let mut dxp = if need_dx { Some(xp.zeros_like()?) } else { None };
        let mut dk = Vec::with_capacity(self.kernel.0 * self.kernel.1);
        for i in 0..self.kernel.0 {
            for j in 0..self.kernel.1 {
                let xs = self.taps(&xp, i, j)?.unsqueeze(4)?;
                dk.push(xs.broadcast_mul(&dy5)?.sum((0, 1, 2))?);
                if let Some(dxp) = dxp.as_mut() {
                    let k = kernel.get(i)?.get(j)?.reshape((1, 1, 1, c, m))?;
                    let dxs = dy5.broadcast_mul(&k)?.sum(4)?; // (N, OH, OW, C)
                                                              // Scatter back to the rows and columns this tap read.
                    let cols = match self.axis_index(&xp, j, 1)? {
                        Tap::Narrow(start, len) => Tensor::arange(start as u32, (start + len) as u32, xp.device())?,
                        Tap::Index(idx) => idx,
                    };
                    let rows = match self.axis_index(&xp, i, 0)? {
                        Tap::Narrow(start, len) => Tensor::arange(start as u32, (start + len) as u32, xp.device())?,
                        Tap::Index(idx) => idx,
                    };
                    let wide = Tensor::zeros((n, oh, wp, c), dxs.dtype(), dxs.device())?.index_add(&cols, &dxs, 2)?;
                    *dxp = dxp.index_add(&rows, &wide, 1)?;
                }
            }
        }
        let dk = Tensor::stack(&dk, 0)?.reshape((self.kernel.0, self.kernel.1, c, m))?;
        let dx = match dxp {
            Some(d) => {
                let ((t, _), (l, _)) = self.pad;
                Some(d.narrow(1, t, self.input.0)?.narrow(2, l, self.input.1)?.contiguous()?)
            }
            None => None,
        };
        Ok((dx, dk))
    }
}

enum Tap {
    Narrow(usize, usize),
    Index(Tensor),
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
        Geometry::new(
            label,
            input,
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
            self.depth_multiplier,
        )
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("kernel_size", format!("{:?}", self.kernel_size)),
            ("strides", format!("{:?}", self.strides)),
            ("padding", self.padding.name().into()),
            ("dilation_rate", format!("{:?}", self.dilation_rate)),
            ("depth_multiplier", self.depth_multiplier.to_string()),
            ("activation", self.activation.name().into()),
            ("use_bias", self.use_bias.to_string()),
        ]
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
            z = z.broadcast_add(&b.as_tensor().detach())?;
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
            z = z.broadcast_add(b.as_tensor())?;
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
    fn has_backward(&self, _pre_activation: bool) -> bool {
        self.built.is_some()
    }
    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        self.saved_pass(x)
    }
    fn backward(&self, saved: &Saved, dy: &Tensor, need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        let (_, g, k, b) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let (x, y) = (&saved.tensors[0], &saved.tensors[1]);
        let dz = activation_gradient(self.s.activation, y, saved.tensors.get(2), dy)?;
        let (dx, dk) = g.backward(x, &k.as_tensor().detach(), &dz, need_input_grad)?;
        let mut grads = vec![dk];
        if b.is_some() {
            grads.push(dz.sum((0, 1, 2))?);
        }
        Ok((dx, grads))
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        let mut c = self.s.config();
        c.push(("depthwise_regularizer", self.kernel_regularizer.map_or("None".into(), |r| r.to_string())));
        c
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
            z = z.broadcast_add(b)?;
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
    fn has_backward(&self, _pre_activation: bool) -> bool {
        self.built.is_some()
    }
    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        let (_, _, dk, pk, b) = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        let b = b.as_ref().map(|b| b.as_tensor().detach());
        let (d, z) = self.pass(x, &dk.as_tensor().detach(), &pk.as_tensor().detach(), b.as_ref())?;
        let (y, pre) = activate(self.s.activation, z)?;
        let mut tensors = vec![x.clone(), d, y.clone()];
        tensors.extend(pre);
        Ok((y, Saved { tensors, ..Saved::default() }))
    }
    fn backward(&self, saved: &Saved, dy: &Tensor, need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
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
        Ok((dx, grads))
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        let mut c = vec![("filters", self.filters.to_string())];
        c.extend(self.s.config());
        c
    }
}
