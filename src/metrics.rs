//! Metrics, as in `keras.metrics`: stateful objects accumulated over an epoch.
//!
//! The built-in metrics are named by [`Metric`] (or by Keras' strings, `"accuracy"`); a
//! user-defined metric implements [`StatefulMetric`] (Keras: a subclass of
//! `keras.metrics.Metric` with `update_state`, `result` and `reset_state`), and its results go
//! to the progress bar, the logs, the history and the callbacks like the built-in ones.
//!
//! ```
//! use kandle::prelude::*;
//! use kandle::metrics::{MetricEntry, StatefulMetric};
//! use candle_core::{Device, Tensor};
//!
//! /// The mean absolute error of the largest predicted probability against 1.
//! #[derive(Clone, Default)]
//! struct Confidence { sum: f64, n: f64 }
//! impl StatefulMetric for Confidence {
//!     fn name(&self) -> String { "confidence".into() }
//!     fn update_state(&mut self, _y_true: &Tensor, y_pred: &Tensor, _w: Option<&Tensor>) -> kandle::Result<()> {
//!         self.sum += y_pred.max(1)?.sum_all()?.to_scalar::<f32>()? as f64;
//!         self.n += y_pred.dims()[0] as f64;
//!         Ok(())
//!     }
//!     fn result(&self) -> f64 { if self.n > 0.0 { self.sum / self.n } else { 0.0 } }
//!     fn reset_state(&mut self) { *self = Self::default(); }
//!     fn clone_box(&self) -> Box<dyn StatefulMetric> { Box::new(self.clone()) }
//! }
//!
//! let x = Tensor::new(&[[0f32, 1.], [1., 0.], [1., 1.], [0., 0.]], &Device::Cpu)?;
//! let y = Tensor::new(&[1u32, 0, 1, 0], &Device::Cpu)?;
//! let model = Sequential::new().seed(0).add(Dense::new(2).activation(Activation::Softmax).input_shape(2));
//! model.compile("adam", "sparse_categorical_crossentropy",
//!     vec![MetricEntry::from("accuracy"), Metric::SparseTopKCategoricalAccuracy(1).into(), Confidence::default().into()])?;
//! let history = model.fit(&x, &y, FitOptions::default().epochs(2).verbose(0))?;
//! assert!(history.get("confidence").is_some() && history.get("sparse_top_k_categorical_accuracy").is_some());
//! # Ok::<(), kandle::Error>(())
//! ```

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::losses::Output;
use candle_core::{DType, Tensor, D};
use std::str::FromStr;

/// A built-in metric to report during training and evaluation, as Keras' names them.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Metric {
    /// Keras' `"accuracy"`: binary accuracy for an output of one unit, else sparse categorical
    /// accuracy for class-index targets, else categorical accuracy, as Keras 3 resolves it from
    /// the targets' and the output's shapes (so a multi-label model trained with binary
    /// cross-entropy gets categorical accuracy, as in Keras 3).
    Accuracy,
    /// Argmax of the output equals argmax of one-hot targets.
    CategoricalAccuracy,
    /// Argmax of the output equals the class index.
    SparseCategoricalAccuracy,
    /// Output thresholded at 0.5 (`> 0.5`) equals the target.
    BinaryAccuracy,
    /// The one-hot target's class is among the `k` largest outputs (Keras' default `k` is 5);
    /// classes tied with the `k`-th count as in the top `k`, as TensorFlow's `in_top_k`.
    TopKCategoricalAccuracy(usize),
    /// The same with class-index targets.
    SparseTopKCategoricalAccuracy(usize),
    /// `true positives / predicted positives` over the epoch, outputs thresholded at 0.5 and
    /// every output value counted (Keras' `Precision()`).
    Precision,
    /// `true positives / actual positives` over the epoch (Keras' `Recall()`).
    Recall,
    /// Keras' `BinaryAccuracy(threshold=t)`: outputs above `t` count as 1 (keyed
    /// `binary_accuracy`, as the default one).
    BinaryAccuracyAt(f64),
    /// Keras' `Precision(thresholds=t)`: outputs above `t` are predicted positive.
    PrecisionAt(f64),
    /// Keras' `Recall(thresholds=t)`.
    RecallAt(f64),
    /// Keras' `MeanAbsoluteError()` metric (`"mae"`): `mean(|y_true - y_pred|)` over the last
    /// axis, averaged over the samples.
    MeanAbsoluteError,
    /// Keras' `MeanSquaredError()` metric (`"mse"`): `mean((y_true - y_pred)^2)` likewise.
    MeanSquaredError,
}

