//! CIFAR-10, as `keras.datasets.cifar10`: 50,000 training and 10,000 test 32x32 RGB images in
//! ten classes.
//!
//! Reads the official python version Keras downloads (`cifar-10-batches-py/`, its
//! `cifar-10-python.tar.gz`, and Keras' cache of it), the binary version
//! (`cifar-10-batches-bin/` or its `.tar.gz`), or a class-per-folder image tree (`train/<class>/*.jpg|png`, `test/<class>/...`) as a folder or
//! a `.tar.gz`. An image tree lists its files class by class; its samples are returned in a
//! fixed, seeded, interleaved order (seed 0 for train, 1 for test), so that the first N
//! samples, or the last fraction taken by `validation_split`, cover every class.

use super::{cifar_py, LoadedData};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Class names in the official order (also the alphabetical order of the folder names).
pub const CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Bytes of one record of the binary version: a label then 1024 R, 1024 G and 1024 B bytes.
pub const RECORD: usize = 1 + 3 * 1024;

const TRAIN_BATCHES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
const TEST_BATCH: &str = "test_batch.bin";
const PY_TRAIN: [&str; 5] = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"];
const PY_TEST: &str = "test_batch";
const ARCHIVES: [&str; 6] = [
    "cifar-10-python.tar.gz",
    "cifar-10-batches-py-target_archive",
    "cifar-10-batches-py.tar.gz",
    "cifar-10-binary.tar.gz",
    "cifar-10-images.tar.gz",
    "cifar-10-images.tgz",
];
const FOLDERS: [&str; 4] = [
    "cifar-10-batches-py-target/cifar-10-batches-py",
    "cifar-10-batches-py",
    "cifar-10-batches-bin",
    "cifar-10-images",
];

/// Keras' download: its URL, its SHA-256 and its name in Keras 3's cache (keras/src/datasets/cifar10.py, Keras 3.15.1).
pub const ORIGIN: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz";
/// The SHA-256 of [`ORIGIN`].
pub const SHA256: &str = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce";
/// The folder Keras 3 extracts the archive into (the archive itself is kept beside it as
/// `cifar-10-batches-py-target_archive`).
pub const KERAS_DIRNAME: &str = "cifar-10-batches-py-target";

/// Loads CIFAR-10 as `keras.datasets.cifar10.load_data()`: from `$KANDLE_DATA_DIR` or Keras'
/// cache when it is there (see [`crate::datasets`]), else downloaded from Keras' URL
/// ([`ORIGIN`], SHA-256 checked) into Keras' cache, as Keras 3 lays it out.
///
/// Returns `x` of shape `(N, 32, 32, 3)` and `y` of shape `(N, 1)`, both `u8`, as Keras does.
///
/// # Errors
/// [`Error::Download`] when the data is nowhere and cannot be downloaded (naming the URL and
/// the path to put the archive at), or an error of [`load_data_from`].
pub fn load_data() -> Result<LoadedData> {
    for d in super::data_dir_dirs("cifar10") {
        if locate(&d).is_some() {
            return load_data_from(&d);
        }
    }
    let opts =
        || crate::utils::GetFileOptions::default().file_hash(SHA256).extract(true).extract_limit(MAX_ARCHIVE_BYTES);
    let url = super::origin(ORIGIN);
    for k in super::keras_dataset_dirs() {
        // Keras 3's cache: the extracted folder, with the archive kept beside it. Keras
        // extracts again at every call; kandle does when the folder does not read.
        let keras3 = k.join(KERAS_DIRNAME).join("cifar-10-batches-py");
        if matches!(locate(&keras3), Some(Source::PythonDir(_))) {
            return load_data_from(&keras3).or_else(|e| {
                let archive = k.join(format!("{KERAS_DIRNAME}_archive"));
                if archive.is_file() && crate::utils::validate_file(&archive, SHA256, Default::default())? {
                    crate::utils::extract_archive(&archive, &k.join(KERAS_DIRNAME), MAX_ARCHIVE_BYTES)?;
                    load_data_from(&keras3)
                } else {
                    Err(e)
                }
            });
        }
        // Keras 2's cache, and kandle's own layouts kept in Keras' folder.
        for d in [k.join("cifar-10-batches-py"), k.join("cifar10"), k.clone()] {
            match locate(&d) {
                // Keras 3's archive alone: get_file checks its hash (and downloads it again
                // when it does not match) before extracting it.
                Some(Source::Archive(a)) if a.ends_with(format!("{KERAS_DIRNAME}_archive")) => {}
                Some(_) => return load_data_from(&d),
                None => {}
            }
        }
    }
    let dir = crate::utils::get_file(KERAS_DIRNAME, &url, opts())?;
    load_data_from(dir.join("cifar-10-batches-py"))
}

