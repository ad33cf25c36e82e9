//! `greedy`: balanced multimodal learning by conditional learning speed and re-balancing steps
//! (Wu, Jastrzębski, Cho & Geras, "Characterizing and overcoming the greedy nature of learning
//! in multi-modal deep neural networks", ICML 2022; official code
//! `nyukat/greedy_multimodal_learning`; the "Greedy" baseline of UDI's Table 1). See
//! `docs/methods/greedy.md`.
//!
//! # Model
//! Each modality `m` is a branch: its staged encoder, MMTM blocks between the stages shared
//! with the other branches ([`modbal_encoders::mmtm`], fusion `mmtm`), and its own linear
//! classifier `z_m`. The fused logits are `Σ_m z_m` (the official mean has the same argmax).
//!
//! # Maths
//! ```text
//! L          = Σ_m CE(z_m, y)                                     (the fused CE is only logged)
//! μ(θ; t)    = Σ_{p∈θ} ‖g_t(p)‖² / Σ_{p∈θ} ‖p_t‖²                 (ratio of sums)
//! main_m     = encoder.<m> ∪ head.<m>
//! bypass_m   = fusion.mmtm.*.excite.<m> ∪ fusion.mmtm.*.squeeze    (the squeeze in every group)
//! M_g(t)     = Σ_{τ ≤ t, τ regular} μ(g; τ)                       (from step 0, warm-up included)
//! s_m(t)     = log10(M_bypass_m(t) / M_main_m(t))                  conditional learning speed
//! d(t)       = s_0(t) − s_1(t)
//! ```
//! measured after the backward pass and before the optimizer step (the official
//! `on_backward_end`), in [`Method::modulate_grads`]; the gradients are not changed.
//!
//! After the warm-up (`warmup_epochs`), a regular step with `|d| > epsilon` makes the next
//! `window` steps re-balancing steps for the branch `c` with the larger `s` (the one learning
//! more through the fusion path): in every MMTM block, `c`'s excitation is replaced by its
//! running average, detached ([`modbal_core::FusionControl`]), so branch `c` has to fit the
//! labels from its own modality. Re-balancing steps train every parameter with the same loss;
//! they do not update the accumulators and do not decide. Evaluation is always regular.
//!
//! With `M > 2` modalities (a modbal extension; the paper and the code have two): the trigger is
//! `max_m s_m − min_m s_m > epsilon` and the caring branch `argmax_m s_m`, which is the official
//! rule for `M = 2`.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `s.<m>` (at the epoch's last regular step), `d` (mean over the epoch's regular steps of
//! `s_0 − s_1`, or of `max − min` for `M ≠ 2`), `rebalance_frac` (share of re-balancing steps),
//! `caring.<m>` (number of re-balancing steps caring for `m`), `triggers`, and the loss parts
//! `loss.fused`, `loss.<m>`.

use crate::params::MethodParams;
use crate::util::{by_name, check_batch_inputs};
use candle_core::{backprop::GradStore, DType, Var};
use modbal_core::{
    Batch, FusionControl, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput,
    Result, RunContext,
};
use modbal_encoders::FusionConfig;
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Options of `greedy` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "greedy"
/// epsilon = 0.01      # threshold α on |d|
/// window = 5          # re-balancing steps Q per trigger
/// warmup_epochs = 1   # epochs before re-balancing may start
/// ratio = 4           # MMTM squeeze width floor(2·ΣC/ratio)
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GreedyConfig {
    /// Threshold α on the imbalance `|d|` (≥ 0). Default 0.01: `configs/training_guided.gin`
    /// (`epsilon = 0.01`).
    pub epsilon: f64,
    /// Re-balancing steps per trigger Q (≥ 1). Default 5: `configs/training_guided.gin`
    /// (`curation_windowsize = 5`).
    pub window: usize,
    /// Warm-up epochs, in which every step is regular (the accumulators still grow). Default 1:
    /// `configs/training_guided.gin` `starting_epoch = 2` with 1-based epochs
    /// (`src/framework.py`), i.e. re-balancing from the second epoch.
    pub warmup_epochs: usize,
    /// MMTM ratio (≥ 1): squeeze width `⌊2·ΣC_m / ratio⌋`. Default 4: `src/model.py` (the
    /// `MMTM(…, 4)` blocks).
    pub ratio: usize,
}

