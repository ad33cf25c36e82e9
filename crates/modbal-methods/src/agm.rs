//! `agm`: Adaptive Gradient Modulation (Li, Li, Hu, Lei, Li & Zhou, "Boosting Multi-modal
//! Model Performance with Adaptive Gradient Modulation", ICCV 2023; official code
//! `lihongcs/AGM`, also published as `lihong2303/AGM_ICCV2023`). See `docs/methods/agm.md`.
//!
//! # Maths
//! Each training batch: encode, `f_m = E_m(x_m)`. The fused logits of a coalition `S` of
//! modalities are the head on the features with every modality outside `S` zeroed,
//! `z(S) = head(f ⊙ 1_S)` (the official `pad_audio` / `pad_visual`, which zero the encoder
//! outputs), with `z(∅) := 0` (paper eq 1 sums over `S ≠ ∅`; the official responses never
//! subtract the all-zero output). The **mono-modal response** of modality `m` is the Shapley
//! value of the logit vector (paper eqs 1-3; official `Modality_Audio` / `Modality_Visual` for
//! M = 2 and the three-modality `Modality_Text` & co.):
//!
//! ```text
//! φ_m = Σ_{S ⊆ M∖{m}} |S|!(M−|S|−1)!/M! · [ z(S ∪ {m}) − z(S) ]        ([B, C])
//! M = 2:  φ_a = ½ [ z(a,v) − z(v) + z(a) ]           Σ_m φ_m = z(all)  (efficiency)
//! ```
//!
//! **Score, ratio, coefficient** (official training loop; `t` counts the steps of the run,
//! from 1):
//!
//! ```text
//! s_m(t) = (1/B) Σ_i min( −log softmax(φ_m,i)[y_i], −log 1e-8 )      (mono-modal CE)
//! r_m(t) = exp( M/(M−1) · ( s̄(t) − s_m(t) ) ),   s̄ = (1/M) Σ_k s_k    (sign = "official")
//! ŝ_m    = running mean of s_m over the steps before t  (ŝ_m = 0 at t = 1)
//! r̂_m    = exp( M/(M−1) · ( mean_k ŝ_k − ŝ_m ) )                      (target, "concept")
//! c_m(t) = exp( α · min( r̂_m − r_m(t), cap ) )
//! ŝ_m   ← ŝ_m·(t−1)/t + s_m(t)/t                                        (after c_m)
//! ```
//!
//! For M = 2 the ratio is `r_a = exp(s_v − s_a)`: a modality that is currently stronger than
//! its running average (lower CE relative to the others) gets `c < 1`, a weaker one `c > 1`.
//! `sign = "reversed"` uses `M/(M−1)·(s_m − s̄)` in both ratios (issue #11 of the official
//! repository read literally, and BalanceBenchmark's `AGM_trainer.py`); see the docs page for
//! the sign discussion.
//!
//! **Modulation.** The official code scales the gradient that reaches each response `φ_m`
//! (a full backward hook on an identity module after `φ_m`) by `c_m`, with the loss
//! `CE(Σ_m φ_m, y) = CE(z(all), y)`. Here the same gradient comes from the straight-through
//! form
//!
//! ```text
//! L = CE( Σ_m [ c_m·φ_m + (1 − c_m)·sg(φ_m) ], y )
//! ```
//!
//! whose value is `CE(z(all), y)` and whose gradient w.r.t. `φ_m` is `c_m·∂L/∂z(all)`; it flows
//! through every coalition output into the encoders and the head, as the hook's does. On the
//! concat head (`z(S) = Σ_{k∈S} W_k f_k + b`) this is exactly: encoder `m` and the head slice
//! `W_m` get `c_m` times their plain gradients, the bias `(1/M) Σ_m c_m` times.
//!
//! Outside the modulation `window` (0-based epochs `[start, end)`) `c_m = 1`; the scores and the
//! running means are updated at every step (official). After the backward, if any element of
//! the head's weight gradients exceeds `clip` in magnitude, every gradient is clipped to the
//! global norm `clip` (the official CREMA-D loop's `clip_grad_norm_(…, 1.0)`; `clip = 0` off).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `s.<m>` (mean score), `s_avg.<m>` (running mean `ŝ_m` at the epoch's end), `r.<m>` and
//! `r_target.<m>` (means of `r_m`, `r̂_m`), `coeff.<m>` (mean `c_m` applied; 1 outside the
//! window), `active` (share of steps inside the window), `clipped` (share of steps clipped),
//! `loss.fused` (the backpropagated CE).

