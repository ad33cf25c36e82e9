//! ARM's mutual-information valuation metric (MIV): φ^MI, φ^CMI and the fusion weights FW.
//!
//! Paper: Gao et al., *Asymmetric Reinforcing against Multi-modal Representation Bias* (ARM,
//! AAAI 2025), eq 5-13, 15 (the per-sample balance term) and 16.
//!
//! # Which variables realise each term
//!
//! ARM writes its information terms between the fused representation `f_Y` and the unimodal
//! features `f_{x^i}`, and weights them by "the probability that `f_Y` makes the prediction ŷ"
//! (eq 5). modbal reads every feature as the **categorical prediction it makes**, which is what
//! eq 5 describes and what keeps the estimates bounded and label-free:
//!
//! * `f_Y` ↦ `Ŷ_f ~ p_f,n = softmax(fused logits_n)` (the fusion head's output);
//! * `f_{x^i}` ↦ `Ŷ_i ~ p_i,n = softmax(z_i,n)`, `z_i` modality i's own logits
//!   (`per_modality_logits[i]`; for the concat head the weight slice `W[:, slice_i]·f_i + b/M`).
//!
//! Over the N samples given (a training batch, or a whole split) the joint distributions are
//! the soft ones of `modbal_info::discrete`:
//! `P(a, b) = (1/N) Σ_n p_f,n(a) p_i,n(b)` and `P(a, b, c) = (1/N) Σ_n p_f,n(a) p_j,n(b) p_i,n(c)`.
//!
//! * `I(f_Y; f_{x^i})` (eq 2, 5; "we use I to represent NMI") = `soft_nmi(p_f, p_i)`: geometric
//!   NMI, in [0, 1], one value per modality for the N samples — **no labels**.
//! * `NCMI(f_Y; f_{x^j} | f_{x^i})` (eq 9) = `soft_ncmi(p_f, p_j, p_i)` ∈ [0, 1] — no labels.
//! * `II(f_Y; f_{x^j}; f_{x^i}) = I(f_Y; f_{x^j}) − NCMI(f_Y; f_{x^j} | f_{x^i})` (eq 10) ∈ [−1, 1].
//! * `p(f_Y → y)` = `p_f,n(y_n)` and `p(f_{x^j} → y)` = `p_j,n(y_n)`: the only places the labels
//!   enter, exactly where eq 6 and 11 put them.
//!
//! Per sample n:
//!
//! * `φ^MI_n(x^i) = p_f,n(y_n) · I(f_Y; f_{x^i})` (eq 6);
//! * `φ^MI_n(X) = p_f,n(y_n) · min_i I(f_Y; f_{x^i})` (eq 7), and its smooth form with eq 16;
//! * `φ^CMI_n(x^i) = p_f,n(y_n) I(f_Y; f_{x^i}) + Σ_{j≠i} p_j,n(y_n) II(f_Y; f_{x^j}; f_{x^i})`
//!   (eq 11);
//! * `φ^CMI_n(X) = (1/M) Σ_i φ^CMI_n(x^i)` (eq 12);
//! * `FW^i_n = φ⁺_n(x^i) / ((1/M) Σ_k φ⁺_n(x^k))` with `φ⁺ = max(φ^CMI, 0)` (eq 13 on the
//!   paper's range, see below); `FW^i_n ≥ 0`, `Σ_i FW^i_n = M`.
//!
//! Per batch (the [`ArmReport`]): every per-sample quantity is averaged over the N samples, and
//! the batch fusion weights are the ratio of the (clamped) means, `FW^i = φ⁺(x^i) /
//! ((1/M) Σ_k φ⁺(x^k))` with `φ⁺(x^i) = max(mean_n φ^CMI_n(x^i), 0)` (again `Σ_i FW^i = M`).
//!
//! **Non-negative fusion weights (eq 13).** The paper states that φ^CMI lies in `[0, m]`
//! (after eq 12) and that every modality contributes positively (Theorem 1), so eq 13 is a
//! ratio of non-negative numbers and the FW are a non-negative re-weighting with `Σ FW = m`.
//! With a real estimator the interaction term of eq 11 can be negative (`II ∈ [−1, 1]`, synergy:
//! `NCMI > NMI`), so φ^CMI(x^i) can leave the range at the bottom (it cannot exceed `m`:
//! `p ≤ 1`, `I ≤ 1`, `II ≤ 1`). Unclamped, eq 13 then gives a negative weight (the modality's
//! features enter the fusion with flipped sign) and a weight above `m` for the other. modbal
//! projects each φ^CMI(x^i) onto the paper's range before eq 12-13, i.e. clamps it at 0: on the
//! range (every value ≥ 0) eq 13 is unchanged, outside it a modality with a negative
//! contribution gets weight 0. Softplus or a shift by the minimum were rejected because they
//! change FW also where every φ ≥ 0 (softplus(0) = ln 2; a shift changes the ratios).
//!
//! **Eq 15's denominator.** `L_φCMI = Σ_i |φ^CMI(x^i) − φ^CMI(X)| / φ^CMI(X)` divides by the
//! signed mean, which is 0 whenever the contributions cancel (e.g. `(0.5, −0.5)`) and then
//! explodes. [`cmi_gap_loss`] divides by `max((1/M) Σ_i |φ^CMI(x^i)|, floor)` instead: the mean
//! of the absolute values equals φ^CMI(X) on the paper's range (every φ ≥ 0), so eq 15 is
//! unchanged there, and for any values `Σ_i |φ_i − φ̄| ≤ 2(M−1)·(1/M) Σ_i |φ_i|` (the left side is
//! convex, the ratio scale-free, so its maximum over `Σ|φ_i| = 1` is at a vertex `±e_k`, where it
//! is `2(M−1)/M`), so the term is bounded by `2(M−1)` for every input (2 for two modalities).
//! The value bound does not depend on `floor`; the gradient does: where the denominator is
//! above the floor, `|∂L/∂φ_k| ≤ 4(M−1)/(M·D)` (`|∂N/∂φ_k| ≤ 2(M−1)/M`, `|∂D/∂φ_k| ≤ 1/M`, `L ≤ 2(M−1)`),
//! so the floor caps the gradient at `4(M−1)/(M·floor)` per unit of contribution (below the
//! floor the term is the absolute gap divided by `floor`). It also resolves `0/0`.
//!
//! **Smooth minimum (eq 16).** The paper writes `min_i I^i = max_i(−I^i) ≈ log Σ_i e^{−I^i}`;
//! the right-hand side approximates `max_i(−I^i) = −min_i I^i`, so the sign is missing. With the
//! sign restored, `−τ log Σ_i e^{−I^i/τ}` lies in `[min I − τ log M, min I]`: for τ = 1, M = 2
//! and NMI values of 0-0.3 it is about −0.69 to −0.4, so `φ^MI(X) = p_f(y) · smin` would be
//! **negative** and maximising it (eq 14) would push `p_f(y)` *down* — the opposite of what the
//! paper states after eq 7 (`φ^MI ∈ [0, 1]`, maximised "towards increasing mutual
//! information"). modbal therefore uses the log-**mean**-exp form
//! `smin_τ(I) = −τ log((1/M) Σ_i exp(−I^i / τ))` ∈ `[min_i I^i, min(min_i I^i + τ log M,
//! mean_i I^i)]`: the same smooth approximation shifted by the constant `τ log M`, so it keeps
//! the paper's range (`φ^MI(X) ∈ [0, 1]` for NMI in `[0, 1]`) and tends to the minimum as τ → 0.
//! Its gradient in the I's is the corrected eq 16's (weights `softmax(−I/τ)`).
//!
//! **Label-free evaluation.** The FW applied at inference are *numbers* computed from a
//! labelled split (training batches or the validation split, eq 13: "FW works during the
//! training phase and will take effect in the next epoch"), stored in [`ArmFusionWeights`] and
//! applied to the features by [`ArmFusionWeights::apply_to_features`] — no label is touched at
//! inference. When the mean of the clamped contributions `(1/M) Σ_i φ⁺(x^i)` is ≤ ε (ratio
//! undefined, e.g. no information yet, or every contribution ≤ 0) the weights fall back to 1 for
//! every modality and `fallback` is set.
//!
//! **Differences from the official code** (see `shared/notes/reference-implementations.md`):
//! the official code pairs flattened 512-d features element-wise with a linear projection of
//! the concatenation, estimates NMI from a 30×30 histogram and NCMI with a non-standard formula
//! (values can leave [0, 1]) and uses ground-truth labels at evaluation. None of that is
//! reproduced here.
//!
//! Everything in [`ArmMiv`] is built from differentiable tensor ops (the soft estimators of
//! `modbal_info`), so ARM's losses (eq 14-15) can be built on its tensors.
//!
//! # Shapes
//! * `fused_logits: [N, C]`, `per_modality_logits[i]: [N, C]`, `labels: &[u32]` of length N
//! * [`ArmMiv`]: `nmi [M]`, `ncmi`/`interaction [M, M]` (entry `(j, i)`, diagonal 0),
//!   `fused_label_prob [N]`, `modality_label_prob [N, M]`, `phi_mi [N, M]`, `phi_mi_joint [N]`,
//!   `phi_mi_joint_smooth [N]`, `phi_cmi [N, M]`, `phi_cmi_joint [N]` — all in the logits' dtype
//! * [`ArmFusionWeights::apply_to_features`]: `features[i]: [B, D_i]` → same shapes
//! * [`cmi_gap_loss`]: `phi_cmi: [N, M]` → `[N]`

