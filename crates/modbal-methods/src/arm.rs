//! ARM: asymmetric reinforcing against multimodal representation bias.
//!
//! Paper: Gao, Cao, Zhu, Wang, Hu, *Asymmetric Reinforcing against Multi-modal Representation
//! Bias*, AAAI 2025 (`shared/papers/arm-asymmetric-reinforcing.txt`). modbal implements the
//! **paper** (eq 5-18, Algorithm 1, Appendix C), not the official code, which has no balanced
//! min-max loss, no re-sampling and evaluates with ground-truth labels (see
//! `docs/methods/arm.md`).
//!
//! # The valuation (MIV, eq 5-12, 16)
//!
//! Computed by [`modbal_contrib::arm::ArmMiv`] from the fused logits `[N, C]`, the per-modality
//! logits `[N, C]` and the labels `[N]` of N samples (see that module for the estimator):
//!
//! * `φ^MI_n(X) = p_f,n(y_n) · smin_τ(I(f_Y; f_{x^1}), …, I(f_Y; f_{x^M}))` (eq 7 with eq 16), `[N]`;
//! * `φ^CMI_n(x^i) = p_f,n(y_n) I(f_Y; f_{x^i}) + Σ_{j≠i} p_j,n(y_n) II(f_Y; f_{x^j}; f_{x^i})`
//!   (eq 11), `[N, M]`; `φ^CMI_n(X) = (1/M) Σ_i φ^CMI_n(x^i)` (eq 12), `[N]`.
//!
//! # The three mechanisms (Table 6: DFE, BMML, DSR), active after the warm-up
//!
//! * **DFE** (eq 13): `FW^i = φ⁺(x^i) / ((1/M) Σ_k φ⁺(x^k))`, `φ⁺ = max(φ^CMI, 0)`, from the
//!   training-set means of the last epoch (non-negative, `Σ_i FW^i = M`: φ projected onto the
//!   paper's range `[0, m]`, see `modbal_contrib::arm`); applied as `f_i ← FW^i · f_i` before the
//!   concat head, in [`Method::forward`] and in [`Method::predict`] (label-free: FW are stored
//!   numbers, [`ArmFusionWeights`]).
//! * **BMML** (eq 14-17), per batch of B samples:
//!   `L = CE + λ1 · mean_n (1 − φ^MI_n(X)) + λ2 · mean_n Σ_i |φ^CMI_n(x^i) − φ^CMI_n(X)| /
//!   max((1/M) Σ_i |φ^CMI_n(x^i)|, floor)` — eq 15 with a denominator equal to the paper's on its
//!   range and bounded by `2(M−1)` everywhere ([`modbal_contrib::arm::cmi_gap_loss`]).
//! * **DSR** (eq 18, App. C): sample n is trained `1 + s_n` times in the next epoch. Default
//!   (`sampling = "spread"`): `s_n = max(0, round(k (z_n − z_0)))` with `z_n` the standard score of
//!   `φ^CMI_n(X)` over the epoch's training set, slope `k < 0` (App. C's k, per standard
//!   deviation) and zero point `z_0` (`spread_zero_point`, −1): only samples well below the
//!   epoch's mean contribution get copies, and the mean number of extra copies is at most
//!   `|k| (√(1 + c²) + c) / 2`, `c = z_0 + 1/(2|k|)`, for any φ (0.5 with the defaults).
//!   Also available: App. C's literal `s_n = max(0, round(k φ^CMI_n(X) − k M))`
//!   (`"slope"`) and the older official draft's step function (`"step"`: `φ < 0.5 → 3`,
//!   `0.5 ≤ φ < 0.9 → 2`, else 1 extra copies).
//!
//! # Warm-up on the paper's schedule
//!
//! `warm_up_epochs` (10, App. B) counts epochs of the paper's 80-epoch schedule
//! (`schedule_epochs`, App. B: KS "trained for 80 epochs") and is scaled to the run with
//! [`modbal_core::scale_epoch`]: `round(10 · E / 80)` epochs of a run of E epochs (2 of 12; 10 of
//! 80). `schedule_epochs = 0` takes `warm_up_epochs` literally.
//!
//! # Where the valuation comes from
//!
//! No held-out data: during each epoch [`Method::loss`] records every training sample's
//! **encoder features** (detached, keyed by `sample_id`; a re-sampled sample keeps its last
//! occurrence) and its label. In [`Method::on_epoch_end`] the model's head is applied to these
//! unweighted features (`FW = 1`) and `ArmMiv` is evaluated over the whole recorded training set
//! in one pass without backward: this gives the per-sample `φ^CMI_n(X)` for DSR and the training-set
//! means for the next epoch's FW. Nothing is re-encoded, so the valuation costs one head pass
//! per epoch, plus O(N·ΣD_m) floats of memory.
//!
//! # Shapes
//! * `forward`: `inputs[m]: [B, ...]` → `features[m]: [B, D_m]` (unweighted, returned) →
//!   `head(FW ⊙ features)` → fused `[B, C]`, per-modality `[B, C]`
//! * `predict`: `out.features[m]: [B, D_m]` → `head(FW ⊙ features).fused`, `[B, C]`

