//! MNIST, as `keras.datasets.mnist`: 60,000 training and 10,000 test images of 28x28 digits.
//!
//! Reads the four standard IDX files, gzipped (`train-images-idx3-ubyte.gz`) or not.

use super::{describe_dirs, read_maybe_gz, search_dirs, LoadedData};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// The four files, in the order train images, train labels, test images, test labels.
pub const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Loads MNIST from the usual places (see [`crate::datasets`]).
///
/// Returns `x` of shape `(N, 28, 28)` and `y` of shape `(N,)`, both `u8`, as Keras does.
///
/// # Errors
/// [`Error::DatasetNotFound`] naming the files and the folders searched, or an error of
/// [`load_data_from`].
pub fn load_data() -> Result<LoadedData> {
    let dirs = search_dirs("mnist");
    for d in &dirs {
        if find(d, FILES[0]).is_some() {
            return load_data_from(d);
        }
    }
    Err(Error::DatasetNotFound {
        dataset: "MNIST",
        looked_for: FILES.iter().map(|f| format!("{f}[.gz]")).collect::<Vec<_>>().join(", "),
        searched: describe_dirs(&dirs),
        hint: "Get the four files from the MNIST distribution (e.g. the copies Keras and torchvision mirror) and put them in $KANDLE_DATA_DIR/mnist, or pass their folder to mnist::load_data_from.",
    })
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)].into_iter().find(|p| p.is_file())
}

/// Loads MNIST from the folder `dir` holding the four IDX files, gzipped or not.
///
/// ```
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
