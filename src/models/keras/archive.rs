//! Keras 3's `.keras` archive (`saving/saving_lib.py`): a zip of `metadata.json`,
//! `config.json` (the model's serialized config with its `compile_config`) and
//! `model.weights.h5` (the variables in Keras' layout, the optimizer's included).

use super::config::{model_from_keras, model_to_keras};
use crate::error::{Error, Result};
use crate::models::model::ModelState;
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::path::Path;

/// The largest `config.json` / `metadata.json` read (a zip bomb stops here).
const MAX_JSON: u64 = 64 << 20;
/// The largest `model.weights.h5` read.
const MAX_WEIGHTS: u64 = 16 << 30;

/// Whether `path` names a Keras 3 archive.
pub(crate) fn is_keras_archive(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "keras")
}

fn format_error(path: &Path, reason: String) -> Error {
    Error::Format { path: path.into(), format: "Keras (.keras)", offset: 0, reason }
}

/// Keras' optimizer class for kandle's optimizer name.
fn optimizer_class(name: &str) -> Option<&'static str> {
    Some(match name {
        "rmsprop" => "RMSprop",
        "sgd" => "SGD",
        "adam" => "Adam",
        "adamw" => "AdamW",
        "adagrad" => "Adagrad",
        "adadelta" => "Adadelta",
        "adamax" => "Adamax",
        "nadam" => "Nadam",
        _ => return None,
    })
}

/// Options of Keras' optimizers that are booleans (kandle keeps them as 0 or 1).
const BOOLEAN_OPTIONS: &[&str] = &["centered", "amsgrad", "nesterov"];

/// Keras' loss class for a loss name (`categorical_crossentropy` -> `CategoricalCrossentropy`).
fn loss_class(name: &str) -> String {
    if name == "kl_divergence" {
        return "KLDivergence".into();
    }
    name.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}

fn loss_to_keras(loss: &crate::losses::Loss) -> Value {
    let text = loss.to_string();
    let Some((name, opts)) = text.split_once('(') else { return json!(text) };
    let mut config = Map::new();
    config.insert("name".into(), json!(name));
    config.insert("reduction".into(), json!("sum_over_batch_size"));
    for opt in opts.trim_end_matches(')').split(',') {
        if let Some((k, v)) = opt.split_once('=') {
            let v: Value = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
            config.insert(k.into(), v);
        }
    }
    json!({"module": "keras.losses", "class_name": loss_class(name), "config": config, "registered_name": null})
}

fn loss_from_keras(v: &Value) -> Result<crate::losses::Loss> {
    let bad = |r: String| Error::invalid("config.json", r);
    if let Some(s) = v.as_str() {
        return s.parse();
    }
    let class = v["class_name"].as_str().ok_or_else(|| bad(format!("cannot read the loss {v}")))?;
    let name = super::weights::snake_case(class);
    let mut opts = Vec::new();
    for (k, x) in v["config"].as_object().into_iter().flatten() {
        match k.as_str() {
            "name" | "dtype" => {}
            "reduction" => opts.push(format!("reduction={}", x.as_str().unwrap_or_default())),
            "from_logits" | "label_smoothing" | "delta" if !x.is_null() => opts.push(format!("{k}={x}")),
            "ignore_class" if !x.is_null() => opts.push(format!("ignore_class={x}")),
            "axis" if x == &json!(-1) || x.is_null() => {}
            "ignore_class" => {}
            _ => return Err(bad(format!("loss {class}: option {k} = {x} is not one kandle has"))),
        }
    }
    let text = if opts.is_empty() { name } else { format!("{name}({})", opts.join(",")) };
    text.parse()
}

fn metric_to_keras(spec: &str) -> Value {
    match spec.split_once('@') {
        Some((name, t)) => {
            let class = match name {
                "precision" => "Precision",
                "recall" => "Recall",
                _ => "BinaryAccuracy",
            };
            let t: f64 = t.parse().unwrap_or(0.5);
            let key = if class == "BinaryAccuracy" { "threshold" } else { "thresholds" };
            json!({"module": "keras.metrics", "class_name": class, "config": {"name": name, key: t}, "registered_name": null})
        }
        None => json!(spec),
    }
}

