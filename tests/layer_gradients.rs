//! Every layer's, activation's and loss's gradients: f64 finite differences against candle's
//! autograd, and the layers' own backward passes (what `fit` runs) against autograd, fused or
//! not.

use candle_core::{DType, Device, Tensor, Var};
use kandle::losses::{Loss, Output, Reduction};
use kandle::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

mod common;
use common::gradcheck::{check, check_vars, rand_tensor, weigh};

#[test]
fn activation_gradients() {
    let mut rng = StdRng::seed_from_u64(5);
    for act in [
        Activation::Linear,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softmax,
        Activation::Softplus,
        Activation::Elu,
        Activation::Selu,
        Activation::Relu6,
        Activation::HardSigmoid,
        Activation::Silu,
        Activation::Gelu,
    ] {
        // Values in (-8, 8) away from the kinks (0 for relu, elu and selu; 0 and 6 for relu6;
        // -3 and 3 for hard_sigmoid), where the derivative does not exist.
        let x = rand_tensor(&[3, 5], &mut rng).affine(8.0, 0.0).unwrap();
        let far = |x: &Tensor, k: f64| (x - k).unwrap().abs().unwrap().ge(1e-3).unwrap();
        let ok = [0.0, 6.0, 3.0, -3.0].iter().fold(far(&x, 0.0), |m, &k| (m * far(&x, k)).unwrap());
        let x = ok.where_cond(&x, &x.ones_like().unwrap()).unwrap();
        check(std::slice::from_ref(&x), |t| weigh(&act.apply(&t[0]).unwrap(), 11));
        // The layers' own backward passes use `Activation::gradient`, from the output alone:
        // it must equal autograd's (checked above against finite differences).
        let v = Var::from_tensor(&x).unwrap();
        let y = act.apply(v.as_tensor()).unwrap();
        let dy = rand_tensor(&[3, 5], &mut rng);
        let auto = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap().get(v.as_tensor()).unwrap().clone();
        let own = act.gradient_with_input(&x, &y.detach(), &dy).unwrap();
        let diff = (&auto - own).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        // candle's own GELU backward is about 4e-9 off the exact Phi(x) + x phi(x) that
        // kandle computes; the conformance suite compares kandle's with TensorFlow's.
        let tol = if act == Activation::Gelu { 1e-8 } else { 1e-12 };
        assert!(diff < tol, "{act:?}: own gradient differs from autograd by {diff}");
        if !act.needs_input() {
            let own = act.gradient(&y.detach(), &dy).unwrap();
            let diff = (auto - own).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(diff < 1e-12, "{act:?}: gradient from the output differs from autograd by {diff}");
        }
    }
}

#[test]
fn activation_values() {
    let x = Tensor::new(&[[-2.0f64, 0.0, 3.0]], &Device::Cpu).unwrap();
    let get = |a: Activation| a.apply(&x).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    for (g, w) in get(Activation::Sigmoid).iter().zip([sig(-2.0), 0.5, sig(3.0)]) {
        assert!((g - w).abs() < 1e-15);
    }
    let e: Vec<f64> = [-2.0f64, 0.0, 3.0].iter().map(|v| v.exp()).collect();
    let s: f64 = e.iter().sum();
    for (g, w) in get(Activation::Softmax).iter().zip(e.iter().map(|v| v / s)) {
        assert!((g - w).abs() < 1e-15);
    }
    assert_eq!(get(Activation::Relu), vec![0.0, 0.0, 3.0]);
    // Large inputs do not overflow.
    let big = Tensor::new(&[[-1000.0f64, 1000.0]], &Device::Cpu).unwrap();
    let v = Activation::Sigmoid.apply(&big).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(v, vec![0.0, 1.0]);
    let v = Activation::Softplus.apply(&big).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(v, vec![0.0, 1000.0]);
}

