//! Keras 3's serialized configuration (`config.json` of a `.keras` archive,
//! `saving/serialization_lib.py`), both ways: kandle's architecture (as
//! [`ModelState::architecture_json`](super::model::ModelState) writes it) to Keras' `Sequential`
//! / `Functional` config, and back.
//!
//! Reading is strict: every option of a Keras layer is either one kandle reads, or must hold
//! Keras' default (`data_format: "channels_last"`, `groups: 1`, no constraint ...); anything
//! else is an error naming the layer, the option and its value, never silently dropped.

use super::options::{options, INITIALIZERS};
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};

fn bad(reason: String) -> Error {
    Error::invalid("config.json", reason)
}

/// Keras' dtype policy object for `name` (`float32`, `mixed_float16`).
fn dtype_policy(name: &str) -> Value {
    json!({"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": null})
}

/// kandle's regularizer text (`l2(0.01)`) as Keras' serialized regularizer.
fn regularizer_to_keras(text: &str) -> Result<Value> {
    let r: crate::regularizers::Regularizer = text.parse()?;
    use crate::regularizers::Regularizer as R;
    let (class, config) = match r {
        R::L1(a) => ("L1", json!({"l1": a})),
        R::L2(b) => ("L2", json!({"l2": b})),
        R::L1L2(a, b) => ("L1L2", json!({"l1": a, "l2": b})),
    };
    Ok(json!({"module": "keras.regularizers", "class_name": class, "config": config, "registered_name": null}))
}

/// Keras' serialized regularizer as kandle's text.
fn regularizer_from_keras(v: &Value, at: &str) -> Result<Value> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    if let Some(s) = v.as_str() {
        return Ok(Value::String(s.to_string()));
    }
    let f = |k: &str| v["config"][k].as_f64().unwrap_or(0.0);
    Ok(Value::String(match v["class_name"].as_str() {
        Some("L1") => format!("l1({})", f("l1")),
        Some("L2") => format!("l2({})", f("l2")),
        Some("L1L2") => format!("l1_l2({}, {})", f("l1"), f("l2")),
        other => {
            return Err(bad(format!("{at}: regularizer {} is not one kandle has (L1, L2, L1L2)", other.unwrap_or("?"))))
        }
    }))
}

/// Keys every layer's config may hold besides its own options.
const COMMON: &[&str] = &["name", "trainable", "dtype"];

/// A Keras layer's `config` as kandle's: the options checked, the values in kandle's forms.
fn layer_config_from_keras(class: &str, name: &str, config: &Map<String, Value>) -> Result<Value> {
    let at = format!("layer {name} ({class})");
    let Some(opts) = options(class) else {
        // A user-defined class: its options as they are, for its CustomObjects constructor.
        let mut out = config.clone();
        out.remove("name");
        out.remove("trainable");
        out.remove("dtype");
        return Ok(Value::Object(out));
    };
    let mut out = Map::new();
    for (k, v) in config {
        if COMMON.contains(&k.as_str()) {
            continue;
        }
        if opts.read.contains(&k.as_str()) {
            let v = match (class, k.as_str()) {
                (_, key) if key.ends_with("_regularizer") => regularizer_from_keras(v, &at)?,
                ("ZeroPadding2D" | "Cropping2D", _) => flatten_pairs(v, &at, k)?,
                // The augmentation layers keep their seed; kandle draws dropout masks from the
                // model's seed.
                ("Dropout" | "SpatialDropout2D", "seed") => continue,
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        } else if let Some((_, allowed)) = opts.fixed.iter().find(|(f, _)| f == k) {
            if !allowed.contains(v) {
                return Err(bad(format!(
                    "{at}: option {k} = {v} is not supported by kandle (it takes {})",
                    allowed.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" or ")
                )));
            }
        } else if opts.initializers.contains(&k.as_str()) {
            let init = v["class_name"].as_str().or(v.as_str()).unwrap_or("?");
            if !INITIALIZERS.iter().any(|i| i.eq_ignore_ascii_case(&init.replace('_', ""))) {
                return Err(bad(format!("{at}: {k} {init} is not an initializer kandle knows")));
            }
            // Kept where kandle's layer has the option and the class (the weights come from
            // the file either way).
            let kept = matches!(class, "Conv2D" | "Conv2DTranspose" | "Dense")
                && matches!(k.as_str(), "kernel_initializer" | "bias_initializer");
            if kept && crate::initializers::Initializer::from_keras(v).is_some() {
                out.insert(k.clone(), v.clone());
            }
        } else {
            return Err(bad(format!("{at}: option {k} = {v} is not one kandle knows for {class}")));
        }
    }
    if let Some(d) = config.get("dtype") {
        let policy = d["config"]["name"].as_str().or(d.as_str()).unwrap_or("float32");
        out.insert("dtype".into(), Value::String(policy.to_string()));
    }
    if matches!(class, "MaxPooling2D" | "AveragePooling2D") && out.get("strides").is_none_or(Value::is_null) {
        let pool = out.get("pool_size").cloned().unwrap_or(json!([2, 2]));
        out.insert("strides".into(), pool);
    }
    Ok(Value::Object(out))
}