use crate::params::MethodParams;
use crate::util::{option_keys, FeatureRecord, FlatKeys, RecordedSet};
use candle_core::Tensor;
use modbal_contrib::arm::{cmi_gap_loss, ArmConfig as MivConfig, ArmFusionWeights, ArmMiv};
use modbal_core::{
    scale_epoch, Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext,
};
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The re-sampling function `F_s` of eq 18.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// App. C's line on the epoch's spread of φ^CMI(X) (modbal's calibration, the default):
    /// `s_n = max(0, round(k (z_n − z_0)))`, `z_n = (φ_n − mean) / std` over the epoch's
    /// training set; no copies when the spread is below [`SPREAD_MIN_STD`].
    Spread,
    /// App. C literally: `s = max(0, round(k φ^CMI(X) − k M))`. With modbal's estimator
    /// φ^CMI(X) stays far below M, so every sample gets about `−k(M − φ)` extra copies.
    Slope,
    /// The older official draft: `φ < 0.5 → 3`, `0.5 ≤ φ < 0.9 → 2`, else 1 extra copies.
    Step,
}

/// Below this standard deviation of `φ^CMI_n(X)` over the epoch (values in `[0, M]` computed in
/// f32, resolution ~1e-7) the samples are taken as equal contributors and `"spread"` sampling
/// gives no copies.
pub const SPREAD_MIN_STD: f64 = 1e-6;

