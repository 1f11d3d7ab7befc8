//! Activation functions, as in `keras.activations`.

use crate::{Error, Result};
use candle_core::{Tensor, D};
use std::str::FromStr;

/// An element-wise (or, for softmax, last-axis) activation.
///
/// Parsed from Keras' strings: `"relu".parse::<Activation>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Activation {
    /// `x` (Keras' default: no activation).
    #[default]
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `exp(x) / sum(exp(x))` over the last axis.
    Softmax,
    /// `log(1 + exp(x))`.
    Softplus,
    /// `x` if `x > 0`, else `exp(x) - 1`.
    Elu,
}

impl Activation {
    /// Keras' name (`"relu"`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::Softplus => "softplus",
            Activation::Elu => "elu",
        }
    }

    /// Applies the activation.
    ///
    /// # Errors
    /// Fails only if candle fails (e.g. an integer tensor).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Linear => x.clone(),
            Activation::Relu => x.relu()?,
            Activation::Sigmoid => {
                // 1 / (1 + exp(-x)), from exp(-|x|) so that it never overflows.
                let e = x.abs()?.neg()?.exp()?;
                let pos = x.ge(0.0)?;
                let num = pos.where_cond(&e.ones_like()?, &e)?;
                (num / (e + 1.0)?)?
            }
            Activation::Tanh => x.tanh()?,
            Activation::Softmax => {
                let max = x.max_keepdim(D::Minus1)?.detach();
                let e = x.broadcast_sub(&max)?.exp()?;
                e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
            }
            Activation::Softplus => {
                // max(x, 0) + log(1 + exp(-|x|))
                (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?
            }
            Activation::Elu => {
                let neg = (x.minimum(0.0)?.exp()? - 1.0)?;
                x.ge(0.0)?.where_cond(x, &neg)?
            }
        })
    }
}

impl Activation {
    /// The gradient through the activation, from its output `y` and the output's gradient `dy`:
    /// every activation here has a derivative that its output alone gives (softplus:
    /// `1 - exp(-y)`; elu: `y + 1` below 0).
    ///
    /// ```
    /// use kandle::activations::Activation;
    /// use candle_core::{Device, Tensor};
    /// let y = Tensor::new(&[0.5f64, 0.25], &Device::Cpu)?;
    /// let dy = Tensor::new(&[1f64, 2.], &Device::Cpu)?;
    /// let g = Activation::Sigmoid.gradient(&y, &dy)?.to_vec1::<f64>()?;
    /// assert_eq!(g, vec![0.25, 2. * 0.25 * 0.75]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// Shapes that differ.
    pub fn gradient(self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Linear => dy.clone(),
            Activation::Relu if y.device().is_cpu() => crate::kernels::relu_backward(y, dy)?,
            Activation::Relu => (dy * y.gt(0.0)?.to_dtype(dy.dtype())?)?,
            Activation::Sigmoid => (dy * (y * y.affine(-1.0, 1.0)?)?)?,
            Activation::Tanh => (dy * y.sqr()?.affine(-1.0, 1.0)?)?,
            Activation::Softmax => {
                let s = (dy * y)?.sum_keepdim(D::Minus1)?;
                (y * dy.broadcast_sub(&s)?)?
            }
            Activation::Softplus => (dy * y.neg()?.exp()?.affine(-1.0, 1.0)?)?,
            Activation::Elu => y.ge(0.0)?.where_cond(dy, &(dy * (y + 1.0)?)?)?,
        })
    }
}

impl FromStr for Activation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" | "" => Activation::Linear,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            "softplus" => Activation::Softplus,
            "elu" => Activation::Elu,
            other => {
                return Err(Error::invalid(
                    "activation",
                    format!("expected one of linear, relu, sigmoid, tanh, softmax, softplus, elu; received {other:?}"),
                ))
            }
        })
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
