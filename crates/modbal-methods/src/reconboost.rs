//! `reconboost`: modality-alternating boosting with reconcilement (Hua, Xu, Bao, Yang & Huang,
//! "ReconBoost: Boosting Can Achieve Modality Reconcilement", ICML 2024; official code
//! huacong/ReconBoost). See `docs/methods/reconboost.md`.
//!
//! # Schedule
//! The run is cut into rounds `t = 0, 1, …`. Each round is two stages:
//! - `boost:<m>` (`boost_epochs` epochs): only modality `m = order[t mod M]`'s learner (its
//!   encoder and its head slice) trains, on the reconcilement loss below.
//! - `rectify` (`rectify_epochs` epochs): global rectification, every learner and β on the
//!   ensemble cross-entropy.
//!
//! Epochs left over after the last whole round form one last `rectify` stage. The loop builds a
//! fresh optimizer at every stage, as the official code re-creates its SGD for every phase.
//!
//! # Maths
//! Learner `m`'s logits are `z_m` (the head's per-modality logits; with the additive heads
//! `Σ_m z_m` is the fused logit). The ensemble is `F = β·Σ_m z_m`, with β a learned scalar (the
//! official "boost rate", initialised to 1). In a boost stage of modality `m`, with
//! `q = softmax(β·Σ_{k≠m} sg[z_k])` the other learners' ensemble prediction and `p = softmax(z_m)`:
//!
//! ```text
//! L_boost = mean_i −((w1 − w2·q_{i,y_i}) / C) · log p_{i,y_i}            (official train.py)
//! ∂L_boost/∂z_m,i = ((w1 − w2·q_{i,y_i}) / C) · (p_i − e_{y_i}) / B
//! L_mem   = α · mean_{i,c} (softmax(z_m)_{i,c} − softmax(z_prev)_{i,c})²  (memory consolidation)
//! L_rect  = CE(β·Σ_m z_m, y)                                             (global rectification)
//! ```
//!
//! `L_boost` is a sample-reweighted cross-entropy. Samples the other modalities already classify
//! well get a smaller weight, so the learner fits what the ensemble gets wrong: the boosting step.
//! The official code keeps only the true-class part of the paper's KL reconcilement, and divides
//! by `C` (a `.mean(-1)` over classes). `z_prev` is the learner of the previous boost stage. The
//! official code detaches both sides of `L_mem`, so the term has no gradient ([`Memory::Logged`]).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `stage` (`"boost:<m>"` or `"rectify"`), `round`, `beta`, and in boost stages the means of
//! `q_y` (how much the others already know) and of the sample weight `(w1 − w2·q_y)/C`. The loss
//! parts are `loss.boost`, `loss.memory` or `loss.rectify`.

use crate::params::MethodParams;
use candle_core::{backprop::GradStore, DType, Tensor, Var};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
    StageSpec,
};
use modbal_encoders::FusionConfig;
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What the memory-consolidation term does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Memory {
    /// Its value is added to the loss with both sides detached, so it has no gradient (official
    /// `train.py`: `softmax(out).detach()` against `softmax(pre_out).detach()`). Default.
    #[default]
    Logged,
    /// The gradient flows through the current learner's softmax (the paper's intent, read as a
    /// regulariser; not what the official code trains).
    Mse,
}

/// Which fusion head holds the learners' classifiers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconBoostHead {
    /// One `Linear(D_m → C)` per modality, summed. Each learner is its encoder and its own
    /// layer. Default.
    #[default]
    Sum,
    /// `Linear(ΣD_m → C)`. Learner `m` is its encoder, its column slice and a `1/M` share of the
    /// bias. A boost stage trains the whole head, whose other slices get no gradient.
    Concat,
}

/// One stage of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Round `round` boosts modality `modality` (index into the model's modalities).
    Boost { round: usize, modality: usize },
    /// Global rectification after round `round`. The trailing partial stage has `round` = the
    /// number of whole rounds.
    Rectify { round: usize },
}

