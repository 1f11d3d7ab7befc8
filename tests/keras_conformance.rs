//! kandle against Keras itself: every expected value here was computed by Keras 3.15.1 on
//! TensorFlow 2.21 (CPU) by `tests/golden/make_goldens.py` (how to regenerate it is written at
//! its top) and committed in `tests/golden/keras_goldens.json`. The inputs are read from the
//! same file, so both sides see the same numbers.

use candle_core::{DType, Device, Tensor};
use kandle::metrics::{Metric, StatefulMetric};
use kandle::prelude::*;
use serde_json::Value;

fn goldens() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/keras_goldens.json"))
        .expect("tests/golden/keras_goldens.json");
    serde_json::from_str(&text).expect("valid JSON")
}

/// A tensor of f64 from a JSON array of numbers or of arrays of numbers.
fn tensor(v: &Value) -> Tensor {
    let rows = v.as_array().expect("array");
    if rows.first().is_some_and(Value::is_array) {
        let cols = rows[0].as_array().unwrap().len();
        let data: Vec<f64> =
            rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
        Tensor::from_vec(data, (rows.len(), cols), &Device::Cpu).unwrap()
    } else {
        let data: Vec<f64> = rows.iter().map(|x| x.as_f64().unwrap()).collect();
        Tensor::from_vec(data, rows.len(), &Device::Cpu).unwrap()
    }
}

fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want.abs().max(1e-12), "{what}: kandle {got}, Keras {want}");
}