fn metric_from_keras(v: &Value) -> Result<String> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_string());
    }
    let class =
        v["class_name"].as_str().ok_or_else(|| Error::invalid("config.json", format!("cannot read the metric {v}")))?;
    // Keras 2's metric wrappers carry the metric's name.
    let name = match (class, v["config"]["name"].as_str()) {
        ("MeanMetricWrapper", Some(n)) => n.to_string(),
        _ => super::weights::snake_case(class),
    };
    let t = v["config"]["thresholds"].as_f64().or(v["config"]["threshold"].as_f64());
    Ok(match (name.as_str(), t) {
        ("precision" | "recall" | "binary_accuracy", Some(t)) => format!("{name}@{t}"),
        _ => name,
    })
}

impl ModelState {
    /// Keras' `compile_config`, when the model is compiled.
    fn keras_compile_config(&self) -> Result<Value> {
        let Some(c) = &self.compiled else { return Ok(Value::Null) };
        let opt = &c.optimizer;
        let class = optimizer_class(opt.name()).ok_or_else(|| {
            Error::invalid("path", format!("the optimizer {} has no Keras class to save as", opt.name()))
        })?;
        let clip = opt.clipping();
        let mut config = Map::new();
        config.insert("name".into(), json!(super::weights::snake_case(class)));
        let lr = match opt.schedule().and_then(|s| s.config()) {
            Some((sclass, cfg)) => {
                let cfg: Map<String, Value> = cfg.into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
                json!({"module": "keras.optimizers.schedules", "class_name": sclass, "config": cfg, "registered_name": null})
            }
            None => json!(opt.learning_rate()),
        };
        config.insert("learning_rate".into(), lr);
        config.insert("weight_decay".into(), Value::Null);
        config.insert("clipnorm".into(), json!(clip.clipnorm));
        config.insert("global_clipnorm".into(), json!(clip.global_clipnorm));
        config.insert("clipvalue".into(), json!(clip.clipvalue));
        config.insert("use_ema".into(), json!(false));
        config.insert("ema_momentum".into(), json!(0.99));
        config.insert("ema_overwrite_frequency".into(), Value::Null);
        config.insert("loss_scale_factor".into(), Value::Null);
        config.insert("gradient_accumulation_steps".into(), Value::Null);
        for (k, v) in opt.config() {
            let v = if BOOLEAN_OPTIONS.contains(&k) { json!(v != 0.0) } else { json!(v) };
            config.insert(k.into(), v);
        }
        let optimizer =
            json!({"module": "keras.optimizers", "class_name": class, "config": config, "registered_name": null});
        let losses: Vec<Value> = c.losses.iter().map(loss_to_keras).collect();
        let metrics: Vec<Vec<Value>> = c
            .metrics
            .iter()
            .map(|ms| ms.iter().filter_map(|m| m.spec()).map(|s| metric_to_keras(&s)).collect())
            .collect();
        let (loss, metrics) =
            if losses.len() == 1 { (losses[0].clone(), json!(metrics[0])) } else { (json!(losses), json!(metrics)) };
        let weights = if c.loss_weights.iter().all(|&w| w == 1.0) { Value::Null } else { json!(c.loss_weights) };
        Ok(json!({
            "optimizer": optimizer, "loss": loss, "loss_weights": weights, "metrics": metrics,
            "weighted_metrics": null, "run_eagerly": false, "steps_per_execution": 1, "jit_compile": false
        }))
    }

    /// Writes the model as a Keras 3 archive.
    pub(crate) fn save_keras(&mut self, path: &Path) -> Result<()> {
        self.build()?;
        let arch = self.architecture_json();
        let shapes = self.graph.plan().shapes.clone();
        let mut config = model_to_keras(&arch, &self.name, &shapes)?;
        let compile = self.keras_compile_config()?;
        if !compile.is_null() {
            config["compile_config"] = compile;
        }
        let weights = self.keras_weights_tree()?.to_bytes().map_err(|r| crate::hdf5::error(path, r))?;
        let metadata = json!({
            "keras_version": "3.15.1",
            "date_saved": date_saved(),
            "kandle_version": env!("CARGO_PKG_VERSION"),
        });
        let mut bytes = Vec::new();
        {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
            let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            let mut put = |name: &str, data: &[u8]| -> std::io::Result<()> {
                zip.start_file(name, options).map_err(std::io::Error::other)?;
                zip.write_all(data)
            };
            put("metadata.json", metadata.to_string().as_bytes()).map_err(|e| Error::io(path, e))?;
            put("config.json", config.to_string().as_bytes()).map_err(|e| Error::io(path, e))?;
            put("model.weights.h5", &weights).map_err(|e| Error::io(path, e))?;
            zip.finish().map_err(|e| format_error(path, e.to_string()))?;
        }
        crate::fs::write_atomic(path, &bytes)
    }
}

