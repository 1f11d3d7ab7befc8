//! Weight initialisers, as in `keras.initializers`, drawn from the model's seeded generator.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, RngCore};
use rand_distr::{Distribution, Normal};

/// How a weight tensor is filled when a layer is built.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Initializer {
    /// Keras' default for kernels: uniform in `[-l, l]`, `l = sqrt(6 / (fan_in + fan_out))`.
    #[default]
    GlorotUniform,
    /// Truncated normal with `stddev = sqrt(2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// Uniform in `[-l, l]`, `l = sqrt(6 / fan_in)`.
    HeUniform,
    /// Truncated normal with `stddev = sqrt(2 / fan_in)`.
    HeNormal,
    /// All zeros (Keras' default for biases).
    Zeros,
    /// All ones.
    Ones,
    /// Uniform in `[minval, maxval]`.
    RandomUniform(f64, f64),
    /// Normal with `(mean, stddev)`.
    RandomNormal(f64, f64),
    /// Every value the same (Keras' `Constant(value)`).
    Constant(f64),
}

/// `(fan_in, fan_out)` of a kernel shape, as Keras computes them: the last two axes are
/// `(in, out)` and the others form the receptive field.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        n => {
            let field: usize = shape[..n - 2].iter().product();
            (shape[n - 2] * field, shape[n - 1] * field)
        }
    }
}

/// Draws from a normal distribution truncated at two standard deviations, as Keras does.
fn truncated<R: RngCore>(rng: &mut R, std: f64) -> f64 {
    let n = Normal::new(0.0, 1.0).expect("unit normal");
    loop {
        let v: f64 = n.sample(rng);
        if v.abs() <= 2.0 {
            return v * std;
        }
    }
}

impl Initializer {
    /// Keras' serialized initializer (`{"module": "keras.initializers", "class_name":
    /// "HeNormal", "config": {"seed": null}, ...}`), as layers' configs hold it.
    ///
    /// ```
    /// use kandle::initializers::Initializer;
    /// let v = Initializer::RandomNormal(0.0, 0.05).to_keras();
    /// assert_eq!(v["class_name"], "RandomNormal");
    /// assert_eq!(Initializer::from_keras(&v), Some(Initializer::RandomNormal(0.0, 0.05)));
    /// ```
    pub fn to_keras(&self) -> serde_json::Value {
        use serde_json::json;
        let (class, config) = match *self {
            Initializer::GlorotUniform => ("GlorotUniform", json!({"seed": null})),
            Initializer::GlorotNormal => ("GlorotNormal", json!({"seed": null})),
            Initializer::HeUniform => ("HeUniform", json!({"seed": null})),
            Initializer::HeNormal => ("HeNormal", json!({"seed": null})),
            Initializer::Zeros => ("Zeros", json!({})),
            Initializer::Ones => ("Ones", json!({})),
            Initializer::RandomUniform(lo, hi) => ("RandomUniform", json!({"minval": lo, "maxval": hi, "seed": null})),
            Initializer::RandomNormal(m, s) => ("RandomNormal", json!({"mean": m, "stddev": s, "seed": null})),
            Initializer::Constant(v) => ("Constant", json!({"value": v})),
        };
        json!({"module": "keras.initializers", "class_name": class, "config": config, "registered_name": null})
    }

    /// The initializer of Keras' serialized form (an object as [`Initializer::to_keras`]
    /// writes, or a name such as `"he_normal"`); `None` for a class kandle does not have
    /// (`TruncatedNormal`, `VarianceScaling`, ...).
    pub fn from_keras(v: &serde_json::Value) -> Option<Initializer> {
        let class = v.get("class_name").and_then(|c| c.as_str()).or(v.as_str())?;
        let f = |k: &str, d: f64| v.get("config").and_then(|c| c.get(k)).and_then(|x| x.as_f64()).unwrap_or(d);
        Some(match class.replace('_', "").to_ascii_lowercase().as_str() {
            "glorotuniform" => Initializer::GlorotUniform,
            "glorotnormal" => Initializer::GlorotNormal,
            "heuniform" => Initializer::HeUniform,
            "henormal" => Initializer::HeNormal,
            "zeros" => Initializer::Zeros,
            "ones" => Initializer::Ones,
            "randomuniform" => Initializer::RandomUniform(f("minval", -0.05), f("maxval", 0.05)),
            "randomnormal" => Initializer::RandomNormal(f("mean", 0.0), f("stddev", 0.05)),
            "constant" => Initializer::Constant(f("value", 0.0)),
            _ => return None,
        })
    }

    /// Checks the initialiser's parameters: finite, a non-negative standard deviation, a
    /// uniform range with `minval <= maxval`.
    ///
    /// # Errors
    /// A parameter out of range, named with the value received.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Initializer::RandomUniform(lo, hi) if !(lo.is_finite() && hi.is_finite() && lo <= hi) => {
                Err(Error::invalid(
                    "initializer",
                    format!("RandomUniform: expected finite minval <= maxval, received ({lo}, {hi})"),
                ))
            }
            Initializer::RandomNormal(mean, std) if !(mean.is_finite() && std.is_finite() && std >= 0.0) => {
                Err(Error::invalid(
                    "initializer",
                    format!("RandomNormal: expected a finite mean and a finite stddev >= 0, received ({mean}, {std})"),
                ))
            }
            Initializer::Constant(v) if !v.is_finite() => {
                Err(Error::invalid("initializer", format!("Constant: expected a finite value, received {v}")))
            }
            _ => Ok(()),
        }
    }

    /// A tensor of `shape` filled by this initialiser.
    ///
    /// # Errors
    /// Parameters out of range ([`Initializer::validate`]), or candle cannot allocate the tensor.
    pub fn init<R: RngCore>(&self, shape: &[usize], dtype: DType, device: &Device, rng: &mut R) -> Result<Tensor> {
        self.validate()?;
        let n: usize = shape.iter().product();
        let (fan_in, fan_out) = fans(shape);
        // Keras' truncated normal keeps the variance: divide by the truncation's std factor.
        const TRUNC: f64 = 0.879_625_661_034_239_8;
        let values: Vec<f64> = match *self {
            Initializer::Zeros => vec![0.0; n],
            Initializer::Ones => vec![1.0; n],
            Initializer::Constant(v) => vec![v; n],
            Initializer::GlorotUniform => {
                let l = (6.0 / (fan_in + fan_out) as f64).sqrt();
                (0..n).map(|_| rng.random_range(-l..l)).collect()
            }
            Initializer::HeUniform => {
                let l = (6.0 / fan_in as f64).sqrt();
                (0..n).map(|_| rng.random_range(-l..l)).collect()
            }
            Initializer::GlorotNormal => {
                let s = (2.0 / (fan_in + fan_out) as f64).sqrt() / TRUNC;
                (0..n).map(|_| truncated(rng, s)).collect()
            }
            Initializer::HeNormal => {
                let s = (2.0 / fan_in as f64).sqrt() / TRUNC;
                (0..n).map(|_| truncated(rng, s)).collect()
            }
            Initializer::RandomUniform(lo, hi) => (0..n).map(|_| lo + (hi - lo) * rng.random::<f64>()).collect(),
            Initializer::RandomNormal(mean, std) => {
                let d = Normal::new(mean, std)
                    .map_err(|e| Error::invalid("initializer", format!("RandomNormal({mean}, {std}): {e}")))?;
                (0..n).map(|_| d.sample(rng)).collect()
            }
        };
        Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
    }
}
