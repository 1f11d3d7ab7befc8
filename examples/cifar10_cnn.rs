//! The Keras CIFAR-10 tutorial CNN (276,138 parameters): three blocks of two 3x3 convolutions
//! ('same' then 'valid'), max pooling and dropout, then Dense 512, dropout and softmax, trained
//! with RMSprop at batch 256.
//!
//! ```text
//! cargo run --release --example cifar10_cnn -- --epochs 10 --data-dir ../shared/data/cifar10
//! ```
//! Flags: `--epochs N` (default 10; 0 = summary and evaluation only), `--batch-size B` (256),
//! `--data-dir DIR` (default: the usual places, see `kandle::datasets`), `--limit N` (first N
//! training samples), `--seed S` (0), `--verbose V` (1), `--dtype-policy mixed_bfloat16` (Keras' mixed precision), and for long runs `--save PATH`,
//! `--load PATH`, `--checkpoint-dir DIR`, `--plot PATH` (PNG or SVG), `--patience N`, `--eval-train 1`
//! (prints `train_eval_loss=<f> train_eval_accuracy=<f>` first). Ends with one line
//! `test_loss=<f> test_accuracy=<f>`.

#[path = "common/mod.rs"]
mod common;

use kandle::prelude::*;

/// The tutorial's model, layer by layer, as its `createModel`.
pub fn create_model(seed: u64) -> Sequential {
    let model = Sequential::new().seed(seed);
    model.add(Conv2D::new(32, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((32, 32, 3)));
    model.add(Conv2D::new(32, (3, 3)).activation(Activation::Relu));
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Dropout::new(0.25));

    model.add(Conv2D::new(64, (3, 3)).padding(Padding::Same).activation(Activation::Relu));
    model.add(Conv2D::new(64, (3, 3)).activation(Activation::Relu));
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Dropout::new(0.25));

    model.add(Conv2D::new(64, (3, 3)).padding(Padding::Same).activation(Activation::Relu));
    model.add(Conv2D::new(64, (3, 3)).activation(Activation::Relu));
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Dropout::new(0.25));

    model.add(Flatten::new());
    model.add(Dense::new(512).activation(Activation::Relu));
    model.add(Dropout::new(0.5));
    model.add(Dense::new(10).activation(Activation::Softmax));
    model
}

fn main() {
    common::exit_on_error(run());
}

fn run() -> Result<()> {
    let mut flags = vec![
        ("epochs", "epochs to train (default 10; 0 = evaluate only)"),
        ("batch-size", "batch size (default 256)"),
        ("data-dir", "CIFAR-10 folder or .tar.gz (binary version or class-folder images)"),
        ("limit", "train on the first N samples only"),
        ("seed", "seed of initialisation, dropout and shuffling (default 0)"),
        ("verbose", "0 silent, 1 progress bar, 2 one line per epoch (default 1)"),
        ("dtype-policy", "float32 (default) or mixed_bfloat16 (bf16 products, f32 weights)"),
    ];
    flags.extend(common::RUN_FLAGS);
    let args = common::Args::parse(&flags);
    let epochs = args.num("epochs", 10usize)?;
    let batch_size = args.num("batch-size", 256usize)?;
    let ((x_train, y_train), (x_test, y_test)) = common::cifar10_data(&args)?;

    let seed = args.num("seed", 0u64)?;
    let strategy = common::strategy(&args)?;
    if let Some(p) = args.get("dtype-policy") {
        kandle::mixed_precision::set_global_policy(p.parse()?);
    }
    let mut model = create_model(seed);
    common::place(&model, strategy.as_ref());
    model.summary()?;
    model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    common::maybe_load(&args, &model)?;
    let mut history = None;
    if epochs > 0 {
        let mut opts = FitOptions::default()
            .batch_size(batch_size)
            .epochs(epochs)
            .verbose(args.num("verbose", 1u8)?)
            .seed(seed)
            .validation_data(&x_test, &y_test);
        if let Some(s) = &strategy {
            opts = opts.distribute(s);
        }
        for cb in common::run_callbacks(&args)? {
            opts = opts.callback(cb);
        }
        history = Some(model.fit(&x_train, &y_train, opts)?);
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
