//! `lfm`: Learning the modality gap (Yang, Wan, Jiang & Xu, "Facilitating Multimodal
//! Classification via Dynamically Learning Modality Gap", NeurIPS 2024; official code
//! njustkmg/NeurIPS24-LFM, `Crema_epoch.py`, `Crema_epoch_learnable.py`). See
//! `docs/methods/lfm.md`.
//!
//! # Maths
//! Sum head (one classifier per modality, the official `cls_a`, `cls_v`), per-modality logits
//! `z_m: [B, C]`. The supervised multimodal loss is the cross-entropy of the mean logits and the
//! unsupervised cross-modal matching loss is the official `Alignment` of every modality pair,
//! averaged over the pairs (M = 2: the one pair; BalanceBenchmark's M-modality form):
//!
//! ```text
//! L_cls   = CE( (1/M) Σ_m z_m , y )                        (official: CE(0.5·o_v + 0.5·o_a))
//! A(p, q) = ½ [ KL(m̄ ‖ p) + KL(m̄ ‖ q) ],  m̄ = (p + q)/2,   p = softmax(z_a), q = softmax(z_b)
//!           (torch `kl_div(p.log(), m̄, 'batchmean')` is KL(m̄ ‖ p): batch sum / B)
//! L_align = mean over pairs a < b of A(softmax z_a, softmax z_b)
//! L       = s · ( α_cls · L_cls + α_align · L_align ),    s = 2 (official)
//! ```
//!
//! # How α moves (`strategy`)
//! * `fitted` (default; the official `Crema_epoch.py`, the README's command): the official
//!   degree-5 polynomial fitted to a learnt α trajectory, `α_cls(e) = Σ_i c_i e'^i`,
//!   `α_align = 1 − α_cls`, with `e' = e·schedule_epochs/E` (the official 200 epochs).
//! * `learned` (the official `Crema_epoch_learnable.py`, BalanceBenchmark's `LFM_trainer`):
//!   before each epoch's first step, on the first half of its first batch (eval mode),
//!
//!   ```text
//!   v     = ∇_θ L_cls                                     (every trainable tensor)
//!   h     = (H_θ L_total · v)[θ₀]   ≈ (∇_{θ₀}L_total(θ + εv) − ∇_{θ₀}L_total(θ − εv)) / 2ε
//!   α_align ← clip(α_align − η_e · mean(h), 0.05, 0.95),   α_cls = 1 − α_align
//!   ```
//!
//!   with `L_total = α_cls L_cls + α_align L_align` (no factor s, as there), θ₀ the first
//!   weight tensor of the first modality's encoder (the official `hessian_vector_prod[0]`,
//!   `audio_net.conv1.weight`; `hvp_scope = "all"` averages every tensor instead),
//!   `ε = hvp_eps/‖v‖` (a central difference: candle has no second-order autograd), and
//!   `η_e = lr_alpha / 2^{⌊e'/20⌋}` (the official halving at `epoch % 20 == 0`).
//! * `fixed`: constant `α_cls`, `α_align = 1 − α_cls`.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `alpha_cls`, `alpha_align` (this epoch's weights), `hvp` (learned: the mean HVP entry that
//! moved α), `loss.cls`, `loss.align` (epoch means).

use crate::params::MethodParams;
use candle_core::{backprop::GradStore, DType, Tensor, Var, D};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
    StepOutput,
};
use modbal_encoders::FusionConfig;
use modbal_tensors::ops::{log_softmax, softmax};
use modbal_tensors::{cross_entropy, Optimizer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the loss weights move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LfmStrategy {
    /// The official polynomial schedule of `Crema_epoch.py` (default).
    Fitted,
    /// The official bi-level (hypergradient) update of `Crema_epoch_learnable.py`.
    Learned,
    /// Constant weights.
    Fixed,
}

/// Which HVP entries move α in the `learned` strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HvpScope {
    /// The first weight tensor of the first modality's encoder (official `[0]`). Default.
    First,
    /// The mean over every trainable element.
    All,
}

