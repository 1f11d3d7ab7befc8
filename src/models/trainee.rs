//! The model as the trainer and the callbacks reach it: [`Model`] is a
//! [`Trainee`](crate::trainers::Trainee) (its state, locked step by step, and copies of itself
//! for replicas) and a [`CallbackModel`] (what a callback's context reads and changes).

use super::model::{Model, ModelState};
use crate::callbacks::CallbackModel;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::layers::CustomObjects;
use crate::metrics::Direction;
use crate::trainers::{Compiled, Trainee, TraineeState};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::MutexGuard;

impl TraineeState for ModelState {
    fn name(&self) -> &str {
        &self.name
    }
    fn graph(&self) -> &Graph {
        &self.graph
    }
    fn build(&mut self) -> Result<()> {
        ModelState::build(self)
    }
    fn compiled(&self) -> Option<&Compiled> {
        self.compiled.as_ref()
    }
    fn compiled_mut(&mut self) -> Option<&mut Compiled> {
        self.compiled.as_mut()
    }
    fn set_compiled(&mut self, compiled: Compiled) {
        self.compiled = Some(compiled);
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn autograd(&self) -> bool {
        self.autograd || std::env::var_os("KANDLE_AUTOGRAD").is_some()
    }
    fn set_training(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.training, on)
    }
}

impl CallbackModel for Model {
    fn optimizer_learning_rate(&self) -> f64 {
        self.learning_rate().unwrap_or(0.0)
    }
    fn set_optimizer_learning_rate(&self, lr: f64) -> Result<()> {
        match self.set_learning_rate(lr) {
            Err(Error::NotCompiled(_)) => Ok(()),
            other => other,
        }
    }
    fn optimizer_iterations(&self) -> u64 {
        self.lock().compiled.as_ref().map(|c| c.optimizer.iterations()).unwrap_or(0)
    }
    fn weight_values(&self) -> Result<Vec<Tensor>> {
        self.get_weights()
    }
    fn set_weight_values(&self, weights: &[Tensor]) -> Result<()> {
        self.set_weights(weights)
    }
    /// Keras 3's `weight.path`: `sequential/conv2d/kernel` in a `Sequential` (its layers are
    /// built in its name scope), `conv2d/kernel` in a functional model.
    fn weight_paths(&self) -> Result<Vec<(String, Tensor)>> {
        let mut inner = self.lock();
        inner.build()?;
        let scope = if inner.graph.is_stack() { format!("{}/", inner.name) } else { String::new() };
        inner
            .graph
            .named_weights()
            .into_iter()
            .map(|(n, v)| Ok((format!("{scope}{n}"), v.as_tensor().copy()?)))
            .collect()
    }
    fn save_with(&self, path: &std::path::Path, extra: &[(&str, String)]) -> Result<()> {
        self.lock().save_to_with(path, extra)
    }
    fn save_weights_to(&self, path: &std::path::Path) -> Result<()> {
        self.save_weights(path)
    }
    fn load_with_metadata(&self, path: &std::path::Path) -> Result<HashMap<String, String>> {
        self.lock().load_from(path)
    }
    fn metric_direction(&self, key: &str) -> Option<Direction> {
        let inner = self.lock();
        let outputs = if inner.graph.is_built() { inner.graph.output_names() } else { Vec::new() };
        inner.compiled.as_ref()?.metric_direction(key, &outputs)
    }
}

impl Trainee for Model {
    type State = ModelState;
    fn state(&self) -> MutexGuard<'_, ModelState> {
        self.lock()
    }
    fn replica(&self, device: &Device, custom: &CustomObjects) -> Result<Model> {
        let (arch, dtype, seed, autograd) = {
            let inner = self.lock();
            (inner.architecture_json(), inner.dtype, inner.seed, inner.autograd)
        };
        let model = super::architecture::model_from_architecture(&arch, usize::MAX, custom)?;
        {
            let mut inner = model.lock();
            inner.device = device.clone();
            inner.dtype = dtype;
            inner.seed = seed;
            inner.seed_set = true;
            inner.autograd = autograd;
            inner.build()?;
        }
        Ok(model)
    }
}
