//! Train in Rust, ship as ONNX: a CIFAR-10 model (one saved by the CIFAR-10 examples' `--save`,
//! or, without `--load`, the tutorial's CNN trained here for `--epochs` on `--limit` images)
//! exported with `model.export(path, ExportFormat::Onnx)`, then run without kandle by tract,
//! a Rust ONNX runtime, on the whole test set: its top-1 classes are compared with kandle's.
//!
//! ```text
//! cargo run --release --example cifar10_cnn -- --epochs 10 --save cnn.keras
//! cargo run --release --example export_onnx -- --load cnn.keras --output cnn.onnx
//! ```
//! Flags: `--load PATH`, `--output FILE` (default `model.onnx`), `--data-dir DIR`, `--opset N`
//! (17), `--epochs N` and `--limit N` (without `--load`: 1 and 5000), `--batch-size B` (256),
//! `--seed S`. Prints `onnx_file=`, `onnx_bytes=`, `onnx_accuracy=` (tract's) and
//! `onnx_top1_agreement=` (the share of test images where tract's class is kandle's), and ends
//! with kandle's own `test_loss=<f> test_accuracy=<f>` on the test set.
//!
//! The file runs in ONNX Runtime as it is (see the guide's "Shipping the model: ONNX" section).

#[path = "common/mod.rs"]
mod common;

use kandle::export::{ExportFormat, ExportOptions};
use kandle::prelude::*;

fn main() {
    common::exit_on_error(run());
}

/// The tutorial's CNN (Keras' cifar10_cnn.py).
fn tutorial_cnn(seed: u64) -> Model {
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
        .seed(seed)
        .into()
}

/// tract, a Rust ONNX runtime (kept apart from candle's names).
mod rt {
    use tract_onnx::prelude::*;

    /// A file ready to run on inputs of `dims` (the batch fixed to `dims[0]`).
    pub struct Runner(std::sync::Arc<TypedRunnableModel>);

    impl Runner {
        pub fn load(path: &str, dims: &[usize]) -> TractResult<Runner> {
            let model = tract_onnx::onnx().model_for_path(path)?.with_input_fact(0, f32::fact(dims).into())?;
            Ok(Runner(model.into_optimized()?.into_runnable()?))
        }
        /// The first output's rows' top-1 classes.
        pub fn classes(&self, dims: &[usize], values: &[f32]) -> TractResult<Vec<u32>> {
            let input = Tensor::from_shape(dims, values)?;
            let out = self.0.run(tvec!(input.into_tvalue()))?;
            let probs = out[0].to_plain_array_view::<f32>()?;
            Ok(probs
                .outer_iter()
                .map(|row| {
                    row.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
                })
                .collect())
        }
    }
}

fn tract_error(e: impl std::fmt::Display) -> Error {
    Error::invalid("onnx", format!("tract: {e}"))
}

/// tract's top-1 classes for `x`, batch by batch, from the file at `path`.
fn tract_classes(path: &str, x: &Tensor, batch: usize) -> Result<Vec<u32>> {
    let (n, h, w, c) = x.dims4()?;
    let runner = rt::Runner::load(path, &[batch, h, w, c]).map_err(tract_error)?;
    let mut classes = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        // The last batch is padded to the file's batch size with its own first image.
        let len = batch.min(n - start);
        let mut xb = x.narrow(0, start, len)?;
        if len < batch {
            let pad = xb.narrow(0, 0, 1)?.repeat((batch - len, 1, 1, 1))?;
            xb = Tensor::cat(&[&xb, &pad], 0)?;
        }
        let values = xb.flatten_all()?.to_vec1::<f32>()?;
        let top = runner.classes(&[batch, h, w, c], &values).map_err(tract_error)?;
        classes.extend_from_slice(&top[..len]);
        start += len;
    }
    Ok(classes)
}

fn run() -> Result<()> {
    let flags = [
        ("load", "a model saved by the CIFAR-10 examples' --save (default: train the tutorial CNN here)"),
        ("output", "the ONNX file to write (default model.onnx)"),
        ("data-dir", "CIFAR-10 folder or .tar.gz (binary version or class-folder images)"),
        ("opset", "the ONNX operator set, 13 to 21 (default 17)"),
        ("epochs", "without --load: epochs to train the tutorial CNN (default 1)"),
        ("limit", "without --load: train on the first N samples (default 5000; 0 = all)"),
        ("batch-size", "batch size of training, evaluation and the ONNX runs (default 256)"),
        ("seed", "seed of initialisation, dropout and shuffling (default 0)"),
    ];
    let args = common::Args::parse(&flags);
    let batch_size = args.num("batch-size", 256usize)?;
    let output = args.get("output").unwrap_or("model.onnx").to_string();
    let ((x_train, y_train), (x_test, y_test)) = common::cifar10_data(&args)?;
    let model = match args.get("load") {
        Some(path) => {
            let model = kandle::models::load_model(path)?;
            println!("loaded {path}");
            model
        }
        None => {
            let limit = args.num("limit", 5000usize)?;
            let (x, y) = (common::take(&x_train, limit)?, common::take(&y_train, limit)?);
            let model = tutorial_cnn(args.num("seed", 0u64)?);
            model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
            let epochs = args.num("epochs", 1usize)?;
            model.fit(&x, &y, FitOptions::default().batch_size(batch_size).epochs(epochs).verbose(2))?;
            model
        }
    };
    if model.output_shapes()?.len() != 1 {
        return Err(Error::invalid("load", "expected a classifier of one output"));
    }

    let options = ExportOptions::default().opset_version(args.num("opset", 17i64)?);
    model.export_with(&output, ExportFormat::Onnx, options)?;
    println!("onnx_file={output}");
    println!("onnx_bytes={}", std::fs::metadata(&output).map_err(|e| Error::io(&output, e))?.len());

    // The file in tract, without kandle: the whole test set.
    let start = std::time::Instant::now();
    let onnx = tract_classes(&output, &x_test, batch_size)?;
    let seconds = start.elapsed().as_secs_f64();
    let kandle_classes = model.predict(&x_test, batch_size)?.argmax(1)?.to_vec1::<u32>()?;
    let truth = y_test.argmax(1)?.to_vec1::<u32>()?;
    let n = truth.len() as f64;
    let same = onnx.iter().zip(&kandle_classes).filter(|(a, b)| a == b).count() as f64;
    let right = onnx.iter().zip(&truth).filter(|(a, b)| a == b).count() as f64;
    println!("onnx_runtime=tract-onnx onnx_images_per_sec={:.0}", n / seconds);
    println!("onnx_accuracy={:.4}", right / n);
    println!("onnx_top1_agreement={:.4}", same / n);
    // A model saved without its compile state is compiled as the tutorial's.
    if model.learning_rate().is_err() {
        model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    }
    let score = model.evaluate(&x_test, &y_test, batch_size)?;
    println!("test_loss={:.4} test_accuracy={:.4}", score.loss, score.accuracy().unwrap_or(f64::NAN));
    Ok(())
}
