//! `ibml`: Information-Balanced Multimodal Learning (Yang et al., TPAMI; official code
//! QinYang79/IBML). See `docs/methods/ibml.md`.
//!
//! # Maths
//! Every training step records each sample's per-modality softmax prediction (the head-slice
//! logits `g^m(x^m)`, `[B, C]`) keyed by `Batch::sample_ids` ([`IbmlRecorder`]); the records
//! roll over at the end of each epoch. For a batch of K samples, with the predictions recorded
//! at the previous epoch (one-hot of the label in epoch 0):
//!
//! ```text
//! ρ̃^m = Σ_k σ(g̃^m(x_k^m))_{y_k}                               (eq 13, recorded)
//! ā_m = M ρ̃^m / Σ_j ρ̃^j                                       (mean 1)
//! 𝕀_m = [ā_m < 1],  Î = max(1 − Σ_m 𝕀_m, 0)
//! L_mib = Î·CE(z) + Σ_m 𝕀_m·(CE(z) + CE(g^m(x^m)))            (BIO, eq 12)
//! x̂_k^m = x_k^m + ε^m  if ā_m > 1, y_k = argmax σ(g̃^m(x_k^m)), p_k^m < p^m,
//!          p_k^m ~ U[0,1),  p^m = min(ā_m, λ)/λ,  ε^m ~ N(0, var(x^m_batch))   (TCM, eq 15-16)
//! ```
//!
//! BIO and TCM act inside the [`ModulationWindow`] (default `[1, 90)`, the official
//! `0 < epoch < 90` of 100 epochs); outside it the loss is `CE(z)` and the inputs are untouched
//! (the predictions are still recorded). The official warm-up schedule multiplies the loop's
//! learning rate (see [`IbmlWarmup`]).
//!
//! # Schedule
//! The window and the warm-up thresholds are epochs of the official 100-epoch schedule
//! (`schedule_epochs = 100`) and are scaled to the run's `train.epochs` with
//! [`modbal_core::scale_epoch`]: on 12 epochs the window is `[1, 11)`, the ramp ends after epoch
//! 4 and the decay starts at epoch 9. `schedule_epochs = 0` takes every epoch literally.
//!
//! # Hooks
//! * `epoch_lr`: the run's scheduled rate × the warm-up factor (the default `train_step`);
//! * `modulate_inputs`: TCM via `modbal_modulate::Tcm` (randomness from `ctx.rng`);
//! * `loss`: records the predictions, then BIO (eq 12);
//! * `on_epoch_end`: rolls the recorder, writes the epoch's log;
//! * `state` / `load_state`: the recorder (resumable runs keep the previous epoch's records).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `lr` (effective), `warmup_factor`, `window.start` / `window.end` (the scaled window),
//! `rho.<m>` (mean ρ̃ per batch), `abar.<m>`, `bio.<m>` (fraction of steps where modality m's
//! unimodal CE was added), `noise_batches.<m>` (fraction
//! of steps where m was over-optimised and TCM active), `noise_prob.<m>` (mean p^m),
//! `perturbed.<m>` (samples perturbed in the epoch), `pair_ratio` (mean ρ̃^0/ρ̃^1, M = 2),
//! `active` (fraction of steps inside the window), `loss.fused`, `loss.<m>`.

