//! `qmf`: Quality-aware Multimodal Fusion (Zhang, Wu, Zhang, Hu, Fu, Zhou & Peng, "Provable
//! Dynamic Fusion for Low-Quality Multimodal Data", ICML 2023; official code
//! `QingyangZhang/QMF`: the paper-era text-image code at commit 8c16860 (`train_df.py`,
//! `src/models/late_fusion.py`, `src/utils/utils.py` `History`), the HEAD rewrite
//! (`text-image-classification/train_qmf.py`) and the RGB-D code (`RGBD-scene-recognition/
//! models/QMF.py`, `train_QMF_nyud2.py`)). See `docs/methods/qmf.md`.
//!
//! # Maths
//! The model is the `sum` fusion head: modality `m`'s own linear classifier gives `z_m: [B, K]`.
//!
//! ```text
//! c_m      = logsumexp_k(z_m,k) / T               confidence = −energy / T     (late_fusion.py, T = 10)
//! z        = Σ_m sg[c_m] · z_m                    fused logits (sg = detach; `detach_weights`)
//! L        = CE(z, y) + Σ_m CE(z_m, y) + λ · Σ_m R_m
//! ```
//!
//! # Ranking regulariser `R_m` (official `rank_loss` + `History`)
//! Every training sample `i` has, per modality, a history `h_m[i]`: the sum over the epochs so
//! far of its detached per-sample `CE(z_m, y)` (`correctness_update` adds the batch's losses).
//! With the batch's sample ids `idx` and the batch rolled by one (`j = idx[(b + 1) mod B]`):
//!
//! ```text
//! n(i)   = (h[i] − min h) / (max h − min h)        min, max over every training sample (unseen: 0)
//! t      = sign(n(i) − n(j)),  μ = |n(i) − n(j)|
//! R      = mean_b max(0, t·(c_i − c_j) − μ)        = MarginRankingLoss(c_i, c_j + μ/t', −t), margin 0,
//!                                                    t' = t where t ≠ 0, else 1
//! ```
//!
//! A sample with the larger historical loss (t = +1) is penalised if its confidence exceeds the
//! other's by more than μ. With `max h = min h` (every history equal) the official division is
//! 0/0 (NaN loss); modbal sets every `n` to 0 there (t = 0, no penalty). The history is updated
//! with the batch's losses before `R` is computed (text-image code; `history_update = "after"`:
//! the RGB-D code's order).
//!
//! # Prediction
//! [`Method::predict`] is the fused `z = Σ_m c_m · z_m` (as the official evaluation); the
//! per-modality predictions are `z_m`.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `confidence.<m>` (mean `c_m`), `weight_share.<m>` (mean `c_m / Σ_k c_k`), `weight_spread`
//! (mean over samples of `max_m c_m − min_m c_m`), `rank_target_nonzero` (share of pairs with
//! t ≠ 0), `history_mean.<m>` (mean accumulated loss over the training samples), `lambda`, and
//! the loss parts `loss.fused`, `loss.<m>` (unimodal CE), `loss.rank.<m>` (R_m).

use crate::params::MethodParams;
use candle_core::{DType, Tensor, D};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_encoders::FusionConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// When the batch's losses enter the history, relative to the ranking loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryUpdate {
    /// Update, then rank (text-image code, 8c16860 `train_df.py` and HEAD `train_qmf.py`).
    #[default]
    Before,
    /// Rank, then update (RGB-D `train_QMF_nyud2.py`).
    After,
}

