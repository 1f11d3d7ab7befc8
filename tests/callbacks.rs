//! Callbacks, saving and loading: Keras' callback semantics, atomic files, all-or-nothing
//! loads, and a resumed run that ends with the same weights as an uninterrupted one.

mod common;

use candle_core::{DType, Device, Tensor};
use kandle::callbacks::{
    CSVLogger, EarlyStopping, LambdaCallback, LearningRateScheduler, Mode, ModelCheckpoint, ReduceLROnPlateau,
    TerminateOnNaN,
};
use kandle::prelude::*;
use std::sync::{Arc, Mutex};

fn tmp(name: &str) -> common::TempDir {
    common::TempDir::new("cb", name)
}

/// Learnable data: the class is the argmax of a fixed projection of the image, so the loss on
/// it falls below its first-epoch value as training goes on.
fn data() -> (Tensor, Tensor) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..hi)).collect() };
    let x = Tensor::from_vec(uniform(64 * 72, 0.0, 1.0), (64, 6, 6, 2), &Device::Cpu).unwrap();
    let w = Tensor::from_vec(uniform(72 * 3, -1.0, 1.0), (72, 3), &Device::Cpu).unwrap();
    let y = x.reshape((64, 72)).unwrap().matmul(&w).unwrap().argmax(1).unwrap();
    (x, y)
}

fn model(seed: u64) -> Sequential {
    let m = Sequential::new()
        .seed(seed)
        .add(Conv2D::new(4, 3).activation(Activation::Relu).input_shape((6, 6, 2)))
        .add(MaxPooling2D::new(2))
        .add(Dropout::new(0.3))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    m.compile(RMSprop::default(), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    m
}

fn weights(m: &Model) -> Vec<Vec<f32>> {
    m.get_weights().unwrap().iter().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect()
}

fn opts<'a>() -> FitOptions<'a> {
    FitOptions::default().batch_size(16).verbose(0).seed(5)
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    let (x, y) = data();
    // "Improvement" means a higher loss (mode max): training lowers it, so epoch 0 stays best.
    let m = model(1);
    let es = EarlyStopping::new().monitor("val_loss").mode(Mode::Max).patience(2).restore_best_weights(true);
    let h = m.fit(&x, &y, opts().epochs(10).validation_data(&x, &y).callback(es)).unwrap();
    assert_eq!(h.epoch, vec![0, 1, 2], "stops after `patience` epochs without improvement");
    let once = model(1);
    once.fit(&x, &y, opts().epochs(1)).unwrap();
    assert_eq!(weights(&m), weights(&once), "the weights of the best epoch (0) are restored");
    // With more patience than epochs, training is never stopped.
    let m = model(1);
    let h = m.fit(&x, &y, opts().epochs(4).callback(EarlyStopping::new().monitor("loss").patience(4))).unwrap();
    assert_eq!(h.epoch.len(), 4);
    // Keras 3: the best weights are restored at the end also when the run completed all its
    // epochs (here epoch 0 is best, by mode max on a falling loss).
    let m = model(1);
    let es = EarlyStopping::new().monitor("loss").mode(Mode::Max).patience(10).restore_best_weights(true);
    let h = m.fit(&x, &y, opts().epochs(3).callback(es)).unwrap();
    assert_eq!(h.epoch.len(), 3);
    assert_eq!(weights(&m), weights(&once), "restored to epoch 0 without an early stop");
}

#[test]
fn reduce_lr_on_plateau_and_scheduler_change_the_learning_rate() {
    let (x, y) = data();
    let m = model(2);
    let plateau = ReduceLROnPlateau::new().monitor("val_loss").mode(Mode::Max).factor(0.5).patience(1);
    m.fit(&x, &y, opts().epochs(3).validation_data(&x, &y).callback(plateau)).unwrap();
    assert!((m.learning_rate().unwrap() - 0.001 * 0.25).abs() < 1e-12, "{}", m.learning_rate().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let m = model(2);
    m.fit(
        &x,
        &y,
        opts()
            .epochs(3)
            .callback(LearningRateScheduler::new(|epoch, _| 0.1 / (epoch + 1) as f64))
            .callback(LambdaCallback::new().on_epoch_begin(move |e| s2.lock().unwrap().push(e))),
    )
    .unwrap();
    assert!((m.learning_rate().unwrap() - 0.1 / 3.0).abs() < 1e-12);
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
}

#[test]
fn csv_logger_writes_a_row_per_epoch() {
    let d = tmp("csv");
    let path = d.join("log.csv");
    let (x, y) = data();
    let m = model(3);
    m.fit(&x, &y, opts().epochs(2).validation_data(&x, &y).callback(CSVLogger::new(&path))).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "epoch,accuracy,loss,val_accuracy,val_loss");
    assert_eq!(lines.len(), 3);
    assert!(lines[2].starts_with("1,"));
    m.fit(&x, &y, opts().epochs(1).validation_data(&x, &y).callback(CSVLogger::new(&path).append(true))).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4, "appends without a second header");
}