impl Default for GreedyConfig {
    fn default() -> Self {
        Self {
            epsilon: 0.01,
            window: 5,
            warmup_epochs: 1,
            ratio: 4,
        }
    }
}

/// The method's checkpointed state: the accumulators and the re-balancing window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GreedyState {
    /// `M_bypass_m`, per modality.
    pub acc_bypass: Vec<f64>,
    /// `M_main_m`, per modality.
    pub acc_main: Vec<f64>,
    /// Re-balancing steps left in the current window (0: regular).
    pub remaining: usize,
    /// The caring branch of the current window.
    pub caring: Option<usize>,
}

impl GreedyState {
    pub fn new(m: usize) -> Self {
        Self {
            acc_bypass: vec![0.0; m],
            acc_main: vec![0.0; m],
            remaining: 0,
            caring: None,
        }
    }

    /// The mode of the next step: `Some(c)` re-balances for branch `c`, `None` is regular.
    pub fn mode(&self) -> Option<usize> {
        if self.remaining > 0 {
            self.caring
        } else {
            None
        }
    }

    /// `s_m = log10(M_bypass_m / M_main_m)` (non-finite while an accumulator is 0).
    pub fn speeds(&self) -> Vec<f64> {
        self.acc_bypass
            .iter()
            .zip(&self.acc_main)
            .map(|(b, m)| (b / m).log10())
            .collect()
    }

    /// A re-balancing step ran: one step less in the window.
    pub fn rebalance_step(&mut self) {
        self.remaining = self.remaining.saturating_sub(1);
        if self.remaining == 0 {
            self.caring = None;
        }
    }

    /// The decision after a regular step with speeds `s`: when `unlocked` and
    /// `max s − min s > epsilon` (finite), the next `window` steps re-balance for
    /// `argmax s`. Returns the caring branch of a trigger.
    pub fn decide(
        &mut self,
        s: &[f64],
        unlocked: bool,
        epsilon: f64,
        window: usize,
    ) -> Option<usize> {
        let spread = spread(s)?;
        if !unlocked || spread <= epsilon {
            return None;
        }
        let c = argmax(s);
        self.remaining = window;
        self.caring = Some(c);
        Some(c)
    }

    /// A regular step with the group speeds `μ(bypass_m)`, `μ(main_m)`: accumulate, then
    /// [`GreedyState::decide`]. Returns the speeds `s` and the caring branch of a trigger.
    pub fn regular_step(
        &mut self,
        mu_bypass: &[f64],
        mu_main: &[f64],
        unlocked: bool,
        epsilon: f64,
        window: usize,
    ) -> (Vec<f64>, Option<usize>) {
        for (a, v) in self.acc_bypass.iter_mut().zip(mu_bypass) {
            *a += v;
        }
        for (a, v) in self.acc_main.iter_mut().zip(mu_main) {
            *a += v;
        }
        let s = self.speeds();
        let trigger = self.decide(&s, unlocked, epsilon, window);
        (s, trigger)
    }
}

/// `max s − min s`, `None` when some `s_m` is not finite or there are none.
pub fn spread(s: &[f64]) -> Option<f64> {
    if s.is_empty() || s.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = s.iter().copied().fold(f64::INFINITY, f64::min);
    Some(max - min)
}

fn argmax(s: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in s.iter().enumerate() {
        if *v > s[best] {
            best = i;
        }
    }
    best
}

/// A parameter group: named parameters.
pub type ParamGroup = Vec<(String, Var)>;

/// The fusion prefix of `model`, or the error that greedy needs intermediate fusion.
fn require_fusion(model: &dyn MultimodalModel) -> Result<String> {
    model.fusion_prefix().ok_or_else(|| {
        ModbalError::Config(
            "method greedy needs a model with intermediate fusion (fusion = \"mmtm\"); this \
             model has none"
                .into(),
        )
    })
}

