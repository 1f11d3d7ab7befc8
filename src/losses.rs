//! Losses, as in `keras.losses`, averaged over the batch (Keras' `sum_over_batch_size`).
//!
//! Probabilities are clipped to `[1e-7, 1 - 1e-7]` as Keras does. When the model ends with a
//! softmax (or sigmoid) and the loss is a (binary) cross-entropy, the loss is computed from the
//! logits instead, as Keras 3 does on TensorFlow: same value, exact gradient, no overflow.

use crate::activations::Activation;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};
use std::str::FromStr;

/// Keras' `epsilon()` used to clip probabilities.
pub const EPSILON: f64 = 1e-7;

/// A loss function, as Keras' loss classes: one of the constants below (the tutorial's
/// `Loss::CategoricalCrossentropy`), with Keras' options set by builder methods.
///
/// ```
/// use kandle::losses::Loss;
/// let loss = Loss::CategoricalCrossentropy.from_logits(true).label_smoothing(0.1);
/// assert_eq!(loss.to_string(), "categorical_crossentropy(from_logits=true,label_smoothing=0.1)");
/// assert_eq!(loss.to_string().parse::<Loss>()?, loss);
/// assert_eq!(Loss::Huber.delta(2.0).name(), "huber");
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    kind: LossKind,
    from_logits: bool,
    label_smoothing: f64,
    delta: f64,
    ignore_class: Option<u32>,
    reduction: Reduction,
}

/// How a batch's per-sample losses become one number, as Keras' `reduction`.
///
/// ```
/// use kandle::losses::{Loss, Reduction};
/// use candle_core::{Device, Tensor};
/// let y = Tensor::new(&[[1f32], [0.]], &Device::Cpu)?;
/// let p = Tensor::new(&[[0.5f32], [0.5]], &Device::Cpu)?;
/// let sum = Loss::MeanSquaredError.reduction(Reduction::Sum).compute(&y, &p)?.to_scalar::<f32>()?;
/// assert_eq!(sum, 0.5); // 0.25 + 0.25
/// assert_eq!("mse(reduction=sum)".parse::<Loss>()?, Loss::MeanSquaredError.reduction(Reduction::Sum));
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// `sum(loss * weight) / batch size` (Keras' default, `"sum_over_batch_size"`; `"mean"`
    /// is the same).
    #[default]
    SumOverBatchSize,
    /// `sum(loss * weight)` (`"sum"`).
    Sum,
    /// `sum(loss * weight) / sum(weight)` (`"mean_with_sample_weight"`).
    MeanWithSampleWeight,
}

impl Reduction {
    fn name(self) -> &'static str {
        match self {
            Reduction::SumOverBatchSize => "sum_over_batch_size",
            Reduction::Sum => "sum",
            Reduction::MeanWithSampleWeight => "mean_with_sample_weight",
        }
    }
}

impl std::str::FromStr for Reduction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sum_over_batch_size" | "mean" => Ok(Reduction::SumOverBatchSize),
            "sum" => Ok(Reduction::Sum),
            "mean_with_sample_weight" => Ok(Reduction::MeanWithSampleWeight),
            other => Err(Error::invalid(
                "reduction",
                format!(
                    "expected sum_over_batch_size, mean, sum or mean_with_sample_weight, received {other:?} \
                     (\"none\" gives no number to train on)"
                ),
            )),
        }
    }
}

/// The kinds of [`Loss`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossKind {
    /// `-sum(y_true * log(y_pred))` with one-hot `y_true` of shape `(N, classes)`.
    CategoricalCrossentropy,
    /// The same with class indices `y_true` of shape `(N,)` or `(N, 1)`.
    SparseCategoricalCrossentropy,
    /// `-(y log p + (1 - y) log(1 - p))`, averaged over the last axis.
    BinaryCrossentropy,
    /// `mean((y_true - y_pred)^2)` over the last axis.
    MeanSquaredError,
    /// `mean(|y_true - y_pred|)` over the last axis.
    MeanAbsoluteError,
    /// `0.5 x^2` for `|x| <= delta`, else `delta (|x| - 0.5 delta)`, averaged over the last axis.
    Huber,
    /// `sum(y_true * log(y_true / y_pred))` over the last axis, both clipped to `[1e-7, 1]`.
    KLDivergence,
    /// Keras 3's `"crossentropy"` / `"ce"`: binary for an output of one unit, sparse
    /// categorical for class-index targets, else categorical, decided from the targets' and
    /// the output's shapes as Keras' `compile_utils.get_loss` does.
    Crossentropy,
}

