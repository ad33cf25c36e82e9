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
//! # The three mechanisms (Table 6: DFE, BMML, DSR), active after `warm_up_epochs`
//!
//! * **DFE** (eq 13): `FW^i = φ^CMI(x^i) / φ^CMI(X)` from the training-set means of the last
//!   epoch; applied as `f_i ← FW^i · f_i` before the concat head, in [`Method::forward`] and in
//!   [`Method::predict`] (label-free: FW are stored numbers, [`ArmFusionWeights`]).
//! * **BMML** (eq 14-17), per batch of B samples:
//!   `L = CE + λ1 · mean_n (1 − φ^MI_n(X)) + λ2 · mean_n Σ_i |φ^CMI_n(x^i) − φ^CMI_n(X)| / max(φ^CMI_n(X), floor)`.
//! * **DSR** (eq 18, App. C): sample n is trained `1 + s_n` times in the next epoch with
//!   `s_n = max(0, round(k φ^CMI_n(X) − k M))` (slope k < 0), or with the older official draft's
//!   step function (`φ < 0.5 → 3`, `0.5 ≤ φ < 0.9 → 2`, else 1 extra copies).
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

use crate::registry::{parse_options, Built};
use candle_core::{DType, Device, Tensor};
use modbal_contrib::arm::{ArmConfig as MivConfig, ArmFusionWeights, ArmMiv};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_encoders::FusionConfig;
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The re-sampling function `F_s` of eq 18.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Appendix C: `s = round(k φ^CMI(X) − k M)`, clamped at 0 (the paper).
    Slope,
    /// The older official draft: `φ < 0.5 → 3`, `0.5 ≤ φ < 0.9 → 2`, else 1 extra copies.
    Step,
}

/// ARM's options (`[method]` keys). Defaults are the paper's where it gives one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArmConfig {
    /// Epochs of plain joint training (CE only, no FW, no re-sampling) before ARM activates.
    /// Default 10 (paper, App. B: "the warm-up duration set to 10 epochs"; the official draft
    /// used 5).
    pub warm_up_epochs: usize,
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
    /// Re-sampling function of eq 18. Default `"slope"` (App. C).
    pub sampling: Sampling,
    /// Slope k < 0 of the App. C sampling function. Default −2.0 (App. C Table 5: the k whose
    /// KS accuracy, 66.52, is ARM's result in Tables 1 and 6).
    pub slope_k: f64,
    /// Floor of the eq 15 denominator `φ^CMI_n(X)` (per sample; the paper divides without a
    /// guard), > 0. Default 1e-3 (modbal's choice).
    pub phi_cmi_floor: f64,
    /// τ of the smooth minimum (eq 16, sign corrected in `modbal_contrib::arm`), > 0. Default 1.0
    /// (the paper's form).
    pub smooth_min_temperature: f64,
    /// FW fall back to 1 when the eq 13 denominator is ≤ this, ≥ 0. Default 1e-8.
    pub fw_epsilon: f64,
}

impl Default for ArmConfig {
    fn default() -> Self {
        Self {
            warm_up_epochs: 10,
            dfe: true,
            bmml: true,
            dsr: true,
            lambda1: 1.0,
            lambda2: 1.0,
            bmml_during_warm_up: false,
            sampling: Sampling::Slope,
            slope_k: -2.0,
            phi_cmi_floor: 1e-3,
            smooth_min_temperature: 1.0,
            fw_epsilon: 1e-8,
        }
    }
}

