//! VGG16 and VGG19, as `keras.applications.vgg16` / `vgg19` (Simonyan and Zisserman, "Very Deep
//! Convolutional Networks for Large-Scale Image Recognition", ICLR 2015): Keras' layers and
//! names, Keras' ImageNet weights.

use super::imagenet_utils::{self, Mode};
use super::{application_setters, Options, WeightsFile};
use crate::activations::Activation;
use crate::error::Result;
use crate::layers::{
    CallLayer, Conv2D, Dense, Flatten, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D, Padding,
};
use crate::models::Model;
use candle_core::Tensor;

pub use super::imagenet_utils::decode_predictions;

const BASE_WEIGHTS_PATH: &str = "https://storage.googleapis.com/tensorflow/keras-applications/";

/// VGG16, as `keras.applications.VGG16`: 138,357,544 parameters with its top.
///
/// ```
/// use kandle::applications::{Weights, VGG16};
/// let model = VGG16::new().weights(Weights::None).include_top(false).input_shape((64, 64, 3)).build()?;
/// assert_eq!(model.count_params()?, 14_714_688);
/// assert_eq!(model.output_shape()?, vec![2, 2, 512]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct VGG16 {
    options: Options,
}

/// VGG19, as `keras.applications.VGG19`: 143,667,240 parameters with its top (VGG16 with a
/// fourth convolution in blocks 3 to 5).
///
/// ```
/// use kandle::applications::{Weights, VGG19};
/// let model = VGG19::new().weights(Weights::None).include_top(false).input_shape((32, 32, 3)).build()?;
/// assert_eq!(model.count_params()?, 20_024_384);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct VGG19 {
    options: Options,
}

impl VGG16 {
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
        build(
            &self.options,
            "vgg16",
            [2, 2, 3, 3, 3],
            ("64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc"),
        )
    }
}

impl VGG19 {
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
        build(
            &self.options,
            "vgg19",
            [2, 2, 4, 4, 4],
            ("cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6"),
        )
    }
}

/// Keras' VGG: five blocks of 3x3 convolutions (64, 128, 256, 512, 512 filters, `convs[b]` in
/// block `b`), each ending in a 2x2 max pooling; the top is Flatten, two Dense(4096) and the
/// classifier.
fn build(o: &Options, name: &str, convs: [usize; 5], hashes: (&'static str, &'static str)) -> Result<Model> {
    let network = name.to_uppercase();
    o.validate(&network)?;
    let shape = o.input_shape(&network, 224, 32)?;
    let input = o.input(&shape);
    let mut x = input.clone();
    for (b, (&n, filters)) in convs.iter().zip([64, 128, 256, 512, 512]).enumerate() {
        for c in 1..=n {
            x = Conv2D::new(filters, 3)
                .activation(Activation::Relu)
                .padding(Padding::Same)
                .name(format!("block{}_conv{c}", b + 1))
                .call(&x)?;
        }
        x = MaxPooling2D::new(2).strides(2).name(format!("block{}_pool", b + 1)).call(&x)?;
    }
    let x = if o.include_top {
        let x = Flatten::new().name("flatten").call(&x)?;
        let x = Dense::new(4096).activation(Activation::Relu).name("fc1").call(&x)?;
        let x = Dense::new(4096).activation(Activation::Relu).name("fc2").call(&x)?;
        Dense::new(o.classes).activation(o.classifier_activation).name("predictions").call(&x)?
    } else {
        // Unnamed in Keras: `global_average_pooling2d`, `global_max_pooling2d`.
        match o.pooling {
            Some(super::Pooling::Avg) => GlobalAveragePooling2D::new().call(&x)?,
            Some(super::Pooling::Max) => GlobalMaxPooling2D::new().call(&x)?,
            None => x,
        }
    };
    let (suffix, hash) = if o.include_top { ("", hashes.0) } else { ("_notop", hashes.1) };
    let file_name = format!("{name}_weights_tf_dim_ordering_tf_kernels{suffix}.h5");
    let file = WeightsFile { url: format!("{BASE_WEIGHTS_PATH}{name}/{file_name}"), file_name, hash: Some(hash) };
    o.finish(&input, x, name, Some(file))
}

/// `keras.applications.vgg16.preprocess_input` (and `vgg19`'s): RGB to BGR and ImageNet's mean
/// pixel subtracted ([`Mode::Caffe`]), from RGB values in `[0, 255]`.
///
/// # Errors
/// As [`imagenet_utils::preprocess_input`].
pub fn preprocess_input(x: &Tensor) -> Result<Tensor> {
    imagenet_utils::preprocess_input(x, Mode::Caffe)
}
