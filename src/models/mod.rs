//! Models, as in `keras.models`: [`Sequential`], its training options and [`History`].

mod history;
mod plot;
mod prefetch;
mod saving;
mod sequential;
mod summary;

pub use history::History;
pub use saving::load_model;
pub use sequential::{Evaluation, FitOptions, GeneratorOptions, Sequential, TrainingContext};
