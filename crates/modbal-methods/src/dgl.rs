//! `dgl`: disentangled gradient learning (Wei, Luo & Luo, "Boosting Multimodal Learning via
//! Disentangled Gradient Learning", ICCV 2025, the DGL baseline of the IBML paper's Tables 2-3;
//! official code shicaiwei123/ICCV2025-GDL). See `docs/methods/dgl.md`.
//!
//! # Maths
//! With features `f_m = φ_m(x_m)` and a linear fusion head (concat: `z = W·[f_1; …; f_M] + b`,
//! `W_m` its column slice of modality `m`; sum: `z = Σ_m (W_m f_m + b_m)`), DGL trains
//!
//! ```text
//! z      = head(sg[f_1], …, sg[f_M])                  fused logits on detached features
//! z_m    = f_m · sg[W_m]ᵀ + sg[b]                      modality m's logits through the head's
//!                                                      own (detached) weights, the others zeroed
//! L      = CE(z, y) + Σ_m α_m · CE(z_m, y)
//! ```
//!
//! (`sg` = stop-gradient.) So each encoder is trained by its own unimodal cross-entropy only
//! (the fused loss, whose gradient the other modalities' evidence suppresses, never reaches it:
//! "multimodal gradient truncation"), and the fusion head by the fused cross-entropy only ("the
//! unimodal losses do not update the head"). The official code does it in two backward passes
//! (the unimodal losses, then the head's gradients erased, then the fused loss on detached
//! features); the single pass above gives the same gradients (tested).
//!
//! The unimodal logits use the head's whole bias `b` (the official `fc_out(cat(f_a, 0))`), not
//! the `b/M` share modbal's concat head reports per modality ([`UnimodalBias`]).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `alpha.<m>` (α_m), `suppression.<m>`: the mean over steps of
//! `mean_i ‖(p_i − y_i)·W_m‖ / mean_i ‖(p_m,i − y_i)·W_m‖`, the norm of the feature gradient the
//! fused CE would send to encoder `m` relative to the one its own CE sends (`p` the fused softmax,
//! `p_m` modality `m`'s): the quantity the paper's analysis shows to be < 1 once the other
//! modalities are informative, and which DGL removes from training; and the loss parts
//! `loss.fused`, `loss.<m>` (unweighted CEs).

use crate::params::MethodParams;
use crate::util::{by_name, check_batch_inputs, feature_widths, linear_head_params};
use candle_core::{DType, Tensor};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_encoders::FusionConfig;
use modbal_tensors::cross_entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The bias of the unimodal logits `z_m` with a concat head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnimodalBias {
    /// `z_m = W_m f_m + b`: the head applied to `[0, …, f_m, …, 0]` (official
    /// `fusion_modules.py`, `fc_out(torch.cat((a, zeros), 1))`). Default.
    #[default]
    Full,
    /// `z_m = W_m f_m + b/M`: modbal's per-modality share of the concat head (their sum is the
    /// fused logit).
    Split,
}

/// Which fusion head DGL trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DglHead {
    /// `Linear(ΣD_m → C)` on the concatenated features (official default, `--fusion_method
    /// concat`).
    #[default]
    Concat,
    /// One `Linear(D_m → C)` per modality, summed (the official `SumFusion_DGL`); `z_m` uses the
    /// modality's own bias, whatever `unimodal_bias` says.
    Sum,
}