/// The parameter groups of the speed: `(main_m, bypass_m)` per modality (see the module docs).
/// Errors when the model has no MMTM fusion blocks.
pub fn param_groups(model: &dyn MultimodalModel) -> Result<(Vec<ParamGroup>, Vec<ParamGroup>)> {
    let fp = require_fusion(model)?;
    let fusion = model.params().trainable_with_prefix(&fp);
    let head = model.head_prefix();
    let mut main = Vec::new();
    let mut bypass = Vec::new();
    for (m, name) in model.modalities().iter().enumerate() {
        let mut g = model
            .params()
            .trainable_with_prefix(&model.encoder_prefix(m));
        g.extend(
            model
                .params()
                .trainable_with_prefix(&format!("{head}.{name}")),
        );
        main.push(g);
        let excite = format!(".excite.{name}.");
        bypass.push(
            fusion
                .iter()
                .filter(|(n, _)| n.contains(".squeeze.") || n.contains(&excite))
                .cloned()
                .collect(),
        );
    }
    Ok((main, bypass))
}

/// `μ = Σ‖g‖² / Σ‖θ‖²` over a group (a parameter without gradient contributes 0 to the
/// numerator); 0 when the group's weights are all 0.
pub fn group_speed(grads: &GradStore, group: &[(String, Var)]) -> Result<f64> {
    let sq = |t: &candle_core::Tensor| -> Result<f64> {
        Ok(t.to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?)
    };
    let mut g2 = 0.0;
    let mut w2 = 0.0;
    for (_, v) in group {
        if let Some(g) = grads.get(v.as_tensor()) {
            g2 += sq(g)?;
        }
        w2 += sq(v.as_tensor())?;
    }
    Ok(if w2 > 0.0 { g2 / w2 } else { 0.0 })
}

/// The greedy method; see the [module docs](self).
#[derive(Debug)]
pub struct Greedy {
    cfg: GreedyConfig,
    modalities: Vec<String>,
    state: GreedyState,
    /// The mode of the step in flight (set by `forward`).
    current: Option<usize>,
    // Per-epoch statistics.
    last_s: Vec<f64>,
    d_sum: f64,
    d_count: usize,
    steps: usize,
    rebalance_steps: usize,
    caring_counts: Vec<usize>,
    triggers: usize,
}

impl Greedy {
    pub fn new(cfg: GreedyConfig) -> Result<Self> {
        cfg.check()?;
        Ok(Self {
            cfg,
            modalities: Vec::new(),
            state: GreedyState::default(),
            current: None,
            last_s: Vec::new(),
            d_sum: 0.0,
            d_count: 0,
            steps: 0,
            rebalance_steps: 0,
            caring_counts: Vec::new(),
            triggers: 0,
        })
    }

    pub fn config(&self) -> &GreedyConfig {
        &self.cfg
    }

    /// The checkpointed state (accumulators, window).
    pub fn greedy_state(&self) -> &GreedyState {
        &self.state
    }

    fn ensure(&mut self, model: &dyn MultimodalModel) -> Result<()> {
        if self.modalities.as_slice() != model.modalities() {
            require_fusion(model)?;
            let n = model.modalities().len();
            self.modalities = model.modalities().to_vec();
            if self.state.acc_main.len() != n || self.state.acc_bypass.len() != n {
                self.state = GreedyState::new(n);
            }
            self.caring_counts = vec![0; n];
            self.last_s = vec![f64::NAN; n];
        }
        Ok(())
    }
}

