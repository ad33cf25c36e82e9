//! CAL: Contribution-Guided Asymmetric Learning (Xu, Kou, Liu, Wu; "Contribution-Guided
//! Asymmetric Learning for Robust Multimodal Fusion under Imbalance and Noise"), on the
//! [`Method`] hooks. No public code exists; every choice the paper leaves open is listed here and
//! in `docs/methods/cal.md`.
//!
//! # The three mechanisms and where they live
//!
//! | paper | what | hook | building block |
//! |---|---|---|---|
//! | eq 1-5, 7 | `φ(m)` on the validation split, `P̂`, `T`, `R`, `W = φ×R`, `a = softmax(T·W)` (T = [`DEFAULT_TEMPERATURE`] = 30) | [`Method::on_validation`] (a is used from the next epoch on) | [`modbal_contrib::cal::CalContribution`], [`CalEpochStats::from_eval`] |
//! | eq 8 | `g ← g + η·a^m·g` on `encoder.<m>` (Table 6 "Strong"; "Weak", "OGM", "None") | [`Method::modulate_grads`] | [`CalReinforcement`], [`OgmGe`] |
//! | eq 9-14 | AIB: `Z_m = MLP_m(f_m)`, Gaussian `I(Z_m; F)`, `I(Z_m; X^(m))`, `β_m = exp(−λ_c a^m)` ([`eq9_beta`]), `det_con` | [`Method::loss`], compressors stepped in [`Method::backward`] | [`gaussian_mi`] or [`shrinkage_gaussian_mi`] |
//! | eq 15 | `CE(p^f) + Σ_m CE(p^m) + λ_m·L_AIB` | [`Method::loss`] | [`cross_entropy`] |
//!
//! # AIB (eq 13), with shapes
//!
//! For modality m with encoder feature `f_m: [B, D_m]` and raw input `X^(m): [B, …]`:
//!
//! ```text
//! Z_m  = f_m + W2·relu(W1·f_m + b1) + b2                  [B, D_m]   (compressor, method-owned)
//! s_m  = β_m·I(P_z Z_m; P_t F) − I(P_z Z_m; P_x X^(m))              (variant "beta", the paper)
//! L_AIB = Σ_m softplus(−s_m) / det_con_m                   (−log σ(s) = softplus(−s))
//! ```
//!
//! * `F` is the fused representation ("the fused features are used as the compression
//!   target"): by default the fused logits `[B, C]` (the concat head's read-out of the
//!   concatenated features); `fused_target = "features"` uses the concatenation `[B, Σ D_m]`.
//! * `mi_estimator = "projected"` (default): `P_·` are fixed random projections (entries
//!   `N(0, 1/k)`, drawn once from the run's seeded RNG) applied to any operand wider than
//!   `projection_dim = k` (default 16). A plain Gaussian MI on `D_X + D_Y ≥ B` dimensions is
//!   singular (the batch is 64), and a projection is a deterministic map, so
//!   `I(P Z; P' Y) ≤ I(Z; Y)` (data processing): the estimate is a **lower bound** on the
//!   quantity the paper names, computed on `2k = 32 < B` dimensions. Minimising it — the
//!   `−I(Z; X)` term of eq 13 — therefore minimises a lower bound of `I(Z; X)`, which does not
//!   bound `I(Z; X)` from above: the information the 16 random directions miss is not
//!   penalised, and the gap does not shrink with the batch size. The raw input `X^(m)` is
//!   flattened first (a 257×188 spectrogram becomes 48 316 columns, projected to k). The MI
//!   regularises the joint covariance with shrinkage 0.1 towards its diagonal and a ridge of
//!   1e-3 × each variance (`mi_shrinkage`, `mi_ridge`): differentiable, finite and ≥ 0.
//! * `mi_estimator = "full_shrinkage"`: [`shrinkage_gaussian_mi`] on the full widths (no
//!   projection): the Gaussian MI of the joint correlation matrix shrunk towards the identity,
//!   `R̃ = (1 − λ)R + λI`, with the Schäfer–Strimmer (Ledoit–Wolf type) intensity λ estimated
//!   per batch and term ([`schafer_strimmer_lambda`], detached, floored at
//!   `mi_shrinkage_min` = 1e-3, logged as `mi_lambda_zx.<m>` / `mi_lambda_zf.<m>`). `R̃` is
//!   positive definite for any width, and when `D_X + D_Y > B` the log-determinants are taken
//!   of `B × B` matrices (determinant lemma), so a 1024-wide input costs 64 × 64
//!   factorisations. It estimates the named `I(Z; X)` itself; its bias (towards 0, from the
//!   shrinkage) vanishes as the batch grows (λ → 0), unlike the projection's gap — but at
//!   B = 64 with 1024-wide inputs (synth-av) the estimated λ of the `I(Z; X)` terms is
//!   ≈ 0.6–0.75, so the bias is large there. An option, not the default.
//! * `det_con = φ(c_m)/φ(m)` (eq 14's simplification) is measured on the validation split after
//!   each epoch, like φ: `φ(c_m)` is eq 2 with modality m's features replaced by `c_m = Z_m`
//!   (the compressors keep the feature width so that the same fusion head accepts them). Guard:
//!   `|φ(m)| < phi_floor` (default 1e-3) or a non-finite ratio gives `det_con = 1`; the ratio is
//!   then clamped to `[det_con_min, det_con_max] = [0.1, 10]` (a negative ratio thus gives 0.1).
//!   It is a per-modality weight (a constant in the graph), 1 before the first validation.
//! * The compressors are a training-only branch (predictions use the encoder features); their
//!   own AdamW (`compressor_lr` 1e-3, `compressor_weight_decay` 0.01; PyTorch defaults of the
//!   field's AdamW) is stepped in `backward` with the same `GradStore` as the model, before eq 8
//!   is applied. The AIB gradient reaches the encoders through `f_m` (and through `F`).
//!
//! # β of eq 9: the printed direction and the text's
//!
//! Eq 9 prints `β_m = exp(−λ a^m)` and eq 13 multiplies `I(Z_m; F)` by it. Inside
//! `−log σ(β I(Z;F) − I(Z;X))` the pressure on `I(Z;X)` relative to `I(Z;F)` is `1/β_m`, so
//! the **higher**-contribution modality (larger a, smaller β) is compressed **more**. The text
//! states the opposite ("high-contribution modalities retain more information with lower
//! compression rates, while low-contribution modalities are compressed more strongly").
//! modbal implements eq 9 as printed (`aib = "beta"`, the default, Table 4's best row); the
//! text's direction is `aib = "inv_beta"`, i.e. `I(Z;F)/β_m − I(Z;X)` = `β'_m I(Z;F) − I(Z;X)`
//! with `β'_m = exp(+λ a^m)` (Table 4's "1/β" row). With `a ≈ 1/M` (T = 1) neither is
//! asymmetric (β ≈ exp(∓λ/M) for every modality); at the default T = 30 the direction matters.
//!
//! # Gradient strategies (Table 6)
//!
//! * `strong` (default, eq 8): `g ← (1 + η a^m) g` on every tensor of `encoder.<m>`.
//! * `weak` ("inverted weights to strengthen the low-contribution modalities"): the same with
//!   `a_weak = softmax(−T·W)` (for two modalities exactly `a` with its entries swapped).
//! * `ogm` ("gradient subtraction to suppress the strong modality"): OGM-GE's eq 10,
//!   `k_m = 1 − tanh(α·ρ_m)` if `ρ_m > 1`, else 1 (`OgmForm::Paper`), on every tensor of
//!   `encoder.<m>`, ρ from the batch's per-modality true-class scores, no GE noise, every epoch
//!   (`ogm_alpha` = 0.8).
//! * `none` (Table 6 "None": "does not apply any gradient modulation, with fixed weights of
//!   [0.5, 0.5]"): eq 8 with the fixed `a = [1/M, …]`, i.e. `g ← (1 + η/M)·g` on every encoder
//!   (1.5 g for two modalities): the same additive form without the contribution-guided weights.
//! * `off` (not in Table 6): gradients untouched.
//!
//! # Logged per epoch (`metrics.jsonl`, train line, `method`)
//! `phi`, `P`, `P_hat`, `T`, `R`, `W`, `a`, `beta`, `det_con`, `phi_compressed` (objects keyed by
//! modality, from this epoch's validation; `a` is used from the next epoch on), `a_applied`
//! (the `a` used during this epoch), `factor.<m>` (mean gradient factor applied), `mi_zf.<m>`,
//! `mi_zx.<m>` (epoch means of the MI terms), `mi_lambda_zf.<m>`, `mi_lambda_zx.<m>` (epoch
//! means of the estimated shrinkage, `full_shrinkage` only), and the loss parts
//! `loss.ce_fused`, `loss.ce.<m>`, `loss.aib`, `loss.aib.<m>`.

