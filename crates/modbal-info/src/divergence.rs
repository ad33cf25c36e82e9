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
    if let Some(v) = fast::prob_pair(p, q, r, fast::Kind::Kl) {
        return v;
    }
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
    if let Some(v) = fast::prob_pair(p, q, r, fast::Kind::Js) {
        return v;
    }
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
    if let Some(v) = fast::softmax_bound(logits, labels, r) {
        return v;
    }
    check_finite(logits, "logits")?;
    let ce = modbal_tensors::cross_entropy_per_sample(logits, labels)?;
    reduce((ce.neg()? + (c as f64).ln())?, r)
}

/// Fused f64 paths (see the crate's `fast` module): one pass over the rows, logs and exps
/// vectorised, rows split over threads; the same floors, validation and error messages as the
/// tensor path.
mod fast {
    use super::{reduce, InfoError, Reduction, Result, PROB_FLOOR};
    use crate::fast::{
        max_lanes, par_ranges, simd_fn, sum_lanes, sum_min_finite, untracked_f64, vm,
    };
    use candle_core::{DType, Device, Tensor};

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Kind {
        Kl,
        Js,
    }

    /// Per-row statistics of one probability matrix, for the validation.
    #[derive(Clone, Copy)]
    struct RowStats {
        sum: f64,
        min: f64,
        finite: bool,
    }

    simd_fn! {
        fn stats(row: &[f64]) -> RowStats {
            let (sum, min, finite) = sum_min_finite(row);
            RowStats { sum, min, finite }
        }
    }

    simd_fn! {
        /// `Σ_c p_c (ln p̃_c − ln q̃_c)` (KL) or `½ Σ_c [p_c (ln p̃_c − ln m̃_c) + q_c (ln q̃_c −
        /// ln m̃_c)]` (JS) for one row, `x̃ = clamp(x, PROB_FLOOR, 1)`, `m = (p + q)/2`; the
        /// scratch buffers hold the logs.
        fn row_value(p: &[f64], q: &[f64], js: bool, lp: &mut [f64], lq: &mut [f64], lm: &mut [f64]) -> f64 {
            for ((a, b), (&x, &y)) in lp.iter_mut().zip(lq.iter_mut()).zip(p.iter().zip(q)) {
                *a = x.clamp(PROB_FLOOR, 1.0);
                *b = y.clamp(PROB_FLOOR, 1.0);
            }
            vm::ln_in_place(lp);
            vm::ln_in_place(lq);
            if !js {
                for ((a, &b), &x) in lp.iter_mut().zip(lq.iter()).zip(p) {
                    *a = x * (*a - b);
                }
                return sum_lanes(lp);
            }
            for (m, (&x, &y)) in lm.iter_mut().zip(p.iter().zip(q)) {
                *m = ((x + y) * 0.5).clamp(PROB_FLOOR, 1.0);
            }
            vm::ln_in_place(lm);
            for (((a, b), &m), (&x, &y)) in lp.iter_mut().zip(lq.iter_mut()).zip(lm.iter()).zip(p.iter().zip(q)) {
                *a = x * (*a - m);
                *b = y * (*b - m);
            }
            (sum_lanes(lp) + sum_lanes(lq)) * 0.5
        }
    }

    /// The tensor result of per-row values under a reduction (f64, CPU).
    fn reduced(rows: Vec<f64>, r: Reduction) -> Result<Tensor> {
        let n = rows.len();
        reduce(Tensor::from_vec(rows, n, &Device::Cpu)?, r)
    }