/// Options of `reconboost` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "reconboost"
/// w1 = 5.0              # CE weight
/// w2 = 1.0              # reconcilement weight
/// alpha = 0.5           # memory-consolidation weight
/// memory = "logged"     # or "mse"
/// boost_epochs = 1      # epochs of each boost stage
/// rectify_epochs = 1    # epochs of each rectification stage
/// boost_rate = 1.0      # β₀
/// learn_beta = true
/// select_from_round = 3
/// order = []            # boosting order (modality names); [] = input order
/// head = "sum"          # or "concat"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconBoostConfig {
    /// Weight w1 of the cross-entropy in `L_boost`, > 0. Default 5: the official README's
    /// CREMA-D command (`--weight1 5`; AVE and ModelNet40: 4; MSA: 1). BalanceBenchmark's port
    /// also uses 5.
    pub w1: f64,
    /// Weight w2 of the reconcilement term, with `0 ≤ w2 < w1`, so that sample weights stay
    /// positive. Default 1: the official README (`--weight2 1`; MSA 0.25) and BalanceBenchmark.
    pub w2: f64,
    /// Weight α of memory consolidation, ≥ 0. Default 0.5 (official `--alpha 0.5`).
    pub alpha: f64,
    /// Gradient of the memory term. Default [`Memory::Logged`] (official).
    pub memory: Memory,
    /// Epochs of each boost stage, ≥ 1. Default 1: BalanceBenchmark's port (`T_epochs: 1`),
    /// whose runs UDI's Table 1 reports. The official README uses 4 (`--epochs_per_stage 4`) over
    /// hundreds of stages; the `reconboost/crema-d` preset sets it.
    pub boost_epochs: usize,
    /// Epochs of each rectification stage, ≥ 0 (0: no rectification). Default 1
    /// (BalanceBenchmark; official README `--correct_epoch 4`, set by the preset).
    pub rectify_epochs: usize,
    /// Initial β, > 0. Default 1 (official `--boost_rate 1.0`).
    pub boost_rate: f64,
    /// Whether β is learned in the rectification stages (official: a parameter of the
    /// phase-2 optimizer). Default true. β is updated by SGD with momentum 0.9 and weight decay
    /// 5e-4 (official `train.py`, phase-2 optimizer) at the epoch's learning rate, with the
    /// momentum reset at every rectification stage.
    pub learn_beta: bool,
    /// Rounds before this one are never selected as the run's result. Default 3: the official
    /// code evaluates after each stage's rectification from stage 3 on. If the run has no such
    /// round, the last rectification is selectable.
    pub select_from_round: usize,
    /// The boosting order by modality name. Default empty: the model's input order (official
    /// CREMA-D / AVE: audio, visual).
    pub order: Vec<String>,
    /// The fusion head. Default [`ReconBoostHead::Sum`] (an additive head, as the official
    /// shared head applied per modality and summed).
    pub head: ReconBoostHead,
}

impl Default for ReconBoostConfig {
    fn default() -> Self {
        Self {
            w1: 5.0,
            w2: 1.0,
            alpha: 0.5,
            memory: Memory::Logged,
            boost_epochs: 1,
            rectify_epochs: 1,
            boost_rate: 1.0,
            learn_beta: true,
            select_from_round: 3,
            order: Vec::new(),
            head: ReconBoostHead::Sum,
        }
    }
}

impl ReconBoostConfig {
    /// Modality indices in boosting order.
    pub fn order_of(&self, modalities: &[String]) -> Result<Vec<usize>> {
        if self.order.is_empty() {
            return Ok((0..modalities.len()).collect());
        }
        let mut idx = Vec::with_capacity(self.order.len());
        for name in &self.order {
            let i = modalities.iter().position(|m| m == name).ok_or_else(|| {
                ModbalError::Config(format!(
                    "method reconboost: order names modality \"{name}\", which the model does not \
                     have ({modalities:?})"
                ))
            })?;
            if idx.contains(&i) {
                return Err(ModbalError::Config(format!(
                    "method reconboost: order names \"{name}\" twice"
                )));
            }
            idx.push(i);
        }
        if idx.len() != modalities.len() {
            return Err(ModbalError::Config(format!(
                "method reconboost: order {:?} must list every modality of the model \
                 ({modalities:?})",
                self.order
            )));
        }
        Ok(idx)
    }

