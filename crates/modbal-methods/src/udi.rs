//! UDI — Unidirectional Dynamic Interaction (Wang, Zhang, Liang, Qian, Hu; "Balanced Multimodal
//! Learning: An Unidirectional Dynamic Interaction Perspective"). No public code exists; this is
//! the paper's eq 1-16 and Algorithm 1 (appendix A.3). `docs/methods/udi.md` lists every open
//! choice.
//!
//! # Schedule (stages)
//! 1. **Unimodal stages**, one per modality in the model's order: modality m alone, trainable
//!    groups `encoder.<m>` and `head.<m>` (sum fusion: one fc per modality, eq 2), loss
//!    `L_cls^m = CE(W^m f^m + b^m, y)` (eq 3). The other modalities are encoded in eval mode and
//!    detached (their BatchNorm statistics do not move).
//! 2. **Anchor** a: best validation accuracy of its unimodal logits at the end of its stage;
//!    ties (within `tie_tolerance`) → lower mean predictive entropy `H(ŷ) = −Σ_c ŷ_c log ŷ_c`
//!    (§3.1). Or forced with `anchor = "<modality>"` (Table 4).
//! 3. **Follower stage** (Algorithm 1, lines 12-21): the anchor's groups are not trainable and its
//!    encoder runs with `train = false` (BatchNorm buffers bit-identical); the follower m trains on
//!
//!    `L^m = L_cls^m + α_con·L_con^m + α_com·L_com^m`                                   (eq 12)
//!
//!    * `L_con^m = (1/N) Σ_i JS(ŷ_i^a, ŷ_i^m)` (eq 4 per sample; `js_reduction = "mean"`, the
//!      default, on the scale of the batch-mean CE of eq 3) or `Σ_i JS_i` as eq 5 is printed
//!      (`js_reduction = "sum"`, N times larger: with N = 64 it outweighs L_cls and its gradient
//!      dominates the controller's inner products),
//!      [`modbal_info::divergence::js_divergence_logits`], anchor logits detached.
//!    * `L_com^m = Î_v(f^a; f^m)` (eq 8, 11), [`modbal_info::club::Club::vclub`] with x = f^a
//!      (detached), y = f^m. The q-network (eq 10, [`Club::q_update`] on detached features) is
//!      method-owned, created at the first follower batch (its dimensions are the features'),
//!      initialised from the run RNG; it is updated before the estimate (Algorithm 1 line 14,
//!      default) or after the model step (`q_update = "after_step"`), never in between.
//!    * α (eq 13-16, [`UdiController`]): on one mini-batch per epoch (`controller_batch`, default
//!      0) three losses are back-propagated separately over one graph: the *multimodal*
//!      classification loss `L_cls = CE(fuse(z^a, z^m), y)` (§3.3 "the task gradient (from the
//!      multimodal classification loss)", Algorithm 1 line 15 lists L_cls beside L_cls^m; the
//!      fusion is the inference one, `prediction`, with the frozen anchor's logits detached),
//!      L_con and L_com. ξ_k = ⟨g_cls, g_k⟩ over the follower's trainable parameters present in
//!      both stores, ξ̃ = ReLU(ξ), α_k = ξ̃_k / (ξ̃_con + ξ̃_com + ε). The new α is used from that
//!      batch on. `controller = false` keeps the fixed `alpha_con`, `alpha_com` (Table 3).
//!
//! # Inference and model selection
//! `predict` fuses the modalities' logits, label-free: by default their sum `Σ_m z_m` (A.6:
//! "summation fusion for two-modality datasets"; the sum head's fused logits), or the mean of
//! their probabilities, returned as `log(mean_m softmax(z_m))` (`prediction = "prob_mean"`,
//! §1's "mean-weighted averaging of unimodal outputs"). Only the epochs of the last follower
//! stage are [`Method::selectable`]: unimodal-stage epochs train single encoders and are logged,
//! never reported as UDI.
//!
//! # More than two modalities (appendix A.2, eq 26-27)
//! The modalities are ordered by the same rule (a, b, c, …; a forced anchor goes first). Follower
//! stage j trains `order[j + 1]` with everything before it frozen (eval mode):
//! `L_con = JS(ŷ^{guide}, ŷ^c)` with ŷ^{guide} the fused output of the guiding modalities (the
//! `prediction` fusion, as `predict`), `L_com = mean_p Î_v(f^p; f^c)` with one q-network per
//! guiding modality (eq 26; ½(·+·) for three modalities), total as eq 27. The controller's L_cls
//! is the CE of the fused prediction of the guiding modalities and the follower.
//!
//! # Checkpoints
//! The JSON [`Method::state`] holds the anchor, the order, α and the unimodal statistics, plus the
//! shape and optimizer step counts of the live q-networks; their parameters and optimizer moments
//! are [`Method::state_tensors`] (`checkpoints/last/method.safetensors`, names `q<k>.param.<name>`
//! and `q<k>.opt.<name>`). A run resumed inside a follower stage continues with the same q, so it
//! is bit-identical to an uninterrupted one.
//!
//! # Shapes
//! `features[m]: [B, D_m]`, `per_modality_logits[m]: [B, C]`; the controller's inner products are
//! scalars over the follower's parameters.