/// The official `getAlpha_Learnable_Fitted` coefficients of α_cls (`coef_alpha1`);
/// `coef_alpha2` is `1 − α_cls` term by term.
pub const FITTED_COEFFS: [f64; 6] = [
    2.04623704e-01,
    3.35472727e-03,
    1.22989557e-04,
    -2.92947416e-06,
    2.23835486e-08,
    -5.39717505e-11,
];

/// Options of `lfm` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "lfm"
/// strategy = "fitted"     # or "learned", "fixed"
/// schedule_epochs = 200   # the epochs the fitted polynomial and the lr halving refer to
/// alpha_cls = 0.5         # fixed: the supervised weight
/// alpha_align_init = 0.95 # learned: the starting matching weight
/// lr_alpha = 1e-4         # learned: step size of α, halved every 20 schedule epochs
/// hvp_eps = 0.01          # learned: ‖εv‖ of the central difference
/// hvp_scope = "first"     # learned: "first" or "all"
/// scale = 2.0             # s of L = s·(α_cls L_cls + α_align L_align)
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LfmConfig {
    /// Default `fitted`: the official `Crema_epoch.py` (the README's run command).
    pub strategy: LfmStrategy,
    /// Length of the schedule the fitted polynomial and the halving of `lr_alpha` refer to;
    /// scaled to the run (`e' = e·schedule_epochs/E`). Default 200 (official `crema.json`
    /// `epoch_dict`). 0 = the run's epochs unscaled.
    pub schedule_epochs: usize,
    /// `fixed`: α_cls in [0, 1]. Default 0.5 (equal weights).
    pub alpha_cls: f64,
    /// `learned`: initial α_align in [0.05, 0.95]. Default 0.95 (official
    /// `cls_k = [0.05, 0.95]`; BalanceBenchmark starts at 0.05).
    pub alpha_align_init: f64,
    /// `learned`: step size η of α, > 0. Default 1e-4 (official `lr_alpha`).
    pub lr_alpha: f64,
    /// `learned`: the norm of the central-difference step `εv`, > 0. Default 0.01.
    pub hvp_eps: f64,
    /// `learned`: which HVP entries move α. Default `first` (official).
    pub hvp_scope: HvpScope,
    /// Overall factor s, > 0. Default 2 (official `loss = 2 * (...)`).
    pub scale: f64,
}

impl Default for LfmConfig {
    fn default() -> Self {
        Self {
            strategy: LfmStrategy::Fitted,
            schedule_epochs: 200,
            alpha_cls: 0.5,
            alpha_align_init: 0.95,
            lr_alpha: 1e-4,
            hvp_eps: 0.01,
            hvp_scope: HvpScope::First,
            scale: 2.0,
        }
    }
}

impl LfmConfig {
    /// Checks every value; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModbalError::Config(format!("method lfm: {m}")));
        if !(self.alpha_cls.is_finite() && (0.0..=1.0).contains(&self.alpha_cls)) {
            return err(format!(
                "alpha_cls must be in [0, 1], got {}",
                self.alpha_cls
            ));
        }
        if !(self.alpha_align_init.is_finite() && (0.05..=0.95).contains(&self.alpha_align_init)) {
            return err(format!(
                "alpha_align_init must be in [0.05, 0.95], got {}",
                self.alpha_align_init
            ));
        }
        for (k, v) in [
            ("lr_alpha", self.lr_alpha),
            ("hvp_eps", self.hvp_eps),
            ("scale", self.scale),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return err(format!("{k} must be finite and > 0, got {v}"));
            }
        }
        Ok(())
    }

    /// `e' = e·schedule_epochs/E` (the epoch on the schedule's axis).
    pub fn schedule_epoch(&self, epoch: usize, run_epochs: usize) -> f64 {
        if self.schedule_epochs == 0 || run_epochs == 0 {
            epoch as f64
        } else {
            epoch as f64 * self.schedule_epochs as f64 / run_epochs as f64
        }
    }

    /// The `learned` step size of epoch `epoch`: `lr_alpha / 2^{⌊e'/20⌋}`.
    pub fn lr_at(&self, epoch: usize, run_epochs: usize) -> f64 {
        let halvings = (self.schedule_epoch(epoch, run_epochs) / 20.0).floor() as i32;
        self.lr_alpha / 2f64.powi(halvings)
    }
}

