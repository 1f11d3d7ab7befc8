//! Data sets, as in `keras.datasets`: `load_data()` returns Keras'
//! `((x_train, y_train), (x_test, y_test))` as `u8` tensors, images channels-last.
//!
//! Nothing is downloaded. Without a path, the files are looked for in `$KANDLE_DATA_DIR`
//! (and its `mnist/` or `cifar10/` sub-folder), then in Keras' cache `~/.keras/datasets`.

pub mod cifar10;
pub mod mnist;

use crate::{Error, Result};
use candle_core::Tensor;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `((x_train, y_train), (x_test, y_test))`.
pub type LoadedData = ((Tensor, Tensor), (Tensor, Tensor));

/// The environment variable naming the folder where data sets are kept.
pub const DATA_DIR_ENV: &str = "KANDLE_DATA_DIR";

/// The folders searched for data set `sub` (`"mnist"`), in order.
pub fn search_dirs(sub: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        dirs.push(d.join(sub));
        dirs.push(d);
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        let k = PathBuf::from(home).join(".keras").join("datasets");
        dirs.push(k.join(sub));
        dirs.push(k);
    }
    dirs
}

pub(crate) fn describe_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        format!("no folder (neither ${DATA_DIR_ENV} nor $HOME is set)")
    } else {
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
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