/// Options of `dgl` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "dgl"
/// alpha = 4.0             # weight of each unimodal CE
/// alpha_modality = {}     # per-modality overrides, e.g. { visual = 5.0 }
/// unimodal_bias = "full"  # or "split"
/// head = "concat"         # or "sum"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DglConfig {
    /// Weight α of every unimodal cross-entropy, ≥ 0. Default 4: the official argparse default
    /// (`main_dgl.py`, `--alpha 4`) and the first of its CREMA-D scripts (`cramed_dgl.sh` runs 4
    /// and 5; `ks_dgl.sh` runs 2 and 3 on Kinetics-Sounds). The README warns that the best α
    /// depends on the data.
    pub alpha: f64,
    /// Per-modality overrides of `alpha` by modality name, each ≥ 0 (the paper's loss weights
    /// each modality's term separately; the official code uses one α). Default none.
    pub alpha_modality: BTreeMap<String, f64>,
    /// Bias of the unimodal logits. Default [`UnimodalBias::Full`] (official).
    pub unimodal_bias: UnimodalBias,
    /// The fusion head. Default [`DglHead::Concat`] (official).
    pub head: DglHead,
}

impl Default for DglConfig {
    fn default() -> Self {
        Self {
            alpha: 4.0,
            alpha_modality: BTreeMap::new(),
            unimodal_bias: UnimodalBias::Full,
            head: DglHead::Concat,
        }
    }
}

impl DglConfig {
    /// α of modality `name` (its override, else `alpha`).
    pub fn alpha_of(&self, name: &str) -> f64 {
        self.alpha_modality.get(name).copied().unwrap_or(self.alpha)
    }

    fn check_modalities(&self, names: &[String]) -> Result<()> {
        for m in self.alpha_modality.keys() {
            if !names.contains(m) {
                return Err(ModbalError::Config(format!(
                    "method dgl: alpha_modality names modality \"{m}\", which the model does not \
                     have ({names:?})"
                )));
            }
        }
        Ok(())
    }
}

/// The unimodal logits `z_m = f_m · sg[W_m]ᵀ + sg[bias]` of features `features[m]: [B, D_m]`
/// (see the module docs): the gradient reaches the features, never the head.
pub fn unimodal_logits(
    model: &dyn MultimodalModel,
    head: DglHead,
    bias: UnimodalBias,
    features: &[Tensor],
) -> Result<Vec<Tensor>> {
    let n = model.modalities().len();
    let dims = feature_widths("dgl", model, features)?;
    let params = linear_head_params(model, head == DglHead::Sum, &dims, "dgl")?;
    let share = match (head, bias) {
        (DglHead::Concat, UnimodalBias::Split) => 1.0 / n as f64,
        _ => 1.0,
    };
    features
        .iter()
        .zip(params)
        .map(|(f, (w, b))| {
            let z = f.matmul(&w.detach().t()?)?;
            Ok(match b {
                Some(b) => z.broadcast_add(&(b.detach() * share)?)?,
                None => z,
            })
        })
        .collect()
}

/// `mean_i ‖(p_i − y_i)·W‖` for logits `z: [B, C]`, labels `y` and class weights `w: [C, D]`.
fn residual_grad_norm(z: &Tensor, y: &Tensor, w: &Tensor) -> Result<f64> {
    let z = z.detach().to_dtype(DType::F64)?;
    let p = modbal_tensors::ops::softmax(&z, 1)?;
    let c = z.dim(1)?;
    let onehot = y
        .to_dtype(DType::U32)?
        .unsqueeze(1)?
        .broadcast_eq(
            &Tensor::arange(0u32, c as u32, z.device())?
                .unsqueeze(0)?
                .broadcast_as(z.dims())?
                .contiguous()?,
        )?
        .to_dtype(DType::F64)?;
    let g = (p - onehot)?.matmul(&w.detach().to_dtype(DType::F64)?)?;
    Ok(g.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f64>()?)
}

/// The DGL method; see the [module docs](self).
#[derive(Debug)]
pub struct Dgl {
    cfg: DglConfig,
    modalities: Vec<String>,
    suppression: Vec<f64>,
    steps: usize,
}

impl Dgl {
    pub fn new(cfg: DglConfig) -> Result<Self> {
        cfg.check()?;
        Ok(Self {
            cfg,
            modalities: Vec::new(),
            suppression: Vec::new(),
            steps: 0,
        })
    }

    pub fn config(&self) -> &DglConfig {
        &self.cfg
    }