enum Source {
    PythonDir(PathBuf),
    BinaryDir(PathBuf),
    TreeDir(PathBuf),
    Archive(PathBuf),
}

fn locate(path: &Path) -> Option<Source> {
    if path.is_file() {
        return Some(Source::Archive(path.to_path_buf()));
    }
    if !path.is_dir() {
        return None;
    }
    if path.join(PY_TRAIN[0]).is_file() && path.join(PY_TEST).is_file() {
        return Some(Source::PythonDir(path.to_path_buf()));
    }
    if path.join(TRAIN_BATCHES[0]).is_file() {
        return Some(Source::BinaryDir(path.to_path_buf()));
    }
    if path.join("train").is_dir() && path.join("test").is_dir() {
        return Some(Source::TreeDir(path.to_path_buf()));
    }
    for f in FOLDERS {
        if let Some(s) = locate(&path.join(f)).filter(|_| path.join(f).is_dir()) {
            return Some(s);
        }
    }
    ARCHIVES.iter().map(|a| path.join(a)).find(|p| p.is_file()).map(Source::Archive)
}

/// Loads CIFAR-10 from `path`: a folder of the python version Keras uses
/// (`cifar-10-batches-py/`), of the binary version, an image tree, a folder holding one of
/// them (or their `.tar.gz`, including Keras' cache folder `~/.keras/datasets`), or the
/// `.tar.gz` itself.
///
/// ```no_run
/// let ((x_train, y_train), _) = kandle::datasets::cifar10::load_data_from("../shared/data/cifar10")?;
/// assert_eq!(x_train.dims(), &[50000, 32, 32, 3]);
/// assert_eq!(y_train.dims(), &[50000, 1]);
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// A path with none of these layouts (the error says what was looked for), an unreadable or
/// corrupt file (named, with the offset or the decoder's message), a label outside 0..10.
pub fn load_data_from(path: impl AsRef<Path>) -> Result<LoadedData> {
    let path = path.as_ref();
    match locate(path) {
        Some(Source::PythonDir(d)) => {
            let read = |name: &str| -> Result<cifar_py::Batch> {
                let p = d.join(name);
                let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                cifar_py::parse(&p, &bytes, "labels", 10)
            };
            let train = PY_TRAIN.iter().map(|n| read(n)).collect::<Result<Vec<_>>>()?;
            Ok((cifar_py::to_tensors(train)?, cifar_py::to_tensors(vec![read(PY_TEST)?])?))
        }
        Some(Source::BinaryDir(d)) => {
            let read = |name: &str| {
                let p = d.join(name);
                std::fs::read(&p).map_err(|e| Error::io(&p, e)).map(|b| (p, b))
            };
            let train = TRAIN_BATCHES.iter().map(|n| read(n)).collect::<Result<Vec<_>>>()?;
            let test = vec![read(TEST_BATCH)?];
            Ok((from_binary(&train)?, from_binary(&test)?))
        }
        Some(Source::TreeDir(d)) => {
            let mut files = Vec::new();
            for split in ["train", "test"] {
                for class in sorted_entries(&d.join(split))? {
                    if !class.is_dir() {
                        continue;
                    }
                    for f in sorted_entries(&class)? {
                        if f.is_file() {
                            let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
                            files.push(TreeFile {
                                train: split == "train",
                                class: class.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                                name: f.display().to_string(),
                                bytes,
                            });
                        }
                    }
                }
            }
            from_tree(&d, files)
        }
        Some(Source::Archive(a)) => from_archive(&a),
        None => Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no CIFAR-10 data here: expected {} or {} (a folder or .tar.gz), or train/ and test/ class folders",
                    FOLDERS.join(" or "),
                    ARCHIVES.join(" or ")
                ),
            ),
        )),
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Parses files of binary records into `(x, y)`.
pub(crate) fn from_binary(files: &[(PathBuf, Vec<u8>)]) -> Result<(Tensor, Tensor)> {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (path, bytes) in files {
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(Error::Format {
                path: path.clone(),
                format: "CIFAR-10 binary",
                offset: (bytes.len() - bytes.len() % RECORD) as u64,
                reason: format!(
                    "{} bytes is not a whole number of {RECORD}-byte records (truncated or not a CIFAR-10 batch)",
                    bytes.len()
                ),
            });
        }
        for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
            if rec[0] >= 10 {
                return Err(Error::Format {
                    path: path.clone(),
                    format: "CIFAR-10 binary",
                    offset: (i * RECORD) as u64,
                    reason: format!("label {} of record {i} is not a class index in 0..10", rec[0]),
                });
            }
            y.push(rec[0]);
            let planes = &rec[1..];
            for p in 0..1024 {
                x.extend_from_slice(&[planes[p], planes[1024 + p], planes[2048 + p]]);
            }
        }
    }
    let n = y.len();
    Ok((Tensor::from_vec(x, (n, 32, 32, 3), &Device::Cpu)?, Tensor::from_vec(y, (n, 1), &Device::Cpu)?))
}

