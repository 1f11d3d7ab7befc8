//! ONNX export (issue 34): `Model::export` writes files that a Rust ONNX runtime (sonos'
//! tract) runs to kandle's own predictions, for the tutorial CNN, the MNIST CNN, ResNet-20, a
//! network of BatchNormalization / DepthwiseConv2D / SeparableConv2D / Concatenate, and a
//! model of every layer class kandle has; a layer that cannot be exported is refused by name
//! and leaves no file behind.
//!
//! ONNX's own checker and ONNX Runtime run the same files on real test images in CI
//! (scripts/onnx_check.sh, with `write_files_for_onnx_runtime_when_asked` below).

mod common;

use candle_core::{DType, Device, Tensor};
use common::TempDir;
use kandle::export::{ExportFormat, ExportOptions, OnnxAttribute};
use kandle::layers::{BuildContext, Layer};
use kandle::prelude::*;
use std::path::Path;

/// The CIFAR-10 tutorial's network (Keras' cifar10_cnn.py).
fn tutorial_cnn() -> Model {
    Sequential::new()
        .add(Conv2D::new(32, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((32, 32, 3)))
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.25))
        .add(Conv2D::new(64, (3, 3)).padding(Padding::Same).activation(Activation::Relu))
        .add(Conv2D::new(64, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(512).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax))
        .into()
}

/// Keras' mnist_cnn.py.
fn mnist_cnn() -> Model {
    Sequential::new()
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape((28, 28, 1)))
        .add(Conv2D::new(64, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(128).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax))
        .seed(1)
        .into()
}

/// ResNet-20 v1 as examples/cifar10_resnet.rs builds it.
fn resnet20() -> Model {
    fn unit(x: &KerasTensor, filters: usize, kernel: usize, strides: usize, relu: bool, bn: bool) -> KerasTensor {
        let mut x = Conv2D::new(filters, kernel).strides(strides).padding(Padding::Same).call(x).unwrap();
        if bn {
            x = BatchNormalization::new().call(&x).unwrap();
        }
        if relu {
            x = Activation::Relu.call(&x).unwrap();
        }
        x
    }
    let inputs = Input::new((32, 32, 3));
    let mut x = unit(&inputs, 16, 3, 1, true, true);
    let mut filters = 16;
    for stage in 0..3 {
        for block in 0..3 {
            let strides = if stage > 0 && block == 0 { 2 } else { 1 };
            let y = unit(&x, filters, 3, strides, true, true);
            let y = unit(&y, filters, 3, 1, false, true);
            if strides == 2 {
                x = unit(&x, filters, 1, strides, false, false);
            }
            x = Activation::Relu.call(Add::new().call(&[x, y]).unwrap()).unwrap();
        }
        filters *= 2;
    }
    let x = Flatten::new().call(AveragePooling2D::new(8).call(&x).unwrap()).unwrap();
    let outputs = Dense::new(10).activation(Activation::Softmax).call(&x).unwrap();
    Model::new(&[inputs], &[outputs]).unwrap().name("resnet20").seed(2)
}

/// BatchNormalization, DepthwiseConv2D, SeparableConv2D and Concatenate (a MobileNet-like
/// block with two branches), logits out.
fn mixed() -> Model {
    let inputs = Input::new((32, 32, 3));
    let x = Conv2D::new(8, 3).strides(2).padding(Padding::Same).call(&inputs).unwrap();
    let x = BatchNormalization::new().call(&x).unwrap();
    let x = ReLU::new().max_value(6.0).call(&x).unwrap();
    let a = DepthwiseConv2D::new(3).padding(Padding::Same).depth_multiplier(2).call(&x).unwrap();
    let a = BatchNormalization::new().call(&a).unwrap();
    let b = SeparableConv2D::new(8, 5).strides(2).padding(Padding::Same).activation(Activation::Relu).call(&x).unwrap();
    let b = UpSampling2D::new((2, 2)).call(&b).unwrap();
    let x = Concatenate::new().call(&[a, b]).unwrap();
    let x = DepthwiseConv2D::new(3).strides(2).dilation_rate(1).call(&x).unwrap();
    let x = GlobalAveragePooling2D::new().call(&x).unwrap();
    let outputs = Dense::new(10).call(&x).unwrap();
    Model::new(&[inputs], &[outputs]).unwrap().name("mixed").seed(3)
}

