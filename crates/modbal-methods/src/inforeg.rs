//! `inforeg`: Information Acquisition Regulation (Huang, Wei, Yang & Hu, "Adaptive Unimodal
//! Regulation for Balanced Multimodal Information Acquisition", CVPR 2025, arXiv 2503.18595;
//! official code GeWu-Lab/InfoReg_CVPR2025). See `docs/methods/inforeg.md`.
//!
//! # Maths
//! Concat head, per-modality logits `z_m = W[:, slice_m]·f_m + b/M` (the official `out_a`,
//! `out_v` with `bias / 2`). The loss backpropagated is
//!
//! ```text
//! L = CE(z) + λ_uni · Σ_m CE(z_m)                    (λ_uni = 1: the official three backward passes)
//! ```
//!
//! After the backward pass, with the batch's scores `s_m = Σ_i softmax(z_m,i)[y_i]` (detached):
//!
//! ```text
//! m*  = argmax_m s_m  (unique; a tie regulates nobody, as the official if/elif)
//! gap = s_{m*} − max_{k≠m*} s_k                     (M = 2: s_a − s_v)
//! β   = β_{m*} · exp(tanh(gap))                      (official: 0.95·e^{tanh}, 0.1·e^{tanh})
//! g_θ ← g_θ + β (θ − θ̄)  for every trainable θ of encoder m*, if k_{m*} > threshold
//! ```
//!
//! `θ̄` is the model's parameters at the start of the epoch (the official `global_model`
//! deep copy): the gradient of the proximal term `β/2 ‖θ − θ̄‖²`, which slows the
//! information-sufficient modality down.
//!
//! # Prime learning window
//! Per epoch `e` and modality `m`, the Fisher-information trace of its encoder is
//!
//! ```text
//! T_m(e) = Σ_{ℓ: weight tensors of rank ≥ 2 in encoder m} mean_elements( Σ_{batches} g_ℓ² )
//! ```
//!
//! with `g` the gradient after the regulation term was added (official: Conv2d/Linear weights,
//! accumulated after the `grad +=`). The history of each modality starts with `history` zeros
//! (official `[0]*10`). At the start of epoch `e ≥ 1`,
//!
//! ```text
//! tr1 = mean(last `history` traces),  tr2 = mean(the `history` before the last one)
//! k_m = (tr1 − tr2) / tr1              (k = 1 at the first epoch; k = 0 when tr1 = 0)
//! ```
//!
//! and modality `m*` is regulated in epoch `e` only while `k > threshold` (0.05): the trace is
//! still rising, i.e. the network is inside its prime learning window. `window_trace = "own"`
//! (default, the paper's per-modality reading) tests `k_{m*}`; `window_trace = "<modality>"`
//! tests that modality's `k` for every regulated modality (official: `"audio"`, CREMA-D).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `s.<m>` (mean score per step), `k.<m>` (the window value of every modality at the epoch's
//! start), `regulated.<m>` (fraction of steps regulating m), `beta.<m>` (mean β over all steps,
//! 0 when m was not regulated), `trace.<m>` (this epoch's FIM trace `T_m(e)`), `drift.<m>`
//! (`‖θ_m − θ̄_m‖₂` at the epoch's end), `active` (fraction of steps with a regulation), and the
//! loss parts `loss.fused`, `loss.<m>`.

use crate::params::MethodParams;
use crate::util::by_name;
use candle_core::{backprop::GradStore, DType, Tensor, Var};
use modbal_core::stats::BatchStats;
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Options of `inforeg` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "inforeg"
/// beta = 0.95                 # β of the information-sufficient modality
/// beta_modality = {}          # per-modality β overrides, e.g. { visual = 0.1 } (official)
/// threshold = 0.05            # regulate while k > threshold
/// history = 10                # traces averaged by tr1 / tr2
/// window_trace = "own"        # or a modality name ("audio": the official code)
/// unimodal_weight = 1.0       # λ_uni of the unimodal CE terms
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfoRegConfig {
    /// Base coefficient β of `β·exp(tanh(gap))`, ≥ 0. Default 0.95: the official `main.py`
    /// constant for the information-sufficient modality of its (audio-dominant CREMA-D) setting.
    pub beta: f64,
    /// Per-modality overrides of `beta` by modality name, each ≥ 0. Default none. The official
    /// code's asymmetric constants are `{ audio = 0.95, visual = 0.1 }`.
    pub beta_modality: BTreeMap<String, f64>,
    /// Regulation only while the window value `k > threshold`. Default 0.05 (official
    /// `k > 0.05`).
    pub threshold: f64,
    /// Number of epochs averaged by `tr1` and `tr2` (and zeros the history starts with), ≥ 1.
    /// Default 10 (official `audio_trace_list[-10:]`, initialised with ten zeros).
    pub history: usize,
    /// Whose FIM trace decides the window: `"own"` (default; the regulated modality's own
    /// trace) or a modality name (official: `"audio"` for every modality).
    pub window_trace: String,
    /// Weight λ_uni of the unimodal cross-entropies, ≥ 0. Default 1 (official: the fused and
    /// both unimodal losses are backpropagated with weight 1).
    pub unimodal_weight: f64,
}

