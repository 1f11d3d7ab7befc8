//! Loads one of Keras' image data sets as `keras.datasets.<name>.load_data()` does (from
//! `$KANDLE_DATA_DIR` or Keras' cache, else downloaded with a progress bar, its SHA-256
//! checked, and cached where Keras caches it) and prints what it holds.
//!
//! ```text
//! cargo run --release --example load_data -- --dataset cifar10
//! cargo run --release --example load_data -- --dataset cifar100 --label-mode coarse
//! ```
//! `--dataset mnist|fashion_mnist|cifar10|cifar100` (default cifar10), `--label-mode
//! fine|coarse` (CIFAR-100). `--origin URL --file-hash H` fetches the archive from another URL
//! with its own hash through `kandle::utils::get_file`, into Keras' cache as Keras names it
//! (for a mirror that re-packed the files; scripts/keras_cache_check.sh uses it). Ends with
//! one line per split: `<split>: x=<shape> y=<shape> x_sum=<sum> y_sum=<sum> classes=<counts>`.

#[path = "common/mod.rs"]
mod common;

use kandle::datasets::{cifar10, cifar100, fashion_mnist, mnist, LoadedData};
use kandle::prelude::*;
use kandle::utils::{get_file, GetFileOptions};

fn main() {
    common::exit_on_error(run());
}

fn run() -> Result<()> {
    let args = common::Args::parse(&[
        ("dataset", "mnist, fashion_mnist, cifar10 or cifar100 (default cifar10)"),
        ("label-mode", "CIFAR-100's labels: fine (default) or coarse"),
        ("origin", "download from this URL instead of Keras' (with --file-hash)"),
        ("file-hash", "the SHA-256 (or MD5) of the file at --origin"),
    ]);
    let dataset = args.get("dataset").unwrap_or("cifar10");
    let label_mode = args.get("label-mode").unwrap_or("fine");
    let data: LoadedData = match (args.get("origin"), dataset) {
        (Some(origin), name) => {
            let opts = || {
                let o = GetFileOptions::default();
                match args.get("file-hash") {
                    Some(h) => o.file_hash(h),
                    None => o,
                }
            };
            match name {
                "cifar10" => cifar10::load_data_from(
                    get_file(cifar10::KERAS_DIRNAME, origin, opts().extract(true))?.join("cifar-10-batches-py"),
                )?,
                "cifar100" => cifar100::load_data_from(
                    get_file(cifar100::KERAS_DIRNAME, origin, opts().extract(true))?.join("cifar-100-python"),
                    label_mode,
                )?,
                "mnist" => mnist::load_npz(&get_file("mnist.npz", origin, opts())?)?,
                other => {
                    return Err(Error::invalid(
                        "dataset",
                        format!("--origin serves cifar10, cifar100 or mnist, received {other:?}"),
                    ))
                }
            }
        }
        (None, "mnist") => mnist::load_data()?,
        (None, "fashion_mnist") => fashion_mnist::load_data()?,
        (None, "cifar10") => cifar10::load_data()?,
        (None, "cifar100") => cifar100::load_data(label_mode)?,
        (None, other) => {
            return Err(Error::invalid(
                "dataset",
                format!("expected mnist, fashion_mnist, cifar10 or cifar100, received {other:?}"),
            ))
        }
    };
    let ((x_train, y_train), (x_test, y_test)) = data;
    for (split, x, y) in [("train", &x_train, &y_train), ("test", &x_test, &y_test)] {
        let xs: u64 = x.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?.iter().map(|&v| v as u64).sum();
        let ys: Vec<u8> = y.flatten_all()?.to_vec1()?;
        let mut counts = vec![0usize; ys.iter().map(|&v| v as usize + 1).max().unwrap_or(0)];
        for &v in &ys {
            counts[v as usize] += 1;
        }
        let counts: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        println!(
            "{split}: x={:?} y={:?} x_sum={xs} y_sum={} classes={}",
            x.dims(),
            y.dims(),
            ys.iter().map(|&v| v as u64).sum::<u64>(),
            counts.join(",")
        );
    }
    Ok(())
}