use crate::error::{input_err, param_err, Result};
use crate::stats::{check_features, check_labels, check_logits, model_device};
use candle_core::{DType, Device, Tensor};
use modbal_core::MultimodalModel;
use modbal_info::discrete::{soft_ncmi, soft_nmi};
use modbal_tensors::ops::softmax;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the MIV computation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArmConfig {
    /// τ of the smooth minimum (corrected eq 16, log-mean-exp form), > 0. Default 1.0 (the
    /// paper's form).
    pub smooth_min_temperature: f64,
    /// Fusion weights fall back to 1 when the denominator `φ^CMI(X)` of eq 13 is ≤ this. ≥ 0.
    /// Default 1e-8.
    pub fw_epsilon: f64,
}

impl Default for ArmConfig {
    fn default() -> Self {
        Self {
            smooth_min_temperature: 1.0,
            fw_epsilon: 1e-8,
        }
    }
}

impl ArmConfig {
    /// Checks the parameters ([`crate::ContribError::Param`] naming the field).
    pub fn validate(&self) -> Result<()> {
        if !(self.smooth_min_temperature > 0.0 && self.smooth_min_temperature.is_finite()) {
            return param_err(format!(
                "arm.smooth_min_temperature must be finite and > 0, got {}",
                self.smooth_min_temperature
            ));
        }
        if !(self.fw_epsilon >= 0.0 && self.fw_epsilon.is_finite()) {
            return param_err(format!(
                "arm.fw_epsilon must be finite and >= 0, got {}",
                self.fw_epsilon
            ));
        }
        Ok(())
    }
}