impl Metric {
    /// The name in logs and [`crate::models::History`] (`"accuracy"`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::CategoricalAccuracy => "categorical_accuracy",
            Metric::SparseCategoricalAccuracy => "sparse_categorical_accuracy",
            Metric::BinaryAccuracy => "binary_accuracy",
            Metric::TopKCategoricalAccuracy(_) => "top_k_categorical_accuracy",
            Metric::SparseTopKCategoricalAccuracy(_) => "sparse_top_k_categorical_accuracy",
            Metric::Precision | Metric::PrecisionAt(_) => "precision",
            Metric::Recall | Metric::RecallAt(_) => "recall",
            Metric::BinaryAccuracyAt(_) => "binary_accuracy",
            Metric::MeanAbsoluteError => "mean_absolute_error",
            Metric::MeanSquaredError => "mean_squared_error",
        }
    }

    /// The concrete metric `Accuracy` stands for, as Keras 3's `get_metric`: binary for an
    /// output whose last axis is 1, sparse categorical when the targets are class indices
    /// (`sparse_targets`: a sparse loss), else categorical.
    pub fn resolve(self, sparse_targets: bool, units: usize) -> Metric {
        match self {
            Metric::Accuracy if units == 1 => Metric::BinaryAccuracy,
            Metric::Accuracy if sparse_targets => Metric::SparseCategoricalAccuracy,
            Metric::Accuracy => Metric::CategoricalAccuracy,
            m => m,
        }
    }

    /// The saved form, read back by [`Metric::from_str`] (`"top_k_categorical_accuracy:3"`).
    pub fn spec(self) -> String {
        match self {
            Metric::TopKCategoricalAccuracy(k) | Metric::SparseTopKCategoricalAccuracy(k) => {
                format!("{}:{k}", self.name())
            }
            Metric::BinaryAccuracyAt(t) | Metric::PrecisionAt(t) | Metric::RecallAt(t) => {
                format!("{}@{t}", self.name())
            }
            m => m.name().to_string(),
        }
    }

    /// This metric's running state, for targets as the loss takes them.
    ///
    /// # Errors
    /// A top-k metric with `k` 0.
    pub fn build(self, sparse_targets: bool, units: usize) -> Result<Box<dyn StatefulMetric>> {
        let name = self.name();
        let kind = match self.resolve(sparse_targets, units) {
            // "accuracy" on several units: sparse or categorical as the targets come, decided
            // from their shape at each update as Keras 3 does at its first (whatever the loss,
            // `from_logits` included).
            Metric::SparseCategoricalAccuracy | Metric::CategoricalAccuracy if self == Metric::Accuracy => Kind::Auto,
            Metric::CategoricalAccuracy => Kind::Categorical,
            Metric::SparseCategoricalAccuracy => Kind::Sparse,
            Metric::BinaryAccuracy => Kind::Binary(0.5),
            Metric::BinaryAccuracyAt(t) | Metric::PrecisionAt(t) | Metric::RecallAt(t) if !(0.0..=1.0).contains(&t) => {
                return Err(Error::invalid("metrics", format!("{name}: expected a threshold in [0, 1], received {t}")))
            }
            Metric::BinaryAccuracyAt(t) => Kind::Binary(t),
            Metric::PrecisionAt(t) => {
                return Ok(Box::new(Confusion { precision: true, threshold: t, tp: 0.0, other: 0.0 }))
            }
            Metric::RecallAt(t) => {
                return Ok(Box::new(Confusion { precision: false, threshold: t, tp: 0.0, other: 0.0 }))
            }
            Metric::TopKCategoricalAccuracy(k) | Metric::SparseTopKCategoricalAccuracy(k) if k == 0 => {
                return Err(Error::invalid("metrics", format!("{name}: expected k >= 1, received 0")))
            }
            Metric::TopKCategoricalAccuracy(k) => Kind::TopK(k, false),
            Metric::SparseTopKCategoricalAccuracy(k) => Kind::TopK(k, true),
            Metric::MeanAbsoluteError => Kind::Error(false),
            Metric::MeanSquaredError => Kind::Error(true),
            Metric::Precision => {
                return Ok(Box::new(Confusion { precision: true, threshold: 0.5, tp: 0.0, other: 0.0 }))
            }
            Metric::Recall => return Ok(Box::new(Confusion { precision: false, threshold: 0.5, tp: 0.0, other: 0.0 })),
            Metric::Accuracy => unreachable!("resolved"),
        };
        Ok(Box::new(MeanMetric { name, spec: self.spec(), kind, total: 0.0, count: 0.0 }))
    }
}

