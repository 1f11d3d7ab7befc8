//! The crate's one error type.
//!
//! Messages read like Keras': they name the argument or layer, what was expected and what was
//! received.

use std::path::PathBuf;

/// Everything that can go wrong in kandle. Its `Debug` form is its message, so that
/// `fn main() -> kandle::Result<()>` prints the same readable text as `Display`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor does not have the shape a layer, loss or model expects.
    #[error("{context}: expected {expected}, received shape {received}")]
    Shape {
        /// The layer, loss or argument that saw the shape (e.g. `conv2d_1 (Conv2D)`).
        context: String,
        /// What was expected, in words or as a shape.
        expected: String,
        /// What was received.
        received: String,
    },
    /// An argument has a value outside of what it accepts.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument's name, as in the Keras API (`batch_size`, `validation_split` ...).
        name: &'static str,
        /// What was expected and what was received.
        reason: String,
    },
    /// A model method was called before `compile`.
    #[error("the model must be compiled before calling `{0}`: call `model.compile(optimizer, loss, metrics)` first")]
    NotCompiled(&'static str),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data set or weights file is malformed.
    #[error("{}: not a valid {format} file (at byte {offset}): {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The format that was expected (`MNIST IDX`, `CIFAR-10 binary`, `JPEG` ...).
        format: &'static str,
        /// Where in the file the problem is.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A data set could not be found in any of the places searched.
    #[error("{dataset} not found: looked for {looked_for} in {searched}. {hint}")]
    DatasetNotFound {
        /// The data set's name.
        dataset: &'static str,
        /// The files looked for.
        looked_for: String,
        /// The places searched, in order.
        searched: String,
        /// Where to get the files.
        hint: &'static str,
    },
    /// A file could not be downloaded, or what was downloaded did not match its hash.
    #[error(
        "could not download {url}: {reason}. To use a copy fetched elsewhere, put it at {}",
        path.display()
    )]
    Download {
        /// The URL.
        url: String,
        /// Where the file is kept once downloaded: a copy put there is used without a download.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Training stopped because the loss of a batch was NaN or infinite. That batch's update
    /// was not applied: the model keeps the weights it had before it.
    #[error(
        "training stopped at epoch {epoch}, batch {batch}: the loss is {loss}. The weights are those before this \
         batch. Look for NaN or Inf in the data (x and y), or lower the learning rate"
    )]
    NonFiniteLoss {
        /// The epoch, counted from 1 as the progress bar shows it.
        epoch: usize,
        /// The batch within the epoch, counted from 1.
        batch: usize,
        /// The loss seen (NaN or +-inf).
        loss: f64,
    },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl std::fmt::Debug for Error {
    /// The message, as `Display` writes it (what `fn main() -> Result<()>` prints).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `Result` with kandle's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidArgument`].
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name, reason: reason.into() }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Formats a shape the way Keras prints it: `(None, 32, 32, 3)` with a batch axis.
pub fn fmt_shape(batch: bool, dims: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(dims.len() + 1);
    if batch {
        parts.push("None".into());
    }
    parts.extend(dims.iter().map(|d| d.to_string()));
    if parts.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}
