//! `kandle::applications` against Keras (issue 33): the networks' layers, names, parameter
//! counts and output shapes equal Keras' own (tests/golden/applications/architectures.json,
//! written by tests/golden/applications_keras.py with Keras 3.15.1); `weights = imagenet`
//! fetches Keras' file names into Keras' cache from a mirror and checks Keras' hashes; a frozen
//! base keeps its weights and statistics while the head trains.
//!
//! Predictions on Keras-written weight files are compared in CI by scripts/applications_check.sh
//! (those files are too large to commit).
//!
//! The tests that set environment variables hold one lock.

mod common;

use kandle::applications::{
    DenseNet121, DenseNet169, DenseNet201, EfficientNetB0, MobileNetV2, Pooling, ResNet50, Weights, VGG16, VGG19,
};
use kandle::prelude::*;
use serde_json::Value;
use std::sync::Mutex;

static ENV: Mutex<()> = Mutex::new(());

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/applications/architectures.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// kandle's network for one of the golden file's cases (its constructor and Keras' kwargs).
fn build(case: &Value) -> Model {
    let kw = &case["kwargs"];
    let shape =
        kw["input_shape"].as_array().map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>());
    let pooling = kw["pooling"].as_str().map(|p| p.parse::<Pooling>().unwrap());
    let include_top = kw["include_top"].as_bool().unwrap_or(true);
    let classes = kw["classes"].as_u64().unwrap_or(1000) as usize;
    macro_rules! common {
        ($b:expr) => {{
            let mut b = $b.weights(Weights::None).include_top(include_top).pooling(pooling).classes(classes);
            if let Some(s) = shape.clone() {
                b = b.input_shape(s);
            }
            b.build().unwrap()
        }};
    }
    match case["constructor"].as_str().unwrap() {
        "ResNet50" => common!(ResNet50::new()),
        "MobileNetV2" => common!(MobileNetV2::new().alpha(kw["alpha"].as_f64().unwrap_or(1.0))),
        "EfficientNetB0" => common!(EfficientNetB0::new()),
        "VGG16" => common!(VGG16::new()),
        "VGG19" => common!(VGG19::new()),
        "DenseNet121" => common!(DenseNet121::new()),
        "DenseNet169" => common!(DenseNet169::new()),
        "DenseNet201" => common!(DenseNet201::new()),
        other => panic!("no such network {other}"),
    }
}

fn trainable_params(model: &Model) -> usize {
    model.layers().iter().flat_map(|l| l.weights()).filter(|w| w.trainable).map(|w| w.var.elem_count()).sum()
}

#[test]
fn architectures_equal_keras_layer_by_layer() {
    let g = golden();
    for (key, case) in g["models"].as_object().unwrap() {
        let model = build(case);
        assert_eq!(model.model_name(), case["name"].as_str().unwrap(), "{key}");
        let layers: Vec<(String, String)> =
            model.layers().iter().map(|l| (l.name(), l.class_name().to_string())).collect();
        let keras: Vec<(String, String)> = case["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(layers.len(), keras.len(), "{key}: number of layers");
        for (i, (a, b)) in layers.iter().zip(&keras).enumerate() {
            assert_eq!(a, b, "{key}: layer {i}");
        }
        assert_eq!(model.count_params().unwrap() as u64, case["total_params"].as_u64().unwrap(), "{key}: total");
        assert_eq!(trainable_params(&model) as u64, case["trainable_params"].as_u64().unwrap(), "{key}: trainable");
        let out: Vec<usize> =
            case["output_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(model.output_shape().unwrap(), out, "{key}: output shape");
    }
}

#[test]
fn arguments_keras_refuses_are_named_errors() {
    let err = |r: kandle::Result<Model>| r.unwrap_err().to_string();
    // The top with ImageNet's weights: 1000 classes and 224x224x3.
    assert!(err(ResNet50::new().classes(10).build()).contains("classes must be 1000"));
    assert!(err(ResNet50::new().input_shape((160, 160, 3)).build()).contains("input shape must be (224, 224, 3)"));
    assert!(err(MobileNetV2::new().include_top(false).input_shape((16, 16, 3)).weights(Weights::None).build())
        .contains("at least 32x32"));
    assert!(err(MobileNetV2::new().alpha(0.6).build()).contains("alpha must be one of"));
    assert!(err(ResNet50::new().classifier_activation(Activation::Relu).build()).contains("softmax and linear"));
    assert!(
        err(EfficientNetB0::new().weights(Weights::Path("/no/such/file.h5".into())).build()).contains("no such file")
    );
    assert!(err(ResNet50::new().include_top(false).input_shape((64, 64)).weights(Weights::None).build())
        .contains("(height, width, channels)"));
}

#[test]
fn input_tensor_builds_on_the_given_graph() {
    let inputs = Input::new((64, 64, 3));
    let x = Rescaling::new(1.0 / 127.5).offset(-1.0).call(&inputs).unwrap();
    let model =
        MobileNetV2::new().alpha(0.35).include_top(false).weights(Weights::None).input_tensor(&x).build().unwrap();
    assert_eq!(model.input_shape().unwrap(), vec![64, 64, 3]);
    assert_eq!(model.layer_names()[..2], ["input_layer".to_string(), "rescaling".to_string()]);
    assert_eq!(model.output_shape().unwrap(), vec![2, 2, 1280]);
}

/// `weights = imagenet` fetches Keras' file name from the mirror into `$KERAS_HOME/models`,
/// reads it from there the next time (offline), and refuses a file whose hash is not Keras'.
#[test]
fn imagenet_weights_come_from_keras_cache_or_mirror_with_keras_hashes() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let home = common::TempDir::new("applications", "keras-home");
    let mirror = common::TempDir::new("applications", "mirror");
    std::env::set_var("KERAS_HOME", home.path());
    std::env::set_var(kandle::applications::MIRROR_ENV, format!("file://{}", mirror.display()));
    std::env::remove_var("KANDLE_OFFLINE");

    // A MobileNetV2 whose weights the mirror serves under Keras' file name (Keras checks no
    // hash for MobileNetV2's files).
    let source = MobileNetV2::new().alpha(0.35).include_top(false).input_shape((96, 96, 3)).weights(Weights::None);
    let source = source.build().unwrap();
    source.set_weights(&perturbed(&source)).unwrap();
    let file = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5";
    source.save_weights(mirror.join("kandle.weights.h5")).unwrap();
    std::fs::rename(mirror.join("kandle.weights.h5"), mirror.join(file)).unwrap();
    let build = || MobileNetV2::new().alpha(0.35).include_top(false).input_shape((96, 96, 3)).build();
    let model = build().unwrap();
    assert!(home.join("models").join(file).is_file(), "cached under Keras' name");
    let x = Tensor::rand(0f32, 1f32, (2, 96, 96, 3), &Device::Cpu).unwrap();
    let (a, b) = (source.predict(&x, 2).unwrap(), model.predict(&x, 2).unwrap());
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());

    // Offline, the cached file serves.
    std::fs::remove_file(mirror.join(file)).unwrap();
    std::env::set_var("KANDLE_OFFLINE", "1");
    build().unwrap();
    // A ResNet50 file that is not Keras' (its MD5 differs) is refused, naming the hash.
    std::fs::write(home.join("models").join("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"), b"not it")
        .unwrap();
    let e = ResNet50::new().include_top(false).build().unwrap_err().to_string();
    assert!(e.contains("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"), "{e}");
    std::env::remove_var("KANDLE_OFFLINE");
    std::env::remove_var(kandle::applications::MIRROR_ENV);
    std::env::remove_var("KERAS_HOME");
}

