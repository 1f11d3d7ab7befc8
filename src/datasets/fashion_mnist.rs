//! Fashion-MNIST, as `keras.datasets.fashion_mnist`: 60,000 training and 10,000 test 28x28
//! grayscale images of clothing in ten classes, in the same four IDX files as MNIST.
//!
//! Keras 3.15.1 gives no hash for these files (keras/src/datasets/fashion_mnist.py), so none is
//! checked, as in Keras; a truncated download is still caught (the transfer's length, then the
//! IDX reader's checks).

use super::LoadedData;
use crate::error::Result;

/// Keras' folder URL for the four files.
pub const ORIGIN: &str = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/";

/// The ten class names, in label order.
pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Loads Fashion-MNIST as `keras.datasets.fashion_mnist.load_data()`: from
/// `$KANDLE_DATA_DIR/fashion-mnist` or Keras' cache (`datasets/fashion-mnist/`) when the four
/// files are there, else downloaded from Keras' URL into Keras' cache.
///
/// Returns `x` of shape `(N, 28, 28)` and `y` of shape `(N,)`, both `u8`.
///
/// # Errors
/// [`crate::error::Error::Download`] when a file is nowhere and cannot be downloaded, or an error of
/// [`super::mnist::load_data_from`].
pub fn load_data() -> Result<LoadedData> {
    let mut dirs = super::data_dir_dirs("fashion-mnist");
    dirs.truncate(1);
    dirs.extend(super::keras_dataset_dirs().into_iter().map(|k| k.join("fashion-mnist")));
    for d in &dirs {
        if super::mnist::FILES.iter().all(|f| d.join(format!("{f}.gz")).is_file() || d.join(f).is_file()) {
            return super::mnist::load_data_from(d);
        }
    }
    let mut dir = None;
    // Keras' order: train labels, train images, test labels, test images.
    for f in [1, 0, 3, 2].map(|i| format!("{}.gz", super::mnist::FILES[i])) {
        let p = crate::utils::get_file(
            &f,
            &super::origin(&format!("{ORIGIN}{f}")),
            crate::utils::GetFileOptions::default()
                .cache_subdir(std::path::Path::new("datasets").join("fashion-mnist")),
        )?;
        dir = p.parent().map(|d| d.to_path_buf());
    }
    super::mnist::load_data_from(dir.unwrap_or_default())
}
