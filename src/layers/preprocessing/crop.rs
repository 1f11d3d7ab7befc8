//! Keras 3's sizing layers: `Resizing`, `CenterCrop` and `RandomCrop` (which crops at random in
//! training only). Resizing is `tf.image.resize`'s (half-pixel centers, no antialiasing).

use super::augment::{augmentation_layer, map_images, Draws};
use super::image_ops::Interpolation;
use super::image_ops::{aspect_window, resize};
use crate::error::{Error, Result};
use crate::layers::{common_layer_methods, Common, Config};
use candle_core::Tensor;
use rand::Rng;

/// The output shape for a target `(h, w)` of an input of `input[2]` channels: a zero size, or
/// one of more values than a sample may hold, is an error naming the layer.
fn target_shape(label: String, (h, w): (usize, usize), input: &[usize]) -> Result<Vec<usize>> {
    if h == 0 || w == 0 {
        return Err(Error::invalid(
            "height",
            format!("{label}: expected a target height and width >= 1, received ({h}, {w})"),
        ));
    }
    crate::layers::grown_shape(|| label, &[Some(h), Some(w), Some(input[2])])
}

/// Keras' `smart_resize`: the largest centered window of the target's aspect ratio, resized.
fn smart_resize(x: &Tensor, target: (usize, usize), interp: Interpolation) -> Result<Tensor> {
    let (_, h, w, c) = x.dims4()?;
    let window = aspect_window((h, w), target);
    map_images(x, target, |_, img, out| resize(img, (h, w, c), window, interp, target, out))
}

/// Crops every image at `(top, left)` to `(th, tw)`.
fn crop(x: &Tensor, (top, left): (usize, usize), (th, tw): (usize, usize)) -> Result<Tensor> {
    Ok(x.narrow(1, top, th)?.narrow(2, left, tw)?.contiguous()?)
}

/// Resizes images to `(height, width)`, as `keras.layers.Resizing` (bilinear by default;
/// `crop_to_aspect_ratio` first crops the largest centered window of the target's aspect ratio).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::Resizing;
/// let model = Sequential::new().add(Resizing::new(4, 4).input_shape((2, 2, 1)));
/// let y = model.predict(&Tensor::new(&[[[[0f32], [4.]], [[8.], [12.]]]], &Device::Cpu)?, 1)?;
/// assert_eq!(y.dims(), &[1, 4, 4, 1]);
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?[..4], [0., 1., 3., 4.]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Resizing {
    common: Common,
    size: (usize, usize),
    interpolation: Interpolation,
    crop_to_aspect_ratio: bool,
    built: Option<Vec<usize>>,
}

impl Resizing {
    /// Resizes to `height x width`.
    pub fn new(height: usize, width: usize) -> Self {
        Resizing { size: (height, width), ..Self::default() }
    }
    /// Bilinear (default) or nearest.
    pub fn interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }
    /// Crops the largest centered window of the target's aspect ratio before resizing
    /// (default false: the aspect ratio may change).
    pub fn crop_to_aspect_ratio(mut self, on: bool) -> Self {
        self.crop_to_aspect_ratio = on;
        self
    }
    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        target_shape(self.common.label("Resizing"), self.size, input)
    }

    fn apply(&self, x: &Tensor, _training: bool, _row_offset: usize) -> Result<Tensor> {
        let (_, h, w, c) = x.dims4()?;
        let window = if self.crop_to_aspect_ratio { aspect_window((h, w), self.size) } else { (0, 0, h, w) };
        let (size, interp) = (self.size, self.interpolation);
        map_images(x, size, |_, img, out| resize(img, (h, w, c), window, interp, size, out))
    }

    fn config(&self) -> Config {
        Config::new()
            .set("height", self.size.0)
            .set("width", self.size.1)
            .set("interpolation", if self.interpolation == Interpolation::Nearest { "nearest" } else { "bilinear" })
            .set("crop_to_aspect_ratio", self.crop_to_aspect_ratio)
    }
}

