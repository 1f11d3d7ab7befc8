//! Weights and training state in safetensors files, with stable, readable tensor names
//! (`conv2d/kernel`, `dense_1/bias`, `optimizer/slot_0` ...).
//!
//! Files are written to a temporary name in the same folder and renamed into place, so that a
//! crash in the middle of a save leaves the previous file intact. A load checks every tensor's
//! name and shape before it changes anything: nothing is loaded half way.

use super::model::ModelState;
use crate::error::{Error, Result};
use crate::graph::Pass;
use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

const FORMAT_KEY: &str = "format";
const WEIGHTS_FORMAT: &str = "kandle-weights-1";
const MODEL_FORMAT: &str = "kandle-model-1";

fn write(path: &Path, tensors: &[(String, Tensor)], meta: HashMap<String, String>) -> Result<()> {
    let bytes = safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
        .map_err(|e| Error::invalid("path", format!("{}: cannot serialise the tensors: {e}", path.display())))?;
    crate::fs::write_atomic(path, &bytes)
}

/// Whether `path` names a Keras 3 weights file (`.weights.h5`), as Keras' `save_weights`
/// requires.
fn is_keras_weights(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".weights.h5"))
}

struct Loaded {
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

fn read(path: &Path) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Format { path: path.into(), format: "safetensors", offset: 0, reason };
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e:?}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e:?}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let t = view.load(&Device::Cpu).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        tensors.insert(name, t);
    }
    Ok(Loaded { tensors, meta: metadata.metadata().clone().unwrap_or_default() })
}

impl ModelState {
    /// `(name, weight)` for every weight, built first.
    fn named_weight_vars(&mut self) -> Result<Vec<(String, candle_core::Var)>> {
        self.build()?;
        Ok(self.graph.named_weights())
    }

