//! The CIFAR-10 binary parser: the input is `data_batch_1.bin` of a folder whose other
//! batches hold one valid record each.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let record = [3u8; kandle::datasets::cifar10::RECORD];
    for name in ["data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        common::file(name, &record);
    }
    common::file("data_batch_1.bin", data);
    match kandle::datasets::cifar10::load_data_from(common::scratch()) {
        Ok(((x, y), (xt, yt))) => {
            assert_eq!(x.dims()[0], y.dims()[0]);
            assert_eq!(x.dims()[0], data.len() / kandle::datasets::cifar10::RECORD + 4);
            assert_eq!((xt.dims()[0], yt.dims()[0]), (1, 1));
        }
        Err(e) => common::check_message(&e),
    }
});