    fn ensure(&mut self, model: &dyn MultimodalModel) -> Result<()> {
        if self.modalities.as_slice() != model.modalities() {
            self.cfg.check_modalities(model.modalities())?;
            self.modalities = model.modalities().to_vec();
            self.suppression = vec![0.0; self.modalities.len()];
            self.steps = 0;
        }
        Ok(())
    }
}

impl Method for Dgl {
    fn name(&self) -> &str {
        "dgl"
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        _ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        self.ensure(model)?;
        check_batch_inputs("dgl", model, batch)?;
        let n = model.modalities().len();
        let features = (0..n)
            .map(|m| model.encode(m, &batch.inputs[m], true))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let detached: Vec<Tensor> = features.iter().map(Tensor::detach).collect();
        let (fused_logits, _) = model.head(&detached)?;
        let per_modality_logits =
            unimodal_logits(model, self.cfg.head, self.cfg.unimodal_bias, &features)?;
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
        self.ensure(model)?;
        let fused = cross_entropy(&out.fused_logits, &batch.labels)?;
        let mut parts = BTreeMap::new();
        parts.insert("fused".to_string(), fused.detach());
        let mut total = fused;
        for (name, z) in self.modalities.iter().zip(&out.per_modality_logits) {
            let ce = cross_entropy(z, &batch.labels)?;
            parts.insert(name.clone(), ce.detach());
            let a = self.cfg.alpha_of(name);
            if a != 0.0 {
                total = (total + (ce * a)?)?;
            }
        }
        // The mechanism's log: fused vs. own feature-gradient norms per modality.
        let dims: Vec<usize> = out
            .features
            .iter()
            .map(|f| f.dim(1))
            .collect::<candle_core::Result<_>>()?;
        let params = linear_head_params(model, self.cfg.head == DglHead::Sum, &dims, "dgl")?;
        for (k, (w, _)) in params.iter().enumerate() {
            let fused_g = residual_grad_norm(&out.fused_logits, &batch.labels, w)?;
            let own_g = residual_grad_norm(&out.per_modality_logits[k], &batch.labels, w)?;
            self.suppression[k] += if own_g > 0.0 { fused_g / own_g } else { 1.0 };
        }
        self.steps += 1;
        Ok(LossTerms { total, parts })
    }

    fn predict_modalities(
        &self,
        model: &dyn MultimodalModel,
        out: &MultimodalOutput,
    ) -> Result<Vec<Tensor>> {
        unimodal_logits(model, self.cfg.head, self.cfg.unimodal_bias, &out.features)
    }

    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        if self.modalities.is_empty() {
            return Ok(());
        }
        let alphas: Vec<f64> = self
            .modalities
            .iter()
            .map(|m| self.cfg.alpha_of(m))
            .collect();
        ctx.log.set("alpha", by_name(&self.modalities, &alphas));
        if self.steps > 0 {
            let n = self.steps as f64;
            let s: Vec<f64> = self.suppression.iter().map(|x| x / n).collect();
            ctx.log.set("suppression", by_name(&self.modalities, &s));
        }
        self.suppression.iter_mut().for_each(|x| *x = 0.0);
        self.steps = 0;
        Ok(())
    }
}

/// Registry entry: `[method] name = "dgl"` with [`DglConfig`]'s keys.
impl MethodParams for DglConfig {
    fn check(&self) -> Result<()> {
        let bad = |k: String, v: f64| {
            Err(ModbalError::Config(format!(
                "method dgl: {k} must be finite and >= 0, got {v}"
            )))
        };
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad("alpha".into(), self.alpha);
        }
        for (m, &v) in &self.alpha_modality {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("alpha_modality.{m}"), v);
            }
        }
        Ok(())
    }
    fn fusion(&self) -> FusionConfig {
        match self.head {
            DglHead::Concat => FusionConfig::Concat,
            DglHead::Sum => FusionConfig::Sum,
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Dgl::new(self.clone())?))
    }
}
