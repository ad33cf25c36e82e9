//! Discrete information measures (ARM eq 1-2, 8-10): plug-in estimators on labels, equal-width
//! histogram binning of continuous values, and a differentiable "soft" form over probability
//! vectors.
//!
//! Paper: Gao et al., *Asymmetric Reinforcing against Multi-modal Representation Bias* (ARM,
//! AAAI 2025). All logarithms are natural (nats).
//!
//! # Plug-in estimators on labels
//!
//! For N samples of labels with counts `n_x`, `n_xy`, `n_xyz`, … the empirical distribution is
//! `P(x) = n_x / N`, `P(x, y) = n_xy / N`, … and
//!
//! * entropy `H(X) = −Σ_x P(x) log P(x)`;
//! * joint entropy `H(X, Y) = −Σ_{x,y} P(x, y) log P(x, y)`;
//! * conditional entropy `H(X|Y) = H(X, Y) − H(Y) = Σ_{x,y} P(x, y) log(P(y) / P(x, y))`;
//! * mutual information, ARM eq 1:
//!   `I(X; Y) = Σ_{x,y} P(x, y) log( P(x, y) / (P(x) P(y)) )`;
//! * normalised mutual information, ARM eq 2 (the geometric normalisation, our default):
//!   `NMI(X; Y) = I(X; Y) / √(H(X) H(Y))`; [`Normalization`] also offers the arithmetic
//!   (`2I / (H(X) + H(Y))`, the official ARM code's choice), max and min normalisers;
//! * conditional mutual information, ARM eq 8:
//!   `I(X; Y|Z) = Σ_{x,y,z} P(x, y, z) log( P(x, y, z) P(z) / (P(x, z) P(y, z)) )
//!   = E_Z KL[P(x, y|z) ‖ P(x|z) P(y|z)]`;
//! * normalised CMI, ARM eq 9: `NCMI(X; Y|Z) = I(X; Y|Z) / √(H(X|Z) H(Y|Z))`. Because
//!   `I(X; Y|Z) ≤ min(H(X|Z), H(Y|Z)) ≤ √(H(X|Z) H(Y|Z))`, NCMI ∈ [0, 1];
//! * interaction information, ARM eq 10, with McGill's sign convention
//!   `I(X; Y; Z) = I(X; Y) − I(X; Y|Z)` (positive: Z explains away shared information,
//!   redundancy; negative: synergy). ARM eq 10 writes it with the normalised quantities
//!   (`II = NMI(X; Y) − NCMI(X; Y|Z)`, "we use I to represent NMI", below eq 5); both are provided:
//!   [`interaction_information`] (nats) and [`normalized_interaction_information`] (ARM's literal
//!   eq 10, in [−1, 1]). In ARM's notation `II(f_Y; f_xj; f_xi)` is `x = f_Y, y = f_xj, z = f_xi`.
//!
//! The estimators count with flat arrays sized by the alphabet (largest label + 1), never hash
//! maps: every estimate costs O(N + |alphabet|). Pairs and triples are formed as dense joint
//! symbols (at most N of them): directly through a `kx·ky` table when that table is at most
//! `max(4N, 4096)` entries, otherwise by a counting sort on the first variable. Labels larger
//! than `max(4N, 4096)` are first relabelled by sorting (O(N log N)).
//!
//! Estimates are computed per non-empty cell in the form `Σ (n_c/N) log(ratio of counts)`, as in
//! scikit-learn's `mutual_info_score`; results agree with scikit-learn 1.9.1 within 1e-12 (tested).
//!
//! # Equal-width binning
//!
//! [`discretize`] maps continuous values to `bins` equal-width bins spanning `[min, max]`:
//! bin `k` is `[min + k·w, min + (k+1)·w)` with `w = (max − min) / bins`, the last bin closed
//! (`max` falls in bin `bins − 1`). The assignment reproduces `numpy.histogram`'s (edges
//! `numpy.linspace(min, max, bins + 1)`, including its ±1 correction at the edges). Constant
//! input puts every value in bin 0 (NumPy would use the middle bin; the entropy is 0 either way).
//! The `*_binned` estimators bin each argument separately and apply the plug-in estimator.
//!
//! # Soft (probability-vector) form
//!
//! For rows `p_i ∈ Δ^{C}` and `q_i ∈ Δ^{C'}` (softmax outputs, or one-hot labels), the soft
//! joint distribution of the predicted classes is
//!
//! `P(a, b) = (1/N) Σ_i p_i(a) q_i(b)`, i.e. `J = pᵀ q / N`, with marginals `P(a) = mean_i p_i(a)`,
//! `P(b) = mean_i q_i(b)`,
//!
//! and ARM eq 1-2 are evaluated on `J` with tensor ops, so the result is differentiable. With
//! one-hot rows this is exactly the plug-in estimate on the argmax labels. Every `log u` is
//! computed as `log(u + ε)`, `ε =` [`SOFT_EPS`] `= 1e-12`, so empty cells contribute `0·log ε = 0`
//! with a finite gradient; the bias this introduces is below `ε·C·C'`.
//!
//! Per sample (ARM eq 5-6): ARM values sample `X` by `p(f_Y → y)·I(f_Y; f_xi)`, where eq 5 reads
//! `I` as the expectation, over the classes `ŷ` predicted with probability `p(f_Y → ŷ)`, of
//! the information the prediction carries. [`per_sample_pointwise_mi`] makes that expectation
//! per sample: `m_i = Σ_a p_i(a) · log( P(a, y_i) / (P(a) P(y_i)) )`, the expected pointwise MI
//! between the sample's predicted class and its label under the batch's soft joint. Its batch
//! mean is exactly the soft MI (`(1/N) Σ_i m_i = I`), so it is a decomposition of eq 1 over
//! samples; a single `m_i` can be negative. ARM's weighting by `p(f_Y → y)` (eq 6) is left to the
//! caller.
//!
//! The soft CMI (for ARM eq 8-10 over three predictions) uses
//! `P(a, b, c) = (1/N) Σ_i p_i(a) q_i(b) r_i(c)`.
//!
//! # Shapes
//! * labels: `x, y, z: &[u32]` of one length N ≥ 1 (N < 2³²); any values (not necessarily
//!   `0..K`); every plug-in estimator returns an `f64`.
//! * binning: `values: &[f64]` of length N ≥ 1 → `Vec<u32>` of length N with values in `0..bins`;
//!   tensors `[N]` or `[N, D]` → `Vec<u32>` of length N ([`discretize_tensor`]).
//! * soft form: `p: [N, C]`, `q: [N, C']`, `r: [N, C'']` float tensors whose rows are non-negative
//!   and sum to 1 within 1e-4, labels `y: &[u32]` of length N; MI/NMI/CMI/NCMI → `[]` (scalar,
//!   dtype of `p`), [`per_sample_pointwise_mi`] → `[N]`.
//!
//! Errors: empty input and length mismatches are [`InfoError::Input`] naming the lengths, NaN/Inf
//! is [`InfoError::Input`] naming the position, `bins = 0` is [`InfoError::Param`].