/// Options of `qmf` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "qmf"
/// temperature = 10.0        # c_m = logsumexp(z_m) / T
/// lambda = 1.0              # weight of the ranking regulariser
/// detach_weights = true     # z = Σ_m sg[c_m] z_m
/// fused_ce = true           # CE(z, y) in the loss
/// history_update = "before" # or "after" (RGB-D code)
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QmfConfig {
    /// `T` of `c_m = logsumexp(z_m)/T`, finite and > 0. Default 10: `late_fusion.py`
    /// (`txt_energy / 10`) and `QMF.py` (`-0.1 * energy`).
    pub temperature: f64,
    /// Weight `λ` of `Σ_m R_m`, finite and ≥ 0. Default 1: the text-image code adds the ranking
    /// losses unweighted (`clf_loss + crl_loss`); the RGB-D script uses `--lamb 0.1`.
    pub lambda: f64,
    /// Detach the confidences in the fused logits. Default true: `late_fusion.py` (`df`
    /// branch, `txt_conf.detach()`); the RGB-D `QMF.py` does not detach (false).
    pub detach_weights: bool,
    /// Include `CE(z, y)` of the fused logits in the loss. Default true: HEAD `train_qmf.py`
    /// (`joint_clf_loss`) and RGB-D; the paper-era `train_df.py` trains on the unimodal CEs and
    /// the ranking losses only (false).
    pub fused_ce: bool,
    /// Order of history update and ranking loss. Default [`HistoryUpdate::Before`] (text-image).
    pub history_update: HistoryUpdate,
}

impl Default for QmfConfig {
    fn default() -> Self {
        Self {
            temperature: 10.0,
            lambda: 1.0,
            detach_weights: true,
            fused_ce: true,
            history_update: HistoryUpdate::Before,
        }
    }
}