/// Smooth minimum `−τ log((1/M) Σ_i exp(−v_i / τ))` of a `[M]` tensor (ARM eq 16, sign
/// corrected, log-mean-exp form: in `[min v, min(min v + τ log M, mean v)]`, see the module
/// docs), differentiable; computed with the (detached) minimum as shift. → scalar `[]`.
///
/// Errors: `values` not `[M]` with M ≥ 1, τ not finite and > 0.
pub fn smooth_min(values: &Tensor, tau: f64) -> Result<Tensor> {
    if values.rank() != 1 || values.dims()[0] == 0 {
        return input_err(format!(
            "smooth_min: expected a non-empty [M] tensor, got shape {:?}",
            values.dims()
        ));
    }
    if !(tau > 0.0 && tau.is_finite()) {
        return param_err(format!("smooth_min: tau must be finite and > 0, got {tau}"));
    }
    let m = values.dims()[0] as f64;
    let lo = values.min_keepdim(0)?.detach();
    let shifted = values.broadcast_sub(&lo)?;
    let lse = shifted.affine(-1.0 / tau, 0.0)?.exp()?.sum_all()?.log()?;
    // −τ (log Σ e^{−(v − lo)/τ} − log M) + lo
    Ok(lse.affine(-tau, tau * m.ln())?.add(&lo.squeeze(0)?)?)
}

