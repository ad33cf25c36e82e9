//! Pooling kernels: max-pooling of one plane (a vectorised 2×2 / stride-2 case and the general
//! window with padding and dilation, both recording the arg-max) and the global average pool
//! (plane means) with its backward.

use super::channel::channel_sum;
use super::simd::{simd_fn, Float};
use crate::window::Window;
use rayon::prelude::*;

simd_fn! {
    /// Max-pooling of one `[h, w]` plane with the 2×2 / stride-2 window into `o`, `a`
    /// (`[ho, wo]`, arg-max as flat index into the plane), branch-free, with the scan order of
    /// the general loop (row-major, first maximum wins, NaN wins).
    ///
    /// Blocks of 8 outputs go through fixed-size arrays (the window's four taps gathered
    /// first, then the same three comparisons lane by lane), a shape the compiler turns into
    /// vector code; the loop over single outputs it had left scalar (stride-2 loads of two
    /// rows), the largest kernel of the synth-av epoch after the products.
    pub(crate) fn max_pool_2x2_plane<T>(plane: &[T], w: usize, o: &mut [T], a: &mut [u32], wo: usize) {
        const L: usize = 8;
        let (w32, wo2) = (w as u32, 2 * wo);
        let zero = T::from_f64(0.0);
        for (oy, (orow, arow)) in o.chunks_exact_mut(wo).zip(a.chunks_exact_mut(wo)).enumerate() {
            let r0 = &plane[2 * oy * w..][..wo2];
            let r1 = &plane[(2 * oy + 1) * w..][..wo2];
            let base = (2 * oy * w) as u32;
            let full = wo / L * L;
            for blk in 0..full / L {
                let q0 = &r0[2 * blk * L..][..2 * L];
                let q1 = &r1[2 * blk * L..][..2 * L];
                let (mut p00, mut p01, mut p10, mut p11) = ([zero; L], [zero; L], [zero; L], [zero; L]);
                for l in 0..L {
                    p00[l] = q0[2 * l];
                    p01[l] = q0[2 * l + 1];
                    p10[l] = q1[2 * l];
                    p11[l] = q1[2 * l + 1];
                }
                let mut bv = p00;
                let mut bi = [0u32; L];
                for l in 0..L {
                    let t = pool_better(p01[l], bv[l]);
                    bv[l] = if t { p01[l] } else { bv[l] };
                    bi[l] = if t { 1 } else { bi[l] };
                }
                for l in 0..L {
                    let t = pool_better(p10[l], bv[l]);
                    bv[l] = if t { p10[l] } else { bv[l] };
                    bi[l] = if t { w32 } else { bi[l] };
                }
                for l in 0..L {
                    let t = pool_better(p11[l], bv[l]);
                    bv[l] = if t { p11[l] } else { bv[l] };
                    bi[l] = if t { w32 + 1 } else { bi[l] };
                }
                let i0 = base + (2 * blk * L) as u32;
                let ob = &mut orow[blk * L..][..L];
                let ab = &mut arow[blk * L..][..L];
                for l in 0..L {
                    ob[l] = bv[l];
                    ab[l] = i0 + 2 * l as u32 + bi[l];
                }
            }
            for ox in full..wo {
                let (p00, p01, p10, p11) = (r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
                let i0 = base + 2 * ox as u32;
                let (mut bv, mut bi) = (p00, i0);
                let t = pool_better(p01, bv);
                bv = if t { p01 } else { bv };
                bi = if t { i0 + 1 } else { bi };
                let t = pool_better(p10, bv);
                bv = if t { p10 } else { bv };
                bi = if t { i0 + w32 } else { bi };
                let t = pool_better(p11, bv);
                bv = if t { p11 } else { bv };
                bi = if t { i0 + w32 + 1 } else { bi };
                orow[ox] = bv;
                arow[ox] = bi;
            }
        }
    }
}

/// Whether `v` replaces the running maximum `bv` of a pooling window: strictly greater (the
/// first maximum wins ties), or NaN over a non-NaN (NaN propagates, as PyTorch's max-pool).
/// Bitwise `|` / `&`, no short-circuit: branch-free.
#[allow(clippy::eq_op)]
#[inline(always)]
fn pool_better<T: Float>(v: T, bv: T) -> bool {
    (v > bv) | ((v != v) & (bv == bv))
}

/// Index range `lo..hi` of the window taps `k` whose input coordinate `o·s + k·d − p` lies in
/// `0..n` (`kn` taps).
#[inline(always)]
fn tap_range(o: usize, s: usize, d: usize, p: usize, n: usize, kn: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize; // coordinate of tap 0
    let d = d as isize;
    let lo = if start >= 0 { 0 } else { (-start + d - 1) / d };
    let hi = (n as isize - start + d - 1)
        .div_euclid(d)
        .clamp(0, kn as isize);
    (lo.min(kn as isize) as usize, hi.max(lo) as usize)
}

/// The window taps of every output column of a max-pooling: `(kx0, kx1, ix0)`, the taps
/// `kx0..kx1` inside the input and the input column of tap `kx0` (computed once per call, not
/// per output cell).
pub(crate) fn pool_columns(w: usize, win: &Window, wo: usize) -> Vec<(usize, usize, usize)> {
    (0..wo)
        .map(|ox| {
            let (kx0, kx1) = tap_range(ox, win.sw, win.dw, win.pw, w, win.kw);
            (kx0, kx1, ox * win.sw + kx0 * win.dw - win.pw)
        })
        .collect()
}

simd_fn! {
    /// Max-pooling of one `[h, w]` plane with any window (padding never wins, dilation) into
    /// `o`, `a` (`[ho, wo]`, arg-max as flat index into the plane): row-major scan, first maximum
    /// wins, NaN wins; the taps outside the input are skipped by range (`cols` from
    /// [`pool_columns`]), not tested one by one.
    pub(crate) fn max_pool_plane<T>(plane: &[T], h: usize, w: usize, win: &Window, cols: &[(usize, usize, usize)], o: &mut [T], a: &mut [u32], wo: usize) {
        for (oy, (orow, arow)) in o.chunks_exact_mut(wo).zip(a.chunks_exact_mut(wo)).enumerate() {
            let (ky0, ky1) = tap_range(oy, win.sh, win.dh, win.ph, h, win.kh);
            let iy0 = oy * win.sh + ky0 * win.dh - win.ph;
            for ((ov, av), &(kx0, kx1, ix0)) in orow.iter_mut().zip(arow.iter_mut()).zip(cols) {
                let mut bi = iy0 * w + ix0;
                let mut bv = plane[bi];
                for ky in ky0..ky1 {
                    let row = (iy0 + (ky - ky0) * win.dh) * w;
                    for kx in kx0..kx1 {
                        let idx = row + ix0 + (kx - kx0) * win.dw;
                        let v = plane[idx];
                        let t = pool_better(v, bv);
                        bv = if t { v } else { bv };
                        bi = if t { idx } else { bi };
                    }
                }
                *ov = bv;
                *av = bi as u32;
            }
        }
    }
}

/// Mean of every `hw`-long plane.
pub(crate) fn plane_means<T: Float>(x: &[T], hw: usize) -> Vec<T> {
    crate::threads::keep_warm();
    x.par_chunks(hw)
        .map(|p| T::from_f64(channel_sum(p, 1, 1, p.len(), 0) / hw as f64))
        .collect()
}

/// Spreads `g[p]/hw` over plane `p` (backward of [`plane_means`]).
pub(crate) fn plane_spread<T: Float>(g: &[T], hw: usize) -> Vec<T> {
    let mut out = vec![T::from_f64(0.0); g.len() * hw];
    let inv = 1.0 / hw as f64;
    crate::threads::keep_warm();
    out.par_chunks_mut(hw)
        .zip(g.par_iter())
        .for_each(|(p, &v)| p.fill(T::from_f64(v.to_f64() * inv)));
    out
}
