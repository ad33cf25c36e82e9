//! UDI's dynamic controller ("Unidirectional Dynamic Interaction", eq 13-16): weights of the
//! auxiliary (unsupervised) losses from how well their gradients agree with the classification
//! gradient on the shared parameters.
//!
//! # Maths
//! With `g_cls = ∇_θ L_cls` and `g_k = ∇_θ L_k` for each auxiliary loss k (eq 13; in UDI
//! k ∈ {con, com}, the JS consistency and the vCLUB complementarity terms). `L_cls` is the
//! *multimodal* classification loss (§3.3: "the task gradient (from the multimodal
//! classification loss)"; Algorithm 1 line 15 lists it beside the follower's own `L_cls^m`):
//! the CE of the fused prediction of the frozen anchor (detached) and the follower, so `g_cls`
//! lives on the follower's parameters. The controller only reads the stores; which loss each
//! was taken of is the caller's (`modbal_methods::udi`):
//!
//! ```text
//! ξ_k = Σ_{i ∈ K_k} g_cls[i] · g_k[i],   K_k = keys(g_cls) ∩ keys(g_k)     (eq 14)
//! ξ̃_k = ReLU(ξ_k)                                                        (eq 15)
//! α_k = ξ̃_k / (Σ_j ξ̃_j + ε)                                               (eq 16)
//! ```
//!
//! The sum in eq 14 runs over every scalar of the shared parameters that have a gradient in
//! both stores (a listed variable missing from either store is skipped, as the key
//! intersection of eq 14). The normalisation of eq 16 is over ALL auxiliary terms with one ε in
//! the denominator: the weights sum to `Σξ̃/(Σξ̃+ε) ≤ 1`, and when no auxiliary gradient agrees
//! with the classification gradient every α is 0 (the paper's behaviour: the auxiliary losses
//! are switched off until they help). The paper computes α on one mini-batch per epoch.
//!
//! # Shapes
//! One gradient store per loss, `shared`: the list of shared variables (e.g. the follower's
//! encoder and the head).

use crate::error::{param_err, Result};
use crate::grads::dot;
use candle_core::{backprop::GradStore, Var};
use serde::{Deserialize, Serialize};

/// Configuration of [`UdiController`].
///
/// ```toml
/// eps = 1e-8
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UdiControllerConfig {
    /// ε of eq 16, `> 0` ("a small ε > 0"; value unspecified in the paper). Default 1e-8.
    pub eps: f64,
}

impl Default for UdiControllerConfig {
    fn default() -> Self {
        Self { eps: 1e-8 }
    }
}

impl UdiControllerConfig {
    /// Errors unless ε is finite and positive.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return param_err(format!(
                "UDI controller eps must be finite and > 0, got {}",
                self.eps
            ));
        }
        Ok(())
    }
}

/// The controller's output, also what is logged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UdiControllerReport {
    /// `ξ_k = ⟨g_cls, g_k⟩` on the shared parameters (eq 14).
    pub inner_products: Vec<f64>,
    /// `ξ̃_k = ReLU(ξ_k)` (eq 15).
    pub clipped: Vec<f64>,
    /// `α_k` (eq 16).
    pub alphas: Vec<f64>,
    /// Number of shared variables entering each inner product.
    pub shared_tensors: Vec<usize>,
}

/// UDI's dynamic controller; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct UdiController {
    config: UdiControllerConfig,
}

impl UdiController {
    /// A controller with a validated configuration.
    pub fn new(config: UdiControllerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &UdiControllerConfig {
        &self.config
    }

    /// α from the inner products `ξ_k` (eq 15-16).
    pub fn alphas_from_inner_products(&self, xi: &[f64]) -> Result<Vec<f64>> {
        crate::grads::check_finite("UDI inner products", xi)?;
        let clipped: Vec<f64> = xi.iter().map(|x| x.max(0.0)).collect();
        let denom = clipped.iter().sum::<f64>() + self.config.eps;
        Ok(clipped.iter().map(|x| x / denom).collect())
    }

    /// Eq 14-16 from the classification gradients `cls` and the auxiliary gradients `aux[k]`
    /// over the variables `shared`. Gradients are only read.
    pub fn weights(
        &self,
        cls: &GradStore,
        aux: &[&GradStore],
        shared: &[(String, Var)],
    ) -> Result<UdiControllerReport> {
        let mut inner_products = Vec::with_capacity(aux.len());
        let mut shared_tensors = Vec::with_capacity(aux.len());
        for store in aux {
            let mut xi = 0.0;
            let mut n = 0;
            for (_, var) in shared {
                let t = var.as_tensor();
                if let (Some(a), Some(b)) = (cls.get(t), store.get(t)) {
                    xi += dot(a, b)?;
                    n += 1;
                }
            }
            inner_products.push(xi);
            shared_tensors.push(n);
        }
        let alphas = self.alphas_from_inner_products(&inner_products)?;
        Ok(UdiControllerReport {
            clipped: inner_products.iter().map(|x| x.max(0.0)).collect(),
            inner_products,
            alphas,
            shared_tensors,
        })
    }
}