/// Eq 15 per sample with the bounded denominator of the module docs:
/// `L_n = Σ_i |φ_n(x^i) − φ_n(X)| / max((1/M) Σ_i |φ_n(x^i)|, floor)`, `φ_n(X) = (1/M) Σ_i φ_n(x^i)`
/// (eq 12). Differentiable (the gradient passes where the mean absolute value exceeds `floor`).
/// `0 ≤ L_n ≤ 2(M − 1)` for every input; equals the paper's eq 15 where every `φ_n(x^i) ≥ 0`
/// and `φ_n(X) ≥ floor`.
///
/// `phi_cmi: [N, M]` (e.g. [`ArmMiv::phi_cmi`]) → `[N]`.
///
/// Errors: `phi_cmi` not `[N, M]` with M ≥ 1, `floor` not finite and > 0.
pub fn cmi_gap_loss(phi_cmi: &Tensor, floor: f64) -> Result<Tensor> {
    if phi_cmi.rank() != 2 || phi_cmi.dims()[1] == 0 {
        return input_err(format!(
            "cmi_gap_loss: expected phi_cmi of shape [N, M] with M >= 1, got {:?}",
            phi_cmi.dims()
        ));
    }
    if !(floor > 0.0 && floor.is_finite()) {
        return param_err(format!(
            "cmi_gap_loss: floor must be finite and > 0, got {floor}"
        ));
    }
    let joint = phi_cmi.mean_keepdim(1)?; // eq 12, [N, 1]
    let num = phi_cmi.broadcast_sub(&joint)?.abs()?.sum(1)?; // [N]
    let mean_abs = phi_cmi.abs()?.mean(1)?; // [N]
                                            // max(mean_abs, floor) = relu(mean_abs − floor) + floor
    let den = mean_abs.affine(1.0, -floor)?.relu()?.affine(1.0, floor)?;
    Ok(num.div(&den)?)
}

/// The MIV quantities of N samples as tensors (see the module docs for every formula).
#[derive(Clone, Debug)]
pub struct ArmMiv {
    config: ArmConfig,
    /// `I(f_Y; f_{x^i})` = soft NMI of the fused and modality-i predictions (eq 2, 5): `[M]`.
    pub nmi: Tensor,
    /// Entry `(j, i)`: `NCMI(f_Y; f_{x^j} | f_{x^i})` (eq 9), diagonal 0: `[M, M]`.
    pub ncmi: Tensor,
    /// Entry `(j, i)`: `II(f_Y; f_{x^j}; f_{x^i}) = nmi[j] − ncmi[j, i]` (eq 10), diagonal 0:
    /// `[M, M]`.
    pub interaction: Tensor,
    /// `p(f_Y → y)` = `softmax(fused)[y]` per sample: `[N]`.
    pub fused_label_prob: Tensor,
    /// `p(f_{x^j} → y)` = `softmax(z_j)[y]` per sample and modality: `[N, M]`.
    pub modality_label_prob: Tensor,
    /// `φ^MI(x^i)` per sample (eq 6): `[N, M]`.
    pub phi_mi: Tensor,
    /// `φ^MI(X)` per sample with the hard minimum (eq 7): `[N]`.
    pub phi_mi_joint: Tensor,
    /// `φ^MI(X)` per sample with the smooth minimum (eq 7 with eq 16): `[N]`.
    pub phi_mi_joint_smooth: Tensor,
    /// `φ^CMI(x^i)` per sample (eq 11): `[N, M]`.
    pub phi_cmi: Tensor,
    /// `φ^CMI(X)` per sample (eq 12): `[N]`.
    pub phi_cmi_joint: Tensor,
}

