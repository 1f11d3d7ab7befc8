//! `Conv2DTranspose`, as `keras.layers.Conv2DTranspose`: the transpose (input gradient) of a
//! strided convolution, written as kandle's own stride-1 convolution of the input with zeros
//! between its pixels and the kernel flipped, so that it runs on kandle's convolution kernels
//! (candle's CPU `conv_transpose2d` is a plain loop) and candle's autograd differentiates it.

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels::{self, ConvParams};
use crate::layers::{
    check_input, common_layer_methods, common_trait_methods, expect_rank, not_built, BuildContext, Common, Config,
    IntoPair, Layer, Padding, Weight,
};
use candle_core::{Tensor, Var};

/// Transposed 2-D convolution over channels-last images (the "deconvolution" of decoders and
/// segmentation heads), as `keras.layers.Conv2DTranspose`.
///
/// Keras' defaults: `strides (1, 1)`, `padding valid`, no activation, `use_bias true`,
/// `glorot_uniform` kernel, `zeros` bias. The kernel has Keras' shape
/// `(kernel_h, kernel_w, filters, in_channels)`. Output size: `in * stride` with
/// [`Padding::Same`], `(in - 1) * stride + kernel` with `Valid`. `output_padding` and
/// `dilation_rate` other than 1 are not offered.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::Conv2DTranspose;
/// let m = Sequential::new().add(Conv2DTranspose::new(8, 3).strides(2).padding(Padding::Same).input_shape((7, 7, 16)));
/// assert_eq!(m.output_shape()?, vec![14, 14, 8]);
/// assert_eq!(m.count_params()?, 3 * 3 * 8 * 16 + 8);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct Conv2DTranspose {
    common: Common,
    filters: usize,
    kernel_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    activation: Activation,
    use_bias: bool,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    built: Option<Built>,
}

#[derive(Debug)]
struct Built {
    input: Vec<usize>,
    kernel: Var,
    bias: Option<Var>,
}

impl Conv2DTranspose {
    /// A transposed convolution to `filters` channels with a `kernel_size` window.
    pub fn new(filters: usize, kernel_size: impl IntoPair) -> Self {
        Conv2DTranspose {
            common: Common::default(),
            filters,
            kernel_size: kernel_size.into_pair(),
            strides: (1, 1),
            padding: Padding::Valid,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            built: None,
        }
    }
    common_layer_methods!();
    /// Strides (default `(1, 1)`): the up-sampling factor.
    pub fn strides(mut self, strides: impl IntoPair) -> Self {
        self.strides = strides.into_pair();
        self
    }
    /// Padding (default [`Padding::Valid`]).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }
    /// Activation after the bias (default linear).
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }
    /// Add a bias (default true).
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }
    /// The kernel's initializer (default `GlorotUniform`).
    pub fn kernel_initializer(mut self, init: Initializer) -> Self {
        self.kernel_initializer = init;
        self
    }
    /// The bias' initializer (default `Zeros`).
    pub fn bias_initializer(mut self, init: Initializer) -> Self {
        self.bias_initializer = init;
        self
    }

    fn label(&self) -> String {
        self.common.label("Conv2DTranspose")
    }

    /// Along one axis of `n` pixels with kernel `k` and stride `s`: the output size and the
    /// zeros before and after the stride-dilated input of the equivalent stride-1 convolution.
    fn axis(&self, n: usize, k: usize, s: usize) -> (Option<usize>, usize, usize) {
        match self.padding {
            Padding::Valid => ((n - 1).checked_mul(s).and_then(|v| v.checked_add(k)), k - 1, k - 1),
            Padding::Same => {
                // The forward convolution's 'same' padding (TensorFlow: the extra one at the end),
                // taken off the full transposed output.
                let top = k.saturating_sub(s) / 2;
                (n.checked_mul(s), k - 1 - top, s - 1 + top)
            }
        }
    }
}

/// `x` `(N, H, W, C)` with `s - 1` zeros between neighbours along `axis` (1 or 2).
fn dilate(x: &Tensor, axis: usize, s: usize) -> Result<Tensor> {
    if s == 1 {
        return Ok(x.clone());
    }
    let n = x.dims()[axis];
    let mut dims = x.dims().to_vec();
    dims[axis] = n * s;
    let t = x.unsqueeze(axis + 1)?.pad_with_zeros(axis + 1, 0, s - 1)?.reshape(dims)?;
    Ok(t.narrow(axis, 0, (n - 1) * s + 1)?)
}

impl Layer for Conv2DTranspose {
    fn class_name(&self) -> &'static str {
        "Conv2DTranspose"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        expect_rank(|| self.label(), input_shape, 3, "(height, width, channels)")?;
        let ((kh, kw), (sh, sw)) = (self.kernel_size, self.strides);
        if self.filters == 0 || kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            return Err(Error::invalid(
                "filters",
                format!(
                    "{}: expected filters, kernel_size and strides >= 1, received {}, {:?}, {:?}",
                    self.label(),
                    self.filters,
                    self.kernel_size,
                    self.strides
                ),
            ));
        }
        let (h, w) = (self.axis(input_shape[0], kh, sh).0, self.axis(input_shape[1], kw, sw).0);
        crate::layers::grown_shape(|| self.label(), &[h, w, Some(self.filters)])
    }
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        let (kh, kw) = self.kernel_size;
        let kernel = ctx.weight(&self.kernel_initializer, &[kh, kw, self.filters, input_shape[2]])?;
        let bias = if self.use_bias { Some(ctx.weight(&self.bias_initializer, &[self.filters])?) } else { None };
        self.built = Some(Built { input: input_shape.to_vec(), kernel, bias });
        Ok(out)
    }
    fn built(&self) -> bool {
        self.built.is_some()
    }
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        check_input(|| self.label(), &b.input, x)?;
        let ((kh, kw), (sh, sw)) = (self.kernel_size, self.strides);
        let (_, top, bottom) = self.axis(b.input[0], kh, sh);
        let (_, left, right) = self.axis(b.input[1], kw, sw);
        let xd = dilate(&dilate(x, 1, sh)?, 2, sw)?;
        // The kernel flipped in space, as (kh, kw, in, filters).
        let flip = |n: usize| Tensor::arange(0u32, n as u32, x.device()).and_then(|t| t.flip(&[0]));
        let k = b.kernel.as_tensor();
        let k = k.index_select(&flip(kh)?, 0)?.index_select(&flip(kw)?, 1)?.transpose(2, 3)?.contiguous()?;
        let p = ConvParams { stride: (1, 1), dilation: (1, 1), padding: (top, bottom, left, right) };
        let mut y = kernels::conv2d(&xd.contiguous()?, &k, p)?;
        if let Some(bias) = &b.bias {
            y = y.broadcast_add(bias.as_tensor())?;
        }
        self.activation.apply(&y)
    }
    fn weights(&self) -> Vec<Weight> {
        let Some(b) = &self.built else { return Vec::new() };
        let mut w = vec![Weight::new("kernel", b.kernel.clone())];
        if let Some(bias) = &b.bias {
            w.push(Weight::new("bias", bias.clone()));
        }
        w
    }
    fn get_config(&self) -> Config {
        let c = Config::new()
            .set("filters", self.filters)
            .set("kernel_size", [self.kernel_size.0, self.kernel_size.1])
            .set("strides", [self.strides.0, self.strides.1])
            .set("padding", self.padding.name())
            .set("activation", self.activation.name())
            .set("use_bias", self.use_bias);
        crate::layers::config::with_initializers(c, self.kernel_initializer, self.bias_initializer)
    }
}
