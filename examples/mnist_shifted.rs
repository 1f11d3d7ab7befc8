//! Why augment: the MNIST CNN trained with and without `ImageDataGenerator`'s shifts, both
//! evaluated on the test set as it is and moved off-centre by a few pixels. A CNN's pooling
//! gives it a little translation tolerance; the shifts during training give it much more.
//!
//! ```text
//! cargo run --release --example mnist_shifted -- --epochs 3 --report mnist_shifted_report
//! ```
//! Flags: `--epochs N` (default 3), `--batch-size B` (128), `--shift P` (pixels the test
//! digits move, in a random direction on each axis: default 4), `--shift-range F` (the
//! generator's width and height shift range: default 0.15), `--limit N`, `--seed S`,
//! `--data-dir DIR`, `--verbose V`, `--report DIR` (the confusion matrices of both models on
//! the shifted test set). Prints `<model>_<test set>_accuracy=` lines, then
//! `test_loss=<f> test_accuracy=<f>` of the augmented model on the shifted test set.

#[path = "common/mod.rs"]
mod common;

use kandle::datasets::mnist;
use kandle::models::GeneratorOptions;
use kandle::prelude::*;
use rand::{Rng, SeedableRng};

fn main() {
    common::exit_on_error(run());
}

fn model(seed: u64) -> Sequential {
    Sequential::new()
        .seed(seed)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape((28, 28, 1)))
        .add(Conv2D::new(64, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(128).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax))
}

/// Each image moved by `p` pixels up or down and `p` left or right (at random), the uncovered
/// border black (MNIST's background).
fn shifted(x: &Tensor, p: usize, seed: u64) -> Result<Tensor> {
    let (n, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let src: Vec<u8> = x.flatten_all()?.to_vec1()?;
    let mut out = vec![0u8; src.len()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..n {
        let dy = if rng.random::<bool>() { p as isize } else { -(p as isize) };
        let dx = if rng.random::<bool>() { p as isize } else { -(p as isize) };
        for y in 0..h as isize {
            for xx in 0..w as isize {
                let (sy, sx) = (y - dy, xx - dx);
                if sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize {
                    out[(i * h + y as usize) * w + xx as usize] = src[(i * h + sy as usize) * w + sx as usize];
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (n, h, w), x.device())?)
}

fn run() -> Result<()> {
    let args = common::Args::parse(&[
        ("epochs", "epochs to train each model (default 3)"),
        ("batch-size", "batch size (default 128)"),
        ("shift", "pixels the test digits are moved by on each axis (default 4)"),
        ("shift-range", "the generator's width_shift_range and height_shift_range (default 0.15)"),
        ("data-dir", "folder with the four MNIST IDX files (gzipped or not)"),
        ("limit", "train on the first N samples only"),
        ("seed", "seed of initialisation, dropout, shuffling and augmentation (default 0)"),
        ("verbose", "0 silent, 1 progress bar, 2 one line per epoch (default 2)"),
        ("report", "write the confusion matrices of both models on the shifted test set to this folder"),
    ]);
    let epochs = args.num("epochs", 3usize)?;
    let batch_size = args.num("batch-size", 128usize)?;
    let seed = args.num("seed", 0u64)?;
    let verbose = args.num("verbose", 2u8)?;
    let range = args.num("shift-range", 0.15f64)?;
    let ((x_train, y_train), (x_test, y_test)) = match common::data_dir(&args, "mnist") {
        Some(d) => mnist::load_data_from(d)?,
        None => mnist::load_data()?,
    };
    let limit = args.num("limit", 0usize)?;
    let (x_train, y_train) = (common::take(&x_train, limit)?, common::take(&y_train, limit)?);
    let x_moved = shifted(&x_test, args.num("shift", 4usize)?, seed + 1)?;
    let prep = |x: &Tensor| common::to_unit(&x.unsqueeze(3)?);
    let (x_train, x_test, x_moved) = (prep(&x_train)?, prep(&x_test)?, prep(&x_moved)?);
    let (y_train, y_test) = (to_categorical(&y_train, 10)?, to_categorical(&y_test, 10)?);

    println!("Training the CNN on the images as they are...");
    let plain = model(seed);
    plain.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    plain.fit(&x_train, &y_train, FitOptions::default().batch_size(batch_size).epochs(epochs).verbose(verbose))?;

    println!("Training the same CNN on images shifted by up to {:.0}% each way...", 100.0 * range);
    let augmented = model(seed);
    augmented.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    let datagen = ImageDataGenerator::new().width_shift_range(range).height_shift_range(range);
    augmented.fit_generator(
        datagen.flow(&x_train, &y_train, batch_size).seed(seed),
        GeneratorOptions::default().epochs(epochs).verbose(verbose),
    )?;

    let digits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    let mut last = None;
    for (name, m) in [("plain", &plain), ("augmented", &augmented)] {
        for (set, x) in [("centred", &x_test), ("shifted", &x_moved)] {
            let s = m.evaluate(x, &y_test, batch_size)?;
            println!("{name}_{set}_accuracy={:.4}", s.accuracy().unwrap_or(f64::NAN));
            last = Some(s);
        }
        if let Some(dir) = args.get("report") {
            let dir = std::path::Path::new(dir);
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let probs = m.predict(&x_moved, batch_size)?;
            common::pictures(dir, &format!("_{name}"), &x_moved, &y_test, &probs, &digits)?;
        }
    }
    if let Some(dir) = args.get("report") {
        println!("wrote confusion_plain.png, confusion_augmented.png and the misclassified grids to {dir}");
    }
    let s = last.expect("evaluated");
    println!("test_loss={:.4} test_accuracy={:.4}", s.loss, s.accuracy().unwrap_or(f64::NAN));
    Ok(())
}