use crate::params::MethodParams;
use crate::util::{option_keys, FlatKeys};
use candle_core::{backprop::GradStore, DType, Tensor, Var};
pub use modbal_contrib::cal::DEFAULT_TEMPERATURE;
use modbal_contrib::cal::{
    marginal_contribution, modulation_coefficients, CalConfig, CalContribution, CalEpochStats,
    CalState,
};
use modbal_core::stats::true_class_score;
use modbal_core::{
    Batch, EvalOutputs, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext,
};
use modbal_info::gaussian::{gaussian_mi, GaussianConfig};
use modbal_modulate::{
    CalReinforcement, CalReinforcementConfig, ModulationWindow, OgmForm, OgmGe, OgmGeConfig,
    OgmScope,
};
use modbal_tensors::{
    cross_entropy, ops::logdet, AdamW, AdamWConfig, Init, Linear, Optimizer, OptimizerState,
    ParamStore, SeededRng,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// A seed for the compressors' generator, drawn from the run's RNG: one fork (which advances
/// the run's stream by one draw), whose first uniform gives 53 bits. Kept in the method's state
/// so that a checkpoint can rebuild the same generator.
fn next_seed(rng: &mut SeededRng) -> u64 {
    let mut child = rng.fork();
    (child.uniform() * 9_007_199_254_740_992.0) as u64
}

/// Gradient modulation strategy (CAL Table 6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientStrategy {
    /// Eq 8: `g ← g + η a^m g`, favouring high-contribution modalities. The paper's method.
    #[default]
    Strong,
    /// Eq 8 with the inverted coefficients `softmax(−T·W)` (strengthens low contribution).
    Weak,
    /// OGM's subtractive suppression of the strong modality: OGM-GE eq 10,
    /// `k_m = 1 − tanh(α·ρ_m)` if `ρ_m > 1`, else 1 (`OgmForm::Paper`).
    Ogm,
    /// Table 6 "None": eq 8 with the fixed weights `a = [1/M, …]` ("fixed weights of
    /// [0.5, 0.5]"), i.e. `g ← (1 + η/M)·g` on every encoder: no *dynamic* modulation.
    None,
    /// Gradients untouched (not a Table 6 row; plain joint training with eq 15's loss).
    Off,
}

/// How the Gaussian MI terms of eq 13 are estimated (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MiEstimator {
    /// Both operands wider than `projection_dim` are multiplied by fixed random Gaussian
    /// projections, then `modbal_info::gaussian::gaussian_mi` (shrinkage `mi_shrinkage`, ridge
    /// `mi_ridge`). `I(PZ; P'X) ≤ I(Z; X)`: a lower bound of the named MI. The default.
    #[default]
    Projected,
    /// [`shrinkage_gaussian_mi`] on the full widths: Gaussian MI of the correlation matrix
    /// shrunk towards the identity with the Schäfer–Strimmer (Ledoit–Wolf type) intensity,
    /// floored at `mi_shrinkage_min`; computed through the N × N Gram matrices when the widths
    /// exceed the batch.
    FullShrinkage,
}

/// The AIB objective inside `−log σ(·)` (CAL Table 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AibVariant {
    /// "mi": `−I(Z; X)` only (minimal modality information).
    Mi,
    /// "mx": `I(Z; F)` only (maximal fused information).
    Mx,
    /// "mx&mi": `I(Z; F) − I(Z; X)`.
    MxMi,
    /// "β" (eq 13, the paper's): `β_m I(Z; F) − I(Z; X)`.
    #[default]
    Beta,
    /// "1/β": `I(Z; F)/β_m − I(Z; X)`.
    InvBeta,
}

/// What the compressed features are aligned with (the "fused representation" of eq 13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusedTarget {
    /// The fused logits `[B, C]`.
    #[default]
    Logits,
    /// The concatenated features `[B, Σ D_m]` (projected to `projection_dim`).
    Features,
}

