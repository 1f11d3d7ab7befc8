//! EfficientNetB0, as `keras.applications.efficientnet` (Tan and Le, "EfficientNet: Rethinking
//! Model Scaling for Convolutional Neural Networks", ICML 2019): Keras' layers and names, Keras'
//! ImageNet weights. The network normalizes its own inputs (RGB values in `[0, 255]`), so
//! [`preprocess_input`] is the identity, as in Keras.

use super::{application_setters, correct_pad, Options, Weights, WeightsFile};
use crate::activations::Activation;
use crate::error::Result;
use crate::layers::{
    ActivationLayer, Add, BatchNormalization, CallLayer, Conv2D, Dense, DepthwiseConv2D, Dropout,
    GlobalAveragePooling2D, GlobalMaxPooling2D, KerasTensor, Multiply, Normalization, Padding, Rescaling, Reshape,
    ZeroPadding2D,
};
use crate::models::Model;
use candle_core::Tensor;

pub use super::imagenet_utils::decode_predictions;

const BASE_WEIGHTS_PATH: &str = "https://storage.googleapis.com/keras-applications/";
/// Keras' MD5 of `efficientnetb0.h5` and `efficientnetb0_notop.h5`.
const B0_HASHES: (&str, &str) = ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d");
/// ImageNet's per-channel standard deviation (RGB).
const IMAGENET_STDDEV_RGB: [f64; 3] = [0.229, 0.224, 0.225];

/// One stage of Keras' `DEFAULT_BLOCKS_ARGS`.
struct BlockArgs {
    kernel_size: usize,
    repeats: usize,
    filters_in: usize,
    filters_out: usize,
    expand_ratio: usize,
    strides: usize,
    se_ratio: f64,
}

const fn stage(
    kernel_size: usize,
    repeats: usize,
    filters_in: usize,
    filters_out: usize,
    expand_ratio: usize,
    strides: usize,
) -> BlockArgs {
    BlockArgs { kernel_size, repeats, filters_in, filters_out, expand_ratio, strides, se_ratio: 0.25 }
}

const DEFAULT_BLOCKS_ARGS: [BlockArgs; 7] = [
    stage(3, 1, 32, 16, 1, 1),
    stage(3, 2, 16, 24, 6, 2),
    stage(5, 2, 24, 40, 6, 2),
    stage(3, 3, 40, 80, 6, 2),
    stage(5, 3, 80, 112, 6, 1),
    stage(5, 4, 112, 192, 6, 2),
    stage(3, 1, 192, 320, 6, 1),
];

/// EfficientNetB0, as `keras.applications.EfficientNetB0`: 5,330,571 parameters with its top.
/// Its inputs are RGB values in `[0, 255]`: the network rescales and normalizes them itself.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::applications::{EfficientNetB0, Weights};
/// let model = EfficientNetB0::new().weights(Weights::None).build()?;
/// assert_eq!(model.count_params()?, 5_330_571);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct EfficientNetB0 {
    options: Options,
}

impl EfficientNetB0 {
    /// Keras' defaults: the top, ImageNet's weights, 224x224x3 inputs, 1000 classes, softmax.
    pub fn new() -> Self {
        Self::default()
    }

    application_setters!();

    /// Builds the network and loads its weights.
    ///
    /// # Errors
    /// Arguments Keras refuses (named), a weights file that cannot be fetched or does not fit.
    pub fn build(self) -> Result<Model> {
        efficientnet(
            &self.options,
            Scaling { width: 1.0, depth: 1.0, default_size: 224, dropout: 0.2 },
            "b0",
            B0_HASHES,
        )
    }
}

/// A member of the family: Keras' `width_coefficient`, `depth_coefficient`, `default_size`,
/// `dropout_rate`.
struct Scaling {
    width: f64,
    depth: f64,
    default_size: usize,
    dropout: f64,
}