use crate::params::MethodParams;
use candle_core::DType;
use modbal_contrib::ibml::{IbmlConfig as IndicatorConfig, IbmlRecorder, IbmlReport};
use modbal_core::{
    scale_epoch, Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext,
};
use modbal_modulate::{ModulationWindow, Tcm, TcmConfig, TcmNoise};
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The warm-up learning-rate schedule. The paper (§4.2) only says "in the early stages of
/// training, we employ a warmup strategy with a larger learning rate"; the numbers are the
/// official `main_AV.py` (also `main_VL.py`), which multiplies its base rate
/// (`--learning_rate 0.001`, `train_AV_IBML.sh`) and sets the rate at the END of epoch `p` for
/// epoch `p + 1` of 100:
///
/// ```text
/// lr(0) = lr
/// lr(e) = f(e − 1) for e ≥ 1,   f(p) = min(lr·(p/2 + 1), 10·lr)   if p < 35
///                                     = lr                          if p < 70
///                                     = 0.1·lr                      otherwise
/// ```
///
/// so the official run warms up from 1e-3 to a peak of 1e-2 (epochs 19-35), trains at 1e-3 until
/// epoch 70 and at 1e-4 after (its StepLR is not stepped while the warm-up is on).
///
/// In modbal `lr` is the rate the training loop sets for the epoch (`train.optimizer.lr` under
/// the `train.schedule`; keep the default constant schedule, which the official warm-up
/// replaces). The thresholds `ramp_end` and `decay_start` are epochs of the schedule of
/// `schedule_epochs` epochs ([`IbmlMethodConfig::schedule_epochs`], default 100) and are scaled
/// to a run of `N` epochs with [`modbal_core::scale_epoch`] (`R = round(35·N/100)`,
/// `D = round(70·N/100)`); the ramp is evaluated on the schedule's time-line, `t = e·S/N`
/// (`t = e` when `S = 0`, i.e. literal epochs):
///
/// ```text
/// factor(0) = 1
/// factor(e) = min(1 + slope·max(t − 1, 0), max_factor)   if e − 1 < R
///           = 1                                         if e − 1 < D
///           = decay                                     otherwise
/// ```
///
/// With `N = S` this is the official schedule exactly. A 12-epoch run (`R = 4`, `D = 8`) gets
/// the factors 1, 4.67, 8.83, 10, 10, 1, 1, 1, 1, 0.1, 0.1, 0.1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbmlWarmup {
    /// Growth of the factor per schedule epoch during the ramp. Default 0.5 (official
    /// `epoch / 2`).
    pub slope: f64,
    /// Ceiling of the factor. Default 10 (official `args.learning_rate * 10`).
    pub max_factor: f64,
    /// End (exclusive) of the ramp, in schedule epochs, compared with `e − 1`. Default 35
    /// (official `epoch < 35`).
    pub ramp_end: usize,
    /// Start of the decayed rate, in schedule epochs, compared with `e − 1`. Default 70
    /// (official `lr_decay_step`).
    pub decay_start: usize,
    /// Factor after `decay_start`. Default 0.1 (official `lr_decay_ratio`).
    pub decay: f64,
}

impl Default for IbmlWarmup {
    fn default() -> Self {
        Self {
            slope: 0.5,
            max_factor: 10.0,
            ramp_end: 35,
            decay_start: 70,
            decay: 0.1,
        }
    }
}

impl IbmlWarmup {
    fn validate(&self) -> Result<()> {
        if !(self.slope.is_finite() && self.slope >= 0.0) {
            return Err(ModbalError::Config(format!(
                "method ibml: warmup_schedule.slope must be finite and >= 0, got {}",
                self.slope
            )));
        }
        for (k, v) in [("max_factor", self.max_factor), ("decay", self.decay)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ModbalError::Config(format!(
                    "method ibml: warmup_schedule.{k} must be finite and > 0, got {v}"
                )));
            }
        }
        if self.ramp_end > self.decay_start {
            return Err(ModbalError::Config(format!(
                "method ibml: warmup_schedule.ramp_end ({}) must not be after decay_start ({})",
                self.ramp_end, self.decay_start
            )));
        }
        Ok(())
    }

    /// The factor multiplying the loop's learning rate at 0-based `epoch` of a run of
    /// `run_epochs` epochs, with the thresholds given on a schedule of `schedule_epochs` epochs
    /// (0 = literal; see the [type docs](Self)).
    pub fn factor(&self, epoch: usize, schedule_epochs: usize, run_epochs: usize) -> f64 {
        if epoch == 0 {
            return 1.0;
        }
        let ramp_end = scale_epoch(self.ramp_end, schedule_epochs, run_epochs);
        let decay_start = scale_epoch(self.decay_start, schedule_epochs, run_epochs);
        // The rate of epoch e is set at the end of epoch e − 1 (official).
        let p = epoch - 1;
        if p < ramp_end {
            let t = if schedule_epochs == 0 || run_epochs == 0 {
                epoch as f64
            } else {
                epoch as f64 * schedule_epochs as f64 / run_epochs as f64
            };
            (1.0 + self.slope * (t - 1.0).max(0.0)).min(self.max_factor)
        } else if p < decay_start {
            1.0
        } else {
            self.decay
        }
    }
}

