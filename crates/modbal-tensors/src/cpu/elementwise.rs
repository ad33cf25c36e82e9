//! Element-wise kernels: ReLU in place, the fused residual `max(a + b, 0)`, the ReLU backward
//! mask `g·[y > 0]`, and the finiteness test of the optimisers.

use super::simd::{simd_fn, Float};
use rayon::prelude::*;

/// `max(a + b, 0)` element-wise.
pub(crate) fn add_relu_fwd<T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; a.len()];
    crate::threads::keep_warm();
    y.par_chunks_mut(1 << 14)
        .zip(a.par_chunks(1 << 14).zip(b.par_chunks(1 << 14)))
        .for_each(|(yc, (ac, bc))| add_relu_chunk(yc, ac, bc));
    y
}

simd_fn! {
    /// `max(a + b, 0)` over one chunk.
    fn add_relu_chunk<T>(yc: &mut [T], ac: &[T], bc: &[T]) {
        let zero = T::from_f64(0.0);
        for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
            let r = u + v;
            *o = if r > zero { r } else { zero };
        }
    }
}

/// `y = max(y, 0)` in place.
pub(crate) fn relu_in_place<T: Float>(y: &mut [T]) {
    crate::threads::keep_warm();
    y.par_chunks_mut(1 << 14).for_each(relu_chunk);
}

simd_fn! {
    /// `max(y, 0)` over one chunk, in place (NaN stays NaN, as PyTorch's ReLU).
    fn relu_chunk<T>(y: &mut [T]) {
        let zero = T::from_f64(0.0);
        for v in y.iter_mut() {
            // `v < 0` is false for NaN: NaN propagates
            *v = if *v < zero { zero } else { *v };
        }
    }
}

/// `g·[y > 0]` element-wise (ReLU backward from the output, as PyTorch).
pub(crate) fn relu_mask<T: Float>(g: &[T], y: &[T]) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut out = vec![zero; g.len()];
    crate::threads::keep_warm();
    out.par_chunks_mut(1 << 14)
        .zip(g.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
        .for_each(|(oc, (gc, yc))| relu_mask_chunk(oc, gc, yc));
    out
}

simd_fn! {
    /// `g·[y > 0]` over one chunk.
    fn relu_mask_chunk<T>(oc: &mut [T], gc: &[T], yc: &[T]) {
        let zero = T::from_f64(0.0);
        for ((o, &gv), &yv) in oc.iter_mut().zip(gc).zip(yc) {
            *o = if yv > zero { gv } else { zero };
        }
    }
}

simd_fn! {
    /// Whether every value is finite: `x − x` is 0 exactly for finite `x` (NaN for ±∞ and NaN);
    /// the test is branch-free within chunks of 1024 so that it vectorises.
    #[allow(clippy::eq_op)]
    pub(crate) fn all_finite<T>(v: &[T]) -> bool {
        let zero = T::from_f64(0.0);
        v.chunks(1024).all(|c| c.iter().fold(true, |ok, &x| ok & ((x - x) == zero)))
    }
}

#[cfg(test)]
mod tests {
    /// `all_finite` against `f64::is_finite` / `f32::is_finite` on every kind of value, at
    /// positions inside and across its 1024-value chunks.
    #[test]
    fn all_finite_agrees_with_is_finite() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for at in [0usize, 5, 1023, 1024, 2999] {
                let mut v = vec![1.5f64; 3000];
                v[at] = bad;
                assert!(!super::all_finite(&v), "{bad} at {at}");
                let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                assert!(!super::all_finite(&v32), "f32 {bad} at {at}");
            }
        }
        let ok = [
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            -1e300,
        ];
        assert!(ok.iter().all(|x| x.is_finite()) && super::all_finite(&ok));
        assert!(super::all_finite(&[f32::MAX, f32::MIN, 1e-45f32]));
        assert!(super::all_finite::<f64>(&[]));
    }
}