/// Weights of `model` moved away from their initial values (so a load is visible).
fn perturbed(model: &Model) -> Vec<Tensor> {
    model.get_weights().unwrap().iter().map(|w| (w.clone() * 0.5).unwrap().affine(1.0, 0.01).unwrap()).collect()
}

/// Keras' transfer-learning recipe: a frozen base called in inference mode keeps its weights
/// and BatchNormalization statistics bit for bit while the head trains; unfrozen for
/// fine-tuning, only the layers left trainable move.
#[test]
fn a_frozen_base_stays_put_and_fine_tuning_moves_only_unfrozen_layers() {
    let base = MobileNetV2::new().alpha(0.35).include_top(false).input_shape((32, 32, 3)).weights(Weights::None);
    let base = base.build().unwrap();
    base.set_trainable(false);
    let inputs = Input::new((32, 32, 3));
    let x = base.as_layer().call_training(&inputs, false).unwrap();
    let x = GlobalAveragePooling2D::new().call(&x).unwrap();
    let outputs = Dense::new(2).activation(Activation::Softmax).call(&x).unwrap();
    let model = Model::new(&[inputs], &[outputs]).unwrap().seed(0);
    model.compile(Adam::new(1e-3), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let x = Tensor::rand(0f32, 1f32, (16, 32, 32, 3), &Device::Cpu).unwrap();
    let y = to_categorical(&Tensor::new([0u32, 1].repeat(8), &Device::Cpu).unwrap(), 2).unwrap();
    let before = base.get_weights().unwrap();
    let head_before = model.layers().last().unwrap().get_weights().unwrap();
    model.fit(&x, &y, FitOptions::default().batch_size(8).epochs(1).verbose(0)).unwrap();
    for (a, b) in before.iter().zip(base.get_weights().unwrap()) {
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    let head_after = model.layers().last().unwrap().get_weights().unwrap();
    assert_ne!(
        head_before[0].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        head_after[0].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );

    // Fine-tuning: unfreeze the base but its first 100 layers.
    base.set_trainable(true);
    for l in base.layers().iter().take(100) {
        l.set_trainable(false);
    }
    model.compile(Adam::new(1e-5), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let before: Vec<Vec<Tensor>> = base.layers().iter().map(|l| l.get_weights().unwrap()).collect();
    model.fit(&x, &y, FitOptions::default().batch_size(8).epochs(1).verbose(0)).unwrap();
    let (mut moved, mut unfrozen, mut kept) = (0, 0, 0);
    for (i, (l, w0)) in base.layers().iter().zip(&before).enumerate() {
        let changed = l.get_weights().unwrap().iter().zip(w0).any(|(a, b)| {
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap() != b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        });
        if i < 100 {
            assert!(!changed, "frozen layer {} moved", l.name());
            kept += !w0.is_empty() as usize;
        } else if l.weights().iter().any(|w| w.trainable) {
            // A layer whose gradient is exactly zero (ReLU6 clipped everywhere on these random
            // weights) may stay; most move.
            moved += changed as usize;
            unfrozen += 1;
        }
    }
    assert!(kept > 10 && moved * 10 >= unfrozen * 8, "moved {moved} of {unfrozen} unfrozen, kept {kept}");
}

/// kandle loads the legacy `.h5` files Keras wrote for each network (with and without the top,
/// two input sizes) and predicts as Keras did on the same real images, within 1e-4 of the
/// largest output. Run by scripts/applications_check.sh, which makes the files with Keras
/// (`KANDLE_APPLICATIONS_CHECK_DIR`); ignored otherwise (hundreds of MB of files).
#[test]
#[ignore = "needs the Keras-written files of scripts/applications_check.sh"]
fn keras_written_weights_predict_as_keras() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::path::PathBuf::from(
        std::env::var("KANDLE_APPLICATIONS_CHECK_DIR")
            .expect("KANDLE_APPLICATIONS_CHECK_DIR: run scripts/applications_check.sh"),
    );
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let home = common::TempDir::new("applications", "check-keras-home");
    let (mut worst, mut failures) = (0f32, Vec::new());
    for case in cases["cases"].as_array().unwrap() {
        let key = case["key"].as_str().unwrap();
        let size = case["size"].as_u64().unwrap() as usize;
        let include_top = case["include_top"].as_bool().unwrap();
        let top = if case["logits"].as_bool().unwrap() { Activation::Linear } else { Activation::Softmax };
        let mut runs = vec![("path", Weights::Path(case["weights"].as_str().unwrap().into()))];
        if case["mirror_file"].is_string() {
            runs.push(("imagenet via the mirror", Weights::Imagenet));
        }
        let images = Tensor::read_npy(dir.join(format!("images_{size}.npy"))).unwrap();
        let keras = Tensor::read_npy(dir.join(format!("{key}.npy"))).unwrap();
        for (how, weights) in runs {
            if weights == Weights::Imagenet {
                std::env::set_var("KERAS_HOME", home.path());
                std::env::set_var(kandle::applications::MIRROR_ENV, format!("file://{}", dir.join("mirror").display()));
            }
            let start = std::time::Instant::now();
            let (model, x) = match case["network"].as_str().unwrap() {
                "ResNet50" => (
                    ResNet50::new()
                        .include_top(include_top)
                        .classifier_activation(top)
                        .input_shape((size, size, 3))
                        .weights(weights)
                        .build(),
                    kandle::applications::resnet::preprocess_input(&images).unwrap(),
                ),
                "MobileNetV2" => (
                    MobileNetV2::new()
                        .include_top(include_top)
                        .classifier_activation(top)
                        .input_shape((size, size, 3))
                        .weights(weights)
                        .build(),
                    kandle::applications::mobilenet_v2::preprocess_input(&images).unwrap(),
                ),
                "EfficientNetB0" => (
                    EfficientNetB0::new()
                        .include_top(include_top)
                        .classifier_activation(top)
                        .input_shape((size, size, 3))
                        .weights(weights)
                        .build(),
                    kandle::applications::efficientnet::preprocess_input(&images).unwrap(),
                ),
                "VGG16" => (
                    VGG16::new()
                        .include_top(include_top)
                        .classifier_activation(top)
                        .input_shape((size, size, 3))
                        .weights(weights)
                        .build(),
                    kandle::applications::vgg::preprocess_input(&images).unwrap(),
                ),
                "DenseNet121" => (
                    DenseNet121::new()
                        .include_top(include_top)
                        .classifier_activation(top)
                        .input_shape((size, size, 3))
                        .weights(weights)
                        .build(),
                    kandle::applications::densenet::preprocess_input(&images).unwrap(),
                ),
                other => panic!("no such network {other}"),
            };
            let model = model.unwrap_or_else(|e| panic!("{key} ({how}): {e}"));
            let loaded = start.elapsed().as_secs_f64();
            let ours = model.predict(&x, 4).unwrap();
            assert_eq!(ours.dims(), keras.dims(), "{key}");
            let scale = keras.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let diff = (&ours - &keras).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let rel = diff / scale;
            println!("{key} ({how}): max_diff={diff:.3e} of largest {scale:.3e} (relative {rel:.2e}), built and loaded in {loaded:.1} s");
            if rel > 1e-4 {
                failures.push(format!("{key} ({how}): kandle differs from Keras by {rel:.2e} of the largest output"));
            }
            worst = worst.max(rel);
            std::env::remove_var(kandle::applications::MIRROR_ENV);
            std::env::remove_var("KERAS_HOME");
        }
    }
    println!("applications: worst relative difference {worst:.2e} (tolerance 1e-4)");
    assert!(failures.is_empty(), "{failures:#?}");
}
