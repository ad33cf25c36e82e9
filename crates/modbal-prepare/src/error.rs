//! Errors of `modbal prepare`. Problems with one clip are not errors: they are recorded as
//! skipped items in the manifest. These are the failures that stop the whole command.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Bad arguments (unknown dataset or recipe, conflicting output directory, ...).
    #[error("{0}")]
    Usage(String),
    /// The raw directory does not have a layout this dataset accepts, or a list file is malformed.
    #[error("{}{}: {msg}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Layout {
        path: PathBuf,
        line: Option<usize>,
        msg: String,
    },
    /// A required external tool is missing.
    #[error("{0}")]
    MissingTool(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Audio(#[from] modbal_audio::AudioError),
}

impl PrepareError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        PrepareError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn layout(path: &Path, line: Option<usize>, msg: impl std::fmt::Display) -> Self {
        PrepareError::Layout {
            path: path.to_path_buf(),
            line,
            msg: msg.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, PrepareError>;
