//! CAL's asymmetric gradient reinforcement (Contribution-Guided Asymmetric Learning, eq 7-8).
//!
//! # Maths
//! The modulation coefficients form one vector with ONE SCALAR PER MODALITY (eq 7):
//!
//! ```text
//! a = Softmax(T · [W^{m_1}, …, W^{m_M}]ᵀ)          (a^m ∈ (0, 1), Σ_m a^m = 1)
//! ```
//!
//! ([`softmax_coefficients`]; the contributions `W^m = φ(m) × R^m(t, n)` come from the CAL method).
//! Eq 8 adds the reinforcement to each modality's gradient:
//!
//! ```text
//! ∇_θ L = Σ_m (∇_θ L_m + a^m ⊙ ∇_θ L_m)
//! ```
//!
//! Since `a^m` is a scalar, `⊙` is a plain product. On modality `m`'s exclusive parameters θ_m
//! (its encoder, group `encoder.<m>`) only `L_m` has a gradient, so eq 8 is
//!
//! ```text
//! g ← g + η · a^m · g = (1 + η a^m) · g        (η = 1 in eq 8)
//! ```
//!
//! which is what [`CalReinforcement::apply`] does. The text after eq 8 writes the modulation
//! term as `η · a^m ⊙ ∇L_m` with an unspecified η; `eta` (default 1, i.e. eq 8 as printed)
//! exposes it. Documented choice: the shared head is left as it is (its gradient cannot be split
//! into per-modality losses `L_m` from one fused loss; with a concat head the weight slice of
//! modality m only sees `f_m` anyway). Note also that the paper's sentence "when T → 0 the
//! modulation approaches a one-hot vector" is the reverse of what `Softmax(T·W)` does (T → 0
//! gives the uniform vector, T → ∞ the one-hot one); [`softmax_coefficients`] implements the
//! formula.
//!
//! # Shapes
//! `a: [M]` (one scalar per group), gradient tensors of any shape.

use crate::error::{input_err, param_err, Result};
use crate::grads::{check_finite, check_len, group_vars};
use candle_core::{backprop::GradStore, Var};
use modbal_core::stats::softmax_row;
use serde::{Deserialize, Serialize};

/// Configuration of [`CalReinforcement`].
///
/// ```toml
/// eta = 1.0
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalReinforcementConfig {
    /// Scale η of the reinforcement term, `≥ 0`. Default 1 (eq 8 as printed).
    pub eta: f64,
}

impl Default for CalReinforcementConfig {
    fn default() -> Self {
        Self { eta: 1.0 }
    }
}

impl CalReinforcementConfig {
    /// Errors if η is negative or not finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            return param_err(format!(
                "CAL reinforcement eta must be finite and >= 0, got {}",
                self.eta
            ));
        }
        Ok(())
    }
}

/// What one call did, for `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalReinforcementReport {
    /// `a^m`, per group.
    pub a: Vec<f64>,
    /// The factor `1 + η a^m` applied to each group's gradients.
    pub factors: Vec<f64>,
    /// Number of gradient tensors scaled, per group.
    pub tensors: Vec<usize>,
}

/// CAL's asymmetric reinforcement (eq 8); see the [module docs](self).
#[derive(Clone, Debug)]
pub struct CalReinforcement {
    config: CalReinforcementConfig,
}

impl CalReinforcement {
    /// A modulator with a validated configuration.
    pub fn new(config: CalReinforcementConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &CalReinforcementConfig {
        &self.config
    }

    /// Scale, in place, every gradient of group `groups[m]` by `1 + η a[m]` (`a[m]` finite,
    /// `≥ 0`). Variables without a gradient and outside the groups are left alone.
    pub fn apply(
        &self,
        grads: &mut GradStore,
        params: &[(String, Var)],
        groups: &[String],
        a: &[f64],
    ) -> Result<CalReinforcementReport> {
        check_len("CAL coefficients a", a.len(), groups.len(), "groups")?;
        check_finite("CAL coefficients a", a)?;
        if let Some(x) = a.iter().find(|x| **x < 0.0) {
            return input_err(format!("CAL coefficient a^m = {x} is negative"));
        }
        let factors: Vec<f64> = a.iter().map(|x| 1.0 + self.config.eta * x).collect();
        let mut tensors = vec![0; groups.len()];
        for (m, prefix) in groups.iter().enumerate() {
            for (_, var) in group_vars(params, prefix) {
                let Some(g) = grads.get(var.as_tensor()) else {
                    continue;
                };
                if factors[m] != 1.0 {
                    let scaled = (g * factors[m])?;
                    grads.insert(var.as_tensor(), scaled);
                }
                tensors[m] += 1;
            }
        }
        Ok(CalReinforcementReport {
            a: a.to_vec(),
            factors,
            tensors,
        })
    }
}

/// Eq 7: `a = Softmax(T · W)` over the modalities' contributions `w` (finite), with
/// temperature `T` (finite). Numerically stable (the maximum is subtracted first).
pub fn softmax_coefficients(w: &[f64], temperature: f64) -> Result<Vec<f64>> {
    if !temperature.is_finite() {
        return param_err(format!("CAL temperature must be finite, got {temperature}"));
    }
    if w.is_empty() {
        return input_err("CAL contributions W are empty");
    }
    check_finite("CAL contributions W", w)?;
    let z: Vec<f64> = w.iter().map(|x| temperature * x).collect();
    Ok(softmax_row(&z))
}
