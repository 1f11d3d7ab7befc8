//! `keras.utils.get_file`: download a file once, check its hash, keep it in Keras' cache.
//!
//! The cache is Keras' own (`$KERAS_HOME`, else `~/.keras`, else `/tmp/.keras` when the home
//! folder cannot be written), laid out as Keras 3 lays it out, so a file Keras downloaded is
//! found by kandle and the other way round. A download goes to a temporary file beside its
//! target and is renamed into place only once it is complete and its hash matches: an
//! interrupted, truncated or corrupt download leaves nothing a later call trusts. An archive
//! is extracted the same way, into a temporary folder renamed into place.

use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

/// The environment variable that turns downloads off (`KANDLE_OFFLINE=1`): a file that is not
/// in the cache is then an error naming the URL and the path to put the file at.
pub const OFFLINE_ENV: &str = "KANDLE_OFFLINE";

/// Which hash `file_hash` is (Keras' `hash_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    /// SHA-256 for a 64-character hash, MD5 otherwise (Keras' `"auto"`).
    #[default]
    Auto,
    /// SHA-256.
    Sha256,
    /// MD5.
    Md5,
}

impl HashAlgorithm {
    fn resolve(self, hash: &str) -> HashAlgorithm {
        match self {
            HashAlgorithm::Auto if hash.len() == 64 => HashAlgorithm::Sha256,
            HashAlgorithm::Auto => HashAlgorithm::Md5,
            a => a,
        }
    }

    fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "md5",
            _ => "sha256",
        }
    }
}

/// Options of [`get_file`], with Keras' defaults.
///
/// ```
/// use kandle::utils::GetFileOptions;
/// let opts = GetFileOptions::default()
///     .file_hash("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")
///     .extract(true);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct GetFileOptions {
    file_hash: Option<String>,
    hash_algorithm: HashAlgorithm,
    extract: bool,
    cache_dir: Option<PathBuf>,
    cache_subdir: Option<PathBuf>,
    force_download: bool,
    extract_limit: Option<u64>,
}

impl GetFileOptions {
    /// The expected SHA-256 or MD5 hash (hex) of the file (default: none, not checked).
    pub fn file_hash(mut self, hash: impl Into<String>) -> Self {
        self.file_hash = Some(hash.into().to_ascii_lowercase());
        self
    }
    /// Which hash `file_hash` is (default [`HashAlgorithm::Auto`]).
    pub fn hash_algorithm(mut self, algorithm: HashAlgorithm) -> Self {
        self.hash_algorithm = algorithm;
        self
    }
    /// Extract the archive (tar, tar.gz or zip) and return the folder it was extracted to
    /// (default false).
    pub fn extract(mut self, extract: bool) -> Self {
        self.extract = extract;
        self
    }
    /// The cache folder (default [`keras_home`]).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }
    /// The sub-folder of the cache (default `"datasets"`); an absolute path is used as is.
    pub fn cache_subdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_subdir = Some(dir.into());
        self
    }
    /// The most bytes an extracted archive may hold (default: no limit), so that a
    /// decompression bomb is an error rather than a full disk.
    pub fn extract_limit(mut self, bytes: u64) -> Self {
        self.extract_limit = Some(bytes);
        self
    }
    /// Download again even when the file is cached (default false).
    pub fn force_download(mut self, force: bool) -> Self {
        self.force_download = force;
        self
    }
}

/// Keras' home folder: `$KERAS_HOME`, else `~/.keras`, else `/tmp/.keras` when the home
/// folder cannot be written (as Keras 3's `keras.src.backend.config`).
pub fn keras_home() -> PathBuf {
    if let Some(h) = std::env::var_os("KERAS_HOME") {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from) {
        Some(home) if writable(&home) => home.join(".keras"),
        _ => std::env::temp_dir().join(".keras"),
    }
}

