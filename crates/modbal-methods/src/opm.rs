//! `opm` and `opm-ge`: on-the-fly prediction modulation, alone and together with OGM-GE's
//! gradient modulation (Wei, Hu, Du & Wen, "On-the-fly Modulation for Balanced Multimodal
//! Learning", TPAMI 2024; cited by UDI as Wei et al. 2025a; official code
//! `GeWu-Lab/BML_TPAMI2024`). See `docs/methods/opm.md`.
//!
//! # Names
//! The paper proposes OPM (feed-forward stage) and OGM (back-propagation stage, OGM-GE of
//! CVPR 2022 with its GE noise). The official code switches them independently:
//! `--use_adam_drop` (OPM, `scripts/train_opm.sh`) and `--use_modulation --modulation OGM_GE`
//! (OGM-GE, `scripts/train_ogm.sh`). In modbal:
//!
//! * `opm` = OPM alone (`--use_adam_drop`);
//! * `opm-ge` = OPM and OGM-GE in the same run (`--use_adam_drop --use_modulation`), with the
//!   TPAMI code's OGM-GE schedule (warm-up to epoch 5, modulation to epoch 60, α = 0.8);
//! * OGM-GE alone is `ogm-ge` (CVPR 2022's schedule; the TPAMI one through its `window`).
//!
//! # Maths
//! Each training batch: encode, `f_m = E_m(x_m)` (`[B, D_m]`); the per-modality logits
//! `z_m` are the head's slices on the CLEAN features (concat head: `W[:, slice_m]·f_m + b/M`,
//! official `t1`, `t2`), giving the scores `s_m = Σ_i softmax(z_m,i)[y_i]` and the drop
//! probabilities of [`modbal_modulate::Opm`]:
//!
//! ```text
//! ρ_m = s_m / min_k s_k
//! q_m = clip(q_base·(1 + λ·tanh(ρ_m − 1)), 0, 1) if ρ_m > 1, else 0
//! with probability p_exe:  f̃_m,i = Bernoulli(1 − q_m) · f_m,i / (1 − θ),  θ = Σ D_m q_m / Σ D_m
//! L = CE(head(f̃)_fused, y)
//! ```
//!
//! inside the OPM window; at evaluation the head sees the clean features (no drop, no
//! rescaling). `opm-ge` then modulates the encoders' gradients exactly as `ogm-ge` (the
//! embedded [`OgmGeMethod`], scores from the same clean per-modality logits): `k_m = 1 −
//! tanh(α·ρ_m)` if `ρ_m > 1` else 1, `g ← k_m·g + N(0, std(g)²)` on the scoped tensors inside
//! the OGM window.
//!
//! # Schedule
//! Both windows are epochs of a `schedule_epochs`-epoch schedule (default the official 100),
//! scaled to the run with [`ModulationWindow::scaled`]: OPM `[6, 100)` (official: drop only
//! when `epoch > 5`), OGM `[6, 61)` (official: `warm_up == 0` and `0 <= epoch <= 60`).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `s.<m>` (mean score per batch), `rho.<m>` (mean ρ), `q.<m>` (mean drop probability over the
//! steps inside the window), `dropped.<m>` (share of the epoch's training samples whose feature
//! of `m` was dropped), `executed` (share of steps with an executed drop), `theta` (mean θ over
//! the executed steps), `active` (share of steps inside the OPM window), `window.start` /
//! `window.end`, `loss.fused` and `loss.<m>` (unimodal CE on the clean features, logged only);
//! `opm-ge` adds OGM-GE's keys under `ogm.` (`ogm.k.<m>`, `ogm.active`, …).

use crate::ogm_ge::{OgmGeMethod, OgmGeMethodConfig, OgmGeScope};
use crate::params::MethodParams;
use crate::util::by_name;
use candle_core::backprop::GradStore;
use modbal_core::stats::BatchStats;
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_modulate::{ModulationWindow, OgmForm, Opm, OpmConfig as OpmModulatorConfig};
use serde::{Deserialize, Serialize};

