//! A model's architecture as JSON: what kandle's files store, `load_model` rebuilds, and Keras'
//! configs are converted to and from (`keras/config.rs`).

use super::model::ModelState;
use crate::error::{Error, Result};
use crate::layers::Config;

impl ModelState {
    /// The architecture as JSON, stored with full saves, checked on load and read by
    /// [`load_model`]: each layer's class, name, configuration (Keras' `get_config`) and
    /// trainable flag; for a functional model also its inputs, its nodes (the layer called and
    /// the tensors it was called on, `"input:i"` or `"node:k"`) and its outputs; for a stack its
    /// input shape.
    pub(crate) fn architecture_json(&self) -> serde_json::Value {
        let layer_json = |l: &crate::layers::LayerRef| {
            let cell = l.lock();
            let mut v = serde_json::json!({
                "class": cell.layer.class_name(),
                "name": cell.name.clone().unwrap_or_default(),
                "config": cell.layer.get_config().to_json(),
            });
            // Keras' `dtype` of a layer's config, written when it is not the default.
            let policy = cell.layer.dtype_policy();
            if policy != crate::mixed_precision::DTypePolicy::Float32 {
                v["config"]["dtype"] = serde_json::Value::String(policy.name().into());
            }
            if !cell.trainable {
                v["trainable"] = serde_json::Value::Bool(false);
            }
            v
        };
        let layers: Vec<serde_json::Value> = self.graph.layers().iter().map(layer_json).collect();
        let topology = self.graph.topology().ok();
        if self.graph.is_stack() {
            let input = topology.and_then(|t| t.input_shapes.into_iter().next()).unwrap_or_default();
            return serde_json::json!({"input_shape": input, "layers": layers});
        }
        let inputs = self.graph.input_layers();
        let t = topology.expect("a functional graph's topology is declared");
        let tensor =
            |i: usize| if i < inputs.len() { format!("input:{i}") } else { format!("node:{}", i - inputs.len()) };
        let nodes: Vec<serde_json::Value> = t
            .nodes
            .iter()
            .map(|n| {
                let mut v = serde_json::json!({"layer": n.layer, "inputs": n.inputs.iter().map(|&i| tensor(i)).collect::<Vec<_>>()});
                if let Some(training) = n.training {
                    v["training"] = serde_json::Value::Bool(training);
                }
                v
            })
            .collect();
        let input_json: Vec<serde_json::Value> = inputs
            .iter()
            .zip(&t.input_shapes)
            .map(|(l, s)| serde_json::json!({"name": l.name(), "shape": s}))
            .collect();
        serde_json::json!({
            "class": "Functional",
            "inputs": input_json,
            "layers": layers,
            "nodes": nodes,
            "outputs": t.outputs.iter().map(|&i| tensor(i)).collect::<Vec<_>>(),
        })
    }

    /// [`ModelState::architecture_json`] as text.
    pub(crate) fn architecture(&self) -> String {
        self.architecture_json().to_string()
    }
}

/// An architecture written by an earlier kandle (its configurations as text), as this one writes
/// it: the model it describes, made and written again (`None` when it cannot be made: a
/// user-defined layer, a corrupt file).
pub(crate) fn normalized(file: &str) -> Option<String> {
    let arch: serde_json::Value = serde_json::from_str(file).ok()?;
    let model = model_from_architecture(&arch, 0, &crate::layers::CustomObjects::default()).ok()?;
    let inner = model.lock();
    Some(inner.architecture())
}

/// The first difference between two architectures (as [`ModelState::architecture`] writes them),
/// in words: the layer (its position, name and class) and the settings that differ.
pub(crate) fn architecture_difference(file: &str, model: &str) -> String {
    use serde_json::Value;
    let (Ok(f), Ok(m)) = (serde_json::from_str::<Value>(file), serde_json::from_str::<Value>(model)) else {
        return "the file's architecture cannot be read".into();
    };
    let empty = Vec::new();
    let layers = |v: &Value| v.get("layers").and_then(Value::as_array).cloned().unwrap_or_else(|| empty.clone());
    let (fl, ml) = (layers(&f), layers(&m));
    let label = |l: &Value| {
        format!(
            "{} ({})",
            l.get("name").and_then(Value::as_str).unwrap_or("?"),
            l.get("class").and_then(Value::as_str).unwrap_or("?")
        )
    };
    for (i, (a, b)) in fl.iter().zip(&ml).enumerate() {
        if a == b {
            continue;
        }
        if a.get("class") != b.get("class") || a.get("name") != b.get("name") {
            return format!("layer {}: the file has {}, the model has {}", i + 1, label(a), label(b));
        }
        let cfg = |v: &Value| v.get("config").and_then(Value::as_object).cloned().unwrap_or_default();
        let (ca, cb) = (cfg(a), cfg(b));
        let mut keys: Vec<&String> = ca.keys().chain(cb.keys()).collect();
        keys.sort();
        keys.dedup();
        let show = |c: &serde_json::Map<String, Value>, k: &str| match c.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "(none)".into(),
        };
        let diffs: Vec<String> = keys
            .into_iter()
            .filter(|k| ca.get(*k) != cb.get(*k))
            .map(|k| format!("{k} {} in the file, {} in the model", show(&ca, k), show(&cb, k)))
            .collect();
        if diffs.is_empty() {
            return format!("layer {} {}: its trainable flag differs", i + 1, label(a));
        }
        return format!("layer {} {}: {}", i + 1, label(a), diffs.join("; "));
    }
    if fl.len() != ml.len() {
        let extra = if fl.len() > ml.len() { &fl[ml.len()] } else { &ml[fl.len()] };
        return format!("the file has {} layers, the model {} (first extra: {})", fl.len(), ml.len(), label(extra));
    }
    for key in ["input_shape", "inputs", "nodes", "outputs"] {
        if f.get(key) != m.get(key) {
            let show = |v: &Value| v.get(key).map(|x| x.to_string()).unwrap_or_else(|| "(none)".into());
            let (a, b) = (show(&f), show(&m));
            let cut = |s: String| if s.len() > 120 { format!("{}...", &s[..s.floor_char_boundary(117)]) } else { s };
            return format!(
                "the layers are the same but their {key} differ: {} in the file, {} in the model",
                cut(a),
                cut(b)
            );
        }
    }
    "they differ in a setting outside the layers".into()
}

