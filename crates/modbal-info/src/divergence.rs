//! Divergences between categorical predictions (UDI eq 4-5) and the variational softmax lower
//! bound on mutual information (IBML eq 10-11). All differentiable.
//!
//! * **KL**: `KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)`, ≥ 0, zero iff p = q. With the convention
//!   `0·log 0 = 0`; where `q_c = 0 < p_c` the true value is +∞ and the estimate is finite but huge
//!   (q is floored at [`PROB_FLOOR`]). The logits forms use `log_softmax` and need no floor.
//! * **Jensen–Shannon** (UDI eq 4): `JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)`, `m = (p + q)/2`.
//!   Symmetric, 0 iff p = q, and ≤ log 2 (attained for disjoint supports). UDI's consistency
//!   loss (eq 5) is the *sum* over the batch: use [`Reduction::Sum`].
//! * **Variational MI bound** (IBML eq 10-11): for a classifier g with logits z,
//!   `I(X; Y) ≥ E[log softmax(z)_y] + log C = log C − CE(z, y)`. It can be negative for a bad
//!   classifier (the bound is then vacuous, since I ≥ 0), and is at most log C.
//!
//! # Shapes
//! `p, q: [N, C]` probability rows (or logits for the `_logits` forms) → `[N]` with
//! [`Reduction::None`], `[]` otherwise. `labels: [N]` (u32/i64).

use crate::error::{check_finite, InfoError, Result};
use candle_core::{DType, Tensor, D};
use modbal_tensors::ops::log_softmax;

/// Floor applied to probabilities before taking logs in the probability forms.
pub const PROB_FLOOR: f64 = 1e-12;

/// How per-sample values are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// `[N]`, one value per sample.
    None,
    /// Mean over samples (scalar).
    #[default]
    Mean,
    /// Sum over samples (scalar), as UDI eq 5.
    Sum,
}

fn reduce(v: Tensor, r: Reduction) -> Result<Tensor> {
    Ok(match r {
        Reduction::None => v,
        Reduction::Mean => v.mean_all()?,
        Reduction::Sum => v.sum_all()?,
    })
}

fn check_pair(p: &Tensor, q: &Tensor, what: (&str, &str)) -> Result<()> {
    if p.rank() != 2 || p.dims() != q.dims() {
        return Err(InfoError::Input(format!(
            "{} and {} must both be [N, C] with equal shapes, got {:?} and {:?}",
            what.0,
            what.1,
            p.dims(),
            q.dims()
        )));
    }
    check_finite(p, what.0)?;
    check_finite(q, what.1)
}

fn check_probs(p: &Tensor, what: &str) -> Result<()> {
    let min = p.to_dtype(DType::F64)?.min_all()?.to_scalar::<f64>()?;
    let sums: Vec<f64> = p.to_dtype(DType::F64)?.sum(D::Minus1)?.to_vec1()?;
    if min < 0.0 {
        return Err(InfoError::Input(format!(
            "{what} has negative probabilities ({min})"
        )));
    }
    if let Some((i, s)) = sums
        .iter()
        .enumerate()
        .find(|(_, s)| (*s - 1.0).abs() > 1e-4)
    {
        return Err(InfoError::Input(format!(
            "{what}: row {i} sums to {s}, not 1 (pass probabilities, or use the _logits form)"
        )));
    }
    Ok(())
}

/// Σ_c p_c log p_c − p_c log q_c per row, with 0·log 0 = 0.
fn kl_rows(p: &Tensor, log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    Ok((p * (log_p - log_q)?)?.sum(D::Minus1)?)
}

/// `KL(p ‖ q)` between probability rows.
pub fn kl_divergence(p: &Tensor, q: &Tensor, r: Reduction) -> Result<Tensor> {
    check_pair(p, q, ("p", "q"))?;
    check_probs(p, "p")?;
    check_probs(q, "q")?;
    let lp = p.clamp(PROB_FLOOR, 1.0)?.log()?;
    let lq = q.clamp(PROB_FLOOR, 1.0)?.log()?;
    reduce(kl_rows(p, &lp, &lq)?, r)
}

/// `KL(softmax(zp) ‖ softmax(zq))` from logits (no floor needed).
pub fn kl_divergence_logits(zp: &Tensor, zq: &Tensor, r: Reduction) -> Result<Tensor> {
    check_pair(zp, zq, ("zp", "zq"))?;
    let lp = log_softmax(zp, D::Minus1)?;
    let lq = log_softmax(zq, D::Minus1)?;
    reduce(kl_rows(&lp.exp()?, &lp, &lq)?, r)
}

fn js_from(p: &Tensor, q: &Tensor, lp: &Tensor, lq: &Tensor) -> Result<Tensor> {
    let m = ((p + q)? * 0.5)?;
    let lm = m.clamp(PROB_FLOOR, 1.0)?.log()?;
    Ok(((kl_rows(p, lp, &lm)? + kl_rows(q, lq, &lm)?)? * 0.5)?)
}

/// Jensen–Shannon divergence between probability rows (UDI eq 4-5).
pub fn js_divergence(p: &Tensor, q: &Tensor, r: Reduction) -> Result<Tensor> {
    check_pair(p, q, ("p", "q"))?;
    check_probs(p, "p")?;
    check_probs(q, "q")?;
    let lp = p.clamp(PROB_FLOOR, 1.0)?.log()?;
    let lq = q.clamp(PROB_FLOOR, 1.0)?.log()?;
    reduce(js_from(p, q, &lp, &lq)?, r)
}

/// Jensen–Shannon divergence between `softmax(zp)` and `softmax(zq)`.
pub fn js_divergence_logits(zp: &Tensor, zq: &Tensor, r: Reduction) -> Result<Tensor> {
    check_pair(zp, zq, ("zp", "zq"))?;
    let lp = log_softmax(zp, D::Minus1)?;
    let lq = log_softmax(zq, D::Minus1)?;
    reduce(js_from(&lp.exp()?, &lq.exp()?, &lp, &lq)?, r)
}

/// The variational lower bound `log softmax(z)_y + log C` (IBML eq 10-11), per sample or
/// reduced. Its mean is a lower bound on I(X; Y) for the classifier producing `logits`.
pub fn softmax_mi_lower_bound(logits: &Tensor, labels: &Tensor, r: Reduction) -> Result<Tensor> {
    let (n, c) = logits
        .dims2()
        .map_err(|_| InfoError::Input(format!("logits must be [N, C], got {:?}", logits.dims())))?;
    if labels.dims() != [n] {
        return Err(InfoError::Input(format!(
            "labels must be [{n}], got {:?}",
            labels.dims()
        )));
    }
    check_finite(logits, "logits")?;
    let ce = modbal_tensors::cross_entropy_per_sample(logits, labels)?;
    reduce((ce.neg()? + (c as f64).ln())?, r)
}