/// Options of `cal` (`[method]` keys). `Default` = the paper's values where it gives them.
///
/// The building blocks' configs are embedded, not copied: eq 1-7's [`CalConfig`]
/// ([`Self::contribution`]) and the Gaussian MI's [`GaussianConfig`] ([`Self::mi`]) keep their
/// fields, defaults and checks in their crates, under the flat keys users write (`gamma`,
/// `temperature`, `lambda_potential`, `mi_ridge`, …: `#[serde(flatten)]` with a key mapping).
/// Unknown keys are errors that name them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CalMethodConfig {
    /// Eq 1-7 (the contribution tracker): [`CalConfig`]'s keys `gamma` (γ of eq 3), `window`
    /// (n of eq 4), `epsilon` (ε of eq 4), `p_max` (P_max of eq 5), `temperature` (T of eq 7),
    /// `temperature_form`, `variant` (eq 1 or a Table 5 row), and its `lambda` (λ of eq 5) under
    /// the key `lambda_potential`. Default [`CalConfig::default`] (the paper's values; T =
    /// [`DEFAULT_TEMPERATURE`]).
    #[serde(flatten, with = "contribution_keys")]
    pub contribution: CalConfig,
    /// λ of eq 9 (`β_m = exp(−λ a^m)`), > 0. Default 2 (§4.1 "the compression ratio parameter λ
    /// was set to 2").
    pub lambda_compression: f64,
    /// λ_m of eq 15 (weight of L_AIB), ≥ 0; 0 switches AIB off. Default 0.1 (§4.1 "the
    /// compression parameter λ_m was set to 0.1").
    pub lambda_m: f64,
    /// η of the reinforcement term (eq 8 prints η = 1 implicitly; the text names η). Default 1.
    pub eta: f64,
    /// Table 6 strategy: `strong` (default), `weak`, `ogm`, `none` (fixed a = 1/M); `off`
    /// leaves the gradients untouched.
    pub gradient: GradientStrategy,
    /// α of the `ogm` strategy ([`OgmGeConfig::alpha`]), ≥ 0. Default OGM-GE's, 0.8 (its
    /// CREMA-D value).
    pub ogm_alpha: f64,
    /// Table 4 AIB variant: `mi`, `mx`, `mx_mi`, `beta` (default), `inv_beta`.
    pub aib: AibVariant,
    /// Compression target F: `logits` (default) or `features`.
    pub fused_target: FusedTarget,
    /// Hidden width of each compressor MLP `D_m → h → D_m`, ≥ 1. Default 64 (not in the paper).
    pub compressor_hidden: usize,
    /// k: operands of the Gaussian MI wider than k are randomly projected to k columns, ≥ 1.
    /// Default 16 (see the module docs).
    pub projection_dim: usize,
    /// Estimator of the MI terms of eq 13: `projected` (default) or `full_shrinkage`.
    pub mi_estimator: MiEstimator,
    /// Regularisation of the `projected` estimator's Gaussian covariance ([`GaussianConfig`]):
    /// key `mi_ridge` (ridge, multiple of each variance, ≥ 0) and `mi_shrinkage` (shrinkage
    /// towards the diagonal, in [0, 1]). Default ridge 1e-3, shrinkage 0.1 (CAL's, not
    /// [`GaussianConfig::default`]).
    #[serde(flatten, with = "mi_keys")]
    pub mi: GaussianConfig,
    /// Lower bound of the estimated shrinkage intensity of `full_shrinkage`, in (0, 1].
    /// Default 1e-3 (keeps the Gram route defined when the data call for no shrinkage).
    pub mi_shrinkage_min: f64,
    /// `|φ(m)|` below this gives `det_con = 1`, ≥ 0. Default 1e-3.
    pub phi_floor: f64,
    /// Lower clamp of det_con, > 0. Default 0.1.
    pub det_con_min: f64,
    /// Upper clamp of det_con, ≥ det_con_min. Default 10.
    pub det_con_max: f64,
    /// Learning rate of the compressors' AdamW, > 0. Default [`AdamWConfig`]'s, 1e-3.
    pub compressor_lr: f64,
    /// Weight decay of the compressors' AdamW, ≥ 0. Default [`AdamWConfig`]'s, 0.01.
    pub compressor_weight_decay: f64,
}

impl Default for CalMethodConfig {
    fn default() -> Self {
        let adamw = AdamWConfig::default();
        Self {
            contribution: CalConfig::default(),
            lambda_compression: 2.0,
            lambda_m: 0.1,
            eta: 1.0,
            gradient: GradientStrategy::Strong,
            ogm_alpha: OgmGeConfig::default().alpha,
            aib: AibVariant::Beta,
            fused_target: FusedTarget::Logits,
            compressor_hidden: 64,
            projection_dim: 16,
            mi_estimator: MiEstimator::Projected,
            mi: GaussianConfig {
                ridge: 1e-3,
                shrinkage: 0.1,
            },
            mi_shrinkage_min: 1e-3,
            phi_floor: 1e-3,
            det_con_min: 0.1,
            det_con_max: 10.0,
            compressor_lr: adamw.lr,
            compressor_weight_decay: adamw.weight_decay,
        }
    }
}

/// [`CalMethodConfig::contribution`]'s keys: [`CalConfig`]'s field names, `lambda` renamed.
const CONTRIBUTION_KEYS: FlatKeys = FlatKeys {
    prefix: "",
    renames: &[("lambda", "lambda_potential")],
};

/// [`CalMethodConfig::mi`]'s keys: [`GaussianConfig`]'s field names with the prefix `mi_`.
const MI_KEYS: FlatKeys = FlatKeys {
    prefix: "mi_",
    renames: &[],
};

/// `serde(with)` of [`CalMethodConfig::contribution`].
mod contribution_keys {
    use super::{option_keys, CalConfig, CalMethodConfig, CONTRIBUTION_KEYS};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &CalConfig, s: S) -> Result<S::Ok, S::Error> {
        CONTRIBUTION_KEYS.serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CalConfig, D::Error> {
        let default = CalMethodConfig::default();
        CONTRIBUTION_KEYS.deserialize(d, &default.contribution, &option_keys(&default))
    }
}

/// `serde(with)` of [`CalMethodConfig::mi`].
mod mi_keys {
    use super::{option_keys, CalMethodConfig, GaussianConfig, MI_KEYS};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &GaussianConfig, s: S) -> Result<S::Ok, S::Error> {
        MI_KEYS.serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<GaussianConfig, D::Error> {
        let default = CalMethodConfig::default();
        MI_KEYS.deserialize(d, &default.mi, &option_keys(&default))
    }
}

fn cfg_err<T>(msg: String) -> Result<T> {
    Err(ModbalError::Config(format!("method cal: {msg}")))
}

impl CalMethodConfig {
    fn ogm(&self) -> OgmGeConfig {
        OgmGeConfig {
            alpha: self.ogm_alpha,
            form: OgmForm::Paper,
            scope: OgmScope::AllEncoder,
            ge: false,
            window: ModulationWindow {
                start: 0,
                end: 1_000_000,
            },
        }
    }

