//! The compile state, as Keras' `trainer.compile`: the optimizer, each output's loss and its
//! weight, each output's metrics, and the variables the optimizer's state belongs to.

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::losses::{Loss, Output};
use crate::metrics::{Direction, MetricEntry, StatefulMetric};
use crate::optimizers::Optimizer;
use candle_core::{DType, Tensor, TensorId};

/// The loss of each output, as `compile`'s `loss`: one [`Loss`] for every output, or one per
/// output (an array, slice or `Vec`), optionally weighted ([`Losses::weights`], Keras'
/// `loss_weights`).
#[derive(Debug, Clone, PartialEq)]
pub struct Losses {
    losses: Vec<Loss>,
    weights: Option<Vec<f64>>,
    /// One loss for every output (Keras' `loss=Loss()`), not a list.
    single: bool,
    /// The outputs the losses are for, by name (Keras' dict form), in the losses' order.
    names: Option<Vec<String>>,
}

impl Losses {
    /// One loss per output, in the order of the model's outputs.
    pub fn new(losses: impl Into<Vec<Loss>>) -> Self {
        Losses { losses: losses.into(), weights: None, single: false, names: None }
    }

    /// One loss per output, keyed by the output's name, as Keras' `loss={"out1": ..,
    /// "out2": ..}`: every output must be named once ([`Losses::weights`] then follow the
    /// same order).
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let a = Input::new(3);
    /// let o1 = Dense::new(2).activation(Activation::Softmax).name("label").call(&a)?;
    /// let o2 = Dense::new(1).name("score").call(&a)?;
    /// let model = Model::new(&[a], &[o1, o2])?;
    /// let losses = Losses::by_output([("score", Loss::MeanSquaredError), ("label", Loss::CategoricalCrossentropy)]);
    /// model.compile("sgd", losses.weights([0.5, 1.0]), MetricsByOutput::new([("label", vec!["accuracy"])]))?;
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn by_output<S: Into<String>>(losses: impl IntoIterator<Item = (S, Loss)>) -> Self {
        let (names, losses): (Vec<String>, Vec<Loss>) = losses.into_iter().map(|(n, l)| (n.into(), l)).unzip();
        Losses { names: Some(names), ..Losses::new(losses) }
    }

    /// The losses (and weights) in the order of the model's outputs `outputs`.
    ///
    /// # Errors
    /// Names that are not exactly the outputs' (Keras' "Expected keys ... in loss dict").
    pub(crate) fn ordered_by(self, outputs: &[String]) -> Result<Losses> {
        let Some(names) = &self.names else { return Ok(self) };
        let mut sorted_names = names.clone();
        sorted_names.sort();
        let mut sorted_outputs = outputs.to_vec();
        sorted_outputs.sort();
        if sorted_names != sorted_outputs {
            return Err(Error::invalid(
                "loss",
                format!(
                    "expected the keys {outputs:?} (the model's outputs) in the losses by output, received {names:?}"
                ),
            ));
        }
        let at = |o: &String| names.iter().position(|n| n == o).expect("checked");
        let losses = outputs.iter().map(|o| self.losses[at(o)]).collect();
        let weights = match &self.weights {
            Some(w) if w.len() == names.len() => Some(outputs.iter().map(|o| w[at(o)]).collect()),
            other => other.clone(),
        };
        Ok(Losses { losses, weights, single: false, names: None })
    }
    /// Keras' `loss_weights`: the total loss is the weighted sum of the outputs' losses
    /// (default: all 1).
    pub fn weights(mut self, weights: impl Into<Vec<f64>>) -> Self {
        self.weights = Some(weights.into());
        self
    }
}

impl From<Loss> for Losses {
    fn from(l: Loss) -> Self {
        Losses { single: true, ..Losses::new(vec![l]) }
    }
}
impl<const N: usize> From<[Loss; N]> for Losses {
    fn from(l: [Loss; N]) -> Self {
        Losses::new(l.to_vec())
    }
}
impl From<&[Loss]> for Losses {
    fn from(l: &[Loss]) -> Self {
        Losses::new(l.to_vec())
    }
}
impl From<Vec<Loss>> for Losses {
    fn from(l: Vec<Loss>) -> Self {
        Losses::new(l)
    }
}

/// `compile`'s `loss`: a [`Loss`] or [`Losses`], or Keras' names (`"categorical_crossentropy"`,
/// one, or an array of one per output).
pub trait IntoLosses {
    /// The losses.
    ///
    /// # Errors
    /// An unknown loss name.
    fn into_losses(self) -> Result<Losses>;
}
impl<T: Into<Losses>> IntoLosses for T {
    fn into_losses(self) -> Result<Losses> {
        Ok(self.into())
    }
}
impl IntoLosses for &str {
    fn into_losses(self) -> Result<Losses> {
        Ok(Losses::from(self.parse::<Loss>()?))
    }
}
impl<const N: usize> IntoLosses for [&str; N] {
    fn into_losses(self) -> Result<Losses> {
        Ok(Losses::new(self.iter().map(|s| s.parse()).collect::<Result<Vec<Loss>>>()?))
    }
}