fn metric(m: Metric, sparse: bool, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> f64 {
    let units = *y_pred.dims().last().unwrap();
    let mut state: Box<dyn StatefulMetric> = m.build(sparse, units).unwrap();
    state.update_state(y_true, y_pred, w).unwrap();
    state.result()
}

#[test]
fn metrics_match_keras() {
    let g = goldens();
    let g = &g["metrics"];
    let p = tensor(&g["y_prob"]);
    let onehot = tensor(&g["onehot"]);
    let labels = tensor(&g["labels"]).to_dtype(DType::U32).unwrap();
    let w = tensor(&g["sample_weight"]);
    let (ml_true, ml_pred) = (tensor(&g["ml_true"]), tensor(&g["ml_pred"]));
    let want = |k: &str| g[k].as_f64().unwrap();
    let cases: Vec<(&str, f64, f64)> = vec![
        ("categorical_accuracy", metric(Metric::CategoricalAccuracy, false, &onehot, &p, None), 1e-12),
        ("sparse_categorical_accuracy", metric(Metric::SparseCategoricalAccuracy, true, &labels, &p, None), 1e-12),
        ("categorical_accuracy_weighted", metric(Metric::CategoricalAccuracy, false, &onehot, &p, Some(&w)), 1e-12),
        ("top_k_2", metric(Metric::TopKCategoricalAccuracy(2), false, &onehot, &p, None), 1e-6),
        ("top_k_default", metric("top_k_categorical_accuracy".parse().unwrap(), false, &onehot, &p, None), 1e-6),
        ("sparse_top_k_2", metric(Metric::SparseTopKCategoricalAccuracy(2), true, &labels, &p, None), 1e-6),
        (
            "sparse_top_k_2_weighted",
            metric(Metric::SparseTopKCategoricalAccuracy(2), true, &labels, &p, Some(&w)),
            1e-6,
        ),
        ("precision", metric(Metric::Precision, false, &ml_true, &ml_pred, None), 1e-12),
        ("recall", metric(Metric::Recall, false, &ml_true, &ml_pred, None), 1e-12),
        ("precision_weighted", metric(Metric::Precision, false, &ml_true, &ml_pred, Some(&w)), 1e-9),
        ("recall_weighted", metric(Metric::Recall, false, &ml_true, &ml_pred, Some(&w)), 1e-9),
        ("binary_accuracy", metric(Metric::BinaryAccuracy, false, &ml_true, &ml_pred, None), 1e-12),
    ];
    for (name, got, rel) in cases {
        assert_close(name, got, want(name), rel);
    }
}

/// `"accuracy"` becomes the metric Keras 3 picks from the targets' and the output's shapes,
/// and `"acc"` keeps its spelling as the history key.
#[test]
fn accuracy_resolves_as_in_keras() {
    let g = goldens();
    let g = &g["metrics"];
    let ml_pred = tensor(&g["ml_pred"]).to_dtype(DType::F32).unwrap();
    let ml_true = tensor(&g["ml_true"]).to_dtype(DType::F32).unwrap();
    let labels = tensor(&g["labels"]).to_dtype(DType::U32).unwrap();
    let onehot = tensor(&g["onehot"]).to_dtype(DType::F32).unwrap();
    let binary = ml_true.narrow(1, 0, 1).unwrap();
    for (case, units, loss, y) in [
        ("multilabel_bce", 5, Loss::BinaryCrossentropy, &ml_true),
        ("sparse", 5, Loss::SparseCategoricalCrossentropy, &labels),
        ("binary", 1, Loss::BinaryCrossentropy, &binary),
        ("onehot_mse", 5, Loss::MeanSquaredError, &onehot),
    ] {
        let keras = &g["resolve"][case];
        let class = keras["classes"][0].as_str().unwrap();
        let resolved = Metric::Accuracy.resolve(loss == Loss::SparseCategoricalCrossentropy, units);
        let expected = match class {
            "BinaryAccuracy" => Metric::BinaryAccuracy,
            "SparseCategoricalAccuracy" => Metric::SparseCategoricalAccuracy,
            "CategoricalAccuracy" => Metric::CategoricalAccuracy,
            other => panic!("unexpected Keras class {other}"),
        };
        assert_eq!(resolved, expected, "{case}");
        let model = Sequential::new().seed(0).add(Dense::new(units).activation(Activation::Sigmoid).input_shape(5));
        model.compile("sgd", loss, &["accuracy", "acc"]).unwrap();
        let h = model.fit(&ml_pred, y, FitOptions::default().epochs(1).batch_size(12).verbose(0)).unwrap();
        let mut keys = h.keys();
        keys.sort();
        let want: Vec<&str> = keras["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(keys, want, "{case}");
        // The value is the resolved metric's.
        let out = model.predict(&ml_pred, 12).unwrap();
        let y_metric = if loss == Loss::SparseCategoricalCrossentropy { labels.clone() } else { y.clone() };
        let direct = metric(expected, loss == Loss::SparseCategoricalCrossentropy, &y_metric, &out, None);
        let ev = model.evaluate(&ml_pred, y, 12).unwrap();
        assert_close(case, ev.get("accuracy").unwrap(), direct, 1e-12);
    }
}

/// Every loss, with `from_logits` and `label_smoothing`, in float64: the value and its gradient
/// with respect to the output equal Keras' (TensorFlow's GradientTape) at 1e-9 relative.
#[test]
fn losses_and_their_gradients_match_keras() {
    let g = goldens();
    let g = &g["losses"];
    let t = |k: &str| tensor(&g[k]);
    let cls = t("cls").to_dtype(DType::U32).unwrap();
    let cases: Vec<(&str, Loss, Tensor, Tensor)> = vec![
        ("cce", Loss::CategoricalCrossentropy, t("onehot"), t("probs")),
        ("cce_logits", Loss::CategoricalCrossentropy.from_logits(true), t("onehot"), t("logits")),
        (
            "cce_logits_smooth",
            Loss::CategoricalCrossentropy.from_logits(true).label_smoothing(0.2),
            t("onehot"),
            t("logits"),
        ),
        ("cce_smooth", Loss::CategoricalCrossentropy.label_smoothing(0.1), t("onehot"), t("probs")),
        ("scce_logits", Loss::SparseCategoricalCrossentropy.from_logits(true), cls, t("logits")),
        ("bce", Loss::BinaryCrossentropy, t("bin_true"), t("sig")),
        ("bce_logits", Loss::BinaryCrossentropy.from_logits(true), t("bin_true"), t("logits")),
        (
            "bce_logits_smooth",
            Loss::BinaryCrossentropy.from_logits(true).label_smoothing(0.1),
            t("bin_true"),
            t("logits"),
        ),
        ("bce_smooth", "binary_crossentropy(label_smoothing=0.2)".parse().unwrap(), t("bin_true"), t("sig")),
        ("mse", Loss::MeanSquaredError, t("reg_true"), t("logits")),
        ("mae", "mae".parse().unwrap(), t("reg_true"), t("logits")),
        ("huber", Loss::Huber, t("reg_true"), t("logits")),
        ("huber_delta", Loss::Huber.delta(0.5), t("reg_true"), t("logits")),
        ("kld", "kld".parse().unwrap(), t("dist_true"), t("probs")),
    ];
    for (name, loss, y_true, y_pred) in cases {
        let var = candle_core::Var::from_tensor(&y_pred).unwrap();
        let v = loss.compute(&y_true, var.as_tensor()).unwrap();
        let grad = v.backward().unwrap().get(var.as_tensor()).unwrap().clone();
        assert_close(name, v.to_scalar::<f64>().unwrap(), g[name]["value"].as_f64().unwrap(), 1e-9);
        let want = tensor(&g[name]["grad"]).flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let got = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-9 * scale, "{name} gradient [{i}]: kandle {a}, Keras {b}");
        }
    }
}