use crate::params::MethodParams;
use candle_core::{DType, Tensor, Var, D};
use modbal_core::{
    Batch, EvalOutputs, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext, StageSpec,
};
use modbal_encoders::FusionConfig;
use modbal_info::club::{Club, ClubConfig, DEFAULT_Q_LR, DEFAULT_Q_STEPS};
use modbal_info::divergence::{js_divergence_logits, Reduction};
use modbal_modulate::udi::{UdiController, UdiControllerConfig};
use modbal_tensors::ops::{log_softmax, softmax};
use modbal_tensors::{cross_entropy, AdamWConfig, OptimizerConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Reduction of the consistency loss over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsReduction {
    /// `Σ_i JS_i`, as eq 5 is printed (N times the mean).
    Sum,
    /// `(1/N) Σ_i JS_i`, on the scale of the batch-mean CE (eq 3). Default.
    Mean,
}

/// When the CLUB q-network takes its step(s) on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QUpdate {
    /// Before the estimate of the same batch (Algorithm 1, line 14 before line 15).
    BeforeEstimate,
    /// After the model's optimizer step, on the batch's detached features.
    AfterStep,
}

/// How the modalities' logits are fused into one prediction: by `predict` (all modalities), for
/// the controller's multimodal classification loss (guiding modalities and follower) and for the
/// guide of a later follower (M ≥ 3, eq 26's ŷ^{ab}).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// `Σ_m z_m`: summation fusion (A.6, "summation fusion for two-modality datasets"). Default.
    LogitSum,
    /// `log(mean_m softmax(z_m))`: mean of the probabilities ("mean-weighted averaging of
    /// unimodal outputs", §1), returned as its log (valid logits: CE on it is the NLL of the
    /// averaged probabilities).
    ProbMean,
}

impl Prediction {
    /// The fused logits of `z` (each `[B, C]`, at least one).
    pub fn fuse(self, z: &[Tensor]) -> Result<Tensor> {
        let Some(first) = z.first() else {
            return Err(ModbalError::Data(
                "method udi: fusing the logits of zero modalities".into(),
            ));
        };
        Ok(match self {
            Prediction::LogitSum => {
                let mut s = first.clone();
                for t in &z[1..] {
                    s = (s + t)?;
                }
                s
            }
            Prediction::ProbMean => softmax(&Tensor::stack(z, 0)?, D::Minus1)?
                .mean(0)?
                .clamp(1e-30, 1.0)?
                .log()?,
        })
    }
}