/// Keras' `[[top, bottom], [left, right]]` (or `n`, or `[v, h]`) as kandle's `[t, b, l, r]`.
fn flatten_pairs(v: &Value, at: &str, key: &str) -> Result<Value> {
    let n = |x: &Value| x.as_u64().ok_or_else(|| bad(format!("{at}: cannot read {key} = {v}")));
    Ok(match v {
        Value::Number(_) => {
            let a = n(v)?;
            json!([a, a, a, a])
        }
        Value::Array(a) if a.len() == 2 && a.iter().all(Value::is_number) => {
            let (h, w) = (n(&a[0])?, n(&a[1])?);
            json!([h, h, w, w])
        }
        Value::Array(a) if a.len() == 2 => {
            let pair = |x: &Value| -> Result<(u64, u64)> {
                match x.as_array().map(|p| p.as_slice()) {
                    Some([p, q]) => Ok((n(p)?, n(q)?)),
                    _ => Err(bad(format!("{at}: cannot read {key} = {v}"))),
                }
            };
            let ((t, b), (l, r)) = (pair(&a[0])?, pair(&a[1])?);
            json!([t, b, l, r])
        }
        _ => return Err(bad(format!("{at}: cannot read {key} = {v}"))),
    })
}

/// kandle's layer config as Keras': values in Keras' forms, name, trainable flag and dtype.
fn layer_config_to_keras(class: &str, name: &str, trainable: bool, config: &Value) -> Result<Value> {
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    let policy = config.get("dtype").and_then(Value::as_str).unwrap_or("float32");
    if class == "SpatialDropout2D" {
        // Keras 3.15's SpatialDropout2D takes no `trainable` and a plain dtype name.
        out.insert("dtype".into(), json!(policy));
    } else {
        out.insert("trainable".into(), json!(trainable));
        out.insert("dtype".into(), dtype_policy(policy));
    }
    if let Some(obj) = config.as_object() {
        for (k, v) in obj {
            if k == "dtype" {
                continue;
            }
            let v = match (class, k.as_str()) {
                (_, key) if key.ends_with("_regularizer") => match v.as_str() {
                    Some(text) => regularizer_to_keras(text)?,
                    None => Value::Null,
                },
                ("ZeroPadding2D" | "Cropping2D", _) => match v.as_array().map(|a| a.as_slice()) {
                    Some([t, b, l, r]) => json!([[t, b], [l, r]]),
                    _ => v.clone(),
                },
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        }
    }
    Ok(Value::Object(out))
}

fn module_of(class: &str) -> &'static str {
    match class {
        "Sequential" | "Functional" => "keras",
        _ => "keras.layers",
    }
}