    /// The stage plan of a run of `epochs` epochs over `modalities`: whole rounds of
    /// `boost:<m>` (`boost_epochs`) then `rectify` (`rectify_epochs`), then one `rectify` stage
    /// with the epochs left over.
    pub fn plan(&self, epochs: usize, modalities: &[String]) -> Result<Vec<(Phase, usize)>> {
        let order = self.order_of(modalities)?;
        if order.len() < 2 {
            return Err(ModbalError::Config(format!(
                "method reconboost: boosting alternates between modalities; the model has \
                 {modalities:?}"
            )));
        }
        let round = self.boost_epochs + self.rectify_epochs;
        let mut plan = Vec::new();
        let mut left = epochs;
        let mut t = 0;
        while left >= round {
            plan.push((
                Phase::Boost {
                    round: t,
                    modality: order[t % order.len()],
                },
                self.boost_epochs,
            ));
            if self.rectify_epochs > 0 {
                plan.push((Phase::Rectify { round: t }, self.rectify_epochs));
            }
            left -= round;
            t += 1;
        }
        if left > 0 {
            plan.push((Phase::Rectify { round: t }, left));
        }
        Ok(plan)
    }
}

/// The per-sample weights `(w1 − w2·q_y)/C` and `q_y` of a boost step, from the other learners'
/// logits `others` (already summed, `[B, C]`), β and the labels.
pub fn boost_weights(
    others: &Tensor,
    beta: f64,
    labels: &Tensor,
    w1: f64,
    w2: f64,
) -> Result<(Tensor, Tensor)> {
    let c = others.dim(1)?;
    let q = modbal_tensors::ops::softmax(&(others.detach() * beta)?, 1)?;
    let idx = labels.to_dtype(DType::U32)?.unsqueeze(1)?;
    let q_y = q.gather(&idx, 1)?.squeeze(1)?;
    let w = ((q_y.affine(-w2, w1))? / c as f64)?;
    Ok((w, q_y))
}

/// State carried across epochs and resume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct BetaState {
    beta: f64,
    momentum: f64,
    /// The stage whose momentum buffer `momentum` is.
    stage: usize,
}

/// The ReconBoost method; see the [module docs](self).
#[derive(Debug)]
pub struct ReconBoost {
    cfg: ReconBoostConfig,
    /// The plan of this run, kept by [`Method::stages`] for the hooks that only get a stage
    /// index (`trainable_prefixes`, `selectable`).
    plan: Mutex<Vec<(Phase, usize)>>,
    beta: Option<Var>,
    state: BetaState,
    lr: f64,
}

/// SGD momentum of β (official phase-2 optimizer, `train.py`).
pub const BETA_MOMENTUM: f64 = 0.9;
/// SGD weight decay of β (official phase-2 optimizer, `train.py`).
pub const BETA_WEIGHT_DECAY: f64 = 5e-4;

impl ReconBoost {
    pub fn new(cfg: ReconBoostConfig) -> Result<Self> {
        cfg.check()?;
        let state = BetaState {
            beta: cfg.boost_rate,
            momentum: 0.0,
            stage: 0,
        };
        Ok(Self {
            cfg,
            plan: Mutex::new(Vec::new()),
            beta: None,
            state,
            lr: 0.0,
        })
    }

    pub fn config(&self) -> &ReconBoostConfig {
        &self.cfg
    }

    /// The current β.
    pub fn beta(&self) -> f64 {
        self.state.beta
    }

    fn phase(&self, model: &dyn MultimodalModel, ctx: &RunContext) -> Result<Phase> {
        let plan = self.cfg.plan(ctx.num_epochs, model.modalities())?;
        plan.get(ctx.stage).map(|(p, _)| p.clone()).ok_or_else(|| {
            ModbalError::Config(format!(
                "method reconboost: stage {} outside its plan of {} stages",
                ctx.stage,
                plan.len()
            ))
        })
    }

    /// The stages that end a round (a rectification, or a boost stage when `rectify_epochs` is
    /// 0), with their rounds.
    fn round_ends(plan: &[(Phase, usize)]) -> Vec<(usize, usize)> {
        plan.iter()
            .enumerate()
            .filter_map(|(i, (p, _))| match p {
                Phase::Rectify { round } => Some((i, *round)),
                Phase::Boost { round, .. } => {
                    let next_rectifies =
                        matches!(plan.get(i + 1), Some((Phase::Rectify { .. }, _)));
                    (!next_rectifies).then_some((i, *round))
                }
            })
            .collect()
    }

