//! Exact modality Shapley values by ablation at the fusion head.
//!
//! Paper: Shapley, *A value for n-person games* (1953); as a modality valuation the idea CAL's
//! eq 2 simplifies ("retaining the core idea of Shapley values", CAL §3.1), and the
//! modality-level valuation of Wei et al. (*Enhancing multimodal cooperation via sample-level
//! modality valuation*, CVPR 2024) and SHAPE (Hu et al., IJCAI 2022).
//!
//! For M modalities (players) and a value function v on subsets S ⊆ {0, …, M−1}:
//!
//! `φ_m = Σ_{S ∌ m} |S|! (M − |S| − 1)! / M! · [ v(S ∪ {m}) − v(S) ]`.
//!
//! All 2^M subsets are evaluated, so the values are exact; M ≤ [`MAX_SHAPLEY_MODALITIES`] = 4
//! (16 head evaluations) and a larger M is a [`crate::ContribError::Param`] error.
//!
//! **Coalitions.** `v(S)` is evaluated inside the one trained model: the features of the
//! modalities outside S are zeroed before `model.head` (as CAL's "all but m"; see
//! [`crate::stats::mask_features`]). `v(∅)` is therefore the head's prediction from zero
//! features (the bias alone for the concat head), not a chance-level constant.
//!
//! **Value function** ([`ShapleyValueFn`], a config choice), per sample i:
//! * `LogLikelihood` (default): `v_i(S) = log p(y_i | x^S_i)` = log softmax of the fused logits
//!   at the label — smooth, and `φ` then generalises CAL's φ(m) = v(all) − v(all∖m);
//! * `Accuracy`: `v_i(S) = [argmax fused logits(x^S_i) = y_i]` (ties → lowest class).
//!
//! The split-level value is the mean `v(S) = (1/N) Σ_i v_i(S)`. The Shapley value is linear in
//! v, so the split-level φ is exactly the mean of the per-sample φ_i ([`ShapleyPerSample`]).
//! Properties (tested): efficiency `Σ_m φ_m = v(all) − v(∅)`, symmetry, null player (a modality
//! whose features the head ignores gets 0).
//!
//! # Shapes
//! * `features[m]: [N, D_m]` (one per model modality), `labels: &[u32]` of length N
//! * subset values: `2^M` values indexed by mask (bit m set ⇔ modality m in S)
//! * [`ShapleyReport::values`]: M; [`ShapleyPerSample::values`]: `[N][M]`

use crate::error::{input_err, param_err, Result};
use crate::stats::{check_features, correct, head_fused, label_log_probabilities, mask_flags};
use candle_core::Tensor;
use modbal_core::MultimodalModel;
use serde::{Deserialize, Serialize};

/// Largest number of modalities with exact Shapley values.
pub const MAX_SHAPLEY_MODALITIES: usize = 4;

/// Per-sample value of a coalition (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapleyValueFn {
    /// `log p(y | x^S)` of the fused prediction. The default.
    #[default]
    LogLikelihood,
    /// `[argmax = y]` of the fused prediction.
    Accuracy,
    /// `|S| · [argmax = y]` of the fused prediction (Wei et al., CVPR 2024).
    SizeAccuracy,
}

/// Configuration of the Shapley valuation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapleyConfig {
    /// The per-sample value function. Default [`ShapleyValueFn::LogLikelihood`].
    pub value: ShapleyValueFn,
}

fn check_players(m: usize, what: &str) -> Result<()> {
    if m == 0 {
        return param_err(format!("{what}: need at least one modality"));
    }
    if m > MAX_SHAPLEY_MODALITIES {
        return param_err(format!(
            "{what}: exact Shapley values are limited to M <= {MAX_SHAPLEY_MODALITIES} \
             modalities (2^M head evaluations), got M = {m}"
        ));
    }
    Ok(())
}

fn factorial(k: usize) -> f64 {
    (1..=k).map(|x| x as f64).product()
}

/// The Shapley weight `|S|! (M − |S| − 1)! / M!` of a coalition `S` of `subset_size` players
/// that excludes the valued player, in an M-player game (`num_players` = M ≥ 1,
/// `subset_size` < M). The one formula behind [`shapley_from_subset_values`]; methods that
/// attribute tensors rather than scalars (AGM's mono-modal responses) weight with it too.
pub fn shapley_weight(num_players: usize, subset_size: usize) -> f64 {
    debug_assert!(subset_size < num_players);
    factorial(subset_size) * factorial(num_players - subset_size - 1) / factorial(num_players)
}

