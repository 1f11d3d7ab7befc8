//! Preprocessing layers, as Keras' `layers/preprocessing/`: they live in the model, so that a
//! saved model takes raw images. `Rescaling` and `Normalization` (with `adapt`).

mod normalization;
mod rescaling;

pub use self::normalization::Normalization;
pub use self::rescaling::Rescaling;
