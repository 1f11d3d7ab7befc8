//! Keras' data set formats and cache: the restricted unpickler on files in the published
//! formats (tests/golden/make_dataset_fixtures.py, read back there by Keras' own loader),
//! `mnist.npz`, `get_file` against a local HTTP server (hash checks, truncated and corrupt
//! downloads, the cache, offline mode), and `load_data()` on caches laid out as Keras 3 and
//! Keras 2 lay them out.
//!
//! The tests that set environment variables (`KERAS_HOME`, `KANDLE_OFFLINE`, ...) hold one lock.

mod common;

use flate2::write::GzEncoder;
use kandle::datasets::{cifar10, cifar100, fashion_mnist, mnist, pickle};
use kandle::utils::{get_file, GetFileOptions, HashAlgorithm};
use kandle::Error;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> std::sync::MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/datasets").join(name)).unwrap()
}

fn tmp(name: &str) -> common::TempDir {
    common::TempDir::new("kd", name)
}

fn u8s(t: &candle_core::Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir`, relative, sorted (hidden temporary files included).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// A tar.gz of `(path, bytes)` entries.
fn tar_gz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The CIFAR-10 python archive built from the fixture batch (5 images per batch).
fn cifar10_archive() -> Vec<u8> {
    let batch = fixture("cifar10_py2_batch");
    let mut entries: Vec<(&str, Vec<u8>)> = (1..=5)
        .map(|i| {
            (
                [
                    "cifar-10-batches-py/data_batch_1",
                    "cifar-10-batches-py/data_batch_2",
                    "cifar-10-batches-py/data_batch_3",
                    "cifar-10-batches-py/data_batch_4",
                    "cifar-10-batches-py/data_batch_5",
                ][i - 1],
                batch.clone(),
            )
        })
        .collect();
    entries.push(("cifar-10-batches-py/test_batch", batch.clone()));
    entries.push(("cifar-10-batches-py/readme.html", b"<html></html>".to_vec()));
    tar_gz(&entries)
}

/// A local HTTP server: `files` by path. A path in `truncated` is cut after half its bytes
/// (the declared length stays the whole); a path ending in `.slow` is sent in 4 KB pieces
/// 20 ms apart; a path ending in `.lies` declares 10 bytes less than it sends. Counts the
/// requests.
struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
}

fn serve(files: HashMap<String, Vec<u8>>, truncated: Vec<String>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            h.fetch_add(1, Ordering::SeqCst);
            let line = String::from_utf8_lossy(&req).lines().next().unwrap_or_default().to_string();
            let path = line.split(' ').nth(1).unwrap_or("/").to_string();
            match files.get(&path) {
                Some(body) => {
                    let n = if truncated.contains(&path) { body.len() / 2 } else { body.len() };
                    let declared = if path.ends_with(".lies") { body.len() - 10 } else { body.len() };
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    );
                    if path.ends_with(".slow") {
                        for chunk in body[..n].chunks(4096) {
                            let _ = s.write_all(chunk);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                    } else {
                        let _ = s.write_all(&body[..n]);
                    }
                }
                None => {
                    let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    Server { url, hits }
}

/// Clears the variables the loaders read, and points Keras' cache at `home`.
fn clean_env(keras_home: &Path) {
    for v in ["KANDLE_DATA_DIR", "KANDLE_DATASETS_MIRROR", "KANDLE_OFFLINE"] {
        std::env::remove_var(v);
    }
    std::env::set_var("KERAS_HOME", keras_home);
}

#[test]
fn python2_cifar_pickles_read_as_keras_reads_them() {
    let v = pickle::load(&fixture("cifar10_py2_batch")).unwrap();
    assert_eq!(v.get("batch_label").and_then(|l| l.as_text()), Some("training batch 1 of 5"));
    let Some(pickle::Value::Array(a)) = v.get("data") else { panic!("no data array: {v:?}") };
    assert_eq!((a.dtype.as_str(), a.shape.as_slice(), a.order), ("u1", &[5usize, 3072][..], '|'));
    // The pattern the fixture script wrote: image i, channel c, pixel p = (37 i + 101 c + 7 p) % 256.
    for (k, &b) in a.data.iter().enumerate() {
        let (i, c, p) = (k / 3072, k % 3072 / 1024, k % 1024);
        assert_eq!(b as usize, (i * 37 + c * 101 + p * 7) % 256);
    }
    let Some(pickle::Value::List(labels)) = v.get("labels") else { panic!() };
    assert_eq!(labels, &[6, 9, 9, 4, 1].map(pickle::Value::Int).to_vec());

    // Through the CIFAR-10 loader: channels-last, as Keras' load_data transposes.
    let d = tmp("py-dir");
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
        std::fs::write(d.join(f), fixture("cifar10_py2_batch")).unwrap();
    }
    let ((x, y), (xt, yt)) = cifar10::load_data_from(&d).unwrap();
    assert_eq!(
        (x.dims(), y.dims(), xt.dims(), yt.dims()),
        (&[25, 32, 32, 3][..], &[25, 1][..], &[5, 32, 32, 3][..], &[5, 1][..])
    );
    // Printed by the fixture script from numpy: image 4, row 31, column 31.
    assert_eq!(u8s(&xt)[(4 * 1024 + 31 * 32 + 31) * 3..][..3], [141, 242, 87]);
    assert_eq!(u8s(&y)[20..], [6, 9, 9, 4, 1]);
}

#[test]
fn cifar100_fine_and_coarse_labels() {
    let root = tmp("c100");
    let d = root.join("cifar-100-python");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["train", "test", "meta"] {
        std::fs::write(d.join(f), fixture("cifar100_py3_batch")).unwrap();
    }
    let ((x, y), _) = cifar100::load_data_from(d.parent().unwrap(), "fine").unwrap();
    assert_eq!(x.dims(), &[4, 32, 32, 3]);
    assert_eq!(u8s(&y), [19, 29, 0, 11]);
    let (_, (_, yt)) = cifar100::load_data_from(&d, "coarse").unwrap();
    assert_eq!(u8s(&yt), [11, 15, 4, 14]);
    // The pixels: (37 i + 101 c + 7 p + 5) % 256, channels last.
    assert_eq!(u8s(&x)[3..6], [(7 + 5) as u8, (101 + 7 + 5) as u8, (202 + 7 + 5) as u8]);
    let err = cifar100::load_data_from(&d, "medium").unwrap_err().to_string();
    assert!(err.contains("label_mode") && err.contains("\"fine\" or \"coarse\"") && err.contains("medium"), "{err}");
    // The archive, read without extracting it.
    let archive_dir = tmp("c100-archive");
    let a = archive_dir.join("cifar-100-python.tar.gz");
    std::fs::write(
        &a,
        tar_gz(&[
            ("cifar-100-python/train", fixture("cifar100_py3_batch")),
            ("cifar-100-python/test", fixture("cifar100_py3_batch")),
        ]),
    )
    .unwrap();
    let ((x2, _), _) = cifar100::load_data_from(&a, "fine").unwrap();
    assert_eq!(u8s(&x2), u8s(&x));
}

#[test]
fn the_unpickler_refuses_code_and_bad_files_without_panicking() {
    let err = pickle::load(&fixture("evil_pickle")).unwrap_err();
    assert!(err.reason.contains("refusing to deserialize `posix.system`"), "{err:?}");
    // Every truncation of a real batch is an error, never a panic.
    let good = fixture("cifar10_py2_batch");
    for cut in (0..good.len()).step_by(97).chain([good.len() - 1]) {
        assert!(pickle::load(&good[..cut]).is_err(), "a pickle cut at {cut} bytes was accepted");
    }
    // A string declaring 2 GB in a 10-byte file: an error, no 2 GB allocation.
    let huge = [0x80, 2, b'T', 0xff, 0xff, 0xff, 0x7f, b'x', b'.', 0];
    let err = pickle::load(&huge).unwrap_err();
    assert!(err.reason.contains("runs past the end"), "{err:?}");
    // Via the loader: the file is named.
    let d = tmp("evil");
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
        std::fs::write(d.join(f), fixture("evil_pickle")).unwrap();
    }
    let err = cifar10::load_data_from(&d).unwrap_err().to_string();
    assert!(err.contains("data_batch_1") && err.contains("posix.system"), "{err}");
}

#[test]
fn keras_mnist_npz_reads() {
    let d = tmp("npz");
    let p = d.join("mnist.npz");
    std::fs::write(&p, fixture("mnist_small.npz")).unwrap();
    let ((x, y), (xt, yt)) = mnist::load_npz(&p).unwrap();
    assert_eq!((x.dims(), y.dims(), xt.dims(), yt.dims()), (&[3, 28, 28][..], &[3][..], &[2, 28, 28][..], &[2][..]));
    assert_eq!(u8s(&y), [5, 0, 4]);
    assert_eq!(u8s(&yt), [7, 2]);
    // Values printed by the fixture script from numpy.
    assert_eq!(u8s(&x)[2 * 784 + 27 * 28 + 27], 109);
    assert_eq!(u8s(&xt)[784 + 5], 42);
    std::fs::write(&p, &fixture("mnist_small.npz")[..100]).unwrap();
    assert!(mnist::load_npz(&p).unwrap_err().to_string().contains("mnist.npz"));
}

#[test]
fn get_file_downloads_once_checks_hashes_and_leaves_nothing_half_written() {
    let _g = env_lock();
    let home = tmp("gf-home");
    clean_env(&home);
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut files = HashMap::new();
    files.insert("/data/blob.bin".to_string(), body.clone());
    files.insert("/data/cut.bin".to_string(), body.clone());
    files.insert("/data/blob.slow".to_string(), body[..60_000].to_vec());
    files.insert("/data/blob.lies".to_string(), body.clone());
    let srv = serve(files, vec!["/data/cut.bin".into()]);
    let hash = sha256(&body);
    let datasets = home.join("datasets");

    // Downloaded, hash checked, cached where Keras caches it; the second call makes no request.
    let url = format!("{}/data/blob.bin", srv.url);
    let p = get_file("blob.bin", &url, GetFileOptions::default().file_hash(&hash)).unwrap();
    assert_eq!(p, datasets.join("blob.bin"));
    assert_eq!(std::fs::read(&p).unwrap(), body);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    let p2 = get_file("blob.bin", &url, GetFileOptions::default().file_hash(&hash)).unwrap();
    assert_eq!((p2, srv.hits.load(Ordering::SeqCst)), (p.clone(), 1));
    // fname empty: the URL's file name. MD5 works too.
    let md5 = kandle::utils::hash_file(&p, HashAlgorithm::Md5).unwrap();
    assert_eq!(get_file("", &url, GetFileOptions::default().file_hash(&md5)).unwrap(), p);

    // A cached file with the wrong hash is downloaded again (Keras' behaviour).
    std::fs::write(&p, b"stale").unwrap();
    get_file("blob.bin", &url, GetFileOptions::default().file_hash(&hash)).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), body);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);

    // A download whose hash does not match: an error naming both hashes, nothing left behind.
    let err = get_file("other.bin", &url, GetFileOptions::default().file_hash("0".repeat(64))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Download { .. }) && msg.contains(&hash) && msg.contains(&"0".repeat(64)), "{msg}");
    // A transfer cut short (the server declares 200,000 bytes and sends 100,000).
    let err = get_file("cut.bin", &format!("{}/data/cut.bin", srv.url), GetFileOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err}");
    // A missing file on the server.
    let err =
        get_file("nope.bin", &format!("{}/nope.bin", srv.url), GetFileOptions::default()).unwrap_err().to_string();
    assert!(err.contains("404") && err.contains(&datasets.join("nope.bin").display().to_string()), "{err}");
    // A server that declares fewer bytes than the file has: the hash catches it.
    let err = get_file("lies.bin", &format!("{}/data/blob.lies", srv.url), GetFileOptions::default().file_hash(&hash))
        .unwrap_err()
        .to_string();
    assert!(err.contains("hash"), "{err}");
    assert_eq!(tree(&datasets), ["blob.bin"], "only the good download is in the cache");
    // A slow server (60 KB in 15 pieces, 20 ms apart) is waited for.
    let slow = get_file("slow.bin", &format!("{}/data/blob.slow", srv.url), GetFileOptions::default()).unwrap();
    assert_eq!(std::fs::read(&slow).unwrap(), body[..60_000]);
    // Leftovers of a process killed in the middle of a download: removed by the next download of
    // that file when their process is gone (pid 4,000,000 is above Linux's limit), kept when it
    // still runs (pid 1), and never read.
    let dead = datasets.join(".late.bin.download-4000000-0");
    let alive = datasets.join(".late.bin.download-1-0");
    std::fs::write(&dead, b"partial").unwrap();
    std::fs::write(&alive, b"partial").unwrap();
    let late = get_file("late.bin", &url, GetFileOptions::default().file_hash(&hash)).unwrap();
    assert_eq!(std::fs::read(&late).unwrap(), body);
    if Path::new("/proc/self").exists() {
        assert!(!dead.exists() && alive.exists());
    }
    std::fs::remove_file(&alive).unwrap();
    std::fs::remove_file(&slow).unwrap();
    std::fs::remove_file(&late).unwrap();

    // Offline: an error naming the URL and the exact path to put the file at.
    std::env::set_var("KANDLE_OFFLINE", "1");
    let err = get_file("new.bin", &url, GetFileOptions::default()).unwrap_err().to_string();
    assert!(err.contains(&url) && err.contains(&datasets.join("new.bin").display().to_string()), "{err}");
    // ... while a cached file still loads.
    assert_eq!(get_file("blob.bin", &url, GetFileOptions::default()).unwrap(), p);
    std::env::remove_var("KANDLE_OFFLINE");

    // A path as fname is refused, as in Keras.
    let err = get_file("a/b.bin", &url, GetFileOptions::default()).unwrap_err().to_string();
    assert!(err.contains("fname") && err.contains("cache_dir"), "{err}");
}

#[test]
fn get_file_extracts_as_keras_3_lays_out_its_cache() {
    let _g = env_lock();
    let home = tmp("gx-home");
    clean_env(&home);
    let archive = cifar10_archive();
    let mut files = HashMap::new();
    files.insert("/cifar-10-python.tar.gz".to_string(), archive.clone());
    let srv = serve(files, Vec::new());
    let url = format!("{}/cifar-10-python.tar.gz", srv.url);
    let opts = || GetFileOptions::default().file_hash(sha256(&archive)).extract(true);
    // A name without a dot (Keras' data sets): the archive kept as <name>_archive, extracted into <name>.
    let dir = get_file("cifar-10-batches-py-target", &url, opts()).unwrap();
    let datasets = home.join("datasets");
    assert_eq!(dir, datasets.join("cifar-10-batches-py-target"));
    let mut expected = vec![
        "cifar-10-batches-py-target/".to_string(),
        "cifar-10-batches-py-target/cifar-10-batches-py/".to_string(),
        "cifar-10-batches-py-target_archive".to_string(),
    ];
    for f in
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "readme.html", "test_batch"]
    {
        expected.push(format!("cifar-10-batches-py-target/cifar-10-batches-py/{f}"));
    }
    expected.sort();
    assert_eq!(tree(&datasets), expected);
    // A name with a dot keeps the archive's name and extracts into <stem>_extracted.
    let dir = get_file("c10.tar.gz", &url, opts()).unwrap();
    assert_eq!(dir, datasets.join("c10_extracted"));
    assert!(dir.join("cifar-10-batches-py/test_batch").is_file() && datasets.join("c10.tar.gz").is_file());
    // Not an archive: an error, and no half-extracted folder.
    std::fs::write(datasets.join("junk_archive"), b"not an archive at all").unwrap();
    let err = get_file("junk", &url, GetFileOptions::default().extract(true)).unwrap_err().to_string();
    assert!(err.contains("junk_archive"), "{err}");
    assert!(!datasets.join("junk").exists());
    assert!(!tree(&datasets).iter().any(|f| f.starts_with('.')), "temporary files left: {:?}", tree(&datasets));
}

#[test]
fn load_data_reads_keras_3_and_keras_2_caches_and_downloads_what_is_missing() {
    let _g = env_lock();
    // Keras 3's cache for CIFAR-10 (what `keras.datasets.cifar10.load_data()` leaves).
    let home = tmp("ld3");
    clean_env(&home);
    std::env::set_var("KANDLE_OFFLINE", "1");
    let k3 = home.join("datasets/cifar-10-batches-py-target");
    kandle::utils::extract_archive(&write(&home.join("a.tar.gz"), &cifar10_archive()), &k3, u64::MAX).unwrap();
    let ((x, _), (xt, _)) = cifar10::load_data().unwrap();
    assert_eq!((x.dims()[0], xt.dims()[0]), (25, 5));
    // The same cache found through HOME, as Keras finds it without KERAS_HOME.
    let fake_home = tmp("ld3-home");
    std::fs::rename(&home, fake_home.join(".keras")).unwrap();
    std::env::remove_var("KERAS_HOME");
    let real_home = std::env::var_os("HOME");
    std::env::set_var("HOME", &fake_home);
    let ((x, _), _) = cifar10::load_data().unwrap();
    assert_eq!(x.dims()[0], 25);
    match real_home {
        Some(h) => std::env::set_var("HOME", h),
        None => std::env::remove_var("HOME"),
    }
    // Keras 2's.
    let home = tmp("ld2");
    clean_env(&home);
    std::env::set_var("KANDLE_OFFLINE", "1");
    kandle::utils::extract_archive(
        &write(&home.join("a.tar.gz"), &cifar10_archive()),
        &home.join("datasets"),
        u64::MAX,
    )
    .unwrap();
    assert!(home.join("datasets/cifar-10-batches-py/data_batch_1").is_file());
    assert_eq!(cifar10::load_data().unwrap().0 .0.dims(), &[25, 32, 32, 3]);
    // mnist.npz in Keras' cache.
    std::fs::write(home.join("datasets/mnist.npz"), fixture("mnist_small.npz")).unwrap();
    assert_eq!(mnist::load_data().unwrap().0 .0.dims(), &[3, 28, 28]);

    // Nothing cached: downloaded from the mirror into Keras' layout, then read from the cache
    // without a request. Fashion-MNIST (Keras gives no hash for it, so any files serve).
    let home = tmp("ldfm");
    clean_env(&home);
    let mut files = HashMap::new();
    let idx = |dims: &[u32], data: Vec<u8>| -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend(data);
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&v).unwrap();
        e.finish().unwrap()
    };
    files.insert("/m/train-images-idx3-ubyte.gz".into(), idx(&[2, 28, 28], vec![7; 2 * 784]));
    files.insert("/m/train-labels-idx1-ubyte.gz".into(), idx(&[2], vec![9, 0]));
    files.insert("/m/t10k-images-idx3-ubyte.gz".into(), idx(&[1, 28, 28], vec![3; 784]));
    files.insert("/m/t10k-labels-idx1-ubyte.gz".into(), idx(&[1], vec![4]));
    files.insert("/m/cifar-10-python.tar.gz".into(), cifar10_archive());
    let srv = serve(files, Vec::new());
    std::env::set_var("KANDLE_DATASETS_MIRROR", format!("{}/m/", srv.url));
    let ((x, y), (_, yt)) = fashion_mnist::load_data().unwrap();
    assert_eq!((x.dims(), u8s(&y), u8s(&yt)), (&[2, 28, 28][..], vec![9, 0], vec![4]));
    assert_eq!(srv.hits.load(Ordering::SeqCst), 4);
    assert_eq!(
        tree(&home.join("datasets")),
        [
            "fashion-mnist/",
            "fashion-mnist/t10k-images-idx3-ubyte.gz",
            "fashion-mnist/t10k-labels-idx1-ubyte.gz",
            "fashion-mnist/train-images-idx3-ubyte.gz",
            "fashion-mnist/train-labels-idx1-ubyte.gz"
        ]
    );
    fashion_mnist::load_data().unwrap();
    assert_eq!(srv.hits.load(Ordering::SeqCst), 4, "the second call reads the cache");
    // CIFAR-10 from the mirror: the URL is the mirror's, and the archive is checked against
    // Keras' SHA-256 (this one is not the real data set, so it is refused and not kept).
    let err = cifar10::load_data().unwrap_err().to_string();
    assert!(err.contains(&format!("{}/m/cifar-10-python.tar.gz", srv.url)) && err.contains(cifar10::SHA256), "{err}");
    assert!(!home.join("datasets/cifar-10-batches-py-target_archive").exists());
    clean_env(&home);
}

fn write(p: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(p, bytes).unwrap();
    p.to_path_buf()
}

#[test]
fn keras_constants_are_keras_3_15s() {
    // keras/src/datasets/{cifar10,cifar100,mnist}.py in Keras 3.15.1.
    assert_eq!(cifar10::ORIGIN, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz");
    assert_eq!(cifar10::SHA256, "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce");
    assert_eq!(cifar10::KERAS_DIRNAME, "cifar-10-batches-py-target");
    assert_eq!(cifar100::ORIGIN, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz");
    assert_eq!(cifar100::SHA256, "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7");
    assert_eq!(mnist::ORIGIN, "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz");
    assert_eq!(mnist::SHA256, "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1");
    assert_eq!(fashion_mnist::ORIGIN, "https://storage.googleapis.com/tensorflow/tf-keras-datasets/");
}

/// `image_dataset_from_directory` against what Keras 3 made of the same folder
/// (tests/golden/make_dataset_fixtures.py): its file order, its seeded split, its resize.
#[test]
fn image_dataset_from_directory_as_keras() {
    use kandle::preprocessing::image::{
        image_dataset_from_directory, BatchGenerator, DatasetOptions, LabelMode, ResizeInterpolation, Subset,
    };
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/datasets/tree");
    let golden: serde_json::Value = serde_json::from_slice(&fixture("image_dataset.json")).unwrap();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    let rel = |ds: &kandle::preprocessing::image::ImageDataset| -> Vec<String> {
        ds.file_paths().iter().map(|p| p.strip_prefix(&tree).unwrap().to_string_lossy().into_owned()).collect()
    };
    // The seeded split: the same files in each subset as Keras, in the same order.
    let opts =
        DatasetOptions::default().image_size((4, 6)).batch_size(5).seed(42).validation_split(0.25).verbose(false);
    let train =
        image_dataset_from_directory(&tree, opts.clone().subset(Subset::Training).label_mode(LabelMode::Categorical))
            .unwrap();
    let val = image_dataset_from_directory(&tree, opts.clone().subset(Subset::Validation)).unwrap();
    assert_eq!(rel(&train), names(&golden["training"]));
    assert_eq!(rel(&val), names(&golden["validation"]));
    assert_eq!(train.class_names(), names(&golden["class_names"]));
    assert_eq!((train.len(), val.len()), (3, 1));
    let (x, y) = train.batch(0, 2).unwrap();
    assert_eq!((x.dims(), y.dims()), (&[2, 4, 6, 3][..], &[2, 3][..]));
    // Labels follow their files through the shuffle.
    let labels = train.labels().unwrap();
    for (p, &l) in rel(&train).iter().zip(labels) {
        assert_eq!(p.split('/').next().unwrap(), train.class_names()[l as usize]);
    }
    // Pixels: TensorFlow's resize (bilinear, nearest), Keras' crop and pad to the aspect ratio.
    let order = names(&golden["unshuffled"]);
    for (mode, size) in [("plain", (4, 6)), ("crop", (4, 6)), ("pad", (4, 6)), ("nearest", (5, 3))] {
        let mut o = DatasetOptions::default().image_size(size).shuffle(false).batch_size(100).verbose(false);
        o = match mode {
            "crop" => o.crop_to_aspect_ratio(true),
            "pad" => o.pad_to_aspect_ratio(true),
            "nearest" => o.interpolation(ResizeInterpolation::Nearest),
            _ => o,
        };
        let ds = image_dataset_from_directory(&tree, o).unwrap();
        assert_eq!(rel(&ds), order);
        let (x, _) = ds.batch(0, 0).unwrap();
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let per = size.0 * size.1 * 3;
        for (i, f) in order.iter().enumerate() {
            let want = golden["pixels"][mode][f].as_array().unwrap();
            for (k, (a, b)) in x[i * per..(i + 1) * per].iter().zip(want).enumerate() {
                let b = b.as_f64().unwrap();
                assert!((*a as f64 - b).abs() < 2e-3, "{mode} {f} value {k}: kandle {a}, Keras {b}");
            }
        }
    }
    // Keras' errors.
    let err = |o: DatasetOptions| image_dataset_from_directory(&tree, o).unwrap_err().to_string();
    assert!(err(DatasetOptions::default().validation_split(0.2).subset(Subset::Training)).contains("seed"));
    assert!(err(DatasetOptions::default().validation_split(1.5).subset(Subset::Training).seed(1))
        .contains("between 0 and 1"));
    assert!(err(DatasetOptions::default().validation_split(0.2)).contains("subset"));
    assert!(err(DatasetOptions::default().label_mode(LabelMode::Binary)).contains("exactly 2"));
    assert!(err(DatasetOptions::default().class_names(&["cats", "lions"])).contains("lions"));
    assert!(err(DatasetOptions::default().no_labels().labels(vec![0; 3])).contains("len(labels) is 3"));
    // An image_size no memory holds: an error before any allocation, naming the size and the need.
    let huge = err(DatasetOptions::default().image_size((1 << 20, 1 << 20)));
    assert!(huge.contains("image_size") && huge.contains("(1048576, 1048576)") && huge.contains("GiB"), "{huge}");
}