impl Method for Greedy {
    fn name(&self) -> &str {
        "greedy"
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        _ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        self.ensure(model)?;
        check_batch_inputs("greedy", model, batch)?;
        self.current = self.state.mode();
        let mut control = FusionControl::default();
        if let Some(c) = self.current {
            control.constant_excitation = (0..self.modalities.len()).map(|m| m == c).collect();
        }
        Ok(model.forward_controlled(&batch.inputs, true, &control)?)
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        self.ensure(model)?;
        let mut parts = BTreeMap::new();
        parts.insert(
            "fused".to_string(),
            cross_entropy(&out.fused_logits, &batch.labels)?.detach(),
        );
        let mut total: Option<candle_core::Tensor> = None;
        for (name, z) in self.modalities.iter().zip(&out.per_modality_logits) {
            let ce = cross_entropy(z, &batch.labels)?;
            parts.insert(name.clone(), ce.detach());
            total = Some(match total {
                Some(t) => (t + ce)?,
                None => ce,
            });
        }
        let total = total.ok_or_else(|| ModbalError::Config("greedy: no modality".into()))?;
        Ok(LossTerms { total, parts })
    }

    fn modulate_grads(
        &mut self,
        grads: &mut GradStore,
        model: &dyn MultimodalModel,
        _batch: &Batch,
        _out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<()> {
        self.ensure(model)?;
        self.steps += 1;
        if let Some(c) = self.current.take() {
            self.rebalance_steps += 1;
            self.caring_counts[c] += 1;
            self.state.rebalance_step();
            return Ok(());
        }
        let (main, bypass) = param_groups(model)?;
        let mu_main = main
            .iter()
            .map(|g| group_speed(grads, g))
            .collect::<Result<Vec<_>>>()?;
        let mu_bypass = bypass
            .iter()
            .map(|g| group_speed(grads, g))
            .collect::<Result<Vec<_>>>()?;
        let unlocked = ctx.epoch >= self.cfg.warmup_epochs;
        let (s, trigger) = self.state.regular_step(
            &mu_bypass,
            &mu_main,
            unlocked,
            self.cfg.epsilon,
            self.cfg.window,
        );
        let d = if s.len() == 2 {
            Some(s[0] - s[1]).filter(|d| d.is_finite())
        } else {
            spread(&s)
        };
        if let Some(d) = d {
            self.d_sum += d;
            self.d_count += 1;
        }
        self.last_s = s;
        if trigger.is_some() {
            self.triggers += 1;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        if self.modalities.is_empty() {
            return Ok(());
        }
        if self.last_s.iter().all(|v| v.is_finite()) {
            ctx.log.set("s", by_name(&self.modalities, &self.last_s));
        }
        if self.d_count > 0 {
            ctx.log.set("d", self.d_sum / self.d_count as f64);
        }
        if self.steps > 0 {
            ctx.log.set(
                "rebalance_frac",
                self.rebalance_steps as f64 / self.steps as f64,
            );
        }
        let counts: Vec<f64> = self.caring_counts.iter().map(|&c| c as f64).collect();
        ctx.log.set("caring", by_name(&self.modalities, &counts));
        ctx.log.set("triggers", self.triggers as f64);
        self.d_sum = 0.0;
        self.d_count = 0;
        self.steps = 0;
        self.rebalance_steps = 0;
        self.caring_counts.iter_mut().for_each(|c| *c = 0);
        self.triggers = 0;
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        crate::util::state_json(&self.state)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let Some(s) = crate::util::saved_state::<GreedyState>("greedy", state)? else {
            return Ok(());
        };
        if s.acc_main.len() != s.acc_bypass.len() {
            return Err(ModbalError::Config(format!(
                "greedy: checkpoint state has {} main and {} bypass accumulators",
                s.acc_main.len(),
                s.acc_bypass.len()
            )));
        }
        self.state = s;
        Ok(())
    }
}

/// Registry entry: `[method] name = "greedy"` with [`GreedyConfig`]'s keys.
impl MethodParams for GreedyConfig {
    fn check(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(ModbalError::Config(format!(
                "method greedy: epsilon must be finite and >= 0, got {}",
                self.epsilon
            )));
        }
        if self.window == 0 {
            return Err(ModbalError::Config(
                "method greedy: window must be >= 1".into(),
            ));
        }
        if self.ratio == 0 {
            return Err(ModbalError::Config(
                "method greedy: ratio must be >= 1".into(),
            ));
        }
        Ok(())
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Mmtm { ratio: self.ratio }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Greedy::new(self.clone())?))
    }
}
