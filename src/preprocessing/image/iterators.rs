//! Batch iterators: [`NumpyArrayIterator`] (`flow`) over in-memory images and
//! [`DirectoryIterator`] (`flow_from_directory`) over image files in class folders.
//!
//! Both implement [`BatchGenerator`]: batch `i` of epoch `e` is a pure function of the seed,
//! `e` and `i` (the epoch's shuffle, each image's random transform), so `fit_generator` gives
//! the same batches with any number of worker threads. Both are also endless iterators, as
//! Keras' are, reshuffling at each epoch.

use super::data_generator::ImageDataGenerator;
use crate::error::{Error, Result};
use crate::random::mix;
pub use crate::trainers::BatchGenerator;
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which part of the data a flow uses when the generator has a `validation_split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subset {
    /// The samples after the validation fraction.
    Training,
    /// The first `validation_split` fraction (Keras' choice for `flow`).
    Validation,
    /// Both parts, as Keras' `subset="both"`: for `image_dataset_from_directory_both` only.
    Both,
}

/// The shuffled order of an epoch, cached.
pub(crate) struct Orders {
    n: usize,
    shuffle: bool,
    seed: u64,
    cache: Mutex<Option<(usize, Arc<Vec<u32>>)>>,
}

impl Orders {
    /// `n` samples, reshuffled at each epoch from `seed` when `shuffle`.
    pub(crate) fn new(n: usize, shuffle: bool, seed: u64) -> Self {
        Orders { n, shuffle, seed, cache: Mutex::new(None) }
    }

    pub(crate) fn get(&self, epoch: usize) -> Arc<Vec<u32>> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((e, o)) = c.as_ref() {
            if *e == epoch {
                return o.clone();
            }
        }
        let mut order: Vec<u32> = (0..self.n as u32).collect();
        if self.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(mix(self.seed, epoch as u64, 0x5EED)));
        }
        let o = Arc::new(order);
        *c = Some((epoch, o.clone()));
        o
    }
}

/// Augments and standardises the images `idx` of `src` (each `h x w x c`) into one batch.
fn augment_batch(
    gen: &ImageDataGenerator,
    seed: u64,
    epoch: usize,
    first: usize,
    dims: (usize, usize, usize),
    count: usize,
    source: &(dyn Fn(usize, &mut [f32]) -> Result<()> + Sync),
) -> Result<Vec<f32>> {
    let size = dims.0 * dims.1 * dims.2;
    let mut out = vec![0f32; count * size];
    let augments = gen.augments();
    out.par_chunks_mut(size.max(1)).enumerate().try_for_each_init(
        || vec![0f32; size],
        |scratch, (i, dst)| -> Result<()> {
            if augments {
                source(i, scratch)?;
                let mut rng = StdRng::seed_from_u64(mix(seed, epoch as u64, (first + i) as u64 + 1));
                let p = gen.get_random_transform((dims.0, dims.1), &mut rng);
                gen.apply_transform_slice(scratch, dims, &p, dst);
            } else {
                source(i, dst)?;
            }
            gen.standardize_slice(dst, dims);
            Ok(())
        },
    )?;
    Ok(out)
}

/// Batches from in-memory images, as Keras' `NumpyArrayIterator` (what `flow` returns).
///
/// Defaults as Keras: `shuffle true`, a random seed. The data is not copied per epoch: each
/// batch reads its images from the tensor given to `flow`.
pub struct NumpyArrayIterator {
    gen: Arc<ImageDataGenerator>,
    x: Tensor,
    y: Tensor,
    batch_size: usize,
    range: (usize, usize),
    orders: Orders,
    subset: Option<Subset>,
    ignore_class_split: bool,
    /// The result of the checks that read all the data (done once, not per batch).
    data_checked: std::sync::OnceLock<std::result::Result<(), String>>,
    pos: (usize, usize),
}

impl std::fmt::Debug for NumpyArrayIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumpyArrayIterator")
            .field("samples", &self.samples())
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl NumpyArrayIterator {
    pub(crate) fn new(gen: ImageDataGenerator, x: &Tensor, y: &Tensor, batch_size: usize) -> Self {
        // f32 on the CPU, contiguous: batches read images straight from its storage.
        let x = x
            .to_device(&Device::Cpu)
            .and_then(|x| x.to_dtype(DType::F32))
            .and_then(|x| x.contiguous())
            .unwrap_or_else(|_| x.clone());
        let n = x.dims().first().copied().unwrap_or(0);
        NumpyArrayIterator {
            gen: Arc::new(gen),
            x,
            y: y.clone(),
            batch_size,
            range: (0, n),
            orders: Orders { n, shuffle: true, seed: rand::random(), cache: Mutex::new(None) },
            subset: None,
            ignore_class_split: false,
            data_checked: std::sync::OnceLock::new(),
            pos: (0, 0),
        }
    }

    /// Keras' `ignore_class_split`: allow training and validation subsets that see different
    /// classes (default false: an error, as in Keras).
    pub fn ignore_class_split(mut self, ignore: bool) -> Self {
        self.ignore_class_split = ignore;
        self.data_checked = std::sync::OnceLock::new();
        self
    }

    /// The checks that read all the data, once: non-finite pixels when `channel_shift_range`
    /// is on (its clip range would be undefined), and Keras' class-split check of a subset.
    fn check_data(&self) -> std::result::Result<(), String> {
        let n = self.x.dims().first().copied().unwrap_or(0);
        if self.gen.channel_shift_range != 0.0 {
            let v = self.x.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| e.to_string())?;
            let per = v.len() / n.max(1);
            if let Some(i) = v.iter().position(|p| !p.is_finite()) {
                return Err(format!(
                    "image {} holds a non-finite value ({}): channel_shift_range needs finite pixels",
                    i / per.max(1),
                    v[i]
                ));
            }
        }
        if self.subset.is_some() && !self.ignore_class_split {
            let cut = ((n as f64 * self.gen.validation_split) as usize).min(n);
            let unique = |a: usize, b: usize| -> std::result::Result<Vec<u64>, String> {
                let t = self.y.narrow(0, a, b - a).and_then(|t| t.flatten_all()).and_then(|t| t.to_dtype(DType::F64));
                let mut v: Vec<u64> = t
                    .and_then(|t| t.to_vec1::<f64>())
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                v.sort_unstable();
                v.dedup();
                Ok(v)
            };
            if unique(0, cut)? != unique(cut, n)? {
                return Err("Training and validation subsets have different number of classes after the split. \
                            If your numpy arrays are sorted by the label, you might want to shuffle them \
                            (or flow(..).ignore_class_split(true)), as in Keras"
                    .into());
            }
        }
        Ok(())
    }
    /// Reshuffle each epoch (default true).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.orders.shuffle = shuffle;
        self.orders.cache = Mutex::new(None);
        self
    }

    /// Seed of the shuffling and of every random transform (default: random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.orders.seed = seed;
        self.orders.cache = Mutex::new(None);
        self
    }

    /// Uses the training or validation part of the data, split by the generator's
    /// `validation_split` (the first fraction is the validation part, as in Keras' `flow`).
    pub fn subset(mut self, subset: Subset) -> Self {
        let n = self.x.dims().first().copied().unwrap_or(0);
        // A split outside (0, 1) is reported by validate(); it must not underflow here.
        let cut = ((n as f64 * self.gen.validation_split.clamp(0.0, 1.0)) as usize).min(n);
        self.range = match subset {
            Subset::Validation => (0, cut),
            // `Both` is refused by validate(), as Keras' flow takes training or validation.
            Subset::Training | Subset::Both => (cut, n),
        };
        self.subset = Some(subset);
        self.data_checked = std::sync::OnceLock::new();
        self.orders.n = self.range.1 - self.range.0;
        self.orders.cache = Mutex::new(None);
        self
    }
}

impl BatchGenerator for NumpyArrayIterator {
    fn len(&self) -> usize {
        self.samples().div_ceil(self.batch_size.max(1))
    }

    fn samples(&self) -> usize {
        self.range.1 - self.range.0
    }

    fn validate(&self) -> Result<()> {
        self.gen.validate()?;
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
        }
        if self.x.rank() != 4 {
            return Err(Error::Shape {
                context: "flow `x`".into(),
                expected: "images (n, height, width, channels)".into(),
                received: format!("{:?}", self.x.dims()),
            });
        }
        if self.x.dtype() != DType::F32 {
            return Err(Error::invalid("x", format!("expected numeric image data, received {:?}", self.x.dtype())));
        }
        let ny = self.y.dims().first().copied().unwrap_or(0);
        if ny != self.x.dims()[0] {
            return Err(Error::invalid(
                "y",
                format!("expected as many rows as `x` ({}), received {ny}", self.x.dims()[0]),
            ));
        }
        if self.subset.is_some() && self.gen.validation_split == 0.0 {
            return Err(Error::invalid("subset", "a subset needs the generator's validation_split"));
        }
        if self.samples() == 0 {
            return Err(Error::invalid("x", "the flow has no sample (empty data or subset)"));
        }
        let d = self.x.dims();
        self.gen.check_fitted((d[1], d[2], d[3]))?;
        self.data_checked.get_or_init(|| self.check_data()).clone().map_err(|e| Error::invalid("x", e))
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<(Tensor, Tensor)> {
        self.validate()?;
        let order = self.orders.get(epoch);
        let start = (index % self.len().max(1)) * self.batch_size;
        let idx: Vec<u32> =
            order[start..(start + self.batch_size).min(order.len())].iter().map(|&i| i + self.range.0 as u32).collect();
        let d = self.x.dims();
        let dims = (d[1], d[2], d[3]);
        let size = dims.0 * dims.1 * dims.2;
        let (storage, layout) = self.x.storage_and_layout();
        let data: &[f32] = match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => &v[a..b],
            _ => return Err(Error::invalid("x", "expected contiguous f32 data on the CPU")),
        };
        let out = augment_batch(&self.gen, self.orders.seed, epoch, start, dims, idx.len(), &|i, dst: &mut [f32]| {
            let s = idx[i] as usize * size;
            dst.copy_from_slice(&data[s..s + size]);
            Ok(())
        })?;
        drop(storage);
        let n = idx.len();
        let x = Tensor::from_vec(out, (n, dims.0, dims.1, dims.2), &Device::Cpu)?;
        let y = self.y.index_select(&Tensor::from_vec(idx, n, self.y.device())?, 0)?;
        Ok((x, y))
    }
}

impl Iterator for NumpyArrayIterator {
    type Item = Result<(Tensor, Tensor)>;

    /// The next batch; endless, reshuffling at each epoch.
    fn next(&mut self) -> Option<Self::Item> {
        let (e, i) = self.pos;
        let r = self.batch(e, i);
        self.pos = if i + 1 >= self.len() { (e + 1, 0) } else { (e, i + 1) };
        Some(r)
    }
}

/// Color mode of `flow_from_directory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// 3 channels (default).
    #[default]
    Rgb,
    /// 1 channel, converted as PIL's `convert("L")` (what Keras' `load_img` calls):
    /// `(19595 R + 38470 G + 7471 B + 0x8000) >> 16` (ITU-R 601-2), not Rec. 709.
    Grayscale,
    /// 4 channels, RGB and alpha (opaque where the file has no alpha).
    Rgba,
}