struct TreeFile {
    train: bool,
    class: String,
    name: String,
    bytes: Vec<u8>,
}

/// The most bytes the CIFAR-10 files of an archive may hold once decompressed (the real data
/// set: about 180 MB as binary batches, about 140 MB as JPEG or PNG files).
pub(crate) const MAX_ARCHIVE_BYTES: u64 = 1 << 30;

fn from_archive(path: &Path) -> Result<LoadedData> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?);
    let gzipped = std::io::BufRead::fill_buf(&mut file).map_err(|e| Error::io(path, e))?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzipped { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let bad = |reason: String| Error::Format { path: path.into(), format: "tar.gz archive", offset: 0, reason };
    let mut archive = tar::Archive::new(reader);
    let mut binary: Vec<(String, Vec<u8>)> = Vec::new();
    let mut python: Vec<(String, Vec<u8>)> = Vec::new();
    let mut tree = Vec::new();
    let mut kept = 0u64;
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let p = entry.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
        let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
        let file_name = parts.last().copied().unwrap_or_default().to_string();
        let is_batch = TRAIN_BATCHES.contains(&file_name.as_str()) || file_name == TEST_BATCH;
        let is_py = PY_TRAIN.contains(&file_name.as_str()) || file_name == PY_TEST;
        let tree_split = (parts.len() >= 3).then(|| parts[parts.len() - 3]).filter(|s| *s == "train" || *s == "test");
        if !is_batch && !is_py && tree_split.is_none() {
            continue;
        }
        // The files kept are bounded in all, as the MNIST reader bounds its files: a
        // decompression bomb (a small .gz declaring huge entries) is an error, not an allocation.
        let left = MAX_ARCHIVE_BYTES - kept;
        if entry.size() > left {
            return Err(bad(format!(
                "{p}: the archive's CIFAR-10 files would hold more than {MAX_ARCHIVE_BYTES} bytes (this entry declares {})",
                entry.size()
            )));
        }
        let mut bytes = Vec::with_capacity((entry.size() as usize).min(1 << 24));
        (&mut entry).take(left + 1).read_to_end(&mut bytes).map_err(|e| bad(format!("{p}: {e}")))?;
        kept += bytes.len() as u64;
        if kept > MAX_ARCHIVE_BYTES {
            return Err(bad(format!("{p}: the archive's CIFAR-10 files hold more than {MAX_ARCHIVE_BYTES} bytes")));
        }
        if is_batch {
            binary.push((file_name, bytes));
        } else if is_py {
            python.push((file_name, bytes));
        } else if let Some(split) = tree_split {
            tree.push(TreeFile {
                train: split == "train",
                class: parts[parts.len() - 2].to_string(),
                name: format!("{}!{p}", path.display()),
                bytes,
            });
        }
    }
    if !python.is_empty() {
        let read = |n: &str| -> Result<cifar_py::Batch> {
            let (f, b) = python.iter().find(|(f, _)| f == n).ok_or_else(|| bad(format!("the archive has no {n}")))?;
            cifar_py::parse(&PathBuf::from(format!("{}!{f}", path.display())), b, "labels", 10)
        };
        let train = PY_TRAIN.iter().map(|n| read(n)).collect::<Result<Vec<_>>>()?;
        return Ok((cifar_py::to_tensors(train)?, cifar_py::to_tensors(vec![read(PY_TEST)?])?));
    }
    if !binary.is_empty() {
        let pick = |names: &[&str]| -> Result<Vec<(PathBuf, Vec<u8>)>> {
            names
                .iter()
                .map(|n| {
                    binary
                        .iter()
                        .find(|(f, _)| f == n)
                        .map(|(f, b)| (PathBuf::from(format!("{}!{f}", path.display())), b.clone()))
                        .ok_or_else(|| bad(format!("the archive has no {n}")))
                })
                .collect()
        };
        return Ok((from_binary(&pick(&TRAIN_BATCHES)?)?, from_binary(&pick(&[TEST_BATCH])?)?));
    }
    if tree.is_empty() {
        return Err(bad(
            "no CIFAR-10 batches (data_batch_N.bin) and no train/<class>/ or test/<class>/ images inside".into()
        ));
    }
    from_tree(path, tree)
}

