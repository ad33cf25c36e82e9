//! The crate's error type: invalid configurations are separated from tensor failures.

/// Errors raised while building encoders, fusion heads and models.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A configuration value or an input shape given at build time is invalid (names the key,
    /// the value and the problem).
    #[error("invalid encoder configuration: {0}")]
    Config(String),
    /// A tensor operation failed (e.g. while drawing initial weights).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`EncoderError`].
pub type Result<T> = std::result::Result<T, EncoderError>;

impl From<EncoderError> for modbal_core::ModbalError {
    fn from(e: EncoderError) -> Self {
        match e {
            EncoderError::Config(msg) => modbal_core::ModbalError::Config(msg),
            EncoderError::Candle(e) => modbal_core::ModbalError::Candle(e),
        }
    }
}

/// Shorthand: `Err(EncoderError::Config(..))`.
pub(crate) fn config_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(EncoderError::Config(msg.into()))
}
