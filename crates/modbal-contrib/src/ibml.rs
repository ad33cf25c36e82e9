//! IBML's optimisation strengths ρ^m from the previous epoch's predictions, their normalised form
//! ā_m and the balance indicators.
//!
//! Paper: Yang et al., *Information-Balanced Multimodal Learning* (IBML, TPAMI), eq 12-16 and
//! Table 4; official code QinYang79/IBML.
//!
//! * **Strength** (eq 13, with TCM's recorded predictions of §3.3.2):
//!   `ρ̃^m = Σ_{k ∈ batch} σ(g̃^m(x_k^m))_{y_k}`, where `σ(g̃^m(x_k^m))` is sample k's softmax
//!   prediction of modality m **recorded at the previous epoch** ([`IbmlRecorder`]). In epoch 0
//!   there is no record and, as in the official code, the recorded prediction is the one-hot of
//!   the label (so `σ(·)_{y_k} = 1`, every modality has ρ̃ = K and the modalities are balanced).
//! * **Normalised strength** (official code; the ratio inside TCM's `p^m`, eq 16):
//!   `ā_m = M·ρ̃^m / Σ_k ρ̃^k` (mean 1).
//! * **Under-optimised** indicator of BIO (text below eq 13, used in eq 12):
//!   `𝕀_m = 1 ⇔ ρ^m < (1/M) Σ_k ρ^k ⇔ ā_m < 1` — these modalities add their unimodal CE.
//! * **Fused-loss weight** (eq 12): `Î = max(1 − Σ_m 𝕀_m, 0)`.
//! * **Over-optimised** indicator of TCM (eq 15-16): `ρ̃^m > (1/M) Σ_k ρ̃^k ⇔ ā_m > 1`.
//! * **Noise probability** (eq 16): `p^m = min(ā_m, λ) / λ` for over-optimised modalities
//!   (λ = 10), 0 for the others; each previously-correct sample of such a modality gets noise
//!   with this probability (the draw and the noise are the method's).
//! * **Discrepancy ratio** (Table 4): `ρ^0/ρ^1` for two modalities, `max/min` in general (see
//!   [`crate::ogm`]).
//!
//! When `Σ_k ρ̃^k = 0` (all recorded probabilities underflowed) ā is undefined and set to 1 for
//! every modality: no modality is flagged.
//!
//! The recorder also keeps, per sample and modality, whether the recorded prediction was
//! correct (`argmax = y`, ties → lowest class), which TCM's eq 16 needs ("samples that the
//! training logits predict correctly"); without a record a sample counts as correct (the one-hot
//! convention). [`IbmlRecorder::end_epoch`] merges the epoch's records into the previous ones
//! (a sample not seen this epoch keeps its older record), then clears the current epoch.
//!
//! # Shapes
//! * [`IbmlRecorder::record`]: `sample_ids` and `labels` of length B, `per_modality_logits[m]:
//!   [B, C]`
//! * strengths and every report field: M values

use crate::error::{input_err, param_err, Result};
use crate::ogm::{discrepancy_ratio, pair_ratio};
use crate::stats::label_prob_and_correct;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hyper-parameters of IBML's indicators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbmlConfig {
    /// λ of eq 16 (noise scaling), > 0. Default 10 (IBML §4 / official code).
    pub lambda: f64,
}

impl Default for IbmlConfig {
    fn default() -> Self {
        Self { lambda: 10.0 }
    }
}

impl IbmlConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return param_err(format!(
                "ibml.lambda must be finite and > 0, got {}",
                self.lambda
            ));
        }
        Ok(())
    }
}

/// One sample's recorded prediction: per modality `σ(g^m(x^m))_y` and whether it was correct.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// `σ(g^m(x^m))_y` per modality.
    pub label_prob: Vec<f64>,
    /// `argmax σ(g^m(x^m)) = y` per modality.
    pub correct: Vec<bool>,
}

/// Per-sample predictions of the previous and the current epoch, keyed by sample id.
/// Serialisable (it is the IBML method's checkpoint state).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IbmlRecorder {
    num_modalities: usize,
    previous: BTreeMap<usize, SampleRecord>,
    current: BTreeMap<usize, SampleRecord>,
    /// Number of [`IbmlRecorder::end_epoch`] calls so far.
    epochs: usize,
}

