//! Activation functions, as in `keras.activations`.

use crate::error::{Error, Result};
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
    /// `scale * elu(x, alpha)` with Keras' `alpha = 1.67326324...`, `scale = 1.05070098...`.
    Selu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `relu6(x + 3) / 6`, Keras 3's piecewise-linear sigmoid.
    HardSigmoid,
    /// `x * sigmoid(x)`, Keras' `"silu"` and `"swish"`.
    Silu,
    /// `0.5 x (1 + erf(x / sqrt(2)))`, Keras' exact GELU (`approximate=False`, its default).
    Gelu,
}

/// SELU's constants, as Keras writes them.
const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

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
            Activation::Selu => "selu",
            Activation::Relu6 => "relu6",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
        }
    }

    /// Whether the gradient needs the activation's input, not only its output (GELU and SiLU
    /// are not monotonic): see [`Activation::gradient_with_input`].
    pub fn needs_input(self) -> bool {
        matches!(self, Activation::Silu | Activation::Gelu)
    }

    /// Applies the activation.
    ///
    /// # Errors
    /// Fails only if candle fails (e.g. an integer tensor).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        // One parallel pass on the CPU for the activations between layers of ImageNet networks.
        use crate::kernels::Unary;
        let unary = match self {
            Activation::Relu => Some(Unary::Relu),
            Activation::Relu6 => Some(Unary::Relu6),
            Activation::Sigmoid => Some(Unary::Sigmoid),
            Activation::Silu => Some(Unary::Silu),
            _ => None,
        };
        if let Some(y) = unary.map(|u| crate::kernels::activation_f32(x, u)).transpose()?.flatten() {
            return Ok(y);
        }
        Ok(match self {
            Activation::Linear => x.clone(),
            // x * (x > 0) rather than candle's relu, whose gradient passes at exactly 0 (zero
            // inputs under a zero bias make many such values); TensorFlow's, as kandle's
            // kernels, is 0 there.
            Activation::Relu => (x * x.gt(0.0)?.to_dtype(x.dtype())?)?,
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
            Activation::Selu => {
                let neg = ((x.minimum(0.0)?.exp()? - 1.0)? * SELU_ALPHA)?;
                (x.gt(0.0)?.where_cond(x, &neg)? * SELU_SCALE)?
            }
            Activation::Relu6 => x.clamp(0.0, 6.0)?,
            Activation::HardSigmoid => (x + 3.0)?.clamp(0.0, 6.0)?.affine(1.0 / 6.0, 0.0)?,
            Activation::Silu => x.silu()?,
            Activation::Gelu => x.gelu_erf()?,
        })
    }
}

impl Activation {
    /// The gradient through the activation, from its output `y` and the output's gradient `dy`:
    /// every activation but GELU and SiLU has a derivative that its output alone gives
    /// (softplus: `1 - exp(-y)`; elu: `y + 1` below 0); for those two see
    /// [`Activation::gradient_with_input`].
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
    /// Shapes that differ; GELU and SiLU (their gradient needs the input).
    pub fn gradient(self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Linear => dy.clone(),
            Activation::Relu if crate::kernels::cpu_kernels(y.device()) => crate::kernels::relu_backward(y, dy)?,
            Activation::Relu => (dy * y.gt(0.0)?.to_dtype(dy.dtype())?)?,
            Activation::Sigmoid => (dy * (y * y.affine(-1.0, 1.0)?)?)?,
            Activation::Tanh => (dy * y.sqr()?.affine(-1.0, 1.0)?)?,
            Activation::Softmax => {
                let s = (dy * y)?.sum_keepdim(D::Minus1)?;
                (y * dy.broadcast_sub(&s)?)?
            }
            Activation::Softplus => (dy * y.neg()?.exp()?.affine(-1.0, 1.0)?)?,
            Activation::Elu => y.ge(0.0)?.where_cond(dy, &(dy * (y + 1.0)?)?)?,
            // y > 0 <=> x > 0; below, dy/dx = scale alpha exp(x) = y + scale alpha.
            Activation::Selu => y.gt(0.0)?.where_cond(&(dy * SELU_SCALE)?, &(dy * (y + SELU_SCALE * SELU_ALPHA)?)?)?,
            Activation::Relu6 => (dy * (y.gt(0.0)? * y.lt(6.0)?)?.to_dtype(dy.dtype())?)?,
            Activation::HardSigmoid => (dy * ((y.gt(0.0)? * y.lt(1.0)?)?.to_dtype(dy.dtype())? / 6.0)?)?,
            Activation::Silu | Activation::Gelu => {
                return Err(Error::invalid(
                    "activation",
                    format!("the gradient of {} needs its input: use gradient_with_input", self.name()),
                ))
            }
        })
    }

    /// The gradient through the activation from its input `x`, its output `y` and the output's
    /// gradient `dy`, for every activation (GELU: `Phi(x) + x phi(x)`; SiLU:
    /// `s (1 + x (1 - s))` with `s = sigmoid(x)`).
    ///
    /// ```
    /// use kandle::activations::Activation;
    /// use candle_core::{Device, Tensor};
    /// let x = Tensor::new(&[0f64], &Device::Cpu)?;
    /// let y = Activation::Gelu.apply(&x)?;
    /// let g = Activation::Gelu.gradient_with_input(&x, &y, &x.ones_like()?)?.to_vec1::<f64>()?;
    /// assert_eq!(g, vec![0.5]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// Shapes that differ.
    pub fn gradient_with_input(self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Silu => {
                let s = Activation::Sigmoid.apply(x)?;
                let one_minus = s.affine(-1.0, 1.0)?;
                (dy * (&s * ((x * one_minus)? + 1.0)?)?)?
            }
            Activation::Gelu => {
                let cdf = ((x / std::f64::consts::SQRT_2)?.erf()? + 1.0)?.affine(0.5, 0.0)?;
                let pdf = (x.sqr()?.affine(-0.5, 0.0)?.exp()? / (2.0 * std::f64::consts::PI).sqrt())?;
                (dy * (cdf + (x * pdf)?)?)?
            }
            other => other.gradient(y, dy)?,
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
            "selu" => Activation::Selu,
            "relu6" => Activation::Relu6,
            "hard_sigmoid" => Activation::HardSigmoid,
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(Error::invalid(
                    "activation",
                    format!(
                        "expected one of linear, relu, sigmoid, tanh, softmax, softplus, elu, selu, relu6, \
                         hard_sigmoid, silu, swish, gelu; received {other:?}"
                    ),
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