#[test]
fn terminate_on_nan_stops_at_the_first_bad_batch() {
    let (x, y) = data();
    let x = x.ge(0.5).unwrap().where_cond(&Tensor::full(f32::NAN, x.shape(), &Device::Cpu).unwrap(), &x).unwrap();
    let m = model(4);
    let h = m.fit(&x, &y, opts().epochs(5).callback(TerminateOnNaN::new())).unwrap();
    assert_eq!(h.epoch, vec![0]);
    assert!(h.get("loss").unwrap()[0].is_nan());
}

#[test]
fn model_checkpoint_fills_the_path_and_saves_the_best() {
    let d = tmp("ckpt");
    let (x, y) = data();
    let m = model(5);
    let template = d.join("w.{epoch:02d}-{val_accuracy:.4f}.safetensors").display().to_string();
    m.fit(
        &x,
        &y,
        opts().epochs(3).validation_data(&x, &y).callback(ModelCheckpoint::new(template).save_weights_only(true)),
    )
    .unwrap();
    let mut files: Vec<String> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files[0].starts_with("w.01-0.") && files[2].starts_with("w.03-"), "{files:?}");
    let fresh = model(6);
    fresh.load_weights(d.join(&files[2])).unwrap();
    assert_eq!(weights(&fresh), weights(&m), "the last checkpoint holds the final weights");
    // save_best_only: a monitored value that never improves after epoch 0 saves once.
    let d2 = tmp("ckpt-best");
    let m = model(5);
    let ckpt = ModelCheckpoint::new(d2.join("best-{epoch}.kandle").display().to_string())
        .monitor("val_loss")
        .mode(Mode::Max)
        .save_best_only(true);
    m.fit(&x, &y, opts().epochs(3).validation_data(&x, &y).callback(ckpt)).unwrap();
    assert_eq!(std::fs::read_dir(&d2).unwrap().count(), 1);
    assert!(d2.join("best-1.kandle").exists());
}

#[test]
fn a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one() {
    let d = tmp("resume");
    let (x, y) = data();
    let full = model(7);
    full.fit(&x, &y, opts().epochs(4)).unwrap();
    let first = model(7);
    first.fit(&x, &y, opts().epochs(2)).unwrap();
    first.save(d.join("half.kandle")).unwrap();
    // Another process would build the model again (here: another seed) and load the state.
    let resumed = model(99);
    resumed.load(d.join("half.kandle")).unwrap();
    resumed.fit(&x, &y, opts().epochs(4).initial_epoch(2)).unwrap();
    assert_eq!(weights(&resumed), weights(&full), "bit-identical");
}

#[test]
fn an_interrupted_save_leaves_the_previous_file_intact() {
    let d = tmp("interrupted");
    let path = d.join("model.kandle");
    let (x, y) = data();
    let m = model(8);
    m.fit(&x, &y, opts().epochs(1)).unwrap();
    m.save(&path).unwrap();
    let saved = weights(&m);
    m.fit(&x, &y, opts().epochs(1)).unwrap();
    // A save that fails half way: the temporary file cannot be created (a directory is in the
    // way), as when the disk fills or the process dies before the rename.
    let tmp_name = d.join(format!(".model.kandle.tmp{}", std::process::id()));
    std::fs::create_dir_all(&tmp_name).unwrap();
    assert!(m.save(&path).is_err());
    std::fs::remove_dir_all(&tmp_name).unwrap();
    // A crash that left a truncated temporary file behind.
    std::fs::write(&tmp_name, b"partial").unwrap();
    let fresh = model(9);
    fresh.load(&path).unwrap();
    assert_eq!(weights(&fresh), saved, "the previous checkpoint is intact");
    m.save(&path).unwrap();
    fresh.load(&path).unwrap();
    assert_eq!(weights(&fresh), weights(&m));
}