use crate::params::MethodParams;
use crate::util::by_name;
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use modbal_contrib::shapley::{shapley_weight, MAX_SHAPLEY_MODALITIES};
use modbal_contrib::stats::{label_log_probabilities, labels_from_tensor, mask_features};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_modulate::ModulationWindow;
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};

/// `−log 1e-8`: the official floor of a sample's mono-modal CE (a label probability below 1e-8
/// counts as 1e-8).
pub const SCORE_FLOOR: f64 = 18.420_680_743_952_367;

/// The sign of the strength ratio (see the module docs and `docs/methods/agm.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgmSign {
    /// `r_m = exp(M/(M−1)·(s̄ − s_m))` with `s` the mono-modal CE: the official code, and the
    /// paper's equation once its score (a log-likelihood) is written as the code's CE (the
    /// authors' answer in issue #11). A modality stronger than its running average is slowed.
    #[default]
    Official,
    /// `r_m = exp(M/(M−1)·(s_m − s̄))`: issue #11's literal reading, as BalanceBenchmark ports
    /// it. A modality stronger than its running average is sped up.
    Reversed,
}

/// Options of `agm` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "agm"
/// alpha = 1.5                         # CREMA-D (authors, issue #3)
/// cap = 10.0                          # min(r̂ − r, 10) in the official CREMA-D loop
/// sign = "official"                   # or "reversed"
/// clip = 1.0                          # 0 = no clipping
/// window = { start = 0, end = 1500 }  # the authors' "continuous" modulation
/// head = "concat"                     # or "sum"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgmConfig {
    /// α of `c = exp(α·min(r̂ − r, cap))`, ≥ 0. Default 1.5: the CREMA-D value the authors give
    /// in issue #3 of the official repository ("alpha=1.5, end_epoch=1500").
    pub alpha: f64,
    /// Upper bound on `r̂ − r` inside the exponential, > 0. Default 10 (official CREMA-D and
    /// two-modality loops; the three-modality CMU-MOSEI loop uses 7).
    pub cap: f64,
    /// Sign of the strength ratio. Default [`AgmSign::Official`].
    pub sign: AgmSign,
    /// Clip every gradient to this global norm when an element of the head's weight gradients
    /// exceeds it in magnitude; 0 = never. Default 1.0 (official CREMA-D loop: `grad_max > 1 or
    /// grad_min < -1` → `clip_grad_norm_(model.parameters(), max_norm=1.0)`; BalanceBenchmark
    /// uses 5).
    pub clip: f64,
    /// 0-based epochs `[start, end)` with modulation (literal, not scaled to the run). Default
    /// `[0, 1500)`: the official `modulation_starts <= epoch <= modulation_ends` with the
    /// authors' `end_epoch = 1500` (issue #3: "a continuous process of modulation").
    pub window: ModulationWindow,
    /// Fusion head. Default `concat` (the official `AVClassifier_AGM`: one linear layer on the
    /// concatenated features); `sum` for protocols with summation fusion (UDI A.6).
    pub head: AgmHead,
}

/// The fusion head (the same choice as `cml`'s).
pub type AgmHead = crate::cml::CmlHead;

impl Default for AgmConfig {
    fn default() -> Self {
        Self {
            alpha: 1.5,
            cap: 10.0,
            sign: AgmSign::Official,
            clip: 1.0,
            window: ModulationWindow {
                start: 0,
                end: 1500,
            },
            head: AgmHead::Concat,
        }
    }
}

