//! ResNet-20 (v1, He et al. 2016) on CIFAR-10, as Keras' own CIFAR-10 ResNet example builds and
//! trains it, written with kandle's functional API: 3 stages of 3 basic blocks with 16, 32 and
//! 64 filters, 1x1 projection shortcuts where a stage halves the image, he_normal kernels with
//! l2(1e-4) regularisation, BatchNormalization, `AveragePooling2D(8)` before the classifier;
//! inputs scaled to 0..1 minus the training set's per-pixel mean, Adam 1e-3, shifts of 10% and
//! horizontal flips. 274,442 parameters. The batch is 128 (Keras' example uses 32; 128 suits a
//! CPU). The matching Keras script is `benches/keras_cifar10_resnet.py`.
//!
//! ```text
//! cargo run --release --example cifar10_resnet -- --epochs 10 --data-dir ../shared/data/cifar10
//! ```
//! Flags as cifar10_augmented (including `--workers`, `--save`, `--load`, `--checkpoint-dir`,
//! `--plot`, `--patience`). Ends with one line `test_loss=<f> test_accuracy=<f>`.

#[path = "common/mod.rs"]
mod common;

use kandle::initializers::Initializer;
use kandle::models::GeneratorOptions;
use kandle::prelude::*;
use kandle::preprocessing::image::ImageDataGenerator;

/// Conv2D -> BatchNormalization -> activation, Keras' `resnet_layer` (conv first).
fn resnet_layer(
    x: &KerasTensor,
    filters: usize,
    kernel: usize,
    strides: usize,
    activation: Option<Activation>,
    batch_normalization: bool,
) -> Result<KerasTensor> {
    let conv = Conv2D::new(filters, kernel)
        .strides(strides)
        .padding(Padding::Same)
        .kernel_initializer(Initializer::HeNormal)
        .kernel_regularizer(Regularizer::l2(1e-4));
    let mut x = conv.call(x)?;
    if batch_normalization {
        x = BatchNormalization::new().call(&x)?;
    }
    if let Some(a) = activation {
        x = a.call(&x)?;
    }
    Ok(x)
}

/// ResNet v1 of `depth` = 6n + 2 layers (20: n = 3), as Keras' `resnet_v1`.
pub fn resnet_v1(depth: usize, seed: u64) -> Result<Model> {
    let blocks = (depth - 2) / 6;
    let inputs = Input::new((32, 32, 3));
    let mut x = resnet_layer(&inputs, 16, 3, 1, Some(Activation::Relu), true)?;
    let mut filters = 16;
    for stage in 0..3 {
        for block in 0..blocks {
            let strides = if stage > 0 && block == 0 { 2 } else { 1 };
            let y = resnet_layer(&x, filters, 3, strides, Some(Activation::Relu), true)?;
            let y = resnet_layer(&y, filters, 3, 1, None, true)?;
            if strides == 2 {
                // The shortcut: a 1x1 projection to the new size.
                x = resnet_layer(&x, filters, 1, strides, None, false)?;
            }
            x = Add::new().call(&[x, y])?;
            x = Activation::Relu.call(&x)?;
        }
        filters *= 2;
    }
    let x = AveragePooling2D::new(8).call(&x)?;
    let x = Flatten::new().call(&x)?;
    let outputs = Dense::new(10).activation(Activation::Softmax).kernel_initializer(Initializer::HeNormal).call(&x)?;
    Ok(Model::new(&[inputs], &[outputs])?.name("resnet20").seed(seed))
}

fn main() {
    common::exit_on_error(run());
}

fn run() -> Result<()> {
    let mut flags = vec![
        ("epochs", "epochs to train (default 10; 0 = evaluate only)"),
        ("batch-size", "batch size (default 128)"),
        ("data-dir", "CIFAR-10 folder or .tar.gz (binary version or class-folder images)"),
        ("limit", "train on the first N samples only"),
        ("seed", "seed of initialisation, shuffling and augmentation (default 0)"),
        ("verbose", "0 silent, 1 progress bar, 2 one line per epoch (default 1)"),
        ("workers", "threads preparing augmented batches (default 1)"),
    ];
    flags.extend(common::RUN_FLAGS);
    let args = common::Args::parse(&flags);
    let epochs = args.num("epochs", 10usize)?;
    let batch_size = args.num("batch-size", 128usize)?;
    let seed = args.num("seed", 0u64)?;
    let ((x_train, y_train), (x_test, y_test)) = common::cifar10_data(&args)?;
    // Inputs in 0..1 minus the training set's per-pixel mean, as Keras' example does.
    let mean = x_train.mean_keepdim(0)?;
    let (x_train, x_test) = (x_train.broadcast_sub(&mean)?, x_test.broadcast_sub(&mean)?);

    let strategy = common::strategy(&args)?;
    let mut model = resnet_v1(20, seed)?;
    common::place(&model, strategy.as_ref());
    model.summary()?;
    model.compile(Adam::new(1e-3), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    common::maybe_load(&args, &model)?;
    let mut history = None;
    if epochs > 0 {
        println!("Using real-time data augmentation.");
        let datagen = ImageDataGenerator::new().width_shift_range(0.1).height_shift_range(0.1).horizontal_flip(true);
        let mut opts = GeneratorOptions::default()
            .epochs(epochs)
            .verbose(args.num("verbose", 1u8)?)
            .workers(args.num("workers", 1usize)?)
            .validation_data(&x_test, &y_test)
            .validation_batch_size(batch_size)
            .seed(seed);
        if let Some(s) = &strategy {
            opts = opts.distribute(s);
        }
        for cb in common::run_callbacks(&args)? {
            opts = opts.callback(cb);
        }
        history = Some(model.fit_generator(datagen.flow(&x_train, &y_train, batch_size).seed(seed), opts)?);
    }
    common::after_training(&args, &model, history.as_ref())?;
    common::write_report(
        &args,
        &model,
        history.as_ref(),
        &x_test,
        &y_test,
        &kandle::datasets::cifar10::CLASS_NAMES,
        batch_size,
    )?;
    common::eval_train(&args, &mut model, &x_train, &y_train, batch_size)?;
    let score = model.evaluate(&x_test, &y_test, batch_size)?;
    println!("test_loss={:.4} test_accuracy={:.4}", score.loss, score.accuracy().unwrap_or(f64::NAN));
    Ok(())
}