#[allow(non_upper_case_globals)]
impl Loss {
    const fn of(kind: LossKind) -> Loss {
        Loss {
            kind,
            from_logits: false,
            label_smoothing: 0.0,
            delta: 1.0,
            ignore_class: None,
            reduction: Reduction::SumOverBatchSize,
        }
    }
    /// Keras' `CategoricalCrossentropy()`: one-hot targets of shape `(N, classes)`.
    pub const CategoricalCrossentropy: Loss = Loss::of(LossKind::CategoricalCrossentropy);
    /// Keras' `SparseCategoricalCrossentropy()`: class-index targets of shape `(N,)` or `(N, 1)`.
    pub const SparseCategoricalCrossentropy: Loss = Loss::of(LossKind::SparseCategoricalCrossentropy);
    /// Keras' `BinaryCrossentropy()`: 0/1 targets of the output's shape.
    pub const BinaryCrossentropy: Loss = Loss::of(LossKind::BinaryCrossentropy);
    /// Keras' `MeanSquaredError()`.
    pub const MeanSquaredError: Loss = Loss::of(LossKind::MeanSquaredError);
    /// Keras' `MeanAbsoluteError()`.
    pub const MeanAbsoluteError: Loss = Loss::of(LossKind::MeanAbsoluteError);
    /// Keras' `Huber()`, `delta` 1.0 (see [`Loss::delta`]).
    pub const Huber: Loss = Loss::of(LossKind::Huber);
    /// Keras' `KLDivergence()`.
    pub const KLDivergence: Loss = Loss::of(LossKind::KLDivergence);
    /// Keras 3's `loss="crossentropy"` (or `"ce"`): the cross-entropy the shapes call for.
    pub const Crossentropy: Loss = Loss::of(LossKind::Crossentropy);

    /// The concrete cross-entropy `Crossentropy` stands for, with targets of dims `y` and an
    /// output of shape `output_shape` (without the batch axis); other losses are themselves.
    fn resolved(self, y: &[usize], output_shape: &[usize]) -> Loss {
        if self.kind != LossKind::Crossentropy {
            return self;
        }
        let units = output_shape.last().copied().unwrap_or(1);
        let kind = if units == 1 {
            LossKind::BinaryCrossentropy
        } else if y.len() < output_shape.len() + 1 || (y.last() == Some(&1) && units > 1) {
            LossKind::SparseCategoricalCrossentropy
        } else {
            LossKind::CategoricalCrossentropy
        };
        Loss { kind, ..self }
    }

    /// The kind of loss.
    pub fn kind(self) -> LossKind {
        self.kind
    }
    /// Keras' `from_logits` (cross-entropies): the model's output is logits, and the loss
    /// applies the softmax (sigmoid for the binary one) itself. Default `false`.
    pub fn from_logits(mut self, on: bool) -> Self {
        self.from_logits = on;
        self
    }
    /// Keras' `label_smoothing` (categorical and binary cross-entropy): targets become
    /// `y (1 - s) + s / classes` (`+ s / 2` for the binary one). Default 0.
    pub fn label_smoothing(mut self, s: f64) -> Self {
        self.label_smoothing = s;
        self
    }
    /// Keras' `delta` of [`Loss::Huber`] (default 1.0).
    pub fn delta(mut self, delta: f64) -> Self {
        self.delta = delta;
        self
    }
    /// Keras' `ignore_class` of [`Loss::SparseCategoricalCrossentropy`] (default none):
    /// samples of that label count for nothing, and the loss is the mean over the others
    /// (Keras: the mask's `total / valid` weights).
    ///
    /// ```
    /// use kandle::losses::Loss;
    /// use candle_core::{Device, Tensor};
    /// let p = Tensor::new(&[[0.5f32, 0.5], [0.9, 0.1]], &Device::Cpu)?;
    /// let y = Tensor::new(&[0u32, 255], &Device::Cpu)?; // the second sample is unlabelled
    /// let l = Loss::SparseCategoricalCrossentropy.ignore_class(255).compute(&y, &p)?.to_scalar::<f32>()?;
    /// assert!((l - 0.5f32.ln().abs()).abs() < 1e-6); // the first sample's loss alone
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn ignore_class(mut self, class: u32) -> Self {
        self.ignore_class = Some(class);
        self
    }
    /// Keras' `reduction` (default [`Reduction::SumOverBatchSize`]).
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
    /// Whether the output is taken as logits.
    pub fn is_from_logits(self) -> bool {
        self.from_logits
    }

