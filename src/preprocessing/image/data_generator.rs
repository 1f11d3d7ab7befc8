//! `ImageDataGenerator`: Keras' (legacy) real-time augmentation, complete and fast.

use super::transform::{apply_affine, FillMode, Interpolation, TransformParams};
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use rand::{Rng, RngCore};
use std::sync::Arc;

/// A shift range, as Keras' `width_shift_range` / `height_shift_range` accept it.
#[derive(Debug, Clone, PartialEq)]
pub enum ShiftRange {
    /// `uniform(-r, r)`: a fraction of the size when `r < 1`, else pixels.
    Float(f64),
    /// An integer number of pixels `k * sign`, `k` drawn from `0..n` (Keras' int).
    Int(usize),
    /// A value drawn from the list times a random sign (a fraction of the size when every
    /// value is `< 1`).
    Choices(Vec<f64>),
}

impl From<f64> for ShiftRange {
    fn from(v: f64) -> Self {
        ShiftRange::Float(v)
    }
}
impl From<usize> for ShiftRange {
    fn from(v: usize) -> Self {
        ShiftRange::Int(v)
    }
}
impl From<Vec<f64>> for ShiftRange {
    fn from(v: Vec<f64>) -> Self {
        ShiftRange::Choices(v)
    }
}
impl From<&[f64]> for ShiftRange {
    fn from(v: &[f64]) -> Self {
        ShiftRange::Choices(v.to_vec())
    }
}

impl ShiftRange {
    fn is_zero(&self) -> bool {
        match self {
            ShiftRange::Float(v) => *v == 0.0,
            ShiftRange::Int(n) => *n == 0,
            ShiftRange::Choices(v) => v.is_empty(),
        }
    }

    fn validate(&self, name: &'static str) -> Result<()> {
        let ok = match self {
            ShiftRange::Float(v) => v.is_finite() && *v >= 0.0,
            ShiftRange::Int(_) => true,
            ShiftRange::Choices(v) => v.iter().all(|x| x.is_finite()),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(name, format!("expected a finite, non-negative range, received {self:?}")))
        }
    }

    /// A shift in pixels for an axis of `size` pixels.
    fn draw(&self, size: usize, rng: &mut dyn RngCore) -> f64 {
        let (v, max) = match self {
            ShiftRange::Float(r) => (rng.random_range(-*r..=*r), *r),
            ShiftRange::Int(n) => {
                let k = rng.random_range(0..(*n).max(1)) as f64;
                (if rng.random::<bool>() { k } else { -k }, *n as f64)
            }
            ShiftRange::Choices(c) => {
                let k = c[rng.random_range(0..c.len())];
                (if rng.random::<bool>() { k } else { -k }, c.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b)))
            }
        };
        if max < 1.0 {
            v * size as f64
        } else {
            v
        }
    }
}

/// A function applied to each image (`h x w x c`, channels-last) before the other
/// standardisation steps, as Keras' `preprocessing_function`.
pub type PreprocessingFunction = Arc<dyn Fn(&mut [f32], (usize, usize, usize)) + Send + Sync>;

