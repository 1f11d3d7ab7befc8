//! Image preprocessing and real-time augmentation, as Keras' `ImageDataGenerator`.

mod data_generator;
mod dataset;
mod iterators;
mod transform;
mod zca;

pub use data_generator::{ImageDataGenerator, PreprocessingFunction, ShiftRange};
#[allow(deprecated)]
pub use dataset::{
    image_dataset_from_directory, image_dataset_from_directory_both, DatasetOptions, DatasetSubset, ImageDataset,
    LabelMode, ResizeInterpolation, ALLOWLIST_FORMATS,
};
pub use iterators::{
    BatchGenerator, ClassMode, ColorMode, DirectoryIterator, DirectoryOptions, NumpyArrayIterator, Subset,
};
pub use transform::{affine_matrix, apply_affine, FillMode, Interpolation, TransformParams};
