//! Throughput of the tutorial CIFAR-10 CNN, on the same workload as
//! ../shared/bench/keras_reference.py: random CIFAR-shaped data, batch 256, RMSprop,
//! categorical cross-entropy.
//!
//! ```text
//! cargo run --release --example benchmark [-- --steps 40 --batch-size 256 --device cpu]
//! ```
//! `--device cuda` (a build with the `cuda` feature) trains and infers on the first GPU; the
//! augmentation lines stay on the CPU, where the generator runs.
//! Prints `key=value` lines (a contract: ../shared/bench/compare.sh reads them):
//! `train_images_per_sec=`, `infer_images_per_sec=`, `augment_shift_flip_images_per_sec=`,
//! `augment_full_images_per_sec=` (the augmentation settings of the reference),
//! `train_images_per_sec_bf16=` (the same model under the `mixed_bfloat16` policy; `bf16_amx=` says
//! whether its products ran on AMX tiles), `infer_images_per_sec_bf16=` (its inference, after
//! `infer_images_per_sec=`), `train_images_per_sec_activation_layers=` (the same model with separate `Activation` layers,
//! as Keras' classic example writes it), `train_images_per_sec_batchnorm=` (with a
//! `BatchNormalization` after each convolution), and
//! `resnet20_train_images_per_sec=`: the training step of examples/cifar10_resnet.rs's ResNet-20
//! at batch 128 on the same kind of data (Keras' side: `benches/keras_cifar10_resnet.py --bench`).
//! With `--batch-sweep 32,64,..`: `train_step_ms_batch_N=` and `train_images_per_sec_batch_N=`
//! for each size; with `--per-layer K`: `layer_NAME_forward_ms=` and `layer_NAME_backward_ms=`
//! for each layer of the tutorial's model at the batch size, the mean of K steps
//! (`Model::profile`; its table goes to stderr); `peak_rss_mib=` last.
//!
//! With `--applications` it times the ImageNet networks of `kandle::applications` instead
//! (224x224x3 random images, batch 32, random weights; Keras' side:
//! `benches/keras_applications.py`): `resnet50_infer_images_per_sec=`,
//! `resnet50_train_images_per_sec=`, `mobilenetv2_infer_images_per_sec=`,
//! `mobilenetv2_train_images_per_sec=`, `efficientnetb0_infer_images_per_sec=`, then
//! `peak_rss_mib=`; `--app-steps N` batches per figure (default 5), after one of warm-up.

#[path = "common/mod.rs"]
mod common;

// The tutorial's model, as examples/cifar10_cnn.rs writes it.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "cifar10_cnn.rs"]
mod cnn;

// The ResNet-20 of the example, built by the example's own code (which brings its own copy of
// the flag helpers).
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "cifar10_resnet.rs"]
mod resnet;

use kandle::prelude::*;
use kandle::preprocessing::image::{BatchGenerator, ImageDataGenerator};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    common::exit_on_error(run());
}

/// The tutorial's model with each activation as its own `Activation` layer, and optionally a
/// `BatchNormalization` after each convolution (before its activation).
fn tutorial_variant(separate: bool, batchnorm: bool, device: &Device) -> Model {
    let m = Sequential::new().seed(0).device(device.clone());
    let act = |m: &Sequential, a: Activation| if separate || batchnorm { m.add(a) } else { m.clone() };
    for (i, f) in [32, 64, 64].into_iter().enumerate() {
        for (j, pad) in [Padding::Same, Padding::Valid].into_iter().enumerate() {
            let inner = if separate || batchnorm { Activation::Linear } else { Activation::Relu };
            let conv = Conv2D::new(f, (3, 3)).padding(pad).activation(inner);
            m.add(if i == 0 && j == 0 { conv.input_shape((32, 32, 3)) } else { conv });
            if batchnorm {
                m.add(BatchNormalization::new());
            }
            act(&m, Activation::Relu);
        }
        m.add(MaxPooling2D::new((2, 2))).add(Dropout::new(0.25));
    }
    m.add(Flatten::new()).add(Dense::new(512).activation(if separate { Activation::Linear } else { Activation::Relu }));
    if separate {
        m.add(Activation::Relu);
    }
    m.add(Dropout::new(0.5)).add(Dense::new(10).activation(if separate {
        Activation::Linear
    } else {
        Activation::Softmax
    }));
    if separate {
        m.add(Activation::Softmax);
    }
    m.model()
}

