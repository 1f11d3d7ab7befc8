//! Keras' guide "Transfer learning & fine-tuning", in Rust: a folder of images read with
//! `image_dataset_from_directory`, augmentation layers in the model, a MobileNetV2 pretrained on
//! ImageNet (frozen, called in inference mode) under a new head, then fine-tuning of the base's
//! top layers at a low learning rate.
//!
//! ```text
//! cargo run --release --example transfer_learning -- --weights imagenet --epochs 5 --data-dir my_photos
//! cargo run --release --example transfer_learning -- --weights none --epochs 1 --limit 100
//! ```
//! Flags: `--data-dir DIR` (a folder of class sub-folders, each with `train` and `test` beside
//! or a single tree split 80/20; default: cats and dogs from the CIFAR-10 images of
//! ../shared/data/cifar10, as Keras' guide classifies cats and dogs), `--limit N` (images per
//! class and split taken from CIFAR-10, default 500), `--weights imagenet|none|PATH`
//! (default imagenet: Keras' file, from Keras' cache or downloaded), `--image-size N` (160),
//! `--epochs N` (head, default 5), `--fine-tune-epochs N` (default: `--epochs`; 0 skips),
//! `--fine-tune-at N` (the base's layers from N on are fine-tuned; default 100), `--batch-size B`
//! (32), `--seed S` (0), `--verbose V` (1). Ends with `test_loss=<f> test_accuracy=<f>`.

#[path = "common/mod.rs"]
mod common;

use kandle::applications::{MobileNetV2, Weights};
use kandle::layers::{FlipMode, RandomFlip, RandomRotation};
use kandle::metrics::Metric;
use kandle::prelude::*;
use kandle::preprocessing::image::{image_dataset_from_directory, DatasetOptions, LabelMode, Subset};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn main() {
    common::exit_on_error(run());
}