/// The official fitted `α_cls` at schedule epoch `e`.
pub fn fitted_alpha_cls(e: f64) -> f64 {
    FITTED_COEFFS
        .iter()
        .enumerate()
        .map(|(i, c)| c * e.powi(i as i32))
        .sum()
}

/// The official `Alignment(z_p, z_q)`: `½[KL(m̄‖p) + KL(m̄‖q)]`, batch mean (scalar tensor).
pub fn alignment(zp: &Tensor, zq: &Tensor) -> Result<Tensor> {
    let (lp, lq) = (log_softmax(zp, D::Minus1)?, log_softmax(zq, D::Minus1)?);
    let m = ((softmax(zp, D::Minus1)? + softmax(zq, D::Minus1)?)? * 0.5)?;
    let lm = m.clamp(1e-30, 1.0)?.log()?;
    let b = zp.dim(0)? as f64;
    let kl_p = (&m * (&lm - &lp)?)?.sum_all()?;
    let kl_q = (&m * (&lm - &lq)?)?.sum_all()?;
    Ok(((kl_p + kl_q)? * (0.5 / b))?)
}

/// `(L_cls, L_align)` of per-modality logits (at least two).
pub fn losses(z: &[Tensor], labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let m = z.len();
    if m < 2 {
        return Err(ModbalError::Config(format!(
            "method lfm: the cross-modal matching loss needs at least two modalities, got {m}"
        )));
    }
    let mut sum = z[0].clone();
    for t in &z[1..] {
        sum = (sum + t)?;
    }
    let cls = cross_entropy(&(sum / m as f64)?, labels)?;
    let mut align: Option<Tensor> = None;
    let mut pairs = 0usize;
    for a in 0..m {
        for b in a + 1..m {
            let t = alignment(&z[a], &z[b])?;
            align = Some(match align {
                Some(s) => (s + t)?,
                None => t,
            });
            pairs += 1;
        }
    }
    let align = (align.expect("m >= 2") / pairs as f64)?;
    Ok((cls, align))
}

/// `(v, H·v)` by parameter name, with `v = ∇_θ L_cls` and `H` the Hessian of
/// `L_total = (1 − α_align)·L_cls + α_align·L_align` at the model's parameters, on `batch`
/// (eval-mode forwards): the central difference `(∇L_total(θ + εv) − ∇L_total(θ − εv)) / 2ε`,
/// `ε = eps/‖v‖` (candle has no second-order autograd; the official code differentiates
/// twice). Tensors without a gradient are left out; the parameters are restored.
#[allow(clippy::type_complexity)]
pub fn hvp(
    model: &dyn MultimodalModel,
    batch: &Batch,
    alpha_align: f64,
    eps: f64,
) -> Result<(Vec<(String, Tensor)>, Vec<(String, Tensor)>)> {
    let vars: Vec<(String, Var)> = model.params().trainable();
    let a_cls = 1.0 - alpha_align;
    let out = model.forward_t(&batch.inputs, false)?;
    let (cls, _) = losses(&out.per_modality_logits, &batch.labels)?;
    let g = cls.backward()?;
    let dirs: Vec<Option<Tensor>> = vars
        .iter()
        .map(|(_, var)| g.get(var.as_tensor()).map(|g| g.detach()))
        .collect();
    let mut norm = 0.0;
    for d in dirs.iter().flatten() {
        norm += d
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    let norm = norm.sqrt();
    let v: Vec<(String, Tensor)> = vars
        .iter()
        .zip(&dirs)
        .filter_map(|((n, _), d)| d.as_ref().map(|d| (n.clone(), d.clone())))
        .collect();
    if norm == 0.0 || !norm.is_finite() {
        let zeros = v
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.zeros_like()?)))
            .collect::<Result<_>>()?;
        return Ok((v, zeros));
    }
    let eps = eps / norm;
    let originals: Vec<Tensor> = vars
        .iter()
        .map(|(_, var)| var.as_tensor().detach().copy())
        .collect::<candle_core::Result<_>>()?;
    let grads_at = |sign: f64| -> Result<GradStore> {
        for ((_, var), (orig, d)) in vars.iter().zip(originals.iter().zip(&dirs)) {
            if let Some(d) = d {
                var.set(&(orig + (d * (sign * eps))?)?)?;
            }
        }
        let out = model.forward_t(&batch.inputs, false)?;
        let (cls, align) = losses(&out.per_modality_logits, &batch.labels)?;
        let total = ((cls * a_cls)? + (align * alpha_align)?)?;
        Ok(total.backward()?)
    };
    let both = grads_at(1.0).and_then(|p| grads_at(-1.0).map(|m| (p, m)));
    for ((_, var), orig) in vars.iter().zip(&originals) {
        var.set(orig)?;
    }
    let (plus, minus) = both?;
    let mut hv = Vec::new();
    for (n, var) in &vars {
        let t = var.as_tensor();
        if let (Some(gp), Some(gm)) = (plus.get(t), minus.get(t)) {
            hv.push((n.clone(), ((gp - gm)? / (2.0 * eps))?));
        }
    }
    Ok((v, hv))
}

