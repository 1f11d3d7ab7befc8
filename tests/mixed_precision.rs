//! Keras' `mixed_bfloat16` policy: bf16 products (AMX tiles where the CPU has them), f32
//! weights; what the layers keep, what files keep, and a real training run beside float32.
//! (The global policy is process-wide: these tests set each layer's own policy instead, and the
//! global setter is exercised by the doc example of `kandle::mixed_precision`.)

use candle_core::{DType, Tensor};
use kandle::mixed_precision::DTypePolicy;
use kandle::prelude::*;
use std::path::Path;

const BF16: DTypePolicy = DTypePolicy::MixedBfloat16;

/// Whether each value of `t` is a bf16 value (its low 16 bits zero).
fn all_bf16(t: &Tensor) -> bool {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.to_bits() & 0xffff == 0)
}

/// Both policies of a small CNN whose second convolution (32 -> 32 channels) runs on AMX tiles
/// where the CPU has them (the first, on one channel, runs the f32 kernels on rounded values).
fn cnn(policy: DTypePolicy) -> Sequential {
    Sequential::new()
        .seed(0)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape((28, 28, 1)).dtype_policy(policy))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(32, (3, 3)).padding(Padding::Same).activation(Activation::Relu).dtype_policy(policy))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax).dtype_policy(policy))
}

/// MNIST's first `n` training and 2,000 test images, scaled to [0, 1].
fn mnist(n: usize) -> ((Tensor, Tensor), (Tensor, Tensor)) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let ((x, y), (xt, yt)) = if dir.exists() {
        kandle::datasets::mnist::load_data_from(dir).unwrap()
    } else {
        kandle::datasets::mnist::load_data().unwrap()
    };
    let prep = |x: &Tensor, n| {
        (x.narrow(0, 0, n).unwrap().unsqueeze(3).unwrap().to_dtype(DType::F32).unwrap() / 255.0).unwrap()
    };
    let cat = |y: &Tensor, n| to_categorical(&y.narrow(0, 0, n).unwrap(), 10).unwrap();
    ((prep(&x, n), cat(&y, n)), (prep(&xt, 2000), cat(&yt, 2000)))
}

/// The same model, seed and data under both policies: 2 epochs on 12,000 MNIST images reach
/// 90% test accuracy under each (0.9125 and 0.9120 here), within 1 point of each other; the bf16 model's outputs are
/// bf16 values, its weights stay f32 (not all bf16 values after the updates).
#[test]
fn mixed_bfloat16_trains_on_real_mnist_as_float32_does() {
    println!("AMX: {}", kandle::kernels::amx_available());
    let ((x, y), (xt, yt)) = mnist(12000);
    let mut acc = Vec::new();
    for policy in [DTypePolicy::Float32, BF16] {
        let m = cnn(policy);
        m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        let h = m.fit(&x, &y, FitOptions::default().batch_size(64).epochs(2).verbose(0)).unwrap();
        let ev = m.evaluate(&xt, &yt, 256).unwrap();
        println!("{policy}: test accuracy {:.4}, history {:?}", ev.accuracy().unwrap(), h.history);
        acc.push(ev.accuracy().unwrap());
        let out = m.predict(xt.narrow(0, 0, 64).unwrap(), 64).unwrap();
        assert_eq!(all_bf16(&out), policy == BF16, "{policy}: outputs");
        let kernel = m.model().layers()[2].weights()[0].var.as_tensor().clone();
        assert!(!all_bf16(&kernel), "{policy}: the variables stay f32");
    }
    assert!(acc[0] >= 0.90 && acc[1] >= 0.90, "test accuracies (float32, mixed_bfloat16): {acc:?}");
    assert!((acc[0] - acc[1]).abs() <= 0.01, "test accuracies (float32, mixed_bfloat16): {acc:?}");
}

/// With the same weights, the bf16 model's predictions are the f32 model's within bf16's
/// precision (not equal: the products take rounded values).
#[test]
fn bf16_predictions_are_close_to_float32() {
    let ((x, _), _) = mnist(64);
    let (a, b) = (cnn(DTypePolicy::Float32), cnn(BF16));
    let (pa, pb) = (a.predict(&x, 64).unwrap(), b.predict(&x, 64).unwrap());
    let diff = (&pa - &pb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff > 0.0 && diff < 0.02, "largest difference of the softmax outputs: {diff}");
}

