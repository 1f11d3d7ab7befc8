//! Keras' `mnist.npz` reader (a zip of `.npy` arrays, deflated): the input is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let p = common::file("mnist.npz", data);
    match kandle::datasets::mnist::load_npz(&p) {
        Ok(((x, y), (xt, yt))) => {
            assert_eq!(x.dims()[0], y.dims()[0]);
            assert_eq!(xt.dims()[0], yt.dims()[0]);
            assert_eq!((x.rank(), xt.rank()), (3, 3));
        }
        Err(e) => common::check_message(&e),
    }
});
