//! Helpers, as in `keras.utils`.

mod get_file;
mod numpy_random;
mod progbar;
mod report;
pub mod summary;

pub use crate::preprocessing::image::{image_dataset_from_directory, DatasetOptions};
pub use get_file::{
    extract_archive, get_file, hash_file, keras_home, validate_file, GetFileOptions, HashAlgorithm, OFFLINE_ENV,
};
pub(crate) use numpy_random::shuffle as numpy_shuffle;
pub use progbar::Progbar;
pub use report::{confusion_matrix, per_class_csv, plot_confusion_matrix, plot_misclassified};

use crate::{Error, Result};
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

/// Formats an integer with thousands separators, as Keras' summary does: `276,138`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed into place,
/// so that a crash never leaves a half-written file where a good one was.
///
/// # Errors
/// If the file cannot be written.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name =
        path.file_name().ok_or_else(|| Error::invalid("path", format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Lets glibc's `malloc` keep the large blocks that training frees, so that the next step
/// reuses them instead of returning them to the kernel and faulting fresh zeroed pages back in.
///
/// A training step allocates and frees the same tensors (activations, gradients, tens of MB
/// each at batch 256) every time. By default glibc serves blocks above a threshold with `mmap`
/// and unmaps them when freed, so every step pays page faults and the kernel's page zeroing
/// for each of them: measured here, about 530,000 page faults for 8 steps of the tutorial CNN,
/// and 10-20% of the CPU time. With large blocks kept in the heap the same run has about
/// 84,000.
///
/// kandle calls this once, at the first `fit`, `fit_generator`, `evaluate` or `predict`; the
/// setting is process-wide (`mallopt`), as TensorFlow's and PyTorch's caching allocators also
/// keep memory. The process's resident memory then stays near its peak instead of shrinking
/// between steps. Set the environment variable `KANDLE_NO_MALLOC_TUNING` to leave `malloc` as
/// it is. Does nothing off Linux with glibc.
///
/// ```
/// kandle::utils::tune_allocator(); // idempotent: only the first call does anything
/// kandle::utils::tune_allocator();
/// ```
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("KANDLE_NO_MALLOC_TUNING").is_some() {
                return;
            }
            // SAFETY: mallopt only changes parameters of glibc's allocator; any value is
            // accepted or refused (returns 0) without other effect.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        });
    }
}
