//! Gaussian entropy and mutual information from batch covariances (CAL eq 10-12).
//!
//! For a D-dimensional Gaussian with covariance Σ (CAL eq 11):
//!
//! `H = ½ log((2πe)^D det Σ) = ½ (D·log(2πe) + log det Σ)`
//!
//! and, with `Z = [X; Y]` jointly Gaussian (CAL eq 10 `I = H(X) + H(Y) − H(X,Y)` into eq 12):
//!
//! `I(X; Y) = ½ log( det Σ_X · det Σ_Y / det Σ_Z )`
//!
//! Σ is the unbiased batch covariance `(1/(N−1)) Σ_i (x_i − x̄)(x_i − x̄)ᵀ`, regularised as
//!
//! `Σ_reg = (1 − λ)·Σ + λ·diag(Σ) + ridge·diag(max(σ_i², τ))`,  `τ = max(1e-12, 1e-8·tr Σ / D)`
//!
//! * `shrinkage` λ ∈ [0, 1] shrinks the correlations towards 0 (target: the diagonal), the usual
//!   remedy when N is not much larger than D (biases MI towards 0, never below);
//! * `ridge` ≥ 0 adds a multiple of each feature's own variance to the diagonal (scale-free), and
//!   gives a constant feature the variance `ridge·τ`, so that constant features and N ≤ D give a
//!   finite value instead of an error. With `ridge = 0` and a singular Σ the estimators return
//!   an error naming the covariance, never NaN.
//!
//! For MI, the regularisation is applied to the joint Σ_Z and Σ_X, Σ_Y are taken as its
//! diagonal blocks: Σ_Z is then positive definite and Fischer's inequality gives
//! `det Σ_Z ≤ det Σ_X det Σ_Y`, so **I ≥ 0** (up to floating-point rounding, ~1e-6 in f32).
//! Everything is built from differentiable tensor ops and `modbal_tensors::ops::logdet`, so the
//! estimates can sit inside a loss (CAL's AIB, eq 13).
//!
//! Bias: with N samples the plug-in Gaussian MI of independent variables is ≈ D_X·D_Y/(2N) > 0.
//!
//! # Shapes
//! * `x: [N, D_X]` (or `[N]`, read as `[N, 1]`), `y: [N, D_Y]`, N ≥ 2, float dtype
//! * `covariance(x) -> [D, D]`; `gaussian_entropy(x) -> []`; `gaussian_mi(x, y) -> []`

use crate::error::{check_finite, InfoError, Result};
use candle_core::{DType, Tensor};
use modbal_tensors::ops::logdet;
use serde::{Deserialize, Serialize};

/// Regularisation of the covariance estimates (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GaussianConfig {
    /// Multiple of each feature's variance added to the diagonal. Default 1e-6.
    pub ridge: f64,
    /// Shrinkage λ of the correlations towards zero, in [0, 1]. Default 0.
    pub shrinkage: f64,
}

impl Default for GaussianConfig {
    fn default() -> Self {
        Self {
            ridge: 1e-6,
            shrinkage: 0.0,
        }
    }
}

impl GaussianConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if !(self.ridge >= 0.0 && self.ridge.is_finite()) {
            return Err(InfoError::Param(format!(
                "gaussian: ridge must be finite and >= 0, got {}",
                self.ridge
            )));
        }
        if !(0.0..=1.0).contains(&self.shrinkage) {
            return Err(InfoError::Param(format!(
                "gaussian: shrinkage must be in [0, 1], got {}",
                self.shrinkage
            )));
        }
        Ok(())
    }
}

fn as_matrix(x: &Tensor, what: &str) -> Result<Tensor> {
    let x = match x.rank() {
        1 => x.unsqueeze(1)?,
        2 => x.clone(),
        _ => {
            return Err(InfoError::Input(format!(
                "{what} must be [N, D] or [N], got {:?}",
                x.dims()
            )))
        }
    };
    if !x.dtype().is_float() {
        return Err(InfoError::Input(format!(
            "{what} must be a float tensor, got {:?}",
            x.dtype()
        )));
    }
    let (n, d) = x.dims2()?;
    if n < 2 {
        return Err(InfoError::Input(format!(
            "{what}: a covariance needs at least 2 samples, got {n}"
        )));
    }
    if d == 0 {
        return Err(InfoError::Input(format!(
            "{what} has no features: {:?}",
            x.dims()
        )));
    }
    check_finite(&x, what)?;
    Ok(x)
}

/// The unbiased covariance of `x` with the configured regularisation, `[D, D]`.
pub fn covariance(x: &Tensor, cfg: &GaussianConfig) -> Result<Tensor> {
    cfg.validate()?;
    let x = as_matrix(x, "x")?;
    regularised_cov(&x, cfg)
}

