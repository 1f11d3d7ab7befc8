//! `keras.utils.image_dataset_from_directory`: a folder of class sub-folders read as batches
//! of resized images and their labels, with Keras 3's own rules (which differ from
//! `flow_from_directory`'s): its file types (bmp, gif, jpeg, jpg, png), one global shuffle of the
//! files with NumPy's `RandomState(seed)` before the validation split (so a seed gives the same
//! subsets as in Keras), the split as the last `validation_split` fraction, and TensorFlow's
//! bilinear resize (half-pixel centres, no antialiasing) to float values in `[0, 255]`.

use super::iterators::{load_image, walk_images, BatchGenerator, ColorMode, Orders, Subset};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// `image_dataset_from_directory`'s file types (Keras' `ALLOWLIST_FORMATS`).
pub const ALLOWLIST_FORMATS: [&str; 5] = ["bmp", "gif", "jpeg", "jpg", "png"];

/// What the labels of a batch are (Keras' `label_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelMode {
    /// Class indices, `u32` of shape `(batch,)` (Keras: int32).
    #[default]
    Int,
    /// One-hot rows, `f32` of shape `(batch, classes)`.
    Categorical,
    /// 0 or 1, `f32` of shape `(batch, 1)`; exactly two classes.
    Binary,
    /// No labels (Keras' `None`): the batches' targets are empty `(batch, 0)` tensors.
    None,
}

/// Which part of the files a dataset holds (Keras' `subset`): the one [`Subset`] of
/// `flow_from_directory` too (`Training`: the files before the last `validation_split`
/// fraction; `Validation`: that fraction; `Both`: see [`image_dataset_from_directory_both`]).
#[deprecated(note = "one spelling for every subset: use kandle::preprocessing::image::Subset")]
pub type DatasetSubset = Subset;

/// How images are resized (Keras' `interpolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeInterpolation {
    /// TensorFlow's bilinear resize: half-pixel centres, no antialiasing (default).
    #[default]
    Bilinear,
    /// TensorFlow's nearest neighbour (half-pixel centres, rounding half away from zero).
    Nearest,
}

/// Options of [`image_dataset_from_directory`], with Keras 3's defaults.
///
/// ```
/// use kandle::preprocessing::image::{DatasetOptions, LabelMode, Subset};
/// let opts = DatasetOptions::default()
///     .image_size((180, 180))
///     .batch_size(32)
///     .validation_split(0.2)
///     .subset(Subset::Training)
///     .seed(123)
///     .label_mode(LabelMode::Categorical);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    labels: Option<Vec<u32>>,
    inferred: bool,
    label_mode: LabelMode,
    class_names: Option<Vec<String>>,
    color_mode: ColorMode,
    batch_size: usize,
    image_size: (usize, usize),
    shuffle: bool,
    seed: Option<u64>,
    validation_split: Option<f64>,
    subset: Option<Subset>,
    follow_links: bool,
    interpolation: ResizeInterpolation,
    crop_to_aspect_ratio: bool,
    pad_to_aspect_ratio: bool,
    verbose: bool,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            labels: None,
            inferred: true,
            label_mode: LabelMode::Int,
            class_names: None,
            color_mode: ColorMode::Rgb,
            batch_size: 32,
            image_size: (256, 256),
            shuffle: true,
            seed: None,
            validation_split: None,
            subset: None,
            follow_links: false,
            interpolation: ResizeInterpolation::Bilinear,
            crop_to_aspect_ratio: false,
            pad_to_aspect_ratio: false,
            verbose: true,
        }
    }
}

