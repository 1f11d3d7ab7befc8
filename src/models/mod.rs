//! Models, as in `keras.models`: [`Model`] (the functional API: any graph of layers),
//! [`Sequential`] (a stack), [`History`], saving and [`load_model`]. How they train lives in
//! [`crate::trainers`].

pub(crate) mod core;
mod functional;
mod model;
pub(crate) mod saving;
mod sequential;
mod summary;

pub use crate::callbacks::History;
pub use crate::trainers::{
    Evaluation, FitOptions, GeneratorOptions, LayerTime, Profile, TrainingContext, ValidationFreq,
};
pub use model::{IntoLosses, IntoMetrics, Losses, Model};
pub use saving::{load_model, load_model_with};
pub use sequential::Sequential;
pub use summary::thousands;