    /// KL / JS between probability rows, or `None` when the inputs do not qualify (then the
    /// tensor path runs, and also produces its shape errors).
    pub(super) fn prob_pair(
        p: &Tensor,
        q: &Tensor,
        r: Reduction,
        kind: Kind,
    ) -> Option<Result<Tensor>> {
        if p.rank() != 2 || p.dims() != q.dims() {
            return None;
        }
        let (n, c) = p.dims2().ok()?;
        if n == 0 || c == 0 {
            return None;
        }
        let js = kind == Kind::Js;
        untracked_f64(&[p, q], |s| {
            let (pv, qv) = (s[0], s[1]);
            let parts = par_ranges(n, c * if js { 5 } else { 3 }, |rows| {
                let (mut lp, mut lq, mut lm) = (
                    vec![0.0; c],
                    vec![0.0; c],
                    vec![0.0; if js { c } else { 0 }],
                );
                rows.map(|i| {
                    let (pr, qr) = (&pv[i * c..(i + 1) * c], &qv[i * c..(i + 1) * c]);
                    (
                        row_value(pr, qr, js, &mut lp, &mut lq, &mut lm),
                        stats(pr),
                        stats(qr),
                    )
                })
                .collect::<Vec<_>>()
            });
            let rows: Vec<(f64, RowStats, RowStats)> = parts.into_iter().flatten().collect();
            // The tensor path's checks, in its order: finiteness of p then q, then for p and
            // then q the minimum and the first row whose sum is off.
            for (k, what) in [(1, "p"), (2, "q")] {
                if rows.iter().any(|t| !pick(t, k).finite) {
                    return Err(InfoError::Input(format!(
                        "{what} contains NaN or infinite values"
                    )));
                }
            }
            for (k, what) in [(1, "p"), (2, "q")] {
                let min = rows
                    .iter()
                    .map(|t| pick(t, k).min)
                    .fold(f64::INFINITY, f64::min);
                if min < 0.0 {
                    return Err(InfoError::Input(format!(
                        "{what} has negative probabilities ({min})"
                    )));
                }
                if let Some((i, st)) = rows
                    .iter()
                    .map(|t| pick(t, k))
                    .enumerate()
                    .find(|(_, st)| (st.sum - 1.0).abs() > 1e-4)
                {
                    return Err(InfoError::Input(format!(
                        "{what}: row {i} sums to {}, not 1 (pass probabilities, or use the _logits form)",
                        st.sum
                    )));
                }
            }
            reduced(rows.into_iter().map(|t| t.0).collect(), r)
        })
    }

    fn pick(t: &(f64, RowStats, RowStats), k: usize) -> RowStats {
        if k == 1 {
            t.1
        } else {
            t.2
        }
    }

    /// Labels as u32 if they are valid class indices for `c` classes (else `None`: the tensor
    /// path reports the problem).
    fn class_labels(labels: &Tensor, n: usize, c: usize) -> Option<Vec<u32>> {
        if !labels.device().is_cpu() || labels.dims() != [n] {
            return None;
        }
        let v: Vec<u32> = match labels.dtype() {
            DType::U32 => labels.to_vec1::<u32>().ok()?,
            DType::I64 => {
                let v = labels.to_vec1::<i64>().ok()?;
                if v.iter().any(|&l| l < 0 || l >= c as i64) {
                    return None;
                }
                v.into_iter().map(|l| l as u32).collect()
            }
            DType::U8 => labels
                .to_vec1::<u8>()
                .ok()?
                .into_iter()
                .map(u32::from)
                .collect(),
            _ => return None,
        };
        v.iter().all(|&l| (l as usize) < c).then_some(v)
    }

    simd_fn! {
        /// `log softmax(z)_y` of one row: `(z_y − max) − ln Σ_c e^{z_c − max}`.
        fn row_log_softmax_at(z: &[f64], y: usize, buf: &mut [f64]) -> f64 {
            let m = max_lanes(z);
            for (b, &v) in buf.iter_mut().zip(z) {
                *b = v - m;
            }
            let zy = buf[y];
            vm::exp_in_place(buf);
            zy - sum_lanes(buf).ln()
        }
    }

