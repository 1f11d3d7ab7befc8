//! TensorBoard: the [`TensorBoard`] callback, as Keras', and the event files it writes
//! ([`events`]: `tf.summary`'s writer, and a reader for checking them).

pub mod events;

pub use events::*;

use super::{Callback, Control, Logs, TrainingContext};
use crate::error::{Error, Result};
use candle_core::DType;
use std::path::PathBuf;
use std::time::Instant;

/// How often [`TensorBoard`] writes the losses and metrics: Keras' `update_freq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdateFreq {
    /// After each epoch (`"epoch"`, the default): `epoch_<name>` scalars only.
    #[default]
    Epoch,
    /// Also every N training batches (`"batch"` is `Batch(1)`, an integer N is `Batch(N)`):
    /// `batch_<name>` scalars at the global batch number.
    Batch(usize),
}

impl From<usize> for UpdateFreq {
    fn from(n: usize) -> Self {
        UpdateFreq::Batch(n)
    }
}

impl std::str::FromStr for UpdateFreq {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "epoch" => Ok(UpdateFreq::Epoch),
            "batch" => Ok(UpdateFreq::Batch(1)),
            n => n.parse().map(UpdateFreq::Batch).map_err(|_| {
                Error::invalid(
                    "update_freq",
                    format!("expected \"epoch\", \"batch\" or a number of batches, received {n:?}"),
                )
            }),
        }
    }
}

/// Logs for TensorBoard, as `keras.callbacks.TensorBoard`: event files under `log_dir/train`
/// and `log_dir/validation` that `tensorboard --logdir log_dir` shows.
///
/// What it writes, under Keras' names and steps:
/// - after each epoch (step: the epoch, from 0): `epoch_loss`, `epoch_<metric>` and
///   `epoch_learning_rate` in `train/`, the validation logs without their `val_` prefix
///   (`epoch_loss`, `epoch_accuracy`) in `validation/`;
/// - after each validation pass (step: the optimizer's iterations):
///   `evaluation_<name>_vs_iterations` in `validation/`;
/// - with [`UpdateFreq::Batch`]`(n)`, every n-th training batch (step: the batch number since
///   the start of `fit`, from 1): `batch_loss`, `batch_<metric>` in `train/`;
/// - every `histogram_freq` epochs (from epoch 0): a histogram of each weight,
///   `<layer>/<weight>/histogram`, and with `write_images` the weights Keras can show as
///   pictures (biases, dense kernels, convolution kernels with one input channel),
///   `<layer>/<weight>/image`;
/// - with `write_steps_per_second`: `epoch_steps_per_second` (and `batch_steps_per_second`).
///
/// Files are flushed to disk after each epoch, so a running TensorBoard shows each epoch as
/// it ends and a crash loses at most the current epoch's events. Keras' `write_graph`,
/// `profile_batch` and the embeddings projector are not there (see the guide's "Differences
/// from Keras").
///
/// ```
/// use kandle::callbacks::{TensorBoard, UpdateFreq};
/// use kandle::prelude::*;
/// let x = Tensor::zeros((8, 2), DType::F32, &Device::Cpu)?;
/// let y = Tensor::zeros(8, DType::U32, &Device::Cpu)?;
/// let model = Sequential::new().seed(0).add(Dense::new(2).activation(Activation::Softmax).input_shape(2));
/// model.compile("rmsprop", Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy])?;
/// let logs = std::env::temp_dir().join(format!("kandle-doc-tb-{}", std::process::id()));
/// let tb = TensorBoard::new(&logs).histogram_freq(1).update_freq("batch".parse::<UpdateFreq>()?);
/// model.fit(&x, &y, FitOptions::default().epochs(2).verbose(0).validation_data(&x, &y).callback(tb))?;
/// // `tensorboard --logdir <logs>` shows the run; the files are TensorFlow's:
/// let train = std::fs::read_dir(logs.join("train"))?.next().unwrap()?.path();
/// let events = kandle::callbacks::tensorboard::read_events(&train)?;
/// assert!(events.len() > 2);
/// # std::fs::remove_dir_all(&logs)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TensorBoard {
    log_dir: PathBuf,
    histogram_freq: usize,
    write_images: bool,
    write_steps_per_second: bool,
    update_freq: UpdateFreq,
    train: Option<SummaryWriter>,
    validation: Option<SummaryWriter>,
    global_train_batch: u64,
    batch_start: Option<Instant>,
    epoch_start: Option<(Instant, u64)>,
}