#[test]
fn bad_files_are_clear_errors_and_load_nothing() {
    let d = tmp("bad");
    let (x, y) = data();
    let m = model(10);
    m.fit(&x, &y, opts().epochs(1)).unwrap();
    m.save(d.join("m.kandle")).unwrap();
    m.save_weights(d.join("w.safetensors")).unwrap();
    let target = model(11);
    let before = weights(&target);
    // Truncated.
    let bytes = std::fs::read(d.join("m.kandle")).unwrap();
    std::fs::write(d.join("trunc.kandle"), &bytes[..bytes.len() / 2]).unwrap();
    let e = target.load(d.join("trunc.kandle")).unwrap_err().to_string();
    assert!(e.contains("trunc.kandle"), "{e}");
    // Not a file at all.
    let e = target.load_weights(d.join("missing.safetensors")).unwrap_err().to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
    // Another architecture: a wider conv layer.
    let other = Sequential::new()
        .seed(0)
        .add(Conv2D::new(5, 3).activation(Activation::Relu).input_shape((6, 6, 2)))
        .add(MaxPooling2D::new(2))
        .add(Dropout::new(0.3))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    let e = other.load_weights(d.join("w.safetensors")).unwrap_err().to_string();
    assert!(e.contains("conv2d/kernel") && e.contains("[3, 3, 2, 5]") && e.contains("[3, 3, 2, 4]"), "{e}");
    let e = other.load(d.join("m.kandle")).unwrap_err().to_string();
    // The first layer that differs and how, not two JSON blobs.
    assert!(e.contains("another architecture: layer 1 conv2d (Conv2D): filters 4 in the file, 5 in the model"), "{e}");
    assert!(e.len() < 300, "{e}");
    let shorter = Sequential::new().seed(0).add(Conv2D::new(4, 3).activation(Activation::Relu).input_shape((6, 6, 2)));
    let e = shorter.load(d.join("m.kandle")).unwrap_err().to_string();
    assert!(e.contains("the file has 5 layers, the model 1 (first extra: max_pooling2d (MaxPooling2D))"), "{e}");
    // A weights file is not a model file.
    let e = target.load(d.join("w.safetensors")).unwrap_err().to_string();
    assert!(e.contains("load_weights"), "{e}");
    assert_eq!(weights(&target), before, "nothing was loaded half way");
    let _ = DType::F32;
}

#[test]
fn load_model_rebuilds_architecture_optimizer_and_state() {
    use kandle::layers::{BatchNormalization, GlobalAveragePooling2D, LeakyReLU, ReLU};
    let d = tmp("load-model");
    let (x, y) = data();
    let build = || {
        Sequential::new()
            .seed(12)
            .add(Conv2D::new(4, (3, 2)).padding(Padding::Same).strides((1, 2)).input_shape((6, 6, 2)))
            .add(BatchNormalization::new().momentum(0.9))
            .add(LeakyReLU::new().negative_slope(0.1))
            .add(AveragePooling2D::new(2).padding(Padding::Same))
            .add(ReLU::new().max_value(6.0))
            .add(GlobalAveragePooling2D::new())
            .add(Dropout::new(0.2))
            .add(Dense::new(3).activation(Activation::Softmax))
    };
    let full = build();
    full.compile(
        kandle::optimizers::Nadam::new(0.01).beta_1(0.8),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    full.fit(&x, &y, opts().epochs(3)).unwrap();
    let half = build();
    half.compile(
        kandle::optimizers::Nadam::new(0.01).beta_1(0.8),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    half.fit(&x, &y, opts().epochs(1)).unwrap();
    half.save(d.join("m.kandle")).unwrap();
    let loaded = kandle::models::load_model(d.join("m.kandle")).unwrap();
    assert_eq!(loaded.summary_string().unwrap(), half.summary_string().unwrap());
    loaded.fit(&x, &y, opts().epochs(3).initial_epoch(1)).unwrap();
    let close = weights(&loaded)
        .iter()
        .flatten()
        .zip(weights(&full).iter().flatten())
        .all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0));
    assert!(close, "a run continued from load_model matches the uninterrupted one");
    let e = kandle::models::load_model(d.join("nothing.kandle")).unwrap_err().to_string();
    assert!(e.contains("nothing.kandle"), "{e}");
}