    /// The softmax bound `log softmax(z)_y + log C`, or `None` when the inputs do not qualify.
    pub(super) fn softmax_bound(
        logits: &Tensor,
        labels: &Tensor,
        r: Reduction,
    ) -> Option<Result<Tensor>> {
        let (n, c) = logits.dims2().ok()?;
        if n == 0 || c == 0 || logits.track_op() {
            return None;
        }
        // Finite logits and valid labels only: otherwise the tensor path gives its errors.
        if crate::fast::tensor_all_finite(logits) != Some(true) {
            return None;
        }
        let y = class_labels(labels, n, c)?;
        let ln_c = (c as f64).ln();
        untracked_f64(&[logits], |s| {
            let z = s[0];
            let rows: Vec<f64> = par_ranges(n, c * 2, |rows| {
                let mut buf = vec![0.0; c];
                rows.map(|i| {
                    row_log_softmax_at(&z[i * c..(i + 1) * c], y[i] as usize, &mut buf) + ln_c
                })
                .collect::<Vec<_>>()
            })
            .into_iter()
            .flatten()
            .collect();
            reduced(rows, r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn probs(rng: &mut modbal_tensors::SeededRng, n: usize, c: usize, zeros: bool) -> Tensor {
        let mut v = Vec::with_capacity(n * c);
        for i in 0..n {
            let row: Vec<f64> = (0..c)
                .map(|j| {
                    if zeros && j > 0 && (i + j) % 3 == 0 {
                        0.0
                    } else {
                        (2.0 * rng.normal()).exp()
                    }
                })
                .collect();
            let s: f64 = row.iter().sum();
            v.extend(row.iter().map(|x| x / s));
        }
        Tensor::from_vec(v, (n, c), &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let a: Vec<f64> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f64> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-12 * y.abs().max(1.0),
                "{what}: {x} vs {y}"
            );
        }
    }

    /// The fused f64 path (untracked inputs) against the tensor graph (tracked inputs).
    #[test]
    fn fused_paths_match_the_tensor_graph() {
        let mut rng = modbal_tensors::SeededRng::new(9);
        for &(n, c) in &[(1, 1), (3, 2), (17, 9), (40, 37), (300, 130)] {
            for zeros in [false, true] {
                let p = probs(&mut rng, n, c, zeros);
                let q = probs(&mut rng, n, c, !zeros);
                let (pv, qv) = (Var::from_tensor(&p).unwrap(), Var::from_tensor(&q).unwrap());
                for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    close(
                        &kl_divergence(&p, &q, r).unwrap(),
                        &kl_divergence(pv.as_tensor(), qv.as_tensor(), r).unwrap(),
                        "kl",
                    );
                    close(
                        &js_divergence(&p, &q, r).unwrap(),
                        &js_divergence(pv.as_tensor(), qv.as_tensor(), r).unwrap(),
                        "js",
                    );
                }
            }
            let z = (rng
                .randn((n, c), 0.0, 3.0, DType::F64, &Device::Cpu)
                .unwrap()
                + 50.0)
                .unwrap();
            let y: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
            let zv = Var::from_tensor(&z).unwrap();
            for labels in [
                Tensor::new(y.as_slice(), &Device::Cpu).unwrap(),
                Tensor::new(y.as_slice(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::I64)
                    .unwrap(),
            ] {
                for r in [Reduction::None, Reduction::Mean] {
                    close(
                        &softmax_mi_lower_bound(&z, &labels, r).unwrap(),
                        &softmax_mi_lower_bound(zv.as_tensor(), &labels, r).unwrap(),
                        "softmax bound",
                    );
                }
            }
        }
    }

    /// Invalid input gives the tensor path's errors on the fused path too.
    #[test]
    fn fused_paths_report_the_same_errors() {
        let dev = Device::Cpu;
        let ok = Tensor::new(&[[0.5f64, 0.5], [0.2, 0.8]], &dev).unwrap();
        let cases = [
            Tensor::new(&[[0.5f64, f64::NAN], [0.2, 0.8]], &dev).unwrap(),
            Tensor::new(&[[1.5f64, -0.5], [0.2, 0.8]], &dev).unwrap(),
            Tensor::new(&[[0.5f64, 0.5], [0.2, 0.7]], &dev).unwrap(),
        ];
        for bad in &cases {
            let bv = Var::from_tensor(bad).unwrap();
            for (a, b, av, bvv) in [
                (&ok, bad, ok.clone(), bv.as_tensor().clone()),
                (bad, &ok, bv.as_tensor().clone(), ok.clone()),
            ] {
                let fast = kl_divergence(a, b, Reduction::Mean)
                    .unwrap_err()
                    .to_string();
                let slow = kl_divergence(&av, &bvv, Reduction::Mean)
                    .unwrap_err()
                    .to_string();
                assert_eq!(fast, slow);
                let fast = js_divergence(a, b, Reduction::Mean)
                    .unwrap_err()
                    .to_string();
                let slow = js_divergence(&av, &bvv, Reduction::Mean)
                    .unwrap_err()
                    .to_string();
                assert_eq!(fast, slow);
            }
        }
    }
}
