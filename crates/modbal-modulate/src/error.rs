//! Errors of the modulators: bad parameters are separated from bad input, and candle errors are
//! wrapped.

/// What can go wrong in a modulator.
#[derive(Debug, thiserror::Error)]
pub enum ModulateError {
    /// A configuration value is out of its domain (e.g. `gamma <= 0`, `lambda <= 0`, an empty
    /// window with `start > end`).
    #[error("invalid parameter: {0}")]
    Param(String),
    /// The runtime input does not fit (lengths that disagree, NaN scores, a gradient whose shape
    /// does not match the projector…).
    #[error("invalid input: {0}")]
    Input(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModulateError>;

impl From<ModulateError> for modbal_core::ModbalError {
    fn from(e: ModulateError) -> Self {
        match e {
            ModulateError::Param(m) => modbal_core::ModbalError::Config(m),
            ModulateError::Input(m) => modbal_core::ModbalError::Data(m),
            ModulateError::Candle(c) => modbal_core::ModbalError::Candle(c),
        }
    }
}

pub(crate) fn param_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModulateError::Param(msg.into()))
}

pub(crate) fn input_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModulateError::Input(msg.into()))
}