/// ARM's options (`[method]` keys). Defaults are the paper's where it gives one.
///
/// The contribution estimator's config (`modbal_contrib::arm::ArmConfig`) is embedded under its
/// own keys (`smooth_min_temperature`, `fw_epsilon`), not copied; unknown keys are errors that
/// name them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArmConfig {
    /// Epochs of plain joint training (CE only, no FW, no re-sampling) before ARM activates, in
    /// epochs of the paper's schedule (`schedule_epochs`); scaled to the run. Default 10 (paper,
    /// App. B: "the warm-up duration set to 10 epochs"; the official draft used 5).
    pub warm_up_epochs: usize,
    /// Length of the schedule `warm_up_epochs` refers to; the run uses
    /// `scale_epoch(warm_up_epochs, schedule_epochs, train.epochs)` = `round(10 · E / 80)`.
    /// 0 = take `warm_up_epochs` literally. Default 80 (App. B: KS "trained for 80 epochs"; the
    /// paper gives no epoch count for UCF-51 and Food-101; Fig. 9 tracks epochs 10, 40, 80).
    pub schedule_epochs: usize,
    /// Dynamic feature-level fusion, eq 13 (Table 6 "DFE"). Default true.
    pub dfe: bool,
    /// Balanced min-max loss, eq 14-17 (Table 6 "BMML"). Default true.
    pub bmml: bool,
    /// Dynamic sample-level re-sampling, eq 18 (Table 6 "DSR"). Default true.
    pub dsr: bool,
    /// λ1 of eq 17 (weight of `L_φMI`, eq 14), ≥ 0. Default 1.0 (the paper gives no value).
    pub lambda1: f64,
    /// λ2 of eq 17 (weight of `L_φCMI`, eq 15), ≥ 0. Default 1.0 (the paper gives no value).
    pub lambda2: f64,
    /// Also add the BMML terms during warm-up (Algorithm 1, line 6 computes eq 17 there too).
    /// Default false (the text: "before modality valuation, a warm-up stage is employed").
    pub bmml_during_warm_up: bool,
    /// Re-sampling function of eq 18. Default `"spread"` (App. C's line on the epoch's spread
    /// of φ^CMI; `"slope"`: App. C literally).
    pub sampling: Sampling,
    /// Slope k < 0 of the App. C sampling function (per standard deviation for `"spread"`, per
    /// unit of φ^CMI for `"slope"`). Default −2.0 (App. C Table 5: the k whose KS accuracy, 66.52,
    /// is ARM's result in Tables 1 and 6).
    pub slope_k: f64,
    /// `"spread"` only: standard score `z_0` at which `F_s` reaches 0 copies (the role of `m` in
    /// App. C, whose line reaches 0 at the top of φ's range), finite. Default −1.0 (modbal's
    /// calibration: copies only from about one standard deviation below the epoch's mean
    /// contribution; the mean extra copies are then ≤ 0.5 per sample for any φ with k = −2).
    pub spread_zero_point: f64,
    /// Floor of the eq 15 denominator `(1/M) Σ_i |φ^CMI_n(x^i)|` (per sample; equal to
    /// `φ^CMI_n(X)` on the paper's range), > 0. The term is ≤ 2(M − 1) whatever the floor; its
    /// gradient per unit of contribution is ≤ `4(M−1)/(M·floor)` (2/floor for M = 2). Default
    /// 0.1 (modbal's choice; the paper divides unguarded): a tenth of one modality's largest
    /// contribution `p·I = 1`. Contributions below it (φ^CMI ≈ 1e-4 after a warm-up epoch) are
    /// estimator noise, whose ratio would otherwise drive the training with gradients up to
    /// 2/floor (2000 with the earlier 1e-3); below the floor the term is 10 × the absolute gap.
    pub phi_cmi_floor: f64,
    /// The φ^MI / φ^CMI / FW estimator (`modbal_contrib::arm::ArmConfig`), keys
    /// `smooth_min_temperature` (τ of the smooth minimum, eq 16, sign corrected in
    /// `modbal_contrib::arm`, > 0; default 1.0, the paper's form) and `fw_epsilon` (FW fall back
    /// to 1 when the eq 13 denominator is ≤ this, ≥ 0; default 1e-8). Default its `Default`.
    #[serde(flatten, with = "miv_keys")]
    pub miv: MivConfig,
}

impl Default for ArmConfig {
    fn default() -> Self {
        Self {
            warm_up_epochs: 10,
            schedule_epochs: 80,
            dfe: true,
            bmml: true,
            dsr: true,
            lambda1: 1.0,
            lambda2: 1.0,
            bmml_during_warm_up: false,
            sampling: Sampling::Spread,
            slope_k: -2.0,
            spread_zero_point: -1.0,
            phi_cmi_floor: 0.1,
            miv: MivConfig::default(),
        }
    }
}

/// [`ArmConfig::miv`]'s keys: `modbal_contrib::arm::ArmConfig`'s field names.
const MIV_KEYS: FlatKeys = FlatKeys {
    prefix: "",
    renames: &[],
};

/// `serde(with)` of [`ArmConfig::miv`].
mod miv_keys {
    use super::{option_keys, ArmConfig, MivConfig, MIV_KEYS};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &MivConfig, s: S) -> Result<S::Ok, S::Error> {
        MIV_KEYS.serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MivConfig, D::Error> {
        let default = ArmConfig::default();
        MIV_KEYS.deserialize(d, &default.miv, &option_keys(&default))
    }
}

fn cfg_err<T>(msg: String) -> Result<T> {
    Err(ModbalError::Config(msg))
}

/// Mean and population standard deviation of the finite values (`None` if there are none).
pub fn phi_spread(phi: &[f64]) -> Option<(f64, f64)> {
    let finite: Vec<f64> = phi.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let var = finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Some((mean, var.sqrt()))
}

