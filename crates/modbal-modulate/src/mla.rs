//! MLA's gradient projection on the shared head (Zhang et al., "Multimodal
//! Representation Learning by Alternating Unimodal Adaptation", CVPR 2024), in the paper's form
//! (the orthogonal-weight-modification update of Zeng et al. 2019).
//!
//! # Maths
//! A projector holds a symmetric `P ∈ R^{d×d}`, `P = I` initially. For each step with the
//! encoder features `F ∈ R^{B×d}` of the modality being trained:
//!
//! ```text
//! r = mean_i F_i                        (1×d, the batch-mean feature)
//! α = α_0^(1 + batch_idx / num_batches)  (α_0 = 0.1)
//! k = P rᵀ                               (d×1)
//! P ← P − k kᵀ / (α + r k)
//! P ← P / ‖P‖_F
//! ∇W ← ∇W Pᵀ                             (∇W: C×d, the shared head's weight gradient)
//! ```
//!
//! Before the normalisation, the update gives `P_new rᵀ = (α / (α + r k)) · k`: directions the
//! head has already seen are (almost, for small α) removed, so the projected update `ΔW ∝ ∇W Pᵀ`
//! barely changes the head's response `W rᵀ` to the previous modality's mean feature — the
//! "orthogonality" that protects what the other modality taught the shared head. `P` stays
//! symmetric positive semi-definite with `‖P‖_F = 1` after every update.
//!
//! Official-code notes (see the project's reference notes): in the official MLA code the
//! projection never fires (a parameter-name mismatch), and BalanceMM adds `∇W Pᵀ` to the gradient
//! instead of replacing it and divides by the matrix `α + k r` instead of the scalar `α + r k`;
//! modbal implements the paper (replace, scalar). The bias gradient is not projected.
//!
//! One [`MlaProjector`] is one `P`; the MLA method keeps one per modality (or a shared one) and
//! checkpoints it through [`MlaProjector::state`].
//!
//! # Shapes
//! `features: [B, d]`, head weight gradient `[C, d]`, `P: [d, d]`.

use crate::error::{input_err, param_err, Result};
use crate::grads::{check_finite, sq_norm, to_f64_vec};
use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Configuration of [`MlaProjector`].
///
/// ```toml
/// alpha_base = 0.1
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlaProjectionConfig {
    /// α_0 of `α = α_0^(1 + batch_idx/num_batches)`, `> 0`. Default 0.1 (paper).
    pub alpha_base: f64,
}

impl Default for MlaProjectionConfig {
    fn default() -> Self {
        Self { alpha_base: 0.1 }
    }
}

impl MlaProjectionConfig {
    /// Errors unless `alpha_base` is finite and positive.
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha_base.is_finite() && self.alpha_base > 0.0) {
            return param_err(format!(
                "MLA alpha_base must be finite and > 0, got {}",
                self.alpha_base
            ));
        }
        Ok(())
    }
}

/// The checkpointable state of an [`MlaProjector`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlaProjectorState {
    /// Feature dimension d.
    pub dim: usize,
    /// `P`, row-major, `d·d` values. Serialised as the f64 bit patterns (`p_bits`, u64), so that
    /// a checkpoint restores P exactly (serde_json's default float parsing does not round-trip
    /// every f64).
    #[serde(rename = "p_bits", with = "f64_bits")]
    pub p: Vec<f64>,
    /// Number of updates applied so far.
    pub updates: u64,
}

/// What one projection step did, for `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MlaProjectionReport {
    /// α used for the update.
    pub alpha: f64,
    /// `‖r‖`, the norm of the batch-mean feature.
    pub r_norm: f64,
    /// `‖P rᵀ‖ / ‖r‖` after the update (0 = r fully projected out).
    pub residual: f64,
    /// `‖∇W‖` before and after the projection (0 if the weight had no gradient).
    pub grad_norm_before: f64,
    pub grad_norm_after: f64,
}

/// A stateful MLA projector; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct MlaProjector {
    config: MlaProjectionConfig,
    dim: usize,
    p: Vec<f64>,
    updates: u64,
}

impl MlaProjector {
    /// `P = I_d` (`d > 0`).
    pub fn new(config: MlaProjectionConfig, dim: usize) -> Result<Self> {
        config.validate()?;
        if dim == 0 {
            return param_err("MLA projector dimension must be > 0");
        }
        let mut p = vec![0.0; dim * dim];
        for i in 0..dim {
            p[i * dim + i] = 1.0;
        }
        Ok(Self {
            config,
            dim,
            p,
            updates: 0,
        })
    }

    pub fn config(&self) -> &MlaProjectionConfig {
        &self.config
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Number of updates applied so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }
    /// `P`, row-major.
    pub fn p(&self) -> &[f64] {
        &self.p
    }