/// Every activation's values and gradient (from the input and the output, as the layers' own
/// backward passes compute it) equal Keras' (TensorFlow's GradientTape) in float64; GELU's
/// equal the exact function's, which TensorFlow's float64 GELU is only within 1e-6 of.
#[test]
fn activations_and_their_gradients_match_keras() {
    let g = goldens();
    let g = &g["activations"];
    let (x, dy) = (tensor(&g["x"]), tensor(&g["dy"]));
    for name in [
        "linear",
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "softplus",
        "elu",
        "selu",
        "relu6",
        "hard_sigmoid",
        "silu",
        "swish",
        "gelu",
    ] {
        let act: Activation = name.parse().unwrap();
        let (golden, tol) = if name == "gelu" { ("gelu_exact", 1e-12f64) } else { (name, 1e-9) };
        let y = act.apply(&x).unwrap();
        let grad = act.gradient_with_input(&x, &y, &dy).unwrap();
        for (what, got, want, tol) in [
            ("value", &y, &g[golden]["y"], tol),
            ("gradient", &grad, &g[golden]["grad"], tol),
            ("value (TensorFlow)", &y, &g[name]["y"], tol.max(1e-6)),
            ("gradient (TensorFlow)", &grad, &g[name]["grad"], tol.max(1e-6)),
        ] {
            let got = got.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let want = tensor(want).flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= tol * b.abs().max(1e-3), "{name} {what} [{i}]: kandle {a}, Keras {b}");
            }
        }
    }
}

/// Keras' gradient clipping (clipnorm, clipvalue, global_clipnorm) and the epsilon of Adamax
/// and Nadam: the weights after 3 steps equal Keras' in float64.
#[test]
fn optimizer_clipping_and_epsilon_match_keras() {
    use kandle::optimizers::{Adamax, Nadam};
    let g = goldens();
    let g = &g["optimizers"];
    let w0: Vec<Tensor> = g["w0"].as_array().unwrap().iter().map(tensor).collect();
    let grads: Vec<Vec<Tensor>> =
        g["grads"].as_array().unwrap().iter().map(|s| s.as_array().unwrap().iter().map(tensor).collect()).collect();
    let cases: Vec<(&str, Box<dyn Optimizer>)> = vec![
        ("sgd_clipnorm", Box::new(SGD::new(0.1).clipnorm(0.5))),
        ("sgd_clipvalue", Box::new(SGD::new(0.1).clipvalue(0.3))),
        ("sgd_global_clipnorm", Box::new(SGD::new(0.1).global_clipnorm(0.5))),
        ("rmsprop_clipnorm", Box::new(RMSprop::new(0.01).clipnorm(1.0))),
        ("adam_global_clipnorm", Box::new(Adam::new(0.01).global_clipnorm(1.0))),
        ("adamax_epsilon", Box::new(Adamax::new(0.01).epsilon(0.1))),
        ("nadam_epsilon", Box::new(Nadam::new(0.01).epsilon(0.1))),
    ];
    for (name, mut opt) in cases {
        let vars: Vec<candle_core::Var> = w0.iter().map(|w| candle_core::Var::from_tensor(w).unwrap()).collect();
        for step in &grads {
            let gs: Vec<Option<Tensor>> = step.iter().cloned().map(Some).collect();
            opt.apply_gradients(&vars, &gs).unwrap();
        }
        for (i, (v, want)) in vars.iter().zip(g[name].as_array().unwrap()).enumerate() {
            let got = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let want = tensor(want).flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1e-3), "{name} variable {i}: kandle {a}, Keras {b}");
            }
        }
    }
}