#[test]
fn loss_gradients() {
    let mut rng = StdRng::seed_from_u64(6);
    let y_onehot = Tensor::new(&[[0.0f64, 1., 0., 0.], [1., 0., 0., 0.], [0., 0., 0., 1.]], &Device::Cpu).unwrap();
    let y_sparse = Tensor::new(&[1u32, 0, 3], &Device::Cpu).unwrap();
    let y_bin = Tensor::new(&[[1.0f64, 0.], [0., 0.], [1., 1.]], &Device::Cpu).unwrap();
    let z = rand_tensor(&[3, 4], &mut rng);
    let z2 = rand_tensor(&[3, 2], &mut rng);
    // From logits (the fused path the model uses with a final softmax / sigmoid).
    check(std::slice::from_ref(&z), |t| {
        Loss::CategoricalCrossentropy
            .compute_output(&y_onehot, &Output::Logits(t[0].clone(), Activation::Softmax))
            .unwrap()
    });
    check(std::slice::from_ref(&z), |t| {
        Loss::SparseCategoricalCrossentropy
            .compute_output(&y_sparse, &Output::Logits(t[0].clone(), Activation::Softmax))
            .unwrap()
    });
    check(std::slice::from_ref(&z2), |t| {
        Loss::BinaryCrossentropy.compute_output(&y_bin, &Output::Logits(t[0].clone(), Activation::Sigmoid)).unwrap()
    });
    // From probabilities strictly inside (eps, 1 - eps), where the clip is the identity.
    let p = Activation::Softmax.apply(&z).unwrap();
    check(&[p], |t| Loss::CategoricalCrossentropy.compute(&y_onehot, &t[0]).unwrap());
    let q = Activation::Sigmoid.apply(&z2).unwrap();
    check(std::slice::from_ref(&q), |t| Loss::BinaryCrossentropy.compute(&y_bin, &t[0]).unwrap());
    check(&[q], |t| Loss::MeanSquaredError.compute(&y_bin, &t[0]).unwrap());
    let q3 = (Activation::Sigmoid.apply(&z2).unwrap() * 0.5).unwrap(); // never equal to a 0/1 target
    check(&[q3], |t| Loss::MeanAbsoluteError.compute(&y_bin, &t[0]).unwrap());
    // from_logits and label smoothing (the loss applies the softmax / sigmoid itself).
    check(std::slice::from_ref(&z), |t| {
        Loss::CategoricalCrossentropy.from_logits(true).label_smoothing(0.2).compute(&y_onehot, &t[0]).unwrap()
    });
    check(std::slice::from_ref(&z), |t| {
        Loss::SparseCategoricalCrossentropy.from_logits(true).compute(&y_sparse, &t[0]).unwrap()
    });
    check(std::slice::from_ref(&z2), |t| {
        Loss::BinaryCrossentropy.from_logits(true).label_smoothing(0.1).compute(&y_bin, &t[0]).unwrap()
    });
    // Huber on both sides of delta (errors of 0.1-0.9 against delta 0.5), never at the kink.
    let q4 = Activation::Sigmoid.apply(&z2).unwrap();
    check(std::slice::from_ref(&q4), |t| Loss::Huber.delta(0.5).compute(&y_bin, &t[0]).unwrap());
    check(&[q4], |t| Loss::Huber.compute(&y_bin, &t[0]).unwrap());
    // KL divergence between two distributions (inside the clip).
    let target = Activation::Softmax.apply(&rand_tensor(&[3, 4], &mut rng)).unwrap();
    check(&[Activation::Softmax.apply(&z).unwrap()], |t| Loss::KLDivergence.compute(&target, &t[0]).unwrap());
    // Keras 3's "crossentropy" (resolved from the targets), ignore_class and the reductions.
    check(std::slice::from_ref(&z), |t| Loss::Crossentropy.from_logits(true).compute(&y_sparse, &t[0]).unwrap());
    let y_ignored = Tensor::new(&[1u32, 255, 3], &Device::Cpu).unwrap();
    check(std::slice::from_ref(&z), |t| {
        Loss::SparseCategoricalCrossentropy
            .ignore_class(255)
            .compute_output(&y_ignored, &Output::Logits(t[0].clone(), Activation::Softmax))
            .unwrap()
    });
    let w = Tensor::new(&[1.0f64, 0.5, 2.0], &Device::Cpu).unwrap();
    for reduction in [Reduction::Sum, Reduction::MeanWithSampleWeight] {
        let q5 = Activation::Sigmoid.apply(&z2).unwrap();
        check(&[q5], |t| {
            Loss::MeanSquaredError
                .reduction(reduction)
                .compute_output_weighted(&y_bin, &Output::Values(t[0].clone()), Some(&w))
                .unwrap()
        });
    }
}

#[test]
fn fused_and_unfused_losses_agree() {
    let mut rng = StdRng::seed_from_u64(7);
    let z = rand_tensor(&[4, 5], &mut rng);
    let y = Tensor::new(&[0u32, 4, 2, 2], &Device::Cpu).unwrap();
    let fused = Loss::SparseCategoricalCrossentropy
        .compute_output(&y, &Output::Logits(z.clone(), Activation::Softmax))
        .unwrap();
    let plain = Loss::SparseCategoricalCrossentropy.compute(&y, &Activation::Softmax.apply(&z).unwrap()).unwrap();
    assert!((fused.to_scalar::<f64>().unwrap() - plain.to_scalar::<f64>().unwrap()).abs() < 1e-12);
}

/// A whole model in f64: every weight's gradient and the input's, through Conv2D ('same',
/// stride 2, 'valid'), both poolings (odd sizes), Dense, Flatten and the fused loss.
#[test]
fn model_gradients_through_every_layer() {
    let model = Sequential::new()
        .seed(3)
        .dtype(DType::F64)
        .add(Conv2D::new(3, (3, 3)).padding(Padding::Same).activation(Activation::Tanh).input_shape((9, 9, 2)))
        .add(Conv2D::new(4, (3, 3)).strides(2).padding(Padding::Same).activation(Activation::Sigmoid))
        .add(MaxPooling2D::new((2, 2)).padding(Padding::Same))
        .add(Conv2D::new(3, (2, 2)).activation(Activation::Elu))
        .add(AveragePooling2D::new((2, 2)).strides(1))
        .add(Dropout::new(0.3))
        .add(Flatten::new())
        .add(Dense::new(5).activation(Activation::Softplus))
        .add(Dense::new(3).activation(Activation::Softmax));
    assert_eq!(model.output_shape().unwrap(), vec![3]);
    let mut rng = StdRng::seed_from_u64(8);
    let x = Var::from_tensor(&rand_tensor(&[2, 9, 9, 2], &mut rng)).unwrap();
    let y = Tensor::new(&[[0.0f64, 0., 1.], [1., 0., 0.]], &Device::Cpu).unwrap();
    let mut vars = vec![x.clone()];
    vars.extend(model.named_weights().unwrap().into_iter().map(|(_, v)| v));
    assert_eq!(vars.len(), 1 + 2 * 5);
    check_vars(&vars, || {
        let out = model.call(x.as_tensor(), false).unwrap();
        Loss::CategoricalCrossentropy.compute(&y, &out).unwrap()
    });
}

