//! The differentiable "soft" form over probability vectors (ARM eq 1-2, 5-6, 8-10): MI, NMI,
//! CMI and NCMI of the soft joint distribution of two or three predictions (or of a prediction
//! and labels), and the per-sample expected pointwise MI; with the fused f64 path of the soft MI
//! with labels.

use super::counting::symbols;
use crate::error::{InfoError, Result};
use candle_core::{DType, Tensor};

/// The ε of every `log(u + ε)` in the soft estimators.
pub const SOFT_EPS: f64 = 1e-12;

/// Tolerance on the row sums of probability matrices.
const ROW_SUM_TOL: f64 = 1e-4;

/// Checks that `p` is `[N, C]`, float, finite, non-negative with rows summing to 1; returns (N, C).
fn check_probs(p: &Tensor, what: &str) -> Result<(usize, usize)> {
    let (n, c) = match p.dims() {
        &[n, c] => (n, c),
        dims => {
            return Err(InfoError::Input(format!(
                "{what}: expected a [N, C] probability matrix, got shape {dims:?}"
            )))
        }
    };
    if !p.dtype().is_float() {
        return Err(InfoError::Input(format!(
            "{what}: expected a float tensor, got {:?}",
            p.dtype()
        )));
    }
    if n == 0 || c == 0 {
        return Err(InfoError::Input(format!(
            "{what}: empty probability matrix of shape [{n}, {c}]"
        )));
    }
    // Contiguous f64 CPU data is checked in place, anything else through a host copy.
    if let Some(r) = crate::fast::cpu_f64(&[p], |s| validate_probs(s[0], c, what)) {
        r?;
        return Ok((n, c));
    }
    let v = p.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    validate_probs(&v, c, what)?;
    Ok((n, c))
}

/// The entry checks of [`check_probs`] on row-major values with rows of `c` entries.
fn validate_probs(v: &[f64], c: usize, what: &str) -> Result<()> {
    for (i, row) in v.chunks_exact(c).enumerate() {
        let mut s = 0.0;
        for (j, &x) in row.iter().enumerate() {
            if !x.is_finite() {
                return Err(InfoError::Input(format!(
                    "{what}: entry ({i}, {j}) is {x} (NaN/Inf are not allowed)"
                )));
            }
            if x < 0.0 {
                return Err(InfoError::Input(format!(
                    "{what}: entry ({i}, {j}) = {x} is negative (rows must be probabilities)"
                )));
            }
            s += x;
        }
        if (s - 1.0).abs() > ROW_SUM_TOL {
            return Err(InfoError::Input(format!(
                "{what}: row {i} sums to {s} (must be 1 within {ROW_SUM_TOL})"
            )));
        }
    }
    Ok(())
}

fn check_same_n(what: &str, n: usize, m: usize) -> Result<()> {
    if n != m {
        return Err(InfoError::Input(format!(
            "{what}: p has N = {n} rows but the second argument has {m}"
        )));
    }
    Ok(())
}

/// Labels compacted to `0..K` (K = number of distinct labels) as a one-hot `[N, K]` matrix of
/// `p`'s dtype and device, together with the compact labels.
fn one_hot_like(y: &[u32], p: &Tensor) -> Result<(Tensor, Vec<u32>)> {
    let (ids, k) = compact_labels(y);
    let mut oh = vec![0f64; y.len() * k];
    for (i, &c) in ids.iter().enumerate() {
        oh[i * k + c as usize] = 1.0;
    }
    let t = Tensor::from_vec(oh, (y.len(), k), p.device())?.to_dtype(p.dtype())?;
    Ok((t, ids))
}

/// Labels compacted to `0..K` in order of first appearance, and K.
fn compact_labels(y: &[u32]) -> (Vec<u32>, usize) {
    let s = symbols(y);
    // Compact the (possibly sparse) alphabet to the labels that occur.
    let mut map = vec![u32::MAX; s.k];
    let mut k = 0u32;
    let ids: Vec<u32> = s
        .ids
        .iter()
        .map(|&v| {
            let m = &mut map[v as usize];
            if *m == u32::MAX {
                *m = k;
                k += 1;
            }
            *m
        })
        .collect();
    (ids, k as usize)
}

