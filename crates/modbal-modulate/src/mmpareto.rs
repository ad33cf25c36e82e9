//! MMPareto: Pareto integration of the multimodal and unimodal gradients on each encoder (Wei &
//! Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024).
//!
//! # Maths
//! The loss is `L = L_mm + Σ_m L_m` (fused head and one unimodal head per modality). For each
//! encoder `m` (group `encoder.<m>`), with `g_mm` and `g_m` the gradients of `L_mm` and `L_m`
//! flattened over ALL of the encoder's tensors:
//!
//! ```text
//! cos = ⟨g_mm, g_m⟩ / (‖g_mm‖ ‖g_m‖)
//! cos > 0:  k0 = k1 = 1/2
//! cos ≤ 0:  k0 = clamp((⟨g_m,g_m⟩ − ⟨g_mm,g_m⟩) / ‖g_mm − g_m‖², 0.001, 0.999),  k1 = 1 − k0
//! ```
//!
//! (the two-task min-norm solution `argmin_c ‖c g_mm + (1 − c) g_m‖`). Then, PER TENSOR `t` of
//! the encoder, with `g_sum,t` the gradient of the total loss `L` on that tensor (in the
//! official code `param.grad` after `(L_mm + L_a + L_v).backward()`, i.e. `g_mm,t + g_m,t` on
//! encoder m):
//!
//! ```text
//! g_new,t = 2 k0 g_mm,t + 2 k1 g_m,t
//! g_t ← γ · g_new,t · max(1, ‖g_sum,t‖ / ‖g_new,t‖)      (norm γ · max(‖g_sum,t‖, ‖g_new,t‖)), γ = 1.5
//! ```
//!
//! The heads (and every other group) keep their plain gradient of `L`.
//!
//! NaN guards (BalanceMM's port produces NaN on conflicts): the min-norm weight follows the
//! official solver's case analysis — `⟨g_mm,g_m⟩ ≥ ‖g_mm‖²` gives `k0 = 0.999`,
//! `⟨g_mm,g_m⟩ ≥ ‖g_m‖²` gives `k0 = 0.001` — so `‖g_mm − g_m‖ = 0` (which implies the first
//! case) never divides by zero; the cosine of a zero gradient is 0; a tensor with
//! `‖g_new,t‖ = 0` gets `γ · g_new,t = 0` (the official `diff = ‖g_sum‖/0` would give `inf·0`).
//! Documented difference: the official solver does not clamp the interior solution to
//! `[0.001, 0.999]` (it can return e.g. 0.9995); modbal clamps everywhere, as the paper's
//! description.
//!
//! All inner products are accumulated in f64.
//!
//! # Usage
//! Two (or more) backward passes over one graph: `mm = L_mm.backward()`, `uni[m] =
//! L_m.backward()`; the total-loss store is either a third backward of `L` (as the official
//! code) or [`sum_grads`]`(&[&mm, &uni[0], …])`; [`MmPareto::apply`] then rewrites the encoder
//! entries of that total store in place.

use crate::error::{param_err, Result};
use crate::grads::{check_len, dot, group_vars, sq_norm};
use candle_core::{backprop::GradStore, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Configuration of [`MmPareto`].
///
/// ```toml
/// gamma = 1.5
/// k_min = 0.001
/// k_max = 0.999
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MmParetoConfig {
    /// Magnitude factor γ `> 0`. Default 1.5 (official code).
    pub gamma: f64,
    /// Lower clamp of the min-norm weight k0. Default 0.001 (official solver).
    pub k_min: f64,
    /// Upper clamp of the min-norm weight k0. Default 0.999 (official solver).
    pub k_max: f64,
}

impl Default for MmParetoConfig {
    fn default() -> Self {
        Self {
            gamma: 1.5,
            k_min: 0.001,
            k_max: 0.999,
        }
    }
}

impl MmParetoConfig {
    /// Errors unless `γ > 0` and `0 ≤ k_min ≤ k_max ≤ 1` (all finite).
    pub fn validate(&self) -> Result<()> {
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return param_err(format!(
                "MMPareto gamma must be finite and > 0, got {}",
                self.gamma
            ));
        }
        if !(self.k_min.is_finite()
            && self.k_max.is_finite()
            && 0.0 <= self.k_min
            && self.k_min <= self.k_max
            && self.k_max <= 1.0)
        {
            return param_err(format!(
                "MMPareto needs 0 <= k_min <= k_max <= 1, got k_min {} and k_max {}",
                self.k_min, self.k_max
            ));
        }
        Ok(())
    }
}

/// What one call did, per encoder group, for `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MmParetoReport {
    /// Cosine between the flattened `g_mm` and `g_m` of each encoder (0 if either is zero).
    pub cos: Vec<f64>,
    /// Whether the gradients conflicted (`cos ≤ 0`, min-norm weights used).
    pub conflict: Vec<bool>,
    /// Weight k0 of the multimodal gradient.
    pub k_mm: Vec<f64>,
    /// Weight k1 = 1 − k0 of the unimodal gradient.
    pub k_uni: Vec<f64>,
    /// Number of gradient tensors rewritten.
    pub tensors: Vec<usize>,
}