/// The metrics of `compile`: a flat list (`&[Metric::Accuracy]`, `&["accuracy"]`, or a `Vec`
/// of [`MetricEntry`] mixing built-in and user-defined metrics), or one list per output
/// (`vec![vec![...], vec![...]]`); `()` for none (Keras' `metrics=None`). As Keras 3 reads a
/// flat list on a model of several outputs: as long as the outputs, one metric per output;
/// otherwise (kandle's extension, Keras 2's rule) the same list for every output.
pub trait IntoMetrics {
    /// The metrics of each output; one list means the same list for every output.
    fn into_metrics(self) -> Vec<Vec<MetricEntry>>;
    /// Whether the metrics are a flat list (not one list per output).
    fn is_flat(&self) -> bool {
        false
    }
    /// The outputs the lists are for, by name ([`MetricsByOutput`]); `None`: by position.
    fn output_names(&self) -> Option<Vec<String>> {
        None
    }
}

/// Metrics keyed by output name, as Keras' `metrics={"out1": [...], "out2": [...]}`: outputs
/// not named get none.
pub struct MetricsByOutput(Vec<(String, Vec<MetricEntry>)>);

impl MetricsByOutput {
    /// The metrics of each named output.
    pub fn new<S: Into<String>, M: Into<MetricEntry>>(metrics: impl IntoIterator<Item = (S, Vec<M>)>) -> Self {
        MetricsByOutput(
            metrics.into_iter().map(|(n, ms)| (n.into(), ms.into_iter().map(Into::into).collect())).collect(),
        )
    }
}

impl IntoMetrics for MetricsByOutput {
    fn into_metrics(self) -> Vec<Vec<MetricEntry>> {
        self.0.into_iter().map(|(_, ms)| ms).collect()
    }
    fn output_names(&self) -> Option<Vec<String>> {
        Some(self.0.iter().map(|(n, _)| n.clone()).collect())
    }
}
impl IntoMetrics for () {
    fn into_metrics(self) -> Vec<Vec<MetricEntry>> {
        vec![Vec::new()]
    }
}
impl<T: Clone + Into<MetricEntry>> IntoMetrics for &[T] {
    fn into_metrics(self) -> Vec<Vec<MetricEntry>> {
        vec![self.iter().cloned().map(Into::into).collect()]
    }
    fn is_flat(&self) -> bool {
        true
    }
}
impl<T: Clone + Into<MetricEntry>, const N: usize> IntoMetrics for &[T; N] {
    fn into_metrics(self) -> Vec<Vec<MetricEntry>> {
        vec![self.iter().cloned().map(Into::into).collect()]
    }
    fn is_flat(&self) -> bool {
        true
    }
}
impl<T: Into<MetricEntry>> IntoMetrics for Vec<T> {
    fn into_metrics(self) -> Vec<Vec<MetricEntry>> {
        vec![self.into_iter().map(Into::into).collect()]
    }
    fn is_flat(&self) -> bool {
        true
    }
}
impl<T: Into<MetricEntry>> IntoMetrics for Vec<Vec<T>> {
    fn into_metrics(self) -> Vec<Vec<MetricEntry>> {
        self.into_iter().map(|ms| ms.into_iter().map(Into::into).collect()).collect()
    }
}

/// A compiled model's training configuration.
pub(crate) struct Compiled {
    pub optimizer: Box<dyn Optimizer>,
    /// One loss per output.
    pub losses: Vec<Loss>,
    pub loss_weights: Vec<f64>,
    /// The metrics of each output.
    pub metrics: Vec<Vec<Box<dyn StatefulMetric>>>,
    /// The variables the optimizer's state belongs to, once it has some.
    pub trained_vars: Option<Vec<TensorId>>,
}

