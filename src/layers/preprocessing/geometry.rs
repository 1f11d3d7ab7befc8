//! Keras 3's geometric augmentation layers: `RandomFlip`, `RandomRotation`,
//! `RandomTranslation`, `RandomZoom`. Active in training only (the identity at inference), one
//! random transform per image, each a single resampling pass as TensorFlow's
//! `ImageProjectiveTransformV3` computes it for Keras.

use super::augment::{augmentation_layer, map_images, uniform, Draws, IntoFactor};
use super::image_ops::affine_transform;
use super::image_ops::{FillMode, Interpolation};
use crate::error::{Error, Result};
use crate::layers::{common_layer_methods, Common, Config};
use candle_core::Tensor;
use rand::Rng;

/// Keras' `mode` of `RandomFlip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlipMode {
    /// Left-right flips.
    Horizontal,
    /// Up-down flips.
    Vertical,
    /// Both, each with probability one half (Keras' default).
    #[default]
    HorizontalAndVertical,
}

impl FlipMode {
    fn name(self) -> &'static str {
        match self {
            FlipMode::Horizontal => "horizontal",
            FlipMode::Vertical => "vertical",
            FlipMode::HorizontalAndVertical => "horizontal_and_vertical",
        }
    }
}

impl std::str::FromStr for FlipMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "horizontal" => Ok(FlipMode::Horizontal),
            "vertical" => Ok(FlipMode::Vertical),
            "horizontal_and_vertical" => Ok(FlipMode::HorizontalAndVertical),
            other => Err(Error::invalid(
                "mode",
                format!("expected horizontal, vertical or horizontal_and_vertical, received {other:?}"),
            )),
        }
    }
}

/// Flips each image left-right and/or up-down with probability one half, in training, as
/// `keras.layers.RandomFlip`.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::{FlipMode, RandomFlip};
/// let model = Sequential::new().seed(0).add(RandomFlip::new(FlipMode::Horizontal).input_shape((1, 2, 1)));
/// let x = Tensor::new(&[[[[1f32], [2.]]]], &Device::Cpu)?.repeat((8, 1, 1, 1))?;
/// let y = model.call(&x, true)?.flatten_all()?.to_vec1::<f32>()?;
/// assert!(y.chunks(2).all(|p| p == [1., 2.] || p == [2., 1.]));
/// assert_eq!(model.predict(&x, 8)?.flatten_all()?.to_vec1::<f32>()?, x.flatten_all()?.to_vec1::<f32>()?);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RandomFlip {
    common: Common,
    mode: FlipMode,
    draws: Draws,
    built: Option<Vec<usize>>,
}

impl RandomFlip {
    /// Flips as `mode` says.
    pub fn new(mode: FlipMode) -> Self {
        RandomFlip { mode, ..Self::default() }
    }

    /// The layer's own seed (default: drawn from the model's seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.draws = Draws::new(Some(seed));
        self
    }

    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn apply(&self, x: &Tensor, training: bool, row_offset: usize) -> Result<Tensor> {
        if !training {
            return Ok(x.clone());
        }
        let (n, h, w, _) = x.dims4()?;
        let flips: Vec<(bool, bool)> = self
            .draws
            .generators(n, row_offset)
            .into_iter()
            .map(|mut r| {
                let horizontal = self.mode != FlipMode::Vertical && r.random::<f64>() < 0.5;
                let vertical = self.mode != FlipMode::Horizontal && r.random::<f64>() < 0.5;
                (horizontal, vertical)
            })
            .collect();
        let (wf, hf) = ((w - 1) as f64, (h - 1) as f64);
        map_images(x, (h, w), |i, img, out| {
            let (fh, fv) = flips[i];
            let m = [
                if fh { -1.0 } else { 1.0 },
                0.0,
                if fh { wf } else { 0.0 },
                0.0,
                if fv { -1.0 } else { 1.0 },
                if fv { hf } else { 0.0 },
            ];
            let c = img.len() / (h * w);
            affine_transform(img, (h, w, c), m, Interpolation::Nearest, FillMode::Nearest, 0.0, (h, w), out);
        })
    }

    fn config(&self) -> Config {
        Config::new().set("mode", self.mode.name()).set("seed", self.draws.seed)
    }
}