/// The MMPareto gradient integration; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct MmPareto {
    config: MmParetoConfig,
}

impl MmPareto {
    /// A modulator with a validated configuration.
    pub fn new(config: MmParetoConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &MmParetoConfig {
        &self.config
    }

    /// The weights `(k0, k1)` from `⟨g_mm,g_mm⟩`, `⟨g_mm,g_m⟩`, `⟨g_m,g_m⟩`: `(1/2, 1/2)` if the
    /// cosine is positive, else the clamped two-task min-norm solution. Never NaN for finite
    /// inputs. Also returns the cosine.
    pub fn weights(&self, mm_mm: f64, mm_uni: f64, uni_uni: f64) -> (f64, f64, f64) {
        let cos = if mm_mm > 0.0 && uni_uni > 0.0 {
            mm_uni / (mm_mm.sqrt() * uni_uni.sqrt())
        } else {
            0.0
        };
        if cos > 0.0 {
            return (0.5, 0.5, cos);
        }
        let k0 = if mm_uni >= mm_mm {
            self.config.k_max
        } else if mm_uni >= uni_uni {
            self.config.k_min
        } else {
            // Here ⟨g_mm,g_m⟩ < both squared norms, so ‖g_mm − g_m‖² > 0.
            let k = (uni_uni - mm_uni) / (mm_mm + uni_uni - 2.0 * mm_uni);
            k.clamp(self.config.k_min, self.config.k_max)
        };
        (k0, 1.0 - k0, cos)
    }

    /// Rewrite, in place in `total` (the gradient store of `L = L_mm + Σ L_m`), the gradients of
    /// every encoder group `groups[m]` from the stores `mm` (of `L_mm`) and `unimodal[m]` (of
    /// `L_m`). Only tensors with an entry in `total` are rewritten (a tensor missing from `mm` or
    /// `unimodal[m]` counts as a zero gradient there); entries of all other variables — heads,
    /// groups not listed — are left bit-identical.
    pub fn apply(
        &self,
        total: &mut GradStore,
        mm: &GradStore,
        unimodal: &[&GradStore],
        params: &[(String, Var)],
        groups: &[String],
    ) -> Result<MmParetoReport> {
        check_len(
            "MMPareto unimodal stores",
            unimodal.len(),
            groups.len(),
            "groups",
        )?;
        let n = groups.len();
        let mut report = MmParetoReport {
            cos: vec![0.0; n],
            conflict: vec![false; n],
            k_mm: vec![0.5; n],
            k_uni: vec![0.5; n],
            tensors: vec![0; n],
        };
        for (m, prefix) in groups.iter().enumerate() {
            // (var, g_sum, g_mm, g_m) for every tensor of the encoder with a total gradient.
            let mut items: Vec<(&Var, Tensor, Tensor, Tensor)> = Vec::new();
            for (_, var) in group_vars(params, prefix) {
                let t = var.as_tensor();
                let Some(g_sum) = total.get(t) else { continue };
                let g_mm = match mm.get(t) {
                    Some(g) => g.clone(),
                    None => g_sum.zeros_like()?,
                };
                let g_m = match unimodal[m].get(t) {
                    Some(g) => g.clone(),
                    None => g_sum.zeros_like()?,
                };
                items.push((var, g_sum.clone(), g_mm, g_m));
            }
            let (mut v11, mut v12, mut v22) = (0.0, 0.0, 0.0);
            for (_, _, a, b) in &items {
                v11 += sq_norm(a)?;
                v12 += dot(a, b)?;
                v22 += sq_norm(b)?;
            }
            let (k0, k1, cos) = self.weights(v11, v12, v22);
            report.cos[m] = cos;
            report.conflict[m] = cos <= 0.0;
            report.k_mm[m] = k0;
            report.k_uni[m] = k1;
            let gamma = self.config.gamma;
            for (var, g_sum, g_mm, g_m) in items {
                let g_new = ((&g_mm * (2.0 * k0))? + (&g_m * (2.0 * k1))?)?;
                let new_norm = sq_norm(&g_new)?.sqrt();
                let sum_norm = sq_norm(&g_sum)?.sqrt();
                let scale = if new_norm > 0.0 && sum_norm > new_norm {
                    gamma * sum_norm / new_norm
                } else {
                    gamma
                };
                total.insert(var.as_tensor(), (g_new * scale)?);
                report.tensors[m] += 1;
            }
        }
        Ok(report)
    }
}

/// A gradient store holding, for every variable of `params` with an entry in at least one of
/// `stores`, the sum of its entries (in the order of `stores`). Use it to build the total-loss
/// store of `L = L_mm + Σ L_m` from the separate backward passes instead of a further backward.
pub fn sum_grads(stores: &[&GradStore], params: &[(String, Var)]) -> Result<GradStore> {
    let mut out = GradStore::default();
    for (_, var) in params {
        let t = var.as_tensor();
        let mut acc: Option<Tensor> = None;
        for s in stores {
            if let Some(g) = s.get(t) {
                acc = Some(match acc {
                    None => g.clone(),
                    Some(a) => (a + g)?,
                });
            }
        }
        if let Some(a) = acc {
            out.insert(t, a);
        }
    }
    Ok(out)
}