impl ArmConfig {
    /// Checks every value (errors name the `method.<key>`).
    pub fn validate(&self) -> Result<()> {
        for (k, v) in [("lambda1", self.lambda1), ("lambda2", self.lambda2)] {
            if !(v.is_finite() && v >= 0.0) {
                return cfg_err(format!("method arm: {k} must be finite and >= 0, got {v}"));
            }
        }
        if !(self.slope_k.is_finite() && self.slope_k < 0.0) {
            return cfg_err(format!(
                "method arm: slope_k must be finite and < 0 (F_s decreases, eq 18), got {}",
                self.slope_k
            ));
        }
        if !self.spread_zero_point.is_finite() {
            return cfg_err(format!(
                "method arm: spread_zero_point must be finite, got {}",
                self.spread_zero_point
            ));
        }
        if self.schedule_epochs > 0 && self.warm_up_epochs >= self.schedule_epochs {
            return cfg_err(format!(
                "method arm: warm_up_epochs ({}) must be < schedule_epochs ({}), else ARM never \
                 activates (schedule_epochs = 0 takes warm_up_epochs literally)",
                self.warm_up_epochs, self.schedule_epochs
            ));
        }
        if !(self.phi_cmi_floor.is_finite() && self.phi_cmi_floor > 0.0) {
            return cfg_err(format!(
                "method arm: phi_cmi_floor must be finite and > 0, got {}",
                self.phi_cmi_floor
            ));
        }
        let miv = &self.miv;
        if !(miv.smooth_min_temperature.is_finite() && miv.smooth_min_temperature > 0.0) {
            return cfg_err(format!(
                "method arm: smooth_min_temperature must be finite and > 0, got {}",
                miv.smooth_min_temperature
            ));
        }
        if !(miv.fw_epsilon.is_finite() && miv.fw_epsilon >= 0.0) {
            return cfg_err(format!(
                "method arm: fw_epsilon must be finite and >= 0, got {}",
                miv.fw_epsilon
            ));
        }
        Ok(())
    }

    /// Warm-up epochs of a run of `run_epochs` epochs: `warm_up_epochs` of the paper's
    /// `schedule_epochs`, scaled with [`scale_epoch`] (`round(10 · 12 / 80)` = 2 for a 12-epoch
    /// run with the defaults).
    pub fn warm_up_for(&self, run_epochs: usize) -> usize {
        scale_epoch(self.warm_up_epochs, self.schedule_epochs, run_epochs)
    }

    /// `"spread"` sampling of one sample with standard score `z`: `max(0, round(k (z − z_0)))`.
    /// Non-finite `z` gives 0.
    pub fn spread_copies(&self, z: f64) -> u32 {
        if !z.is_finite() {
            return 0;
        }
        let s = (self.slope_k * (z - self.spread_zero_point)).round();
        s.clamp(0.0, u32::MAX as f64) as u32
    }

    /// Upper bound on the mean extra copies per sample of `"spread"` sampling, for **any** φ:
    /// `|k| (√(1 + c²) + c) / 2`, `c = z_0 + 1/(2|k|)`. Proof: `round(x) ≤ x + ½`, so
    /// `s_n ≤ |k| (c − z_n)⁺`; the `z_n` have mean 0 and variance 1 over the epoch, and
    /// `E[(c − Z)⁺] ≤ (√(1 + c²) + c) / 2` for every such distribution (Scarf's bound). 0.5 for
    /// the defaults (k = −2, z_0 = −1).
    pub fn spread_mean_copies_bound(&self) -> f64 {
        let k = self.slope_k.abs();
        let c = self.spread_zero_point + 0.5 / k;
        k * ((1.0 + c * c).sqrt() + c) / 2.0
    }

    /// Extra copies `s_n = F_s(φ^CMI_n(X))` (eq 18) of every sample of the epoch, with `m`
    /// modalities; sample n is trained `1 + s_n` times. Non-increasing in φ (within one epoch);
    /// a non-finite value gives 0 (and is left out of the spread's mean and deviation).
    pub fn extra_copies(&self, phi_cmi_joint: &[f64], m: usize) -> Vec<u32> {
        match self.sampling {
            Sampling::Spread => match phi_spread(phi_cmi_joint) {
                Some((mean, std)) if std > SPREAD_MIN_STD => phi_cmi_joint
                    .iter()
                    .map(|&p| self.spread_copies((p - mean) / std))
                    .collect(),
                _ => vec![0; phi_cmi_joint.len()],
            },
            Sampling::Slope => phi_cmi_joint
                .iter()
                .map(|&p| {
                    if !p.is_finite() {
                        return 0;
                    }
                    let s = (self.slope_k * p - self.slope_k * m as f64).round();
                    s.clamp(0.0, u32::MAX as f64) as u32
                })
                .collect(),
            Sampling::Step => phi_cmi_joint
                .iter()
                .map(|&p| {
                    if !p.is_finite() {
                        0
                    } else if p < 0.5 {
                        3
                    } else if p < 0.9 {
                        2
                    } else {
                        1
                    }
                })
                .collect(),
        }
    }
}

