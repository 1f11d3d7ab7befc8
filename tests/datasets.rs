//! Data set loaders on the real files in ../shared/data, and on small files (IDX, CIFAR-10
//! binary, image trees, their .tar.gz) that the tests write themselves.

mod common;

use candle_core::{DType, Tensor};
use flate2::write::GzEncoder;
use kandle::datasets::{cifar10, mnist};
use kandle::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

fn shared(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(sub)
}

/// The real data set: from ../shared/data on this project's machines; elsewhere (a user's
/// clone) through `load_data()`, which reads Keras' cache or downloads it as Keras does.
fn real(sub: &str) -> kandle::datasets::LoadedData {
    let dir = shared(sub);
    match (sub, dir.exists()) {
        ("mnist", true) => mnist::load_data_from(dir).unwrap(),
        ("mnist", false) => mnist::load_data().unwrap(),
        (_, true) => cifar10::load_data_from(dir).unwrap(),
        (_, false) => cifar10::load_data().unwrap(),
    }
}

/// A fresh temporary folder for one test.
fn tmp(name: &str) -> common::TempDir {
    common::TempDir::new("test", name)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn u8s(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

#[test]
fn mnist_real_files() {
    let ((x, y), (xt, yt)) = real("mnist");
    assert_eq!(x.dims(), &[60000, 28, 28]);
    assert_eq!(y.dims(), &[60000]);
    assert_eq!(xt.dims(), &[10000, 28, 28]);
    assert_eq!(x.dtype(), DType::U8);
    assert_eq!(&u8s(&y)[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(&u8s(&yt)[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    assert!(u8s(&x.get(0).unwrap()).iter().any(|&p| p > 200), "digit pixels present");
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn write_mnist(dir: &Path, n: u32, compress: bool, tamper: impl Fn(&str, Vec<u8>) -> Vec<u8>) {
    let images: Vec<u8> = (0..n * 784).map(|i| (i % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for (name, bytes) in [
        ("train-images-idx3-ubyte", idx(0x803, &[n, 28, 28], &images)),
        ("train-labels-idx1-ubyte", idx(0x801, &[n], &labels)),
        ("t10k-images-idx3-ubyte", idx(0x803, &[n, 28, 28], &images)),
        ("t10k-labels-idx1-ubyte", idx(0x801, &[n], &labels)),
    ] {
        let bytes = tamper(name, bytes);
        if compress {
            std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn mnist_gzipped_and_plain_files_give_the_same_data() {
    let (a, b) = (tmp("mnist-gz"), tmp("mnist-raw"));
    write_mnist(&a, 3, true, |_, b| b);
    write_mnist(&b, 3, false, |_, b| b);
    let ((x1, y1), _) = mnist::load_data_from(&a).unwrap();
    let ((x2, y2), _) = mnist::load_data_from(&b).unwrap();
    assert_eq!(x1.dims(), &[3, 28, 28]);
    assert_eq!(u8s(&x1), u8s(&x2));
    assert_eq!(u8s(&y1), vec![0, 1, 2]);
    assert_eq!(u8s(&y1), u8s(&y2));
}

fn expect_format_error(r: kandle::Result<kandle::datasets::LoadedData>, file: &str, words: &str) {
    match r {
        Err(e @ Error::Format { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(file), "error should name {file}: {msg}");
            assert!(msg.contains(words), "error should say {words:?}: {msg}");
        }
        Err(e) => panic!("expected a format error, got {e}"),
        Ok(_) => panic!("expected a format error, got data"),
    }
}

#[test]
fn mnist_bad_files_are_clear_errors() {
    let d = tmp("mnist-bad-magic");
    write_mnist(&d, 2, true, |name, mut b| {
        if name.starts_with("train-images") {
            b[3] = 0x02;
        }
        b
    });
    expect_format_error(mnist::load_data_from(&d), "train-images-idx3-ubyte.gz", "bad magic number");

    let d = tmp("mnist-truncated");
    write_mnist(&d, 2, false, |name, mut b| {
        if name.starts_with("t10k-images") {
            b.truncate(b.len() - 5);
        }
        b
    });
    expect_format_error(mnist::load_data_from(&d), "t10k-images-idx3-ubyte", "truncated");

    // A header declaring 4 billion x 4 billion pixels must not allocate them.
    let d = tmp("mnist-huge");
    write_mnist(&d, 2, true, |name, b| {
        if name.starts_with("train-images") {
            idx(0x803, &[u32::MAX, u32::MAX, 28], &[0; 10])
        } else {
            b
        }
    });
    expect_format_error(mnist::load_data_from(&d), "train-images", "describe more than");

    let d = tmp("mnist-count");
    write_mnist(&d, 2, true, |name, b| if name.starts_with("train-labels") { idx(0x801, &[1], &[3]) } else { b });
    expect_format_error(mnist::load_data_from(&d), "train-labels", "1 labels for 2 images");

    let d = tmp("mnist-missing");
    let err = mnist::load_data_from(&d).unwrap_err().to_string();
    assert!(err.contains("train-images-idx3-ubyte") && err.contains("not found"), "{err}");
}

#[test]
fn datasets_are_looked_up_in_kandle_data_dir_then_keras_cache() {
    // The only test in this binary that changes the environment.
    let d = tmp("lookup");
    std::fs::create_dir_all(d.join("mnist")).unwrap();
    write_mnist(&d.join("mnist"), 2, true, |_, b| b);
    let home = tmp("lookup-home");
    std::env::set_var("KANDLE_DATA_DIR", &d);
    std::env::set_var("HOME", &home);
    std::env::remove_var("KERAS_HOME");
    std::env::remove_var("KANDLE_DATASETS_MIRROR");
    std::env::set_var("KANDLE_OFFLINE", "1");
    let ((x, _), _) = mnist::load_data().unwrap();
    assert_eq!(x.dims(), &[2, 28, 28]);
    // Nowhere, and downloads off: the error names Keras' URL and where to put the archive.
    let err = cifar10::load_data().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Download { .. }), "{msg}");
    assert!(msg.contains("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"), "{msg}");
    assert!(
        msg.contains(&home.join(".keras/datasets/cifar-10-batches-py-target_archive").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("KANDLE_OFFLINE"), "{msg}");
    // Keras' cache is searched too.
    std::env::remove_var("KANDLE_DATA_DIR");
    let cache = home.join(".keras/datasets");
    std::fs::create_dir_all(&cache).unwrap();
    write_mnist(&cache, 1, false, |_, b| b);
    let ((x, _), _) = mnist::load_data().unwrap();
    assert_eq!(x.dims(), &[1, 28, 28]);
}

/// CIFAR-10 binary records: label then R, G, B planes; pixel values encode (record, channel).
fn cifar_records(labels: &[u8], first: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        v.push(l);
        for c in 0..3 {
            v.extend((0..1024).map(|p| ((first + i) * 7 + c * 50 + p % 13) as u8));
        }
    }
    v
}

fn write_cifar_binary(dir: &Path) {
    for b in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), cifar_records(&[b as u8, 9], b * 2)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_records(&[3], 100)).unwrap();
}

fn check_cifar_binary(((x, y), (xt, yt)): kandle::datasets::LoadedData) {
    assert_eq!(x.dims(), &[10, 32, 32, 3]);
    assert_eq!(y.dims(), &[10, 1]);
    assert_eq!(u8s(&y), vec![1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
    assert_eq!(xt.dims(), &[1, 32, 32, 3]);
    assert_eq!(u8s(&yt), vec![3]);
    // Planes become channels-last: pixel (0, 1) of record 0 (first index 2) has R, G, B.
    let px = u8s(&x.get(0).unwrap().get(0).unwrap().get(1).unwrap());
    assert_eq!(px, vec![(2 * 7 + 1) as u8, (2 * 7 + 50 + 1) as u8, (2 * 7 + 100 + 1) as u8]);
}

fn tar_gz(root: &Path, dest: &Path, inside: &str) {
    let f = std::fs::File::create(dest).unwrap();
    let mut t = tar::Builder::new(GzEncoder::new(f, flate2::Compression::fast()));
    t.append_dir_all(inside, root).unwrap();
    t.into_inner().unwrap().finish().unwrap();
}

#[test]
fn cifar10_binary_folder_and_archive() {
    let d = tmp("cifar-bin");
    let bin = d.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_cifar_binary(&bin);
    check_cifar_binary(cifar10::load_data_from(&bin).unwrap());
    check_cifar_binary(cifar10::load_data_from(&d).unwrap());
    let a = tmp("cifar-bin-tgz");
    tar_gz(&bin, &a.join("cifar-10-binary.tar.gz"), "cifar-10-batches-bin");
    check_cifar_binary(cifar10::load_data_from(a.join("cifar-10-binary.tar.gz")).unwrap());
    check_cifar_binary(cifar10::load_data_from(&a).unwrap());
}

#[test]
fn cifar10_binary_corruption_is_a_clear_error() {
    let d = tmp("cifar-bin-bad");
    write_cifar_binary(&d);
    let mut b = std::fs::read(d.join("data_batch_3.bin")).unwrap();
    b.truncate(b.len() - 100);
    std::fs::write(d.join("data_batch_3.bin"), &b).unwrap();
    expect_format_error(cifar10::load_data_from(&d), "data_batch_3.bin", "not a whole number");
    write_cifar_binary(&d);
    let mut b = std::fs::read(d.join("test_batch.bin")).unwrap();
    b[0] = 10;
    std::fs::write(d.join("test_batch.bin"), &b).unwrap();
    expect_format_error(cifar10::load_data_from(&d), "test_batch.bin", "label 10");
}

/// A .tar.gz whose entry declares 4 GiB (a decompression bomb, here only a header): an error
/// naming the entry and the cap, before anything of that size is allocated or read.
#[test]
fn cifar10_archive_declaring_huge_entries_is_an_error() {
    let d = tmp("cifar-bomb");
    let mut h = tar::Header::new_gnu();
    h.set_path("cifar-10-batches-bin/data_batch_1.bin").unwrap();
    h.set_size(4 << 30);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(h.as_bytes()).unwrap();
    gz.write_all(&[0u8; 4096]).unwrap();
    std::fs::write(d.join("cifar-10-binary.tar.gz"), gz.finish().unwrap()).unwrap();
    expect_format_error(
        cifar10::load_data_from(d.join("cifar-10-binary.tar.gz")),
        "data_batch_1.bin",
        "more than 1073741824 bytes",
    );
}

/// An image tree of `per_class` PNGs per class whose pixels encode (class, index); the red
/// channel is 40 x the class's rank in alphabetical order, Keras' class index.
fn write_tree(root: &Path, classes: &[&str], per_class: usize) {
    let mut sorted = classes.to_vec();
    sorted.sort();
    for split in ["train", "test"] {
        for name in classes {
            let c = sorted.iter().position(|s| s == name).unwrap();
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([c as u8 * 40, i as u8, (x + y) as u8]));
                img.save(dir.join(format!("{i:04}.png"))).unwrap();
            }
        }
    }
}

fn check_tree(((x, y), (xt, yt)): kandle::datasets::LoadedData, classes: usize, per_class: usize) {
    let n = classes * per_class;
    assert_eq!(x.dims(), &[n, 32, 32, 3]);
    assert_eq!(y.dims(), &[n, 1]);
    assert_eq!(xt.dims(), &[n, 32, 32, 3]);
    let labels = u8s(&y);
    // Each image's red channel encodes its class folder: labels follow the sorted folder names.
    for (i, &l) in labels.iter().enumerate() {
        let px = u8s(&x.get(i).unwrap().get(0).unwrap().get(0).unwrap());
        assert_eq!(px[0], l * 40);
    }
    // Interleaved: the first few samples are not all from one class, and each class appears
    // per_class times.
    assert!(labels[..classes * 2].iter().collect::<std::collections::HashSet<_>>().len() > 1, "{labels:?}");
    for c in 0..classes as u8 {
        assert_eq!(labels.iter().filter(|&&l| l == c).count(), per_class);
        assert_eq!(u8s(&yt).iter().filter(|&&l| l == c).count(), per_class);
    }
    // The order is fixed: loading twice gives the same order.
}

#[test]
fn cifar10_image_tree_folder_and_archive() {
    let d = tmp("tree");
    let root = d.join("cifar-10-images");
    write_tree(&root, &["bird", "airplane", "cat"], 6);
    let a = cifar10::load_data_from(&root).unwrap();
    let b = cifar10::load_data_from(&d).unwrap();
    assert_eq!(u8s(&a.0 .1), u8s(&b.0 .1), "a fixed order");
    check_tree(a, 3, 6);
    let t = tmp("tree-tgz");
    tar_gz(&root, &t.join("cifar-10-images.tar.gz"), "cifar-10-images");
    let c = cifar10::load_data_from(t.join("cifar-10-images.tar.gz")).unwrap();
    assert_eq!(u8s(&c.0 .1), u8s(&b.0 .1), "the archive gives the folder's order");
    check_tree(c, 3, 6);
}

#[test]
fn cifar10_unreadable_image_names_the_file() {
    let d = tmp("tree-bad");
    write_tree(&d, &["a", "b"], 2);
    std::fs::write(d.join("train/b/0001.png"), b"not a png").unwrap();
    let err = cifar10::load_data_from(&d).unwrap_err().to_string();
    assert!(err.contains("train/b/0001.png"), "{err}");
    write_tree(&d, &["a", "b"], 2);
    image::RgbImage::new(16, 16).save(d.join("test/a/0000.png")).unwrap();
    let err = cifar10::load_data_from(&d).unwrap_err().to_string();
    assert!(err.contains("test/a/0000.png") && err.contains("32x32"), "{err}");
}

#[test]
fn cifar10_real_jpeg_archive() {
    let ((x, y), (xt, yt)) = real("cifar10");
    assert_eq!(x.dims(), &[50000, 32, 32, 3]);
    assert_eq!(xt.dims(), &[10000, 32, 32, 3]);
    let (y, yt) = (u8s(&y), u8s(&yt));
    for c in 0..10u8 {
        assert_eq!(y.iter().filter(|&&l| l == c).count(), 5000);
        assert_eq!(yt.iter().filter(|&&l| l == c).count(), 1000);
    }
    // Interleaved: the first 100 training samples cover every class.
    assert_eq!(y[..100].iter().collect::<std::collections::HashSet<_>>().len(), 10);
}

/// candle-datasets' `vision::Dataset` (as its loaders build it: images in [0, 1], MNIST flat,
/// CIFAR channels-first) converted into what `load_data()` returns.
#[cfg(feature = "candle-datasets")]
#[test]
fn candle_datasets_vision_datasets_convert() {
    use candle_core::Device;
    let dev = Device::Cpu;
    let mnist_like = |n: usize| {
        Tensor::from_vec((0..n * 784).map(|i| (i % 256) as f32 / 255.0).collect::<Vec<_>>(), (n, 784), &dev).unwrap()
    };
    let ds = candle_datasets::vision::Dataset {
        train_images: mnist_like(3),
        train_labels: Tensor::new(&[5u8, 0, 4], &dev).unwrap(),
        test_images: mnist_like(1),
        test_labels: Tensor::new(&[7u8], &dev).unwrap(),
        labels: 10,
    };
    let ((x, y), (xt, yt)) = kandle::datasets::from_candle(&ds).unwrap();
    assert_eq!((x.dims(), y.dims(), xt.dims(), yt.dims()), (&[3, 28, 28][..], &[3][..], &[1, 28, 28][..], &[1][..]));
    assert_eq!(u8s(&x)[..300], (0..300).map(|i| (i % 256) as u8).collect::<Vec<_>>()[..]);
    // CIFAR: (N, C, H, W) -> (N, H, W, C), value (c, h, w) = c * 50 + h + w.
    let nchw: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| {
            let (c, h, w) = (i / 1024 % 3, i / 32 % 32, i % 32);
            (c * 50 + h + w) as f32 / 255.0
        })
        .collect();
    let ds = candle_datasets::vision::Dataset {
        train_images: Tensor::from_vec(nchw.clone(), (2, 3, 32, 32), &dev).unwrap(),
        train_labels: Tensor::new(&[1i64, 9], &dev).unwrap(),
        test_images: Tensor::from_vec(nchw, (2, 3, 32, 32), &dev).unwrap(),
        test_labels: Tensor::new(&[3u32, 4], &dev).unwrap(),
        labels: 10,
    };
    let ((x, y), (_, yt)) = kandle::datasets::from_candle(&ds).unwrap();
    assert_eq!((x.dims(), y.dims()), (&[2, 32, 32, 3][..], &[2, 1][..]));
    let v = u8s(&x);
    let at = |h: usize, w: usize, c: usize| v[(h * 32 + w) * 3 + c];
    assert_eq!((at(0, 0, 0), at(5, 7, 1), at(31, 2, 2)), (0, 62, 133));
    assert_eq!(u8s(&yt), [3, 4]);
    // Values outside [0, 1] are refused, naming the field.
    let bad = candle_datasets::vision::Dataset { train_images: (mnist_like(1) * 2.0).unwrap(), ..ds };
    let err = kandle::datasets::from_candle(&bad).unwrap_err().to_string();
    assert!(err.contains("train_images") && err.contains("[0, 1]"), "{err}");
}
