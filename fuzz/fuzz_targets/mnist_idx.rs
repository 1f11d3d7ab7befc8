//! The MNIST IDX parser (raw or gzipped): the first byte picks the rank (labels or images),
//! the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, content)) = data.split_first() else { return };
    let rank = if sel & 1 == 0 { 1 } else { 3 };
    let path = common::file("idx", content);
    match kandle::datasets::mnist::read_idx(&path, rank) {
        Ok((dims, bytes)) => {
            assert_eq!(dims.len(), rank);
            assert_eq!(dims.iter().product::<usize>(), bytes.len());
        }
        Err(e) => common::check_message(&e),
    }
});
