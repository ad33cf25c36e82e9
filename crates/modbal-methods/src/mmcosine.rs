//! `mmcosine`: multi-modal cosine loss (Xu, Feng, Zhang & Hu, "MMCosine: Multi-Modal Cosine Loss
//! Towards Balanced Audio-Visual Fine-Grained Learning", ICASSP 2023; official code
//! GeWu-Lab/MMCosine_ICASSP23). See `docs/methods/mmcosine.md`.
//!
//! # Maths
//! With `M` modalities, features `f_m: [B, D_m]` (the encoder outputs), the fusion head's class
//! weights of modality `m`, `W_m: [C, D_m]` (the concat head's column slice `W[:, slice_m]`, or the
//! sum head's own `fc_m.weight`), row `W_m,c` the weight vector of class `c`:
//!
//! ```text
//! cos_m[i, c] = ⟨f_m,i, W_m,c⟩ / (max(‖f_m,i‖, ε) · max(‖W_m,c‖, ε))     ε = 1e-12 (F.normalize)
//! z_m   = s · cos_m                                   per-modality logits      [B, C]
//! z     = Σ_m z_m                                     fused logits             [B, C]
//! L     = CE(z, y)                                    the only backpropagated term
//! ```
//!
//! Modality-wise L2 normalisation of both the features and the class weights; the head's bias
//! is not used (it gets no gradient and keeps its initial value). `CE(z_m, y)` is computed on
//! detached logits and logged under `method.loss.<m>` (the official `loss_a`, `loss_v`), never
//! backpropagated.
//!
//! # Where it runs
//! [`Method::forward`] encodes every modality and returns `(z, [z_m])` instead of the head's
//! logits; [`Method::predict`] and [`Method::predict_modalities`] recompute them from
//! `out.features` (evaluation calls them on the model's plain forward), so the fused and the
//! per-modality accuracies of every split are those of the cosine classifier, as the official
//! `valid` reports `acc_a` / `acc_v` (and the fused accuracy in `main_vox2.py`; see
//! [`EvalFused`] for `main_CD.py`'s plain-head fused accuracy).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `scale` (s), `cos_y.<m>` (mean true-class cosine, the official `fy_a / s`, `fy_v / s`),
//! `weight_norm.<m>` (mean over classes of `‖W_m,c‖`, the un-normalised weight norms whose
//! imbalance the paper discusses), `feature_norm.<m>` (mean `‖f_m,i‖`), and the loss parts
//! `loss.fused`, `loss.<m>`.

use crate::params::MethodParams;
use crate::util::by_name;
use candle_core::{DType, Tensor};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_encoders::FusionConfig;
use serde::{Deserialize, Serialize};

/// `ε` of `F.normalize` (PyTorch default): a norm below it is replaced by it.
pub const NORM_EPS: f64 = 1e-12;

/// Which fused logits evaluation (and the selection of the best epoch) uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalFused {
    /// `z = s·Σ_m cos_m`, the logits the model is trained on (paper; official `main_vox2.py`).
    #[default]
    Cosine,
    /// The fusion head's plain output `W·[f_1; …; f_M] + b` (official `main_CD.py` `valid`,
    /// which takes the model's `out` unchanged; the per-modality accuracies stay cosine there).
    Head,
}

/// Which fusion head holds the class weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MmCosineHead {
    /// Concat head: `W_m = W[:, slice_m]` (official `fc_out.weight[:, :512]`, `[:, 512:]`).
    #[default]
    Concat,
    /// Sum head: `W_m = fc_m.weight` (not in the official code; the same maths per modality).
    Sum,
}

/// Options of `mmcosine` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "mmcosine"
/// scale = 10.0          # s
/// eval_fused = "cosine" # or "head" (official main_CD.py valid)
/// head = "concat"       # or "sum"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MmCosineConfig {
    /// The scaling `s` of the cosine logits, > 0. Default 10: the official README's command
    /// (`--scaling 10`, CREMA-D) and the argparse default of `main_CD.py` and `main_vox2.py`.
    pub scale: f64,
    /// Fused logits of evaluation. Default [`EvalFused::Cosine`] (paper, `main_vox2.py`).
    pub eval_fused: EvalFused,
    /// The head whose weights are normalised. Default [`MmCosineHead::Concat`] (official).
    pub head: MmCosineHead,
}

impl Default for MmCosineConfig {
    fn default() -> Self {
        Self {
            scale: 10.0,
            eval_fused: EvalFused::Cosine,
            head: MmCosineHead::Concat,
        }
    }
}

/// L2-normalise the rows of a `[N, D]` tensor: `x / max(‖x‖, ε)` (PyTorch `F.normalize(x, dim=1)`).
/// Written as `sqrt(max(Σx², ε²))` so that an all-zero row has a finite (zero) gradient.
pub fn l2_normalize_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(1)?
        .maximum(NORM_EPS * NORM_EPS)?
        .sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// The class weights `W_m: [C, D_m]` of each modality, for features of widths `dims`, from the
/// model's head parameters (`head.fc.weight` sliced by columns, or `head.<m>.weight`).
pub fn class_weights(
    model: &dyn MultimodalModel,
    head: MmCosineHead,
    dims: &[usize],
) -> Result<Vec<Tensor>> {
    let sum = head == MmCosineHead::Sum;
    Ok(
        crate::util::linear_head_params(model, sum, dims, "mmcosine")?
            .into_iter()
            .map(|(w, _)| w)
            .collect(),
    )
}

