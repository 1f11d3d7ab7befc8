//! Helpers, as in `keras.utils`.

mod get_file;
mod report;

#[cfg(feature = "tensorboard")]
/// TensorBoard's event files: moved to [`crate::callbacks::tensorboard`], whose items this
/// module still names (deprecated path).
pub mod summary {
    pub use crate::callbacks::tensorboard::events::*;
}

pub use crate::callbacks::Progbar;
pub use crate::fs::write_atomic;
pub use crate::kernels::tune_allocator;
pub use crate::models::thousands;
pub use crate::preprocessing::image::{image_dataset_from_directory, DatasetOptions};
pub use get_file::{
    extract_archive, get_file, hash_file, keras_home, validate_file, GetFileOptions, HashAlgorithm, OFFLINE_ENV,
};
pub use report::{confusion_matrix, per_class_csv};
#[cfg(feature = "plot")]
pub use report::{plot_confusion_matrix, plot_misclassified};

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};

/// One-hot encodes class indices, as `keras.utils.to_categorical`: labels of shape `(N,)` or
/// `(N, 1)` (any integer or integral float type) become `f32` rows of `num_classes` columns.
/// `num_classes` is a number or `None`; with `None`, as in Keras, it is the largest label + 1.
///
/// ```
/// use kandle::utils::to_categorical;
/// use candle_core::{Device, Tensor};
/// let y = Tensor::new(&[2u8, 0, 1], &Device::Cpu)?;
/// let one_hot = to_categorical(&y, 3)?;
/// assert_eq!(one_hot.to_vec2::<f32>()?, vec![vec![0., 0., 1.], vec![1., 0., 0.], vec![0., 1., 0.]]);
/// assert_eq!(to_categorical(&y, None)?.dims(), &[3, 3]); // keras.utils.to_categorical(y)
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// When `labels` is not `(N,)` or `(N, 1)`, or a label is not an integer in `[0, num_classes)`
/// (with `None`: a non-negative integer).
pub fn to_categorical(labels: &Tensor, num_classes: impl Into<Option<usize>>) -> Result<Tensor> {
    let dims = labels.dims();
    if !(dims.len() == 1 || (dims.len() == 2 && dims[1] == 1)) {
        return Err(Error::Shape {
            context: "to_categorical `labels`".into(),
            expected: "(N,) or (N, 1)".into(),
            received: format!("{dims:?}"),
        });
    }
    let values = labels.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let num_classes = match num_classes.into() {
        Some(n) => n,
        None => values.iter().fold(0.0f64, |m, v| m.max(*v + 1.0)).min(u32::MAX as f64) as usize,
    };
    if values.len().saturating_mul(num_classes) > 1 << 31 {
        return Err(Error::invalid(
            "num_classes",
            format!(
                "to_categorical: {} labels of {num_classes} classes need {} GiB of one-hot rows",
                values.len(),
                (values.len() as f64 * num_classes as f64 * 4.0 / (1u64 << 30) as f64).ceil()
            ),
        ));
    }
    if let Some((i, v)) =
        values.iter().enumerate().find(|(_, v)| !(v.fract() == 0.0 && **v >= 0.0 && **v < num_classes as f64))
    {
        return Err(Error::invalid(
            "labels",
            format!("to_categorical: expected integers in [0, {num_classes}), received {v} at index {i}"),
        ));
    }
    crate::losses::one_hot(labels, num_classes, DType::F32)
}
