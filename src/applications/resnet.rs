//! ResNet50, as `keras.applications.resnet50` (He et al., "Deep Residual Learning for Image
//! Recognition", CVPR 2015): Keras' layers and names, Keras' ImageNet weights.

use super::imagenet_utils::{self, Mode};
use super::{application_setters, Options, WeightsFile};
use crate::activations::Activation;
use crate::error::Result;
use crate::layers::{
    ActivationLayer, Add, BatchNormalization, CallLayer, Conv2D, Dense, GlobalAveragePooling2D, GlobalMaxPooling2D,
    KerasTensor, MaxPooling2D, Padding, ZeroPadding2D,
};
use crate::models::Model;
use candle_core::Tensor;

pub use super::imagenet_utils::decode_predictions;

const BASE_WEIGHTS_PATH: &str = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/";
/// Keras' MD5 of `resnet50_weights_tf_dim_ordering_tf_kernels.h5` and of its `_notop` file.
const WEIGHTS_HASHES: (&str, &str) = ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626");

/// ResNet50, as `keras.applications.ResNet50`: 25,636,712 parameters with its top.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::applications::{ResNet50, Weights};
/// let model = ResNet50::new().weights(Weights::None).build()?;
/// assert_eq!(model.count_params()?, 25_636_712);
/// assert_eq!(model.output_shape()?, vec![1000]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ResNet50 {
    options: Options,
}

impl ResNet50 {
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
        let o = &self.options;
        o.validate("ResNet50")?;
        let shape = o.input_shape("ResNet50", 224, 32)?;
        let input = o.input(&shape);
        let x = ZeroPadding2D::asymmetric((3, 3), (3, 3)).name("conv1_pad").call(&input)?;
        let x = Conv2D::new(64, 7).strides(2).name("conv1_conv").call(&x)?;
        let x = bn("conv1_bn").call(&x)?;
        let x = relu("conv1_relu").call(&x)?;
        let x = ZeroPadding2D::asymmetric((1, 1), (1, 1)).name("pool1_pad").call(&x)?;
        let x = MaxPooling2D::new(3).strides(2).name("pool1_pool").call(&x)?;
        let x = stack(x, 64, 3, 1, "conv2")?;
        let x = stack(x, 128, 4, 2, "conv3")?;
        let x = stack(x, 256, 6, 2, "conv4")?;
        let x = stack(x, 512, 3, 2, "conv5")?;
        let x = if o.include_top {
            let x = GlobalAveragePooling2D::new().name("avg_pool").call(&x)?;
            Dense::new(o.classes).activation(o.classifier_activation).name("predictions").call(&x)?
        } else {
            match o.pooling {
                Some(super::Pooling::Avg) => GlobalAveragePooling2D::new().name("avg_pool").call(&x)?,
                Some(super::Pooling::Max) => GlobalMaxPooling2D::new().name("max_pool").call(&x)?,
                None => x,
            }
        };
        let (suffix, hash) = if o.include_top { ("", WEIGHTS_HASHES.0) } else { ("_notop", WEIGHTS_HASHES.1) };
        let file_name = format!("resnet50_weights_tf_dim_ordering_tf_kernels{suffix}.h5");
        let file = WeightsFile { url: format!("{BASE_WEIGHTS_PATH}{file_name}"), file_name, hash: Some(hash) };
        o.finish(&input, x, "resnet50", Some(file))
    }
}

fn bn(name: &str) -> BatchNormalization {
    BatchNormalization::new().epsilon(1.001e-5).name(name)
}

fn relu(name: &str) -> ActivationLayer {
    ActivationLayer::new(Activation::Relu).name(name)
}

/// Keras' `residual_block_v1`: 1x1, 3x3, 1x1 (x4) convolutions beside a shortcut (a 1x1
/// convolution where the shape changes).
fn block(x: KerasTensor, filters: usize, stride: usize, conv_shortcut: bool, name: &str) -> Result<KerasTensor> {
    let shortcut = if conv_shortcut {
        let s = Conv2D::new(4 * filters, 1).strides(stride).name(format!("{name}_0_conv")).call(&x)?;
        bn(&format!("{name}_0_bn")).call(&s)?
    } else {
        x.clone()
    };
    let y = Conv2D::new(filters, 1).strides(stride).name(format!("{name}_1_conv")).call(&x)?;
    let y = bn(&format!("{name}_1_bn")).call(&y)?;
    let y = relu(&format!("{name}_1_relu")).call(&y)?;
    let y = Conv2D::new(filters, 3).padding(Padding::Same).name(format!("{name}_2_conv")).call(&y)?;
    let y = bn(&format!("{name}_2_bn")).call(&y)?;
    let y = relu(&format!("{name}_2_relu")).call(&y)?;
    let y = Conv2D::new(4 * filters, 1).name(format!("{name}_3_conv")).call(&y)?;
    let y = bn(&format!("{name}_3_bn")).call(&y)?;
    let y = Add::new().name(format!("{name}_add")).call(&[shortcut, y])?;
    relu(&format!("{name}_out")).call(&y)
}

/// Keras' `stack_residual_blocks_v1`.
fn stack(x: KerasTensor, filters: usize, blocks: usize, stride1: usize, name: &str) -> Result<KerasTensor> {
    let mut x = block(x, filters, stride1, true, &format!("{name}_block1"))?;
    for i in 2..=blocks {
        x = block(x, filters, 1, false, &format!("{name}_block{i}"))?;
    }
    Ok(x)
}

/// `keras.applications.resnet50.preprocess_input`: RGB to BGR and ImageNet's mean pixel
/// subtracted ([`Mode::Caffe`]), from RGB values in `[0, 255]`.
///
/// # Errors
/// As [`imagenet_utils::preprocess_input`].
pub fn preprocess_input(x: &Tensor) -> Result<Tensor> {
    imagenet_utils::preprocess_input(x, Mode::Caffe)
}
