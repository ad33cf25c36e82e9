//! OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al.,
//! "Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022).
//!
//! # Maths
//! With the per-modality scores `s_m = Σ_{i∈batch} softmax(z_m,i)[y_i]` (computed by the caller,
//! e.g. with [`crate::true_class_score`] on the head's per-modality logits), the discrepancy ratio
//! of modality `m` is
//!
//! ```text
//! ρ_m = s_m / min_k s_k
//! ```
//!
//! For two modalities this is the paper's `ρ_v = s_v / s_a` for the stronger modality and 1 for
//! the weaker (whose paper ratio `ρ_a = 1/ρ_v < 1` gives `k_a = 1` under both forms below, so the
//! coefficients are identical); for `M ≥ 3` it is BalanceMM's generalisation. The coefficient is
//!
//! * [`OgmForm::Paper`] (default): the paper's eq 10, which the official code implements (its
//!   comment quotes eq 10; `relu(ratio)` there is the positive ratio itself):
//!
//!   ```text
//!   k_m = 1 − tanh(α · ρ_m)   if ρ_m > 1
//!       = 1                   otherwise
//!   ```
//!
//!   It jumps from 1 to `1 − tanh(α)` as ρ crosses 1, by design (at ρ = 1.2, α = 0.8:
//!   `k = 1 − tanh(0.96) = 0.2557`). At an exact tie `s_a = s_v` the official two-modality code
//!   takes its `else` branch and suppresses audio with `1 − tanh(α)`; the ratio-to-minimum used
//!   here gives `k = 1` to both. Config name `"paper"`, alias `"official"` (paper and official
//!   code agree).
//! * [`OgmForm::Continuous`]: `k_m = 1 − tanh(α · relu(ρ_m − 1))` — not in the paper or the
//!   official code; continuous at ρ = 1 (at ρ = 1.2, α = 0.8: `1 − tanh(0.16) = 0.8414`). Config
//!   name `"continuous"`. (modbal's default before issue 14, wrongly called the paper's form.)
//!
//! Inside the [`ModulationWindow`], every gradient tensor `g` in scope (see [`OgmScope`]) of
//! modality `m`'s encoder becomes
//!
//! ```text
//! g ← k_m · g + ε,   ε_j ~ N(0, σ²) i.i.d. per element,   σ = std(g) + 1e-8
//! ```
//!
//! where `std(g)` is the unbiased (n − 1, `torch.std()`) standard deviation of the ORIGINAL
//! gradient tensor (GE, "generalisation enhancement"; switched off with `ge = false`, which is
//! the paper's plain OGM). As in the official code, GE noise is added to every modality in scope,
//! including those with `k_m = 1`. Outside the window nothing is touched.
//!
//! Every noise value is drawn from the caller's [`SeededRng`] (candle's CPU RNG cannot be
//! seeded), groups in the order given, tensors in the order of `params` (sorted by name when they
//! come from a `ParamStore`), elements in row-major order.
//!
//! # Shapes
//! `scores: [M]` (one per group), gradient tensors of any shape; conv kernels are
//! `[C_out, C_in, kH, kW]`.

use crate::error::{param_err, Result};
use crate::grads::{check_finite, check_len, group_vars, tensor_like, to_f64_vec, unbiased_std};
use crate::window::ModulationWindow;
use candle_core::{backprop::GradStore, DType, Tensor, Var};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};

/// Which coefficient formula OGM uses (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OgmForm {
    /// OGM-GE eq 10: `k = 1 − tanh(α · ρ)` if ρ > 1, else 1 (the paper, the official code and
    /// BalanceMM; jumps at ρ = 1). Config `"paper"`; `"official"` is accepted as an alias.
    #[default]
    #[serde(alias = "official")]
    Paper,
    /// `k = 1 − tanh(α · relu(ρ − 1))`: not in the paper or the official code; continuous at
    /// ρ = 1. Config `"continuous"`.
    Continuous,
}