    /// `P` as an f64 `[d, d]` CPU tensor.
    pub fn matrix(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.p,
            (self.dim, self.dim),
            &Device::Cpu,
        )?)
    }

    /// `α = α_0^(1 + batch_idx / num_batches)` (`num_batches > 0`).
    pub fn alpha(&self, batch_idx: usize, num_batches: usize) -> Result<f64> {
        if num_batches == 0 {
            return input_err("MLA: num_batches must be > 0");
        }
        Ok(self
            .config
            .alpha_base
            .powf(1.0 + batch_idx as f64 / num_batches as f64))
    }

    /// One update of `P` with the mean feature `r` (length d, finite) and `α > 0`.
    pub fn update(&mut self, r: &[f64], alpha: f64) -> Result<()> {
        let d = self.dim;
        if r.len() != d {
            return input_err(format!(
                "MLA: mean feature has {} entries, projector dimension is {d}",
                r.len()
            ));
        }
        check_finite("MLA mean feature r", r)?;
        if !(alpha.is_finite() && alpha > 0.0) {
            return input_err(format!("MLA: alpha must be finite and > 0, got {alpha}"));
        }
        let k: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| self.p[i * d + j] * r[j]).sum())
            .collect();
        let rk: f64 = r.iter().zip(&k).map(|(a, b)| a * b).sum();
        let denom = alpha + rk;
        if !(denom.is_finite() && denom > 0.0) {
            return input_err(format!(
                "MLA: alpha + r·k = {denom} is not positive (P lost positive semi-definiteness)"
            ));
        }
        for i in 0..d {
            for j in 0..d {
                self.p[i * d + j] -= k[i] * k[j] / denom;
            }
        }
        let fro = self.p.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(fro.is_finite() && fro > 0.0) {
            return input_err(format!("MLA: ‖P‖_F = {fro} after the update"));
        }
        for x in &mut self.p {
            *x /= fro;
        }
        self.updates += 1;
        Ok(())
    }

    /// `∇W · Pᵀ` for a gradient `[C, d]` (returned in the gradient's dtype and device).
    pub fn project(&self, grad_w: &Tensor) -> Result<Tensor> {
        let (_, d) = grad_w.dims2().map_err(|_| {
            crate::ModulateError::Input(format!(
                "MLA projects 2-D head weight gradients [C, d], got shape {:?}",
                grad_w.dims()
            ))
        })?;
        if d != self.dim {
            return input_err(format!(
                "MLA: gradient has {d} columns, projector dimension is {}",
                self.dim
            ));
        }
        let pt = self
            .matrix()?
            .t()?
            .to_dtype(grad_w.dtype())?
            .to_device(grad_w.device())?;
        Ok(grad_w.matmul(&pt)?)
    }

    /// One MLA step: update `P` with the batch-mean of `features` (`[B, d]`, the encoder output
    /// of the modality being trained; detached or not) at batch `batch_idx` of `num_batches`, then
    /// replace the gradient of the head weight `weight` in `grads` by its projection (if it has
    /// one). No other entry of `grads` is touched.
    pub fn apply(
        &mut self,
        grads: &mut GradStore,
        weight: &Var,
        features: &Tensor,
        batch_idx: usize,
        num_batches: usize,
    ) -> Result<MlaProjectionReport> {
        let (b, d) = features.dims2().map_err(|_| {
            crate::ModulateError::Input(format!(
                "MLA features must be [B, d], got shape {:?}",
                features.dims()
            ))
        })?;
        if b == 0 || d != self.dim {
            return input_err(format!(
                "MLA features have shape [{b}, {d}], projector dimension is {}",
                self.dim
            ));
        }
        let r = to_f64_vec(&features.detach().to_dtype(DType::F64)?.mean(0)?)?;
        let alpha = self.alpha(batch_idx, num_batches)?;
        self.update(&r, alpha)?;
        let r_norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        let pr: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| self.p[i * d + j] * r[j]).sum())
            .collect();
        let residual = if r_norm > 0.0 {
            pr.iter().map(|x| x * x).sum::<f64>().sqrt() / r_norm
        } else {
            0.0
        };
        let mut report = MlaProjectionReport {
            alpha,
            r_norm,
            residual,
            grad_norm_before: 0.0,
            grad_norm_after: 0.0,
        };
        if let Some(g) = grads.get(weight.as_tensor()) {
            let projected = self.project(g)?;
            report.grad_norm_before = sq_norm(g)?.sqrt();
            report.grad_norm_after = sq_norm(&projected)?.sqrt();
            grads.insert(weight.as_tensor(), projected);
        }
        Ok(report)
    }

    /// The checkpointable state.
    pub fn state(&self) -> MlaProjectorState {
        MlaProjectorState {
            dim: self.dim,
            p: self.p.clone(),
            updates: self.updates,
        }
    }

    /// Rebuild a projector from [`MlaProjector::state`]; errors if `p` does not hold `d·d`
    /// finite values.
    pub fn from_state(config: MlaProjectionConfig, state: &MlaProjectorState) -> Result<Self> {
        config.validate()?;
        if state.dim == 0 || state.p.len() != state.dim * state.dim {
            return input_err(format!(
                "MLA projector state: dim {} but {} values (need dim²)",
                state.dim,
                state.p.len()
            ));
        }
        check_finite("MLA projector state p", &state.p)?;
        Ok(Self {
            config,
            dim: state.dim,
            p: state.p.clone(),
            updates: state.updates,
        })
    }
}

/// Serde for `Vec<f64>` as the values' IEEE-754 bit patterns (exact round-trip through JSON).
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_bits()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(f64::from_bits)
            .collect())
    }
}