impl ColorMode {
    /// Channels per pixel.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Grayscale => 1,
            ColorMode::Rgba => 4,
        }
    }
}

/// What `flow_from_directory` yields as targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassMode {
    /// One-hot rows `(n, classes)` (default).
    #[default]
    Categorical,
    /// Class indices `(n,)`.
    Sparse,
    /// 0/1 `(n,)` for two classes.
    Binary,
    /// The images themselves (after augmentation) as targets, for autoencoders.
    Input,
    /// No targets: an empty `(n, 0)` tensor.
    None,
}

/// Options of `flow_from_directory`, with Keras' defaults.
#[derive(Debug, Clone)]
pub struct DirectoryOptions {
    target_size: (usize, usize),
    color_mode: ColorMode,
    classes: Option<Vec<String>>,
    class_mode: ClassMode,
    batch_size: usize,
    shuffle: bool,
    seed: Option<u64>,
    subset: Option<Subset>,
    interpolation: super::Interpolation,
    follow_links: bool,
}

impl Default for DirectoryOptions {
    fn default() -> Self {
        DirectoryOptions {
            target_size: (256, 256),
            color_mode: ColorMode::Rgb,
            classes: None,
            class_mode: ClassMode::Categorical,
            batch_size: 32,
            shuffle: true,
            seed: None,
            subset: None,
            interpolation: super::Interpolation::Nearest,
            follow_links: false,
        }
    }
}

