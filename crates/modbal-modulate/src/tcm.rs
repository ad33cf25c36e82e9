//! IBML's Task Complexity Modulation (TCM; "Information-Balanced Multimodal Learning", eq 15-16):
//! Gaussian noise on the inputs of the over-optimised modality, only for samples it already
//! predicted correctly.
//!
//! # Maths
//! With the recorded optimisation strengths `ρ̃^m = Σ_k softmax(g̃^m(x_k^m))[y_k]` (previous
//! epoch's unimodal predictions, eq 13, computed by the caller) and the normalised strength
//! `ā^m = M ρ̃^m / Σ_j ρ̃^j`, a modality is over-optimised when `ρ̃^m > (1/M) Σ_j ρ̃^j`, i.e.
//! `ā^m > 1`. For such a modality (eq 16), sample k of the batch is perturbed,
//!
//! ```text
//! x̂_k^m = x_k^m + ε^m    if  y_k = argmax g̃^m(x_k^m)  and  p_k^m < p^m,   p_k^m ~ U[0, 1)
//! p^m = min(ā^m, λ) / λ,  λ = 10
//! ε^m ~ N(0, var({x_k^m}_{k=1..K}))
//! ```
//!
//! The variance is ONE scalar per modality and batch: the unbiased variance of every element of
//! the modality's batch input (the official `spec.std()`). The noise ε^m carries no sample index
//! in eq 15-16, and the official code draws it once with the per-sample shape and adds the same
//! draw to every selected sample: that is [`TcmNoise::SharedDraw`] (default). [`TcmNoise::PerSample`]
//! draws independent noise for each selected sample instead. "Previously correct" (the argmax
//! of the recorded unimodal prediction equals the label) is a per-modality mask given by the
//! caller.
//!
//! Randomness, all from the caller's [`SeededRng`], in this order: for each over-optimised
//! modality in input order, one uniform per sample of the batch (drawn for every sample, as the
//! official `torch.rand(bs)`), then — if any sample was selected — the noise (shared: one
//! per-sample-shaped draw; per-sample: one draw per selected sample, in batch order), row-major.
//!
//! Modalities that are not over-optimised, unselected samples, labels and sample ids are left
//! bit-identical (the new input tensor is built with a per-sample select).
//!
//! # Shapes
//! `batch.inputs[m]: [B, ...]`, `rho_tilde: [M]`, `previously_correct[m]: [B]`.

use crate::error::{input_err, param_err, Result};
use crate::grads::{check_finite, check_len, tensor_like, to_f64_vec, unbiased_std};
use crate::window::ModulationWindow;
use candle_core::{DType, Tensor};
use modbal_core::Batch;
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};

/// How the TCM noise is drawn across the selected samples of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcmNoise {
    /// One draw of the per-sample shape, added to every selected sample (eq 15-16's ε^m has no
    /// sample index; the official code).
    #[default]
    SharedDraw,
    /// An independent draw for each selected sample.
    PerSample,
}

/// Configuration of [`Tcm`].
///
/// ```toml
/// lambda = 10.0
/// noise = "shared_draw"
/// window = { start = 1, end = 90 }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcmConfig {
    /// λ of `p^m = min(ā^m, λ)/λ`, `≥ 1` (below 1 every over-optimised sample would be hit with
    /// probability 1). Default 10 (paper).
    pub lambda: f64,
    /// Shared or per-sample noise. Default [`TcmNoise::SharedDraw`].
    pub noise: TcmNoise,
    /// Epochs with TCM. Default `[1, 90)`, the official `0 < epoch < 90` (epoch 0 has no
    /// recorded predictions).
    pub window: ModulationWindow,
}

impl Default for TcmConfig {
    fn default() -> Self {
        Self {
            lambda: 10.0,
            noise: TcmNoise::SharedDraw,
            window: ModulationWindow { start: 1, end: 90 },
        }
    }
}

impl TcmConfig {
    /// Errors unless λ is finite and `≥ 1` and the window is ordered.
    pub fn validate(&self) -> Result<()> {
        if !(self.lambda.is_finite() && self.lambda >= 1.0) {
            return param_err(format!(
                "TCM lambda must be finite and >= 1, got {}",
                self.lambda
            ));
        }
        self.window.validate()
    }
}

/// What one TCM call did, for `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcmReport {
    /// Whether the epoch was inside the window.
    pub active: bool,
    /// `ā^m = M ρ̃^m / Σ ρ̃`, per modality.
    pub strength: Vec<f64>,
    /// `p^m` for over-optimised modalities (`ā^m > 1`), 0 for the others.
    pub probabilities: Vec<f64>,
    /// The noise standard deviation used, per modality (0 if none was added).
    pub noise_std: Vec<f64>,
    /// Batch positions of the perturbed samples, per modality.
    pub perturbed: Vec<Vec<usize>>,
    /// Dataset ids (`Batch::sample_ids`) of the perturbed samples, per modality.
    pub perturbed_sample_ids: Vec<Vec<usize>>,
}