impl IbmlRecorder {
    /// An empty recorder for `num_modalities ≥ 1` modalities (epoch 0: every lookup is one-hot).
    pub fn new(num_modalities: usize) -> Result<Self> {
        if num_modalities == 0 {
            return param_err("IbmlRecorder: num_modalities must be >= 1");
        }
        Ok(Self {
            num_modalities,
            previous: BTreeMap::new(),
            current: BTreeMap::new(),
            epochs: 0,
        })
    }

    pub fn num_modalities(&self) -> usize {
        self.num_modalities
    }

    /// Number of completed epochs (calls of [`IbmlRecorder::end_epoch`]).
    pub fn epochs(&self) -> usize {
        self.epochs
    }

    /// Record this epoch's predictions of a batch (the per-modality logits of the training
    /// forward pass). A sample recorded twice in one epoch keeps the last record.
    ///
    /// Errors: logits count ≠ M, shapes (named), `sample_ids`/`labels` length ≠ B, label range,
    /// NaN/Inf.
    pub fn record(
        &mut self,
        sample_ids: &[usize],
        labels: &[u32],
        per_modality_logits: &[Tensor],
    ) -> Result<()> {
        let m = self.num_modalities;
        if per_modality_logits.len() != m {
            return input_err(format!(
                "IbmlRecorder::record: recorder has {m} modalities but {} logits tensors were given",
                per_modality_logits.len()
            ));
        }
        if sample_ids.len() != labels.len() {
            return input_err(format!(
                "IbmlRecorder::record: {} sample ids but {} labels",
                sample_ids.len(),
                labels.len()
            ));
        }
        let cols = per_modality_logits
            .iter()
            .enumerate()
            .map(|(k, z)| {
                if z.rank() == 2 && z.dims()[0] != labels.len() {
                    return input_err(format!(
                        "IbmlRecorder::record: logits of modality {k} have shape {:?} but the \
                         batch has {} samples",
                        z.dims(),
                        labels.len()
                    ));
                }
                label_prob_and_correct(z, labels)
            })
            .collect::<Result<Vec<_>>>()?;
        for (b, &id) in sample_ids.iter().enumerate() {
            self.current.insert(
                id,
                SampleRecord {
                    label_prob: cols.iter().map(|c| c[b].0).collect(),
                    correct: cols.iter().map(|c| c[b].1).collect(),
                },
            );
        }
        Ok(())
    }

    /// Close the epoch: the current records replace (per sample) the previous ones.
    pub fn end_epoch(&mut self) {
        let cur = std::mem::take(&mut self.current);
        self.previous.extend(cur);
        self.epochs += 1;
    }

    /// The previous epoch's record of sample `id`, if any.
    pub fn previous(&self, id: usize) -> Option<&SampleRecord> {
        self.previous.get(&id)
    }

    /// `σ(g̃^m(x_id^m))_y` from the previous epoch; 1 (one-hot) without a record.
    /// Errors: `m ≥ M`.
    pub fn previous_label_prob(&self, m: usize, id: usize) -> Result<f64> {
        self.check_modality(m)?;
        Ok(self.previous.get(&id).map_or(1.0, |r| r.label_prob[m]))
    }

    /// Whether modality m predicted sample `id` correctly in the previous epoch; true (one-hot)
    /// without a record. Errors: `m ≥ M`.
    pub fn previous_correct(&self, m: usize, id: usize) -> Result<bool> {
        self.check_modality(m)?;
        Ok(self.previous.get(&id).is_none_or(|r| r.correct[m]))
    }

    fn check_modality(&self, m: usize) -> Result<()> {
        if m >= self.num_modalities {
            return input_err(format!(
                "IbmlRecorder: modality {m} out of range for {} modalities",
                self.num_modalities
            ));
        }
        Ok(())
    }