use crate::error::{InfoError, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

// ---------------------------------------------------------------------------------------------
// counting machinery
// ---------------------------------------------------------------------------------------------

/// Largest flat table (alphabet or `kx·ky`) used without relabelling: O(N) memory.
fn dense_limit(n: usize) -> usize {
    n.saturating_mul(4).max(1 << 12)
}

/// Labels as symbols `0..k`; borrowed when the labels are already small enough.
struct Symbols<'a> {
    ids: Cow<'a, [u32]>,
    k: usize,
}

/// `x` as symbols: itself when `max(x) + 1 ≤ dense_limit`, else relabelled by sorting.
fn symbols(x: &[u32]) -> Symbols<'_> {
    let max = x.iter().copied().max().unwrap_or(0) as usize;
    if max < dense_limit(x.len()) {
        return Symbols {
            ids: Cow::Borrowed(x),
            k: max + 1,
        };
    }
    let mut order: Vec<u32> = (0..x.len() as u32).collect();
    order.sort_unstable_by_key(|&i| x[i as usize]);
    let mut ids = vec![0u32; x.len()];
    let mut k = 0u32;
    let mut prev = None;
    for &i in &order {
        let v = x[i as usize];
        if prev != Some(v) {
            if prev.is_some() {
                k += 1;
            }
            prev = Some(v);
        }
        ids[i as usize] = k;
    }
    Symbols {
        ids: Cow::Owned(ids),
        k: k as usize + 1,
    }
}

/// Occurrence counts of symbols `0..k`.
fn counts(ids: &[u32], k: usize) -> Vec<u32> {
    let mut c = vec![0u32; k];
    for &s in ids {
        c[s as usize] += 1;
    }
    c
}

/// The non-empty cells of a pair of symbol sequences.
struct Cells {
    /// Per sample: its cell, in `0..counts.len()`.
    ids: Vec<u32>,
    /// Per cell: the number of samples.
    counts: Vec<u32>,
    /// Per cell: the index of one of its samples.
    rep: Vec<u32>,
}

