//! SGD update kernels of `optim::Sgd`: the momentum buffer and the parameter step, in place.

use super::simd::{simd_fn, Float};

simd_fn! {
    /// SGD momentum buffer in place: `d = g (+ wd·p)`; `b ← d` on the first step, else
    /// `b ← μ·b + damp·d` (PyTorch's order of operations).
    pub(crate) fn sgd_momentum<T>(buf: &mut [T], g: &[T], p: &[T], m: T, damp: T, wd: Option<T>, first: bool) {
        match (wd, first) {
            (Some(w), true) => buf.iter_mut().zip(g).zip(p).for_each(|((b, &gv), &pv)| *b = gv + pv * w),
            (None, true) => buf.copy_from_slice(&g[..buf.len()]),
            (Some(w), false) => buf
                .iter_mut()
                .zip(g)
                .zip(p)
                .for_each(|((b, &gv), &pv)| *b = *b * m + (gv + pv * w) * damp),
            (None, false) => buf.iter_mut().zip(g).for_each(|(b, &gv)| *b = *b * m + gv * damp),
        }
    }
}

/// Which update direction [`sgd_step`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SgdDirection {
    /// `d = g (+ wd·p)` (no momentum buffer).
    Gradient,
    /// `d + μ·b` (Nesterov).
    Nesterov,
    /// `b` (heavy-ball momentum).
    Buffer,
}

simd_fn! {
    /// SGD parameter update in place: `p ← p − lr·u` with `u` as [`SgdDirection`] says.
    pub(crate) fn sgd_step<T>(p: &mut [T], g: &[T], buf: &[T], lr: T, m: T, wd: Option<T>, dir: SgdDirection) {
        let d = |gv: T, pv: T| match wd {
            Some(w) => gv + pv * w,
            None => gv,
        };
        match dir {
            SgdDirection::Gradient => p.iter_mut().zip(g).for_each(|(pv, &gv)| *pv -= d(gv, *pv) * lr),
            SgdDirection::Nesterov => p
                .iter_mut()
                .zip(g)
                .zip(buf)
                .for_each(|((pv, &gv), &bv)| *pv -= (d(gv, *pv) + bv * m) * lr),
            SgdDirection::Buffer => p.iter_mut().zip(buf).for_each(|(pv, &bv)| *pv -= bv * lr),
        }
    }
}