fn cfg_err<T>(msg: String) -> Result<T> {
    Err(ModbalError::Config(msg))
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
        if !(self.phi_cmi_floor.is_finite() && self.phi_cmi_floor > 0.0) {
            return cfg_err(format!(
                "method arm: phi_cmi_floor must be finite and > 0, got {}",
                self.phi_cmi_floor
            ));
        }
        if !(self.smooth_min_temperature.is_finite() && self.smooth_min_temperature > 0.0) {
            return cfg_err(format!(
                "method arm: smooth_min_temperature must be finite and > 0, got {}",
                self.smooth_min_temperature
            ));
        }
        if !(self.fw_epsilon.is_finite() && self.fw_epsilon >= 0.0) {
            return cfg_err(format!(
                "method arm: fw_epsilon must be finite and >= 0, got {}",
                self.fw_epsilon
            ));
        }
        Ok(())
    }

    fn miv(&self) -> MivConfig {
        MivConfig {
            smooth_min_temperature: self.smooth_min_temperature,
            fw_epsilon: self.fw_epsilon,
        }
    }

    /// Extra copies `s(X) = F_s(φ^CMI(X))` of one sample (eq 18) with `m` modalities; the sample
    /// is trained `1 + s` times in the epoch. Non-increasing in `phi_cmi_joint`; a non-finite
    /// value gives 0.
    pub fn extra_copies(&self, phi_cmi_joint: f64, m: usize) -> u32 {
        if !phi_cmi_joint.is_finite() {
            return 0;
        }
        match self.sampling {
            Sampling::Slope => {
                let s = (self.slope_k * phi_cmi_joint - self.slope_k * m as f64).round();
                s.clamp(0.0, u32::MAX as f64) as u32
            }
            Sampling::Step => {
                if phi_cmi_joint < 0.5 {
                    3
                } else if phi_cmi_joint < 0.9 {
                    2
                } else {
                    1
                }
            }
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

/// One recorded training sample: label and unweighted encoder features (one row per modality).
#[derive(Clone, Debug)]
struct Recorded {
    label: u32,
    features: Vec<Vec<f32>>,
}

/// The ARM method (see the module docs).
#[derive(Debug)]
pub struct Arm {
    cfg: ArmConfig,
    state: ArmState,
    record: BTreeMap<usize, Recorded>,
}

impl Arm {
    /// Errors: invalid config (named key).
    pub fn new(cfg: ArmConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            state: ArmState::default(),
            record: BTreeMap::new(),
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

    /// Set each sample's extra copies from its joint contribution `φ^CMI(X)` (eq 18); samples
    /// not listed get 0. Errors: length mismatch.
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
        for (&id, &phi) in sample_ids.iter().zip(phi_cmi_joint) {
            extra[id] = self.cfg.extra_copies(phi, num_modalities);
        }
        self.state.extra_copies = extra;
        Ok(())
    }

    fn active(&self, epoch: usize) -> bool {
        epoch >= self.cfg.warm_up_epochs
    }

    /// The FW to apply, if DFE is on and weights are set.
    fn applied_fw(&self) -> Option<&ArmFusionWeights> {
        if self.cfg.dfe {
            self.state.fw.as_ref()
        } else {
            None
        }
    }

    fn record_batch(
        &mut self,
        batch: &Batch,
        out: &MultimodalOutput,
        labels: &[u32],
    ) -> Result<()> {
        let feats = out
            .features
            .iter()
            .map(|f| {
                f.detach()
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?
                    .to_vec2::<f32>()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        for (row, &id) in batch.sample_ids.iter().enumerate() {
            self.record.insert(
                id,
                Recorded {
                    label: labels[row],
                    features: feats.iter().map(|f| f[row].clone()).collect(),
                },
            );
        }
        Ok(())
    }

    /// MIV over the recorded training set (unweighted head, no grad): per-sample `φ^CMI(X)` →
    /// extra copies, training-set means → next epoch's FW. Logged under `miv_train.*`.
    fn value_training_set(
        &mut self,
        model: &dyn MultimodalModel,
        ctx: &mut RunContext,
    ) -> Result<()> {
        let record = std::mem::take(&mut self.record);
        if record.is_empty() {
            return Ok(());
        }
        let names = model.modalities().to_vec();
        let m = names.len();
        let ids: Vec<usize> = record.keys().copied().collect();
        let labels: Vec<u32> = record.values().map(|r| r.label).collect();
        // CPU tensors; `ArmMiv::from_model` moves them to the model's device.
        let dev = Device::Cpu;
        let mut feats = Vec::with_capacity(m);
        for i in 0..m {
            let d = record
                .values()
                .next()
                .map(|r| r.features[i].len())
                .unwrap_or(0);
            let flat: Vec<f32> = record
                .values()
                .flat_map(|r| r.features[i].iter().copied())
                .collect();
            feats.push(Tensor::from_vec(flat, (ids.len(), d), &dev)?);
        }
        let miv = ArmMiv::from_model(model, &feats, &labels, self.cfg.miv())?;
        let report = miv.report()?;
        let per = miv.per_sample()?;
        self.set_sample_contributions(&ids, &per.phi_cmi_joint, m)?;
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

/// Histogram of extra copies: `{"0": n0, "1": n1, …}` (keys in numeric order of appearance).
fn histogram(extra: impl Iterator<Item = u32>) -> serde_json::Value {
    let mut h: BTreeMap<u32, usize> = BTreeMap::new();
    for e in extra {
        *h.entry(e).or_insert(0) += 1;
    }
    serde_json::Value::Object(
        h.into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect(),
    )
}

impl Method for Arm {
    fn name(&self) -> &str {
        "arm"
    }

    /// DSR (eq 18): every index `1 + s_n` times after warm-up, `None` otherwise.
    fn epoch_indices(
        &mut self,
        train_len: usize,
        ctx: &mut RunContext,
    ) -> Result<Option<Vec<usize>>> {
        if !self.cfg.dsr {
            return Ok(None);
        }
        let active = self.active(ctx.epoch) && !self.state.extra_copies.is_empty();
        ctx.log.set("resample.active", active);
        if !active {
            return Ok(None);
        }
        let extra = |i: usize| self.state.extra_copies.get(i).copied().unwrap_or(0);
        let mut order = Vec::with_capacity(train_len);
        for i in 0..train_len {
            for _ in 0..=extra(i) {
                order.push(i);
            }
        }
        ctx.log
            .set("resample.hist", histogram((0..train_len).map(extra)));
        ctx.log.set("resample.epoch_len", order.len());
        Ok(Some(order))
    }

    /// Promotes the FW valued at the end of the previous epoch (eq 13: "will take effect in the
    /// next epoch"), once warm-up is over.
    fn on_epoch_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        if self.cfg.dfe && self.active(ctx.epoch) {
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
        let m = model.modalities().len();
        if batch.inputs.len() != m {
            return Err(ModbalError::Data(format!(
                "arm: model has {m} modalities ({:?}) but the batch has {} inputs",
                model.modalities(),
                batch.inputs.len()
            )));
        }
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
        self.record_batch(batch, out, &labels)?;
        let miv = ArmMiv::new(
            &out.fused_logits,
            &out.per_modality_logits,
            &labels,
            self.cfg.miv(),
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
        // eq 15: L_φCMI = mean_n Σ_i |φ^CMI_n(x^i) − φ^CMI_n(X)| / max(φ^CMI_n(X), floor).
        let floor = self.cfg.phi_cmi_floor;
        let joint = &miv.phi_cmi_joint; // [N]
        let num = miv
            .phi_cmi
            .broadcast_sub(&joint.unsqueeze(1)?)?
            .abs()?
            .sum(1)?;
        let den = joint.affine(1.0, -floor)?.relu()?.affine(1.0, floor)?;
        let l_cmi = num.div(&den)?.mean_all()?;

        let use_bmml = self.cfg.bmml && (self.active(ctx.epoch) || self.cfg.bmml_during_warm_up);
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
                "resample.next_hist",
                histogram(self.state.extra_copies.iter().copied()),
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
pub fn build(options: &toml::Table) -> Result<Built> {
    let (cfg, resolved): (ArmConfig, _) = parse_options("arm", options)?;
    Ok(Built {
        method: Box::new(Arm::new(cfg)?),
        fusion: FusionConfig::Concat,
        resolved,
        modalities: None,
    })
}