/// Generates batches of augmented images, as Keras' `ImageDataGenerator`.
///
/// Every parameter has Keras' name and default (all augmentation off). The geometric
/// transforms (rotation, shifts, shear, zoom, flips) are composed into one affine matrix and
/// applied in a single resampling pass; then come the channel shift and brightness, then
/// standardisation (`preprocessing_function`, `rescale`, samplewise, featurewise, ZCA), in
/// Keras' order.
///
/// **A deliberate difference:** Keras' legacy generator draws its x shift from
/// `height_shift_range` (scaled by the number of rows) and its y shift from `width_shift_range`
/// (a long-known bug). kandle shifts along the width by `width_shift_range` and along the
/// height by `height_shift_range`.
///
/// ```
/// use kandle::preprocessing::image::{BatchGenerator, ImageDataGenerator};
/// use candle_core::{DType, Device, Tensor};
/// let x = Tensor::zeros((10, 32, 32, 3), DType::F32, &Device::Cpu)?;
/// let y = Tensor::zeros(10, DType::U8, &Device::Cpu)?;
/// let datagen = ImageDataGenerator::new().width_shift_range(0.1).height_shift_range(0.1).horizontal_flip(true);
/// let mut flow = datagen.flow(&x, &y, 4).seed(0);
/// let (xb, yb) = flow.next().unwrap()?;
/// assert_eq!(xb.dims(), &[4, 32, 32, 3]);
/// assert_eq!(flow.len(), 3); // ceil(10 / 4) batches per epoch
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ImageDataGenerator {
    pub(crate) featurewise_center: bool,
    pub(crate) samplewise_center: bool,
    pub(crate) featurewise_std_normalization: bool,
    pub(crate) samplewise_std_normalization: bool,
    pub(crate) zca_whitening: bool,
    pub(crate) zca_epsilon: Option<f64>,
    pub(crate) rotation_range: f64,
    pub(crate) width_shift_range: Option<ShiftRange>,
    pub(crate) height_shift_range: Option<ShiftRange>,
    pub(crate) brightness_range: Option<Vec<f64>>,
    pub(crate) shear_range: f64,
    pub(crate) zoom_range: Option<(f64, f64)>,
    pub(crate) channel_shift_range: f64,
    pub(crate) fill_mode: FillMode,
    pub(crate) cval: f64,
    pub(crate) horizontal_flip: bool,
    pub(crate) vertical_flip: bool,
    pub(crate) rescale: Option<f64>,
    pub(crate) preprocessing_function: Option<PreprocessingFunction>,
    pub(crate) validation_split: f64,
    pub(crate) interpolation: Interpolation,
    /// Per-channel mean, set by [`ImageDataGenerator::fit`].
    pub(crate) mean: Option<Vec<f32>>,
    /// Per-channel standard deviation, set by [`ImageDataGenerator::fit`].
    pub(crate) std: Option<Vec<f32>>,
    /// ZCA matrix (`d x d`, `d = h * w * c`), set by [`ImageDataGenerator::fit`].
    pub(crate) zca: Option<Arc<Vec<f32>>>,
    /// The image shape `fit` saw.
    pub(crate) fitted_shape: Option<(usize, usize, usize)>,
}

impl std::fmt::Debug for ImageDataGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDataGenerator")
            .field("rotation_range", &self.rotation_range)
            .field("width_shift_range", &self.width_shift_range)
            .field("height_shift_range", &self.height_shift_range)
            .field("shear_range", &self.shear_range)
            .field("zoom_range", &self.zoom_range)
            .field("horizontal_flip", &self.horizontal_flip)
            .field("vertical_flip", &self.vertical_flip)
            .field("fill_mode", &self.fill_mode)
            .finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.$name = v;
            self
        }
    };
}

impl ImageDataGenerator {
    /// A generator with Keras' defaults: no augmentation, no standardisation.
    pub fn new() -> Self {
        Self::default()
    }

    setter!(
        /// Subtract the data set's per-channel mean (from [`ImageDataGenerator::fit`]).
        featurewise_center: bool
    );
    setter!(
        /// Subtract each image's mean.
        samplewise_center: bool
    );
    setter!(
        /// Divide by the data set's per-channel standard deviation (implies featurewise_center).
        featurewise_std_normalization: bool
    );
    setter!(
        /// Divide each image by its standard deviation (implies samplewise_center).
        samplewise_std_normalization: bool
    );
    setter!(
        /// ZCA whitening (implies featurewise_center).
        zca_whitening: bool
    );
    setter!(
        /// Random rotation range in degrees: `uniform(-r, r)` (default 0).
        rotation_range: f64
    );
    setter!(
        /// Random shear angle range in degrees (default 0).
        shear_range: f64
    );
    setter!(
        /// Random channel shift range (default 0).
        channel_shift_range: f64
    );
    setter!(
        /// Fill mode for points outside the image (default [`FillMode::Nearest`]).
        fill_mode: FillMode
    );
    setter!(
        /// Fill value for [`FillMode::Constant`] (default 0).
        cval: f64
    );
    setter!(
        /// Randomly mirror images left-right (default false).
        horizontal_flip: bool
    );
    setter!(
        /// Randomly mirror images top-bottom (default false).
        vertical_flip: bool
    );
    setter!(
        /// Resampling (default bilinear, Keras' `interpolation_order=1`).
        interpolation: Interpolation
    );