/// Joint symbols of `(x, y)` (`x` in `0..kx`, `y` in `0..ky`): O(N + kx + ky) time and memory.
fn cells(x: &[u32], kx: usize, y: &[u32], ky: usize) -> Cells {
    let n = x.len();
    let mut ids = vec![0u32; n];
    let mut cnt: Vec<u32> = Vec::new();
    let mut rep: Vec<u32> = Vec::new();
    match kx.checked_mul(ky) {
        Some(kk) if kk <= dense_limit(n) => {
            let mut table = vec![u32::MAX; kk];
            for i in 0..n {
                let key = x[i] as usize * ky + y[i] as usize;
                let mut c = table[key];
                if c == u32::MAX {
                    c = cnt.len() as u32;
                    table[key] = c;
                    cnt.push(0);
                    rep.push(i as u32);
                }
                cnt[c as usize] += 1;
                ids[i] = c;
            }
        }
        _ => {
            // Counting sort by x, then cells of y inside each x-group through a scratch slot
            // array that is reset after each group.
            let mut start = vec![0usize; kx + 1];
            for &a in x {
                start[a as usize + 1] += 1;
            }
            for g in 0..kx {
                start[g + 1] += start[g];
            }
            let mut pos = start.clone();
            let mut order = vec![0u32; n];
            for (i, &a) in x.iter().enumerate() {
                order[pos[a as usize]] = i as u32;
                pos[a as usize] += 1;
            }
            let mut slot = vec![u32::MAX; ky];
            for g in 0..kx {
                let group = &order[start[g]..start[g + 1]];
                for &i in group {
                    let b = y[i as usize] as usize;
                    let mut c = slot[b];
                    if c == u32::MAX {
                        c = cnt.len() as u32;
                        slot[b] = c;
                        cnt.push(0);
                        rep.push(i);
                    }
                    cnt[c as usize] += 1;
                    ids[i as usize] = c;
                }
                for &i in group {
                    slot[y[i as usize] as usize] = u32::MAX;
                }
            }
        }
    }
    Cells {
        ids,
        counts: cnt,
        rep,
    }
}

/// `Σ_c (n_c/N)(log N − log n_c)` over the non-empty counts: the plug-in entropy.
fn entropy_of_counts(c: &[u32], n: usize) -> f64 {
    let nf = n as f64;
    let ln_n = nf.ln();
    c.iter()
        .filter(|&&v| v > 0)
        .map(|&v| {
            let v = v as f64;
            (v / nf) * (ln_n - v.ln())
        })
        .sum()
}

fn check_len(n: usize) -> Result<()> {
    if n == 0 {
        return Err(InfoError::Input(
            "discrete: empty input (need N >= 1 samples)".into(),
        ));
    }
    if n > u32::MAX as usize {
        return Err(InfoError::Input(format!(
            "discrete: N = {n} samples exceeds the supported 2^32 - 1"
        )));
    }
    Ok(())
}

fn check_pair(nx: usize, ny: usize) -> Result<()> {
    if nx != ny {
        return Err(InfoError::Input(format!(
            "discrete: x and y must have the same length, got {nx} and {ny}"
        )));
    }
    check_len(nx)
}

fn check_triple(nx: usize, ny: usize, nz: usize) -> Result<()> {
    if nx != ny || nx != nz {
        return Err(InfoError::Input(format!(
            "discrete: x, y and z must have the same length, got {nx}, {ny} and {nz}"
        )));
    }
    check_len(nx)
}

/// Counts for the two-variable estimators.
struct Pair<'a> {
    n: usize,
    nx: Vec<u32>,
    ny: Vec<u32>,
    xs: Cow<'a, [u32]>,
    ys: Cow<'a, [u32]>,
    xy: Cells,
}

impl<'a> Pair<'a> {
    fn new(x: &'a [u32], y: &'a [u32]) -> Result<Self> {
        check_pair(x.len(), y.len())?;
        let sx = symbols(x);
        let sy = symbols(y);
        let xy = cells(&sx.ids, sx.k, &sy.ids, sy.k);
        Ok(Self {
            n: x.len(),
            nx: counts(&sx.ids, sx.k),
            ny: counts(&sy.ids, sy.k),
            xs: sx.ids,
            ys: sy.ids,
            xy,
        })
    }

    fn mi(&self) -> f64 {
        let nf = self.n as f64;
        let mut s = 0.0;
        for (&c, &r) in self.xy.counts.iter().zip(&self.xy.rep) {
            let r = r as usize;
            let c = c as f64;
            let outer = self.nx[self.xs[r] as usize] as f64 * self.ny[self.ys[r] as usize] as f64;
            s += (c / nf) * (c * nf / outer).ln();
        }
        s.max(0.0)
    }