impl Default for InfoRegConfig {
    fn default() -> Self {
        Self {
            beta: 0.95,
            beta_modality: BTreeMap::new(),
            threshold: 0.05,
            history: 10,
            window_trace: "own".into(),
            unimodal_weight: 1.0,
        }
    }
}

impl InfoRegConfig {
    /// Checks every value; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModbalError::Config(format!("method inforeg: {m}")));
        for (k, v) in [
            ("beta", self.beta),
            ("unimodal_weight", self.unimodal_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{k} must be finite and >= 0, got {v}"));
            }
        }
        for (m, v) in &self.beta_modality {
            if !(v.is_finite() && *v >= 0.0) {
                return err(format!(
                    "beta_modality.{m} must be finite and >= 0, got {v}"
                ));
            }
        }
        if !self.threshold.is_finite() {
            return err(format!("threshold must be finite, got {}", self.threshold));
        }
        if self.history == 0 {
            return err("history must be >= 1".into());
        }
        if self.window_trace.is_empty() {
            return err("window_trace must be \"own\" or a modality name, got \"\"".into());
        }
        Ok(())
    }

    /// β of modality `name` (its override, else `beta`).
    pub fn beta_of(&self, name: &str) -> f64 {
        self.beta_modality.get(name).copied().unwrap_or(self.beta)
    }

    /// Checks the modality names the options mention against the model's.
    fn check_modalities(&self, names: &[String]) -> Result<()> {
        let err = |m: String| Err(ModbalError::Config(format!("method inforeg: {m}")));
        if names.len() < 2 {
            return err(format!(
                "needs at least two modalities to compare their scores, the model has {names:?}"
            ));
        }
        for m in self.beta_modality.keys() {
            if !names.contains(m) {
                return err(format!(
                    "beta_modality names modality \"{m}\", which the model does not have \
                     ({names:?})"
                ));
            }
        }
        if self.window_trace != "own" && !names.contains(&self.window_trace) {
            return err(format!(
                "window_trace = \"{}\" is neither \"own\" nor a modality of the model ({names:?})",
                self.window_trace
            ));
        }
        Ok(())
    }
}

/// The window value `k = (tr1 − tr2)/tr1` of a trace history (with its leading zeros):
/// `tr1` the mean of the last `h` values, `tr2` the mean of the `h` before the last one. 1 when
/// the history holds only the `h` initial zeros (the first epoch); 0 when `tr1 = 0`.
pub fn window_value(history: &[f64], h: usize) -> f64 {
    if history.len() <= h {
        return 1.0;
    }
    let n = history.len();
    let tr1 = history[n - h..].iter().sum::<f64>() / h as f64;
    let tr2 = history[n - h - 1..n - 1].iter().sum::<f64>() / h as f64;
    if tr1 == 0.0 {
        0.0
    } else {
        (tr1 - tr2) / tr1
    }
}

/// The regulation of one batch: which modality (if any) and its β, from the scores.
/// `None` when the maximum score is not unique. `gap` is to the best of the others.
pub fn regulation(scores: &[f64], beta_of: impl Fn(usize) -> f64) -> Option<(usize, f64)> {
    let best = (0..scores.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b]))?;
    let second = (0..scores.len())
        .filter(|&k| k != best)
        .map(|k| scores[k])
        .fold(f64::NEG_INFINITY, f64::max);
    let gap = scores[best] - second;
    (gap > 0.0).then(|| (best, beta_of(best) * gap.tanh().exp()))
}

#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    active: usize,
    scores: Vec<f64>,
    regulated: Vec<f64>,
    beta: Vec<f64>,
}

/// The InfoReg method; see the [module docs](self).
#[derive(Debug)]
pub struct InfoReg {
    cfg: InfoRegConfig,
    modalities: Vec<String>,
    /// FIM trace history per modality (starts with `history` zeros).
    traces: Vec<Vec<f64>>,
    /// The window value of each modality for the current epoch.
    k: Vec<f64>,
    /// `θ̄`: the encoders' parameters at the start of `anchor_epoch`, by parameter name.
    anchor: BTreeMap<String, Tensor>,
    anchor_epoch: Option<usize>,
    /// `Σ_batches g²` of each FIM weight tensor, by parameter name.
    fim: BTreeMap<String, Tensor>,
    sums: EpochSums,
}

