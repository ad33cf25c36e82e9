//! `cml`: Calibrating Multimodal Learning (Ma, Zhang, Zhang, Wu, Fu, Zhou & Hu, ICML 2023;
//! official code `QingyangZhang/CML`; the port of BalanceBenchmark (`GeWu-Lab/BalanceBenchmark`,
//! `balancemm/trainer/CML_trainer.py`) is what UDI's Table 1 row uses). See `docs/methods/cml.md`.
//!
//! # Principle
//! The confidence of a prediction must not increase when a modality is removed:
//! `Conf(x^S) ≤ Conf(x^T)` for `S ⊂ T`. CML penalises every violation with a hinge (a ranking
//! loss on confidences) added to the classification loss.
//!
//! # Maths
//! Each training batch: encode, `f_m = E_m(x_m)`. A modality is removed by zeroing its feature
//! before the fusion head (`f_m ← 0`): on the concat head this is exactly BalanceBenchmark's
//! `out − z_m + b/M` (the fused logits without modality `m`'s weight slice, full bias). For an
//! input with modality set `S`, `z^S = head(f ⊙ 1_S)` and the confidence is the maximum
//! softmax probability (all three official implementations):
//!
//! ```text
//! c^S_i = max_k softmax(z^S_i)_k
//! ```
//!
//! The compared pairs `(T, S)` (`S = T` minus one modality) come from [`CmlSubsets`]:
//!
//! * `chain` (default; official code and BalanceBenchmark): a random removal order `π` of the
//!   `M` modalities; `S_0` = all, `S_k = S_{k−1} \ {π(k)}` for `k = 1..M−1`, pairs
//!   `(S_{k−1}, S_k)`. The order is drawn per sample and step (official MIWAE
//!   `get_multi_mask`; [`CmlOrder::Sample`]) or once per epoch for the whole batch
//!   (BalanceBenchmark; [`CmlOrder::Epoch`]);
//! * `leave-one-out`: the `M` pairs `(all, all \ {m})`, no randomness.
//!
//! ```text
//! hinge = sample:  R = Σ_pairs Σ_i s_i · ReLU(c^S_i − c^T_i)          (official CPM / MIWAE)
//! hinge = batch:   R = Σ_pairs ReLU(Σ_i (c^S_i − c^T_i))              (BalanceBenchmark)
//! L = mean_{inputs U} CE(z^U, y) + λ · R        (partial_ce; else L = CE(z^all, y) + λ · R)
//! ```
//!
//! `s_i = 1` unless `skip_corrected` (official CPM "trick 1": `s_i = 0` when the smaller input
//! predicts `y_i` and the larger does not). The inputs `U` of the mean CE are the full one and
//! every smaller input of the pairs (`M` inputs for a chain, `M + 1` for leave-one-out), as the
//! official code and BalanceBenchmark average the classification loss over their inputs. Both
//! confidences keep their gradients. Applied at every step of every epoch (official code;
//! BalanceBenchmark's window `[0, 80]` covers its 30 epochs). Evaluation is unchanged (the full
//! input through the head).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `reg` (mean `R` per step, before λ), `violated` (share of compared `(pair, sample)` whose
//! confidence rose on removal), `violated_by.<m>` (the same over the pairs that removed `m`),
//! `rise.<m>` (mean `c^S − c^T` over the pairs that removed `m`), `skipped` (share of pairs
//! dropped by `skip_corrected`), `conf.full` (mean full-input confidence), `loss.fused` (CE of
//! the full input) and `loss.partial` (mean CE of the smaller inputs).

use crate::params::MethodParams;
use crate::util::{by_name, labels};
use candle_core::{DType, Tensor, D};
use modbal_core::{
    Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result, RunContext,
};
use modbal_encoders::FusionConfig;
use modbal_tensors::cross_entropy;
use modbal_tensors::ops::softmax;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which subset pairs are compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CmlSubsets {
    /// A nested chain all ⊃ S_1 ⊃ … ⊃ S_{M−1}, one modality removed per link, in a random order
    /// (official `get_sn_for_multi_input` / `get_multi_mask`, BalanceBenchmark). Default.
    #[default]
    Chain,
    /// Every `all \ {m}` against the full input.
    LeaveOneOut,
}

/// Where the chain's random removal order is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CmlOrder {
    /// One permutation per sample and step (official MIWAE `get_multi_mask`). Default.
    #[default]
    Sample,
    /// One permutation per epoch, shared by every sample (BalanceBenchmark's `random_dict`).
    Epoch,
}

/// Where the hinge is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CmlHinge {
    /// Per sample, summed over the batch (official CPM `rank_loss`, MIWAE). Default.
    #[default]
    Sample,
    /// On the batch sum of the differences (BalanceBenchmark `conf_loss`: `max(0, Σ(c_S − c_T))`).
    Batch,
}

