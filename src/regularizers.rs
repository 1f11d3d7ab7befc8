//! Weight regularizers, as in `keras.regularizers`: a penalty on a weight's values added to the
//! loss (`kernel_regularizer` and `bias_regularizer` of `Conv2D` and `Dense`, or any weight a
//! user-defined layer declares with [`Weight::regularizer`](crate::layers::Weight::regularizer)).
//!
//! As in Keras 3, the penalties of the trainable weights are added once to the total loss, in
//! training and in evaluation (the `loss` of the logs includes them; each output's own loss does
//! not).

use crate::error::{Error, Result};
use candle_core::Tensor;
use std::str::FromStr;

/// A penalty on a weight `w`.
///
/// ```
/// use kandle::regularizers::Regularizer;
/// use candle_core::{Device, Tensor};
/// let w = Tensor::new(&[1f32, -2., 3.], &Device::Cpu)?;
/// let p = Regularizer::l2(0.01).penalty(&w)?.to_scalar::<f32>()?;
/// assert!((p - 0.14).abs() < 1e-6); // 0.01 * (1 + 4 + 9)
/// assert_eq!(Regularizer::l1(0.01).to_string(), "l1(0.01)");
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Regularizer {
    /// `l1 * sum(|w|)`.
    L1(f64),
    /// `l2 * sum(w^2)`.
    L2(f64),
    /// Both: `l1 * sum(|w|) + l2 * sum(w^2)`.
    L1L2(f64, f64),
}

impl Regularizer {
    /// Keras' `regularizers.l1(l1)` (Keras' default factor is 0.01).
    pub fn l1(l1: f64) -> Self {
        Regularizer::L1(l1)
    }
    /// Keras' `regularizers.l2(l2)` (Keras' default factor is 0.01).
    pub fn l2(l2: f64) -> Self {
        Regularizer::L2(l2)
    }
    /// Keras' `regularizers.l1_l2(l1, l2)` (Keras' defaults are 0.01 and 0.01).
    pub fn l1_l2(l1: f64, l2: f64) -> Self {
        Regularizer::L1L2(l1, l2)
    }

    fn factors(self) -> (f64, f64) {
        match self {
            Regularizer::L1(a) => (a, 0.0),
            Regularizer::L2(b) => (0.0, b),
            Regularizer::L1L2(a, b) => (a, b),
        }
    }

    /// Checks the factors: finite and not negative.
    ///
    /// # Errors
    /// A negative, NaN or infinite factor, naming `argument`.
    pub fn check(self, argument: &'static str) -> Result<()> {
        let (a, b) = self.factors();
        if !(a.is_finite() && b.is_finite() && a >= 0.0 && b >= 0.0) {
            return Err(Error::invalid(argument, format!("expected finite factors >= 0, received {self}")));
        }
        Ok(())
    }

    /// The penalty, a scalar of `w`'s dtype.
    ///
    /// # Errors
    /// If candle fails.
    pub fn penalty(self, w: &Tensor) -> Result<Tensor> {
        let (a, b) = self.factors();
        let mut p = w.zeros_like()?.sum_all()?;
        if a != 0.0 {
            p = (p + (w.abs()?.sum_all()? * a)?)?;
        }
        if b != 0.0 {
            p = (p + (w.sqr()?.sum_all()? * b)?)?;
        }
        Ok(p)
    }

    /// The penalty's gradient: `l1 * sign(w) + 2 * l2 * w` (0 where `w` is 0, as TensorFlow's).
    ///
    /// # Errors
    /// If candle fails.
    pub fn gradient(self, w: &Tensor) -> Result<Tensor> {
        let (a, b) = self.factors();
        let mut g = (w * (2.0 * b))?;
        if a != 0.0 {
            g = (g + (w.sign()? * a)?)?;
        }
        Ok(g)
    }
}

impl std::fmt::Display for Regularizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Regularizer::L1(a) => write!(f, "l1({a})"),
            Regularizer::L2(b) => write!(f, "l2({b})"),
            Regularizer::L1L2(a, b) => write!(f, "l1_l2({a}, {b})"),
        }
    }
}

impl FromStr for Regularizer {
    type Err = Error;
    /// `"l2"` (Keras' default factor 0.01), `"l2(0.0001)"`, `"l1(0.01)"`, `"l1_l2(0.01, 0.02)"`.
    fn from_str(s: &str) -> Result<Self> {
        let bad =
            || Error::invalid("regularizer", format!("expected l1, l2 or l1_l2 with optional factors, received {s:?}"));
        let (name, args) = match s.split_once('(') {
            Some((n, rest)) => (n.trim(), rest.strip_suffix(')').ok_or_else(bad)?),
            None => (s.trim(), ""),
        };
        let nums: Vec<f64> = args
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .map(|a| a.trim().parse().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        let r = match (name, nums.as_slice()) {
            ("l1", []) => Regularizer::L1(0.01),
            ("l1", [a]) => Regularizer::L1(*a),
            ("l2", []) => Regularizer::L2(0.01),
            ("l2", [b]) => Regularizer::L2(*b),
            ("l1_l2", []) => Regularizer::L1L2(0.01, 0.01),
            ("l1_l2", [a, b]) => Regularizer::L1L2(*a, *b),
            _ => return Err(bad()),
        };
        r.check("regularizer")?;
        Ok(r)
    }
}