/// The cosine logits `(z, [z_m])` of features `features[m]: [B, D_m]` (see the module docs).
pub fn cosine_logits(
    model: &dyn MultimodalModel,
    head: MmCosineHead,
    scale: f64,
    features: &[Tensor],
) -> Result<(Tensor, Vec<Tensor>)> {
    let dims = crate::util::feature_widths("mmcosine", model, features)?;
    let weights = class_weights(model, head, &dims)?;
    let per = features
        .iter()
        .zip(&weights)
        .map(|(f, w)| {
            let cos = l2_normalize_rows(f)?.matmul(&l2_normalize_rows(w)?.t()?)?;
            Ok((cos * scale)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut fused = per[0].clone();
    for z in &per[1..] {
        fused = (fused + z)?;
    }
    Ok((fused, per))
}

/// Running sums for the per-epoch log.
#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    cos_y: Vec<f64>,
    weight_norm: Vec<f64>,
    feature_norm: Vec<f64>,
}

/// The MMCosine method; see the [module docs](self).
#[derive(Debug)]
pub struct MmCosine {
    cfg: MmCosineConfig,
    sums: EpochSums,
    modalities: Vec<String>,
}

impl MmCosine {
    pub fn new(cfg: MmCosineConfig) -> Result<Self> {
        cfg.check()?;
        Ok(Self {
            cfg,
            sums: EpochSums::default(),
            modalities: Vec::new(),
        })
    }

    pub fn config(&self) -> &MmCosineConfig {
        &self.cfg
    }

    /// Mean of a tensor as f64.
    fn mean(t: &Tensor) -> Result<f64> {
        Ok(t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?)
    }

    /// Adds this batch's mechanism statistics (detached) to the epoch sums.
    fn record(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
    ) -> Result<()> {
        let m = model.modalities().len();
        if self.sums.cos_y.len() != m {
            self.modalities = model.modalities().to_vec();
            self.sums = EpochSums {
                cos_y: vec![0.0; m],
                weight_norm: vec![0.0; m],
                feature_norm: vec![0.0; m],
                ..Default::default()
            };
        }
        let dims: Vec<usize> = out
            .features
            .iter()
            .map(|f| f.dim(1))
            .collect::<candle_core::Result<_>>()?;
        let weights = class_weights(model, self.cfg.head, &dims)?;
        let idx = batch.labels.to_dtype(DType::U32)?.unsqueeze(1)?;
        for k in 0..m {
            let z = out.per_modality_logits[k].detach();
            let zy = z.gather(&idx, 1)?;
            self.sums.cos_y[k] += Self::mean(&zy)? / self.cfg.scale;
            let w = weights[k].detach();
            self.sums.weight_norm[k] += Self::mean(&w.sqr()?.sum(1)?.sqrt()?)?;
            let f = out.features[k].detach();
            self.sums.feature_norm[k] += Self::mean(&f.sqr()?.sum(1)?.sqrt()?)?;
        }
        self.sums.steps += 1;
        Ok(())
    }
}

impl Method for MmCosine {
    fn name(&self) -> &str {
        "mmcosine"
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        _ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        crate::util::check_batch_inputs("mmcosine", model, batch)?;
        let n = model.modalities().len();
        let features = (0..n)
            .map(|m| model.encode(m, &batch.inputs[m], true))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (fused_logits, per_modality_logits) =
            cosine_logits(model, self.cfg.head, self.cfg.scale, &features)?;
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
        self.record(model, batch, out)?;
        crate::util::fused_ce_logging_unimodal(model, batch, out)
    }

    fn predict(&self, model: &dyn MultimodalModel, out: &MultimodalOutput) -> Result<Tensor> {
        match self.cfg.eval_fused {
            EvalFused::Cosine => {
                Ok(cosine_logits(model, self.cfg.head, self.cfg.scale, &out.features)?.0)
            }
            EvalFused::Head => Ok(model.head(&out.features)?.0),
        }
    }

    fn predict_modalities(
        &self,
        model: &dyn MultimodalModel,
        out: &MultimodalOutput,
    ) -> Result<Vec<Tensor>> {
        Ok(cosine_logits(model, self.cfg.head, self.cfg.scale, &out.features)?.1)
    }

    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let s = std::mem::take(&mut self.sums);
        ctx.log.set("scale", self.cfg.scale);
        if s.steps == 0 {
            return Ok(());
        }
        let n = s.steps as f64;
        let mean = |v: &[f64]| v.iter().map(|x| x / n).collect::<Vec<_>>();
        ctx.log
            .set("cos_y", by_name(&self.modalities, &mean(&s.cos_y)));
        ctx.log.set(
            "weight_norm",
            by_name(&self.modalities, &mean(&s.weight_norm)),
        );
        ctx.log.set(
            "feature_norm",
            by_name(&self.modalities, &mean(&s.feature_norm)),
        );
        Ok(())
    }
}

/// Registry entry: `[method] name = "mmcosine"` with [`MmCosineConfig`]'s keys.
impl MethodParams for MmCosineConfig {
    fn check(&self) -> Result<()> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(ModbalError::Config(format!(
                "mmcosine: scale must be finite and > 0, got {}",
                self.scale
            )));
        }
        Ok(())
    }
    fn fusion(&self) -> FusionConfig {
        match self.head {
            MmCosineHead::Concat => FusionConfig::Concat,
            MmCosineHead::Sum => FusionConfig::Sum,
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(MmCosine::new(self.clone())?))
    }
}