/// Which gradient tensors of an encoder are modulated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OgmScope {
    /// Only 4-D tensors (convolution kernels), as the official code (`len(grad.size()) == 4`):
    /// BatchNorm parameters, biases and linear layers keep their gradients.
    #[default]
    ConvKernels,
    /// Every trainable parameter of the encoder (needed for encoders without convolutions).
    AllEncoder,
}

/// Configuration of [`OgmGe`].
///
/// ```toml
/// [method]
/// alpha = 0.8          # CREMA-D; 0.1 for VGGSound
/// form = "paper"       # eq 10 ("official" is an alias); or "continuous"
/// scope = "conv_kernels"
/// ge = true
/// window = { start = 0, end = 51 }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OgmGeConfig {
    /// α of the coefficient, `≥ 0`. Default 0.8 (the official README's CREMA-D value; 0.1 for
    /// VGGSound; unspecified for Kinetics-Sounds and AVE).
    pub alpha: f64,
    /// Coefficient formula. Default [`OgmForm::Paper`] (eq 10).
    pub form: OgmForm,
    /// Which tensors are modulated. Default [`OgmScope::ConvKernels`] (official).
    pub scope: OgmScope,
    /// Add the GE noise `N(0, (std(g) + 1e-8)²)`. Default `true` (OGM-GE; `false` is plain OGM).
    pub ge: bool,
    /// Epochs with modulation. Default `[0, 51)`, i.e. the official `0 <= epoch <= 50` of 100.
    pub window: ModulationWindow,
}

impl Default for OgmGeConfig {
    fn default() -> Self {
        Self {
            alpha: 0.8,
            form: OgmForm::Paper,
            scope: OgmScope::ConvKernels,
            ge: true,
            window: ModulationWindow { start: 0, end: 51 },
        }
    }
}

impl OgmGeConfig {
    /// Errors if α is negative or not finite, or the window is reversed.
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return param_err(format!(
                "OGM-GE alpha must be finite and >= 0, got {}",
                self.alpha
            ));
        }
        self.window.validate()
    }
}

/// What one OGM-GE call did, for `metrics.jsonl` (`method`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OgmGeReport {
    /// Whether the epoch was inside the window (if not, no gradient was touched).
    pub active: bool,
    /// `ρ_m = s_m / min s`, per group.
    pub ratios: Vec<f64>,
    /// `k_m`, per group.
    pub coefficients: Vec<f64>,
    /// Number of gradient tensors modulated, per group.
    pub tensors: Vec<usize>,
    /// Mean over the modulated tensors of the GE noise σ, per group (0 without GE).
    pub noise_std: Vec<f64>,
}

/// The OGM-GE gradient modulator; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct OgmGe {
    config: OgmGeConfig,
}

