//! The functional API: graphs with skip connections, shared layers, several inputs and
//! outputs, nested models, freezing, saving and resuming, checked against finite differences
//! and against Keras' own output (tests/golden/functional_keras.py).

use candle_core::{DType, Device, Tensor, Var};
use kandle::models::load_model;
use kandle::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn golden(section: &str) -> String {
    let text = include_str!("golden/functional_keras.txt");
    let start = text.find(&format!("== {section}\n")).expect("section") + section.len() + 4;
    let end = start + text[start..].find("\n== ").expect("next section") + 1;
    text[start..end].to_string()
}

/// The model: a residual block with BatchNormalization.
fn residual() -> (KerasTensor, KerasTensor) {
    let inputs = Input::new((32, 32, 3));
    let x = Conv2D::new(16, (3, 3)).padding(Padding::Same).call(&inputs).unwrap();
    let x = BatchNormalization::new().call(&x).unwrap();
    let x = Activation::Relu.call(&x).unwrap();
    let y = Conv2D::new(16, (3, 3)).padding(Padding::Same).call(&x).unwrap();
    let y = Add::new().call(&[x.clone(), y]).unwrap();
    let outputs = Dense::new(10).activation(Activation::Softmax).call(Flatten::new().call(&y).unwrap()).unwrap();
    (inputs, outputs)
}

#[test]
fn summary_is_keras_table_with_connections() {
    let (i, o) = residual();
    let model = Model::new(&[i], &[o]).unwrap();
    assert_eq!(model.summary_string().unwrap(), golden("residual"));
    model.get_layer("conv2d").unwrap().set_trainable(false);
    assert_eq!(model.summary_string().unwrap(), golden("residual_frozen"));
    assert_eq!(
        model.layer_names(),
        ["input_layer", "conv2d", "batch_normalization", "activation", "conv2d_1", "add", "flatten", "dense"]
    );
}

fn two_outputs() -> Model {
    let (a, b) = (Input::named(4, "a"), Input::named(4, "b"));
    let shared = LayerRef::new(Dense::new(3).name("shared"));
    let o1 = Dense::new(2).activation(Activation::Softmax).name("out1").call(shared.call(&a).unwrap()).unwrap();
    let o2 = Dense::new(1).name("out2").call(shared.call(&b).unwrap()).unwrap();
    Model::new(&[a, b], &[o1, o2]).unwrap()
}

#[test]
fn several_inputs_and_outputs_fit_with_keras_history_keys() {
    let model = two_outputs().name("functional_1").seed(0);
    assert_eq!(model.summary_string().unwrap(), golden("two_outputs"));
    let model = model;
    model
        .compile(
            SGD::default(),
            Losses::new([Loss::CategoricalCrossentropy, Loss::MeanSquaredError]),
            vec![vec![Metric::Accuracy], vec![]],
        )
        .unwrap();
    let n = 64;
    let xa = rand_tensor(&[n, 4], 1).to_dtype(DType::F32).unwrap();
    let xb = rand_tensor(&[n, 4], 2).to_dtype(DType::F32).unwrap();
    // Class = sign of xa's first feature; regression target = sum of xb.
    let labels: Vec<u32> = xa
        .narrow(1, 0, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| (*v > 0.0) as u32)
        .collect();
    let y1 = to_categorical(&Tensor::new(labels, &Device::Cpu).unwrap(), 2).unwrap();
    let y2 = xb.sum_keepdim(1).unwrap();
    let h = model
        .fit([&xa, &xb], [&y1, &y2], FitOptions::default().batch_size(8).epochs(30).verbose(0).validation_split(0.25))
        .unwrap();
    let mut keys: Vec<&str> = h.history.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys.join(" ") + "\n", golden("history_keys"));
    // The total is the sum of the outputs' losses (weights 1), and training lowers it.
    let (l, l1, l2) = (h.get("loss").unwrap(), h.get("out1_loss").unwrap(), h.get("out2_loss").unwrap());
    assert!((l[29] - l1[29] - l2[29]).abs() < 1e-4 * l[29].max(1.0), "{} vs {} + {}", l[29], l1[29], l2[29]);
    assert!(l[29] < 0.5 * l[0], "loss {} -> {}", l[0], l[29]);
    let ev = model.evaluate([&xa, &xb], [&y1, &y2], 16).unwrap();
    assert!(ev.get("out1_accuracy").unwrap() > 0.8, "{ev:?}");
    let preds = model.predict_outputs([&xa, &xb], 16).unwrap();
    assert_eq!((preds[0].dims(), preds[1].dims()), (&[n, 2][..], &[n, 1][..]));
    // One array for a model of two inputs is a clear error naming what was expected.
    let e = model.fit(&xa, [&y1, &y2], FitOptions::default().verbose(0)).unwrap_err().to_string();
    assert!(e.contains("expects 2 arrays (one per input), received 1"), "{e}");
    assert!(model.predict([&xa, &xb], 8).unwrap_err().to_string().contains("predict_outputs"));
}

