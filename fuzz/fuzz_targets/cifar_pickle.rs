//! The restricted unpickler and the CIFAR python-batch reader: the input is every batch of a
//! `cifar-10-batches-py` folder, and is also unpickled on its own.
#![no_main]

use kandle::datasets::pickle::{self, Value};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

/// An array read back must hold exactly its shape's bytes.
fn check(v: &Value) {
    match v {
        Value::Array(a) if !a.dtype.is_empty() => {
            let size = match a.dtype.as_str() {
                "u1" | "i1" | "b1" => 1,
                "u2" | "i2" | "f2" => 2,
                "u4" | "i4" | "f4" => 4,
                _ => 8,
            };
            assert_eq!(a.shape.iter().product::<usize>() * size, a.data.len(), "{:?} {}", a.shape, a.dtype);
        }
        Value::List(l) | Value::Tuple(l) => l.iter().for_each(check),
        Value::Dict(d) => d.iter().for_each(|(k, v)| {
            check(k);
            check(v)
        }),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    match pickle::load(data) {
        Ok(v) => check(&v),
        Err(e) => assert!(!e.reason.is_empty()),
    }
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
        common::file(name, data);
    }
    match kandle::datasets::cifar10::load_data_from(common::scratch()) {
        Ok(((x, y), (xt, yt))) => {
            assert_eq!(x.dims()[0], y.dims()[0]);
            assert_eq!(x.dims()[0], 5 * xt.dims()[0]);
            assert_eq!(xt.dims()[0], yt.dims()[0]);
        }
        Err(e) => common::check_message(&e),
    }
});