impl ModelState {
    /// The weights and optimizer state of a `.keras` archive, into this model.
    pub(crate) fn load_keras_archive_state(&mut self, path: &Path) -> Result<()> {
        let archive = read_archive(path)?;
        self.load_keras_weights_tree(&archive.weights, path)
    }
}

/// Keras' `date_saved` (`2026-12-07@15:33:41`, UTC here).
fn date_saved() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}@{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The three members of an archive.
struct Archive {
    config: Value,
    weights: crate::hdf5::Group,
}

fn read_archive(path: &Path) -> Result<Archive> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format_error(path, format!("not a zip archive: {e}")))?;
    let mut member = |name: &str, limit: u64| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).map_err(|e| format_error(path, format!("no {name} in the archive: {e}")))?;
        if f.size() > limit {
            return Err(format_error(
                path,
                format!("{name} declares {} bytes, more than kandle reads ({limit})", f.size()),
            ));
        }
        let mut out = Vec::new();
        (&mut f).take(limit + 1).read_to_end(&mut out).map_err(|e| format_error(path, format!("{name}: {e}")))?;
        if out.len() as u64 > limit {
            return Err(format_error(path, format!("{name} holds more than {limit} bytes")));
        }
        Ok(out)
    };
    let parse = |name: &str, bytes: Vec<u8>| -> Result<Value> {
        serde_json::from_slice(&bytes).map_err(|e| format_error(path, format!("{name}: {e}")))
    };
    let metadata = parse("metadata.json", member("metadata.json", MAX_JSON)?)?;
    let version = metadata["keras_version"].as_str().unwrap_or_default();
    if !version.starts_with('3') {
        return Err(format_error(
            path,
            format!("written by Keras {version:?}; kandle reads Keras 3 archives (Keras 2 models load from .h5)"),
        ));
    }
    let config = parse("config.json", member("config.json", MAX_JSON)?)?;
    let weights_bytes = member("model.weights.h5", MAX_WEIGHTS)?;
    let weights = crate::hdf5::Group::from_bytes(weights_bytes)
        .map_err(|r| format_error(path, format!("model.weights.h5: {r}")))?;
    Ok(Archive { config, weights })
}

/// `load_model` of a `.keras` archive: the architecture, the compile settings and the weights
/// with the optimizer's state.
pub(crate) fn load_keras(path: &Path, custom: &crate::layers::CustomObjects) -> Result<crate::models::Model> {
    let archive = read_archive(path)?;
    let named = |e: Error| match e {
        Error::InvalidArgument { name: "config.json", reason } => format_error(path, format!("config.json: {reason}")),
        other => other,
    };
    let (arch, name) = model_from_keras(&archive.config).map_err(named)?;
    let budget = count_values(&archive.weights);
    let model = crate::models::architecture::model_from_architecture(&arch, budget, custom).map_err(named)?;
    model.name(name.as_str());
    let compile = &archive.config["compile_config"];
    if compile.is_object() && !compile["optimizer"].is_null() {
        compile_from_keras(&model, compile, custom).map_err(named)?;
    }
    model.lock().load_keras_weights_tree(&archive.weights, path)?;
    model.lock().weight_budget = usize::MAX;
    Ok(model)
}

/// How many values the datasets of a tree hold.
pub(super) fn count_values(g: &crate::hdf5::Group) -> usize {
    g.datasets.values().map(|d| d.data.len()).sum::<usize>() + g.groups.values().map(count_values).sum::<usize>()
}

