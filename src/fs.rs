//! Files written whole or not at all: every file kandle writes (models, weights, checkpoints,
//! backups, curves, logs) goes through [`write_atomic`], so a crash or a kill in the middle of a
//! save leaves the previous file where it was.

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed into place,
/// so that a crash never leaves a half-written file where a good one was.
///
/// # Errors
/// If the file cannot be written.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name =
        path.file_name().ok_or_else(|| Error::invalid("path", format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
