//! The training loop, one for `fit` and `fit_generator` as Keras 3 has one: the data become a
//! [`BatchGenerator`] (the arrays given to `fit` are one), an [`EpochIterator`] brings its
//! batches, each step is a forward pass, the loss, the backward walk and the optimizer's update
//! on the model's graph, and a [`CallbackList`] hears of every event. The model is locked for
//! each step and for validation, never while a callback runs: a callback may use the model.

use super::data::{prepare, prepare_batch, sample_weights, ArrayBatches, BatchGenerator, Data};
use super::epoch_iterator::{BatchOrder, EpochIterator, Numbering, Source};
use super::evaluate::{evaluate_batches, evaluate_data, Tally};
use super::options::{FitOptions, ValidationFreq};
use super::replicas::Replicas;
use super::{Trainee, TraineeState};
use crate::callbacks::{CallbackList, Control, History, Logs};
use crate::error::{Error, Result};
use crate::graph::Pass;
use crate::losses::Output;
use candle_core::{DType, Tensor};

/// What `fit` trains on: arrays (one per input and per output), or a generator's batches.
pub(crate) enum TrainData<'g> {
    /// `fit(x, y)`.
    Arrays(Vec<Tensor>, Vec<Tensor>),
    /// `fit_generator(generator)`.
    Generator(&'g (dyn BatchGenerator + 'g)),
}

/// Where the validation pass of each epoch reads from.
enum Validation<'g> {
    /// Prepared arrays, evaluated in batches of the size given.
    Data(Data, usize),
    /// `steps` batches of a generator.
    Generator(&'g (dyn BatchGenerator + 'g), usize),
}

/// The model's forward state that a skipped batch must not change: each layer's counters
/// (dropout) and non-trainable weights (BatchNormalization's moving statistics).
struct ForwardState(Vec<LayerState>);

/// One layer's counters, and copies of its non-trainable weights.
type LayerState = (Vec<u64>, Vec<(candle_core::Var, Tensor)>);

impl ForwardState {
    fn save(state: &impl TraineeState) -> Result<Self> {
        state
            .graph()
            .layers()
            .iter()
            .map(|l| {
                let cell = l.lock();
                let stats = cell
                    .all_weights()
                    .into_iter()
                    .filter(|w| !w.trainable)
                    .map(|w| Ok((w.var.clone(), w.var.as_tensor().copy()?)))
                    .collect::<Result<_>>()?;
                Ok((cell.layer.state(), stats))
            })
            .collect::<Result<_>>()
            .map(ForwardState)
    }

    fn restore(self, state: &impl TraineeState) -> Result<()> {
        for (l, (counters, stats)) in state.graph().layers().iter().zip(self.0) {
            l.lock().layer.set_state(&counters);
            for (var, value) in stats {
                var.set(&value)?;
            }
        }
        Ok(())
    }
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

/// Marks the model as training for the loop's lifetime.
struct Training<'m, M: Trainee>(&'m M);

impl<M: Trainee> Drop for Training<'_, M> {
    fn drop(&mut self) {
        self.0.state().set_training(false);
    }
}

