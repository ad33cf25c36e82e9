//! Softmax cross-entropy kernels: the mean loss over the rows and its closed-form gradient, in
//! f64.

use super::simd::Float;

/// `(max, log Σ exp(z − max))` of one row, in f64.
fn row_lse<T: Float>(z: &[T]) -> (f64, f64) {
    let m = z
        .iter()
        .map(|v| v.to_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = z.iter().map(|v| (v.to_f64() - m).exp()).sum();
    (m, s.ln())
}

/// Mean over the rows of `z [n, c]` of `log Σ_j exp(z_ij) − z_{i, y_i}` (f64 accumulation).
pub(crate) fn softmax_ce_fwd<T: Float>(z: &[T], labels: &[usize], c: usize) -> f64 {
    let n = labels.len();
    let total: f64 = z
        .chunks_exact(c)
        .zip(labels)
        .map(|(row, &y)| {
            let (m, lse) = row_lse(row);
            m + lse - row[y].to_f64()
        })
        .sum();
    total / n as f64
}

/// Gradient of [`softmax_ce_fwd`] times `g`: `g·(softmax(z_i) − onehot(y_i))/n` → `[n, c]`.
pub(crate) fn softmax_ce_bwd<T: Float>(z: &[T], labels: &[usize], c: usize, g: f64) -> Vec<T> {
    let n = labels.len();
    let scale = g / n as f64;
    let mut out = vec![T::from_f64(0.0); z.len()];
    for ((orow, row), &y) in out.chunks_exact_mut(c).zip(z.chunks_exact(c)).zip(labels) {
        let (m, lse) = row_lse(row);
        for (j, (d, v)) in orow.iter_mut().zip(row).enumerate() {
            let p = (v.to_f64() - m - lse).exp();
            let t = if j == y { p - 1.0 } else { p };
            *d = T::from_f64(scale * t);
        }
    }
    out
}