impl DirectoryOptions {
    /// `(height, width)` images are resized to (default `(256, 256)`).
    pub fn target_size(mut self, size: (usize, usize)) -> Self {
        self.target_size = size;
        self
    }
    /// RGB (default), grayscale or RGBA.
    pub fn color_mode(mut self, mode: ColorMode) -> Self {
        self.color_mode = mode;
        self
    }
    /// The class folders to use, in class-index order (default: the sorted sub-folders).
    pub fn classes(mut self, classes: &[&str]) -> Self {
        self.classes = Some(classes.iter().map(|s| s.to_string()).collect());
        self
    }
    /// The targets (default categorical).
    pub fn class_mode(mut self, mode: ClassMode) -> Self {
        self.class_mode = mode;
        self
    }
    /// Images per batch (default 32).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
    /// Reshuffle each epoch (default true).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    /// Seed of shuffling and transforms (default random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// The training or validation part, by the generator's `validation_split` (per class).
    pub fn subset(mut self, subset: Subset) -> Self {
        self.subset = Some(subset);
        self
    }
    /// Resizing filter (default nearest, as Keras).
    pub fn interpolation(mut self, i: super::Interpolation) -> Self {
        self.interpolation = i;
        self
    }
    /// Follow links to folders inside the class folders (default false, as Keras).
    pub fn follow_links(mut self, on: bool) -> Self {
        self.follow_links = on;
        self
    }
}

