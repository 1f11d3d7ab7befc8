//! The training step of a [`MirroredStrategy`]: the batch split across replicas of the model,
//! one thread per replica, the loss and the gradients summed by the strategy's [`AllReduce`],
//! one optimizer step on the model itself (replica 0), whose weights the other replicas copy
//! before the next step.
//!
//! Each replica's loss is the mean over its shard; weighted by its share of the batch
//! (`n_r / B`) and summed, losses and gradients are the whole batch's (sample weights and
//! regularization penalties included). Dropout masks are the whole batch's rows (each replica's
//! pass has its shard's row offset, [`crate::layers::CallContext::row_offset`]).
//! `BatchNormalization` sees its shard only; its moving statistics become replica 0's after each
//! step, as in Keras on TensorFlow.

use super::data::Data;
use super::{Trainee, TraineeState};
use crate::distribute::{AllReduce, MirroredStrategy};
use crate::error::{Error, Result};
use crate::graph::Pass;
use crate::losses::Output;
use candle_core::{DType, Tensor, Var};
use std::sync::Arc;

/// The other replicas of a model in a distributed `fit` (the model itself is replica 0).
pub(crate) struct Replicas<M: Trainee> {
    models: Vec<M>,
    passes: Vec<Pass>,
    reduce: Arc<dyn AllReduce>,
    /// Replicas over all workers.
    n: usize,
    /// The global number of the model's replica (the others of this process follow it).
    first: usize,
}

/// One shard's share of a step, as the epoch's running means need it.
pub(crate) struct Shard {
    pub ys: Vec<Tensor>,
    pub outputs: Vec<Output>,
    pub loss: f64,
    pub parts: Vec<f64>,
}

/// What a distributed step leaves to the training loop.
pub(crate) struct StepResult {
    /// The whole batch's loss (the replicas' losses weighted by their shares).
    pub loss: f64,
    /// The summed gradients, on the model's device (`None` when the loss is not finite).
    pub grads: Option<Vec<Option<Tensor>>>,
    /// Replica 0's value of each statistic (`stat_vars`), for the model.
    pub stats: Vec<Tensor>,
    /// Each replica's shard, on the model's device.
    pub shards: Vec<Shard>,
}

/// The weights a training forward pass changes (BatchNormalization's moving statistics): the
/// non-trainable weights of trainable layers. A frozen layer's weights stay as they are.
fn stat_vars(state: &impl TraineeState) -> Vec<Var> {
    state
        .graph()
        .layers()
        .iter()
        .flat_map(|l| {
            let cell = l.lock();
            if cell.trainable {
                cell.all_weights().into_iter().filter(|w| !w.trainable).map(|w| w.var).collect()
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// Copies the model's weights and layer counters (dropout's) into a replica.
fn sync(main: &impl TraineeState, replica: &impl TraineeState) -> Result<()> {
    for (a, b) in main.graph().layers().iter().zip(replica.graph().layers()) {
        let a = a.lock();
        let mut b = b.lock();
        b.layer.set_state(&a.layer.state());
        for (wa, wb) in a.all_weights().iter().zip(b.all_weights()) {
            wb.var.set(&wa.var.as_tensor().to_device(wb.var.device())?)?;
        }
    }
    Ok(())
}

/// Calls `abort` on the reduction unless disarmed: a replica that fails or panics must not
/// leave the others waiting in a reduction for ever.
struct AbortOnDrop<'a>(&'a dyn AllReduce, bool);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.abort("a replica's step failed");
        }
    }
}