    /// Replaces the weights from `found`, after checking every name and shape.
    fn assign(&mut self, path: &Path, found: &HashMap<String, Tensor>) -> Result<()> {
        let named = self.named_weight_vars()?;
        for (name, var) in &named {
            let t = found.get(name).ok_or_else(|| Error::Format {
                path: path.into(),
                format: "kandle weights",
                offset: 0,
                reason: format!("no tensor {name} (the file holds {}); was it saved from another architecture?", {
                    let mut k: Vec<&String> = found.keys().filter(|k| !k.starts_with("optimizer/")).collect();
                    k.sort();
                    k.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                }),
            })?;
            if t.dims() != var.dims() {
                return Err(Error::Shape {
                    context: format!("weight {name} in {}", path.display()),
                    expected: format!("{:?}", var.dims()),
                    received: format!("{:?}", t.dims()),
                });
            }
        }
        for (name, var) in &named {
            var.set(&found[name].to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }

    pub(crate) fn save_weights_to(&mut self, path: &Path) -> Result<()> {
        if is_keras_weights(path) {
            let tree = self.keras_weights_tree()?;
            let bytes = tree.to_bytes().map_err(|reason| crate::hdf5::error(path, reason))?;
            return crate::fs::write_atomic(path, &bytes);
        }
        let tensors: Vec<(String, Tensor)> =
            self.named_weight_vars()?.into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
        let meta = HashMap::from([(FORMAT_KEY.to_string(), WEIGHTS_FORMAT.to_string())]);
        write(path, &tensors, meta)
    }

    pub(crate) fn load_weights_from(&mut self, path: &Path) -> Result<()> {
        if is_keras_weights(path) {
            let tree = crate::hdf5::read_file(path)?;
            return self.load_keras_weights_tree(&tree, path);
        }
        if super::keras::is_legacy_h5(path) {
            let tree = crate::hdf5::read_file(path)?;
            // Keras 3's layout under a plain `.h5` name (a renamed `.weights.h5`): read as it is.
            if super::keras::holds_keras3_layout(&tree) {
                return self.load_keras_weights_tree(&tree, path);
            }
            return self.load_legacy_h5(&tree, path, super::LoadWeightsOptions::default()).map(|_| ());
        }
        let loaded = read(path)?;
        self.assign(path, &loaded.tensors)
    }

    /// Weights, optimizer state and dropout counters: everything a resumed run needs.
    pub(crate) fn save_to(&mut self, path: &Path) -> Result<()> {
        self.save_to_with(path, &[])
    }

    /// [`ModelState::save_to`] with extra metadata.
    pub(crate) fn save_to_with(&mut self, path: &Path, extra: &[(&str, String)]) -> Result<()> {
        if super::keras::archive::is_keras_archive(path) {
            return self.save_keras(path);
        }
        let mut tensors: Vec<(String, Tensor)> =
            self.named_weight_vars()?.into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
        let mut meta = HashMap::from([
            (FORMAT_KEY.to_string(), MODEL_FORMAT.to_string()),
            ("architecture".to_string(), self.architecture()),
            ("dtype".to_string(), self.dtype.as_str().to_string()),
            ("name".to_string(), self.name.clone()),
        ]);
        if let Some(c) = &self.compiled {
            for (i, t) in c.optimizer.slots().into_iter().enumerate() {
                tensors.push((format!("optimizer/slot_{i}"), t));
            }
            meta.insert("optimizer".into(), c.optimizer.name().into());
            meta.insert("optimizer_iterations".into(), c.optimizer.iterations().to_string());
            meta.insert("learning_rate".into(), c.optimizer.learning_rate().to_string());
            meta.insert(
                "loss".into(),
                serde_json::json!(c.losses.iter().map(|l| l.to_string()).collect::<Vec<_>>()).to_string(),
            );
            meta.insert("loss_weights".into(), serde_json::json!(c.loss_weights).to_string());
            let cfg: serde_json::Map<String, serde_json::Value> = c
                .optimizer
                .config()
                .into_iter()
                .chain(c.optimizer.clipping().config())
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect();
            meta.insert("optimizer_config".into(), serde_json::Value::Object(cfg).to_string());
            if let Some((class, cfg)) = c.optimizer.schedule().and_then(|s| s.config()) {
                let cfg: serde_json::Map<String, serde_json::Value> =
                    cfg.into_iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
                meta.insert("lr_schedule".into(), serde_json::json!({"class": class, "config": cfg}).to_string());
            }
            // Built-in metrics by their spec; a user-defined one by its name, marked as such.
            let metrics: Vec<Vec<String>> = c
                .metrics
                .iter()
                .map(|ms| ms.iter().map(|m| m.spec().unwrap_or_else(|| format!("custom:{}", m.name()))).collect())
                .collect();
            meta.insert("metrics".into(), serde_json::json!(metrics).to_string());
        }
        let state: Vec<String> = self
            .graph
            .layers()
            .iter()
            .map(|l| l.lock().layer.state().iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" "))
            .collect();
        meta.insert("layer_state".into(), state.join(","));
        for (k, v) in extra {
            meta.insert(k.to_string(), v.clone());
        }
        write(path, &tensors, meta)
    }

    /// Loads a full save; returns its metadata.
    pub(crate) fn load_from(&mut self, path: &Path) -> Result<HashMap<String, String>> {
        if super::keras::archive::is_keras_archive(path) {
            // A Keras archive (a ModelCheckpoint's "best.keras"): its weights and optimizer
            // state into this model, checked as load_weights checks them.
            self.load_keras_archive_state(path)?;
            return Ok(HashMap::new());
        }
        let loaded = read(path)?;
        let bad = |reason: String| Error::Format { path: path.into(), format: "kandle model", offset: 0, reason };
        if loaded.meta.get(FORMAT_KEY).map(|s| s.as_str()) != Some(MODEL_FORMAT) {
            return Err(bad(format!(
                "not a kandle model file (format {:?}); weights files load with load_weights",
                loaded.meta.get(FORMAT_KEY)
            )));
        }
        self.build()?;
        let arch = self.architecture();
        let file = loaded.meta.get("architecture").cloned().unwrap_or_default();
        if file != arch && super::architecture::normalized(&file).as_ref() != Some(&arch) {
            return Err(bad(format!(
                "saved from another architecture: {}",
                super::architecture::architecture_difference(&file, &arch)
            )));
        }
        // Check the optimizer state before changing anything.
        let mut slots: Vec<(usize, Tensor)> = loaded
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("optimizer/slot_").and_then(|i| i.parse().ok()).map(|i| (i, t.clone())))
            .collect();
        slots.sort_by_key(|(i, _)| *i);
        let iterations: u64 = loaded.meta.get("optimizer_iterations").and_then(|s| s.parse().ok()).unwrap_or(0);
        let lr: Option<f64> = loaded.meta.get("learning_rate").and_then(|s| s.parse().ok());
        let states: Vec<Vec<u64>> = loaded
            .meta
            .get("layer_state")
            .map(|s| s.split(',').map(|l| l.split_whitespace().filter_map(|v| v.parse().ok()).collect()).collect())
            .unwrap_or_default();
        if let (Some(c), Some(saved)) = (&self.compiled, loaded.meta.get("optimizer")) {
            if !slots.is_empty() && c.optimizer.name() != saved {
                return Err(bad(format!(
                    "its optimizer state is {saved}'s; the model is compiled with {}",
                    c.optimizer.name()
                )));
            }
        }
        // Every slot must be its weight's shape (the optimizer keeps as many per trainable
        // weight, in their order; Nadam one scalar more): checked before anything changes.
        if let (false, Some(c)) = (slots.is_empty(), &self.compiled) {
            let vars = Pass::for_losses(&self.graph, &c.losses, false).vars;
            let names: HashMap<_, _> =
                self.named_weight_vars()?.into_iter().map(|(n, v)| (v.as_tensor().id(), n)).collect();
            if vars.is_empty() || slots.len() < vars.len() {
                return Err(bad(format!(
                    "its optimizer state has {} slot tensors for the model's {} trainable weights",
                    slots.len(),
                    vars.len()
                )));
            }
            let per = slots.len() / vars.len();
            for (k, v) in vars.iter().enumerate() {
                for j in 0..per {
                    let t = &slots[k * per + j].1;
                    if t.dims() != v.dims() {
                        return Err(bad(format!(
                            "optimizer slot {} of weight {} has shape {:?}, the weight {:?}",
                            k * per + j,
                            names.get(&v.as_tensor().id()).cloned().unwrap_or_default(),
                            t.dims(),
                            v.dims()
                        )));
                    }
                }
            }
        }
        // The optimizer state first (put back if the weights then fail), so that a load
        // changes all or nothing.
        let before = self
            .compiled
            .as_ref()
            .map(|c| (c.optimizer.slots(), c.optimizer.iterations(), c.optimizer.learning_rate()));
        if let Some(c) = &mut self.compiled {
            let (dtype, device) = (self.dtype, self.device.clone());
            let slots: Vec<Tensor> = slots
                .into_iter()
                .map(|(_, t)| t.to_dtype(dtype)?.to_device(&device).map_err(Error::from))
                .collect::<Result<_>>()?;
            c.optimizer.set_slots(slots, iterations)?;
            if let Some(lr) = lr {
                c.optimizer.set_learning_rate(lr);
            }
        }
        if let Err(e) = self.assign(path, &loaded.tensors) {
            if let (Some(c), Some((s, i, lr))) = (&mut self.compiled, before) {
                c.optimizer.set_slots(s, i)?;
                c.optimizer.set_learning_rate(lr);
            }
            return Err(e);
        }
        for (l, s) in self.graph.layers().iter().zip(states) {
            l.lock().layer.set_state(&s);
        }
        Ok(loaded.meta)
    }
}