/// A graph with a skip connection, a shared layer (called twice), a nested Sequential, every
/// merge kind, regularized weights and two weighted outputs, with layers that have their own
/// backward pass and layers differentiated by autograd.
fn gradient_graph(dtype: DType) -> Model {
    let inputs = Input::new((6, 6, 2));
    let c1 = Conv2D::new(3, 3).padding(Padding::Same).activation(Activation::Tanh).call(&inputs).unwrap();
    let c2 = Conv2D::new(3, 3).padding(Padding::Same).kernel_regularizer(Regularizer::l2(0.01)).call(&c1).unwrap();
    let s = Add::new().call(&[c1.clone(), c2]).unwrap();
    let p = MaxPooling2D::new(2).call(&s).unwrap();
    let f = Flatten::new().call(&p).unwrap();
    let a = Dense::new(6).activation(Activation::Tanh).call(&f).unwrap();
    let b = Dense::new(6).activation(Activation::Sigmoid).call(&f).unwrap();
    let inner = Sequential::new().add(Dense::new(6).activation(Activation::Tanh).input_shape(6));
    let a2 = inner.as_layer().call(&a).unwrap();
    let shared = LayerRef::new(Dense::new(6));
    let (sa, sb) = (shared.call(&a2).unwrap(), shared.call(&b).unwrap());
    let sa = Activation::Tanh.call(&sa).unwrap();
    let m = Multiply::new().call(&[sa.clone(), sb.clone()]).unwrap();
    let d = Subtract::new().call(&[sa.clone(), sb.clone()]).unwrap();
    let mx = Maximum::new().call(&[sa.clone(), sb.clone(), d.clone()]).unwrap();
    let mn = Minimum::new().call(&[sa.clone(), sb.clone()]).unwrap();
    let av = Average::new().call(&[mx, mn, d]).unwrap();
    let cat = Concatenate::new().call(&[m.clone(), a, av]).unwrap();
    let out1 = Dense::new(3)
        .activation(Activation::Softmax)
        .kernel_regularizer(Regularizer::l1_l2(0.01, 0.02))
        .bias_regularizer(Regularizer::l2(0.1))
        .call(&cat)
        .unwrap();
    let out2 = Dense::new(1).call(&m).unwrap();
    Model::new(&[inputs], &[out1, out2]).unwrap().seed(5).dtype(dtype)
}

fn compile(m: &Model) {
    let m = m.clone();
    m.compile(
        SGD::default(),
        Losses::new([Loss::CategoricalCrossentropy, Loss::MeanSquaredError]).weights([1.0, 0.5]),
        (),
    )
    .unwrap();
}

