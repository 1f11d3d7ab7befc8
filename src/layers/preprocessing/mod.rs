//! Preprocessing layers, as Keras' `layers/preprocessing/`: they live in the model, so that a
//! saved model takes raw images. `Rescaling` and `Normalization` (with `adapt`); the sizing
//! layers `Resizing`, `CenterCrop`, `RandomCrop`; and Keras 3's augmentation layers, the
//! successors of `ImageDataGenerator`, active in training only and seeded: `RandomFlip`,
//! `RandomRotation`, `RandomTranslation`, `RandomZoom`, `RandomContrast`, `RandomBrightness`.
//! Their resampling is TensorFlow's, which Keras 3 runs (`ImageProjectiveTransformV3`,
//! `tf.image.resize`).

mod augment;
mod color;
mod crop;
mod geometry;
pub(crate) mod image_ops;
mod normalization;
mod rescaling;

pub use self::augment::IntoFactor;
pub use self::color::{RandomBrightness, RandomContrast};
pub use self::crop::{CenterCrop, RandomCrop, Resizing};
pub use self::geometry::{FlipMode, RandomFlip, RandomRotation, RandomTranslation, RandomZoom};
pub use self::image_ops::{FillMode, Interpolation};
pub use self::normalization::Normalization;
pub use self::rescaling::Rescaling;