/// `fit` and `fit_generator`.
pub(crate) fn fit<M: Trainee, K>(model: &M, data: TrainData<'_>, opts: FitOptions<'_, K>) -> Result<History> {
    crate::kernels::tune_allocator();
    let generator_run = matches!(data, TrainData::Generator(_));
    let (arrays, source_steps, validation, numbering, device) = {
        let mut guard = model.state();
        let state = &mut *guard;
        if state.compiled().is_none() {
            return Err(Error::NotCompiled(if generator_run { "fit_generator" } else { "fit" }));
        }
        state.build()?;
        if let ValidationFreq::Every(0) = opts.validation_freq {
            return Err(Error::invalid("validation_freq", "expected a positive number of epochs, received 0"));
        }
        if opts.validation_batch_size == Some(0) {
            return Err(Error::invalid("validation_batch_size", "expected a positive number, received 0"));
        }
        check_worker_seed(opts.strategy.as_ref(), opts.seed)?;
        let seed = opts.seed.unwrap_or(state.seed());
        // Keras: validation_data, when given, wins over a generator and validation_split.
        let vbs = opts.validation_batch_size.unwrap_or(if generator_run { 32 } else { opts.batch_size });
        let given = match &opts.validation_data {
            Some((vx, vy)) => {
                let mut d = prepare(state, vx, vy, "validation_data.x", "validation_data.y")?;
                d.sw = sample_weights(state, &d, opts.validation_sample_weight.as_ref(), None)?;
                Some(Validation::Data(d, vbs))
            }
            None => match &opts.validation_generator {
                Some(g) => {
                    g.validate()?;
                    Some(Validation::Generator(g.as_ref(), opts.validation_steps.unwrap_or_else(|| g.len())))
                }
                None => None,
            },
        };
        match &data {
            TrainData::Arrays(xs, ys) => {
                if opts.batch_size == 0 {
                    return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
                }
                if !(0.0..1.0).contains(&opts.validation_split) {
                    return Err(Error::invalid(
                        "validation_split",
                        format!("expected a fraction in [0, 1), received {}", opts.validation_split),
                    ));
                }
                let mut data = prepare(state, xs, ys, "x", "y")?;
                data.sw = sample_weights(state, &data, opts.sample_weight.as_ref(), opts.class_weight.as_ref())?;
                // The split keeps the first floor(n * (1 - split)) samples for training.
                let (train, validation) = match given {
                    Some(v) => (data, Some(v)),
                    None if opts.validation_split > 0.0 => {
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
                        let mut held_out = data.narrow(cut, n - cut)?;
                        // Keras splits sample weights with the data, but applies `class_weight`
                        // to the training data only.
                        if opts.class_weight.is_some() {
                            held_out.sw = None;
                        }
                        (data.narrow(0, cut)?, Some(Validation::Data(held_out, vbs)))
                    }
                    None => (data, None),
                };
                let steps = train.len().div_ceil(opts.batch_size);
                let arrays = ArrayBatches::new(train, opts.batch_size, opts.shuffle, seed);
                (Some(arrays), steps, validation, None, None)
            }
            TrainData::Generator(g) => {
                g.validate()?;
                // On a GPU the workers also copy each batch to the device, while the previous
                // step runs.
                let device = (!state.device().is_cpu()).then(|| state.device().clone());
                let order = opts.shuffle.then(|| BatchOrder::new(seed));
                (None, g.len(), given, Some(Numbering::Continuous { order }), device)
            }
        }
    };
    // Keras: a `steps_per_epoch` of 0 is one not given.
    let given_steps = opts.steps_per_epoch.filter(|&s| s > 0);
    let steps = given_steps.unwrap_or(source_steps);
    if steps == 0 {
        return Err(Error::invalid("steps_per_epoch", "expected a positive number of batches, received 0"));
    }
    let schedule = Schedule { per_pass: source_steps.max(1), steps, given: given_steps.is_some() };
    let source = match (&arrays, data) {
        // The arrays reshuffle at each pass over them (pass `p` is their epoch `p`).
        (Some(a), _) => Source { generator: a, numbering: Numbering::Continuous { order: None }, device: None },
        (None, TrainData::Generator(g)) => {
            Source { generator: g, numbering: numbering.unwrap_or(Numbering::Continuous { order: None }), device }
        }
        (None, TrainData::Arrays(..)) => unreachable!("arrays were made into batches"),
    };
    let workers = opts.workers.unwrap_or(if generator_run { 1 } else { 0 });
    let run = Run {
        epochs: opts.epochs,
        initial_epoch: opts.initial_epoch,
        schedule,
        verbose: opts.verbose,
        validation,
        validation_freq: opts.validation_freq,
        strategy: opts.strategy,
        workers,
        max_queue_size: opts.max_queue_size,
    };
    train_loop(model, &source, opts.callbacks, run)
}

/// The settings of one run of the loop.
struct Run<'g> {
    epochs: usize,
    initial_epoch: usize,
    schedule: Schedule,
    verbose: u8,
    validation: Option<Validation<'g>>,
    validation_freq: ValidationFreq,
    strategy: Option<crate::distribute::MirroredStrategy>,
    workers: usize,
    max_queue_size: usize,
}

