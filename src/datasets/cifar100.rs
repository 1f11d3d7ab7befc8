//! CIFAR-100, as `keras.datasets.cifar100`: 50,000 training and 10,000 test 32x32 RGB images
//! in 100 fine classes grouped into 20 coarse ones.
//!
//! Reads the python version Keras downloads (`cifar-100-python/train` and `test`, pickled), as
//! a folder, as its `cifar-100-python.tar.gz`, or from Keras' cache (Keras 3's
//! `cifar-100-python-target/cifar-100-python/`, Keras 2's `cifar-100-python/`), and downloads
//! it as Keras does when it is nowhere.

use super::{cifar_py, LoadedData};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Keras' URL (keras/src/datasets/cifar100.py, Keras 3.15.1).
pub const ORIGIN: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz";
/// The SHA-256 of [`ORIGIN`].
pub const SHA256: &str = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7";
/// The folder Keras 3 extracts the archive into (the archive is kept beside it as
/// `cifar-100-python-target_archive`).
pub const KERAS_DIRNAME: &str = "cifar-100-python-target";

const MAX_BYTES: u64 = 1 << 30;

/// The labels `load_data` returns, as Keras' `label_mode`: `"fine"` (100 classes) or
/// `"coarse"` (20 super-classes).
fn label_key(label_mode: &str) -> Result<(&'static str, usize)> {
    match label_mode {
        "fine" => Ok(("fine_labels", 100)),
        "coarse" => Ok(("coarse_labels", 20)),
        m => Err(Error::invalid("label_mode", format!("expected \"fine\" or \"coarse\", received {m:?}"))),
    }
}

/// Loads CIFAR-100 as `keras.datasets.cifar100.load_data(label_mode)`: from
/// `$KANDLE_DATA_DIR` or Keras' cache when it is there, else downloaded from Keras' URL
/// ([`ORIGIN`], SHA-256 checked) into Keras' cache.
///
/// Returns `x` of shape `(N, 32, 32, 3)` and `y` of shape `(N, 1)` (fine labels 0..100 or coarse
/// labels 0..20), both `u8`.
///
/// ```no_run
/// let ((x_train, y_train), _) = kandle::datasets::cifar100::load_data("coarse")?;
/// assert_eq!(x_train.dims(), &[50000, 32, 32, 3]);
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// `label_mode` other than `"fine"` or `"coarse"`; [`Error::Download`] when the data is nowhere
/// and cannot be downloaded; an error of [`load_data_from`].
pub fn load_data(label_mode: &str) -> Result<LoadedData> {
    label_key(label_mode)?;
    for d in super::data_dir_dirs("cifar100") {
        if let Some(found) = locate(&d) {
            return load_found(found, label_mode);
        }
    }
    for k in super::keras_dataset_dirs() {
        let keras3 = k.join(KERAS_DIRNAME).join("cifar-100-python");
        if is_python_dir(&keras3) {
            return load_data_from(&keras3, label_mode).or_else(|e| {
                let archive = k.join(format!("{KERAS_DIRNAME}_archive"));
                if archive.is_file() && crate::utils::validate_file(&archive, SHA256, Default::default())? {
                    crate::utils::extract_archive(&archive, &k.join(KERAS_DIRNAME), MAX_BYTES)?;
                    load_data_from(&keras3, label_mode)
                } else {
                    Err(e)
                }
            });
        }
        for d in [k.join("cifar-100-python"), k.join("cifar100")] {
            if let Some(found) = locate(&d) {
                return load_found(found, label_mode);
            }
        }
        let keras2 = k.join("cifar-100-python.tar.gz");
        if keras2.is_file() {
            return load_data_from(&keras2, label_mode);
        }
    }
    let dir = crate::utils::get_file(
        KERAS_DIRNAME,
        &super::origin(ORIGIN),
        crate::utils::GetFileOptions::default().file_hash(SHA256).extract(true).extract_limit(MAX_BYTES),
    )?;
    load_data_from(dir.join("cifar-100-python"), label_mode)
}