/// What ARM checkpoints (`state()`): the FW in use, the FW pending for the next epoch, and each
/// training sample's extra copies for the next epoch (indexed by sample id).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmState {
    pub fw: Option<ArmFusionWeights>,
    pub fw_next: Option<ArmFusionWeights>,
    pub extra_copies: Vec<u32>,
}

/// [`ArmState`] as checkpointed: FW as exact decimal strings (serde_json's float parser may be
/// off by one ulp).
#[derive(Serialize, Deserialize)]
struct StoredState {
    fw: Option<StoredFw>,
    fw_next: Option<StoredFw>,
    extra_copies: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct StoredFw {
    weights: Vec<String>,
    fallback: bool,
}

impl From<&ArmFusionWeights> for StoredFw {
    fn from(fw: &ArmFusionWeights) -> Self {
        Self {
            weights: fw.weights.iter().map(|w| w.to_string()).collect(),
            fallback: fw.fallback,
        }
    }
}

impl TryFrom<StoredFw> for ArmFusionWeights {
    type Error = ModbalError;
    fn try_from(s: StoredFw) -> Result<Self> {
        let weights = s
            .weights
            .iter()
            .map(|w| {
                w.parse::<f64>()
                    .map_err(|e| ModbalError::Serde(format!("arm state: FW {w:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            weights,
            fallback: s.fallback,
        })
    }
}

impl From<&ArmState> for StoredState {
    fn from(s: &ArmState) -> Self {
        Self {
            fw: s.fw.as_ref().map(StoredFw::from),
            fw_next: s.fw_next.as_ref().map(StoredFw::from),
            extra_copies: s.extra_copies.clone(),
        }
    }
}

impl TryFrom<StoredState> for ArmState {
    type Error = ModbalError;
    fn try_from(s: StoredState) -> Result<Self> {
        Ok(Self {
            fw: s.fw.map(ArmFusionWeights::try_from).transpose()?,
            fw_next: s.fw_next.map(ArmFusionWeights::try_from).transpose()?,
            extra_copies: s.extra_copies,
        })
    }
}

/// The ARM method (see the module docs).
#[derive(Debug)]
pub struct Arm {
    cfg: ArmConfig,
    state: ArmState,
    record: FeatureRecord,
}

impl Arm {
    /// Errors: invalid config (named key).
    pub fn new(cfg: ArmConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            state: ArmState::default(),
            record: FeatureRecord::default(),
        })
    }

    pub fn config(&self) -> &ArmConfig {
        &self.cfg
    }

    /// The FW applied in `forward` and `predict` (`None`: unweighted fusion).
    pub fn fusion_weights(&self) -> Option<&ArmFusionWeights> {
        self.state.fw.as_ref()
    }

    /// Set the FW in use (ignored by `forward`/`predict` when `dfe = false`).
    pub fn set_fusion_weights(&mut self, fw: Option<ArmFusionWeights>) {
        self.state.fw = fw;
    }

    /// Extra copies per sample id for the next re-sampled epoch.
    pub fn extra_copies(&self) -> &[u32] {
        &self.state.extra_copies
    }

    /// Set each sample's extra copies from its joint contribution `φ^CMI(X)` (eq 18, with
    /// [`ArmConfig::extra_copies`] over the given set: for `"spread"` sampling the mean and
    /// deviation are those of `phi_cmi_joint`); samples not listed get 0. Errors: length mismatch.
    pub fn set_sample_contributions(
        &mut self,
        sample_ids: &[usize],
        phi_cmi_joint: &[f64],
        num_modalities: usize,
    ) -> Result<()> {
        if sample_ids.len() != phi_cmi_joint.len() {
            return Err(ModbalError::Data(format!(
                "arm: {} sample ids but {} contributions",
                sample_ids.len(),
                phi_cmi_joint.len()
            )));
        }
        let len = sample_ids.iter().max().map(|&i| i + 1).unwrap_or(0);
        let mut extra = vec![0u32; len];
        let copies = self.cfg.extra_copies(phi_cmi_joint, num_modalities);
        for (&id, s) in sample_ids.iter().zip(copies) {
            extra[id] = s;
        }
        self.state.extra_copies = extra;
        Ok(())
    }

    /// The run's warm-up (epochs) from `warm_up_epochs` on the paper's schedule; an error when
    /// it leaves no ARM epoch in the run.
    fn warm_up(&self, ctx: &RunContext) -> Result<usize> {
        let w = self.cfg.warm_up_for(ctx.num_epochs);
        if ctx.num_epochs > 0 && w >= ctx.num_epochs {
            return cfg_err(format!(
                "method arm: the warm-up ({w} epochs: warm_up_epochs = {} of schedule_epochs = {}) \
                 covers the whole {}-epoch run, so ARM never activates; lower \
                 method.warm_up_epochs or raise train.epochs",
                self.cfg.warm_up_epochs, self.cfg.schedule_epochs, ctx.num_epochs
            ));
        }
        Ok(w)
    }

    fn active(&self, ctx: &RunContext) -> Result<bool> {
        Ok(ctx.epoch >= self.warm_up(ctx)?)
    }

    /// Whether `ctx.epoch` is past the warm-up (the epochs ARM may report; see
    /// [`Method::selectable`]).
    pub fn is_arm_epoch(&self, ctx: &RunContext) -> bool {
        // A warm-up that covers the run is an error at its first use (`warm_up`).
        self.active(ctx).unwrap_or(false)
    }

    /// The FW to apply, if DFE is on and weights are set.
    fn applied_fw(&self) -> Option<&ArmFusionWeights> {
        if self.cfg.dfe {
            self.state.fw.as_ref()
        } else {
            None
        }
    }

    /// MIV over the recorded training set (unweighted head, no grad): per-sample `φ^CMI(X)` →
    /// extra copies, training-set means → next epoch's FW. Logged under `miv_train.*`.
    fn value_training_set(
        &mut self,
        model: &dyn MultimodalModel,
        ctx: &mut RunContext,
    ) -> Result<()> {
        let Some(RecordedSet {
            ids,
            labels,
            features: feats,
        }) = self.record.take()?
        else {
            return Ok(());
        };
        let names = model.modalities().to_vec();
        let m = names.len();
        let miv = ArmMiv::from_model(model, &feats, &labels, self.cfg.miv.clone())?;
        let report = miv.report()?;
        let per = miv.per_sample()?;
        self.set_sample_contributions(&ids, &per.phi_cmi_joint, m)?;
        if let Some((mean, std)) = phi_spread(&per.phi_cmi_joint) {
            ctx.log.set("dsr.phi_mean", mean);
            ctx.log.set("dsr.phi_std", std);
        }
        for (i, name) in names.iter().enumerate() {
            ctx.log.set(format!("miv_train.nmi.{name}"), report.nmi[i]);
            ctx.log
                .set(format!("miv_train.phi_mi.{name}"), report.phi_mi[i]);
            ctx.log
                .set(format!("miv_train.phi_cmi.{name}"), report.phi_cmi[i]);
            ctx.log
                .set(format!("fw_next.{name}"), report.fusion_weights.weights[i]);
        }
        ctx.log
            .set("miv_train.phi_mi_joint", report.phi_mi_joint_smooth);
        ctx.log.set("miv_train.phi_cmi_joint", report.phi_cmi_joint);
        ctx.log.set("miv_train.samples", report.num_samples);
        ctx.log
            .set("fw_next.fallback", report.fusion_weights.fallback);
        self.state.fw_next = Some(report.fusion_weights);
        Ok(())
    }
}

/// Histogram of extra copies as a dense array: entry `s` = number of samples with `s` extra
/// copies (`[n0, n1, …, n_max]`; `[]` for no samples).
pub fn copies_histogram(extra: impl IntoIterator<Item = u32>) -> Vec<usize> {
    let mut h: Vec<usize> = Vec::new();
    for e in extra {
        let e = e as usize;
        if h.len() <= e {
            h.resize(e + 1, 0);
        }
        h[e] += 1;
    }
    h
}

impl Method for Arm {
    fn name(&self) -> &str {
        "arm"
    }