/// Options of `ibml` (`[method]` section). `bio`, `tcm` and `warmup` are the switches of the
/// paper's ablation (Table 5).
///
/// ```toml
/// [method]
/// name = "ibml"
/// lambda = 10.0
/// window = { start = 1, end = 90 }   # epochs of the official 100-epoch schedule
/// schedule_epochs = 100              # 0 = window and warm-up epochs taken literally
/// bio = true
/// tcm = true
/// warmup = true
/// noise = "shared_draw"
/// [method.warmup_schedule]
/// ramp_end = 35
/// decay_start = 70
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbmlMethodConfig {
    /// λ of eq 16, ≥ 1. Default 10 (paper §4.2, official `e = 10`).
    pub lambda: f64,
    /// 0-based epochs `[start, end)` with BIO and TCM, in schedule epochs. Default `[1, 90)`:
    /// the official `modulation_starts < epoch < modulation_ends` with 0 and 90
    /// (`train_AV_IBML.sh`). Scaled to the run like the warm-up; a start ≥ 1 stays ≥ 1 (epoch 0
    /// has no recorded predictions).
    pub window: ModulationWindow,
    /// Length of the schedule that `window` and `warmup_schedule` refer to. Default 100 (the
    /// official `--epochs 100`); 0 = their epochs are run epochs, unscaled.
    pub schedule_epochs: usize,
    /// Balance Information Optimization (eq 12). Default `true`.
    pub bio: bool,
    /// Task Complexity Modulation (eq 16). Default `true` (official `--add_noise 1`).
    pub tcm: bool,
    /// The warm-up learning-rate schedule. Default `true` (official `--warmup 1`).
    pub warmup: bool,
    /// TCM noise: one draw shared by the selected samples (default; eq 15-16's ε^m has no sample
    /// index, official code) or one draw per sample.
    pub noise: TcmNoise,
    /// Parameters of the warm-up schedule.
    pub warmup_schedule: IbmlWarmup,
}

impl Default for IbmlMethodConfig {
    fn default() -> Self {
        // λ, the noise draw and the window (in epochs of the 100-epoch schedule) are TCM's.
        let tcm = TcmConfig::default();
        Self {
            lambda: tcm.lambda,
            window: tcm.window,
            schedule_epochs: 100,
            bio: true,
            tcm: true,
            warmup: true,
            noise: tcm.noise,
            warmup_schedule: IbmlWarmup::default(),
        }
    }
}

impl IbmlMethodConfig {
    /// The TCM configuration, with the window of a run of `run_epochs` epochs.
    fn tcm_config(&self, run_epochs: usize) -> TcmConfig {
        TcmConfig {
            lambda: self.lambda,
            noise: self.noise,
            window: self.run_window(run_epochs),
        }
    }

    /// The BIO/TCM window of a run of `run_epochs` epochs: `window` scaled with
    /// [`ModulationWindow::scaled`]; a configured start ≥ 1 stays ≥ 1 (the official
    /// `0 < epoch`: epoch 0 has no previous-epoch records), and the end is not before the start.
    pub fn run_window(&self, run_epochs: usize) -> ModulationWindow {
        let w = self.window.scaled(self.schedule_epochs, run_epochs);
        let start = if self.window.start >= 1 {
            w.start.max(1)
        } else {
            w.start
        };
        ModulationWindow {
            start,
            end: w.end.max(start),
        }
    }
}

/// Running sums for the per-epoch log.
#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    active: usize,
    rho: Vec<f64>,
    abar: Vec<f64>,
    bio: Vec<f64>,
    noise_batches: Vec<f64>,
    noise_prob: Vec<f64>,
    perturbed: Vec<usize>,
    pair_ratio: f64,
    pair_steps: usize,
}

impl EpochSums {
    fn new(m: usize) -> Self {
        Self {
            rho: vec![0.0; m],
            abar: vec![0.0; m],
            bio: vec![0.0; m],
            noise_batches: vec![0.0; m],
            noise_prob: vec![0.0; m],
            perturbed: vec![0; m],
            ..Default::default()
        }
    }
}

/// Checkpoint state of [`Ibml`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct IbmlState {
    recorder: IbmlRecorder,
}

/// The IBML method; see the [module docs](self).
#[derive(Debug)]
pub struct Ibml {
    config: IbmlMethodConfig,
    indicators: IndicatorConfig,
    /// TCM with the window of a run of `.0` epochs.
    tcm: (usize, Tcm),
    recorder: Option<IbmlRecorder>,
    modalities: Vec<String>,
    sums: EpochSums,
}

impl Ibml {
    /// A method with a validated configuration.
    pub fn new(config: IbmlMethodConfig) -> Result<Self> {
        // Validates λ and the unscaled window; rebuilt for the run's length at the first step.
        let tcm = (0, Tcm::new(config.tcm_config(0))?);
        config.window.validate()?;
        let indicators = IndicatorConfig {
            lambda: config.lambda,
        };
        indicators.validate()?;
        config.warmup_schedule.validate()?;
        Ok(Self {
            config,
            indicators,
            tcm,
            recorder: None,
            modalities: Vec::new(),
            sums: EpochSums::default(),
        })
    }