impl TcmReport {
    /// Total number of perturbed (modality, sample) pairs.
    pub fn num_perturbed(&self) -> usize {
        self.perturbed.iter().map(|p| p.len()).sum()
    }
}

/// IBML's TCM input modulator; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Tcm {
    config: TcmConfig,
}

impl Tcm {
    /// A modulator with a validated configuration.
    pub fn new(config: TcmConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &TcmConfig {
        &self.config
    }

    /// `(ā^m, p^m)` per modality from the recorded strengths `ρ̃^m` (finite, `≥ 0`); all zero
    /// when `Σ ρ̃ = 0` (no modality is over-optimised).
    pub fn probabilities(&self, rho_tilde: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        check_finite("TCM rho_tilde", rho_tilde)?;
        if let Some(r) = rho_tilde.iter().find(|r| **r < 0.0) {
            return input_err(format!("TCM rho_tilde {r} is negative"));
        }
        let m = rho_tilde.len() as f64;
        let sum: f64 = rho_tilde.iter().sum();
        if sum <= 0.0 {
            return Ok((vec![0.0; rho_tilde.len()], vec![0.0; rho_tilde.len()]));
        }
        let strength: Vec<f64> = rho_tilde.iter().map(|r| m * r / sum).collect();
        let lambda = self.config.lambda;
        let p = strength
            .iter()
            .map(|&a| if a > 1.0 { a.min(lambda) / lambda } else { 0.0 })
            .collect();
        Ok((strength, p))
    }

    /// Perturb `batch` in place (see the [module docs](self)) at 0-based `epoch`.
    pub fn apply(
        &self,
        batch: &mut Batch,
        rho_tilde: &[f64],
        previously_correct: &[Vec<bool>],
        epoch: usize,
        rng: &mut SeededRng,
    ) -> Result<TcmReport> {
        let n_mod = batch.inputs.len();
        let b = batch.len();
        check_len("TCM rho_tilde", rho_tilde.len(), n_mod, "modalities")?;
        check_len(
            "TCM previously_correct",
            previously_correct.len(),
            n_mod,
            "modalities",
        )?;
        for (m, mask) in previously_correct.iter().enumerate() {
            check_len(
                &format!("TCM previously_correct[{m}]"),
                mask.len(),
                b,
                "samples in the batch",
            )?;
        }
        for (m, x) in batch.inputs.iter().enumerate() {
            if x.dims().first() != Some(&b) {
                return input_err(format!(
                    "TCM: input {m} has shape {:?}, expected a leading batch axis of {b} (the \
                     batch's sample ids)",
                    x.dims()
                ));
            }
        }
        let (strength, probabilities) = self.probabilities(rho_tilde)?;
        let mut report = TcmReport {
            active: self.config.window.contains(epoch),
            strength,
            probabilities,
            noise_std: vec![0.0; n_mod],
            perturbed: vec![Vec::new(); n_mod],
            perturbed_sample_ids: vec![Vec::new(); n_mod],
        };
        if !report.active {
            return Ok(report);
        }
        for m in 0..n_mod {
            let p = report.probabilities[m];
            if p <= 0.0 {
                continue;
            }
            let selected: Vec<usize> = (0..b)
                .filter(|&i| {
                    let u = rng.uniform();
                    previously_correct[m][i] && u < p
                })
                .collect();
            if selected.is_empty() {
                continue;
            }
            let x = &batch.inputs[m];
            let values = to_f64_vec(x)?;
            let per = values.len() / b;
            let sigma = unbiased_std(&values);
            let mut noise = vec![0.0; values.len()];
            match self.config.noise {
                TcmNoise::SharedDraw => {
                    let row: Vec<f64> = (0..per).map(|_| sigma * rng.normal()).collect();
                    for &i in &selected {
                        noise[i * per..(i + 1) * per].copy_from_slice(&row);
                    }
                }
                TcmNoise::PerSample => {
                    for &i in &selected {
                        for v in &mut noise[i * per..(i + 1) * per] {
                            *v = sigma * rng.normal();
                        }
                    }
                }
            }
            let mut mask = vec![0u8; b];
            for &i in &selected {
                mask[i] = 1;
            }
            let mut mask_shape = vec![1usize; x.rank()];
            mask_shape[0] = b;
            let mask = Tensor::from_vec(mask, mask_shape, x.device())?
                .to_dtype(DType::U8)?
                .broadcast_as(x.shape())?;
            let noisy = (x + tensor_like(noise, x)?)?;
            let new_x = mask.where_cond(&noisy, x)?;
            batch.inputs[m] = new_x;
            report.noise_std[m] = sigma;
            report.perturbed_sample_ids[m] =
                selected.iter().map(|&i| batch.sample_ids[i]).collect();
            report.perturbed[m] = selected;
        }
        Ok(report)
    }
}