fn run() -> Result<()> {
    let args = common::Args::parse(&[
        ("steps", "training steps to time (default 40)"),
        ("batch-size", "batch size (default 256)"),
        ("resnet-steps", "ResNet-20 training steps of 128 images to time (default 30; 0 skips)"),
        ("device", "cpu (default) or cuda (the first GPU; needs the `cuda` feature)"),
        ("batch-sweep", "also time a training step at these batch sizes, e.g. 32,64,128,256,512"),
        ("per-layer", "also time each layer's forward and backward pass over this many steps (Model::profile)"),
        ("applications", "switch: time ResNet50, MobileNetV2 and EfficientNetB0 at 224x224 instead"),
        ("app-steps", "with --applications: batches of 32 per figure (default 5)"),
    ]);
    let device = match args.get("device").unwrap_or("cpu") {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0).map_err(|e| {
            kandle::Error::invalid("device", format!("expected a CUDA GPU (and a build with the cuda feature): {e}"))
        })?,
        other => return Err(kandle::Error::invalid("device", format!("expected cpu or cuda, received {other:?}"))),
    };
    println!("device={}", if device.is_cpu() { "cpu" } else { "cuda" });
    if args.on("applications") {
        applications(args.num("app-steps", 5usize)?, &device)?;
        print_peak_rss();
        return Ok(());
    }
    let steps = args.num("steps", 40usize)?;
    let bs = args.num("batch-size", 256usize)?;
    let n = (bs * steps).max(10_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..n * 32 * 32 * 3).map(|_| rng.random()).collect();
    let x = Tensor::from_vec(x, (n, 32, 32, 3), &Device::Cpu)?;
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
    let y = to_categorical(&Tensor::from_vec(labels, n, &Device::Cpu)?, 10)?;

    let model = cnn::create_model(0).device(device.clone());
    model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    assert_eq!(model.count_params()?, 276_138);
    let opts = |n| FitOptions::default().batch_size(bs).epochs(1).verbose(0).steps_per_epoch(n);
    // Warm-up, as the reference does.
    model.fit(&x.narrow(0, 0, bs * 4)?, &y.narrow(0, 0, bs * 4)?, opts(4))?;
    let t = Instant::now();
    model.fit(&x.narrow(0, 0, bs * steps)?, &y.narrow(0, 0, bs * steps)?, opts(steps))?;
    println!("train_images_per_sec={:.1}", (bs * steps) as f64 / t.elapsed().as_secs_f64());

    // The same model under Keras' mixed_bfloat16 policy (bf16 products, f32 weights), as
    // `keras_reference.py --policy mixed_bfloat16` times Keras'.
    kandle::mixed_precision::set_global_policy(kandle::mixed_precision::DTypePolicy::MixedBfloat16);
    let bf16_model = cnn::create_model(0).device(device.clone());
    let m = &bf16_model;
    kandle::mixed_precision::set_global_policy(kandle::mixed_precision::DTypePolicy::Float32);
    m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    m.fit(&x.narrow(0, 0, bs * 4)?, &y.narrow(0, 0, bs * 4)?, opts(4))?;
    let t = Instant::now();
    m.fit(&x.narrow(0, 0, bs * steps)?, &y.narrow(0, 0, bs * steps)?, opts(steps))?;
    println!("train_images_per_sec_bf16={:.1}", (bs * steps) as f64 / t.elapsed().as_secs_f64());
    println!("bf16_amx={}", kandle::kernels::amx_available());

    // The same model spelled as Keras' classic example writes it (separate Activation layers),
    // and with a BatchNormalization after each convolution.
    for (key, separate, batchnorm) in [("activation_layers", true, false), ("batchnorm", false, true)] {
        let m = tutorial_variant(separate, batchnorm, &device);
        m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
        m.fit(&x.narrow(0, 0, bs * 4)?, &y.narrow(0, 0, bs * 4)?, opts(4))?;
        let t = Instant::now();
        m.fit(&x.narrow(0, 0, bs * steps)?, &y.narrow(0, 0, bs * steps)?, opts(steps))?;
        println!("train_images_per_sec_{key}={:.1}", (bs * steps) as f64 / t.elapsed().as_secs_f64());
    }

    // The cost of a step as the batch grows: each size warmed up, then at least 2,048 images.
    if let Some(list) = args.get("batch-sweep") {
        for b in list.split(',') {
            let b: usize = b.trim().parse().map_err(|_| {
                kandle::Error::invalid("batch-sweep", format!("expected batch sizes like 32,64,128, received {b:?}"))
            })?;
            if b == 0 || b > n {
                return Err(kandle::Error::invalid("batch-sweep", format!("expected sizes in 1..={n}, received {b}")));
            }
            let k = 2048usize.div_ceil(b).max(2);
            let o = |s| FitOptions::default().batch_size(b).epochs(1).verbose(0).steps_per_epoch(s);
            model.fit(&x.narrow(0, 0, b * 2)?, &y.narrow(0, 0, b * 2)?, o(2))?;
            let m = (b * k).min(n);
            let t = Instant::now();
            model.fit(&x.narrow(0, 0, m)?, &y.narrow(0, 0, m)?, o(k))?;
            let secs = t.elapsed().as_secs_f64();
            println!("train_step_ms_batch_{b}={:.2}", 1000.0 * secs / k as f64);
            println!("train_images_per_sec_batch_{b}={:.1}", (b * k) as f64 / secs);
        }
    }

    // Each layer's share of a training step (forward, backward; the update not included).
    if let Some(k) = args.get("per-layer") {
        let k: usize = k
            .parse()
            .map_err(|_| kandle::Error::invalid("per-layer", format!("expected a number of steps, received {k:?}")))?;
        let profile = model.profile(&x.narrow(0, 0, bs)?, &y.narrow(0, 0, bs)?, k)?;
        eprintln!("{profile}");
        for l in profile.layers.iter().filter(|l| !l.fused) {
            println!("layer_{}_forward_ms={:.2}", l.name, l.forward.as_secs_f64() * 1e3);
            println!("layer_{}_backward_ms={:.2}", l.name, l.backward.as_secs_f64() * 1e3);
        }
    }

    model.evaluate(&x.narrow(0, 0, bs)?, &y.narrow(0, 0, bs)?, bs)?;
    let t = Instant::now();
    model.evaluate(&x.narrow(0, 0, 10_000)?, &y.narrow(0, 0, 10_000)?, bs)?;
    println!("infer_images_per_sec={:.1}", 10_000.0 / t.elapsed().as_secs_f64());
    bf16_model.evaluate(&x.narrow(0, 0, bs)?, &y.narrow(0, 0, bs)?, bs)?;
    let t = Instant::now();
    bf16_model.evaluate(&x.narrow(0, 0, 10_000)?, &y.narrow(0, 0, 10_000)?, bs)?;
    println!("infer_images_per_sec_bf16={:.1}", 10_000.0 / t.elapsed().as_secs_f64());

    // Augmentation alone, as the reference: 0..255 images, batches of 256, 20 batches timed
    // after one.
    let x8 = (x.narrow(0, 0, 10_000)? * 255.0)?;
    let y8 = y.narrow(0, 0, 10_000)?;
    let shift_flip = ImageDataGenerator::new().width_shift_range(0.1).height_shift_range(0.1).horizontal_flip(true);
    let full = ImageDataGenerator::new()
        .rotation_range(10.0)
        .width_shift_range(0.1)
        .height_shift_range(0.1)
        .shear_range(0.1)
        .zoom_range(0.1)
        .horizontal_flip(true)
        .vertical_flip(true);
    for (name, gen) in [("shift_flip", shift_flip), ("full", full)] {
        let flow = gen.flow(&x8, &y8, bs).seed(0);
        flow.batch(0, 0)?;
        let k = 20;
        let t = Instant::now();
        for i in 1..=k {
            flow.batch(0, i)?;
        }
        println!("augment_{name}_images_per_sec={:.1}", (k * bs) as f64 / t.elapsed().as_secs_f64());
    }

    let resnet_steps = args.num("resnet-steps", 30usize)?;
    if resnet_steps > 0 {
        let rb = 128;
        let model = resnet::resnet_v1(20, 0)?.device(device.clone());
        model.compile(Adam::new(1e-3), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
        let opts = |n| FitOptions::default().batch_size(rb).epochs(1).verbose(0).steps_per_epoch(n);
        model.fit(&x.narrow(0, 0, rb * 4)?, &y.narrow(0, 0, rb * 4)?, opts(4))?;
        let n = rb * resnet_steps;
        // Steps past the data wrap around it (fit's steps_per_epoch).
        let m = n.min(x.dims()[0]);
        let t = Instant::now();
        model.fit(&x.narrow(0, 0, m)?, &y.narrow(0, 0, m)?, opts(resnet_steps))?;
        println!("resnet20_train_images_per_sec={:.1}", n as f64 / t.elapsed().as_secs_f64());
    }
    print_peak_rss();
    Ok(())
}