fn is_python_dir(d: &Path) -> bool {
    d.join("train").is_file() && d.join("test").is_file()
}

enum Found {
    Dir(PathBuf),
    Archive(PathBuf),
}

fn locate(path: &Path) -> Option<Found> {
    if path.is_file() {
        return Some(Found::Archive(path.into()));
    }
    if is_python_dir(path) {
        return Some(Found::Dir(path.into()));
    }
    if is_python_dir(&path.join("cifar-100-python")) {
        return Some(Found::Dir(path.join("cifar-100-python")));
    }
    let a = path.join("cifar-100-python.tar.gz");
    a.is_file().then_some(Found::Archive(a))
}

fn load_found(found: Found, label_mode: &str) -> Result<LoadedData> {
    match found {
        Found::Dir(d) | Found::Archive(d) => load_data_from(d, label_mode),
    }
}

/// Loads CIFAR-100 from `path`: the `cifar-100-python` folder (files `train` and `test`), a
/// folder holding it, or the `cifar-100-python.tar.gz` archive.
///
/// # Errors
/// `label_mode` other than `"fine"` or `"coarse"`; a path with none of these layouts; a file
/// the restricted unpickler refuses (named, with the offset and the reason); labels outside
/// the classes.
pub fn load_data_from(path: impl AsRef<Path>, label_mode: &str) -> Result<LoadedData> {
    let (key, classes) = label_key(label_mode)?;
    let path = path.as_ref();
    let (train, test) = match locate(path) {
        Some(Found::Dir(d)) => {
            let read = |name: &str| -> Result<cifar_py::Batch> {
                let p = d.join(name);
                let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                cifar_py::parse(&p, &bytes, key, classes)
            };
            (read("train")?, read("test")?)
        }
        Some(Found::Archive(a)) => {
            let (train, test) = read_archive(&a)?;
            let name = |f: &str| PathBuf::from(format!("{}!{f}", a.display()));
            (
                cifar_py::parse(&name("train"), &train, key, classes)?,
                cifar_py::parse(&name("test"), &test, key, classes)?,
            )
        }
        None => return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no CIFAR-100 data here: expected the cifar-100-python folder (train, test) or cifar-100-python.tar.gz",
            ),
        )),
    };
    Ok((cifar_py::to_tensors(vec![train])?, cifar_py::to_tensors(vec![test])?))
}

/// The `train` and `test` files of the archive, at most [`MAX_BYTES`] in all.
fn read_archive(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let bad = |reason: String| Error::Format { path: path.into(), format: "tar.gz archive", offset: 0, reason };
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?);
    let gz = std::io::BufRead::fill_buf(&mut file).map_err(|e| Error::io(path, e))?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let mut archive = tar::Archive::new(reader);
    let (mut train, mut test) = (None, None);
    let mut kept = 0u64;
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let p = entry.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
        let slot = match p.trim_end_matches('/').rsplit('/').next() {
            Some("train") => &mut train,
            Some("test") => &mut test,
            _ => continue,
        };
        let left = MAX_BYTES - kept;
        if entry.size() > left {
            return Err(bad(format!("{p}: the archive's CIFAR-100 files would hold more than {MAX_BYTES} bytes")));
        }
        let mut bytes = Vec::with_capacity((entry.size() as usize).min(1 << 24));
        (&mut entry).take(left + 1).read_to_end(&mut bytes).map_err(|e| bad(format!("{p}: {e}")))?;
        kept += bytes.len() as u64;
        if kept > MAX_BYTES {
            return Err(bad(format!("{p}: the archive's CIFAR-100 files hold more than {MAX_BYTES} bytes")));
        }
        *slot = Some(bytes);
    }
    match (train, test) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(bad("no cifar-100-python/train and cifar-100-python/test inside".into())),
    }
}
