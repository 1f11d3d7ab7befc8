//! Shared by the fuzz targets: the loaders take paths, so each input is written to a file in
//! a per-process scratch folder (on /dev/shm when there is one) and read back through the
//! public API, exactly as a user's file would be.

#![allow(dead_code)]

use std::path::PathBuf;

/// This process's scratch folder, created on first use.
pub fn scratch() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("kandle-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Writes `bytes` to `name` in the scratch folder and returns its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, bytes).expect("write scratch file");
    p
}

/// An error's message must name something: it is what the user sees.
pub fn check_message(e: &kandle::Error) {
    assert!(!e.to_string().is_empty(), "empty error message: {e:?}");
}