/// `log(u + ε)`.
fn log_eps(u: &Tensor) -> Result<Tensor> {
    Ok(u.affine(1.0, SOFT_EPS)?.log()?)
}

/// Soft joint `J = pᵀ q / N`: `[C, C']`.
fn soft_joint(p: &Tensor, q: &Tensor, n: usize) -> Result<Tensor> {
    let q = q.to_dtype(p.dtype())?;
    Ok(p.t()?.matmul(&q)?.affine(1.0 / n as f64, 0.0)?)
}

/// Pointwise MI matrix `log(J / (P(a) P(b)))`: `[C, C']`.
fn pmi_matrix(j: &Tensor) -> Result<Tensor> {
    let la = log_eps(&j.sum_keepdim(1)?)?;
    let lb = log_eps(&j.sum_keepdim(0)?)?;
    Ok(log_eps(j)?.broadcast_sub(&la)?.broadcast_sub(&lb)?)
}

/// `Σ J·pmi`, clamped at 0.
fn mi_of_joint(j: &Tensor) -> Result<Tensor> {
    Ok((j * pmi_matrix(j)?)?.sum_all()?.maximum(0.0)?)
}

/// `−Σ u log(u + ε)` of a marginal, clamped at 0.
fn entropy_of_marginal(u: &Tensor) -> Result<Tensor> {
    Ok((u * log_eps(u)?)?.sum_all()?.neg()?.maximum(0.0)?)
}

/// NMI of a soft joint: `I / √(H(A) H(B) + ε)`, clamped to [0, 1].
fn nmi_of_joint(j: &Tensor) -> Result<Tensor> {
    let mi = mi_of_joint(j)?;
    let ha = entropy_of_marginal(&j.sum(1)?)?;
    let hb = entropy_of_marginal(&j.sum(0)?)?;
    let d = (ha * hb)?.affine(1.0, SOFT_EPS)?.sqrt()?;
    Ok((mi / d)?.clamp(0.0, 1.0)?)
}

/// Soft mutual information (ARM eq 1 on `P(a, b) = (1/N) Σ_i p_i(a) q_i(b)`), differentiable.
///
/// `p: [N, C]`, `q: [N, C']` (converted to `p`'s dtype) → scalar `[]` of `p`'s dtype.
/// Guarantee: ≥ 0 (clamped; the clamp only acts at independence, where the MI is at its minimum
/// and its gradient vanishes anyway) and ≤ min(H(P(a)), H(P(b))) up to ε-rounding; with one-hot
/// rows it equals [`mutual_information`] of the argmax labels. Errors: shapes, N mismatch, rows
/// that are negative, non-finite or do not sum to 1 within 1e-4 (validation copies the
/// matrices to the host).
///
/// [`mutual_information`]: super::plugin::mutual_information
pub fn soft_mutual_information(p: &Tensor, q: &Tensor) -> Result<Tensor> {
    let (n, _) = check_probs(p, "soft_mutual_information: p")?;
    let (m, _) = check_probs(q, "soft_mutual_information: q")?;
    check_same_n("soft_mutual_information", n, m)?;
    mi_of_joint(&soft_joint(p, q, n)?)
}