/// BatchNormalization (training mode, batch statistics), GlobalAveragePooling2D, ReLU with
/// threshold and max value, LeakyReLU and a Softmax layer, in f64.
#[test]
fn gradients_of_the_extra_layers() {
    use kandle::layers::{BatchNormalization, GlobalAveragePooling2D, LeakyReLU, ReLU, Softmax};
    let model = Sequential::new()
        .seed(5)
        .dtype(DType::F64)
        .add(Conv2D::new(4, (3, 3)).input_shape((5, 5, 2)))
        .add(BatchNormalization::new())
        .add(LeakyReLU::new().negative_slope(0.2))
        .add(Conv2D::new(3, (2, 2)))
        .add(ReLU::new().threshold(-0.5).negative_slope(0.1).max_value(50.0))
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(3))
        .add(Softmax::new());
    let mut rng = StdRng::seed_from_u64(17);
    let x = Var::from_tensor(&rand_tensor(&[3, 5, 5, 2], &mut rng)).unwrap();
    let y = Tensor::new(&[[0.0f64, 1., 0.], [1., 0., 0.], [0., 0., 1.]], &Device::Cpu).unwrap();
    let mut vars = vec![x.clone()];
    vars.extend(model.named_weights().unwrap().into_iter().filter(|(n, _)| !n.contains("moving")).map(|(_, v)| v));
    check_vars(&vars, || {
        let out = model.call(x.as_tensor(), true).unwrap();
        Loss::CategoricalCrossentropy.compute(&y, &out).unwrap()
    });
}

#[test]
fn batch_normalization_statistics() {
    use kandle::layers::BatchNormalization;
    let m = Sequential::new().dtype(DType::F64).add(BatchNormalization::new().momentum(0.9).input_shape(2));
    let x = Tensor::new(&[[1.0f64, 10.], [3., 30.]], &Device::Cpu).unwrap();
    // Training: normalised by the batch (mean (2, 20), biased variance (1, 100)).
    let y = m.call(&x, true).unwrap().to_vec2::<f64>().unwrap();
    let e = 1e-3f64;
    assert!((y[0][0] + 1.0 / (1.0 + e).sqrt()).abs() < 1e-12 && (y[1][1] - 10.0 / (100.0 + e).sqrt()).abs() < 1e-12);
    let w = m.named_weights().unwrap();
    let get = |name: &str| w.iter().find(|(n, _)| n.ends_with(name)).unwrap().1.as_tensor().to_vec1::<f64>().unwrap();
    let mm = get("moving_mean");
    assert!((mm[0] - 0.2).abs() < 1e-12 && (mm[1] - 2.0).abs() < 1e-12, "{mm:?}");
    assert!((get("moving_variance")[1] - (0.9 + 0.1 * 100.0)).abs() < 1e-12);
    // Inference: the moving statistics.
    let y = m.call(&x, false).unwrap().to_vec2::<f64>().unwrap();
    assert!((y[0][0] - (1.0 - 0.2) / (1.0f64 + e).sqrt()).abs() < 1e-12, "{y:?}");
    let s = m.summary_string().unwrap();
    assert!(s.contains("Trainable params: 4 (32.00 B)") && s.contains("Non-trainable params: 4 (32.00 B)"), "{s}");
}

/// Every activation inside Conv2D and Dense (`activation=`), and as a standalone `Activation`
/// layer fused into the convolution before it: the layers' own backward passes (which keep the
/// pre-activation for GELU and SiLU) give autograd's gradients, in f64.
#[test]
fn every_activation_through_the_layers_own_backward() {
    // Seeded: with some inputs candle's GELU backward (about 4e-9 off) came within a hair of
    // the tolerance below.
    let x = rand_tensor(&[6, 5, 5, 2], &mut StdRng::seed_from_u64(3));
    let y = Tensor::new(&[0u32, 1, 1, 0, 1, 0], &Device::Cpu).unwrap();
    for act in [
        Activation::Tanh,
        Activation::Softplus,
        Activation::Elu,
        Activation::Selu,
        Activation::Relu6,
        Activation::HardSigmoid,
        Activation::Silu,
        Activation::Gelu,
    ] {
        let grads = |autograd: bool| {
            let m = Sequential::new()
                .seed(4)
                .dtype(DType::F64)
                .add(Conv2D::new(3, 3).activation(act).input_shape((5, 5, 2)))
                .add(Conv2D::new(3, 2))
                .add(act)
                .add(Flatten::new())
                .add(Dense::new(4).activation(act))
                .add(Dense::new(2).activation(Activation::Softmax));
            m.use_autograd(autograd);
            m.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
            m.compute_gradients(&x, &y).unwrap()
        };
        for ((name, own), (_, auto)) in grads(false).iter().zip(&grads(true)) {
            let diff = (own - auto).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            let scale = auto.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            // candle's GELU backward is itself about 4e-9 off (see activation_gradients).
            let (tol, floor) = if act == Activation::Gelu { (1e-6, 1e-2) } else { (1e-10, 1e-3) };
            assert!(diff <= tol * scale.max(floor), "{act:?} {name}: own vs autograd {diff} (scale {scale})");
        }
    }
}

