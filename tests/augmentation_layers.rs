//! Keras 3's preprocessing layers in kandle (issue 33): outputs equal Keras' for fixed
//! transform parameters (goldens written by Keras, tests/golden/augmentation_layers_keras.py:
//! each case's configuration is Keras' own, read back by kandle's layer registry), the identity
//! at inference, seeded runs reproducible however the batch is split, and each image of a batch
//! its own draw.

use kandle::layers::IntoLayer;
use kandle::layers::{
    from_config, Config, FlipMode, RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomRotation,
    RandomTranslation, RandomZoom,
};
use kandle::prelude::*;
use serde_json::Value;

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/augmentation_layers")
}

/// A one-layer model of `layer` on `(h, w, 3)` images.
fn model_of(layer: impl IntoLayer, shape: &[usize]) -> Model {
    let inputs = Input::new(shape.to_vec());
    let out = layer.call(&inputs).unwrap();
    Model::new(&[inputs], &[out]).unwrap().seed(0)
}

#[test]
fn layers_equal_keras_for_fixed_parameters() {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let x = Tensor::read_npy(dir().join("images.npy")).unwrap();
    let mut failures = Vec::new();
    for (name, case) in meta["cases"].as_object().unwrap() {
        let class = case["class_name"].as_str().unwrap();
        let layer = from_config(class, name, &Config::from_json(case), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs = Input::new(x.dims()[1..].to_vec());
        let out = LayerRef::new(layer).call(&inputs).unwrap();
        let model = Model::new(&[inputs], &[out]).unwrap().seed(0);
        let ours = model.call(&x, true).unwrap();
        let keras = Tensor::read_npy(dir().join(format!("{name}.npy"))).unwrap();
        assert_eq!(ours.dims(), keras.dims(), "{name}");
        let diff = (&ours - &keras).unwrap().abs().unwrap();
        let max = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
        // Pixels that differ by more than a rounding (a coordinate on the edge of a fill).
        let off = diff.gt(1e-2).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        println!(
            "{name}: max |kandle - keras| = {max:.2e}, {off} of {} values off by more than 0.01",
            keras.elem_count()
        );
        if max > 1e-3 {
            failures.push(format!("{name}: max difference {max} ({off} values)"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn batch() -> Tensor {
    Tensor::arange(0f32, (6 * 8 * 8 * 3) as f32, &Device::Cpu)
        .unwrap()
        .reshape((6, 8, 8, 3))
        .unwrap()
        .affine(0.3, 0.0)
        .unwrap()
}

#[test]
fn augmentation_is_the_identity_at_inference_and_seeded_in_training() {
    let x = batch();
    type Make = fn() -> Model;
    let makers: Vec<(&str, Make)> = vec![
        ("flip", || model_of(RandomFlip::new(FlipMode::HorizontalAndVertical), &[8, 8, 3])),
        ("rotation", || model_of(RandomRotation::new(0.2), &[8, 8, 3])),
        ("translation", || model_of(RandomTranslation::new(0.2, 0.3), &[8, 8, 3])),
        ("zoom", || model_of(RandomZoom::new(0.3), &[8, 8, 3])),
        ("contrast", || model_of(RandomContrast::new(0.5), &[8, 8, 3])),
        ("brightness", || model_of(RandomBrightness::new(0.2), &[8, 8, 3])),
    ];
    for (name, make) in makers {
        let m = make();
        assert_eq!(values(&m.predict(&x, 6).unwrap()), values(&x), "{name}: identity at inference");
        let (a, b) = (m.call(&x, true).unwrap(), make().call(&x, true).unwrap());
        assert_eq!(values(&a), values(&b), "{name}: the same seed draws the same");
        assert_ne!(values(&a), values(&x), "{name}: training changes the images");
        // A second call draws anew.
        assert_ne!(values(&m.call(&x, true).unwrap()), values(&a), "{name}: each call draws anew");
        // Each image its own draw: not all images moved alike (compare the change of image 0
        // with the others').
        let d = (&a - &x).unwrap();
        let first = values(&d.narrow(0, 0, 1).unwrap());
        assert!((1..6).any(|i| values(&d.narrow(0, i, 1).unwrap()) != first), "{name}: one draw per image");
    }
    // RandomCrop: random windows in training, the resized image at inference.
    let m = model_of(RandomCrop::new(5, 6), &[8, 8, 3]);
    assert_eq!(m.call(&x, true).unwrap().dims(), &[6, 5, 6, 3]);
    assert_eq!(m.predict(&x, 6).unwrap().dims(), &[6, 5, 6, 3]);
}

/// A data-parallel fit splits the batch between replicas; each image's draw depends on its
/// place in the whole batch, so the halves augmented apart equal the whole augmented at once.
#[test]
fn draws_do_not_depend_on_how_the_batch_is_split() {
    use kandle::layers::CallContext;
    let x = batch();
    let whole = RandomRotation::new(0.3).seed(7);
    let (first, second) = (RandomRotation::new(0.3).seed(7), RandomRotation::new(0.3).seed(7));
    let build = |l: &mut RandomRotation| {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = kandle::layers::BuildContext::new(DType::F32, &Device::Cpu, &mut rng);
        l.build(&[8, 8, 3], &mut ctx).unwrap();
    };
    let (mut whole, mut first, mut second) = (whole, first, second);
    build(&mut whole);
    build(&mut first);
    build(&mut second);
    let all = whole.forward_in(&x, &CallContext::training()).unwrap();
    let a = first.forward_in(&x.narrow(0, 0, 4).unwrap(), &CallContext::training()).unwrap();
    let mut ctx = CallContext::training();
    ctx.row_offset = 4;
    let b = second.forward_in(&x.narrow(0, 4, 2).unwrap(), &ctx).unwrap();
    assert_eq!(values(&all), values(&Tensor::cat(&[a, b], 0).unwrap()));
}

#[test]
fn bad_arguments_are_named_errors() {
    let err = |l: Box<dyn Layer>| {
        let inputs = Input::new((8, 8, 3));
        LayerRef::new(l).call(&inputs).unwrap_err().to_string()
    };
    assert!(err(Box::new(RandomRotation::new(1.5))).contains("factor"));
    assert!(err(Box::new(RandomTranslation::new(0.1, (0.5, 2.0)))).contains("width_factor"));
    assert!(err(Box::new(RandomContrast::new((1.5, 2.0)))).contains("factor"));
    assert!(err(Box::new(RandomBrightness::new(0.2).value_range(1.0, 1.0))).contains("value_range"));
    assert!(err(Box::new(kandle::layers::Resizing::new(0, 4))).contains("height"));
    // A target too large to hold is refused when the layer is called, before any allocation.
    assert!(err(Box::new(kandle::layers::Resizing::new(1 << 20, 1 << 20))).contains("more than"));
    assert!(err(Box::new(kandle::layers::CenterCrop::new(usize::MAX, 2))).contains("more than"));
    let inputs = Input::new(10);
    assert!(LayerRef::new(RandomFlip::new(FlipMode::Horizontal))
        .call(&inputs)
        .unwrap_err()
        .to_string()
        .contains("images"));
}

/// An augmentation layer after a layer with weights cannot pass a gradient back: training is
/// an error naming the layer, not a panic or a silently untrained layer.
#[test]
fn augmentation_after_weights_is_an_error_when_training() {
    let m = Sequential::new()
        .seed(0)
        .add(Conv2D::new(2, 3).padding(Padding::Same).input_shape((8, 8, 3)))
        .add(RandomFlip::new(FlipMode::Horizontal))
        .add(Flatten::new())
        .add(Dense::new(2).activation(Activation::Softmax));
    m.compile("sgd", Loss::CategoricalCrossentropy, ()).unwrap();
    let x = batch();
    let y = to_categorical(&Tensor::new(&[0u32, 1, 0, 1, 0, 1], &Device::Cpu).unwrap(), 2).unwrap();
    let e = m.fit(&x, &y, FitOptions::default().batch_size(6).epochs(1).verbose(0)).unwrap_err().to_string();
    assert!(e.contains("random_flip (RandomFlip) passes no gradient"), "{e}");
}
