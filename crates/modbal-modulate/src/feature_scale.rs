//! Gradient scaling on an encoder's output feature (ARL, Wei et al. ICCV 2025: each encoder's
//! output gradient is scaled by `(1 + w_m)`; the same trick serves any method that wants to
//! speed up or slow down one encoder without touching the forward pass).
//!
//! # Maths
//! For a feature `f` and a factor `c`:
//!
//! ```text
//! y = f·c + sg(f)·(1 − c)  =  sg(f) + (f − sg(f))·c          (sg = stop-gradient, `detach`)
//! forward:  y = f            backward:  ∂L/∂f = c · ∂L/∂y
//! ```
//!
//! The second (algebraically identical) form is the one computed: `f − sg(f)` is exactly zero
//! in floating point, so the forward value is bit-identical to `f` (the first form can differ
//! from `f` in the last bit). ARL uses `c = 1 + w_m` ([`arl_scale_feature`]).
//!
//! # Shapes
//! `f`: any shape (typically `[B, D_m]`) → same shape.

use crate::error::{input_err, Result};
use candle_core::Tensor;

/// `sg(f) + (f − sg(f))·c`: forward equal to `f`, gradient into `f` multiplied by `c` (finite).
/// `c = 1` returns `f` itself (same graph node); with `c = 0` candle prunes the (zero) gradient
/// path, so the variables behind `f` get no gradient entry from this term.
pub fn scale_feature_grad(f: &Tensor, c: f64) -> Result<Tensor> {
    if !c.is_finite() {
        return input_err(format!("gradient scale factor must be finite, got {c}"));
    }
    if c == 1.0 {
        return Ok(f.clone());
    }
    let d = f.detach();
    Ok((&d + ((f - &d)? * c)?)?)
}

/// ARL's scaling of modality m's encoder output: [`scale_feature_grad`] with `c = 1 + w_m`.
pub fn arl_scale_feature(f: &Tensor, w_m: f64) -> Result<Tensor> {
    scale_feature_grad(f, 1.0 + w_m)
}
