//! Keras' classic MNIST CNN: two convolutions, max pooling, dropout, a dense layer, softmax.
//!
//! ```text
//! cargo run --release --example mnist_cnn -- --epochs 1 --data-dir ../shared/data/mnist
//! ```
//! Flags: `--epochs N` (default 12; 0 = summary and evaluation only), `--batch-size B`
//! (128), `--data-dir DIR` (default: the usual places, see `kandle::datasets`), `--limit N`
//! (first N training samples), `--seed S` (0), `--verbose V` (1), `--report DIR` (pictures and
//! tables after training), `--tensorboard DIR` (TensorBoard logs). Ends with one line
//! `test_loss=<f> test_accuracy=<f>`.

#[path = "common/mod.rs"]
mod common;

use kandle::datasets::mnist;
use kandle::prelude::*;

fn main() {
    common::exit_on_error(run());
}

fn run() -> Result<()> {
    let args = common::Args::parse(&[
        ("epochs", "epochs to train (default 12; 0 = evaluate only)"),
        ("batch-size", "batch size (default 128)"),
        ("data-dir", "folder with the four MNIST IDX files (gzipped or not)"),
        ("limit", "train on the first N samples only"),
        ("seed", "seed of initialisation, dropout and shuffling (default 0)"),
        ("verbose", "0 silent, 1 progress bar, 2 one line per epoch (default 1)"),
        ("report", "write curves.png, history.csv, confusion.png, misclassified.png and per_class.csv to this folder"),
        ("tensorboard", "write TensorBoard logs (train/, validation/) to this folder: tensorboard --logdir DIR"),
    ]);
    let epochs = args.num("epochs", 12usize)?;
    let batch_size = args.num("batch-size", 128usize)?;
    let ((x_train, y_train), (x_test, y_test)) = match common::data_dir(&args, "mnist") {
        Some(d) => mnist::load_data_from(d)?,
        None => mnist::load_data()?,
    };
    let limit = args.num("limit", 0usize)?;
    let (x_train, y_train) = (common::take(&x_train, limit)?, common::take(&y_train, limit)?);
    // (N, 28, 28) -> (N, 28, 28, 1), scaled to [0, 1]; labels one-hot.
    let x_train = common::to_unit(&x_train.unsqueeze(3)?)?;
    let x_test = common::to_unit(&x_test.unsqueeze(3)?)?;
    let y_train = to_categorical(&y_train, 10)?;
    let y_test = to_categorical(&y_test, 10)?;
    println!(
        "x_train shape: {:?}, {} train samples, {} test samples",
        x_train.dims(),
        x_train.dims()[0],
        x_test.dims()[0]
    );

    let model = Sequential::new()
        .seed(args.num("seed", 0u64)?)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape((28, 28, 1)))
        .add(Conv2D::new(64, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(128).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax));
    model.summary()?;
    model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    let mut history = None;
    if epochs > 0 {
        let mut opts = FitOptions::default()
            .batch_size(batch_size)
            .epochs(epochs)
            .verbose(args.num("verbose", 1u8)?)
            .validation_data(&x_test, &y_test);
        if let Some(tb) = common::tensorboard(&args)? {
            opts = opts.callback(tb);
        }
        history = Some(model.fit(&x_train, &y_train, opts)?);
    }
    let digits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    common::write_report(&args, &model, history.as_ref(), &x_test, &y_test, &digits, batch_size)?;
    let score = model.evaluate(&x_test, &y_test, batch_size)?;
    println!("test_loss={:.4} test_accuracy={:.4}", score.loss, score.accuracy().unwrap_or(f64::NAN));
    Ok(())
}