    /// `ρ̃^m = Σ_{k ∈ batch} σ(g̃^m(x_k^m))_{y_k}` (eq 13 on the recorded predictions).
    pub fn strengths(&self, sample_ids: &[usize]) -> Vec<f64> {
        let mut s = vec![0.0; self.num_modalities];
        for id in sample_ids {
            match self.previous.get(id) {
                Some(r) => s.iter_mut().zip(&r.label_prob).for_each(|(a, p)| *a += p),
                None => s.iter_mut().for_each(|a| *a += 1.0),
            }
        }
        s
    }

    /// The [`IbmlReport`] of a batch from the recorded predictions.
    ///
    /// Errors: empty batch, invalid config.
    pub fn balance(&self, sample_ids: &[usize], config: &IbmlConfig) -> Result<IbmlReport> {
        if sample_ids.is_empty() {
            return input_err("IbmlRecorder::balance: empty batch");
        }
        ibml_balance(&self.strengths(sample_ids), sample_ids.len(), config)
    }
}

/// IBML's per-modality strengths and indicators. Serialises into `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IbmlReport {
    /// `ρ̃^m` (eq 13).
    pub strengths: Vec<f64>,
    /// `ā_m = M ρ̃^m / Σ ρ̃` (1 for all when Σ = 0).
    pub normalized: Vec<f64>,
    /// `𝕀_m` of BIO (eq 12): `ā_m < 1`.
    pub under_optimized: Vec<bool>,
    /// TCM's condition (eq 15-16): `ā_m > 1`.
    pub over_optimized: Vec<bool>,
    /// `Î = max(1 − Σ 𝕀_m, 0)`, the weight of the fused term in eq 12.
    pub fused_weight: f64,
    /// `p^m = min(ā_m, λ)/λ` for over-optimised modalities, 0 otherwise (eq 16).
    pub noise_probability: Vec<f64>,
    /// `ρ^0 / ρ^1` for M = 2 (IBML Table 4), `None` otherwise.
    pub pair_ratio: Option<f64>,
    /// `max ρ / min ρ` (order-free discrepancy ratio).
    pub discrepancy: f64,
    /// K, the number of samples the strengths sum over.
    pub num_samples: usize,
}

/// Indicators of eq 12, 15-16 from strengths `ρ̃^m` summed over `num_samples` samples.
///
/// Errors: invalid config, empty, negative or non-finite strengths, `num_samples = 0`.
pub fn ibml_balance(
    strengths: &[f64],
    num_samples: usize,
    config: &IbmlConfig,
) -> Result<IbmlReport> {
    config.validate()?;
    if strengths.is_empty() {
        return input_err("ibml_balance: no strengths");
    }
    if num_samples == 0 {
        return input_err("ibml_balance: num_samples = 0");
    }
    if let Some((m, s)) = strengths
        .iter()
        .enumerate()
        .find(|(_, s)| !s.is_finite() || **s < 0.0)
    {
        return input_err(format!(
            "ibml_balance: strength of modality {m} is {s} (must be finite and >= 0)"
        ));
    }
    let m = strengths.len() as f64;
    let total: f64 = strengths.iter().sum();
    let normalized: Vec<f64> = if total > 0.0 {
        strengths.iter().map(|s| m * s / total).collect()
    } else {
        vec![1.0; strengths.len()]
    };
    let under: Vec<bool> = normalized.iter().map(|&a| a < 1.0).collect();
    let over: Vec<bool> = normalized.iter().map(|&a| a > 1.0).collect();
    let fused_weight = (1.0 - under.iter().filter(|&&b| b).count() as f64).max(0.0);
    let noise_probability = normalized
        .iter()
        .zip(&over)
        .map(|(&a, &o)| {
            if o {
                a.min(config.lambda) / config.lambda
            } else {
                0.0
            }
        })
        .collect();
    let pair = if strengths.len() == 2 {
        Some(pair_ratio(strengths, 0, 1)?)
    } else {
        None
    };
    Ok(IbmlReport {
        strengths: strengths.to_vec(),
        normalized,
        under_optimized: under,
        over_optimized: over,
        fused_weight,
        noise_probability,
        pair_ratio: pair,
        discrepancy: discrepancy_ratio(strengths)?,
        num_samples,
    })
}