/// Options of `opm` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "opm"
/// q_base = 0.5
/// lambda = 0.5
/// p_exe = 0.7
/// window = { start = 6, end = 100 }   # epochs of the official 100-epoch schedule
/// schedule_epochs = 100               # 0 = take the window literally
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpmConfig {
    /// Base drop probability, in `[0, 1]`. Default 0.5 (official `scripts/train_opm.sh` and the
    /// `main.py` argparse default).
    pub q_base: f64,
    /// `λ` of `q = q_base·(1 + λ·tanh(ρ − 1))`, `≥ 0`. Default 0.5 (official `train_opm.sh`).
    pub lambda: f64,
    /// Probability that a batch's drop is executed, in `[0, 1]`. Default 0.7 (official
    /// `train_opm.sh`).
    pub p_exe: f64,
    /// 0-based epochs `[start, end)` with prediction modulation, in epochs of a
    /// `schedule_epochs` schedule. Default `[6, 100)`: the official warm-up (`epoch <= 5`
    /// trains plainly) of its 100 epochs.
    pub window: ModulationWindow,
    /// Length of the schedule the windows refer to. Default 100 (official `config.py`
    /// `epochs = 100`); 0 = the windows are run epochs, unscaled.
    pub schedule_epochs: usize,
}

impl Default for OpmConfig {
    fn default() -> Self {
        let m = OpmModulatorConfig::default();
        Self {
            q_base: m.q_base,
            lambda: m.lambda,
            p_exe: m.p_exe,
            window: m.window,
            schedule_epochs: 100,
        }
    }
}

impl OpmConfig {
    fn modulator_config(&self) -> OpmModulatorConfig {
        OpmModulatorConfig {
            q_base: self.q_base,
            lambda: self.lambda,
            p_exe: self.p_exe,
            window: self.window,
        }
    }
}

/// Options of `opm-ge` (`[method]` section): [`OpmConfig`]'s keys and OGM-GE's
/// ([`OgmGeMethodConfig`]) with the TPAMI code's defaults, its window under `ogm_window`.
///
/// ```toml
/// [method]
/// name = "opm-ge"
/// q_base = 0.5
/// lambda = 0.5
/// p_exe = 0.7
/// window = { start = 6, end = 100 }
/// alpha = 0.8
/// form = "paper"
/// scope = "auto"
/// ge = true
/// ogm_window = { start = 6, end = 61 }
/// schedule_epochs = 100
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpmGeConfig {
    /// See [`OpmConfig::q_base`]. Default 0.5.
    pub q_base: f64,
    /// See [`OpmConfig::lambda`]. Default 0.5.
    pub lambda: f64,
    /// See [`OpmConfig::p_exe`]. Default 0.7.
    pub p_exe: f64,
    /// OPM's window, see [`OpmConfig::window`]. Default `[6, 100)`.
    pub window: ModulationWindow,
    /// α of OGM's `k = 1 − tanh(α·ρ)`. Default 0.8 (official `scripts/train_ogm.sh`; the
    /// argparse default is 1.0).
    pub alpha: f64,
    /// OGM coefficient formula (see [`OgmGeMethodConfig::form`]). Default `paper` (the official
    /// TPAMI code computes `1 − tanh(α·relu(ρ))` for ρ > 1, i.e. OGM-GE's eq 10).
    pub form: OgmForm,
    /// Which encoder gradients OGM modulates (see [`OgmGeScope`]). Default `auto` (4-D conv
    /// kernels as the official `len(grad.size()) == 4`, weight matrices on MLP encoders).
    pub scope: OgmGeScope,
    /// GE noise. Default `true` (official `--modulation` default `OGM_GE`; `false` = OGM).
    pub ge: bool,
    /// OGM's window. Default `[6, 61)`: official `train_ogm.sh` (`modulation_ends 60`,
    /// inclusive) after the `epoch <= 5` warm-up that also disables OGM.
    pub ogm_window: ModulationWindow,
    /// See [`OpmConfig::schedule_epochs`] (both windows). Default 100.
    pub schedule_epochs: usize,
}