augmentation_layer!(RandomFlip, "RandomFlip", draws: true);

/// The options every affine augmentation layer has, with Keras' defaults: `reflect` fill,
/// bilinear interpolation, fill value 0.
#[derive(Debug, Clone, Copy)]
struct Resampling {
    fill_mode: FillMode,
    interpolation: Interpolation,
    fill_value: f64,
}

impl Default for Resampling {
    fn default() -> Self {
        Resampling { fill_mode: FillMode::Reflect, interpolation: Interpolation::Bilinear, fill_value: 0.0 }
    }
}

fn fill_mode_name(m: FillMode) -> &'static str {
    match m {
        FillMode::Constant => "constant",
        FillMode::Nearest => "nearest",
        FillMode::Reflect => "reflect",
        FillMode::Wrap => "wrap",
    }
}

fn interpolation_name(i: Interpolation) -> &'static str {
    match i {
        Interpolation::Nearest => "nearest",
        Interpolation::Bilinear => "bilinear",
    }
}

impl Resampling {
    fn config(&self, c: Config) -> Config {
        c.set("fill_mode", fill_mode_name(self.fill_mode))
            .set("interpolation", interpolation_name(self.interpolation))
            .set("fill_value", self.fill_value)
    }

    /// Resamples each image of `x` by its transform.
    fn apply(&self, x: &Tensor, transforms: &[[f64; 6]]) -> Result<Tensor> {
        let (_, h, w, c) = x.dims4()?;
        let s = *self;
        map_images(x, (h, w), |i, img, out| {
            affine_transform(
                img,
                (h, w, c),
                transforms[i],
                s.interpolation,
                s.fill_mode,
                s.fill_value as f32,
                (h, w),
                out,
            )
        })
    }
}

/// The setters of [`Resampling`].
macro_rules! resampling_setters {
    () => {
        /// How points outside the image are filled (default `Reflect`, as Keras' layers):
        /// TensorFlow's modes, `reflect` `(d c b a | a b c d | d c b a)`, `wrap`
        /// `(a b c d | a b c d)`, `nearest`, `constant`.
        pub fn fill_mode(mut self, mode: FillMode) -> Self {
            self.resampling.fill_mode = mode;
            self
        }
        /// Bilinear (default) or nearest.
        pub fn interpolation(mut self, interpolation: Interpolation) -> Self {
            self.resampling.interpolation = interpolation;
            self
        }
        /// The value of points outside the image with `Constant` fill (default 0).
        pub fn fill_value(mut self, value: f64) -> Self {
            self.resampling.fill_value = value;
            self
        }
        /// The layer's own seed (default: drawn from the model's seed).
        pub fn seed(mut self, seed: u64) -> Self {
            self.draws = Draws::new(Some(seed));
            self
        }
    };
}

/// Checks a factor range against `[-1, 1]` (Keras' bounds for rotations, translations, zooms).
fn check_range(label: String, name: &'static str, (lo, hi): (f64, f64)) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && (-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi)) {
        return Err(Error::invalid(name, format!("{label}: expected numbers in [-1, 1], received ({lo}, {hi})")));
    }
    Ok(())
}

fn pair(c: Config, key: &str, (lo, hi): (f64, f64)) -> Config {
    c.set(key, vec![lo, hi])
}