fn from_tree(root: &Path, mut files: Vec<TreeFile>) -> Result<LoadedData> {
    let mut classes: Vec<String> = files.iter().filter(|f| f.train).map(|f| f.class.clone()).collect();
    classes.sort();
    classes.dedup();
    if classes.is_empty() || classes.len() > 256 {
        return Err(Error::Format {
            path: root.into(),
            format: "CIFAR-10 image tree",
            offset: 0,
            reason: format!("expected class folders under train/, found {}", classes.len()),
        });
    }
    files.sort_by(|a, b| (a.class.as_str(), a.name.as_str()).cmp(&(b.class.as_str(), b.name.as_str())));
    let split = |train: bool, seed: u64| -> Result<(Tensor, Tensor)> {
        let mut part: Vec<&TreeFile> = files.iter().filter(|f| f.train == train).collect();
        part.shuffle(&mut StdRng::seed_from_u64(seed));
        let decoded: Vec<(Vec<u8>, u8)> = part
            .par_iter()
            .map(|f| {
                let class = classes.iter().position(|c| *c == f.class).ok_or_else(|| Error::Format {
                    path: PathBuf::from(&f.name),
                    format: "CIFAR-10 image tree",
                    offset: 0,
                    reason: format!("class folder {:?} of the test split has no training folder", f.class),
                })?;
                Ok((decode_32x32(&f.name, &f.bytes)?, class as u8))
            })
            .collect::<Result<_>>()?;
        let n = decoded.len();
        let mut x = Vec::with_capacity(n * 3072);
        let mut y = Vec::with_capacity(n);
        for (img, c) in decoded {
            x.extend_from_slice(&img);
            y.push(c);
        }
        Ok((Tensor::from_vec(x, (n, 32, 32, 3), &Device::Cpu)?, Tensor::from_vec(y, (n, 1), &Device::Cpu)?))
    };
    Ok((split(true, 0)?, split(false, 1)?))
}

fn decode_32x32(name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let bad =
        |reason: String| Error::Format { path: PathBuf::from(name), format: "image (JPEG or PNG)", offset: 0, reason };
    let open = || image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format();
    let reader = open().map_err(|e| bad(e.to_string()))?;
    // The header's size is checked before decoding, so that a corrupt one cannot make the
    // decoder allocate for a huge image.
    let (w, h) = reader.into_dimensions().map_err(|e| bad(e.to_string()))?;
    if (w, h) != (32, 32) {
        return Err(bad(format!("expected a 32x32 image, received {w}x{h}")));
    }
    let mut reader = open().map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(32);
    limits.max_image_height = Some(32);
    limits.max_alloc = Some(1 << 20);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(e.to_string()))?.to_rgb8();
    Ok(img.into_raw())
}