impl Default for OpmGeConfig {
    fn default() -> Self {
        let opm = OpmConfig::default();
        Self {
            q_base: opm.q_base,
            lambda: opm.lambda,
            p_exe: opm.p_exe,
            window: opm.window,
            alpha: 0.8,
            form: OgmForm::Paper,
            scope: OgmGeScope::Auto,
            ge: true,
            ogm_window: ModulationWindow { start: 6, end: 61 },
            schedule_epochs: opm.schedule_epochs,
        }
    }
}

impl OpmGeConfig {
    /// The OPM part.
    pub fn opm(&self) -> OpmConfig {
        OpmConfig {
            q_base: self.q_base,
            lambda: self.lambda,
            p_exe: self.p_exe,
            window: self.window,
            schedule_epochs: self.schedule_epochs,
        }
    }
    /// The OGM-GE part (run by the `ogm-ge` method's code).
    pub fn ogm(&self) -> OgmGeMethodConfig {
        OgmGeMethodConfig {
            alpha: self.alpha,
            form: self.form,
            scope: self.scope,
            ge: self.ge,
            window: self.ogm_window,
            schedule_epochs: self.schedule_epochs,
        }
    }
}

/// Running sums for the per-epoch log.
#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    active: usize,
    executed: usize,
    samples: usize,
    scores: Vec<f64>,
    rho: Vec<f64>,
    q: Vec<f64>,
    dropped: Vec<f64>,
    theta: f64,
}

/// The OPM method (`opm`), with OGM-GE (`opm-ge`) when built from [`OpmGeConfig`]; see the
/// [module docs](self).
#[derive(Debug)]
pub struct OpmMethod {
    name: &'static str,
    config: OpmConfig,
    modulator: Opm,
    ogm: Option<OgmGeMethod>,
    sums: EpochSums,
    modalities: Vec<String>,
    window: Option<ModulationWindow>,
}

impl OpmMethod {
    /// `opm`.
    pub fn new(config: OpmConfig) -> Result<Self> {
        let modulator = Opm::new(config.modulator_config())?;
        Ok(Self {
            name: "opm",
            config,
            modulator,
            ogm: None,
            sums: EpochSums::default(),
            modalities: Vec::new(),
            window: None,
        })
    }

    /// `opm-ge`: OPM plus the embedded OGM-GE (logging under `ogm.`).
    pub fn with_ogm_ge(config: &OpmGeConfig) -> Result<Self> {
        let mut m = Self::new(config.opm())?;
        m.name = "opm-ge";
        m.ogm = Some(OgmGeMethod::new(config.ogm())?.with_log_prefix("ogm."));
        Ok(m)
    }

    pub fn config(&self) -> &OpmConfig {
        &self.config
    }

    fn reset_sums(&mut self, m: usize) {
        self.sums = EpochSums {
            scores: vec![0.0; m],
            rho: vec![0.0; m],
            q: vec![0.0; m],
            dropped: vec![0.0; m],
            ..Default::default()
        };
    }
}