fn regularised_cov(x: &Tensor, cfg: &GaussianConfig) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let xc = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let cov = (xc.t()?.matmul(&xc)? / (n as f64 - 1.0))?;
    let var = (xc.sqr()?.sum(0)? / (n as f64 - 1.0))?; // [D], the diagonal of cov
                                                       // τ from the detached trace: a numerical floor, not part of the objective.
    let mean_var = var
        .detach()
        .to_dtype(DType::F64)?
        .mean_all()?
        .to_scalar::<f64>()?;
    let tau = f64::max(1e-8 * mean_var, 1e-12);
    let eye = Tensor::eye(d, x.dtype(), x.device())?;
    let mut out = cov.clone();
    if cfg.shrinkage > 0.0 {
        let diag = eye.broadcast_mul(&var.unsqueeze(0)?)?;
        out = ((out * (1.0 - cfg.shrinkage))? + (diag * cfg.shrinkage)?)?;
    }
    if cfg.ridge > 0.0 {
        let floor = var.clamp(tau, f64::INFINITY)?;
        let ridge = eye.broadcast_mul(&(floor * cfg.ridge)?.unsqueeze(0)?)?;
        out = (out + ridge)?;
    }
    Ok(out)
}

fn logdet_named(cov: &Tensor, what: &str) -> Result<Tensor> {
    logdet(cov).map_err(|e| {
        InfoError::Input(format!(
            "covariance of {what} is singular or not positive definite ({e}); use a ridge > 0 or shrinkage"
        ))
    })
}

/// Differential entropy (nats) of `x` under a Gaussian fit, CAL eq 11. Scalar tensor.
pub fn gaussian_entropy(x: &Tensor, cfg: &GaussianConfig) -> Result<Tensor> {
    cfg.validate()?;
    let x = as_matrix(x, "x")?;
    let d = x.dim(1)? as f64;
    let cov = regularised_cov(&x, cfg)?;
    let ld = logdet_named(&cov, "x")?;
    let c = d * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln();
    Ok(((ld + c)? * 0.5)?)
}

/// Mutual information (nats) between `x` and `y` under a joint Gaussian fit, CAL eq 12.
/// Scalar tensor, ≥ 0 up to rounding.
pub fn gaussian_mi(x: &Tensor, y: &Tensor, cfg: &GaussianConfig) -> Result<Tensor> {
    cfg.validate()?;
    let x = as_matrix(x, "x")?;
    let y = as_matrix(y, "y")?;
    let (nx, dx) = x.dims2()?;
    let (ny, dy) = y.dims2()?;
    if nx != ny {
        return Err(InfoError::Input(format!(
            "x and y must have the same number of samples: x {:?}, y {:?}",
            x.dims(),
            y.dims()
        )));
    }
    if x.dtype() != y.dtype() {
        return Err(InfoError::Input(format!(
            "x and y must have the same dtype: {:?} vs {:?}",
            x.dtype(),
            y.dtype()
        )));
    }
    let z = Tensor::cat(&[&x, &y], 1)?;
    let cz = regularised_cov(&z, cfg)?;
    let cx = cz.narrow(0, 0, dx)?.narrow(1, 0, dx)?;
    let cy = cz.narrow(0, dx, dy)?.narrow(1, dx, dy)?;
    let lx = logdet_named(&cx, "x")?;
    let ly = logdet_named(&cy, "y")?;
    let lz = logdet_named(&cz, "[x, y]")?;
    Ok((((lx + ly)? - lz)? * 0.5)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn errors_name_the_problem() {
        let dev = Device::Cpu;
        let one = Tensor::zeros((1, 3), DType::F64, &dev).unwrap();
        let e = gaussian_entropy(&one, &GaussianConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 2 samples"), "{e}");
        let x = Tensor::zeros((4, 2), DType::F64, &dev).unwrap();
        let y = Tensor::zeros((5, 2), DType::F64, &dev).unwrap();
        let e = gaussian_mi(&x, &y, &GaussianConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("same number of samples"), "{e}");
        let bad = GaussianConfig {
            ridge: -1.0,
            ..Default::default()
        };
        assert!(gaussian_entropy(&x, &bad)
            .unwrap_err()
            .to_string()
            .contains("ridge"));
        let nan = Tensor::new(&[[1.0f64, f64::NAN], [0.0, 1.0]], &dev).unwrap();
        let e = gaussian_entropy(&nan, &GaussianConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN"), "{e}");
        // Singular covariance without ridge: an error, not NaN.
        let none = GaussianConfig {
            ridge: 0.0,
            shrinkage: 0.0,
        };
        let e = gaussian_entropy(&x, &none).unwrap_err().to_string();
        assert!(e.contains("singular"), "{e}");
    }

    #[test]
    fn constant_features_give_a_defined_value_with_the_default_ridge() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1.0f64, 5.0], [2.0, 5.0], [4.0, 5.0]], &dev).unwrap();
        let y = Tensor::new(&[[3.0f64], [1.0], [0.0]], &dev).unwrap();
        let h = gaussian_entropy(&x, &GaussianConfig::default())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(h.is_finite());
        let mi = gaussian_mi(&x, &y, &GaussianConfig::default())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(mi.is_finite() && mi >= -1e-9, "{mi}");
    }
}