/// Every layer class kandle has, with two outputs: an image-shaped one in the middle and the
/// logits (no softmax, so that differences show).
fn every_layer() -> Model {
    use kandle::layers::{
        CenterCrop, FlipMode, Interpolation, RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomRotation,
        RandomTranslation, RandomZoom, Resizing, UpSampling,
    };
    let inputs = Input::new((12, 10, 3));
    let x = RandomFlip::new(FlipMode::Horizontal).call(&inputs).unwrap();
    let x = RandomRotation::new(0.05).call(&x).unwrap();
    let x = RandomTranslation::new(0.1, 0.1).call(&x).unwrap();
    let x = RandomZoom::new(0.1).call(&x).unwrap();
    let x = RandomContrast::new(0.2).value_range(0.0, 1.0).call(&x).unwrap();
    let x = RandomBrightness::new(0.1).value_range(0.0, 1.0).call(&x).unwrap();
    let x = Resizing::new(9, 11).crop_to_aspect_ratio(true).call(&x).unwrap();
    let x = Resizing::new(13, 12).interpolation(Interpolation::Nearest).call(&x).unwrap();
    // At inference: the centered 12x12 window resized to 11x11 (not a crop).
    let x = RandomCrop::new(11, 11).call(&x).unwrap();
    let x = CenterCrop::new(10, 10).call(&x).unwrap();
    let x = RandomCrop::new(10, 10).call(&x).unwrap();
    let x = CenterCrop::new(11, 12).call(&x).unwrap();
    let x = Rescaling::new(2.0).offset(-1.0).call(&x).unwrap();
    let mut norm = kandle::layers::Normalization::new();
    let data = (Tensor::arange(0f32, 4. * 11. * 12. * 3., &Device::Cpu).unwrap().reshape((4, 11, 12, 3)).unwrap()
        * 0.003)
        .unwrap();
    norm.adapt(&data).unwrap();
    let x = norm.call(&x).unwrap();
    let x = Rescaling::per_channel([1.0, 0.5, 2.0]).call(&x).unwrap();
    let x = Conv2D::new(6, (3, 3)).padding(Padding::Same).activation(Activation::Elu).call(&x).unwrap();
    let x = BatchNormalization::new().call(&x).unwrap();
    let x = DepthwiseConv2D::new((3, 3)).padding(Padding::Same).depth_multiplier(2).call(&x).unwrap();
    let x = SeparableConv2D::new(6, (3, 3)).padding(Padding::Same).activation(Activation::Selu).call(&x).unwrap();
    let x = ZeroPadding2D::asymmetric((1, 0), (0, 2)).call(&x).unwrap();
    let x = Cropping2D::asymmetric((1, 0), (1, 1)).call(&x).unwrap();
    let x = UpSampling2D::new((2, 2)).interpolation(UpSampling::Bilinear).call(&x).unwrap();
    let x = Conv2D::new(5, (3, 3)).strides(2).dilation_rate(1).activation(Activation::HardSigmoid).call(&x).unwrap();
    let x = Conv2DTranspose::new(4, (3, 3)).strides((2, 2)).padding(Padding::Same).call(&x).unwrap();
    let x = Conv2DTranspose::new(4, (2, 2)).strides((3, 3)).activation(Activation::Softplus).call(&x).unwrap();
    let x = MaxPooling2D::new((3, 3)).strides((2, 2)).padding(Padding::Same).call(&x).unwrap();
    let x = AveragePooling2D::new((2, 2)).strides((2, 2)).padding(Padding::Same).call(&x).unwrap();
    let image = UpSampling2D::new((2, 1)).call(&x).unwrap();
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
    let x = ReLU::new().negative_slope(0.1).threshold(0.2).max_value(3.0).call(&x).unwrap();
    let x = LeakyReLU::new().negative_slope(0.2).call(&x).unwrap();
    let x = ActivationLayer::new(Activation::Silu).call(&x).unwrap();
    let x = SpatialDropout2D::new(0.1).call(&x).unwrap();
    let x = Dropout::new(0.2).noise_shape([Some(1), Some(1), None]).call(&x).unwrap();
    let g1 = GlobalAveragePooling2D::new().call(&x).unwrap();
    let g2 = GlobalMaxPooling2D::new().call(&x).unwrap();
    let g3 = Flatten::new().call(GlobalAveragePooling2D::new().keepdims(true).call(&x).unwrap()).unwrap();
    let x = Concatenate::new().call(&[g1, g2, g3]).unwrap();
    let x = Dense::new(12).activation(Activation::Sigmoid).call(&x).unwrap();
    let x = Dropout::new(0.3).call(&x).unwrap();
    let x = Reshape::new((3, 4)).call(&x).unwrap();
    let x = Softmax::new().call(&x).unwrap();
    let x = Dense::new(5).activation(Activation::Relu6).call(&x).unwrap();
    let x = Flatten::new().call(&x).unwrap();
    let logits = Dense::new(3).call(&x).unwrap();
    Model::new(&[inputs], &[image, logits]).unwrap().name("every_layer").seed(4)
}

