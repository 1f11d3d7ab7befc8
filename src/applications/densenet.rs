//! DenseNet121, DenseNet169 and DenseNet201, as `keras.applications.densenet` (Huang et al.,
//! "Densely Connected Convolutional Networks", CVPR 2017): Keras' layers and names, Keras'
//! ImageNet weights.

use super::imagenet_utils::{self, Mode};
use super::{application_setters, Options, WeightsFile};
use crate::activations::Activation;
use crate::error::Result;
use crate::layers::{
    ActivationLayer, AveragePooling2D, BatchNormalization, CallLayer, Concatenate, Conv2D, Dense,
    GlobalAveragePooling2D, GlobalMaxPooling2D, KerasTensor, MaxPooling2D, Padding, ZeroPadding2D,
};
use crate::models::Model;
use candle_core::Tensor;

pub use super::imagenet_utils::decode_predictions;

const BASE_WEIGHTS_PATH: &str = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/";

macro_rules! densenet {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $blocks:expr, $hashes:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default)]
        pub struct $ty {
            options: Options,
        }

        impl $ty {
            /// Keras' defaults: the top, ImageNet's weights, 224x224x3 inputs, 1000 classes,
            /// softmax.
            pub fn new() -> Self {
                Self::default()
            }

            application_setters!();

            /// Builds the network and loads its weights.
            ///
            /// # Errors
            /// Arguments Keras refuses (named), a weights file that cannot be fetched or does
            /// not fit.
            pub fn build(self) -> Result<Model> {
                build(&self.options, $name, $blocks, $hashes)
            }
        }
    };
}

densenet!(
    /// DenseNet121, as `keras.applications.DenseNet121`: 8,062,504 parameters with its top.
    ///
    /// ```
    /// use kandle::applications::{DenseNet121, Weights};
    /// let model = DenseNet121::new().weights(Weights::None).build()?;
    /// assert_eq!(model.count_params()?, 8_062_504);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    DenseNet121,
    "densenet121",
    [6, 12, 24, 16],
    ("9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738")
);
densenet!(
    /// DenseNet169, as `keras.applications.DenseNet169`: 14,307,880 parameters with its top.
    DenseNet169,
    "densenet169",
    [6, 12, 32, 32],
    ("d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b")
);
densenet!(
    /// DenseNet201, as `keras.applications.DenseNet201`: 20,242,984 parameters with its top.
    DenseNet201,
    "densenet201",
    [6, 12, 48, 32],
    ("1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1")
);

fn bn(name: &str) -> BatchNormalization {
    BatchNormalization::new().epsilon(1.001e-5).name(name)
}

fn relu(name: &str) -> ActivationLayer {
    ActivationLayer::new(Activation::Relu).name(name)
}

/// Keras' `conv_block`: BN, ReLU, 1x1 conv (4 x 32), BN, ReLU, 3x3 conv (32), concatenated to
/// its input.
fn conv_block(x: KerasTensor, name: &str) -> Result<KerasTensor> {
    let y = bn(&format!("{name}_0_bn")).call(&x)?;
    let y = relu(&format!("{name}_0_relu")).call(&y)?;
    let y = Conv2D::new(4 * 32, 1).use_bias(false).name(format!("{name}_1_conv")).call(&y)?;
    let y = bn(&format!("{name}_1_bn")).call(&y)?;
    let y = relu(&format!("{name}_1_relu")).call(&y)?;
    let y = Conv2D::new(32, 3).padding(Padding::Same).use_bias(false).name(format!("{name}_2_conv")).call(&y)?;
    Concatenate::new().name(format!("{name}_concat")).call(&[x, y])
}

/// Keras' `transition_block`: BN, ReLU, 1x1 conv halving the channels, 2x2 average pooling.
fn transition_block(x: KerasTensor, name: &str) -> Result<KerasTensor> {
    let x = bn(&format!("{name}_bn")).call(&x)?;
    let x = relu(&format!("{name}_relu")).call(&x)?;
    let channels = x.shape()[2];
    let x = Conv2D::new(channels / 2, 1).use_bias(false).name(format!("{name}_conv")).call(&x)?;
    AveragePooling2D::new(2).strides(2).name(format!("{name}_pool")).call(&x)
}

fn build(o: &Options, name: &str, blocks: [usize; 4], hashes: (&'static str, &'static str)) -> Result<Model> {
    let network = match name {
        "densenet121" => "DenseNet121",
        "densenet169" => "DenseNet169",
        _ => "DenseNet201",
    };
    o.validate(network)?;
    let shape = o.input_shape(network, 224, 32)?;
    let input = o.input(&shape);
    let x = ZeroPadding2D::asymmetric((3, 3), (3, 3)).call(&input)?;
    let x = Conv2D::new(64, 7).strides(2).use_bias(false).name("conv1_conv").call(&x)?;
    let x = bn("conv1_bn").call(&x)?;
    let x = relu("conv1_relu").call(&x)?;
    let x = ZeroPadding2D::asymmetric((1, 1), (1, 1)).call(&x)?;
    let mut x = MaxPooling2D::new(3).strides(2).name("pool1").call(&x)?;
    for (i, &n) in blocks.iter().enumerate() {
        for b in 1..=n {
            x = conv_block(x, &format!("conv{}_block{b}", i + 2))?;
        }
        if i < 3 {
            x = transition_block(x, &format!("pool{}", i + 2))?;
        }
    }
    let x = bn("bn").call(&x)?;
    let x = relu("relu").call(&x)?;
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
    let (suffix, hash) = if o.include_top { ("", hashes.0) } else { ("_notop", hashes.1) };
    let file_name = format!("{name}_weights_tf_dim_ordering_tf_kernels{suffix}.h5");
    let file = WeightsFile { url: format!("{BASE_WEIGHTS_PATH}{file_name}"), file_name, hash: Some(hash) };
    o.finish(&input, x, name, Some(file))
}

/// `keras.applications.densenet.preprocess_input`: values scaled to `[0, 1]`, then each
/// channel normalized by ImageNet's mean and standard deviation ([`Mode::Torch`]), from RGB
/// values in `[0, 255]`.
///
/// # Errors
/// As [`imagenet_utils::preprocess_input`].
pub fn preprocess_input(x: &Tensor) -> Result<Tensor> {
    imagenet_utils::preprocess_input(x, Mode::Torch)
}
