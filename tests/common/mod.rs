//! Shared by the integration tests: temporary folders that are removed when the test ends.

#![allow(dead_code)]

pub mod gradcheck;

use std::path::{Path, PathBuf};

/// A fresh temporary folder, `<tmp>/kandle-<prefix>-<pid>-<name>`, removed (with everything in
/// it) when dropped, also when the test fails.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the folder, replacing any left by an earlier run with the same process id.
    pub fn new(prefix: &str, name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("kandle-{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}