fn tutorial_cnn(dtype: DType) -> Sequential {
    Sequential::new()
        .dtype(dtype)
        .add(Conv2D::new(4, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((16, 16, 3)))
        .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.0))
        .add(Conv2D::new(8, (3, 3)).padding(Padding::Same).activation(Activation::Relu))
        .add(Conv2D::new(8, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.0))
        .add(Flatten::new())
        .add(Dense::new(16).activation(Activation::Relu))
        .add(Dropout::new(0.0))
        .add(Dense::new(4).activation(Activation::Softmax))
}

/// The tutorial CNN narrowed (16x16x3, 4 and 8 filters, Dense 16, dropout 0), trained 2 epochs
/// of 3 steps from Keras' initial weights with SGD + class_weight, RMSprop + sample_weight +
/// label_smoothing, Adam + clipnorm + sample_weight: in float64 the weights equal Keras' at
/// 1e-9 relative and the history (keys and values) at 1e-9; kandle's f32 fast path stays
/// within 1e-4 of its own f64 path on the same steps.
#[test]
fn fit_matches_keras_in_float64() {
    let g = goldens();
    let g = &g["fit"];
    let x = tensor(&g["x"]).reshape((12, 16, 16, 3)).unwrap();
    let labels = Tensor::from_vec(
        g["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>(),
        12,
        &Device::Cpu,
    )
    .unwrap();
    let y = to_categorical(&labels, 4).unwrap();
    let sw = tensor(&g["sample_weight"]);
    let init: Vec<Tensor> = g["init"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g["init_shapes"].as_array().unwrap())
        .map(|(w, s)| {
            let shape: Vec<usize> = s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            tensor(w).reshape(shape).unwrap()
        })
        .collect();
    let run = |case: &str, dtype: DType| {
        let m = tutorial_cnn(dtype);
        m.build().unwrap();
        m.set_weights(&init.iter().map(|w| w.to_dtype(dtype).unwrap()).collect::<Vec<_>>()).unwrap();
        let opts = FitOptions::default().batch_size(4).epochs(2).shuffle(false).verbose(0);
        let (opts, loss, opt): (_, Loss, Box<dyn Optimizer>) = match case {
            "sgd_class_weight" => (
                opts.class_weight([(0, 1.0), (1, 2.0), (2, 0.5), (3, 1.5)]),
                Loss::CategoricalCrossentropy,
                Box::new(SGD::new(0.1).momentum(0.9)),
            ),
            "rmsprop_sample_weight_smoothing" => (
                opts.sample_weight(&sw),
                Loss::CategoricalCrossentropy.label_smoothing(0.1),
                Box::new(RMSprop::default()),
            ),
            "adam_clipnorm_sample_weight" => {
                (opts.sample_weight(&sw), Loss::CategoricalCrossentropy, Box::new(Adam::new(0.01).clipnorm(1.0)))
            }
            other => panic!("{other}"),
        };
        m.compile(opt, loss, &["accuracy"]).unwrap();
        let h = m.fit(&x, &y, opts).unwrap();
        let w: Vec<Vec<f64>> = m
            .get_weights()
            .unwrap()
            .iter()
            .map(|w| w.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .collect();
        (w, h)
    };
    for case in ["sgd_class_weight", "rmsprop_sample_weight_smoothing", "adam_clipnorm_sample_weight"] {
        let keras = &g[case];
        let (w64, h) = run(case, DType::F64);
        for (i, (got, want)) in w64.iter().zip(keras["weights"].as_array().unwrap()).enumerate() {
            let want = tensor(want).to_vec1::<f64>().unwrap();
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-9 * scale, "{case} weight {i}: kandle {a}, Keras {b}");
            }
        }
        let mut keys = h.keys();
        keys.sort();
        let kh = keras["history"].as_object().unwrap();
        let mut want_keys: Vec<&str> = kh.keys().map(|k| k.as_str()).collect();
        want_keys.sort();
        assert_eq!(keys, want_keys, "{case}");
        for (k, vs) in kh {
            for (a, b) in h.get(k).unwrap().iter().zip(vs.as_array().unwrap()) {
                assert_close(&format!("{case} {k}"), *a, b.as_f64().unwrap(), 1e-9);
            }
        }
        // The f32 fast path against kandle's own f64 path, on the same steps.
        let (w32, _) = run(case, DType::F32);
        for (i, (a, b)) in w32.iter().zip(&w64).enumerate() {
            let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (x32, x64) in a.iter().zip(b) {
                assert!((x32 - x64).abs() <= 1e-4 * scale, "{case} weight {i}: f32 {x32}, f64 {x64}");
            }
        }
    }
}

