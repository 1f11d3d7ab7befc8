//! Layers that change an image's size: `UpSampling2D` (nearest or bilinear, as Keras'
//! `layers/reshaping/up_sampling2d.py`) and `Cropping2D` (`layers/reshaping/cropping2d.py`).
//! Both are linear maps of the input written with candle's ops (an interpolation matrix per
//! axis, a narrow), so candle's autograd differentiates them.

use super::{check_input, common_layer_methods, common_trait_methods, expect_rank, not_built, Common, Config, Layer};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// How [`UpSampling2D`] fills the new pixels (Keras' `interpolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpSampling {
    /// Each pixel repeated (Keras' default).
    #[default]
    Nearest,
    /// TensorFlow's bilinear resize with half-pixel centres, no antialiasing.
    Bilinear,
}

impl UpSampling {
    fn name(self) -> &'static str {
        match self {
            UpSampling::Nearest => "nearest",
            UpSampling::Bilinear => "bilinear",
        }
    }
}

impl std::str::FromStr for UpSampling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nearest" => Ok(UpSampling::Nearest),
            "bilinear" => Ok(UpSampling::Bilinear),
            other => Err(Error::invalid("interpolation", format!("expected nearest or bilinear, received {other:?}"))),
        }
    }
}

/// Repeats the rows and columns of channels-last images, as `keras.layers.UpSampling2D(size,
/// interpolation)`: `size` `(rows, cols)` (Keras' default `(2, 2)`), nearest or bilinear.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::{UpSampling, UpSampling2D};
/// let m = Sequential::new().add(UpSampling2D::new(2).interpolation(UpSampling::Bilinear).input_shape((4, 5, 3)));
/// assert_eq!(m.output_shape()?, vec![8, 10, 3]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct UpSampling2D {
    common: Common,
    size: (usize, usize),
    interpolation: UpSampling,
    built: Option<Vec<usize>>,
}

impl Default for UpSampling2D {
    fn default() -> Self {
        UpSampling2D { common: Common::default(), size: (2, 2), interpolation: UpSampling::Nearest, built: None }
    }
}

impl UpSampling2D {
    /// Up-sampling by `size`: `s` (both axes) or `(rows, cols)`.
    pub fn new(size: impl super::IntoPair) -> Self {
        UpSampling2D { size: size.into_pair(), ..Self::default() }
    }
    /// Nearest (default) or bilinear.
    pub fn interpolation(mut self, interpolation: UpSampling) -> Self {
        self.interpolation = interpolation;
        self
    }
    common_layer_methods!();

    /// The `(n_out, n_in)` matrix that maps one axis of `n_in` pixels to `n_in * factor`.
    fn matrix(&self, n_in: usize, factor: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let n_out = n_in * factor;
        let mut m = vec![0f64; n_out * n_in];
        for i in 0..n_out {
            match self.interpolation {
                UpSampling::Nearest => m[i * n_in + i / factor] = 1.0,
                UpSampling::Bilinear => {
                    // TensorFlow's half-pixel centres: source (i + 0.5) / factor - 0.5, clamped.
                    let src = ((i as f64 + 0.5) / factor as f64 - 0.5).max(0.0);
                    let lo = (src.floor() as usize).min(n_in - 1);
                    let hi = (lo + 1).min(n_in - 1);
                    let w = src - lo as f64;
                    m[i * n_in + lo] += 1.0 - w;
                    m[i * n_in + hi] += w;
                }
            }
        }
        Ok(Tensor::from_vec(m, (n_out, n_in), device)?.to_dtype(dtype)?)
    }
}

impl Layer for UpSampling2D {
    fn class_name(&self) -> &'static str {
        "UpSampling2D"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        expect_rank(|| self.common.label("UpSampling2D"), input_shape, 3, "(height, width, channels)")?;
        let (r, c) = self.size;
        if r == 0 || c == 0 {
            return Err(Error::invalid(
                "size",
                format!("{}: expected sizes >= 1, received {:?}", self.common.label("UpSampling2D"), self.size),
            ));
        }
        let label = || self.common.label("UpSampling2D");
        super::grown_shape(label, &[input_shape[0].checked_mul(r), input_shape[1].checked_mul(c), Some(input_shape[2])])
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("UpSampling2D")))?;
        check_input(|| self.common.label("UpSampling2D"), input, x)?;
        let (h, w) = (input[0], input[1]);
        let (ah, aw) =
            (self.matrix(h, self.size.0, x.dtype(), x.device())?, self.matrix(w, self.size.1, x.dtype(), x.device())?);
        // (N, H, W, C) -> (N, C, H, W): rows then columns through their matrices.
        let t = x.permute((0, 3, 1, 2))?.contiguous()?;
        let t = ah.broadcast_matmul(&t)?; // (N, C, Ho, W)
        let t = t.broadcast_matmul(&aw.t()?)?; // (N, C, Ho, Wo)
        Ok(t.permute((0, 2, 3, 1))?.contiguous()?)
    }
    fn get_config(&self) -> Config {
        Config::new().set("size", vec![self.size.0, self.size.1]).set("interpolation", self.interpolation.name())
    }
}

/// Crops rows and columns off channels-last images, as `keras.layers.Cropping2D(cropping)`:
/// `((top, bottom), (left, right))` (Keras' default none).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::Cropping2D;
/// let m = Sequential::new().add(Cropping2D::asymmetric((2, 1), (0, 3)).input_shape((28, 28, 1)));
/// assert_eq!(m.output_shape()?, vec![25, 25, 1]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Cropping2D {
    common: Common,
    /// `((top, bottom), (left, right))`.
    cropping: ((usize, usize), (usize, usize)),
    built: Option<Vec<usize>>,
}

impl Cropping2D {
    /// Symmetric cropping: `p` (every side) or `(rows, cols)` (top and bottom, left and right).
    pub fn new(cropping: impl super::IntoPair) -> Self {
        let (r, c) = cropping.into_pair();
        Cropping2D { cropping: ((r, r), (c, c)), ..Self::default() }
    }
    /// Keras' `((top, bottom), (left, right))`.
    pub fn asymmetric(rows: (usize, usize), cols: (usize, usize)) -> Self {
        Cropping2D { cropping: (rows, cols), ..Self::default() }
    }
    common_layer_methods!();
}

impl Layer for Cropping2D {
    fn class_name(&self) -> &'static str {
        "Cropping2D"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        let label = || self.common.label("Cropping2D");
        expect_rank(label, input_shape, 3, "(height, width, channels)")?;
        let ((t, b), (l, r)) = self.cropping;
        if t + b >= input_shape[0] || l + r >= input_shape[1] {
            return Err(Error::Shape {
                context: label(),
                expected: format!(
                    "an image larger than the cropping ((top, bottom), (left, right)) {:?}",
                    self.cropping
                ),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(vec![input_shape[0] - t - b, input_shape[1] - l - r, input_shape[2]])
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("Cropping2D")))?;
        check_input(|| self.common.label("Cropping2D"), input, x)?;
        let ((t, b), (l, r)) = self.cropping;
        Ok(x.narrow(1, t, input[0] - t - b)?.narrow(2, l, input[1] - l - r)?.contiguous()?)
    }
    fn get_config(&self) -> Config {
        let ((t, b), (l, r)) = self.cropping;
        Config::new().set("cropping", vec![vec![t, b], vec![l, r]])
    }
}