impl AgmConfig {
    fn validate(&self) -> Result<()> {
        let bad = |k: &str, v: f64, need: &str| {
            Err(ModbalError::Config(format!(
                "method agm: {k} must be {need}, got {v}"
            )))
        };
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad("alpha", self.alpha, "finite and >= 0");
        }
        if !(self.cap.is_finite() && self.cap > 0.0) {
            return bad("cap", self.cap, "finite and > 0");
        }
        if !(self.clip.is_finite() && self.clip >= 0.0) {
            return bad("clip", self.clip, "finite and >= 0 (0 = no clipping)");
        }
        self.window
            .validate()
            .map_err(|e| ModbalError::Config(format!("method agm: window: {e}")))?;
        Ok(())
    }
}

/// Checks that AGM can value `m` modalities (2 ≤ M ≤ 4) and names the culprit otherwise.
pub fn check_modalities(m: usize) -> Result<()> {
    if m < 2 {
        return Err(ModbalError::Config(format!(
            "method agm: needs at least two modalities (the mono-modal responses share the \
             fused output among them), the model has {m}"
        )));
    }
    if m > MAX_SHAPLEY_MODALITIES {
        return Err(ModbalError::Config(format!(
            "method agm: exact Shapley responses are limited to M <= {MAX_SHAPLEY_MODALITIES} \
             modalities (2^M head evaluations per step), the model has {m}"
        )));
    }
    Ok(())
}

/// The mono-modal responses `φ_m` (`[B, C]` each, in modality order, differentiable) from the
/// step's features: every coalition's head output, `z(∅) = 0`, Shapley weights. `fused` is the
/// head on all features (`z(all)`, the forward's fused logits).
pub fn shapley_responses(
    model: &dyn MultimodalModel,
    features: &[Tensor],
    fused: &Tensor,
) -> Result<Vec<Tensor>> {
    let m = features.len();
    check_modalities(m)?;
    let all = (1usize << m) - 1;
    // z(S) for every non-empty S (index = mask); z(∅) is never built (it is 0).
    let mut z: Vec<Option<Tensor>> = vec![None; 1 << m];
    for (mask, slot) in z.iter_mut().enumerate().skip(1) {
        *slot = Some(if mask == all {
            fused.clone()
        } else {
            let keep: Vec<bool> = (0..m).map(|k| mask & (1 << k) != 0).collect();
            model.head(&mask_features(features, &keep)?)?.0
        });
    }
    (0..m)
        .map(|k| {
            let bit = 1usize << k;
            let mut acc: Option<Tensor> = None;
            for s in (0..1usize << m).filter(|s| s & bit == 0) {
                let w = shapley_weight(m, s.count_ones() as usize);
                let with = z[s | bit].as_ref().expect("non-empty coalition");
                let term = match &z[s] {
                    Some(without) => ((with - without)? * w)?,
                    None => (with * w)?,
                };
                acc = Some(match acc {
                    Some(a) => (a + term)?,
                    None => term,
                });
            }
            Ok(acc.expect("at least one coalition"))
        })
        .collect()
}

/// The mono-modal scores `s_m = mean_i min(−log softmax(φ_m,i)[y_i], −log 1e-8)` (host f64).
pub fn scores(responses: &[Tensor], labels: &[u32]) -> Result<Vec<f64>> {
    responses
        .iter()
        .map(|phi| {
            let lp = label_log_probabilities(&phi.detach(), labels)?;
            let n = lp.len() as f64;
            Ok(lp.iter().map(|&l| (-l).min(SCORE_FLOOR)).sum::<f64>() / n)
        })
        .collect()
}

/// The strength ratios `r_m = exp(M/(M−1)·(s̄ − s_m))` (`Official`) or with `s_m − s̄`
/// (`Reversed`), for M ≥ 2 scores.
pub fn ratios(scores: &[f64], sign: AgmSign) -> Vec<f64> {
    let m = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / m;
    let k = m / (m - 1.0);
    scores
        .iter()
        .map(|&s| {
            let gap = match sign {
                AgmSign::Official => mean - s,
                AgmSign::Reversed => s - mean,
            };
            (k * gap).exp()
        })
        .collect()
}