impl super::Model {
    /// Saves the weights to a safetensors file with one tensor per weight, named
    /// `layer/kernel` and `layer/bias` (Keras' `save_weights`). The file is written to a
    /// temporary name and renamed into place.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_weights(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.lock().save_weights_to(path.as_ref())
    }

    /// Loads weights saved by [`Model::save_weights`](crate::models::Model::save_weights) (or [`Model::save`](crate::models::Model::save)). Every tensor's name
    /// and shape is checked before any weight changes.
    ///
    /// # Errors
    /// A missing, truncated or corrupt file; a missing tensor or a tensor of another shape
    /// (the error names it and both shapes).
    pub fn load_weights(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.lock().load_weights_from(path.as_ref())
    }

    /// Loads a legacy Keras 2 / tf.keras `.h5` weights file (or a whole-model `.h5`'s
    /// weights) matching layers by name, skipping mismatched layers, as `opts` says (Keras'
    /// `load_weights(path, by_name=True, skip_mismatch=True)`). Returns the layers skipped,
    /// each with the reason (Keras warns of them). Nothing changes unless every layer that is
    /// not skipped fits.
    ///
    /// # Errors
    /// A file that is not a legacy `.h5` (Keras 3's `.weights.h5` and kandle's files load
    /// with [`Model::load_weights`](crate::models::Model::load_weights)), a layer of another
    /// count or shape of weights (without `skip_mismatch`).
    pub fn load_weights_with(
        &self,
        path: impl AsRef<std::path::Path>,
        opts: super::LoadWeightsOptions,
    ) -> Result<Vec<String>> {
        let path = path.as_ref();
        if !super::keras::is_legacy_h5(path) {
            return Err(Error::invalid(
                "path",
                format!(
                    "{}: by_name and skip_mismatch apply to legacy .h5 files (as in Keras); \
                     load this file with load_weights",
                    path.display()
                ),
            ));
        }
        let tree = crate::hdf5::read_file(path)?;
        self.lock().load_legacy_h5(&tree, path, opts)
    }

    /// Saves everything a resumed run needs: the weights, the optimizer's state (slots, step
    /// count, learning rate), the dropout counters, the trainable flags and a description of
    /// the architecture, in one safetensors file written atomically.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new().seed(0).add(Dense::new(2).input_shape(3));
    /// model.compile(RMSprop::default(), Loss::MeanSquaredError, ())?;
    /// let path = std::env::temp_dir().join("kandle-doc-save.kandle");
    /// model.save(&path)?;
    /// let mut copy = Sequential::new().seed(1).add(Dense::new(2).input_shape(3));
    /// copy.compile(RMSprop::default(), Loss::MeanSquaredError, ())?;
    /// copy.load(&path)?;
    /// assert_eq!(copy.get_weights()?[0].to_vec2::<f32>()?, model.get_weights()?[0].to_vec2::<f32>()?);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.lock().save_to(path.as_ref())
    }

    /// Loads a file written by [`Model::save`](crate::models::Model::save) into this model, which must have the same
    /// architecture; with the optimizer state restored, `fit(.., initial_epoch)` continues the
    /// run. Nothing changes unless the whole file fits. A `.keras` archive (Keras' or a
    /// `ModelCheckpoint("best.keras")`'s) gives its weights and optimizer state the same way.
    ///
    /// # Errors
    /// A missing or corrupt file, another architecture, a tensor of another shape.
    pub fn load(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.lock().load_from(path.as_ref()).map(|_| ())
    }
}