/// Rotates each image by a random angle in training, as `keras.layers.RandomRotation`:
/// `factor` is a fraction of a full turn, `f` meaning `[-f, f]` (`0.1`: up to 36 degrees either
/// way, counter-clockwise for positive), `(a, b)` meaning `[a, b]`.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::{FillMode, RandomRotation};
/// let inputs = Input::new((32, 32, 3));
/// let outputs = RandomRotation::new(0.1).fill_mode(FillMode::Nearest).call(&inputs)?;
/// let model = Model::new(&[inputs], &[outputs])?;
/// let images = Tensor::rand(0f32, 1., (2, 32, 32, 3), &Device::Cpu)?;
/// // Identity at inference: predict leaves the images as they are; fit draws per image.
/// let out = model.predict(&images, 2)?;
/// assert_eq!((out - &images)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RandomRotation {
    common: Common,
    factor: (f64, f64),
    resampling: Resampling,
    draws: Draws,
    built: Option<Vec<usize>>,
}

impl RandomRotation {
    /// Rotations by up to `factor` of a turn (a number `f`: `[-f, f]`; a pair: the range).
    pub fn new(factor: impl IntoFactor) -> Self {
        RandomRotation { factor: factor.into_factor(), ..Self::default() }
    }
    resampling_setters!();
    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        check_range(self.common.label("RandomRotation"), "factor", self.factor)?;
        Ok(input.to_vec())
    }

    fn apply(&self, x: &Tensor, training: bool, row_offset: usize) -> Result<Tensor> {
        if !training {
            return Ok(x.clone());
        }
        let (n, h, w, _) = x.dims4()?;
        let (cx, cy) = (0.5 * (w as f64 - 1.0), 0.5 * (h as f64 - 1.0));
        let range = (self.factor.0 * 360.0, self.factor.1 * 360.0);
        let transforms: Vec<[f64; 6]> = self
            .draws
            .generators(n, row_offset)
            .into_iter()
            .map(|mut r| {
                let angle = (uniform(&mut r, range) as f32 as f64).to_radians();
                let (cos, sin) = (angle.cos(), angle.sin());
                [cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos]
            })
            .collect();
        self.resampling.apply(x, &transforms)
    }

    fn config(&self) -> Config {
        self.resampling.config(pair(Config::new(), "factor", self.factor)).set("seed", self.draws.seed)
    }
}

augmentation_layer!(RandomRotation, "RandomRotation", draws: true);

/// Shifts each image by a random fraction of its height and width in training, as
/// `keras.layers.RandomTranslation` (`0.1`: up to 10% either way; positive moves down and
/// right).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::RandomTranslation;
/// let inputs = Input::new((32, 32, 3));
/// let outputs = RandomTranslation::new(0.1, (-0.2, 0.2)).call(&inputs)?;
/// let model = Model::new(&[inputs], &[outputs])?;
/// let images = Tensor::rand(0f32, 1., (2, 32, 32, 3), &Device::Cpu)?;
/// // Identity at inference: predict leaves the images as they are; fit draws per image.
/// let out = model.predict(&images, 2)?;
/// assert_eq!((out - &images)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RandomTranslation {
    common: Common,
    height_factor: (f64, f64),
    width_factor: (f64, f64),
    resampling: Resampling,
    draws: Draws,
    built: Option<Vec<usize>>,
}

impl RandomTranslation {
    /// Shifts of up to `height_factor` of the height and `width_factor` of the width.
    pub fn new(height_factor: impl IntoFactor, width_factor: impl IntoFactor) -> Self {
        RandomTranslation {
            height_factor: height_factor.into_factor(),
            width_factor: width_factor.into_factor(),
            ..Self::default()
        }
    }
    resampling_setters!();
    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        check_range(self.common.label("RandomTranslation"), "height_factor", self.height_factor)?;
        check_range(self.common.label("RandomTranslation"), "width_factor", self.width_factor)?;
        Ok(input.to_vec())
    }

    fn apply(&self, x: &Tensor, training: bool, row_offset: usize) -> Result<Tensor> {
        if !training {
            return Ok(x.clone());
        }
        let (n, h, w, _) = x.dims4()?;
        let transforms: Vec<[f64; 6]> = self
            .draws
            .generators(n, row_offset)
            .into_iter()
            .map(|mut r| {
                // Keras draws the height's fraction first, and computes in float32.
                let dy = (uniform(&mut r, self.height_factor) * h as f64) as f32 as f64;
                let dx = (uniform(&mut r, self.width_factor) * w as f64) as f32 as f64;
                [1.0, 0.0, -dx, 0.0, 1.0, -dy]
            })
            .collect();
        self.resampling.apply(x, &transforms)
    }

    fn config(&self) -> Config {
        let c = pair(Config::new(), "height_factor", self.height_factor);
        self.resampling.config(pair(c, "width_factor", self.width_factor)).set("seed", self.draws.seed)
    }
}