/// Batches of images read from class folders, as Keras' `DirectoryIterator`.
pub struct DirectoryIterator {
    gen: Arc<ImageDataGenerator>,
    opts: DirectoryOptions,
    files: Vec<(PathBuf, usize)>,
    class_names: Vec<String>,
    orders: Orders,
    pos: (usize, usize),
}

impl std::fmt::Debug for DirectoryIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryIterator")
            .field("samples", &self.files.len())
            .field("classes", &self.class_names)
            .finish()
    }
}

/// Keras' `white_list_formats` for `flow_from_directory`.
const EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "ppm", "tif", "tiff"];

/// The images under `dir` (files with one of `extensions`, in any case), in sub-folders too,
/// in Keras' order: folders sorted by path (as `sorted(os.walk(dir))`), files sorted within
/// each.
///
/// As Keras' `iter_valid_files` (`os.walk`): folders in the order of their full path as a
/// string, files by name in each; a link to a folder is followed only with `follow_links`
/// (then a folder reached twice, by a link to one of its parents, is read once).
pub(crate) fn walk_images(dir: &Path, extensions: &[&str], follow_links: bool) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![dir.to_path_buf()];
    let mut all_dirs = Vec::new();
    let mut visited = std::collections::HashSet::new();
    while let Some(d) = dirs.pop() {
        if follow_links && !visited.insert(std::fs::canonicalize(&d).unwrap_or_else(|_| d.clone())) {
            continue;
        }
        let mut subdirs = Vec::new();
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?.filter_map(|e| e.ok()) {
            let p = e.path();
            let link = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
            if p.is_dir() && (follow_links || !link) {
                subdirs.push(p);
            }
        }
        dirs.extend(subdirs);
        all_dirs.push(d);
    }
    all_dirs.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    let mut files = Vec::new();
    for d in all_dirs {
        let mut list: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|e| Error::io(&d, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|x| extensions.contains(&x.to_string_lossy().to_lowercase().as_str()))
            })
            .collect();
        list.sort();
        files.extend(list);
    }
    Ok(files)
}

