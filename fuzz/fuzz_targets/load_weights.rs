//! Weight and model loading: the input is a file given to `load_weights`, to `load` (weights
//! with the training state) and to `load_model`. A failed load must leave the model as it was.
#![no_main]

use kandle::prelude::*;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

fn model() -> Sequential {
    let mut m = Sequential::new()
        .seed(0)
        .add(Conv2D::new(2, 3).activation(Activation::Relu).input_shape((6, 6, 1)))
        .add(MaxPooling2D::new(2))
        .add(Dropout::new(0.5))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    m.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).expect("compile");
    m
}

/// The weights' bit patterns (a loaded file may hold NaN, which is not equal to itself).
fn weights(m: &Sequential) -> Vec<Vec<u32>> {
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    m.get_weights().expect("weights").iter().map(|t| values(t).iter().map(|v| v.to_bits()).collect()).collect()
}

fuzz_target!(|data: &[u8]| {
    static MODEL: OnceLock<std::sync::Mutex<Sequential>> = OnceLock::new();
    let m = MODEL.get_or_init(|| std::sync::Mutex::new(model())).lock().unwrap();
    let path = common::file("weights.kandle", data);
    for full in [false, true] {
        let before = weights(&m);
        let res = if full { m.load(&path).map(|_| ()) } else { m.load_weights(&path) };
        if let Err(e) = res {
            common::check_message(&e);
            assert_eq!(weights(&m), before, "a failed load changed the weights");
        }
    }
    if let Err(e) = kandle::models::load_model(&path) {
        common::check_message(&e);
    }
});
