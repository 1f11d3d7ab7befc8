//! The CIFAR-10 archive loader (a `.tar` or `.tar.gz` of batches or of class folders of JPEG
//! and PNG images): the first byte picks the file name, the rest is the archive.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, content)) = data.split_first() else { return };
    let name = if sel & 1 == 0 { "cifar-10-images.tar" } else { "cifar-10-images.tar.gz" };
    let path = common::file(name, content);
    match kandle::datasets::cifar10::load_data_from(&path) {
        Ok(((x, y), (xt, yt))) => {
            assert_eq!(x.dims()[0], y.dims()[0]);
            assert_eq!(xt.dims()[0], yt.dims()[0]);
            assert_eq!(&x.dims()[1..], &[32, 32, 3]);
        }
        Err(e) => common::check_message(&e),
    }
    let _ = std::fs::remove_file(path);
});
