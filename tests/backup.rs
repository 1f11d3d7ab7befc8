//! BackupAndRestore against a real kill: a training process is killed with SIGKILL in the
//! middle of an epoch, started again with the same command, and must end with the same
//! weights as a run never interrupted.
//!
//! The training process is this test binary itself, running the ignored test `child_run`.

mod common;

use candle_core::{Device, Tensor};
use kandle::callbacks::{BackupAndRestore, LambdaCallback, SaveFreq};
use kandle::prelude::*;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn data() -> (Tensor, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let x: Vec<f32> = (0..96 * 6 * 6 * 2).map(|_| rng.random()).collect();
    let y: Vec<u32> = (0..96).map(|_| rng.random_range(0..3)).collect();
    (Tensor::from_vec(x, (96, 6, 6, 2), &Device::Cpu).unwrap(), Tensor::from_vec(y, 96, &Device::Cpu).unwrap())
}

/// The training "script": the same command every time; it resumes from its backup if any.
#[test]
#[ignore = "started as a child process by backup_and_restore_survives_sigkill"]
fn child_run() {
    let (Ok(dir), Ok(out)) = (std::env::var("KANDLE_BACKUP_DIR"), std::env::var("KANDLE_BACKUP_OUT")) else { return };
    let (x, y) = data();
    let model = Sequential::new()
        .seed(3)
        .add(Conv2D::new(4, 3).activation(Activation::Relu).input_shape((6, 6, 2)))
        .add(MaxPooling2D::new(2))
        .add(Dropout::new(0.3))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    model.compile(RMSprop::default(), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let progress = LambdaCallback::new().on_batch_end(|batch, _| {
        println!("BATCH {batch}");
        std::thread::sleep(std::time::Duration::from_millis(15));
    });
    model
        .fit(
            &x,
            &y,
            FitOptions::default()
                .batch_size(8)
                .epochs(4)
                .verbose(0)
                .seed(5)
                .callback(BackupAndRestore::new(&dir).save_freq(SaveFreq::Batches(1)))
                .callback(progress),
        )
        .unwrap();
    model.save_weights(&out).unwrap();
}

fn child(dir: &Path, out: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["child_run", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("KANDLE_BACKUP_DIR", dir)
        .env("KANDLE_BACKUP_OUT", out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn backup_and_restore_survives_sigkill() {
    let root = common::TempDir::new("backup", "sigkill");

    // A run never interrupted.
    let status = child(&root.join("a"), &root.join("a.safetensors")).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());

    // The same command, killed with SIGKILL in the middle of the second epoch (12 batches
    // per epoch), then started again.
    let (dir, out) = (root.join("b"), root.join("b.safetensors"));
    let mut proc = child(&dir, &out).spawn().unwrap();
    let lines = BufReader::new(proc.stdout.take().unwrap());
    let mut seen = 0;
    for line in lines.lines() {
        if line.unwrap().starts_with("BATCH") {
            seen += 1;
            if seen == 18 {
                break;
            }
        }
    }
    proc.kill().unwrap(); // SIGKILL on Unix
    let status = proc.wait().unwrap();
    assert!(!status.success(), "the first run was killed");
    assert!(!out.exists(), "the killed run did not finish");
    assert!(dir.join("latest.kandle").exists(), "a backup was left behind");

    let status = child(&dir, &out).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    assert_eq!(weights(&out), weights(&root.join("a.safetensors")), "the resumed run ends with the same weights");
    assert!(!dir.join("latest.kandle").exists(), "a finished run deletes its backup");
}
