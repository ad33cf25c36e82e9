//! Global-norm gradient clipping, as `torch.nn.utils.clip_grad_norm_`:
//! ‖g‖ = sqrt(Σ_p ‖g_p‖²); if ‖g‖ > max_norm every gradient is scaled by max_norm / (‖g‖ + 1e-6).

use candle_core::{backprop::GradStore, Result, Var};

/// The global L2 norm of the gradients of `vars` present in `grads`.
pub fn global_grad_norm(grads: &GradStore, vars: &[(String, Var)]) -> Result<f64> {
    let mut total = 0.0f64;
    for (_, v) in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g
                .to_dtype(candle_core::DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    Ok(total.sqrt())
}

/// Scales the gradients in place so their global norm is at most `max_norm`; returns the norm
/// before clipping. Errors if the norm is not finite (the culprit is named).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let norm = global_grad_norm(grads, vars)?;
    if !norm.is_finite() {
        for (name, v) in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let s = g
                    .to_dtype(candle_core::DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?;
                if !s.is_finite() {
                    candle_core::bail!("non-finite gradient in parameter {name:?}");
                }
            }
        }
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (_, v) in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}
