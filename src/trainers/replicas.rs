//! The training step of a [`MirroredStrategy`]: the batch split across replicas of the model,
//! one thread per replica, the loss and the gradients summed by the strategy's [`AllReduce`],
//! one optimizer step on the model itself (replica 0), whose weights the other replicas copy
//! before the next step.
//!
//! Each replica's loss is the mean over its shard; weighted by its share of the batch
//! (`n_r / B`) and summed, losses and gradients are the whole batch's (sample weights and
//! regularization penalties included). Dropout masks are the whole batch's rows
//! ([`crate::distribute::with_row_offset`]). `BatchNormalization` sees its shard only; its
//! moving statistics become replica 0's after each step, as in Keras on TensorFlow.

use super::walk::TrainInfo;
use super::Data;
use crate::distribute::{with_row_offset, AllReduce, MirroredStrategy};
use crate::error::{Error, Result};
use crate::losses::Output;
use crate::models::core::{Compiled, Inner};
use crate::models::Model;
use candle_core::{DType, Tensor, Var};
use std::sync::Arc;

/// The other replicas of a model in a distributed `fit` (the model itself is replica 0).
pub(crate) struct Replicas {
    models: Vec<Model>,
    infos: Vec<TrainInfo>,
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
fn stat_vars(inner: &Inner) -> Vec<Var> {
    inner
        .layers
        .iter()
        .flat_map(|l| {
            let cell = l.lock();
            if cell.trainable {
                cell.layer.weights().into_iter().filter(|w| !w.trainable).map(|w| w.var).collect()
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// Copies the model's weights and layer counters (dropout's) into a replica.
fn sync(main: &Inner, replica: &Inner) -> Result<()> {
    for (a, b) in main.layers.iter().zip(&replica.layers) {
        let a = a.lock();
        let mut b = b.lock();
        b.layer.set_state(&a.layer.state());
        for (wa, wb) in a.layer.weights().iter().zip(b.layer.weights()) {
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

impl Replicas {
    /// The replicas of `main` on the strategy's other devices, or `None` with one device.
    pub fn new(main: &mut Inner, strategy: &MirroredStrategy) -> Result<Option<Self>> {
        let devices = strategy.devices();
        if !main.device.same_device(&devices[0]) {
            return Err(Error::invalid(
                "distribute",
                format!(
                    "the model lives on {:?} and MirroredStrategy's first device is {:?}: build the model with \
                     .device(..) on the strategy's first device",
                    main.device.location(),
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
            let vars: Vec<Var> = main.named_weight_vars()?.into_iter().map(|(_, v)| v).collect();
            let mine = vars
                .iter()
                .map(|v| Ok(if first == 0 { v.as_tensor().copy()? } else { v.as_tensor().zeros_like()? }))
                .collect::<Result<Vec<_>>>()?;
            // The layers' counters too (dropout's seeds), as u32 halves in exact f64 values.
            let states: Vec<Vec<u64>> = main.layers.iter().map(|l| l.lock().layer.state()).collect();
            let halves: Vec<f64> = states
                .iter()
                .flatten()
                .flat_map(|&v| if first == 0 { [(v >> 32) as f64, (v & 0xFFFF_FFFF) as f64] } else { [0.0, 0.0] })
                .collect();
            let count = halves.len();
            let mut mine = mine;
            mine.push(Tensor::from_vec(halves, count, &main.device)?);
            let mut got = reduce.all_reduce_sum(first, mine)?;
            let halves = got.pop().expect("the counters").to_vec1::<f64>()?;
            for (v, t) in vars.iter().zip(got) {
                v.set(&t)?;
            }
            let mut it = halves.chunks(2).map(|h| ((h[0] as u64) << 32) | h[1] as u64);
            for (l, st) in main.layers.iter().zip(&states) {
                let values: Vec<u64> = it.by_ref().take(st.len()).collect();
                l.lock().layer.set_state(&values);
            }
        }
        let arch: serde_json::Value = serde_json::from_str(&main.architecture())
            .map_err(|e| Error::invalid("distribute", format!("the model's architecture: {e}")))?;
        let c = main.compiled.as_ref().ok_or(Error::NotCompiled("fit"))?;
        let losses = c.losses.clone();
        let main_vars = main.train_info(&losses).vars.len();
        let mut models = Vec::with_capacity(devices.len() - 1);
        let mut infos = Vec::with_capacity(devices.len() - 1);
        for (r, device) in devices.iter().enumerate().skip(1) {
            let model = crate::models::saving::model_from_architecture(&arch, usize::MAX, strategy.custom())
                .map_err(|e| Error::invalid("distribute", format!("replica {r} cannot be built: {e}")))?;
            let info = {
                let mut inner = model.lock();
                inner.device = device.clone();
                inner.dtype = main.dtype;
                inner.seed = main.seed;
                inner.seed_set = true;
                inner.autograd = main.autograd;
                inner.build()?;
                inner.compiled = Some(Compiled {
                    optimizer: Box::new(crate::optimizers::SGD::new(0.0)),
                    losses: losses.clone(),
                    loss_weights: c.loss_weights.clone(),
                    metrics: losses.iter().map(|_| Vec::new()).collect(),
                    trained_vars: None,
                });
                inner.train_info(&losses)
            };
            if info.vars.len() != main_vars {
                return Err(Error::invalid(
                    "distribute",
                    format!("replica {r} has {} trainable weights, the model {main_vars}", info.vars.len()),
                ));
            }
            models.push(model);
            infos.push(info);
        }
        Ok(Some(Replicas { models, infos, reduce, n, first }))
    }

    /// One step on the batch `d` (on the model's device): forward and backward passes of every
    /// replica on its shard, in parallel, and the reductions. The caller applies the gradients.
    pub fn step(&self, main: &mut Inner, info: &TrainInfo, d: &Data) -> Result<StepResult> {
        let (n, b, first) = (self.n, d.len(), self.first);
        let sizes: Vec<usize> = (0..n).map(|r| b / n + usize::from(r < b % n)).collect();
        let offsets: Vec<usize> = sizes.iter().scan(0, |acc, &s| Some(std::mem::replace(acc, *acc + s))).collect();
        for m in &self.models {
            sync(main, &m.lock())?;
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
                    let dev = self.models[i - 1].lock().device.clone();
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
                    let (model, info, offset, share) = (&self.models[i], &self.infos[i], offsets[r], share(r));
                    s.spawn(move || {
                        let mut guard = AbortOnDrop(reduce, true);
                        let out = replica_pass(&mut model.lock(), info, data, offset, share, r, reduce);
                        guard.1 = out.is_err();
                        out
                    })
                })
                .collect();
            let mut guard = AbortOnDrop(reduce, true);
            let out = replica_pass(main, info, own, offsets[first], share(first), first, reduce);
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
        let dev = main.device.clone();
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
    pub fn set_stats(main: &Inner, stats: &[Tensor]) -> Result<()> {
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
    inner: &mut Inner,
    info: &TrainInfo,
    data: Option<Data>,
    offset: usize,
    share: f64,
    replica: usize,
    reduce: &dyn AllReduce,
) -> Result<ReplicaOut> {
    let device = inner.device.clone();
    let pass = match &data {
        Some(d) => {
            let st = with_row_offset(offset, || inner.forward_train(&d.xs, info))?;
            let (l, parts) = inner.total_loss(&d.ys, d.sw.as_ref(), &st.outputs)?;
            let lv = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            Some((st, l, parts, lv))
        }
        None => None,
    };
    let contribution = pass.as_ref().map_or(0.0, |p| p.3 * share);
    let total = reduce.all_reduce_sum(replica, vec![Tensor::new(&[contribution], &device)?])?[0]
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?[0];
    let (pass, shard) = match (pass, data) {
        (Some((st, l, parts, lv)), Some(d)) => {
            let outputs = st.outputs.clone();
            (Some((st, l)), Some(Shard { ys: d.ys, outputs, loss: lv, parts }))
        }
        _ => (None, None),
    };
    if !total.is_finite() {
        return Ok(ReplicaOut { total, grads: None, stats: Vec::new(), shard });
    }
    let grads: Vec<Tensor> = match pass {
        // The backward pass redraws dropout's masks: at the same rows.
        Some((st, l)) => with_row_offset(offset, || inner.backward_train(&l, &st, info))?
            .into_iter()
            .zip(&info.vars)
            .map(|(g, v)| match g {
                Some(g) => Ok((g * share)?),
                None => Ok(v.as_tensor().zeros_like()?),
            })
            .collect::<Result<_>>()?,
        None => info.vars.iter().map(|v| Ok(v.as_tensor().zeros_like()?)).collect::<Result<_>>()?,
    };
    let count = grads.len();
    // The moving statistics become replica 0's, as Keras 3 leaves them under TensorFlow's
    // MirroredStrategy (tests/golden/make_mirrored_goldens.py): a sum in which the others
    // give zeros, so that every worker of a multi-worker run gets them too.
    let stats = stat_vars(inner)
        .into_iter()
        .map(|v| Ok(if replica == 0 { v.as_tensor().copy()? } else { v.as_tensor().zeros_like()? }));
    let mut summed = reduce.all_reduce_sum(replica, grads.into_iter().map(Ok).chain(stats).collect::<Result<_>>()?)?;
    let stats = summed.split_off(count);
    Ok(ReplicaOut { total, grads: Some(summed), stats, shard })
}
