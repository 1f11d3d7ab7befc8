//! What a Keras user trips on one step further (issue 31): fine-tuning a base called in
//! inference mode, Keras' resolution of "accuracy", and the rules for metrics, callbacks and
//! data, each checked against what Keras 3 does.

use candle_core::{Device, Tensor};
use kandle::models::load_model;
use kandle::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn weight(model: &Model, layer: &str, name: &str) -> Tensor {
    let l = model.get_layer(layer).unwrap();
    l.weights().into_iter().find(|w| w.name == name).unwrap().var.as_tensor().copy().unwrap()
}

/// Keras' transfer-learning recipe: `x = base(inputs, training=False)`. Unfrozen, the base's
/// BatchNormalization still runs on its moving statistics (which do not move) while its gamma
/// and beta learn, and its Dropout stays off; the mode is saved with the model.
#[test]
fn base_called_with_training_false_stays_in_inference_mode() {
    let base = Sequential::new()
        .seed(1)
        .name("base")
        .add(Dense::new(8).input_shape(4))
        .add(BatchNormalization::new())
        .add(Dropout::new(0.5));
    let inputs = Input::new(4);
    let x = base.as_layer().call_training(&inputs, false).unwrap();
    let outputs = Dense::new(1).call(&x).unwrap();
    let model = Model::new(&[inputs], &[outputs]).unwrap().seed(0);
    model.compile(SGD::new(0.1), Loss::MeanSquaredError, ()).unwrap();
    model.build().unwrap();
    let (x, y) = (rand_tensor(&[64, 4], 2), rand_tensor(&[64, 1], 3));
    // Unlike Keras' recipe the base starts with moving statistics of its own, so that a
    // change would show.
    let bn = base.get_layer("batch_normalization").unwrap();
    bn.weights()[2].var.set(&Tensor::new(&[0.5f32; 8], &Device::Cpu).unwrap()).unwrap();
    let (mean0, gamma0) =
        (weight(&base, "batch_normalization", "moving_mean"), weight(&base, "batch_normalization", "gamma"));
    // Dropout off and moving statistics in a training call too.
    let a = model.call(&x, true).unwrap();
    assert!(max_abs_diff(&a, &model.predict(&x, 64).unwrap()) < 1e-6);
    model.fit(&x, &y, FitOptions::default().epochs(2).batch_size(16).verbose(0)).unwrap();
    assert_eq!(max_abs_diff(&mean0, &weight(&base, "batch_normalization", "moving_mean")), 0.0);
    assert!(max_abs_diff(&gamma0, &weight(&base, "batch_normalization", "gamma")) > 1e-4, "gamma learns");
    // Gradients through the moving statistics match candle's autograd of the same graph.
    let ours = model.compute_gradients(&x, &y).unwrap();
    let auto = model.use_autograd(true).compute_gradients(&x, &y).unwrap();
    model.use_autograd(false);
    assert_eq!(ours.len(), auto.len());
    for ((name, g), (_, h)) in ours.iter().zip(&auto) {
        assert!(max_abs_diff(g, h) < 1e-5, "{name}: own backward and autograd differ");
    }
    // Saved and loaded, the base keeps its mode.
    let dir = std::env::temp_dir().join(format!("kandle-training-false-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.kandle");
    model.save(&path).unwrap();
    let loaded = load_model(&path).unwrap();
    let a = loaded.call(&x, true).unwrap();
    assert!(max_abs_diff(&a, &model.predict(&x, 64).unwrap()) < 1e-6);
    std::fs::remove_dir_all(&dir).ok();
}

/// TensorFlow's beginner tutorial: logits, `SparseCategoricalCrossentropy(from_logits=True)`
/// and "accuracy", which Keras resolves from the targets' shape (class indices: sparse).
#[test]
fn accuracy_with_sparse_logits_resolves_from_the_targets() {
    let x = rand_tensor(&[40, 5], 4);
    let labels: Vec<u32> = (0..40).map(|i| (i % 3) as u32).collect();
    let y = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let model =
        Sequential::new().seed(0).add(Dense::new(8).activation(Activation::Relu).input_shape(5)).add(Dense::new(3));
    model.compile("adam", Loss::SparseCategoricalCrossentropy.from_logits(true), &["accuracy"]).unwrap();
    let history = model.fit(&x, &y, FitOptions::default().epochs(2).batch_size(8).verbose(0)).unwrap();
    assert_eq!(history.get("accuracy").unwrap().len(), 2);
    // The value is the share of rows whose largest logit is the label.
    let predicted: Vec<u32> = model.predict(&x, 40).unwrap().argmax(1).unwrap().to_vec1().unwrap();
    let right = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
    let e = model.evaluate(&x, &y, 40).unwrap();
    assert!((e.accuracy().unwrap() - right as f64 / 40.0).abs() < 1e-9);
    // Targets of shape (N, 1) are class indices too; one-hot targets are categorical.
    let e1 = model.evaluate(&x, y.unsqueeze(1).unwrap(), 40).unwrap();
    assert_eq!(e1.accuracy(), e.accuracy());
    model.compile("adam", Loss::CategoricalCrossentropy.from_logits(true), &["accuracy"]).unwrap();
    let onehot = to_categorical(&y, 3).unwrap();
    assert_eq!(model.evaluate(&x, &onehot, 40).unwrap().accuracy(), e.accuracy());
}

/// Keras turns `class_weight` into per-sample weights with NumPy's rounding (half to even) and
/// weight 1 for a label that is no class index; the weighted loss is `sum(w * l) / N`.
#[test]
fn class_weight_rounds_half_to_even_and_ignores_negative_labels() {
    let x = rand_tensor(&[4, 3], 5);
    let y = Tensor::new(&[[0.5f32], [1.5], [2.5], [-1.0]], &Device::Cpu).unwrap();
    let model = Sequential::new().seed(0).add(Dense::new(1).input_shape(3));
    model.compile(SGD::new(0.0), Loss::MeanSquaredError, ()).unwrap();
    let opts = FitOptions::default().epochs(1).batch_size(4).shuffle(false).verbose(0);
    let history = model.fit(&x, &y, opts.class_weight([(0, 2.0), (1, 3.0), (2, 4.0)])).unwrap();
    let p: Vec<f32> = model.predict(&x, 4).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let ys = [0.5f32, 1.5, 2.5, -1.0];
    let w = [2.0f32, 4.0, 4.0, 1.0]; // round(0.5) = 0, round(1.5) = round(2.5) = 2, -1: none
    let expected: f32 = (0..4).map(|i| w[i] * (ys[i] - p[i]).powi(2)).sum::<f32>() / 4.0;
    let loss = history.get("loss").unwrap()[0];
    assert!((loss - expected as f64).abs() < 1e-5, "loss {loss}, Keras' weighting gives {expected}");
}

/// `class_weight` weighs the training data only: with `validation_split` the validation loss
/// is the plain one (Keras' data adapters apply it to the training batches).
#[test]
fn class_weight_leaves_the_validation_loss_unweighted() {
    let x = rand_tensor(&[20, 3], 6);
    let labels: Vec<u32> = (0..20).map(|i| (i % 2) as u32).collect();
    let y = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let model = Sequential::new().seed(0).add(Dense::new(2).activation(Activation::Softmax).input_shape(3));
    model.compile(SGD::new(0.0), Loss::SparseCategoricalCrossentropy, ()).unwrap();
    let opts = FitOptions::default().epochs(1).batch_size(8).verbose(0).validation_split(0.25);
    let history = model.fit(&x, &y, opts.class_weight([(0, 10.0), (1, 0.5)])).unwrap();
    let plain = model.evaluate(x.narrow(0, 15, 5).unwrap(), y.narrow(0, 15, 5).unwrap(), 8).unwrap().loss;
    let val_loss = history.get("val_loss").unwrap()[0];
    assert!((val_loss - plain).abs() < 1e-6, "val_loss {val_loss}, unweighted {plain}");
}

fn golden() -> serde_json::Value {
    serde_json::from_str(include_str!("golden/keras_rules_keras.json")).unwrap()
}

/// A model of one Dense layer of zero weights: its numbers depend on Keras' rules only.
fn zero_dense(units: usize, inputs: usize, activation: Activation) -> Sequential {
    Sequential::new().add(
        Dense::new(units)
            .activation(activation)
            .kernel_initializer(Initializer::Zeros)
            .bias_initializer(Initializer::Zeros)
            .input_shape(inputs),
    )
}

fn labels_2(n: usize) -> Tensor {
    let v: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    Tensor::new(v.as_slice(), &Device::Cpu).unwrap()
}

#[test]
fn accuracy_resolution_matches_keras() {
    let g = golden();
    let x = rand_tensor(&[12, 5], 7);
    let labels = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 2], &Device::Cpu).unwrap();
    let m = zero_dense(3, 5, Activation::Linear);
    m.compile("adam", Loss::SparseCategoricalCrossentropy.from_logits(true), &["accuracy"]).unwrap();
    let a = m.evaluate(&x, &labels, 32).unwrap().accuracy().unwrap();
    assert!((a - g["sparse_logits_accuracy"].as_f64().unwrap()).abs() < 1e-6);
    let a1 = m.evaluate(&x, labels.unsqueeze(1).unwrap(), 32).unwrap().accuracy().unwrap();
    assert!((a1 - g["sparse_logits_accuracy_n1"].as_f64().unwrap()).abs() < 1e-6);
    m.compile("adam", Loss::CategoricalCrossentropy.from_logits(true), &["accuracy"]).unwrap();
    let a2 = m.evaluate(&x, to_categorical(&labels, 3).unwrap(), 32).unwrap().accuracy().unwrap();
    assert!((a2 - g["categorical_logits_accuracy"].as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn class_weight_losses_match_keras() {
    let g = golden();
    let y4 = Tensor::new(&[[0.5f32], [1.5], [2.5], [-1.0]], &Device::Cpu).unwrap();
    let m = zero_dense(1, 3, Activation::Linear);
    m.compile(SGD::new(0.0), Loss::MeanSquaredError, ()).unwrap();
    let opts = FitOptions::default().batch_size(4).shuffle(false).verbose(0);
    let h = m.fit(rand_tensor(&[4, 3], 8), &y4, opts.class_weight([(0, 2.0), (1, 3.0), (2, 4.0)])).unwrap();
    assert!((h.get("loss").unwrap()[0] - g["class_weight_loss"].as_f64().unwrap()).abs() < 1e-6);

    let m = zero_dense(2, 3, Activation::Softmax);
    m.compile(SGD::new(0.0), Loss::SparseCategoricalCrossentropy, ()).unwrap();
    let opts = FitOptions::default().batch_size(8).verbose(0).validation_split(0.25);
    let h = m.fit(rand_tensor(&[20, 3], 9), labels_2(20), opts.class_weight([(0, 10.0), (1, 0.5)])).unwrap();
    assert!((h.get("val_loss").unwrap()[0] - g["class_weight_val_loss"].as_f64().unwrap()).abs() < 1e-6);
    assert!((h.get("loss").unwrap()[0] - g["class_weight_train_loss"].as_f64().unwrap()).abs() < 1e-5);
}

/// ReduceLROnPlateau logs `learning_rate` (the rate the epoch ran at) for the callbacks after
/// it, the History and the progress bar; a CSVLogger's columns are fixed at the first epoch
/// with `val_` columns up front, `NA` where an epoch did not validate.
#[test]
fn learning_rate_in_logs_and_csv_columns_match_keras() {
    let g = golden();
    let dir = std::env::temp_dir().join(format!("kandle-rules-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.csv");
    let (x, y) = (rand_tensor(&[20, 3], 10), labels_2(20));
    let m = zero_dense(2, 3, Activation::Softmax);
    m.compile(SGD::new(0.1), Loss::SparseCategoricalCrossentropy, &["accuracy"]).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let s = seen.clone();
    let keys = kandle::callbacks::LambdaCallback::new().on_epoch_end(move |_, logs| {
        let mut k: Vec<&str> = logs.keys().collect();
        k.sort();
        s.lock().unwrap().push(serde_json::json!(k));
    });
    let opts = FitOptions::default()
        .batch_size(8)
        .epochs(3)
        .verbose(0)
        .validation_data(&x, &y)
        .validation_freq(2)
        .callback(ReduceLROnPlateau::new().monitor("loss").factor(0.5).patience(0).min_delta(-10.0))
        .callback(kandle::callbacks::CSVLogger::new(&path))
        .callback(keys);
    let h = m.fit(&x, &y, opts).unwrap();
    let lengths: serde_json::Map<String, serde_json::Value> =
        h.history.iter().map(|(k, v)| (k.clone(), serde_json::json!(v.len()))).collect();
    assert_eq!(serde_json::Value::Object(lengths), g["lr_history"]);
    let lr = h.get("learning_rate").unwrap();
    for (a, b) in lr.iter().zip(g["lr_values"].as_array().unwrap()) {
        assert!((a - b.as_f64().unwrap()).abs() < 1e-7, "learning_rate {lr:?}, Keras {}", g["lr_values"]);
    }
    assert_eq!(serde_json::json!(*seen.lock().unwrap()), g["lr_keys_seen"]);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], g["csv_header"].as_str().unwrap());
    let na: Vec<Vec<bool>> = lines[1..].iter().map(|l| l.split(',').map(|c| c == "NA").collect()).collect();
    assert_eq!(serde_json::json!(na), g["csv_na"]);
    // History::to_csv lines up the same way.
    let csv = h.to_csv();
    assert!(csv.lines().nth(1).unwrap().contains("NA"), "{csv}");

    // Without validation: the val_ columns are there, NA.
    let path2 = dir.join("log2.csv");
    let opts = FitOptions::default().batch_size(8).verbose(0).callback(kandle::callbacks::CSVLogger::new(&path2));
    m.fit(&x, &y, opts).unwrap();
    let text = std::fs::read_to_string(&path2).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let na: Vec<bool> = lines[1].split(',').map(|c| c == "NA").collect();
    assert_eq!(serde_json::json!([lines[0], na]), g["csv_no_validation"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A callback that stops after the second batch: Keras still validates that epoch.
#[test]
fn a_batch_level_stop_still_validates_the_epoch() {
    struct StopAt;
    impl kandle::callbacks::Callback for StopAt {
        fn on_train_batch_end(
            &mut self,
            batch: usize,
            _logs: &kandle::callbacks::Logs,
            _ctx: &mut kandle::callbacks::TrainingContext,
        ) -> kandle::Result<kandle::callbacks::Control> {
            Ok(if batch == 1 { kandle::callbacks::Control::Stop } else { kandle::callbacks::Control::Continue })
        }
    }
    let (x, y) = (rand_tensor(&[20, 3], 11), labels_2(20));
    let m = zero_dense(2, 3, Activation::Softmax);
    m.compile(SGD::new(0.1), Loss::SparseCategoricalCrossentropy, &["accuracy"]).unwrap();
    let opts = FitOptions::default().batch_size(4).epochs(3).verbose(0).validation_data(&x, &y).callback(StopAt);
    let h = m.fit(&x, &y, opts).unwrap();
    let lengths: serde_json::Map<String, serde_json::Value> =
        h.history.iter().map(|(k, v)| (k.clone(), serde_json::json!(v.len()))).collect();
    assert_eq!(serde_json::Value::Object(lengths), golden()["batch_stop_history"]);
}

/// Keras' monitors take `abs(min_delta)`; TerminateOnNaN's `raise_error` fails the fit.
#[test]
fn min_delta_sign_and_terminate_on_nan_raise_error() {
    let model = Sequential::new().add(Dense::new(1).input_shape(2));
    model.compile(SGD::new(0.1), Loss::MeanSquaredError, ()).unwrap();
    for delta in [0.5, -0.5] {
        model.set_learning_rate(0.1).unwrap();
        let mut cb = ReduceLROnPlateau::new().patience(0).min_delta(delta);
        let mut ctx = kandle::callbacks::TrainingContext::new(&model);
        use kandle::callbacks::Callback;
        cb.on_train_begin(&mut ctx).unwrap();
        // 1.0 then 0.8: an improvement of 0.2 < 0.5 is none, with either sign.
        for (epoch, loss) in [1.0, 0.8].into_iter().enumerate() {
            cb.on_epoch_end(epoch, &kandle::callbacks::Logs(vec![("val_loss".into(), loss)]), &mut ctx).unwrap();
        }
        assert!((model.learning_rate().unwrap() - 0.01).abs() < 1e-12, "min_delta {delta}");
    }
    let x = Tensor::full(f32::NAN, (8, 2), &Device::Cpu).unwrap();
    let y = Tensor::zeros((8, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let opts =
        FitOptions::default().epochs(2).verbose(0).callback(kandle::callbacks::TerminateOnNaN::new().raise_error(true));
    let e = model.fit(&x, &y, opts).unwrap_err();
    assert!(matches!(e, kandle::Error::NonFiniteLoss { epoch: 1, batch: 1, .. }), "{e}");
}

fn tmp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kandle-rules-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Keras' `save_freq` (batches counted across epochs, `{batch}` in the path),
/// `initial_value_threshold`, a missing monitor (warns and saves), and Python's format specs.
#[test]
fn model_checkpoint_save_freq_threshold_and_formats() {
    use kandle::callbacks::ModelCheckpoint;
    let (x, y) = (rand_tensor(&[20, 3], 12), labels_2(20));
    let model = || {
        let m = zero_dense(2, 3, Activation::Softmax);
        m.compile(SGD::new(0.1), Loss::SparseCategoricalCrossentropy, ()).unwrap();
        m
    };
    let opts = || FitOptions::default().batch_size(4).epochs(2).verbose(0);
    let d = tmp_dir("ckpt-freq");
    let cb = ModelCheckpoint::new(d.join("ck-{epoch}-{batch:02d}.kandle").to_string_lossy()).save_freq(2);
    model().fit(&x, &y, opts().callback(cb)).unwrap();
    // 5 batches an epoch: Keras saves after batches 2 and 4, then 1, 3 and 5 of epoch 2.
    assert_eq!(
        files_in(&d),
        ["ck-1-02.kandle", "ck-1-04.kandle", "ck-2-01.kandle", "ck-2-03.kandle", "ck-2-05.kandle"]
    );

    let d = tmp_dir("ckpt-threshold");
    let cb = ModelCheckpoint::new(d.join("best.kandle").to_string_lossy())
        .monitor("loss")
        .save_best_only(true)
        .initial_value_threshold(0.0);
    model().fit(&x, &y, opts().callback(cb)).unwrap();
    assert!(files_in(&d).is_empty(), "no loss beats 0");

    let d = tmp_dir("ckpt-missing");
    let cb = ModelCheckpoint::new(d.join("m-{epoch:02d}-{loss:.3e}.kandle").to_string_lossy()).save_best_only(true);
    model().fit(&x, &y, opts().callback(cb)).unwrap();
    let files = files_in(&d);
    assert_eq!(files.len(), 2, "val_loss missing: Keras warns and saves, {files:?}");
    // The epoch's mean loss, near ln 2 from zero weights, in Python's `.3e`: `d.ddde-01`.
    let mid = files[0].strip_prefix("m-01-").and_then(|r| r.strip_suffix(".kandle")).unwrap();
    let b = mid.as_bytes();
    assert!(mid.len() == 9 && b[1] == b'.' && mid.ends_with("e-01"), "{files:?}");

    let d = tmp_dir("ckpt-wide");
    let cb = ModelCheckpoint::new(d.join("m-{epoch:04000000000d}.kandle").to_string_lossy());
    let e = model().fit(&x, &y, opts().callback(cb)).unwrap_err().to_string();
    assert!(e.contains("filepath") && e.contains("width"), "{e}");
    for d in ["ckpt-freq", "ckpt-threshold", "ckpt-missing", "ckpt-wide"] {
        std::fs::remove_dir_all(tmp_dir(d)).ok();
    }
}

/// What used to panic: a callback that pops a layer during fit, and a user AllReduce that
/// returns fewer tensors than it was given.
#[test]
fn a_model_changed_during_fit_and_a_bad_all_reduce_are_errors() {
    let (x, y) = (rand_tensor(&[16, 3], 13), labels_2(16));
    let model =
        Sequential::new().seed(0).add(Dense::new(4).input_shape(3)).add(Dense::new(2).activation(Activation::Softmax));
    model.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
    let m = model.clone();
    let popper = kandle::callbacks::LambdaCallback::new().on_batch_end(move |batch, _| {
        if batch == 1 {
            let _ = m.pop();
        }
    });
    let opts = FitOptions::default().batch_size(4).verbose(0).callback(popper);
    let e = model.fit(&x, &y, opts).unwrap_err().to_string();
    assert!(e.contains("the model changed while it ran"), "{e}");

    use kandle::distribute::{AllReduce, InProcessAllReduce, MirroredStrategy};
    struct DropsOne(InProcessAllReduce);
    impl AllReduce for DropsOne {
        fn replicas(&self) -> usize {
            self.0.replicas()
        }
        fn all_reduce_sum(&self, replica: usize, tensors: Vec<Tensor>) -> kandle::Result<Vec<Tensor>> {
            let mut out = self.0.all_reduce_sum(replica, tensors)?;
            out.pop();
            Ok(out)
        }
        fn abort(&self, reason: &str) {
            self.0.abort(reason)
        }
    }
    let strategy = MirroredStrategy::cpu(2)
        .unwrap()
        .cross_device_ops(std::sync::Arc::new(DropsOne(InProcessAllReduce::new(2))))
        .unwrap();
    let model = Sequential::new().seed(0).add(Dense::new(2).activation(Activation::Softmax).input_shape(3));
    model.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
    let e = model.fit(&x, &y, FitOptions::default().batch_size(4).verbose(0).distribute(&strategy)).unwrap_err();
    assert!(e.to_string().contains("all_reduce_sum must return one sum per tensor"), "{e}");
}

/// Binary cross-entropy refuses targets outside [0, 1] (as sparse labels out of range are).
#[test]
fn binary_crossentropy_refuses_targets_outside_0_1() {
    let m = Sequential::new().seed(0).add(Dense::new(1).activation(Activation::Sigmoid).input_shape(3));
    m.compile("sgd", Loss::BinaryCrossentropy, ()).unwrap();
    let y = Tensor::new(&[[0f32], [1.0], [2.0], [0.0]], &Device::Cpu).unwrap();
    let e = m.fit(rand_tensor(&[4, 3], 14), &y, FitOptions::default().verbose(0)).unwrap_err().to_string();
    assert!(e.contains("binary_crossentropy") && e.contains("[0, 1]") && e.contains("index 2"), "{e}");
}

/// `steps_per_epoch` with arrays as Keras' epoch iterator: fewer steps than batches continue
/// the same pass in the next epoch, more end the epoch at the pass's end, 0 is "not given".
/// Zero predictions against targets 0..19 (not shuffled): a batch's loss names it.
#[test]
fn steps_per_epoch_with_arrays_follows_keras_epoch_iterator() {
    let g = golden();
    let x = rand_tensor(&[20, 3], 15);
    let y: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let y = Tensor::from_vec(y, (20, 1), &Device::Cpu).unwrap();
    for steps in [3usize, 7, 0] {
        let m = zero_dense(1, 3, Activation::Linear);
        m.compile(SGD::new(0.0), Loss::MeanSquaredError, ()).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(usize, Option<f64>)>::new()));
        let (s1, s2) = (seen.clone(), seen.clone());
        let cb = kandle::callbacks::LambdaCallback::new()
            .on_epoch_begin(move |_| s1.lock().unwrap().push((0, None)))
            .on_batch_end(move |_, logs| {
                let mut s = s2.lock().unwrap();
                let last = s.last_mut().unwrap();
                last.0 += 1;
                last.1 = last.1.or(logs.get("loss"));
            });
        let opts = FitOptions::default().batch_size(4).epochs(4).shuffle(false).verbose(0).steps_per_epoch(steps);
        m.fit(&x, &y, opts.callback(cb)).unwrap();
        let ours: Vec<serde_json::Value> =
            seen.lock().unwrap().iter().map(|(n, l)| serde_json::json!([n, l.unwrap()])).collect();
        assert_eq!(serde_json::json!(ours), g[format!("steps_per_epoch_{steps}")], "steps_per_epoch {steps}");
    }
}

/// Keras' `Model(m.input, m.get_layer("features").output)` and a head cut at an intermediate
/// tensor (Keras' `ops/function.py` stops the walk at the inputs given): both share the
/// trained weights, and chained they predict as the whole model.
#[test]
fn feature_extractor_and_head_cut_out_of_a_trained_model() {
    let inputs = Input::new(4);
    let h = Dense::new(8).activation(Activation::Relu).name("features").call(&inputs).unwrap();
    let out = Dense::new(3).activation(Activation::Softmax).call(&h).unwrap();
    let model = Model::new(&[inputs], &[out]).unwrap().seed(0);
    model.compile("adam", Loss::SparseCategoricalCrossentropy, ()).unwrap();
    let x = rand_tensor(&[16, 4], 16);
    let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0], &Device::Cpu).unwrap();
    model.fit(&x, &y, FitOptions::default().epochs(2).verbose(0)).unwrap();

    let features = model.get_layer("features").unwrap().output().unwrap();
    let extractor = Model::new(&model.inputs().unwrap(), std::slice::from_ref(&features)).unwrap();
    let head = Model::new(&[features], &model.outputs().unwrap()).unwrap();
    assert_eq!(extractor.layer_names(), ["input_layer", "features"]);
    let f = extractor.predict(&x, 16).unwrap();
    let w = model.get_layer("features").unwrap().get_weights().unwrap();
    let manual = x.matmul(&w[0]).unwrap().broadcast_add(&w[1]).unwrap().relu().unwrap();
    assert!(max_abs_diff(&f, &manual) < 1e-6);
    assert!(max_abs_diff(&head.predict(&f, 16).unwrap(), &model.predict(&x, 16).unwrap()) < 1e-6);

    // A Sequential has inputs and outputs too, and its layers outputs.
    let seq = Sequential::new().add(Dense::new(5).input_shape(4)).add(Dense::new(2));
    let cut = Model::new(&seq.inputs().unwrap(), &[seq.get_layer_at(0).unwrap().output().unwrap()]).unwrap();
    assert_eq!(cut.output_shape().unwrap(), vec![5]);
    assert!(seq.get_layer_at(2).unwrap_err().to_string().contains("has 2 layers"));
}

/// After `load_model`: the model's name, a `Sequential` again (pop, add), a nested model's
/// own layers.
#[test]
fn load_model_keeps_the_name_the_stack_and_the_nested_layers() {
    let base = Sequential::new().name("base").add(Dense::new(4).input_shape(3)).add(Dense::new(2));
    let model = Sequential::new().name("classifier").add(base.as_layer()).add(Dense::new(1));
    let dir = tmp_dir("load-names");
    let path = dir.join("m.kandle");
    model.save(&path).unwrap();
    let loaded = load_model(&path).unwrap();
    assert_eq!(loaded.model_name(), "classifier");
    let inner = loaded.get_layer("base").unwrap().as_model().expect("a nested model");
    assert_eq!(inner.layer_names(), ["dense", "dense_1"]);
    let w = inner.get_layer("dense").unwrap().get_weights().unwrap();
    assert_eq!(max_abs_diff(&w[0], &base.get_layer("dense").unwrap().get_weights().unwrap()[0]), 0.0);
    let seq = Sequential::from_model(loaded).unwrap();
    seq.pop().unwrap();
    seq.add(Dense::new(3));
    assert_eq!(seq.output_shape().unwrap(), vec![3]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Two nested models of the default name: named as Keras names them, `sequential` and
/// `sequential_1`, not refused.
#[test]
fn nested_models_of_default_names_are_named_uniquely() {
    let a = Sequential::new().add(Dense::new(4).input_shape(3));
    let b = Sequential::new().add(Dense::new(2).input_shape(4));
    let model = Sequential::new().add(a.as_layer()).add(b.as_layer());
    assert_eq!(model.layer_names(), ["sequential", "sequential_1"]);
    assert_eq!(b.model_name(), "sequential_1");
    let dir = tmp_dir("nested-names");
    let path = dir.join("m.kandle");
    model.save(&path).unwrap();
    assert_eq!(load_model(&path).unwrap().layer_names(), ["sequential", "sequential_1"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// `image_dataset_from_directory` as Keras lists a folder: folders in the order of their full
/// path as a string (`a-b` before `a/b`), a link to a folder not followed, a validation count
/// that rounds to 0, and `subset="both"`.
#[test]
fn image_dataset_from_directory_lists_and_splits_as_keras() {
    use kandle::preprocessing::image::{
        image_dataset_from_directory, image_dataset_from_directory_both, DatasetOptions, Subset,
    };
    let g = golden();
    let png = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/datasets/tree/cats/img0.png");
    let root = tmp_dir("dataset-tree");
    for rel in ["cats/a/x.png", "cats/a/b/y.png", "cats/a-b/z.png", "dogs/w.png", "dogs/v.png"] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(&png, &p).unwrap();
    }
    std::os::unix::fs::symlink("..", root.join("dogs/loop")).unwrap();
    let rel = |ds: &kandle::preprocessing::image::ImageDataset| -> serde_json::Value {
        serde_json::json!(ds
            .file_paths()
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>())
    };
    let opts = DatasetOptions::default().image_size((4, 6)).batch_size(2).verbose(false);
    let all = image_dataset_from_directory(&root, opts.clone().shuffle(false)).unwrap();
    assert_eq!(rel(&all), g["dataset_order"]);
    // Followed, the link to the parent folder lists the cats' images in the dogs' class too,
    // each folder once per class (Keras' os.walk would loop until the path is too long).
    let followed = image_dataset_from_directory(&root, opts.clone().shuffle(false).follow_links(true)).unwrap();
    assert_eq!(followed.file_paths().len(), 5 + 3);
    let split = opts.clone().shuffle(false).validation_split(0.1);
    let val = image_dataset_from_directory(&root, split.clone().subset(Subset::Validation)).unwrap();
    assert_eq!(serde_json::json!(val.file_paths().len()), g["dataset_val_rounding_to_0"]);
    let e = image_dataset_from_directory(&root, split.subset(Subset::Training)).unwrap_err().to_string();
    assert!(e.contains("no images found"), "{e}");
    let (train, val) = image_dataset_from_directory_both(&root, opts.seed(7).validation_split(0.4)).unwrap();
    assert_eq!(serde_json::json!([rel(&train), rel(&val)]), g["dataset_both"]);
    std::fs::remove_dir_all(&root).ok();
}

fn golden_tensor(v: &serde_json::Value) -> Tensor {
    fn walk(v: &serde_json::Value, dims: &mut Vec<usize>, depth: usize, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(a) => {
                if dims.len() == depth {
                    dims.push(a.len());
                }
                for x in a {
                    walk(x, dims, depth + 1, out);
                }
            }
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let (mut dims, mut values) = (Vec::new(), Vec::new());
    walk(v, &mut dims, 0, &mut values);
    Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
}

/// UpSampling2D (nearest, bilinear), Cropping2D and LayerNormalization against Keras' own
/// outputs, and their configurations saved and read back.
#[test]
fn new_layers_match_keras() {
    use kandle::layers::UpSampling;
    let g = golden();
    let x = golden_tensor(&g["layers_x"]);
    let cases: Vec<(&str, Sequential)> = vec![
        ("upsampling_nearest", Sequential::new().add(UpSampling2D::new((2, 3)).input_shape((3, 4, 2)))),
        (
            "upsampling_bilinear",
            Sequential::new().add(UpSampling2D::new((2, 3)).interpolation(UpSampling::Bilinear).input_shape((3, 4, 2))),
        ),
        ("cropping", Sequential::new().add(Cropping2D::asymmetric((1, 0), (0, 2)).input_shape((3, 4, 2)))),
        ("layer_norm", Sequential::new().add(LayerNormalization::new().input_shape((3, 4, 2)))),
    ];
    let dir = tmp_dir("new-layers");
    for (key, m) in cases {
        if key == "layer_norm" {
            let w = &g["layer_norm_weights"];
            m.set_weights(&[golden_tensor(&w[0]), golden_tensor(&w[1])]).unwrap();
        }
        let want = golden_tensor(&g[key]);
        let got = m.predict(&x, 2).unwrap();
        assert_eq!(got.dims(), want.dims(), "{key}");
        assert!(max_abs_diff(&got, &want) < 2e-6, "{key}: {}", max_abs_diff(&got, &want));
        let path = dir.join(format!("{key}.kandle"));
        m.save(&path).unwrap();
        assert_eq!(max_abs_diff(&load_model(&path).unwrap().predict(&x, 2).unwrap(), &got), 0.0, "{key} saved");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Keras' `validation_data=(x, y, sample_weight)`: the validation loss is `evaluate`'s with the
/// same weights.
#[test]
fn validation_data_with_sample_weights() {
    let (x, y) = (rand_tensor(&[12, 3], 17), labels_2(12));
    let w = Tensor::new(&[1f32, 0.0, 2.0, 1.0, 0.5, 3.0, 1.0, 1.0, 0.0, 2.0, 1.0, 1.0], &Device::Cpu).unwrap();
    let m = Sequential::new().seed(1).add(Dense::new(2).activation(Activation::Softmax).input_shape(3));
    m.compile(SGD::new(0.0), Loss::SparseCategoricalCrossentropy, ()).unwrap();
    let opts = FitOptions::default().batch_size(4).verbose(0).validation_data_weighted(&x, &y, &w);
    let h = m.fit(&x, &y, opts).unwrap();
    let weighted = m.evaluate_weighted(&x, &y, &w, 4).unwrap().loss;
    let plain = m.evaluate(&x, &y, 4).unwrap().loss;
    let val = h.get("val_loss").unwrap()[0];
    assert!((val - weighted).abs() < 1e-6 && (val - plain).abs() > 1e-4, "{val} {weighted} {plain}");
}

/// Conv2DTranspose against Keras' outputs: strides, both paddings, a kernel smaller than the
/// stride, an odd 'same' padding.
#[test]
fn conv2d_transpose_matches_keras() {
    use kandle::layers::Conv2DTranspose;
    let g = golden();
    let x = golden_tensor(&g["layers_x"]);
    for case in g["conv_transpose"].as_array().unwrap() {
        let ks: Vec<usize> = serde_json::from_value(case["kernel_size"].clone()).unwrap();
        let st: Vec<usize> = serde_json::from_value(case["strides"].clone()).unwrap();
        let padding = if case["padding"] == "same" { Padding::Same } else { Padding::Valid };
        let layer = Conv2DTranspose::new(case["filters"].as_u64().unwrap() as usize, (ks[0], ks[1]))
            .strides((st[0], st[1]))
            .padding(padding)
            .input_shape((3, 4, 2));
        let m = Sequential::new().add(layer);
        m.set_weights(&[golden_tensor(&case["kernel"]), golden_tensor(&case["bias"])]).unwrap();
        let want = golden_tensor(&case["output"]);
        let got = m.predict(&x, 2).unwrap();
        assert_eq!(got.dims(), want.dims(), "{case:?}");
        assert!(max_abs_diff(&got, &want) < 1e-5, "{ks:?} {st:?} {padding:?}: {}", max_abs_diff(&got, &want));
    }
}

/// Keras 3's rules for a model of two outputs: a flat metrics list as long as the outputs is one
/// metric per output, a name given twice is suffixed (`accuracy_1`), one loss with two
/// `loss_weights` is refused; a list of one loss is refused too (Keras warns and trains the first
/// output alone).
#[test]
fn multi_output_metrics_and_losses_follow_keras() {
    let g = golden();
    let two_outputs = || {
        let a = Input::named(3, "a");
        let o1 = Dense::new(2).activation(Activation::Softmax).name("out1").call(&a).unwrap();
        let o2 = Dense::new(1).name("out2").call(&a).unwrap();
        Model::new(&[a], &[o1, o2]).unwrap().seed(0)
    };
    let x = rand_tensor(&[20, 3], 18);
    let ys = vec![to_categorical(&labels_2(20), 2).unwrap(), rand_tensor(&[20, 1], 19)];
    let keys = |m: &Model| -> serde_json::Value {
        let h = m.fit(&x, ys.clone(), FitOptions::default().verbose(0)).unwrap();
        let mut k: Vec<&str> = h.keys();
        k.sort();
        serde_json::json!(k)
    };
    let losses = || Losses::new([Loss::CategoricalCrossentropy, Loss::MeanSquaredError]);
    let m = two_outputs();
    m.compile("sgd", losses(), &["accuracy", "mae"]).unwrap();
    assert_eq!(keys(&m), g["flat_metrics_keys"]);
    // "mae" is the mean absolute error of the second output.
    let p = m.predict_outputs(&x, 20).unwrap();
    let want = (&p[1] - &ys[1]).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    let e = m.evaluate(&x, ys.clone(), 20).unwrap();
    assert!((e.get("out2_mae").unwrap() - want as f64).abs() < 1e-6, "{e:?}");
    let m = two_outputs();
    m.compile("sgd", losses(), vec![vec!["accuracy", "accuracy"], vec![]]).unwrap();
    assert_eq!(keys(&m), g["repeated_metric_keys"]);
    assert_eq!(g["single_loss_two_weights_refused"], true);
    let e = two_outputs().compile("sgd", Losses::from(Loss::MeanSquaredError).weights([1.0, 0.5]), ()).unwrap_err();
    assert!(e.to_string().contains("got 1 loss and 2 weights"), "{e}");
    let e = two_outputs().compile("sgd", Losses::new([Loss::MeanSquaredError]), ()).unwrap_err();
    assert!(e.to_string().contains("one per output: expected 2, received 1"), "{e}");
    // One loss for every output stays (Keras' `loss="mse"`), with one weight for it.
    two_outputs().compile("sgd", Losses::from(Loss::MeanSquaredError).weights([0.5]), ()).unwrap();
}

/// `model.layers` and the weight order as Keras' (by depth, not by call order): a list of
/// weights in Keras' order fits, where call order would swap two kernels of one shape.
#[test]
fn layers_and_weights_in_keras_order() {
    let g = golden();
    let a = Input::named(4, "a");
    let x = Dense::new(3).name("d1").call(&a).unwrap();
    let y = Dense::new(3).name("d2").call(&a).unwrap();
    let z = Dense::new(3).name("d3").call(&y).unwrap();
    let m = Model::new(&[a], &[Add::new().name("add").call(&[x, z]).unwrap()]).unwrap();
    assert_eq!(serde_json::json!(m.layer_names()), g["order_layers"]);
    let ws: Vec<Tensor> = g["order_weights"].as_array().unwrap().iter().map(golden_tensor).collect();
    m.set_weights(&ws).unwrap();
    let p = m.predict(golden_tensor(&g["order_x"]), 2).unwrap();
    assert!(max_abs_diff(&p, &golden_tensor(&g["order_prediction"])) < 1e-6);
    assert_eq!(max_abs_diff(&m.get_weights().unwrap()[0], &ws[0]), 0.0);
    // The summary lists them in that order too.
    let s = m.summary_string().unwrap();
    let pos = |n: &str| s.find(&format!("{n} (")).unwrap();
    assert!(pos("d2") < pos("d1") && pos("d1") < pos("d3"), "{s}");
}

/// `BinaryAccuracy(threshold)`, `Precision(thresholds)` and `Recall(thresholds)` against Keras'
/// values on one batch, and their spelling in saved models.
#[test]
fn metric_thresholds_match_keras() {
    let g = golden();
    let (yt, yp) = (golden_tensor(&g["threshold_y_true"]), golden_tensor(&g["threshold_y_pred"]));
    for (key, metric) in [
        ("binary_accuracy_0.7", Metric::BinaryAccuracyAt(0.7)),
        ("precision_0.7", Metric::PrecisionAt(0.7)),
        ("recall_0.3", Metric::RecallAt(0.3)),
    ] {
        let mut m = metric.build(false, 3).unwrap();
        m.update_state(&yt, &yp, None).unwrap();
        assert!((m.result() - g[key].as_f64().unwrap()).abs() < 1e-6, "{key}: {} vs {}", m.result(), g[key]);
        assert_eq!(metric.spec().parse::<Metric>().unwrap(), metric);
    }
    assert!(Metric::PrecisionAt(1.5).build(false, 3).is_err());
}

/// Merge layers as Keras' `base_merge.py` allows: broadcasting axes of size 1 (a
/// squeeze-and-excitation scale) and a single input.
#[test]
fn merge_layers_broadcast_and_take_one_input() {
    let g = golden();
    let (x, se) = (golden_tensor(&g["layers_x"]), golden_tensor(&g["merge_se"]));
    let (a, b) = (Input::new((3, 4, 2)), Input::new((1, 1, 2)));
    let mul = Model::new(&[a.clone(), b.clone()], &[Multiply::new().call(&[a.clone(), b.clone()]).unwrap()]).unwrap();
    let max = Model::new(&[a.clone(), b.clone()], &[Maximum::new().call(&[b, a.clone()]).unwrap()]).unwrap();
    let one = Model::new(std::slice::from_ref(&a), &[Add::new().call(std::slice::from_ref(&a)).unwrap()]).unwrap();
    let p = mul.predict([&x, &se], 2).unwrap();
    assert!(max_abs_diff(&p, &golden_tensor(&g["merge_multiply"])) < 1e-6);
    let p = max.predict([&x, &se], 2).unwrap();
    assert!(max_abs_diff(&p, &golden_tensor(&g["merge_maximum"])) < 1e-6);
    assert!(max_abs_diff(&one.predict(&x, 2).unwrap(), &golden_tensor(&g["merge_add_single"])) < 1e-6);
    let (c, d) = (Input::new((3, 4)), Input::new(4));
    let e = Add::new().call(&[c, d]).unwrap_err().to_string();
    assert!(e.contains("one rank"), "{e}");
}

/// BackupAndRestore removes its folder at the end of a run, as Keras, unless something else is
/// in it (Keras would remove that too).
#[test]
fn backup_and_restore_removes_its_folder() {
    let (x, y) = (rand_tensor(&[8, 3], 20), labels_2(8));
    let run = |dir: &std::path::Path| {
        let m = zero_dense(2, 3, Activation::Softmax);
        m.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
        m.fit(&x, &y, FitOptions::default().epochs(2).verbose(0).callback(BackupAndRestore::new(dir))).unwrap();
    };
    let root = tmp_dir("backup-folder");
    let dir = root.join("backup");
    run(&dir);
    assert!(!dir.exists());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    run(&dir);
    assert_eq!(files_in(&dir), ["notes.txt"]);
    std::fs::remove_dir_all(&root).ok();
}

/// Keras 3's `loss="crossentropy"` / `"ce"`: sparse for class indices, categorical for one-hot
/// targets, binary for one unit, as Keras resolves it (its losses on the same weights).
#[test]
fn crossentropy_alias_resolves_as_keras() {
    let g = golden();
    let x = golden_tensor(&g["ce_x"]);
    let k = golden_tensor(&g["ce_kernel"]);
    let labels = Tensor::new(&[0u32, 2, 1, 1, 0, 2], &Device::Cpu).unwrap();
    let m = Sequential::new().add(Dense::new(3).activation(Activation::Softmax).input_shape(4));
    m.set_weights(&[k.clone(), Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap()]).unwrap();
    m.compile("sgd", "crossentropy", ()).unwrap();
    let l = m.evaluate(&x, &labels, 32).unwrap().loss;
    assert!((l - g["ce_sparse"].as_f64().unwrap()).abs() < 1e-5, "{l}");
    m.compile("sgd", "ce", ()).unwrap();
    let l = m.evaluate(&x, to_categorical(&labels, 3).unwrap(), 32).unwrap().loss;
    assert!((l - g["ce_categorical"].as_f64().unwrap()).abs() < 1e-5, "{l}");
    let m1 = Sequential::new().add(Dense::new(1).activation(Activation::Sigmoid).input_shape(4));
    m1.set_weights(&[k.narrow(1, 0, 1).unwrap(), Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap()])
        .unwrap();
    m1.compile("sgd", Loss::Crossentropy, ()).unwrap();
    let y = Tensor::new(&[[0f32], [0.], [1.], [1.], [0.], [0.]], &Device::Cpu).unwrap();
    let l = m1.evaluate(&x, &y, 32).unwrap().loss;
    assert!((l - g["ce_binary"].as_f64().unwrap()).abs() < 1e-5, "{l}");
    // ignore_class: the mean over the labelled samples, as Keras.
    let sparse = Loss::SparseCategoricalCrossentropy.ignore_class(255);
    m.compile("sgd", sparse, ()).unwrap();
    let ignored = Tensor::new(&[0u32, 2, 255, 1, 255, 2], &Device::Cpu).unwrap();
    let l = m.evaluate(&x, &ignored, 32).unwrap().loss;
    assert!((l - g["ce_ignore_class"].as_f64().unwrap()).abs() < 1e-5, "{l}");
    assert_eq!(sparse.to_string().parse::<Loss>().unwrap(), sparse);
    assert!(Loss::CategoricalCrossentropy.ignore_class(1).validate().is_err());
    // It trains, and is saved under its name.
    m.compile("sgd", "ce", ()).unwrap();
    m.fit(&x, &labels, FitOptions::default().epochs(1).verbose(0)).unwrap();
    assert_eq!("crossentropy".parse::<Loss>().unwrap(), Loss::Crossentropy);
}

/// Losses' `reduction` as Keras': `"sum"` over one batch and over two (the epoch's loss is the
/// batches' mean weighted by their sizes), `"mean_with_sample_weight"`.
#[test]
fn loss_reductions_match_keras() {
    use kandle::losses::Reduction;
    let g = golden();
    let x = golden_tensor(&g["ce_x"]);
    let y = golden_tensor(&g["reduction_y"]);
    let w = golden_tensor(&g["reduction_w"]);
    let m = Sequential::new().add(Dense::new(3).activation(Activation::Softmax).input_shape(4));
    m.set_weights(&[golden_tensor(&g["ce_kernel"]), Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap()])
        .unwrap();
    m.compile("sgd", Loss::MeanSquaredError.reduction(Reduction::Sum), ()).unwrap();
    for (bs, key) in [(6, "reduction_sum_b6"), (4, "reduction_sum_b4")] {
        let l = m.evaluate(&x, &y, bs).unwrap().loss;
        assert!((l - g[key].as_f64().unwrap()).abs() < 1e-5, "{key}: {l} vs {}", g[key]);
    }
    m.compile("sgd", Loss::MeanSquaredError.reduction(Reduction::MeanWithSampleWeight), ()).unwrap();
    let l = m.evaluate_weighted(&x, &y, &w, 6).unwrap().loss;
    assert!((l - g["reduction_mean_sw_b6"].as_f64().unwrap()).abs() < 1e-5, "{l}");
    let spelled = Loss::MeanSquaredError.reduction(Reduction::Sum);
    assert_eq!(spelled.to_string().parse::<Loss>().unwrap(), spelled);
    assert!("mse(reduction=none)".parse::<Loss>().unwrap_err().to_string().contains("no number to train on"));
}

/// Keras' dict forms: losses (and their weights) and metrics keyed by output name give what
/// the positional forms give; a key that is no output is refused.
#[test]
fn losses_and_metrics_by_output_name() {
    let two_outputs = || {
        let a = Input::named(3, "a");
        let o1 = Dense::new(2).activation(Activation::Softmax).name("out1").call(&a).unwrap();
        let o2 = Dense::new(1).name("out2").call(&a).unwrap();
        Model::new(&[a], &[o1, o2]).unwrap().seed(0)
    };
    let x = rand_tensor(&[20, 3], 21);
    let ys = vec![to_categorical(&labels_2(20), 2).unwrap(), rand_tensor(&[20, 1], 22)];
    let by_name = two_outputs();
    by_name
        .compile(
            "sgd",
            Losses::by_output([("out2", Loss::MeanSquaredError), ("out1", Loss::CategoricalCrossentropy)])
                .weights([0.5, 2.0]),
            MetricsByOutput::new([("out1", vec!["accuracy"])]),
        )
        .unwrap();
    let positional = two_outputs();
    positional
        .compile(
            "sgd",
            Losses::new([Loss::CategoricalCrossentropy, Loss::MeanSquaredError]).weights([2.0, 0.5]),
            vec![vec!["accuracy"], vec![]],
        )
        .unwrap();
    let (a, b) = (by_name.evaluate(&x, ys.clone(), 20).unwrap(), positional.evaluate(&x, ys.clone(), 20).unwrap());
    assert_eq!(a.loss, b.loss);
    assert_eq!(a.metrics, b.metrics);
    let e = two_outputs().compile("sgd", Losses::by_output([("out1", Loss::MeanSquaredError)]), ()).unwrap_err();
    assert!(e.to_string().contains("expected the keys"), "{e}");
    let e = two_outputs()
        .compile("sgd", Loss::MeanSquaredError, MetricsByOutput::new([("nope", vec!["mae"])]))
        .unwrap_err();
    assert!(e.to_string().contains("not an output"), "{e}");
}

/// A model of two inputs as a layer of another (Keras' `inner([a, b])`): it trains with its own
/// backward walk as autograd would, and is saved and loaded.
#[test]
fn nested_model_of_two_inputs() {
    let build = || {
        let (p, q) = (Input::new(3), Input::new(2));
        let h =
            Dense::new(4).activation(Activation::Tanh).call(Concatenate::new().call(&[p.clone(), q.clone()]).unwrap());
        let inner = Model::new(&[p, q], &[h.unwrap()]).unwrap().name("pair");
        let (a, b) = (Input::new(3), Input::new(2));
        let z = inner.as_layer().call(&[a.clone(), b.clone()]).unwrap();
        Model::new(&[a, b], &[Dense::new(1).call(&z).unwrap()]).unwrap().seed(6)
    };
    let (xa, xb, y) = (rand_tensor(&[8, 3], 23), rand_tensor(&[8, 2], 24), rand_tensor(&[8, 1], 25));
    let grads = |autograd: bool| {
        let m = build();
        m.compile("sgd", Loss::MeanSquaredError, ()).unwrap();
        m.use_autograd(autograd);
        m.compute_gradients([&xa, &xb], &y).unwrap()
    };
    for ((name, own), (_, auto)) in grads(false).iter().zip(&grads(true)) {
        assert!(max_abs_diff(own, auto) < 1e-5, "{name}");
    }
    let m = build();
    m.compile("adam", Loss::MeanSquaredError, ()).unwrap();
    m.fit([&xa, &xb], &y, FitOptions::default().epochs(2).batch_size(4).verbose(0)).unwrap();
    let dir = tmp_dir("nested-two-inputs");
    let path = dir.join("m.kandle");
    m.save(&path).unwrap();
    let loaded = load_model(&path).unwrap();
    let (p1, p2) = (m.predict([&xa, &xb], 8).unwrap(), loaded.predict([&xa, &xb], 8).unwrap());
    assert_eq!(max_abs_diff(&p1, &p2), 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

/// Layers that grow their input refuse sizes that would overflow or exceed 2^31 values a
/// sample, instead of wrapping around or asking for terabytes.
#[test]
fn growing_layers_refuse_outputs_without_bound() {
    use kandle::layers::{Conv2DTranspose, UpSampling2D};
    let e = Sequential::new().add(UpSampling2D::new((usize::MAX / 2, 3)).input_shape((4, 4, 1))).output_shape();
    assert!(e.unwrap_err().to_string().contains("more than 2147483648 values"));
    let e = Sequential::new().add(UpSampling2D::new((100_000, 100_000)).input_shape((4, 4, 1))).build();
    assert!(e.unwrap_err().to_string().contains("UpSampling2D"));
    let e = Sequential::new().add(Conv2DTranspose::new(2, 3).strides(usize::MAX / 2).input_shape((4, 4, 1))).build();
    assert!(e.unwrap_err().to_string().contains("Conv2DTranspose"));
}