impl OgmGe {
    /// A modulator with a validated configuration.
    pub fn new(config: OgmGeConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &OgmGeConfig {
        &self.config
    }

    /// Replace the modulation window (e.g. by the paper's window scaled to the run's length with
    /// [`ModulationWindow::scaled`]). Errors if the window is reversed.
    pub fn set_window(&mut self, window: ModulationWindow) -> Result<()> {
        window.validate()?;
        self.config.window = window;
        Ok(())
    }

    /// `(ρ_m, k_m)` for every modality from the scores `s_m` (finite, `≥ 0`). A zero minimum
    /// score gives `ρ = ∞` (so `k = 0`) to the modalities with a positive score and `ρ = 1` to
    /// those with score 0.
    pub fn coefficients(&self, scores: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let ratios = discrepancy_ratios("OGM-GE", scores)?;
        let alpha = self.config.alpha;
        let coeffs = ratios
            .iter()
            .map(|&r| match self.config.form {
                OgmForm::Paper => {
                    if r > 1.0 {
                        1.0 - (alpha * r).tanh()
                    } else {
                        1.0
                    }
                }
                OgmForm::Continuous => 1.0 - (alpha * (r - 1.0).max(0.0)).tanh(),
            })
            .collect();
        Ok((ratios, coeffs))
    }

    /// Modulate, in place, the gradients of the groups `groups[m]` (e.g. `encoder.audio`) with
    /// the scores `scores[m]`, at 0-based `epoch`. `params` lists the candidate variables
    /// (e.g. `model.params().trainable()`); variables without a gradient are skipped; gradients
    /// of variables outside the groups are never touched.
    pub fn apply(
        &self,
        grads: &mut GradStore,
        params: &[(String, Var)],
        groups: &[String],
        scores: &[f64],
        epoch: usize,
        rng: &mut SeededRng,
    ) -> Result<OgmGeReport> {
        check_len("OGM-GE scores", scores.len(), groups.len(), "groups")?;
        let (ratios, coefficients) = self.coefficients(scores)?;
        let mut report = OgmGeReport {
            active: self.config.window.contains(epoch),
            ratios,
            coefficients,
            tensors: vec![0; groups.len()],
            noise_std: vec![0.0; groups.len()],
        };
        if !report.active {
            return Ok(report);
        }
        for (m, prefix) in groups.iter().enumerate() {
            let k = report.coefficients[m];
            let mut std_sum = 0.0;
            for (_, var) in group_vars(params, prefix) {
                if self.config.scope == OgmScope::ConvKernels && var.rank() != 4 {
                    continue;
                }
                let Some(g) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let new = if self.config.ge {
                    let (new, sigma) = ge_update(g, k, rng)?;
                    std_sum += sigma;
                    new
                } else if k == 1.0 {
                    report.tensors[m] += 1;
                    continue;
                } else {
                    (g * k)?
                };
                grads.insert(var.as_tensor(), new);
                report.tensors[m] += 1;
            }
            if self.config.ge && report.tensors[m] > 0 {
                report.noise_std[m] = std_sum / report.tensors[m] as f64;
            }
        }
        Ok(report)
    }
}

/// The discrepancy ratios `ρ_m = s_m / min_k s_k` of the scores `s_m` (finite, `≥ 0`; `what`
/// names the caller in errors). A zero minimum score gives `ρ = ∞` to the modalities with a
/// positive score and `ρ = 1` to those with score 0. For two modalities, the stronger one gets
/// the papers' `s_strong / s_weak` and the weaker 1. Shared by [`OgmGe`] and
/// [`crate::Opm`] (OPM's drop probabilities, TPAMI 2024).
pub fn discrepancy_ratios(what: &str, scores: &[f64]) -> Result<Vec<f64>> {
    check_finite(&format!("{what} scores"), scores)?;
    if let Some(s) = scores.iter().find(|s| **s < 0.0) {
        return crate::error::input_err(format!("{what} score {s} is negative"));
    }
    let min = scores.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok(scores
        .iter()
        .map(|&s| {
            if min > 0.0 {
                s / min
            } else if s > 0.0 {
                f64::INFINITY
            } else {
                1.0
            }
        })
        .collect())
}

/// `k·g + ε`, `ε ~ N(0, σ²)` with `σ = std(g) + 1e-8`; returns the new gradient and σ. f32
/// gradients are updated in f32 (σ and the draws in f64), others through f64.
fn ge_update(g: &Tensor, k: f64, rng: &mut SeededRng) -> Result<(Tensor, f64)> {
    if g.dtype() == DType::F32 {
        let v = g.flatten_all()?.to_vec1::<f32>()?;
        let n = v.len();
        let sigma = if n < 2 {
            0.0
        } else {
            let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n as f64;
            let ss: f64 = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        } + 1e-8;
        let out: Vec<f32> = v
            .iter()
            .map(|x| (k * *x as f64 + sigma * rng.normal()) as f32)
            .collect();
        let t =
            Tensor::from_vec(out, g.shape(), &candle_core::Device::Cpu)?.to_device(g.device())?;
        return Ok((t, sigma));
    }
    let v = to_f64_vec(g)?;
    let sigma = unbiased_std(&v) + 1e-8;
    let out: Vec<f64> = v.iter().map(|x| k * x + sigma * rng.normal()).collect();
    Ok((tensor_like(out, g)?, sigma))
}