impl InfoReg {
    pub fn new(cfg: InfoRegConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            modalities: Vec::new(),
            traces: Vec::new(),
            k: Vec::new(),
            anchor: BTreeMap::new(),
            anchor_epoch: None,
            fim: BTreeMap::new(),
            sums: EpochSums::default(),
        })
    }

    pub fn config(&self) -> &InfoRegConfig {
        &self.cfg
    }

    /// The FIM trace history of each modality (with the leading zeros).
    pub fn traces(&self) -> &[Vec<f64>] {
        &self.traces
    }

    /// The window values `k` of the current epoch, per modality.
    pub fn window_values(&self) -> &[f64] {
        &self.k
    }

    /// Whether modality `m` may be regulated in this epoch (`k > threshold`).
    pub fn in_window(&self, m: usize) -> bool {
        let w = match self
            .modalities
            .iter()
            .position(|n| *n == self.cfg.window_trace)
        {
            Some(i) => i,
            None => m,
        };
        self.k.get(w).is_some_and(|k| *k > self.cfg.threshold)
    }

    /// The anchor `θ̄` of a parameter (after [`Method::on_epoch_start`]).
    pub fn anchor(&self, name: &str) -> Option<&Tensor> {
        self.anchor.get(name)
    }

    fn ensure(&mut self, model: &dyn MultimodalModel) -> Result<()> {
        if self.modalities.is_empty() {
            let names = model.modalities().to_vec();
            self.cfg.check_modalities(&names)?;
            self.modalities = names;
        }
        let m = self.modalities.len();
        if self.traces.len() != m {
            self.traces = vec![vec![0.0; self.cfg.history]; m];
        }
        if self.sums.scores.len() != m {
            self.sums = EpochSums {
                scores: vec![0.0; m],
                regulated: vec![0.0; m],
                beta: vec![0.0; m],
                ..Default::default()
            };
        }
        Ok(())
    }

    /// Every trainable tensor of encoder `m`, as `(name, var)`.
    fn encoder_vars(model: &dyn MultimodalModel, m: usize) -> Vec<(String, Var)> {
        let all = model.params().trainable();
        modbal_modulate::group_vars(&all, &model.encoder_prefix(m))
            .into_iter()
            .cloned()
            .collect()
    }
}

impl Method for InfoReg {
    fn name(&self) -> &str {
        "inforeg"
    }