/// Keras' `EfficientNet(...)` with `drop_connect_rate` 0.2, `depth_divisor` 8, swish.
fn efficientnet(o: &Options, s: Scaling, weights_name: &str, hashes: (&'static str, &'static str)) -> Result<Model> {
    let network = format!("EfficientNet{}", weights_name.to_uppercase());
    o.validate(&network)?;
    let shape = o.input_shape(&network, s.default_size, 32)?;
    let input = o.input(&shape);
    let act = Activation::Silu;
    let drop_connect_rate = 0.2;
    let round_filters = |filters: usize| -> usize {
        let f = filters as f64 * s.width;
        let mut new = (((f + 4.0) as usize) / 8 * 8).max(8);
        if (new as f64) < 0.9 * f {
            new += 8;
        }
        new
    };
    let round_repeats = |r: usize| (s.depth * r as f64).ceil() as usize;

    let x = Rescaling::new(1.0 / 255.0).call(&input)?;
    let mut x = Normalization::new().axis(Some(3)).call(&x)?;
    if o.weights == Weights::Imagenet {
        // Keras: the original divides by the variance, Normalization by its square root.
        x = Rescaling::per_channel(IMAGENET_STDDEV_RGB.map(|sd| 1.0 / sd.sqrt())).call(&x)?;
    }
    let (rows, cols) = correct_pad((x.shape()[0], x.shape()[1]), 3);
    let x = ZeroPadding2D::asymmetric(rows, cols).name("stem_conv_pad").call(&x)?;
    let x = Conv2D::new(round_filters(32), 3).strides(2).use_bias(false).name("stem_conv").call(&x)?;
    let x = BatchNormalization::new().name("stem_bn").call(&x)?;
    let mut x = ActivationLayer::new(act).name("stem_activation").call(&x)?;

    let blocks: usize = DEFAULT_BLOCKS_ARGS.iter().map(|a| round_repeats(a.repeats)).sum();
    let mut b = 0;
    for (i, args) in DEFAULT_BLOCKS_ARGS.iter().enumerate() {
        let (mut filters_in, filters_out) = (round_filters(args.filters_in), round_filters(args.filters_out));
        let mut strides = args.strides;
        for j in 0..round_repeats(args.repeats) {
            if j > 0 {
                strides = 1;
                filters_in = filters_out;
            }
            let name = format!("block{}{}_", i + 1, (b'a' + j as u8) as char);
            let block = Block {
                activation: act,
                drop_rate: drop_connect_rate * b as f64 / blocks as f64,
                filters_in,
                filters_out,
                kernel_size: args.kernel_size,
                strides,
                expand_ratio: args.expand_ratio,
                se_ratio: args.se_ratio,
            };
            x = block.call(x, &name)?;
            b += 1;
        }
    }

    let x = Conv2D::new(round_filters(1280), 1).padding(Padding::Same).use_bias(false).name("top_conv").call(&x)?;
    let x = BatchNormalization::new().name("top_bn").call(&x)?;
    let x = ActivationLayer::new(act).name("top_activation").call(&x)?;
    let x = if o.include_top {
        let mut x = GlobalAveragePooling2D::new().name("avg_pool").call(&x)?;
        if s.dropout > 0.0 {
            x = Dropout::new(s.dropout).name("top_dropout").call(&x)?;
        }
        Dense::new(o.classes).activation(o.classifier_activation).name("predictions").call(&x)?
    } else {
        match o.pooling {
            Some(super::Pooling::Avg) => GlobalAveragePooling2D::new().name("avg_pool").call(&x)?,
            Some(super::Pooling::Max) => GlobalMaxPooling2D::new().name("max_pool").call(&x)?,
            None => x,
        }
    };
    let name = format!("efficientnet{weights_name}");
    let (suffix, hash) = if o.include_top { (".h5", hashes.0) } else { ("_notop.h5", hashes.1) };
    let file_name = format!("{name}{suffix}");
    let file = WeightsFile { url: format!("{BASE_WEIGHTS_PATH}{file_name}"), file_name, hash: Some(hash) };
    o.finish(&input, x, &name, Some(file))
}

/// Keras' `block`: an inverted residual block with squeeze-and-excitation.
struct Block {
    activation: Activation,
    drop_rate: f64,
    filters_in: usize,
    filters_out: usize,
    kernel_size: usize,
    strides: usize,
    expand_ratio: usize,
    se_ratio: f64,
}

impl Block {
    fn call(&self, inputs: KerasTensor, name: &str) -> Result<KerasTensor> {
        let filters = self.filters_in * self.expand_ratio;
        let mut x = inputs.clone();
        if self.expand_ratio != 1 {
            x = Conv2D::new(filters, 1)
                .padding(Padding::Same)
                .use_bias(false)
                .name(format!("{name}expand_conv"))
                .call(&x)?;
            x = BatchNormalization::new().name(format!("{name}expand_bn")).call(&x)?;
            x = ActivationLayer::new(self.activation).name(format!("{name}expand_activation")).call(&x)?;
        }
        let conv_pad = if self.strides == 2 {
            let (rows, cols) = correct_pad((x.shape()[0], x.shape()[1]), self.kernel_size);
            x = ZeroPadding2D::asymmetric(rows, cols).name(format!("{name}dwconv_pad")).call(&x)?;
            Padding::Valid
        } else {
            Padding::Same
        };
        x = DepthwiseConv2D::new(self.kernel_size)
            .strides(self.strides)
            .padding(conv_pad)
            .use_bias(false)
            .name(format!("{name}dwconv"))
            .call(&x)?;
        x = BatchNormalization::new().name(format!("{name}bn")).call(&x)?;
        x = ActivationLayer::new(self.activation).name(format!("{name}activation")).call(&x)?;
        if 0.0 < self.se_ratio && self.se_ratio <= 1.0 {
            let filters_se = ((self.filters_in as f64 * self.se_ratio) as usize).max(1);
            let se = GlobalAveragePooling2D::new().name(format!("{name}se_squeeze")).call(&x)?;
            let se = Reshape::new((1, 1, filters)).name(format!("{name}se_reshape")).call(&se)?;
            let se = Conv2D::new(filters_se, 1)
                .padding(Padding::Same)
                .activation(self.activation)
                .name(format!("{name}se_reduce"))
                .call(&se)?;
            let se = Conv2D::new(filters, 1)
                .padding(Padding::Same)
                .activation(Activation::Sigmoid)
                .name(format!("{name}se_expand"))
                .call(&se)?;
            x = Multiply::new().name(format!("{name}se_excite")).call(&[x, se])?;
        }
        x = Conv2D::new(self.filters_out, 1)
            .padding(Padding::Same)
            .use_bias(false)
            .name(format!("{name}project_conv"))
            .call(&x)?;
        x = BatchNormalization::new().name(format!("{name}project_bn")).call(&x)?;
        if self.strides == 1 && self.filters_in == self.filters_out {
            if self.drop_rate > 0.0 {
                x = Dropout::new(self.drop_rate)
                    .noise_shape([Some(1), Some(1), Some(1)])
                    .name(format!("{name}drop"))
                    .call(&x)?;
            }
            x = Add::new().name(format!("{name}add")).call(&[x, inputs])?;
        }
        Ok(x)
    }
}

/// `keras.applications.efficientnet.preprocess_input`: the identity, kept for the API's sake
/// (the network rescales and normalizes its inputs itself), as in Keras.
///
/// # Errors
/// None; a `Result` as the other networks' `preprocess_input`.
pub fn preprocess_input(x: &Tensor) -> Result<Tensor> {
    Ok(x.clone())
}