/// The layers added for Keras' next steps (Rescaling, ZeroPadding2D, DepthwiseConv2D with
/// strides, `same` padding and a depth multiplier, SeparableConv2D with dilation, Reshape with
/// -1, GlobalMaxPooling2D): from Keras' weights, the same weight names and shapes and the same
/// outputs, in float64.
#[test]
fn new_layers_match_keras() {
    use kandle::layers::{DepthwiseConv2D, GlobalMaxPooling2D, Rescaling, Reshape, SeparableConv2D, ZeroPadding2D};
    let g = goldens();
    let g = &g["new_layers"];
    let m = Sequential::new()
        .dtype(DType::F64)
        .add(Rescaling::new(0.5).offset(0.25).input_shape((11, 12, 3)))
        .add(ZeroPadding2D::asymmetric((1, 0), (2, 1)))
        .add(DepthwiseConv2D::new((3, 2)).strides(2).padding(Padding::Same).depth_multiplier(2))
        .add(SeparableConv2D::new(5, 3).dilation_rate(2).activation(Activation::Tanh))
        .add(Reshape::with_unknown([None, Some(5)]))
        .add(Reshape::new([2, 4, 5]))
        .add(GlobalMaxPooling2D::new().keepdims(true))
        .add(Flatten::new());
    let names: Vec<String> = m.named_weights().unwrap().into_iter().map(|(n, _)| n).collect();
    let keras_names: Vec<String> = g["weight_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().split_once('/').unwrap().1.to_string())
        .collect();
    assert_eq!(names, keras_names);
    let weights: Vec<Tensor> = g["weights"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g["shapes"].as_array().unwrap())
        .map(|(w, s)| {
            let shape: Vec<usize> = s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            tensor(w).reshape(shape).unwrap()
        })
        .collect();
    m.set_weights(&weights).unwrap();
    let x = tensor(&g["x"]).reshape((2, 11, 12, 3)).unwrap();
    let got = m.predict(&x, 2).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let want = tensor(&g["y"]).flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "output {i}: kandle {a}, Keras {b}");
    }
}

