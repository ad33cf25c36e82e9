//! # modbal-modulate: gradient and input modulators
//!
//! The building blocks the balancing methods use to change *how* a multimodal model learns,
//! each usable on its own (this crate depends only on `modbal-core`, `modbal-tensors` and
//! candle). Gradient modulators act on a candle [`GradStore`](candle_core::backprop::GradStore)
//! for named parameter groups — dotted name prefixes such as `encoder.audio` or `head`
//! ([`MultimodalModel::encoder_prefix`](modbal_core::MultimodalModel::encoder_prefix)) — and
//! never touch the entries of other variables; input modulators act on a
//! [`Batch`](modbal_core::Batch).
//!
//! | item | what | paper | hook |
//! |---|---|---|---|
//! | [`OgmGe`] | `k_m = 1 − tanh(α·ρ_m)` if `ρ_m > 1` else 1 (eq 10, paper and official code; a `continuous` variant `1 − tanh(α·relu(ρ_m − 1))` is an option) and GE noise `N(0, std(g)²)` on conv kernels | OGM-GE (CVPR'22) eq 10 + GE | `modulate_grads` |
//! | [`Opm`] | drop the dominant modality's feature per sample with `q_m = q_base(1 + λ·tanh(ρ_m − 1))` if `ρ_m > 1` (executed with probability `p_exe`), rescale by `1/(1 − θ)` | OPM (TPAMI'24) | `forward` |
//! | [`CalReinforcement`] | `g ← g + a^m g` on modality m's encoder, `a = Softmax(T·W)` | CAL eq 7-8 | `modulate_grads` |
//! | [`MmPareto`] | per-encoder cosine test, two-task min-norm weights, γ-rescaled per tensor | MMPareto (ICML'24) | `backward` |
//! | [`scale_feature_grad`] | forward `f`, backward `c·∂L/∂f` (ARL's `1 + w_m`) | ARL (ICCV'25) | `forward` |
//! | [`MlaProjector`] | `P ← P − kkᵀ/(α + rk)`, `P/‖P‖_F`, `∇W ← ∇W Pᵀ` on the shared head | MLA (CVPR'24) | `train_step` |
//! | [`Tcm`] | Gaussian noise on previously-correct samples of the over-optimised modality | IBML eq 15-16 | `modulate_inputs` |
//! | [`UdiController`] | `α_k = ReLU(⟨g_cls, g_k⟩) / (Σ ReLU + ε)` | UDI eq 13-16 | `backward` |
//!
//! Every modulator has a `…Config` (serde, `Default` = the paper's or official values,
//! `validate`), a checked constructor `new(config)`, and returns a small serialisable
//! `…Report` to put under `method` in `metrics.jsonl` (e.g. `ctx.log.set("ogm",
//! serde_json::to_value(&report)?)`). Schedules use one [`ModulationWindow`] (half-open epoch
//! range), given in the epochs of the paper's schedule and scaled to the run by the methods
//! ([`ModulationWindow::scaled`]). All randomness (GE noise, TCM selection and noise) is drawn from a
//! [`SeededRng`](modbal_tensors::SeededRng) passed by the caller (normally `ctx.rng`), because
//! candle's CPU RNG cannot be seeded.
//!
//! Where the paper and the official code differ, the paper is the default and the official
//! behaviour an option; each module's docs list the differences.
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use modbal_modulate::{OgmGe, OgmGeConfig};
//! use modbal_tensors::SeededRng;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // OGM-GE eq 10 with the default α = 0.8: audio scores 1.2× visual, so ρ_audio = 1.2 > 1 and
//! // audio's gradients are scaled by k = 1 − tanh(α·ρ) = 1 − tanh(0.96); visual keeps k = 1.
//! let ogm = OgmGe::new(OgmGeConfig { ge: false, ..Default::default() })?;
//! let (rho, k) = ogm.coefficients(&[12.0, 10.0])?;
//! assert!((rho[0] - 1.2).abs() < 1e-12 && rho[1] == 1.0);
//! assert!((k[0] - (1.0 - 0.96f64.tanh())).abs() < 1e-12 && k[1] == 1.0);
//!
//! // Applied in place to the gradients of the parameter group `encoder.audio`:
//! let w = Var::from_tensor(&Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?)?;
//! let loss = (w.as_tensor() * 2.0)?.sum_all()?;
//! let mut grads = loss.backward()?;
//! let params = vec![("encoder.audio.conv.weight".to_string(), w.clone())];
//! // audio is twice as confident as visual: ρ_audio = 2 > 1, k = 1 − tanh(0.8 · 2) (eq 10).
//! let report = ogm.apply(
//!     &mut grads,
//!     &params,
//!     &["encoder.audio".into(), "encoder.visual".into()],
//!     &[20.0, 10.0],
//!     0,
//!     &mut SeededRng::new(0),
//! )?;
//! assert!((report.coefficients[0] - (1.0 - 1.6f64.tanh())).abs() < 1e-12);
//! # Ok(())
//! # }
//! ```

pub mod cal;
pub mod error;
pub mod feature_scale;
pub mod grads;
pub mod mla;
pub mod mmpareto;
pub mod ogm_ge;
pub mod opm;
pub mod tcm;
pub mod udi;
pub mod window;

pub use cal::{
    softmax_coefficients, CalReinforcement, CalReinforcementConfig, CalReinforcementReport,
};
pub use error::{ModulateError, Result};
pub use feature_scale::{arl_scale_feature, scale_feature_grad};
pub use grads::group_vars;
pub use mla::{MlaProjectionConfig, MlaProjectionReport, MlaProjector, MlaProjectorState};
pub use mmpareto::{sum_grads, MmPareto, MmParetoConfig, MmParetoReport};
/// The OGM-GE / IBML true-class score `s = Σ_i softmax(z_i)[y_i]` of one modality on a batch
/// (OGM-GE eq 9), the scores [`OgmGe::apply`] takes; defined in [`modbal_core::stats`].
pub use modbal_core::stats::true_class_score;
pub use ogm_ge::{discrepancy_ratios, OgmForm, OgmGe, OgmGeConfig, OgmGeReport, OgmScope};
pub use opm::{Opm, OpmConfig, OpmDraw, OpmReport};
pub use tcm::{Tcm, TcmConfig, TcmNoise, TcmReport};
pub use udi::{UdiController, UdiControllerConfig, UdiControllerReport};
pub use window::ModulationWindow;
