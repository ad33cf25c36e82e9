//! `tmc`: Trusted Multi-view Classification (Han, Zhang, Fu & Zhou, ICLR 2021; official code
//! `hanmenghan/TMC`, folder `TMC ICLR/`, whose `model.py` this follows; the TPAMI 2022 extension
//! ETMC adds a pseudo-view on concatenated features, which is not this method). See
//! `docs/methods/tmc.md`. Paper equation numbers below are as recalled (the paper text was not
//! available to re-check them); the `model.py` functions named are the reference.
//!
//! # Maths
//! The model is the `sum` fusion head: modality `m`'s own linear classifier gives `z_m: [B, K]`
//! (`K` classes). Per modality (a "view"), per sample:
//!
//! ```text
//! e_m = softplus(z_m)                 evidence ≥ 0          (official Classifier: Linear + Softplus)
//! α_m = e_m + 1,  S_m = Σ_k α_m,k     Dirichlet parameters, strength
//! b_m = e_m / S_m,  u_m = K / S_m     belief masses, uncertainty: Σ_k b_m,k + u_m = 1   (paper eq 1)
//! ```
//!
//! Two opinions are combined with the reduced Dempster–Shafer rule (paper Definition 3.1, eq 4;
//! `model.py` `DS_Combin_two`):
//!
//! ```text
//! C   = Σ_{i≠j} b¹_i b²_j = (Σ b¹)(Σ b²) − Σ_k b¹_k b²_k           conflict
//! b_k = (b¹_k b²_k + b¹_k u² + b²_k u¹) / (1 − C)
//! u   = u¹ u² / (1 − C)
//! S   = K / u,  e = b · S,  α = e + 1
//! ```
//!
//! `M` views are combined left to right, `((α_1 ⊕ α_2) ⊕ α_3) ⊕ …` (`DS_Combin`); the rule is
//! commutative and associative, so the order does not matter up to rounding (tested).
//!
//! # Loss (per sample, then the batch mean; `model.py` `forward`)
//! ```text
//! L(α) = Σ_k y_k (ψ(S) − ψ(α_k))                          integrated CE (paper eq 5; `ce_loss`)
//!      + λ_t · KL(Dir(α̃) ‖ Dir(1)),   α̃ = y + (1 − y) ⊙ α    (paper eq 6-7; `KL`)
//! KL(Dir(α̃) ‖ Dir(1)) = lnΓ(S̃) − Σ_k lnΓ(α̃_k) − lnΓ(K) + Σ_k (α̃_k − 1)(ψ(α̃_k) − ψ(S̃))
//! L_total = mean_batch [ Σ_m L(α_m) + L(α) ]                 (paper eq 8)
//! ```
//!
//! `loss = "mse"` uses the sum-of-squares form instead (`model.py` `mse_loss`, paper's
//! alternative): `Σ_k (y_k − α_k/S)² + Σ_k α_k (S − α_k) / (S²(S + 1)) + λ_t · KL`.
//! ψ and lnΓ are `modbal_tensors::special` (differentiable; candle has neither).
//!
//! # Annealing
//! `λ_t = min(1, t / annealing_epochs)`. The ICLR code passes the 1-based epoch
//! (`for epoch in range(1, epochs + 1)`, `--lambda-epochs 50`): `t = epoch + 1` with modbal's
//! 0-based epoch (`epoch_count = "from_one"`, default). The TPAMI code (`train_TMC_nyud2.py`)
//! passes the 0-based `i_epoch` with `--annealing_epoch 10` (`epoch_count = "from_zero"`).
//! `schedule_epochs > 0` scales `annealing_epochs` to the run's length
//! (`modbal_core::scale_epoch`, at least 1); the default 0 keeps the official absolute schedule,
//! so in a run shorter than 50 epochs the KL term never reaches full weight.
//!
//! # Prediction
//! [`Method::predict`] returns `ln α` of the combined opinion: its argmax is the official
//! `torch.max(evidence_a, 1)` (α = e + 1, and the belief `b = e/S` has the same argmax), and its
//! softmax is the Dirichlet mean `α/S`, so the evaluation loss (CE of the prediction) is the
//! negative log of the expected class probability. Per-modality predictions are `ln α_m`.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `uncertainty.<m>` and `uncertainty.combined` (batch means of `u = K/S`), `conflict` (mean `C`
//! of the last combination), `annealing` (λ_t), `annealing_epochs` (after scaling), and the loss
//! parts `loss.<m>`, `loss.combined`.

