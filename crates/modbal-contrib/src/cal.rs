//! CAL's modality contribution `W(m, t) = φ(m) × R^m(t, n)` and the modulation coefficients `a`.
//!
//! Paper: *Contribution-Guided Asymmetric Learning* (CAL), eq 1-5 and 7; the ablation variants of
//! its Table 5. No public code exists; every choice the paper leaves open is listed below.
//!
//! # Quantities
//!
//! * **Marginal contribution** (eq 2), over the N samples of the validation split:
//!   `φ(m) = (1/N) Σ_i [ log p(y_i | x^{M,(i)}) − log p(y_i | x^{M∖{m},(i)}) ]`.
//! * **Smoothed performance** (eq 3): `P̂^m(t) = γ·P^m(t) + (1 − γ)·P̂^m(t−1)`, `P̂^m(0) = P^m(0)`,
//!   γ = 0.2.
//! * **Trend** (eq 4, with the ε = 1e-8 the text adds to the denominator):
//!   `T^m(t, n) = (P̂^m(t) − P̂^m(t−1)) / ( (1/n) Σ_{k=t−n}^{t−1} P̂^m(k) + ε )`, n = 5.
//! * **Residual potential** (eq 5): `R^m(t, n) = λ·(P_max − P̂^m(t)) + (1 − λ)·T^m(t, n)`,
//!   λ = 0.5, P_max = 1.
//! * **Contribution** (eq 1): `W(m, t) = φ(m) × R^m(t, n)`.
//! * **Modulation coefficients** (eq 7): `a = softmax(T · [W^{m_1} … W^{m_M}])` over the
//!   modalities, T the temperature (the paper reuses the letter T of the trend; here it is
//!   [`CalConfig::temperature`]). `a` multiplies the encoder gradients in eq 8
//!   (`g ← g + a^m ⊙ g`), which lives in the method, not here.
//!
//! # Choices the paper leaves open (modbal's documented defaults)
//!
//! * **P^m(t)** ("the prediction score of modality m at epoch t") is the accuracy of modality
//!   m's own logits (`EvalOutputs::per_modality_logits[m]`; the head's weight slice for the
//!   concat head) on the validation split ([`CalEpochStats::from_eval`]). Any other score can be
//!   passed by building [`CalEpochStats`] directly.
//! * **"All but m"** in eq 2. The paper's text says φ needs "one full model and M ablation
//!   models", but also (eq 14) evaluates φ on the *same* fusion model with its input replaced.
//!   modbal realises `x^{M∖{m}}` inside the one trained model by zeroing modality m's features
//!   before the fusion head, `model.head(features with m zeroed)` ([`marginal_contribution`]);
//!   both terms of eq 2 come from `model.head` on the split's features (not from
//!   `EvalOutputs::fused_logits`, which is the method's own `predict`). To follow the
//!   separately-trained-ablation-models reading instead, evaluate those models and pass their
//!   logits to [`marginal_contribution_from_logits`].
//! * **Short history** in eq 4: at t = 0 there is no P̂(t−1) and T = 0; for 0 < t < n the mean
//!   runs over the t available values `P̂(0..t−1)` (the window is truncated, not zero-padded).
//!   A zero denominator (only possible with ε = 0 and a zero baseline) gives T = 0.
//! * **Temperature.** Eq 7 multiplies W by T, while the text describes divide-by-T behaviour
//!   ("T → 0 approaches one-hot, T → ∞ uniform"); [`TemperatureForm`] selects the reading
//!   (default: eq 7 as printed, `softmax(T·W)`). The paper gives no value. The contributions
//!   seen in training are small (|W| ≈ 0.01–0.2), so T = 1 gives `a ≈ 1/M` whatever the
//!   modalities contribute (for two modalities `a¹ − a² = tanh(T·(W¹ − W²)/2)`). The default
//!   [`DEFAULT_TEMPERATURE`] = 30 is the smallest T of a sweep over {1, 3, 10, 30, 100} whose
//!   mean `|a¹ − a²|` reached 0.2 on every seed without a validation-accuracy cost
//!   (`docs/results/cal-temperature-sweep.md`; criterion stated before the runs, test accuracy
//!   not used).
//! * **Table 5 variants** ([`CalVariant`]): `W = φ` (φ only), `W = R` (R only), `W = φ + R`,
//!   `W = P × R` with P = P^m(t) the raw (unsmoothed) per-modality score of the epoch, and the
//!   paper's `W = φ × R` (default).
//!
//! # Shapes
//! * `features[m]: [N, D_m]`, `labels: &[u32]` of length N → φ: M values
//! * [`CalEpochStats`]: `phi`, `performance`: M values each; [`CalReport`]: M values per quantity
//! * ablated logits `[N, C]` per modality

