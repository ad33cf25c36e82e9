//! The crate's error type: bad parameters are separated from bad input, and candle errors are
//! wrapped (`#[from]`).

use modbal_info::InfoError;

/// What can go wrong when computing a contribution metric.
#[derive(Debug, thiserror::Error)]
pub enum ContribError {
    /// A parameter is out of its domain (e.g. `gamma ∉ (0, 1]`, Shapley with M > 4).
    #[error("invalid parameter: {0}")]
    Param(String),
    /// The input cannot be evaluated (shape mismatch — the shapes are named —, label out of
    /// range, NaN/Inf, empty split…).
    #[error("invalid input: {0}")]
    Input(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ContribError>;

impl From<InfoError> for ContribError {
    fn from(e: InfoError) -> Self {
        match e {
            InfoError::Param(m) => ContribError::Param(m),
            InfoError::Input(m) => ContribError::Input(m),
            InfoError::Candle(c) => ContribError::Candle(c),
        }
    }
}

impl From<ContribError> for modbal_core::ModbalError {
    fn from(e: ContribError) -> Self {
        match e {
            ContribError::Param(m) => modbal_core::ModbalError::Config(m),
            ContribError::Input(m) => modbal_core::ModbalError::Data(m),
            ContribError::Candle(c) => modbal_core::ModbalError::Candle(c),
        }
    }
}

pub(crate) fn param_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ContribError::Param(msg.into()))
}

pub(crate) fn input_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ContribError::Input(msg.into()))
}