/// The fusion head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmlHead {
    /// One linear layer on the concatenated features. Default.
    #[default]
    Concat,
    /// One linear layer per modality, logits summed (UDI A.6's fusion for two-modality sets;
    /// a removed modality keeps its layer's bias, as zeroing its feature does).
    Sum,
}

/// Options of `cml` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "cml"
/// lambda = 0.1
/// subsets = "chain"        # or "leave-one-out"
/// order = "sample"         # or "epoch" (BalanceBenchmark)
/// hinge = "sample"         # or "batch" (BalanceBenchmark)
/// skip_corrected = false   # official CPM "trick 1"
/// partial_ce = true        # CE averaged over the full and the smaller inputs
/// head = "concat"          # or "sum"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CmlConfig {
    /// λ, weight of the regulariser `R` (a sum over the batch), `≥ 0`. Default 0.1: official
    /// README (`miwae/train.py --beta 10`, applied as `beta/100`) and BalanceBenchmark
    /// `configs/trainer_config.yaml` (`CML: lam: 0.1`).
    pub lambda: f64,
    /// Compared pairs. Default `chain` (official code, BalanceBenchmark).
    pub subsets: CmlSubsets,
    /// Chain order draw. Default `sample` (official MIWAE: a shuffled order per sample per batch).
    pub order: CmlOrder,
    /// Hinge form. Default `sample` (official CPM / MIWAE).
    pub hinge: CmlHinge,
    /// Official CPM "trick 1": no penalty when the smaller input is right and the larger wrong.
    /// Default `false` (BalanceBenchmark computes this mask but never applies it; MIWAE uses
    /// other masks).
    pub skip_corrected: bool,
    /// Average the CE over the full and the smaller inputs (official CPM / MIWAE
    /// `cls_loss /= input_num`, BalanceBenchmark `loss / M`). Default `true`; `false` = CE of
    /// the full input only.
    pub partial_ce: bool,
    /// Fusion head. Default `concat`.
    pub head: CmlHead,
}

impl Default for CmlConfig {
    fn default() -> Self {
        Self {
            lambda: 0.1,
            subsets: CmlSubsets::Chain,
            order: CmlOrder::Sample,
            hinge: CmlHinge::Sample,
            skip_corrected: false,
            partial_ce: true,
            head: CmlHead::Concat,
        }
    }
}

/// One compared pair for the whole batch: per sample, the modalities kept in the larger input
/// `T` and the modality removed to get `S`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmlPair {
    /// `[B][M]`: modality kept in `T`.
    pub keep: Vec<Vec<bool>>,
    /// `[B]`: the modality removed from `T` to get `S`.
    pub removed: Vec<usize>,
}

/// The pairs of one step: `chain` links in order (the first `T` is the full input), or the
/// leave-one-out pairs. `orders[i]` is sample `i`'s removal order (chain).
pub fn cml_pairs(subsets: CmlSubsets, orders: &[Vec<usize>], m: usize) -> Vec<CmlPair> {
    let b = orders.len();
    match subsets {
        CmlSubsets::LeaveOneOut => (0..m)
            .map(|r| CmlPair {
                keep: vec![vec![true; m]; b],
                removed: vec![r; b],
            })
            .collect(),
        CmlSubsets::Chain => {
            let mut keep = vec![vec![true; m]; b];
            let mut out = Vec::with_capacity(m.saturating_sub(1));
            for k in 0..m.saturating_sub(1) {
                let removed: Vec<usize> = orders.iter().map(|o| o[k]).collect();
                out.push(CmlPair {
                    keep: keep.clone(),
                    removed: removed.clone(),
                });
                for (row, &r) in keep.iter_mut().zip(&removed) {
                    row[r] = false;
                }
            }
            out
        }
    }
}

/// Maximum softmax probability per row (`[B]`) and the argmax, with the gradient of
/// `torch.max(softmax(z), 1)[0]` (to the arg-max entry).
pub fn max_softmax(z: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    let p = softmax(z, D::Minus1)?;
    let idx = p.detach().argmax_keepdim(D::Minus1)?;
    let pred = idx
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|x| x as usize)
        .collect();
    Ok((p.gather(&idx, D::Minus1)?.squeeze(D::Minus1)?, pred))
}