impl<M: Trainee> Replicas<M> {
    /// The replicas of `model` on the strategy's other devices, or `None` with one device.
    pub fn new(model: &M, strategy: &MirroredStrategy) -> Result<Option<Self>> {
        let devices = strategy.devices();
        let mut guard = model.state();
        let main = &mut *guard;
        if !main.device().same_device(&devices[0]) {
            return Err(Error::invalid(
                "distribute",
                format!(
                    "the model lives on {:?} and MirroredStrategy's first device is {:?}: build the model with \
                     .device(..) on the strategy's first device",
                    main.device().location(),
                    devices[0].location()
                ),
            ));
        }
        let (n, first) = (strategy.num_replicas_in_sync(), strategy.first_replica());
        if n == 1 {
            return Ok(None);
        }
        main.build()?;
        let reduce = strategy.reduction();
        if strategy.is_multi_worker() {
            // Several workers: all start from worker 0's weights (a sum where the others give
            // zeros), as TensorFlow's workers take the chief's initial values.
            let vars: Vec<Var> = main.graph().named_weights().into_iter().map(|(_, v)| v).collect();
            let mine = vars
                .iter()
                .map(|v| Ok(if first == 0 { v.as_tensor().copy()? } else { v.as_tensor().zeros_like()? }))
                .collect::<Result<Vec<_>>>()?;
            // The layers' counters too (dropout's seeds), as u32 halves in exact f64 values.
            let states: Vec<Vec<u64>> = main.graph().layers().iter().map(|l| l.lock().layer.state()).collect();
            let halves: Vec<f64> = states
                .iter()
                .flatten()
                .flat_map(|&v| if first == 0 { [(v >> 32) as f64, (v & 0xFFFF_FFFF) as f64] } else { [0.0, 0.0] })
                .collect();
            let count = halves.len();
            let mut mine = mine;
            mine.push(Tensor::from_vec(halves, count, main.device())?);
            let mut got = sum_checked(&*reduce, first, mine)?;
            let halves =
                got.pop().ok_or_else(|| Error::invalid("all_reduce", "no tensor returned"))?.to_vec1::<f64>()?;
            for (v, t) in vars.iter().zip(got) {
                v.set(&t)?;
            }
            let mut it = halves.chunks(2).map(|h| ((h[0] as u64) << 32) | h[1] as u64);
            for (l, st) in main.graph().layers().iter().zip(&states) {
                let values: Vec<u64> = it.by_ref().take(st.len()).collect();
                l.lock().layer.set_state(&values);
            }
        }
        let c = main.compiled().ok_or(Error::NotCompiled("fit"))?;
        let (replica_compiled, losses) = (c.for_replica(), c.losses.clone());
        let autograd = main.autograd();
        let main_vars = Pass::for_losses(main.graph(), &losses, autograd).vars.len();
        drop(guard);
        let mut models = Vec::with_capacity(devices.len() - 1);
        let mut passes = Vec::with_capacity(devices.len() - 1);
        for (r, device) in devices.iter().enumerate().skip(1) {
            let replica = model
                .replica(device, strategy.custom())
                .map_err(|e| Error::invalid("distribute", format!("replica {r} cannot be built: {e}")))?;
            let pass = {
                let mut state = replica.state();
                state.set_compiled(replica_compiled.for_replica());
                Pass::for_losses(state.graph(), &losses, autograd)
            };
            if pass.vars.len() != main_vars {
                return Err(Error::invalid(
                    "distribute",
                    format!("replica {r} has {} trainable weights, the model {main_vars}", pass.vars.len()),
                ));
            }
            models.push(replica);
            passes.push(pass);
        }
        Ok(Some(Replicas { models, passes, reduce, n, first }))
    }