impl FromStr for Metric {
    type Err = Error;
    /// Keras' names (`"accuracy"`, `"acc"`, `"top_k_categorical_accuracy"`, `"precision"`,
    /// `"mae"` ...); a top-k metric takes its `k` after a colon (`"top_k_categorical_accuracy:3"`,
    /// default 5), binary accuracy, precision and recall a threshold after `@`
    /// (`"precision@0.7"`).
    fn from_str(s: &str) -> Result<Self> {
        // A threshold after '@' (`"precision@0.7"`, as `spec` writes it).
        if let Some((name, t)) = s.split_once('@') {
            let t: f64 = t.parse().map_err(|_| {
                Error::invalid("metrics", format!("{name}: expected a threshold after '@', received {t:?}"))
            })?;
            return match name {
                "binary_accuracy" => Ok(Metric::BinaryAccuracyAt(t)),
                "precision" => Ok(Metric::PrecisionAt(t)),
                "recall" => Ok(Metric::RecallAt(t)),
                other => Err(Error::invalid("metrics", format!("{other} takes no threshold, received {s:?}"))),
            };
        }
        let (name, k) = match s.split_once(':') {
            Some((n, k)) => {
                let k = k.parse::<usize>().map_err(|_| {
                    Error::invalid("metrics", format!("{n}: expected a number k after ':', received {k:?}"))
                })?;
                (n, Some(k))
            }
            None => (s, None),
        };
        let k5 = k.unwrap_or(5);
        let m = match name {
            "accuracy" | "acc" => Metric::Accuracy,
            "categorical_accuracy" => Metric::CategoricalAccuracy,
            "sparse_categorical_accuracy" => Metric::SparseCategoricalAccuracy,
            "binary_accuracy" => Metric::BinaryAccuracy,
            "top_k_categorical_accuracy" => Metric::TopKCategoricalAccuracy(k5),
            "sparse_top_k_categorical_accuracy" => Metric::SparseTopKCategoricalAccuracy(k5),
            "precision" => Metric::Precision,
            "recall" => Metric::Recall,
            "mean_absolute_error" | "mae" => Metric::MeanAbsoluteError,
            "mean_squared_error" | "mse" => Metric::MeanSquaredError,
            other => {
                return Err(Error::invalid(
                    "metrics",
                    format!(
                        "expected one of accuracy, categorical_accuracy, sparse_categorical_accuracy, binary_accuracy, \
                         top_k_categorical_accuracy, sparse_top_k_categorical_accuracy, precision, recall, \
                         mae, mse (or a StatefulMetric), received {other:?}"
                    ),
                ))
            }
        };
        if k.is_some() && !matches!(m, Metric::TopKCategoricalAccuracy(_) | Metric::SparseTopKCategoricalAccuracy(_)) {
            return Err(Error::invalid("metrics", format!("{name} takes no ':k', received {s:?}")));
        }
        Ok(m)
    }
}

/// Whether a metric improves when it goes up (accuracies, precision, recall) or down (errors),
/// as Keras' metrics declare it (`_direction`); callbacks in `auto` mode take it from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Higher is better.
    Up,
    /// Lower is better.
    Down,
}