/// ReduceLROnPlateau and EarlyStopping driven by hand on scripted logs, as Keras' were: the
/// learning rate after each epoch, the epoch at which training stops and the weights restored
/// (each epoch sets the weights to its number) equal Keras'.
#[test]
fn callbacks_match_keras_on_scripted_logs() {
    use kandle::callbacks::{Callback, Control, EarlyStopping, Logs, Mode, ReduceLROnPlateau, TrainingContext};
    let g = goldens();
    let g = &g["callbacks"];
    let tiny = || {
        let m = Sequential::new().dtype(DType::F64).add(Dense::new(1).input_shape(2));
        m.compile(SGD::new(0.1), Loss::MeanSquaredError, ()).unwrap();
        m
    };
    let values =
        |case: &Value| -> Vec<f64> { case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    for (name, mut cb) in [
        (
            "plateau_min",
            ReduceLROnPlateau::new()
                .monitor("val_loss")
                .factor(0.5)
                .patience(2)
                .min_delta(0.01)
                .cooldown(1)
                .min_lr(0.01),
        ),
        (
            "plateau_max",
            ReduceLROnPlateau::new().monitor("val_accuracy").mode(Mode::Max).factor(0.2).patience(1).min_delta(0.0),
        ),
    ] {
        let case = &g[name];
        let key = case["monitor"].as_str().unwrap();
        let m = tiny();
        let mut ctx = TrainingContext::new(&m);
        cb.on_train_begin(&mut ctx).unwrap();
        for (e, (v, want)) in values(case).iter().zip(case["lrs"].as_array().unwrap()).enumerate() {
            cb.on_epoch_end(e, &Logs(vec![(key.to_string(), *v)]), &mut ctx).unwrap();
            assert_close(&format!("{name} epoch {e}"), m.learning_rate().unwrap(), want.as_f64().unwrap(), 1e-12);
        }
    }
    for (name, mut cb) in [
        (
            "stop_restore",
            EarlyStopping::new().monitor("val_loss").patience(2).min_delta(0.01).restore_best_weights(true),
        ),
        (
            "stop_baseline",
            EarlyStopping::new().monitor("val_loss").patience(3).baseline(0.5).restore_best_weights(true),
        ),
        (
            "stop_start_from",
            EarlyStopping::new().monitor("val_loss").patience(1).start_from_epoch(3).restore_best_weights(true),
        ),
        ("stop_completes", EarlyStopping::new().monitor("val_loss").patience(5).restore_best_weights(true)),
    ] {
        let case = &g[name];
        let m = tiny();
        let mut ctx = TrainingContext::new(&m);
        cb.on_train_begin(&mut ctx).unwrap();
        let mut run = 0;
        for (e, v) in values(case).iter().enumerate() {
            let w = e as f64;
            m.set_weights(&[Tensor::full(w, (2, 1), &Device::Cpu).unwrap(), Tensor::full(w, 1, &Device::Cpu).unwrap()])
                .unwrap();
            run = e + 1;
            if cb.on_epoch_end(e, &Logs(vec![("val_loss".into(), *v)]), &mut ctx).unwrap() == Control::Stop {
                break;
            }
        }
        cb.on_train_end(&Logs::default(), &mut ctx).unwrap();
        assert_eq!(run as u64, case["epochs_run"].as_u64().unwrap(), "{name}: epochs run");
        let keras_stopped = case["stopped_epoch"].as_u64().unwrap() as usize;
        assert_eq!(cb.stopped_epoch().unwrap_or(0), keras_stopped, "{name}: stopped_epoch");
        let bias = m.get_weights().unwrap()[1].to_vec1::<f64>().unwrap()[0];
        assert_eq!(bias, case["weights_after"].as_f64().unwrap(), "{name}: restored weights");
    }
}

/// Keras' legacy `ImageDataGenerator.apply_transform` (SciPy's `affine_transform`) on the same
/// image and parameters: every fill mode (with SciPy's `wrap`), both interpolation orders, an
/// affine transform, a shift and a shift far outside the image; and the ZCA whitening matrix
/// and mean that `fit` computes. (The image is square: on a non-square one Keras turns about
/// a swapped centre, a Keras bug kandle does not copy; see the guide.)
#[test]
fn image_data_generator_matches_keras() {
    use kandle::preprocessing::image::{FillMode, Interpolation, TransformParams};
    let g = goldens();
    let g = &g["image_data_generator"];
    let shape: Vec<usize> = g["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let img = tensor(&g["img"]).reshape(shape.clone()).unwrap();
    let param = |t: &Value, k: &str| t.get(k).and_then(Value::as_f64);
    for (key, want) in g["outputs"].as_object().unwrap() {
        let parts: Vec<&str> = key.splitn(3, '_').collect();
        let (mode, order, tname) = (parts[0], parts[1], parts[2]);
        let t = &g["transforms"][tname];
        let p = TransformParams {
            theta: param(t, "theta").unwrap_or(0.0),
            tx: param(t, "tx").unwrap_or(0.0),
            ty: param(t, "ty").unwrap_or(0.0),
            shear: param(t, "shear").unwrap_or(0.0),
            zx: param(t, "zx").unwrap_or(1.0),
            zy: param(t, "zy").unwrap_or(1.0),
            ..Default::default()
        };
        let gen = ImageDataGenerator::new()
            .fill_mode(mode.parse::<FillMode>().unwrap())
            .cval(-1.0)
            .interpolation(if order == "1" { Interpolation::Bilinear } else { Interpolation::Nearest });
        let got = gen.apply_transform(&img, &p).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = tensor(want).to_vec1::<f64>().unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((*a as f64 - b).abs() < 1e-4, "{key} pixel {i}: kandle {a}, Keras {b}");
        }
    }
    let zx = tensor(&g["zca_x"]).reshape((20, 4, 3, 2)).unwrap();
    let mut gen = ImageDataGenerator::new().zca_whitening(true).zca_epsilon(1e-4);
    gen.fit(&zx).unwrap();
    let m = gen.zca_whitening_matrix().unwrap().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = tensor(&g["zca_matrix"]).to_vec1::<f64>().unwrap();
    let scale = want.iter().fold(0f64, |s, v| s.max(v.abs()));
    for (i, (a, b)) in m.iter().zip(&want).enumerate() {
        assert!((*a as f64 - b).abs() <= 1e-4 * scale, "zca [{i}]: kandle {a}, Keras {b}");
    }
    let mean = gen.mean().unwrap();
    for (a, b) in mean.iter().zip(tensor(&g["zca_mean"]).to_vec1::<f64>().unwrap()) {
        assert!((*a as f64 - b).abs() < 1e-6, "mean: kandle {a}, Keras {b}");
    }
}