    /// Checks the options: an error names the option, the loss and what was received.
    ///
    /// # Errors
    /// `label_smoothing` outside `[0, 1]` or on a loss without it, `from_logits` on a loss
    /// that is not a cross-entropy, a `delta` that is not positive.
    pub fn validate(self) -> Result<()> {
        let name = self.name();
        let ce = matches!(
            self.kind,
            LossKind::CategoricalCrossentropy
                | LossKind::SparseCategoricalCrossentropy
                | LossKind::BinaryCrossentropy
                | LossKind::Crossentropy
        );
        if self.from_logits && !ce {
            return Err(Error::invalid("from_logits", format!("{name} has no from_logits (only the cross-entropies)")));
        }
        if self.label_smoothing != 0.0 {
            if !matches!(self.kind, LossKind::CategoricalCrossentropy | LossKind::BinaryCrossentropy) {
                return Err(Error::invalid(
                    "label_smoothing",
                    format!("{name} has no label_smoothing (categorical and binary cross-entropy have it)"),
                ));
            }
            if !(0.0..=1.0).contains(&self.label_smoothing) {
                return Err(Error::invalid(
                    "label_smoothing",
                    format!("expected a value in [0, 1], received {}", self.label_smoothing),
                ));
            }
        }
        if self.ignore_class.is_some() && self.kind != LossKind::SparseCategoricalCrossentropy {
            return Err(Error::invalid(
                "ignore_class",
                format!("{name} has no ignore_class (sparse_categorical_crossentropy has it)"),
            ));
        }
        if !(self.delta > 0.0 && self.delta.is_finite()) {
            return Err(Error::invalid("delta", format!("{name}: expected a positive delta, received {}", self.delta)));
        }
        Ok(())
    }
}

/// A model's output as a loss sees it: probabilities, or logits before a final activation.
#[derive(Debug, Clone)]
pub enum Output {
    /// The model's output.
    Values(Tensor),
    /// The pre-activation output of a model whose last layer ends with the activation.
    Logits(Tensor, Activation),
}

impl Output {
    /// The model's output (the activation applied to logits).
    ///
    /// # Errors
    /// As [`Activation::apply`].
    pub fn values(&self) -> Result<Tensor> {
        match self {
            Output::Values(t) => Ok(t.clone()),
            Output::Logits(z, a) => a.apply(z),
        }
    }
}