/// The weightless layers added for Keras' next steps (ZeroPadding2D, Reshape, Rescaling,
/// GlobalMaxPooling2D, SpatialDropout2D) and the parametrised activation layers and global
/// average pooling: autograd through their forward passes against f64 finite differences, and
/// their own backward passes (what `fit` runs) against autograd.
#[test]
fn weightless_layers_own_backward_and_finite_differences() {
    use kandle::layers::{
        GlobalAveragePooling2D, GlobalMaxPooling2D, LeakyReLU, ReLU, Rescaling, Reshape, Softmax, SpatialDropout2D,
        ZeroPadding2D,
    };
    let build = |rate: f64| {
        let inputs = Input::new((5, 5, 2));
        let x = Rescaling::new(0.5).offset(0.1).call(&inputs).unwrap();
        let x = ZeroPadding2D::asymmetric((1, 0), (2, 1)).call(&x).unwrap();
        let x = Conv2D::new(4, (3, 3)).call(&x).unwrap();
        let x = LeakyReLU::new().negative_slope(0.2).call(&x).unwrap();
        let x = SpatialDropout2D::new(rate).call(&x).unwrap();
        let x = ReLU::new().threshold(-0.5).negative_slope(0.1).max_value(50.0).call(&x).unwrap();
        let x = Reshape::with_unknown([Some(4), None, Some(4)]).call(&x).unwrap();
        let x = Conv2D::new(3, (2, 2)).call(&x).unwrap();
        let a = GlobalMaxPooling2D::new().call(&x).unwrap();
        let b = GlobalAveragePooling2D::new().call(&x).unwrap();
        let x = Concatenate::new().call(&[a, b]).unwrap();
        let x = Dense::new(3).call(&x).unwrap();
        let out = Softmax::new().call(&x).unwrap();
        let m = Model::new(&[inputs], &[out]).unwrap().seed(9).dtype(DType::F64);
        m.compile("sgd", Loss::CategoricalCrossentropy, ()).unwrap();
        m
    };
    let mut rng = StdRng::seed_from_u64(21);
    let xt = rand_tensor(&[3, 5, 5, 2], &mut rng);
    let y = Tensor::new(&[[0.0f64, 1., 0.], [1., 0., 0.], [0., 0., 1.]], &Device::Cpu).unwrap();
    // Finite differences through the forward pass (no dropout: rate 0).
    let model = build(0.0);
    let x = Var::from_tensor(&xt).unwrap();
    let mut vars = vec![x.clone()];
    vars.extend(model.named_weights().unwrap().into_iter().map(|(_, v)| v));
    check_vars(&vars, || {
        let out = model.call(x.as_tensor(), true).unwrap();
        Loss::CategoricalCrossentropy.compute(&y, &out).unwrap()
    });
    // The layers' own backward passes against autograd, with spatial dropout on (the same seed
    // draws the same masks in both models).
    let grads = |autograd: bool| {
        let m = build(0.4);
        m.use_autograd(autograd);
        m.compute_gradients(&xt, &y).unwrap()
    };
    for ((name, own), (_, auto)) in grads(false).iter().zip(&grads(true)) {
        let diff = (own - auto).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        let scale = auto.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff <= 1e-10 * scale.max(1e-3), "{name}: own vs autograd {diff} (scale {scale})");
    }
}

/// DepthwiseConv2D and SeparableConv2D (strides, `same` padding, dilation, depth multiplier,
/// an activation): autograd through their forward passes against f64 finite differences, and
/// their own backward passes against autograd.
#[test]
fn depthwise_and_separable_convolutions() {
    use kandle::layers::{DepthwiseConv2D, SeparableConv2D};
    let build = || {
        let m = Sequential::new()
            .seed(13)
            .dtype(DType::F64)
            .add(
                DepthwiseConv2D::new((3, 2))
                    .depth_multiplier(2)
                    .padding(Padding::Same)
                    .strides(2)
                    .input_shape((11, 12, 3)),
            )
            .add(SeparableConv2D::new(5, 3).dilation_rate(2).activation(Activation::Tanh))
            .add(DepthwiseConv2D::new(1).activation(Activation::Silu).use_bias(false))
            .add(Flatten::new())
            .add(Dense::new(3).activation(Activation::Softmax));
        m.compile("sgd", Loss::CategoricalCrossentropy, ()).unwrap();
        m
    };
    let model = build();
    assert_eq!(model.output_shapes().unwrap(), vec![vec![3]]);
    let mut rng = StdRng::seed_from_u64(23);
    let xt = rand_tensor(&[2, 11, 12, 3], &mut rng);
    let y = Tensor::new(&[[0.0f64, 1., 0.], [1., 0., 0.]], &Device::Cpu).unwrap();
    let x = Var::from_tensor(&xt).unwrap();
    let mut vars = vec![x.clone()];
    vars.extend(model.named_weights().unwrap().into_iter().map(|(_, v)| v));
    check_vars(&vars, || {
        let out = model.call(x.as_tensor(), true).unwrap();
        Loss::CategoricalCrossentropy.compute(&y, &out).unwrap()
    });
    let grads = |autograd: bool| {
        let m = build();
        m.use_autograd(autograd);
        m.compute_gradients(&xt, &y).unwrap()
    };
    let (own, auto) = (grads(false), grads(true));
    assert_eq!(own.len(), 2 + 3 + 1 + 2);
    for ((name, own), (_, auto)) in own.iter().zip(&auto) {
        let diff = (own - auto).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        let scale = auto.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff <= 1e-10 * scale.max(1e-3), "{name}: own vs autograd {diff} (scale {scale})");
    }
}