/// Options of `udi` (TOML `[method]` section). Defaults and their sources:
///
/// ```toml
/// modalities = []            # [] = the dataset's (all of them, any count >= 2)
/// stage_epochs = []          # [] = train.epochs split equally over the 2M-1 stages
/// anchor = ""                # "" = selected by §3.1's rule; a name forces it (Table 4)
/// tie_tolerance = 0.0
/// controller = true          # eq 13-16 (Table 2 "DC"); false = fixed alphas (Table 3)
/// alpha_con = 1.0
/// alpha_com = 1.0
/// eps = 1e-8
/// controller_batch = 0
/// js_reduction = "mean"      # eq 3's batch mean; "sum" = eq 5 as printed
/// club_hidden = 0            # 0 = 2 × anchor feature dim
/// club_lr = 5e-3
/// club_q_steps = 1           # Algorithm 1 line 14
/// q_update = "before_estimate"
/// prediction = "logit_sum"   # A.6 summation fusion; "prob_mean" = §1 averaging
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UdiConfig {
    /// The modalities to train, as a subset and order of the dataset's (the model gets them in
    /// this order; at least two). Empty: all of the dataset's. The stage plan is made for the
    /// model's modality count M; M ≥ 3 gives the sequential extension (A.2, eq 26-27).
    pub modalities: Vec<String>,
    /// Epochs of each stage: one per modality's unimodal stage (model order), then one per
    /// follower stage (M − 1 of them), 2M − 1 entries; must add up to `train.epochs`. Empty:
    /// equal split, the remainder going to the last stages (Algorithm 1 has per-modality epochs
    /// E^m, values not given).
    pub stage_epochs: Vec<usize>,
    /// Force the anchor (Table 4's "different anchor"); empty: best validation accuracy of the
    /// unimodal stages, ties → lower predictive entropy (§3.1).
    pub anchor: String,
    /// Accuracies within this distance of the best count as tied (§3.1 "similar validation
    /// performance"; no value in the paper). Default 0: exact ties only.
    pub tie_tolerance: f64,
    /// Dynamic controller (eq 13-16; the paper's method, Table 2 "DC"). `false`: fixed α.
    pub controller: bool,
    /// α_con when `controller = false` (Table 3 uses (0,1), (1,0), (0,0)). Default 1.
    pub alpha_con: f64,
    /// α_com when `controller = false`. Default 1.
    pub alpha_com: f64,
    /// ε of eq 16 ("a small ε > 0"). Default 1e-8 (`UdiControllerConfig`).
    pub eps: f64,
    /// The mini-batch (index within the follower epoch) on which α is recomputed (§3.3: "a single
    /// selected mini-batch", once per epoch). Default 0.
    pub controller_batch: usize,
    /// `mean` (default) or `sum` over the batch for L_con. Eq 5 is printed as a sum, which makes
    /// L_con N times its mean, growing with the batch size while the CE of eq 3 does not (N = 64
    /// in A.6; on synth-vec ≈ 13 nats against a CE of ≈ 0.7), so that α_con·L_con dominates
    /// eq 12 and g_con dominates ξ; the mean keeps eq 12's terms on one scale, as eq 3, 8 and 10
    /// (all batch means) do.
    pub js_reduction: JsReduction,
    /// Hidden size h of the CLUB q-network (h/2 units per network). 0: 2 × the anchor's feature
    /// dimension (the paper only says "lightweight"; `modbal_info::club` recommends ≥ 2·x_dim).
    pub club_hidden: usize,
    /// Adam learning rate of q. Default 5e-3 (official CLUB code, `DEFAULT_Q_LR`).
    pub club_lr: f64,
    /// q steps per model step. Default 1 (Algorithm 1 line 14, `DEFAULT_Q_STEPS`).
    pub club_q_steps: usize,
    /// When q is updated: `before_estimate` (Algorithm 1 order, default) or `after_step`.
    pub q_update: QUpdate,
    /// Fusion of the modalities' logits: `logit_sum` (default, A.6) or `prob_mean` (§1). Used
    /// by `predict`, by the controller's multimodal L_cls and by the guide of a later follower.
    pub prediction: Prediction,
}

impl Default for UdiConfig {
    fn default() -> Self {
        Self {
            modalities: Vec::new(),
            stage_epochs: Vec::new(),
            anchor: String::new(),
            tie_tolerance: 0.0,
            controller: true,
            alpha_con: 1.0,
            alpha_com: 1.0,
            eps: UdiControllerConfig::default().eps,
            controller_batch: 0,
            js_reduction: JsReduction::Mean,
            club_hidden: 0,
            club_lr: DEFAULT_Q_LR,
            club_q_steps: DEFAULT_Q_STEPS,
            q_update: QUpdate::BeforeEstimate,
            prediction: Prediction::LogitSum,
        }
    }
}

fn cfg_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModbalError::Config(format!("method udi: {}", msg.into())))
}

