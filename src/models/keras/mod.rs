//! Keras' own files: the `.keras` archive, Keras 3's weights layout (`.weights.h5`), the
//! legacy Keras 2 `.h5`, and Keras' serialized configs, both ways.

pub(crate) mod archive;
pub(crate) mod config;
mod legacy_h5;
mod options;
pub(crate) mod weights;

pub use legacy_h5::LoadWeightsOptions;
pub(crate) use legacy_h5::{holds_keras3_layout, is_legacy_h5, load_legacy_model};
