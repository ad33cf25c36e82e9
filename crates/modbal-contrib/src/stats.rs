//! Per-sample prediction statistics shared by the metrics, and feature ablation at the fusion
//! head.
//!
//! For logits `z_i ∈ ℝ^C` and label `y_i`:
//!
//! * label probability `p_i = softmax(z_i)[y_i]` (OGM-GE's score term, IBML eq 13);
//! * label log-likelihood `log p(y_i | z_i) = z_i[y_i] − log Σ_c exp z_i[c]` (CAL eq 2), computed
//!   in f64 with the max shift, so it is finite for any finite logits;
//! * prediction `argmax_c z_i[c]`, ties broken towards the lowest class index (so a head that
//!   sees only zeroed features and has zero bias predicts class 0);
//! * accuracy `(1/N) Σ_i [argmax z_i = y_i]` (CAL's P^m(t), the Shapley "accuracy" value).
//!
//! These host-side statistics are not differentiable (they copy to the host as f64); the ARM
//! quantities, which may sit in a loss, are built from tensor ops instead (see [`crate::arm`]).
//! They are the checked tensor-level front of [`modbal_core::stats`], which holds the per-row
//! formulas (log form [`modbal_core::stats::true_class_log_prob`], ties of
//! [`modbal_core::stats::argmax_row`]) shared with the epoch metrics and the methods; the
//! label probability here is `exp` of the log form (it can differ in the last bit from the ratio
//! form `exp(z_y − m) / Σ exp(z − m)` of [`modbal_core::stats::true_class_score`]).
//!
//! **Ablation.** A modality is removed from the fusion by replacing its features with zeros of
//! the same shape before `MultimodalModel::head` ([`mask_features`]). For the concat head this
//! drops the modality's weight slice `W[:, slice_m]·f_m`; the bias (and, for the sum head, the
//! modality's own fc bias) stays.
//!
//! # Shapes
//! * logits `[N, C]` (any float dtype), labels `&[u32]` of length N with values `< C`
//! * features `[B, D_m]` per modality (any shape with a common leading B is accepted by
//!   [`mask_features`]); the mask is one `bool` per modality, `true` = kept
//! * every per-sample statistic → `Vec<f64>` of length N

use crate::error::{input_err, Result};
use candle_core::{DType, Device, Tensor};
use modbal_core::stats::{argmax_row, true_class_log_prob};
use modbal_core::MultimodalModel;

/// `(N, C)` of a `[N, C]` float logits tensor with N ≥ 1, C ≥ 1.
pub(crate) fn check_logits(t: &Tensor, what: &str) -> Result<(usize, usize)> {
    let (n, c) = match t.dims() {
        &[n, c] => (n, c),
        dims => {
            return input_err(format!(
                "{what}: expected [N, C] logits, got shape {dims:?}"
            ))
        }
    };
    if !t.dtype().is_float() {
        return input_err(format!(
            "{what}: expected float logits, got {:?}",
            t.dtype()
        ));
    }
    if n == 0 || c == 0 {
        return input_err(format!("{what}: empty logits of shape [{n}, {c}]"));
    }
    Ok((n, c))
}

/// Checks `labels` against `n` rows and `c` classes.
pub(crate) fn check_labels(labels: &[u32], n: usize, c: usize, what: &str) -> Result<()> {
    if labels.len() != n {
        return input_err(format!(
            "{what}: logits have N = {n} rows but there are {} labels",
            labels.len()
        ));
    }
    if let Some((i, &y)) = labels.iter().enumerate().find(|(_, &y)| y as usize >= c) {
        return input_err(format!(
            "{what}: label {y} at position {i} is out of range for C = {c} classes"
        ));
    }
    Ok(())
}

