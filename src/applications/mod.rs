//! Networks pretrained on ImageNet, as `keras.applications`: [`ResNet50`], [`MobileNetV2`],
//! [`EfficientNetB0`], [`VGG16`], [`VGG19`], [`DenseNet121`], [`DenseNet169`] and
//! [`DenseNet201`], built layer by layer as Keras' source builds them (the same layer names,
//! so Keras' weight files map one to one), with Keras' arguments and defaults.
//!
//! `Weights::Imagenet` (the default, as in Keras) reads Keras' own file from Keras' cache
//! (`~/.keras/models/`, shared with Python Keras) or downloads it there from Keras' URL, checked
//! against Keras' hash; `KANDLE_APPLICATIONS_MIRROR` replaces the download's base URL (a mirror,
//! or a `file://` folder) and `KANDLE_OFFLINE=1` turns downloads off. Each network's module has
//! its `preprocess_input`; [`imagenet_utils::decode_predictions`] names the classes.
//!
//! Transfer learning, as Keras' guide does it: a frozen base called in inference mode, a new head.
//!
//! ```no_run
//! use kandle::prelude::*;
//! use kandle::applications::{MobileNetV2, Weights};
//! let base = MobileNetV2::new().include_top(false).input_shape((160, 160, 3)).build()?;
//! base.set_trainable(false);
//! let inputs = Input::new((160, 160, 3));
//! let x = Rescaling::new(1.0 / 127.5).offset(-1.0).call(&inputs)?; // mobilenet_v2.preprocess_input
//! let x = base.as_layer().call_training(&x, false)?; // BatchNormalization in inference mode
//! let x = GlobalAveragePooling2D::new().call(&x)?;
//! let x = Dropout::new(0.2).call(&x)?;
//! let outputs = Dense::new(1).call(&x)?;
//! let model = Model::new(&[inputs], &[outputs])?;
//! # let _ = (model, Weights::None);
//! # Ok::<(), kandle::Error>(())
//! ```
//!
//! Where kandle differs: shapes are concrete, so `include_top(false)` without an `input_shape`
//! builds for Keras' default size (224x224x3) where Keras leaves height and width open.

pub mod densenet;
pub mod efficientnet;
pub mod imagenet_utils;
pub mod mobilenet_v2;
pub mod resnet;
pub mod vgg;

pub use self::densenet::{DenseNet121, DenseNet169, DenseNet201};
pub use self::efficientnet::EfficientNetB0;
pub use self::mobilenet_v2::MobileNetV2;
pub use self::resnet::ResNet50;
pub use self::vgg::{VGG16, VGG19};

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::layers::KerasTensor;
use crate::models::Model;
use std::path::PathBuf;
use std::str::FromStr;

/// The environment variable that replaces the base URL of Keras' weight files
/// (`https://mirror.example/keras-applications`, `file:///data/keras-applications`): the file
/// is then fetched from `$KANDLE_APPLICATIONS_MIRROR/<Keras' file name>`.
pub const MIRROR_ENV: &str = "KANDLE_APPLICATIONS_MIRROR";

/// Keras' `weights` argument.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Weights {
    /// Pretrained on ImageNet: Keras' own file, from Keras' cache or downloaded (Keras' default).
    #[default]
    Imagenet,
    /// Random initial weights (Keras' `weights=None`).
    None,
    /// A weights file to load (Keras' legacy `.h5`, `.weights.h5`, or kandle's own).
    Path(PathBuf),
}

impl FromStr for Weights {
    type Err = Error;
    /// `"imagenet"`, `"none"` (or `"None"`), or a path.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "imagenet" => Ok(Weights::Imagenet),
            "none" | "None" => Ok(Weights::None),
            "" => Err(Error::invalid("weights", "expected \"imagenet\", \"none\" or a path, received an empty string")),
            path => Ok(Weights::Path(path.into())),
        }
    }
}

/// Keras' `pooling` argument, for a network without its top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// `GlobalAveragePooling2D`: the output is a vector per image.
    Avg,
    /// `GlobalMaxPooling2D`.
    Max,
}

impl FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "avg" => Ok(Pooling::Avg),
            "max" => Ok(Pooling::Max),
            other => Err(Error::invalid("pooling", format!("expected \"avg\" or \"max\", received {other:?}"))),
        }
    }
}

/// The arguments every `keras.applications` network takes, with Keras' defaults.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    include_top: bool,
    weights: Weights,
    input_tensor: Option<KerasTensor>,
    input_shape: Option<Vec<usize>>,
    pooling: Option<Pooling>,
    classes: usize,
    classifier_activation: Activation,
    name: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            include_top: true,
            weights: Weights::Imagenet,
            input_tensor: None,
            input_shape: None,
            pooling: None,
            classes: 1000,
            classifier_activation: Activation::Softmax,
            name: None,
        }
    }
}