use crate::error::{input_err, param_err, Result};
use crate::stats::{accuracy, check_features, check_values, head_fused, label_log_probabilities};
use candle_core::Tensor;
use modbal_core::{EvalOutputs, MultimodalModel};
use serde::{Deserialize, Serialize};

/// φ(m) of CAL eq 2 with the two log-likelihood terms it is made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarginalContribution {
    /// `φ(m) = mean_i log p(y_i | all) − mean_i log p(y_i | all but m)` (CAL eq 2).
    pub phi: Vec<f64>,
    /// `mean_i log p(y_i | all)`.
    pub full_log_likelihood: f64,
    /// `mean_i log p(y_i | all but m)` per modality.
    pub ablated_log_likelihood: Vec<f64>,
    /// N.
    pub num_samples: usize,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// CAL eq 2 from the logits of the full model and of each "all but m" model, on the same N
/// samples in the same order (e.g. separately trained ablation models).
///
/// `full: [N, C]`, `ablated[m]: [N, C]`, `labels: N`. Errors: no ablated logits, shapes
/// (named), label range, NaN/Inf.
pub fn marginal_contribution_from_logits(
    full: &Tensor,
    ablated: &[Tensor],
    labels: &[u32],
) -> Result<MarginalContribution> {
    if ablated.is_empty() {
        return input_err("marginal_contribution_from_logits: no ablated logits");
    }
    for (m, z) in ablated.iter().enumerate() {
        if z.dims() != full.dims() {
            return input_err(format!(
                "marginal_contribution_from_logits: ablated logits of modality {m} have shape \
                 {:?}, full logits {:?}",
                z.dims(),
                full.dims()
            ));
        }
    }
    let full_ll = mean(&label_log_probabilities(full, labels)?);
    let ablated_ll = ablated
        .iter()
        .map(|z| Ok(mean(&label_log_probabilities(z, labels)?)))
        .collect::<Result<Vec<f64>>>()?;
    Ok(MarginalContribution {
        phi: ablated_ll.iter().map(|a| full_ll - a).collect(),
        full_log_likelihood: full_ll,
        ablated_log_likelihood: ablated_ll,
        num_samples: labels.len(),
    })
}

/// CAL eq 2 inside one trained model: "all but m" = modality m's features zeroed at the fusion
/// head (see the module docs). Typically `features = &eval.features`, `labels = &eval.labels`
/// of the validation split.
///
/// `features[m]: [N, D_m]` (moved to the model's device), `labels: N` → M values.
/// Errors: feature count ≠ the model's modalities, N mismatch (named), label range, NaN/Inf,
/// head failures.
pub fn marginal_contribution<M: MultimodalModel + ?Sized>(
    model: &M,
    features: &[Tensor],
    labels: &[u32],
) -> Result<MarginalContribution> {
    let n_mod = features.len();
    check_features(model, features, labels, "marginal_contribution")?;
    let full = head_fused(model, features, &vec![true; n_mod])?;
    let ablated = (0..n_mod)
        .map(|m| {
            let keep: Vec<bool> = (0..n_mod).map(|k| k != m).collect();
            head_fused(model, features, &keep)
        })
        .collect::<Result<Vec<_>>>()?;
    marginal_contribution_from_logits(&full, &ablated, labels)
}

