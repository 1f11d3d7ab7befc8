//! What the ImageNet networks share, as `keras.applications.imagenet_utils`: the three input
//! preprocessings (`caffe`, `tf`, `torch`) and [`decode_predictions`], which names the 1000
//! classes from Keras' `imagenet_class_index.json`.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use std::path::Path;
use std::sync::OnceLock;

/// Keras' URL of the class index.
const CLASS_INDEX_URL: &str = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json";
/// Keras' MD5 of it.
const CLASS_INDEX_HASH: &str = "c2c37ea517e94d9795004a39431a14cb";

/// How a network expects its pixels (Keras' `mode` of `preprocess_input`), from RGB values in
/// `[0, 255]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RGB to BGR, then minus ImageNet's mean pixel `[103.939, 116.779, 123.68]` (BGR), no
    /// scaling: ResNet50, VGG.
    Caffe,
    /// Scaled to `[-1, 1]`: MobileNetV2, Inception.
    Tf,
    /// Scaled to `[0, 1]`, then normalized by ImageNet's mean `[0.485, 0.456, 0.406]` and
    /// standard deviation `[0.229, 0.224, 0.225]`: DenseNet.
    Torch,
}

/// Preprocesses a batch of channels-last RGB images with values in `[0, 255]` as
/// `keras.applications.imagenet_utils.preprocess_input(x, mode=...)`; returns `f32` (a new
/// tensor: candle's tensors are not written over).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::applications::imagenet_utils::{preprocess_input, Mode};
/// let x = Tensor::new(&[[[[255f32, 0., 127.5]]]], &Device::Cpu)?;
/// let y = preprocess_input(&x, Mode::Tf)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![1., -1., 0.]);
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// `x` of rank other than 3 or 4, or (caffe, torch) whose last axis is not 3 channels.
pub fn preprocess_input(x: &Tensor, mode: Mode) -> Result<Tensor> {
    let dims = x.dims();
    if !(3..=4).contains(&dims.len()) || (mode != Mode::Tf && dims.last() != Some(&3)) {
        return Err(Error::invalid(
            "x",
            format!(
                "expected images (height, width, 3) or a batch of them (batch, height, width, 3), received {dims:?}"
            ),
        ));
    }
    let x = x.to_dtype(DType::F32)?;
    let per_channel = |offset: [f64; 3], scale: [f64; 3]| -> Result<Tensor> {
        let o = Tensor::new(&[offset[0] as f32, offset[1] as f32, offset[2] as f32], x.device())?;
        let s = Tensor::new(&[scale[0] as f32, scale[1] as f32, scale[2] as f32], x.device())?;
        Ok(x.broadcast_sub(&o)?.broadcast_mul(&s)?)
    };
    match mode {
        Mode::Tf => Ok(x.affine(1.0 / 127.5, -1.0)?),
        Mode::Torch => {
            let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
            per_channel(mean.map(|m| m * 255.0), std.map(|s| 1.0 / (255.0 * s)))
        }
        Mode::Caffe => {
            // RGB to BGR: reverse the channels, then subtract the BGR mean pixel.
            let last = dims.len() - 1;
            let bgr = Tensor::cat(&[x.narrow(last, 2, 1)?, x.narrow(last, 1, 1)?, x.narrow(last, 0, 1)?], last)?;
            let mean = Tensor::new(&[103.939f32, 116.779, 123.68], x.device())?;
            Ok(bgr.broadcast_sub(&mean)?)
        }
    }
}

/// One of [`decode_predictions`]' guesses: Keras' tuple `(class_name, class_description, score)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The WordNet id (`"n01440764"`).
    pub class_name: String,
    /// The readable name (`"tench"`).
    pub class_description: String,
    /// The network's output for the class.
    pub score: f32,
}

/// ImageNet's 1000 classes as `imagenet_class_index.json` lists them: `[wnid, name]` by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassIndex(Vec<(String, String)>);

impl ClassIndex {
    /// Reads Keras' class index file (`{"0": ["n01440764", "tench"], ...}`).
    ///
    /// # Errors
    /// The file cannot be read, is not that JSON, or misses an index below its largest.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|reason| Error::Format {
            path: path.into(),
            format: "imagenet_class_index.json",
            offset: 0,
            reason,
        })
    }

    /// Parses the class index from its JSON text.
    fn from_json(text: &str) -> std::result::Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let map = v.as_object().ok_or("expected an object of \"index\": [wnid, name]")?;
        let mut entries = vec![None; map.len()];
        for (k, item) in map {
            let i: usize = k.parse().map_err(|_| format!("key {k:?} is not an index"))?;
            let pair = item.as_array().filter(|a| a.len() == 2).and_then(|a| Some((a[0].as_str()?, a[1].as_str()?)));
            let (id, name) = pair.ok_or_else(|| format!("entry {k} is not [wnid, name]"))?;
            let slot = entries.get_mut(i).ok_or_else(|| format!("index {i} but only {} entries", map.len()))?;
            *slot = Some((id.to_string(), name.to_string()));
        }
        entries.into_iter().collect::<Option<Vec<_>>>().map(ClassIndex).ok_or_else(|| "an index is missing".into())
    }

    /// The number of classes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keras' ImageNet class index: from Keras' cache (`~/.keras/models/`), downloaded there
    /// from Keras' URL when missing (checked against Keras' MD5), read once per process.
    ///
    /// # Errors
    /// The file cannot be fetched or read.
    pub fn imagenet() -> Result<&'static ClassIndex> {
        static INDEX: OnceLock<ClassIndex> = OnceLock::new();
        if let Some(i) = INDEX.get() {
            return Ok(i);
        }
        let file = super::WeightsFile {
            file_name: "imagenet_class_index.json".into(),
            url: CLASS_INDEX_URL.into(),
            hash: Some(CLASS_INDEX_HASH),
        };
        let index = ClassIndex::from_file(&super::fetch_weights(&file)?)?;
        Ok(INDEX.get_or_init(|| index))
    }
}