    fn on_epoch_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.ensure(model)?;
        let h = self.cfg.history;
        self.k = self.traces.iter().map(|t| window_value(t, h)).collect();
        // θ̄: re-taken at every epoch start, unless a checkpoint of this very epoch restored it.
        if self.anchor_epoch != Some(ctx.epoch) || self.anchor.is_empty() {
            self.anchor.clear();
            for m in 0..self.modalities.len() {
                for (n, v) in Self::encoder_vars(model, m) {
                    self.anchor.insert(n, v.as_tensor().detach().copy()?);
                }
            }
            self.anchor_epoch = Some(ctx.epoch);
        }
        self.fim.clear();
        Ok(())
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        let fused = cross_entropy(&out.fused_logits, &batch.labels)?;
        let mut parts = BTreeMap::new();
        parts.insert("fused".to_string(), fused.detach());
        let mut total = fused;
        for (name, z) in model.modalities().iter().zip(&out.per_modality_logits) {
            let ce = cross_entropy(z, &batch.labels)?;
            parts.insert(name.clone(), ce.detach());
            if self.cfg.unimodal_weight > 0.0 {
                total = (total + (ce * self.cfg.unimodal_weight)?)?;
            }
        }
        Ok(LossTerms { total, parts })
    }

    fn modulate_grads(
        &mut self,
        grads: &mut GradStore,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        self.ensure(model)?;
        let n = self.modalities.len();
        if out.per_modality_logits.len() != n {
            return Err(ModbalError::Data(format!(
                "inforeg: the model gave {} per-modality logits for {n} modalities",
                out.per_modality_logits.len()
            )));
        }
        if self.anchor.is_empty() {
            return Err(ModbalError::Data(
                "inforeg: no epoch-start parameters θ̄ (on_epoch_start was not called)".into(),
            ));
        }
        let stats = BatchStats::from_logits(&out.per_modality_logits, &batch.labels)?;
        let s = &stats.scores;
        let reg = regulation(s, |m| self.cfg.beta_of(&self.modalities[m]))
            .filter(|(m, _)| self.in_window(*m));
        if let Some((m, beta)) = reg {
            for (name, v) in Self::encoder_vars(model, m) {
                let theta = v.as_tensor();
                let anchor = self.anchor.get(&name).ok_or_else(|| {
                    ModbalError::Data(format!("inforeg: no θ̄ for parameter {name}"))
                })?;
                let prox = ((theta.detach() - anchor)? * beta)?;
                let g = match grads.get(theta) {
                    Some(g) => (g + prox)?,
                    None => prox,
                };
                grads.insert(theta, g);
            }
        }
        // Σ_batches g² of the encoders' weight tensors, after the regulation (official order).
        for m in 0..n {
            for (name, v) in Self::encoder_vars(model, m) {
                if v.rank() < 2 {
                    continue;
                }
                let Some(g) = grads.get(v.as_tensor()) else {
                    continue;
                };
                let sq = g.detach().sqr()?;
                let acc = match self.fim.remove(&name) {
                    Some(a) => (a + sq)?,
                    None => sq,
                };
                self.fim.insert(name, acc);
            }
        }
        let e = &mut self.sums;
        e.steps += 1;
        for (acc, v) in e.scores.iter_mut().zip(s) {
            *acc += v;
        }
        if let Some((m, beta)) = reg {
            e.active += 1;
            e.regulated[m] += 1.0;
            e.beta[m] += beta;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.ensure(model)?;
        let n = self.modalities.len();
        // T_m(e) = Σ_layers mean(Σ_batches g²).
        let mut trace = vec![0.0; n];
        let mut drift = vec![0.0; n];
        for (m, (t, d)) in trace.iter_mut().zip(drift.iter_mut()).enumerate() {
            for (name, v) in Self::encoder_vars(model, m) {
                if let Some(acc) = self.fim.get(&name) {
                    *t += acc.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?;
                }
                if let Some(a) = self.anchor.get(&name) {
                    *d += (v.as_tensor().detach() - a)?
                        .to_dtype(DType::F64)?
                        .sqr()?
                        .sum_all()?
                        .to_scalar::<f64>()?;
                }
            }
            *d = d.sqrt();
        }
        let had_steps = self.sums.steps > 0;
        if had_steps {
            for (h, t) in self.traces.iter_mut().zip(&trace) {
                h.push(*t);
            }
        }
        self.fim.clear();
        let s = std::mem::take(&mut self.sums);
        self.ensure(model)?;
        let names = &self.modalities;
        ctx.log.set("k", by_name(names, &self.k));
        if had_steps {
            let st = s.steps as f64;
            let per = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x / st).collect() };
            ctx.log.set("s", by_name(names, &per(&s.scores)));
            ctx.log.set("regulated", by_name(names, &per(&s.regulated)));
            ctx.log.set("beta", by_name(names, &per(&s.beta)));
            ctx.log.set("active", s.active as f64 / st);
            ctx.log.set("trace", by_name(names, &trace));
            ctx.log.set("drift", by_name(names, &drift));
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "modalities": self.modalities,
            "traces": self.traces,
            "anchor_epoch": self.anchor_epoch,
        })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() {
            return Ok(());
        }
        let bad = |what: &str, e: serde_json::Error| {
            ModbalError::Data(format!("inforeg state {what}: {e}"))
        };
        if !state["traces"].is_null() {
            self.traces =
                serde_json::from_value(state["traces"].clone()).map_err(|e| bad("traces", e))?;
        }
        if !state["modalities"].is_null() {
            self.modalities = serde_json::from_value(state["modalities"].clone())
                .map_err(|e| bad("modalities", e))?;
        }
        self.anchor_epoch = serde_json::from_value(state["anchor_epoch"].clone())
            .map_err(|e| bad("anchor_epoch", e))?;
        Ok(())
    }

    /// `θ̄` (under `anchor.<parameter>`), so that a checkpoint taken inside an epoch resumes with
    /// the same proximal centre (checkpoints at epoch ends re-take it at the next epoch start).
    fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(self
            .anchor
            .iter()
            .map(|(n, t)| (format!("anchor.{n}"), t.clone()))
            .collect())
    }

    fn load_state_tensors(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        self.anchor = tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix("anchor.")
                    .map(|k| (k.to_string(), t.clone()))
            })
            .collect();
        Ok(())
    }
}

/// Registry entry: `[method] name = "inforeg"` with [`InfoRegConfig`]'s keys; concat head.
impl MethodParams for InfoRegConfig {
    /// Heads: `{ADDITIVE_FUSIONS}` (`docs/fusion.md`): its unimodal losses and scores read the per-modality logits as an additive decomposition of the fused logits (weight slices or branches).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ADDITIVE_FUSIONS,
            "its unimodal losses and scores read the per-modality logits as an additive decomposition of the fused logits (weight slices or branches)",
        )
    }
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(InfoReg::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_value_matches_the_official_means() {
        // Ten zeros, then traces 1, 2: k = ((1+2)/10 − 1/10)/((1+2)/10) = 2/3.
        let mut h = vec![0.0; 10];
        assert_eq!(window_value(&h, 10), 1.0);
        h.push(1.0);
        assert!((window_value(&h, 10) - 1.0).abs() < 1e-12);
        h.push(2.0);
        assert!((window_value(&h, 10) - 2.0 / 3.0).abs() < 1e-12);
    }
}