use crate::params::MethodParams;
use candle_core::{DType, Tensor};
use modbal_core::{
    scale_epoch, Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext,
};
use modbal_encoders::FusionConfig;
use modbal_tensors::special::{digamma, lgamma};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The per-opinion loss form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TmcLoss {
    /// `Σ_k y_k (ψ(S) − ψ(α_k))` (paper eq 5, official `ce_loss`, used by both official
    /// training scripts).
    #[default]
    Digamma,
    /// `Σ_k (y_k − p_k)² + p_k(1 − p_k)/(S + 1)` with `p = α/S` (official `mse_loss`, unused by
    /// the official scripts).
    Mse,
}

/// How the epoch index that the annealing sees is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochCount {
    /// `t = epoch + 1` (ICLR `train.py`: `range(1, epochs + 1)`): λ > 0 from the first epoch.
    #[default]
    FromOne,
    /// `t = epoch` (TPAMI `train_TMC_nyud2.py`: `range(start_epoch, max_epochs)` from 0).
    FromZero,
}

/// Options of `tmc` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "tmc"
/// annealing_epochs = 50      # λ_t = min(1, t / 50)
/// epoch_count = "from_one"   # or "from_zero" (TPAMI code)
/// schedule_epochs = 0        # > 0: scale annealing_epochs to the run's epochs
/// loss = "digamma"           # or "mse"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TmcConfig {
    /// Epochs over which the KL coefficient grows to 1, ≥ 1. Default 50: ICLR `train.py`
    /// `--lambda-epochs 50` (the TPAMI NYU/SUN scripts use `--annealing_epoch 10`).
    pub annealing_epochs: usize,
    /// Epoch counting of the annealing. Default [`EpochCount::FromOne`] (ICLR code).
    pub epoch_count: EpochCount,
    /// Length of the schedule `annealing_epochs` refers to; > 0 scales it to the run
    /// (`round(annealing_epochs · train.epochs / schedule_epochs)`, at least 1). Default 0: the
    /// official absolute schedule.
    pub schedule_epochs: usize,
    /// Per-opinion loss. Default [`TmcLoss::Digamma`] (paper eq 5, official `ce_loss`).
    pub loss: TmcLoss,
}

impl Default for TmcConfig {
    fn default() -> Self {
        Self {
            annealing_epochs: 50,
            epoch_count: EpochCount::FromOne,
            schedule_epochs: 0,
            loss: TmcLoss::Digamma,
        }
    }
}

impl TmcConfig {
    /// The annealing length of a run of `run_epochs` epochs (scaled if `schedule_epochs > 0`).
    pub fn annealing_epochs_for(&self, run_epochs: usize) -> usize {
        scale_epoch(self.annealing_epochs, self.schedule_epochs, run_epochs).max(1)
    }

    /// `λ_t = min(1, t / annealing)` at the 0-based `epoch` of a run of `run_epochs` epochs.
    pub fn annealing_coef(&self, epoch: usize, run_epochs: usize) -> f64 {
        let t = match self.epoch_count {
            EpochCount::FromOne => epoch + 1,
            EpochCount::FromZero => epoch,
        };
        (t as f64 / self.annealing_epochs_for(run_epochs) as f64).min(1.0)
    }
}

/// `softplus(x) = relu(x) + ln(1 + exp(−|x|))`, stable for any `x` (PyTorch `F.softplus`; its
/// linear branch above 20 differs by < 3e-9).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

/// Dirichlet parameters `α = softplus(z) + 1` of logits `z: [B, K]`.
pub fn alpha_from_logits(z: &Tensor) -> Result<Tensor> {
    Ok((softplus(z)? + 1.0)?)
}

