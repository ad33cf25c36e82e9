//! Plug-in estimators on labels (ARM eq 1-2, 8-10): entropy, joint and conditional entropy,
//! MI and NMI ([`Normalization`]), CMI and NCMI, interaction information, and the joint symbols
//! of a pair of label sequences.

use super::counting::{cells, counts, entropy_of_counts, symbols, Cells};
use crate::error::{InfoError, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

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