impl std::fmt::Debug for TensorBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorBoard")
            .field("log_dir", &self.log_dir)
            .field("histogram_freq", &self.histogram_freq)
            .field("write_images", &self.write_images)
            .field("write_steps_per_second", &self.write_steps_per_second)
            .field("update_freq", &self.update_freq)
            .finish()
    }
}

impl TensorBoard {
    /// A callback writing under `log_dir` (Keras' default is `"logs"`), with Keras' defaults:
    /// `histogram_freq 0`, `write_images false`, `write_steps_per_second false`,
    /// `update_freq "epoch"`.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        TensorBoard {
            log_dir: log_dir.into(),
            histogram_freq: 0,
            write_images: false,
            write_steps_per_second: false,
            update_freq: UpdateFreq::Epoch,
            train: None,
            validation: None,
            global_train_batch: 0,
            batch_start: None,
            epoch_start: None,
        }
    }
    /// Weight histograms every N epochs (0: none).
    pub fn histogram_freq(mut self, n: usize) -> Self {
        self.histogram_freq = n;
        self
    }
    /// Also the weights as images, at the histogram epochs.
    pub fn write_images(mut self, on: bool) -> Self {
        self.write_images = on;
        self
    }
    /// Also the training steps per second.
    pub fn write_steps_per_second(mut self, on: bool) -> Self {
        self.write_steps_per_second = on;
        self
    }
    /// How often the losses and metrics are written; `"batch"`, `"epoch"` or a number of
    /// batches parse into it (`"batch".parse::<UpdateFreq>()?`), and a number converts (`.update_freq(100)`).
    pub fn update_freq(mut self, f: impl Into<UpdateFreq>) -> Self {
        self.update_freq = f.into();
        self
    }

    fn writer(slot: &mut Option<SummaryWriter>, dir: PathBuf) -> Result<&mut SummaryWriter> {
        if slot.is_none() {
            *slot = Some(SummaryWriter::create(dir)?);
        }
        Ok(slot.as_mut().expect("just created"))
    }
    fn train_writer(&mut self) -> Result<&mut SummaryWriter> {
        Self::writer(&mut self.train, self.log_dir.join("train"))
    }
    fn validation_writer(&mut self) -> Result<&mut SummaryWriter> {
        Self::writer(&mut self.validation, self.log_dir.join("validation"))
    }

    fn log_weights(&mut self, epoch: i64, ctx: &mut TrainingContext) -> Result<()> {
        let write_images = self.write_images;
        let weights = ctx.named_weights()?;
        let w = self.train_writer()?;
        for (name, t) in weights {
            let dims = t.dims().to_vec();
            let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            w.histogram(&format!("{name}/histogram"), &values, epoch)?;
            if write_images {
                if let Some((data, shape)) = weight_image(&values, &dims) {
                    w.image(&format!("{name}/image"), &data, shape, epoch, 3)?;
                }
            }
        }
        Ok(())
    }
}

/// Keras' `_log_weight_as_image`: the weight squeezed; a vector as a one-column image, a
/// matrix as one image (transposed when taller than wide), a rank-3 tensor as one image per
/// last index, a rank-4 tensor only when its last axis has 1, 3 or 4 channels; else none.
fn weight_image(values: &[f32], dims: &[usize]) -> Option<(Vec<f32>, [usize; 4])> {
    let shape: Vec<usize> = dims.iter().copied().filter(|&d| d != 1).collect();
    match shape.as_slice() {
        [n] => Some((values.to_vec(), [1, *n, 1, 1])),
        [a, b] if a > b => {
            let t = (0..*b).flat_map(|j| (0..*a).map(move |i| values[i * b + j])).collect();
            Some((t, [1, *b, *a, 1]))
        }
        [a, b] => Some((values.to_vec(), [1, *a, *b, 1])),
        [a, b, c] => {
            // (a, b, c) -> (c, a, b): one a x b picture per channel.
            let t = (0..*c).flat_map(|k| (0..a * b).map(move |ij| values[ij * c + k])).collect();
            Some((t, [*c, *a, *b, 1]))
        }
        [a, b, c, d] if [1, 3, 4].contains(d) => Some((values.to_vec(), [*a, *b, *c, *d])),
        _ => None,
    }
}

impl Callback for TensorBoard {
    fn on_train_begin(&mut self, _ctx: &mut TrainingContext) -> Result<()> {
        if self.update_freq == UpdateFreq::Batch(0) {
            return Err(Error::invalid(
                "update_freq",
                "TensorBoard: expected a positive number of batches, received 0",
            ));
        }
        // Keras resets its writers when a model is set: each `fit` writes new event files.
        self.train = None;
        self.validation = None;
        self.global_train_batch = 0;
        Ok(())
    }