    fn hx(&self) -> f64 {
        entropy_of_counts(&self.nx, self.n)
    }

    fn hy(&self) -> f64 {
        entropy_of_counts(&self.ny, self.n)
    }

    fn distinct(c: &[u32]) -> usize {
        c.iter().filter(|&&v| v > 0).count()
    }

    fn nmi(&self, norm: Normalization) -> f64 {
        // scikit-learn 1.9.1 `normalized_mutual_info_score`: both labelings with a single class
        // → 1.0; otherwise MI = 0 → 0.0; otherwise MI / normaliser.
        if Self::distinct(&self.nx) == 1 && Self::distinct(&self.ny) == 1 {
            return 1.0;
        }
        let mi = self.mi();
        if mi == 0.0 {
            return 0.0;
        }
        let d = norm.normalizer(self.hx(), self.hy());
        if d > 0.0 {
            (mi / d).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Counts for the three-variable estimators.
struct Triple<'a> {
    n: usize,
    nz: Vec<u32>,
    zs: Cow<'a, [u32]>,
    xz: Cells,
    yz: Cells,
    xyz: Cells,
}

impl<'a> Triple<'a> {
    fn new(x: &'a [u32], y: &'a [u32], z: &'a [u32]) -> Result<Self> {
        check_triple(x.len(), y.len(), z.len())?;
        let sx = symbols(x);
        let sy = symbols(y);
        let sz = symbols(z);
        let xz = cells(&sx.ids, sx.k, &sz.ids, sz.k);
        let yz = cells(&sy.ids, sy.k, &sz.ids, sz.k);
        let xyz = cells(&xz.ids, xz.counts.len(), &sy.ids, sy.k);
        Ok(Self {
            n: x.len(),
            nz: counts(&sz.ids, sz.k),
            zs: sz.ids,
            xz,
            yz,
            xyz,
        })
    }

    fn cmi(&self) -> f64 {
        let nf = self.n as f64;
        let mut s = 0.0;
        for (&c, &r) in self.xyz.counts.iter().zip(&self.xyz.rep) {
            let r = r as usize;
            let c = c as f64;
            let num = c * self.nz[self.zs[r] as usize] as f64;
            let den = self.xz.counts[self.xz.ids[r] as usize] as f64
                * self.yz.counts[self.yz.ids[r] as usize] as f64;
            s += (c / nf) * (num / den).ln();
        }
        s.max(0.0)
    }

    /// `H(A|Z)` from the cells of `(A, Z)`.
    fn cond_entropy(&self, az: &Cells) -> f64 {
        let nf = self.n as f64;
        az.counts
            .iter()
            .zip(&az.rep)
            .map(|(&c, &r)| {
                let c = c as f64;
                (c / nf) * (self.nz[self.zs[r as usize] as usize] as f64 / c).ln()
            })
            .sum::<f64>()
            .max(0.0)
    }

    fn ncmi(&self) -> f64 {
        let cmi = self.cmi();
        if cmi == 0.0 {
            return 0.0;
        }
        let d = (self.cond_entropy(&self.xz) * self.cond_entropy(&self.yz)).sqrt();
        if d > 0.0 {
            (cmi / d).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// plug-in estimators on labels
// ---------------------------------------------------------------------------------------------

/// The normaliser of [`normalized_mutual_information`], `NMI = I(X; Y) / d(H(X), H(Y))`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// `d = √(H(X) H(Y))`, ARM eq 2 (scikit-learn `average_method="geometric"`). The default.
    #[default]
    Geometric,
    /// `d = (H(X) + H(Y)) / 2` (scikit-learn's default `"arithmetic"`; the official ARM code).
    Arithmetic,
    /// `d = max(H(X), H(Y))`.
    Max,
    /// `d = min(H(X), H(Y))`.
    Min,
}

impl Normalization {
    /// The normaliser `d(hx, hy)`.
    pub fn normalizer(self, hx: f64, hy: f64) -> f64 {
        match self {
            Self::Geometric => (hx * hy).sqrt(),
            Self::Arithmetic => 0.5 * (hx + hy),
            Self::Max => hx.max(hy),
            Self::Min => hx.min(hy),
        }
    }
}

/// Plug-in entropy `H(X) = −Σ_x P(x) log P(x)` in nats.
///
/// Guarantee: `0 ≤ H(X) ≤ log(number of distinct labels)`; exactly 0 for constant input (and
/// N = 1). Errors: empty input.
pub fn entropy(x: &[u32]) -> Result<f64> {
    check_len(x.len())?;
    let s = symbols(x);
    Ok(entropy_of_counts(&counts(&s.ids, s.k), x.len()))
}

/// Plug-in joint entropy `H(X, Y)` in nats.
///
/// Guarantee: `max(H(X), H(Y)) ≤ H(X, Y) ≤ H(X) + H(Y)` up to rounding, ≥ 0.
/// Errors: empty input, length mismatch.
pub fn joint_entropy(x: &[u32], y: &[u32]) -> Result<f64> {
    let p = Pair::new(x, y)?;
    Ok(entropy_of_counts(&p.xy.counts, p.n))
}

/// Plug-in conditional entropy `H(X|Y) = Σ P(x, y) log(P(y) / P(x, y))` in nats.
///
/// Guarantee: `0 ≤ H(X|Y) ≤ H(X)` (every term is non-negative); 0 when X is a function of Y.
/// Errors: empty input, length mismatch.
pub fn conditional_entropy(x: &[u32], y: &[u32]) -> Result<f64> {
    let p = Pair::new(x, y)?;
    let nf = p.n as f64;
    Ok(p.xy
        .counts
        .iter()
        .zip(&p.xy.rep)
        .map(|(&c, &r)| {
            let c = c as f64;
            (c / nf) * (p.ny[p.ys[r as usize] as usize] as f64 / c).ln()
        })
        .sum::<f64>()
        .max(0.0))
}

/// Plug-in mutual information, ARM eq 1, `I(X; Y) = Σ P(x, y) log(P(x, y) / (P(x) P(y)))` in
/// nats (the value of scikit-learn's `mutual_info_score`).
///
/// Guarantee: `0 ≤ I(X; Y) ≤ min(H(X), H(Y))`; a tiny negative sum from rounding is clamped to
/// 0; exactly 0 when either labeling is constant. Errors: empty input, length mismatch.
pub fn mutual_information(x: &[u32], y: &[u32]) -> Result<f64> {
    Ok(Pair::new(x, y)?.mi())
}

/// Normalised mutual information `I(X; Y) / d(H(X), H(Y))` (ARM eq 2 with
/// [`Normalization::Geometric`]).
///
/// Guarantee: the value is in [0, 1] (clamped against rounding). Degenerate input follows
/// scikit-learn 1.9.1's `normalized_mutual_info_score`: when both labelings are constant
/// (including N = 1) NMI = 1 (`normalized_mutual_info_score([0, 0], [1, 1]) == 1.0`); when
/// exactly one is constant, MI = 0 and NMI = 0 (`normalized_mutual_info_score([0, 0, 0],
/// [0, 1, 2]) == 0.0`); otherwise whenever MI = 0 the value is 0, whatever the normaliser.
/// Errors: empty input (scikit-learn returns 1.0 there; we refuse), length mismatch.
pub fn normalized_mutual_information(x: &[u32], y: &[u32], norm: Normalization) -> Result<f64> {
    Ok(Pair::new(x, y)?.nmi(norm))
}

/// Plug-in conditional mutual information, ARM eq 8,
/// `I(X; Y|Z) = Σ P(x, y, z) log(P(x, y, z) P(z) / (P(x, z) P(y, z)))` in nats.
///
/// Guarantee: `0 ≤ I(X; Y|Z) ≤ min(H(X|Z), H(Y|Z))`; a tiny negative sum from rounding is
/// clamped to 0. Exactly 0 when Z is constant and X or Y is, or when X or Y is a function of Z.
/// Errors: empty input, length mismatch.
pub fn conditional_mutual_information(x: &[u32], y: &[u32], z: &[u32]) -> Result<f64> {
    Ok(Triple::new(x, y, z)?.cmi())
}

/// Normalised conditional mutual information, ARM eq 9,
/// `NCMI(X; Y|Z) = I(X; Y|Z) / √(H(X|Z) H(Y|Z))` — the conditional analogue of the geometric
/// NMI of eq 2, normalised by the conditional entropies.
///
/// Guarantee: NCMI ∈ [0, 1] (clamped against rounding). Degenerate input: when
/// `H(X|Z)·H(Y|Z) = 0` (X or Y is a function of Z, e.g. constant, or N = 1) the CMI is exactly 0
/// and NCMI = 0 — including the case where both are functions of Z. This deliberately differs
/// from NMI's "both constant → 1" convention: NCMI = 0 exactly when CMI = 0, so ARM eq 10 never
/// credits a modality with information it cannot add. Errors: empty input, length mismatch.
pub fn ncmi(x: &[u32], y: &[u32], z: &[u32]) -> Result<f64> {
    Ok(Triple::new(x, y, z)?.ncmi())
}

/// Interaction information, ARM eq 10 in nats, with the sign convention
/// `I(X; Y; Z) = I(X; Y) − I(X; Y|Z)` (McGill's co-information).
///
/// Guarantee: symmetric in X, Y, Z up to rounding; `−min(H(X|Z), H(Y|Z)) ≤ I(X; Y; Z) ≤
/// min(H(X), H(Y))`; positive means redundancy (Z explains part of what X and Y share),
/// negative synergy (e.g. Z = X xor Y gives `−log 2`). Errors: empty input, length mismatch.
pub fn interaction_information(x: &[u32], y: &[u32], z: &[u32]) -> Result<f64> {
    let t = Triple::new(x, y, z)?;
    let mi = Pair::new(x, y)?.mi();
    Ok(mi - t.cmi())
}

/// ARM eq 10 literally, with the normalised quantities the paper uses:
/// `II = NMI(X; Y) − NCMI(X; Y|Z)` (geometric NMI, eq 2; NCMI, eq 9). In ARM's notation
/// `II(f_Y; f_xj; f_xi)` is `x = f_Y`, `y = f_xj`, `z = f_xi`.
///
/// Guarantee: II ∈ [−1, 1], with the degenerate-input conventions of
/// [`normalized_mutual_information`] and [`ncmi`]. Errors: empty input, length mismatch.
pub fn normalized_interaction_information(x: &[u32], y: &[u32], z: &[u32]) -> Result<f64> {
    let t = Triple::new(x, y, z)?;
    let nmi = Pair::new(x, y)?.nmi(Normalization::Geometric);
    Ok(nmi - t.ncmi())
}

/// The pair `(x_i, y_i)` as one label per sample (to estimate e.g. `I(X; (Y, Z))`).
///
/// Guarantee: `joint[i] == joint[j]` iff `(x_i, y_i) == (x_j, y_j)`; the symbols are dense
/// (`0..K`, K = number of distinct pairs ≤ N), numbered deterministically but arbitrarily.
/// Errors: empty input, length mismatch.
pub fn joint_symbols(x: &[u32], y: &[u32]) -> Result<Vec<u32>> {
    check_pair(x.len(), y.len())?;
    let sx = symbols(x);
    let sy = symbols(y);
    Ok(cells(&sx.ids, sx.k, &sy.ids, sy.k).ids)
}

// ---------------------------------------------------------------------------------------------
// equal-width binning
// ---------------------------------------------------------------------------------------------

/// Equal-width histogram binning of continuous values (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EqualWidthBins {
    /// Number of bins, ≥ 1. Default 30 (the histogram size of the official ARM code's NMI).
    pub bins: usize,
}

impl Default for EqualWidthBins {
    fn default() -> Self {
        Self { bins: 30 }
    }
}

impl EqualWidthBins {
    /// Checked constructor: `bins ≥ 1` (and < 2³²), else [`InfoError::Param`].
    pub fn new(bins: usize) -> Result<Self> {
        let b = Self { bins };
        b.validate()?;
        Ok(b)
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if self.bins == 0 || self.bins > u32::MAX as usize {
            return Err(InfoError::Param(format!(
                "binning: bins must be in 1..2^32, got {}",
                self.bins
            )));
        }
        Ok(())
    }
}

/// Bin `values` into `bins.bins` equal-width bins over `[min, max]` (`numpy.histogram`'s
/// assignment; the maximum goes to the last bin).
///
/// Guarantee: every symbol is in `0..bins`; the minimum is in bin 0 and the maximum in bin
/// `bins − 1`; the map is monotone (`v ≤ w ⇒ bin(v) ≤ bin(w)`). Constant input (and N = 1) puts
/// every value in bin 0. Errors: `bins = 0` ([`InfoError::Param`]); empty input, NaN or ±Inf
/// ([`InfoError::Input`] naming the first bad position).
pub fn discretize(values: &[f64], bins: EqualWidthBins) -> Result<Vec<u32>> {
    bins.validate()?;
    if values.is_empty() {
        return Err(InfoError::Input(
            "discretize: empty input (need N >= 1 values)".into(),
        ));
    }
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(InfoError::Input(format!(
            "discretize: value at position {i} is {v} (NaN/Inf are not allowed)"
        )));
    }
    Ok(bin_finite(values, bins.bins))
}

/// Binning of finite, non-empty values.
fn bin_finite(values: &[f64], b: usize) -> Vec<u32> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi <= lo {
        return vec![0; values.len()];
    }
    // A range wider than f64::MAX is handled at half scale (exact up to subnormals).
    let scale = if (hi - lo).is_finite() { 1.0 } else { 0.5 };
    let (lo, hi) = (lo * scale, hi * scale);
    let bf = b as f64;
    let delta = hi - lo;
    let step = delta / bf;
    // numpy.linspace(lo, hi, b + 1): edge k = k·step + lo, last edge = hi.
    let edge = |k: usize| if k == b { hi } else { k as f64 * step + lo };
    values
        .iter()
        .map(|&v| {
            let v = v * scale;
            let f = (v - lo) / delta * bf;
            let mut k = (f as usize).min(b - 1);
            if v < edge(k) {
                k = k.saturating_sub(1);
            }
            if k != b - 1 && v >= edge(k + 1) {
                k += 1;
            }
            k as u32
        })
        .collect()
}

fn check_values_pair(nx: usize, ny: usize) -> Result<()> {
    if nx != ny {
        return Err(InfoError::Input(format!(
            "binned estimator: x and y must have the same length, got {nx} and {ny}"
        )));
    }
    Ok(())
}

/// [`mutual_information`] of the equal-width-binned `x` and `y` (each binned over its own range).
///
/// Guarantee: `0 ≤ I ≤ log(bins)`; for `y = x` it is the entropy of the binned x (`log(bins)`
/// when the bins are equally filled). Errors: those of [`discretize`], length mismatch.
pub fn mutual_information_binned(x: &[f64], y: &[f64], bins: EqualWidthBins) -> Result<f64> {
    check_values_pair(x.len(), y.len())?;
    mutual_information(&discretize(x, bins)?, &discretize(y, bins)?)
}

/// [`normalized_mutual_information`] of the equal-width-binned `x` and `y`.
///
/// Guarantee: in [0, 1]; constant `x` and `y` give 1, exactly one constant gives 0 (the
/// scikit-learn convention). Errors: those of [`discretize`], length mismatch.
pub fn nmi_binned(x: &[f64], y: &[f64], bins: EqualWidthBins, norm: Normalization) -> Result<f64> {
    check_values_pair(x.len(), y.len())?;
    normalized_mutual_information(&discretize(x, bins)?, &discretize(y, bins)?, norm)
}

fn check_values_triple(nx: usize, ny: usize, nz: usize) -> Result<()> {
    if nx != ny || nx != nz {
        return Err(InfoError::Input(format!(
            "binned estimator: x, y and z must have the same length, got {nx}, {ny} and {nz}"
        )));
    }
    Ok(())
}

/// [`conditional_mutual_information`] `I(X; Y|Z)` of the equal-width-binned `x`, `y`, `z`.
///
/// Guarantee: ≥ 0. Errors: those of [`discretize`], length mismatch.
pub fn cmi_binned(x: &[f64], y: &[f64], z: &[f64], bins: EqualWidthBins) -> Result<f64> {
    check_values_triple(x.len(), y.len(), z.len())?;
    conditional_mutual_information(
        &discretize(x, bins)?,
        &discretize(y, bins)?,
        &discretize(z, bins)?,
    )
}

/// [`ncmi`] (ARM eq 9) of the equal-width-binned `x`, `y`, `z`.
///
/// Guarantee: in [0, 1]. Errors: those of [`discretize`], length mismatch.
pub fn ncmi_binned(x: &[f64], y: &[f64], z: &[f64], bins: EqualWidthBins) -> Result<f64> {
    check_values_triple(x.len(), y.len(), z.len())?;
    ncmi(
        &discretize(x, bins)?,
        &discretize(y, bins)?,
        &discretize(z, bins)?,
    )
}

/// A `[N]` or `[N, D]` float tensor as `(N, D, row-major f64 values)`, checked finite.
fn tensor_columns(t: &Tensor, what: &str) -> Result<(usize, usize, Vec<f64>)> {
    let (n, d) = match t.dims() {
        &[n] => (n, 1),
        &[n, d] => (n, d),
        dims => {
            return Err(InfoError::Input(format!(
                "{what}: expected a [N] or [N, D] tensor, got {dims:?}"
            )))
        }
    };
    if !t.dtype().is_float() {
        return Err(InfoError::Input(format!(
            "{what}: expected a float tensor, got {:?}",
            t.dtype()
        )));
    }
    if n == 0 || d == 0 {
        return Err(InfoError::Input(format!(
            "{what}: empty tensor of shape {:?}",
            t.dims()
        )));
    }
    let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(InfoError::Input(format!(
            "{what}: value at row {}, column {} is {x} (NaN/Inf are not allowed)",
            i / d,
            i % d
        )));
    }
    Ok((n, d, v))
}

