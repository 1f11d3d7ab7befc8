//! The training loop (one for `fit` and `fit_generator`, Keras' one loop fed by an iterator of
//! batches) and evaluation.

use super::{ArrayBatches, Data, Evaluation, FitOptions, GeneratorOptions, TrainingContext, ValidationFreq};
use crate::callbacks::Progbar;
use crate::callbacks::{Callback, Control, Logs};
use crate::error::{Error, Result};
use crate::losses::Output;
use crate::metrics::StatefulMetric;
use crate::models::core::Inner;
use crate::models::{History, Model};
use crate::preprocessing::image::BatchGenerator;
use candle_core::{DType, Tensor};
use std::sync::Arc;

pub(crate) enum Validation {
    Data(Data, usize),
    Generator(Arc<dyn BatchGenerator>, usize),
}

pub(crate) struct LoopConfig {
    pub epochs: usize,
    pub initial_epoch: usize,
    pub steps_per_epoch: usize,
    pub verbose: u8,
    pub validation: Option<Validation>,
    pub validation_freq: super::ValidationFreq,
    pub callbacks: Vec<Box<dyn Callback>>,
    pub strategy: Option<crate::distribute::MirroredStrategy>,
}

/// Running sums of the loss and each output's loss over the batches of an epoch, and the
/// metrics' running states.
struct Tally {
    names: Vec<String>,
    sums: Vec<f64>,
    metrics: Vec<Vec<Box<dyn StatefulMetric>>>,
    /// The output names (metric keys start with them when there are several).
    outputs: Vec<String>,
    seen: usize,
}

impl Tally {
    fn new(inner: &Inner) -> Self {
        let c = inner.compiled.as_ref().expect("compiled");
        let outs = inner.output_names();
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
        Tally { names, sums: vec![0.0; n], metrics, outputs: outs, seen: 0 }
    }