/// Logits as row-major f64 values, checked finite: `(N, C, values)`.
fn host_logits(t: &Tensor, what: &str) -> Result<(usize, usize, Vec<f64>)> {
    let (n, c) = check_logits(t, what)?;
    let v = t
        .to_dtype(DType::F64)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    if let Some((k, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return input_err(format!(
            "{what}: logit at row {}, class {} is {x} (NaN/Inf are not allowed)",
            k / c,
            k % c
        ));
    }
    Ok((n, c, v))
}

/// Per-sample label log-likelihood `log softmax(z_i)[y_i]` (CAL eq 2's `log p(y | x)`).
///
/// `logits: [N, C]`, `labels: N` → `N` values ≤ 0. Errors: shape, label range, NaN/Inf.
pub fn label_log_probabilities(logits: &Tensor, labels: &[u32]) -> Result<Vec<f64>> {
    let (n, c, v) = host_logits(logits, "label_log_probabilities")?;
    check_labels(labels, n, c, "label_log_probabilities")?;
    Ok(v.chunks_exact(c)
        .zip(labels)
        .map(|(row, &y)| true_class_log_prob(row, y as usize))
        .collect())
}

/// Per-sample label probability `softmax(z_i)[y_i]` (OGM-GE's score term; IBML eq 13).
///
/// `logits: [N, C]`, `labels: N` → `N` values in [0, 1]. Errors: shape, label range, NaN/Inf.
pub fn label_probabilities(logits: &Tensor, labels: &[u32]) -> Result<Vec<f64>> {
    Ok(label_log_probabilities(logits, labels)?
        .into_iter()
        .map(f64::exp)
        .collect())
}

/// Per-sample predicted class `argmax_c z_i[c]` (ties → lowest index).
///
/// `logits: [N, C]` → `N` class ids. Errors: shape, NaN/Inf.
pub fn predictions(logits: &Tensor) -> Result<Vec<u32>> {
    let (_, c, v) = host_logits(logits, "predictions")?;
    Ok(v.chunks_exact(c).map(|r| argmax_row(r) as u32).collect())
}

/// Per-sample correctness `[argmax z_i = y_i]`.
///
/// `logits: [N, C]`, `labels: N` → `N` booleans. Errors: shape, label range, NaN/Inf.
pub fn correct(logits: &Tensor, labels: &[u32]) -> Result<Vec<bool>> {
    let (n, c, v) = host_logits(logits, "correct")?;
    check_labels(labels, n, c, "correct")?;
    Ok(v.chunks_exact(c)
        .zip(labels)
        .map(|(r, &y)| argmax_row(r) == y as usize)
        .collect())
}

/// Accuracy `(1/N) Σ_i [argmax z_i = y_i]` ∈ [0, 1].
///
/// Errors: those of [`correct`].
pub fn accuracy(logits: &Tensor, labels: &[u32]) -> Result<f64> {
    let c = correct(logits, labels)?;
    Ok(c.iter().filter(|&&b| b).count() as f64 / c.len() as f64)
}

/// Label, per-sample probability and correctness in one pass: `(p_i[y_i], correct_i)`.
pub(crate) fn label_prob_and_correct(logits: &Tensor, labels: &[u32]) -> Result<Vec<(f64, bool)>> {
    let (n, c, v) = host_logits(logits, "label_prob_and_correct")?;
    check_labels(labels, n, c, "label_prob_and_correct")?;
    Ok(v.chunks_exact(c)
        .zip(labels)
        .map(|(r, &y)| {
            let y = y as usize;
            (true_class_log_prob(r, y).exp(), argmax_row(r) == y)
        })
        .collect())
}

/// A `[N]` integer labels tensor (u8/u32/i64) as `Vec<u32>` (e.g. `Batch::labels`).
///
/// Errors: rank other than 1, float dtype, negative or too large values.
pub fn labels_from_tensor(t: &Tensor) -> Result<Vec<u32>> {
    if t.rank() != 1 {
        return input_err(format!(
            "labels_from_tensor: expected a [N] labels tensor, got shape {:?}",
            t.dims()
        ));
    }
    if t.dtype().is_float() {
        return input_err(format!(
            "labels_from_tensor: expected integer labels, got {:?}",
            t.dtype()
        ));
    }
    let v = t.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    v.iter()
        .enumerate()
        .map(|(i, &y)| {
            u32::try_from(y).map_err(|_| {
                crate::ContribError::Input(format!(
                    "labels_from_tensor: label {y} at position {i} is not a valid class id"
                ))
            })
        })
        .collect()
}

/// The features with every modality whose `keep` flag is false replaced by zeros of the same
/// shape, dtype and device ("all but m" in CAL eq 2; subsets for Shapley values).
///
/// Errors: `keep.len() != features.len()`.
pub fn mask_features(features: &[Tensor], keep: &[bool]) -> Result<Vec<Tensor>> {
    if keep.len() != features.len() {
        return input_err(format!(
            "mask_features: {} features but {} keep flags",
            features.len(),
            keep.len()
        ));
    }
    features
        .iter()
        .zip(keep)
        .map(|(f, &k)| Ok(if k { f.clone() } else { f.zeros_like()? }))
        .collect()
}

/// Keep flags of subset `mask` (bit m set ⇔ modality m kept) over `m` modalities.
pub(crate) fn mask_flags(mask: usize, m: usize) -> Vec<bool> {
    (0..m).map(|i| mask & (1 << i) != 0).collect()
}

/// Checks the features against the model and the labels; returns N. Every feature must be
/// `[N, ...]` with the same N as the labels, one per modality of the model.
pub(crate) fn check_features<M: MultimodalModel + ?Sized>(
    model: &M,
    features: &[Tensor],
    labels: &[u32],
    what: &str,
) -> Result<usize> {
    let mods = model.modalities();
    if features.len() != mods.len() {
        return input_err(format!(
            "{what}: model has {} modalities ({mods:?}) but {} feature tensors were given",
            mods.len(),
            features.len()
        ));
    }
    if features.is_empty() {
        return input_err(format!("{what}: no modalities"));
    }
    let n = labels.len();
    if n == 0 {
        return input_err(format!("{what}: empty split (no labels)"));
    }
    for (m, f) in features.iter().enumerate() {
        if f.rank() == 0 || f.dims()[0] != n {
            return input_err(format!(
                "{what}: features of modality {:?} have shape {:?}, expected [N = {n}, ...] \
                 (one row per label)",
                mods[m],
                f.dims()
            ));
        }
    }
    Ok(n)
}

/// The device of the model's parameters (CPU for a model without parameters).
pub(crate) fn model_device<M: MultimodalModel + ?Sized>(model: &M) -> Device {
    model
        .params()
        .all()
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu)
}

/// Fused logits of `model.head` on the features with modalities outside `keep` zeroed; features
/// are moved to the model's device first (`EvalOutputs` holds CPU tensors).
pub(crate) fn head_fused<M: MultimodalModel + ?Sized>(
    model: &M,
    features: &[Tensor],
    keep: &[bool],
) -> Result<Tensor> {
    let dev = model_device(model);
    let f = features
        .iter()
        .map(|t| t.to_device(&dev))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let masked = mask_features(&f, keep)?;
    let (fused, _) = model.head(&masked)?;
    Ok(fused)
}

/// Checks a slice of per-modality statistics: length `m`, all finite.
pub(crate) fn check_values(v: &[f64], m: usize, what: &str) -> Result<()> {
    if v.len() != m {
        return input_err(format!(
            "{what}: expected {m} values (one per modality), got {}",
            v.len()
        ));
    }
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return input_err(format!(
            "{what}: value of modality {i} is {x} (must be finite)"
        ));
    }
    Ok(())
}
