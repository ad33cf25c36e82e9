//! Per-channel kernels over `[B, C, HW]` activations: channel sums, the batch-norm statistics
//! (mean and biased variance), the per-channel affine map (+ ReLU) of the batch-norm forward, and
//! the batch-norm backward sums and input gradient. Reductions accumulate in f64 lanes added up in
//! a fixed order, so results do not depend on the number of threads.

use super::simd::{simd_fn, Float};
use rayon::prelude::*;

/// Number of independent f64 accumulators of the reductions below: the sums of a plane are
/// split over `LANES` partial sums (element `i` into lane `i % LANES`), which the compiler keeps
/// in vector registers; a single running sum would be bound by the latency of one addition per
/// element. The lanes are added up in a fixed order, so results do not depend on threads.
const LANES: usize = 16;

/// Sum of the lanes in a fixed pairwise order.
#[inline(always)]
fn fold_lanes(acc: &[f64; LANES]) -> f64 {
    let mut a = *acc;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            a[i] += a[i + n];
        }
    }
    a[0]
}

/// `Σ x` in f64 lanes.
#[inline(always)]
fn lane_sum<T: Float>(x: &[T], acc: &mut [f64; LANES]) {
    let mut it = x.chunks_exact(LANES);
    for ch in &mut it {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += v.to_f64();
        }
    }
    for (a, v) in acc.iter_mut().zip(it.remainder()) {
        *a += v.to_f64();
    }
}

/// `Σ (x − m)²` in f64 lanes.
#[inline(always)]
fn lane_sq_dev<T: Float>(x: &[T], m: f64, acc: &mut [f64; LANES]) {
    let mut it = x.chunks_exact(LANES);
    for ch in &mut it {
        for (a, v) in acc.iter_mut().zip(ch) {
            let d = v.to_f64() - m;
            *a += d * d;
        }
    }
    for (a, v) in acc.iter_mut().zip(it.remainder()) {
        let d = v.to_f64() - m;
        *a += d * d;
    }
}

/// `(Σ g, Σ g·(x − m))` in f64 lanes, with `g = gy·[y > 0]` when `y` is given.
#[inline(always)]
fn lane_bn_sums<T: Float>(
    x: &[T],
    gy: &[T],
    y: Option<&[T]>,
    m: f64,
    sg: &mut [f64; LANES],
    sgx: &mut [f64; LANES],
) {
    let zero = T::from_f64(0.0);
    let n = x.len();
    let full = n - n % LANES;
    match y {
        Some(y) => {
            let y = &y[..n];
            for i in (0..full).step_by(LANES) {
                let (xc, gc, yc) = (&x[i..i + LANES], &gy[i..i + LANES], &y[i..i + LANES]);
                for l in 0..LANES {
                    // branch-free mask: the ReLU pattern is unpredictable
                    let g = if yc[l] > zero { gc[l].to_f64() } else { 0.0 };
                    sg[l] += g;
                    sgx[l] += g * (xc[l].to_f64() - m);
                }
            }
            for i in full..n {
                let g = if y[i] > zero { gy[i].to_f64() } else { 0.0 };
                sg[i - full] += g;
                sgx[i - full] += g * (x[i].to_f64() - m);
            }
        }
        None => {
            for i in (0..full).step_by(LANES) {
                let (xc, gc) = (&x[i..i + LANES], &gy[i..i + LANES]);
                for l in 0..LANES {
                    let g = gc[l].to_f64();
                    sg[l] += g;
                    sgx[l] += g * (xc[l].to_f64() - m);
                }
            }
            for i in full..n {
                let g = gy[i].to_f64();
                sg[i - full] += g;
                sgx[i - full] += g * (x[i].to_f64() - m);
            }
        }
    }
}

/// Per-channel sums of `x [B, C, HW]` (accumulated in f64).
pub(crate) fn channel_sums<T: Float>(x: &[T], b: usize, c: usize, hw: usize) -> Vec<f64> {
    crate::threads::keep_warm();
    (0..c)
        .into_par_iter()
        .map(|ci| channel_sum(x, b, c, hw, ci))
        .collect()
}

simd_fn! {
    /// `Σ x[:, ci, :]` of `x [B, C, HW]`.
    pub(super) fn channel_sum<T>(x: &[T], b: usize, c: usize, hw: usize, ci: usize) -> f64 {
        let mut acc = [0.0; LANES];
        for bi in 0..b {
            lane_sum(&x[(bi * c + ci) * hw..][..hw], &mut acc);
        }
        fold_lanes(&acc)
    }
}

simd_fn! {
    /// Mean and biased variance of channel `ci` of `x [B, C, HW]` (two passes).
    fn channel_stat<T>(x: &[T], b: usize, c: usize, hw: usize, ci: usize) -> (f64, f64) {
        let n = (b * hw) as f64;
        let mut acc = [0.0; LANES];
        for bi in 0..b {
            lane_sum(&x[(bi * c + ci) * hw..][..hw], &mut acc);
        }
        let mean = fold_lanes(&acc) / n;
        let mut q = [0.0; LANES];
        for bi in 0..b {
            lane_sq_dev(&x[(bi * c + ci) * hw..][..hw], mean, &mut q);
        }
        (mean, fold_lanes(&q) / n)
    }
}

/// [`channel_sums`] in the element type.
pub(crate) fn channel_sums_as<T: Float>(x: &[T], b: usize, c: usize, hw: usize) -> Vec<T> {
    channel_sums(x, b, c, hw)
        .into_iter()
        .map(T::from_f64)
        .collect()
}