impl UdiConfig {
    /// Checks every option; errors name the key. The number of `stage_epochs` entries is checked
    /// here when `modalities` lists the modalities, else against the model ([`Self::check_plan`]).
    pub fn validate(&self) -> Result<()> {
        if self.modalities.len() == 1 {
            return cfg_err(format!(
                "modalities must list at least two modalities, got {:?}",
                self.modalities
            ));
        }

        for (i, a) in self.modalities.iter().enumerate() {
            if a.is_empty() || self.modalities[..i].contains(a) {
                return cfg_err(format!(
                    "modalities = {:?}: names must be non-empty and distinct",
                    self.modalities
                ));
            }
        }
        if !self.anchor.is_empty()
            && !self.modalities.is_empty()
            && !self.modalities.contains(&self.anchor)
        {
            return cfg_err(format!(
                "anchor = {:?} is not one of modalities = {:?}",
                self.anchor, self.modalities
            ));
        }
        if !self.modalities.is_empty() {
            self.check_plan(self.modalities.len())?;
        }
        if self.stage_epochs.contains(&0) {
            return cfg_err(format!(
                "stage_epochs = {:?}: every stage needs at least one epoch",
                self.stage_epochs
            ));
        }
        if !(self.tie_tolerance.is_finite() && self.tie_tolerance >= 0.0) {
            return cfg_err(format!(
                "tie_tolerance must be finite and >= 0, got {}",
                self.tie_tolerance
            ));
        }
        for (k, v) in [("alpha_con", self.alpha_con), ("alpha_com", self.alpha_com)] {
            if !(v.is_finite() && v >= 0.0) {
                return cfg_err(format!("{k} must be finite and >= 0, got {v}"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return cfg_err(format!("eps must be finite and > 0, got {}", self.eps));
        }
        if !(self.club_lr.is_finite() && self.club_lr > 0.0) {
            return cfg_err(format!(
                "club_lr must be finite and > 0, got {}",
                self.club_lr
            ));
        }
        if self.club_q_steps == 0 {
            return cfg_err("club_q_steps must be >= 1, got 0");
        }
        if self.club_hidden == 1 {
            return cfg_err("club_hidden must be 0 (automatic) or >= 2, got 1");
        }
        Ok(())
    }

    /// Checks the plan against a model of `m` modalities: UDI needs at least two, and explicit
    /// `stage_epochs` need 2m − 1 entries.
    pub fn check_plan(&self, m: usize) -> Result<()> {
        if m < 2 {
            return cfg_err(format!(
                "UDI needs at least two modalities, the model has {m}"
            ));
        }
        let stages = 2 * m - 1;
        if !self.stage_epochs.is_empty() && self.stage_epochs.len() != stages {
            return cfg_err(format!(
                "stage_epochs = {:?} must have {stages} entries ({m} unimodal stages, then {} \
                 follower stage(s))",
                self.stage_epochs,
                m - 1
            ));
        }
        Ok(())
    }

    /// Epochs per stage for a run of `epochs` epochs on `m` modalities (the trainer checks the
    /// sum: an equal split of fewer epochs than stages plans one epoch per stage and is rejected
    /// there).
    pub fn plan(&self, epochs: usize, m: usize) -> Vec<usize> {
        if !self.stage_epochs.is_empty() {
            return self.stage_epochs.clone();
        }
        let s = 2 * m.max(1) - 1;
        let base = epochs / s;
        if base == 0 {
            return vec![1; s];
        }
        let rem = epochs % s;
        (0..s).map(|i| base + usize::from(i >= s - rem)).collect()
    }
}

/// Validation statistics of one modality at the end of its unimodal stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnimodalStat {
    pub acc: f64,
    /// Mean predictive entropy (nats) of its softmax on the validation split.
    pub entropy: f64,
}

/// What `state()` saves.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct UdiState {
    anchor: Option<String>,
    /// Modalities by decreasing unimodal performance, anchor first (A.2's a, b, c…).
    order: Vec<String>,
    alpha_con: f64,
    alpha_com: f64,
    xi_con: Option<f64>,
    xi_com: Option<f64>,
    unimodal: BTreeMap<String, UnimodalStat>,
    controller_updates: usize,
    /// The live q-networks when the state was taken (their tensors are in `state_tensors`).
    q_networks: Vec<QNetMeta>,
}

/// What rebuilds one q-network before its tensors are loaded: its shape and its optimizer's
/// per-parameter step counts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct QNetMeta {
    x_dim: usize,
    y_dim: usize,
    hidden: usize,
    optimizer_kind: String,
    optimizer_steps: BTreeMap<String, u64>,
}

/// The UDI method; see the [module docs](self).
pub struct Udi {
    cfg: UdiConfig,
    controller: UdiController,
    st: UdiState,
    /// One q-network per guiding modality of the current follower stage (eq 26: one per previous
    /// modality), built at the stage's first batch.
    clubs: Vec<Club>,
    /// Controller ran in the current epoch (for logging).
    updated_this_epoch: bool,
}