impl DirectoryIterator {
    pub(crate) fn new(gen: ImageDataGenerator, dir: &Path, opts: DirectoryOptions) -> Result<Self> {
        gen.validate()?;
        if opts.batch_size == 0 {
            return Err(Error::invalid("batch_size", "expected a positive number, received 0"));
        }
        if opts.target_size.0 == 0 || opts.target_size.1 == 0 {
            return Err(Error::invalid(
                "target_size",
                format!("expected positive sizes, received {:?}", opts.target_size),
            ));
        }
        if opts.subset.is_some() && gen.validation_split == 0.0 {
            return Err(Error::invalid("subset", "a subset needs the generator's validation_split"));
        }
        let class_names = match &opts.classes {
            Some(c) => c.clone(),
            None => {
                let mut v: Vec<String> = std::fs::read_dir(dir)
                    .map_err(|e| Error::io(dir, e))?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            }
        };
        if class_names.is_empty() {
            return Err(Error::invalid(
                "directory",
                format!("{} has no class sub-folder: expected one folder of images per class", dir.display()),
            ));
        }
        let mut files = Vec::new();
        for (ci, class) in class_names.iter().enumerate() {
            let list = walk_images(&dir.join(class), &EXTENSIONS, opts.follow_links)?;
            let n = list.len();
            let (a, b) = match opts.subset {
                None => (0, n),
                Some(Subset::Validation) => (0, (n as f64 * gen.validation_split) as usize),
                Some(Subset::Training) => ((n as f64 * gen.validation_split) as usize, n),
                Some(Subset::Both) => {
                    return Err(Error::invalid(
                        "subset",
                        "flow_from_directory takes Subset::Training or Subset::Validation, as Keras; received Both",
                    ))
                }
            };
            files.extend(list.into_iter().skip(a).take(b - a).map(|p| (p, ci)));
        }
        if files.is_empty() {
            return Err(Error::invalid(
                "directory",
                format!(
                    "no image ({}) found in the class folders of {}",
                    EXTENSIONS.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(", "),
                    dir.display()
                ),
            ));
        }
        // Keras prints this line.
        println!("Found {} images belonging to {} classes.", files.len(), class_names.len());
        let orders = Orders {
            n: files.len(),
            shuffle: opts.shuffle,
            seed: opts.seed.unwrap_or_else(rand::random),
            cache: Mutex::new(None),
        };
        Ok(DirectoryIterator { gen: Arc::new(gen), opts, files, class_names, orders, pos: (0, 0) })
    }

    /// The class names, in class-index order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Each sample's class index, in file order.
    pub fn classes(&self) -> Vec<usize> {
        self.files.iter().map(|(_, c)| *c).collect()
    }

    /// Keras' `class_indices`: each class name's index.
    ///
    /// ```no_run
    /// use kandle::preprocessing::image::{DirectoryOptions, ImageDataGenerator};
    /// let it = ImageDataGenerator::new().flow_from_directory("data/train", DirectoryOptions::default())?;
    /// println!("{:?}", it.class_indices()); // {"cat": 0, "dog": 1}
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn class_indices(&self) -> std::collections::BTreeMap<String, usize> {
        self.class_names.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect()
    }

    /// The image files, in sample order (Keras' `filepaths`).
    pub fn filepaths(&self) -> Vec<&Path> {
        self.files.iter().map(|(p, _)| p.as_path()).collect()
    }

    fn load(&self, path: &Path, dst: &mut [f32]) -> Result<()> {
        let bad = |reason: String| Error::Format { path: path.into(), format: "image", offset: 0, reason };
        let img = load_image(path, self.opts.color_mode)?;
        let (h, w) = self.opts.target_size;
        let filter = match self.opts.interpolation {
            super::Interpolation::Nearest => image::imageops::FilterType::Nearest,
            super::Interpolation::Bilinear => image::imageops::FilterType::Triangle,
        };
        let img = if img.width() as usize == w && img.height() as usize == h {
            img
        } else {
            img.resize_exact(w as u32, h as u32, filter)
        };
        let raw = img.into_bytes();
        if raw.len() != dst.len() {
            return Err(bad(format!("decoded {} values, expected {}", raw.len(), dst.len())));
        }
        dst.iter_mut().zip(raw).for_each(|(d, s)| *d = s as f32);
        Ok(())
    }
}