/// A ReLU, ReLU6 or SiLU after BatchNormalization (`Activation('relu')`, `ReLU(6.0)`,
/// `Activation('relu6')`, `Activation('swish')`) runs inside the normalisation's kernels (forward and backward): its
/// gradients equal autograd's in f64, in training mode and frozen (where autograd goes through
/// the one-pass kernel of the moving statistics); a gamma of 20 puts some of the values above
/// ReLU6's cap. At inference the kernel's output equals the layer-by-layer formula.
#[test]
fn batch_normalization_with_a_fused_relu() {
    use kandle::layers::{BatchNormalization, ReLU};
    let mut rng = StdRng::seed_from_u64(31);
    let x = rand_tensor(&[4, 6, 6, 2], &mut rng);
    let y = Tensor::new(&[0u32, 2, 1, 2], &Device::Cpu).unwrap();
    for act in ["relu", "relu6 layer", "relu6", "swish"] {
        let build = |frozen: bool| {
            let m = Sequential::new()
                .seed(5)
                .dtype(DType::F64)
                .add(Conv2D::new(4, 3).input_shape((6, 6, 2)))
                .add(BatchNormalization::new().momentum(0.5));
            let m = match act {
                "relu" => m.add(Activation::Relu),
                "relu6 layer" => m.add(ReLU::new().max_value(6.0)),
                "relu6" => m.add(Activation::Relu6),
                _ => m.add(Activation::Silu),
            };
            let m = m.add(Flatten::new()).add(Dense::new(3).activation(Activation::Softmax));
            m.build().unwrap();
            let bn = m.layers()[1].clone();
            for w in bn.weights() {
                let v = match w.name.as_str() {
                    "gamma" => 20.0,
                    "beta" => 0.5,
                    "moving_mean" => 0.1,
                    _ => 0.8,
                };
                w.var.set(&(w.var.ones_like().unwrap() * v).unwrap()).unwrap();
            }
            if frozen {
                bn.set_trainable(false);
            }
            m
        };
        for frozen in [false, true] {
            let grads = |autograd: bool| {
                let m = build(frozen);
                m.use_autograd(autograd);
                m.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
                m.compute_gradients(&x, &y).unwrap()
            };
            for ((name, own), (_, auto)) in grads(false).iter().zip(&grads(true)) {
                let diff = (own - auto).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
                let scale = auto.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
                assert!(
                    diff <= 1e-10 * scale.max(1e-3),
                    "{act} frozen {frozen} {name}: own vs autograd {diff} (scale {scale})"
                );
            }
        }
        // Inference: gamma (x - mean) / sqrt(var + eps) + beta, clipped, on the convolution's output.
        let m = build(false);
        let conv = Model::new(&m.inputs().unwrap(), &[m.layers()[0].output().unwrap()]).unwrap().dtype(DType::F64);
        let z = conv.predict(&x, 4).unwrap();
        let pre = ((z - 0.1).unwrap() * (20.0 / (0.8f64 + 1e-3).sqrt())).unwrap() + 0.5;
        let pre = pre.unwrap();
        let want = match act {
            "relu" => pre.relu().unwrap(),
            "swish" => (&pre * candle_nn::ops::sigmoid(&pre).unwrap()).unwrap(),
            _ => pre.clamp(0.0, 6.0).unwrap(),
        };
        let cut = Model::new(&m.inputs().unwrap(), &[m.layers()[2].output().unwrap()]).unwrap().dtype(DType::F64);
        let got = cut.predict(&x, 4).unwrap();
        let above = want.ge(6.0).unwrap().to_dtype(DType::F64).unwrap().mean_all().unwrap().to_scalar::<f64>().unwrap();
        if act.starts_with("relu6") {
            assert!(above > 0.02, "{act}: {above} of the values at the cap");
        }
        let d = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(d < 1e-12, "{act}: inference differs by {d}");
    }
}

/// A ReLU after an `Add` of two same-shaped maps (a residual block's end) runs inside the
/// addition (one parallel pass, forward and backward): gradients equal autograd's (f64), and
/// the inference output is `relu(a + b)`; an `Add` whose output has two readers keeps its ReLU
/// apart.
#[test]
fn residual_add_with_a_fused_relu() {
    let mut rng = StdRng::seed_from_u64(41);
    let x = rand_tensor(&[3, 8, 8, 2], &mut rng);
    let y = Tensor::new(&[0u32, 2, 1], &Device::Cpu).unwrap();
    let build = || {
        let inputs = Input::new((8, 8, 2));
        let a = Conv2D::new(8, 3).padding(Padding::Same).call(&inputs).unwrap();
        let b = Conv2D::new(8, 1).call(&inputs).unwrap();
        let s = Add::new().call(&[a, b]).unwrap();
        let r = Activation::Relu.call(&s).unwrap();
        // A second block whose sum is read twice (no fusion).
        let c = Conv2D::new(8, 3).padding(Padding::Same).call(&r).unwrap();
        let s2 = Add::new().call(&[c, r]).unwrap();
        let r2 = Activation::Relu.call(&s2).unwrap();
        let both = Add::new().call(&[r2, s2]).unwrap();
        let out = Dense::new(3).activation(Activation::Softmax).call(Flatten::new().call(&both).unwrap()).unwrap();
        let m = Model::new(&[inputs], &[out]).unwrap().seed(3).dtype(DType::F64);
        m.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
        m
    };
    let grads = |autograd: bool| {
        let m = build();
        m.use_autograd(autograd);
        m.compute_gradients(&x, &y).unwrap()
    };
    for ((name, own), (_, auto)) in grads(false).iter().zip(&grads(true)) {
        let diff = (own - auto).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        let scale = auto.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff <= 1e-10 * scale.max(1e-3), "{name}: own vs autograd {diff} (scale {scale})");
    }
    // The first ReLU runs inside its Add; the second's sum has two readers.
    let m = build();
    let profile = m.profile(&x, &y, 1).unwrap();
    let fused = |n: &str| profile.layers.iter().find(|l| l.name == n).unwrap().fused;
    assert!(fused("activation") && !fused("activation_1"));
    // Inference: the fused pass is relu(a + b).
    let layers = m.layers();
    let cut = |l: &LayerRef| Model::new(&m.inputs().unwrap(), &[l.output().unwrap()]).unwrap().dtype(DType::F64);
    let name = |n: &str| layers.iter().find(|l| l.name() == n).unwrap().clone();
    let (a, b) = (cut(&name("conv2d")).predict(&x, 3).unwrap(), cut(&name("conv2d_1")).predict(&x, 3).unwrap());
    let got = cut(&name("activation")).predict(&x, 3).unwrap();
    let d = (got - (a + b).unwrap().relu().unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
}