/// `c_m = exp(α·min(r̂_m − r_m, cap))`.
pub fn coefficients(target: &[f64], current: &[f64], alpha: f64, cap: f64) -> Vec<f64> {
    target
        .iter()
        .zip(current)
        .map(|(&t, &r)| (alpha * (t - r).min(cap)).exp())
        .collect()
}

/// `Σ_m [c_m·φ_m + (1 − c_m)·sg(φ_m)]`: the value of `Σ_m φ_m` with the gradient reaching each
/// `φ_m` scaled by `c_m` (the official backward hooks).
pub fn modulated_output(responses: &[Tensor], coeffs: &[f64]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (phi, &c) in responses.iter().zip(coeffs) {
        let t = ((phi * c)? + (phi.detach() * (1.0 - c))?)?;
        acc = Some(match acc {
            Some(a) => (a + t)?,
            None => t,
        });
    }
    acc.ok_or_else(|| ModbalError::Data("agm: no mono-modal responses".into()))
}

/// What one step computed (for the log and the tests).
#[derive(Clone, Debug, PartialEq)]
pub struct AgmStep {
    pub scores: Vec<f64>,
    pub ratios: Vec<f64>,
    pub targets: Vec<f64>,
    /// The coefficients applied (all 1 outside the window).
    pub coeffs: Vec<f64>,
    pub active: bool,
}

/// The running state: step count `t` and the running means `ŝ_m`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgmRunning {
    /// Steps seen so far.
    pub steps: u64,
    /// `ŝ_m` (empty before the first step).
    pub means: Vec<f64>,
}

impl AgmRunning {
    /// One step of the official arithmetic: ratios from `scores`, targets from the running
    /// means before this step, coefficients (1 where `!active`), then the running means updated.
    pub fn step(&mut self, scores: &[f64], config: &AgmConfig, active: bool) -> AgmStep {
        if self.means.len() != scores.len() {
            self.means = vec![0.0; scores.len()];
        }
        let current = ratios(scores, config.sign);
        let targets = ratios(&self.means, config.sign);
        let coeffs = if active {
            coefficients(&targets, &current, config.alpha, config.cap)
        } else {
            vec![1.0; scores.len()]
        };
        self.steps += 1;
        let t = self.steps as f64;
        for (mean, &s) in self.means.iter_mut().zip(scores) {
            *mean = *mean * (t - 1.0) / t + s / t;
        }
        AgmStep {
            scores: scores.to_vec(),
            ratios: current,
            targets,
            coeffs,
            active,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    active: usize,
    clipped: usize,
    s: Vec<f64>,
    r: Vec<f64>,
    r_target: Vec<f64>,
    coeff: Vec<f64>,
}

/// The AGM method; see the [module docs](self).
#[derive(Debug)]
pub struct Agm {
    config: AgmConfig,
    running: AgmRunning,
    sums: EpochSums,
    modalities: Vec<String>,
    last: Option<AgmStep>,
}

impl Agm {
    pub fn new(config: AgmConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            running: AgmRunning::default(),
            sums: EpochSums::default(),
            modalities: Vec::new(),
            last: None,
        })
    }

    pub fn config(&self) -> &AgmConfig {
        &self.config
    }

    /// The last step's scores, ratios and coefficients.
    pub fn last_step(&self) -> Option<&AgmStep> {
        self.last.as_ref()
    }

    /// The running state (step count, `ŝ_m`).
    pub fn running(&self) -> &AgmRunning {
        &self.running
    }

    fn ensure(&mut self, model: &dyn MultimodalModel) -> Result<()> {
        let m = model.modalities().len();
        check_modalities(m)?;
        if self.modalities.is_empty() {
            self.modalities = model.modalities().to_vec();
        }
        if self.sums.s.len() != m {
            self.sums = EpochSums {
                s: vec![0.0; m],
                r: vec![0.0; m],
                r_target: vec![0.0; m],
                coeff: vec![0.0; m],
                ..Default::default()
            };
        }
        Ok(())
    }
}

impl Method for Agm {
    fn name(&self) -> &str {
        "agm"
    }