impl ArmMiv {
    /// MIV from the fused and per-modality logits of N samples and their labels.
    ///
    /// Errors: invalid config; no modalities; shapes (named: every logits tensor must be
    /// `[N, C]` with the fused one's N and C); label range; NaN/Inf (from the estimators).
    pub fn new(
        fused_logits: &Tensor,
        per_modality_logits: &[Tensor],
        labels: &[u32],
        config: ArmConfig,
    ) -> Result<Self> {
        config.validate()?;
        let (n, c) = check_logits(fused_logits, "ArmMiv: fused_logits")?;
        check_labels(labels, n, c, "ArmMiv")?;
        let m = per_modality_logits.len();
        if m == 0 {
            return input_err("ArmMiv: no per-modality logits");
        }
        for (i, z) in per_modality_logits.iter().enumerate() {
            if z.dims() != fused_logits.dims() {
                return input_err(format!(
                    "ArmMiv: logits of modality {i} have shape {:?}, fused logits {:?}",
                    z.dims(),
                    fused_logits.dims()
                ));
            }
        }
        let dev = fused_logits.device();
        let pf = softmax(fused_logits, 1)?;
        let pm = per_modality_logits
            .iter()
            .map(|z| softmax(&z.to_device(dev)?, 1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let idx = Tensor::from_slice(labels, (n, 1), dev)?;
        let fused_label_prob = pf.gather(&idx, 1)?.squeeze(1)?;
        let modality_label_prob = Tensor::cat(
            &pm.iter()
                .map(|p| p.gather(&idx, 1))
                .collect::<candle_core::Result<Vec<_>>>()?,
            1,
        )?;

        // Batch-level information terms (label-free).
        let nmi_s = pm
            .iter()
            .map(|p| Ok(soft_nmi(&pf, p)?))
            .collect::<Result<Vec<Tensor>>>()?;
        let nmi = Tensor::stack(&nmi_s, 0)?;
        let zero = nmi_s[0].zeros_like()?;
        let mut ncmi_rows = Vec::with_capacity(m);
        let mut ii_rows = Vec::with_capacity(m);
        for j in 0..m {
            let mut nc = Vec::with_capacity(m);
            let mut ii = Vec::with_capacity(m);
            for i in 0..m {
                if i == j {
                    nc.push(zero.clone());
                    ii.push(zero.clone());
                } else {
                    let v = soft_ncmi(&pf, &pm[j], &pm[i])?;
                    ii.push((&nmi_s[j] - &v)?);
                    nc.push(v);
                }
            }
            ncmi_rows.push(Tensor::stack(&nc, 0)?);
            ii_rows.push(Tensor::stack(&ii, 0)?);
        }
        let ncmi = Tensor::stack(&ncmi_rows, 0)?;
        let interaction = Tensor::stack(&ii_rows, 0)?;

        // Per-sample values.
        let pf_col = fused_label_prob.unsqueeze(1)?; // [N, 1]
        let phi_mi = pf_col.broadcast_mul(&nmi.unsqueeze(0)?)?; // eq 6
        let phi_mi_joint = fused_label_prob.broadcast_mul(&nmi.min_keepdim(0)?)?; // eq 7
        let smin = smooth_min(&nmi, config.smooth_min_temperature)?;
        let phi_mi_joint_smooth = fused_label_prob.broadcast_mul(&smin)?; // eq 7 + 16
                                                                          // eq 11: p_f(y)·I_i + Σ_{j≠i} p_j(y)·II[j, i]; the diagonal of II is 0.
        let phi_cmi = (&phi_mi + modality_label_prob.matmul(&interaction)?)?;
        let phi_cmi_joint = phi_cmi.mean(1)?; // eq 12
        Ok(Self {
            config,
            nmi,
            ncmi,
            interaction,
            fused_label_prob,
            modality_label_prob,
            phi_mi,
            phi_mi_joint,
            phi_mi_joint_smooth,
            phi_cmi,
            phi_cmi_joint,
        })
    }

    /// MIV of the model's own head on the given features (fused and per-modality logits from
    /// `model.head(features)`), e.g. `&eval.features, &eval.labels` of the validation split.
    ///
    /// Errors: those of [`ArmMiv::new`], feature count or N mismatch (named).
    pub fn from_model<M: MultimodalModel + ?Sized>(
        model: &M,
        features: &[Tensor],
        labels: &[u32],
        config: ArmConfig,
    ) -> Result<Self> {
        check_features(model, features, labels, "ArmMiv::from_model")?;
        let dev = model_device(model);
        let f = features
            .iter()
            .map(|t| t.to_device(&dev))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (fused, per) = model.head(&f)?;
        Self::new(&fused, &per, labels, config)
    }

    pub fn config(&self) -> &ArmConfig {
        &self.config
    }

    /// Number of modalities M.
    pub fn num_modalities(&self) -> usize {
        self.nmi.dims()[0]
    }

    /// Number of samples N.
    pub fn num_samples(&self) -> usize {
        self.fused_label_prob.dims()[0]
    }

    /// Batch-level fusion weights `FW^i = φ⁺(x^i) / ((1/M) Σ_k φ⁺(x^k))`, `φ⁺(x^i) =
    /// max(mean_n φ^CMI_n(x^i), 0)` (eq 13 on the paper's range), with the fallback of the
    /// module docs.
    pub fn fusion_weights(&self) -> Result<ArmFusionWeights> {
        let phi = host_vec(&self.phi_cmi.mean(0)?)?;
        ArmFusionWeights::from_phi_cmi(&phi, self.config.fw_epsilon)
    }

    /// Batch means of every quantity (serialisable, for `metrics.jsonl`).
    pub fn report(&self) -> Result<ArmReport> {
        let m = self.num_modalities();
        let ncmi = host_mat(&self.ncmi)?;
        let ii = host_mat(&self.interaction)?;
        let mut pairs = Vec::with_capacity(m * m.saturating_sub(1));
        for j in 0..m {
            for i in 0..m {
                if i != j {
                    pairs.push(ArmPairTerm {
                        j,
                        i,
                        ncmi: ncmi[j][i],
                        interaction: ii[j][i],
                    });
                }
            }
        }
        Ok(ArmReport {
            nmi: host_vec(&self.nmi)?,
            pairs,
            phi_mi: host_vec(&self.phi_mi.mean(0)?)?,
            phi_mi_joint: host_scalar(&self.phi_mi_joint.mean(0)?)?,
            phi_mi_joint_smooth: host_scalar(&self.phi_mi_joint_smooth.mean(0)?)?,
            phi_cmi: host_vec(&self.phi_cmi.mean(0)?)?,
            phi_cmi_joint: host_scalar(&self.phi_cmi_joint.mean(0)?)?,
            fusion_weights: self.fusion_weights()?,
            num_samples: self.num_samples(),
        })
    }

    /// Every per-sample quantity on the host, rows in input order (e.g. to key ARM's
    /// re-sampling, eq 18, on `sample_ids`). Per-sample FW use the same clamp and fallback as the
    /// batch ([`ArmFusionWeights::from_phi_cmi`] on each row).
    pub fn per_sample(&self) -> Result<ArmPerSample> {
        let phi_cmi = host_mat(&self.phi_cmi)?;
        let joint = host_vec(&self.phi_cmi_joint)?;
        let eps = self.config.fw_epsilon;
        let fusion_weights = phi_cmi
            .iter()
            .map(|row| Ok(ArmFusionWeights::from_phi_cmi(row, eps)?.weights))
            .collect::<Result<Vec<_>>>()?;
        Ok(ArmPerSample {
            phi_mi: host_mat(&self.phi_mi)?,
            phi_mi_joint: host_vec(&self.phi_mi_joint)?,
            phi_mi_joint_smooth: host_vec(&self.phi_mi_joint_smooth)?,
            phi_cmi,
            phi_cmi_joint: joint,
            fusion_weights,
        })
    }
}

fn host_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec1()?)
}