    /// Only epochs after the warm-up are ARM (the warm-up is plain joint training): the model of
    /// a warm-up epoch is logged but never reported as ARM's number (issue 14, as UDI's
    /// unimodal stages).
    fn selectable(&self, ctx: &RunContext, _stages: &[modbal_core::StageSpec]) -> bool {
        self.is_arm_epoch(ctx)
    }

    /// DSR (eq 18): every index `1 + s_n` times after warm-up, `None` otherwise. Logs (DSR on)
    /// `dsr.active`, `dsr.copies_hist` (samples with 0, 1, 2, … extra copies this epoch),
    /// `dsr.epoch_len`, `dsr.epoch_len_ratio` (`epoch_len / train_len`; 1 when inactive) and
    /// `dsr.mean_extra_copies`.
    fn epoch_indices(
        &mut self,
        train_len: usize,
        ctx: &mut RunContext,
    ) -> Result<Option<Vec<usize>>> {
        if !self.cfg.dsr {
            return Ok(None);
        }
        let active = self.active(ctx)? && !self.state.extra_copies.is_empty();
        ctx.log.set("dsr.active", active);
        let extra = |i: usize| {
            if active {
                self.state.extra_copies.get(i).copied().unwrap_or(0)
            } else {
                0
            }
        };
        let extra_total: usize = (0..train_len).map(|i| extra(i) as usize).sum();
        let epoch_len = train_len + extra_total;
        ctx.log.set(
            "dsr.copies_hist",
            copies_histogram((0..train_len).map(extra)),
        );
        ctx.log.set("dsr.epoch_len", epoch_len);
        let denom = train_len.max(1) as f64;
        ctx.log.set("dsr.epoch_len_ratio", epoch_len as f64 / denom);
        ctx.log
            .set("dsr.mean_extra_copies", extra_total as f64 / denom);
        if !active {
            return Ok(None);
        }
        let mut order = Vec::with_capacity(epoch_len);
        for i in 0..train_len {
            for _ in 0..=extra(i) {
                order.push(i);
            }
        }
        Ok(Some(order))
    }