    /// Checks every value; errors name the key.
    pub fn validate(&self) -> Result<()> {
        // γ, n, ε, λ_potential, P_max, T (messages name `cal.gamma`, …).
        if let Err(e) = self.contribution.validate() {
            let msg = e
                .to_string()
                .replace("cal.lambda", "lambda_potential")
                .replace("cal.", "");
            return cfg_err(msg);
        }
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if !finite_pos(self.lambda_compression) {
            return cfg_err(format!(
                "lambda_compression must be finite and > 0, got {}",
                self.lambda_compression
            ));
        }
        for (k, v) in [
            ("lambda_m", self.lambda_m),
            ("eta", self.eta),
            ("ogm_alpha", self.ogm_alpha),
            ("mi_ridge", self.mi.ridge),
            ("phi_floor", self.phi_floor),
            ("compressor_weight_decay", self.compressor_weight_decay),
        ] {
            if !finite_nonneg(v) {
                return cfg_err(format!("{k} must be finite and >= 0, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.mi.shrinkage) {
            return cfg_err(format!(
                "mi_shrinkage must be in [0, 1], got {}",
                self.mi.shrinkage
            ));
        }
        if !(self.mi_shrinkage_min > 0.0 && self.mi_shrinkage_min <= 1.0) {
            return cfg_err(format!(
                "mi_shrinkage_min must be in (0, 1], got {}",
                self.mi_shrinkage_min
            ));
        }
        if !finite_pos(self.compressor_lr) {
            return cfg_err(format!(
                "compressor_lr must be finite and > 0, got {}",
                self.compressor_lr
            ));
        }
        if self.compressor_hidden == 0 {
            return cfg_err("compressor_hidden must be >= 1, got 0".into());
        }
        if self.projection_dim == 0 {
            return cfg_err("projection_dim must be >= 1, got 0".into());
        }
        if !(finite_pos(self.det_con_min)
            && self.det_con_max.is_finite()
            && self.det_con_max >= self.det_con_min)
        {
            return cfg_err(format!(
                "det_con_min must be > 0 and det_con_max >= det_con_min, got [{}, {}]",
                self.det_con_min, self.det_con_max
            ));
        }
        Ok(())
    }
}

/// Per-modality compressors, the fixed projections and their optimizer.
struct Compressors {
    store: ParamStore,
    /// `(fc1, fc2)` per modality.
    mlps: Vec<(Linear, Linear)>,
    /// Projection of Z_m (`[D_m, k]`) when `D_m > k`.
    proj_z: Vec<Option<Tensor>>,
    /// Projection of the flattened raw input X^(m) when wider than k.
    proj_x: Vec<Option<Tensor>>,
    /// Projection of the fused target when wider than k.
    proj_t: Option<Tensor>,
    opt: AdamW,
}

/// A fixed `[d, k]` Gaussian projection with entries `N(0, 1/k)` when `d > k`.
fn projection(d: usize, k: usize, rng: &mut SeededRng, dtype: DType) -> Result<Option<Tensor>> {
    if d <= k {
        return Ok(None);
    }
    let v = rng.normal_vec(d * k, 0.0, 1.0 / (k as f64).sqrt());
    Ok(Some(
        Tensor::from_vec(v, (d, k), &candle_core::Device::Cpu)?.to_dtype(dtype)?,
    ))
}

fn project(x: &Tensor, p: &Option<Tensor>) -> Result<Tensor> {
    Ok(match p {
        Some(p) => x.matmul(&p.to_device(x.device())?)?,
        None => x.clone(),
    })
}

/// The compressed features `c_m = Z_m = f + fc2(relu(fc1 f))`, `[B, D_m] → [B, D_m]`.
fn compress(mlp: &(Linear, Linear), f: &Tensor) -> Result<Tensor> {
    let (fc1, fc2) = mlp;
    Ok((f + fc2.forward(&fc1.forward(f)?.relu()?)?)?)
}

/// Eq 9 as printed: `β_m = exp(−λ·a^m)`. It multiplies `I(Z_m; F)` inside eq 13, so a larger
/// `a^m` gives a smaller β_m, i.e. relatively *more* weight on `−I(Z_m; X)`: more compression of
/// the higher-contribution modality (the text says the opposite; `aib = "inv_beta"` is the
/// text's direction, see the module docs).
pub fn eq9_beta(lambda: f64, a: f64) -> f64 {
    (-lambda * a).exp()
}

/// `−log σ(s) = softplus(−s) = relu(−s) + log(1 + exp(−|s|))`, stable for any s.
fn neg_log_sigmoid(s: &Tensor) -> Result<Tensor> {
    let ns = s.neg()?;
    Ok((ns.relu()? + (s.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// The result of [`shrinkage_gaussian_mi`].
#[derive(Clone, Debug)]
pub struct ShrinkageMi {
    /// `I(X; Y)` in nats, a scalar tensor of the inputs' dtype (differentiable).
    pub mi: Tensor,
    /// The shrinkage intensity λ used.
    pub lambda: f64,
}

/// `[N, D]` (or `[N]`) float → `[N, D]` f64 (differentiable), with the name in errors.
fn as_f64_matrix(x: &Tensor, what: &str) -> Result<Tensor> {
    let x = modbal_info::gaussian::float_matrix(x, &format!("shrinkage_gaussian_mi: {what}"))?;
    Ok(x.to_dtype(DType::F64)?)
}

/// Columns centred and divided by their standard deviation (`N − 1` normaliser), `[N, D]`.
/// A constant column stays (numerically) zero: its standard deviation is floored at
/// `1e-6 ×` the root of the mean variance, so it adds λ to the diagonal of both `R̃_X` and
/// `R̃_{XY}` and cancels in the MI.
fn standardise(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)? as f64;
    let xc = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let var = (xc.sqr()?.sum_keepdim(0)? / (n - 1.0))?;
    let mean_var = var.detach().mean_all()?.to_scalar::<f64>()?;
    let floor = f64::max(1e-12 * mean_var, 1e-300);
    Ok(xc.broadcast_div(&var.clamp(floor, f64::INFINITY)?.sqrt()?)?)
}

/// The Schäfer–Strimmer shrinkage intensity towards the identity for the correlation matrix
/// of standardised data `u: [N, D]` (Schäfer & Strimmer 2005, target "D", the Ledoit–Wolf
/// construction on correlations):
///
/// ```text
/// λ* = Σ_{i≠j} Var̂(r_ij) / Σ_{i≠j} r_ij²,   Var̂(r_ij) = N/(N−1)³ Σ_k (w_kij − w̄_ij)²,
/// w_kij = u_ki u_kj,  r_ij = Σ_k w_kij/(N−1),  clamped to [0, 1]
/// ```
///
/// evaluated without any `D × D` matrix when `D > N`: with the Gram matrix `K = U Uᵀ`,
/// `Σ_ij r_ij² = ‖K‖²_F/(N−1)²` and `Σ_ij Σ_k (w_kij − w̄_ij)² = Σ_k K_kk² − ‖K‖²_F/N`; the
/// diagonal terms (`i = j`) are subtracted from both sums. Detached (a plug-in estimate).
pub fn schafer_strimmer_lambda(u: &Tensor) -> Result<f64> {
    let u = u.detach().to_dtype(DType::F64)?;
    let (n, d) = u.dims2()?;
    if n < 2 {
        return Err(ModbalError::Data(format!(
            "schafer_strimmer_lambda: needs at least 2 samples, got {n}"
        )));
    }
    let nf = n as f64;
    let u2 = u.sqr()?;
    let f = |t: Tensor| -> Result<f64> { Ok(t.to_scalar::<f64>()?) };
    // Σ_k K_kk² with K_kk = ‖u_k‖².
    let s_row = f(u2.sum(1)?.sqr()?.sum_all()?)?;
    // Σ_{k,i} u_ki⁴.
    let s4 = f(u2.sqr()?.sum_all()?)?;
    // r_ii and Σ_i r_ii².
    let rii2 = f((u2.sum(0)? / (nf - 1.0))?.sqr()?.sum_all()?)?;
    // ‖UᵀU‖²_F = ‖UUᵀ‖²_F from the smaller of the two Gram matrices.
    let gram = if d <= n {
        u.t()?.matmul(&u)?
    } else {
        u.matmul(&u.t()?)?
    };
    let fk = f(gram.sqr()?.sum_all()?)?;
    let off_r2 = fk / ((nf - 1.0) * (nf - 1.0)) - rii2;
    let all_var = s_row - fk / nf;
    let diag_var = s4 - (nf - 1.0) * (nf - 1.0) / nf * rii2;
    let off_var = nf / (nf - 1.0).powi(3) * (all_var - diag_var);
    Ok(if off_r2 > 0.0 && off_var.is_finite() {
        (off_var / off_r2).clamp(0.0, 1.0)
    } else {
        1.0
    })
}

/// Gaussian mutual information (CAL eq 10-12) on the **full** widths of `x: [N, D_X]` and
/// `y: [N, D_Y]`, with the joint correlation matrix shrunk towards the identity:
///
/// ```text
/// R̃ = (1 − λ)·R + λ·I,   R = UᵀU/(N − 1),  U = [U_X, U_Y] the standardised columns
/// I(X; Y) = ½ (log det R̃_X + log det R̃_Y − log det R̃)        (R̃_X, R̃_Y its diagonal blocks)
/// ```
///
/// This is `modbal_info::gaussian::gaussian_mi` with `shrinkage = λ`, `ridge = 0` (shrinking
/// the covariance towards its diagonal is shrinking the correlation towards I), ≥ 0 by
/// Fischer's inequality. `lambda = Some(λ)` fixes the intensity (λ ∈ [0, 1]; λ > 0 when
/// `D_X + D_Y > N`); `None` estimates it with [`schafer_strimmer_lambda`] on `U` and floors it
/// at `lambda_min`. When `D_X + D_Y ≤ N` the `D × D` blocks are factorised; otherwise, by the
/// matrix determinant lemma (`det(λI_D + c·UᵀU) = λ^D det(I_N + (c/λ)·UUᵀ)`, the λ^D
/// factors cancel),
///
/// ```text
/// I = ½ (log det(I_N + s K_X) + log det(I_N + s K_Y) − log det(I_N + s (K_X + K_Y))),
/// K = U Uᵀ,  s = (1 − λ)/(λ (N − 1))
/// ```
///
/// so a 1024-wide raw input costs `N × N` factorisations. Computed in f64; differentiable in
/// both inputs (λ is a constant of the graph); the result has the dtype of `x`.
pub fn shrinkage_gaussian_mi(
    x: &Tensor,
    y: &Tensor,
    lambda: Option<f64>,
    lambda_min: f64,
) -> Result<ShrinkageMi> {
    let x64 = as_f64_matrix(x, "x")?;
    let y64 = as_f64_matrix(y, "y")?;
    let (n, dx) = x64.dims2()?;
    let (ny, dy) = y64.dims2()?;
    if n != ny || n < 2 || dx == 0 || dy == 0 {
        return Err(ModbalError::Data(format!(
            "shrinkage_gaussian_mi: x {:?} and y {:?} need the same N >= 2 and >= 1 column each",
            x64.dims(),
            y64.dims()
        )));
    }
    let ux = standardise(&x64)?;
    let uy = standardise(&y64)?;
    let gram_route = dx + dy > n;
    let lambda = match lambda {
        Some(l) => l,
        None => schafer_strimmer_lambda(&Tensor::cat(&[&ux, &uy], 1)?)?.max(lambda_min),
    };
    if !((0.0..=1.0).contains(&lambda) && (lambda > 0.0 || !gram_route)) {
        return Err(ModbalError::Data(format!(
            "shrinkage_gaussian_mi: lambda must be in (0, 1] (in [0, 1] when D_X + D_Y <= N), \
             got {lambda}"
        )));
    }
    let dev = x64.device();
    let named = |a: &Tensor, what: &str| -> Result<Tensor> {
        logdet(a).map_err(|e| {
            ModbalError::Data(format!("shrinkage_gaussian_mi: log det of {what}: {e}"))
        })
    };
    let mi = if !gram_route {
        let u = Tensor::cat(&[&ux, &uy], 1)?;
        let d = dx + dy;
        let r = (u.t()?.matmul(&u)? / (n as f64 - 1.0))?;
        let eye = Tensor::eye(d, DType::F64, dev)?;
        let rt = ((r * (1.0 - lambda))? + (eye * lambda)?)?;
        let lx = named(&rt.narrow(0, 0, dx)?.narrow(1, 0, dx)?, "R_X")?;
        let ly = named(&rt.narrow(0, dx, dy)?.narrow(1, dx, dy)?, "R_Y")?;
        let lz = named(&rt, "R_XY")?;
        (((lx + ly)? - lz)? * 0.5)?
    } else {
        let s = (1.0 - lambda) / (lambda * (n as f64 - 1.0));
        let kx = (ux.matmul(&ux.t()?)? * s)?;
        let ky = (uy.matmul(&uy.t()?)? * s)?;
        let eye = Tensor::eye(n, DType::F64, dev)?;
        let lx = named(&(&eye + &kx)?, "I + sK_X")?;
        let ly = named(&(&eye + &ky)?, "I + sK_Y")?;
        let lz = named(&((&eye + &kx)? + &ky)?, "I + s(K_X + K_Y)")?;
        (((lx + ly)? - lz)? * 0.5)?
    };
    Ok(ShrinkageMi {
        mi: mi.to_dtype(x.dtype())?,
        lambda,
    })
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A tensor as JSON `{shape, data}` (f64 values; f32 round-trips exactly).
fn tensor_json(t: &Tensor) -> Result<serde_json::Value> {
    Ok(json!({
        "shape": t.dims(),
        "data": t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
    }))
}

fn json_tensor(v: &serde_json::Value, dtype: DType, what: &str) -> Result<Tensor> {
    let shape: Vec<usize> = serde_json::from_value(v["shape"].clone())
        .map_err(|e| ModbalError::Data(format!("cal state {what}: shape: {e}")))?;
    let data: Vec<f64> = serde_json::from_value(v["data"].clone())
        .map_err(|e| ModbalError::Data(format!("cal state {what}: data: {e}")))?;
    if shape.iter().product::<usize>() != data.len() {
        return Err(ModbalError::Data(format!(
            "cal state {what}: {} values for shape {shape:?}",
            data.len()
        )));
    }
    Ok(Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?.to_dtype(dtype)?)
}

/// The CAL method; see the [module docs](self).
pub struct Cal {
    cfg: CalMethodConfig,
    reinforce: CalReinforcement,
    ogm: OgmGe,
    tracker: Option<CalContribution>,
    /// Current `a` (eq 7), empty = uniform (before the first validation).
    a: Vec<f64>,
    /// Current `softmax(−T·W)` (the "weak" strategy's coefficients), empty = uniform.
    a_weak: Vec<f64>,
    /// det_con per modality (1 before the first validation).
    det_con: Vec<f64>,
    /// Seed of the compressors' initial weights and projections (drawn from the run's RNG).
    init_seed: Option<u64>,
    comp: Option<Compressors>,
    /// Compressor weights / optimizer state from `load_state`, applied when they are built.
    pending: Option<serde_json::Value>,
}

impl std::fmt::Debug for Cal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cal")
            .field("cfg", &self.cfg)
            .field("a", &self.a)
            .field("det_con", &self.det_con)
            .finish()
    }
}

impl Cal {
    /// A CAL method with a validated configuration.
    pub fn new(cfg: CalMethodConfig) -> Result<Self> {
        cfg.validate()?;
        let reinforce = CalReinforcement::new(CalReinforcementConfig { eta: cfg.eta })?;
        let ogm = OgmGe::new(cfg.ogm())?;
        Ok(Self {
            cfg,
            reinforce,
            ogm,
            tracker: None,
            a: Vec::new(),
            a_weak: Vec::new(),
            det_con: Vec::new(),
            init_seed: None,
            comp: None,
            pending: None,
        })
    }

    pub fn config(&self) -> &CalMethodConfig {
        &self.cfg
    }

    /// The current modulation coefficients `a` for `m` modalities (uniform before the first
    /// validation).
    pub fn modulation(&self, m: usize) -> Vec<f64> {
        if self.a.len() == m {
            self.a.clone()
        } else {
            vec![1.0 / m as f64; m]
        }
    }

    /// Set `a` by hand (tests, analyses). The next validation overwrites it.
    pub fn set_modulation(&mut self, a: Vec<f64>) {
        self.a = a;
    }

    /// The compressors' trainable variables (empty before the first training batch).
    pub fn compressor_params(&self) -> Vec<(String, Var)> {
        self.comp
            .as_ref()
            .map(|c| c.store.trainable())
            .unwrap_or_default()
    }

    fn tracker(&mut self, m: usize) -> Result<&mut CalContribution> {
        if self.tracker.is_none() {
            self.tracker = Some(CalContribution::new(self.cfg.contribution.clone(), m)?);
        }
        Ok(self.tracker.as_mut().expect("just built"))
    }

    fn det_con(&self, m: usize) -> Vec<f64> {
        if self.det_con.len() == m {
            self.det_con.clone()
        } else {
            vec![1.0; m]
        }
    }

    /// The fused target F of eq 13, `[B, d]`.
    fn target(&self, out: &MultimodalOutput) -> Result<Tensor> {
        Ok(match self.cfg.fused_target {
            FusedTarget::Logits => out.fused_logits.clone(),
            FusedTarget::Features => Tensor::cat(&out.features, 1)?,
        })
    }

    /// Build the compressors (once) from the first batch's shapes.
    fn ensure_compressors(
        &mut self,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<()> {
        if self.comp.is_some() {
            return Ok(());
        }
        let seed = match self.init_seed {
            Some(s) => s,
            None => {
                let s = next_seed(&mut ctx.rng);
                self.init_seed = Some(s);
                s
            }
        };
        let mut rng = SeededRng::new(seed);
        let k = self.cfg.projection_dim;
        let dtype = out.features[0].dtype();
        let device = out.features[0].device().clone();
        let store = ParamStore::new();
        let root = store.root(dtype, &device).pp("compressor");
        let mut mlps = Vec::new();
        let mut proj_z = Vec::new();
        let mut proj_x = Vec::new();
        for (m, f) in out.features.iter().enumerate() {
            let d = f.dim(1)?;
            let pb = root.pp(format!("m{m}"));
            let fc1 = Linear::new(&pb.pp("fc1"), d, self.cfg.compressor_hidden, &mut rng)?;
            // Zero-initialised residual branch: c_m = f_m + fc2(relu(fc1 f_m)) starts as the
            // identity on the features (det_con = 1, φ(c_m) = φ(m)) and learns what to remove.
            let fc2 = Linear::with_init(
                &pb.pp("fc2"),
                self.cfg.compressor_hidden,
                d,
                Init::Const(0.0),
                true,
                &mut rng,
            )?;
            mlps.push((fc1, fc2));
            proj_z.push(projection(d, k, &mut rng, dtype)?);
            let dx = batch.inputs[m].elem_count() / batch.len().max(1);
            proj_x.push(projection(dx, k, &mut rng, dtype)?);
        }
        let dt = self.target(out)?.dim(1)?;
        let proj_t = projection(dt, k, &mut rng, dtype)?;
        let opt = AdamW::new(
            store.trainable(),
            AdamWConfig {
                lr: self.cfg.compressor_lr,
                weight_decay: self.cfg.compressor_weight_decay,
                ..Default::default()
            },
        );
        let mut comp = Compressors {
            store,
            mlps,
            proj_z,
            proj_x,
            proj_t,
            opt,
        };
        if let Some(p) = self.pending.take() {
            load_compressors(&mut comp, &p)?;
        }
        self.comp = Some(comp);
        Ok(())
    }

    /// L_AIB of eq 13 (scalar), with the per-modality terms for logging.
    fn aib(
        &self,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
        names: &[String],
        parts: &mut BTreeMap<String, Tensor>,
    ) -> Result<Tensor> {
        let comp = self.comp.as_ref().expect("compressors built before aib");
        let n_mod = out.features.len();
        let a = self.modulation(n_mod);
        let det = self.det_con(n_mod);
        let g = self.cfg.mi.clone();
        let target = self.target(out)?;
        // One MI term of eq 13 by the configured estimator; logs the shrinkage λ of
        // `full_shrinkage` under `key`.
        let mut mi = |z: &Tensor,
                      pz: &Option<Tensor>,
                      y: &Tensor,
                      py: &Option<Tensor>,
                      key: String|
         -> Result<Tensor> {
            match self.cfg.mi_estimator {
                MiEstimator::Projected => Ok(gaussian_mi(&project(z, pz)?, &project(y, py)?, &g)?),
                MiEstimator::FullShrinkage => {
                    let r = shrinkage_gaussian_mi(z, y, None, self.cfg.mi_shrinkage_min)?;
                    ctx.log.add_mean(key, r.lambda);
                    Ok(r.mi)
                }
            }
        };
        let mut terms = Vec::with_capacity(n_mod);
        for m in 0..n_mod {
            let z = compress(&comp.mlps[m], &out.features[m])?;
            let need_f = self.cfg.aib != AibVariant::Mi;
            let need_x = self.cfg.aib != AibVariant::Mx;
            let i_zf = if need_f {
                let key = format!("mi_lambda_zf.{}", names[m]);
                Some(mi(&z, &comp.proj_z[m], &target, &comp.proj_t, key)?)
            } else {
                None
            };
            let i_zx = if need_x {
                let x = batch.inputs[m]
                    .flatten_from(1)?
                    .to_dtype(z.dtype())?
                    .detach();
                let key = format!("mi_lambda_zx.{}", names[m]);
                Some(mi(&z, &comp.proj_z[m], &x, &comp.proj_x[m], key)?)
            } else {
                None
            };
            terms.push((i_zf, i_zx));
        }
        let mut total: Option<Tensor> = None;
        for (m, (i_zf, i_zx)) in terms.into_iter().enumerate() {
            let beta = eq9_beta(self.cfg.lambda_compression, a[m]);
            let s = match (self.cfg.aib, &i_zf, &i_zx) {
                (AibVariant::Mi, _, Some(x)) => x.neg()?,
                (AibVariant::Mx, Some(f), _) => f.clone(),
                (AibVariant::MxMi, Some(f), Some(x)) => (f - x)?,
                (AibVariant::Beta, Some(f), Some(x)) => ((f * beta)? - x)?,
                (AibVariant::InvBeta, Some(f), Some(x)) => ((f / beta)? - x)?,
                _ => unreachable!("the needed MI terms are computed above"),
            };
            if let Some(f) = &i_zf {
                ctx.log.add_mean(format!("mi_zf.{}", names[m]), scalar(f)?);
            }
            if let Some(x) = &i_zx {
                ctx.log.add_mean(format!("mi_zx.{}", names[m]), scalar(x)?);
            }
            let l = (neg_log_sigmoid(&s)? / det[m])?;
            parts.insert(format!("aib.{}", names[m]), l.detach());
            total = Some(match total {
                None => l,
                Some(t) => (t + l)?,
            });
        }
        Ok(total.expect("at least one modality"))
    }

    fn compressors_json(&self) -> Result<serde_json::Value> {
        let Some(comp) = &self.comp else {
            return Ok(self.pending.clone().unwrap_or(serde_json::Value::Null));
        };
        let mut weights = serde_json::Map::new();
        for (n, v) in comp.store.all() {
            weights.insert(n, tensor_json(v.as_tensor())?);
        }
        let st = comp.opt.state();
        let mut moments = serde_json::Map::new();
        for (n, t) in &st.tensors {
            moments.insert(n.clone(), tensor_json(t)?);
        }
        Ok(json!({
            "weights": weights,
            "optimizer": {"kind": st.kind, "steps": st.steps, "tensors": moments},
        }))
    }
}

fn load_compressors(comp: &mut Compressors, v: &serde_json::Value) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    let dtype = comp
        .store
        .all()
        .first()
        .map(|(_, v)| v.dtype())
        .unwrap_or(DType::F32);
    let mut map = std::collections::HashMap::new();
    if let Some(w) = v["weights"].as_object() {
        for (n, t) in w {
            map.insert(n.clone(), json_tensor(t, dtype, n)?);
        }
    }
    comp.store
        .restore(&map)
        .map_err(|e| ModbalError::Data(format!("cal state: compressors: {e}")))?;
    let o = &v["optimizer"];
    if !o.is_null() {
        let steps: BTreeMap<String, u64> = serde_json::from_value(o["steps"].clone())?;
        let mut tensors = BTreeMap::new();
        if let Some(t) = o["tensors"].as_object() {
            for (n, x) in t {
                tensors.insert(n.clone(), json_tensor(x, dtype, n)?);
            }
        }
        comp.opt.load_state(&OptimizerState {
            kind: o["kind"].as_str().unwrap_or("adamw").to_string(),
            steps,
            tensors,
        })?;
    }
    Ok(())
}

/// Values per modality as a JSON object keyed by modality name.
fn by_name(names: &[String], v: &[f64]) -> serde_json::Value {
    serde_json::Value::Object(
        names
            .iter()
            .zip(v)
            .map(|(n, x)| (n.clone(), json!(x)))
            .collect(),
    )
}

impl Method for Cal {
    fn name(&self) -> &str {
        "cal"
    }

    fn on_stage_start(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        // The compressors' weights come from a fork of the run's RNG, drawn here (a fixed point
        // of the run), and are built at the first batch, when the feature and input widths are
        // known (the `MultimodalModel` trait does not expose them).
        if self.init_seed.is_none() && self.cfg.lambda_m > 0.0 {
            self.init_seed = Some(next_seed(&mut ctx.rng));
        }
        Ok(())
    }

    fn on_epoch_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let names = model.modalities();
        let a = self.modulation(names.len());
        ctx.log.set("a_applied", by_name(names, &a));
        Ok(())
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        let names = model.modalities().to_vec();
        let mut parts = BTreeMap::new();
        let ce_f = cross_entropy(&out.fused_logits, &batch.labels)?;
        parts.insert("ce_fused".to_string(), ce_f.detach());
        let mut total = ce_f;
        for (m, z) in out.per_modality_logits.iter().enumerate() {
            let ce = cross_entropy(z, &batch.labels)?;
            parts.insert(format!("ce.{}", names[m]), ce.detach());
            total = (total + ce)?;
        }
        // A Gaussian MI needs at least 2 samples: a 1-sample batch gets no AIB term.
        if self.cfg.lambda_m > 0.0 && batch.len() >= 2 {
            self.ensure_compressors(batch, out, ctx)?;
            let aib = self.aib(batch, out, ctx, &names, &mut parts)?;
            parts.insert("aib".to_string(), aib.clone());
            total = (total + (aib * self.cfg.lambda_m)?)?;
        }
        Ok(LossTerms { total, parts })
    }

    fn backward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        loss: &LossTerms,
        ctx: &mut RunContext,
    ) -> Result<GradStore> {
        let mut grads = loss.total.backward()?;
        if let Some(c) = self.comp.as_mut() {
            c.opt.step(&grads)?;
            for (_, v) in c.store.trainable() {
                grads.remove(v.as_tensor());
            }
        }
        self.modulate_grads(&mut grads, model, batch, out, ctx)?;
        Ok(grads)
    }

    fn modulate_grads(
        &mut self,
        grads: &mut GradStore,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<()> {
        let names = model.modalities();
        let n_mod = names.len();
        let groups: Vec<String> = (0..n_mod).map(|m| model.encoder_prefix(m)).collect();
        let factors = match self.cfg.gradient {
            GradientStrategy::Off => vec![1.0; n_mod],
            GradientStrategy::Strong | GradientStrategy::Weak | GradientStrategy::None => {
                let uniform = vec![1.0 / n_mod as f64; n_mod];
                let a = match self.cfg.gradient {
                    GradientStrategy::Strong => self.modulation(n_mod),
                    GradientStrategy::Weak if self.a_weak.len() == n_mod => self.a_weak.clone(),
                    _ => uniform,
                };
                let params = model.params().trainable();
                self.reinforce.apply(grads, &params, &groups, &a)?.factors
            }
            GradientStrategy::Ogm => {
                let scores = out
                    .per_modality_logits
                    .iter()
                    .map(|z| true_class_score(z, &batch.labels))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let params = model.params().trainable();
                self.ogm
                    .apply(grads, &params, &groups, &scores, ctx.epoch, &mut ctx.rng)?
                    .coefficients
            }
        };
        for (n, f) in names.iter().zip(&factors) {
            ctx.log.add_mean(format!("factor.{n}"), *f);
        }
        Ok(())
    }

    fn on_validation(
        &mut self,
        model: &dyn MultimodalModel,
        val: &EvalOutputs,
        ctx: &mut RunContext,
    ) -> Result<()> {
        let names = model.modalities().to_vec();
        let n_mod = names.len();
        let stats = CalEpochStats::from_eval(model, val)?;
        let report = self.tracker(n_mod)?.update(&stats)?;
        let neg_w: Vec<f64> = report.contribution.iter().map(|w| -w).collect();
        self.a_weak = modulation_coefficients(
            &neg_w,
            self.cfg.contribution.temperature,
            self.cfg.contribution.temperature_form,
        )?;
        self.a = report.modulation.clone();
        // det_con = φ(c_m)/φ(m) on the validation split (eq 14), guarded (module docs).
        let mut det = vec![1.0; n_mod];
        let mut phi_c = vec![f64::NAN; n_mod];
        if let Some(comp) = &self.comp {
            for m in 0..n_mod {
                let f = val.features[m].to_device(comp.mlps[m].0.weight.device())?;
                let c = compress(&comp.mlps[m], &f.detach())?.detach();
                let mut feats = val.features.clone();
                feats[m] = c.to_device(val.features[m].device())?;
                let pc = marginal_contribution(model, &feats, &val.labels)?.phi[m];
                phi_c[m] = pc;
                let p = stats.phi[m];
                let r = pc / p;
                det[m] = if p.abs() < self.cfg.phi_floor || !r.is_finite() {
                    1.0
                } else {
                    r.clamp(self.cfg.det_con_min, self.cfg.det_con_max)
                };
            }
            self.det_con = det.clone();
        }
        let beta: Vec<f64> = self
            .a
            .iter()
            .map(|a| eq9_beta(self.cfg.lambda_compression, *a))
            .collect();
        let log = &mut ctx.log;
        log.set("phi", by_name(&names, &report.phi));
        log.set("P", by_name(&names, &report.performance));
        log.set("P_hat", by_name(&names, &report.smoothed));
        log.set("T", by_name(&names, &report.trend));
        log.set("R", by_name(&names, &report.potential));
        log.set("W", by_name(&names, &report.contribution));
        log.set("a", by_name(&names, &report.modulation));
        log.set("beta", by_name(&names, &beta));
        log.set("det_con", by_name(&names, &det));
        if self.comp.is_some() {
            log.set("phi_compressed", by_name(&names, &phi_c));
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        json!({
            "tracker": self.tracker.as_ref().map(|t| t.state().clone()),
            "a": self.a,
            "a_weak": self.a_weak,
            "det_con": self.det_con,
            "init_seed": self.init_seed,
            "compressors": self.compressors_json().unwrap_or(serde_json::Value::Null),
        })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() {
            return Ok(());
        }
        let vec = |k: &str| -> Result<Vec<f64>> {
            match &state[k] {
                serde_json::Value::Null => Ok(Vec::new()),
                v => serde_json::from_value(v.clone())
                    .map_err(|e| ModbalError::Data(format!("cal state {k}: {e}"))),
            }
        };
        self.a = vec("a")?;
        self.a_weak = vec("a_weak")?;
        self.det_con = vec("det_con")?;
        self.init_seed = state["init_seed"].as_u64();
        match &state["tracker"] {
            serde_json::Value::Null => self.tracker = None,
            t => {
                let st: CalState = serde_json::from_value(t.clone())
                    .map_err(|e| ModbalError::Data(format!("cal state tracker: {e}")))?;
                let m = match st.smoothed_history.first() {
                    Some(h) => h.len(),
                    None if !self.a.is_empty() => self.a.len(),
                    None => {
                        return Err(ModbalError::Data(
                            "cal state tracker: no history and no coefficients to size it".into(),
                        ))
                    }
                };
                let mut tr = CalContribution::new(self.cfg.contribution.clone(), m)?;
                tr.load_state(st)?;
                self.tracker = Some(tr);
            }
        }
        let c = state["compressors"].clone();
        match self.comp.as_mut() {
            Some(comp) => load_compressors(comp, &c)?,
            None => self.pending = if c.is_null() { None } else { Some(c) },
        }
        Ok(())
    }
}

/// Registry entry: `cal` with its options (see [`CalMethodConfig`]); concat fusion.
impl MethodParams for CalMethodConfig {
    /// Heads: `{LATE_FUSIONS}` (`docs/fusion.md`): its contribution φ zeroes a modality's features before model.head, which needs encoders that see only their own modality (not mmtm).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::LATE_FUSIONS,
            "its contribution φ zeroes a modality's features before model.head, which needs encoders that see only their own modality (not mmtm)",
        )
    }
    fn check(&self) -> Result<()> {
        self.validate()?;
        CalReinforcementConfig { eta: self.eta }.validate()?;
        Ok(self.ogm().validate()?)
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Cal::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::test_support::{self, parse_options};

    fn build(options: &toml::Table) -> Result<test_support::Built> {
        test_support::build::<CalMethodConfig>("cal", options)
    }
    use modbal_contrib::cal::CalVariant;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    /// The `[method]` keys of `cal` (what users write and `config.toml` records) are those of
    /// the config before the building blocks were embedded.
    #[test]
    fn keys_and_defaults_are_the_flat_ones() {
        let built = build(&toml::Table::new()).unwrap();
        let keys: Vec<&str> = built.resolved.keys().map(String::as_str).collect();
        let mut want = vec![
            "gamma",
            "window",
            "lambda_potential",
            "lambda_compression",
            "lambda_m",
            "temperature",
            "temperature_form",
            "variant",
            "p_max",
            "epsilon",
            "eta",
            "gradient",
            "ogm_alpha",
            "aib",
            "fused_target",
            "compressor_hidden",
            "projection_dim",
            "mi_estimator",
            "mi_ridge",
            "mi_shrinkage",
            "mi_shrinkage_min",
            "phi_floor",
            "det_con_min",
            "det_con_max",
            "compressor_lr",
            "compressor_weight_decay",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        let r = &built.resolved;
        assert_eq!(r["lambda_potential"].as_float(), Some(0.5));
        assert_eq!(r["window"].as_integer(), Some(5));
        assert_eq!(r["temperature"].as_float(), Some(DEFAULT_TEMPERATURE));
        assert_eq!(r["temperature_form"].as_str(), Some("multiply"));
        assert_eq!(r["variant"].as_str(), Some("phi_times_r"));
        assert_eq!(r["mi_ridge"].as_float(), Some(1e-3));
        assert_eq!(r["mi_shrinkage"].as_float(), Some(0.1));
        assert_eq!(r["ogm_alpha"].as_float(), Some(0.8));
        assert_eq!(r["compressor_lr"].as_float(), Some(1e-3));
        assert_eq!(r["compressor_weight_decay"].as_float(), Some(0.01));
        assert_eq!(
            CalMethodConfig::default().contribution,
            CalConfig::default()
        );
    }

    #[test]
    fn flat_keys_set_the_embedded_configs_and_round_trip() {
        let cfg: CalMethodConfig = toml::Value::Table(table(
            "gamma = 0.5\nlambda_potential = 0.25\ntemperature = 2\nvariant = \"phi_only\"\n\
             mi_ridge = 0.01\neta = 0.5",
        ))
        .try_into()
        .unwrap();
        assert_eq!(cfg.contribution.gamma, 0.5);
        assert_eq!(cfg.contribution.lambda, 0.25);
        assert_eq!(cfg.contribution.temperature, 2.0);
        assert_eq!(cfg.contribution.variant, CalVariant::PhiOnly);
        assert_eq!(cfg.contribution.window, 5); // unset: CalConfig's default
        assert_eq!(cfg.mi.ridge, 0.01);
        assert_eq!(cfg.mi.shrinkage, 0.1); // unset: CAL's default, not GaussianConfig's 0
        assert_eq!(cfg.eta, 0.5);
        // What `config.toml` records parses back to the same config.
        let (back, resolved): (CalMethodConfig, _) = parse_options(
            "cal",
            &match toml::Value::try_from(&cfg).unwrap() {
                toml::Value::Table(t) => t,
                v => panic!("{v:?}"),
            },
        )
        .unwrap();
        assert_eq!(back, cfg);
        assert_eq!(resolved["lambda_potential"].as_float(), Some(0.25));
        assert!(!resolved.contains_key("lambda") && !resolved.contains_key("ridge"));
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        for key in ["gamm", "lambda", "ridge", "shrinkage", "mi_lambda"] {
            let e = build(&table(&format!("{key} = 0.5")))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
            // Also when deserialised directly, outside the registry.
            let direct: std::result::Result<CalMethodConfig, _> =
                toml::Value::Table(table(&format!("{key} = 0.5"))).try_into();
            assert!(direct.is_err(), "{key}");
        }
        let e = build(&table("lambda_potential = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("in `lambda_potential`"), "{e}");
        let e = build(&table("mi_shrinkage = true"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("in `mi_shrinkage`"), "{e}");
        let e = build(&table("lambda_potential = 2.0"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lambda_potential must be in [0, 1], got 2"),
            "{e}"
        );
        let e = build(&table("mi_shrinkage = 2.0")).unwrap_err().to_string();
        assert!(e.contains("mi_shrinkage must be in [0, 1], got 2"), "{e}");
    }
}
