//! The legacy Keras 2 / tf.keras HDF5 files (`legacy/saving/legacy_h5_format.py`): weights
//! saved by `model.save_weights("w.h5")` (every `keras.applications` ImageNet file is one) and
//! whole models saved by `model.save("m.h5")`.
//!
//! A weights group lists its layers in the attribute `layer_names` (split into
//! `layer_names0`, `layer_names1` ... when long); each layer's group lists its weights in
//! `weight_names` (`conv1/kernel:0`), datasets at those paths under the layer's group, in the
//! order `layer.trainable_weights + layer.non_trainable_weights`. A whole-model file keeps the
//! weights under `model_weights`, the architecture as JSON in the root's `model_config` and the
//! compile settings in `training_config`.

use crate::error::{Error, Result};
use crate::hdf5::{Attr, Dataset, Group};
use crate::models::model::ModelState;
use candle_core::{Tensor, Var};
use std::path::Path;

/// How [`Model::load_weights_with`](crate::models::Model::load_weights_with) matches a legacy
/// `.h5` file's layers to the model's (Keras' `load_weights(path, by_name=...,
/// skip_mismatch=...)`).
///
/// ```
/// use kandle::models::LoadWeightsOptions;
/// let opts = LoadWeightsOptions::default().by_name(true).skip_mismatch(true);
/// assert!(opts.is_by_name());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadWeightsOptions {
    by_name: bool,
    skip_mismatch: bool,
}

impl LoadWeightsOptions {
    /// Match layers by name instead of by order (Keras' `by_name=True`): layers of the model
    /// that the file does not name keep their weights.
    pub fn by_name(mut self, on: bool) -> Self {
        self.by_name = on;
        self
    }
    /// Skip a layer whose weights in the file are of another count or shape instead of failing
    /// (Keras' `skip_mismatch=True`, with `by_name`); the skipped layers are returned.
    pub fn skip_mismatch(mut self, on: bool) -> Self {
        self.skip_mismatch = on;
        self
    }
    /// Whether layers are matched by name.
    pub fn is_by_name(&self) -> bool {
        self.by_name
    }
}

/// Whether `path` names a legacy HDF5 file (`.h5` or `.hdf5`, not `.weights.h5`).
pub(crate) fn is_legacy_h5(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    (name.ends_with(".h5") || name.ends_with(".hdf5")) && !name.ends_with(".weights.h5")
}

/// Whether an HDF5 file holds Keras 3's weights layout (`layers/.../vars`) rather than the
/// legacy one (a `layer_names` attribute): a `.weights.h5` file under a plain `.h5` name.
pub(crate) fn holds_keras3_layout(root: &Group) -> bool {
    root.groups.contains_key("layers")
        && !root.groups.contains_key("model_weights")
        && string_list(root, "layer_names").is_none()
}

fn format_error(path: &Path, reason: String) -> Error {
    Error::Format { path: path.into(), format: "legacy Keras HDF5", offset: 0, reason }
}

/// An attribute that may be split into `name0`, `name1` ... (Keras' `load_attributes_from_hdf5_group`).
fn string_list(g: &Group, name: &str) -> Option<Vec<String>> {
    if let Some(a) = g.attrs.get(name) {
        return a.strings();
    }
    let mut out = Vec::new();
    for i in 0.. {
        match g.attrs.get(&format!("{name}{i}")) {
            Some(a) => out.extend(a.strings()?),
            None if i == 0 => return None,
            None => break,
        }
    }
    Some(out)
}

/// The weights group of a file: `model_weights` of a whole-model file, else the root.
pub(crate) fn weights_group<'a>(root: &'a Group, path: &Path) -> Result<&'a Group> {
    let g = root.groups.get("model_weights").unwrap_or(root);
    if string_list(g, "layer_names").is_none() {
        return Err(format_error(
            path,
            "no layer_names attribute: not a Keras weights file (a Keras 3 file ends in .weights.h5)".into(),
        ));
    }
    Ok(g)
}

/// `(layer name, its weights in the file's order)` for every layer the file lists.
/// A layer of a legacy file: its name and its weights (name, values) in the file's order.
type FileLayer<'a> = (String, Vec<(String, &'a Dataset)>);

fn file_layers<'a>(g: &'a Group, path: &Path) -> Result<Vec<FileLayer<'a>>> {
    let names = string_list(g, "layer_names").unwrap_or_default();
    let mut out = Vec::new();
    for name in names {
        let lg = g
            .groups
            .get(&name)
            .ok_or_else(|| format_error(path, format!("layer_names lists {name}, which has no group")))?;
        let weight_names = string_list(lg, "weight_names").unwrap_or_default();
        let mut ws = Vec::new();
        for wn in weight_names {
            let d = lg.dataset(&wn).ok_or_else(|| format_error(path, format!("layer {name}: no dataset {wn}")))?;
            ws.push((wn, d));
        }
        out.push((name, ws));
    }
    Ok(out)
}

/// A layer's weights in the legacy order: trainable first, then the others.
fn legacy_weights(l: &crate::layers::LayerRef) -> Vec<(String, Var)> {
    let ws = l.weights();
    let (t, n): (Vec<_>, Vec<_>) = ws.into_iter().partition(|w| w.trainable);
    t.into_iter().chain(n).map(|w| (w.name, w.var)).collect()
}

