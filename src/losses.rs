//! Losses, as in `keras.losses`, averaged over the batch (Keras' `sum_over_batch_size`).
//!
//! Probabilities are clipped to `[1e-7, 1 - 1e-7]` as Keras does. When the model ends with a
//! softmax (or sigmoid) and the loss is a (binary) cross-entropy, the loss is computed from the
//! logits instead, as Keras 3 does on TensorFlow: same value, exact gradient, no overflow.

use crate::activations::Activation;
use crate::{Error, Result};
use candle_core::{DType, Tensor, D};
use std::str::FromStr;

/// Keras' `epsilon()` used to clip probabilities.
pub const EPSILON: f64 = 1e-7;

/// A loss function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loss {
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
        match self {
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            Loss::BinaryCrossentropy => "binary_crossentropy",
            Loss::MeanSquaredError => "mean_squared_error",
            Loss::MeanAbsoluteError => "mean_absolute_error",
        }
    }

    /// Whether the loss is computed from the logits of a final `activation`.
    pub fn fuses_with(self, activation: Activation) -> bool {
        matches!(
            (self, activation),
            (Loss::CategoricalCrossentropy | Loss::SparseCategoricalCrossentropy, Activation::Softmax)
                | (Loss::BinaryCrossentropy, Activation::Sigmoid)
        )
    }

    /// Checks targets `y` against the model's output shape (without batch axis) and returns
    /// them ready for [`Loss::compute`]: floats of `dtype`, or `u32` class indices of shape
    /// `(N,)` for the sparse loss.
    ///
    /// # Errors
    /// When `y` does not fit the loss and the output: the message says what was expected.
    pub fn prepare_targets(self, y: &Tensor, output_shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = y.dims().first().copied().unwrap_or(0);
        let dims = y.dims();
        let mismatch = |expected: String| Error::Shape {
            context: format!("targets `y` for loss {}", self.name()),
            expected,
            received: format!("{dims:?}"),
        };
        match self {
            Loss::SparseCategoricalCrossentropy => {
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
                if let Some((i, v)) =
                    values.iter().enumerate().find(|(_, v)| !(v.fract() == 0.0 && **v >= 0.0 && **v < classes as f64))
                {
                    return Err(Error::invalid(
                        "y",
                        format!("sparse_categorical_crossentropy: expected class indices in [0, {classes}) for an output of {classes} units, received {v} at index {i}"),
                    ));
                }
                Ok(flat.to_dtype(DType::U32)?)
            }
            Loss::CategoricalCrossentropy => {
                if dims.len() != 2 || output_shape != [dims[1]] {
                    return Err(mismatch(format!(
                        "one-hot targets of shape (N, {}) (use to_categorical, or sparse_categorical_crossentropy for class indices)",
                        output_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                    )));
                }
                Ok(y.to_dtype(dtype)?)
            }
            Loss::BinaryCrossentropy | Loss::MeanSquaredError | Loss::MeanAbsoluteError => {
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
        let y_true = match self {
            Loss::SparseCategoricalCrossentropy => {
                let classes = match output {
                    Output::Values(t) | Output::Logits(t, _) => *t.dims().last().unwrap_or(&1),
                };
                let dtype = match output {
                    Output::Values(t) | Output::Logits(t, _) => t.dtype(),
                };
                one_hot(y_true, classes, dtype)?
            }
            _ => y_true.clone(),
        };
        let per_sample = match (self, output) {
            (
                Loss::CategoricalCrossentropy | Loss::SparseCategoricalCrossentropy,
                Output::Logits(z, Activation::Softmax),
            ) => {
                let max = z.max_keepdim(D::Minus1)?.detach();
                let shifted = z.broadcast_sub(&max)?;
                let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
                let log_p = shifted.broadcast_sub(&lse)?;
                (y_true * log_p)?.sum(D::Minus1)?.neg()?
            }
            (Loss::BinaryCrossentropy, Output::Logits(z, Activation::Sigmoid)) => {
                // max(z, 0) - z * y + log(1 + exp(-|z|))
                let l = ((z.relu()? - (z * &y_true)?)? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                l.mean(D::Minus1)?
            }
            (_, out) => {
                let p = out.values()?;
                match self {
                    Loss::CategoricalCrossentropy | Loss::SparseCategoricalCrossentropy => {
                        let p = p.broadcast_div(&p.sum_keepdim(D::Minus1)?)?;
                        let p = p.clamp(EPSILON, 1.0 - EPSILON)?;
                        (y_true * p.log()?)?.sum(D::Minus1)?.neg()?
                    }
                    Loss::BinaryCrossentropy => {
                        let p = p.clamp(EPSILON, 1.0 - EPSILON)?;
                        let one_minus_y = (y_true.ones_like()? - &y_true)?;
                        let one_minus_p = (p.ones_like()? - &p)?;
                        ((&y_true * p.log()?)? + (one_minus_y * one_minus_p.log()?)?)?.neg()?.mean(D::Minus1)?
                    }
                    Loss::MeanSquaredError => (y_true - p)?.sqr()?.mean(D::Minus1)?,
                    Loss::MeanAbsoluteError => (y_true - p)?.abs()?.mean(D::Minus1)?,
                }
            }
        };
        Ok(per_sample.flatten_all()?.mean_all()?)
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
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "categorical_crossentropy" => Loss::CategoricalCrossentropy,
            "sparse_categorical_crossentropy" => Loss::SparseCategoricalCrossentropy,
            "binary_crossentropy" => Loss::BinaryCrossentropy,
            "mean_squared_error" | "mse" => Loss::MeanSquaredError,
            "mean_absolute_error" | "mae" => Loss::MeanAbsoluteError,
            other => {
                return Err(Error::invalid(
                    "loss",
                    format!("expected one of categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy, mean_squared_error, mean_absolute_error; received {other:?}"),
                ))
            }
        })
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