impl Compiled {
    /// `compile`'s arguments, checked against a model of outputs of `output_shapes`: one loss,
    /// loss weight and metric list per output, or one for all.
    ///
    /// # Errors
    /// A number of losses, loss weights or metric lists that is neither 1 nor the number of
    /// outputs; an invalid loss, clipping or metric.
    pub fn new(
        optimizer: Box<dyn Optimizer>,
        loss: Losses,
        metrics: Vec<Vec<MetricEntry>>,
        output_shapes: &[Vec<usize>],
    ) -> Result<Compiled> {
        optimizer.clipping().validate()?;
        let Losses { losses, weights, single, .. } = loss;
        let n = output_shapes.len();
        // Keras' rules: a list of losses has one per output; a single loss serves every
        // output, and its `loss_weights` must then be one weight too.
        if !single && n > 1 && losses.len() != n {
            return Err(Error::invalid(
                "loss",
                format!("a list of losses needs one per output: expected {n}, received {}", losses.len()),
            ));
        }
        let weights = match (single, weights) {
            (true, Some(w)) if w.len() != 1 => {
                return Err(Error::invalid(
                    "loss_weights",
                    format!("`loss_weights` must match the number of losses, got 1 loss and {} weights", w.len()),
                ))
            }
            (true, Some(w)) => Some(vec![w[0]; n]),
            (_, w) => w,
        };
        let fit = |what: &'static str, len: usize| -> Result<()> {
            if len == 1 || len == n {
                Ok(())
            } else {
                Err(Error::invalid(what, format!("expected 1 or {n} (one per output), received {len}")))
            }
        };
        fit("loss", losses.len())?;
        fit("metrics", metrics.len())?;
        let weights = weights.unwrap_or_else(|| vec![1.0; n]);
        if weights.len() != n {
            return Err(Error::invalid(
                "loss_weights",
                format!("expected {n} (one per output), received {}", weights.len()),
            ));
        }
        let metrics = if metrics.len() == n { metrics } else { vec![metrics[0].clone(); n] };
        let losses = if losses.len() == n { losses } else { vec![losses[0]; n] };
        for l in &losses {
            l.validate()?;
        }
        let metrics = metrics
            .iter()
            .zip(&losses)
            .zip(output_shapes)
            .map(|((ms, loss), shape)| {
                let units = shape.last().copied().unwrap_or(1);
                let sparse = loss.kind() == crate::losses::LossKind::SparseCategoricalCrossentropy;
                let built = ms.iter().map(|m| m.build(sparse, units)).collect::<Result<Vec<_>>>()?;
                // A name given twice is logged with Keras' suffix: accuracy, accuracy_1.
                let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
                Ok(built
                    .into_iter()
                    .map(|m| {
                        let name = m.name();
                        let count = seen.entry(name.clone()).or_insert(0);
                        *count += 1;
                        if *count == 1 {
                            m
                        } else {
                            crate::metrics::suffixed(format!("{name}_{}", *count - 1), m)
                        }
                    })
                    .collect())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Compiled { optimizer, losses, loss_weights: weights, metrics, trained_vars: None })
    }

    /// A replica's compile state: the same losses and weights, no metrics, an optimizer that is
    /// never stepped (the model's own applies the summed gradients).
    pub fn for_replica(&self) -> Compiled {
        Compiled {
            optimizer: Box::new(crate::optimizers::SGD::new(0.0)),
            losses: self.losses.clone(),
            loss_weights: self.loss_weights.clone(),
            metrics: self.losses.iter().map(|_| Vec::new()).collect(),
            trained_vars: None,
        }
    }

    /// The weighted sum of the outputs' losses, with the regularization penalties of `graph`'s
    /// weights, and each output's own loss (for several outputs).
    ///
    /// # Errors
    /// Targets that do not fit a loss.
    pub fn total_loss(
        &self,
        graph: &Graph,
        ys: &[Tensor],
        sw: Option<&Tensor>,
        outs: &[Output],
    ) -> Result<(Tensor, Vec<f64>)> {
        let mut total: Option<Tensor> = None;
        let mut parts = Vec::with_capacity(outs.len());
        for (((y, out), loss), w) in ys.iter().zip(outs).zip(&self.losses).zip(&self.loss_weights) {
            let l = loss.compute_output_weighted(y, out, sw)?;
            if outs.len() > 1 {
                parts.push(l.to_dtype(DType::F64)?.to_scalar::<f64>()?);
            }
            let l = if *w == 1.0 { l } else { (l * *w)? };
            total = Some(match total {
                Some(t) => (t + l)?,
                None => l,
            });
        }
        let mut total = total.ok_or_else(|| Error::invalid("outputs", "the model has no output"))?;
        // Keras 3 adds the regularization losses to the total, in training and evaluation.
        if let Some(p) = graph.penalty()? {
            total = total.broadcast_add(&p.to_dtype(total.dtype())?)?;
        }
        Ok((total, parts))
    }

    /// The direction of the metric logged as `key` (`accuracy`, or `out1_accuracy` for output
    /// `out1` of a model of several outputs named `outputs`).
    pub fn metric_direction(&self, key: &str, outputs: &[String]) -> Option<Direction> {
        let many = outputs.len() > 1;
        self.metrics.iter().zip(outputs).find_map(|(ms, o)| {
            ms.iter()
                .find(|m| if many { key == format!("{o}_{}", m.name()) } else { key == m.name() })
                .and_then(|m| m.direction())
        })
    }
}
