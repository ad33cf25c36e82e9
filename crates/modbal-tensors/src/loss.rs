//! Cross-entropy, per sample and averaged.
//!
//! `ce_i = −log softmax(z_i)[y_i]`. candle-nn's losses only return batch means; methods such as
//! IBML, ARM and sample re-weighting need the per-sample vector.
//!
//! # Shapes
//! `logits: [B, C]` (float), `labels: [B]` (u32) → `[B]` (per sample) or `[]` (mean).

use crate::ops::{log_softmax, softmax_cross_entropy};
use candle_core::{DType, Result, Tensor, D};

/// Per-sample cross-entropy `[B]` (an empty batch gives an empty vector). Labels may be any
/// integer dtype; a label outside `0..C` is an error.
pub fn cross_entropy_per_sample(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, c) = logits.dims2().map_err(|_| {
        candle_core::Error::Msg(format!(
            "cross-entropy expects logits [B, C], got {:?}",
            logits.dims()
        ))
    })?;
    if labels.dims() != [b] {
        candle_core::bail!(
            "cross-entropy: labels have shape {:?}, expected [{b}]",
            labels.dims()
        );
    }
    if b == 0 {
        return Tensor::zeros(0, logits.dtype(), logits.device());
    }
    if labels.dtype() == DType::I64 {
        let min_label = labels.min(0)?.to_scalar::<i64>()?;
        if min_label < 0 {
            candle_core::bail!("cross-entropy: negative label {min_label}");
        }
    }
    let labels = labels.to_dtype(DType::U32)?;
    let max_label = labels.max(0)?.to_scalar::<u32>()? as usize;
    if max_label >= c {
        candle_core::bail!("cross-entropy: label {max_label} out of range for {c} classes");
    }
    let lp = log_softmax(logits, D::Minus1)?;
    lp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
}

/// Mean cross-entropy (scalar). On CPU f32/f64 logits one fused op
/// ([`crate::ops::softmax_cross_entropy`]: log-sum-exp in f64, gradient
/// `(softmax − onehot)/B`); elsewhere the mean of [`cross_entropy_per_sample`]. Both agree up to
/// float rounding.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if logits.rank() == 2 {
        if let Some(l) = softmax_cross_entropy(logits, labels)? {
            return Ok(l);
        }
    }
    cross_entropy_unfused(logits, labels)
}

/// Mean cross-entropy as the composition of candle ops (`mean(cross_entropy_per_sample)`), the
/// reference of the fused [`cross_entropy`].
pub fn cross_entropy_unfused(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    cross_entropy_per_sample(logits, labels)?.mean_all()
}
