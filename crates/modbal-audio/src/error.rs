//! The crate's error type.

use std::path::{Path, PathBuf};

/// Errors of `modbal-audio`: bad parameters are separated from failures on a given file.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// A parameter (sample rate, FFT size, hop, ...) is outside its valid range.
    #[error("invalid parameter: {0}")]
    Param(String),
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not valid audio of a supported kind (corrupt, truncated,
    /// unsupported encoding, no audio track, empty).
    #[error("{}: {msg}", path.display())]
    Decode { path: PathBuf, msg: String },
    /// A size computed from the input (a resampled length, a filter length) exceeds the bound
    /// that keeps one clip from exhausting memory or time.
    #[error("{0}")]
    Limit(String),
}

impl AudioError {
    pub(crate) fn decode(path: &Path, msg: impl std::fmt::Display) -> Self {
        AudioError::Decode {
            path: path.to_path_buf(),
            msg: msg.to_string(),
        }
    }
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        AudioError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `Result` with [`AudioError`].
pub type Result<T> = std::result::Result<T, AudioError>;
