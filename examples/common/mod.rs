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