fn host_mat(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(t.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec2()?)
}

fn host_scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?
        .to_device(&Device::Cpu)?
        .to_scalar()?)
}

/// NCMI (eq 9) and II (eq 10) of one ordered pair: `j` conditioned on `i`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmPairTerm {
    pub j: usize,
    pub i: usize,
    /// `NCMI(f_Y; f_{x^j} | f_{x^i})`.
    pub ncmi: f64,
    /// `II(f_Y; f_{x^j}; f_{x^i}) = I(f_Y; f_{x^j}) − NCMI(f_Y; f_{x^j} | f_{x^i})`.
    pub interaction: f64,
}

/// Batch means of ARM's MIV (eq 5-13, 16). Serialises into `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    /// `I(f_Y; f_{x^i})` (soft NMI, eq 2 and 5) per modality.
    pub nmi: Vec<f64>,
    /// NCMI (eq 9) and II (eq 10) of every ordered pair `(j, i)`, `j ≠ i`.
    pub pairs: Vec<ArmPairTerm>,
    /// `mean_n φ^MI_n(x^i)` (eq 6) per modality.
    pub phi_mi: Vec<f64>,
    /// `mean_n φ^MI_n(X)`, hard minimum (eq 7).
    pub phi_mi_joint: f64,
    /// `mean_n φ^MI_n(X)`, smooth minimum (eq 7 with the corrected eq 16).
    pub phi_mi_joint_smooth: f64,
    /// `mean_n φ^CMI_n(x^i)` (eq 11) per modality.
    pub phi_cmi: Vec<f64>,
    /// `mean_n φ^CMI_n(X)` (eq 12).
    pub phi_cmi_joint: f64,
    /// `FW^i = phi_cmi[i] / phi_cmi_joint` (eq 13), with fallback.
    pub fusion_weights: ArmFusionWeights,
    /// N.
    pub num_samples: usize,
}