/// Rebuilds a model saved with `save`, as Keras' `load_model`: the architecture (a
/// `Sequential` or a functional model), the weights, the trainable flags, and (when it was
/// compiled) the optimizer with its hyperparameters and state, the losses and the metrics, so
/// that `fit(.., initial_epoch)` continues the run.
///
/// ```
/// use kandle::prelude::*;
/// let model = Sequential::new().seed(0)
///     .add(Conv2D::new(4, 3).activation(Activation::Relu).input_shape((8, 8, 1)))
///     .add(Flatten::new())
///     .add(Dense::new(2).activation(Activation::Softmax));
/// model.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
/// let path = std::env::temp_dir().join("kandle-doc-load-model.kandle");
/// model.save(&path)?;
/// let loaded = kandle::models::load_model(&path)?;
/// assert_eq!(loaded.layer_names(), model.layer_names());
/// assert_eq!(loaded.learning_rate()?, 0.01);
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// A missing or corrupt file, a weights-only file, an unknown layer or optimizer.
pub fn load_model(path: impl AsRef<Path>) -> Result<super::Model> {
    load_model_with(path, &crate::layers::CustomObjects::default())
}

/// [`load_model`] for a model with user-defined layers, whose constructors `custom` gives
/// (Keras' `load_model(path, custom_objects=...)`).
///
/// # Errors
/// As [`load_model`]; a layer class neither built in nor in `custom` is an error naming it.
pub fn load_model_with(path: impl AsRef<Path>, custom: &crate::layers::CustomObjects) -> Result<super::Model> {
    let path = path.as_ref();
    if super::keras::archive::is_keras_archive(path) {
        return super::keras::archive::load_keras(path, custom);
    }
    if super::keras::is_legacy_h5(path) {
        return super::keras::load_legacy_model(path, custom);
    }
    let loaded = read(path)?;
    let bad = |reason: String| Error::Format { path: path.into(), format: "kandle model", offset: 0, reason };
    if loaded.meta.get(FORMAT_KEY).map(|s| s.as_str()) != Some(MODEL_FORMAT) {
        return Err(bad(
            "not a kandle model file (saved with save_weights?): load_model needs a file written by save".into()
        ));
    }
    let arch: serde_json::Value =
        serde_json::from_str(loaded.meta.get("architecture").map(|s| s.as_str()).unwrap_or(""))
            .map_err(|e| bad(format!("architecture: {e}")))?;
    // The weights cannot hold more values than the file: a corrupt architecture must not
    // allocate gigabytes before the load finds the mismatch.
    let budget = loaded.tensors.values().map(|t| t.elem_count()).sum();
    let model = super::architecture::model_from_architecture(&arch, budget, custom).map_err(|e| match e {
        Error::Format { .. } => e,
        other => bad(other.to_string()),
    })?;
    if let Some(d) = loaded.meta.get("dtype") {
        let dtype: candle_core::DType = d.parse().map_err(|_| bad(format!("unknown dtype {d:?}")))?;
        model.dtype(dtype);
    }
    // The model's own name (files of earlier versions have none: the default stays).
    if let Some(name) = loaded.meta.get("name").filter(|n| !n.is_empty()) {
        model.name(name.as_str());
    }
    if let (Some(opt), Some(loss)) = (loaded.meta.get("optimizer"), loaded.meta.get("loss")) {
        let lr: f64 = loaded.meta.get("learning_rate").and_then(|s| s.parse().ok()).unwrap_or(1e-3);
        let cfg: HashMap<String, f64> =
            loaded.meta.get("optimizer_config").and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        // Files of earlier versions hold one loss name and one list of metrics.
        let losses: Vec<String> = serde_json::from_str(loss).unwrap_or_else(|_| vec![loss.clone()]);
        let losses: Vec<crate::losses::Loss> = losses.iter().map(|l| l.parse()).collect::<Result<_>>()?;
        let metrics_json = loaded.meta.get("metrics").map(|s| s.as_str()).unwrap_or("[]");
        let metrics: Vec<Vec<String>> = serde_json::from_str(metrics_json)
            .or_else(|_| serde_json::from_str::<Vec<String>>(metrics_json).map(|m| vec![m]))
            .unwrap_or_default();
        let metrics: Vec<Vec<crate::metrics::MetricEntry>> = metrics
            .iter()
            .map(|ms| {
                ms.iter()
                    .map(|m| match m.strip_prefix("custom:") {
                        Some(name) => custom.metric_entry(name),
                        None => Ok(crate::metrics::MetricEntry::from(m.as_str())),
                    })
                    .collect::<Result<_>>()
            })
            .collect::<Result<_>>()?;
        let mut spec = super::Losses::new(losses);
        if let Some(w) = loaded.meta.get("loss_weights").and_then(|s| serde_json::from_str::<Vec<f64>>(s).ok()) {
            spec = spec.weights(w);
        }
        let metrics = if metrics.is_empty() { vec![Vec::new()] } else { metrics };
        let mut optimizer = crate::optimizers::from_config(opt, lr, &cfg)?;
        // The learning-rate schedule, resumed at the saved step (the optimizer's iterations).
        if let Some(sched) = loaded.meta.get("lr_schedule") {
            let v: serde_json::Value = serde_json::from_str(sched).map_err(|e| bad(format!("lr_schedule: {e}")))?;
            let class = v["class"].as_str().unwrap_or_default();
            let cfg: HashMap<String, f64> =
                serde_json::from_value(v["config"].clone()).map_err(|e| bad(format!("lr_schedule: {e}")))?;
            optimizer.set_schedule(Some(crate::optimizers::schedules::from_config(class, &cfg)?));
        }
        model.compile(optimizer, spec, metrics)?;
    }
    model.load(path)?;
    model.lock().weight_budget = usize::MAX;
    Ok(model)
}