    pub fn config(&self) -> &IbmlMethodConfig {
        &self.config
    }

    /// The recorder of per-sample predictions (`None` before the first step).
    pub fn recorder(&self) -> Option<&IbmlRecorder> {
        self.recorder.as_ref()
    }

    /// The warm-up factor at `epoch` of a run of `num_epochs` epochs (1 when `warmup = false`).
    pub fn lr_factor(&self, epoch: usize, num_epochs: usize) -> f64 {
        if self.config.warmup {
            self.config
                .warmup_schedule
                .factor(epoch, self.config.schedule_epochs, num_epochs)
        } else {
            1.0
        }
    }

    /// Rebuild the TCM modulator with the window of a run of `run_epochs` epochs if needed.
    fn ensure_tcm(&mut self, run_epochs: usize) -> Result<()> {
        if self.tcm.0 != run_epochs {
            self.tcm = (run_epochs, Tcm::new(self.config.tcm_config(run_epochs))?);
        }
        Ok(())
    }

    fn ensure(&mut self, model: &dyn MultimodalModel) -> Result<()> {
        let m = model.modalities().len();
        if self.modalities.is_empty() {
            self.modalities = model.modalities().to_vec();
        }
        match &self.recorder {
            Some(r) if r.num_modalities() != m => {
                return Err(ModbalError::Data(format!(
                    "ibml: recorder has {} modalities, the model {m}",
                    r.num_modalities()
                )))
            }
            Some(_) => {}
            None => self.recorder = Some(IbmlRecorder::new(m)?),
        }
        if self.sums.rho.len() != m {
            self.sums = EpochSums::new(m);
        }
        Ok(())
    }

    fn recorder_ref(&self) -> &IbmlRecorder {
        self.recorder
            .as_ref()
            .expect("recorder created by ensure()")
    }

    /// ρ̃, ā and the indicators of a batch from the previous epoch's records.
    pub fn balance(&self, sample_ids: &[usize]) -> Result<IbmlReport> {
        match &self.recorder {
            Some(r) => Ok(r.balance(sample_ids, &self.indicators)?),
            None => Err(ModbalError::Data(
                "ibml: no recorder yet (no step has run)".into(),
            )),
        }
    }
}

impl Method for Ibml {
    fn name(&self) -> &str {
        "ibml"
    }