/// A metric's running state over an epoch, as Keras' `keras.metrics.Metric`: `update_state`
/// for each batch, `result` for the logs, `reset_state` at each epoch's start. Implement it for
/// a user-defined metric; see the [module](self) for an example.
pub trait StatefulMetric: Send {
    /// The key in the logs and the history (Keras: the metric's `name`).
    fn name(&self) -> String;
    /// Adds a batch. `y_true`: the targets as the loss takes them (class indices of shape
    /// `(N,)` for a sparse loss, else the output's shape); `y_pred`: the model's output
    /// (probabilities after a softmax); `sample_weight`: `(N,)` weights (`fit` passes none:
    /// Keras weighs only its `weighted_metrics`, not its `metrics`).
    ///
    /// # Errors
    /// Targets the metric cannot take.
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor, sample_weight: Option<&Tensor>) -> Result<()>;
    /// The metric's value so far.
    fn result(&self) -> f64;
    /// Forgets every batch.
    fn reset_state(&mut self);
    /// A copy of this metric (with its state), as a box.
    fn clone_box(&self) -> Box<dyn StatefulMetric>;
    /// The saved form that [`Metric::from_str`] reads back, for built-in metrics; `None` (the
    /// default) for a user-defined one, which `load_model` leaves out of the compiled metrics.
    fn spec(&self) -> Option<String> {
        None
    }
    /// Whether higher or lower values are better, for callbacks that monitor the metric in
    /// `auto` mode (Keras' `_direction`). Default: `None`, unknown, as for a Keras metric
    /// without one; such a metric is monitored with an explicit `mode`.
    fn direction(&self) -> Option<Direction> {
        None
    }
    /// Adds a batch from the model's [`Output`]; the default computes the output's values and
    /// calls [`StatefulMetric::update_state`]. Built-in metrics read logits directly where the
    /// result is the same (the argmax of logits is the argmax of their softmax).
    ///
    /// # Errors
    /// As [`StatefulMetric::update_state`].
    fn update_state_output(&mut self, y_true: &Tensor, output: &Output, sample_weight: Option<&Tensor>) -> Result<()> {
        self.update_state(y_true, &output.values()?, sample_weight)
    }
}

impl Clone for Box<dyn StatefulMetric> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// One metric as `compile` takes it: a built-in [`Metric`], Keras' name of one (`"acc"`), or a
/// user-defined [`StatefulMetric`].
pub struct MetricEntry(pub(crate) Entry);

pub(crate) enum Entry {
    Builtin(Metric),
    Name(String),
    Custom(Box<dyn StatefulMetric>),
}

impl Clone for MetricEntry {
    fn clone(&self) -> Self {
        MetricEntry(match &self.0 {
            Entry::Builtin(m) => Entry::Builtin(*m),
            Entry::Name(n) => Entry::Name(n.clone()),
            Entry::Custom(c) => Entry::Custom(c.clone_box()),
        })
    }
}

impl From<Metric> for MetricEntry {
    fn from(m: Metric) -> Self {
        MetricEntry(Entry::Builtin(m))
    }
}
impl From<&str> for MetricEntry {
    fn from(s: &str) -> Self {
        MetricEntry(Entry::Name(s.to_string()))
    }
}
impl<M: StatefulMetric + 'static> From<M> for MetricEntry {
    fn from(m: M) -> Self {
        MetricEntry(Entry::Custom(Box::new(m)))
    }
}

impl MetricEntry {
    /// The running state for an output of `units` values and a (sparse or not) loss; a name
    /// `"acc"` keeps its spelling as the key, as in Keras 3.
    pub(crate) fn build(&self, sparse_targets: bool, units: usize) -> Result<Box<dyn StatefulMetric>> {
        match &self.0 {
            Entry::Builtin(m) => m.build(sparse_targets, units),
            Entry::Name(n) => {
                let m: Metric = n.parse()?;
                let mut b = m.build(sparse_targets, units)?;
                // Keras keys a metric given by a string by that string ("acc", "mae").
                if matches!(n.as_str(), "acc" | "mae" | "mse") {
                    b = Box::new(Renamed { name: n.clone(), inner: b, keep_spec: false });
                }
                Ok(b)
            }
            Entry::Custom(c) => {
                let mut c = c.clone_box();
                c.reset_state();
                Ok(c)
            }
        }
    }
}

/// A built-in metric under another key (Keras 3 keys `"acc"` as `acc`).
/// A metric under another key: a built-in one keyed as the string that named it (Keras 3 keys
/// `"acc"` as `acc`), saved under that string; or a name given twice for one output, keyed with
/// Keras' suffix (`accuracy_1`) and saved as the metric it is (`keep_spec`).
struct Renamed {
    name: String,
    inner: Box<dyn StatefulMetric>,
    keep_spec: bool,
}

/// `m` under `name`, saved as itself (the second `accuracy` of a list is logged `accuracy_1`).
pub(crate) fn suffixed(name: String, m: Box<dyn StatefulMetric>) -> Box<dyn StatefulMetric> {
    Box::new(Renamed { name, inner: m, keep_spec: true })
}