/// The fused f64 path of [`soft_mutual_information_labels`] (see the crate's `fast` module): the
/// soft joint `J = pᵀ onehot(y) / N` accumulated directly (row `i` of p added to the column of
/// label `y_i`, O(N·C) instead of the O(N·C·K) product with the one-hot matrix; the same sums),
/// then `max(0, Σ J (ln(J + ε) − ln(P(a) + ε) − ln(P(b) + ε)))` as `mi_of_joint`.
fn soft_mi_labels_fused(p: &[f64], n: usize, c: usize, y: &[u32]) -> f64 {
    use crate::fast::{par_ranges, simd_fn, sum_lanes, vm};
    let (ids, k) = compact_labels(y);
    // S[b][a] = Σ_{i: y_i = b} p_i(a), threads split the columns a (so that the sums, in row
    // order, do not depend on the number of threads).
    let parts = par_ranges(c, n, |cols| {
        let w = cols.len();
        let mut part = vec![0.0; k * w];
        for (row, &b) in p.chunks_exact(c).zip(&ids) {
            let dst = &mut part[b as usize * w..(b as usize + 1) * w];
            for (d, &v) in dst.iter_mut().zip(&row[cols.clone()]) {
                *d += v;
            }
        }
        (cols, part)
    });
    let inv_n = 1.0 / n as f64;
    let mut j = vec![0.0; k * c]; // J[b][a], row b
    for (cols, part) in parts {
        let w = cols.len();
        for b in 0..k {
            for (d, &v) in j[b * c + cols.start..b * c + cols.end]
                .iter_mut()
                .zip(&part[b * w..(b + 1) * w])
            {
                *d = v * inv_n;
            }
        }
    }
    let mut pa = vec![0.0; c];
    let mut lb = vec![0.0; k];
    for (b, row) in j.chunks_exact(c).enumerate() {
        for (s, &v) in pa.iter_mut().zip(row) {
            *s += v;
        }
        lb[b] = (row.iter().sum::<f64>() + SOFT_EPS).ln();
    }
    let la: Vec<f64> = pa.iter().map(|&v| (v + SOFT_EPS).ln()).collect();
    simd_fn! {
        /// `Σ_a J_ab ((ln(J_ab + ε) − la_a) − lb)` for one label b; `buf` is scratch.
        fn label_term(row: &[f64], la: &[f64], lb: f64, buf: &mut [f64]) -> f64 {
            for (o, &v) in buf.iter_mut().zip(row) {
                *o = v + SOFT_EPS;
            }
            vm::ln_in_place(buf);
            for ((o, &v), &l) in buf.iter_mut().zip(row).zip(la) {
                *o = v * ((*o - l) - lb);
            }
            sum_lanes(buf)
        }
    }
    let terms: Vec<f64> = par_ranges(k, c * 4, |labels| {
        let mut buf = vec![0.0; c];
        labels
            .map(|b| label_term(&j[b * c..(b + 1) * c], &la, lb[b], &mut buf))
            .collect::<Vec<f64>>()
    })
    .into_iter()
    .flatten()
    .collect();
    terms.iter().sum::<f64>().max(0.0)
}

/// [`soft_mutual_information`] with one-hot labels as `q` (`y: &[u32]` of length N, any values).
pub fn soft_mutual_information_labels(p: &Tensor, y: &[u32]) -> Result<Tensor> {
    let (n, c) = check_probs(p, "soft_mutual_information_labels: p")?;
    check_same_n("soft_mutual_information_labels", n, y.len())?;
    if let Some(mi) = crate::fast::untracked_f64(&[p], |s| soft_mi_labels_fused(s[0], n, c, y)) {
        return Ok(crate::fast::scalar(mi)?);
    }
    let (q, _) = one_hot_like(y, p)?;
    mi_of_joint(&soft_joint(p, &q, n)?)
}

/// Soft NMI, ARM eq 2: `I / √(H(A) H(B) + ε)` on the soft joint, differentiable.
///
/// `p: [N, C]`, `q: [N, C']` → scalar `[]`. Guarantee: in [0, 1] (clamped). Degenerate batches
/// (either soft marginal one-hot, so its entropy is 0) give 0 — unlike the plug-in
/// [`normalized_mutual_information`], whose "both constant → 1" convention has no gradient.
/// Errors: as [`soft_mutual_information`].
///
/// [`normalized_mutual_information`]: super::plugin::normalized_mutual_information
pub fn soft_nmi(p: &Tensor, q: &Tensor) -> Result<Tensor> {
    let (n, _) = check_probs(p, "soft_nmi: p")?;
    let (m, _) = check_probs(q, "soft_nmi: q")?;
    check_same_n("soft_nmi", n, m)?;
    nmi_of_joint(&soft_joint(p, q, n)?)
}