impl Loss {
    /// Keras' name (`"categorical_crossentropy"`).
    pub fn name(self) -> &'static str {
        match self.kind {
            LossKind::CategoricalCrossentropy => "categorical_crossentropy",
            LossKind::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            LossKind::BinaryCrossentropy => "binary_crossentropy",
            LossKind::MeanSquaredError => "mean_squared_error",
            LossKind::MeanAbsoluteError => "mean_absolute_error",
            LossKind::Huber => "huber",
            LossKind::KLDivergence => "kl_divergence",
            LossKind::Crossentropy => "crossentropy",
        }
    }

    /// Whether the loss is computed from the logits of a final `activation` (never for a
    /// loss `from_logits`, whose output already is logits).
    pub fn fuses_with(self, activation: Activation) -> bool {
        !self.from_logits
            && matches!(
                (self.kind, activation),
                (
                    LossKind::CategoricalCrossentropy
                        | LossKind::SparseCategoricalCrossentropy
                        | LossKind::Crossentropy,
                    Activation::Softmax
                ) | (LossKind::BinaryCrossentropy, Activation::Sigmoid)
            )
    }

    /// Checks targets `y` against the model's output shape (without batch axis) and returns
    /// them ready for [`Loss::compute`]: floats of `dtype`, or `u32` class indices of shape
    /// `(N,)` for the sparse loss.
    ///
    /// # Errors
    /// When `y` does not fit the loss and the output: the message says what was expected.
    pub fn prepare_targets(self, y: &Tensor, output_shape: &[usize], dtype: DType) -> Result<Tensor> {
        if self.kind == LossKind::Crossentropy {
            return self.resolved(y.dims(), output_shape).prepare_targets(y, output_shape, dtype);
        }
        let n = y.dims().first().copied().unwrap_or(0);
        let dims = y.dims();
        let mismatch = |expected: String| Error::Shape {
            context: format!("targets `y` for loss {}", self.name()),
            expected,
            received: format!("{dims:?}"),
        };
        self.validate()?;
        match self.kind {
            // Resolved at the top: never reached as such.
            LossKind::SparseCategoricalCrossentropy | LossKind::Crossentropy => {
                let classes = *output_shape.last().unwrap_or(&0);
                if !(dims.len() == 1 || (dims.len() == 2 && dims[1] == 1)) || output_shape.len() != 1 {
                    return Err(mismatch(format!(
                        "class indices of shape (N,) or (N, 1) for an output of shape (N, classes); \
                         one-hot targets need categorical_crossentropy (model output: {:?})",
                        output_shape
                    )));
                }
                let flat = y.flatten_all()?;
                let values = flat.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| {
                    !(v.fract() == 0.0 && **v >= 0.0 && **v < classes as f64)
                        && self.ignore_class.map(f64::from) != Some(**v)
                }) {
                    return Err(Error::invalid(
                        "y",
                        format!("sparse_categorical_crossentropy: expected class indices in [0, {classes}) for an output of {classes} units, received {v} at index {i}"),
                    ));
                }
                Ok(flat.to_dtype(DType::U32)?)
            }
            LossKind::CategoricalCrossentropy => {
                if dims.len() != 2 || output_shape != [dims[1]] {
                    return Err(mismatch(format!(
                        "one-hot targets of shape (N, {}) (use to_categorical, or sparse_categorical_crossentropy for class indices)",
                        output_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                    )));
                }
                Ok(y.to_dtype(dtype)?)
            }
            LossKind::BinaryCrossentropy
            | LossKind::MeanSquaredError
            | LossKind::MeanAbsoluteError
            | LossKind::Huber
            | LossKind::KLDivergence => {
                if self.kind == LossKind::BinaryCrossentropy {
                    // Targets outside [0, 1] (swapped targets of two outputs) train silently
                    // otherwise; refused as sparse labels out of range are.
                    // Three reductions per batch; the values are read back only to name a bad one.
                    let flat = y.flatten_all()?.to_dtype(DType::F64)?;
                    let (lo, hi) = (flat.min_all()?.to_scalar::<f64>()?, flat.max_all()?.to_scalar::<f64>()?);
                    let nan = !flat.sum_all()?.to_scalar::<f64>()?.is_finite();
                    let bad = nan || !((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
                    let values = if bad { flat.to_vec1::<f64>()? } else { Vec::new() };
                    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
                        return Err(Error::invalid(
                            "y",
                            format!("binary_crossentropy: expected targets in [0, 1], received {v} at index {i}"),
                        ));
                    }
                }
                if &dims[1.min(dims.len())..] == output_shape {
                    Ok(y.to_dtype(dtype)?)
                } else if dims.len() == 1 && output_shape == [1] {
                    Ok(y.to_dtype(dtype)?.reshape((n, 1))?)
                } else {
                    Err(mismatch(crate::error::fmt_shape(true, output_shape)))
                }
            }
        }
    }

    /// The mean loss of a batch, from prepared targets (see [`Loss::prepare_targets`]).
    ///
    /// # Errors
    /// If the shapes do not fit.
    pub fn compute_output(self, y_true: &Tensor, output: &Output) -> Result<Tensor> {
        self.compute_output_weighted(y_true, output, None)
    }

    /// The loss of a batch with Keras' per-sample weights `(N,)`: `sum(loss_i * w_i) / N`
    /// (Keras' `sum_over_batch_size`, which divides by the batch size, not by the weights).
    ///
    /// # Errors
    /// If the shapes do not fit.
    pub fn compute_output_weighted(
        self,
        y_true: &Tensor,
        output: &Output,
        sample_weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (t, dtype) = match output {
            Output::Values(t) | Output::Logits(t, _) => (t, t.dtype()),
        };
        let classes = *t.dims().last().unwrap_or(&1);
        if self.kind == LossKind::Crossentropy {
            // Prepared targets tell which: class indices are u32 (see `prepare_targets`).
            let kind = if classes == 1 {
                LossKind::BinaryCrossentropy
            } else if y_true.dtype() == DType::U32 {
                LossKind::SparseCategoricalCrossentropy
            } else {
                LossKind::CategoricalCrossentropy
            };
            return Loss { kind, ..self }.compute_output_weighted(y_true, output, sample_weight);
        }
        // Keras' ignore_class: those samples' labels become 0 and their losses are masked out.
        let mask = match (self.kind, self.ignore_class) {
            (LossKind::SparseCategoricalCrossentropy, Some(c)) => {
                Some(y_true.to_dtype(DType::U32)?.flatten_all()?.ne(c)?.to_dtype(dtype)?)
            }
            _ => None,
        };
        let y_true = match (self.kind, &mask) {
            (LossKind::SparseCategoricalCrossentropy, Some(m)) => {
                let kept = (y_true.to_dtype(dtype)?.flatten_all()? * m)?;
                one_hot(&kept, classes, dtype)?
            }
            (LossKind::SparseCategoricalCrossentropy, None) => one_hot(y_true, classes, dtype)?,
            _ => y_true.clone(),
        };
        // Keras' label smoothing: towards the uniform distribution over the classes.
        let s = self.label_smoothing;
        let y_true = match self.kind {
            LossKind::CategoricalCrossentropy if s > 0.0 => ((y_true * (1.0 - s))? + s / classes as f64)?,
            LossKind::BinaryCrossentropy if s > 0.0 => ((y_true * (1.0 - s))? + s / 2.0)?,
            _ => y_true,
        };
        // A loss from logits sees the output as the logits of its activation.
        let output = match (self.from_logits, self.kind, output) {
            (true, LossKind::BinaryCrossentropy, Output::Values(z)) => Output::Logits(z.clone(), Activation::Sigmoid),
            (true, _, Output::Values(z)) => Output::Logits(z.clone(), Activation::Softmax),
            (_, _, o) => o.clone(),
        };
        let per_sample = match (self.kind, &output) {
            (
                LossKind::CategoricalCrossentropy | LossKind::SparseCategoricalCrossentropy,
                Output::Logits(z, Activation::Softmax),
            ) => {
                let max = z.max_keepdim(D::Minus1)?.detach();
                let shifted = z.broadcast_sub(&max)?;
                let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
                let log_p = shifted.broadcast_sub(&lse)?;
                (y_true * log_p)?.sum(D::Minus1)?.neg()?
            }
            (LossKind::BinaryCrossentropy, Output::Logits(z, Activation::Sigmoid)) => {
                // max(z, 0) - z * y + log(1 + exp(-|z|))
                let l = ((z.relu()? - (z * &y_true)?)? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                l.mean(D::Minus1)?
            }
            (_, out) => {
                let p = out.values()?;
                match self.kind {
                    // (resolved above: never reached as such)
                    LossKind::CategoricalCrossentropy
                    | LossKind::SparseCategoricalCrossentropy
                    | LossKind::Crossentropy => {
                        let p = p.broadcast_div(&p.sum_keepdim(D::Minus1)?)?;
                        let p = p.clamp(EPSILON, 1.0 - EPSILON)?;
                        (y_true * p.log()?)?.sum(D::Minus1)?.neg()?
                    }
                    LossKind::BinaryCrossentropy => {
                        let p = p.clamp(EPSILON, 1.0 - EPSILON)?;
                        let one_minus_y = (y_true.ones_like()? - &y_true)?;
                        let one_minus_p = (p.ones_like()? - &p)?;
                        ((&y_true * p.log()?)? + (one_minus_y * one_minus_p.log()?)?)?.neg()?.mean(D::Minus1)?
                    }
                    LossKind::MeanSquaredError => (y_true - p)?.sqr()?.mean(D::Minus1)?,
                    LossKind::MeanAbsoluteError => (y_true - p)?.abs()?.mean(D::Minus1)?,
                    LossKind::Huber => {
                        // Keras' 0.5 x^2 where |x| <= delta, else delta |x| - 0.5 delta^2, written
                        // as 0.5 q^2 + delta (|x| - q) with q = min(|x|, delta): one expression.
                        let d = self.delta;
                        let abs = (y_true - p)?.abs()?;
                        let q = abs.clamp(0.0, d)?;
                        ((q.sqr()? * 0.5)? + ((abs - &q)? * d)?)?.mean(D::Minus1)?
                    }
                    LossKind::KLDivergence => {
                        let t = y_true.clamp(EPSILON, 1.0)?;
                        let p = p.clamp(EPSILON, 1.0)?;
                        (&t * (t.log()? - p.log()?)?)?.sum(D::Minus1)?
                    }
                }
            }
        };
        let n = per_sample.dims().first().copied().unwrap_or(1);
        let per_sample = per_sample.reshape((n, ()))?.mean(1)?;
        let w = sample_weight.map(|w| w.to_dtype(dtype).and_then(|w| w.flatten_all())).transpose()?;
        if let Some(m) = mask {
            // sum(loss * w * mask) / (valid + 1e-7), as Keras' apply_mask.
            let l = (per_sample * &m)?;
            let (l, wm) = match &w {
                Some(w) => ((l * w)?, (&m * w)?),
                None => (l, m.clone()),
            };
            return Ok(match self.reduction {
                Reduction::Sum => l.sum_all()?,
                Reduction::MeanWithSampleWeight => l.sum_all()?.broadcast_div(&wm.sum_all()?)?,
                Reduction::SumOverBatchSize => l.sum_all()?.broadcast_div(&(m.sum_all()? + 1e-7)?)?,
            });
        }
        Ok(match (self.reduction, w) {
            (Reduction::SumOverBatchSize, Some(w)) => ((per_sample * w)?.sum_all()? / n as f64)?,
            (Reduction::SumOverBatchSize, None) => per_sample.mean_all()?,
            (Reduction::Sum, Some(w)) => (per_sample * w)?.sum_all()?,
            (Reduction::Sum, None) => per_sample.sum_all()?,
            (Reduction::MeanWithSampleWeight, Some(w)) => {
                // Keras' divide_no_nan: 0 when every weight is 0.
                let total = w.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if total == 0.0 {
                    per_sample.sum_all()?.zeros_like()?
                } else {
                    ((per_sample * w)?.sum_all()? / total)?
                }
            }
            (Reduction::MeanWithSampleWeight, None) => per_sample.mean_all()?,
        })
    }

    /// The mean loss of `y_pred` (the model's output, e.g. probabilities) against `y_true`,
    /// as Keras' `loss(y_true, y_pred)`.
    ///
    /// ```
    /// use kandle::losses::Loss;
    /// use candle_core::{Device, Tensor};
    /// let y_true = Tensor::new(&[[0f32, 1., 0.], [0., 0., 1.]], &Device::Cpu)?;
    /// let y_pred = Tensor::new(&[[0.05f32, 0.95, 0.], [0.1, 0.8, 0.1]], &Device::Cpu)?;
    /// let loss = Loss::CategoricalCrossentropy.compute(&y_true, &y_pred)?.to_scalar::<f32>()?;
    /// assert!((loss - 1.1769392).abs() < 1e-5); // Keras' documented value
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// If the shapes do not fit.
    pub fn compute(self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        let shape = &y_pred.dims()[1.min(y_pred.rank())..];
        let y = self.prepare_targets(y_true, shape, y_pred.dtype())?;
        self.compute_output(&y, &Output::Values(y_pred.clone()))
    }
}