/// The LFM method; see the [module docs](self).
#[derive(Debug)]
pub struct Lfm {
    cfg: LfmConfig,
    /// The learned α_align (state).
    alpha_align: f64,
    /// This epoch's weights.
    weights: (f64, f64),
    /// The epoch whose `learned` update was made.
    updated_epoch: Option<usize>,
    hvp: Option<f64>,
}

impl Lfm {
    pub fn new(cfg: LfmConfig) -> Result<Self> {
        cfg.validate()?;
        let a = cfg.alpha_align_init;
        Ok(Self {
            cfg,
            alpha_align: a,
            weights: (1.0 - a, a),
            updated_epoch: None,
            hvp: None,
        })
    }

    pub fn config(&self) -> &LfmConfig {
        &self.cfg
    }

    /// `(α_cls, α_align)` in force.
    pub fn weights(&self) -> (f64, f64) {
        self.weights
    }

    /// The weights of epoch `epoch` of a run of `run_epochs` (fitted and fixed; learned: the
    /// current state).
    pub fn weights_at(&self, epoch: usize, run_epochs: usize) -> (f64, f64) {
        match self.cfg.strategy {
            LfmStrategy::Fitted => {
                let a = fitted_alpha_cls(self.cfg.schedule_epoch(epoch, run_epochs));
                (a, 1.0 - a)
            }
            LfmStrategy::Fixed => (self.cfg.alpha_cls, 1.0 - self.cfg.alpha_cls),
            LfmStrategy::Learned => (1.0 - self.alpha_align, self.alpha_align),
        }
    }

    /// The `learned` hypergradient entry `mean((H L_total · ∇L_cls)[scope])` on `batch`
    /// (see [`hvp`]; eval-mode forwards, parameters restored afterwards).
    pub fn hvp_entry(&self, model: &dyn MultimodalModel, batch: &Batch) -> Result<f64> {
        let vars: Vec<(String, Var)> = model.params().trainable();
        let scope: Vec<String> = match self.cfg.hvp_scope {
            HvpScope::All => vars.iter().map(|(n, _)| n.clone()).collect(),
            HvpScope::First => {
                let prefix = model.encoder_prefix(0);
                let group = modbal_modulate::group_vars(&vars, &prefix);
                let first = group.iter().find(|(_, v)| v.rank() >= 2).ok_or_else(|| {
                    ModbalError::Data(format!(
                        "method lfm: no weight tensor in {prefix} for the hypergradient"
                    ))
                })?;
                vec![first.0.clone()]
            }
        };
        let (_, hv) = hvp(model, batch, self.alpha_align, self.cfg.hvp_eps)?;
        let (mut sum, mut count) = (0.0, 0usize);
        for (n, h) in &hv {
            if scope.contains(n) {
                sum += h.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
                count += h.elem_count();
            }
        }
        Ok(if count == 0 { 0.0 } else { sum / count as f64 })
    }