/// Uncertainty `u = K / S` (`[B, 1]`) of Dirichlet parameters `α: [B, K]`.
pub fn uncertainty(alpha: &Tensor) -> Result<Tensor> {
    let k = alpha.dim(1)? as f64;
    Ok(alpha.sum_keepdim(1)?.recip()?.affine(k, 0.0)?)
}

/// The reduced Dempster–Shafer combination of two opinions `α¹, α²: [B, K]` (module docs), with
/// the conflict `C: [B, 1]`.
pub fn ds_combine_two(a1: &Tensor, a2: &Tensor) -> Result<(Tensor, Tensor)> {
    if a1.dims() != a2.dims() || a1.rank() != 2 {
        return Err(ModbalError::Data(format!(
            "tmc: opinions of shapes {:?} and {:?}, expected two equal [B, K]",
            a1.dims(),
            a2.dims()
        )));
    }
    let k = a1.dim(1)? as f64;
    let s1 = a1.sum_keepdim(1)?;
    let s2 = a2.sum_keepdim(1)?;
    let b1 = (a1 - 1.0)?.broadcast_div(&s1)?;
    let b2 = (a2 - 1.0)?.broadcast_div(&s2)?;
    let u1 = s1.recip()?.affine(k, 0.0)?;
    let u2 = s2.recip()?.affine(k, 0.0)?;
    let bb = (&b1 * &b2)?;
    let conflict = ((b1.sum_keepdim(1)? * b2.sum_keepdim(1)?)? - bb.sum_keepdim(1)?)?;
    let norm = conflict.affine(-1.0, 1.0)?; // 1 − C
    let b = ((bb + b1.broadcast_mul(&u2)?)? + b2.broadcast_mul(&u1)?)?.broadcast_div(&norm)?;
    let u = (u1 * u2)?.div(&norm)?;
    let s = u.recip()?.affine(k, 0.0)?;
    let alpha = (b.broadcast_mul(&s)? + 1.0)?;
    Ok((alpha, conflict))
}

/// The combination of every opinion, left to right (`DS_Combin`), with the last conflict.
/// Needs at least two opinions.
pub fn ds_combine(alphas: &[Tensor]) -> Result<(Tensor, Tensor)> {
    if alphas.len() < 2 {
        return Err(ModbalError::Config(format!(
            "tmc combines at least two modalities (views), got {}",
            alphas.len()
        )));
    }
    let (mut acc, mut conflict) = ds_combine_two(&alphas[0], &alphas[1])?;
    for a in &alphas[2..] {
        (acc, conflict) = ds_combine_two(&acc, a)?;
    }
    Ok((acc, conflict))
}

/// One-hot `[B, K]` (dtype of `like`) of labels `[B]`.
fn one_hot(labels: &Tensor, like: &Tensor) -> Result<Tensor> {
    let k = like.dim(1)?;
    let classes = Tensor::arange(0u32, k as u32, like.device())?.unsqueeze(0)?;
    let y = labels.to_dtype(DType::U32)?.unsqueeze(1)?;
    Ok(y.broadcast_eq(&classes)?.to_dtype(like.dtype())?)
}

/// `KL(Dir(α) ‖ Dir(1))` per sample (`[B]`; official `KL`).
pub fn kl_to_uniform(alpha: &Tensor) -> Result<Tensor> {
    let k = alpha.dim(1)?;
    let s = alpha.sum_keepdim(1)?;
    let ln_b = (lgamma(&s)?.squeeze(1)? - lgamma(alpha)?.sum(1)?)?;
    let ln_gamma_k: f64 = (1..k).map(|j| (j as f64).ln()).sum();
    let dg = digamma(alpha)?.broadcast_sub(&digamma(&s)?)?;
    let lin = ((alpha - 1.0)? * dg)?.sum(1)?;
    Ok(((lin + ln_b)? - ln_gamma_k)?)
}