/// Which of the source's batches each epoch runs, as Keras 3's `EpochIterator`: batches are
/// taken in passes of `per_pass` (the arrays' or the generator's length); an epoch takes
/// `steps` of them (`steps_per_epoch`), or fewer when the pass runs out first (Keras warns
/// "Your input ran out of data"), and the next pass starts only when this one is used up. So
/// more steps than batches ends each epoch at the pass's end; fewer continue the same pass in
/// the next epoch.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    per_pass: usize,
    steps: usize,
    /// Whether `steps_per_epoch` was given (Keras warns only then).
    given: bool,
}

impl Schedule {
    /// Epoch `e`'s first batch (counted over the whole run) and its number of batches.
    fn epoch(&self, e: usize) -> (usize, usize) {
        let (n, s) = (self.per_pass, self.steps);
        let per = n.div_ceil(s).max(1); // epochs per pass
        let (pass, j) = (e / per, e % per);
        let offset = (j * s).min(n);
        (pass * n + offset, s.min(n - offset))
    }
}

/// The loop: epochs of steps, validation, callbacks.
fn train_loop<M: Trainee>(
    model: &M,
    source: &Source<'_>,
    callbacks: Vec<Box<dyn crate::callbacks::Callback>>,
    run: Run<'_>,
) -> Result<History> {
    let (pass, replicas) = {
        let mut guard = model.state();
        let state = &mut *guard;
        if state.set_training(true) {
            return Err(Error::invalid(
                "fit",
                "this model is already training (fit called again from a callback or another thread)",
            ));
        }
        let prepared = (|| {
            let autograd = state.autograd();
            let c = state.compiled().ok_or(Error::NotCompiled("fit"))?;
            let pass = Pass::for_losses(state.graph(), &c.losses, autograd);
            let ids: Vec<_> = pass.vars.iter().map(|v| v.as_tensor().id()).collect();
            let c = state.compiled_mut().ok_or(Error::NotCompiled("fit"))?;
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
            Ok(pass)
        })();
        let pass = match prepared {
            Ok(p) => p,
            Err(e) => {
                state.set_training(false);
                return Err(e);
            }
        };
        drop(guard);
        let replicas = match &run.strategy {
            Some(s) => Replicas::new(model, s).inspect_err(|_| {
                model.state().set_training(false);
            })?,
            None => None,
        };
        (pass, replicas)
    };
    let _training = Training(model);
    // The legacy `distribute::with_row_offset` of a caller, for a run inside it.
    let pass = pass.at_row(crate::distribute::legacy_row_offset());
    let mut list = CallbackList::new(model, callbacks, run.verbose, run.epochs, run.schedule.steps);
    // A backup (BackupAndRestore) resumes the run where it was saved.
    let (first_epoch, mut first_step) = match list.train_begin(run.initial_epoch)? {
        Some((e, s)) if e >= run.initial_epoch => (e, s),
        _ => (run.initial_epoch, 0),
    };
    let schedule = run.schedule;
    let (start, len) = schedule.epoch(first_epoch);
    let first = start + first_step.min(len);
    let end = schedule.epoch(run.epochs.max(first_epoch)).0;
    let mut warned = false;
    let mut last_logs = Logs::default();
    std::thread::scope(|scope| -> Result<()> {
        let mut batches = EpochIterator::new(scope, source, first, end, run.workers, run.max_queue_size);
        for epoch in first_epoch..run.epochs {
            let (start, steps) = schedule.epoch(epoch);
            if steps < schedule.steps && schedule.given && !warned {
                warned = true;
                eprintln!(
                    "Your input ran out of data; interrupting training. Make sure that your dataset or generator \
                     can generate at least `steps_per_epoch * epochs` batches ({} * {} here, of {} a pass).",
                    schedule.steps, run.epochs, schedule.per_pass
                );
            }
            let start_step = std::mem::take(&mut first_step).min(steps);
            list.epoch_begin(epoch, start_step)?;
            let mut tally = {
                let state = model.state();
                state.graph().check(&pass)?;
                Tally::new(&*state)?
            };
            let mut logs = Vec::new();
            let mut stop = false;
            let mut steps_done = 0;
            for step in start_step..steps {
                list.batch_begin(epoch, step)?;
                let (lv, finite) = {
                    let mut guard = model.state();
                    let state = &mut *guard;
                    state.graph().check(&pass)?;
                    let d = prepare_batch(state, batches.get(start + step)?)?;
                    train_step::<M>(state, &pass, replicas.as_ref(), &d, &mut tally)?
                };
                steps_done = step + 1;
                logs = tally.logs();
                if list.batch_end(epoch, step, &logs)? == Control::Stop {
                    stop = true;
                }
                // A NaN or infinite loss would poison every weight: that update was skipped,
                // and training stops (gracefully when a callback such as TerminateOnNaN asks).
                if !finite && !stop {
                    list.finish_bar(steps_done, &logs);
                    return Err(Error::NonFiniteLoss { epoch: epoch + 1, batch: step + 1, loss: lv });
                }
                if stop {
                    break;
                }
            }
            // Keras validates the epoch after a batch-level stop too.
            if let (Some(val), true) = (&run.validation, run.validation_freq.at(epoch)) {
                list.test_begin(epoch, steps_done)?;
                let ev = {
                    let mut state = model.state();
                    state.graph().check(&pass)?;
                    match val {
                        Validation::Data(d, bs) => evaluate_data(&*state, d, *bs)?,
                        Validation::Generator(g, steps) => evaluate_batches(&mut *state, *g, *steps)?,
                    }
                };
                let mut test_logs = vec![("loss".to_string(), ev.loss)];
                test_logs.extend(ev.metrics.iter().map(|(k, x)| (k.clone(), *x)));
                list.test_end(epoch, steps_done, &test_logs)?;
                let mut v: Vec<(String, f64)> = ev.metrics.iter().map(|(k, x)| (format!("val_{k}"), *x)).collect();
                v.push(("val_loss".into(), ev.loss));
                v.sort_by(|a, b| a.0.cmp(&b.0));
                logs.extend(v);
            }
            last_logs = Logs(logs);
            if list.epoch_end(epoch, steps_done, &mut last_logs)? == Control::Stop {
                stop = true;
            }
            if stop {
                break;
            }
        }
        Ok(())
    })?;
    list.train_end(run.epochs, &last_logs)
}

