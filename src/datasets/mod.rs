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

use crate::error::{Error, Result};
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

/// Converts a data set loaded by candle-datasets (`candle_datasets::vision::Dataset`: its
/// `mnist`, `fashion_mnist` and `cifar` loaders, from local files or Hugging Face hub parquet)
/// into what `load_data()` returns: `u8` images channels-last (`x * 255` rounded, for
/// candle-datasets' images in `[0, 1]`) and `u8` labels. Flat images of a square size
/// (`(N, 784)`) become `(N, 28, 28)` with labels `(N,)`, as Keras' MNIST; images `(N, C, H, W)`
/// become `(N, H, W, C)` with labels `(N, 1)`, as Keras' CIFAR.
///
/// candle-datasets 0.11.1's hub CIFAR loader (`cifar::load()`) permutes its images to
/// `(N, C, W, H)`: call `.transpose(2, 3)` on them first to get upright images (its
/// `load_dir`, from the binary files, gives `(N, C, H, W)`).
///
/// ```no_run
/// # #[cfg(feature = "candle-datasets")] {
/// let ds = candle_datasets::vision::mnist::load()?;
/// let ((x_train, y_train), _) = kandle::datasets::from_candle(&ds)?;
/// assert_eq!(x_train.dims(), &[60000, 28, 28]);
/// # }
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// Images of another rank, a flat size that is not a square, a channel count other than 1, 3
/// or 4, pixel values outside `[0, 1]` (or `[0, 255]` for `u8` images), labels outside
/// `0..256` or not one per image.
#[cfg(feature = "candle-datasets")]
pub fn from_candle(ds: &candle_datasets::vision::Dataset) -> Result<LoadedData> {
    let images = |x: &Tensor, what: &'static str| -> Result<Tensor> {
        let x = x.to_device(&candle_core::Device::Cpu)?;
        let x = match x.dims() {
            &[n, d] => {
                let s = (d as f64).sqrt().round() as usize;
                if s * s != d {
                    return Err(Error::invalid(
                        what,
                        format!("expected square flat images, received {d} values per image"),
                    ));
                }
                x.reshape((n, s, s))?
            }
            &[_, c, _, _] if matches!(c, 1 | 3 | 4) => x.permute((0, 2, 3, 1))?.contiguous()?,
            &[_, _, _] => x,
            d => {
                return Err(Error::invalid(
                    what,
                    format!("expected images (N, H*W), (N, H, W) or (N, C, H, W) with C 1, 3 or 4, received {d:?}"),
                ))
            }
        };
        let (lo, hi, scale) = if x.dtype() == candle_core::DType::U8 { (0.0, 255.0, 1.0) } else { (0.0, 1.0, 255.0) };
        let v: Vec<f32> = x.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        if let Some(bad) = v.iter().find(|p| !(lo..=hi).contains(&(**p as f64))) {
            return Err(Error::invalid(what, format!("expected pixel values in [{lo}, {hi}], received {bad}")));
        }
        let bytes: Vec<u8> = v.iter().map(|p| (p * scale as f32).round() as u8).collect();
        Ok(Tensor::from_vec(bytes, x.dims(), &candle_core::Device::Cpu)?)
    };
    let labels = |y: &Tensor, n: usize, color: bool, what: &'static str| -> Result<Tensor> {
        let v: Vec<i64> =
            y.to_device(&candle_core::Device::Cpu)?.flatten_all()?.to_dtype(candle_core::DType::I64)?.to_vec1()?;
        if v.len() != n {
            return Err(Error::invalid(what, format!("expected one label per image ({n}), received {}", v.len())));
        }
        if let Some(bad) = v.iter().find(|l| !(0..256).contains(*l)) {
            return Err(Error::invalid(what, format!("expected class indices in 0..256, received {bad}")));
        }
        let b: Vec<u8> = v.iter().map(|&l| l as u8).collect();
        let dev = candle_core::Device::Cpu;
        Ok(if color { Tensor::from_vec(b, (n, 1), &dev)? } else { Tensor::from_vec(b, n, &dev)? })
    };
    let x = images(&ds.train_images, "train_images")?;
    let xt = images(&ds.test_images, "test_images")?;
    let y = labels(&ds.train_labels, x.dims()[0], x.rank() == 4, "train_labels")?;
    let yt = labels(&ds.test_labels, xt.dims()[0], xt.rank() == 4, "test_labels")?;
    Ok(((x, y), (xt, yt)))
}