/// Moves every BatchNormalization's statistics, scale and offset off their initial values, so
/// that a wrong folding shows.
fn perturb_batch_norm(model: &Model, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for l in all_layers(model) {
        if l.class_name() != "BatchNormalization" {
            continue;
        }
        for w in l.weights() {
            let n = w.var.elem_count();
            let v: Vec<f32> =
                (0..n)
                    .map(|_| {
                        if w.name == "moving_variance" {
                            rng.random_range(0.5..2.0)
                        } else {
                            rng.random_range(-0.5..0.5)
                        }
                    })
                    .map(|v: f32| if w.name == "gamma" { 1.0 + v } else { v })
                    .collect();
            w.var.set(&Tensor::from_vec(v, w.var.dims(), &Device::Cpu).unwrap()).unwrap();
        }
    }
}

/// The layers of a model and of the models inside it.
fn all_layers(model: &Model) -> Vec<LayerRef> {
    let mut out = Vec::new();
    for l in model.layers() {
        match l.as_model() {
            Some(inner) => out.extend(all_layers(&inner)),
            None => out.push(l),
        }
    }
    out
}

/// tract (a Rust ONNX runtime), apart from candle's names.
mod rt {
    use tract_onnx::prelude::*;

    /// The outputs (shape, values) of the file at `path` for an input of `dims`, the batch
    /// fixed to `dims[0]`.
    pub fn run(path: &std::path::Path, dims: &[usize], values: &[f32]) -> Vec<(Vec<usize>, Vec<f32>)> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .unwrap()
            .with_input_fact(0, f32::fact(dims).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let input = Tensor::from_shape(dims, values).unwrap();
        let outputs = model.run(tvec!(input.into_tvalue())).unwrap();
        outputs
            .iter()
            .map(|o| {
                let view = o.to_plain_array_view::<f32>().unwrap();
                (view.shape().to_vec(), view.iter().copied().collect())
            })
            .collect()
    }
}

/// tract's outputs for `x` (batch fixed to x's), from the file at `path`.
fn tract_predict(path: &Path, x: &Tensor) -> Vec<Tensor> {
    let values = x.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    rt::run(path, x.dims(), &values)
        .into_iter()
        .map(|(shape, v)| Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        .collect()
}

/// The largest difference, relative to the largest value of `want`.
fn relative_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let d = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let m = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    d / m.max(1e-12)
}

fn argmax(t: &Tensor) -> Vec<u32> {
    t.flatten_from(1).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap()
}

/// kandle's outputs of a model of one or more outputs.
fn predict_all(model: &Model, x: &Tensor) -> Vec<Tensor> {
    model.predict_outputs(x, 16).unwrap()
}

/// Exports `model`, runs the file in tract on a batch of 7 and of 1, and compares with kandle.
fn check_model(model: &Model, x: &Tensor, dir: &Path, name: &str) {
    let path = dir.join(format!("{name}.onnx"));
    model.export(&path, ExportFormat::Onnx).unwrap();
    for n in [7, 1] {
        let xb = x.narrow(0, 0, n).unwrap();
        let want = predict_all(model, &xb);
        let got = tract_predict(&path, &xb);
        assert_eq!(got.len(), want.len(), "{name}: outputs");
        for (g, w) in got.iter().zip(&want) {
            let d = relative_diff(g, w);
            assert!(d < 1e-5, "{name} batch {n}: tract differs from kandle by {d:e} of the largest output");
            if w.rank() == 2 {
                assert_eq!(argmax(g), argmax(w), "{name} batch {n}: top-1 classes");
            }
        }
    }
}