    fn on_stage_start(&mut self, model: &dyn MultimodalModel, _ctx: &mut RunContext) -> Result<()> {
        self.ensure(model)
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        self.ensure(model)?;
        let responses = shapley_responses(model, &out.features, &out.fused_logits)?;
        let labels = labels_from_tensor(&batch.labels)?;
        let s = scores(&responses, &labels)?;
        let active = self.config.window.contains(ctx.epoch);
        let step = self.running.step(&s, &self.config, active);
        let total = cross_entropy(&modulated_output(&responses, &step.coeffs)?, &batch.labels)?;
        let sums = &mut self.sums;
        sums.steps += 1;
        sums.active += usize::from(active);
        for k in 0..s.len() {
            sums.s[k] += step.scores[k];
            sums.r[k] += step.ratios[k];
            sums.r_target[k] += step.targets[k];
            sums.coeff[k] += step.coeffs[k];
        }
        self.last = Some(step);
        let mut parts = std::collections::BTreeMap::new();
        parts.insert("fused".to_string(), total.detach());
        Ok(LossTerms { total, parts })
    }

    fn modulate_grads(
        &mut self,
        grads: &mut GradStore,
        model: &dyn MultimodalModel,
        _batch: &Batch,
        _out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        if self.config.clip == 0.0 {
            return Ok(());
        }
        let all = model.params().trainable();
        let head = model.head_prefix();
        let mut peak = 0.0f64;
        for (_, v) in modbal_modulate::group_vars(&all, &head) {
            if v.rank() < 2 {
                continue;
            }
            if let Some(g) = grads.get(v.as_tensor()) {
                let m = g
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                peak = peak.max(m);
            }
        }
        if peak > self.config.clip {
            modbal_tensors::clip::clip_grad_norm(grads, &all, self.config.clip)?;
            self.sums.clipped += 1;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let m = self.sums.s.len();
        let s = std::mem::replace(
            &mut self.sums,
            EpochSums {
                s: vec![0.0; m],
                r: vec![0.0; m],
                r_target: vec![0.0; m],
                coeff: vec![0.0; m],
                ..Default::default()
            },
        );
        if s.steps == 0 {
            return Ok(());
        }
        let n = s.steps as f64;
        let mean = |v: &[f64]| v.iter().map(|x| x / n).collect::<Vec<_>>();
        let names = &self.modalities;
        ctx.log.set("s", by_name(names, &mean(&s.s)));
        ctx.log.set("s_avg", by_name(names, &self.running.means));
        ctx.log.set("r", by_name(names, &mean(&s.r)));
        ctx.log.set("r_target", by_name(names, &mean(&s.r_target)));
        ctx.log.set("coeff", by_name(names, &mean(&s.coeff)));
        ctx.log.set("active", s.active as f64 / n);
        ctx.log.set("clipped", s.clipped as f64 / n);
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "running": self.running, "modalities": self.modalities })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() {
            return Ok(());
        }
        let bad =
            |what: &str, e: serde_json::Error| ModbalError::Data(format!("agm state {what}: {e}"));
        self.running =
            serde_json::from_value(state["running"].clone()).map_err(|e| bad("running", e))?;
        self.modalities = serde_json::from_value(state["modalities"].clone())
            .map_err(|e| bad("modalities", e))?;
        Ok(())
    }
}

/// Registry entry: `[method] name = "agm"` with [`AgmConfig`]'s keys.
impl MethodParams for AgmConfig {
    /// Heads: `{LATE_FUSIONS}` (`docs/fusion.md`): it removes a modality by zeroing its features before model.head, which needs encoders that see only their own modality (not mmtm).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::LATE_FUSIONS,
            "it removes a modality by zeroing its features before model.head, which needs encoders that see only their own modality (not mmtm)",
        )
    }
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn fusion(&self) -> modbal_encoders::FusionConfig {
        match self.head {
            AgmHead::Concat => modbal_encoders::FusionConfig::Concat,
            AgmHead::Sum => modbal_encoders::FusionConfig::Sum,
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Agm::new(self.clone())?))
    }
}