/// Exact Shapley values of an M-player game from its 2^M subset values (`values[mask]`, bit m
/// of `mask` set ⇔ player m in the subset).
///
/// Errors: M = 0 or M > 4 ([`crate::ContribError::Param`]); `values.len() ≠ 2^M`; non-finite
/// values.
pub fn shapley_from_subset_values(num_players: usize, values: &[f64]) -> Result<Vec<f64>> {
    check_players(num_players, "shapley_from_subset_values")?;
    let n_sub = 1usize << num_players;
    if values.len() != n_sub {
        return input_err(format!(
            "shapley_from_subset_values: M = {num_players} needs 2^M = {n_sub} subset values, got {}",
            values.len()
        ));
    }
    if let Some((k, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return input_err(format!(
            "shapley_from_subset_values: value of subset {k:#b} is {v} (must be finite)"
        ));
    }
    Ok((0..num_players)
        .map(|m| {
            let bit = 1usize << m;
            (0..n_sub)
                .filter(|s| s & bit == 0)
                .map(|s| {
                    let w = shapley_weight(num_players, s.count_ones() as usize);
                    w * (values[s | bit] - values[s])
                })
                .sum()
        })
        .collect())
}

/// Per-sample values `v_i(S)` of every subset: `[2^M][N]`, indexed by mask.
///
/// Errors: M = 0 or M > 4, feature count ≠ the model's modalities, N mismatch (named), label
/// range, NaN/Inf, head failures.
pub fn subset_values_per_sample<M: MultimodalModel + ?Sized>(
    model: &M,
    features: &[Tensor],
    labels: &[u32],
    value: ShapleyValueFn,
) -> Result<Vec<Vec<f64>>> {
    let m = features.len();
    check_players(m, "subset_values_per_sample")?;
    check_features(model, features, labels, "subset_values_per_sample")?;
    (0..1usize << m)
        .map(|mask| {
            let fused = head_fused(model, features, &mask_flags(mask, m))?;
            match value {
                ShapleyValueFn::LogLikelihood => label_log_probabilities(&fused, labels),
                ShapleyValueFn::Accuracy | ShapleyValueFn::SizeAccuracy => {
                    let unit = if value == ShapleyValueFn::SizeAccuracy {
                        mask.count_ones() as f64
                    } else {
                        1.0
                    };
                    Ok(correct(&fused, labels)?
                        .into_iter()
                        .map(|c| if c { unit } else { 0.0 })
                        .collect())
                }
            }
        })
        .collect()
}

/// `v(S)` of one coalition in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubsetValue {
    /// The modalities in S (indices, ascending).
    pub modalities: Vec<usize>,
    /// `v(S) = (1/N) Σ_i v_i(S)`.
    pub value: f64,
}

/// Split-level modality Shapley values. Serialises into `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapleyReport {
    /// The value function used.
    pub value_fn: ShapleyValueFn,
    /// `φ_m` per modality (Σ = v(all) − v(∅)).
    pub values: Vec<f64>,
    /// `v(S)` of all 2^M subsets, in mask order (∅ first, all last).
    pub subsets: Vec<SubsetValue>,
    /// N.
    pub num_samples: usize,
}

/// Per-sample modality Shapley values (rows in input order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapleyPerSample {
    /// The value function used.
    pub value_fn: ShapleyValueFn,
    /// `φ_{i,m}`: `[N][M]`; `Σ_m φ_{i,m} = v_i(all) − v_i(∅)`.
    pub values: Vec<Vec<f64>>,
}

/// Exact split-level modality Shapley values (typically on `&eval.features, &eval.labels` of the
/// validation split).
///
/// Errors: those of [`subset_values_per_sample`].
pub fn modality_shapley<M: MultimodalModel + ?Sized>(
    model: &M,
    features: &[Tensor],
    labels: &[u32],
    config: &ShapleyConfig,
) -> Result<ShapleyReport> {
    let per = subset_values_per_sample(model, features, labels, config.value)?;
    let m = features.len();
    let means: Vec<f64> = per
        .iter()
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
        .collect();
    let values = shapley_from_subset_values(m, &means)?;
    let subsets = means
        .iter()
        .enumerate()
        .map(|(mask, &value)| SubsetValue {
            modalities: (0..m).filter(|k| mask & (1 << k) != 0).collect(),
            value,
        })
        .collect();
    Ok(ShapleyReport {
        value_fn: config.value,
        values,
        subsets,
        num_samples: labels.len(),
    })
}

/// Exact per-sample modality Shapley values.
///
/// Errors: those of [`subset_values_per_sample`].
pub fn modality_shapley_per_sample<M: MultimodalModel + ?Sized>(
    model: &M,
    features: &[Tensor],
    labels: &[u32],
    config: &ShapleyConfig,
) -> Result<ShapleyPerSample> {
    let per = subset_values_per_sample(model, features, labels, config.value)?;
    let m = features.len();
    let n = labels.len();
    let values = (0..n)
        .map(|i| {
            let v: Vec<f64> = per.iter().map(|s| s[i]).collect();
            shapley_from_subset_values(m, &v)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ShapleyPerSample {
        value_fn: config.value,
        values,
    })
}