    fn on_epoch_begin(&mut self, _epoch: usize, ctx: &mut TrainingContext) -> Result<()> {
        self.epoch_start = Some((Instant::now(), ctx.iterations()));
        Ok(())
    }

    fn on_train_batch_begin(&mut self, _batch: usize, _ctx: &mut TrainingContext) -> Result<()> {
        self.global_train_batch += 1;
        self.batch_start = Some(Instant::now());
        Ok(())
    }

    fn on_train_batch_end(&mut self, _batch: usize, logs: &Logs, _ctx: &mut TrainingContext) -> Result<Control> {
        let UpdateFreq::Batch(n) = self.update_freq else { return Ok(Control::Continue) };
        let step = self.global_train_batch;
        if !step.is_multiple_of(n as u64) {
            return Ok(Control::Continue);
        }
        let seconds = self.batch_start.map(|t| t.elapsed().as_secs_f64());
        let write_sps = self.write_steps_per_second;
        let w = self.train_writer()?;
        if let (true, Some(s)) = (write_sps, seconds) {
            w.scalar("batch_steps_per_second", 1.0 / s, step as i64)?;
        }
        for (name, value) in &logs.0 {
            w.scalar(&format!("batch_{name}"), *value, step as i64)?;
        }
        Ok(Control::Continue)
    }

    fn on_test_end(&mut self, logs: &Logs, ctx: &mut TrainingContext) -> Result<()> {
        let step = ctx.iterations() as i64;
        let w = self.validation_writer()?;
        for (name, value) in &logs.0 {
            w.scalar(&format!("evaluation_{name}_vs_iterations"), *value, step)?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        let step = epoch as i64;
        let mut train: Vec<(String, f64)> = logs.0.iter().filter(|(k, _)| !k.starts_with("val_")).cloned().collect();
        let val: Vec<(String, f64)> =
            logs.0.iter().filter_map(|(k, v)| k.strip_prefix("val_").map(|k| (k.to_string(), *v))).collect();
        // Keras' `_collect_learning_rate`: the optimizer's rate now, replacing any logged one.
        train.retain(|(k, _)| k != "learning_rate");
        train.push(("learning_rate".into(), ctx.learning_rate()));
        if self.write_steps_per_second {
            if let Some((t, it)) = self.epoch_start {
                let steps = ctx.iterations().saturating_sub(it) as f64;
                train.push(("steps_per_second".into(), steps / t.elapsed().as_secs_f64()));
            }
        }
        let w = self.train_writer()?;
        for (name, value) in &train {
            w.scalar(&format!("epoch_{name}"), *value, step)?;
        }
        if !val.is_empty() {
            let w = self.validation_writer()?;
            for (name, value) in &val {
                w.scalar(&format!("epoch_{name}"), *value, step)?;
            }
        }
        if self.histogram_freq > 0 && epoch.is_multiple_of(self.histogram_freq) {
            self.log_weights(step, ctx)?;
        }
        for w in [&mut self.train, &mut self.validation].into_iter().flatten() {
            w.flush()?;
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut TrainingContext) -> Result<()> {
        for w in [&mut self.train, &mut self.validation].into_iter().flatten() {
            w.flush()?;
        }
        self.train = None;
        self.validation = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::weight_image;

    #[test]
    fn weights_as_keras_shows_them() {
        // A bias: one column.
        assert_eq!(weight_image(&[1., 2., 3.], &[3]).unwrap().1, [1, 3, 1, 1]);
        // A dense kernel taller than wide is transposed: (3, 2) -> (2, 3).
        let (t, s) = weight_image(&[1., 2., 3., 4., 5., 6.], &[3, 2]).unwrap();
        assert_eq!((t, s), (vec![1., 3., 5., 2., 4., 6.], [1, 2, 3, 1]));
        // A (2, 2, 1, 2) convolution kernel squeezes to (2, 2, 2): one picture per filter.
        let (t, s) = weight_image(&[0., 10., 1., 11., 2., 12., 3., 13.], &[2, 2, 1, 2]).unwrap();
        assert_eq!((t, s), (vec![0., 1., 2., 3., 10., 11., 12., 13.], [2, 2, 2, 1]));
        // (3, 3, 8, 16): not shown, as in Keras.
        assert!(weight_image(&[0.; 3 * 3 * 8 * 16], &[3, 3, 8, 16]).is_none());
    }
}