augmentation_layer!(RandomTranslation, "RandomTranslation", draws: true);

/// Zooms each image in or out by a random factor in training, as `keras.layers.RandomZoom`:
/// `height_factor` `0.2` zooms by 1 +- 0.2 (positive zooms out, negative in); the width takes
/// the height's zoom unless [`RandomZoom::width_factor`] is set.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::RandomZoom;
/// let inputs = Input::new((32, 32, 3));
/// let outputs = RandomZoom::new(0.2).width_factor((-0.1, 0.3)).call(&inputs)?;
/// let model = Model::new(&[inputs], &[outputs])?;
/// let images = Tensor::rand(0f32, 1., (2, 32, 32, 3), &Device::Cpu)?;
/// // Identity at inference: predict leaves the images as they are; fit draws per image.
/// let out = model.predict(&images, 2)?;
/// assert_eq!((out - &images)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RandomZoom {
    common: Common,
    height_factor: (f64, f64),
    width_factor: Option<(f64, f64)>,
    resampling: Resampling,
    draws: Draws,
    built: Option<Vec<usize>>,
}

impl RandomZoom {
    /// Zooms by `1 + height_factor` (both axes, unless a width factor is set).
    pub fn new(height_factor: impl IntoFactor) -> Self {
        RandomZoom { height_factor: height_factor.into_factor(), ..Self::default() }
    }
    /// Zooms the width by its own factor (Keras' `width_factor`; default: the height's zoom).
    pub fn width_factor(mut self, factor: impl IntoFactor) -> Self {
        self.width_factor = Some(factor.into_factor());
        self
    }
    resampling_setters!();
    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        check_range(self.common.label("RandomZoom"), "height_factor", self.height_factor)?;
        if let Some(w) = self.width_factor {
            check_range(self.common.label("RandomZoom"), "width_factor", w)?;
        }
        Ok(input.to_vec())
    }

    fn apply(&self, x: &Tensor, training: bool, row_offset: usize) -> Result<Tensor> {
        if !training {
            return Ok(x.clone());
        }
        let (n, h, w, _) = x.dims4()?;
        let plus1 = |(a, b): (f64, f64)| (1.0 + a, 1.0 + b);
        let transforms: Vec<[f64; 6]> = self
            .draws
            .generators(n, row_offset)
            .into_iter()
            .map(|mut r| {
                let zy = uniform(&mut r, plus1(self.height_factor)) as f32 as f64;
                let zx = match self.width_factor {
                    Some(f) => uniform(&mut r, plus1(f)) as f32 as f64,
                    None => zy,
                };
                let (ox, oy) = ((w as f64 - 1.0) / 2.0 * (1.0 - zx), (h as f64 - 1.0) / 2.0 * (1.0 - zy));
                [zx, 0.0, ox, 0.0, zy, oy]
            })
            .collect();
        self.resampling.apply(x, &transforms)
    }

    fn config(&self) -> Config {
        let c = pair(Config::new(), "height_factor", self.height_factor);
        let c = match self.width_factor {
            Some(w) => pair(c, "width_factor", w),
            None => c.set("width_factor", serde_json::Value::Null),
        };
        self.resampling.config(c).set("seed", self.draws.seed)
    }
}

augmentation_layer!(RandomZoom, "RandomZoom", draws: true);
