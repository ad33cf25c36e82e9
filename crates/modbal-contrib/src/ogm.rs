//! OGM-GE confidence scores and the ratios between modalities.
//!
//! Paper: Peng et al., *Balanced Multimodal Learning via On-the-fly Gradient Modulation*
//! (OGM-GE, CVPR 2022), eq 9-10; the M ≥ 2 form of BalanceMM; the discrepancy ratio of IBML
//! (Yang et al., TPAMI), Table 4.
//!
//! * score of modality m over a batch (OGM-GE eq 9):
//!   `s_m = Σ_{i ∈ batch} softmax(z_m,i)[y_i]`, with `z_m` the modality's own logits (for the
//!   concat head the weight slice `W[:, slice_m]·f_m + b/M`);
//! * two-modality ratio (OGM-GE eq 10): `ρ = s_0 / s_1` (ρ_a = s_a / s_v with the first modality
//!   first; the official code's ρ_v = s_v / s_a is its reciprocal, [`pair_ratio`]`(s, 1, 0)`);
//! * M ≥ 2 form (BalanceMM): `ρ_m = s_m / min_k s_k` (≥ 1, equal to 1 for the weakest modality);
//! * discrepancy ratio `max_m s_m / min_m s_m` (≥ 1; 1 = balanced). IBML's Table 4 reports
//!   `ρ^i / ρ^j` for a fixed ordered pair (its values below 1 show the order is fixed, not
//!   max/min): that is [`OgmReport::pair_ratio`] (`s_0 / s_1`) for two modalities; the max/min
//!   form is the order-free generalisation to M modalities.
//!
//! Both scores of every ratio are floored at [`RATIO_FLOOR`] (`max(s, 1e-12)`), so a score that
//! underflowed to 0 gives a large finite ratio, never Inf/NaN, and the weakest modality's ρ stays
//! exactly 1 (scores are sums of softmax probabilities, so they are 0 only after underflow).
//!
//! # Shapes
//! * `per_modality_logits[m]: [N, C]`, `labels: &[u32]` of length N → M scores
//! * scores `&[f64]` of length M ≥ 1 → M ratios, one discrepancy ratio

use crate::error::{input_err, Result};
use crate::stats::label_probabilities;
use candle_core::Tensor;
use modbal_core::stats;
use serde::{Deserialize, Serialize};

/// Floor of every ratio's denominator.
pub const RATIO_FLOOR: f64 = 1e-12;

/// OGM-GE scores and ratios of one batch (or split). Serialises into `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OgmReport {
    /// `s_m = Σ_i softmax(z_m,i)[y_i]` per modality (OGM-GE eq 9).
    pub scores: Vec<f64>,
    /// `s_m / N`: the mean label probability per modality.
    pub mean_label_prob: Vec<f64>,
    /// `ρ_m = s_m / min_k s_k` (BalanceMM's M ≥ 2 form of OGM-GE eq 10).
    pub ratios: Vec<f64>,
    /// `s_0 / s_1` for M = 2 (OGM-GE eq 10's ρ with the first modality first; IBML Table 4's
    /// `ρ^i / ρ^j`); `None` for M ≠ 2.
    pub pair_ratio: Option<f64>,
    /// `max_m s_m / min_m s_m` (≥ 1; the order-free discrepancy ratio, IBML Table 4).
    pub discrepancy: f64,
    /// N, the number of samples the scores sum over.
    pub num_samples: usize,
}

impl OgmReport {
    /// The report of given scores summed over `num_samples` samples.
    ///
    /// Errors: no scores, a negative or non-finite score, `num_samples = 0`.
    pub fn from_scores(scores: Vec<f64>, num_samples: usize) -> Result<Self> {
        check_scores(&scores, "OgmReport::from_scores")?;
        if num_samples == 0 {
            return input_err("OgmReport::from_scores: num_samples = 0");
        }
        let ratios = score_ratios(&scores)?;
        let pair_ratio = if scores.len() == 2 {
            Some(pair_ratio(&scores, 0, 1)?)
        } else {
            None
        };
        let discrepancy = discrepancy_ratio(&scores)?;
        let mean_label_prob = scores.iter().map(|s| s / num_samples as f64).collect();
        Ok(Self {
            scores,
            mean_label_prob,
            ratios,
            pair_ratio,
            discrepancy,
            num_samples,
        })
    }
}