impl DatasetOptions {
    /// Explicit labels, one per image file in the order of the folder walk (Keras'
    /// `labels=[...]`); default: inferred from the sub-folders.
    pub fn labels(mut self, labels: Vec<u32>) -> Self {
        self.labels = Some(labels);
        self.inferred = false;
        self
    }
    /// No labels (Keras' `labels=None`): the whole folder tree is read, targets are empty.
    pub fn no_labels(mut self) -> Self {
        self.labels = None;
        self.inferred = false;
        self.label_mode = LabelMode::None;
        self
    }
    /// The labels' encoding (default [`LabelMode::Int`]).
    pub fn label_mode(mut self, mode: LabelMode) -> Self {
        self.label_mode = mode;
        self
    }
    /// The class sub-folders to read, in class-index order (default: all, sorted).
    pub fn class_names(mut self, names: &[&str]) -> Self {
        self.class_names = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }
    /// RGB (default), RGBA or grayscale.
    pub fn color_mode(mut self, mode: ColorMode) -> Self {
        self.color_mode = mode;
        self
    }
    /// Images per batch (default 32).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
    /// `(height, width)` the images are resized to (default `(256, 256)`).
    pub fn image_size(mut self, size: (usize, usize)) -> Self {
        self.image_size = size;
        self
    }
    /// Shuffle the files (default true): once, globally, before the split, and each epoch.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    /// The seed of the shuffles (needed with a `validation_split`, as in Keras), below 2^32
    /// as NumPy's `RandomState` takes it (the type is `flow`'s, one spelling for both).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Follow links to folders (default false, as Keras: a link to a parent folder would list
    /// every image again).
    pub fn follow_links(mut self, on: bool) -> Self {
        self.follow_links = on;
        self
    }
    /// The fraction of files kept for validation, in `(0, 1)`.
    pub fn validation_split(mut self, split: f64) -> Self {
        self.validation_split = Some(split);
        self
    }
    /// Which part of the files to read (with `validation_split`).
    pub fn subset(mut self, subset: Subset) -> Self {
        self.subset = Some(subset);
        self
    }
    /// The resize method (default bilinear).
    pub fn interpolation(mut self, i: ResizeInterpolation) -> Self {
        self.interpolation = i;
        self
    }
    /// Crop the largest centred window of the target's aspect ratio before resizing.
    pub fn crop_to_aspect_ratio(mut self, on: bool) -> Self {
        self.crop_to_aspect_ratio = on;
        self
    }
    /// Pad (with zeros, centred) to the target's aspect ratio before resizing.
    pub fn pad_to_aspect_ratio(mut self, on: bool) -> Self {
        self.pad_to_aspect_ratio = on;
        self
    }
    /// Print Keras' "Found N files belonging to K classes." lines (default true).
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }
}

/// Batches of images read from a folder, as `image_dataset_from_directory` returns them.
/// A [`BatchGenerator`]: `model.fit_generator(dataset, ..)` trains on it.
pub struct ImageDataset {
    files: Vec<PathBuf>,
    labels: Option<Vec<u32>>,
    class_names: Vec<String>,
    opts: DatasetOptions,
    orders: Orders,
}

impl std::fmt::Debug for ImageDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDataset")
            .field("files", &self.files.len())
            .field("class_names", &self.class_names)
            .field("batch_size", &self.opts.batch_size)
            .finish()
    }
}

impl ImageDataset {
    /// The class names, in label order (Keras' `class_names`).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
    /// The image files, in the order of the first epoch before its reshuffle (Keras' `file_paths`).
    pub fn file_paths(&self) -> &[PathBuf] {
        &self.files
    }
    /// Each file's label, in `file_paths` order (none with [`LabelMode::None`]).
    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }
}