/// A model (unbuilt weights aside) from [`ModelState::architecture`]'s JSON.
pub(crate) fn model_from_architecture(
    arch: &serde_json::Value,
    budget: usize,
    custom: &crate::layers::CustomObjects,
) -> Result<super::Model> {
    let bad = |reason: String| Error::invalid("architecture", reason);
    let layers = arch["layers"].as_array().ok_or_else(|| bad("no layer list".into()))?;
    let make = |i: usize, l: &serde_json::Value, input: Option<Vec<usize>>| -> Result<crate::layers::LayerRef> {
        let class = l["class"].as_str().ok_or_else(|| bad(format!("layer {i} has no class")))?;
        let name = l["name"].as_str().unwrap_or_default();
        if !l["config"].is_object() {
            return Err(bad(format!("layer {name}: its config is not an object")));
        }
        let cfg = Config::from_json(&l["config"]);
        let layer = if class == "Sequential" || class == "Functional" {
            // kandle 0.1 kept the inner architecture as text.
            let inner: serde_json::Value = match &cfg["model"] {
                serde_json::Value::String(s) => {
                    serde_json::from_str(s).map_err(|e| bad(format!("layer {name}: {e}")))?
                }
                other => other.clone(),
            };
            let nested = model_from_architecture(&inner, budget, custom)?;
            nested.name(name);
            nested.as_layer()
        } else {
            crate::layers::LayerRef::new(crate::layers::from_config_with(class, name, &cfg, input, custom)?)
        };
        if l["trainable"] == serde_json::Value::Bool(false) {
            layer.set_trainable(false);
        }
        Ok(layer)
    };
    let model = if arch["class"] == "Functional" {
        let inputs = arch["inputs"].as_array().ok_or_else(|| bad("no input list".into()))?;
        let mut tensors: Vec<crate::layers::KerasTensor> = Vec::new();
        for t in inputs {
            let shape: Vec<usize> =
                serde_json::from_value(t["shape"].clone()).map_err(|e| bad(format!("input shape: {e}")))?;
            tensors.push(crate::layers::Input::named(shape, t["name"].as_str().unwrap_or("input_layer")));
        }
        let n_inputs = tensors.len();
        let refs: Vec<crate::layers::LayerRef> =
            layers.iter().enumerate().map(|(i, l)| make(i, l, None)).collect::<Result<_>>()?;
        let tensor =
            |name: &serde_json::Value, tensors: &[crate::layers::KerasTensor]| -> Result<crate::layers::KerasTensor> {
                let s = name.as_str().unwrap_or_default();
                let idx = match s.split_once(':') {
                    Some(("input", i)) => i.parse::<usize>().ok().filter(|&i| i < n_inputs),
                    Some(("node", k)) => k.parse::<usize>().ok().map(|k| n_inputs + k),
                    _ => None,
                };
                idx.and_then(|i| tensors.get(i).cloned()).ok_or_else(|| bad(format!("unknown tensor {s:?}")))
            };
        for n in arch["nodes"].as_array().ok_or_else(|| bad("no node list".into()))? {
            let layer = n["layer"]
                .as_u64()
                .and_then(|i| refs.get(i as usize))
                .ok_or_else(|| bad("node of unknown layer".into()))?;
            let ins: Vec<crate::layers::KerasTensor> = n["inputs"]
                .as_array()
                .ok_or_else(|| bad("node without inputs".into()))?
                .iter()
                .map(|t| tensor(t, &tensors))
                .collect::<Result<_>>()?;
            tensors.push(match n["training"].as_bool() {
                Some(training) => layer.call_training(ins, training)?,
                None => layer.call(ins)?,
            });
        }
        let outputs: Vec<crate::layers::KerasTensor> = arch["outputs"]
            .as_array()
            .ok_or_else(|| bad("no output list".into()))?
            .iter()
            .map(|t| tensor(t, &tensors))
            .collect::<Result<_>>()?;
        super::Model::new(&tensors[..n_inputs], &outputs)?
    } else {
        let input: Vec<usize> =
            serde_json::from_value(arch["input_shape"].clone()).map_err(|e| bad(format!("input_shape: {e}")))?;
        let model = super::Sequential::new();
        for (i, l) in layers.iter().enumerate() {
            model.add(make(i, l, (i == 0).then(|| input.clone()))?);
        }
        model.model()
    };
    model.lock().weight_budget = budget;
    Ok(model)
}
