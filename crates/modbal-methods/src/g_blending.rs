//! `g-blending`: Gradient-Blending (Wang, Tran & Feiszli, "What Makes Training Multi-modal
//! Classification Networks Hard?", CVPR 2020). No official release; cross-checked against
//! BalanceBenchmark's port (`GeWu-Lab/BalanceBenchmark`, `balancemm/trainer/GBlending_trainer.py`).
//! See `docs/methods/g-blending.md`.
//!
//! # Maths
//! Heads `k ∈ {fused, m_1, …, m_M}`: the fused logits and each modality's logits (the concat
//! head's weight slices `W_m f_m + b/M`, as BalanceBenchmark's `unimodal_result`). The loss is
//! the blend
//!
//! ```text
//! L = Σ_k w_k · CE(z_k, y),     Σ_k w_k = 1,  w_k ≥ 0
//! ```
//!
//! The weights come from the overfitting-to-generalization behaviour of each head over a
//! super-epoch of `n` epochs (first epoch `N`, last `N + n − 1`), measured on the held-out split
//! (here the **validation** split, see the docs page) and the training batches:
//!
//! ```text
//! L^T_k(e) = mean training CE of head k over epoch e's steps
//! L^V_k(e) = CE of head k on the held-out split after epoch e
//! O_k(e)   = L^V_k(e) − L^T_k(e)                              (overfitting)
//! ΔG_k     = L^V_k(N) − L^V_k(N+n−1)                           (generalization gained)
//! ΔO_k     = O_k(N+n−1) − O_k(N)                               (overfitting gained)
//! w_k      = max(ΔG_k, 0) / (ΔO_k² + ε)  normalised to Σ_k w_k = 1
//! ```
//!
//! `ε = 1e-12`. If every `ΔG_k ≤ 0` the weights stay as they were. Until the first estimate the
//! weights are uniform `1/(M+1)`. `mode = "online"` re-estimates at the end of every
//! super-epoch (paper's online G-Blend); `mode = "offline"` estimates once, at the end of the
//! first super-epoch that yields an estimate, and keeps those weights.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `w.<head>` (the weights used this epoch; heads `fused` and the modality names),
//! `train_ce.<head>`, `val_ce.<head>`, and at a super-epoch's end `dG.<head>`, `dO.<head>` and
//! `updated` (1 when the weights changed there, else 0); loss parts `loss.<head>`.

use crate::params::MethodParams;
use crate::util::by_name;
use modbal_core::{
    Batch, EvalOutputs, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext,
};
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};

/// When the weights are estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GBlendMode {
    /// At the end of every super-epoch (the paper's online G-Blend; BalanceBenchmark's default).
    #[default]
    Online,
    /// Once, at the end of the first super-epoch that yields an estimate (offline G-Blend on
    /// the run's own first super-epoch).
    Offline,
}

/// Options of `g-blending` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "g-blending"
/// mode = "online"     # or "offline"
/// super_epoch = 10    # epochs per estimate
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GBlendingConfig {
    /// Online (default) or offline estimation. Default online: BalanceBenchmark's
    /// `trainer_config.yaml` (`method: "online"`); the paper describes both.
    pub mode: GBlendMode,
    /// Epochs per super-epoch, ≥ 2 (a super-epoch needs a first and a last epoch). Default 10:
    /// BalanceBenchmark's `super_epoch: 10`.
    pub super_epoch: usize,
}

impl Default for GBlendingConfig {
    fn default() -> Self {
        Self {
            mode: GBlendMode::Online,
            super_epoch: 10,
        }
    }
}

/// `ε` of the weight formula's denominator.
pub const EPS: f64 = 1e-12;

/// The blend weights from a super-epoch's first (`pre`) and last (`now`) epoch: per head,
/// training and held-out CE. `None` when no head generalised (every `ΔG ≤ 0`). Also returns
/// `(ΔG, ΔO)` per head.
pub fn blend_weights(
    pre_train: &[f64],
    pre_val: &[f64],
    now_train: &[f64],
    now_val: &[f64],
) -> (Option<Vec<f64>>, Vec<f64>, Vec<f64>) {
    let k = pre_train.len();
    let dg: Vec<f64> = (0..k).map(|i| pre_val[i] - now_val[i]).collect();
    let d_o: Vec<f64> = (0..k)
        .map(|i| (now_val[i] - now_train[i]) - (pre_val[i] - pre_train[i]))
        .collect();
    let raw: Vec<f64> = (0..k)
        .map(|i| dg[i].max(0.0) / (d_o[i] * d_o[i] + EPS))
        .collect();
    let z: f64 = raw.iter().sum();
    let w = (z > 0.0 && z.is_finite()).then(|| raw.iter().map(|r| r / z).collect());
    (w, dg, d_o)
}

/// The method's state across epochs (checkpointed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GBlendState {
    /// Current weights (`[fused, m_1, …]`; empty before the first step).
    pub weights: Vec<f64>,
    /// `(train, val)` CE per head at the current super-epoch's first epoch.
    pub pre: Option<(Vec<f64>, Vec<f64>)>,
    /// Whether an offline estimate was made.
    pub estimated: bool,
}

/// The Gradient-Blending method; see the [module docs](self).
#[derive(Debug)]
pub struct GBlending {
    config: GBlendingConfig,
    state: GBlendState,
    heads: Vec<String>,
    train_sums: Vec<f64>,
    train_steps: usize,
    val: Option<Vec<f64>>,
}