/// Equal-width bins of a `[N]` tensor, or of each column of a `[N, D]` tensor combined into one
/// joint symbol per row.
///
/// Each column is binned over its own range; for D > 1 the D bin indices of a row are combined
/// into a single symbol (the row's cell of the D-dimensional histogram), so the estimators see
/// the joint distribution of all features. Guarantee: rows get equal symbols iff all their
/// bin indices are equal; for D = 1 the symbols are the bin indices (`0..bins`); for D > 1 they
/// are dense cell numbers `0..K` (K ≤ min(N, bins^D), numbering deterministic but arbitrary).
/// Caveat: once bins^D ≫ N almost every row has its own cell and the plug-in MI saturates at
/// H(X) ≈ log N; for wide features use [`mean_per_feature_mi_binned`] instead.
/// Errors: rank other than 1 or 2, empty, non-float, NaN/Inf (naming row and column), `bins = 0`.
pub fn discretize_tensor(t: &Tensor, bins: EqualWidthBins) -> Result<Vec<u32>> {
    bins.validate()?;
    let (n, d, v) = tensor_columns(t, "discretize_tensor")?;
    let b = bins.bins;
    if d == 1 {
        return Ok(bin_finite(&v, b));
    }
    let mut col = vec![0f64; n];
    let mut joint: Vec<u32> = Vec::new();
    let mut k = 0usize;
    for j in 0..d {
        for i in 0..n {
            col[i] = v[i * d + j];
        }
        let s = bin_finite(&col, b);
        if j == 0 {
            joint = s;
            k = b;
        } else {
            let c = cells(&joint, k, &s, b);
            k = c.counts.len();
            joint = c.ids;
        }
    }
    Ok(joint)
}

