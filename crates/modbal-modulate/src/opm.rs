//! OPM: on-the-fly prediction modulation (Wei, Hu, Du & Wen, "On-the-fly Modulation for
//! Balanced Multimodal Learning", TPAMI 2024 — the extension of OGM-GE). In the feed-forward
//! stage, the features of the dominant modality are dropped, per sample, with a probability that
//! grows with the discriminative discrepancy between the modalities.
//!
//! # Maths
//! With the per-modality scores `s_m = Σ_{i∈batch} softmax(z_m,i)[y_i]` of the batch (OGM-GE
//! eq 9, from the clean features before any drop) and the discrepancy ratios
//! `ρ_m = s_m / min_k s_k` ([`crate::ogm_ge::discrepancy_ratios`], shared with [`crate::OgmGe`];
//! for two modalities the paper's `s_u / s_other`), the drop probability of modality `m` is
//!
//! ```text
//! q_m = clip(q_base · (1 + λ · tanh(ρ_m − 1)), 0, 1)   if ρ_m > 1
//!     = 0                                              otherwise
//! ```
//!
//! (official `calcu_q`: `tanh(relu(ρ − 1))` is positive exactly when ρ > 1). It jumps from 0 to
//! `q_base` as ρ crosses 1. The weakest modality (ρ = 1) is never dropped, so no sample ever
//! loses every modality. Each batch, the drop is executed with probability `p_exe` (one uniform
//! draw `u`, executed iff `u ≥ 1 − p_exe`); when it is, each sample `i` keeps modality `m`'s
//! feature with probability `1 − q_m` (one independent draw per sample and modality: the whole
//! `D_m`-dim feature vector is zeroed or kept), and every feature of the batch is rescaled by
//!
//! ```text
//! f̃_m,i = mask_m,i · f_m,i / (1 − θ),   θ = Σ_m D_m q_m / Σ_m D_m
//! ```
//!
//! (official `Modality_drop.execute_drop`: one factor for all modalities, the expected share of
//! dropped feature dimensions; its custom autograd function passes the same factor backwards, i.e.
//! plain multiplication by a constant). At test time nothing is dropped or rescaled (inverted
//! dropout: the rescaling happens in training only). Outside the [`ModulationWindow`], and in
//! the `1 − p_exe` batches without execution, the features are untouched.
//!
//! Random draws come from the caller's [`SeededRng`]: `u` first, then, if executed, the keep
//! draws modality-major (`m = 0` for every sample in batch order, then `m = 1`, …; keep iff the
//! draw `< 1 − q_m`). Draws are made only inside the window.
//!
//! # Shapes
//! `scores: [M]`; features `[B, D_m]` (rank 2, the encoders' pooled outputs).

use crate::error::{input_err, param_err, Result};
use crate::grads::check_len;
use crate::ogm_ge::discrepancy_ratios;
use crate::window::ModulationWindow;
use candle_core::{DType, Tensor};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};

/// Configuration of [`Opm`].
///
/// ```toml
/// q_base = 0.5
/// lambda = 0.5
/// p_exe = 0.7
/// window = { start = 6, end = 100 }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpmConfig {
    /// Base drop probability `q_base` of a dominant modality, in `[0, 1]`. Default 0.5 (official
    /// `scripts/train_opm.sh` and `main.py` argparse default; `config.py` has 0.4 but the
    /// argparse default overrides it).
    pub q_base: f64,
    /// `λ` of `q = q_base·(1 + λ·tanh(ρ − 1))`, finite and `≥ 0`. Default 0.5 (official
    /// `train_opm.sh`, argparse default and `config.py`).
    pub lambda: f64,
    /// Probability that the drop is executed on a batch, in `[0, 1]`. Default 0.7 (official
    /// `train_opm.sh`, argparse default and `config.py`).
    pub p_exe: f64,
    /// Epochs with prediction modulation. Default `[6, 100)`: the official code drops only when
    /// `warm_up == 0`, i.e. `epoch > 5`, for the rest of its 100 epochs.
    pub window: ModulationWindow,
}

impl Default for OpmConfig {
    fn default() -> Self {
        Self {
            q_base: 0.5,
            lambda: 0.5,
            p_exe: 0.7,
            window: ModulationWindow { start: 6, end: 100 },
        }
    }
}

impl OpmConfig {
    /// Errors naming the option if `q_base` or `p_exe` is outside `[0, 1]`, `lambda` is negative
    /// or not finite, or the window is reversed.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("q_base", self.q_base), ("p_exe", self.p_exe)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return param_err(format!("OPM {name} must be in [0, 1], got {v}"));
            }
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return param_err(format!(
                "OPM lambda must be finite and >= 0, got {}",
                self.lambda
            ));
        }
        self.window.validate()
    }
}

/// The random part of one OPM step: whether the drop was executed and which features were kept.
#[derive(Clone, Debug, PartialEq)]
pub struct OpmDraw {
    /// Whether this batch's drop was executed (probability `p_exe`).
    pub executed: bool,
    /// `keep[m][i]`: sample `i` keeps modality `m`'s feature (all `true` if not executed).
    pub keep: Vec<Vec<bool>>,
}

impl OpmDraw {
    /// The draw that drops nothing (outside the window or not executed).
    pub fn none(modalities: usize, batch: usize) -> Self {
        Self {
            executed: false,
            keep: vec![vec![true; batch]; modalities],
        }
    }

    /// Number of samples whose feature of modality `m` was dropped, per modality.
    pub fn dropped(&self) -> Vec<usize> {
        self.keep
            .iter()
            .map(|k| k.iter().filter(|x| !**x).count())
            .collect()
    }
}