/// The fused logits of the input whose modalities are `keep[i][m]` per sample: the features
/// of the removed modalities zeroed before the head.
pub fn subset_logits(
    model: &dyn MultimodalModel,
    features: &[Tensor],
    keep: &[Vec<bool>],
) -> Result<Tensor> {
    let masked = features
        .iter()
        .enumerate()
        .map(|(m, f)| {
            if keep.iter().all(|row| row[m]) {
                return Ok(f.clone());
            }
            let col: Vec<f32> = keep.iter().map(|row| f32::from(u8::from(row[m]))).collect();
            let mask = Tensor::from_vec(col, (keep.len(), 1), f.device())?.to_dtype(f.dtype())?;
            Ok(f.broadcast_mul(&mask)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(model.head(&masked)?.0)
}

/// One compared pair's term for the batch: `Σ_i s_i·ReLU(c^S_i − c^T_i)` (`hinge = sample`) or
/// `ReLU(Σ_i s_i·(c^S_i − c^T_i))` (`batch`), from the larger input's logits `z_t` and the
/// smaller one's `z_s`; `s_i = 0` only with `skip_corrected` when `S` predicts `y_i` and `T`
/// does not. Also returns the differences `c^S_i − c^T_i` and which samples were skipped.
pub fn rank_term(
    z_t: &Tensor,
    z_s: &Tensor,
    y: &[usize],
    hinge: CmlHinge,
    skip_corrected: bool,
) -> Result<(Tensor, Vec<f64>, Vec<bool>)> {
    let (conf_t, pred_t) = max_softmax(z_t)?;
    let (conf_s, pred_s) = max_softmax(z_s)?;
    let b = y.len();
    if pred_t.len() != b || pred_s.len() != b {
        return Err(ModbalError::Data(format!(
            "cml: {b} labels for {} and {} logit rows",
            pred_t.len(),
            pred_s.len()
        )));
    }
    let skipped: Vec<bool> = (0..b)
        .map(|i| skip_corrected && pred_s[i] == y[i] && pred_t[i] != y[i])
        .collect();
    let diff = (&conf_s - &conf_t)?;
    let dv = diff.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let sign: Vec<f32> = skipped.iter().map(|&k| if k { 0.0 } else { 1.0 }).collect();
    let sign = Tensor::from_vec(sign, b, diff.device())?.to_dtype(diff.dtype())?;
    let signed = diff.mul(&sign)?;
    let term = match hinge {
        CmlHinge::Sample => signed.relu()?.sum_all()?,
        CmlHinge::Batch => signed.sum_all()?.relu()?,
    };
    Ok((term, dv, skipped))
}

/// Running sums for the per-epoch log.
#[derive(Clone, Debug, Default)]
struct EpochSums {
    compared: Vec<f64>,
    violated: Vec<f64>,
    rise: Vec<f64>,
    skipped: f64,
}

/// The CML method; see the [module docs](self).
#[derive(Debug)]
pub struct Cml {
    config: CmlConfig,
    /// This epoch's shared removal order (`order = "epoch"`).
    epoch_order: Option<Vec<usize>>,
    sums: EpochSums,
    modalities: Vec<String>,
}

impl Cml {
    pub fn new(config: CmlConfig) -> Result<Self> {
        config.check()?;
        Ok(Self {
            config,
            epoch_order: None,
            sums: EpochSums::default(),
            modalities: Vec::new(),
        })
    }

    pub fn config(&self) -> &CmlConfig {
        &self.config
    }

    fn require_modalities(&self, m: usize) -> Result<()> {
        if m < 2 {
            return Err(ModbalError::Config(format!(
                "cml: needs at least two modalities (it compares confidences with and without \
                 each), the model has {m}"
            )));
        }
        Ok(())
    }

    /// Per-sample removal orders of this step.
    fn orders(&mut self, b: usize, m: usize, ctx: &mut RunContext) -> Vec<Vec<usize>> {
        match (self.config.subsets, self.config.order) {
            (CmlSubsets::LeaveOneOut, _) => vec![(0..m).collect(); b],
            (CmlSubsets::Chain, CmlOrder::Sample) => {
                (0..b).map(|_| ctx.rng.permutation(m)).collect()
            }
            (CmlSubsets::Chain, CmlOrder::Epoch) => {
                let o = match &self.epoch_order {
                    Some(o) if o.len() == m => o.clone(),
                    _ => {
                        let o = ctx.rng.permutation(m);
                        self.epoch_order = Some(o.clone());
                        o
                    }
                };
                vec![o; b]
            }
        }
    }
}

impl Method for Cml {
    fn name(&self) -> &str {
        "cml"
    }

    fn on_stage_start(&mut self, model: &dyn MultimodalModel, _ctx: &mut RunContext) -> Result<()> {
        self.require_modalities(model.modalities().len())
    }

    fn on_epoch_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let m = model.modalities().len();
        self.require_modalities(m)?;
        self.epoch_order = None;
        if self.config.subsets == CmlSubsets::Chain && self.config.order == CmlOrder::Epoch {
            self.epoch_order = Some(ctx.rng.permutation(m));
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
        let m = out.features.len();
        self.require_modalities(m)?;
        if self.modalities.is_empty() {
            self.modalities = model.modalities().to_vec();
        }
        if self.sums.compared.len() != m {
            self.sums = EpochSums {
                compared: vec![0.0; m],
                violated: vec![0.0; m],
                rise: vec![0.0; m],
                skipped: 0.0,
            };
        }
        let b = batch.len();
        let y = labels(&batch.labels)?;
        let fused = cross_entropy(&out.fused_logits, &batch.labels)?;
        let orders = self.orders(b, m, ctx);
        let pairs = cml_pairs(self.config.subsets, &orders, m);
        let mut reg = Tensor::zeros((), fused.dtype(), fused.device())?;
        let mut partial_ces = Vec::with_capacity(pairs.len());
        let mut prev: Option<Tensor> = None;
        for pair in &pairs {
            // The larger input T: the full one, or the previous link's smaller input (chain).
            let z_t = match (&prev, self.config.subsets) {
                (Some(z), CmlSubsets::Chain) => z.clone(),
                _ => out.fused_logits.clone(),
            };
            let mut keep_s = pair.keep.clone();
            for (row, &r) in keep_s.iter_mut().zip(&pair.removed) {
                row[r] = false;
            }
            let z_s = subset_logits(model, &out.features, &keep_s)?;
            partial_ces.push(cross_entropy(&z_s, &batch.labels)?);
            let (term, dv, skipped) = rank_term(
                &z_t,
                &z_s,
                &y,
                self.config.hinge,
                self.config.skip_corrected,
            )?;
            for i in 0..b {
                let r = pair.removed[i];
                self.sums.compared[r] += 1.0;
                self.sums.rise[r] += dv[i];
                self.sums.violated[r] += f64::from(u8::from(dv[i] > 0.0));
                self.sums.skipped += f64::from(u8::from(skipped[i]));
            }
            reg = (reg + term)?;
            prev = Some(z_s);
        }
        let ce = if self.config.partial_ce {
            let n = (partial_ces.len() + 1) as f64;
            let mut s = fused.clone();
            for l in &partial_ces {
                s = (s + l)?;
            }
            (s / n)?
        } else {
            fused.clone()
        };
        let total = (ce + (&reg * self.config.lambda)?)?;
        ctx.log
            .add_mean("reg", reg.to_dtype(DType::F64)?.to_scalar::<f64>()?);
        let (conf_full, _) = max_softmax(&out.fused_logits.detach())?;
        ctx.log.add_mean(
            "conf.full",
            conf_full
                .to_dtype(DType::F64)?
                .mean_all()?
                .to_scalar::<f64>()?,
        );
        let mut parts = BTreeMap::new();
        parts.insert("fused".to_string(), fused.detach());
        if !partial_ces.is_empty() {
            let n = partial_ces.len() as f64;
            let mut s = Tensor::zeros((), fused.dtype(), fused.device())?;
            for l in &partial_ces {
                s = (s + l.detach())?;
            }
            parts.insert("partial".to_string(), (s / n)?);
        }
        Ok(LossTerms { total, parts })
    }

    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let s = std::mem::take(&mut self.sums);
        let total: f64 = s.compared.iter().sum();
        if total == 0.0 {
            return Ok(());
        }
        let names = &self.modalities;
        let per = |v: &[f64]| -> Vec<f64> {
            v.iter()
                .zip(&s.compared)
                .map(|(x, n)| if *n > 0.0 { x / n } else { 0.0 })
                .collect()
        };
        ctx.log
            .set("violated", s.violated.iter().sum::<f64>() / total);
        ctx.log
            .set("violated_by", by_name(names, &per(&s.violated)));
        ctx.log.set("rise", by_name(names, &per(&s.rise)));
        ctx.log.set("skipped", s.skipped / total);
        Ok(())
    }
}

/// Registry entry: `[method] name = "cml"` with [`CmlConfig`]'s keys.
impl MethodParams for CmlConfig {
    /// Heads: `{LATE_FUSIONS}` (`docs/fusion.md`): it removes a modality by zeroing its features before model.head, which needs encoders that see only their own modality (not mmtm).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::LATE_FUSIONS,
            "it removes a modality by zeroing its features before model.head, which needs encoders that see only their own modality (not mmtm)",
        )
    }
    fn check(&self) -> Result<()> {
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(ModbalError::Config(format!(
                "cml: lambda must be finite and >= 0, got {}",
                self.lambda
            )));
        }
        Ok(())
    }
    fn fusion(&self) -> FusionConfig {
        match self.head {
            CmlHead::Concat => FusionConfig::Concat,
            CmlHead::Sum => FusionConfig::Sum,
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Cml::new(self.clone())?))
    }
}
