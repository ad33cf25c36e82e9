//! The core error type: bad parameters and bad input are separated from runtime failures, and
//! candle errors are wrapped (`#[from]`).

use std::path::PathBuf;

/// Errors raised by modbal crates above the tensor layer.
#[derive(Debug, thiserror::Error)]
pub enum ModbalError {
    /// A configuration value is invalid (names the key and the problem).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A name that is not one of the known choices (method, dataset, modality, encoder…).
    #[error("unknown {kind} {name:?}; valid choices: {valid}")]
    Unknown {
        kind: &'static str,
        name: String,
        valid: String,
    },
    /// Input data is malformed (wrong shape, bad label, corrupt file…).
    #[error("bad data: {0}")]
    Data(String),
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Training produced a non-finite value; what was computed before is kept on disk.
    #[error("non-finite {what} at epoch {epoch}, step {step}: training stopped (metrics and the last checkpoint of earlier epochs are kept)")]
    NonFinite {
        what: String,
        epoch: usize,
        step: usize,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// (De)serialisation failed.
    #[error("{0}")]
    Serde(String),
}

pub type Result<T> = std::result::Result<T, ModbalError>;

impl ModbalError {
    /// Shorthand for an [`ModbalError::Io`] error.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModbalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<serde_json::Error> for ModbalError {
    fn from(e: serde_json::Error) -> Self {
        ModbalError::Serde(e.to_string())
    }
}
