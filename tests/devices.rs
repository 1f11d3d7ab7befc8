//! The path other devices than the CPU run. On a GPU, kandle's CPU kernels give way to
//! candle's operations (convolution, dense and batch normalisation differentiated by candle's
//! autograd; pooling as gathers and scatters; the dropout mask drawn on the CPU and multiplied
//! in). `KANDLE_GENERIC_OPS` makes the CPU run that same path, so it is checked here against
//! the CPU kernels; with the `cuda` feature and a GPU, the GPU's steps are checked against the
//! CPU's (`scripts/gpu_check.sh` runs this file on a GPU machine).

use candle_core::{DType, Device, Tensor};
use kandle::prelude::*;
use rand::{Rng, SeedableRng};
use std::process::Command;

/// The tutorial CNN narrowed (16x16x3, 4/8 filters, Dense 16), with dropout, an odd pooling
/// (5x5 -> 2x2), a `BatchNormalization` and separate `Activation` layers.
fn tutorial_model(dtype: DType, device: &Device) -> Sequential {
    Sequential::new()
        .seed(11)
        .dtype(dtype)
        .device(device.clone())
        .add(Conv2D::new(4, 3).padding(Padding::Same).activation(Activation::Relu).input_shape((16, 16, 3)))
        .add(Conv2D::new(4, 3).activation(Activation::Relu))
        .add(MaxPooling2D::new(2))
        .add(Dropout::new(0.25))
        // No bias before the normalisation, as ResNets write it: its gradient is zero in exact
        // arithmetic, and RMSprop would turn rounding noise into steps of the learning rate.
        .add(Conv2D::new(8, 3).padding(Padding::Same).use_bias(false))
        .add(BatchNormalization::new())
        .add(kandle::layers::ActivationLayer::new(Activation::Relu))
        .add(Conv2D::new(8, 3).activation(Activation::Relu))
        .add(MaxPooling2D::new(2))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(16).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(10))
        .add(kandle::layers::ActivationLayer::new(Activation::Softmax))
}

fn data(n: usize) -> (Tensor, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let x: Vec<f32> = (0..n * 16 * 16 * 3).map(|_| rng.random()).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
    let x = Tensor::from_vec(x, (n, 16, 16, 3), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(y, n, &Device::Cpu).unwrap();
    (x, kandle::utils::to_categorical(&y, Some(10)).unwrap())
}

/// Two epochs of three steps (batch 8) of RMSprop; the weights, then the predictions on the
/// training images.
fn train(dtype: DType, device: &Device) -> (Vec<Vec<f64>>, Vec<f64>) {
    let (x, y) = data(24);
    let m = tutorial_model(dtype, device);
    m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    m.fit(&x, &y, FitOptions::default().batch_size(8).epochs(2).verbose(0)).unwrap();
    (weights(&m), flat(&m.predict(&x, 8).unwrap()))
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// Every weight of `m`, flattened, in f64.
fn weights(m: &Sequential) -> Vec<Vec<f64>> {
    m.get_weights().unwrap().iter().map(flat).collect()
}

/// The largest difference between two weight lists, relative to each tensor's largest value.
fn max_rel_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len(), "weight lists differ in length");
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            assert_eq!(a.len(), b.len());
            let scale = a.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
            a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs() / scale))
        })
        .fold(0.0, f64::max)
}

fn encode(w: &[Vec<f64>], p: &[f64]) -> String {
    let mut s = String::new();
    for v in w.iter().chain(std::iter::once(&p.to_vec())) {
        s.push_str(&v.iter().map(|x| format!("{:e}", x)).collect::<Vec<_>>().join(","));
        s.push('\n');
    }
    s
}

fn decode(s: &str) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut rows: Vec<Vec<f64>> =
        s.lines().map(|l| l.split(',').filter(|v| !v.is_empty()).map(|v| v.parse().unwrap()).collect()).collect();
    let p = rows.pop().unwrap();
    (rows, p)
}