impl StatefulMetric for Renamed {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        self.inner.update_state(y_true, y_pred, w)
    }
    fn update_state_output(&mut self, y_true: &Tensor, output: &Output, w: Option<&Tensor>) -> Result<()> {
        self.inner.update_state_output(y_true, output, w)
    }
    fn result(&self) -> f64 {
        self.inner.result()
    }
    fn reset_state(&mut self) {
        self.inner.reset_state()
    }
    fn clone_box(&self) -> Box<dyn StatefulMetric> {
        Box::new(Renamed { name: self.name.clone(), inner: self.inner.clone_box(), keep_spec: self.keep_spec })
    }
    fn direction(&self) -> Option<Direction> {
        self.inner.direction()
    }
    fn spec(&self) -> Option<String> {
        if self.keep_spec {
            self.inner.spec()
        } else {
            Some(self.name.clone())
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// Sparse or categorical, from the targets' shape (Keras' `is_binary_or_sparse_categorical`).
    Auto,
    Categorical,
    Sparse,
    /// With its threshold.
    Binary(f64),
    /// `k`, and whether the targets are class indices.
    TopK(usize, bool),
    /// The mean absolute (`false`) or squared (`true`) error over the last axis.
    Error(bool),
}

/// A mean over samples of a per-sample score (Keras' `MeanMetricWrapper`), weighted by the
/// sample weights when there are some.
#[derive(Clone)]
struct MeanMetric {
    name: &'static str,
    spec: String,
    kind: Kind,
    total: f64,
    count: f64,
}

/// Class indices `(N,)` from targets (one-hot rows, or indices of shape `(N,)` / `(N, 1)`).
fn class_indices(y_true: &Tensor, one_hot: bool, name: &str) -> Result<Tensor> {
    if one_hot {
        if y_true.rank() != 2 {
            return Err(Error::invalid(
                "metrics",
                format!("{name} needs one-hot targets of shape (N, classes), received shape {:?}", y_true.dims()),
            ));
        }
        Ok(y_true.argmax(D::Minus1)?)
    } else {
        Ok(y_true.to_dtype(DType::U32)?.flatten_all()?)
    }
}

impl MeanMetric {
    /// Per-sample scores `(N,)` in f64. `t`: the output or logits of an order-preserving final
    /// activation; `logits_of`: that activation.
    fn scores(&self, y_true: &Tensor, t: &Tensor, logits_of: Option<Activation>) -> Result<Tensor> {
        Ok(match self.kind {
            Kind::Categorical | Kind::Sparse | Kind::Auto => {
                let one_hot = match self.kind {
                    // Keras 3: sparse when the targets have fewer axes than the output, or a
                    // last axis of 1 against several units.
                    Kind::Auto => {
                        let last = |t: &Tensor| t.dims().last().copied().unwrap_or(1);
                        !(y_true.rank() < t.rank() || (last(y_true) == 1 && last(t) > 1))
                    }
                    k => matches!(k, Kind::Categorical),
                };
                let truth = class_indices(y_true, one_hot, self.name)?;
                t.argmax(D::Minus1)?.eq(&truth)?.to_dtype(DType::F64)?
            }
            Kind::TopK(k, sparse) => {
                let truth = class_indices(y_true, !sparse, self.name)?;
                let classes = *t.dims().last().unwrap_or(&1);
                let t2 = t.reshape(((), classes))?;
                let target = t2.gather(&truth.unsqueeze(1)?, 1)?;
                // in_top_k: fewer than k classes score strictly higher than the target's.
                let higher = t2.broadcast_gt(&target)?.to_dtype(DType::F64)?.sum(1)?;
                higher.lt(k as f64)?.to_dtype(DType::F64)?
            }
            Kind::Error(squared) => {
                let d = y_true.to_dtype(DType::F64)?.reshape(t.shape())?.sub(&t.to_dtype(DType::F64)?)?;
                let e = if squared { d.sqr()? } else { d.abs()? };
                let n = e.dims().first().copied().unwrap_or(1);
                e.reshape((n, ()))?.mean(1)?
            }
            Kind::Binary(th) => {
                // sigmoid(z) > th <=> z > logit(th)
                let threshold = if logits_of == Some(Activation::Sigmoid) { (th / (1.0 - th)).ln() } else { th };
                let pred = t.gt(threshold)?.to_dtype(DType::F64)?;
                let eq = pred.eq(&y_true.to_dtype(DType::F64)?)?.to_dtype(DType::F64)?;
                let n = eq.dims().first().copied().unwrap_or(1);
                eq.reshape((n, ()))?.mean(1)?
            }
        })
    }

    fn add(&mut self, scores: &Tensor, w: Option<&Tensor>) -> Result<()> {
        match w {
            Some(w) => {
                let w = w.to_dtype(DType::F64)?.flatten_all()?;
                self.total += (scores * &w)?.sum_all()?.to_scalar::<f64>()?;
                self.count += w.sum_all()?.to_scalar::<f64>()?;
            }
            None => {
                self.total += scores.sum_all()?.to_scalar::<f64>()?;
                self.count += scores.elem_count() as f64;
            }
        }
        Ok(())
    }
}

impl StatefulMetric for MeanMetric {
    fn name(&self) -> String {
        self.name.to_string()
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        let s = self.scores(y_true, y_pred, None)?;
        self.add(&s, w)
    }
    fn update_state_output(&mut self, y_true: &Tensor, output: &Output, w: Option<&Tensor>) -> Result<()> {
        let s = match output {
            Output::Values(t) => self.scores(y_true, t, None)?,
            // Softmax and sigmoid keep each row's order: argmax and top-k read the logits.
            Output::Logits(z, a @ (Activation::Softmax | Activation::Sigmoid))
                if !matches!(self.kind, Kind::Error(_)) =>
            {
                self.scores(y_true, z, Some(*a))?
            }
            Output::Logits(..) => self.scores(y_true, &output.values()?, None)?,
        };
        self.add(&s, w)
    }
    fn result(&self) -> f64 {
        if self.count > 0.0 {
            self.total / self.count
        } else {
            0.0
        }
    }
    fn reset_state(&mut self) {
        self.total = 0.0;
        self.count = 0.0;
    }
    fn clone_box(&self) -> Box<dyn StatefulMetric> {
        Box::new(self.clone())
    }
    fn spec(&self) -> Option<String> {
        Some(self.spec.clone())
    }
    /// Accuracies go up, errors down.
    fn direction(&self) -> Option<Direction> {
        Some(if matches!(self.kind, Kind::Error(_)) { Direction::Down } else { Direction::Up })
    }
}

/// Precision or recall at threshold 0.5 (Keras' `Precision()` / `Recall()`): true positives
/// against predicted (precision) or actual (recall) positives, over every output value.
#[derive(Clone)]
struct Confusion {
    precision: bool,
    threshold: f64,
    tp: f64,
    /// False positives (precision) or false negatives (recall).
    other: f64,
}

impl StatefulMetric for Confusion {
    fn name(&self) -> String {
        if self.precision { "precision" } else { "recall" }.into()
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        if y_true.dims() != y_pred.dims() {
            return Err(Error::invalid(
                "metrics",
                format!(
                    "{}: expected targets of the output's shape {:?} (one-hot or 0/1), received {:?}",
                    self.name(),
                    y_pred.dims(),
                    y_true.dims()
                ),
            ));
        }
        let pred = y_pred.gt(self.threshold)?.to_dtype(DType::F64)?;
        let truth = y_true.ne(0.0)?.to_dtype(DType::F64)?;
        let n = pred.dims().first().copied().unwrap_or(1);
        let (pred, truth) = (pred.reshape((n, ()))?, truth.reshape((n, ()))?);
        let (pred, truth) = match w {
            Some(w) => {
                let w = w.to_dtype(DType::F64)?.reshape((n, 1))?;
                (pred.broadcast_mul(&w)?, truth.broadcast_mul(&w)?)
            }
            None => (pred, truth),
        };
        let ones = truth.ne(0.0)?.to_dtype(DType::F64)?;
        let tp = (&pred * &ones)?.sum_all()?.to_scalar::<f64>()?;
        let other = if self.precision {
            pred.sum_all()?.to_scalar::<f64>()? - tp
        } else {
            let pred_on = pred.ne(0.0)?.to_dtype(DType::F64)?;
            truth.sum_all()?.to_scalar::<f64>()? - (&truth * &pred_on)?.sum_all()?.to_scalar::<f64>()?
        };
        self.tp += tp;
        self.other += other;
        Ok(())
    }
    fn result(&self) -> f64 {
        let d = self.tp + self.other;
        if d > 0.0 {
            self.tp / d
        } else {
            0.0
        }
    }
    fn reset_state(&mut self) {
        self.tp = 0.0;
        self.other = 0.0;
    }
    fn clone_box(&self) -> Box<dyn StatefulMetric> {
        Box::new(self.clone())
    }
    fn spec(&self) -> Option<String> {
        Some(if self.threshold == 0.5 { self.name() } else { format!("{}@{}", self.name(), self.threshold) })
    }
    fn direction(&self) -> Option<Direction> {
        Some(Direction::Up)
    }
}