/// Confidences `c_m = logsumexp(z_m)/T` (`[B]`) of logits `z_m: [B, K]`.
pub fn confidence(z: &Tensor, temperature: f64) -> Result<Tensor> {
    let max = z.max_keepdim(D::Minus1)?.detach();
    let lse = (z
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?;
    Ok((lse.squeeze(D::Minus1)? / temperature)?)
}

/// Fused logits `Σ_m c_m · z_m` with the confidences (detached if `detach`).
pub fn fused_logits(per: &[Tensor], confidences: &[Tensor], detach: bool) -> Result<Tensor> {
    let mut out: Option<Tensor> = None;
    for (z, c) in per.iter().zip(confidences) {
        let c = if detach { c.detach() } else { c.clone() };
        let term = z.broadcast_mul(&c.unsqueeze(1)?)?;
        out = Some(match out {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    out.ok_or_else(|| ModbalError::Config("qmf: no modality".into()))
}

/// Per-sample accumulated losses of one modality (official `History.correctness`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// `h[i]` by training-sample id; ids never seen hold 0.
    pub values: Vec<f64>,
}

impl History {
    /// A history of `n` samples, all 0 (official `np.zeros(n_data)`).
    pub fn new(n: usize) -> Self {
        Self {
            values: vec![0.0; n],
        }
    }

    /// Grow to at least `n` samples (new ones 0).
    pub fn ensure_len(&mut self, n: usize) {
        if self.values.len() < n {
            self.values.resize(n, 0.0);
        }
    }

    /// `h[id] += loss` for each sample of the batch (official `correctness_update`).
    pub fn add(&mut self, ids: &[usize], losses: &[f64]) {
        if let Some(&m) = ids.iter().max() {
            self.ensure_len(m + 1);
        }
        for (&i, &l) in ids.iter().zip(losses) {
            self.values[i] += l;
        }
    }

    /// `(h − min h)/(max h − min h)` of the given ids (0 for all when max = min, where the
    /// official code divides 0 by 0).
    pub fn normalized(&self, ids: &[usize]) -> Vec<f64> {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let range = max - min;
        ids.iter()
            .map(|&i| {
                let h = self.values.get(i).copied().unwrap_or(0.0);
                if range > 0.0 {
                    (h - min) / range
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Targets `t = sign(n_i − n_j)` and margins `|n_i − n_j|` of the pairs (`ids[b]`,
    /// `ids[(b + 1) mod B]`) (official `get_target_margin` after `torch.roll(idx, -1)`).
    pub fn targets_margins(&self, ids: &[usize]) -> (Vec<f64>, Vec<f64>) {
        let n = self.normalized(ids);
        let b = n.len();
        (0..b)
            .map(|k| {
                let (a, c) = (n[k], n[(k + 1) % b]);
                let t = if a > c {
                    1.0
                } else if a < c {
                    -1.0
                } else {
                    0.0
                };
                (t, (a - c).abs())
            })
            .unzip()
    }
}

/// PyTorch's `MarginRankingLoss(margin)`: `mean(max(0, −y·(x1 − x2) + margin))` over `[B]`.
pub fn margin_ranking_loss(x1: &Tensor, x2: &Tensor, y: &Tensor, margin: f64) -> Result<Tensor> {
    let d = (x1 - x2)?;
    Ok(((y * d)?.neg()? + margin)?.relu()?.mean_all()?)
}

/// The ranking regulariser of one modality: confidences `c: [B]` of the batch, targets and
/// margins from [`History::targets_margins`] (official `rank_loss`).
pub fn rank_loss(c: &Tensor, targets: &[f64], margins: &[f64]) -> Result<Tensor> {
    let b = c.dim(0)?;
    if b == 0 || targets.len() != b || margins.len() != b {
        return Err(ModbalError::Data(format!(
            "qmf: {} confidences, {} targets, {} margins",
            b,
            targets.len(),
            margins.len()
        )));
    }
    let dev = c.device();
    let dt = c.dtype();
    // torch.roll(c, -1): c2[k] = c[(k + 1) mod B]
    let c2 = if b > 1 {
        Tensor::cat(&[c.narrow(0, 1, b - 1)?, c.narrow(0, 0, 1)?], 0)?
    } else {
        c.clone()
    };
    let shift: Vec<f64> = targets
        .iter()
        .zip(margins)
        .map(|(&t, &m)| if t == 0.0 { m } else { m / t })
        .collect();
    let shift = Tensor::from_vec(shift, b, dev)?.to_dtype(dt)?;
    let y =
        Tensor::from_vec(targets.iter().map(|t| -t).collect::<Vec<f64>>(), b, dev)?.to_dtype(dt)?;
    margin_ranking_loss(c, &(c2 + shift)?, &y, 0.0)
}

/// Saved state: one history per modality.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct QmfState {
    histories: Vec<History>,
}

/// The QMF method; see the [module docs](self).
#[derive(Debug)]
pub struct Qmf {
    cfg: QmfConfig,
    state: QmfState,
    train_len: usize,
}

/// Mean of a tensor as f64.
fn mean(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?)
}

impl Qmf {
    pub fn new(cfg: QmfConfig) -> Result<Self> {
        cfg.check()?;
        Ok(Self {
            cfg,
            state: QmfState::default(),
            train_len: 0,
        })
    }

    pub fn config(&self) -> &QmfConfig {
        &self.cfg
    }

    /// The history of modality `m` (empty before training).
    pub fn history(&self, m: usize) -> Option<&History> {
        self.state.histories.get(m)
    }

    fn confidences(&self, per: &[Tensor]) -> Result<Vec<Tensor>> {
        per.iter()
            .map(|z| confidence(z, self.cfg.temperature))
            .collect()
    }

    fn ensure_histories(&mut self, m: usize) {
        if self.state.histories.len() != m {
            self.state.histories = vec![History::new(self.train_len); m];
        }
        for h in &mut self.state.histories {
            h.ensure_len(self.train_len);
        }
    }

    /// Logs the confidences' statistics (detached).
    fn log_confidences(names: &[String], conf: &[Tensor], ctx: &mut RunContext) -> Result<()> {
        let stacked = Tensor::stack(&conf.iter().map(|c| c.detach()).collect::<Vec<_>>(), 1)?
            .to_dtype(DType::F64)?;
        let spread = (stacked.max(1)? - stacked.min(1)?)?;
        ctx.log.add_mean("weight_spread", mean(&spread)?);
        let share = stacked.broadcast_div(&stacked.sum_keepdim(1)?)?;
        for (k, name) in names.iter().enumerate() {
            ctx.log
                .add_mean(format!("confidence.{name}"), mean(&conf[k])?);
            ctx.log.add_mean(
                format!("weight_share.{name}"),
                mean(&share.narrow(1, k, 1)?)?,
            );
        }
        Ok(())
    }
}

impl Method for Qmf {
    fn name(&self) -> &str {
        "qmf"
    }

    fn epoch_indices(
        &mut self,
        train_len: usize,
        _ctx: &mut RunContext,
    ) -> Result<Option<Vec<usize>>> {
        self.train_len = train_len;
        Ok(None)
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        _ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        crate::util::check_batch_inputs("qmf", model, batch)?;
        let mut out = model.forward_t(&batch.inputs, true)?;
        let conf = self.confidences(&out.per_modality_logits)?;
        out.fused_logits = fused_logits(&out.per_modality_logits, &conf, self.cfg.detach_weights)?;
        Ok(out)
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        crate::util::check_batch_inputs("qmf", model, batch)?;
        let names = model.modalities().to_vec();
        let per = &out.per_modality_logits;
        if per.len() != names.len() {
            return Err(ModbalError::Data(format!(
                "qmf: {} per-modality logits for the modalities {names:?}",
                per.len()
            )));
        }
        self.ensure_histories(names.len());
        let conf = self.confidences(per)?;
        Self::log_confidences(&names, &conf, ctx)?;
        let mut parts = BTreeMap::new();
        let fused = modbal_tensors::cross_entropy(&out.fused_logits, &batch.labels)?;
        parts.insert("fused".to_string(), fused.detach());
        let mut total = if self.cfg.fused_ce {
            fused
        } else {
            fused.zeros_like()?
        };
        let ids = &batch.sample_ids;
        let mut nonzero = 0usize;
        for (k, name) in names.iter().enumerate() {
            let ce = modbal_tensors::cross_entropy(&per[k], &batch.labels)?;
            parts.insert(name.clone(), ce.detach());
            total = (total + ce)?;
            let sample_losses: Vec<f64> =
                modbal_tensors::loss::cross_entropy_per_sample(&per[k].detach(), &batch.labels)?
                    .to_dtype(DType::F64)?
                    .to_vec1()?;
            let hist = &mut self.state.histories[k];
            if self.cfg.history_update == HistoryUpdate::Before {
                hist.add(ids, &sample_losses);
            }
            let (t, mu) = hist.targets_margins(ids);
            nonzero += t.iter().filter(|x| **x != 0.0).count();
            let r = rank_loss(&conf[k], &t, &mu)?;
            if self.cfg.history_update == HistoryUpdate::After {
                hist.add(ids, &sample_losses);
            }
            parts.insert(format!("rank.{name}"), r.detach());
            total = (total + (r * self.cfg.lambda)?)?;
        }
        ctx.log.add_mean(
            "rank_target_nonzero",
            nonzero as f64 / (ids.len().max(1) * names.len()) as f64,
        );
        ctx.log.set("lambda", self.cfg.lambda);
        Ok(LossTerms { total, parts })
    }

    fn predict(&self, _model: &dyn MultimodalModel, out: &MultimodalOutput) -> Result<Tensor> {
        let conf = self.confidences(&out.per_modality_logits)?;
        fused_logits(&out.per_modality_logits, &conf, true)
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        for (name, h) in model.modalities().iter().zip(&self.state.histories) {
            let n = h.values.len().max(1) as f64;
            ctx.log.set(
                format!("history_mean.{name}"),
                h.values.iter().sum::<f64>() / n,
            );
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        crate::util::state_json(&self.state)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.state = crate::util::saved_state("qmf", state)?.unwrap_or_default();
        Ok(())
    }
}

/// Registry entry: `[method] name = "qmf"` with [`QmfConfig`]'s keys.
impl MethodParams for QmfConfig {
    fn check(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(ModbalError::Config(format!(
                "qmf: temperature must be finite and > 0, got {}",
                self.temperature
            )));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(ModbalError::Config(format!(
                "qmf: lambda must be finite and ≥ 0, got {}",
                self.lambda
            )));
        }
        Ok(())
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Sum
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Qmf::new(self.clone())?))
    }
}
