//! The TensorBoard callback and its event files, against what TensorFlow and Keras write
//! (`tests/golden/make_tensorboard_goldens.py`): the same summary messages byte for byte, the
//! same tags at the same steps, the values of the `History`, and files on disk after each epoch.

mod common;

use candle_core::{Device, Tensor};
use kandle::callbacks::tensorboard::{self as summary, proto};
use kandle::callbacks::{Callback, Control, LambdaCallback, Logs, TensorBoard, TrainingContext, UpdateFreq};
use kandle::prelude::*;
use prost::Message;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn goldens() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/tensorboard_goldens.json"))
        .expect("tests/golden/tensorboard_goldens.json");
    serde_json::from_str(&text).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn tmp(name: &str) -> common::TempDir {
    common::TempDir::new("tb", name)
}

/// The one event file in `dir`.
fn event_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("events.out.tfevents.") && name.ends_with(".v2"), "{name}");
    files[0].clone()
}

/// `(tag, step, plugin, value)` of each summary in `dir`'s event file (value: a scalar's, else NaN).
fn summaries(dir: &Path) -> Vec<(String, i64, String, f64)> {
    let events = summary::read_events(event_file(dir)).unwrap();
    assert!(matches!(&events[0].what, Some(proto::What::FileVersion(v)) if v == "brain.Event:2"));
    let mut out = Vec::new();
    for e in &events[1..] {
        let Some(proto::What::Summary(s)) = &e.what else { panic!("not a summary: {e:?}") };
        for v in &s.value {
            let plugin = v.metadata.as_ref().unwrap().plugin_data.as_ref().unwrap().plugin_name.clone();
            let value = match &v.value {
                Some(proto::ValueKind::Tensor(t)) if plugin == "scalars" => {
                    f32::from_le_bytes(t.tensor_content.as_slice().try_into().unwrap()) as f64
                }
                _ => f64::NAN,
            };
            out.push((v.tag.clone(), e.step, plugin, value));
        }
    }
    out
}

#[test]
fn summaries_are_tensorflows_byte_for_byte() {
    let g = goldens();
    // TensorFlow's framing: the masked CRC32C of the first record's length.
    let head: Vec<u8> =
        (0..12).map(|i| u8::from_str_radix(&g["file_head"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap()).collect();
    assert_eq!(summary::masked_crc32c(&head[..8]).to_le_bytes(), head[8..12]);
    for case in g["summaries"].as_array().unwrap() {
        let tag = case["tag"].as_str().unwrap();
        let value = match case["kind"].as_str().unwrap() {
            "scalar" => summary::scalar_value(tag, case["value"].as_f64().unwrap()),
            "histogram" => summary::histogram_value(tag, &floats(&case["values"]), 30),
            _ => {
                let d: Vec<usize> =
                    case["dims"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
                let v = summary::image_value(tag, &floats(&case["values"]), [d[0], d[1], d[2], d[3]], 3).unwrap();
                // PNG encoders differ byte for byte: the size strings and the decoded pixels.
                let Some(proto::ValueKind::Tensor(t)) = &v.value else { panic!() };
                let size: Vec<String> =
                    t.string_val[..2].iter().map(|s| String::from_utf8(s.clone()).unwrap()).collect();
                assert_eq!(serde_json::json!(size), case["size"], "{tag}");
                let pixels: Vec<Vec<u8>> =
                    t.string_val[2..].iter().map(|png| image::load_from_memory(png).unwrap().into_bytes()).collect();
                assert_eq!(serde_json::json!(pixels), case["pixels"], "{tag}");
                continue;
            }
        };
        let s = proto::Summary { value: vec![value] };
        assert_eq!(hex(&s.encode_to_vec()), case["summary_hex"].as_str().unwrap(), "{tag}");
    }
}

/// The model of the goldens: Keras' names, the same shapes.
fn small_model() -> Sequential {
    let m = Sequential::new()
        .seed(0)
        .add(Conv2D::new(2, (3, 3)).activation(Activation::Relu).input_shape((4, 4, 1)))
        .add(Flatten::new())
        .add(Dense::new(5).activation(Activation::Relu))
        .add(Dense::new(3).activation(Activation::Softmax));
    m.compile("rmsprop", "categorical_crossentropy", &["accuracy"]).unwrap();
    m
}

fn data() -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = Tensor::rand(0f32, 1., (24, 4, 4, 1), &dev).unwrap();
    let labels: Vec<u32> = (0..24).map(|i| (i * 7 % 3) as u32).collect();
    let y = kandle::utils::to_categorical(&Tensor::new(labels, &dev).unwrap(), 3).unwrap();
    (x, y)
}

fn run(tb: TensorBoard, extra: Vec<Box<dyn Callback>>) -> (History, Vec<Logs>) {
    let (x, y) = data();
    let (xv, yv) = (x.narrow(0, 0, 8).unwrap(), y.narrow(0, 0, 8).unwrap());
    let batches = Arc::new(Mutex::new(Vec::new()));
    let b = batches.clone();
    let mut opts = FitOptions::default()
        .batch_size(8)
        .epochs(2)
        .verbose(0)
        .shuffle(false)
        .validation_data(&xv, &yv)
        .callback(tb)
        .callback(LambdaCallback::new().on_batch_end(move |_, logs| b.lock().unwrap().push(logs.clone())));
    for cb in extra {
        opts = opts.callback(cb);
    }
    let h = small_model().fit(&x, &y, opts).unwrap();
    let batches = batches.lock().unwrap().clone();
    (h, batches)
}

fn tags(v: &[(String, i64, String, f64)]) -> Vec<(String, i64, String)> {
    let mut t: Vec<_> = v.iter().map(|(a, b, c, _)| (a.clone(), *b, c.clone())).collect();
    t.sort();
    t
}

fn keras_tags(g: &Value, run: &str, sub: &str) -> Vec<(String, i64, String)> {
    let mut t: Vec<_> = g["keras_runs"][run][sub]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_i64().unwrap(), e[2].as_str().unwrap().to_string()))
        .collect();
    t.sort();
    t
}