impl std::fmt::Debug for Udi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udi")
            .field("cfg", &self.cfg)
            .field("anchor", &self.st.anchor)
            .field("alpha_con", &self.st.alpha_con)
            .field("alpha_com", &self.st.alpha_com)
            .finish_non_exhaustive()
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Udi {
    /// A method with a validated configuration.
    pub fn new(cfg: UdiConfig) -> Result<Self> {
        cfg.validate()?;
        let controller = UdiController::new(UdiControllerConfig { eps: cfg.eps })?;
        let st = UdiState {
            alpha_con: cfg.alpha_con,
            alpha_com: cfg.alpha_com,
            ..Default::default()
        };
        Ok(Self {
            cfg,
            controller,
            st,
            clubs: Vec::new(),
            updated_this_epoch: false,
        })
    }

    pub fn config(&self) -> &UdiConfig {
        &self.cfg
    }

    /// The anchor modality, once chosen.
    pub fn anchor(&self) -> Option<&str> {
        self.st.anchor.as_deref()
    }

    /// Current (α_con, α_com).
    pub fn alphas(&self) -> (f64, f64) {
        (self.st.alpha_con, self.st.alpha_com)
    }

    /// The controller's last inner products (ξ_con, ξ_com) of eq 14, once it has run.
    pub fn inner_products(&self) -> Option<(f64, f64)> {
        self.st.xi_con.zip(self.st.xi_com)
    }

    /// Stages `0..M` are the unimodal ones (M = the model's modality count), the rest follower
    /// stages.
    fn is_follower_stage(model: &dyn MultimodalModel, stage: usize) -> bool {
        stage >= model.modalities().len()
    }

    /// For follower stage `stage`: (the guiding modalities — anchor first —, the follower), as
    /// indices in the model's modality order. Follower stage j trains `order[j + 1]`, guided by
    /// `order[..=j]` (§3.2 for j = 0; A.2, eq 26-27 beyond).
    fn guide(&self, model: &dyn MultimodalModel, stage: usize) -> Result<(Vec<usize>, usize)> {
        let names = model.modalities();
        if self.st.order.len() != names.len() {
            return cfg_err(
                "the follower stage started without an anchor (no complete unimodal stages ran)",
            );
        }
        let idx = |n: &String| {
            names
                .iter()
                .position(|x| x == n)
                .ok_or_else(|| ModbalError::Unknown {
                    kind: "modality (method udi anchor)",
                    name: n.clone(),
                    valid: names.join(", "),
                })
        };
        let j = stage - names.len();
        if j + 1 >= names.len() {
            return cfg_err(format!("follower stage {j} of {} modalities", names.len()));
        }
        let prev = self.st.order[..=j]
            .iter()
            .map(idx)
            .collect::<Result<Vec<_>>>()?;
        Ok((prev, idx(&self.st.order[j + 1])?))
    }

    fn follower_vars(model: &dyn MultimodalModel, m: usize) -> Vec<(String, Var)> {
        let mut v = model
            .params()
            .trainable_with_prefix(&model.encoder_prefix(m));
        v.extend(model.params().trainable_with_prefix(&format!(
            "{}.{}",
            model.head_prefix(),
            model.modalities()[m]
        )));
        v
    }

    fn ensure_clubs(&mut self, f_p: &[Tensor], f_m: &Tensor, ctx: &mut RunContext) -> Result<()> {
        if self.clubs.len() == f_p.len() {
            return Ok(());
        }
        self.clubs.clear();
        for f_a in f_p {
            let club = self.new_club(f_a, f_m, ctx)?;
            self.clubs.push(club);
        }
        Ok(())
    }

    fn new_club(&self, f_a: &Tensor, f_m: &Tensor, ctx: &mut RunContext) -> Result<Club> {
        let (x_dim, y_dim) = (f_a.dim(1)?, f_m.dim(1)?);
        let hidden = if self.cfg.club_hidden == 0 {
            (2 * x_dim).max(2)
        } else {
            self.cfg.club_hidden
        };
        Ok(Club::with_dtype(
            self.club_config(x_dim, y_dim, hidden),
            &mut ctx.rng,
            f_a.device(),
            f_a.dtype(),
        )?)
    }

    fn club_config(&self, x_dim: usize, y_dim: usize, hidden: usize) -> ClubConfig {
        ClubConfig {
            x_dim,
            y_dim,
            hidden,
            q_optimizer: OptimizerConfig::Adamw(AdamWConfig {
                lr: self.cfg.club_lr,
                weight_decay: 0.0,
                ..AdamWConfig::default()
            }),
            q_steps: self.cfg.club_q_steps,
        }
    }

    /// §3.1 applied repeatedly (A.2's order a, b, c…): the forced anchor first if any, then
    /// best accuracy; among those within `tie_tolerance` of it, lower entropy; then model order.
    fn select_order(&self, names: &[String]) -> Result<Vec<String>> {
        let mut left: Vec<String> = names.to_vec();
        let mut order = Vec::with_capacity(names.len());
        if !self.cfg.anchor.is_empty() {
            if !names.contains(&self.cfg.anchor) {
                return Err(ModbalError::Unknown {
                    kind: "modality (method udi anchor)",
                    name: self.cfg.anchor.clone(),
                    valid: names.join(", "),
                });
            }
            left.retain(|n| *n != self.cfg.anchor);
            order.push(self.cfg.anchor.clone());
        }
        while !left.is_empty() {
            let next = self.select_best(&left)?;
            left.retain(|n| *n != next);
            order.push(next);
        }
        Ok(order)
    }

    fn select_best(&self, names: &[String]) -> Result<String> {
        let mut stats = Vec::new();
        for n in names {
            let Some(s) = self.st.unimodal.get(n) else {
                return cfg_err(format!(
                    "modality {n} has no unimodal validation result; cannot choose the anchor"
                ));
            };
            stats.push((n, s));
        }
        let best = stats
            .iter()
            .map(|(_, s)| s.acc)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut pick: Option<(&String, &UnimodalStat)> = None;
        for (n, s) in stats {
            if s.acc < best - self.cfg.tie_tolerance - 1e-12 {
                continue;
            }
            if pick.is_none_or(|(_, p)| s.entropy < p.entropy) {
                pick = Some((n, s));
            }
        }
        Ok(pick
            .expect("at least one modality reaches the best accuracy")
            .0
            .clone())
    }
}