impl GBlending {
    pub fn new(config: GBlendingConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            state: GBlendState::default(),
            heads: Vec::new(),
            train_sums: Vec::new(),
            train_steps: 0,
            val: None,
        })
    }

    /// The current state (weights, the super-epoch's first measurements).
    pub fn state_ref(&self) -> &GBlendState {
        &self.state
    }

    fn ensure(&mut self, model: &dyn MultimodalModel) -> Result<()> {
        let m = model.modalities().len();
        if m < 2 {
            return Err(ModbalError::Config(format!(
                "method g-blending: needs at least two modalities (it blends the fused head with \
                 one head per modality), the model has {m}"
            )));
        }
        if self.heads.is_empty() {
            self.heads = std::iter::once("fused".to_string())
                .chain(model.modalities().iter().cloned())
                .collect();
        }
        if self.state.weights.len() != m + 1 {
            self.state.weights = vec![1.0 / (m + 1) as f64; m + 1];
        }
        if self.train_sums.len() != m + 1 {
            self.train_sums = vec![0.0; m + 1];
        }
        Ok(())
    }
}

impl GBlendingConfig {
    fn validate(&self) -> Result<()> {
        if self.super_epoch < 2 {
            return Err(ModbalError::Config(format!(
                "method g-blending: super_epoch must be >= 2 (a first and a last epoch), got {}",
                self.super_epoch
            )));
        }
        Ok(())
    }
}

impl Method for GBlending {
    fn name(&self) -> &str {
        "g-blending"
    }

    fn on_stage_start(&mut self, model: &dyn MultimodalModel, _ctx: &mut RunContext) -> Result<()> {
        self.ensure(model)
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        self.ensure(model)?;
        if out.per_modality_logits.len() + 1 != self.heads.len() {
            return Err(ModbalError::Data(format!(
                "g-blending: the model gave {} per-modality logits for {} modalities",
                out.per_modality_logits.len(),
                self.heads.len() - 1
            )));
        }
        let logits = std::iter::once(&out.fused_logits).chain(&out.per_modality_logits);
        let mut total: Option<candle_core::Tensor> = None;
        let mut parts = std::collections::BTreeMap::new();
        for (k, z) in logits.enumerate() {
            let ce = cross_entropy(z, &batch.labels)?;
            self.train_sums[k] += ce.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            let term = (&ce * self.state.weights[k])?;
            total = Some(match total {
                Some(t) => (t + term)?,
                None => term,
            });
            parts.insert(self.heads[k].clone(), ce.detach());
        }
        self.train_steps += 1;
        Ok(LossTerms {
            total: total.expect("at least the fused head"),
            parts,
        })
    }

    fn on_validation(
        &mut self,
        _model: &dyn MultimodalModel,
        val: &EvalOutputs,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        let labels = candle_core::Tensor::from_slice(
            &val.labels,
            val.labels.len(),
            val.fused_logits.device(),
        )?;
        let v = std::iter::once(&val.fused_logits)
            .chain(&val.per_modality_logits)
            .map(|z| {
                Ok(cross_entropy(z, &labels)?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?)
            })
            .collect::<Result<Vec<f64>>>()?;
        self.val = Some(v);
        Ok(())
    }

    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let k = self.heads.len();
        let train: Vec<f64> = self
            .train_sums
            .iter()
            .map(|s| s / self.train_steps.max(1) as f64)
            .collect();
        self.train_sums = vec![0.0; k];
        self.train_steps = 0;
        ctx.log.set("w", by_name(&self.heads, &self.state.weights));
        ctx.log.set("train_ce", by_name(&self.heads, &train));
        let Some(val) = self.val.take() else {
            return Ok(());
        };
        ctx.log.set("val_ce", by_name(&self.heads, &val));
        let n = self.config.super_epoch;
        let pos = ctx.epoch % n;
        if pos == 0 {
            self.state.pre = Some((train, val));
        } else if pos == n - 1 {
            if let Some((pre_t, pre_v)) = self.state.pre.take() {
                let (w, dg, d_o) = blend_weights(&pre_t, &pre_v, &train, &val);
                ctx.log.set("dG", by_name(&self.heads, &dg));
                ctx.log.set("dO", by_name(&self.heads, &d_o));
                let allowed = match self.config.mode {
                    GBlendMode::Online => true,
                    GBlendMode::Offline => !self.state.estimated,
                };
                let updated = match w {
                    Some(w) if allowed => {
                        self.state.weights = w;
                        self.state.estimated = true;
                        true
                    }
                    _ => false,
                };
                ctx.log.set("updated", if updated { 1.0 } else { 0.0 });
            }
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "state": self.state, "heads": self.heads })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() {
            return Ok(());
        }
        let bad = |what: &str, e: serde_json::Error| {
            ModbalError::Data(format!("g-blending state {what}: {e}"))
        };
        self.state = serde_json::from_value(state["state"].clone()).map_err(|e| bad("state", e))?;
        self.heads = serde_json::from_value(state["heads"].clone()).map_err(|e| bad("heads", e))?;
        Ok(())
    }
}

/// Registry entry: `[method] name = "g-blending"` with [`GBlendingConfig`]'s keys.
impl MethodParams for GBlendingConfig {
    /// Heads: `{ADDITIVE_FUSIONS}` (`docs/fusion.md`): its blended heads read the per-modality logits as an additive decomposition of the fused logits (weight slices or branches).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ADDITIVE_FUSIONS,
            "its blended heads read the per-modality logits as an additive decomposition of the fused logits (weight slices or branches)",
        )
    }
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(GBlending::new(self.clone())?))
    }
}