/// Reads a folder of class sub-folders (`dir/<class>/*.png`) as batches of images resized to
/// `image_size`, with their labels, as `keras.utils.image_dataset_from_directory` does.
///
/// ```no_run
/// use kandle::preprocessing::image::{image_dataset_from_directory, DatasetOptions, Subset};
/// let opts = DatasetOptions::default().image_size((180, 180)).validation_split(0.2).seed(123);
/// let train = image_dataset_from_directory("flower_photos", opts.clone().subset(Subset::Training))?;
/// let val = image_dataset_from_directory("flower_photos", opts.subset(Subset::Validation))?;
/// println!("{:?}", train.class_names());
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// As Keras: a `validation_split` outside `(0, 1)`, a subset without a split or the other
/// way round, a split with shuffling but no seed, `class_names` that are not sub-folders,
/// explicit labels of another length than the files, `Binary` labels with other than two
/// classes, no image found; an unreadable folder.
pub fn image_dataset_from_directory(dir: impl AsRef<Path>, opts: DatasetOptions) -> Result<ImageDataset> {
    if opts.subset == Some(Subset::Both) {
        return Err(Error::invalid(
            "subset",
            "Subset::Both gives two datasets: call image_dataset_from_directory_both (Keras' subset=\"both\")",
        ));
    }
    Ok(from_directory(dir.as_ref(), opts)?.remove(0))
}

/// Keras' `image_dataset_from_directory(.., subset="both")`: the training and the validation
/// dataset of one folder, split by `validation_split` (required, with a seed when shuffling).
///
/// ```no_run
/// use kandle::preprocessing::image::{image_dataset_from_directory_both, DatasetOptions};
/// let opts = DatasetOptions::default().image_size((180, 180)).validation_split(0.2).seed(123);
/// let (train, val) = image_dataset_from_directory_both("flower_photos", opts)?;
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// As [`image_dataset_from_directory`]; no `validation_split`.
pub fn image_dataset_from_directory_both(
    dir: impl AsRef<Path>,
    opts: DatasetOptions,
) -> Result<(ImageDataset, ImageDataset)> {
    if opts.validation_split.is_none() {
        return Err(Error::invalid("validation_split", "subset=\"both\" needs a validation_split, received none"));
    }
    let mut both = from_directory(dir.as_ref(), opts.subset(Subset::Both))?;
    let val = both.pop().expect("two datasets");
    Ok((both.pop().expect("two datasets"), val))
}