/// Per-channel mean and biased variance of `x [B, C, HW]` (two passes, f64).
pub(crate) fn channel_stats<T: Float>(x: &[T], b: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    crate::threads::keep_warm();
    (0..c)
        .into_par_iter()
        .map(|ci| channel_stat(x, b, c, hw, ci))
        .collect()
}

/// `y = x·a_c + s_c` per channel (then `max(y, 0)` with `relu`), `x [B, C, HW]`.
pub(crate) fn channel_affine<T: Float>(
    x: &[T],
    c: usize,
    hw: usize,
    a: &[T],
    s: &[T],
    relu: bool,
) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; x.len()];
    if hw == 0 {
        return y;
    }
    crate::threads::keep_warm();
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(p, (yp, xp))| affine_plane(yp, xp, a[p % c], s[p % c], relu));
    y
}

simd_fn! {
    /// `y = x·a + s` (then `max(y, 0)` with `relu`) over one plane.
    fn affine_plane<T>(yp: &mut [T], xp: &[T], ac: T, sc: T, relu: bool) {
        let zero = T::from_f64(0.0);
        if relu {
            for (o, &v) in yp.iter_mut().zip(xp) {
                let r = v * ac + sc;
                *o = if r > zero { r } else { zero };
            }
        } else {
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = v * ac + sc;
            }
        }
    }
}

/// Batch-norm backward sums per channel: `(Σ g, Σ g·x̂)` with `x̂ = (x − mean)·invstd` and
/// `g = gy` (or `gy·[y > 0]` when `y` is the ReLU output).
pub(crate) fn bn_bwd_sums<T: Float>(
    x: &[T],
    gy: &[T],
    y: Option<&[T]>,
    dims: (usize, usize, usize),
    stats: &[(f64, f64)],
) -> Vec<(f64, f64)> {
    crate::threads::keep_warm();
    (0..dims.1)
        .into_par_iter()
        .map(|ci| bn_channel_sums(x, gy, y, dims, ci, stats[ci]))
        .collect()
}

simd_fn! {
    /// [`bn_bwd_sums`] of channel `ci`.
    fn bn_channel_sums<T>(
        x: &[T],
        gy: &[T],
        y: Option<&[T]>,
        dims: (usize, usize, usize),
        ci: usize,
        stat: (f64, f64),
    ) -> (f64, f64) {
        let (b, c, hw) = dims;
        let (mean, invstd) = stat;
        let (mut sg, mut sgx) = ([0.0; LANES], [0.0; LANES]);
        for bi in 0..b {
            let o = (bi * c + ci) * hw;
            let yp = y.map(|y| &y[o..o + hw]);
            lane_bn_sums(&x[o..o + hw], &gy[o..o + hw], yp, mean, &mut sg, &mut sgx);
        }
        (fold_lanes(&sg), fold_lanes(&sgx) * invstd)
    }
}

/// Batch-norm input gradient: `gx = w·invstd·(g − Σg/N − x̂·Σg·x̂/N)` per channel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_bwd_input<T: Float>(
    x: &[T],
    gy: &[T],
    y: Option<&[T]>,
    dims: (usize, usize, usize),
    stats: &[(f64, f64)],
    weight: &[T],
    sums: &[(f64, f64)],
) -> Vec<T> {
    let (b, c, hw) = dims;
    let zero = T::from_f64(0.0);
    let n = (b * hw) as f64;
    let mut gx = vec![zero; x.len()];
    if hw == 0 {
        return gx;
    }
    crate::threads::keep_warm();
    gx.par_chunks_mut(hw).enumerate().for_each(|(p, gp)| {
        let ci = p % c;
        let (mean, invstd) = stats[ci];
        let (sg, sgx) = sums[ci];
        // gx = k·g − k·Σg/N − k·x̂·Σgx̂/N with x̂ = (x − mean)·invstd:
        //    = k·g + (x·u + v),  u = −k·invstd·Σgx̂/N,  v = −k·Σg/N + k·mean·invstd·Σgx̂/N.
        let kk = weight[ci].to_f64() * invstd;
        let u = -kk * invstd * sgx / n;
        let v = -kk * sg / n - mean * u;
        let (kt, ut, vt) = (T::from_f64(kk), T::from_f64(u), T::from_f64(v));
        let o = p * hw;
        let yp = y.map(|y| &y[o..o + hw]);
        bn_input_plane(gp, &x[o..o + hw], &gy[o..o + hw], yp, (kt, ut, vt));
    });
    gx
}

simd_fn! {
    /// `gx = k·g + x·u + v` over one plane, `g = gy` or `gy·[y > 0]`.
    fn bn_input_plane<T>(gp: &mut [T], xp: &[T], gyp: &[T], y: Option<&[T]>, kuv: (T, T, T)) {
        let (kt, ut, vt) = kuv;
        let zero = T::from_f64(0.0);
        match y {
            Some(y) => {
                for (((d, &xv), &gv), &yv) in gp.iter_mut().zip(xp).zip(gyp).zip(y) {
                    let g = if yv > zero { gv } else { zero };
                    *d = kt * g + xv * ut + vt;
                }
            }
            None => {
                for ((d, &xv), &gv) in gp.iter_mut().zip(xp).zip(gyp) {
                    *d = kt * gv + xv * ut + vt;
                }
            }
        }
    }
}
