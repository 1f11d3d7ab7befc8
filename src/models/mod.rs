//! Models, as in `keras.models`: what a model is. [`Model`] (the functional API: any graph of
//! layers), [`Sequential`] (a stack), a model used as a layer of another, the summary, saving
//! and [`load_model`]. How they learn lives in [`crate::trainers`]; the graph they run, in
//! `crate::graph`.

mod architecture;
mod export;
mod functional;
mod keras;
mod model;
mod nested;
pub(crate) mod saving;
mod sequential;
mod summary;
mod trainee;

pub use crate::callbacks::{History, TrainingContext};
pub use crate::trainers::{
    Evaluation, FitOptions, ForArrays, ForGenerator, GeneratorOptions, IntoLosses, IntoMetrics, LayerTime, Losses,
    MetricsByOutput, Profile, ValidationFreq,
};
pub use keras::LoadWeightsOptions;
pub use model::Model;
pub use saving::{load_model, load_model_with};
pub use sequential::Sequential;
pub use summary::thousands;