/// Accuracy and mean predictive entropy of logits `[N, C]` against `labels`.
fn acc_entropy(logits: &Tensor, labels: &[u32]) -> Result<(f64, f64)> {
    let acc = modbal_core::stats::accuracy(logits, labels)?;
    let lp = log_softmax(logits, D::Minus1)?;
    let ent = (lp.exp()? * &lp)?.sum(D::Minus1)?.neg()?.mean_all()?;
    Ok((acc, scalar(&ent)?))
}

impl Method for Udi {
    fn name(&self) -> &str {
        "udi"
    }

    fn stages(&self, epochs: usize, modalities: &[String]) -> Vec<StageSpec> {
        let m = modalities.len();
        let plan = self.cfg.plan(epochs, m);
        plan.iter()
            .enumerate()
            .map(|(i, &e)| StageSpec {
                name: if i < m {
                    format!("unimodal:{}", modalities[i])
                } else if m == 2 {
                    "follower".into()
                } else {
                    format!("follower:{}", i - m + 1)
                },
                epochs: e,
            })
            .collect()
    }

    /// Only the last follower stage is UDI (for M = 2 the one follower stage; for M ≥ 3 the
    /// stage that trains the last modality, when every modality has been trained): the unimodal
    /// stages (and earlier follower stages) are logged but never selected as the best epoch.
    fn selectable(&self, ctx: &RunContext, stages: &[StageSpec]) -> bool {
        ctx.stage + 1 == stages.len()
            && stages
                .get(ctx.stage)
                .is_some_and(|s| s.name.starts_with("follower"))
    }

    fn trainable_prefixes(&self, stage: usize, model: &dyn MultimodalModel) -> Vec<String> {
        let names = model.modalities();
        let group = |m: usize| {
            vec![
                model.encoder_prefix(m),
                format!("{}.{}", model.head_prefix(), names[m]),
            ]
        };
        if !Self::is_follower_stage(model, stage) {
            return group(stage);
        }
        match self.guide(model, stage) {
            Ok((_, f)) => group(f),
            // The trainer reports "no trainable parameters match the prefixes []"; on_stage_start
            // is never reached in that case, so the reason is spelled out in the prefix.
            Err(_) => vec!["<udi: no anchor chosen>".into()],
        }
    }

