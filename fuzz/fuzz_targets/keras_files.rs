//! Keras' files: the input is given as a `.keras` archive to `load_model`, as a `.weights.h5`
//! and a legacy `.h5` to `load_weights` (and the `.h5` to `load_model`). Errors must have a
//! message; a failed weight load must leave the model as it was.
#![no_main]

use kandle::prelude::*;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

/// The 8x8 tutorial CNN of tests/golden/keras_files_keras.py (the seeds' model).
fn model() -> Model {
    let m: Model = Sequential::new()
        .seed(0)
        .add(Conv2D::new(4, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape((8, 8, 3)))
        .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(8).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(3).activation(Activation::Softmax))
        .into();
    m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).expect("compile");
    m
}

/// The weights' bit patterns (a loaded file may hold NaN, which is not equal to itself).
fn weights(m: &Model) -> Vec<Vec<u32>> {
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    m.get_weights().expect("weights").iter().map(|t| values(t).iter().map(|v| v.to_bits()).collect()).collect()
}

fuzz_target!(|data: &[u8]| {
    static MODEL: OnceLock<std::sync::Mutex<Model>> = OnceLock::new();
    let m = MODEL.get_or_init(|| std::sync::Mutex::new(model())).lock().unwrap();
    if let Err(e) = kandle::models::load_model(common::file("m.keras", data)) {
        common::check_message(&e);
    }
    for name in ["w.weights.h5", "w.h5"] {
        let path = common::file(name, data);
        let before = weights(&m);
        if let Err(e) = m.load_weights(&path) {
            common::check_message(&e);
            assert_eq!(weights(&m), before, "a failed load changed the weights");
        }
    }
    if let Err(e) = kandle::models::load_model(common::file("m.h5", data)) {
        common::check_message(&e);
    }
});