    /// Epsilon of ZCA whitening (default 1e-6).
    pub fn zca_epsilon(mut self, eps: f64) -> Self {
        self.zca_epsilon = Some(eps);
        self
    }

    /// Random shift along the width (columns): a float `r` (a fraction of the width when
    /// `r < 1`, else pixels), an integer number of pixels, or a list of values.
    pub fn width_shift_range(mut self, r: impl Into<ShiftRange>) -> Self {
        self.width_shift_range = Some(r.into());
        self
    }

    /// Random shift along the height (rows), as [`ImageDataGenerator::width_shift_range`].
    pub fn height_shift_range(mut self, r: impl Into<ShiftRange>) -> Self {
        self.height_shift_range = Some(r.into());
        self
    }

    /// Random zoom: `z` means `[1 - z, 1 + z]`; x and y are drawn independently.
    pub fn zoom_range(mut self, z: f64) -> Self {
        self.zoom_range = Some((1.0 - z, 1.0 + z));
        self
    }

    /// Random zoom between `lo` and `hi`.
    pub fn zoom_range_between(mut self, lo: f64, hi: f64) -> Self {
        self.zoom_range = Some((lo, hi));
        self
    }

    /// Random brightness factor drawn from `[lo, hi]`, given as a pair (Keras'
    /// `brightness_range`). Values are multiplied by it and clipped to `[0, 255]` (Keras goes
    /// through an 8-bit PIL image, which also truncates `[0, 1]` floats; kandle does not).
    pub fn brightness_range(mut self, range: &[f64]) -> Self {
        self.brightness_range = Some(range.to_vec());
        self
    }

    /// Multiplies the data by `r` after the other transforms (default: none).
    pub fn rescale(mut self, r: f64) -> Self {
        self.rescale = Some(r);
        self
    }

    /// A function applied to each image first (see [`PreprocessingFunction`]).
    pub fn preprocessing_function(
        mut self,
        f: impl Fn(&mut [f32], (usize, usize, usize)) + Send + Sync + 'static,
    ) -> Self {
        self.preprocessing_function = Some(Arc::new(f));
        self
    }

    /// Fraction of images reserved for validation, for `flow(..).subset(..)` (strictly
    /// between 0 and 1).
    pub fn validation_split(mut self, split: f64) -> Self {
        self.validation_split = split;
        self
    }

