//! A Keras model continues its life in Rust and goes back: loads a model saved by Keras
//! (`model.save("m.keras")` in Python; or kandle's own files), evaluates it on CIFAR-10's test
//! images, fine-tunes it (its optimizer state carried over from Keras), and saves it as a
//! `.keras` archive that `keras.models.load_model` opens.
//!
//! ```text
//! cargo run --release --example keras_roundtrip -- --model tutorial.keras --epochs 1 \
//!     --data-dir ../shared/data/cifar10 --save tuned.keras
//! ```
//! Flags: `--model PATH` (`.keras`, or kandle's `.kandle`), `--weights PATH` (a `.weights.h5`
//! to load into it), `--epochs N` (default 0: evaluate only), `--batch-size B` (32),
//! `--limit N` (first N training samples), `--test-limit N` (first N test samples),
//! `--shuffle 0|1` (1), `--save PATH` (`.keras`), `--data-dir DIR`, `--verbose V`; instead
//! of CIFAR-10, `--x X.npy --y Y.npy` train and evaluate on NumPy arrays, and `--predict
//! OUT.npy` writes the model's outputs on `--x` (after training), for scripts that compare
//! them with Keras' (scripts/keras_files_check.sh). Ends with one line
//! `test_loss=<f> test_accuracy=<f>` (accuracy `nan` when the model has no accuracy metric).

#[path = "common/mod.rs"]
mod common;

use kandle::prelude::*;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let flags = [
        ("model", "the model file to load: .keras (Keras 3) or .kandle"),
        ("weights", "a .weights.h5 file to load into the model after it is loaded"),
        ("epochs", "epochs of fine-tuning (default 0: evaluate only)"),
        ("batch-size", "batch size (default 32, Keras' default)"),
        ("limit", "first N training samples"),
        ("test-limit", "first N test samples"),
        ("shuffle", "1 (default) or 0: shuffle the training samples each epoch"),
        ("save", "save the model to this file at the end (.keras for Keras)"),
        ("data-dir", "CIFAR-10 folder (default: the usual places)"),
        ("verbose", "0, 1 (progress bar) or 2 (one line per epoch)"),
        ("x", "inputs as a .npy file (float32), instead of CIFAR-10"),
        ("y", "targets as a .npy file (float32), with --x"),
        ("predict", "write the outputs on --x (or the test images) to this .npy file"),
    ];
    let args = common::Args::parse(&flags);
    let path = args.get("model").ok_or_else(|| Error::invalid("flag", "--model PATH is required"))?;
    let model = load_model(path)?;
    if let Some(w) = args.get("weights") {
        model.load_weights(w)?;
    }
    model.summary()?;
    let batch_size = args.num("batch-size", 32usize)?;
    let epochs = args.num("epochs", 0usize)?;
    // (training inputs, training targets, test inputs, test targets); targets are absent when
    // only --x is given (predictions only).
    let (x_train, y_train, x_test, y_test) = match (args.get("x"), args.get("y")) {
        (Some(x), y) => {
            let x = Tensor::read_npy(x)?.to_dtype(DType::F32)?;
            let y = y.map(|y| Tensor::read_npy(y).and_then(|t| t.to_dtype(DType::F32))).transpose()?;
            (x.clone(), y.clone(), x, y)
        }
        (None, Some(_)) => return Err(Error::invalid("flag", "--y goes with --x")),
        (None, None) => {
            let ((x, y), (xt, yt)) = common::cifar10_data(&args)?;
            let test_limit = args.num("test-limit", 0usize)?;
            (x, Some(y), common::take(&xt, test_limit)?, Some(common::take(&yt, test_limit)?))
        }
    };
    if let (true, Some(y_train)) = (epochs > 0, &y_train) {
        let shuffle = args.num("shuffle", 1u8)? != 0;
        model.fit(
            &x_train,
            y_train,
            FitOptions::default()
                .batch_size(batch_size)
                .epochs(epochs)
                .shuffle(shuffle)
                .verbose(args.num("verbose", 1u8)?),
        )?;
    }
    if let Some(p) = args.get("predict") {
        let outs = model.predict_outputs(&x_test, batch_size)?;
        let n = x_test.dims()[0];
        let flat: Vec<Tensor> = outs.iter().map(|o| o.reshape((n, ()))).collect::<candle_core::Result<_>>()?;
        Tensor::cat(&flat, 1)?.write_npy(p)?;
    }
    if let Some(s) = args.get("save") {
        model.save(s)?;
        println!("saved {s}");
    }
    match &y_test {
        Some(y) => {
            let score = model.evaluate(&x_test, y, batch_size)?;
            println!("test_loss={:.4} test_accuracy={:.4}", score.loss, score.accuracy().unwrap_or(f64::NAN));
        }
        None => println!("test_loss=nan test_accuracy=nan"),
    }
    Ok(())
}