/// A `__keras_tensor__` reference to output `node` of layer `layer`.
fn keras_tensor(layer: &str, node: usize, shape: Option<&Vec<usize>>) -> Value {
    let shape: Value = match shape {
        Some(s) => Value::Array(std::iter::once(Value::Null).chain(s.iter().map(|&d| json!(d))).collect()),
        None => Value::Null,
    };
    json!({"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": "float32", "keras_history": [layer, node, 0]}})
}

/// kandle's architecture (with the model's name, and the shape of each tensor of a functional
/// model when known: inputs then nodes) as Keras' model config.
pub(crate) fn model_to_keras(arch: &Value, name: &str, shapes: &[Vec<usize>]) -> Result<Value> {
    let layers = arch["layers"].as_array().cloned().unwrap_or_default();
    let entry = |l: &Value| -> Result<(String, String, Value)> {
        let class = l["class"].as_str().unwrap_or_default().to_string();
        let lname = l["name"].as_str().unwrap_or_default().to_string();
        let trainable = l["trainable"].as_bool().unwrap_or(true);
        let body = if class == "Sequential" || class == "Functional" {
            let inner = &l["config"]["model"];
            let mut m = model_to_keras(inner, &lname, &[])?;
            m["config"]["trainable"] = json!(trainable);
            m
        } else {
            let config = layer_config_to_keras(&class, &lname, trainable, &l["config"])?;
            json!({"module": module_of(&class), "class_name": class, "config": config, "registered_name": null})
        };
        Ok((class, lname, body))
    };
    if arch["class"] != "Functional" {
        let input: Vec<Value> = arch["input_shape"].as_array().cloned().unwrap_or_default();
        let batch_shape: Vec<Value> = std::iter::once(Value::Null).chain(input).collect();
        let mut out = vec![json!({
            "module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": batch_shape, "dtype": "float32", "sparse": false, "ragged": false, "name": "input_layer", "optional": false},
            "registered_name": null
        })];
        for l in &layers {
            out.push(entry(l)?.2);
        }
        return Ok(json!({
            "module": "keras", "class_name": "Sequential",
            "config": {"name": name, "trainable": true, "dtype": dtype_policy("float32"), "layers": out},
            "registered_name": null,
            "build_config": {"input_shape": batch_shape}
        }));
    }
    let inputs = arch["inputs"].as_array().cloned().unwrap_or_default();
    let nodes = arch["nodes"].as_array().cloned().unwrap_or_default();
    let n_in = inputs.len();
    // Each tensor as (layer name, node index of that layer).
    let mut history: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::new();
    for t in &inputs {
        let iname = t["name"].as_str().unwrap_or("input_layer").to_string();
        let shape: Vec<Value> =
            std::iter::once(Value::Null).chain(t["shape"].as_array().cloned().unwrap_or_default()).collect();
        out.push(json!({
            "module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": shape, "dtype": "float32", "sparse": false, "ragged": false, "name": iname, "optional": false},
            "registered_name": null, "name": iname, "inbound_nodes": []
        }));
        history.push((iname, 0));
    }
    let mut bodies: Vec<(String, Value, Vec<Value>)> = Vec::new();
    for l in &layers {
        let (_, lname, body) = entry(l)?;
        bodies.push((lname, body, Vec::new()));
    }
    let tensor_index = |s: &Value| -> Result<usize> {
        let s = s.as_str().unwrap_or_default();
        match s.split_once(':') {
            Some(("input", i)) => i.parse().ok(),
            Some(("node", k)) => k.parse::<usize>().ok().map(|k| k + n_in),
            _ => None,
        }
        .ok_or_else(|| bad(format!("unknown tensor {s:?}")))
    };
    for n in &nodes {
        let li = n["layer"].as_u64().unwrap_or(u64::MAX) as usize;
        let (lname, _, calls) = bodies.get_mut(li).ok_or_else(|| bad("a node of an unknown layer".into()))?;
        let args: Vec<Value> = n["inputs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                let i = tensor_index(t)?;
                let (layer, node) =
                    history.get(i).cloned().ok_or_else(|| bad(format!("tensor {t} used before it is made")))?;
                Ok(keras_tensor(&layer, node, shapes.get(i)))
            })
            .collect::<Result<_>>()?;
        let arg = if args.len() == 1 { args[0].clone() } else { Value::Array(args) };
        let mut kwargs = Map::new();
        if let Some(training) = n["training"].as_bool() {
            kwargs.insert("training".into(), json!(training));
        }
        history.push((lname.clone(), calls.len()));
        calls.push(json!({"args": [arg], "kwargs": kwargs}));
    }
    for (lname, mut body, calls) in bodies {
        body["name"] = json!(lname);
        body["inbound_nodes"] = Value::Array(calls);
        out.push(body);
    }
    let refs = |list: &[Value]| -> Result<Value> {
        Ok(Value::Array(
            list.iter()
                .map(|t| {
                    let (layer, node) =
                        history.get(tensor_index(t)?).cloned().ok_or_else(|| bad("unknown output".into()))?;
                    Ok(json!([layer, node, 0]))
                })
                .collect::<Result<_>>()?,
        ))
    };
    let input_refs: Vec<Value> = (0..n_in).map(|i| json!(format!("input:{i}"))).collect();
    Ok(json!({
        "module": "keras.src.models.functional", "class_name": "Functional",
        "config": {
            "name": name, "trainable": true,
            "layers": out,
            "input_layers": refs(&input_refs)?,
            "output_layers": refs(arch["outputs"].as_array().map(|a| a.as_slice()).unwrap_or(&[]))?
        },
        "registered_name": "Functional"
    }))
}