/// The per-sample evidential loss `L(α)` (`[B]`, module docs) with KL coefficient `coef`.
pub fn evidential_loss(
    alpha: &Tensor,
    labels: &Tensor,
    coef: f64,
    kind: TmcLoss,
) -> Result<Tensor> {
    let y = one_hot(labels, alpha)?;
    let s = alpha.sum_keepdim(1)?;
    let fit = match kind {
        TmcLoss::Digamma => {
            let d = digamma(&s)?.broadcast_sub(&digamma(alpha)?)?;
            (&y * d)?.sum(1)?
        }
        TmcLoss::Mse => {
            let p = alpha.broadcast_div(&s)?;
            let err = (&y - &p)?.sqr()?.sum(1)?;
            let var = (alpha * alpha.broadcast_sub(&s)?.neg()?)?
                .broadcast_div(&(s.sqr()? * (&s + 1.0)?)?)?
                .sum(1)?;
            (err + var)?
        }
    };
    // α̃ = (α − 1)(1 − y) + 1
    let alpha_tilde = (((alpha - 1.0)? * y.affine(-1.0, 1.0)?)? + 1.0)?;
    let kl = kl_to_uniform(&alpha_tilde)?;
    Ok((fit + (kl * coef)?)?)
}

/// Mean of a tensor as f64.
fn mean(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?)
}

/// The TMC method; see the [module docs](self).
#[derive(Debug)]
pub struct Tmc {
    cfg: TmcConfig,
}

impl Tmc {
    pub fn new(cfg: TmcConfig) -> Result<Self> {
        cfg.check()?;
        Ok(Self { cfg })
    }

    pub fn config(&self) -> &TmcConfig {
        &self.cfg
    }

    /// `α_m` of every modality's logits.
    fn alphas(out: &MultimodalOutput) -> Result<Vec<Tensor>> {
        out.per_modality_logits
            .iter()
            .map(alpha_from_logits)
            .collect()
    }
}

impl Method for Tmc {
    fn name(&self) -> &str {
        "tmc"
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        crate::util::check_batch_inputs("tmc", model, batch)?;
        let coef = self.cfg.annealing_coef(ctx.epoch, ctx.num_epochs);
        let alphas = Self::alphas(out)?;
        let (combined, conflict) = ds_combine(&alphas)?;
        let mut parts = BTreeMap::new();
        let mut total = evidential_loss(&combined, &batch.labels, coef, self.cfg.loss)?;
        parts.insert("combined".to_string(), total.mean_all()?.detach());
        for (name, a) in model.modalities().iter().zip(&alphas) {
            let l = evidential_loss(a, &batch.labels, coef, self.cfg.loss)?;
            parts.insert(name.clone(), l.mean_all()?.detach());
            ctx.log
                .add_mean(format!("uncertainty.{name}"), mean(&uncertainty(a)?)?);
            total = (total + l)?;
        }
        ctx.log
            .add_mean("uncertainty.combined", mean(&uncertainty(&combined)?)?);
        ctx.log.add_mean("conflict", mean(&conflict)?);
        ctx.log.set("annealing", coef);
        ctx.log.set(
            "annealing_epochs",
            self.cfg.annealing_epochs_for(ctx.num_epochs),
        );
        Ok(LossTerms {
            total: total.mean_all()?,
            parts,
        })
    }

    fn predict(&self, _model: &dyn MultimodalModel, out: &MultimodalOutput) -> Result<Tensor> {
        Ok(ds_combine(&Self::alphas(out)?)?.0.log()?)
    }

    fn predict_modalities(
        &self,
        _model: &dyn MultimodalModel,
        out: &MultimodalOutput,
    ) -> Result<Vec<Tensor>> {
        Self::alphas(out)?.iter().map(|a| Ok(a.log()?)).collect()
    }
}

/// Registry entry: `[method] name = "tmc"` with [`TmcConfig`]'s keys.
impl MethodParams for TmcConfig {
    fn check(&self) -> Result<()> {
        if self.annealing_epochs == 0 {
            return Err(ModbalError::Config(
                "tmc: annealing_epochs must be ≥ 1, got 0".into(),
            ));
        }
        Ok(())
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Sum
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Tmc::new(self.clone())?))
    }
}