/// The datasets of `dir`: one, or with `Subset::Both` the training and the validation one.
fn from_directory(dir: &Path, opts: DatasetOptions) -> Result<Vec<ImageDataset>> {
    let (size, batch) = (opts.image_size, opts.batch_size);
    if size.0 == 0 || size.1 == 0 {
        return Err(Error::invalid("image_size", format!("expected two positive sizes, received {size:?}")));
    }
    if batch == 0 {
        return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
    }
    // A batch is held twice while it is assembled (the images, then the tensor), as f32.
    let channels = opts.color_mode.channels() as f64;
    let need = 2.0 * 4.0 * batch as f64 * size.0 as f64 * size.1 as f64 * channels;
    let avail = super::zca::available_memory().map(|b| b as f64).unwrap_or(f64::INFINITY).min(isize::MAX as f64);
    if need > avail {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        return Err(Error::invalid(
            "image_size",
            format!(
                "batches of {batch} images of {size:?} need {:.1} GiB, more than the {:.1} GiB of memory available; \
                 a smaller image_size or batch_size fits",
                gib(need),
                gib(avail)
            ),
        ));
    }
    if let Some(v) = opts.validation_split {
        if !(v > 0.0 && v < 1.0) {
            return Err(Error::invalid("validation_split", format!("must be between 0 and 1, received: {v}")));
        }
    }
    if opts.validation_split.is_some() != opts.subset.is_some() {
        return Err(Error::invalid("subset", "if `subset` is set, `validation_split` must be set, and inversely"));
    }
    if opts.validation_split.is_some() && opts.shuffle && opts.seed.is_none() {
        return Err(Error::invalid(
            "seed",
            "if using `validation_split` and shuffling the data, you must provide a `seed` argument, to make sure \
             that there is no overlap between the training and validation subset",
        ));
    }
    if opts.crop_to_aspect_ratio && opts.pad_to_aspect_ratio {
        return Err(Error::invalid(
            "pad_to_aspect_ratio",
            "only one of `crop_to_aspect_ratio` and `pad_to_aspect_ratio` can be set",
        ));
    }
    let label_mode = if opts.inferred || opts.labels.is_some() { opts.label_mode } else { LabelMode::None };
    // The class folders (Keras' index_directory): sorted, hidden ones skipped.
    let mut subdirs: Vec<String> = Vec::new();
    if opts.inferred {
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !name.starts_with('.') {
                subdirs.push(name);
            }
        }
        subdirs.sort();
        if let Some(names) = &opts.class_names {
            if let Some(bad) = names.iter().find(|n| !subdirs.contains(n)) {
                return Err(Error::invalid(
                    "class_names",
                    format!(
                        "the `class_names` passed did not match the names of the subdirectories of the target \
                         directory. Expected: {subdirs:?} (or a subset of it), but received {bad:?} in {names:?}"
                    ),
                ));
            }
            subdirs = names.clone();
        }
    } else if opts.class_names.is_some() {
        return Err(Error::invalid(
            "class_names",
            "`class_names` can only be given with labels inferred from the folders",
        ));
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let mut labels: Vec<u32> = Vec::new();
    if opts.inferred {
        for (i, class) in subdirs.iter().enumerate() {
            let list = walk_images(&dir.join(class), &ALLOWLIST_FORMATS, opts.follow_links)?;
            labels.extend(std::iter::repeat_n(i as u32, list.len()));
            files.extend(list);
        }
    } else {
        files = walk_images(dir, &ALLOWLIST_FORMATS, opts.follow_links)?;
    }
    let mut class_names = subdirs;
    let mut labels = match (&opts.labels, opts.inferred) {
        (_, true) => Some(labels),
        (Some(given), false) => {
            if given.len() != files.len() {
                return Err(Error::invalid(
                    "labels",
                    format!(
                        "expected the lengths of `labels` to match the number of files in the target directory. \
                         len(labels) is {} while we found {} files in directory {}",
                        given.len(),
                        files.len(),
                        dir.display()
                    ),
                ));
            }
            let mut distinct = given.clone();
            distinct.sort_unstable();
            distinct.dedup();
            class_names = distinct.iter().map(|l| l.to_string()).collect();
            Some(given.clone())
        }
        (None, false) => None,
    };
    if opts.verbose {
        match &labels {
            Some(_) => println!("Found {} files belonging to {} classes.", files.len(), class_names.len()),
            None => println!("Found {} files.", files.len()),
        }
    }
    if opts.shuffle {
        // Keras: np.random.RandomState(seed).shuffle on the paths, and again on the labels.
        let seed = opts.seed.unwrap_or_else(|| rand::random::<u64>() % 1_000_000);
        let seed = u32::try_from(seed).map_err(|_| {
            Error::invalid("seed", format!("expected a seed below 2^32 (NumPy's RandomState), received {seed}"))
        })?;
        crate::random::numpy::shuffle(&mut files, seed);
        if let Some(l) = labels.as_mut() {
            crate::random::numpy::shuffle(l, seed);
        }
    }
    // Keras' tf.one_hot makes an all-zero row of a label past the classes; refused here, before
    // training, naming the file.
    if let (LabelMode::Categorical, Some(l)) = (label_mode, &labels) {
        if let Some((i, &c)) = l.iter().enumerate().find(|(_, &c)| c as usize >= class_names.len()) {
            return Err(Error::invalid(
                "labels",
                format!(
                    "label {c} of {} is outside the {} classes of a one-hot row (class_names {class_names:?})",
                    files[i].display(),
                    class_names.len()
                ),
            ));
        }
    }
    if label_mode == LabelMode::Binary && class_names.len() != 2 {
        return Err(Error::invalid(
            "label_mode",
            format!("when passing `label_mode=\"binary\"`, there must be exactly 2 class_names. Received: class_names={class_names:?}"),
        ));
    }
    // Keras' get_training_or_validation_split: the last int(split * n) files validate. (With
    // that count 0, Keras' `samples[:-0]` leaves no training file and `samples[-0:]` all of
    // them for validation; so here.)
    let parts: Vec<(Subset, std::ops::Range<usize>)> = match (opts.validation_split, opts.subset) {
        (Some(split), Some(subset)) => {
            let n = files.len();
            let n_val = (split * n as f64) as usize;
            let (train, val) = if n_val == 0 { (0..0, 0..n) } else { (0..n - n_val, n - n_val..n) };
            match subset {
                Subset::Training => vec![(Subset::Training, train)],
                Subset::Validation => vec![(Subset::Validation, val)],
                Subset::Both => vec![(Subset::Training, train), (Subset::Validation, val)],
            }
        }
        _ => vec![(Subset::Training, 0..files.len())],
    };
    let label_mode_all = label_mode;
    let mut out = Vec::with_capacity(parts.len());
    for (subset, range) in parts {
        if opts.verbose && opts.validation_split.is_some() {
            match subset {
                Subset::Validation => println!("Using {} files for validation.", range.len()),
                _ => println!("Using {} files for training.", range.len()),
            }
        }
        let files: Vec<PathBuf> = files[range.clone()].to_vec();
        if files.is_empty() {
            return Err(Error::invalid(
                "directory",
                format!(
                    "no images found in directory {}. Allowed formats: {}",
                    dir.display(),
                    ALLOWLIST_FORMATS.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let labels =
            if label_mode_all == LabelMode::None { None } else { labels.as_ref().map(|l| l[range.clone()].to_vec()) };
        // Each epoch reshuffles (Keras: a buffer of 8 batches, reshuffled at each iteration).
        let seed = opts.seed.unwrap_or_else(rand::random);
        let orders = Orders::new(files.len(), opts.shuffle, seed);
        let opts = DatasetOptions { label_mode: label_mode_all, subset: Some(subset), ..opts.clone() };
        out.push(ImageDataset { files, labels, class_names: class_names.clone(), opts, orders });
    }
    Ok(out)
}

/// TensorFlow's `resize_images` on one image `(h, w, c)` of floats: bilinear or nearest with
/// half-pixel centres, no antialiasing.
pub(crate) fn resize_tf(
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    (oh, ow): (usize, usize),
    nearest: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; oh * ow * c];
    let (sy, sx) = (h as f64 / oh as f64, w as f64 / ow as f64);
    for y in 0..oh {
        let fy = ((y as f64 + 0.5) * sy - 0.5).max(0.0);
        for x in 0..ow {
            let fx = ((x as f64 + 0.5) * sx - 0.5).max(0.0);
            let o = &mut out[(y * ow + x) * c..][..c];
            if nearest {
                // TF's nearest with half-pixel centres: floor of the centre, clamped.
                let iy = (((y as f64 + 0.5) * sy).floor() as usize).min(h - 1);
                let ix = (((x as f64 + 0.5) * sx).floor() as usize).min(w - 1);
                o.copy_from_slice(&src[(iy * w + ix) * c..][..c]);
                continue;
            }
            let (y0, x0) = ((fy.floor() as usize).min(h - 1), (fx.floor() as usize).min(w - 1));
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (dy, dx) = (fy - y0 as f64, fx - x0 as f64);
            for k in 0..c {
                let p = |yy: usize, xx: usize| src[(yy * w + xx) * c + k] as f64;
                let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * dx;
                let bottom = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * dx;
                o[k] = (top + (bottom - top) * dy) as f32;
            }
        }
    }
    out
}

impl ImageDataset {
    /// One image, decoded, cropped or padded to the aspect ratio when asked, resized.
    fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let img = load_image(path, self.opts.color_mode)?;
        let c = self.opts.color_mode.channels();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut px: Vec<f32> = img.into_bytes().into_iter().map(f32::from).collect();
        let (mut h, mut w) = (h, w);
        let (th, tw) = self.opts.image_size;
        let nearest = self.opts.interpolation == ResizeInterpolation::Nearest;
        if self.opts.crop_to_aspect_ratio {
            // Keras' smart_resize: the largest centred window of the target's aspect ratio.
            let nh = ((w as f32 * th as f32 / tw as f32) as usize).min(h).max(1);
            let nw = ((h as f32 * tw as f32 / th as f32) as usize).min(w).max(1);
            let (oy, ox) = (((h - nh) as f32 / 2.0) as usize, ((w - nw) as f32 / 2.0) as usize);
            let mut out = Vec::with_capacity(nh * nw * c);
            for y in oy..oy + nh {
                out.extend_from_slice(&px[(y * w + ox) * c..][..nw * c]);
            }
            (px, h, w) = (out, nh, nw);
        }
        if self.opts.pad_to_aspect_ratio {
            // tf.image.resize_with_pad: resize to fit inside, then pad with zeros, centred.
            let ratio = (w as f32 / tw as f32).max(h as f32 / th as f32);
            let (rh, rw) = (h as f32 / ratio, w as f32 / ratio);
            let (ih, iw) = ((rh.floor() as usize).max(1), (rw.floor() as usize).max(1));
            let (py, pxo) = (
                ((th as f32 - rh) / 2.0).floor().max(0.0) as usize,
                ((tw as f32 - rw) / 2.0).floor().max(0.0) as usize,
            );
            let inner = resize_tf(&px, (h, w, c), (ih, iw), nearest);
            let mut out = vec![0f32; th * tw * c];
            for y in 0..ih.min(th - py) {
                let n = iw.min(tw - pxo) * c;
                out[((y + py) * tw + pxo) * c..][..n].copy_from_slice(&inner[y * iw * c..][..n]);
            }
            return Ok(out);
        }
        Ok(resize_tf(&px, (h, w, c), (th, tw), self.opts.interpolation == ResizeInterpolation::Nearest))
    }
}

impl BatchGenerator for ImageDataset {
    fn len(&self) -> usize {
        self.files.len().div_ceil(self.opts.batch_size)
    }

    fn samples(&self) -> usize {
        self.files.len()
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<(Tensor, Tensor)> {
        let order = self.orders.get(epoch);
        let start = (index % self.len().max(1)) * self.opts.batch_size;
        let idx: Vec<usize> =
            order[start..(start + self.opts.batch_size).min(order.len())].iter().map(|&i| i as usize).collect();
        let (h, w) = self.opts.image_size;
        let c = self.opts.color_mode.channels();
        let images: Vec<Vec<f32>> = idx.par_iter().map(|&i| self.load(&self.files[i])).collect::<Result<_>>()?;
        let n = idx.len();
        let x = Tensor::from_vec(images.concat(), (n, h, w, c), &Device::Cpu)?;
        let k = self.class_names.len();
        let y = match (&self.labels, self.opts.label_mode) {
            (Some(l), LabelMode::Int) => {
                Tensor::from_vec(idx.iter().map(|&i| l[i]).collect::<Vec<u32>>(), n, &Device::Cpu)?
            }
            (Some(l), LabelMode::Categorical) => {
                let mut v = vec![0f32; n * k];
                for (r, &i) in idx.iter().enumerate() {
                    let class = l[i] as usize;
                    if class >= k {
                        return Err(Error::invalid(
                            "labels",
                            format!(
                                "label {class} of {} is outside the {k} classes of a one-hot row",
                                self.files[i].display()
                            ),
                        ));
                    }
                    v[r * k + class] = 1.0;
                }
                Tensor::from_vec(v, (n, k), &Device::Cpu)?
            }
            (Some(l), LabelMode::Binary) => {
                Tensor::from_vec(idx.iter().map(|&i| l[i] as f32).collect::<Vec<f32>>(), (n, 1), &Device::Cpu)?
            }
            _ => Tensor::zeros((n, 0), candle_core::DType::F32, &Device::Cpu)?,
        };
        Ok((x, y))
    }
}