/// A model fuses a max pooling into the convolution before it (directly, or after a
/// standalone ReLU fused into it) when Keras' defaults hold, and its gradients stay those of
/// the layer-by-layer passes (autograd); overlapping poolings are not fused.
#[test]
fn models_fuse_max_pooling_into_the_convolution() {
    let x = rand_tensor(&[5, 11, 11, 2], &mut StdRng::seed_from_u64(8));
    let y = Tensor::new(&[0u32, 1, 1, 0, 1], &Device::Cpu).unwrap();
    let build = || {
        Sequential::new()
            .seed(9)
            .dtype(DType::F64)
            .add(Conv2D::new(4, 3).activation(Activation::Relu).input_shape((11, 11, 2)))
            .add(MaxPooling2D::new(2))
            .add(Conv2D::new(3, 2).padding(Padding::Same))
            .add(Activation::Relu)
            .add(MaxPooling2D::new((2, 2)))
            .add(Conv2D::new(2, 2).padding(Padding::Same))
            .add(MaxPooling2D::new(2).strides(1))
            .add(Flatten::new())
            .add(Dense::new(2).activation(Activation::Softmax))
    };
    let grads = |autograd: bool| {
        let m = build();
        m.use_autograd(autograd);
        m.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
        (m.compute_gradients(&x, &y).unwrap(), m)
    };
    let (own, m) = grads(false);
    let (auto, _) = grads(true);
    for ((name, a), (_, b)) in own.iter().zip(&auto) {
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-12, "{name}: fused vs autograd {diff}");
    }
    // Which layers ran inside the one before them.
    let profile = m.profile(&x, &y, 1).unwrap();
    let fused: Vec<(&str, bool)> = profile.layers.iter().map(|l| (l.name.as_str(), l.fused)).collect();
    assert_eq!(
        fused,
        [
            ("conv2d", false),
            ("max_pooling2d", true),
            ("conv2d_1", false),
            ("activation", true),
            ("max_pooling2d_1", true),
            ("conv2d_2", false),
            ("max_pooling2d_2", false),
            ("flatten", false),
            ("dense", false),
        ]
    );
}

/// Poolings a convolution cannot take run as their own layer, with the same gradients: a window
/// of more than 256 pixels (past a one-byte position), one after an activation other than
/// ReLU; a 1x1 window is fused (every value its own maximum).
#[test]
fn poolings_the_convolution_cannot_take_run_on_their_own() {
    let x = rand_tensor(&[3, 19, 19, 1], &mut StdRng::seed_from_u64(10));
    let y = Tensor::new(&[0u32, 1, 1], &Device::Cpu).unwrap();
    let build = || {
        Sequential::new()
            .seed(11)
            .dtype(DType::F64)
            .add(Conv2D::new(2, 3).activation(Activation::Relu).input_shape((19, 19, 1)))
            .add(MaxPooling2D::new((17, 17)))
            .add(Conv2D::new(2, 1).activation(Activation::Tanh))
            .add(MaxPooling2D::new(1))
            .add(Conv2D::new(2, 1).activation(Activation::Relu))
            .add(MaxPooling2D::new(1))
            .add(Flatten::new())
            .add(Dense::new(2).activation(Activation::Softmax))
    };
    let grads = |autograd: bool| {
        let m = build();
        m.use_autograd(autograd);
        m.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
        (m.compute_gradients(&x, &y).unwrap(), m)
    };
    let (own, m) = grads(false);
    let (auto, _) = grads(true);
    for ((name, a), (_, b)) in own.iter().zip(&auto) {
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-12, "{name}: own vs autograd {diff}");
    }
    let profile = m.profile(&x, &y, 1).unwrap();
    let fused: Vec<bool> = profile.layers.iter().map(|l| l.fused).collect();
    assert_eq!(fused, [false, false, false, false, false, true, false, false]);
    assert_eq!(m.predict(&x, 2).unwrap().dims(), [3, 2]);
}

/// UpSampling2D (nearest, bilinear), Conv2DTranspose, Cropping2D and LayerNormalization:
/// autograd through their forward passes against f64 finite differences, inside a model.
#[test]
fn upsampling_transpose_cropping_and_layer_normalization() {
    use kandle::layers::{Conv2DTranspose, Cropping2D, LayerNormalization, UpSampling, UpSampling2D};
    for (interpolation, padding) in [(UpSampling::Nearest, Padding::Same), (UpSampling::Bilinear, Padding::Valid)] {
        let model = Sequential::new()
            .seed(3)
            .dtype(DType::F64)
            .add(UpSampling2D::new((2, 3)).interpolation(interpolation).input_shape((3, 2, 2)))
            .add(Conv2D::new(3, (2, 2)))
            .add(Conv2DTranspose::new(3, (3, 2)).strides((2, 1)).padding(padding).activation(Activation::Tanh))
            .add(Cropping2D::asymmetric((1, 0), (0, 2)))
            .add(LayerNormalization::new())
            .add(Flatten::new())
            .add(Dense::new(2));
        let mut rng = StdRng::seed_from_u64(23);
        let x = Var::from_tensor(&rand_tensor(&[2, 3, 2, 2], &mut rng)).unwrap();
        let mut vars = vec![x.clone()];
        vars.extend(model.named_weights().unwrap().into_iter().map(|(_, v)| v));
        // LayerNormalization's gamma and beta away from 1 and 0.
        let ln = model.get_layer("layer_normalization").unwrap().weights();
        ln[0].var.set(&rand_tensor(&[3], &mut rng).affine(0.5, 1.0).unwrap()).unwrap();
        ln[1].var.set(&rand_tensor(&[3], &mut rng)).unwrap();
        check_vars(&vars, || weigh(&model.call(x.as_tensor(), true).unwrap(), 29));
    }
}