/// Per-sample MIV on the host (rows in input order; `[N][M]` or `[N]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmPerSample {
    /// `φ^MI_n(x^i)` (eq 6).
    pub phi_mi: Vec<Vec<f64>>,
    /// `φ^MI_n(X)` (eq 7, hard minimum).
    pub phi_mi_joint: Vec<f64>,
    /// `φ^MI_n(X)` (eq 7 with the corrected eq 16).
    pub phi_mi_joint_smooth: Vec<f64>,
    /// `φ^CMI_n(x^i)` (eq 11).
    pub phi_cmi: Vec<Vec<f64>>,
    /// `φ^CMI_n(X)` (eq 12).
    pub phi_cmi_joint: Vec<f64>,
    /// `FW^i_n = φ⁺_n(x^i) / ((1/M) Σ_k φ⁺_n(x^k))`, `φ⁺ = max(φ^CMI, 0)` (eq 13 on the paper's
    /// range; all 1 where that mean is ≤ ε).
    pub fusion_weights: Vec<Vec<f64>>,
}

/// ARM's fusion weights FW (eq 13) as plain numbers: computed from a labelled split, applied
/// at inference without labels. Serialisable as method state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmFusionWeights {
    /// `FW^i ≥ 0`, one per modality (Σ = M, also for the fallback, where all are 1).
    pub weights: Vec<f64>,
    /// True when the eq 13 denominator (mean of the clamped φ^CMI) was ≤ ε and the weights are
    /// the uniform fallback.
    pub fallback: bool,
}

impl ArmFusionWeights {
    /// FW = 1 for each of `m` modalities (no re-weighting; e.g. before the first valuation).
    pub fn uniform(m: usize) -> Self {
        Self {
            weights: vec![1.0; m],
            fallback: true,
        }
    }

    /// `FW^i = φ⁺_i / ((1/M) Σ_k φ⁺_k)`, `φ⁺_i = max(φ_i, 0)`, from per-modality `φ^CMI(x^i)`
    /// values (eq 12-13 with φ projected onto the paper's range `[0, M]`, see the module docs);
    /// all 1 when that mean is ≤ `epsilon`. Every weight is ≥ 0 and they sum to M (the
    /// normalised `FW^i / M` are a convex combination).
    ///
    /// Errors: empty or non-finite `phi_cmi`.
    pub fn from_phi_cmi(phi_cmi: &[f64], epsilon: f64) -> Result<Self> {
        if phi_cmi.is_empty() {
            return input_err("ArmFusionWeights::from_phi_cmi: no values");
        }
        crate::stats::check_values(phi_cmi, phi_cmi.len(), "ArmFusionWeights::from_phi_cmi")?;
        let clamped: Vec<f64> = phi_cmi.iter().map(|v| v.max(0.0)).collect();
        let joint = clamped.iter().sum::<f64>() / clamped.len() as f64;
        if joint > epsilon {
            Ok(Self {
                weights: clamped.iter().map(|v| v / joint).collect(),
                fallback: false,
            })
        } else {
            Ok(Self::uniform(phi_cmi.len()))
        }
    }

    /// Dynamic feature-level fusion (eq 13): `f_i ← FW^i · f_i`, label-free. Pass the result to
    /// `MultimodalModel::head`.
    ///
    /// Errors: feature count ≠ number of weights.
    pub fn apply_to_features(&self, features: &[Tensor]) -> Result<Vec<Tensor>> {
        if features.len() != self.weights.len() {
            return input_err(format!(
                "ArmFusionWeights::apply_to_features: {} weights but {} feature tensors",
                self.weights.len(),
                features.len()
            ));
        }
        features
            .iter()
            .zip(&self.weights)
            .map(|(f, &w)| Ok(f.affine(w, 0.0)?))
            .collect()
    }
}