/// The fast graph backward pass (what fit uses) against central differences of the weighted
/// loss, in f64 to 1e-6 and in f32 to 2e-3 of the largest gradient of each weight.
#[test]
fn graph_backward_matches_finite_differences() {
    let x = rand_tensor(&[3, 6, 6, 2], 11);
    let y1 = Tensor::new(&[[0f64, 1., 0.], [1., 0., 0.], [0., 0., 1.]], &Device::Cpu).unwrap();
    let y2 = rand_tensor(&[3, 1], 12);
    let m64 = gradient_graph(DType::F64);
    compile(&m64);
    let names: Vec<String> = m64.named_weights().unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"sequential/dense/kernel".to_string()), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.starts_with("dense_2/")).count(), 2, "the shared layer's weights once");
    let grads = m64.compute_gradients(&x, [&y1, &y2]).unwrap();
    assert_eq!(grads.len(), names.len());
    let loss = |m: &Model| m.clone().evaluate(&x, [&y1, &y2], 3).unwrap().loss;
    let eps = 1e-6;
    let mut rng = StdRng::seed_from_u64(3);
    for ((name, var), (gname, g)) in m64.named_weights().unwrap().into_iter().zip(&grads) {
        assert_eq!(&name, gname);
        let flat = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // Up to 12 elements of each weight.
        let picks: Vec<usize> = (0..12.min(flat.len())).map(|_| rng.random_range(0..flat.len())).collect();
        for j in picks {
            let mut v = flat.clone();
            v[j] = flat[j] + eps;
            var.set(&Tensor::from_vec(v.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let up = loss(&m64);
            v[j] = flat[j] - eps;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let down = loss(&m64);
            var.set(&Tensor::from_vec(flat.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let numeric = (up - down) / (2.0 * eps);
            assert!(
                (numeric - g[j]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                "{name}[{j}]: backward {} vs finite difference {numeric}",
                g[j]
            );
        }
    }
    // The f32 fast path on the same weights.
    let m32 = gradient_graph(DType::F32);
    compile(&m32);
    m32.set_weights(&m64.get_weights().unwrap()).unwrap();
    let g32 = m32.compute_gradients(&x, [&y1, &y2]).unwrap();
    for ((name, a), (_, b)) in g32.iter().zip(&grads) {
        let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let scale = b.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 2e-3 * scale, "{name}: f32 {p} vs f64 {q}");
        }
    }
}

fn small_images(n: usize, seed: u64) -> (Tensor, Tensor) {
    let x = rand_tensor(&[n, 6, 6, 2], seed).to_dtype(DType::F32).unwrap();
    // Class: whether the image's mean is positive.
    let mean = x.mean_keepdim(1).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap().flatten_all().unwrap();
    let labels: Vec<u32> = mean.to_vec1::<f32>().unwrap().iter().map(|v| (*v > 0.0) as u32).collect();
    (x, to_categorical(&Tensor::new(labels, &Device::Cpu).unwrap(), 2).unwrap())
}

fn snapshot(l: &LayerRef) -> Vec<Vec<f32>> {
    l.get_weights().unwrap().iter().map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

/// Frozen layers keep their weights bit for bit, and a frozen BatchNormalization its moving
/// statistics (it runs in inference mode); unfrozen, both train again.
#[test]
fn frozen_layers_and_batchnorm_stay_bit_identical() {
    let inputs = Input::new((6, 6, 2));
    let x = Conv2D::new(4, 3).padding(Padding::Same).call(&inputs).unwrap();
    let x = BatchNormalization::new().call(&x).unwrap();
    let x = Activation::Relu.call(&x).unwrap();
    let out = Dense::new(2).activation(Activation::Softmax).call(Flatten::new().call(&x).unwrap()).unwrap();
    let model = Model::new(&[inputs], &[out]).unwrap().seed(1);
    let (x, y) = small_images(32, 4);
    let (conv, bn, dense) = (
        model.get_layer("conv2d").unwrap(),
        model.get_layer("batch_normalization").unwrap(),
        model.get_layer("dense").unwrap(),
    );
    conv.set_trainable(false);
    bn.set_trainable(false);
    model.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    assert!(model.summary_string().unwrap().contains("Non-trainable params: 92 (368.00 B)"), "3*3*2*4+4 + 4*4");
    let (c0, b0, d0) = (snapshot(&conv), snapshot(&bn), snapshot(&dense));
    model.fit(&x, &y, FitOptions::default().batch_size(8).epochs(2).verbose(0)).unwrap();
    assert_eq!(snapshot(&conv), c0);
    assert_eq!(snapshot(&bn), b0);
    assert_ne!(snapshot(&dense), d0);
    // Unfrozen (recompiling, as in Keras' fine-tuning): the moving statistics and conv train.
    conv.set_trainable(true);
    bn.set_trainable(true);
    model.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model.fit(&x, &y, FitOptions::default().batch_size(8).epochs(1).verbose(0)).unwrap();
    assert_ne!(snapshot(&conv), c0);
    let b1 = snapshot(&bn);
    assert!(b1[2] != b0[2] && b1[3] != b0[3], "moving statistics updated");
}

/// A Sequential inside a functional model: its weights are the outer model's, trained through
/// it, frozen with it, and saved and loaded with it.
#[test]
fn sequential_nested_in_a_model() {
    let base = Sequential::new()
        .name("base")
        .add(Conv2D::new(4, 3).activation(Activation::Relu).input_shape((6, 6, 2)))
        .add(MaxPooling2D::new(2))
        .add(Flatten::new());
    let inputs = Input::new((6, 6, 2));
    let features = base.as_layer().call(&inputs).unwrap();
    let out = Dense::new(2).activation(Activation::Softmax).call(&features).unwrap();
    let model = Model::new(&[inputs], &[out]).unwrap().seed(2);
    assert_eq!(model.count_params().unwrap(), 4 * 2 * 9 + 4 + 4 * 4 * 2 + 2);
    assert_eq!(model.layer_names(), ["input_layer", "base", "dense"]);
    model.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let (x, y) = small_images(64, 5);
    let before = base.get_weights().unwrap()[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let h = model.fit(&x, &y, FitOptions::default().batch_size(16).epochs(15).verbose(0)).unwrap();
    let after = base.get_weights().unwrap()[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(before, after, "the nested model's weights train");
    let acc = h.get("accuracy").unwrap();
    assert!(acc[14] > 0.8, "accuracy {acc:?}");
    // The outer model's output is the base's features through the dense layer.
    let feats = base.predict(&x, 64).unwrap();
    let direct = model.get_layer("dense").unwrap().get_weights().unwrap();
    let logits = feats.matmul(&direct[0]).unwrap().broadcast_add(&direct[1]).unwrap();
    let probs = candle_nn::ops::softmax_last_dim(&logits).unwrap();
    let diff = (probs - model.predict(&x, 64).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    // Frozen through the outer model's handle: fit refuses until the model is compiled again,
    // as Keras only sees the change then.
    model.get_layer("base").unwrap().set_trainable(false);
    let e = model.fit(&x, &y, FitOptions::default().verbose(0)).unwrap_err().to_string();
    assert!(e.contains("compile the model again"), "{e}");
    model.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model.fit(&x, &y, FitOptions::default().batch_size(16).epochs(1).verbose(0)).unwrap();
    assert_eq!(base.get_weights().unwrap()[0].flatten_all().unwrap().to_vec1::<f32>().unwrap(), after);
    // Saved and loaded whole, frozen flag included.
    let path = std::env::temp_dir().join(format!("kandle-nested-{}.kandle", std::process::id()));
    model.save(&path).unwrap();
    let loaded = load_model(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(loaded.layer_names(), model.layer_names());
    assert!(!loaded.get_layer("base").unwrap().trainable());
    let diff = (loaded.predict(&x, 64).unwrap() - model.predict(&x, 64).unwrap()).unwrap();
    assert_eq!(diff.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

fn resumable(seed: u64) -> Model {
    let inputs = Input::new((6, 6, 2));
    let x = Conv2D::new(4, 3).padding(Padding::Same).activation(Activation::Relu).call(&inputs).unwrap();
    let y = Conv2D::new(4, 3).padding(Padding::Same).call(&x).unwrap();
    let x = Add::new().call(&[x, y]).unwrap();
    let x = Dropout::new(0.3).call(Flatten::new().call(&x).unwrap()).unwrap();
    let shared = LayerRef::new(Dense::new(8).activation(Activation::Relu));
    let a = shared.call(&x).unwrap();
    let b = shared.call(Dropout::new(0.2).call(&x).unwrap()).unwrap();
    let x = Concatenate::new().call(&[a, b]).unwrap();
    let out = Dense::new(2).activation(Activation::Softmax).call(&x).unwrap();
    let m = Model::new(&[inputs], &[out]).unwrap().seed(seed);
    m.compile(RMSprop::new(0.003), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    m
}

/// Saved after 2 epochs, loaded with load_model and trained 2 more: the same weights as 4
/// epochs in one go.
#[test]
fn saved_graph_resumes_as_an_uninterrupted_run() {
    let (x, y) = small_images(48, 6);
    let opts = |e0, e| FitOptions::default().batch_size(8).initial_epoch(e0).epochs(e).verbose(0).seed(9);
    let full = resumable(3);
    full.fit(&x, &y, opts(0, 4)).unwrap();
    let half = resumable(3);
    half.fit(&x, &y, opts(0, 2)).unwrap();
    let path = std::env::temp_dir().join(format!("kandle-graph-resume-{}.kandle", std::process::id()));
    half.save(&path).unwrap();
    let resumed = load_model(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(resumed.summary_string().unwrap(), half.summary_string().unwrap());
    resumed.fit(&x, &y, opts(2, 4)).unwrap();
    let (a, b) = (full.get_weights().unwrap(), resumed.get_weights().unwrap());
    assert_eq!(a.len(), b.len());
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            q.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

#[test]
fn graph_errors_name_the_layer_and_the_shapes() {
    let (a, b) = (Input::new((4, 4, 3)), Input::new((4, 4, 5)));
    let e = Add::new().name("join").call(&[a.clone(), b.clone()]).unwrap_err().to_string();
    assert!(e.contains("join (Add)") && e.contains("(None, 4, 4, 3)") && e.contains("(None, 4, 4, 5)"), "{e}");
    let e = Concatenate::new().axis(0).call(&[a.clone(), b.clone()]).unwrap_err().to_string();
    assert!(e.contains("axis"), "{e}");
    // An output that needs an input the model is not given.
    let c = Concatenate::new().call(&[a.clone(), b.clone()]).unwrap();
    let e = Model::new(std::slice::from_ref(&a), &[c]).unwrap_err().to_string();
    assert!(e.contains("graph disconnected") && e.contains("(None, 4, 4, 5)"), "{e}");
    // A shared layer called on another shape.
    let shared = LayerRef::new(Dense::new(2).name("twice"));
    shared.call(Input::new(3)).unwrap();
    let e = shared.call(Input::new(4)).unwrap_err().to_string();
    assert!(e.contains("twice (Dense)") && e.contains("(None, 3)") && e.contains("(None, 4)"), "{e}");
    // A negative regularization factor.
    let e = Dense::new(2).kernel_regularizer(Regularizer::l2(-1.0)).call(Input::new(3)).unwrap_err().to_string();
    assert!(e.contains("kernel_regularizer"), "{e}");
    // Two layers of one name.
    let x = Dense::new(2).name("same").call(&a).unwrap();
    let y = Dense::new(2).name("same").call(&x).unwrap();
    let e = Model::new(std::slice::from_ref(&a), &[y]).unwrap_err().to_string();
    assert!(e.contains("two layers of the model are named \"same\""), "{e}");
    // A model inside itself: an error, not a deadlock.
    let seq = Sequential::new().add(Dense::new(3).input_shape(3));
    seq.add(seq.as_layer());
    let e = seq.build().unwrap_err().to_string();
    assert!(e.contains("cannot be a layer of itself"), "{e}");
    // Unknown layer names list the ones there are.
    let m = Model::new(std::slice::from_ref(&a), &[Flatten::new().call(&a).unwrap()]).unwrap();
    let e = m.get_layer("nope").unwrap_err().to_string();
    assert!(e.contains("input_layer, flatten"), "{e}");
}

/// A Sequential's layers are reachable and freezable as a functional model's.
#[test]
fn sequential_layer_access_pop_and_freezing() {
    let m = Sequential::new()
        .seed(0)
        .add(Dense::new(4).activation(Activation::Relu).input_shape(3))
        .add(Dense::new(2).activation(Activation::Softmax));
    m.get_layer("dense").unwrap().set_trainable(false);
    m.compile(SGD::new(0.5), Loss::CategoricalCrossentropy, ()).unwrap();
    let x = rand_tensor(&[16, 3], 7).to_dtype(DType::F32).unwrap();
    let y = to_categorical(&Tensor::from_vec([0u32, 1].repeat(8), 16, &Device::Cpu).unwrap(), 2).unwrap();
    let frozen = m.layers()[0].get_weights().unwrap()[0].to_vec2::<f32>().unwrap();
    m.fit(&x, &y, FitOptions::default().batch_size(4).epochs(2).verbose(0)).unwrap();
    assert_eq!(m.layers()[0].get_weights().unwrap()[0].to_vec2::<f32>().unwrap(), frozen);
    let last = m.pop().unwrap();
    assert_eq!(last.name(), "dense_1");
    assert_eq!(m.layer_names(), ["dense"]);
    let _ = Var::from_tensor(&x).unwrap();
}

/// BatchNormalization's own backward pass (batch statistics, and frozen: moving statistics),
/// through the convolution before it, against central differences of the training loss.
#[test]
fn batchnorm_backward_matches_finite_differences() {
    for frozen in [false, true] {
        let inputs = Input::new((5, 5, 3));
        let x = Conv2D::new(4, 3).padding(Padding::Same).call(&inputs).unwrap();
        let x = BatchNormalization::new().name("bn").call(&x).unwrap();
        let x = Activation::Tanh.call(&x).unwrap();
        let out = Dense::new(3).activation(Activation::Softmax).call(Flatten::new().call(&x).unwrap()).unwrap();
        let m = Model::new(&[inputs], &[out]).unwrap().seed(4).dtype(DType::F64);
        m.build().unwrap();
        // Non-trivial gamma, beta and moving statistics.
        let bn = m.get_layer("bn").unwrap();
        for (i, w) in bn.weights().iter().enumerate() {
            let v = rand_tensor(&[4], 30 + i as u64);
            let v = if i == 3 { (v.abs().unwrap() + 0.5).unwrap() } else { v };
            w.var.set(&v).unwrap();
        }
        if frozen {
            bn.set_trainable(false);
        }
        m.compile(SGD::default(), Loss::CategoricalCrossentropy, ()).unwrap();
        let x = rand_tensor(&[4, 5, 5, 3], 13);
        let y = Tensor::new(&[[0f64, 1., 0.], [1., 0., 0.], [0., 0., 1.], [0., 1., 0.]], &Device::Cpu).unwrap();
        let grads = m.compute_gradients(&x, &y).unwrap();
        let names: Vec<&str> = grads.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.contains(&"bn/gamma"), !frozen, "{names:?}");
        let loss = |m: &Model| {
            let out = m.call(&x, true).unwrap();
            Loss::CategoricalCrossentropy.compute(&y, &out).unwrap().to_scalar::<f64>().unwrap()
        };
        let weights = m.named_weights().unwrap();
        for (name, g) in &grads {
            let var = &weights.iter().find(|(n, _)| n == name).unwrap().1;
            let flat = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for j in (0..flat.len()).step_by(7.max(flat.len() / 10)) {
                let mut v = flat.clone();
                let eps = 1e-6;
                v[j] = flat[j] + eps;
                var.set(&Tensor::from_vec(v.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                let up = loss(&m);
                v[j] = flat[j] - eps;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                let down = loss(&m);
                var.set(&Tensor::from_vec(flat.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                let numeric = (up - down) / (2.0 * eps);
                assert!(
                    (numeric - g[j]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "frozen {frozen} {name}[{j}]: backward {} vs finite difference {numeric}",
                    g[j]
                );
            }
        }
    }
}