    /// Adds a batch of `n` samples: its total loss, each output's loss and the metrics.
    fn add(&mut self, ys: &[Tensor], outs: &[Output], total: f64, parts: &[f64]) -> Result<()> {
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
    fn logs(&self) -> Vec<(String, f64)> {
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
}

/// What a training forward pass changes besides its result: each layer's counters (dropout)
/// and its non-trainable weights (BatchNormalization's moving statistics).
struct ForwardState(Vec<LayerState>);

/// One layer's counters, and copies of its non-trainable weights.
type LayerState = (Vec<u64>, Vec<(candle_core::Var, Tensor)>);

impl Inner {
    fn forward_state(&self) -> Result<ForwardState> {
        self.layers
            .iter()
            .map(|l| {
                let cell = l.lock();
                let stats = cell
                    .layer
                    .weights()
                    .into_iter()
                    .filter(|w| !w.trainable)
                    .map(|w| Ok((w.var.clone(), w.var.as_tensor().copy()?)))
                    .collect::<Result<_>>()?;
                Ok((cell.layer.state(), stats))
            })
            .collect::<Result<_>>()
            .map(ForwardState)
    }

    fn restore_forward_state(&self, state: ForwardState) -> Result<()> {
        for (l, (counters, stats)) in self.layers.iter().zip(state.0) {
            l.lock().layer.set_state(&counters);
            for (var, value) in stats {
                var.set(&value)?;
            }
        }
        Ok(())
    }

    /// The weighted sum of the outputs' losses, and each output's loss.
    pub(super) fn total_loss(&self, ys: &[Tensor], sw: Option<&Tensor>, outs: &[Output]) -> Result<(Tensor, Vec<f64>)> {
        let c = self.compiled.as_ref().expect("compiled");
        let mut total: Option<Tensor> = None;
        let mut parts = Vec::with_capacity(outs.len());
        for (((y, out), loss), w) in ys.iter().zip(outs).zip(&c.losses).zip(&c.loss_weights) {
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
        if let Some(p) = self.penalty()? {
            total = total.broadcast_add(&p.to_dtype(total.dtype())?)?;
        }
        Ok((total, parts))
    }

    /// The loss and metrics of a batch (inference behaviour), added to `tally`.
    fn evaluate_batch(&self, d: &Data, pre: &[bool], tally: &mut Tally) -> Result<()> {
        let outs = self.run(&d.xs, false, Some(pre))?;
        let (l, parts) = self.total_loss(&d.ys, d.sw.as_ref(), &outs)?;
        let l = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        tally.add(&d.ys, &outs, l, &parts)
    }

    fn evaluation(tally: &Tally) -> Evaluation {
        let mut logs = tally.logs();
        let loss = logs.iter().position(|(k, _)| k == "loss").map(|i| logs.remove(i).1).unwrap_or(f64::NAN);
        Evaluation { loss, metrics: logs }
    }

    pub(crate) fn evaluate_data(&self, data: &Data, batch_size: usize) -> Result<Evaluation> {
        let pre = self.fused_nodes(&self.compiled.as_ref().expect("compiled").losses);
        let mut tally = Tally::new(self);
        let n = data.len();
        for start in (0..n).step_by(batch_size) {
            self.evaluate_batch(&data.narrow(start, batch_size.min(n - start))?, &pre, &mut tally)?;
        }
        Ok(Self::evaluation(&tally))
    }

    pub(crate) fn evaluate_generator(&mut self, g: &dyn BatchGenerator, steps: usize) -> Result<Evaluation> {
        let pre = self.fused_nodes(&self.compiled.as_ref().expect("compiled").losses);
        let mut tally = Tally::new(self);
        for i in 0..steps {
            let (xb, yb) = g.batch(0, i % g.len().max(1))?;
            let d = self.prepare(&[xb], &[yb], "x", "y")?;
            self.evaluate_batch(&d, &pre, &mut tally)?;
        }
        Ok(Self::evaluation(&tally))
    }

    /// The gradients of the compiled loss on one batch for each trainable weight, by the pass
    /// `fit` uses (training behaviour).
    pub(crate) fn gradients(&mut self, xs: &[Tensor], ys: &[Tensor]) -> Result<Vec<(String, Tensor)>> {
        if self.compiled.is_none() {
            return Err(Error::NotCompiled("compute_gradients"));
        }
        let d = self.prepare(xs, ys, "x", "y")?;
        let info = self.train_info(&self.compiled.as_ref().expect("compiled").losses.clone());
        let step = self.forward_train(&d.xs, &info)?;
        let (l, _) = self.total_loss(&d.ys, d.sw.as_ref(), &step.outputs)?;
        let grads = self.backward_train(&l, &step, &info)?;
        let names: std::collections::HashMap<_, _> =
            self.named_weight_vars()?.into_iter().map(|(n, v)| (v.as_tensor().id(), n)).collect();
        info.vars
            .iter()
            .zip(grads)
            .map(|(v, g)| {
                let g = match g {
                    Some(g) => g,
                    None => v.as_tensor().zeros_like()?,
                };
                Ok((names.get(&v.as_tensor().id()).cloned().unwrap_or_default(), g))
            })
            .collect()
    }
}

/// `fit` on in-memory arrays.
pub(crate) fn fit_arrays(model: &Model, xs: &[Tensor], ys: &[Tensor], opts: FitOptions) -> Result<History> {
    let mut guard = model.lock();
    let inner = &mut *guard;
    if inner.compiled.is_none() {
        return Err(Error::NotCompiled("fit"));
    }
    if opts.batch_size == 0 {
        return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
    }
    if !(0.0..1.0).contains(&opts.validation_split) {
        return Err(Error::invalid(
            "validation_split",
            format!("expected a fraction in [0, 1), received {}", opts.validation_split),
        ));
    }
    let mut data = inner.prepare(xs, ys, "x", "y")?;
    data.sw = inner.sample_weights(&data, opts.sample_weight.as_ref(), opts.class_weight.as_ref())?;
    if let ValidationFreq::Every(0) = opts.validation_freq {
        return Err(Error::invalid("validation_freq", "expected a positive number of epochs, received 0"));
    }
    // Keras: validation_data, when given, wins over validation_split; the split keeps the
    // first floor(n * (1 - split)) samples for training.
    let vbs = opts.validation_batch_size.unwrap_or(opts.batch_size);
    let (train, validation) = match (opts.validation_data, opts.validation_generator) {
        (Some((vx, vy)), _) => {
            let v = inner.prepare(&vx, &vy, "validation_data.x", "validation_data.y")?;
            (data, Some(Validation::Data(v, vbs)))
        }
        (None, Some((g, steps))) => {
            g.validate()?;
            let steps = steps.unwrap_or_else(|| g.len());
            (data, Some(Validation::Generator(g, steps)))
        }
        (None, None) if opts.validation_split > 0.0 => {
            let n = data.len();
            let cut = ((n as f64) * (1.0 - opts.validation_split)).floor() as usize;
            if cut == 0 || cut >= n {
                return Err(Error::invalid(
                    "validation_split",
                    format!(
                        "{} of {n} samples leaves {} for validation and {cut} for training; both need at least one",
                        opts.validation_split,
                        n - cut
                    ),
                ));
            }
            (data.narrow(0, cut)?, Some(Validation::Data(data.narrow(cut, n - cut)?, vbs)))
        }
        (None, None) => (data, None),
    };
    let n = train.len();
    check_worker_seed(opts.strategy.as_ref(), opts.seed)?;
    let steps = opts.steps_per_epoch.unwrap_or_else(|| n.div_ceil(opts.batch_size));
    let seed = opts.seed.unwrap_or(inner.seed);
    let mut batches = ArrayBatches::new(train, opts.batch_size, opts.shuffle, seed);
    let cfg = LoopConfig {
        epochs: opts.epochs,
        initial_epoch: opts.initial_epoch,
        steps_per_epoch: steps,
        verbose: opts.verbose,
        validation,
        validation_freq: opts.validation_freq,
        callbacks: opts.callbacks,
        strategy: opts.strategy,
    };
    drop(guard);
    train_loop(model, &mut |_, e, s| batches.batch(e, s), cfg)
}

/// Workers of a multi-worker strategy must train on the same batches: the seed of their order
/// must be given (the same on every worker), not drawn.
fn check_worker_seed(strategy: Option<&crate::distribute::MirroredStrategy>, seed: Option<u64>) -> Result<()> {
    if strategy.is_some_and(|s| s.is_multi_worker()) && seed.is_none() {
        return Err(Error::invalid(
            "seed",
            "a multi-worker fit needs the options' seed, the same on every worker, so that all workers \
             draw the same batches; received none",
        ));
    }
    Ok(())
}

/// `fit_generator`: worker threads prepare batches while the model trains.
pub(crate) fn fit_batches(
    model: &Model,
    generator: Arc<dyn BatchGenerator>,
    opts: GeneratorOptions,
) -> Result<History> {
    let mut guard = model.lock();
    let inner = &mut *guard;
    if inner.compiled.is_none() {
        return Err(Error::NotCompiled("fit_generator"));
    }
    inner.build()?;
    generator.validate()?;
    let steps = opts.steps_per_epoch.unwrap_or_else(|| generator.len());
    if steps == 0 {
        return Err(Error::invalid("steps_per_epoch", "expected a positive number of batches, received 0"));
    }
    if opts.validation_batch_size == 0 {
        return Err(Error::invalid("validation_batch_size", "expected a positive number, received 0"));
    }
    let validation = match (opts.validation_data, &opts.validation_generator) {
        (Some((vx, vy)), _) => Some(Validation::Data(
            inner.prepare(&vx, &vy, "validation_data.x", "validation_data.y")?,
            opts.validation_batch_size,
        )),
        (None, Some(g)) => {
            g.validate()?;
            Some(Validation::Generator(g.clone(), opts.validation_steps.unwrap_or_else(|| g.len())))
        }
        (None, None) => None,
    };
    check_worker_seed(opts.strategy.as_ref(), opts.seed)?;
    let first = opts.initial_epoch * steps;
    let end = opts.epochs.max(opts.initial_epoch) * steps;
    // On a GPU the workers also copy each batch to the device, while the previous step runs.
    let device = (!inner.device.is_cpu()).then(|| inner.device.clone());
    let order = opts.shuffle.then(|| Arc::new(super::prefetch::BatchOrder::new(opts.seed.unwrap_or(inner.seed))));
    let mut prefetch =
        super::prefetch::Prefetcher::new(generator, first, end, opts.workers, opts.max_queue_size, device, order);
    let cfg = LoopConfig {
        epochs: opts.epochs,
        initial_epoch: opts.initial_epoch,
        steps_per_epoch: steps,
        verbose: opts.verbose,
        validation,
        validation_freq: super::ValidationFreq::Every(1),
        callbacks: opts.callbacks,
        strategy: opts.strategy,
    };
    drop(guard);
    train_loop(
        model,
        &mut |inner, e, s| {
            let (x, y) = prefetch.get(e * steps + s)?;
            inner.prepare(&[x], &[y], "x", "y")
        },
        cfg,
    )
}

/// The loop shared by `fit` and `fit_generator`. The model is locked for each step and for
/// validation, never while a callback runs: a callback may use a clone of the model.
pub(crate) fn train_loop(
    model: &Model,
    next: &mut dyn FnMut(&mut Inner, usize, usize) -> Result<Data>,
    mut cfg: LoopConfig,
) -> Result<History> {
    let mut history = History::default();
    let (info, replicas) = {
        let mut inner = model.lock();
        if inner.training {
            return Err(Error::invalid(
                "fit",
                "this model is already training (fit called again from a callback or another thread)",
            ));
        }
        let info = inner.train_info(&inner.compiled.as_ref().expect("compiled").losses.clone());
        let ids: Vec<_> = info.vars.iter().map(|v| v.as_tensor().id()).collect();
        let c = inner.compiled.as_mut().expect("compiled");
        match &c.trained_vars {
            Some(prev) if *prev != ids && c.optimizer.iterations() > 0 => {
                return Err(Error::invalid(
                    "trainable",
                    format!(
                        "the set of trainable weights changed since the optimizer started ({} then, {} now): \
                         compile the model again after freezing or unfreezing layers, as in Keras",
                        prev.len(),
                        ids.len()
                    ),
                ))
            }
            _ => c.trained_vars = Some(ids),
        }
        let replicas = match &cfg.strategy {
            Some(s) => super::replicas::Replicas::new(&mut inner, s)?,
            None => None,
        };
        inner.training = true;
        (info, replicas)
    };
    struct Training<'a>(&'a Model);
    impl Drop for Training<'_> {
        fn drop(&mut self) {
            self.0.lock().training = false;
        }
    }
    let _training = Training(model);
    let mut callbacks = std::mem::take(&mut cfg.callbacks);
    let mut resume = None;
    for cb in callbacks.iter_mut() {
        let mut ctx = TrainingContext { model, epoch: cfg.initial_epoch, step: 0, resume: None };
        cb.on_train_begin(&mut ctx)?;
        resume = ctx.resume.or(resume);
    }
    // A backup (BackupAndRestore) resumes the run where it was saved.
    let (first_epoch, mut first_step) = match resume {
        Some((e, s)) if e >= cfg.initial_epoch => (e, s),
        _ => (cfg.initial_epoch, 0),
    };
    let mut last_logs = Logs::default();
    for epoch in first_epoch..cfg.epochs {
        let start_step = std::mem::take(&mut first_step).min(cfg.steps_per_epoch);
        for cb in callbacks.iter_mut() {
            cb.on_epoch_begin(epoch, &mut TrainingContext { model, epoch, step: start_step, resume: None })?;
        }
        // Keras 3's progress logger: the epoch line for verbose 1 and 2, with several epochs.
        if cfg.verbose >= 1 && cfg.epochs > 1 {
            println!("Epoch {}/{}", epoch + 1, cfg.epochs);
        }
        let mut bar = Progbar::new(cfg.steps_per_epoch, cfg.verbose);
        let mut tally = Tally::new(&model.lock());
        let mut logs = Vec::new();
        let mut stop = false;
        let mut steps_done = 0;
        for step in start_step..cfg.steps_per_epoch {
            for cb in callbacks.iter_mut() {
                cb.on_train_batch_begin(step, &mut TrainingContext { model, epoch, step, resume: None })?;
            }
            let (lv, finite) = {
                let mut guard = model.lock();
                let inner = &mut *guard;
                let d = next(inner, epoch, step)?;
                let before = inner.forward_state()?;
                if let Some(replicas) = &replicas {
                    let r = replicas.step(inner, &info, &d)?;
                    let finite = r.loss.is_finite();
                    match &r.grads {
                        Some(g) => {
                            inner.compiled.as_mut().expect("compiled").optimizer.apply_gradients(&info.vars, g)?;
                            super::replicas::Replicas::set_stats(inner, &r.stats)?;
                        }
                        None => inner.restore_forward_state(before)?,
                    }
                    for s in &r.shards {
                        tally.add(&s.ys, &s.outputs, s.loss, &s.parts)?;
                    }
                    (r.loss, finite)
                } else {
                    let st = inner.forward_train(&d.xs, &info)?;
                    let (l, parts) = inner.total_loss(&d.ys, d.sw.as_ref(), &st.outputs)?;
                    let lv = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    let finite = lv.is_finite();
                    // A NaN or infinite loss would poison every weight: that update is skipped, and
                    // training stops (gracefully when a callback such as TerminateOnNaN asks for it).
                    if finite {
                        let g = inner.backward_train(&l, &st, &info)?;
                        inner.compiled.as_mut().expect("compiled").optimizer.apply_gradients(&info.vars, &g)?;
                    } else {
                        // The batch leaves no trace: moving statistics and dropout counters as before.
                        inner.restore_forward_state(before)?;
                    }
                    let outs: Vec<Output> = st
                        .outputs
                        .iter()
                        .map(|o| match o {
                            Output::Values(t) => Output::Values(t.detach()),
                            Output::Logits(t, a) => Output::Logits(t.detach(), *a),
                        })
                        .collect();
                    drop(st);
                    tally.add(&d.ys, &outs, lv, &parts)?;
                    (lv, finite)
                }
            };
            steps_done = step + 1;
            logs = tally.logs();
            bar.update(step + 1, &logs);
            if !callbacks.is_empty() {
                let batch_logs = Logs(logs.clone());
                for cb in callbacks.iter_mut() {
                    let mut ctx = TrainingContext { model, epoch, step: step + 1, resume: None };
                    if cb.on_train_batch_end(step, &batch_logs, &mut ctx)? == Control::Stop {
                        stop = true;
                    }
                }
            }
            if !finite && !stop {
                bar.finish(steps_done, &logs);
                return Err(Error::NonFiniteLoss { epoch: epoch + 1, batch: step + 1, loss: lv });
            }
            if stop {
                break;
            }
        }
        if let (Some(val), false, true) = (&cfg.validation, stop, cfg.validation_freq.at(epoch)) {
            for cb in callbacks.iter_mut() {
                cb.on_test_begin(&mut TrainingContext { model, epoch, step: steps_done, resume: None })?;
            }
            let mut inner = model.lock();
            let ev = match val {
                Validation::Data(d, bs) => inner.evaluate_data(d, *bs)?,
                Validation::Generator(g, steps) => inner.evaluate_generator(g.as_ref(), *steps)?,
            };
            drop(inner);
            if !callbacks.is_empty() {
                let mut test_logs = vec![("loss".to_string(), ev.loss)];
                test_logs.extend(ev.metrics.iter().map(|(k, x)| (k.clone(), *x)));
                let test_logs = Logs(test_logs);
                for cb in callbacks.iter_mut() {
                    cb.on_test_end(&test_logs, &mut TrainingContext { model, epoch, step: steps_done, resume: None })?;
                }
            }
            let mut v: Vec<(String, f64)> = ev.metrics.iter().map(|(k, x)| (format!("val_{k}"), *x)).collect();
            v.push(("val_loss".into(), ev.loss));
            v.sort_by(|a, b| a.0.cmp(&b.0));
            logs.extend(v);
        }
        bar.finish(steps_done, &logs);
        history.push(epoch, &logs);
        last_logs = Logs(logs);
        for cb in callbacks.iter_mut() {
            if cb.on_epoch_end(
                epoch,
                &last_logs,
                &mut TrainingContext { model, epoch: epoch + 1, step: 0, resume: None },
            )? == Control::Stop
            {
                stop = true;
            }
        }
        if stop {
            break;
        }
    }
    for cb in callbacks.iter_mut() {
        cb.on_train_end(&last_logs, &mut TrainingContext { model, epoch: cfg.epochs, step: 0, resume: None })?;
    }
    Ok(history)
}