/// Whether `dir` is a folder this process can create files in.
fn writable(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    let probe = dir.join(format!(".kandle-write-test-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// The hash of a file, as lowercase hex.
///
/// # Errors
/// The file cannot be read.
pub fn hash_file(path: &Path, algorithm: HashAlgorithm) -> Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sha = sha2::Sha256::new();
    let mut md5 = md5::Md5::new();
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        match algorithm {
            HashAlgorithm::Md5 => md5.update(&buf[..n]),
            _ => sha.update(&buf[..n]),
        }
    }
    let digest: Vec<u8> = match algorithm {
        HashAlgorithm::Md5 => md5.finalize().to_vec(),
        _ => sha.finalize().to_vec(),
    };
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether the file's hash is `hash` (`algorithm` [`HashAlgorithm::Auto`]: SHA-256 for a
/// 64-character hash, MD5 otherwise), as Keras' `validate_file`.
///
/// # Errors
/// The file cannot be read.
pub fn validate_file(path: &Path, hash: &str, algorithm: HashAlgorithm) -> Result<bool> {
    let hash = hash.to_ascii_lowercase();
    Ok(hash_file(path, algorithm.resolve(&hash))? == hash)
}

/// Where [`get_file`] keeps a file: `(download target, extraction folder)`, as Keras 3.
fn layout(datadir: &Path, fname: &str, provided: bool, extract: bool) -> (PathBuf, Option<PathBuf>) {
    if !extract {
        return (datadir.join(fname), None);
    }
    if provided && fname.contains('.') {
        let stem = &fname[..fname.find('.').unwrap_or(fname.len())];
        (datadir.join(fname), Some(datadir.join(format!("{stem}_extracted"))))
    } else {
        (datadir.join(format!("{fname}_archive")), Some(datadir.join(fname)))
    }
}

/// Downloads `origin` into Keras' cache unless it is there already, as `keras.utils.get_file`,
/// and returns its path (with `extract`, the folder it was extracted to).
///
/// `fname` is the file's name in the cache (empty: the last part of the URL's path). With
/// `extract` and an `fname` without a dot (Keras' data sets: `"cifar-10-batches-py-target"`),
/// the archive is kept as `<fname>_archive` and extracted into the folder `<fname>`; with a dot
/// (`"flowers.tgz"`), the archive keeps its name and is extracted into `<stem>_extracted`.
/// `origin` may be an `http://`, `https://` or `file://` URL.
///
/// A cached file whose hash does not match `file_hash` is downloaded again (Keras' behaviour).
/// A download shows a progress bar (bytes, rate, time left) on a terminal and ends with one
/// line saying what was downloaded. `KANDLE_OFFLINE=1` turns downloads off.
///
/// ```no_run
/// use kandle::utils::{get_file, GetFileOptions};
/// let dir = get_file(
///     "cifar-10-batches-py-target",
///     "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
///     GetFileOptions::default()
///         .file_hash("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")
///         .extract(true),
/// )?;
/// assert!(dir.join("cifar-10-batches-py").join("data_batch_1").is_file());
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// [`Error::Download`] when the file cannot be fetched (no network, `KANDLE_OFFLINE=1`, an
/// HTTP error, a truncated transfer) or its hash does not match, naming the URL and the path
/// to put the file at by hand; `fname` holding a path separator; an archive that cannot be
/// extracted (named).
pub fn get_file(fname: &str, origin: &str, opts: GetFileOptions) -> Result<PathBuf> {
    if origin.is_empty() {
        return Err(Error::invalid("origin", "expected the URL of the file to download, received an empty string"));
    }
    if fname.contains('/') || fname.contains(std::path::MAIN_SEPARATOR) {
        return Err(Error::invalid(
            "fname",
            format!("expected a file name (the cache folder is `cache_dir`), received the path {fname:?}"),
        ));
    }
    let provided = !fname.is_empty();
    let fname = if provided {
        fname.to_string()
    } else {
        let path = origin.split(['?', '#']).next().unwrap_or_default();
        let path = path.split_once("://").map_or(path, |(_, rest)| rest.split_once('/').map_or("", |(_, p)| p));
        match path.rsplit('/').next().filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => {
                return Err(Error::invalid(
                    "fname",
                    format!("the origin {origin:?} names no file: give the file's name as `fname`"),
                ))
            }
        }
    };
    let base = opts.cache_dir.clone().unwrap_or_else(keras_home);
    let _ = std::fs::create_dir_all(&base);
    let base = if writable(&base) { base } else { std::env::temp_dir().join(".keras") };
    let datadir = base.join(opts.cache_subdir.clone().unwrap_or_else(|| PathBuf::from("datasets")));
    std::fs::create_dir_all(&datadir).map_err(|e| Error::io(&datadir, e))?;
    let (target, extraction_dir) = layout(&datadir, &fname, provided, opts.extract);

    let mut download = opts.force_download || !target.is_file();
    if !download {
        if let Some(hash) = &opts.file_hash {
            if !validate_file(&target, hash, opts.hash_algorithm)? {
                let alg = opts.hash_algorithm.resolve(hash).name();
                println!(
                    "A local file was found, but it seems to be incomplete or outdated because the {alg} file hash does \
                     not match the original value of {hash} so we will re-download the data."
                );
                download = true;
            }
        }
    }
    if download {
        fetch(origin, &target, &opts)?;
    }
    match extraction_dir {
        None => Ok(target),
        Some(dir) => {
            // Keras extracts at every call; kandle extracts when the archive is new or the folder
            // is missing, into a temporary folder renamed into place (never half a folder).
            if download || !dir.is_dir() {
                extract_archive(&target, &dir, opts.extract_limit.unwrap_or(u64::MAX))?;
            }
            Ok(dir)
        }
    }
}

/// A temporary path beside `target`, unique to this process and call.
fn temp_beside(target: &Path, what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.{what}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

/// Removes the temporary files and folders that an earlier process left beside `target` when
/// it was killed in the middle of a download or an extraction (`.<name>.download-<pid>-<n>`,
/// `.<name>.extract-<pid>-<n>`): those of processes that no longer run. Where that cannot be
/// known (no `/proc`), nothing is removed; such leftovers are never read either way.
fn remove_stale_temps(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else { return };
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else { continue };
        let Some(ids) = rest.strip_prefix("download-").or_else(|| rest.strip_prefix("extract-")) else { continue };
        let Some(pid) = ids.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let p = e.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
}

/// Removes a temporary file or folder when dropped (unless disarmed).
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn download_error(origin: &str, target: &Path, reason: impl Into<String>) -> Error {
    Error::Download { url: origin.to_string(), path: target.to_path_buf(), reason: reason.into() }
}

/// Downloads `origin` to `target` through a temporary file, checking the hash.
fn fetch(origin: &str, target: &Path, opts: &GetFileOptions) -> Result<()> {
    if std::env::var(OFFLINE_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
        return Err(download_error(origin, target, format!("downloads are off ({OFFLINE_ENV} is set)")));
    }
    println!("Downloading data from {origin}");
    remove_stale_temps(target);
    let tmp = temp_beside(target, "download");
    let mut guard = Cleanup(Some(tmp.clone()));
    let (mut reader, total): (Box<dyn Read>, Option<u64>) = if let Some(path) = origin.strip_prefix("file://") {
        let f = std::fs::File::open(path).map_err(|e| download_error(origin, target, e.to_string()))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    } else if origin.starts_with("http://") || origin.starts_with("https://") {
        http_get(origin, target)?
    } else {
        return Err(Error::invalid(
            "origin",
            format!("expected an http://, https:// or file:// URL, received {origin:?}"),
        ));
    };
    let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let bar = progress_bar(total);
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(download_error(origin, target, format!("the transfer broke off after {got} bytes: {e}")));
            }
        };
        out.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
        got += n as u64;
        bar.set_position(got);
    }
    bar.finish_and_clear();
    if let Some(total) = total.filter(|&t| t != got) {
        return Err(download_error(origin, target, format!("the transfer ended after {got} of {total} bytes")));
    }
    out.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(out);
    if let Some(hash) = &opts.file_hash {
        let alg = opts.hash_algorithm.resolve(hash);
        let found = hash_file(&tmp, alg)?;
        if found != *hash {
            return Err(download_error(
                origin,
                target,
                format!("incomplete or corrupted file detected: its {} hash is {found}, expected {hash}", alg.name()),
            ));
        }
    }
    std::fs::rename(&tmp, target).map_err(|e| Error::io(target, e))?;
    guard.0 = None;
    let secs = start.elapsed().as_secs_f64().max(1e-3);
    println!(
        "Downloaded {} ({:.1} MB in {:.1} s, {:.1} MB/s)",
        target.display(),
        got as f64 / 1e6,
        secs,
        got as f64 / 1e6 / secs
    );
    Ok(())
}