    /// β as a tensor of the graph (a [`Var`] while it is learned, so that its gradient exists).
    fn beta_tensor(&mut self, like: &Tensor) -> Result<Tensor> {
        let b = Tensor::new(self.state.beta as f32, like.device())?.to_dtype(like.dtype())?;
        if !self.cfg.learn_beta {
            return Ok(b);
        }
        let v = Var::from_tensor(&b)?;
        let t = v.as_tensor().clone();
        self.beta = Some(v);
        Ok(t)
    }
}

impl Method for ReconBoost {
    fn name(&self) -> &str {
        "reconboost"
    }

    fn stages(&self, epochs: usize, modalities: &[String]) -> Vec<StageSpec> {
        match self.cfg.plan(epochs, modalities) {
            Ok(plan) => {
                if let Ok(mut cached) = self.plan.lock() {
                    cached.clone_from(&plan);
                }
                plan.into_iter()
                    .map(|(p, e)| StageSpec {
                        name: match p {
                            Phase::Boost { modality, .. } => {
                                format!("boost:{}", modalities[modality])
                            }
                            Phase::Rectify { .. } => "rectify".into(),
                        },
                        epochs: e,
                    })
                    .collect()
            }
            // The error itself is raised at the first stage start (`on_stage_start`); one stage
            // keeps the trainer's epoch count consistent until then.
            Err(_) => vec![StageSpec {
                name: "invalid".into(),
                epochs,
            }],
        }
    }

    /// Only the end of a round from round `select_from_round` on (official: evaluated after
    /// each stage's rectification, from stage 3); the last round end if the run has none.
    fn selectable(&self, ctx: &RunContext, stages: &[StageSpec]) -> bool {
        let Ok(plan) = self.plan.lock() else {
            return false;
        };
        let ends = Self::round_ends(&plan);
        let last_epoch = stages
            .get(ctx.stage)
            .is_some_and(|s| ctx.stage_epoch + 1 == s.epochs);
        let Some(&(_, round)) = ends.iter().find(|(i, _)| *i == ctx.stage) else {
            return false;
        };
        let is_last_end = ends.last().is_some_and(|(i, _)| *i == ctx.stage);
        last_epoch && (round >= self.cfg.select_from_round || is_last_end)
    }

    fn epoch_lr(&mut self, scheduled: f64, _ctx: &mut RunContext) -> Result<f64> {
        self.lr = scheduled;
        Ok(scheduled)
    }

    fn trainable_prefixes(&self, stage: usize, model: &dyn MultimodalModel) -> Vec<String> {
        let modalities = model.modalities();
        let phase = self
            .plan
            .lock()
            .ok()
            .and_then(|p| p.get(stage).map(|(p, _)| p.clone()));
        match phase {
            Some(Phase::Boost { modality, .. }) => {
                let head = match self.cfg.head {
                    ReconBoostHead::Sum => {
                        format!("{}.{}", model.head_prefix(), modalities[modality])
                    }
                    ReconBoostHead::Concat => model.head_prefix(),
                };
                vec![model.encoder_prefix(modality), head]
            }
            _ => vec![String::new()],
        }
    }