pub(crate) fn compile_from_keras(
    model: &crate::models::Model,
    c: &Value,
    custom: &crate::layers::CustomObjects,
) -> Result<()> {
    let bad = |r: String| Error::invalid("config.json", r);
    let o = &c["optimizer"];
    let (class, ocfg) = match o {
        Value::String(s) => (s.clone(), Map::new()),
        _ => (
            o["class_name"].as_str().ok_or_else(|| bad(format!("cannot read the optimizer {o}")))?.to_string(),
            o["config"].as_object().cloned().unwrap_or_default(),
        ),
    };
    // Keras 2's files name it "Custom>Adam".
    let class = class.strip_prefix("Custom>").unwrap_or(&class).to_string();
    let kname = class.to_lowercase();
    let mut cfg = std::collections::HashMap::new();
    let mut lr = 1e-3;
    let mut schedule = None;
    for (k, v) in &ocfg {
        match (k.as_str(), v) {
            ("name", _) | ("ema_momentum", _) | ("ema_overwrite_frequency", _) | ("jit_compile", _) => {}
            ("is_legacy_optimizer", Value::Bool(false)) => {}
            ("use_ema", Value::Bool(false)) | ("loss_scale_factor" | "gradient_accumulation_steps", Value::Null) => {}
            ("use_ema" | "loss_scale_factor" | "gradient_accumulation_steps", _) => {
                return Err(bad(format!("optimizer {class}: option {k} = {v} is not supported by kandle")))
            }
            ("learning_rate", Value::Number(n)) => lr = n.as_f64().unwrap_or(lr),
            ("learning_rate", Value::Object(_)) => {
                let sclass = v["class_name"].as_str().unwrap_or_default();
                let scfg: std::collections::HashMap<String, f64> = v["config"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, x)| {
                        x.as_f64().or(x.as_bool().map(|b| f64::from(u8::from(b)))).map(|x| (k.clone(), x))
                    })
                    .collect();
                schedule = Some(crate::optimizers::schedules::from_config(sclass, &scfg)?);
            }
            (_, Value::Null) => {}
            (_, Value::Bool(b)) => {
                cfg.insert(k.clone(), f64::from(u8::from(*b)));
            }
            (_, Value::Number(n)) => {
                cfg.insert(k.clone(), n.as_f64().unwrap_or(0.0));
            }
            _ => return Err(bad(format!("optimizer {class}: option {k} = {v} is not one kandle has"))),
        }
    }
    let mut optimizer = crate::optimizers::from_config(&kname, lr, &cfg)?;
    let known: Vec<&str> = optimizer.config().iter().map(|(k, _)| *k).collect();
    for k in cfg.keys() {
        if !known.contains(&k.as_str())
            && !["clipnorm", "clipvalue", "global_clipnorm", "weight_decay"].contains(&k.as_str())
        {
            return Err(bad(format!("optimizer {class}: option {k} = {} is not one kandle's {kname} has", cfg[k])));
        }
    }
    if schedule.is_some() {
        optimizer.set_schedule(schedule);
    }
    let losses: Vec<crate::losses::Loss> = match &c["loss"] {
        Value::Array(list) => list.iter().map(loss_from_keras).collect::<Result<_>>()?,
        Value::Object(m) if !m.contains_key("class_name") => {
            let names = model.lock().graph.output_names();
            names
                .iter()
                .map(|n| m.get(n).ok_or_else(|| bad(format!("no loss for output {n}"))).and_then(loss_from_keras))
                .collect::<Result<_>>()?
        }
        other => vec![loss_from_keras(other)?],
    };
    let metrics: Vec<Vec<crate::metrics::MetricEntry>> = match &c["metrics"] {
        Value::Null => vec![Vec::new(); losses.len()],
        Value::Array(list) if list.iter().all(|m| !m.is_array()) => {
            let flat: Vec<crate::metrics::MetricEntry> = list
                .iter()
                .map(|m| metric_from_keras(m).map(|s| entry(&s, custom)).and_then(|e| e))
                .collect::<Result<_>>()?;
            if losses.len() == 1 {
                vec![flat]
            } else {
                (0..losses.len()).map(|_| flat.clone()).collect()
            }
        }
        Value::Array(list) => list
            .iter()
            .map(|ms| {
                ms.as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| metric_from_keras(m).map(|s| entry(&s, custom)).and_then(|e| e))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?,
        other => return Err(bad(format!("cannot read the metrics {other}"))),
    };
    let mut spec = crate::models::Losses::new(losses);
    if let Some(w) = c["loss_weights"].as_array() {
        spec = spec.weights(w.iter().map(|x| x.as_f64().unwrap_or(1.0)).collect::<Vec<_>>());
    }
    model.compile(optimizer, spec, metrics)
}

fn entry(spec: &str, custom: &crate::layers::CustomObjects) -> Result<crate::metrics::MetricEntry> {
    if custom.contains(spec) {
        return custom.metric_entry(spec);
    }
    Ok(crate::metrics::MetricEntry::from(spec))
}