/// The body of `origin` (http or https) and its length when the server gives it.
#[cfg(feature = "download")]
fn http_get(origin: &str, target: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .timeout_recv_response(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let resp = agent.get(origin).call().map_err(|e| download_error(origin, target, e.to_string()))?;
    let total = resp.body().content_length();
    Ok((Box::new(resp.into_body().into_reader()), total))
}

/// Without the `download` feature there is no HTTP client: the error says where to put the file.
#[cfg(not(feature = "download"))]
fn http_get(origin: &str, target: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    Err(download_error(
        origin,
        target,
        "kandle was built without its `download` feature (default-features = false): download the file yourself \
         and put it at the path named here, or build with the feature",
    ))
}

/// A bar with bytes, rate and time left, drawn on a terminal only.
fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::no_length(),
    };
    let style = if total.is_some() {
        "{prefix}{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left"
    } else {
        "{prefix}{bytes} {bytes_per_sec}"
    };
    if let Ok(s) = indicatif::ProgressStyle::with_template(style) {
        bar.set_style(s.progress_chars("=> "));
    }
    bar
}

/// A path inside an archive, if it is safe to extract (relative, no `..`), as Keras'
/// `filter_safe_paths`.
fn safe_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Extracts a tar (optionally gzipped) or zip archive into `dir`, through a temporary folder
/// renamed into place; at most `limit` bytes in all. Links and unsafe paths (absolute, `..`)
/// are skipped, as Keras' `filter_safe_paths` skips them.
///
/// # Errors
/// A file that is neither format, a corrupt archive, more than `limit` bytes.
pub fn extract_archive(archive: &Path, dir: &Path, limit: u64) -> Result<()> {
    let mut head = [0u8; 512];
    let n = {
        let mut f = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]).map_err(|e| Error::io(archive, e))? {
                0 => break,
                k => n += k,
            }
        }
        n
    };
    let bad = |reason: String| Error::Format { path: archive.into(), format: "archive", offset: 0, reason };
    remove_stale_temps(dir);
    let tmp = temp_beside(dir, "extract");
    let mut guard = Cleanup(Some(tmp.clone()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut written = 0u64;
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    // A bar over the archive's bytes read, on a terminal, for archives worth waiting for.
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if size > 8 << 20 { progress_bar(Some(size)) } else { indicatif::ProgressBar::hidden() };
    bar.set_prefix("extracting ");
    let file = bar.wrap_read(file);
    if n >= 4 && head[..4] == *b"PK\x03\x04" {
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
            let (rel, is_dir, is_file) = (entry.enclosed_name(), entry.is_dir(), entry.is_file());
            written = extract_entry(&mut entry, rel.as_deref(), &tmp, (is_dir, is_file), written, limit, &bad)?;
        }
    } else {
        let reader: Box<dyn Read> = if n >= 2 && head[..2] == [0x1f, 0x8b] {
            Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)))
        } else if n >= 262 && &head[257..262] == b"ustar" {
            Box::new(std::io::BufReader::new(file))
        } else {
            return Err(bad("neither a tar, tar.gz nor zip archive (the formats kandle extracts)".into()));
        };
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let kind = entry.header().entry_type();
            let rel = entry.path().ok().map(|p| p.into_owned());
            written =
                extract_entry(&mut entry, rel.as_deref(), &tmp, (kind.is_dir(), kind.is_file()), written, limit, &bad)?;
        }
    }
    bar.finish_and_clear();
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    guard.0 = None;
    Ok(())
}

