//! Equal-width histogram binning of continuous values ([`EqualWidthBins`], [`discretize`],
//! [`discretize_tensor`], `numpy.histogram`'s assignment) and the plug-in estimators of the
//! binned values (the `*_binned` functions).

use super::counting::cells;
use super::plugin::{
    conditional_mutual_information, mutual_information, ncmi, normalized_mutual_information,
    Normalization,
};
use crate::error::{InfoError, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

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