#[test]
fn the_same_tags_and_steps_as_keras_and_the_history_values() {
    let g = goldens();
    // Epoch summaries with histograms and images.
    let dir = tmp("epoch");
    let (h, _) = run(TensorBoard::new(dir.path()).histogram_freq(1).write_images(true), vec![]);
    let train = summaries(&dir.join("train"));
    let val = summaries(&dir.join("validation"));
    assert_eq!(tags(&train), keras_tags(&g, "epoch", "train"));
    assert_eq!(tags(&val), keras_tags(&g, "epoch", "validation"));
    let scalar = |v: &[(String, i64, String, f64)], tag: &str, step: i64| {
        v.iter().find(|e| e.0 == tag && e.1 == step).unwrap_or_else(|| panic!("{tag} at {step}")).3
    };
    for e in 0..2 {
        for (key, series, tag) in [
            ("loss", &train, "epoch_loss"),
            ("accuracy", &train, "epoch_accuracy"),
            ("val_loss", &val, "epoch_loss"),
            ("val_accuracy", &val, "epoch_accuracy"),
        ] {
            assert_eq!(scalar(series, tag, e as i64), h.get(key).unwrap()[e] as f32 as f64, "{tag} epoch {e}");
        }
        assert_eq!(scalar(&train, "epoch_learning_rate", e as i64), 0.001f32 as f64);
        // The validation pass, at the optimizer's iterations (3 batches per epoch).
        let it = 3 * (e as i64 + 1);
        assert_eq!(scalar(&val, "evaluation_loss_vs_iterations", it), h.get("val_loss").unwrap()[e] as f32 as f64);
    }

    // Every batch: batch_<name> at the global batch number, the running averages of the logs.
    let dir = tmp("batch");
    let (h, batches) = run(TensorBoard::new(dir.path()).update_freq("batch".parse::<UpdateFreq>().unwrap()), vec![]);
    let train = summaries(&dir.join("train"));
    assert_eq!(tags(&train), keras_tags(&g, "batch", "train"));
    assert_eq!(tags(&summaries(&dir.join("validation"))), keras_tags(&g, "batch", "validation"));
    assert_eq!(batches.len(), 6);
    for (i, logs) in batches.iter().enumerate() {
        assert_eq!(scalar(&train, "batch_loss", i as i64 + 1), logs.get("loss").unwrap() as f32 as f64);
    }
    assert_eq!(scalar(&train, "epoch_loss", 1), h.get("loss").unwrap()[1] as f32 as f64);

    // Every 2 batches: Keras 3.15 drops epoch 0's epoch and validation summaries there (its
    // record_if leaks past the batch); kandle writes everything Keras writes, and those.
    let dir = tmp("every2");
    run(TensorBoard::new(dir.path()).update_freq(2), vec![]);
    let train = tags(&summaries(&dir.join("train")));
    for t in keras_tags(&g, "every_2", "train") {
        assert!(train.contains(&t), "{t:?}");
    }
    assert!(train.contains(&("epoch_loss".into(), 0, "scalars".into())));
    assert!(!train.iter().any(|t| t.0 == "batch_loss" && t.1 % 2 == 1));
}

/// Reads the train event file from inside training, at the end of the first epoch.
struct Peek {
    dir: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Callback for Peek {
    fn on_epoch_end(&mut self, epoch: usize, _logs: &Logs, _ctx: &mut TrainingContext) -> kandle::Result<Control> {
        if epoch == 0 {
            let s = summaries(&self.dir.join("train"));
            self.seen.lock().unwrap().extend(s.into_iter().map(|e| format!("{}@{}", e.0, e.1)));
        }
        Ok(Control::Continue)
    }
}

#[test]
fn each_epoch_is_on_disk_when_it_ends() {
    let dir = tmp("flush");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let peek = Peek { dir: dir.to_path_buf(), seen: seen.clone() };
    run(TensorBoard::new(dir.path()).update_freq(1), vec![Box::new(peek)]);
    let seen = seen.lock().unwrap().clone();
    for want in ["batch_loss@3", "epoch_loss@0", "epoch_learning_rate@0"] {
        assert!(seen.iter().any(|s| s == want), "{want} not on disk after epoch 0: {seen:?}");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let err = "sometimes".parse::<UpdateFreq>().unwrap_err().to_string();
    assert!(err.contains("update_freq") && err.contains("sometimes"), "{err}");
    let (x, y) = data();
    let m = small_model();
    let err = m
        .fit(
            &x,
            &y,
            FitOptions::default().epochs(1).verbose(0).callback(TensorBoard::new(tmp("zero").path()).update_freq(0)),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("update_freq") && err.contains("received 0"), "{err}");
    // A log_dir that is a file: an I/O error naming it, and the model is trained as far as it got.
    let file = std::env::temp_dir().join(format!("kandle-tb-file-{}", std::process::id()));
    std::fs::write(&file, b"not a folder").unwrap();
    let err = m.fit(&x, &y, FitOptions::default().epochs(1).verbose(0).callback(TensorBoard::new(&file))).unwrap_err();
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");
    std::fs::remove_file(&file).unwrap();
}