/// One archive entry into `tmp`: a folder created, a regular file copied within the running
/// total `written` under `limit`; links and unsafe paths skipped. Returns the new total.
fn extract_entry(
    entry: &mut impl Read,
    rel: Option<&Path>,
    tmp: &Path,
    (is_dir, is_file): (bool, bool),
    written: u64,
    limit: u64,
    bad: &dyn Fn(String) -> Error,
) -> Result<u64> {
    let Some(rel) = rel.and_then(safe_path) else { return Ok(written) };
    let dest = tmp.join(rel);
    if is_dir {
        std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        return Ok(written);
    }
    if !is_file {
        return Ok(written);
    }
    copy_limited(entry, &dest, written, limit).map_err(|e| match e {
        CopyError::Io(p, e) => Error::io(p, e),
        CopyError::Limit => bad(format!("more than {limit} bytes once extracted")),
        CopyError::Read(e) => bad(e.to_string()),
    })
}

enum CopyError {
    Io(PathBuf, std::io::Error),
    Read(std::io::Error),
    Limit,
}

/// Copies one entry to `dest`, keeping the running total under `limit`.
fn copy_limited(src: &mut impl Read, dest: &Path, written: u64, limit: u64) -> std::result::Result<u64, CopyError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| CopyError::Io(parent.into(), e))?;
    }
    let mut out = std::fs::File::create(dest).map_err(|e| CopyError::Io(dest.into(), e))?;
    let left = limit.saturating_sub(written);
    let n = std::io::copy(&mut src.take(left.saturating_add(1)), &mut out).map_err(|e| match e.kind() {
        std::io::ErrorKind::Other | std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            CopyError::Read(e)
        }
        _ => CopyError::Io(dest.into(), e),
    })?;
    if n > left {
        return Err(CopyError::Limit);
    }
    Ok(written + n)
}
