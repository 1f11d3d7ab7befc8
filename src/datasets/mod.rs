//! Data sets, as in `keras.datasets`: `load_data()` returns Keras'
//! `((x_train, y_train), (x_test, y_test))` as `u8` tensors, images channels-last.
//!
//! ```no_run
//! let ((x_train, y_train), (x_test, y_test)) = kandle::datasets::cifar10::load_data()?;
//! assert_eq!(x_train.dims(), &[50000, 32, 32, 3]);
//! # Ok::<(), kandle::Error>(())
//! ```
//!
//! `load_data()` looks, in order, in `$KANDLE_DATA_DIR` (and its `mnist/`, `cifar10/` ...
//! sub-folder), then in Keras' cache (`$KERAS_HOME/datasets`, else `~/.keras/datasets`), where
//! it reads what Keras 3 or Keras 2 left there (`mnist.npz`, `cifar-10-batches-py-target/`,
//! `cifar-10-batches-py/`, ...). When the data set is in neither, it is downloaded as Keras
//! downloads it ([`crate::utils::get_file`]: Keras' URL, file name and SHA-256, a progress bar,
//! Keras 3's layout in the cache), so the second call reads the cache without touching the
//! network, and Keras reads what kandle downloaded. `KANDLE_DATASETS_MIRROR` replaces the
//! download's base URL (a mirror, or a `file://` folder); `KANDLE_OFFLINE=1` turns downloads
//! off (the error names the URL and the path to put the file at).

pub mod cifar10;
pub mod cifar100;
mod cifar_py;
pub mod fashion_mnist;
pub mod mnist;
pub mod pickle;

use crate::{Error, Result};
use candle_core::Tensor;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `((x_train, y_train), (x_test, y_test))`.
pub type LoadedData = ((Tensor, Tensor), (Tensor, Tensor));

/// The environment variable naming the folder where data sets are kept.
pub const DATA_DIR_ENV: &str = "KANDLE_DATA_DIR";

/// The environment variable that replaces the base URL the data sets are downloaded from
/// (`https://mirror.example/keras-datasets`, or `file:///data/keras-datasets`): the file
/// names stay Keras' (`mnist.npz`, `cifar-10-python.tar.gz` ...).
pub const MIRROR_ENV: &str = "KANDLE_DATASETS_MIRROR";

/// The folders searched for data set `sub` (`"mnist"`) in kandle's own layouts, in order:
/// `$KANDLE_DATA_DIR/<sub>`, `$KANDLE_DATA_DIR`, then Keras' cache `datasets/<sub>` and
/// `datasets`.
pub fn search_dirs(sub: &str) -> Vec<PathBuf> {
    let mut dirs = data_dir_dirs(sub);
    for k in keras_dataset_dirs() {
        dirs.push(k.join(sub));
        dirs.push(k);
    }
    dirs
}

/// `$KANDLE_DATA_DIR/<sub>` and `$KANDLE_DATA_DIR`, when it is set.
pub(crate) fn data_dir_dirs(sub: &str) -> Vec<PathBuf> {
    match std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(d) => {
            let d = PathBuf::from(d);
            vec![d.join(sub), d]
        }
        None => Vec::new(),
    }
}

/// Keras' `datasets` cache folders: under [`crate::utils::keras_home`], and under
/// `/tmp/.keras`, where Keras falls back when the cache folder cannot be written.
pub fn keras_dataset_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![crate::utils::keras_home().join("datasets")];
    let tmp = std::env::temp_dir().join(".keras").join("datasets");
    if !dirs.contains(&tmp) {
        dirs.push(tmp);
    }
    dirs
}

/// Keras' URL `url`, or its file under `$KANDLE_DATASETS_MIRROR` when that is set.
pub(crate) fn origin(url: &str) -> String {
    match std::env::var(MIRROR_ENV).ok().filter(|m| !m.is_empty()) {
        Some(m) => format!("{}/{}", m.trim_end_matches('/'), url.rsplit('/').next().unwrap_or_default()),
        None => url.to_string(),
    }
}

/// Reads a whole file, gunzipping it if it starts with gzip's magic bytes; reads at most
/// `limit` bytes of content so that a corrupt header or a gzip bomb cannot exhaust memory.
pub(crate) fn read_maybe_gz(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut head = [0u8; 2];
    let n = read_full(&mut reader, &mut head).map_err(|e| Error::io(path, e))?;
    let chain = std::io::Cursor::new(head[..n].to_vec()).chain(reader);
    let mut out = Vec::new();
    let res = if n == 2 && head == [0x1f, 0x8b] {
        flate2::read::MultiGzDecoder::new(chain).take(limit).read_to_end(&mut out)
    } else {
        chain.take(limit).read_to_end(&mut out)
    };
    res.map_err(|e| Error::Format { path: path.into(), format: "gzip", offset: 0, reason: e.to_string() })?;
    Ok(out)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