/// The default temperature T of eq 7 (the paper gives none): chosen by the sensitivity sweep
/// of `docs/results/cal-temperature-sweep.md` (criterion: the separation of `a` when the
/// contributions differ, and validation accuracy; never test accuracy).
pub const DEFAULT_TEMPERATURE: f64 = 30.0;

/// How [`CalConfig::temperature`] enters eq 7 (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureForm {
    /// `a = softmax(T · W)`: CAL eq 7 as printed. The default.
    #[default]
    Multiply,
    /// `a = softmax(W / T)`: the behaviour CAL's text describes (T → 0 one-hot, T → ∞ uniform).
    Divide,
}

/// How W is formed from φ, R and P: CAL eq 1 and the ablation rows of CAL Table 5.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalVariant {
    /// `W = φ × R` (CAL eq 1; Table 5 "φ×R", the paper's method). The default.
    #[default]
    PhiTimesR,
    /// `W = φ` (Table 5 "φ only").
    PhiOnly,
    /// `W = R` (Table 5 "R only").
    ROnly,
    /// `W = φ + R` (Table 5 "φ+R").
    PhiPlusR,
    /// `W = P × R`, P = P^m(t) the epoch's raw per-modality score (Table 5 "P×R").
    PTimesR,
}

impl CalVariant {
    /// W of one modality from φ, R and P.
    pub fn combine(self, phi: f64, r: f64, p: f64) -> f64 {
        match self {
            Self::PhiTimesR => phi * r,
            Self::PhiOnly => phi,
            Self::ROnly => r,
            Self::PhiPlusR => phi + r,
            Self::PTimesR => p * r,
        }
    }
}

/// Hyper-parameters of CAL's contribution metric; `Default` = the paper's values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalConfig {
    /// Smoothing factor γ of eq 3, in (0, 1]. Default 0.2 (CAL §4.1).
    pub gamma: f64,
    /// Window n of eq 4, ≥ 1. Default 5 (CAL §3.1, "n is set to 5"; "window size K" in §4.1).
    pub window: usize,
    /// ε in the denominator of eq 4, ≥ 0. Default 1e-8 (CAL §3.1).
    pub epsilon: f64,
    /// Balance λ of eq 5 between the static gap and the trend, in [0, 1]. Default 0.5 (CAL §4.1).
    pub lambda: f64,
    /// P_max of eq 5 (the score's upper limit). Default 1.0 (accuracy; CAL §3.1).
    pub p_max: f64,
    /// Temperature T of eq 7, > 0. Default [`DEFAULT_TEMPERATURE`] = 30 (the paper gives no
    /// value; chosen by a documented sweep, see the module docs).
    pub temperature: f64,
    /// How T enters eq 7. Default [`TemperatureForm::Multiply`] (eq 7 as printed).
    pub temperature_form: TemperatureForm,
    /// How W is formed (eq 1 or a Table 5 ablation). Default [`CalVariant::PhiTimesR`].
    pub variant: CalVariant,
}

impl Default for CalConfig {
    fn default() -> Self {
        Self {
            gamma: 0.2,
            window: 5,
            epsilon: 1e-8,
            lambda: 0.5,
            p_max: 1.0,
            temperature: DEFAULT_TEMPERATURE,
            temperature_form: TemperatureForm::Multiply,
            variant: CalVariant::PhiTimesR,
        }
    }
}

impl CalConfig {
    /// Checks the parameters ([`crate::ContribError::Param`] naming the field).
    pub fn validate(&self) -> Result<()> {
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            return param_err(format!("cal.gamma must be in (0, 1], got {}", self.gamma));
        }
        if self.window == 0 {
            return param_err("cal.window must be >= 1, got 0");
        }
        if !(self.epsilon >= 0.0 && self.epsilon.is_finite()) {
            return param_err(format!(
                "cal.epsilon must be finite and >= 0, got {}",
                self.epsilon
            ));
        }
        if !(0.0..=1.0).contains(&self.lambda) {
            return param_err(format!("cal.lambda must be in [0, 1], got {}", self.lambda));
        }
        if !self.p_max.is_finite() {
            return param_err(format!("cal.p_max must be finite, got {}", self.p_max));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return param_err(format!(
                "cal.temperature must be finite and > 0, got {}",
                self.temperature
            ));
        }
        Ok(())
    }
}

