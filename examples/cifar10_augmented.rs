//! The Keras CIFAR-10 tutorial's second model: the same CNN trained on batches augmented in
//! real time by an `ImageDataGenerator` (width and height shifts of 10%, horizontal flips),
//! fed to `fit_generator` by worker threads.
//!
//! ```text
//! cargo run --release --example cifar10_augmented -- --epochs 10 --data-dir ../shared/data/cifar10
//! ```
//! Flags as cifar10_cnn (including `--save`, `--load`, `--checkpoint-dir`, `--plot`,
//! `--patience`), plus `--workers N` (default 1). Ends with one line
//! `test_loss=<f> test_accuracy=<f>`.

#[path = "common/mod.rs"]
mod common;

// The tutorial's model, as examples/cifar10_cnn.rs writes it.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "cifar10_cnn.rs"]
mod cnn;

use kandle::models::GeneratorOptions;
use kandle::prelude::*;
use kandle::preprocessing::image::ImageDataGenerator;

fn main() {
    common::exit_on_error(run());
}

fn run() -> Result<()> {
    let mut flags = vec![
        ("epochs", "epochs to train (default 10; 0 = evaluate only)"),
        ("batch-size", "batch size (default 256)"),
        ("data-dir", "CIFAR-10 folder or .tar.gz (binary version or class-folder images)"),
        ("limit", "train on the first N samples only"),
        ("seed", "seed of initialisation, dropout, shuffling and augmentation (default 0)"),
        ("verbose", "0 silent, 1 progress bar, 2 one line per epoch (default 1)"),
        ("workers", "threads preparing augmented batches (default 1)"),
    ];
    flags.extend(common::RUN_FLAGS);
    let args = common::Args::parse(&flags);
    let epochs = args.num("epochs", 10usize)?;
    let batch_size = args.num("batch-size", 256usize)?;
    let seed = args.num("seed", 0u64)?;
    let ((x_train, y_train), (x_test, y_test)) = common::cifar10_data(&args)?;

    let strategy = common::strategy(&args)?;
    let mut model = cnn::create_model(seed);
    common::place(&model, strategy.as_ref());
    model.summary()?;
    model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
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