/// One training step on the prepared batch `d`: its loss and whether it is finite; the update
/// is applied only when it is (the batch then leaves no other trace either).
fn train_step<M: Trainee>(
    state: &mut M::State,
    pass: &Pass,
    replicas: Option<&Replicas<M>>,
    d: &Data,
    tally: &mut Tally,
) -> Result<(f64, bool)> {
    let before = ForwardState::save(state)?;
    if let Some(replicas) = replicas {
        let r = replicas.step(state, pass, d)?;
        let finite = r.loss.is_finite();
        match &r.grads {
            Some(g) => {
                state.compiled_mut().ok_or(Error::NotCompiled("fit"))?.optimizer.apply_gradients(&pass.vars, g)?;
                Replicas::<M>::set_stats(state, &r.stats)?;
            }
            None => before.restore(state)?,
        }
        for s in &r.shards {
            tally.add(&s.ys, &s.outputs, s.loss, &s.parts)?;
        }
        return Ok((r.loss, finite));
    }
    let graph = state.graph();
    let c = state.compiled().ok_or(Error::NotCompiled("fit"))?;
    let st = graph.train_forward(&d.xs, pass)?;
    let (l, parts) = c.total_loss(graph, &d.ys, d.sw.as_ref(), &st.outputs)?;
    let lv = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let finite = lv.is_finite();
    if finite {
        let g = graph.train_backward(&l, &st, pass)?;
        state.compiled_mut().ok_or(Error::NotCompiled("fit"))?.optimizer.apply_gradients(&pass.vars, &g)?;
    } else {
        // The batch leaves no trace: moving statistics and dropout counters as before.
        before.restore(state)?;
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
    Ok((lv, finite))
}