/// Broadcasting merges (Multiply by a `(1, 1, c)` scale, Maximum, Add, Average): their own
/// backward passes, which sum over the broadcast axes, against autograd, and autograd against
/// f64 finite differences.
#[test]
fn broadcasting_merges_backward() {
    let build = || {
        let (a, s) = (Input::new((3, 4, 2)), Input::new((1, 1, 2)));
        let x = Conv2D::new(2, (1, 1)).call(&a).unwrap();
        let t = Conv2D::new(2, (1, 1)).call(&s).unwrap();
        let m1 = Multiply::new().call(&[x.clone(), t.clone()]).unwrap();
        let m2 = Maximum::new().call(&[t.clone(), x.clone()]).unwrap();
        let m3 = Add::new().call(&[m1, t.clone()]).unwrap();
        let m4 = Average::new().call(&[m2, m3, t]).unwrap();
        let out = Dense::new(2).call(Flatten::new().call(&m4).unwrap()).unwrap();
        let m = Model::new(&[a, s], &[out]).unwrap().seed(4).dtype(DType::F64);
        m.compile("sgd", Loss::MeanSquaredError, ()).unwrap();
        m
    };
    let mut rng = StdRng::seed_from_u64(31);
    let (xa, xs) = (rand_tensor(&[2, 3, 4, 2], &mut rng), rand_tensor(&[2, 1, 1, 2], &mut rng));
    let y = rand_tensor(&[2, 2], &mut rng);
    let grads = |autograd: bool| {
        let m = build();
        m.use_autograd(autograd);
        m.compute_gradients([&xa, &xs], &y).unwrap()
    };
    for ((name, own), (_, auto)) in grads(false).iter().zip(&grads(true)) {
        let diff = (own - auto).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-10, "{name}: own vs autograd {diff}");
    }
    let model = build();
    let (va, vs) = (Var::from_tensor(&xa).unwrap(), Var::from_tensor(&xs).unwrap());
    let mut vars = vec![va.clone(), vs.clone()];
    vars.extend(model.named_weights().unwrap().into_iter().map(|(_, v)| v));
    check_vars(&vars, || {
        let out = model.call_outputs([va.as_tensor(), vs.as_tensor()], true).unwrap().remove(0);
        weigh(&out, 37)
    });
}

/// The f32 CPU kernels of the activations (SiLU, sigmoid, ReLU6, ReLU; Keras' capped, leaky,
/// thresholded ReLU layer), of the depthwise convolution (with its bias), of zero padding and
/// of the global average pooling are
/// candle operations with their own gradients: candle's autograd through them equals
/// kandle's own backward pass.
#[test]
fn f32_cpu_kernels_differentiate_under_autograd() {
    use kandle::layers::DepthwiseConv2D;
    let build = || {
        let m = Sequential::new()
            .seed(5)
            .add(Conv2D::new(4, 3).padding(Padding::Same).input_shape((24, 24, 3)))
            .add(Activation::Silu)
            .add(Conv2D::new(4, 3).padding(Padding::Same))
            .add(Activation::Sigmoid)
            .add(Conv2D::new(4, 3).padding(Padding::Same))
            .add(Activation::Relu6)
            .add(Conv2D::new(4, 3).padding(Padding::Same))
            .add(Activation::Relu)
            .add(Conv2D::new(4, 3).padding(Padding::Same))
            .add(ReLU::new().max_value(0.3).negative_slope(0.1).threshold(0.05))
            .add(DepthwiseConv2D::new(3).strides(2).depth_multiplier(2))
            .add(ReLU::new().max_value(6.0))
            .add(ZeroPadding2D::asymmetric((1, 0), (2, 1)))
            .add(GlobalAveragePooling2D::new())
            .add(Dense::new(3).activation(Activation::Softmax));
        m.compile("sgd", Loss::CategoricalCrossentropy, ()).unwrap();
        m
    };
    let mut rng = StdRng::seed_from_u64(3);
    let x = rand_tensor(&[2, 24, 24, 3], &mut rng).to_dtype(DType::F32).unwrap();
    let y = Tensor::new(&[[0.0f32, 1., 0.], [1., 0., 0.]], &Device::Cpu).unwrap();
    let grads = |autograd: bool| {
        let m = build();
        m.use_autograd(autograd);
        m.compute_gradients(&x, &y).unwrap()
    };
    let (own, auto) = (grads(false), grads(true));
    for ((name, own), (_, auto)) in own.iter().zip(&auto) {
        let diff = (own - auto).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = auto.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
        assert!(diff <= 1e-4 * scale, "{name}: own {own} vs autograd {auto}");
    }
}

/// Normalization (adapted and given statistics, inverted), per-channel Rescaling: their own
/// backward passes against finite differences (f64), and against candle's autograd.
#[test]
fn normalization_and_per_channel_rescaling() {
    use kandle::layers::{Normalization, Rescaling};
    let mut rng = StdRng::seed_from_u64(31);
    let data = rand_tensor(&[5, 4, 4, 3], &mut rng);
    let build = || {
        let mut adapted = Normalization::new();
        adapted.adapt(&data).unwrap();
        let m = Sequential::new()
            .seed(2)
            .dtype(DType::F64)
            .add(adapted.input_shape((4, 4, 3)))
            .add(Rescaling::per_channel([0.5, 2.0, -1.5]).offset(0.25))
            .add(Normalization::new().mean_variance([0.1, -0.2, 0.3], [2.0, 0.5, 1.5]).invert(true))
            .add(Normalization::new().axis(None).mean_variance([0.5], [4.0]))
            .add(Flatten::new())
            .add(Dense::new(3).activation(Activation::Softmax));
        m.compile("sgd", Loss::CategoricalCrossentropy, ()).unwrap();
        m
    };
    let model = build();
    let xt = rand_tensor(&[2, 4, 4, 3], &mut rng);
    let y = Tensor::new(&[[0.0f64, 1., 0.], [1., 0., 0.]], &Device::Cpu).unwrap();
    let x = Var::from_tensor(&xt).unwrap();
    let mut vars = vec![x.clone()];
    // The statistics are non-trainable weights (no gradient, as Keras'); the Dense layer's are.
    vars.extend(model.layers().iter().flat_map(|l| l.weights()).filter(|w| w.trainable).map(|w| w.var));
    check_vars(&vars, || {
        let out = model.call(x.as_tensor(), true).unwrap();
        Loss::CategoricalCrossentropy.compute(&y, &out).unwrap()
    });
    let grads = |autograd: bool| {
        let m = build();
        m.use_autograd(autograd);
        m.compute_gradients(&xt, &y).unwrap()
    };
    for ((name, own), (_, auto)) in grads(false).iter().zip(&grads(true)) {
        let diff = (own - auto).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-9, "{name}: own and autograd differ by {diff}");
    }
}

