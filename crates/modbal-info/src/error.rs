//! Errors of the estimators: bad parameters are separated from bad input, and candle errors are
//! wrapped.

/// What can go wrong in an estimator.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// A parameter is out of its domain (e.g. `bins = 0`, negative ridge).
    #[error("invalid parameter: {0}")]
    Param(String),
    /// The input cannot be estimated from (shape mismatch, too few samples, NaN/Inf…).
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, InfoError>;

impl From<InfoError> for modbal_core::ModbalError {
    fn from(e: InfoError) -> Self {
        match e {
            InfoError::Param(m) => modbal_core::ModbalError::Config(m),
            InfoError::Input(m) => modbal_core::ModbalError::Data(m),
            InfoError::Candle(c) => modbal_core::ModbalError::Candle(c),
        }
    }
}

/// Error if `t` holds a NaN or infinite value; `what` names the argument.
pub fn check_finite(t: &candle_core::Tensor, what: &str) -> Result<()> {
    // Contiguous f32/f64 CPU tensors: one read-only pass, no copy.
    let finite = match crate::fast::tensor_all_finite(t) {
        Some(ok) => ok,
        None => t
            .to_dtype(candle_core::DType::F64)?
            .abs()?
            .sum_all()?
            .to_scalar::<f64>()?
            .is_finite(),
    };
    if !finite {
        return Err(InfoError::Input(format!(
            "{what} contains NaN or infinite values"
        )));
    }
    Ok(())
}
