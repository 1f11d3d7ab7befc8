//! Keras' (TensorFlow's) `MirroredStrategy`: synchronous data parallelism over the devices of
//! one machine.

use super::{AllReduce, InProcessAllReduce};
use crate::layers::CustomObjects;
use crate::{Error, Result};
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
/// (Keras' `synchronized=False`, its default), and its moving statistics become the mean of the
/// replicas' after each step (TensorFlow's `aggregation=MEAN` for them).
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
}

impl std::fmt::Debug for MirroredStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredStrategy")
            .field("devices", &self.devices.iter().map(|d| format!("{:?}", d.location())).collect::<Vec<_>>())
            .field("cross_device_ops", &if self.reduce.is_some() { "given" } else { "in-process" })
            .finish()
    }
}

impl MirroredStrategy {
    /// One replica per device of `devices` (at least one; the model must live on the first).
    /// With the `nccl` feature and only CUDA devices, the gradients are reduced by NCCL;
    /// otherwise between threads ([`InProcessAllReduce`]).
    ///
    /// # Errors
    /// No device, or (with `nccl`) NCCL failing to set up its communicators.
    pub fn new(devices: Vec<Device>) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::invalid("devices", "expected at least one device, received none"));
        }
        #[cfg(feature = "nccl")]
        let reduce: Option<Arc<dyn AllReduce>> = if devices.len() > 1 && devices.iter().all(|d| d.is_cuda()) {
            Some(Arc::new(super::NcclAllReduce::new(&devices)?))
        } else {
            None
        };
        #[cfg(not(feature = "nccl"))]
        let reduce = None;
        Ok(MirroredStrategy { devices, reduce, custom: CustomObjects::default() })
    }

    /// `n` replicas on the CPU (threads of this process): the reference the GPU strategy is
    /// checked against, and a way to test a distributed run without GPUs.
    ///
    /// # Errors
    /// `n` = 0.
    pub fn cpu(n: usize) -> Result<Self> {
        Self::new(vec![Device::Cpu; n])
    }

    /// Replaces the reduction (TensorFlow's `cross_device_ops`); it must serve exactly
    /// [`MirroredStrategy::num_replicas_in_sync`] replicas.
    ///
    /// # Errors
    /// A reduction for another number of replicas.
    pub fn cross_device_ops(mut self, reduce: Arc<dyn AllReduce>) -> Result<Self> {
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

    /// The number of replicas (Keras' `num_replicas_in_sync`).
    pub fn num_replicas_in_sync(&self) -> usize {
        self.devices.len()
    }

    /// The devices, one per replica.
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
            None => Arc::new(InProcessAllReduce::new(self.devices.len())),
        }
    }
}