/// The setters of [`Options`], Keras' argument names.
macro_rules! application_setters {
    () => {
        /// Whether to keep the classifier (`GlobalAveragePooling2D` then `Dense(classes)`),
        /// Keras' `include_top` (default true).
        pub fn include_top(mut self, include_top: bool) -> Self {
            self.options.include_top = include_top;
            self
        }

        /// ImageNet's weights (default), none, or a file ([`crate::applications::Weights`]).
        pub fn weights(mut self, weights: crate::applications::Weights) -> Self {
            self.options.weights = weights;
            self
        }

        /// Builds on `tensor` (the output of an `Input`, or of layers on one) instead of a new
        /// `Input`: the model's inputs are those `tensor` comes from (Keras' `input_tensor`).
        pub fn input_tensor(mut self, tensor: &crate::layers::KerasTensor) -> Self {
            self.options.input_tensor = Some(tensor.clone());
            self
        }

        /// The input shape `(height, width, channels)` (Keras' `input_shape`); with the top
        /// and ImageNet weights only the default size is accepted.
        pub fn input_shape(mut self, shape: impl crate::layers::IntoShape) -> Self {
            self.options.input_shape = Some(shape.into_dims());
            self
        }

        /// The global pooling after the last convolution when there is no top (Keras'
        /// `pooling`; default none: the output is the last feature map).
        pub fn pooling(mut self, pooling: Option<crate::applications::Pooling>) -> Self {
            self.options.pooling = pooling;
            self
        }

        /// The number of classes of the top (default 1000; ImageNet's weights need 1000).
        pub fn classes(mut self, classes: usize) -> Self {
            self.options.classes = classes;
            self
        }

        /// The top's activation (default softmax; `Linear` gives logits). With pretrained
        /// weights only softmax and linear are accepted, as in Keras.
        pub fn classifier_activation(mut self, activation: crate::activations::Activation) -> Self {
            self.options.classifier_activation = activation;
            self
        }

        /// The model's name (default Keras' name of the network).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.options.name = Some(name.into());
            self
        }
    };
}
pub(crate) use application_setters;

/// A network's weight file on Keras' servers.
pub(crate) struct WeightsFile {
    /// Keras' file name (also its name in the cache).
    pub file_name: String,
    /// Keras' URL of the file.
    pub url: String,
    /// Keras' MD5 of the file, where Keras checks one.
    pub hash: Option<&'static str>,
}

impl Options {
    /// The checks Keras makes before building: the weights' file exists, ImageNet's top has
    /// 1000 classes, pretrained tops end in softmax or linear.
    fn validate(&self, network: &str) -> Result<()> {
        if let Weights::Path(p) = &self.weights {
            if !p.is_file() {
                return Err(Error::invalid(
                    "weights",
                    format!(
                        "{network}: expected None, \"imagenet\" or the path of a weights file, received {} \
                         (no such file)",
                        p.display()
                    ),
                ));
            }
        }
        if self.weights == Weights::Imagenet && self.include_top && self.classes != 1000 {
            return Err(Error::invalid(
                "classes",
                format!(
                    "{network}: with weights \"imagenet\" and include_top, classes must be 1000; received {}",
                    self.classes
                ),
            ));
        }
        if self.include_top
            && self.weights != Weights::None
            && !matches!(self.classifier_activation, Activation::Softmax | Activation::Linear)
        {
            return Err(Error::invalid(
                "classifier_activation",
                format!(
                    "{network}: only softmax and linear (None) are allowed with pretrained weights and include_top; \
                     received {}",
                    self.classifier_activation.name()
                ),
            ));
        }
        if self.classes == 0 {
            return Err(Error::invalid("classes", format!("{network}: expected at least 1 class, received 0")));
        }
        Ok(())
    }

