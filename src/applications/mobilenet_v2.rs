//! MobileNetV2, as `keras.applications.mobilenet_v2` (Sandler et al., "MobileNetV2: Inverted
//! Residuals and Linear Bottlenecks", CVPR 2018): Keras' layers and names, Keras' ImageNet
//! weights for each width (`alpha`) and input size.

use super::imagenet_utils::{self, Mode};
use super::{application_setters, correct_pad, make_divisible, Options, Weights, WeightsFile};
use crate::error::{Error, Result};
use crate::layers::{
    Add, BatchNormalization, CallLayer, Conv2D, Dense, DepthwiseConv2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
    KerasTensor, Padding, ReLU, ZeroPadding2D,
};
use crate::models::Model;
use candle_core::Tensor;

pub use super::imagenet_utils::decode_predictions;

const BASE_WEIGHT_PATH: &str = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/";

/// The widths and input sizes Keras has ImageNet weights for.
const ALPHAS: [f64; 6] = [0.35, 0.5, 0.75, 1.0, 1.3, 1.4];
const SIZES: [usize; 5] = [96, 128, 160, 192, 224];

/// MobileNetV2, as `keras.applications.MobileNetV2`: 3,538,984 parameters with its top at
/// `alpha` 1.0. `alpha` scales the width (the filters of every layer).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::applications::{MobileNetV2, Weights};
/// let model = MobileNetV2::new().weights(Weights::None).build()?;
/// assert_eq!(model.count_params()?, 3_538_984);
/// assert_eq!(model.model_name(), "mobilenetv2_1.00_224");
/// let small = MobileNetV2::new().alpha(0.35).include_top(false).input_shape((96, 96, 3)).weights(Weights::None).build()?;
/// assert_eq!(small.output_shape()?, vec![3, 3, 1280]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    options: Options,
    alpha: f64,
}

impl Default for MobileNetV2 {
    fn default() -> Self {
        MobileNetV2 { options: Options::default(), alpha: 1.0 }
    }
}

impl MobileNetV2 {
    /// Keras' defaults: `alpha` 1.0, the top, ImageNet's weights, 224x224x3 inputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// The width multiplier (Keras' `alpha`, default 1.0): below 1 fewer filters in every
    /// layer, above 1 more. ImageNet's weights exist for 0.35, 0.5, 0.75, 1.0, 1.3 and 1.4.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    application_setters!();

    /// Builds the network and loads its weights.
    ///
    /// # Errors
    /// Arguments Keras refuses (named), a weights file that cannot be fetched or does not fit.
    pub fn build(self) -> Result<Model> {
        let (o, alpha) = (&self.options, self.alpha);
        o.validate("MobileNetV2")?;
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(Error::invalid("alpha", format!("MobileNetV2: expected alpha > 0, received {alpha}")));
        }
        // Keras: a square input of a size it has weights for sets the default size.
        let given = o.input_tensor.as_ref().map(|t| t.shape().to_vec()).or_else(|| o.input_shape.clone());
        let default_size = match given.as_deref() {
            Some([r, c, ..]) if r == c && SIZES.contains(r) => *r,
            _ => 224,
        };
        let shape = o.input_shape("MobileNetV2", default_size, 32)?;
        let mut rows = shape[0];
        if o.weights == Weights::Imagenet {
            if !ALPHAS.iter().any(|a| (a - alpha).abs() < 1e-9) {
                return Err(Error::invalid(
                    "alpha",
                    format!(
                        "MobileNetV2: with weights \"imagenet\", alpha must be one of 0.35, 0.50, 0.75, 1.0, 1.3 or \
                         1.4; received {alpha}"
                    ),
                ));
            }
            if shape[0] != shape[1] || !SIZES.contains(&shape[0]) {
                // Keras warns and loads the 224x224 weights.
                eprintln!(
                    "MobileNetV2: the input shape is non-square or not one of 96, 128, 160, 192, 224: loading the \
                     weights for 224x224"
                );
                rows = 224;
            }
        }
        let input = o.input(&shape);
        let first_block_filters = make_divisible(32.0 * alpha, 8);
        let x = Conv2D::new(first_block_filters, 3)
            .strides(2)
            .padding(Padding::Same)
            .use_bias(false)
            .name("Conv1")
            .call(&input)?;
        let x = bn("bn_Conv1").call(&x)?;
        let mut x = ReLU::new().max_value(6.0).name("Conv1_relu").call(&x)?;
        // (filters, stride, expansion) of blocks 0..=16, as Keras lists them.
        let blocks: [(usize, usize, usize); 17] = [
            (16, 1, 1),
            (24, 2, 6),
            (24, 1, 6),
            (32, 2, 6),
            (32, 1, 6),
            (32, 1, 6),
            (64, 2, 6),
            (64, 1, 6),
            (64, 1, 6),
            (64, 1, 6),
            (96, 1, 6),
            (96, 1, 6),
            (96, 1, 6),
            (160, 2, 6),
            (160, 1, 6),
            (160, 1, 6),
            (320, 1, 6),
        ];
        for (block_id, &(filters, stride, expansion)) in blocks.iter().enumerate() {
            x = inverted_res_block(x, expansion, stride, alpha, filters, block_id)?;
        }
        // No alpha on the last convolution, as the paper says, unless it widens.
        let last_block_filters = if alpha > 1.0 { make_divisible(1280.0 * alpha, 8) } else { 1280 };
        let x = Conv2D::new(last_block_filters, 1).use_bias(false).name("Conv_1").call(&x)?;
        let x = bn("Conv_1_bn").call(&x)?;
        let x = ReLU::new().max_value(6.0).name("out_relu").call(&x)?;
        let x = if o.include_top {
            let x = GlobalAveragePooling2D::new().call(&x)?;
            Dense::new(o.classes).activation(o.classifier_activation).name("predictions").call(&x)?
        } else {
            match o.pooling {
                Some(super::Pooling::Avg) => GlobalAveragePooling2D::new().call(&x)?,
                Some(super::Pooling::Max) => GlobalMaxPooling2D::new().call(&x)?,
                None => x,
            }
        };
        let name = format!("mobilenetv2_{alpha:.2}_{rows}");
        let suffix = if o.include_top { "" } else { "_no_top" };
        // Keras' float formatting: 1.0, 0.35, 0.5.
        let file_name =
            format!("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{}_{rows}{suffix}.h5", py_float(alpha));
        let file = WeightsFile { url: format!("{BASE_WEIGHT_PATH}{file_name}"), file_name, hash: None };
        o.finish(&input, x, &name, Some(file))
    }
}