/// Runs the ignored test `child` in a process of its own, on the generic path (what a GPU
/// runs) or on the CPU kernels, and reads back what it wrote.
fn run_child(child: &str, generic: bool) -> (Vec<Vec<f64>>, Vec<f64>) {
    let dir = std::env::temp_dir().join(format!("kandle-devices-{child}-{generic}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.txt");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([child, "--exact", "--ignored", "--test-threads=1"]).env("KANDLE_DEVICES_OUT", &out);
    if generic {
        cmd.env("KANDLE_GENERIC_OPS", "1");
    } else {
        cmd.env_remove("KANDLE_GENERIC_OPS");
    }
    assert!(cmd.status().unwrap().success());
    let result = decode(&std::fs::read_to_string(&out).unwrap());
    std::fs::remove_dir_all(&dir).ok();
    result
}

/// Trains in f64 on the path of its environment and writes the result: started by
/// `the_generic_path_trains_like_the_cpu_kernels`.
#[test]
#[ignore = "started as a child process by the_generic_path_trains_like_the_cpu_kernels"]
fn child_train_f64() {
    let Ok(path) = std::env::var("KANDLE_DEVICES_OUT") else { return };
    let (w, p) = train(DType::F64, &Device::Cpu);
    std::fs::write(path, encode(&w, &p)).unwrap();
}

/// What a GPU runs, run on the CPU (`KANDLE_GENERIC_OPS`): the same two epochs of the
/// tutorial-shaped model in f64, dropout, batch normalisation and odd pooling included, give
/// the CPU kernels' weights and predictions within 1e-9.
#[test]
fn the_generic_path_trains_like_the_cpu_kernels() {
    let (w_fast, p_fast) = run_child("child_train_f64", false);
    let (w_gen, p_gen) = run_child("child_train_f64", true);
    let dw = max_rel_diff(&w_fast, &w_gen);
    let dp = max_rel_diff(&[p_fast], &[p_gen]);
    println!("generic vs CPU kernels, f64: weights {dw:.2e}, predictions {dp:.2e}");
    assert!(dw < 1e-9 && dp < 1e-9, "the generic path differs: weights {dw:e}, predictions {dp:e}");
}

/// On a GPU (`cuda` feature, a device present): the same two epochs in f32 on the GPU and on
/// the CPU agree within 1e-3 of each tensor's scale (f32 rounding, amplified by RMSprop's
/// first steps, which move each weight by about the learning rate whatever the gradient's
/// size), and a model saved on the GPU loads on the CPU with the same predictions.
#[cfg(feature = "cuda")]
#[test]
fn the_gpu_trains_like_the_cpu() {
    let Ok(gpu) = Device::new_cuda(0) else {
        println!("no CUDA device: skipped");
        return;
    };
    let (w_cpu, p_cpu) = train(DType::F32, &Device::Cpu);
    let (w_gpu, p_gpu) = train(DType::F32, &gpu);
    let dw = max_rel_diff(&w_cpu, &w_gpu);
    let dp = max_rel_diff(&[p_cpu], &[p_gpu]);
    println!("gpu_vs_cpu_weights_max_rel_diff={dw:.3e}");
    println!("gpu_vs_cpu_predictions_max_rel_diff={dp:.3e}");
    assert!(dw < 1e-3 && dp < 1e-3, "GPU and CPU differ: weights {dw:e}, predictions {dp:e}");

    let (x, y) = data(24);
    let m = tutorial_model(DType::F32, &gpu);
    m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    m.fit(&x, &y, FitOptions::default().batch_size(8).epochs(1).verbose(0)).unwrap();
    let path = std::env::temp_dir().join(format!("kandle-gpu-{}.kandle", std::process::id()));
    m.save(&path).unwrap();
    let on_cpu = kandle::models::load_model(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let a = m.predict(&x, 8).unwrap().to_device(&Device::Cpu).unwrap();
    let b = on_cpu.predict(&x, 8).unwrap();
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    println!("gpu_saved_cpu_loaded_max_abs_diff={d:.3e}");
    assert!(d < 1e-4, "a model saved on the GPU predicts differently on the CPU: {d}");
}

/// On a GPU: `fit_generator` (augmented batches prepared and copied to the device by two worker
/// threads while the previous step runs) trains as on the CPU, within the same bound.
#[cfg(feature = "cuda")]
#[test]
fn fit_generator_on_the_gpu_trains_like_the_cpu() {
    use kandle::models::GeneratorOptions;
    use kandle::preprocessing::image::ImageDataGenerator;
    let Ok(gpu) = Device::new_cuda(0) else {
        println!("no CUDA device: skipped");
        return;
    };
    let (x, y) = data(24);
    let run = |device: &Device| {
        let m = tutorial_model(DType::F32, device);
        m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        let gen = ImageDataGenerator::new().width_shift_range(0.1).height_shift_range(0.1).horizontal_flip(true);
        m.fit_generator(gen.flow(&x, &y, 8).seed(4), GeneratorOptions::default().epochs(2).workers(2).verbose(0))
            .unwrap();
        weights(&m)
    };
    let d = max_rel_diff(&run(&Device::Cpu), &run(&gpu));
    println!("gpu_vs_cpu_fit_generator_weights_max_rel_diff={d:.3e}");
    assert!(d < 1e-3, "fit_generator on the GPU differs from the CPU: {d:e}");
}

/// On a GPU: `MirroredStrategy` with two replicas on it (two streams of device 0, reduced
/// between threads; NCCL needs distinct GPUs) trains as one replica on the GPU, within the
/// bound above; with two or more GPUs and the `nccl` feature, two GPUs reduced by NCCL too.
#[cfg(feature = "cuda")]
#[test]
fn mirrored_replicas_on_the_gpu_train_as_one() {
    use kandle::distribute::MirroredStrategy;
    let Ok(gpu) = Device::new_cuda(0) else {
        println!("no CUDA device: skipped");
        return;
    };
    let (x, y) = data(24);
    let run = |strategy: Option<&MirroredStrategy>| {
        let m = tutorial_model(DType::F32, &gpu);
        m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        let mut opts = FitOptions::default().batch_size(8).epochs(2).verbose(0).seed(3);
        if let Some(s) = strategy {
            opts = opts.distribute(s);
        }
        m.fit(&x, &y, opts).unwrap();
        weights(&m)
    };
    let one = run(None);
    let same_gpu = MirroredStrategy::new(vec![gpu.clone(), Device::new_cuda(0).unwrap()]).unwrap();
    let d = max_rel_diff(&one, &run(Some(&same_gpu)));
    println!("gpu_two_replicas_vs_one_weights_max_rel_diff={d:.3e}");
    assert!(d < 1e-3, "two replicas on the GPU differ from one: {d:e}");
    #[cfg(feature = "nccl")]
    if let Ok(second) = Device::new_cuda(1) {
        let nccl = MirroredStrategy::new(vec![gpu.clone(), second]).unwrap();
        let d = max_rel_diff(&one, &run(Some(&nccl)));
        println!("gpu_nccl_two_gpus_vs_one_weights_max_rel_diff={d:.3e}");
        assert!(d < 1e-3, "two GPUs over NCCL differ from one: {d:e}");
    }
}

/// Convolutions of unequal strides and dilations, forward and gradients in f64, on the path of
/// the environment: started by `the_generic_path_takes_unequal_strides_and_dilations`.
#[test]
#[ignore = "started as a child process by the_generic_path_takes_unequal_strides_and_dilations"]
fn child_unequal_conv() {
    let Ok(path) = std::env::var("KANDLE_DEVICES_OUT") else { return };
    let m = Sequential::new()
        .seed(4)
        .dtype(DType::F64)
        .add(Conv2D::new(3, (3, 2)).strides((2, 1)).padding(Padding::Same).input_shape((9, 8, 2)))
        .add(Conv2D::new(2, (2, 3)).dilation_rate((2, 1)))
        .add(Flatten::new())
        .add(Dense::new(2));
    m.compile("sgd", Loss::MeanSquaredError, ()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let x: Vec<f64> = (0..3 * 9 * 8 * 2).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(x, (3, 9, 8, 2), &Device::Cpu).unwrap();
    let y = Tensor::zeros((3, 2), DType::F64, &Device::Cpu).unwrap();
    let grads: Vec<Vec<f64>> = m.compute_gradients(&x, &y).unwrap().iter().map(|(_, g)| flat(g)).collect();
    std::fs::write(path, encode(&grads, &flat(&m.predict(&x, 3).unwrap()))).unwrap();
}

/// `Conv2D` with `strides((2, 1))` and `dilation_rate((2, 1))` on the generic path (what CUDA
/// runs), where candle's conv2d takes one stride and one dilation: the same outputs and
/// gradients as the CPU kernels.
#[test]
fn the_generic_path_takes_unequal_strides_and_dilations() {
    let (g_fast, p_fast) = run_child("child_unequal_conv", false);
    let (g_gen, p_gen) = run_child("child_unequal_conv", true);
    let (dg, dp) = (max_rel_diff(&g_fast, &g_gen), max_rel_diff(&[p_fast], &[p_gen]));
    assert!(dg < 1e-9 && dp < 1e-9, "generic path: gradients {dg:e}, predictions {dp:e}");
}