/// Decodes an image file and converts it to `mode` as Keras' `load_img` does (PIL's rules:
/// grayscale is `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`); the first frame of an
/// animation.
pub(crate) fn load_image(path: &Path, mode: ColorMode) -> Result<image::DynamicImage> {
    let bad = |reason: String| Error::Format { path: path.into(), format: "image", offset: 0, reason };
    let img = image::open(path).map_err(|e| bad(e.to_string()))?;
    Ok(match mode {
        ColorMode::Rgb => image::DynamicImage::ImageRgb8(img.to_rgb8()),
        ColorMode::Rgba => image::DynamicImage::ImageRgba8(img.to_rgba8()),
        ColorMode::Grayscale => {
            let rgb = img.to_rgb8();
            let (iw, ih) = rgb.dimensions();
            let luma: Vec<u8> = rgb
                .pixels()
                .map(|p| {
                    let [r, g, b] = p.0.map(u32::from);
                    ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as u8
                })
                .collect();
            let gray = image::GrayImage::from_raw(iw, ih, luma).ok_or_else(|| bad("bad image size".into()))?;
            image::DynamicImage::ImageLuma8(gray)
        }
    })
}

impl BatchGenerator for DirectoryIterator {
    fn len(&self) -> usize {
        self.files.len().div_ceil(self.opts.batch_size)
    }

    fn samples(&self) -> usize {
        self.files.len()
    }

    fn validate(&self) -> Result<()> {
        self.gen.validate()?;
        let c = self.opts.color_mode.channels();
        self.gen.check_fitted((self.opts.target_size.0, self.opts.target_size.1, c))
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<(Tensor, Tensor)> {
        self.validate()?;
        let order = self.orders.get(epoch);
        let start = (index % self.len().max(1)) * self.opts.batch_size;
        let idx: Vec<usize> =
            order[start..(start + self.opts.batch_size).min(order.len())].iter().map(|&i| i as usize).collect();
        let dims = (self.opts.target_size.0, self.opts.target_size.1, self.opts.color_mode.channels());
        let out = augment_batch(&self.gen, self.orders.seed, epoch, start, dims, idx.len(), &|i, dst: &mut [f32]| {
            self.load(&self.files[idx[i]].0, dst)
        })?;
        let n = idx.len();
        let x = Tensor::from_vec(out, (n, dims.0, dims.1, dims.2), &Device::Cpu)?;
        let labels: Vec<u32> = idx.iter().map(|&i| self.files[i].1 as u32).collect();
        let y = match self.opts.class_mode {
            ClassMode::Categorical => {
                crate::losses::one_hot(&Tensor::from_vec(labels, n, &Device::Cpu)?, self.class_names.len(), DType::F32)?
            }
            ClassMode::Sparse | ClassMode::Binary => {
                Tensor::from_vec(labels.iter().map(|&l| l as f32).collect::<Vec<_>>(), n, &Device::Cpu)?
            }
            ClassMode::Input => x.clone(),
            ClassMode::None => Tensor::zeros((n, 0), DType::F32, &Device::Cpu)?,
        };
        Ok((x, y))
    }
}

impl Iterator for DirectoryIterator {
    type Item = Result<(Tensor, Tensor)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (e, i) = self.pos;
        let r = self.batch(e, i);
        self.pos = if i + 1 >= self.len() { (e + 1, 0) } else { (e, i + 1) };
        Some(r)
    }
}

impl ImageDataGenerator {
    /// Batches of augmented images and their targets from in-memory data, as Keras' `flow`:
    /// `x` of shape `(n, h, w, c)` (any numeric type), `y` with `n` rows (or `None`-like: pass
    /// any tensor with `n` rows). Shuffled with a new order each epoch; see
    /// [`NumpyArrayIterator`] for `shuffle`, `seed` and `subset`.
    pub fn flow(&self, x: &Tensor, y: &Tensor, batch_size: usize) -> NumpyArrayIterator {
        NumpyArrayIterator::new(self.clone(), x, y, batch_size)
    }

    /// Batches of augmented images read from `dir/<class>/` (sub-folders included, as Keras'
    /// `os.walk`; png, jpg, jpeg, bmp, ppm, tif, tiff), as Keras' `flow_from_directory`, which
    /// prints Keras' `Found N images belonging to K classes.`. Pixel values are 0..255 before
    /// `rescale`.
    ///
    /// # Errors
    /// Invalid parameters, an unreadable folder, a folder with no class sub-folder or no
    /// image.
    pub fn flow_from_directory(&self, dir: impl AsRef<Path>, opts: DirectoryOptions) -> Result<DirectoryIterator> {
        DirectoryIterator::new(self.clone(), dir.as_ref(), opts)
    }
}