    fn learned_update(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        ctx: &RunContext,
    ) -> Result<()> {
        let half = (batch.len() / 2).max(1);
        let sub = Batch {
            inputs: batch
                .inputs
                .iter()
                .map(|t| t.narrow(0, 0, half))
                .collect::<candle_core::Result<_>>()?,
            labels: batch.labels.narrow(0, 0, half)?,
            sample_ids: batch.sample_ids[..half].to_vec(),
        };
        let h = self.hvp_entry(model, &sub)?;
        let lr = self.cfg.lr_at(ctx.epoch, ctx.num_epochs);
        self.alpha_align = (self.alpha_align - lr * h).clamp(0.05, 0.95);
        self.hvp = Some(h);
        Ok(())
    }
}

impl Method for Lfm {
    fn name(&self) -> &str {
        "lfm"
    }

    fn on_stage_start(&mut self, model: &dyn MultimodalModel, _ctx: &mut RunContext) -> Result<()> {
        let m = model.modalities().len();
        if m < 2 {
            return Err(ModbalError::Config(format!(
                "method lfm: the cross-modal matching loss needs at least two modalities, the \
                 model has {:?}",
                model.modalities()
            )));
        }
        Ok(())
    }

    fn on_epoch_start(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.weights = self.weights_at(ctx.epoch, ctx.num_epochs);
        self.hvp = None;
        Ok(())
    }

    fn loss(
        &mut self,
        _model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        let (cls, align) = losses(&out.per_modality_logits, &batch.labels)?;
        let (a_cls, a_align) = self.weights;
        let total = (((&cls * a_cls)? + (&align * a_align)?)? * self.cfg.scale)?;
        let mut parts = BTreeMap::new();
        parts.insert("cls".to_string(), cls.detach());
        parts.insert("align".to_string(), align.detach());
        Ok(LossTerms { total, parts })
    }

    fn train_step(
        &mut self,
        model: &dyn MultimodalModel,
        mut batch: Batch,
        opt: &mut dyn Optimizer,
        ctx: &mut RunContext,
    ) -> Result<StepOutput> {
        if self.cfg.strategy == LfmStrategy::Learned && self.updated_epoch != Some(ctx.epoch) {
            self.learned_update(model, &batch, ctx)?;
            self.updated_epoch = Some(ctx.epoch);
            self.weights = (1.0 - self.alpha_align, self.alpha_align);
        }
        self.modulate_inputs(&mut batch, ctx)?;
        let out = self.forward(model, &batch, ctx)?;
        let loss = self.loss(model, &batch, &out, ctx)?;
        let value = loss.value_logged(ctx)?;
        let grads = self.backward(model, &batch, &out, &loss, ctx)?;
        opt.step(&grads)?;
        self.after_step(model, &batch, &out, ctx)?;
        Ok(StepOutput {
            loss: value,
            output: out.detach(),
        })
    }

    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        ctx.log.set("alpha_cls", self.weights.0);
        ctx.log.set("alpha_align", self.weights.1);
        if let Some(h) = self.hvp {
            ctx.log.set("hvp", h);
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "alpha_align": self.alpha_align,
            "updated_epoch": self.updated_epoch,
        })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() {
            return Ok(());
        }
        if let Some(a) = state["alpha_align"].as_f64() {
            self.alpha_align = a;
        }
        self.updated_epoch = serde_json::from_value(state["updated_epoch"].clone())
            .map_err(|e| ModbalError::Data(format!("lfm state updated_epoch: {e}")))?;
        Ok(())
    }
}

/// Registry entry: `[method] name = "lfm"` with [`LfmConfig`]'s keys; sum head.
impl MethodParams for LfmConfig {
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Sum
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Lfm::new(self.clone())?))
    }
}