#[test]
fn backup_and_restore_falls_back_to_the_previous_backup() {
    use kandle::callbacks::BackupAndRestore;
    let d = tmp("double");
    let (x, y) = data();
    let cb = || BackupAndRestore::new(&d).double_checkpoint(true).delete_checkpoint(false);
    let m = model(13);
    m.fit(&x, &y, opts().epochs(2).callback(cb())).unwrap();
    assert!(d.join("latest.kandle").exists() && d.join("previous.kandle").exists());
    // The latest backup is damaged (say, by a disk error); the previous one (end of epoch 1)
    // is used: the run resumes at epoch 2 of 3.
    std::fs::write(d.join("latest.kandle"), b"damaged").unwrap();
    let again = model(13);
    let h = again.fit(&x, &y, opts().epochs(3).callback(cb())).unwrap();
    assert_eq!(h.epoch, vec![1, 2]);
    // Resumed at a finished run's end, nothing is left to do.
    let done = model(13);
    let h = done.fit(&x, &y, opts().epochs(3).callback(cb())).unwrap();
    assert!(h.epoch.is_empty(), "{:?}", h.epoch);
}

/// The README says a model is a shared handle: a callback that captures a clone of it can
/// predict and save with it while the model trains (no deadlock), and a nested `fit` is a clear
/// error rather than a hang.
#[test]
fn a_callback_can_use_a_clone_of_the_training_model() {
    let dir = tmp("clone");
    let (x, y) = data();
    let m = model(3);
    let clone: Model = (*m).clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen2, x2, y2, path) = (seen.clone(), x.clone(), y.clone(), dir.join("during.safetensors"));
    let cb = LambdaCallback::new().on_epoch_end(move |epoch, _| {
        let p = clone.predict(&x2, 16).unwrap();
        clone.save(&path).unwrap();
        let nested = clone.fit(&x2, &y2, FitOptions::default().epochs(1).verbose(0));
        seen2.lock().unwrap().push((epoch, p.dims().to_vec(), nested.err().map(|e| e.to_string())));
    });
    m.fit(&x, &y, opts().epochs(2).callback(cb)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (i, (epoch, dims, nested)) in seen.iter().enumerate() {
        assert_eq!((*epoch, dims.as_slice()), (i, &[64usize, 3][..]));
        assert!(nested.as_deref().unwrap_or("").contains("already training"), "{nested:?}");
    }
    assert!(dir.join("during.safetensors").exists());
    // After training the model trains again.
    m.fit(&x, &y, opts().epochs(1)).unwrap();
}