    /// Promotes the FW valued at the end of the previous epoch (eq 13: "will take effect in the
    /// next epoch"), once warm-up is over. Logs `warm_up_epochs_run` (the scaled warm-up).
    fn on_epoch_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        ctx.log.set("warm_up_epochs_run", self.warm_up(ctx)?);
        if self.cfg.dfe && self.active(ctx)? {
            if let Some(next) = self.state.fw_next.take() {
                self.state.fw = Some(next);
            }
        }
        let applied = self.applied_fw().cloned();
        ctx.log.set("fw_active", applied.is_some());
        for (i, name) in model.modalities().iter().enumerate() {
            let w = applied.as_ref().map(|f| f.weights[i]).unwrap_or(1.0);
            ctx.log.set(format!("fw.{name}"), w);
        }
        Ok(())
    }

    /// Encoders, then the concat head on `FW ⊙ features` (eq 13). Returns the unweighted
    /// features, so that `predict` applies FW exactly once.
    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        _ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        crate::util::check_batch_inputs("arm", model, batch)?;
        let m = model.modalities().len();
        let features = (0..m)
            .map(|i| model.encode(i, &batch.inputs[i], true))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (fused_logits, per_modality_logits) = match self.applied_fw() {
            Some(fw) => model.head(&fw.apply_to_features(&features)?)?,
            None => model.head(&features)?,
        };
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits,
            features,
        })
    }

    /// CE, plus the balanced min-max loss (eq 14-17) when active; per-batch MIV means are
    /// logged (`phi_mi.*`, `phi_cmi.*`); the batch's features are recorded for the valuation.
    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        let ce = cross_entropy(&out.fused_logits, &batch.labels)?;
        let labels: Vec<u32> = batch.labels.to_vec1()?;
        self.record
            .record(&batch.sample_ids, &out.features, &labels)?;
        let miv = ArmMiv::new(
            &out.fused_logits,
            &out.per_modality_logits,
            &labels,
            self.cfg.miv.clone(),
        )?;
        let report = miv.report()?;
        for (i, name) in model.modalities().iter().enumerate() {
            ctx.log.add_mean(format!("phi_mi.{name}"), report.phi_mi[i]);
            ctx.log
                .add_mean(format!("phi_cmi.{name}"), report.phi_cmi[i]);
        }
        ctx.log.add_mean("phi_mi_joint", report.phi_mi_joint_smooth);
        ctx.log.add_mean("phi_cmi_joint", report.phi_cmi_joint);

        // eq 14 with eq 16: L_φMI = mean_n (1 − φ^MI_n(X)).
        let l_mi = miv.phi_mi_joint_smooth.affine(-1.0, 1.0)?.mean_all()?;
        // eq 15: L_φCMI = mean_n Σ_i |φ^CMI_n(x^i) − φ^CMI_n(X)| / max((1/M) Σ_i |φ^CMI_n(x^i)|,
        // floor); the denominator is φ^CMI_n(X) on the paper's range, the term ≤ 2(M − 1).
        let l_cmi = cmi_gap_loss(&miv.phi_cmi, self.cfg.phi_cmi_floor)?.mean_all()?;

        let use_bmml = self.cfg.bmml && (self.active(ctx)? || self.cfg.bmml_during_warm_up);
        let total = if use_bmml {
            let t = (&ce + l_mi.affine(self.cfg.lambda1, 0.0)?)?;
            (t + l_cmi.affine(self.cfg.lambda2, 0.0)?)?
        } else {
            ce.clone()
        };
        ctx.log.set("bmml_active", use_bmml);
        let mut parts = BTreeMap::new();
        parts.insert("ce".to_string(), ce);
        // Logged in every epoch; part of `total` only when `bmml_active`.
        parts.insert("phi_mi".to_string(), l_mi.detach());
        parts.insert("phi_cmi".to_string(), l_cmi.detach());
        Ok(LossTerms { total, parts })
    }

    /// `head(FW ⊙ features).fused` with the stored FW (eq 13) — no label is read.
    fn predict(&self, model: &dyn MultimodalModel, out: &MultimodalOutput) -> Result<Tensor> {
        match self.applied_fw() {
            Some(fw) => Ok(model.head(&fw.apply_to_features(&out.features)?)?.0),
            None => Ok(out.fused_logits.clone()),
        }
    }

    /// Values the recorded training set (MIV, eq 5-12) → next FW (eq 13) and extra copies (eq 18).
    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.value_training_set(model, ctx)?;
        if self.cfg.dsr {
            ctx.log.set(
                "dsr.next_copies_hist",
                copies_histogram(self.state.extra_copies.iter().copied()),
            );
        }
        Ok(())
    }

    /// `{fw, fw_next, extra_copies}`; FW are written as decimal strings (Rust's shortest
    /// round-trip form) so that a resumed run applies bit-identical weights.
    fn state(&self) -> serde_json::Value {
        serde_json::to_value(StoredState::from(&self.state)).unwrap_or(serde_json::Value::Null)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.state = if state.is_null() {
            ArmState::default()
        } else {
            serde_json::from_value::<StoredState>(state.clone())?.try_into()?
        };
        self.record.clear();
        Ok(())
    }
}