    /// The input's shape, as Keras' `obtain_input_shape`: the default size when none is given;
    /// with the top and ImageNet weights exactly the default; else at least `min_size` and 3
    /// channels for ImageNet's weights.
    fn input_shape(&self, network: &str, default_size: usize, min_size: usize) -> Result<Vec<usize>> {
        let given = match (&self.input_tensor, &self.input_shape) {
            (Some(t), _) => Some(t.shape().to_vec()),
            (None, s) => s.clone(),
        };
        let channels = given.as_ref().and_then(|s| s.get(2).copied()).filter(|_| self.weights != Weights::Imagenet);
        let default = vec![default_size, default_size, channels.unwrap_or(3)];
        let Some(shape) = given else { return Ok(default) };
        if self.weights == Weights::Imagenet && self.include_top && shape != default {
            return Err(Error::invalid(
                "input_shape",
                format!(
                    "{network}: with include_top and weights \"imagenet\", the input shape must be {}; received {}",
                    crate::error::fmt_shape(false, &default),
                    crate::error::fmt_shape(false, &shape)
                ),
            ));
        }
        if shape.len() != 3 {
            return Err(Error::invalid(
                "input_shape",
                format!(
                    "{network}: expected (height, width, channels), received {}",
                    crate::error::fmt_shape(false, &shape)
                ),
            ));
        }
        if self.weights == Weights::Imagenet && shape[2] != 3 {
            return Err(Error::invalid(
                "input_shape",
                format!(
                    "{network}: ImageNet's weights need 3 channels; received {}",
                    crate::error::fmt_shape(false, &shape)
                ),
            ));
        }
        if shape[0] < min_size || shape[1] < min_size || shape[2] == 0 {
            return Err(Error::invalid(
                "input_shape",
                format!(
                    "{network}: the input must be at least {min_size}x{min_size}; received {}",
                    crate::error::fmt_shape(false, &shape)
                ),
            ));
        }
        Ok(shape)
    }

    /// The model's input: the given tensor, or a new `Input` of `shape`.
    fn input(&self, shape: &[usize]) -> KerasTensor {
        match &self.input_tensor {
            Some(t) => t.clone(),
            None => crate::layers::Input::new(shape.to_vec()),
        }
    }

    /// The model from the input to `outputs` (the sources of `input_tensor` as its inputs),
    /// named, with its weights loaded as `weights` says.
    fn finish(
        &self,
        input: &KerasTensor,
        outputs: KerasTensor,
        name: &str,
        file: Option<WeightsFile>,
    ) -> Result<Model> {
        let inputs = input.source_inputs();
        let model = Model::new(&inputs, &[outputs])?.name(self.name.clone().unwrap_or_else(|| name.to_string()));
        match &self.weights {
            Weights::None => {}
            Weights::Path(p) => model.load_weights(p)?,
            Weights::Imagenet => {
                let file = file.ok_or_else(|| {
                    Error::invalid("weights", format!("{name}: Keras has no ImageNet weights for these arguments"))
                })?;
                model.load_weights(fetch_weights(&file)?)?;
            }
        }
        Ok(model)
    }
}

/// Keras' weight file, from Keras' cache (`~/.keras/models/`) or downloaded there, checked
/// against Keras' hash.
pub(crate) fn fetch_weights(file: &WeightsFile) -> Result<PathBuf> {
    let origin = match std::env::var(MIRROR_ENV).ok().filter(|m| !m.is_empty()) {
        Some(m) => format!("{}/{}", m.trim_end_matches('/'), file.file_name),
        None => file.url.clone(),
    };
    let mut opts = crate::utils::GetFileOptions::default().cache_subdir("models");
    if let Some(h) = file.hash {
        opts = opts.file_hash(h);
    }
    crate::utils::get_file(&file.file_name, &origin, opts)
}

/// Keras' `imagenet_utils.correct_pad`: the zero padding before a stride-2 convolution of
/// `kernel` on a `(height, width)` map, so that "valid" then covers the map as TensorFlow's
/// "same" would.
pub(crate) fn correct_pad(size: (usize, usize), kernel: usize) -> ((usize, usize), (usize, usize)) {
    let adjust = (1 - size.0 % 2, 1 - size.1 % 2);
    let correct = kernel / 2;
    ((correct - adjust.0, correct), (correct - adjust.1, correct))
}

/// Keras' `_make_divisible`: `v` rounded to a multiple of `divisor`, never more than 10% below.
pub(crate) fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_and_correct_pad_are_keras() {
        // Keras: _make_divisible(32 * 0.35, 8) = 16, (16 * 1.0) = 16, (1280 * 1.3, 8) = 1664.
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24);
        assert_eq!(make_divisible(1280.0 * 1.3, 8), 1664);
        assert_eq!(make_divisible(96.0 * 0.35, 8), 32);
        // correct_pad on 224x224 with 3x3: ((0, 1), (0, 1)); on 7x7 with 5x5: ((2, 2), (2, 2)).
        assert_eq!(correct_pad((224, 224), 3), ((0, 1), (0, 1)));
        assert_eq!(correct_pad((7, 7), 5), ((2, 2), (2, 2)));
    }

    #[test]
    fn weights_parse_as_keras_spells_them() {
        assert_eq!("imagenet".parse::<Weights>().unwrap(), Weights::Imagenet);
        assert_eq!("none".parse::<Weights>().unwrap(), Weights::None);
        assert_eq!("w.h5".parse::<Weights>().unwrap(), Weights::Path("w.h5".into()));
        assert!("".parse::<Weights>().is_err());
        assert!("mean".parse::<Pooling>().unwrap_err().to_string().contains("\"avg\" or \"max\""));
    }
}