/// Loading is all or nothing: an optimizer slot of the wrong shape (a tampered file) is found
/// before any weight or slot is assigned, and the error names the weight and both shapes.
#[test]
fn a_bad_optimizer_slot_loads_nothing() {
    let d = tmp("bad-slot");
    let (x, y) = data();
    let src = model(5);
    src.fit(&x, &y, opts().epochs(1)).unwrap();
    src.save(d.join("m.kandle")).unwrap();
    // Rewrite the file with its first slot replaced by one of another shape.
    let bytes = std::fs::read(d.join("m.kandle")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let bad = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, view) in st.tensors() {
        let t = if name == "optimizer/slot_0" {
            bad.clone()
        } else {
            let dims: Vec<usize> = view.shape().to_vec();
            let data: Vec<f32> = view.data().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
        };
        tensors.push((name, t));
    }
    let raw: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (n.clone(), v.iter().flat_map(|f| f.to_le_bytes()).collect(), t.dims().to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(n, b, s)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    let out = safetensors::serialize(views, meta.metadata().clone()).unwrap();
    std::fs::write(d.join("bad.kandle"), out).unwrap();
    let target = model(6);
    target.fit(&x, &y, opts().epochs(1)).unwrap();
    let before = weights(&target);
    let e = target.load(d.join("bad.kandle")).unwrap_err().to_string();
    assert!(e.contains("optimizer slot 0 of weight conv2d/kernel has shape [2, 2]"), "{e}");
    assert_eq!(weights(&target), before, "nothing was loaded");
    // The same file, intact, loads.
    target.load(d.join("m.kandle")).unwrap();
    assert_eq!(weights(&target), weights(&src));
}

/// A saved model keeps its learning-rate schedule and resumes it at the saved step; a
/// callback that sets the learning rate of a schedule-driven optimizer is an error, as in Keras.
#[test]
fn a_learning_rate_schedule_is_saved_and_resumed() {
    use kandle::optimizers::{CosineDecay, ExponentialDecay};
    let d = tmp("schedule");
    let (x, y) = data();
    let build = |seed| {
        let m = Sequential::new()
            .seed(seed)
            .add(Flatten::new().input_shape((6, 6, 2)))
            .add(Dense::new(3).activation(Activation::Softmax));
        m.compile(
            RMSprop::new(0.01).with_schedule(ExponentialDecay::new(0.01, 3, 0.5)),
            Loss::SparseCategoricalCrossentropy,
            (),
        )
        .unwrap();
        m
    };
    let full = build(1);
    full.fit(&x, &y, opts().epochs(3)).unwrap();
    let half = build(1);
    half.fit(&x, &y, opts().epochs(1)).unwrap();
    half.save(d.join("m.kandle")).unwrap();
    let loaded = kandle::models::load_model(d.join("m.kandle")).unwrap();
    assert_eq!(loaded.learning_rate().unwrap(), half.learning_rate().unwrap());
    assert!(loaded.learning_rate().unwrap() < 0.01, "the schedule resumed at the saved step");
    loaded.fit(&x, &y, opts().epochs(3).initial_epoch(1)).unwrap();
    assert_eq!(loaded.learning_rate().unwrap(), full.learning_rate().unwrap());
    for (a, b) in weights(&loaded).iter().flatten().zip(weights(&full).iter().flatten()) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "resumed {a} vs uninterrupted {b}");
    }
    // ReduceLROnPlateau, LearningRateScheduler and set_learning_rate cannot drive a schedule.
    let m = build(2);
    m.compile(SGD::new(0.1).with_schedule(CosineDecay::new(0.1, 10)), Loss::SparseCategoricalCrossentropy, ()).unwrap();
    let e = m.fit(&x, &y, opts().epochs(2).callback(LearningRateScheduler::new(|_, lr| lr * 0.5))).unwrap_err();
    assert!(e.to_string().contains("from a schedule (CosineDecay)"), "{e}");
    let e = m.set_learning_rate(0.5).unwrap_err().to_string();
    assert!(e.contains("cannot be set"), "{e}");
    let plateau = ReduceLROnPlateau::new().monitor("loss").patience(0).min_delta(10.0);
    assert!(m.fit(&x, &y, opts().epochs(3).callback(plateau)).is_err());
}

/// The layers added for Keras' next steps save and load back with their settings.
#[test]
fn new_layers_save_and_load() {
    use kandle::layers::{GlobalMaxPooling2D, Rescaling, Reshape, SpatialDropout2D, ZeroPadding2D};
    let d = tmp("new-layers");
    let m = Sequential::new()
        .seed(3)
        .add(Rescaling::new(1.0 / 255.0).offset(0.5).input_shape((6, 6, 2)))
        .add(ZeroPadding2D::asymmetric((1, 2), (0, 1)))
        .add(Conv2D::new(4, 3).activation(Activation::Gelu))
        .add(SpatialDropout2D::new(0.2))
        .add(Reshape::with_unknown([Some(7), None, Some(2)]))
        .add(GlobalMaxPooling2D::new().keepdims(true))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    m.compile("adam", Loss::SparseCategoricalCrossentropy.from_logits(false), &["accuracy"]).unwrap();
    let (x, y) = data();
    m.fit(&x, &y, opts().epochs(1)).unwrap();
    m.save(d.join("m.kandle")).unwrap();
    let back = kandle::models::load_model(d.join("m.kandle")).unwrap();
    assert_eq!(back.summary_string().unwrap(), m.summary_string().unwrap());
    let (a, b) = (m.predict(&x, 16).unwrap(), back.predict(&x, 16).unwrap());
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    let names = back.layer_names();
    assert!(
        names.contains(&"spatial_dropout2d".to_string()) && names.contains(&"zero_padding2d".to_string()),
        "{names:?}"
    );
}