/// Average over the D features of the binned MI with the labels:
/// `(1/D) Σ_d I(bin(t[:, d]); labels)` for `t: [N, D]` (or `[N]`, D = 1).
///
/// Guarantee: ≥ 0 and ≤ min(log bins, H(labels)); unlike the joint symbol of
/// [`discretize_tensor`] it does not saturate for wide features, but it ignores dependence
/// carried only jointly by several features. Errors: those of [`discretize_tensor`], N ≠ labels.
pub fn mean_per_feature_mi_binned(t: &Tensor, labels: &[u32], bins: EqualWidthBins) -> Result<f64> {
    bins.validate()?;
    let (n, d, v) = tensor_columns(t, "mean_per_feature_mi_binned")?;
    if labels.len() != n {
        return Err(InfoError::Input(format!(
            "mean_per_feature_mi_binned: tensor has N = {n} rows but {} labels",
            labels.len()
        )));
    }
    let mut col = vec![0f64; n];
    let mut total = 0.0;
    for j in 0..d {
        for i in 0..n {
            col[i] = v[i * d + j];
        }
        total += mutual_information(&bin_finite(&col, bins.bins), labels)?;
    }
    Ok(total / d as f64)
}

// ---------------------------------------------------------------------------------------------
// soft form over probability vectors
// ---------------------------------------------------------------------------------------------

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
pub fn soft_mutual_information(p: &Tensor, q: &Tensor) -> Result<Tensor> {
    let (n, _) = check_probs(p, "soft_mutual_information: p")?;
    let (m, _) = check_probs(q, "soft_mutual_information: q")?;
    check_same_n("soft_mutual_information", n, m)?;
    mi_of_joint(&soft_joint(p, q, n)?)
}

/// The fused f64 path of [`soft_mutual_information_labels`] (see the crate's `fast` module): the soft joint
/// `J = pᵀ onehot(y) / N` accumulated directly (row `i` of p added to the column of label `y_i`,
/// O(N·C) instead of the O(N·C·K) product with the one-hot matrix; the same sums), then
/// `max(0, Σ J (ln(J + ε) − ln(P(a) + ε) − ln(P(b) + ε)))` as `mi_of_joint`.
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
pub fn soft_conditional_mutual_information(p: &Tensor, q: &Tensor, r: &Tensor) -> Result<Tensor> {
    let n = check_three("soft_conditional_mutual_information", p, q, r)?;
    Ok(cmi_parts(&soft_joint3(p, q, r, n)?)?.0)
}

/// Soft NCMI, ARM eq 9: `I(A; B|C) / √(H(A|C) H(B|C) + ε)`, differentiable.
///
/// Guarantee: in [0, 1] (clamped); 0 when `H(A|C)·H(B|C) = 0`, as for the plug-in [`ncmi`].
/// Errors: as [`soft_mutual_information`].
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