/// The shape (without the batch axis) of an InputLayer's config.
fn input_shape_of(config: &Value, at: &str) -> Result<Vec<usize>> {
    let shape = config.get("batch_shape").or_else(|| config.get("batch_input_shape"));
    let dims = shape.and_then(Value::as_array).ok_or_else(|| bad(format!("{at}: no batch_shape")))?;
    dims.iter()
        .skip(1)
        .map(|d| d.as_u64().map(|d| d as usize).ok_or_else(|| bad(format!("{at}: input dimension {d} is not a size"))))
        .collect()
}

/// Keras' model config as kandle's architecture, with the model's name.
pub(crate) fn model_from_keras(v: &Value) -> Result<(Value, String)> {
    let class = v["class_name"].as_str().ok_or_else(|| bad("the model has no class_name".into()))?;
    let config = v["config"].as_object().ok_or_else(|| bad(format!("the {class} model has no config")))?;
    let name = config.get("name").and_then(Value::as_str).unwrap_or(if class == "Sequential" {
        "sequential"
    } else {
        "functional"
    });
    let layers =
        config.get("layers").and_then(Value::as_array).ok_or_else(|| bad(format!("model {name}: no layer list")))?;
    let layer = |l: &Value| -> Result<Value> {
        let lclass = l["class_name"].as_str().ok_or_else(|| bad(format!("model {name}: a layer has no class_name")))?;
        let lcfg = l["config"]
            .as_object()
            .ok_or_else(|| bad(format!("model {name}: layer of class {lclass} has no config")))?;
        let lname = lcfg.get("name").and_then(Value::as_str).or(l["name"].as_str()).unwrap_or_default().to_string();
        let trainable = lcfg.get("trainable").and_then(Value::as_bool).unwrap_or(true);
        let mut out = if lclass == "Sequential" || lclass == "Functional" {
            let (inner, _) = model_from_keras(l)?;
            json!({"class": lclass, "name": lname, "config": {"model": inner}})
        } else {
            json!({"class": lclass, "name": lname, "config": layer_config_from_keras(lclass, &lname, lcfg)?})
        };
        if !trainable {
            out["trainable"] = json!(false);
        }
        Ok(out)
    };
    if class == "Sequential" {
        let mut input_shape: Option<Vec<usize>> = v["build_config"]["input_shape"]
            .as_array()
            .map(|a| a.iter().skip(1).filter_map(|d| d.as_u64().map(|d| d as usize)).collect());
        let mut out = Vec::new();
        for l in layers {
            if l["class_name"] == "InputLayer" {
                input_shape = Some(input_shape_of(&l["config"], &format!("model {name}"))?);
                continue;
            }
            if input_shape.is_none() && l["config"].get("batch_input_shape").is_some() {
                input_shape = Some(input_shape_of(&l["config"], &format!("model {name}"))?);
            }
            out.push(layer(l)?);
        }
        let input_shape =
            input_shape.ok_or_else(|| bad(format!("model {name}: the Sequential model has no input shape")))?;
        return Ok((json!({"input_shape": input_shape, "layers": out}), name.to_string()));
    }
    if class != "Functional" && class != "Model" {
        return Err(bad(format!(
            "model class {class} is neither Sequential nor Functional (a subclassed model cannot be rebuilt)"
        )));
    }
    // Inputs, then each call of each layer once the tensors it takes exist.
    let mut tensors: std::collections::HashMap<(String, u64, u64), String> = Default::default();
    let mut inputs = Vec::new();
    let mut kandle_layers = Vec::new();
    let mut pending: Vec<(usize, String, Vec<Value>)> = Vec::new();
    for l in layers {
        let lname = l["name"].as_str().or(l["config"]["name"].as_str()).unwrap_or_default().to_string();
        if l["class_name"] == "InputLayer" {
            let shape = input_shape_of(&l["config"], &format!("input {lname}"))?;
            tensors.insert((lname.clone(), 0, 0), format!("input:{}", inputs.len()));
            inputs.push(json!({"name": lname, "shape": shape}));
            continue;
        }
        let index = kandle_layers.len();
        kandle_layers.push(layer(l)?);
        let calls = l["inbound_nodes"].as_array().cloned().unwrap_or_default();
        pending.push((index, lname, calls));
    }
    let mut nodes: Vec<Value> = Vec::new();
    let mut made: Vec<usize> = vec![0; pending.len()];
    loop {
        let mut progress = false;
        for (index, lname, calls) in &pending {
            while made[*index] < calls.len() {
                let call = &calls[made[*index]];
                let Some(ins) = call_inputs(call, &tensors, lname)? else { break };
                let mut node = json!({"layer": index, "inputs": ins});
                if let Some(t) = call["kwargs"]["training"].as_bool() {
                    node["training"] = json!(t);
                }
                for (k, _) in call["kwargs"].as_object().into_iter().flatten() {
                    if k != "training" && !call["kwargs"][k].is_null() {
                        return Err(bad(format!(
                            "layer {lname}: called with {k}={}, which kandle does not take",
                            call["kwargs"][k]
                        )));
                    }
                }
                tensors.insert((lname.clone(), made[*index] as u64, 0), format!("node:{}", nodes.len()));
                nodes.push(node);
                made[*index] += 1;
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    if let Some((_, lname, _)) = pending.iter().find(|(i, _, calls)| made[*i] < calls.len()) {
        return Err(bad(format!("layer {lname}: a call takes a tensor no layer makes")));
    }
    let refs = |key: &str| -> Result<Vec<Value>> {
        let list = config.get(key).cloned().unwrap_or(Value::Null);
        let items: Vec<Value> = match &list {
            Value::Array(a) if a.first().is_some_and(Value::is_string) => vec![list.clone()],
            Value::Array(a) => a.clone(),
            Value::Object(o) => o.values().cloned().collect(),
            _ => return Err(bad(format!("model {name}: cannot read {key}"))),
        };
        items.iter().map(|r| history_ref(r, &tensors, name)).collect()
    };
    let arch = json!({
        "class": "Functional",
        "inputs": inputs,
        "layers": kandle_layers,
        "nodes": nodes,
        "outputs": refs("output_layers")?,
    });
    let input_refs = refs("input_layers")?;
    let declared: Vec<String> = (0..input_refs.len()).map(|i| format!("input:{i}")).collect();
    if input_refs.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>() != declared {
        return Err(bad(format!("model {name}: its input_layers are not its InputLayers in order")));
    }
    Ok((arch, name.to_string()))
}

/// `[layer, node, tensor]` as kandle's tensor name.
fn history_ref(r: &Value, tensors: &std::collections::HashMap<(String, u64, u64), String>, at: &str) -> Result<Value> {
    let a = r.as_array().map(|a| a.as_slice()).unwrap_or(&[]);
    let key = match a {
        [l, n, t] => (l.as_str().unwrap_or_default().to_string(), n.as_u64().unwrap_or(0), t.as_u64().unwrap_or(0)),
        _ => return Err(bad(format!("model {at}: cannot read the tensor reference {r}"))),
    };
    if key.2 != 0 {
        return Err(bad(format!("model {at}: output {} of layer {}: kandle's layers have one output", key.2, key.0)));
    }
    tensors.get(&key).map(|s| json!(s)).ok_or_else(|| bad(format!("model {at}: no tensor {r}")))
}

/// The tensors of one inbound node, `None` while one of them is not made yet.
fn call_inputs(
    call: &Value,
    tensors: &std::collections::HashMap<(String, u64, u64), String>,
    lname: &str,
) -> Result<Option<Vec<Value>>> {
    // Keras 2's form: a list of `[layer, node, tensor, kwargs]`.
    if let Value::Array(refs) = call {
        let mut out = Vec::new();
        for r in refs {
            let a = r.as_array().map(|a| a.as_slice()).unwrap_or(&[]);
            let key = match a {
                [l, n, i, ..] => {
                    (l.as_str().unwrap_or_default().to_string(), n.as_u64().unwrap_or(0), i.as_u64().unwrap_or(0))
                }
                _ => return Err(bad(format!("layer {lname}: cannot read the inbound node {r}"))),
            };
            if let Some(kw) = a.get(3).and_then(Value::as_object) {
                if let Some((k, v)) = kw.iter().find(|(k, v)| k.as_str() != "training" && !v.is_null()) {
                    return Err(bad(format!("layer {lname}: called with {k}={v}, which kandle does not take")));
                }
            }
            match tensors.get(&key) {
                Some(s) => out.push(json!(s)),
                None => return Ok(None),
            }
        }
        return Ok(Some(out));
    }
    let args = call["args"].as_array().cloned().unwrap_or_default();
    let flat: Vec<Value> = match args.as_slice() {
        [Value::Array(list)] => list.clone(),
        [one] => vec![one.clone()],
        _ => {
            return Err(bad(format!(
                "layer {lname}: called with {} positional arguments; kandle takes one",
                args.len()
            )))
        }
    };
    let mut out = Vec::new();
    for t in &flat {
        if t["class_name"] != "__keras_tensor__" {
            return Err(bad(format!("layer {lname}: called on {t}, which is not a tensor")));
        }
        let h = &t["config"]["keras_history"];
        let a = h.as_array().map(|a| a.as_slice()).unwrap_or(&[]);
        let key = match a {
            [l, n, i] => (l.as_str().unwrap_or_default().to_string(), n.as_u64().unwrap_or(0), i.as_u64().unwrap_or(0)),
            _ => return Err(bad(format!("layer {lname}: cannot read keras_history {h}"))),
        };
        match tensors.get(&key) {
            Some(s) => out.push(json!(s)),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}