fn images(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    Tensor::from_vec((0..n).map(|_| rng.random::<f32>()).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

#[test]
fn tutorial_mnist_resnet_and_mixed_networks_run_in_tract_as_in_kandle() {
    let dir = TempDir::new("onnx", "networks");
    let tutorial = tutorial_cnn();
    tutorial.build().unwrap();
    check_model(&tutorial, &images((7, 32, 32, 3), 1), &dir, "tutorial_cnn");
    let mnist = mnist_cnn();
    mnist.build().unwrap();
    check_model(&mnist, &images((7, 28, 28, 1), 2), &dir, "mnist_cnn");
    let resnet = resnet20();
    resnet.build().unwrap();
    perturb_batch_norm(&resnet, 3);
    check_model(&resnet, &images((7, 32, 32, 3), 3), &dir, "resnet20");
    let mixed = mixed();
    mixed.build().unwrap();
    perturb_batch_norm(&mixed, 4);
    check_model(&mixed, &images((7, 32, 32, 3), 4), &dir, "mixed");
}

#[test]
fn every_layer_class_runs_in_tract_as_in_kandle() {
    let dir = TempDir::new("onnx", "every");
    let model = every_layer();
    model.build().unwrap();
    perturb_batch_norm(&model, 5);
    check_model(&model, &images((7, 12, 10, 3), 5), &dir, "every_layer");
}

#[test]
fn a_model_inside_a_model_is_inlined() {
    let dir = TempDir::new("onnx", "nested");
    let base = kandle::applications::MobileNetV2::new()
        .alpha(0.35)
        .include_top(false)
        .weights(kandle::applications::Weights::None)
        .input_shape((32, 32, 3))
        .build()
        .unwrap();
    let inputs = Input::new((32, 32, 3));
    let x = base.as_layer().call_training(&inputs, false).unwrap();
    let x = GlobalAveragePooling2D::new().call(&x).unwrap();
    let outputs = Dense::new(2).call(&x).unwrap();
    let model = Model::new(&[inputs], &[outputs]).unwrap();
    model.build().unwrap();
    perturb_batch_norm(&model, 6);
    check_model(&model, &images((7, 32, 32, 3), 6), &dir, "nested");
}

/// `x * scale`: a user-defined layer.
#[derive(Debug, Default)]
struct Scale {
    scale: Option<candle_core::Var>,
}

impl Layer for Scale {
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> kandle::Result<Vec<usize>> {
        self.scale = Some(ctx.add_weight("scale", &[1], kandle::initializers::Initializer::Constant(1.5), true)?);
        Ok(input_shape.to_vec())
    }
    fn forward(&self, x: &Tensor, _training: bool) -> kandle::Result<Tensor> {
        Ok(x.broadcast_mul(self.scale.as_ref().unwrap().as_tensor())?)
    }
}

#[test]
fn a_layer_without_a_mapping_is_refused_by_name_and_leaves_no_file() {
    let dir = TempDir::new("onnx", "refused");
    let model: Model =
        Sequential::new().add(Dense::new(4).input_shape(3)).add(Scale::default()).add(Dense::new(2)).into();
    model.build().unwrap();
    let path = dir.join("scale.onnx");
    let err = model.export(&path, ExportFormat::Onnx).unwrap_err().to_string();
    assert!(err.contains("scale") && err.contains("Scale") && err.contains("layer_mapping"), "{err}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "a file was left behind");
    // With a mapping it exports, and runs as in kandle.
    let options = ExportOptions::default().layer_mapping("Scale", |layer| {
        let x = layer.input(0)?;
        let s = layer.tensor("scale", &layer.weight("scale")?.clone())?;
        layer.node("Mul", &[&x, &s], &[])
    });
    model.export_with(&path, ExportFormat::Onnx, options).unwrap();
    let x = images((3, 1, 1, 3), 7).reshape((3, 3)).unwrap();
    let d = relative_diff(&tract_predict(&path, &x)[0], &model.predict(&x, 3).unwrap());
    assert!(d < 1e-6, "{d}");
    // A mapping may replace a built-in one and use attributes.
    let options = ExportOptions::default().layer_mapping("Scale", |layer| {
        let x = layer.input(0)?;
        layer.node("LeakyRelu", &[&x], &[("alpha", OnnxAttribute::Float(0.5))])
    });
    model.export_with(&path, ExportFormat::Onnx, options).unwrap();
}

#[test]
fn bad_options_and_training_calls_are_named_errors() {
    let dir = TempDir::new("onnx", "errors");
    let model = mnist_cnn();
    model.build().unwrap();
    let path = dir.join("m.onnx");
    let err = model
        .export_with(&path, ExportFormat::Onnx, ExportOptions::default().opset_version(12))
        .unwrap_err()
        .to_string();
    assert!(err.contains("opset_version") && err.contains("12") && err.contains("13"), "{err}");
    let err =
        model.export_with(&path, ExportFormat::Onnx, ExportOptions::default().batch_size(0)).unwrap_err().to_string();
    assert!(err.contains("batch_size"), "{err}");
    let err = "saved_model".parse::<ExportFormat>().unwrap_err().to_string();
    assert!(err.contains("onnx") && err.contains("saved_model"), "{err}");
    // Monte Carlo dropout (dropout called with training=True) cannot be an inference file.
    let inputs = Input::new(4);
    let x = LayerRef::new(Dropout::new(0.5)).call_training(&inputs, true).unwrap();
    let mc = Model::new(&[inputs], &[Dense::new(2).call(&x).unwrap()]).unwrap();
    mc.build().unwrap();
    let err = mc.export(&path, ExportFormat::Onnx).unwrap_err().to_string();
    assert!(err.contains("dropout") && err.contains("training=True"), "{err}");
    assert!(!path.exists());
}

#[test]
fn fixed_batch_every_opset_and_external_weights() {
    let dir = TempDir::new("onnx", "options");
    let model = mixed();
    model.build().unwrap();
    perturb_batch_norm(&model, 8);
    let x = images((2, 32, 32, 3), 8);
    let want = model.predict(&x, 2).unwrap();
    for opset in kandle::export::OPSETS {
        let path = dir.join(format!("mixed_{opset}.onnx"));
        model
            .export_with(&path, ExportFormat::Onnx, ExportOptions::default().opset_version(opset).batch_size(2))
            .unwrap();
        let d = relative_diff(&tract_predict(&path, &x)[0], &want);
        assert!(d < 1e-5, "opset {opset}: {d:e}");
    }
    // The weights in a file of their own: the model's file keeps only the graph and the small
    // tensors; none is written when no tensor is large enough.
    let model = mnist_cnn();
    model.build().unwrap();
    let path = dir.join("external.onnx");
    model.export_with(&path, ExportFormat::Onnx, ExportOptions::default().external_data(true)).unwrap();
    let data = dir.join("external.onnx.data");
    let (main, weights) = (std::fs::metadata(&path).unwrap().len(), std::fs::metadata(&data).unwrap().len());
    assert!(main < 20_000 && weights as usize >= 4 * model.count_params().unwrap() - 4 * 2000, "{main} {weights}");
    let x = images((2, 28, 28, 1), 9);
    let d = relative_diff(&tract_predict(&path, &x)[0], &model.predict(&x, 2).unwrap());
    assert!(d < 1e-5, "external data: {d:e}");
    let tiny: Model = Sequential::new().add(Dense::new(2).input_shape(3)).into();
    tiny.build().unwrap();
    tiny.export_with(dir.join("tiny.onnx"), ExportFormat::Onnx, ExportOptions::default().external_data(true)).unwrap();
    assert!(!dir.join("tiny.onnx.data").exists());
}

/// Writes ONNX files, real test images and kandle's and tract's predictions for
/// scripts/onnx_check.py (ONNX's checker and ONNX Runtime) when KANDLE_ONNX_OUT is set.
#[test]
fn write_files_for_onnx_runtime_when_asked() {
    let Ok(out) = std::env::var("KANDLE_ONNX_OUT") else { return };
    let out = Path::new(&out);
    std::fs::create_dir_all(out).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let unit = |x: &Tensor, n: usize| (x.narrow(0, 0, n).unwrap().to_dtype(DType::F32).unwrap() / 255.0).unwrap();
    let ((cifar_train, cifar_labels), (cifar, _)) =
        kandle::datasets::cifar10::load_data_from(data.join("cifar10")).unwrap();
    let cifar255 = cifar.narrow(0, 0, 7).unwrap().to_dtype(DType::F32).unwrap();
    let cifar = (&cifar255 / 255.0).unwrap();
    let ((mnist_train, mnist_labels), (mnist, _)) =
        kandle::datasets::mnist::load_data_from(data.join("mnist")).unwrap();
    let mnist = unit(&mnist, 7).unsqueeze(3).unwrap();

    // The two tutorials' networks trained a little, so that their classes differ image to image.
    let train = |model: &Model, x: Tensor, y: &Tensor| {
        let n = x.dims()[0];
        let y = to_categorical(&y.narrow(0, 0, n).unwrap(), 10).unwrap();
        model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        model.fit(&x, &y, FitOptions::default().batch_size(64).epochs(1).verbose(0)).unwrap();
    };
    let tutorial = tutorial_cnn();
    train(&tutorial, unit(&cifar_train, 2000), &cifar_labels);
    let mnist_model = mnist_cnn();
    train(&mnist_model, unit(&mnist_train, 2000).unsqueeze(3).unwrap(), &mnist_labels);
    let resnet = resnet20();
    let mixed = mixed();
    let every = every_layer();
    use kandle::applications::{
        densenet, efficientnet, mobilenet_v2, resnet as resnet_app, vgg, DenseNet121, EfficientNetB0, MobileNetV2,
        ResNet50, Weights, VGG16,
    };
    let apps: Vec<(&str, Model, Tensor)> = vec![
        (
            "resnet50",
            ResNet50::new().weights(Weights::None).input_shape((32, 32, 3)).classes(10).build().unwrap(),
            resnet_app::preprocess_input(&cifar255).unwrap(),
        ),
        (
            "mobilenetv2",
            MobileNetV2::new().weights(Weights::None).input_shape((32, 32, 3)).classes(10).build().unwrap(),
            mobilenet_v2::preprocess_input(&cifar255).unwrap(),
        ),
        (
            "efficientnetb0",
            EfficientNetB0::new().weights(Weights::None).input_shape((32, 32, 3)).classes(10).build().unwrap(),
            efficientnet::preprocess_input(&cifar255).unwrap(),
        ),
        (
            "vgg16",
            VGG16::new().weights(Weights::None).input_shape((32, 32, 3)).classes(10).build().unwrap(),
            vgg::preprocess_input(&cifar255).unwrap(),
        ),
        (
            "densenet121",
            DenseNet121::new().weights(Weights::None).input_shape((32, 32, 3)).classes(10).build().unwrap(),
            densenet::preprocess_input(&cifar255).unwrap(),
        ),
    ];
    let every_x = cifar.narrow(1, 0, 12).unwrap().narrow(2, 0, 10).unwrap().contiguous().unwrap();
    let mut cases: Vec<(String, Model, Tensor, ExportOptions)> = vec![
        ("tutorial_cnn".into(), tutorial, cifar.clone(), ExportOptions::default()),
        ("mnist_cnn".into(), mnist_model, mnist, ExportOptions::default()),
        ("resnet20".into(), resnet, cifar.clone(), ExportOptions::default()),
        ("mixed".into(), mixed.clone(), cifar.clone(), ExportOptions::default()),
        (
            "mixed_external_opset21".into(),
            mixed,
            cifar.clone(),
            ExportOptions::default().external_data(true).opset_version(21),
        ),
        ("every_layer".into(), every, every_x, ExportOptions::default()),
    ];
    cases.extend(apps.into_iter().map(|(n, m, x)| (n.to_string(), m, x, ExportOptions::default())));
    let mut manifest = Vec::new();
    for (seed, (name, model, x, options)) in cases.into_iter().enumerate() {
        model.build().unwrap();
        perturb_batch_norm(&model, 100 + seed as u64);
        let path = out.join(format!("{name}.onnx"));
        model.export_with(&path, ExportFormat::Onnx, options).unwrap();
        x.write_npy(out.join(format!("{name}_x.npy"))).unwrap();
        let preds = predict_all(&model, &x);
        let tract = tract_predict(&path, &x);
        for (i, (p, t)) in preds.iter().zip(&tract).enumerate() {
            p.write_npy(out.join(format!("{name}_kandle_{i}.npy"))).unwrap();
            t.write_npy(out.join(format!("{name}_tract_{i}.npy"))).unwrap();
        }
        manifest.push(serde_json::json!({"name": name, "outputs": preds.len()}));
        println!("{name}: written");
    }
    std::fs::write(out.join("cases.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}
