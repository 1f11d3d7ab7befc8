//! # kandle: the Keras workflow on candle
//!
//! Write the classic Keras CNN tutorial in Rust, line for line:
//!
//! ```no_run
//! use kandle::prelude::*;
//!
//! let ((x_train, y_train), (x_test, y_test)) = kandle::datasets::cifar10::load_data()?;
//! let (x_train, x_test) = ((x_train.to_dtype(DType::F32)? / 255.0)?, (x_test.to_dtype(DType::F32)? / 255.0)?);
//! let (y_train, y_test) = (to_categorical(&y_train, 10)?, to_categorical(&y_test, 10)?);
//!
//! let model = Sequential::new()
//!     .add(Conv2D::new(32, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((32, 32, 3)))
//!     .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu))
//!     .add(MaxPooling2D::new((2, 2)))
//!     .add(Dropout::new(0.25))
//!     .add(Flatten::new())
//!     .add(Dense::new(512).activation(Activation::Relu))
//!     .add(Dropout::new(0.5))
//!     .add(Dense::new(10).activation(Activation::Softmax));
//! model.summary()?;
//! model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
//! let history = model.fit(&x_train, &y_train, FitOptions::default().batch_size(256).epochs(10)
//!     .validation_data(&x_test, &y_test))?;
//! let score = model.evaluate(&x_test, &y_test, 256)?;
//! println!("test_loss={:.4} test_accuracy={:.4}", score.loss, score.accuracy().unwrap_or(0.0));
//! # Ok::<(), kandle::Error>(())
//! ```
//!
//! Beyond the stack, Keras' functional API builds any graph of layers (skip connections, shared
//! layers, several inputs and outputs, models inside models); see [`models::Model`]:
//!
//! ```
//! use kandle::prelude::*;
//! let inputs = Input::new((32, 32, 3));
//! let x = Conv2D::new(16, 3).padding(Padding::Same).activation(Activation::Relu).call(&inputs)?;
//! let y = Conv2D::new(16, 3).padding(Padding::Same).call(&x)?;
//! let y = Activation::Relu.call(&Add::new().call(&[x, y])?)?;
//! let outputs = Dense::new(10).activation(Activation::Softmax).call(&GlobalAveragePooling2D::new().call(&y)?)?;
//! let model = Model::new(&[inputs], &[outputs])?;
//! assert_eq!(model.count_params()?, 448 + 2320 + 170);
//! # Ok::<(), kandle::Error>(())
//! ```
//!
//! Shapes in the API are Keras' channels-last `(height, width, channels)`; tensors are candle
//! tensors. Names, defaults and semantics are Keras'; where kandle differs on purpose, the item's
//! documentation says so.

#![deny(missing_docs)]
#![allow(clippy::upper_case_acronyms)]

pub mod activations;
pub mod applications;
pub mod callbacks;
pub mod datasets;
pub mod distribute;
mod error;
pub mod export;
mod fs;
mod graph;
mod hdf5;
pub mod initializers;
pub mod kernels;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod mixed_precision;
pub mod models;
pub mod optimizers;
pub mod preprocessing;
mod random;
pub mod regularizers;
pub mod trainers;
pub mod utils;

pub use error::{fmt_shape, Error, Result};

/// The user guide's examples (docs/guide.md), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!(concat!(env!("OUT_DIR"), "/guide.md"))]
pub struct GuideExamples;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

/// Everything the tutorial and its next steps use, in one import: the layers, losses,
/// metrics, optimizers, the callbacks, `ImageDataGenerator`, the options of `fit` and
/// `ExportFormat` for `model.export`.
pub mod prelude {
    pub use crate::activations::Activation;
    pub use crate::callbacks::{
        BackupAndRestore, CSVLogger, Callback, EarlyStopping, LambdaCallback, LearningRateScheduler, ModelCheckpoint,
        ReduceLROnPlateau, TerminateOnNaN,
    };
    pub use crate::export::ExportFormat;
    pub use crate::initializers::Initializer;
    pub use crate::layers::{
        ActivationLayer, Add, Average, AveragePooling2D, BatchNormalization, CallLayer, Concatenate, Conv2D,
        Conv2DTranspose, Cropping2D, Dense, DepthwiseConv2D, Dropout, Flatten, GlobalAveragePooling2D,
        GlobalMaxPooling2D, Input, KerasTensor, Layer, LayerNormalization, LayerRef, LeakyReLU, MaxPooling2D, Maximum,
        Minimum, Multiply, Padding, ReLU, Rescaling, Reshape, SeparableConv2D, Softmax, SpatialDropout2D, Subtract,
        UpSampling2D, ZeroPadding2D,
    };
    pub use crate::losses::Loss;
    pub use crate::metrics::{Metric, MetricEntry, StatefulMetric};
    pub use crate::models::{
        load_model, Evaluation, FitOptions, GeneratorOptions, History, LoadWeightsOptions, Losses, MetricsByOutput,
        Model, Sequential,
    };
    pub use crate::optimizers::{Adam, Optimizer, RMSprop, SGD};
    pub use crate::preprocessing::image::ImageDataGenerator;
    pub use crate::regularizers::Regularizer;
    pub use crate::utils::to_categorical;
    pub use crate::{Error, Result};
    pub use candle_core::{DType, Device, Tensor};
}