/// The `top` most likely classes of each row of `preds` (a batch of ImageNet predictions,
/// `(batch, 1000)`), best first, as `keras.applications.imagenet_utils.decode_predictions`.
/// The class names come from [`ClassIndex::imagenet`] (Keras' file, cached in `~/.keras/models`).
///
/// # Errors
/// `preds` not of shape `(batch, 1000)`, or the class index cannot be fetched.
pub fn decode_predictions(preds: &Tensor, top: usize) -> Result<Vec<Vec<Prediction>>> {
    check_predictions(preds, 1000)?;
    decode_predictions_with(preds, top, ClassIndex::imagenet()?)
}

fn check_predictions(preds: &Tensor, classes: usize) -> Result<()> {
    match preds.dims() {
        [_, c] if *c == classes => Ok(()),
        d => Err(Error::invalid(
            "preds",
            format!(
                "decode_predictions expects a batch of predictions (a 2D array of shape (samples, {classes})); \
                 received shape {d:?}"
            ),
        )),
    }
}

/// [`decode_predictions`] with a class index of one's own (`index.len()` classes).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::applications::imagenet_utils::{decode_predictions_with, ClassIndex};
/// let path = std::env::temp_dir().join(format!("kandle-doc-classes-{}.json", std::process::id()));
/// std::fs::write(&path, r#"{"0": ["n0", "cat"], "1": ["n1", "dog"], "2": ["n2", "fox"]}"#)
///     .map_err(|e| Error::io(&path, e))?;
/// let index = ClassIndex::from_file(&path)?;
/// let preds = Tensor::new(&[[0.2f32, 0.7, 0.1]], &Device::Cpu)?;
/// let top = decode_predictions_with(&preds, 2, &index)?;
/// assert_eq!(top[0][0].class_description, "dog");
/// assert_eq!(top[0][1].class_name, "n0");
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// `preds` not of shape `(batch, index.len())`.
pub fn decode_predictions_with(preds: &Tensor, top: usize, index: &ClassIndex) -> Result<Vec<Vec<Prediction>>> {
    check_predictions(preds, index.len())?;
    let rows: Vec<Vec<f32>> = preds.to_dtype(DType::F32)?.to_vec2()?;
    Ok(rows
        .iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            // Keras: argsort()[-top:][::-1], then a stable sort by score: ties keep the higher
            // index first.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(b.cmp(&a)));
            order
                .into_iter()
                .take(top)
                .map(|i| Prediction {
                    class_name: index.0[i].0.clone(),
                    class_description: index.0[i].1.clone(),
                    score: row[i],
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn preprocessing_modes_are_keras() {
        let x = Tensor::new(&[[[[10f32, 20., 30.]]]], &Device::Cpu).unwrap();
        let caffe = preprocess_input(&x, Mode::Caffe).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // BGR (30, 20, 10) minus (103.939, 116.779, 123.68).
        for (a, b) in caffe.iter().zip([30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68]) {
            assert!((a - b as f32).abs() < 1e-4, "{caffe:?}");
        }
        let torch = preprocess_input(&x, Mode::Torch).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, (m, s)) in [(0.485, 0.229), (0.456, 0.224), (0.406, 0.225)].into_iter().enumerate() {
            let want = ((10.0 * (i + 1) as f64) / 255.0 - m) / s;
            assert!((torch[i] as f64 - want).abs() < 1e-5, "{torch:?}");
        }
        assert!(preprocess_input(&Tensor::zeros((2, 2, 4), DType::F32, &Device::Cpu).unwrap(), Mode::Caffe).is_err());
    }

    #[test]
    fn decoding_orders_by_score_as_keras() {
        let index = ClassIndex::from_json(r#"{"0": ["n0", "zero"], "2": ["n2", "two"], "1": ["n1", "one"]}"#).unwrap();
        let preds = Tensor::new(&[[0.2f32, 0.5, 0.3], [0.4, 0.2, 0.4]], &Device::Cpu).unwrap();
        let d = decode_predictions_with(&preds, 2, &index).unwrap();
        assert_eq!(d[0].iter().map(|p| p.class_description.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        // A tie: the higher index first, as Keras' argsort()[::-1].
        assert_eq!(d[1].iter().map(|p| p.class_name.as_str()).collect::<Vec<_>>(), ["n2", "n0"]);
        assert!(decode_predictions_with(&Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap(), 1, &index)
            .unwrap_err()
            .to_string()
            .contains("(samples, 3)"));
        assert!(ClassIndex::from_json(r#"{"0": ["n0", "zero"], "2": ["n2", "two"]}"#).is_err());
    }
}