/// Registry entry: options → [`Arm`] with a concat head (DFE scales the concatenated slices).
impl MethodParams for ArmConfig {
    /// Heads: `{ADDITIVE_LATE_FUSIONS}` (`docs/fusion.md`): its MIV contributions read the per-modality logits as an additive decomposition of the fused logits and it encodes each modality alone with model.encode, which mmtm cannot.
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ADDITIVE_LATE_FUSIONS,
            "its MIV contributions read the per-modality logits as an additive decomposition of the fused logits and it encodes each modality alone with model.encode, which mmtm cannot",
        )
    }
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Arm::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::test_support::{self, parse_options};

    fn build(options: &toml::Table) -> Result<test_support::Built> {
        test_support::build::<ArmConfig>("arm", options)
    }

    #[test]
    fn embedded_estimator_config_keeps_the_flat_keys() {
        let built = build(&toml::Table::new()).unwrap();
        assert_eq!(built.resolved.len(), 14);
        assert_eq!(
            built.resolved["smooth_min_temperature"].as_float(),
            Some(1.0)
        );
        assert_eq!(built.resolved["fw_epsilon"].as_float(), Some(1e-8));
        let t: toml::Table = toml::from_str("smooth_min_temperature = 2\nlambda1 = 0.5").unwrap();
        let (cfg, _): (ArmConfig, _) = parse_options("arm", &t).unwrap();
        assert_eq!(cfg.miv.smooth_min_temperature, 2.0);
        assert_eq!(cfg.miv.fw_epsilon, 1e-8);
        assert_eq!(cfg.lambda1, 0.5);
        let t: toml::Table = toml::from_str("smooth_min_temp = 2").unwrap();
        let e = build(&t).unwrap_err().to_string();
        assert!(e.contains("unknown field `smooth_min_temp`"), "{e}");
    }
}
