//! Flags shared by the examples: `--epochs N --batch-size B --data-dir DIR --limit N --seed S
//! --verbose V`. Unknown flags are an error, so that a typo never runs a different experiment.
#![allow(dead_code)]

use kandle::prelude::*;
use std::collections::HashMap;

pub struct Args {
    values: HashMap<String, String>,
    program: String,
}

impl Args {
    /// Parses `--name value` pairs, accepting only `known` names.
    pub fn parse(known: &[(&str, &str)]) -> Args {
        let mut it = std::env::args();
        let program = it.next().unwrap_or_default();
        let mut values = HashMap::new();
        let usage = || {
            let mut s = format!("usage: {program}");
            for (k, help) in known {
                s += &format!("\n  --{k} <value>   {help}");
            }
            s
        };
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                println!("{}", usage());
                std::process::exit(0);
            }
            let Some(name) = a.strip_prefix("--") else {
                eprintln!("error: unexpected argument {a:?}\n{}", usage());
                std::process::exit(2);
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (name.to_string(), it.next().unwrap_or_default()),
            };
            if !known.iter().any(|(k, _)| *k == name) {
                eprintln!("error: unknown flag --{name}\n{}", usage());
                std::process::exit(2);
            }
            values.insert(name, value);
        }
        Args { values, program }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|s| s.as_str())
    }

    /// A numeric flag, or `default`; a value that does not parse is a clear error.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                v.parse().map_err(|_| Error::invalid("flag", format!("--{name}: expected a number, received {v:?}")))
            }
        }
    }
}

/// The first `limit` samples (all when `limit` is 0).
pub fn take(x: &Tensor, limit: usize) -> Result<Tensor> {
    let n = x.dims()[0];
    Ok(if limit == 0 || limit >= n { x.clone() } else { x.narrow(0, 0, limit)? })
}

/// `u8` images to floats in [0, 1].
pub fn to_unit(x: &Tensor) -> Result<Tensor> {
    Ok((x.to_dtype(DType::F32)? / 255.0)?)
}

/// The Keras CIFAR-10 tutorial's model (276,138 parameters).
pub fn tutorial_model(seed: u64) -> Sequential {
    let model = Sequential::new().seed(seed);
    for (i, filters) in [32, 64, 64].into_iter().enumerate() {
        let first = Conv2D::new(filters, (3, 3)).padding(Padding::Same).activation(Activation::Relu);
        model.add(if i == 0 { first.input_shape((32, 32, 3)) } else { first });
        model.add(Conv2D::new(filters, (3, 3)).activation(Activation::Relu));
        model.add(MaxPooling2D::new((2, 2)));
        model.add(Dropout::new(0.25));
    }
    model
        .add(Flatten::new())
        .add(Dense::new(512).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax))
}

/// Flags of the long-run features, shared by the CIFAR-10 examples.
pub const RUN_FLAGS: [(&str, &str); 6] = [
    ("eval-train", "1: also evaluate on the (clean) training set at the end, printing train_eval_accuracy"),
    ("save", "save the model (weights and training state) to this file at the end"),
    ("load", "load a model saved with --save before training or evaluating"),
    ("checkpoint-dir", "keep the best model (val_accuracy) in DIR/best.kandle after each epoch"),
    ("plot", "write the training curves to this PNG (or .svg) file"),
    ("patience", "stop when val_loss has not improved for N epochs (EarlyStopping)"),
];

/// The callbacks the flags ask for.
pub fn run_callbacks(args: &Args) -> Result<Vec<Box<dyn kandle::callbacks::Callback>>> {
    use kandle::callbacks::{EarlyStopping, ModelCheckpoint};
    let mut cbs: Vec<Box<dyn kandle::callbacks::Callback>> = Vec::new();
    if let Some(dir) = args.get("checkpoint-dir") {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = std::path::Path::new(dir).join("best.kandle").display().to_string();
        cbs.push(Box::new(ModelCheckpoint::new(path).monitor("val_accuracy").save_best_only(true).verbose(1)));
    }
    if args.get("patience").is_some() {
        cbs.push(Box::new(
            EarlyStopping::new().patience(args.num("patience", 0usize)?).restore_best_weights(true).verbose(1),
        ));
    }
    Ok(cbs)
}

/// Loads `--load` into the (compiled) model.
pub fn maybe_load(args: &Args, model: &Model) -> Result<()> {
    if let Some(p) = args.get("load") {
        model.load(p)?;
        println!("loaded {p}");
    }
    Ok(())
}

/// Saves (`--save`) and plots (`--plot`) after training.
pub fn after_training(args: &Args, model: &Model, history: Option<&History>) -> Result<()> {
    if let (Some(p), Some(h)) = (args.get("plot"), history) {
        h.plot(p)?;
        println!("wrote the training curves to {p}");
    }
    if let Some(p) = args.get("save") {
        model.save(p)?;
        println!("saved the model to {p}");
    }
    Ok(())
}

/// With `--eval-train 1`, evaluates the final model on the training set (inference mode, no
/// augmentation) and prints `train_eval_loss=<f> train_eval_accuracy=<f>`: with the test
/// figures, the train-test gap that data augmentation is meant to shrink.
pub fn eval_train(args: &Args, model: &mut Model, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<()> {
    if args.num("eval-train", 0u8)? == 1 {
        let s = model.evaluate(x, y, batch_size)?;
        println!("train_eval_loss={:.4} train_eval_accuracy={:.4}", s.loss, s.accuracy().unwrap_or(f64::NAN));
    }
    Ok(())
}

/// Prints an error as a sentence (not as a debug structure) and exits with status 1.
pub fn exit_on_error(r: Result<()>) {
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