/// Inference and training throughput of the `keras.applications` networks at 224x224, batch
/// 32, random weights and images, 1000 classes, Adam: `steps` batches each after one warm-up.
fn applications(steps: usize, device: &Device) -> Result<()> {
    use kandle::applications::{EfficientNetB0, MobileNetV2, ResNet50, Weights};
    let bs = 32;
    let n = bs * steps;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..bs * 224 * 224 * 3).map(|_| rng.random::<f32>() * 255.0).collect();
    let x = Tensor::from_vec(x, (bs, 224, 224, 3), &Device::Cpu)?;
    let x = Tensor::cat(&vec![x; steps], 0)?;
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..1000)).collect();
    let y = to_categorical(&Tensor::from_vec(labels, n, &Device::Cpu)?, 1000)?;
    type Build = fn() -> Result<Model>;
    let networks: [(&str, Build, bool); 3] = [
        ("resnet50", || ResNet50::new().weights(Weights::None).build(), true),
        ("mobilenetv2", || MobileNetV2::new().weights(Weights::None).build(), true),
        ("efficientnetb0", || EfficientNetB0::new().weights(Weights::None).build(), false),
    ];
    for (name, build, train) in networks {
        let model = build()?.seed(0).device(device.clone());
        model.compile(Adam::new(1e-3), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
        model.predict(&x.narrow(0, 0, bs)?, bs)?;
        let t = Instant::now();
        model.predict(&x, bs)?;
        println!("{name}_infer_images_per_sec={:.2}", n as f64 / t.elapsed().as_secs_f64());
        if train {
            let opts = |k| FitOptions::default().batch_size(bs).epochs(1).verbose(0).steps_per_epoch(k);
            model.fit(&x.narrow(0, 0, bs)?, &y.narrow(0, 0, bs)?, opts(1))?;
            let t = Instant::now();
            model.fit(&x, &y, opts(steps))?;
            println!("{name}_train_images_per_sec={:.2}", n as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

/// The process's peak resident memory (Linux), for the memory figures beside Keras'.
fn print_peak_rss() {
    if let Some(kb) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").trim().to_string()))
        })
        .and_then(|v| v.parse::<f64>().ok())
    {
        println!("peak_rss_mib={:.0}", kb / 1024.0);
    }
}
