//! Metrics, as in `keras.metrics`, accumulated over an epoch.

use crate::activations::Activation;
use crate::losses::{Loss, Output};
use crate::{Error, Result};
use candle_core::{DType, Tensor, D};
use std::str::FromStr;

/// A metric to report during training and evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Metric {
    /// Keras' `"accuracy"`: categorical, sparse categorical or binary accuracy, chosen from
    /// the loss and the targets' shape as Keras does.
    Accuracy,
    /// Argmax of the output equals argmax of one-hot targets.
    CategoricalAccuracy,
    /// Argmax of the output equals the class index.
    SparseCategoricalAccuracy,
    /// Output thresholded at 0.5 equals the 0/1 target.
    BinaryAccuracy,
}

impl Metric {
    /// The name in logs and [`crate::models::History`] (`"accuracy"`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::CategoricalAccuracy => "categorical_accuracy",
            Metric::SparseCategoricalAccuracy => "sparse_categorical_accuracy",
            Metric::BinaryAccuracy => "binary_accuracy",
        }
    }

    /// The concrete metric `Accuracy` stands for with `loss` and an output of `units` values.
    pub fn resolve(self, loss: Loss, units: usize) -> Metric {
        match self {
            Metric::Accuracy => match loss {
                Loss::SparseCategoricalCrossentropy => Metric::SparseCategoricalAccuracy,
                Loss::BinaryCrossentropy => Metric::BinaryAccuracy,
                _ if units == 1 => Metric::BinaryAccuracy,
                _ => Metric::CategoricalAccuracy,
            },
            m => m,
        }
    }

    /// The number of correct predictions in a batch (targets prepared by the loss).
    ///
    /// # Errors
    /// If the metric does not fit the targets.
    pub fn correct(self, loss: Loss, y_true: &Tensor, output: &Output) -> Result<f64> {
        let (t, logits_of) = match output {
            Output::Values(t) => (t, None),
            Output::Logits(z, a) => (z, Some(*a)),
        };
        let units = *t.dims().last().unwrap_or(&1);
        let hits = match self.resolve(loss, units) {
            Metric::CategoricalAccuracy => {
                if y_true.rank() != 2 {
                    return Err(Error::invalid(
                        "metrics",
                        "categorical_accuracy needs one-hot targets of shape (N, classes)",
                    ));
                }
                t.argmax(D::Minus1)?.eq(&y_true.argmax(D::Minus1)?)?
            }
            Metric::SparseCategoricalAccuracy => {
                t.argmax(D::Minus1)?.eq(&y_true.to_dtype(DType::U32)?.flatten_all()?)?
            }
            _ => {
                // sigmoid(z) > 0.5 <=> z > 0
                let threshold = if logits_of == Some(Activation::Sigmoid) { 0.0 } else { 0.5 };
                let pred = t.gt(threshold)?;
                let truth = y_true.gt(0.5)?;
                return Ok(pred.eq(&truth)?.to_dtype(DType::F64)?.mean(D::Minus1)?.sum_all()?.to_scalar::<f64>()?);
            }
        };
        Ok(hits.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?)
    }
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "accuracy" | "acc" => Metric::Accuracy,
            "categorical_accuracy" => Metric::CategoricalAccuracy,
            "sparse_categorical_accuracy" => Metric::SparseCategoricalAccuracy,
            "binary_accuracy" => Metric::BinaryAccuracy,
            other => {
                return Err(Error::invalid(
                    "metrics",
                    format!("expected accuracy, categorical_accuracy, sparse_categorical_accuracy or binary_accuracy, received {other:?}"),
                ))
            }
        })
    }
}