    /// One step on the batch `d` (on the model's device): forward and backward passes of every
    /// replica on its shard, in parallel, and the reductions. The caller applies the gradients.
    pub fn step(&self, main: &mut M::State, pass: &Pass, d: &Data) -> Result<StepResult> {
        let (n, b, first) = (self.n, d.len(), self.first);
        let sizes: Vec<usize> = (0..n).map(|r| b / n + usize::from(r < b % n)).collect();
        let offsets: Vec<usize> = sizes.iter().scan(0, |acc, &s| Some(std::mem::replace(acc, *acc + s))).collect();
        for m in &self.models {
            sync(main, &*m.state())?;
        }
        // This process's replicas: the model (global number `first`), then the copies.
        let local = 1 + self.models.len();
        let mut shards: Vec<Option<Data>> = Vec::with_capacity(local);
        for (i, r) in (first..first + local).enumerate() {
            shards.push(if sizes[r] == 0 {
                None
            } else {
                let s = d.narrow(offsets[r], sizes[r])?;
                if i == 0 {
                    Some(s)
                } else {
                    let dev = self.models[i - 1].state().device().clone();
                    let mv = |v: &[Tensor]| v.iter().map(|t| Ok(t.to_device(&dev)?)).collect::<Result<Vec<_>>>();
                    Some(Data { xs: mv(&s.xs)?, ys: mv(&s.ys)?, sw: s.sw.map(|w| w.to_device(&dev)).transpose()? })
                }
            });
        }
        let share = |r: usize| sizes[r] as f64 / b as f64;
        let reduce = self.reduce.as_ref();
        let mut shards = shards.into_iter();
        let own = shards.next().flatten();
        let results: Vec<Result<ReplicaOut>> = std::thread::scope(|s| {
            let handles: Vec<_> = shards
                .enumerate()
                .map(|(i, data)| {
                    let r = first + i + 1;
                    let (model, pass, offset, share) = (&self.models[i], &self.passes[i], offsets[r], share(r));
                    s.spawn(move || {
                        let mut guard = AbortOnDrop(reduce, true);
                        let out = replica_pass(&mut *model.state(), pass, data, offset, share, r, reduce);
                        guard.1 = out.is_err();
                        out
                    })
                })
                .collect();
            let mut guard = AbortOnDrop(reduce, true);
            let out = replica_pass(main, pass, own, offsets[first], share(first), first, reduce);
            guard.1 = out.is_err();
            drop(guard);
            let mut all = vec![out];
            all.extend(handles.into_iter().map(|h| {
                h.join().unwrap_or_else(|_| Err(Error::invalid("distribute", "a replica's thread panicked")))
            }));
            all
        });
        // The first error of a replica that failed itself, not one that only saw another give up.
        let mut outs = Vec::with_capacity(local);
        let mut failure: Option<Error> = None;
        for res in results {
            match res {
                Ok(o) => outs.push(o),
                Err(e) => {
                    let secondary = e.to_string().contains("another replica gave up");
                    if failure.is_none()
                        || (!secondary
                            && failure.as_ref().is_some_and(|f| f.to_string().contains("another replica gave up")))
                    {
                        failure = Some(e);
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let dev = main.device().clone();
        let mut outs = outs.into_iter();
        let head = outs.next().expect("replica 0's result");
        let mut shards = Vec::with_capacity(local);
        for o in std::iter::once(head.shard).chain(outs.map(|o| o.shard)).flatten() {
            let ys = o.ys.iter().map(|t| Ok(t.to_device(&dev)?)).collect::<Result<Vec<_>>>()?;
            let outputs = o
                .outputs
                .iter()
                .map(|out| {
                    Ok(match out {
                        Output::Values(t) => Output::Values(t.detach().to_device(&dev)?),
                        Output::Logits(t, a) => Output::Logits(t.detach().to_device(&dev)?, *a),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            shards.push(Shard { ys, outputs, loss: o.loss, parts: o.parts });
        }
        Ok(StepResult {
            loss: head.total,
            grads: head.grads.map(|g| g.into_iter().map(Some).collect()),
            stats: head.stats,
            shards,
        })
    }

    /// Writes replica 0's statistics into the model.
    pub fn set_stats(main: &M::State, stats: &[Tensor]) -> Result<()> {
        for (v, t) in stat_vars(main).iter().zip(stats) {
            v.set(&t.to_dtype(v.dtype())?)?;
        }
        Ok(())
    }
}

/// What a replica's pass gives back.
struct ReplicaOut {
    total: f64,
    grads: Option<Vec<Tensor>>,
    stats: Vec<Tensor>,
    shard: Option<Shard>,
}

/// One replica's forward and backward passes on its shard (`None`: no sample reached it),
/// and its part in the two reductions (the loss, then the gradients and statistics).
fn replica_pass(
    state: &mut impl TraineeState,
    pass: &Pass,
    data: Option<Data>,
    offset: usize,
    share: f64,
    replica: usize,
    reduce: &dyn AllReduce,
) -> Result<ReplicaOut> {
    let device = state.device().clone();
    let pass = pass.clone().at_row(offset);
    let (graph, c) = (state.graph(), state.compiled().ok_or(Error::NotCompiled("fit"))?);
    let result = match &data {
        Some(d) => {
            let st = graph.train_forward(&d.xs, &pass)?;
            let (l, parts) = c.total_loss(graph, &d.ys, d.sw.as_ref(), &st.outputs)?;
            let lv = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            Some((st, l, parts, lv))
        }
        None => None,
    };
    let contribution = result.as_ref().map_or(0.0, |p| p.3 * share);
    let total = sum_checked(reduce, replica, vec![Tensor::new(&[contribution], &device)?])?[0]
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?[0];
    let (result, shard) = match (result, data) {
        (Some((st, l, parts, lv)), Some(d)) => {
            let outputs = st.outputs.clone();
            (Some((st, l)), Some(Shard { ys: d.ys, outputs, loss: lv, parts }))
        }
        _ => (None, None),
    };
    if !total.is_finite() {
        return Ok(ReplicaOut { total, grads: None, stats: Vec::new(), shard });
    }
    let grads: Vec<Tensor> = match result {
        // Dropout's backward pass masks the gradient's rows where its forward pass did.
        Some((st, l)) => graph
            .train_backward(&l, &st, &pass)?
            .into_iter()
            .zip(&pass.vars)
            .map(|(g, v)| match g {
                Some(g) => Ok((g * share)?),
                None => Ok(v.as_tensor().zeros_like()?),
            })
            .collect::<Result<_>>()?,
        None => pass.vars.iter().map(|v| Ok(v.as_tensor().zeros_like()?)).collect::<Result<_>>()?,
    };
    let count = grads.len();
    // The moving statistics become replica 0's, as Keras 3 leaves them under TensorFlow's
    // MirroredStrategy (tests/golden/make_mirrored_goldens.py): a sum in which the others
    // give zeros, so that every worker of a multi-worker run gets them too.
    let stats = stat_vars(state)
        .into_iter()
        .map(|v| Ok(if replica == 0 { v.as_tensor().copy()? } else { v.as_tensor().zeros_like()? }));
    let mut summed = sum_checked(reduce, replica, grads.into_iter().map(Ok).chain(stats).collect::<Result<_>>()?)?;
    let stats = summed.split_off(count);
    Ok(ReplicaOut { total, grads: Some(summed), stats, shard })
}

/// [`AllReduce::all_reduce_sum`], checked: a user's implementation that returns another number
/// of tensors, or tensors of other shapes, than it was given is an error, not a panic.
fn sum_checked(reduce: &dyn AllReduce, replica: usize, tensors: Vec<Tensor>) -> Result<Vec<Tensor>> {
    let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.dims().to_vec()).collect();
    let got = reduce.all_reduce_sum(replica, tensors)?;
    let got_shapes: Vec<Vec<usize>> = got.iter().map(|t| t.dims().to_vec()).collect();
    if got_shapes != shapes {
        return Err(Error::invalid(
            "all_reduce",
            format!(
                "AllReduce::all_reduce_sum must return one sum per tensor, of its shape: given {} tensors, received {} ({})",
                shapes.len(),
                got.len(),
                if got.len() == shapes.len() { "of other shapes" } else { "another count" }
            ),
        ));
    }
    Ok(got)
}