    fn on_stage_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.phase(model, ctx)?;
        if self.state.stage != ctx.stage {
            // A fresh phase-2 optimizer: β's momentum starts from zero.
            self.state.momentum = 0.0;
            self.state.stage = ctx.stage;
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
        let phase = self.phase(model, ctx)?;
        let z = &out.per_modality_logits;
        let mut parts = BTreeMap::new();
        match phase {
            Phase::Boost { round, modality } => {
                self.beta = None;
                let mut others: Option<Tensor> = None;
                for (k, zk) in z.iter().enumerate() {
                    if k != modality {
                        let d = zk.detach();
                        others = Some(match others {
                            None => d,
                            Some(o) => (o + d)?,
                        });
                    }
                }
                let others = others.ok_or_else(|| {
                    ModbalError::Config("method reconboost: one modality, nothing to boost".into())
                })?;
                let (w, q_y) = boost_weights(
                    &others,
                    self.state.beta,
                    &batch.labels,
                    self.cfg.w1,
                    self.cfg.w2,
                )?;
                let ce = modbal_tensors::cross_entropy_per_sample(&z[modality], &batch.labels)?;
                let boost = (ce * w.to_dtype(z[modality].dtype())?)?.mean_all()?;
                parts.insert("boost".to_string(), boost.detach());
                let mut total = boost;
                if round > 0 && self.cfg.alpha > 0.0 {
                    let order = self.cfg.order_of(model.modalities())?;
                    let prev = order[(round - 1) % order.len()];
                    let p_now = modbal_tensors::ops::softmax(&z[modality], 1)?;
                    let p_now = match self.cfg.memory {
                        Memory::Logged => p_now.detach(),
                        Memory::Mse => p_now,
                    };
                    let p_prev = modbal_tensors::ops::softmax(&z[prev].detach(), 1)?;
                    let mem = ((p_now - p_prev)?.sqr()?.mean_all()? * self.cfg.alpha)?;
                    parts.insert("memory".to_string(), mem.detach());
                    total = (total + mem)?;
                }
                ctx.log.add_mean("q_y", scalar(&q_y.mean_all()?)?);
                ctx.log.add_mean("weight", scalar(&w.mean_all()?)?);
                Ok(LossTerms { total, parts })
            }
            Phase::Rectify { .. } => {
                let beta = self.beta_tensor(&out.fused_logits)?;
                let scaled = out.fused_logits.broadcast_mul(&beta)?;
                let total = cross_entropy(&scaled, &batch.labels)?;
                parts.insert("rectify".to_string(), total.detach());
                Ok(LossTerms { total, parts })
            }
        }
    }

    fn modulate_grads(
        &mut self,
        grads: &mut GradStore,
        _model: &dyn MultimodalModel,
        _batch: &Batch,
        _out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        let Some(beta) = self.beta.take() else {
            return Ok(());
        };
        let Some(g) = grads.remove(beta.as_tensor()) else {
            return Ok(());
        };
        let g = scalar(&g)? + BETA_WEIGHT_DECAY * self.state.beta;
        self.state.momentum = BETA_MOMENTUM * self.state.momentum + g;
        let next = self.state.beta - self.lr * self.state.momentum;
        if !next.is_finite() {
            return Err(ModbalError::Data(format!(
                "method reconboost: the boost rate β became {next} (gradient {g})"
            )));
        }
        self.state.beta = next;
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let phase = self.phase(model, ctx)?;
        let (stage, round) = match phase {
            Phase::Boost { round, modality } => {
                (format!("boost:{}", model.modalities()[modality]), round)
            }
            Phase::Rectify { round } => ("rectify".to_string(), round),
        };
        ctx.log.set("stage", stage);
        ctx.log.set("round", round as u64);
        ctx.log.set("beta", self.state.beta);
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        crate::util::state_json(&self.state)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if let Some(s) = crate::util::saved_state("reconboost", state)? {
            self.state = s;
        }
        Ok(())
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Registry entry: `[method] name = "reconboost"` with [`ReconBoostConfig`]'s keys.
impl MethodParams for ReconBoostConfig {
    fn check(&self) -> Result<()> {
        let err = |m: String| Err(ModbalError::Config(format!("method reconboost: {m}")));
        if !(self.w1.is_finite() && self.w1 > 0.0) {
            return err(format!("w1 must be finite and > 0, got {}", self.w1));
        }
        if !(self.w2.is_finite() && self.w2 >= 0.0 && self.w2 < self.w1) {
            return err(format!(
                "w2 must be finite with 0 <= w2 < w1 = {} (sample weights (w1 − w2·q_y)/C stay \
                 positive), got {}",
                self.w1, self.w2
            ));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return err(format!("alpha must be finite and >= 0, got {}", self.alpha));
        }
        if !(self.boost_rate.is_finite() && self.boost_rate > 0.0) {
            return err(format!(
                "boost_rate must be finite and > 0, got {}",
                self.boost_rate
            ));
        }
        if self.boost_epochs == 0 {
            return err("boost_epochs must be >= 1".into());
        }
        Ok(())
    }
    fn fusion(&self) -> FusionConfig {
        match self.head {
            ReconBoostHead::Sum => FusionConfig::Sum,
            ReconBoostHead::Concat => FusionConfig::Concat,
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(ReconBoost::new(self.clone())?))
    }
}