impl ModelState {
    /// Loads a legacy HDF5 weights file (or a whole-model file's weights). Returns the layers
    /// skipped (with `skip_mismatch`), each with the reason.
    pub(crate) fn load_legacy_h5(
        &mut self,
        root: &Group,
        path: &Path,
        opts: LoadWeightsOptions,
    ) -> Result<Vec<String>> {
        self.build()?;
        let g = weights_group(root, path)?;
        let in_file: Vec<_> = file_layers(g, path)?;
        let layers: Vec<crate::layers::LayerRef> = self
            .graph
            .keras_order()
            .into_iter()
            .filter_map(
                |op| if let crate::graph::Op::Layer(j) = op { Some(self.graph.layers()[j].clone()) } else { None },
            )
            .collect();
        let mut assign: Vec<(Var, Tensor)> = Vec::new();
        let mut skipped = Vec::new();
        let mut check = |label: &str,
                         file_name: &str,
                         ours: &[(String, Var)],
                         theirs: &[(String, &Dataset)],
                         assign: &mut Vec<(Var, Tensor)>|
         -> Result<()> {
            let mismatch = if ours.len() != theirs.len() {
                Some(format!(
                    "layer {label} has {} weights, the file's layer {file_name} {} ({})",
                    ours.len(),
                    theirs.len(),
                    theirs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ))
            } else {
                ours.iter().zip(theirs).find(|((_, v), (_, d))| v.dims() != d.shape.as_slice()).map(
                    |((n, v), (wn, d))| {
                        format!("layer {label}'s {n} has shape {:?}, the file's {wn} {:?}", v.dims(), d.shape)
                    },
                )
            };
            if let Some(m) = mismatch {
                if opts.skip_mismatch {
                    skipped.push(m);
                    return Ok(());
                }
                return Err(format_error(path, m));
            }
            for ((_, v), (_, d)) in ours.iter().zip(theirs) {
                assign.push((v.clone(), Tensor::from_vec(d.data.to_f32(), v.dims(), v.device())?.to_dtype(v.dtype())?));
            }
            Ok(())
        };
        if opts.by_name {
            for l in &layers {
                let name = l.name();
                if let Some((_, theirs)) = in_file.iter().find(|(n, _)| *n == name) {
                    check(&name, &name, &legacy_weights(l), theirs, &mut assign)?;
                }
            }
        } else {
            let ours: Vec<_> =
                layers.iter().map(|l| (l.name(), legacy_weights(l))).filter(|(_, w)| !w.is_empty()).collect();
            let theirs: Vec<_> = in_file.iter().filter(|(_, w)| !w.is_empty()).collect();
            if ours.len() != theirs.len() {
                return Err(format_error(
                    path,
                    format!(
                        "the file has {} layers with weights, the model {} (load by name with \
                         LoadWeightsOptions::default().by_name(true) to match the layers by name)",
                        theirs.len(),
                        ours.len()
                    ),
                ));
            }
            for ((name, ws), (fname, fws)) in ours.iter().zip(theirs) {
                check(name, fname, ws, fws, &mut assign)?;
            }
        }
        for (v, t) in assign {
            v.set(&t)?;
        }
        Ok(skipped)
    }
}

/// `load_model` of a legacy whole-model `.h5`: `model_config`, `training_config` and the weights.
pub(crate) fn load_legacy_model(path: &Path, custom: &crate::layers::CustomObjects) -> Result<crate::models::Model> {
    let root = crate::hdf5::read_file(path)?;
    let config = match root.attrs.get("model_config") {
        Some(Attr::Str(s)) => s.clone(),
        _ => {
            return Err(format_error(
                path,
                "no model_config attribute: a weights-only file (load it with load_weights into a model)".into(),
            ))
        }
    };
    let config: serde_json::Value =
        serde_json::from_str(&config).map_err(|e| format_error(path, format!("model_config: {e}")))?;
    let named = |e: Error| match e {
        Error::InvalidArgument { name: "config.json", reason } => format_error(path, format!("model_config: {reason}")),
        other => other,
    };
    let (arch, name) = super::config::model_from_keras(&config).map_err(named)?;
    // The weights cannot hold more values than the file: a model_config declaring huge layers
    // must not allocate before the load finds the mismatch.
    let budget = super::archive::count_values(&root);
    let model = crate::models::architecture::model_from_architecture(&arch, budget, custom).map_err(named)?;
    model.name(name.as_str());
    if let Some(Attr::Str(t)) = root.attrs.get("training_config") {
        let t: serde_json::Value =
            serde_json::from_str(t).map_err(|e| format_error(path, format!("training_config: {e}")))?;
        let mut compile = t.clone();
        compile["optimizer"] = t["optimizer_config"].clone();
        super::archive::compile_from_keras(&model, &compile, custom).map_err(named)?;
    }
    model.lock().load_legacy_h5(&root, path, LoadWeightsOptions::default())?;
    model.lock().weight_budget = usize::MAX;
    Ok(model)
}