/// [`soft_nmi`] with one-hot labels as `q`.
pub fn soft_nmi_labels(p: &Tensor, y: &[u32]) -> Result<Tensor> {
    let (n, _) = check_probs(p, "soft_nmi_labels: p")?;
    check_same_n("soft_nmi_labels", n, y.len())?;
    let (q, _) = one_hot_like(y, p)?;
    nmi_of_joint(&soft_joint(p, &q, n)?)
}

/// Per-sample expected pointwise MI (ARM eq 5-6, see the module docs):
/// `m_i = Σ_a p_i(a) · log( P(a, y_i) / (P(a) P(y_i)) )` under the batch's soft joint
/// `P(a, b) = (1/N) Σ_j p_j(a) [y_j = b]`, differentiable.
///
/// `p: [N, C]`, `y: &[u32]` of length N → `[N]` of `p`'s dtype. Guarantee: finite;
/// `(1/N) Σ_i m_i` equals the (unclamped) [`soft_mutual_information_labels`]; with one-hot `p`,
/// `m_i` is the plug-in pointwise MI `log(n_{a,y_i} N / (n_a n_{y_i}))` of the argmax `a`. Single
/// values may be negative. Errors: as [`soft_mutual_information`].
pub fn per_sample_pointwise_mi(p: &Tensor, y: &[u32]) -> Result<Tensor> {
    let (n, _) = check_probs(p, "per_sample_pointwise_mi: p")?;
    check_same_n("per_sample_pointwise_mi", n, y.len())?;
    let (q, ids) = one_hot_like(y, p)?;
    let pmi = pmi_matrix(&soft_joint(p, &q, n)?)?; // [C, K]
    let idx = Tensor::from_vec(ids, n, p.device())?;
    let rows = pmi.t()?.contiguous()?.index_select(&idx, 0)?; // [N, C]: pmi(·, y_i)
    Ok((p * rows)?.sum(1)?)
}

/// Soft joint of three probability matrices: `[A, B, C]`.
fn soft_joint3(p: &Tensor, q: &Tensor, r: &Tensor, n: usize) -> Result<Tensor> {
    let (a, b, c) = (p.dim(1)?, q.dim(1)?, r.dim(1)?);
    let q = q.to_dtype(p.dtype())?;
    let r = r.to_dtype(p.dtype())?;
    let pq = p
        .unsqueeze(2)?
        .broadcast_mul(&q.unsqueeze(1)?)?
        .reshape((n, a * b))?;
    Ok(pq
        .t()?
        .matmul(&r)?
        .affine(1.0 / n as f64, 0.0)?
        .reshape((a, b, c))?)
}

/// (CMI, H(A|C), H(B|C)) of a soft joint `[A, B, C]`, each clamped at 0.
fn cmi_parts(j: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let pac = j.sum_keepdim(1)?; // [A, 1, C]
    let pbc = j.sum_keepdim(0)?; // [1, B, C]
    let pc = pac.sum_keepdim(0)?; // [1, 1, C]
    let (lac, lbc, lc) = (log_eps(&pac)?, log_eps(&pbc)?, log_eps(&pc)?);
    let ratio = log_eps(j)?
        .broadcast_add(&lc)?
        .broadcast_sub(&lac)?
        .broadcast_sub(&lbc)?;
    let cmi = (j * ratio)?.sum_all()?.maximum(0.0)?;
    let h_ac = (&pac * lac.broadcast_sub(&lc)?)?
        .sum_all()?
        .neg()?
        .maximum(0.0)?;
    let h_bc = (&pbc * lbc.broadcast_sub(&lc)?)?
        .sum_all()?
        .neg()?
        .maximum(0.0)?;
    Ok((cmi, h_ac, h_bc))
}