/// Each layer keeps its policy; a saved model keeps it (Keras' `dtype` of the layer config),
/// and a file without one holds float32 layers.
#[test]
fn the_policy_is_kept_by_layers_and_files() {
    let m = cnn(BF16).add(Dense::new(3).dtype_policy(DTypePolicy::Float32));
    m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let policies = |m: &Model| m.layers().iter().map(|l| l.dtype_policy()).collect::<Vec<_>>();
    let before = policies(&m.model());
    assert_eq!(before[0], BF16);
    assert_eq!(before[1], DTypePolicy::Float32, "the pooling took the global policy of its creation");
    assert_eq!(before[6], DTypePolicy::Float32);
    let dir = std::env::temp_dir().join(format!("kandle-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    m.save(dir.join("m.kandle")).unwrap();
    let loaded = kandle::models::load_model(dir.join("m.kandle")).unwrap();
    assert_eq!(policies(&loaded), before);
    let ((x, _), _) = mnist(8);
    let (pa, pb) = (m.predict(&x, 8).unwrap(), loaded.predict(&x, 8).unwrap());
    assert_eq!(pa.to_vec2::<f32>().unwrap(), pb.to_vec2::<f32>().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Keras' policy names parse; the others are clear errors naming the argument.
#[test]
fn policy_names() {
    assert_eq!("mixed_bfloat16".parse::<DTypePolicy>().unwrap(), BF16);
    assert_eq!("float32".parse::<DTypePolicy>().unwrap().compute_dtype(), DType::F32);
    assert_eq!(BF16.compute_dtype(), DType::BF16);
    assert_eq!(BF16.variable_dtype(), DType::F32);
    assert_eq!(BF16.to_string(), "mixed_bfloat16");
    for bad in ["mixed_float16", "bf16", ""] {
        let e = bad.parse::<DTypePolicy>().unwrap_err().to_string();
        assert!(e.contains("dtype_policy") && e.contains("mixed_bfloat16") && e.contains(&format!("{bad:?}")), "{e}");
    }
}

/// Under mixed_bfloat16 the layers' own backward pass and candle's autograd (through the
/// bf16 convolution's gradient op and the rounding op) train to the same weights: the same
/// roundings in the same places.
#[test]
fn bf16_own_backward_pass_trains_as_autograd_does() {
    let ((x, y), _) = mnist(256);
    let weights = |autograd: bool| {
        let m = cnn(BF16).model().use_autograd(autograd);
        // SGD: a weight moves by the learning rate times its gradient (RMSprop's division
        // would magnify the sums' rounding in gradients near zero)
        m.compile(kandle::optimizers::SGD::new(0.05), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        m.fit(&x, &y, FitOptions::default().batch_size(64).epochs(1).verbose(0).shuffle(false)).unwrap();
        m.layers()
            .iter()
            .flat_map(|l| l.weights())
            .map(|w| w.var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    let (own, auto) = (weights(false), weights(true));
    for (i, (a, b)) in own.iter().zip(&auto).enumerate() {
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-6 * scale, "weight {i}: own pass vs autograd differ by {diff} (scale {scale})");
    }
}

/// Trains the bf16 model on the path of its environment (one epoch of 256 images, SGD) and
/// writes its weights, one tensor a line: started by
/// `the_generic_path_trains_bf16_like_the_cpu_kernels`.
#[test]
#[ignore = "started as a child process by the_generic_path_trains_bf16_like_the_cpu_kernels"]
fn child_train_bf16() {
    let Ok(path) = std::env::var("KANDLE_MIXED_OUT") else { return };
    let ((x, y), _) = mnist(256);
    let m = cnn(BF16);
    m.compile(kandle::optimizers::SGD::new(0.05), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    m.fit(&x, &y, FitOptions::default().batch_size(64).epochs(1).verbose(0).shuffle(false)).unwrap();
    let lines: Vec<String> = m
        .model()
        .layers()
        .iter()
        .flat_map(|l| l.weights())
        .map(|w| {
            let v = w.var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" ")
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// What a GPU runs (candle's convolution on rounded tensors, the casts' gradients), run on the
/// CPU (`KANDLE_GENERIC_OPS`), trains the bf16 model as kandle's kernels do, within the other
/// order of the f32 sums (1e-7 here; before ReLU's gradient at exactly 0 was made
/// TensorFlow's on that path, the first convolution's bias moved 77% apart: MNIST's zero
/// pixels under a zero bias are exact zeros).
#[test]
fn the_generic_path_trains_bf16_like_the_cpu_kernels() {
    let dir = std::env::temp_dir().join(format!("kandle-mixed-generic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let run = |generic: bool| -> Vec<Vec<f32>> {
        let out = dir.join(format!("generic-{generic}.txt"));
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["child_train_bf16", "--exact", "--ignored", "--test-threads=1"]).env("KANDLE_MIXED_OUT", &out);
        if generic {
            cmd.env("KANDLE_GENERIC_OPS", "1");
        } else {
            cmd.env_remove("KANDLE_GENERIC_OPS");
        }
        assert!(cmd.status().unwrap().success());
        let text = std::fs::read_to_string(out).unwrap();
        text.lines().map(|l| l.split(' ').map(|v| v.parse().unwrap()).collect()).collect()
    };
    let (fast, generic) = (run(false), run(true));
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(fast.len(), 6);
    for (i, (a, b)) in fast.iter().zip(&generic).enumerate() {
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("weight {i}: generic vs kernels {diff:.2e} (scale {scale:.2e})");
        assert!(diff <= 1e-4 * scale, "weight {i}: the generic path differs by {diff} (scale {scale})");
    }
}