fn run() -> Result<()> {
    let args = common::Args::parse(&[
        ("data-dir", "a folder of class sub-folders (default: cats and dogs from CIFAR-10)"),
        ("limit", "images per class and split taken from CIFAR-10 (default 500)"),
        ("weights", "imagenet (default), none, or a weights file"),
        ("image-size", "input height and width (default 160)"),
        ("epochs", "epochs of the new head (default 5)"),
        ("fine-tune-epochs", "epochs of fine-tuning (default: --epochs; 0 skips)"),
        ("fine-tune-at", "the base's layers from this index on are fine-tuned (default 100)"),
        ("batch-size", "batch size (default 32)"),
        ("seed", "seed (default 0)"),
        ("verbose", "0 silent, 1 progress bar, 2 one line per epoch (default 1)"),
    ]);
    let size = args.num("image-size", 160usize)?;
    let bs = args.num("batch-size", 32usize)?;
    let seed = args.num("seed", 0u64)?;
    let verbose = args.num("verbose", 1u8)?;
    let epochs = args.num("epochs", 5usize)?;
    let fine_tune_epochs = args.num("fine-tune-epochs", epochs)?;
    let weights: Weights = args.get("weights").unwrap_or("imagenet").parse()?;

    // The data: train and test folders of class sub-folders.
    let (train_dir, test_dir) = match args.get("data-dir") {
        Some(d) if Path::new(d).join("train").is_dir() => (Path::new(d).join("train"), Some(Path::new(d).join("test"))),
        Some(d) => (PathBuf::from(d), None),
        None => cats_and_dogs(args.num("limit", 500usize)?)?,
    };
    let opts =
        DatasetOptions::default().image_size((size, size)).batch_size(bs).label_mode(LabelMode::Binary).seed(seed);
    let (train, test) = match test_dir {
        Some(t) => (
            image_dataset_from_directory(&train_dir, opts.clone())?,
            image_dataset_from_directory(t, opts.shuffle(false))?,
        ),
        None => (
            image_dataset_from_directory(&train_dir, opts.clone().validation_split(0.2).subset(Subset::Training))?,
            image_dataset_from_directory(&train_dir, opts.validation_split(0.2).subset(Subset::Validation))?,
        ),
    };
    println!("classes: {:?}", train.class_names());
    // Shared by both fits and the evaluation (an Arc of a generator is one).
    let (train, test) = (Arc::new(train), Arc::new(test));

    // The base: MobileNetV2 without its top, pretrained on ImageNet, frozen.
    let base = MobileNetV2::new().include_top(false).input_shape((size, size, 3)).weights(weights).build()?;
    base.set_trainable(false);

    // The model: augmentation, MobileNetV2's preprocessing (pixels to [-1, 1]), the base in
    // inference mode (its BatchNormalization keeps its statistics, also when fine-tuned), a new head.
    let inputs = Input::new((size, size, 3));
    let x = RandomFlip::new(FlipMode::Horizontal).call(&inputs)?;
    let x = RandomRotation::new(0.1).call(&x)?;
    let x = Rescaling::new(1.0 / 127.5).offset(-1.0).call(&x)?;
    let x = base.as_layer().call_training(&x, false)?;
    let x = GlobalAveragePooling2D::new().call(&x)?;
    let x = Dropout::new(0.2).call(&x)?;
    let outputs = Dense::new(1).call(&x)?;
    let model = Model::new(&[inputs], &[outputs])?.seed(seed);
    let loss = Loss::BinaryCrossentropy.from_logits(true);
    model.compile(Adam::default(), loss, &[Metric::BinaryAccuracyAt(0.0)])?;
    if verbose > 0 {
        model.summary()?;
    }

    let fit = |epochs: usize, initial: usize| {
        FitOptions::default()
            .epochs(initial + epochs)
            .initial_epoch(initial)
            .verbose(verbose)
            .validation_generator(test.clone(), None)
    };
    if epochs > 0 {
        println!("Training the new head ({epochs} epochs, the base frozen)");
        model.fit_generator(train.clone(), fit(epochs, 0))?;
    }
    if fine_tune_epochs > 0 {
        // Fine-tuning: the base's top layers train too, at a learning rate 100 times lower.
        let at = args.num("fine-tune-at", 100usize)?;
        base.set_trainable(true);
        for layer in base.layers().iter().take(at) {
            layer.set_trainable(false);
        }
        model.compile(Adam::new(1e-5), loss, &[Metric::BinaryAccuracyAt(0.0)])?;
        println!("Fine-tuning the base's layers from {at} on ({fine_tune_epochs} epochs at 1e-5)");
        model.fit_generator(train, fit(fine_tune_epochs, epochs))?;
    }
    let e = model.evaluate_generator(test, None)?;
    let acc = e.metrics.first().map(|m| m.1).unwrap_or(f64::NAN);
    println!("test_loss={:.4} test_accuracy={:.4}", e.loss, acc);
    Ok(())
}

/// Cats and dogs (Keras' guide's classes) from the CIFAR-10 images of ../shared/data/cifar10: the
/// first `limit` of each class and split, written once as `train/{cat,dog}` and `test/{cat,dog}`
/// under the system's temporary folder.
fn cats_and_dogs(limit: usize) -> Result<(PathBuf, Option<PathBuf>)> {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10/cifar-10-images.tar.gz");
    if !archive.is_file() {
        return Err(Error::invalid(
            "data-dir",
            format!("expected a folder of images (--data-dir), or CIFAR-10's images at {}", archive.display()),
        ));
    }
    let root = std::env::temp_dir().join(format!("kandle-cats-and-dogs-{limit}"));
    let done = root.join(".complete");
    if !done.is_file() {
        let file = std::fs::File::open(&archive).map_err(|e| Error::io(&archive, e))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut counts = std::collections::HashMap::new();
        for entry in tar.entries().map_err(|e| Error::io(&archive, e))? {
            let mut entry = entry.map_err(|e| Error::io(&archive, e))?;
            let path = entry.path().map_err(|e| Error::io(&archive, e))?.into_owned();
            let parts: Vec<String> = path.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let [_, split, class, name] = &parts[..] else { continue };
            if !(class == "cat" || class == "dog") {
                continue;
            }
            let n = counts.entry((split.clone(), class.clone())).or_insert(0usize);
            if *n >= limit {
                continue;
            }
            *n += 1;
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            entry.unpack(dir.join(name)).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::write(&done, b"").map_err(|e| Error::io(&done, e))?;
    }
    Ok((root.join("train"), Some(root.join("test"))))
}