fn check_three(what: &str, p: &Tensor, q: &Tensor, r: &Tensor) -> Result<usize> {
    let (n, _) = check_probs(p, &format!("{what}: p"))?;
    let (m, _) = check_probs(q, &format!("{what}: q"))?;
    let (l, _) = check_probs(r, &format!("{what}: r"))?;
    if n != m || n != l {
        return Err(InfoError::Input(format!(
            "{what}: p, q and r must have the same number of rows, got {n}, {m} and {l}"
        )));
    }
    Ok(n)
}

/// Soft conditional mutual information `I(A; B|C)` (ARM eq 8) on
/// `P(a, b, c) = (1/N) Σ_i p_i(a) q_i(b) r_i(c)`, differentiable.
///
/// `p: [N, A]`, `q: [N, B]`, `r: [N, C]` → scalar `[]` (memory O(N·A·B)). Guarantee: ≥ 0
/// (clamped); with one-hot rows it equals [`conditional_mutual_information`] of the argmax
/// labels. Errors: as [`soft_mutual_information`].
///
/// [`conditional_mutual_information`]: super::plugin::conditional_mutual_information
pub fn soft_conditional_mutual_information(p: &Tensor, q: &Tensor, r: &Tensor) -> Result<Tensor> {
    let n = check_three("soft_conditional_mutual_information", p, q, r)?;
    Ok(cmi_parts(&soft_joint3(p, q, r, n)?)?.0)
}

/// Soft NCMI, ARM eq 9: `I(A; B|C) / √(H(A|C) H(B|C) + ε)`, differentiable.
///
/// Guarantee: in [0, 1] (clamped); 0 when `H(A|C)·H(B|C) = 0`, as for the plug-in [`ncmi`].
/// Errors: as [`soft_mutual_information`].
///
/// [`ncmi`]: super::plugin::ncmi
pub fn soft_ncmi(p: &Tensor, q: &Tensor, r: &Tensor) -> Result<Tensor> {
    let n = check_three("soft_ncmi", p, q, r)?;
    let (cmi, ha, hb) = cmi_parts(&soft_joint3(p, q, r, n)?)?;
    let d = (ha * hb)?.affine(1.0, SOFT_EPS)?.sqrt()?;
    Ok((cmi / d)?.clamp(0.0, 1.0)?)
}

#[cfg(test)]
mod fused_tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused soft MI (untracked f64 p) against the tensor graph (p as a tracked variable),
    /// including sparse alphabets, one-hot rows (exact zeros in J) and a single label.
    #[test]
    fn fused_soft_mi_matches_the_tensor_graph() {
        let mut rng = modbal_tensors::SeededRng::new(2);
        for &(n, c, labels) in &[(1, 1, 1), (5, 3, 2), (40, 7, 5), (300, 64, 40), (200, 9, 1)] {
            for one_hot in [false, true] {
                let mut v = Vec::with_capacity(n * c);
                for _ in 0..n {
                    let row: Vec<f64> = if one_hot {
                        let k = rng.below(c);
                        (0..c).map(|j| if j == k { 1.0 } else { 0.0 }).collect()
                    } else {
                        (0..c).map(|_| (1.5 * rng.normal()).exp()).collect()
                    };
                    let s: f64 = row.iter().sum();
                    v.extend(row.iter().map(|x| x / s));
                }
                let p = Tensor::from_vec(v, (n, c), &Device::Cpu).unwrap();
                let y: Vec<u32> = (0..n)
                    .map(|_| 1000 * rng.below(labels) as u32 + 7)
                    .collect();
                let pv = Var::from_tensor(&p).unwrap();
                let a = soft_mutual_information_labels(&p, &y)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                let b = soft_mutual_information_labels(pv.as_tensor(), &y)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    "n={n} c={c}: {a} vs {b}"
                );
            }
        }
    }
}
