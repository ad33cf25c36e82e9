//! `ogm-ge`: on-the-fly gradient modulation with generalisation enhancement (Peng et al.,
//! "Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022). See
//! `docs/methods/ogm-ge.md`.
//!
//! # Maths
//! The loss is the cross-entropy of the fused logits only (the per-modality CEs are computed
//! and logged under `method.loss.<modality>`, never backpropagated, as the official code). After
//! the backward pass, with the batch's per-modality logits `z_m` (the concat head's weight
//! slices `W[:, slice_m]·f_m + b/M`, `[B, C]`):
//!
//! ```text
//! s_m = Σ_{i∈batch} softmax(z_m,i)[y_i]                      (score, OGM-GE eq 9)
//! ρ_m = s_m / min_k s_k                                      (ratio; BalanceMM's M ≥ 2 form)
//! k_m = 1 − tanh(α · ρ_m) if ρ_m > 1, else 1                 (coefficient, eq 10, form = "paper")
//! g ← k_m · g + ε,  ε ~ N(0, (std(g) + 1e-8)²) per element   (modulation + GE noise)
//! ```
//!
//! for every gradient tensor `g` in scope (see [`OgmGeScope`]) of `encoder.<m>`, inside the
//! [`ModulationWindow`] (0-based epochs). `form = "continuous"` uses `1 − tanh(α·relu(ρ_m − 1))`
//! instead (not in the paper or the official code; continuous at ρ = 1). The maths itself is
//! `modbal_modulate::OgmGe`; this module only wires it to the hooks: `loss` (fused CE),
//! `modulate_grads` (scores from the batch, parameter scope, `ctx.rng` for the GE noise).
//!
//! # Schedule
//! `window` is given in epochs of a schedule of `schedule_epochs` epochs (default: the official
//! `0 <= epoch <= 50` of 100) and scaled to the run's `train.epochs` `N` with
//! [`ModulationWindow::scaled`]: `[round(start·N/100), round(end·N/100))`. A 12-epoch run
//! modulates epochs 0-5 (`[0, 6)`); `schedule_epochs = 0` takes the window literally.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `s.<m>` (mean score per batch), `rho.<m>`, `k.<m>` (the coefficient applied: 1 outside the
//! window), `tensors.<m>` (gradient tensors modulated per step), `active` (fraction of steps
//! inside the window), `window.start` / `window.end` (the scaled window of the run),
//! `loss.fused` and `loss.<m>` (unimodal CE, logged only).

use crate::params::MethodParams;
use candle_core::{backprop::GradStore, Var};
use modbal_core::stats::{BatchStats, ModalityStats};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_modulate::{ModulationWindow, OgmForm, OgmGe, OgmGeConfig, OgmScope};
use serde::{Deserialize, Serialize};

/// Which gradient tensors of each encoder OGM-GE modulates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OgmGeScope {
    /// Per encoder: its 4-D conv kernels if it has any (exactly the official
    /// `len(grad.size()) == 4` rule on ResNet18 / conv encoders), otherwise its weight matrices
    /// (tensors of rank ≥ 2: the linear layers of an MLP encoder, which play the conv kernels'
    /// role there; biases excluded as BatchNorm/biases are in the official code).
    #[default]
    Auto,
    /// Only 4-D conv kernels (official). Modulates nothing on an encoder without convolutions
    /// (e.g. synth-vec's MLPs): OGM-GE then reduces to plain concat training there.
    ConvKernels,
    /// Every trainable tensor of the encoder (weights, biases, BatchNorm affine parameters).
    AllEncoder,
}

