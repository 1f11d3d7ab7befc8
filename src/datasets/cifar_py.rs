//! The CIFAR "python version" batches (`cifar-10-batches-py/data_batch_1`, `cifar-100-python/train`):
//! pickled dictionaries of a `uint8` array `data` of shape `(n, 3072)` (1024 R, 1024 G, 1024 B
//! values per image) and a list of labels, read with the restricted unpickler.

use super::pickle::{self, Value};
use crate::error::{Error, Result};
use std::path::Path;

/// The images of one batch, channels-last (`n * 32 * 32 * 3` bytes), and their labels.
pub(crate) struct Batch {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

/// Reads the batch `bytes` (from `path`, for messages), its labels under `label_key`.
pub(crate) fn parse(path: &Path, bytes: &[u8], label_key: &str, classes: usize) -> Result<Batch> {
    let bad = |offset: u64, reason: String| Error::Format {
        path: path.into(),
        format: "CIFAR python pickle",
        offset,
        reason,
    };
    let d = pickle::load(bytes).map_err(|e| bad(e.offset, e.reason))?;
    if !matches!(d, Value::Dict(_)) {
        return Err(bad(0, format!("expected a dict of the batch's data and labels, found a {}", d.kind())));
    }
    let data = match d.get("data") {
        Some(Value::Array(a)) => a,
        Some(v) => return Err(bad(0, format!("`data` is a {}, expected a numpy array", v.kind()))),
        None => return Err(bad(0, "no `data` in the batch".into())),
    };
    if data.dtype != "u1" || data.shape.len() != 2 || data.shape[1] != 3072 || data.fortran {
        return Err(bad(
            0,
            format!(
                "`data` is a {:?} array of dtype {}, expected uint8 of shape (n, 3072) in C order",
                data.shape, data.dtype
            ),
        ));
    }
    let n = data.shape[0];
    let labels: Vec<i64> = match d.get(label_key) {
        Some(Value::List(l)) => l
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                v => Err(bad(0, format!("`{label_key}` holds a {}, expected integers", v.kind()))),
            })
            .collect::<Result<_>>()?,
        Some(Value::Array(a)) if a.shape.len() == 1 && matches!(a.dtype.as_str(), "u1" | "i1") => {
            a.data.iter().map(|&b| if a.dtype == "i1" { b as i8 as i64 } else { b as i64 }).collect()
        }
        Some(Value::Array(a)) if a.shape.len() == 1 && a.dtype == "i8" && a.order != '>' => {
            a.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
        }
        Some(v) => return Err(bad(0, format!("`{label_key}` is a {}, expected a list of integers", v.kind()))),
        None => {
            let keys: Vec<&str> = match &d {
                Value::Dict(items) => items.iter().filter_map(|(k, _)| k.as_text()).collect(),
                _ => Vec::new(),
            };
            return Err(bad(0, format!("no `{label_key}` in the batch (its keys: {})", keys.join(", "))));
        }
    };
    if labels.len() != n {
        return Err(bad(0, format!("{} labels for {n} images", labels.len())));
    }
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= classes as i64) {
        return Err(bad(0, format!("label {l} of image {i} is outside 0..{classes}")));
    }
    // (n, 3, 32, 32) -> (n, 32, 32, 3)
    let mut images = vec![0u8; n * 3072];
    for (src, dst) in data.data.chunks_exact(3072).zip(images.chunks_exact_mut(3072)) {
        for p in 0..1024 {
            dst[3 * p] = src[p];
            dst[3 * p + 1] = src[1024 + p];
            dst[3 * p + 2] = src[2048 + p];
        }
    }
    Ok(Batch { images, labels: labels.into_iter().map(|l| l as u8).collect() })
}

/// Concatenates batches into `(x, y)` tensors: `x` `(n, 32, 32, 3)` and `y` `(n, 1)`, `u8`.
pub(crate) fn to_tensors(batches: Vec<Batch>) -> Result<(candle_core::Tensor, candle_core::Tensor)> {
    let n: usize = batches.iter().map(|b| b.labels.len()).sum();
    let mut x = Vec::with_capacity(n * 3072);
    let mut y = Vec::with_capacity(n);
    for b in batches {
        x.extend_from_slice(&b.images);
        y.extend_from_slice(&b.labels);
    }
    let dev = candle_core::Device::Cpu;
    Ok((candle_core::Tensor::from_vec(x, (n, 32, 32, 3), &dev)?, candle_core::Tensor::from_vec(y, (n, 1), &dev)?))
}
