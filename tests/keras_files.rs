//! Keras' own files (issue 32): weights and models written by Keras 3.15 itself
//! (tests/golden/keras_files_keras.py), read by kandle and checked against Keras' predictions;
//! kandle's files read back by kandle (and, in scripts/keras_files_check.sh, by Keras).

use candle_core::{Device, Tensor};
use kandle::prelude::*;
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keras_files").join(name)
}

struct Probe {
    x: Tensor,
    expected: Vec<f32>,
    /// The training data of the resumed-training goldens.
    train: Option<(Tensor, Tensor)>,
}

fn probe(name: &str) -> Probe {
    let text = std::fs::read_to_string(golden("predictions.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let p = &v[name];
    let floats = |k: &str| p[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    let shape: Vec<usize> = p["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let train = p.get("x").map(|_| {
        let x = floats("x");
        let n = x.len() / (shape[1..].iter().product::<usize>());
        let mut xs = shape.clone();
        xs[0] = n;
        let y = floats("y");
        let classes = y.len() / n;
        (Tensor::from_vec(x, xs, &Device::Cpu).unwrap(), Tensor::from_vec(y, (n, classes), &Device::Cpu).unwrap())
    });
    Probe { x: Tensor::from_vec(floats("input"), shape, &Device::Cpu).unwrap(), expected: floats("output"), train }
}

/// kandle's predictions equal Keras' within 1e-5 of the largest output.
fn assert_predicts(model: &Model, p: &Probe) {
    assert_predicts_within(model, p, 1e-5);
}

fn assert_predicts_within(model: &Model, p: &Probe, tolerance: f32) {
    let outs = model.predict_outputs(&p.x, 8).unwrap();
    let n = p.x.dims()[0];
    let flat: Vec<Tensor> = outs.iter().map(|o| o.reshape((n, ())).unwrap()).collect();
    let got = Tensor::cat(&flat, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), p.expected.len());
    let scale = p.expected.iter().fold(0f32, |a, &b| a.max(b.abs()));
    for (i, (g, e)) in got.iter().zip(&p.expected).enumerate() {
        assert!((g - e).abs() <= tolerance * scale.max(1.0), "output {i}: kandle {g}, Keras {e}");
    }
}

/// The tutorial's CNN at 8x8, as tests/golden/keras_files_keras.py builds it.
fn tutorial_cnn() -> Model {
    tutorial_cnn_with(4)
}

/// The same with `first` filters in the first convolution.
fn tutorial_cnn_with(first: usize) -> Model {
    Sequential::new()
        .add(Conv2D::new(first, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((8, 8, 3)))
        .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(8).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(3).activation(Activation::Softmax))
        .into()
}

#[test]
fn keras_weights_h5_loads_and_predicts_as_keras() {
    let model = tutorial_cnn();
    model.load_weights(golden("tutorial_cnn.weights.h5")).unwrap();
    assert_predicts(&model, &probe("tutorial_cnn"));
}

#[test]
fn weights_h5_written_by_kandle_read_back() {
    let model = tutorial_cnn();
    model.load_weights(golden("tutorial_cnn.weights.h5")).unwrap();
    let dir = tempfile_dir("weights_roundtrip");
    let path = dir.join("m.weights.h5");
    model.save_weights(&path).unwrap();
    let again = tutorial_cnn();
    again.load_weights(&path).unwrap();
    assert_predicts(&again, &probe("tutorial_cnn"));
}

#[test]
fn keras_weights_of_another_architecture_are_refused_and_change_nothing() {
    let model: Model = Sequential::new()
        .add(Conv2D::new(4, (3, 3)).padding(Padding::Same).input_shape((8, 8, 3)))
        .add(Flatten::new())
        .add(Dense::new(3))
        .into();
    let before = model.get_weights().unwrap();
    let err = model.load_weights(golden("tutorial_cnn.weights.h5")).unwrap_err().to_string();
    assert!(err.contains("layers/dense/vars"), "{err}");
    assert!(err.contains("(36, 8)") || err.contains("[36, 8]") || err.contains("[256, 3]"), "{err}");
    for (a, b) in before.iter().zip(model.get_weights().unwrap()) {
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

#[test]
fn keras_archive_loads_with_its_compile_settings_and_predicts_as_keras() {
    let model = load_model(golden("tutorial_cnn.keras")).unwrap();
    assert_eq!(model.model_name(), "tutorial");
    assert_eq!(model.layers().len(), 8);
    assert_predicts(&model, &probe("tutorial_cnn"));
    assert!((model.learning_rate().unwrap() - 1e-3).abs() < 1e-9);
    let y = Tensor::from_vec(vec![1f32, 0., 0., 0., 1., 0.], (2, 3), &Device::Cpu).unwrap();
    let e = model.evaluate(&probe("tutorial_cnn").x, &y, 2).unwrap();
    assert!(e.get("accuracy").is_some() && e.loss.is_finite(), "{e:?}");
}

#[test]
fn keras_archive_written_by_kandle_read_back() {
    let model = load_model(golden("tutorial_cnn.keras")).unwrap();
    let dir = tempfile_dir("archive_roundtrip");
    let path = dir.join("m.keras");
    model.save(&path).unwrap();
    let again = load_model(&path).unwrap();
    assert_predicts(&again, &probe("tutorial_cnn"));
    assert_eq!(again.model_name(), "tutorial");
    // Into an existing model of the same architecture (a ModelCheckpoint's best.keras).
    let same = tutorial_cnn();
    same.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    same.load(&path).unwrap();
    assert_predicts(&same, &probe("tutorial_cnn"));
}

#[test]
fn functional_nested_and_two_output_archives_predict_as_keras() {
    for name in ["skip_concat", "nested", "two_outputs"] {
        let model = load_model(golden(&format!("{name}.keras"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.model_name(), name);
        assert_predicts(&model, &probe(name));
        // Saved by kandle, read back by kandle.
        let path = tempfile_dir("functional").join(format!("{name}.keras"));
        model.save(&path).unwrap();
        assert_predicts(&load_model(&path).unwrap(), &probe(name));
    }
    let nested = load_model(golden("nested.keras")).unwrap();
    let base = nested.get_layer("base").unwrap().as_model().expect("the base is a model");
    assert_eq!(base.layers().len(), 3);
}

#[test]
fn functional_weights_h5_of_keras_load_by_keras_order() {
    for name in ["skip_concat", "nested"] {
        let model = load_model(golden(&format!("{name}.keras"))).unwrap();
        let zeros: Vec<Tensor> = model.get_weights().unwrap().iter().map(|w| w.zeros_like().unwrap()).collect();
        model.set_weights(&zeros).unwrap();
        model.load_weights(golden(&format!("{name}.weights.h5"))).unwrap();
        assert_predicts(&model, &probe(name));
    }
}

/// Keras trained 2 epochs and saved; kandle loads the file (optimizer state included) and
/// trains the 3rd on the same batches: it ends where Keras' own 3rd epoch ended.
#[test]
fn training_resumes_from_a_keras_archive_where_keras_would() {
    for name in ["resume_rmsprop", "resume_adam"] {
        let p = probe(name);
        let (x, y) = p.train.clone().unwrap();
        let model = load_model(golden(&format!("{name}.keras"))).unwrap();
        model.fit(&x, &y, FitOptions::default().batch_size(8).epochs(1).shuffle(false).verbose(0)).unwrap();
        assert_predicts_within(&model, &p, 1e-4);
        // Without the optimizer's state (fresh slots, step 0) the same epoch ends elsewhere.
        let fresh = load_model(golden(&format!("{name}.keras"))).unwrap();
        let optimizer: Box<dyn Optimizer> = if name == "resume_adam" {
            Box::new(Adam::default().amsgrad(true))
        } else {
            Box::new(RMSprop::default().momentum(0.5))
        };
        fresh.compile(optimizer, Loss::CategoricalCrossentropy, Vec::<MetricEntry>::new()).unwrap();
        fresh.fit(&x, &y, FitOptions::default().batch_size(8).epochs(1).shuffle(false).verbose(0)).unwrap();
        let moved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_predicts_within(&fresh, &p, 1e-4)));
        assert!(moved.is_err(), "{name}: a fresh optimizer reached the same point");
    }
}

#[test]
fn legacy_h5_models_of_keras_3_and_keras_2_load_and_predict_as_keras() {
    for (file, name) in [
        ("tutorial_cnn.h5", "tutorial_cnn"),
        ("skip_concat.h5", "skip_concat"),
        ("nested.h5", "nested"),
        ("keras2.h5", "keras2"),
    ] {
        let model = load_model(golden(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_predicts(&model, &probe(name));
    }
    // Compiled from training_config.
    let model = load_model(golden("keras2.h5")).unwrap();
    assert!((model.learning_rate().unwrap() - 1e-3).abs() < 1e-9);
}

#[test]
fn legacy_h5_weights_load_by_order_by_name_and_split_layer_names() {
    let model = load_model(golden("keras2.h5")).unwrap();
    for file in ["keras2_weights.h5", "keras2_weights_split.h5"] {
        let zeros: Vec<Tensor> = model.get_weights().unwrap().iter().map(|w| w.zeros_like().unwrap()).collect();
        model.set_weights(&zeros).unwrap();
        model.load_weights(golden(file)).unwrap();
        assert_predicts(&model, &probe("keras2"));
    }
    // The tutorial CNN with a 5-class head: by name, skipping the head, the rest loads.
    let other: Model = Sequential::new()
        .add(Conv2D::new(4, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((8, 8, 3)))
        .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(8).activation(Activation::Relu))
        .add(Dense::new(5).activation(Activation::Softmax))
        .into();
    let by_order = other.load_weights(golden("tutorial_cnn.h5")).unwrap_err().to_string();
    assert!(by_order.contains("dense_1") && by_order.contains("[8, 5]"), "{by_order}");
    let head_before = other.get_layer("dense_1").unwrap().get_weights().unwrap();
    let skipped = other
        .load_weights_with(golden("tutorial_cnn.h5"), LoadWeightsOptions::default().by_name(true).skip_mismatch(true))
        .unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("dense_1"), "{skipped:?}");
    let head_after = other.get_layer("dense_1").unwrap().get_weights().unwrap();
    assert_eq!(head_before[1].to_vec1::<f32>().unwrap(), head_after[1].to_vec1::<f32>().unwrap());
    let reference = load_model(golden("tutorial_cnn.h5")).unwrap();
    let conv = |m: &Model| m.get_layer("conv2d").unwrap().get_weights().unwrap()[1].to_vec1::<f32>().unwrap();
    assert_eq!(conv(&other), conv(&reference));
    // Without skip_mismatch the mismatch is an error and nothing changes.
    let fresh = other.get_layer("conv2d").unwrap().get_weights().unwrap();
    let again: Model = Sequential::new()
        .add(Conv2D::new(4, (3, 3)).padding(Padding::Same).input_shape((8, 8, 3)))
        .add(Flatten::new())
        .add(Dense::new(5))
        .into();
    let _ = fresh;
    let before = again.get_weights().unwrap();
    let err = again
        .load_weights_with(golden("tutorial_cnn.h5"), LoadWeightsOptions::default().by_name(true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("dense"), "{err}");
    for (a, b) in before.iter().zip(again.get_weights().unwrap()) {
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

/// The golden archive `name` with its members changed by `edit` (`None` leaves one out).
fn edited_archive(name: &str, out: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    use std::io::{Read, Write};
    let mut zin = zip::ZipArchive::new(std::fs::File::open(golden(name)).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let member = f.name().unwrap().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        if let Some(b) = edit(&member, bytes) {
            zout.start_file(member.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
            zout.write_all(&b).unwrap();
        }
    }
    zout.finish().unwrap();
}

/// The error of loading the golden tutorial archive with `config.json` changed by `change`.
fn config_error(change: impl Fn(&mut serde_json::Value)) -> String {
    let path = tempfile_dir("config_errors").join(format!("c{}.keras", rand_suffix()));
    edited_archive("tutorial_cnn.keras", &path, |member, bytes| {
        if member != "config.json" {
            return Some(bytes);
        }
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        change(&mut v);
        Some(v.to_string().into_bytes())
    });
    load_model(&path).unwrap_err().to_string()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn broken_and_foreign_keras_archives_are_clear_errors() {
    let dir = tempfile_dir("broken");
    // Truncated: every cut of the archive is an error (or, never, a panic).
    let bytes = std::fs::read(golden("tutorial_cnn.keras")).unwrap();
    for cut in [0, 10, 100, bytes.len() / 2, bytes.len() - 30] {
        let p = dir.join(format!("cut{cut}.keras"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_model(&p).unwrap_err().to_string();
        assert!(e.contains("cut") && (e.contains("zip") || e.contains("HDF5") || e.contains("archive")), "{e}");
    }
    // A member missing.
    let p = dir.join("no_weights.keras");
    edited_archive("tutorial_cnn.keras", &p, |m, b| (m != "model.weights.h5").then_some(b));
    assert!(load_model(&p).unwrap_err().to_string().contains("model.weights.h5"));
    // Another Keras version's archive (Keras 2's .keras had another config shape).
    let p = dir.join("keras2.keras");
    edited_archive("tutorial_cnn.keras", &p, |m, b| {
        Some(if m == "metadata.json" { br#"{"keras_version": "2.15.0"}"#.to_vec() } else { b })
    });
    let e = load_model(&p).unwrap_err().to_string();
    assert!(e.contains("2.15.0") && e.contains("Keras 3"), "{e}");
    // A config.json of another shape, an unknown class, an option kandle lacks.
    let e = config_error(|v| v["config"] = serde_json::json!([]));
    assert!(e.contains("config"), "{e}");
    let e = config_error(|v| v["config"]["layers"][2]["class_name"] = "Lambda".into());
    assert!(e.contains("Lambda") && e.contains("CustomObjects"), "{e}");
    let e = config_error(|v| v["config"]["layers"][1]["config"]["groups"] = 2.into());
    assert!(e.contains("conv2d") && e.contains("groups") && e.contains('2'), "{e}");
    let e = config_error(|v| v["config"]["layers"][1]["config"]["kernel_constraint"] = "non_neg".into());
    assert!(e.contains("kernel_constraint") && e.contains("non_neg"), "{e}");
    let e = config_error(|v| v["compile_config"]["optimizer"]["config"]["use_ema"] = true.into());
    assert!(e.contains("use_ema"), "{e}");
}

#[test]
fn keras_weights_of_wrong_shape_or_missing_are_clear_errors_and_change_nothing() {
    let dir = tempfile_dir("bad_weights");
    // Another model's weights in the tutorial's archive.
    let other = std::fs::read(golden("skip_concat.weights.h5")).unwrap();
    let p = dir.join("mixed.keras");
    edited_archive("tutorial_cnn.keras", &p, |m, b| Some(if m == "model.weights.h5" { other.clone() } else { b }));
    let e = load_model(&p).unwrap_err().to_string();
    assert!(e.contains("layers/") && e.contains("vars"), "{e}");
    // A .weights.h5 with one variable of the wrong shape: an error naming it, nothing loaded.
    let model = tutorial_cnn();
    model.load_weights(golden("tutorial_cnn.weights.h5")).unwrap();
    let wrong = tutorial_cnn_with(5);
    let path = dir.join("wrong.weights.h5");
    wrong.save_weights(&path).unwrap();
    let before = model.get_weights().unwrap();
    let e = model.load_weights(&path).unwrap_err().to_string();
    assert!(e.contains("layers/conv2d/vars/0") && e.contains("[3, 3, 3, 4]") && e.contains("[3, 3, 3, 5]"), "{e}");
    for (a, b) in before.iter().zip(model.get_weights().unwrap()) {
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    // Not an HDF5 file at all.
    let p = dir.join("text.weights.h5");
    std::fs::write(&p, b"not hdf5").unwrap();
    assert!(model.load_weights(&p).unwrap_err().to_string().contains("HDF5"));
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kandle_keras_files_{name}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A functional model with every layer class kandle writes to Keras, options off their
/// defaults, and a shared layer called twice.
fn every_layer() -> Model {
    use kandle::layers::UpSampling;
    let inputs = Input::new((8, 8, 3));
    use kandle::layers::{
        CenterCrop, FlipMode, RandomBrightness, RandomContrast, RandomFlip, RandomRotation, RandomTranslation,
        RandomZoom, Resizing,
    };
    let x = RandomFlip::new(FlipMode::Horizontal).call(&inputs).unwrap();
    let x = RandomRotation::new(0.05).call(&x).unwrap();
    let x = RandomTranslation::new(0.1, (-0.1, 0.2)).call(&x).unwrap();
    let x = RandomZoom::new(0.1).width_factor(0.2).call(&x).unwrap();
    let x = RandomContrast::new(0.2).value_range(0.0, 1.0).call(&x).unwrap();
    let x = RandomBrightness::new(0.1).value_range(0.0, 1.0).call(&x).unwrap();
    let x = Resizing::new(10, 11).call(&x).unwrap();
    let x = CenterCrop::new(8, 8).call(&x).unwrap();
    let x = Rescaling::new(2.0).offset(-1.0).call(&x).unwrap();
    let mut norm = kandle::layers::Normalization::new();
    let data = (Tensor::arange(0f32, 768., &Device::Cpu).unwrap().reshape((4, 8, 8, 3)).unwrap() * 0.01).unwrap();
    norm.adapt(&data).unwrap();
    let x = norm.call(&x).unwrap();
    let x = Rescaling::per_channel([1.0, 0.5, 2.0]).call(&x).unwrap();
    let x = Conv2D::new(6, (3, 3))
        .padding(Padding::Same)
        .activation(Activation::Elu)
        .kernel_regularizer(Regularizer::l2(0.001))
        .call(&x)
        .unwrap();
    let x = BatchNormalization::new().momentum(0.9).epsilon(1e-3).call(&x).unwrap();
    let x = DepthwiseConv2D::new((3, 3)).padding(Padding::Same).depth_multiplier(2).call(&x).unwrap();
    let x = SeparableConv2D::new(6, (3, 3)).padding(Padding::Same).activation(Activation::Selu).call(&x).unwrap();
    let x = ZeroPadding2D::asymmetric((1, 0), (0, 2)).call(&x).unwrap();
    let x = Cropping2D::asymmetric((1, 0), (1, 1)).call(&x).unwrap();
    let x = UpSampling2D::new((2, 2)).interpolation(UpSampling::Bilinear).call(&x).unwrap();
    let x = Conv2DTranspose::new(4, (3, 3)).strides((2, 2)).padding(Padding::Same).call(&x).unwrap();
    let x = MaxPooling2D::new((2, 2)).call(&x).unwrap();
    let x = AveragePooling2D::new((2, 2)).strides((2, 2)).call(&x).unwrap();
    let a = LayerNormalization::new().call(&x).unwrap();
    let b = ActivationLayer::new(Activation::Tanh).call(&x).unwrap();
    let shared = LayerRef::new(Conv2D::new(4, (1, 1)).activation(Activation::Gelu));
    let (a, b) = (shared.call(&a).unwrap(), shared.call(&b).unwrap());
    let m = [
        Add::new().call(&[a.clone(), b.clone()]).unwrap(),
        Subtract::new().call(&[a.clone(), b.clone()]).unwrap(),
        Multiply::new().call(&[a.clone(), b.clone()]).unwrap(),
        Average::new().call(&[a.clone(), b.clone()]).unwrap(),
        Maximum::new().call(&[a.clone(), b.clone()]).unwrap(),
        Minimum::new().call(&[a.clone(), b.clone()]).unwrap(),
    ];
    let x = Concatenate::new().call(&m[..]).unwrap();
    let x = ReLU::new().max_value(6.0).call(&x).unwrap();
    let x = LeakyReLU::new().negative_slope(0.2).call(&x).unwrap();
    let x = SpatialDropout2D::new(0.1).call(&x).unwrap();
    let x = Dropout::new(0.2).noise_shape([Some(1), Some(1), None]).call(&x).unwrap();
    let g1 = GlobalAveragePooling2D::new().call(&x).unwrap();
    let g2 = GlobalMaxPooling2D::new().call(&x).unwrap();
    let x = Concatenate::new().call(&[g1, g2]).unwrap();
    let x = Dense::new(12)
        .activation(Activation::Silu)
        .kernel_initializer(Initializer::HeNormal)
        .bias_initializer(Initializer::Constant(0.1))
        .call(&x)
        .unwrap();
    let x = Dropout::new(0.3).call(&x).unwrap();
    let x = Reshape::new((3, 4)).call(&x).unwrap();
    let x = Flatten::new().call(&x).unwrap();
    let x = Dense::new(3).call(&x).unwrap();
    let outputs = Softmax::new().call(&x).unwrap();
    Model::new(&[inputs], &[outputs]).unwrap().name("every_layer").seed(3)
}

#[test]
fn every_layer_class_survives_a_keras_archive() {
    let model = every_layer();
    model.compile(Adam::default().amsgrad(true), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let x = Tensor::rand(0f32, 1f32, (16, 8, 8, 3), &Device::Cpu).unwrap();
    let y =
        to_categorical(&Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0], &Device::Cpu).unwrap(), 3)
            .unwrap();
    model.fit(&x, &y, FitOptions::default().batch_size(8).epochs(1).verbose(0)).unwrap();
    let path = tempfile_dir("every_layer").join("every_layer.keras");
    model.save(&path).unwrap();
    let back = load_model(&path).unwrap();
    assert_eq!(back.layer_names(), model.layer_names());
    // Every layer's configuration came back (initializers, regularizers, options).
    for (a, b) in model.layers().iter().zip(back.layers()) {
        assert_eq!(a.get_config().to_json(), b.get_config().to_json(), "{}", a.name());
    }
    let (a, b) = (model.predict(&x, 8).unwrap(), back.predict(&x, 8).unwrap());
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-6, "{d}");
    // (Continuing both is not compared here: the dropout layers' mask counters are kandle's
    // own state, which Keras' format does not carry; resumed training across the formats is
    // checked on dropout-free models in training_resumes_from_a_keras_archive_where_keras_would.)
}

/// Writes kandle's files for scripts/keras_files_check.py when KANDLE_KERAS_FILES_OUT is set.
#[test]
fn write_files_for_keras_when_asked() {
    let Ok(out) = std::env::var("KANDLE_KERAS_FILES_OUT") else { return };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    let model = tutorial_cnn();
    model.load_weights(golden("tutorial_cnn.weights.h5")).unwrap();
    model.save_weights(out.join("tutorial_cnn.weights.h5")).unwrap();
    load_model(golden("tutorial_cnn.keras")).unwrap().save(out.join("tutorial_cnn.keras")).unwrap();
    // Every layer class, for Keras to load and predict.
    let model = every_layer();
    model
        .compile(
            RMSprop::default().momentum(0.5).centered(true),
            Loss::CategoricalCrossentropy.label_smoothing(0.1),
            &[Metric::Accuracy, Metric::PrecisionAt(0.7)],
        )
        .unwrap();
    let x = Tensor::rand(0f32, 1f32, (4, 8, 8, 3), &Device::Cpu).unwrap();
    model.save(out.join("every_layer.keras")).unwrap();
    x.write_npy(out.join("every_layer_x.npy")).unwrap();
    model.predict(&x, 4).unwrap().write_npy(out.join("every_layer_pred.npy")).unwrap();
}

/// A config declaring a layer far larger than the file's weights (4e9 units) is an error
/// before anything of that size is allocated (the legacy .h5 loader has the same budget).
#[test]
fn keras_config_declaring_huge_layers_allocates_nothing() {
    let path = tempfile_dir("huge").join("huge.keras");
    edited_archive("tutorial_cnn.keras", &path, |member, bytes| {
        if member != "config.json" {
            return Some(bytes);
        }
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["config"]["layers"][6]["config"]["units"] = serde_json::json!(4_000_000_000u64);
        Some(v.to_string().into_bytes())
    });
    let e = load_model(&path).unwrap_err().to_string();
    assert!(!e.is_empty());
}