impl Method for OpmMethod {
    fn name(&self) -> &str {
        self.name
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        let n = model.modalities().len();
        if batch.inputs.len() != n {
            return Err(ModbalError::Data(format!(
                "{}: the batch has {} inputs for {n} modalities",
                self.name,
                batch.inputs.len()
            )));
        }
        if self.modalities.is_empty() {
            self.modalities = model.modalities().to_vec();
        }
        if self.sums.rho.len() != n {
            self.reset_sums(n);
        }
        let features = (0..n)
            .map(|m| model.encode(m, &batch.inputs[m], true))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // Clean head: the per-modality logits (official t1, t2) and the fused logits when
        // nothing is dropped.
        let (clean_fused, per_modality_logits) = model.head(&features)?;
        let stats = BatchStats::from_logits(&per_modality_logits, &batch.labels)?;
        let window = self
            .config
            .window
            .scaled(self.config.schedule_epochs, ctx.num_epochs);
        self.modulator.set_window(window)?;
        self.window = Some(window);
        let (modulated, report) =
            self.modulator
                .step(&features, &stats.scores, ctx.epoch, &mut ctx.rng)?;
        let fused_logits = if report.executed {
            model.head(&modulated)?.0
        } else {
            clean_fused
        };
        let s = &mut self.sums;
        s.steps += 1;
        s.samples += batch.len();
        s.active += usize::from(report.active);
        s.executed += usize::from(report.executed);
        s.theta += report.theta;
        for m in 0..n {
            s.scores[m] += stats.scores[m];
            s.rho[m] += report.ratios[m];
            if report.active {
                s.q[m] += report.q[m];
            }
            s.dropped[m] += report.dropped[m] as f64;
        }
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits,
            features,
        })
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
        match self.ogm.as_mut() {
            Some(ogm) => ogm.modulate_grads(grads, model, batch, out, ctx),
            None => Ok(()),
        }
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        if let Some(ogm) = self.ogm.as_mut() {
            ogm.on_epoch_end(model, ctx)?;
        }
        let s = std::mem::take(&mut self.sums);
        if s.steps == 0 {
            return Ok(());
        }
        let n = s.steps as f64;
        let mean = |v: &[f64], d: f64| -> Vec<f64> { v.iter().map(|x| x / d).collect() };
        let names = &self.modalities;
        ctx.log.set("s", by_name(names, &mean(&s.scores, n)));
        ctx.log.set("rho", by_name(names, &mean(&s.rho, n)));
        ctx.log
            .set("q", by_name(names, &mean(&s.q, s.active.max(1) as f64)));
        ctx.log.set(
            "dropped",
            by_name(names, &mean(&s.dropped, s.samples.max(1) as f64)),
        );
        ctx.log.set("executed", s.executed as f64 / n);
        ctx.log.set("theta", s.theta / s.executed.max(1) as f64);
        ctx.log.set("active", s.active as f64 / n);
        if let Some(w) = self.window {
            ctx.log.set("window.start", w.start as f64);
            ctx.log.set("window.end", w.end as f64);
        }
        Ok(())
    }
}

/// Registry entry: `[method] name = "opm"` with [`OpmConfig`]'s keys.
impl MethodParams for OpmConfig {
    /// Heads: `{ADDITIVE_LATE_FUSIONS}` (`docs/fusion.md`): it reads the per-modality logits as an additive decomposition of the fused logits and encodes each modality alone with model.encode, which mmtm cannot.
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ADDITIVE_LATE_FUSIONS,
            "it reads the per-modality logits as an additive decomposition of the fused logits and encodes each modality alone with model.encode, which mmtm cannot",
        )
    }
    fn check(&self) -> Result<()> {
        Ok(self.modulator_config().validate()?)
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(OpmMethod::new(self.clone())?))
    }
}

/// Registry entry: `[method] name = "opm-ge"` with [`OpmGeConfig`]'s keys.
impl MethodParams for OpmGeConfig {
    /// Heads: `{ADDITIVE_LATE_FUSIONS}` (`docs/fusion.md`): it reads the per-modality logits as an additive decomposition of the fused logits and encodes each modality alone with model.encode, which mmtm cannot.
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ADDITIVE_LATE_FUSIONS,
            "it reads the per-modality logits as an additive decomposition of the fused logits and encodes each modality alone with model.encode, which mmtm cannot",
        )
    }
    fn check(&self) -> Result<()> {
        self.opm().check()?;
        self.ogm().check()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(OpmMethod::with_ogm_ge(self)?))
    }
}
