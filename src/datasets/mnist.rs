//! MNIST, as `keras.datasets.mnist`: 60,000 training and 10,000 test images of 28x28 digits.
//!
//! Reads Keras' `mnist.npz` (what `keras.datasets.mnist.load_data()` downloads and caches), or
//! the four standard IDX files, gzipped (`train-images-idx3-ubyte.gz`) or not.

use super::{read_maybe_gz, LoadedData};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// The four files, in the order train images, train labels, test images, test labels.
pub const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Keras' URL (keras/src/datasets/mnist.py, Keras 3.15.1).
pub const ORIGIN: &str = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz";
/// The SHA-256 of [`ORIGIN`].
pub const SHA256: &str = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1";

/// Loads MNIST as `keras.datasets.mnist.load_data()`: from `$KANDLE_DATA_DIR` or Keras' cache
/// (`mnist.npz`, or the IDX files) when it is there, else `mnist.npz` downloaded from Keras'
/// URL ([`ORIGIN`], SHA-256 checked) into Keras' cache.
///
/// Returns `x` of shape `(N, 28, 28)` and `y` of shape `(N,)`, both `u8`, as Keras does.
///
/// # Errors
/// [`Error::Download`] when the data is nowhere and cannot be downloaded (naming the URL and
/// the path to put `mnist.npz` at), or an error of [`load_data_from`] / [`load_npz`].
pub fn load_data() -> Result<LoadedData> {
    let mut dirs = super::data_dir_dirs("mnist");
    for k in super::keras_dataset_dirs() {
        dirs.push(k.join("mnist"));
        dirs.push(k);
    }
    for d in &dirs {
        if find(d, FILES[0]).is_some() {
            return load_data_from(d);
        }
        let npz = d.join("mnist.npz");
        if npz.is_file() {
            // A cached mnist.npz that does not read is downloaded again below.
            if let Ok(data) = load_npz(&npz) {
                return Ok(data);
            }
        }
    }
    let url = super::origin(ORIGIN);
    let path = crate::utils::get_file("mnist.npz", &url, crate::utils::GetFileOptions::default().file_hash(SHA256))?;
    load_npz(&path)
}

/// Loads Keras' `mnist.npz` (arrays `x_train`, `y_train`, `x_test`, `y_test`, `uint8`).
///
/// # Errors
/// A file that is not a zip of `.npy` arrays, or lacks one of the four arrays, or whose
/// arrays do not have MNIST's shapes and type.
pub fn load_npz(path: &Path) -> Result<LoadedData> {
    let bad = |reason: String| Error::Format { path: path.into(), format: "npz", offset: 0, reason };
    let arrays = Tensor::read_npz(path).map_err(|e| bad(e.to_string()))?;
    let get = |name: &str, rank: usize| -> Result<Tensor> {
        let t = arrays
            .iter()
            .find(|(n, _)| n == name || n.strip_suffix(".npy") == Some(name))
            .map(|(_, t)| t.clone())
            .ok_or_else(|| {
                bad(format!(
                    "no array `{name}` (found: {})",
                    arrays.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })?;
        if t.dtype() != candle_core::DType::U8 || t.rank() != rank {
            return Err(bad(format!(
                "`{name}` is a {:?} array of shape {:?}, expected uint8 of rank {rank}",
                t.dtype(),
                t.dims()
            )));
        }
        Ok(t)
    };
    let (x_train, y_train, x_test, y_test) =
        (get("x_train", 3)?, get("y_train", 1)?, get("x_test", 3)?, get("y_test", 1)?);
    for (x, y, what) in [(&x_train, &y_train, "train"), (&x_test, &y_test, "test")] {
        if x.dims()[0] != y.dims()[0] {
            return Err(bad(format!("{} {what} images and {} labels", x.dims()[0], y.dims()[0])));
        }
    }
    Ok(((x_train, y_train), (x_test, y_test)))
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)].into_iter().find(|p| p.is_file())
}

/// Loads MNIST from the folder `dir` holding the four IDX files, gzipped or not.
///
/// ```no_run
/// let ((x_train, y_train), (x_test, y_test)) = kandle::datasets::mnist::load_data_from("../shared/data/mnist")?;
/// assert_eq!(x_train.dims(), &[60000, 28, 28]);
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// A missing file (named), or a file that is not a valid IDX file (bad magic number, wrong
/// dimensions, truncated), or image and label counts that differ.
pub fn load_data_from(dir: impl AsRef<Path>) -> Result<LoadedData> {
    let dir = dir.as_ref();
    let path = |name: &str| {
        find(dir, name).ok_or_else(|| {
            Error::io(
                dir.join(format!("{name}.gz")),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("MNIST file {name}[.gz] not found in this folder"),
                ),
            )
        })
    };
    let load = |i: usize, l: usize| -> Result<(Tensor, Tensor)> {
        let (ip, lp) = (path(FILES[i])?, path(FILES[l])?);
        let (idims, images) = read_idx(&ip, 3)?;
        let (ldims, labels) = read_idx(&lp, 1)?;
        if idims[0] != ldims[0] {
            return Err(Error::Format {
                path: lp,
                format: "MNIST IDX",
                offset: 4,
                reason: format!("{} labels for {} images in {}", ldims[0], idims[0], ip.display()),
            });
        }
        Ok((Tensor::from_vec(images, idims, &Device::Cpu)?, Tensor::from_vec(labels, ldims[0], &Device::Cpu)?))
    };
    Ok((load(0, 1)?, load(2, 3)?))
}

/// Largest IDX payload accepted (1 GiB): a corrupt header cannot make the reader allocate more.
const MAX_BYTES: u64 = 1 << 30;

/// Parses an IDX file of unsigned bytes with `rank` dimensions: `(dims, data)`.
///
/// # Errors
/// [`Error::Format`] naming the file and the offset of the problem.
pub fn read_idx(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path, MAX_BYTES + 4 + 4 * rank as u64 + 1)?;
    parse_idx(&bytes, rank).map_err(|(offset, reason)| Error::Format {
        path: path.into(),
        format: "MNIST IDX",
        offset,
        reason,
    })
}

/// Parses IDX bytes; the error is `(offset, reason)`.
pub(crate) fn parse_idx(bytes: &[u8], rank: usize) -> std::result::Result<(Vec<usize>, Vec<u8>), (u64, String)> {
    if bytes.len() < 4 {
        return Err((0, format!("file of {} bytes is too short for the 4-byte magic number", bytes.len())));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = 0x0800 | rank as u32;
    if magic != expected {
        return Err((
            0,
            format!("bad magic number 0x{magic:08x}, expected 0x{expected:08x} (unsigned bytes, {rank} dimensions)"),
        ));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err((4, format!("truncated header: {} bytes, expected {header}", bytes.len())));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let total = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).filter(|&t| t <= MAX_BYTES);
    let Some(total) = total else {
        return Err((4, format!("dimensions {dims:?} describe more than {MAX_BYTES} bytes")));
    };
    let data = &bytes[header..];
    if data.len() as u64 != total {
        return Err((
            header as u64,
            format!(
                "dimensions {dims:?} need {total} bytes of data, the file has {} ({})",
                data.len(),
                if (data.len() as u64) < total { "truncated" } else { "trailing bytes" }
            ),
        ));
    }
    Ok((dims, data.to_vec()))
}