/// Python's `str(float(v))` for Keras' widths: `1.0`, `0.35`, `0.5`.
fn py_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

fn bn(name: &str) -> BatchNormalization {
    BatchNormalization::new().epsilon(1e-3).momentum(0.999).name(name)
}

/// Keras' `_inverted_res_block`: a 1x1 expansion (not in block 0), a 3x3 depthwise convolution,
/// a linear 1x1 projection, and the input added back where the shape allows.
fn inverted_res_block(
    inputs: KerasTensor,
    expansion: usize,
    stride: usize,
    alpha: f64,
    filters: usize,
    block_id: usize,
) -> Result<KerasTensor> {
    let in_channels = inputs.shape()[2];
    let pointwise_filters = make_divisible((filters as f64 * alpha).trunc(), 8);
    let mut x = inputs.clone();
    let prefix = if block_id > 0 { format!("block_{block_id}_") } else { "expanded_conv_".to_string() };
    if block_id > 0 {
        x = Conv2D::new(expansion * in_channels, 1)
            .padding(Padding::Same)
            .use_bias(false)
            .name(format!("{prefix}expand"))
            .call(&x)?;
        x = bn(&format!("{prefix}expand_BN")).call(&x)?;
        x = ReLU::new().max_value(6.0).name(format!("{prefix}expand_relu")).call(&x)?;
    }
    if stride == 2 {
        let (rows, cols) = correct_pad((x.shape()[0], x.shape()[1]), 3);
        x = ZeroPadding2D::asymmetric(rows, cols).name(format!("{prefix}pad")).call(&x)?;
    }
    x = DepthwiseConv2D::new(3)
        .strides(stride)
        .use_bias(false)
        .padding(if stride == 1 { Padding::Same } else { Padding::Valid })
        .name(format!("{prefix}depthwise"))
        .call(&x)?;
    x = bn(&format!("{prefix}depthwise_BN")).call(&x)?;
    x = ReLU::new().max_value(6.0).name(format!("{prefix}depthwise_relu")).call(&x)?;
    x = Conv2D::new(pointwise_filters, 1)
        .padding(Padding::Same)
        .use_bias(false)
        .name(format!("{prefix}project"))
        .call(&x)?;
    x = bn(&format!("{prefix}project_BN")).call(&x)?;
    if in_channels == pointwise_filters && stride == 1 {
        return Add::new().name(format!("{prefix}add")).call(&[inputs, x]);
    }
    Ok(x)
}

/// `keras.applications.mobilenet_v2.preprocess_input`: RGB values in `[0, 255]` scaled to
/// `[-1, 1]` ([`Mode::Tf`]).
///
/// # Errors
/// As [`imagenet_utils::preprocess_input`].
pub fn preprocess_input(x: &Tensor) -> Result<Tensor> {
    imagenet_utils::preprocess_input(x, Mode::Tf)
}