fn check_scores(scores: &[f64], what: &str) -> Result<()> {
    if scores.is_empty() {
        return input_err(format!("{what}: no scores (need one per modality)"));
    }
    if let Some((m, s)) = scores
        .iter()
        .enumerate()
        .find(|(_, s)| !s.is_finite() || **s < 0.0)
    {
        return input_err(format!(
            "{what}: score of modality {m} is {s} (must be finite and >= 0)"
        ));
    }
    Ok(())
}

/// `s_m = Σ_i softmax(z_m,i)[y_i]` for every modality (OGM-GE eq 9).
///
/// `per_modality_logits[m]: [N, C]` (same N for all), `labels` of length N → M scores.
/// Errors: no modalities, shapes (named), label range, NaN/Inf.
pub fn modality_scores(per_modality_logits: &[Tensor], labels: &[u32]) -> Result<Vec<f64>> {
    if per_modality_logits.is_empty() {
        return input_err("modality_scores: no per-modality logits");
    }
    per_modality_logits
        .iter()
        .enumerate()
        .map(|(m, z)| {
            if z.rank() == 2 && z.dims()[0] != labels.len() {
                return input_err(format!(
                    "modality_scores: logits of modality {m} have shape {:?} but there are {} labels",
                    z.dims(),
                    labels.len()
                ));
            }
            Ok(label_probabilities(z, labels)?.iter().sum())
        })
        .collect()
}

/// Scores and every ratio in one report (OGM-GE eq 9-10, BalanceMM, IBML Table 4).
///
/// Errors: those of [`modality_scores`].
pub fn ogm_scores(per_modality_logits: &[Tensor], labels: &[u32]) -> Result<OgmReport> {
    let s = modality_scores(per_modality_logits, labels)?;
    OgmReport::from_scores(s, labels.len())
}

/// `ρ_m = max(s_m, RATIO_FLOOR) / max(min_k s_k, RATIO_FLOOR)` (BalanceMM's M ≥ 2 form of
/// OGM-GE eq 10).
///
/// Errors: no scores, negative or non-finite scores.
pub fn score_ratios(scores: &[f64]) -> Result<Vec<f64>> {
    check_scores(scores, "score_ratios")?;
    let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let d = min.max(RATIO_FLOOR);
    Ok(scores.iter().map(|s| s.max(RATIO_FLOOR) / d).collect())
}

/// `max(s_i, RATIO_FLOOR) / max(s_j, RATIO_FLOOR)` (OGM-GE eq 10 for the ordered pair (i, j);
/// IBML Table 4).
///
/// Errors: scores as [`score_ratios`], `i` or `j` out of range.
pub fn pair_ratio(scores: &[f64], i: usize, j: usize) -> Result<f64> {
    check_scores(scores, "pair_ratio")?;
    if i >= scores.len() || j >= scores.len() {
        return input_err(format!(
            "pair_ratio: modalities ({i}, {j}) out of range for {} scores",
            scores.len()
        ));
    }
    Ok(scores[i].max(RATIO_FLOOR) / scores[j].max(RATIO_FLOOR))
}

/// `max(max_m s_m, RATIO_FLOOR) / max(min_m s_m, RATIO_FLOOR)` (≥ 1, 1 = balanced; IBML
/// Table 4's discrepancy ratio, order-free): [`modbal_core::stats::discrepancy_ratio`] with
/// [`RatioFloor::Floor`](stats::RatioFloor::Floor)`(RATIO_FLOOR)`, after the checks below (the
/// epoch metrics use the same function unfloored).
///
/// Errors: as [`score_ratios`].
pub fn discrepancy_ratio(scores: &[f64]) -> Result<f64> {
    check_scores(scores, "discrepancy_ratio")?;
    Ok(stats::discrepancy_ratio(
        scores,
        stats::RatioFloor::Floor(RATIO_FLOOR),
    ))
}
