//! # modbal-contrib: modality contribution metrics
//!
//! The quantities balancing methods compute to decide which modality to push or hold back, and
//! log so that the mechanism can be observed (every report derives `serde::Serialize`; a method
//! writes it with `ctx.log.set("…", serde_json::to_value(&report)?)` into `metrics.jsonl` under
//! `method`). This crate depends only on `modbal-core`, `modbal-tensors`, `modbal-info` and
//! candle; the methods compose it.
//!
//! | module | quantities | paper |
//! |---|---|---|
//! | [`ogm`] | scores `s_m = Σ softmax(z_m)[y]`, ρ (two-modality and `s_m / min s`), discrepancy `max s / min s` | OGM-GE eq 9-10, BalanceMM, IBML Table 4 |
//! | [`cal`] | marginal contribution φ(m) by ablation at the head, P̂, trend T, potential R, W = φ×R, a = softmax(T·W); stateful [`CalContribution`]; Table 5 variants | CAL eq 1-5, 7, Table 5 |
//! | [`arm`] | φ^MI(x^i), φ^MI(X) (hard and smooth min), φ^CMI(x^i), φ^CMI(X), fusion weights FW | ARM eq 5-13, 16 |
//! | [`ibml`] | recorder of previous-epoch predictions, ρ̃^m, ā_m, indicators 𝕀_m, Î, TCM noise probability | IBML eq 12-16, Table 4 |
//! | [`shapley`] | exact modality Shapley values (M ≤ 4) by ablation, split-level and per sample | Shapley 1953; CAL §3.1 |
//! | [`stats`] | label probabilities / log-likelihoods, accuracy (checked front of `modbal_core::stats`), feature masking | — |
//!
//! Conventions: "a modality is absent" always means its features are zeroed before
//! `MultimodalModel::head` ([`stats::mask_features`]); per-modality predictions are the
//! modality's own logits (`per_modality_logits[m]`); all logarithms are natural. Host-side
//! statistics are computed in f64; ARM's tensors stay differentiable.
//!
//! Errors: one enum, [`ContribError`] (`Param` for bad hyper-parameters, `Input` for bad data
//! — shape mismatches name the shapes —, `Candle`), convertible into
//! `modbal_core::ModbalError`.
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use modbal_contrib::ogm::ogm_scores;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Per-modality logits of two samples, two classes, labels [0, 1]: the audio head gives the
//! // label probability 0.75 on both samples, the visual head 0.5 (it has learnt nothing).
//! let ln3 = 3f64.ln();
//! let audio = Tensor::new(&[[ln3, 0.0], [0.0, ln3]], &Device::Cpu)?;
//! let visual = Tensor::zeros((2, 2), candle_core::DType::F64, &Device::Cpu)?;
//! let report = ogm_scores(&[audio, visual], &[0, 1])?;
//! // OGM-GE eq 9: s_m = Σ_i softmax(z_m,i)[y_i]; eq 10: ρ = s_audio / s_visual.
//! assert!((report.scores[0] - 1.5).abs() < 1e-12 && (report.scores[1] - 1.0).abs() < 1e-12);
//! assert!((report.pair_ratio.unwrap() - 1.5).abs() < 1e-12);
//! assert!((report.discrepancy - 1.5).abs() < 1e-12); // max / min: 1 would be balanced
//! # Ok(())
//! # }
//! ```

pub mod arm;
pub mod cal;
pub mod error;
pub mod ibml;
pub mod ogm;
pub mod shapley;
pub mod stats;

pub use arm::{ArmConfig, ArmFusionWeights, ArmMiv, ArmPairTerm, ArmPerSample, ArmReport};
pub use cal::{
    CalConfig, CalContribution, CalEpochStats, CalReport, CalState, CalVariant,
    MarginalContribution, TemperatureForm,
};
pub use error::{ContribError, Result};
pub use ibml::{IbmlConfig, IbmlRecorder, IbmlReport, SampleRecord};
pub use ogm::OgmReport;
pub use shapley::{
    ShapleyConfig, ShapleyPerSample, ShapleyReport, ShapleyValueFn, SubsetValue,
    MAX_SHAPLEY_MODALITIES,
};