/// What one OPM step did, for `metrics.jsonl` (`method`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpmReport {
    /// Whether the epoch was inside the window (if not, nothing was drawn or dropped).
    pub active: bool,
    /// Whether the drop was executed on this batch.
    pub executed: bool,
    /// `ρ_m = s_m / min s`, per modality.
    pub ratios: Vec<f64>,
    /// Drop probabilities `q_m`, per modality.
    pub q: Vec<f64>,
    /// `θ = Σ D_m q_m / Σ D_m` (0 when not executed).
    pub theta: f64,
    /// Samples whose feature of modality `m` was dropped, per modality.
    pub dropped: Vec<usize>,
}

/// The OPM feature-drop modulator; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Opm {
    config: OpmConfig,
}

impl Opm {
    /// A modulator with a validated configuration.
    pub fn new(config: OpmConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &OpmConfig {
        &self.config
    }

    /// Replace the window (e.g. by the official one scaled to the run). Errors if reversed.
    pub fn set_window(&mut self, window: ModulationWindow) -> Result<()> {
        window.validate()?;
        self.config.window = window;
        Ok(())
    }

    /// `(ρ_m, q_m)` for every modality from the scores `s_m` (finite, `≥ 0`).
    pub fn drop_probabilities(&self, scores: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let ratios = discrepancy_ratios("OPM", scores)?;
        let q = ratios
            .iter()
            .map(|&r| {
                if r > 1.0 {
                    // tanh(∞) = 1 for a zero minimum score.
                    (self.config.q_base * (1.0 + self.config.lambda * (r - 1.0).tanh()))
                        .clamp(0.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect();
        Ok((ratios, q))
    }

    /// `θ = Σ_m D_m q_m / Σ_m D_m`: the expected share of dropped feature dimensions.
    pub fn theta(dims: &[usize], q: &[f64]) -> Result<f64> {
        check_len(
            "OPM feature dims",
            dims.len(),
            q.len(),
            "drop probabilities",
        )?;
        let total: usize = dims.iter().sum();
        if total == 0 {
            return input_err("OPM: the features have no dimensions");
        }
        let dropped: f64 = dims.iter().zip(q).map(|(d, q)| *d as f64 * q).sum();
        Ok(dropped / total as f64)
    }

    /// Draw the execution and the keep masks of a batch of `batch` samples (see the module docs
    /// for the order of the draws). Call only inside the window.
    pub fn draw(&self, q: &[f64], batch: usize, rng: &mut SeededRng) -> OpmDraw {
        if rng.uniform() < 1.0 - self.config.p_exe {
            return OpmDraw::none(q.len(), batch);
        }
        let keep = q
            .iter()
            .map(|&qm| (0..batch).map(|_| rng.uniform() < 1.0 - qm).collect())
            .collect();
        OpmDraw {
            executed: true,
            keep,
        }
    }

    /// The modulated features `mask_m,i · f_m,i / (1 − θ)` (the features themselves when the
    /// draw was not executed). Errors if the features are not `[B, D_m]` matching the draw, or
    /// `θ ≥ 1`.
    pub fn apply(features: &[Tensor], draw: &OpmDraw, theta: f64) -> Result<Vec<Tensor>> {
        check_len("OPM features", features.len(), draw.keep.len(), "masks")?;
        if !draw.executed {
            return Ok(features.to_vec());
        }
        if !(theta.is_finite() && (0.0..1.0).contains(&theta)) {
            return input_err(format!("OPM theta must be in [0, 1), got {theta}"));
        }
        let scale = 1.0 / (1.0 - theta);
        features
            .iter()
            .zip(&draw.keep)
            .enumerate()
            .map(|(m, (f, keep))| {
                let dims = f.dims();
                if dims.len() != 2 || dims[0] != keep.len() {
                    return input_err(format!(
                        "OPM: features of modality {m} have shape {dims:?}, expected [{}, D]",
                        keep.len()
                    ));
                }
                let mask: Vec<f64> = keep.iter().map(|k| if *k { scale } else { 0.0 }).collect();
                let mask = Tensor::from_vec(mask, (keep.len(), 1), f.device())?;
                let mask = if f.dtype() == DType::F64 {
                    mask
                } else {
                    mask.to_dtype(f.dtype())?
                };
                Ok(f.broadcast_mul(&mask)?)
            })
            .collect()
    }

    /// One step: probabilities from `scores`, then (inside the window at `epoch`) the draw and
    /// the modulated features. Returns the features the head should see and the report.
    pub fn step(
        &self,
        features: &[Tensor],
        scores: &[f64],
        epoch: usize,
        rng: &mut SeededRng,
    ) -> Result<(Vec<Tensor>, OpmReport)> {
        check_len("OPM scores", scores.len(), features.len(), "features")?;
        let (ratios, q) = self.drop_probabilities(scores)?;
        let batch = match features.first() {
            Some(f) => f.dim(0)?,
            None => return input_err("OPM: no features"),
        };
        let mut report = OpmReport {
            active: self.config.window.contains(epoch),
            executed: false,
            ratios,
            q,
            theta: 0.0,
            dropped: vec![0; features.len()],
        };
        if !report.active {
            return Ok((features.to_vec(), report));
        }
        let dims = features
            .iter()
            .map(|f| f.dims().last().copied().unwrap_or(0))
            .collect::<Vec<_>>();
        let draw = self.draw(&report.q, batch, rng);
        if draw.executed {
            report.executed = true;
            report.theta = Self::theta(&dims, &report.q)?;
            report.dropped = draw.dropped();
        }
        let out = Self::apply(features, &draw, report.theta)?;
        Ok((out, report))
    }
}
