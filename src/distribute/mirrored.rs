//! Keras' (TensorFlow's) `MirroredStrategy`: synchronous data parallelism over the devices of
//! one machine.

use super::{AllReduce, InProcessAllReduce};
use crate::error::{Error, Result};
use crate::layers::CustomObjects;
use candle_core::Device;
use std::sync::Arc;

/// Synchronous data-parallel training, as TensorFlow's `tf.distribute.MirroredStrategy`: one
/// replica of the model per device, each batch split across the replicas, the replicas'
/// gradients summed by an [`AllReduce`] before one optimizer step, so that the weights stay the
/// same on every device.
///
/// `fit` and `fit_generator` take it through their options (`.distribute(&strategy)`); the
/// `batch_size` stays the global batch, as in Keras (each of `N` replicas gets `batch_size / N`
/// samples; the first `batch_size % N` replicas one more). The model itself is the first
/// replica and must live on the first device; the others are copies made for each `fit` from
/// the model's architecture (user-defined layers: [`MirroredStrategy::custom_objects`]).
/// Validation, `evaluate` and `predict` run on the first device.
///
/// With `N` replicas of batch `B / N` the weights after each step are those of one replica with
/// batch `B`, dropout included (each replica draws the rows of the whole batch's masks it
/// holds), up to the order of floating-point sums, with one exception as in Keras:
/// `BatchNormalization` normalises each replica's shard with the shard's own statistics
/// (Keras' `synchronized=False`, its default), and its moving statistics become replica 0's
/// after each step, which is what Keras 3 on TensorFlow's `MirroredStrategy` leaves in them
/// (measured: `tests/golden/make_mirrored_goldens.py`).
///
/// The reduction: between threads of this process ([`InProcessAllReduce`]: CPU replicas, or
/// GPUs without NCCL), or NCCL's all-reduce between CUDA devices when kandle is built with the
/// `nccl` feature (`NcclAllReduce`, chosen by [`MirroredStrategy::new`] when every device is a
/// CUDA device, as TensorFlow chooses `NcclAllReduce` for GPUs).
///
/// ```
/// use kandle::distribute::MirroredStrategy;
/// use kandle::prelude::*;
/// let strategy = MirroredStrategy::new(vec![Device::Cpu, Device::Cpu])?;
/// assert_eq!(strategy.num_replicas_in_sync(), 2);
/// let model = Sequential::new().seed(0)
///     .add(Dense::new(8).activation(Activation::Relu).input_shape(4))
///     .add(Dropout::new(0.5))
///     .add(Dense::new(3).activation(Activation::Softmax));
/// model.compile(RMSprop::default(), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy])?;
/// let x = Tensor::rand(0f32, 1., (64, 4), &Device::Cpu)?;
/// let y = Tensor::from_vec((0..64u32).map(|i| i % 3).collect::<Vec<_>>(), 64, &Device::Cpu)?;
/// let history = model.fit(&x, &y, FitOptions::default().batch_size(16).epochs(2).verbose(0).distribute(&strategy))?;
/// assert_eq!(history.get("loss").map(|l| l.len()), Some(2));
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Clone)]
pub struct MirroredStrategy {
    devices: Vec<Device>,
    reduce: Option<Arc<dyn AllReduce>>,
    custom: CustomObjects,
    /// This process's place among the workers (`multi_worker`), and their number.
    worker: usize,
    workers: usize,
}

impl std::fmt::Debug for MirroredStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredStrategy")
            .field("devices", &self.devices.iter().map(|d| format!("{:?}", d.location())).collect::<Vec<_>>())
            .field("cross_device_ops", &if self.reduce.is_some() { "given" } else { "in-process" })
            .field("worker", &self.worker)
            .field("workers", &self.workers)
            .finish()
    }
}

/// Whether every device is a CUDA device on a GPU of its own (NCCL's condition).
#[cfg(feature = "nccl")]
fn distinct_gpus(devices: &[Device]) -> bool {
    let ids: Vec<usize> = devices
        .iter()
        .filter_map(|d| match d.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => Some(gpu_id),
            _ => None,
        })
        .collect();
    ids.len() == devices.len() && ids.iter().collect::<std::collections::HashSet<_>>().len() == ids.len()
}