    fn on_stage_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.cfg.check_plan(model.modalities().len())?;
        if Self::is_follower_stage(model, ctx.stage) {
            self.guide(model, ctx.stage)?;
            // Fresh q-networks for each follower stage (built at its first batch).
            self.clubs.clear();
        }
        Ok(())
    }

    fn on_epoch_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.updated_this_epoch = false;
        if Self::is_follower_stage(model, ctx.stage)
            && self.cfg.controller
            && self.cfg.controller_batch >= ctx.batches_per_epoch
        {
            return cfg_err(format!(
                "controller_batch = {} but an epoch has only {} batches",
                self.cfg.controller_batch, ctx.batches_per_epoch
            ));
        }
        Ok(())
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        let n = model.modalities().len();
        // The one modality trained in this stage; every other one runs in eval mode, detached.
        let trained = if Self::is_follower_stage(model, ctx.stage) {
            self.guide(model, ctx.stage)?.1
        } else {
            ctx.stage
        };
        let mut features = Vec::with_capacity(n);
        for (m, x) in batch.inputs.iter().enumerate() {
            let f = if m == trained {
                model.encode(m, x, true)?
            } else {
                model.encode(m, x, false)?.detach()
            };
            features.push(f);
        }
        let (fused_logits, mut per) = model.head(&features)?;
        for (m, z) in per.iter_mut().enumerate() {
            if m != trained {
                *z = z.detach();
            }
        }
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits: per,
            features,
        })
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        if !Self::is_follower_stage(model, ctx.stage) {
            // eq 3 for the modality of this stage.
            let l = cross_entropy(&out.per_modality_logits[ctx.stage], &batch.labels)?;
            let mut parts = BTreeMap::new();
            parts.insert("cls".to_string(), l.clone());
            return Ok(LossTerms { total: l, parts });
        }
        let (prev, m) = self.guide(model, ctx.stage)?;
        let f_p: Vec<Tensor> = prev.iter().map(|&p| out.features[p].detach()).collect();
        let f_m = &out.features[m];
        self.ensure_clubs(&f_p, f_m, ctx)?;
        if self.cfg.q_update == QUpdate::BeforeEstimate {
            // Algorithm 1 line 14: q first (detached inputs), then the estimate with q fixed.
            for (club, f_a) in self.clubs.iter_mut().zip(&f_p) {
                let l_mi = club.q_update(f_a, f_m)?;
                ctx.log.add_mean("club_q_loss", l_mi);
            }
        }
        let l_cls = cross_entropy(&out.per_modality_logits[m], &batch.labels)?; // eq 3
        let red = match self.cfg.js_reduction {
            JsReduction::Sum => Reduction::Sum,
            JsReduction::Mean => Reduction::Mean,
        };
        // The guiding modalities' logits, detached (the anchor is frozen).
        let z_prev: Vec<Tensor> = prev
            .iter()
            .map(|&p| out.per_modality_logits[p].detach())
            .collect();
        // The guide's prediction: the anchor's logits (eq 4-5), or for later followers the fused
        // output of the guiding modalities (eq 26's ŷ^{ab}, the `prediction` fusion).
        let target = if z_prev.len() == 1 {
            z_prev[0].clone()
        } else {
            self.cfg.prediction.fuse(&z_prev)?
        };
        let l_con = js_divergence_logits(&target, &out.per_modality_logits[m], red)?; // eq 4-5, 26

        // eq 8, 11; eq 26: mean over the guiding modalities.
        let mut l_com = self.clubs[0].vclub(&f_p[0], f_m)?;
        for (club, f_a) in self.clubs.iter().zip(&f_p).skip(1) {
            l_com = (l_com + club.vclub(f_a, f_m)?)?;
        }
        let l_com = (l_com / f_p.len() as f64)?;
        if self.cfg.controller && ctx.batch_index == self.cfg.controller_batch {
            // eq 13: g_cls is the gradient of the *multimodal* classification loss (§3.3;
            // Algorithm 1 line 15's L_cls, distinct from L_cls^m): CE of the fused prediction of
            // the guiding modalities (detached) and the follower, fused as at inference.
            let mut z_mm = z_prev.clone();
            z_mm.push(out.per_modality_logits[m].clone());
            let l_cls_mm = cross_entropy(&self.cfg.prediction.fuse(&z_mm)?, &batch.labels)?;
            ctx.log.set("controller_cls_mm", scalar(&l_cls_mm)?);
            // Three backward passes over one graph (nothing updated in between).
            let g_cls = l_cls_mm.backward()?;
            let g_con = l_con.backward()?;
            let g_com = l_com.backward()?;
            let shared = Self::follower_vars(model, m);
            let rep = self
                .controller
                .weights(&g_cls, &[&g_con, &g_com], &shared)?; // eq 14-16
            self.st.xi_con = Some(rep.inner_products[0]);
            self.st.xi_com = Some(rep.inner_products[1]);
            self.st.alpha_con = rep.alphas[0];
            self.st.alpha_com = rep.alphas[1];
            self.st.controller_updates += 1;
            self.updated_this_epoch = true;
        }
        let v_con = scalar(&l_con)?;
        let v_com = scalar(&l_com)?;
        ctx.log.add_mean("js", v_con);
        ctx.log.add_mean("club", v_com);
        let total = ((&l_cls + (&l_con * self.st.alpha_con)?)? + (&l_com * self.st.alpha_com)?)?; // eq 12
        let mut parts = BTreeMap::new();
        parts.insert("cls".to_string(), l_cls);
        parts.insert("con".to_string(), l_con);
        parts.insert("com".to_string(), l_com);
        Ok(LossTerms { total, parts })
    }

    fn after_step(
        &mut self,
        model: &dyn MultimodalModel,
        _batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<()> {
        if Self::is_follower_stage(model, ctx.stage) && self.cfg.q_update == QUpdate::AfterStep {
            let (prev, m) = self.guide(model, ctx.stage)?;
            // eq 10 on the batch's detached features, after the model step.
            for (club, &p) in self.clubs.iter_mut().zip(&prev) {
                let l_mi = club.q_update(&out.features[p], &out.features[m])?;
                ctx.log.add_mean("club_q_loss", l_mi);
            }
        }
        Ok(())
    }

    /// The `prediction` fusion of every modality's logits (A.6 summation by default).
    fn predict(&self, _model: &dyn MultimodalModel, out: &MultimodalOutput) -> Result<Tensor> {
        self.cfg.prediction.fuse(&out.per_modality_logits)
    }

    fn on_validation(
        &mut self,
        model: &dyn MultimodalModel,
        val: &EvalOutputs,
        ctx: &mut RunContext,
    ) -> Result<()> {
        let names = model.modalities();
        if Self::is_follower_stage(model, ctx.stage) {
            return Ok(());
        }
        let s = ctx.stage;
        let (acc, entropy) = acc_entropy(&val.per_modality_logits[s], &val.labels)?;
        self.st
            .unimodal
            .insert(names[s].clone(), UnimodalStat { acc, entropy });
        let plan = self.cfg.plan(ctx.num_epochs, names.len());
        let last_unimodal = s + 1 == names.len();
        if last_unimodal && ctx.stage_epoch + 1 == plan[s] {
            let order = self.select_order(names)?;
            self.st.anchor = Some(order[0].clone());
            self.st.order = order;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let names = model.modalities();
        let stage = if Self::is_follower_stage(model, ctx.stage) {
            let (_, m) = self.guide(model, ctx.stage)?;
            ctx.log.set("follower", names[m].clone());
            "follower".to_string()
        } else {
            format!(
                "unimodal:{}",
                names.get(ctx.stage).cloned().unwrap_or_default()
            )
        };
        ctx.log.set("stage", stage);
        for (n, s) in &self.st.unimodal {
            ctx.log.set(format!("unimodal_val_acc.{n}"), s.acc);
            ctx.log.set(format!("unimodal_val_entropy.{n}"), s.entropy);
        }
        if let Some(a) = &self.st.anchor {
            ctx.log.set("anchor", a.clone());
            ctx.log.set("order", self.st.order.clone());
        }
        if Self::is_follower_stage(model, ctx.stage) {
            ctx.log.set("alpha_con", self.st.alpha_con);
            ctx.log.set("alpha_com", self.st.alpha_com);
            ctx.log.set("controller", self.cfg.controller);
            if self.updated_this_epoch {
                if let (Some(c), Some(m)) = (self.st.xi_con, self.st.xi_com) {
                    ctx.log.set("xi_con", c);
                    ctx.log.set("xi_com", m);
                }
            }
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        let mut st = self.st.clone();
        st.q_networks = self
            .clubs
            .iter()
            .map(|c| {
                let o = c.optimizer().state();
                QNetMeta {
                    x_dim: c.config().x_dim,
                    y_dim: c.config().y_dim,
                    hidden: c.config().hidden,
                    optimizer_kind: o.kind,
                    optimizer_steps: o.steps,
                }
            })
            .collect();
        serde_json::to_value(&st).unwrap_or(serde_json::Value::Null)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if let Some(st) = crate::util::saved_state("udi", state)? {
            self.st = st;
        }
        Ok(())
    }

    /// The q-networks' parameters (`q<k>.param.<name>`) and optimizer moments (`q<k>.opt.<name>`).
    fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (k, c) in self.clubs.iter().enumerate() {
            for (n, t) in c.params().snapshot()? {
                out.insert(format!("q{k}.param.{n}"), t);
            }
            for (n, t) in c.optimizer().state().tensors {
                out.insert(format!("q{k}.opt.{n}"), t);
            }
        }
        Ok(out)
    }

    /// Rebuilds the q-networks recorded by the last [`Method::load_state`] and sets their
    /// parameters and optimizer state. Their initial weights are drawn from a throw-away
    /// generator and overwritten, so the run's RNG stream is not touched.
    fn load_state_tensors(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        self.clubs.clear();
        let metas = std::mem::take(&mut self.st.q_networks);
        for (k, meta) in metas.iter().enumerate() {
            let params: std::collections::HashMap<String, Tensor> = tensors
                .iter()
                .filter_map(|(n, t)| {
                    n.strip_prefix(&format!("q{k}.param."))
                        .map(|n| (n.to_string(), t.clone()))
                })
                .collect();
            let Some(first) = params.values().next() else {
                return Err(ModbalError::Data(format!(
                    "method udi: the checkpoint has q-network {k} in its state but no tensors \
                     q{k}.param.* (method.safetensors missing?)"
                )));
            };
            let mut club = Club::with_dtype(
                self.club_config(meta.x_dim, meta.y_dim, meta.hidden),
                &mut modbal_tensors::SeededRng::new(0),
                first.device(),
                first.dtype(),
            )?;
            club.params()
                .restore(&params)
                .map_err(|e| ModbalError::Data(format!("method udi q-network {k}: {e}")))?;
            let opt = modbal_tensors::OptimizerState {
                kind: meta.optimizer_kind.clone(),
                steps: meta.optimizer_steps.clone(),
                tensors: tensors
                    .iter()
                    .filter_map(|(n, t)| {
                        n.strip_prefix(&format!("q{k}.opt."))
                            .map(|n| (n.to_string(), t.clone()))
                    })
                    .collect(),
            };
            club.optimizer_mut().load_state(&opt)?;
            self.clubs.push(club);
        }
        Ok(())
    }
}

/// Registry entry: `method.name = "udi"`.
impl MethodParams for UdiConfig {
    fn check(&self) -> Result<()> {
        self.validate()?;
        Ok(UdiControllerConfig { eps: self.eps }.validate()?)
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Sum
    }
    fn modalities(&self) -> Option<Vec<String>> {
        (!self.modalities.is_empty()).then(|| self.modalities.clone())
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Udi::new(self.clone())?))
    }
}