/// One-hot rows of `classes` columns from `u32` indices.
pub(crate) fn one_hot(labels: &Tensor, classes: usize, dtype: DType) -> Result<Tensor> {
    let idx = labels.to_dtype(DType::U32)?.flatten_all()?.unsqueeze(1)?;
    let range = Tensor::arange(0u32, classes as u32, labels.device())?.unsqueeze(0)?;
    Ok(idx.broadcast_eq(&range)?.to_dtype(dtype)?)
}

impl FromStr for Loss {
    type Err = Error;
    /// Keras' names (`"categorical_crossentropy"`, `"mse"`, `"huber"`, `"kld"`, ...), with
    /// options in parentheses as [`Loss`]'s `Display` writes them:
    /// `"binary_crossentropy(from_logits=true,label_smoothing=0.1)"`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, opts) = match s.split_once('(') {
            Some((n, rest)) => (n.trim(), Some(rest.strip_suffix(')').unwrap_or(rest))),
            None => (s.trim(), None),
        };
        let mut loss = match name {
            "categorical_crossentropy" => Loss::CategoricalCrossentropy,
            "sparse_categorical_crossentropy" => Loss::SparseCategoricalCrossentropy,
            "binary_crossentropy" => Loss::BinaryCrossentropy,
            "mean_squared_error" | "mse" => Loss::MeanSquaredError,
            "mean_absolute_error" | "mae" => Loss::MeanAbsoluteError,
            "huber" => Loss::Huber,
            "kl_divergence" | "kld" | "kullback_leibler_divergence" => Loss::KLDivergence,
            "crossentropy" | "ce" => Loss::Crossentropy,
            other => {
                return Err(Error::invalid(
                    "loss",
                    format!(
                    "expected one of categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy, \
                         mean_squared_error, mean_absolute_error, huber, kl_divergence; received {other:?}"
                ),
                ))
            }
        };
        for opt in opts.into_iter().flat_map(|o| o.split(',')).map(str::trim).filter(|o| !o.is_empty()) {
            let bad = || Error::invalid("loss", format!("{name}: cannot read option {opt:?} in {s:?}"));
            let (k, v) = opt.split_once('=').ok_or_else(bad)?;
            loss = match k.trim() {
                "from_logits" => loss.from_logits(v.trim().parse().map_err(|_| bad())?),
                "label_smoothing" => loss.label_smoothing(v.trim().parse().map_err(|_| bad())?),
                "delta" => loss.delta(v.trim().parse().map_err(|_| bad())?),
                "ignore_class" => loss.ignore_class(v.trim().parse().map_err(|_| bad())?),
                "reduction" => loss.reduction(v.trim().parse()?),
                _ => return Err(bad()),
            };
        }
        loss.validate()?;
        Ok(loss)
    }
}

impl std::fmt::Display for Loss {
    /// Keras' name, with the options that differ from the defaults in parentheses.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())?;
        let mut opts = Vec::new();
        if self.from_logits {
            opts.push("from_logits=true".to_string());
        }
        if self.label_smoothing != 0.0 {
            opts.push(format!("label_smoothing={}", self.label_smoothing));
        }
        if self.delta != 1.0 {
            opts.push(format!("delta={}", self.delta));
        }
        if let Some(c) = self.ignore_class {
            opts.push(format!("ignore_class={c}"));
        }
        if self.reduction != Reduction::SumOverBatchSize {
            opts.push(format!("reduction={}", self.reduction.name()));
        }
        if !opts.is_empty() {
            write!(f, "({})", opts.join(","))?;
        }
        Ok(())
    }
}