/// `a = softmax(T·W)` or `softmax(W/T)` (CAL eq 7), max-shifted.
///
/// Errors: empty or non-finite W, temperature not finite and > 0.
pub fn modulation_coefficients(
    w: &[f64],
    temperature: f64,
    form: TemperatureForm,
) -> Result<Vec<f64>> {
    if w.is_empty() {
        return input_err("modulation_coefficients: empty W");
    }
    check_values(w, w.len(), "modulation_coefficients: W")?;
    if !(temperature > 0.0 && temperature.is_finite()) {
        return param_err(format!(
            "modulation_coefficients: temperature must be finite and > 0, got {temperature}"
        ));
    }
    let scaled: Vec<f64> = match form {
        TemperatureForm::Multiply => w.iter().map(|x| x * temperature).collect(),
        TemperatureForm::Divide => w.iter().map(|x| x / temperature).collect(),
    };
    Ok(modbal_core::stats::softmax_row(&scaled))
}

/// One epoch's inputs to the tracker: φ(m) (eq 2) and P^m(t) (eq 3), one value per modality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalEpochStats {
    /// φ(m), CAL eq 2.
    pub phi: Vec<f64>,
    /// P^m(t), the per-modality score of eq 3 (modbal: validation accuracy of modality m's logits).
    pub performance: Vec<f64>,
}

impl CalEpochStats {
    /// φ by zero-ablation at `model.head` on `eval.features` ([`marginal_contribution`]) and
    /// P^m(t) = accuracy of `eval.per_modality_logits[m]` — on the validation split's outputs.
    ///
    /// Errors: those of [`marginal_contribution`] and [`accuracy`]; per-modality logits count ≠
    /// features count.
    pub fn from_eval<M: MultimodalModel + ?Sized>(model: &M, eval: &EvalOutputs) -> Result<Self> {
        if eval.per_modality_logits.len() != eval.features.len() {
            return input_err(format!(
                "CalEpochStats::from_eval: {} per-modality logits but {} feature tensors",
                eval.per_modality_logits.len(),
                eval.features.len()
            ));
        }
        let phi = marginal_contribution(model, &eval.features, &eval.labels)?.phi;
        let performance = eval
            .per_modality_logits
            .iter()
            .map(|z| accuracy(z, &eval.labels))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { phi, performance })
    }
}

/// Everything CAL computes at one epoch (eq 1-5, 7). Serialises into `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalReport {
    /// t: the index of this update (0 for the first).
    pub epoch: usize,
    /// The W formula used.
    pub variant: CalVariant,
    /// φ(m), eq 2.
    pub phi: Vec<f64>,
    /// P^m(t), eq 3's observed score.
    pub performance: Vec<f64>,
    /// P̂^m(t), eq 3.
    pub smoothed: Vec<f64>,
    /// T^m(t, n), eq 4.
    pub trend: Vec<f64>,
    /// R^m(t, n), eq 5.
    pub potential: Vec<f64>,
    /// W(m, t), eq 1 (or the Table 5 variant).
    pub contribution: Vec<f64>,
    /// a^m, eq 7 (sums to 1).
    pub modulation: Vec<f64>,
}

/// The tracker's state between epochs (for checkpoints / best-model restore).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalState {
    /// Number of updates done so far (the t of the next update).
    pub epoch: usize,
    /// P̂ of the last ≤ n epochs, oldest first, one M-vector per epoch.
    pub smoothed_history: Vec<Vec<f64>>,
    /// The last `a` (eq 7), `None` before the first update.
    pub modulation: Option<Vec<f64>>,
}

/// Stateful CAL contribution tracker: feed one [`CalEpochStats`] per epoch (after validation),
/// read the modulation coefficients `a` for the next epoch.
#[derive(Clone, Debug)]
pub struct CalContribution {
    config: CalConfig,
    num_modalities: usize,
    state: CalState,
}

