//! Keras 3's color augmentation layers: `RandomContrast` and `RandomBrightness`, active in
//! training only, one random factor per image, results clipped to the images' value range.

use super::augment::{augmentation_layer, map_images, uniform, Draws, IntoFactor};
use crate::error::{Error, Result};
use crate::layers::{common_layer_methods, Common, Config};
use candle_core::Tensor;

fn check_value_range(label: String, (lo, hi): (f64, f64)) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(Error::invalid(
            "value_range",
            format!("{label}: expected finite (low, high), received ({lo}, {hi})"),
        ));
    }
    Ok(())
}

/// Scales each image's contrast by a random factor in training, as `keras.layers.RandomContrast`:
/// each channel becomes `(x - mean) * factor + mean` (its mean over the image), clipped to
/// `value_range` (default `(0, 255)`). As Keras 3.15 reads `factor`: a number `f` draws the factor
/// in `[1, 1 + f]`, a pair `(a, b)` (sorted) in `[1 - a, 1 + b]`.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::RandomContrast;
/// let inputs = Input::new((32, 32, 3));
/// let outputs = RandomContrast::new(0.2).value_range(0.0, 1.0).call(&inputs)?;
/// let model = Model::new(&[inputs], &[outputs])?;
/// let images = Tensor::rand(0f32, 1., (2, 32, 32, 3), &Device::Cpu)?;
/// // Identity at inference: predict leaves the images as they are; fit draws per image.
/// let out = model.predict(&images, 2)?;
/// assert_eq!((out - &images)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RandomContrast {
    common: Common,
    factor: (f64, f64),
    value_range: (f64, f64),
    draws: Draws,
    built: Option<Vec<usize>>,
}

impl RandomContrast {
    /// Contrast factors as Keras draws them from `factor` (in `[0, 1]`).
    pub fn new(factor: impl IntoFactor) -> Self {
        // Keras' bounds for the contrast are [0, 1]: a number f is (max(-f, 0), f).
        RandomContrast { factor: factor.into_factor_above(0.0), value_range: (0.0, 255.0), ..Self::default() }
    }
    /// The images' value range, to which results are clipped (default `(0, 255)`).
    pub fn value_range(mut self, low: f64, high: f64) -> Self {
        self.value_range = (low, high);
        self
    }
    /// The layer's own seed (default: drawn from the model's seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.draws = Draws::new(Some(seed));
        self
    }
    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (lo, hi) = self.factor;
        // Keras' check: the range must meet [0, 1].
        if !(lo.is_finite() && hi.is_finite() && lo <= 1.0 && hi >= 0.0) {
            return Err(Error::invalid(
                "factor",
                format!(
                    "{}: expected a number in [0, 1] or a pair meeting it, received ({lo}, {hi})",
                    self.common.label("RandomContrast")
                ),
            ));
        }
        check_value_range(self.common.label("RandomContrast"), self.value_range)?;
        Ok(input.to_vec())
    }

    fn apply(&self, x: &Tensor, training: bool, row_offset: usize) -> Result<Tensor> {
        if !training {
            return Ok(x.clone());
        }
        let (n, h, w, c) = x.dims4()?;
        let range = (1.0 - self.factor.0, 1.0 + self.factor.1);
        let factors: Vec<f32> =
            self.draws.generators(n, row_offset).into_iter().map(|mut r| uniform(&mut r, range) as f32).collect();
        let (lo, hi) = (self.value_range.0 as f32, self.value_range.1 as f32);
        map_images(x, (h, w), |i, img, out| {
            let mut mean = vec![0f32; c];
            for px in img.chunks(c) {
                mean.iter_mut().zip(px).for_each(|(m, v)| *m += v);
            }
            mean.iter_mut().for_each(|m| *m /= (h * w) as f32);
            for (o, px) in out.chunks_mut(c).zip(img.chunks(c)) {
                for ch in 0..c {
                    o[ch] = ((px[ch] - mean[ch]) * factors[i] + mean[ch]).clamp(lo, hi);
                }
            }
        })
    }

    fn config(&self) -> Config {
        Config::new()
            .set("factor", vec![self.factor.0, self.factor.1])
            .set("value_range", vec![self.value_range.0, self.value_range.1])
            .set("seed", self.draws.seed)
    }
}

augmentation_layer!(RandomContrast, "RandomContrast", draws: true);

/// Adds a random brightness to each image in training, as `keras.layers.RandomBrightness`:
/// `x + delta`, `delta` drawn in `factor` times the value range's width (a number `f`:
/// `[-f, f]`), clipped to `value_range` (default `(0, 255)`).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::RandomBrightness;
/// let inputs = Input::new((32, 32, 3));
/// let outputs = RandomBrightness::new(0.1).value_range(0.0, 1.0).call(&inputs)?;
/// let model = Model::new(&[inputs], &[outputs])?;
/// let images = Tensor::rand(0f32, 1., (2, 32, 32, 3), &Device::Cpu)?;
/// // Identity at inference: predict leaves the images as they are; fit draws per image.
/// let out = model.predict(&images, 2)?;
/// assert_eq!((out - &images)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RandomBrightness {
    common: Common,
    factor: (f64, f64),
    value_range: (f64, f64),
    draws: Draws,
    built: Option<Vec<usize>>,
}

impl RandomBrightness {
    /// Brightness deltas of up to `factor` (in `[-1, 1]`) of the value range.
    pub fn new(factor: impl IntoFactor) -> Self {
        RandomBrightness { factor: factor.into_factor(), value_range: (0.0, 255.0), ..Self::default() }
    }
    /// The images' value range, to which results are clipped (default `(0, 255)`).
    pub fn value_range(mut self, low: f64, high: f64) -> Self {
        self.value_range = (low.min(high), low.max(high));
        self
    }
    /// The layer's own seed (default: drawn from the model's seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.draws = Draws::new(Some(seed));
        self
    }
    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (lo, hi) = self.factor;
        if !(lo.is_finite() && hi.is_finite() && (-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi)) {
            return Err(Error::invalid(
                "factor",
                format!(
                    "{}: expected numbers in [-1, 1], received ({lo}, {hi})",
                    self.common.label("RandomBrightness")
                ),
            ));
        }
        check_value_range(self.common.label("RandomBrightness"), self.value_range)?;
        Ok(input.to_vec())
    }

    fn apply(&self, x: &Tensor, training: bool, row_offset: usize) -> Result<Tensor> {
        if !training {
            return Ok(x.clone());
        }
        let (n, h, w, _) = x.dims4()?;
        let width = self.value_range.1 - self.value_range.0;
        let deltas: Vec<f32> = self
            .draws
            .generators(n, row_offset)
            .into_iter()
            .map(|mut r| (uniform(&mut r, self.factor) as f32) * width as f32)
            .collect();
        let (lo, hi) = (self.value_range.0 as f32, self.value_range.1 as f32);
        map_images(x, (h, w), |i, img, out| {
            out.iter_mut().zip(img).for_each(|(o, v)| *o = (v + deltas[i]).clamp(lo, hi));
        })
    }

    fn config(&self) -> Config {
        Config::new()
            .set("factor", vec![self.factor.0, self.factor.1])
            .set("value_range", vec![self.value_range.0, self.value_range.1])
            .set("seed", self.draws.seed)
    }
}

augmentation_layer!(RandomBrightness, "RandomBrightness", draws: true);