impl MirroredStrategy {
    /// One replica per device of `devices` (at least one; the model must live on the first).
    /// With the `nccl` feature and only CUDA devices, each a different GPU, the gradients are
    /// reduced by NCCL; otherwise between threads ([`InProcessAllReduce`]).
    ///
    /// # Errors
    /// No device, or (with `nccl`) NCCL failing to set up its communicators.
    pub fn new(devices: Vec<Device>) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::invalid("devices", "expected at least one device, received none"));
        }
        #[cfg(feature = "nccl")]
        let reduce: Option<Arc<dyn AllReduce>> = if devices.len() > 1 && distinct_gpus(&devices) {
            Some(Arc::new(super::NcclAllReduce::new(&devices)?))
        } else {
            None
        };
        #[cfg(not(feature = "nccl"))]
        let reduce = None;
        Ok(MirroredStrategy { devices, reduce, custom: CustomObjects::default(), worker: 0, workers: 1 })
    }

    /// One worker of several (TensorFlow's `MultiWorkerMirroredStrategy`, one device per
    /// worker, as NCCL programs usually run: one process per GPU, on one machine or several).
    /// Every worker runs the same program on the same data: each trains on its rows of every
    /// global batch (worker `w` of `W` holds the `w`-th of `W` shards), `reduce` sums the
    /// workers' losses and gradients (`replica = worker`; across processes,
    /// `NcclAllReduce::from_rank`), and each applies the same update, so the weights stay
    /// the same everywhere. At the start of each `fit` the workers take worker 0's weights.
    ///
    /// ```
    /// use kandle::distribute::{InProcessAllReduce, MirroredStrategy};
    /// use kandle::prelude::*;
    /// use std::sync::Arc;
    /// // Two workers as two threads of this process (processes on GPUs use NCCL instead).
    /// let reduce = Arc::new(InProcessAllReduce::new(2));
    /// let x = Tensor::rand(0f32, 1., (32, 4), &Device::Cpu)?;
    /// let y = Tensor::from_vec((0..32u32).map(|i| i % 3).collect::<Vec<_>>(), 32, &Device::Cpu)?;
    /// let weights: Vec<Vec<f32>> = std::thread::scope(|s| {
    ///     let workers: Vec<_> = (0..2).map(|w| {
    ///         let (reduce, x, y) = (reduce.clone(), &x, &y);
    ///         s.spawn(move || -> kandle::Result<Vec<f32>> {
    ///             let strategy = MirroredStrategy::multi_worker(Device::Cpu, w, 2, reduce)?;
    ///             let model = Sequential::new().seed(w as u64) // different seeds: worker 0's weights win
    ///                 .add(Dense::new(3).activation(Activation::Softmax).input_shape(4));
    ///             model.compile("rmsprop", "sparse_categorical_crossentropy", ())?;
    ///             model.fit(x, y, FitOptions::default().batch_size(8).verbose(0).seed(1).distribute(&strategy))?;
    ///             Ok(model.get_weights()?[0].flatten_all()?.to_vec1::<f32>()?)
    ///         })
    ///     }).collect();
    ///     workers.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    /// });
    /// assert_eq!(weights[0], weights[1]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// `worker` not below `workers`, or a reduction for another number of participants.
    pub fn multi_worker(device: Device, worker: usize, workers: usize, reduce: Arc<dyn AllReduce>) -> Result<Self> {
        if worker >= workers {
            return Err(Error::invalid("worker", format!("expected a worker in 0..{workers}, received {worker}")));
        }
        if reduce.replicas() != workers {
            return Err(Error::invalid(
                "reduce",
                format!("expected a reduction between {workers} workers, received one for {}", reduce.replicas()),
            ));
        }
        Ok(MirroredStrategy {
            devices: vec![device],
            reduce: Some(reduce),
            custom: CustomObjects::default(),
            worker,
            workers,
        })
    }

    /// This worker's number (0 with [`MirroredStrategy::new`]); worker 0 is TensorFlow's
    /// "chief", the one that should write checkpoints and logs.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Whether this worker is the chief (worker 0).
    pub fn is_chief(&self) -> bool {
        self.worker == 0
    }

    /// `n` replicas on the CPU (threads of this process): the reference the GPU strategy is
    /// checked against, and a way to test a distributed run without GPUs.
    ///
    /// ```
    /// use kandle::distribute::MirroredStrategy;
    /// let s = MirroredStrategy::cpu(3)?;
    /// assert_eq!((s.num_replicas_in_sync(), s.devices().len(), s.worker(), s.is_chief()), (3, 3, 0, true));
    /// assert!(MirroredStrategy::cpu(0).is_err());
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// `n` = 0.
    pub fn cpu(n: usize) -> Result<Self> {
        Self::new(vec![Device::Cpu; n])
    }

    /// Replaces the reduction (TensorFlow's `cross_device_ops`); it must serve exactly
    /// [`MirroredStrategy::num_replicas_in_sync`] replicas.
    ///
    /// ```
    /// use kandle::distribute::{InProcessAllReduce, MirroredStrategy};
    /// use std::sync::Arc;
    /// let s = MirroredStrategy::cpu(2)?.cross_device_ops(Arc::new(InProcessAllReduce::new(2)))?;
    /// assert_eq!(s.num_replicas_in_sync(), 2);
    /// assert!(MirroredStrategy::cpu(2)?.cross_device_ops(Arc::new(InProcessAllReduce::new(4))).is_err());
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// A reduction for another number of replicas.
    pub fn cross_device_ops(mut self, reduce: Arc<dyn AllReduce>) -> Result<Self> {
        if self.workers > 1 {
            return Err(Error::invalid(
                "cross_device_ops",
                "a multi-worker strategy has its reduction from multi_worker",
            ));
        }
        if reduce.replicas() != self.devices.len() {
            return Err(Error::invalid(
                "cross_device_ops",
                format!(
                    "expected a reduction between {} replicas, received one for {}",
                    self.devices.len(),
                    reduce.replicas()
                ),
            ));
        }
        self.reduce = Some(reduce);
        Ok(self)
    }

    /// The constructors of the model's user-defined layers, to build the replicas (as
    /// `load_model_with`).
    pub fn custom_objects(mut self, custom: CustomObjects) -> Self {
        self.custom = custom;
        self
    }

    /// The number of replicas, over all workers (Keras' `num_replicas_in_sync`).
    pub fn num_replicas_in_sync(&self) -> usize {
        self.devices.len() * self.workers
    }

    /// Whether this process is one worker of several ([`MirroredStrategy::multi_worker`]).
    pub(crate) fn is_multi_worker(&self) -> bool {
        self.workers > 1
    }

    /// The global number of this process's first replica.
    pub(crate) fn first_replica(&self) -> usize {
        self.worker * self.devices.len()
    }

    /// The devices of this process's replicas.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub(crate) fn custom(&self) -> &CustomObjects {
        &self.custom
    }

    /// The reduction a `fit` uses: the one given, or a fresh in-process one (so that a run that
    /// failed and aborted its reduction leaves the next run a working one).
    pub(crate) fn reduction(&self) -> Arc<dyn AllReduce> {
        match &self.reduce {
            Some(r) => r.clone(),
            None => Arc::new(InProcessAllReduce::new(self.num_replicas_in_sync())),
        }
    }
}