/// Options of `ogm-ge` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "ogm-ge"
/// alpha = 0.8              # CREMA-D value (official README); 0.1 for VGGSound
/// form = "paper"           # eq 10 ("official" is an alias); or "continuous"
/// scope = "auto"           # "conv_kernels" | "all_encoder"
/// ge = true
/// window = { start = 0, end = 51 }   # epochs of the official 100-epoch schedule
/// schedule_epochs = 100              # 0 = take the window literally
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OgmGeMethodConfig {
    /// α of `k = 1 − tanh(α·…)`, ≥ 0. Default 0.8 (official README, CREMA-D).
    pub alpha: f64,
    /// Coefficient formula: `paper` (default; eq 10, `1 − tanh(α·ρ)` if ρ > 1, else 1, which
    /// the official code implements; `official` is accepted as an alias) or `continuous`
    /// (`1 − tanh(α·relu(ρ−1))`; not in the paper or the official code, continuous at ρ = 1).
    pub form: OgmForm,
    /// Which gradient tensors are modulated. Default [`OgmGeScope::Auto`].
    pub scope: OgmGeScope,
    /// Add the GE noise. Default `true` (`false` = plain OGM).
    pub ge: bool,
    /// 0-based epochs `[start, end)` with modulation, in epochs of a `schedule_epochs`-epoch
    /// schedule. Default `[0, 51)`: the official `0 <= epoch <= 50` (of 100 epochs).
    pub window: ModulationWindow,
    /// Length of the schedule `window` refers to; the window is scaled to the run's length
    /// (`modbal_core::scale_epoch` on both ends). Default 100 (the official `main.py`
    /// `--epochs 100`); 0 = use `window` as run epochs, unscaled.
    pub schedule_epochs: usize,
}

impl Default for OgmGeMethodConfig {
    fn default() -> Self {
        let m = OgmGeConfig::default();
        Self {
            alpha: m.alpha,
            form: m.form,
            scope: OgmGeScope::Auto,
            ge: m.ge,
            window: m.window,
            schedule_epochs: 100,
        }
    }
}

impl OgmGeMethodConfig {
    /// The modulation window of a run of `run_epochs` epochs (see [`Self::schedule_epochs`]).
    pub fn run_window(&self, run_epochs: usize) -> ModulationWindow {
        self.window.scaled(self.schedule_epochs, run_epochs)
    }

    /// The modulator's configuration. The scope is resolved by the method itself (it hands the
    /// modulator the tensors already selected), so the modulator sees `AllEncoder`.
    fn modulator_config(&self) -> OgmGeConfig {
        OgmGeConfig {
            alpha: self.alpha,
            form: self.form,
            scope: OgmScope::AllEncoder,
            ge: self.ge,
            window: self.window,
        }
    }
}

/// Running sums for the per-epoch log.
#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    active: usize,
    /// The per-step scores `s_m` (logged: their mean over the steps).
    scores: ModalityStats,
    rho: Vec<f64>,
    k: Vec<f64>,
    tensors: Vec<f64>,
}

/// The OGM-GE method; see the [module docs](self).
#[derive(Debug)]
pub struct OgmGeMethod {
    config: OgmGeMethodConfig,
    modulator: OgmGe,
    sums: EpochSums,
    modalities: Vec<String>,
    /// The scaled window of the run (set at the first step), for the log.
    window: Option<ModulationWindow>,
    /// Prefix of every key this method logs (`""`; `opm-ge` embeds OGM-GE under `"ogm."`).
    log_prefix: String,
}

impl OgmGeMethod {
    /// A method with a validated configuration.
    pub fn new(config: OgmGeMethodConfig) -> Result<Self> {
        let modulator = OgmGe::new(config.modulator_config())?;
        Ok(Self {
            config,
            modulator,
            sums: EpochSums::default(),
            modalities: Vec::new(),
            window: None,
            log_prefix: String::new(),
        })
    }