/// At inference a BatchNormalization after a linear convolution runs inside it (its scale and
/// shift folded into the kernel and bias, a following ReLU in the convolution's store): the
/// f32 outputs equal the same model's in f64 (where nothing folds) layer by layer, for a
/// biased and an unbiased convolution, a strided one, a residual `Add`, an activation the
/// store cannot take (ReLU6, run after), frozen normalisations called with `training=True`
/// (moving statistics, folded) and unfrozen ones (batch statistics, not folded).
#[test]
fn inference_folds_batch_normalization_into_the_convolution() {
    use kandle::layers::BatchNormalization;
    let build = |dtype: DType| {
        let inputs = Input::new((9, 9, 3));
        let a = Conv2D::new(6, 3).padding(Padding::Same).call(&inputs).unwrap();
        let a = BatchNormalization::new().call(&a).unwrap();
        let a = Activation::Relu.call(&a).unwrap();
        let b = Conv2D::new(6, 1).use_bias(false).call(&inputs).unwrap();
        let b = BatchNormalization::new().call(&b).unwrap();
        let s = Add::new().call(&[a, b]).unwrap();
        let r = Activation::Relu.call(&s).unwrap();
        let c = Conv2D::new(4, 3).strides(2).use_bias(false).call(&r).unwrap();
        let c = BatchNormalization::new().call(&c).unwrap();
        let c = Activation::Relu6.call(&c).unwrap();
        let out = Dense::new(3).activation(Activation::Softmax).call(Flatten::new().call(&c).unwrap()).unwrap();
        let m = Model::new(&[inputs], &[r, c, out]).unwrap().seed(7).dtype(dtype);
        m.build().unwrap();
        m
    };
    let m32 = build(DType::F32);
    // Statistics and affine parameters far from the defaults (1, 0), different per channel.
    let mut rng = StdRng::seed_from_u64(17);
    for l in m32.layers().iter().filter(|l| l.class_name() == "BatchNormalization") {
        for w in l.weights() {
            let r = rand_tensor(w.var.dims(), &mut rng).to_dtype(DType::F32).unwrap();
            let v = match w.name.as_str() {
                "gamma" => (r * 2.0).unwrap(),
                "moving_variance" => ((r + 1.5).unwrap() * 0.7).unwrap(),
                _ => r,
            };
            w.var.set(&v).unwrap();
        }
    }
    let m64 = build(DType::F64);
    let w64: Vec<Tensor> = m32.get_weights().unwrap().iter().map(|w| w.to_dtype(DType::F64).unwrap()).collect();
    m64.set_weights(&w64).unwrap();
    let x = rand_tensor(&[5, 9, 9, 3], &mut rng);
    let compare = |what: &str, got: Vec<Tensor>, want: Vec<Tensor>| {
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let g = g.to_dtype(DType::F64).unwrap();
            let d = (g - w).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            let scale = w.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(d <= 1e-5 * scale.max(1.0), "{what}, output {i}: f32 folded vs f64 {d} (scale {scale})");
        }
    };
    let x32 = x.to_dtype(DType::F32).unwrap();
    compare("predict", m32.predict_outputs(&x32, 2).unwrap(), m64.predict_outputs(&x, 2).unwrap());
    // Batch statistics (training=True, not frozen): nothing folds.
    compare("training", m32.call_outputs(&x32, true).unwrap(), m64.call_outputs(&x, true).unwrap());
    // Frozen normalisations keep to their moving statistics, in training mode too.
    for m in [&m32, &m64] {
        for l in m.layers().iter().filter(|l| l.class_name() == "BatchNormalization") {
            l.set_trainable(false);
        }
    }
    compare("frozen", m32.call_outputs(&x32, true).unwrap(), m64.call_outputs(&x, true).unwrap());

    // Keras' fine-tuning recipe, `base(x, training=False)` with the base unfrozen: a model
    // trained by candle's autograd differentiates the base's folded inference pass; its
    // gradients (the convolution's kernel, gamma and beta too) equal the own backward passes'.
    let base = Sequential::new()
        .name("base")
        .add(Conv2D::new(4, 3).input_shape((6, 6, 2)))
        .add(BatchNormalization::new())
        .add(Activation::Relu);
    let inputs = Input::new((6, 6, 2));
    let h = base.as_layer().call_training(&inputs, false).unwrap();
    let out = Dense::new(3).activation(Activation::Softmax).call(Flatten::new().call(&h).unwrap()).unwrap();
    let model = Model::new(&[inputs], &[out]).unwrap().seed(2);
    model.compile("sgd", Loss::SparseCategoricalCrossentropy, ()).unwrap();
    model.build().unwrap();
    let bn = base.get_layer("batch_normalization").unwrap();
    for w in bn.weights() {
        let r = rand_tensor(w.var.dims(), &mut rng).to_dtype(DType::F32).unwrap();
        w.var.set(&(r.abs().unwrap() + 0.5).unwrap()).unwrap();
    }
    let x = rand_tensor(&[4, 6, 6, 2], &mut rng).to_dtype(DType::F32).unwrap();
    let y = Tensor::new(&[0u32, 2, 1, 2], &Device::Cpu).unwrap();
    let own = model.compute_gradients(&x, &y).unwrap();
    let auto = model.use_autograd(true).compute_gradients(&x, &y).unwrap();
    assert_eq!(own.len(), 6, "the convolution's kernel and bias, gamma, beta, the dense layer's kernel and bias");
    for ((name, a), (_, b)) in own.iter().zip(&auto) {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(scale > 0.0 && d <= 1e-4 * scale, "{name}: own {d} from autograd (scale {scale})");
    }
}