    /// Checks every parameter, as Keras' constructor does.
    ///
    /// # Errors
    /// Negative or non-finite ranges, a brightness range that is not a pair `lo <= hi`, a zoom
    /// pair with `lo > hi` or a non-positive zoom, `validation_split` outside `(0, 1)` (when
    /// set), a negative ZCA epsilon.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("rotation_range", self.rotation_range),
            ("shear_range", self.shear_range),
            ("channel_shift_range", self.channel_shift_range),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid(name, format!("expected a finite number >= 0, received {v}")));
            }
        }
        if let Some(r) = &self.width_shift_range {
            r.validate("width_shift_range")?;
        }
        if let Some(r) = &self.height_shift_range {
            r.validate("height_shift_range")?;
        }
        if let Some(b) = &self.brightness_range {
            if b.len() != 2 || !b.iter().all(|v| v.is_finite()) || b[0] > b[1] {
                return Err(Error::invalid(
                    "brightness_range",
                    format!("expected a pair [lo, hi] with lo <= hi, received {b:?}"),
                ));
            }
        }
        if let Some((lo, hi)) = self.zoom_range {
            if !(lo.is_finite() && hi.is_finite()) || lo > hi || lo <= 0.0 {
                return Err(Error::invalid("zoom_range", format!("expected 0 < lo <= hi, received ({lo}, {hi})")));
            }
        }
        if self.validation_split != 0.0 && !(self.validation_split > 0.0 && self.validation_split < 1.0) {
            return Err(Error::invalid(
                "validation_split",
                format!("must be strictly between 0 and 1, received {}", self.validation_split),
            ));
        }
        if let Some(r) = self.rescale {
            if !r.is_finite() {
                return Err(Error::invalid("rescale", format!("expected a finite number, received {r}")));
            }
        }
        if let Some(e) = self.zca_epsilon {
            if e.is_nan() || e < 0.0 {
                return Err(Error::invalid("zca_epsilon", format!("expected a number >= 0, received {e}")));
            }
        }
        Ok(())
    }

    /// Whether any geometric or colour augmentation is on.
    pub(crate) fn augments(&self) -> bool {
        self.rotation_range != 0.0
            || self.width_shift_range.as_ref().is_some_and(|r| !r.is_zero())
            || self.height_shift_range.as_ref().is_some_and(|r| !r.is_zero())
            || self.shear_range != 0.0
            || self.zoom_range.is_some_and(|z| z != (1.0, 1.0))
            || self.horizontal_flip
            || self.vertical_flip
            || self.channel_shift_range != 0.0
            || self.brightness_range.is_some()
    }

    /// Random transform parameters for an `h x w` image, as Keras' `get_random_transform`
    /// draws them (with the shift axes fixed: `tx` from `width_shift_range`).
    pub fn get_random_transform(&self, (h, w): (usize, usize), rng: &mut dyn RngCore) -> TransformParams {
        let mut p = TransformParams::default();
        if self.rotation_range != 0.0 {
            p.theta = rng.random_range(-self.rotation_range..=self.rotation_range);
        }
        if let Some(r) = self.height_shift_range.as_ref().filter(|r| !r.is_zero()) {
            p.ty = r.draw(h, rng);
        }
        if let Some(r) = self.width_shift_range.as_ref().filter(|r| !r.is_zero()) {
            p.tx = r.draw(w, rng);
        }
        if self.shear_range != 0.0 {
            p.shear = rng.random_range(-self.shear_range..=self.shear_range);
        }
        if let Some((lo, hi)) = self.zoom_range.filter(|z| *z != (1.0, 1.0)) {
            p.zx = rng.random_range(lo..=hi);
            p.zy = rng.random_range(lo..=hi);
        }
        p.flip_horizontal = self.horizontal_flip && rng.random::<f64>() < 0.5;
        p.flip_vertical = self.vertical_flip && rng.random::<f64>() < 0.5;
        if self.channel_shift_range != 0.0 {
            p.channel_shift_intensity = Some(rng.random_range(-self.channel_shift_range..=self.channel_shift_range));
        }
        if let Some(b) = &self.brightness_range {
            p.brightness = Some(rng.random_range(b[0]..=b[1]));
        }
        p
    }

    /// Applies `p` to one `h x w x c` image in `src`, writing `dst` (Keras' `apply_transform`
    /// on a raw buffer).
    pub fn apply_transform_slice(
        &self,
        src: &[f32],
        shape: (usize, usize, usize),
        p: &TransformParams,
        dst: &mut [f32],
    ) {
        apply_affine(src, shape, p, self.fill_mode, self.cval as f32, self.interpolation, dst);
    }

    /// Applies the transform `p` to one image tensor `(h, w, c)`, as Keras' `apply_transform`.
    ///
    /// ```
    /// use kandle::preprocessing::image::{ImageDataGenerator, TransformParams};
    /// use candle_core::{Device, Tensor};
    /// let img = Tensor::arange(0f32, 9., &Device::Cpu)?.reshape((3, 3, 1))?;
    /// let flipped = ImageDataGenerator::new()
    ///     .apply_transform(&img, &TransformParams { flip_horizontal: true, ..Default::default() })?;
    /// assert_eq!(flipped.flatten_all()?.to_vec1::<f32>()?, vec![2., 1., 0., 5., 4., 3., 8., 7., 6.]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// An image that is not `(h, w, c)`.
    pub fn apply_transform(&self, img: &Tensor, p: &TransformParams) -> Result<Tensor> {
        let (h, w, c) = image_dims(img)?;
        let src = img.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut dst = vec![0f32; src.len()];
        self.apply_transform_slice(&src, (h, w, c), p, &mut dst);
        Ok(Tensor::from_vec(dst, (h, w, c), img.device())?)
    }

    /// Applies a random transform to one image `(h, w, c)`, as Keras' `random_transform`.
    ///
    /// # Errors
    /// Invalid parameters, or an image that is not `(h, w, c)`.
    pub fn random_transform(&self, img: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
        self.validate()?;
        let (h, w, _) = image_dims(img)?;
        let p = self.get_random_transform((h, w), rng);
        self.apply_transform(img, &p)
    }

    /// Standardises one image in place (`preprocessing_function`, `rescale`, samplewise then
    /// featurewise centring and normalisation, ZCA), as Keras' `standardize`.
    pub fn standardize_slice(&self, x: &mut [f32], (h, w, c): (usize, usize, usize)) {
        if let Some(f) = &self.preprocessing_function {
            f(x, (h, w, c));
        }
        if let Some(r) = self.rescale {
            let r = r as f32;
            x.iter_mut().for_each(|v| *v *= r);
        }
        let samplewise_center = self.samplewise_center || self.samplewise_std_normalization;
        if samplewise_center && !x.is_empty() {
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
            x.iter_mut().for_each(|v| *v -= mean as f32);
        }
        if self.samplewise_std_normalization && !x.is_empty() {
            let var = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
            let d = (var.sqrt() + 1e-6) as f32;
            x.iter_mut().for_each(|v| *v /= d);
        }
        let featurewise_center = self.featurewise_center || self.featurewise_std_normalization || self.zca_whitening;
        if featurewise_center {
            if let Some(mean) = &self.mean {
                for px in x.chunks_exact_mut(c) {
                    px.iter_mut().zip(mean).for_each(|(v, m)| *v -= m);
                }
            }
        }
        if self.featurewise_std_normalization && !self.zca_whitening {
            if let Some(std) = &self.std {
                for px in x.chunks_exact_mut(c) {
                    px.iter_mut().zip(std).for_each(|(v, s)| *v /= s + 1e-6);
                }
            }
        }
        if self.zca_whitening {
            if let Some(z) = &self.zca {
                let d = x.len();
                let mut out = vec![0f32; d];
                for (i, &v) in x.iter().enumerate() {
                    let row = &z[i * d..(i + 1) * d];
                    out.iter_mut().zip(row).for_each(|(o, &m)| *o += v * m);
                }
                x.copy_from_slice(&out);
            }
        }
    }

    /// Standardises a batch `(n, h, w, c)` or one image `(h, w, c)`, as Keras' `standardize`.
    ///
    /// # Errors
    /// A tensor of another rank; featurewise statistics not fitted, or fitted on images of
    /// another shape ([`ImageDataGenerator::check_fitted`]).
    pub fn standardize(&self, x: &Tensor) -> Result<Tensor> {
        let (dims, n) = match x.rank() {
            3 => (image_dims(x)?, 1),
            4 => {
                let d = x.dims();
                ((d[1], d[2], d[3]), d[0])
            }
            _ => {
                return Err(Error::Shape {
                    context: "standardize `x`".into(),
                    expected: "(h, w, c) or (n, h, w, c)".into(),
                    received: format!("{:?}", x.dims()),
                })
            }
        };
        self.check_fitted(dims)?;
        let mut v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let size = dims.0 * dims.1 * dims.2;
        for img in v.chunks_exact_mut(size.max(1)).take(n) {
            self.standardize_slice(img, dims);
        }
        Ok(Tensor::from_vec(v, x.shape(), x.device())?)
    }

    /// Computes the data statistics that featurewise centring, normalisation and ZCA whitening
    /// need, from sample data `(n, h, w, c)`, as Keras' `fit` (without augmentation rounds).
    ///
    /// # Errors
    /// Data that is not `(n, h, w, c)` or is empty.
    pub fn fit(&mut self, x: &Tensor) -> Result<()> {
        if x.rank() != 4 || x.elem_count() == 0 {
            return Err(Error::Shape {
                context: "ImageDataGenerator::fit `x`".into(),
                expected: "non-empty (n, h, w, c)".into(),
                received: format!("{:?}", x.dims()),
            });
        }
        let (n, c) = (x.dims()[0], x.dims()[3]);
        let mut v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(r) = self.rescale {
            v.iter_mut().for_each(|p| *p *= r as f32);
        }
        let count = (v.len() / c) as f64;
        let mut mean = vec![0f64; c];
        for px in v.chunks_exact(c) {
            mean.iter_mut().zip(px).for_each(|(m, &p)| *m += p as f64);
        }
        mean.iter_mut().for_each(|m| *m /= count);
        let mut var = vec![0f64; c];
        for px in v.chunks_exact(c) {
            var.iter_mut().zip(px).zip(&mean).for_each(|((s, &p), m)| *s += (p as f64 - m).powi(2));
        }
        self.mean = Some(mean.iter().map(|&m| m as f32).collect());
        self.std = Some(var.iter().map(|&s| (s / count).sqrt() as f32).collect());
        self.fitted_shape = Some((x.dims()[1], x.dims()[2], c));
        if self.zca_whitening {
            for px in v.chunks_exact_mut(c) {
                px.iter_mut().zip(&mean).for_each(|(p, m)| *p -= *m as f32);
            }
            let d = v.len() / n;
            self.zca = Some(Arc::new(super::zca::zca_matrix(&v, n, d, self.zca_epsilon.unwrap_or(1e-6))?));
        }
        Ok(())
    }

    /// The per-channel mean computed by [`ImageDataGenerator::fit`] (Keras' `mean`).
    pub fn mean(&self) -> Option<&[f32]> {
        self.mean.as_deref()
    }

    /// The per-channel standard deviation computed by [`ImageDataGenerator::fit`].
    pub fn std(&self) -> Option<&[f32]> {
        self.std.as_deref()
    }

    /// The `d x d` ZCA whitening matrix computed by [`ImageDataGenerator::fit`] (Keras'
    /// `zca_whitening_matrix`), `d = h * w * c`.
    ///
    /// # Errors
    /// If candle cannot make the tensor.
    pub fn zca_whitening_matrix(&self) -> Result<Option<Tensor>> {
        let Some(z) = &self.zca else { return Ok(None) };
        let d = (z.len() as f64).sqrt() as usize;
        Ok(Some(Tensor::from_vec(z.to_vec(), (d, d), &candle_core::Device::Cpu)?))
    }

    /// Checks that the statistics featurewise standardisation needs were computed, for images
    /// of `(h, w, c)`: Keras only warns and trains on unstandardised data; kandle refuses.
    ///
    /// # Errors
    /// `featurewise_center`, `featurewise_std_normalization` or `zca_whitening` without
    /// [`ImageDataGenerator::fit`], or statistics fitted on images of another shape.
    pub fn check_fitted(&self, (h, w, c): (usize, usize, usize)) -> Result<()> {
        let needs = self.featurewise_center || self.featurewise_std_normalization || self.zca_whitening;
        if !needs {
            return Ok(());
        }
        let what = if self.zca_whitening {
            "zca_whitening"
        } else if self.featurewise_std_normalization {
            "featurewise_std_normalization"
        } else {
            "featurewise_center"
        };
        let Some(fitted) = self.fitted_shape else {
            return Err(Error::invalid(
                what,
                format!(
                    "{what} needs the data's statistics: call fit(x) on the generator first \
                     (Keras only warns and then trains on unstandardised images)"
                ),
            ));
        };
        let same = if self.zca_whitening { fitted == (h, w, c) } else { fitted.2 == c };
        if !same {
            return Err(Error::Shape {
                context: format!("ImageDataGenerator ({what} statistics fitted on images of {fitted:?})"),
                expected: if self.zca_whitening {
                    format!("images of {fitted:?}")
                } else {
                    format!("images of {} channels", fitted.2)
                },
                received: format!("{:?}", (h, w, c)),
            });
        }
        Ok(())
    }
}

pub(crate) fn image_dims(img: &Tensor) -> Result<(usize, usize, usize)> {
    match img.dims() {
        &[h, w, c] => Ok((h, w, c)),
        d => Err(Error::Shape {
            context: "image".into(),
            expected: "(height, width, channels)".into(),
            received: format!("{d:?}"),
        }),
    }
}
