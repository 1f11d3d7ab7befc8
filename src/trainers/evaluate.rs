//! Evaluation and prediction, as Keras' `trainer.evaluate` and `predict`: inference passes over
//! batches, the loss and metrics summed as a [`Tally`] (which the training loop keeps for each
//! epoch too), and the gradients of one batch.

use super::data::{prepare, prepare_batch, prepare_x, sample_weights, BatchGenerator, Data};
use super::{Trainee, TraineeState};
use crate::error::{Error, Result};
use crate::graph::Pass;
use crate::losses::Output;
use crate::metrics::StatefulMetric;
use candle_core::{DType, Tensor};

/// What [`Model::evaluate`](crate::models::Model::evaluate) returns: the loss and each metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The mean loss.
    pub loss: f64,
    /// `(name, value)` of each compiled metric.
    pub metrics: Vec<(String, f64)>,
}

impl Evaluation {
    /// A metric's value by name (`"accuracy"`), or the loss for `"loss"`.
    pub fn get(&self, name: &str) -> Option<f64> {
        if name == "loss" {
            return Some(self.loss);
        }
        self.metrics.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// The accuracy, if it was compiled as a metric.
    pub fn accuracy(&self) -> Option<f64> {
        self.get("accuracy")
    }
}

/// Running sums of the loss and each output's loss over an epoch's batches, and the metrics'
/// running states.
pub(crate) struct Tally {
    names: Vec<String>,
    sums: Vec<f64>,
    metrics: Vec<Vec<Box<dyn StatefulMetric>>>,
    /// The output names (metric keys start with them when there are several).
    outputs: Vec<String>,
    seen: usize,
}

impl Tally {
    /// An empty tally of a compiled model's loss and metrics.
    pub fn new(state: &impl TraineeState) -> Result<Self> {
        let c = state.compiled().ok_or(Error::NotCompiled("fit"))?;
        let outs = state.graph().output_names();
        let mut names = vec!["loss".to_string()];
        if outs.len() > 1 {
            names.extend(outs.iter().map(|o| format!("{o}_loss")));
        }
        let n = names.len();
        let metrics = c
            .metrics
            .iter()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        let mut m = m.clone_box();
                        m.reset_state();
                        m
                    })
                    .collect()
            })
            .collect();
        Ok(Tally { names, sums: vec![0.0; n], metrics, outputs: outs, seen: 0 })
    }

    /// Adds a batch of `n` samples: its total loss, each output's loss and the metrics.
    pub fn add(&mut self, ys: &[Tensor], outs: &[Output], total: f64, parts: &[f64]) -> Result<()> {
        let n = ys[0].dims()[0] as f64;
        self.sums[0] += total * n;
        if parts.len() > 1 {
            for (s, p) in self.sums[1..].iter_mut().zip(parts) {
                *s += p * n;
            }
        }
        for ((y, out), ms) in ys.iter().zip(outs).zip(&mut self.metrics) {
            for m in ms {
                // Keras weighs only `weighted_metrics` by the sample weights, never `metrics`.
                m.update_state_output(y, out, None)?;
            }
        }
        self.seen += n as usize;
        Ok(())
    }

    /// The means and the metrics' results, sorted by name as Keras' logs print them.
    pub fn logs(&self) -> Vec<(String, f64)> {
        let seen = self.seen.max(1) as f64;
        let mut logs: Vec<(String, f64)> = self.names.iter().cloned().zip(self.sums.iter().map(|s| s / seen)).collect();
        let many = self.outputs.len() > 1;
        for (o, ms) in self.outputs.iter().zip(&self.metrics) {
            for m in ms {
                let key = if many { format!("{o}_{}", m.name()) } else { m.name() };
                logs.push((key, m.result()));
            }
        }
        logs.sort_by(|a, b| a.0.cmp(&b.0));
        logs
    }

    /// The tally as `evaluate` returns it.
    pub fn evaluation(&self) -> Evaluation {
        let mut logs = self.logs();
        let loss = logs.iter().position(|(k, _)| k == "loss").map(|i| logs.remove(i).1).unwrap_or(f64::NAN);
        Evaluation { loss, metrics: logs }
    }
}

/// The evaluation pass of a compiled model: inference, the nodes fused into their losses
/// stopping before their activations.
fn evaluation_pass(state: &impl TraineeState) -> Result<Pass> {
    let c = state.compiled().ok_or(Error::NotCompiled("evaluate"))?;
    let pre = state.graph().loss_fused_nodes(&c.losses);
    Ok(Pass::inference(state.graph(), false, Some(pre)))
}

/// The loss and metrics of a batch (inference behaviour), added to `tally`.
fn evaluate_batch(state: &impl TraineeState, pass: &Pass, d: &Data, tally: &mut Tally) -> Result<()> {
    let outs = state.graph().infer(&d.xs, pass)?;
    let c = state.compiled().ok_or(Error::NotCompiled("evaluate"))?;
    let (l, parts) = c.total_loss(state.graph(), &d.ys, d.sw.as_ref(), &outs)?;
    let l = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    tally.add(&d.ys, &outs, l, &parts)
}

/// The loss and metrics on prepared data, in batches of `batch_size`.
pub(crate) fn evaluate_data(state: &impl TraineeState, data: &Data, batch_size: usize) -> Result<Evaluation> {
    if batch_size == 0 {
        return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
    }
    let pass = evaluation_pass(state)?;
    let mut tally = Tally::new(state)?;
    let n = data.len();
    for start in (0..n).step_by(batch_size) {
        evaluate_batch(state, &pass, &data.narrow(start, batch_size.min(n - start))?, &mut tally)?;
    }
    Ok(tally.evaluation())
}

