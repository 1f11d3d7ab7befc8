//! How a model learns, as Keras 3's `trainers/`: the compile state (`compile`: optimizer,
//! losses, metrics), one training loop for arrays and generators alike (`fit.rs`), fed by one
//! data interface ([`BatchGenerator`]; arrays are one more implementation of it) through an
//! epoch iterator with worker threads, evaluation and prediction, data-parallel replicas and
//! per-layer profiling. It runs passes over the model's `Graph` and drives
//! the callbacks through one `CallbackList`.
//!
//! `models/` sits above: `Model::fit` and its siblings hand their model to these functions as a
//! `Trainee`, whose state the loop locks one step at a time, so that a callback may use the
//! model (save it, predict) between steps.

mod compile;
mod data;
mod epoch_iterator;
mod evaluate;
mod fit;
mod options;
mod profile;
mod replicas;

pub use compile::{IntoLosses, IntoMetrics, Losses, MetricsByOutput};
pub use data::{Arrays, Batch, BatchGenerator};
pub use evaluate::Evaluation;
pub use options::{FitOptions, ForArrays, ForGenerator, GeneratorOptions, ValidationFreq};
pub use profile::{LayerTime, Profile};

pub(crate) use compile::Compiled;
pub(crate) use evaluate::{call, evaluate, evaluate_generator, gradients, predict};
pub(crate) use fit::{fit, TrainData};
pub(crate) use profile::profile;

use crate::callbacks::CallbackModel;
use crate::error::Result;
use crate::graph::Graph;
use crate::layers::CustomObjects;
use candle_core::{DType, Device};
use std::sync::MutexGuard;

/// The model a trainer trains, as `models::Model` provides it (Keras mixes its `Trainer` into
/// `Model`; here the model hands the trainer its state).
pub(crate) trait Trainee: CallbackModel + Sized {
    /// The model's state behind its lock.
    type State: TraineeState;
    /// The model's state, locked for one step, one validation pass, one prediction.
    fn state(&self) -> MutexGuard<'_, Self::State>;
    /// A copy of the model for a replica of a data-parallel `fit`: the same architecture,
    /// dtype, seed and losses, its own weights, built on `device`.
    ///
    /// # Errors
    /// A layer the architecture cannot make again (a user's layer missing from `custom`).
    fn replica(&self, device: &Device, custom: &CustomObjects) -> Result<Self>;
}

/// What the trainer reads and changes of a model's state.
pub(crate) trait TraineeState: Send {
    /// The model's name, for messages.
    fn name(&self) -> &str;
    /// The model's graph.
    fn graph(&self) -> &Graph;
    /// Builds the graph (its weights) unless it is built.
    ///
    /// # Errors
    /// A layer that does not fit its input, or no input shape.
    fn build(&mut self) -> Result<()>;
    /// The compile state, once compiled.
    fn compiled(&self) -> Option<&Compiled>;
    /// The compile state, mutable.
    fn compiled_mut(&mut self) -> Option<&mut Compiled>;
    /// Replaces the compile state (a replica's).
    fn set_compiled(&mut self, compiled: Compiled);
    /// The weights' dtype.
    fn dtype(&self) -> DType;
    /// Where the weights live.
    fn device(&self) -> &Device;
    /// The model's seed (shuffling's default).
    fn seed(&self) -> u64;
    /// Whether every layer is differentiated by candle's autograd (`Model::use_autograd`).
    fn autograd(&self) -> bool;
    /// Marks a `fit` as running (or not); returns whether one was.
    fn set_training(&mut self, on: bool) -> bool;
}