    /// The same method logging every key under `prefix` (e.g. `"ogm."`), for methods that embed
    /// OGM-GE beside their own logged values (`opm-ge`).
    pub fn with_log_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.log_prefix = prefix.into();
        self
    }

    pub fn config(&self) -> &OgmGeMethodConfig {
        &self.config
    }

    /// The trainable tensors of each encoder that the scope selects, as `(name, var)` pairs, and
    /// the encoder groups (`encoder.<m>`) in modality order.
    pub fn scoped_params(&self, model: &dyn MultimodalModel) -> (Vec<(String, Var)>, Vec<String>) {
        let all = model.params().trainable();
        let groups: Vec<String> = (0..model.modalities().len())
            .map(|m| model.encoder_prefix(m))
            .collect();
        let mut selected = Vec::new();
        for g in &groups {
            let members = modbal_modulate::group_vars(&all, g);
            let has_conv = members.iter().any(|(_, v)| v.rank() == 4);
            for (n, v) in members {
                let keep = match self.config.scope {
                    OgmGeScope::AllEncoder => true,
                    OgmGeScope::ConvKernels => v.rank() == 4,
                    OgmGeScope::Auto if has_conv => v.rank() == 4,
                    OgmGeScope::Auto => v.rank() >= 2,
                };
                if keep {
                    selected.push((n.clone(), v.clone()));
                }
            }
        }
        (selected, groups)
    }

    fn ensure_modalities(&mut self, model: &dyn MultimodalModel) {
        if self.modalities.is_empty() {
            self.modalities = model.modalities().to_vec();
        }
        let m = self.modalities.len();
        if self.sums.rho.len() != m {
            self.sums = EpochSums {
                scores: ModalityStats::new(m),
                rho: vec![0.0; m],
                k: vec![0.0; m],
                tensors: vec![0.0; m],
                ..Default::default()
            };
        }
    }
}

impl Method for OgmGeMethod {
    fn name(&self) -> &str {
        "ogm-ge"
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        crate::util::fused_ce_logging_unimodal(model, batch, out)
    }

    fn modulate_grads(
        &mut self,
        grads: &mut GradStore,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<()> {
        self.ensure_modalities(model);
        if out.per_modality_logits.len() != self.modalities.len() {
            return Err(ModbalError::Data(format!(
                "ogm-ge: the model gave {} per-modality logits for {} modalities",
                out.per_modality_logits.len(),
                self.modalities.len()
            )));
        }
        // s_m = Σ_i softmax(z_m,i)[y_i] per modality (OGM-GE eq 9).
        let batch_stats = BatchStats::from_logits(&out.per_modality_logits, &batch.labels)?;
        let scores = &batch_stats.scores;
        let (params, groups) = self.scoped_params(model);
        let window = self.config.run_window(ctx.num_epochs);
        self.modulator.set_window(window)?;
        self.window = Some(window);
        let report =
            self.modulator
                .apply(grads, &params, &groups, scores, ctx.epoch, &mut ctx.rng)?;
        let s = &mut self.sums;
        s.steps += 1;
        s.active += usize::from(report.active);
        s.scores.add(&batch_stats);
        for m in 0..scores.len() {
            s.rho[m] += report.ratios[m];
            s.k[m] += if report.active {
                report.coefficients[m]
            } else {
                1.0
            };
            s.tensors[m] += report.tensors[m] as f64;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let s = std::mem::take(&mut self.sums);
        if s.steps == 0 {
            return Ok(());
        }
        let n = s.steps as f64;
        let per_mod = |v: &[f64]| -> serde_json::Value {
            self.modalities
                .iter()
                .zip(v)
                .map(|(name, x)| (name.clone(), serde_json::json!(x / n)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let p = &self.log_prefix;
        ctx.log.set(format!("{p}s"), per_mod(s.scores.score_sums()));
        ctx.log.set(format!("{p}rho"), per_mod(&s.rho));
        ctx.log.set(format!("{p}k"), per_mod(&s.k));
        ctx.log.set(format!("{p}tensors"), per_mod(&s.tensors));
        ctx.log.set(format!("{p}active"), s.active as f64 / n);
        if let Some(w) = self.window {
            ctx.log.set(format!("{p}window.start"), w.start as f64);
            ctx.log.set(format!("{p}window.end"), w.end as f64);
        }
        Ok(())
    }
}

/// Registry entry: `[method] name = "ogm-ge"` with [`OgmGeMethodConfig`]'s keys.
impl MethodParams for OgmGeMethodConfig {
    /// Heads: `{ADDITIVE_FUSIONS}` (`docs/fusion.md`): its unimodal scores read the per-modality logits as an additive decomposition of the fused logits (weight slices or branches).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ADDITIVE_FUSIONS,
            "its unimodal scores read the per-modality logits as an additive decomposition of the fused logits (weight slices or branches)",
        )
    }
    fn check(&self) -> Result<()> {
        Ok(self.modulator_config().validate()?)
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(OgmGeMethod::new(self.clone())?))
    }
}