    fn modulate_inputs(&mut self, batch: &mut Batch, ctx: &mut RunContext) -> Result<()> {
        // The recorder needs M: the batch has one input per modality.
        if self.recorder.is_none() {
            self.recorder = Some(IbmlRecorder::new(batch.inputs.len())?);
        }
        if self.sums.rho.len() != batch.inputs.len() {
            self.sums = EpochSums::new(batch.inputs.len());
        }
        let window = self.config.run_window(ctx.num_epochs);
        if !self.config.tcm || !window.contains(ctx.epoch) || batch.is_empty() {
            return Ok(());
        }
        self.ensure_tcm(ctx.num_epochs)?;
        let rec = self.recorder_ref();
        let m = rec.num_modalities();
        let rho_tilde = rec.strengths(&batch.sample_ids);
        let correct = (0..m)
            .map(|k| {
                batch
                    .sample_ids
                    .iter()
                    .map(|&id| rec.previous_correct(k, id))
                    .collect::<std::result::Result<Vec<bool>, _>>()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let report = self
            .tcm
            .1
            .apply(batch, &rho_tilde, &correct, ctx.epoch, &mut ctx.rng)?;
        for k in 0..m {
            if report.probabilities[k] > 0.0 {
                self.sums.noise_batches[k] += 1.0;
            }
            self.sums.noise_prob[k] += report.probabilities[k];
            self.sums.perturbed[k] += report.perturbed[k].len();
        }
        Ok(())
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        self.ensure(model)?;
        let labels: Vec<u32> = batch.labels.to_dtype(DType::U32)?.to_vec1()?;
        // Indicators from the PREVIOUS epoch's records, before this batch is recorded.
        let report = self.balance(&batch.sample_ids)?;
        self.recorder.as_mut().expect("ensured").record(
            &batch.sample_ids,
            &labels,
            &out.per_modality_logits,
        )?;
        let fused = cross_entropy(&out.fused_logits, &batch.labels)?;
        let unimodal = out
            .per_modality_logits
            .iter()
            .map(|z| cross_entropy(z, &batch.labels))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let active = self.config.run_window(ctx.num_epochs).contains(ctx.epoch);
        let s = &mut self.sums;
        s.steps += 1;
        s.active += usize::from(active);
        for k in 0..report.strengths.len() {
            s.rho[k] += report.strengths[k];
            s.abar[k] += report.normalized[k];
        }
        if let Some(r) = report.pair_ratio {
            s.pair_ratio += r;
            s.pair_steps += 1;
        }
        let total = if self.config.bio && active && report.under_optimized.iter().any(|&u| u) {
            // eq 12: Î·CE(z) + Σ_m 𝕀_m (CE(z) + CE_m).
            let mut total = (&fused * report.fused_weight)?;
            for (k, &under) in report.under_optimized.iter().enumerate() {
                if under {
                    total = ((total + &fused)? + &unimodal[k])?;
                    s.bio[k] += 1.0;
                }
            }
            total
        } else {
            fused.clone()
        };
        let mut parts = BTreeMap::new();
        parts.insert("fused".to_string(), fused.detach());
        for (name, l) in self.modalities.iter().zip(&unimodal) {
            parts.insert(name.clone(), l.detach());
        }
        Ok(LossTerms { total, parts })
    }

    fn epoch_lr(&mut self, scheduled: f64, ctx: &mut RunContext) -> Result<f64> {
        // The warm-up multiplies the rate the run's schedule gives this epoch.
        let factor = self.lr_factor(ctx.epoch, ctx.num_epochs);
        ctx.log.set("lr", scheduled * factor);
        ctx.log.set("warmup_factor", factor);
        Ok(scheduled * factor)
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        if self.modalities.is_empty() {
            self.modalities = model.modalities().to_vec();
        }
        if let Some(r) = self.recorder.as_mut() {
            r.end_epoch();
        }
        let m = self.modalities.len();
        let s = std::mem::replace(&mut self.sums, EpochSums::new(m));
        // Steps are counted in `loss`; `max(1)` keeps a log of a lone `modulate_inputs` call.
        let n = s.steps.max(1) as f64;
        let per_mod = |v: &[f64], div: f64| -> serde_json::Value {
            self.modalities
                .iter()
                .zip(v)
                .map(|(name, x)| (name.clone(), serde_json::json!(x / div)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        ctx.log.set("rho", per_mod(&s.rho, n));
        ctx.log.set("abar", per_mod(&s.abar, n));
        ctx.log.set("bio", per_mod(&s.bio, n));
        ctx.log.set("noise_batches", per_mod(&s.noise_batches, n));
        ctx.log.set("noise_prob", per_mod(&s.noise_prob, n));
        let perturbed: Vec<f64> = s.perturbed.iter().map(|&c| c as f64).collect();
        ctx.log.set("perturbed", per_mod(&perturbed, 1.0));
        if s.pair_steps > 0 {
            ctx.log
                .set("pair_ratio", s.pair_ratio / s.pair_steps as f64);
        }
        ctx.log.set("active", s.active as f64 / n);
        let w = self.config.run_window(ctx.num_epochs);
        ctx.log.set("window.start", w.start as f64);
        ctx.log.set("window.end", w.end as f64);
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        match &self.recorder {
            Some(r) => serde_json::to_value(IbmlState {
                recorder: r.clone(),
            })
            .unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        }
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() {
            self.recorder = None;
            return Ok(());
        }
        let st: IbmlState = serde_json::from_value(state.clone())?;
        self.recorder = Some(st.recorder);
        Ok(())
    }
}

/// Registry entry: `[method] name = "ibml"` with [`IbmlMethodConfig`]'s keys.
impl MethodParams for IbmlMethodConfig {
    /// Heads: `{ADDITIVE_FUSIONS}` (`docs/fusion.md`): its unimodal predictions g^m read the per-modality logits as an additive decomposition of the fused logits (weight slices or branches).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ADDITIVE_FUSIONS,
            "its unimodal predictions g^m read the per-modality logits as an additive decomposition of the fused logits (weight slices or branches)",
        )
    }
    fn check(&self) -> Result<()> {
        // What Ibml::new checks: λ, the unscaled window, the TCM and the warm-up schedule.
        self.tcm_config(0).validate()?;
        self.window.validate()?;
        IndicatorConfig {
            lambda: self.lambda,
        }
        .validate()?;
        self.warmup_schedule.validate()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Ibml::new(self.clone())?))
    }
}