/// The loss and metrics on `steps` batches of a generator (its epoch 0).
pub(crate) fn evaluate_batches(
    state: &mut impl TraineeState,
    g: &dyn BatchGenerator,
    steps: usize,
) -> Result<Evaluation> {
    let pass = evaluation_pass(state)?;
    let mut tally = Tally::new(state)?;
    for i in 0..steps {
        let d = prepare_batch(state, g.batch_data(0, i % g.len().max(1))?)?;
        evaluate_batch(state, &pass, &d, &mut tally)?;
    }
    Ok(tally.evaluation())
}

/// `Model::evaluate` and `evaluate_weighted`.
pub(crate) fn evaluate<M: Trainee>(
    model: &M,
    x: &[Tensor],
    y: &[Tensor],
    sample_weight: Option<&Tensor>,
    batch_size: usize,
) -> Result<Evaluation> {
    crate::kernels::tune_allocator();
    let mut state = model.state();
    if state.compiled().is_none() {
        return Err(Error::NotCompiled("evaluate"));
    }
    if batch_size == 0 {
        return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
    }
    let mut data = prepare(&mut *state, x, y, "x", "y")?;
    data.sw = sample_weights(&*state, &data, sample_weight, None)?;
    evaluate_data(&*state, &data, batch_size)
}

/// `Model::evaluate_generator`.
pub(crate) fn evaluate_generator<M: Trainee>(
    model: &M,
    generator: &dyn BatchGenerator,
    steps: Option<usize>,
) -> Result<Evaluation> {
    crate::kernels::tune_allocator();
    let mut state = model.state();
    if state.compiled().is_none() {
        return Err(Error::NotCompiled("evaluate_generator"));
    }
    state.build()?;
    generator.validate()?;
    let steps = steps.unwrap_or_else(|| generator.len());
    if steps == 0 {
        return Err(Error::invalid("steps", "expected a positive number of batches, received 0"));
    }
    evaluate_batches(&mut *state, generator, steps)
}

/// `Model::predict_outputs`: every output for `x`, in batches of `batch_size`.
pub(crate) fn predict<M: Trainee>(model: &M, x: &[Tensor], batch_size: usize) -> Result<Vec<Tensor>> {
    crate::kernels::tune_allocator();
    let mut state = model.state();
    state.build()?;
    if batch_size == 0 {
        return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
    }
    let xs = prepare_x(&*state, x, "x")?;
    let n = xs[0].dims()[0];
    let graph = state.graph();
    let pass = Pass::inference(graph, false, None);
    let mut parts: Vec<Vec<Tensor>> = vec![Vec::new(); graph.plan().outputs.len()];
    for start in (0..n).step_by(batch_size) {
        let len = batch_size.min(n - start);
        let xb: Vec<Tensor> = xs.iter().map(|x| x.narrow(0, start, len)).collect::<candle_core::Result<_>>()?;
        for (p, o) in parts.iter_mut().zip(graph.infer(&xb, &pass)?) {
            p.push(o.values()?.detach());
        }
    }
    parts.iter().map(|p| Tensor::cat(p, 0).map_err(Error::from)).collect()
}

/// `Model::call_outputs`: every output for one batch, as Keras' `model(x, training=...)`.
pub(crate) fn call<M: Trainee>(model: &M, x: &[Tensor], training: bool) -> Result<Vec<Tensor>> {
    let mut state = model.state();
    state.build()?;
    let xs = prepare_x(&*state, x, "x")?;
    let pass = Pass::inference(state.graph(), training, None);
    state.graph().infer(&xs, &pass)?.iter().map(|o| o.values()).collect()
}

/// `Model::compute_gradients`: the gradients of the compiled loss on one batch for each
/// trainable weight, by the pass `fit` uses (training behaviour), named as the weights are.
pub(crate) fn gradients<M: Trainee>(
    model: &M,
    x: &[Tensor],
    y: &[Tensor],
    row_offset: usize,
) -> Result<Vec<(String, Tensor)>> {
    let mut state = model.state();
    if state.compiled().is_none() {
        return Err(Error::NotCompiled("compute_gradients"));
    }
    let d = prepare(&mut *state, x, y, "x", "y")?;
    let state = &*state;
    let c = state.compiled().ok_or(Error::NotCompiled("compute_gradients"))?;
    let graph = state.graph();
    let pass = Pass::for_losses(graph, &c.losses, state.autograd()).at_row(row_offset);
    let step = graph.train_forward(&d.xs, &pass)?;
    let (l, _) = c.total_loss(graph, &d.ys, d.sw.as_ref(), &step.outputs)?;
    let grads = graph.train_backward(&l, &step, &pass)?;
    let mut by_id: std::collections::HashMap<_, _> = pass
        .vars
        .iter()
        .zip(grads)
        .map(|(v, g)| {
            let g = match g {
                Some(g) => g,
                None => v.as_tensor().zeros_like()?,
            };
            Ok((v.as_tensor().id(), g))
        })
        .collect::<Result<_>>()?;
    // In the order of `named_weights` (Keras' order of the layers), trainable weights only.
    Ok(graph
        .named_weights_keras()
        .into_iter()
        .filter_map(|(n, v)| by_id.remove(&v.as_tensor().id()).map(|g| (n, g)))
        .collect())
}