impl CalContribution {
    /// A tracker for `num_modalities ≥ 1` modalities. Errors: invalid config, zero modalities.
    pub fn new(config: CalConfig, num_modalities: usize) -> Result<Self> {
        config.validate()?;
        if num_modalities == 0 {
            return param_err("CalContribution: num_modalities must be >= 1");
        }
        Ok(Self {
            config,
            num_modalities,
            state: CalState::default(),
        })
    }

    pub fn config(&self) -> &CalConfig {
        &self.config
    }

    pub fn num_modalities(&self) -> usize {
        self.num_modalities
    }

    /// The state to checkpoint.
    pub fn state(&self) -> &CalState {
        &self.state
    }

    /// Restore a checkpointed state. History entries beyond the window are dropped (oldest
    /// first). Errors: an entry or the modulation of the wrong length or non-finite.
    pub fn load_state(&mut self, mut state: CalState) -> Result<()> {
        for (k, h) in state.smoothed_history.iter().enumerate() {
            check_values(
                h,
                self.num_modalities,
                &format!("CalContribution::load_state: smoothed_history[{k}]"),
            )?;
        }
        if let Some(a) = &state.modulation {
            check_values(
                a,
                self.num_modalities,
                "CalContribution::load_state: modulation",
            )?;
        }
        let excess = state
            .smoothed_history
            .len()
            .saturating_sub(self.config.window);
        state.smoothed_history.drain(..excess);
        self.state = state;
        Ok(())
    }

    /// The current `a` (eq 7); uniform `1/M` before the first update.
    pub fn modulation(&self) -> Vec<f64> {
        match &self.state.modulation {
            Some(a) => a.clone(),
            None => vec![1.0 / self.num_modalities as f64; self.num_modalities],
        }
    }

    /// One epoch: eq 3 (smoothing), 4 (trend), 5 (potential), 1 (W) and 7 (a).
    ///
    /// Errors: `phi` or `performance` of the wrong length (named) or non-finite.
    pub fn update(&mut self, stats: &CalEpochStats) -> Result<CalReport> {
        let m = self.num_modalities;
        check_values(&stats.phi, m, "CalContribution::update: phi")?;
        check_values(
            &stats.performance,
            m,
            "CalContribution::update: performance",
        )?;
        let c = &self.config;
        let hist = &self.state.smoothed_history;
        let (smoothed, trend) = match hist.last() {
            None => (stats.performance.clone(), vec![0.0; m]),
            Some(prev) => {
                let smoothed: Vec<f64> = (0..m)
                    .map(|k| c.gamma * stats.performance[k] + (1.0 - c.gamma) * prev[k])
                    .collect();
                let start = hist.len().saturating_sub(c.window);
                let win = &hist[start..];
                let trend = (0..m)
                    .map(|k| {
                        let base = win.iter().map(|h| h[k]).sum::<f64>() / win.len() as f64;
                        let d = base + c.epsilon;
                        if d == 0.0 {
                            0.0
                        } else {
                            (smoothed[k] - prev[k]) / d
                        }
                    })
                    .collect();
                (smoothed, trend)
            }
        };
        let potential: Vec<f64> = (0..m)
            .map(|k| c.lambda * (c.p_max - smoothed[k]) + (1.0 - c.lambda) * trend[k])
            .collect();
        let contribution: Vec<f64> = (0..m)
            .map(|k| {
                c.variant
                    .combine(stats.phi[k], potential[k], stats.performance[k])
            })
            .collect();
        let modulation = modulation_coefficients(&contribution, c.temperature, c.temperature_form)?;
        let report = CalReport {
            epoch: self.state.epoch,
            variant: c.variant,
            phi: stats.phi.clone(),
            performance: stats.performance.clone(),
            smoothed: smoothed.clone(),
            trend,
            potential,
            contribution,
            modulation: modulation.clone(),
        };
        self.state.smoothed_history.push(smoothed);
        let excess = self
            .state
            .smoothed_history
            .len()
            .saturating_sub(self.config.window);
        self.state.smoothed_history.drain(..excess);
        self.state.modulation = Some(modulation);
        self.state.epoch += 1;
        Ok(report)
    }
}