augmentation_layer!(Resizing, "Resizing", draws: false);

/// Crops the center `(height, width)` of each image, as `keras.layers.CenterCrop`; an image
/// smaller than that is resized instead (its largest centered window of the target's aspect
/// ratio, bilinear), as Keras does.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::CenterCrop;
/// let inputs = Input::new((32, 40, 3));
/// let model = Model::new(&[inputs.clone()], &[CenterCrop::new(24, 24).call(&inputs)?])?;
/// let images = Tensor::rand(0f32, 1., (2, 32, 40, 3), &Device::Cpu)?;
/// let out = model.predict(&images, 2)?;
/// // Rows 4..28, columns 8..32.
/// let want = images.narrow(1, 4, 24)?.narrow(2, 8, 24)?;
/// assert_eq!((out - want)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct CenterCrop {
    common: Common,
    size: (usize, usize),
    built: Option<Vec<usize>>,
}

impl CenterCrop {
    /// Crops to `height x width`.
    pub fn new(height: usize, width: usize) -> Self {
        CenterCrop { size: (height, width), ..Self::default() }
    }
    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        target_shape(self.common.label("CenterCrop"), self.size, input)
    }

    fn apply(&self, x: &Tensor, _training: bool, _row_offset: usize) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let (th, tw) = self.size;
        if h >= th && w >= tw {
            return crop(x, ((h - th) / 2, (w - tw) / 2), self.size);
        }
        smart_resize(x, self.size, Interpolation::Bilinear)
    }

    fn config(&self) -> Config {
        Config::new().set("height", self.size.0).set("width", self.size.1)
    }
}

augmentation_layer!(CenterCrop, "CenterCrop", draws: false);

/// Crops a random `(height, width)` window of each image in training, as
/// `keras.layers.RandomCrop`; at inference, and for images smaller than the window, the largest
/// centered window of the target's aspect ratio is resized to it (Keras' documented behaviour).
/// Each image gets its own window (Keras 3.15 draws one per batch).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::RandomCrop;
/// let inputs = Input::new((32, 32, 3));
/// let model = Model::new(&[inputs.clone()], &[RandomCrop::new(28, 28).seed(1).call(&inputs)?])?;
/// assert_eq!(model.output_shape()?, vec![28, 28, 3]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RandomCrop {
    common: Common,
    size: (usize, usize),
    draws: Draws,
    built: Option<Vec<usize>>,
}

impl RandomCrop {
    /// Crops to `height x width`.
    pub fn new(height: usize, width: usize) -> Self {
        RandomCrop { size: (height, width), ..Self::default() }
    }
    /// The layer's own seed (default: drawn from the model's seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.draws = Draws::new(Some(seed));
        self
    }
    common_layer_methods!();

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        target_shape(self.common.label("RandomCrop"), self.size, input)
    }

    fn apply(&self, x: &Tensor, training: bool, row_offset: usize) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let (th, tw) = self.size;
        if !training || h < th || w < tw {
            return smart_resize(x, self.size, Interpolation::Bilinear);
        }
        let starts: Vec<(usize, usize)> = self
            .draws
            .generators(n, row_offset)
            .into_iter()
            .map(|mut r| (r.random_range(0..=h - th), r.random_range(0..=w - tw)))
            .collect();
        map_images(x, self.size, |i, img, out| {
            let (top, left) = starts[i];
            for y in 0..th {
                let src = ((top + y) * w + left) * c;
                out[y * tw * c..(y + 1) * tw * c].copy_from_slice(&img[src..src + tw * c]);
            }
        })
    }

    fn config(&self) -> Config {
        Config::new().set("height", self.size.0).set("width", self.size.1).set("seed", self.draws.seed)
    }
}

augmentation_layer!(RandomCrop, "RandomCrop", draws: true);
