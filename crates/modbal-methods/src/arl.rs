//! `arl`: Asymmetric Representation Learning (Wei, Luo & Luo, "Improving Multimodal Learning via
//! Imbalanced Learning", ICCV 2025). See `docs/methods/arl.md`.
//!
//! # Maths
//! One concat head serves the fused and the unimodal predictions ("the auxiliary regularizers
//! share parameters with the multimodal model"): with `W = [W_1 | … | W_M]`, `b` the head's
//! parameters and `f_m: [B, D_m]` the encoder outputs,
//!
//! ```text
//! z   = W·[f_1; …; f_M] + b                 fused logits           [B, C]
//! u_m = W_m·f_m + b                         unimodal logits, FULL bias (official ConcatFusion_AUXI)
//! L   = CE(z) + γ_t · Σ_m CE(u_m)           γ_t = γ from `start_epoch` on, `warmup_gamma` before
//! ```
//!
//! The re-weighting coefficients `w_m` are computed per batch from the (detached) unimodal
//! logits of that batch (the official estimator; the paper's variance/bias proxies):
//!
//! ```text
//! mag_m = Σ_c mean_i |u_m,ic|,          mag'_m = mag_m / Σ_k mag_k          (bias proxy)
//! H_m   = mean_i H(softmax(u_m,i)),     H'_m  = max(H_m / Σ_k H_k, h_floor) (variance proxy)
//! v_m   = (1/H'_m) / Σ_k (1/H'_k)
//! s_m   = (1 − mag'_m) · v_m            (M = 2: s_a = mag'_v·v_a, s_v = mag'_a·v_v, official)
//! w     = softmax(T · s)
//! ```
//!
//! From `start_epoch` on, each encoder's output gradient is multiplied by `(1 + w_m)` (paper:
//! "re-weight the optimization of each modality"), with the identity-forward trick
//! `f ← sg(f) + (f − sg(f))·(1 + w_m)` ([`modbal_modulate::arl_scale_feature`]) applied in
//! [`Method::forward`], so that the fused and the unimodal losses both reach encoder m scaled.
//! Before `start_epoch` nothing is scaled. After the backward pass the gradients are clipped to
//! a global L2 norm of `clip_grad_norm` (40, official `clip_grad_norm_(…, 40)`).
//!
//! # Schedule
//! `start_epoch` is an epoch of the official 100-epoch schedule (`schedule_epochs = 100`,
//! `main_arl_variance.py --epochs 100`) and is scaled to the run's `train.epochs` `N` with
//! [`modbal_core::scale_epoch`]: the first active epoch is `round(6·N/100)`, epoch 1 of a 12-epoch
//! run. `schedule_epochs = 0` takes `start_epoch` literally.
//!
//! Official-code difference: the official code computes `w` but never applies it (the weights
//! are written to `model.args` and not read by the encoders; issue #3 of the repository); it
//! also sets `w = 0.5` before the start epoch. modbal applies the weights, as the paper says
//! (`apply_weights = false` reproduces the official behaviour: same losses, no scaling).
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `w` (mean coefficient per modality over the active steps), `scale` (mean factor applied, 1
//! outside), `magnitude`, `entropy` (mean normalised proxies), `active` (fraction of steps with
//! re-weighting), `start_epoch` (the scaled first active epoch), `gamma` (γ used), `grad_norm`
//! (mean global norm before clipping), `clipped` (fraction of steps clipped), and the loss parts
//! `loss.fused`, `loss.<m>`.

use crate::params::MethodParams;
use crate::util::{by_name, entropy, rows};
use candle_core::{backprop::GradStore, Tensor};
use modbal_core::stats::softmax_row;
use modbal_core::{
    scale_epoch, Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext,
};
use modbal_modulate::arl_scale_feature;
use modbal_tensors::{clip_grad_norm, cross_entropy, global_grad_norm};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Options of `arl` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "arl"
/// gamma = 4.0
/// temperature = 8.0
/// start_epoch = 6          # epoch of the official 100-epoch schedule
/// schedule_epochs = 100    # 0 = take start_epoch literally
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArlConfig {
    /// γ, weight of the unimodal losses from `start_epoch` on, ≥ 0. Default 4 (the paper's
    /// CREMA-D value; 3 for Kinetics-Sounds, 5 for AVE; the official argparse default is 1).
    pub gamma: f64,
    /// Weight of the unimodal losses before `start_epoch`, ≥ 0. Default 1 (official code).
    pub warmup_gamma: f64,
    /// Softmax temperature T of the coefficients (multiplies the scores), > 0. Default 8 (the
    /// paper's CREMA-D value; 4 for Kinetics-Sounds and AVE).
    pub temperature: f64,
    /// First 0-based epoch with re-weighting and γ, in epochs of a `schedule_epochs`-epoch
    /// schedule. Default 6: the official `epoch > start` with `start = 5`.
    pub start_epoch: usize,
    /// Length of the schedule `start_epoch` refers to; it is scaled to the run's length
    /// (`modbal_core::scale_epoch`). Default 100 (official `--epochs 100`, not overridden by the
    /// official scripts); 0 = `start_epoch` is a run epoch, unscaled.
    pub schedule_epochs: usize,
    /// Lower clamp of the normalised entropy `H'_m`, in [0, 1). Default 0.3 (official code).
    pub entropy_floor: f64,
    /// Global gradient-norm clip after the backward pass; 0 switches it off. Default 40
    /// (official code).
    pub clip_grad_norm: f64,
    /// Apply `(1 + w_m)` to the encoder-output gradients (the paper). `false`: compute and log
    /// `w` only, as the official code effectively does. Default `true`.
    pub apply_weights: bool,
}

impl Default for ArlConfig {
    fn default() -> Self {
        Self {
            gamma: 4.0,
            warmup_gamma: 1.0,
            temperature: 8.0,
            start_epoch: 6,
            schedule_epochs: 100,
            entropy_floor: 0.3,
            clip_grad_norm: 40.0,
            apply_weights: true,
        }
    }
}

impl ArlConfig {
    /// Checks every value; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModbalError::Config(format!("method arl: {m}")));
        for (k, v) in [
            ("gamma", self.gamma),
            ("warmup_gamma", self.warmup_gamma),
            ("clip_grad_norm", self.clip_grad_norm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{k} must be finite and >= 0, got {v}"));
            }
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return err(format!(
                "temperature must be finite and > 0, got {}",
                self.temperature
            ));
        }
        if !(0.0..1.0).contains(&self.entropy_floor) {
            return err(format!(
                "entropy_floor must be in [0, 1), got {}",
                self.entropy_floor
            ));
        }
        Ok(())
    }
}

/// The coefficients of one batch and the proxies they come from (all per modality).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArlWeights {
    /// `mag'_m`, the normalised mean absolute logit sum.
    pub magnitude: Vec<f64>,
    /// `H'_m`, the normalised mean entropy after the floor.
    pub entropy: Vec<f64>,
    /// `v_m`, the normalised inverse entropy.
    pub inv_entropy: Vec<f64>,
    /// `s_m = (1 − mag'_m)·v_m`.
    pub score: Vec<f64>,
    /// `w = softmax(T·s)`.
    pub w: Vec<f64>,
}

/// The ARL coefficients from each modality's unimodal logits (`[B, C]` rows; see the
/// [module docs](self)). Needs at least one modality and one sample.
pub fn arl_weights(logits: &[Vec<Vec<f64>>], temperature: f64, floor: f64) -> ArlWeights {
    let m = logits.len();
    let mag: Vec<f64> = logits
        .iter()
        .map(|z| {
            let b = z.len().max(1) as f64;
            let c = z.first().map(|r| r.len()).unwrap_or(0);
            (0..c)
                .map(|j| z.iter().map(|r| r[j].abs()).sum::<f64>() / b)
                .sum()
        })
        .collect();
    let ent: Vec<f64> = logits
        .iter()
        .map(|z| {
            let b = z.len().max(1) as f64;
            z.iter().map(|r| entropy(&softmax_row(r))).sum::<f64>() / b
        })
        .collect();
    let norm = |v: &[f64]| -> Vec<f64> {
        let s: f64 = v.iter().sum();
        if s > 0.0 {
            v.iter().map(|x| x / s).collect()
        } else {
            vec![1.0 / m as f64; m]
        }
    };
    let magnitude = norm(&mag);
    let entropy: Vec<f64> = norm(&ent).into_iter().map(|h| h.max(floor)).collect();
    // H'_m > 0 unless floor = 0 and a modality is perfectly confident: then its inverse is
    // unbounded and it takes the whole normalised weight.
    let inv: Vec<f64> = entropy
        .iter()
        .map(|h| if *h > 0.0 { 1.0 / h } else { f64::MAX })
        .collect();
    let inv_entropy = if inv.contains(&f64::MAX) {
        let n = inv.iter().filter(|x| **x == f64::MAX).count() as f64;
        inv.iter()
            .map(|x| if *x == f64::MAX { 1.0 / n } else { 0.0 })
            .collect()
    } else {
        norm(&inv)
    };
    let score: Vec<f64> = magnitude
        .iter()
        .zip(&inv_entropy)
        .map(|(g, v)| (1.0 - g) * v)
        .collect();
    let w = softmax_row(&score.iter().map(|s| s * temperature).collect::<Vec<_>>());
    ArlWeights {
        magnitude,
        entropy,
        inv_entropy,
        score,
        w,
    }
}

#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    active: usize,
    clipped: usize,
    grad_norm: f64,
    w: Vec<f64>,
    scale: Vec<f64>,
    magnitude: Vec<f64>,
    entropy: Vec<f64>,
}

/// The ARL method; see the [module docs](self).
#[derive(Debug)]
pub struct Arl {
    cfg: ArlConfig,
    /// The coefficients of the current batch (set in `forward`), `None` outside the window.
    current: Option<ArlWeights>,
    sums: EpochSums,
}

impl Arl {
    pub fn new(cfg: ArlConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            current: None,
            sums: EpochSums::default(),
        })
    }

    pub fn config(&self) -> &ArlConfig {
        &self.cfg
    }

    /// The first epoch with re-weighting and γ in a run of `run_epochs` epochs: `start_epoch`
    /// scaled from the `schedule_epochs`-epoch schedule.
    pub fn run_start_epoch(&self, run_epochs: usize) -> usize {
        scale_epoch(self.cfg.start_epoch, self.cfg.schedule_epochs, run_epochs)
    }

    /// Whether re-weighting and γ are active in `epoch` of a run of `run_epochs` epochs.
    pub fn active(&self, epoch: usize, run_epochs: usize) -> bool {
        epoch >= self.run_start_epoch(run_epochs)
    }

    /// The coefficients computed for the last training batch (`None` before `start_epoch`).
    pub fn current_weights(&self) -> Option<&ArlWeights> {
        self.current.as_ref()
    }

    /// `b·(1 − 1/M)`: what turns the concat head's slice logits (`W_m f_m + b/M`) into the
    /// full-bias unimodal logits `W_m f_m + b`. `None` if the head has no `fc.bias`.
    fn extra_bias(model: &dyn MultimodalModel) -> Option<Tensor> {
        let name = format!("{}.fc.bias", model.head_prefix());
        let m = model.modalities().len() as f64;
        model
            .params()
            .trainable_with_prefix(&model.head_prefix())
            .into_iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| (v.as_tensor() * (1.0 - 1.0 / m)).ok())
    }

    /// The unimodal logits with the full bias, `[B, C]` per modality.
    pub fn unimodal_logits(
        model: &dyn MultimodalModel,
        out: &MultimodalOutput,
    ) -> Result<Vec<Tensor>> {
        let extra = Self::extra_bias(model);
        out.per_modality_logits
            .iter()
            .map(|z| {
                Ok(match &extra {
                    Some(b) => z.broadcast_add(b)?,
                    None => z.clone(),
                })
            })
            .collect()
    }

    fn ensure_sums(&mut self, m: usize) {
        if self.sums.w.len() != m {
            self.sums = EpochSums {
                w: vec![0.0; m],
                scale: vec![0.0; m],
                magnitude: vec![0.0; m],
                entropy: vec![0.0; m],
                ..Default::default()
            };
        }
    }
}

impl Method for Arl {
    fn name(&self) -> &str {
        "arl"
    }

    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        let n = model.modalities().len();
        if batch.inputs.len() != n {
            return Err(ModbalError::Data(format!(
                "arl: the batch has {} inputs for {n} modalities",
                batch.inputs.len()
            )));
        }
        let features = (0..n)
            .map(|m| model.encode(m, &batch.inputs[m], true))
            .collect::<candle_core::Result<Vec<_>>>()?;
        self.ensure_sums(n);
        self.current = None;
        let scaled = if self.active(ctx.epoch, ctx.num_epochs) {
            // The coefficients of this batch, from its detached unimodal predictions.
            let detached: Vec<Tensor> = features.iter().map(|f| f.detach()).collect();
            let (fz, per) = model.head(&detached)?;
            let uni = Self::unimodal_logits(
                model,
                &MultimodalOutput {
                    fused_logits: fz,
                    per_modality_logits: per,
                    features: detached,
                },
            )?;
            let z = uni.iter().map(rows).collect::<Result<Vec<_>>>()?;
            let w = arl_weights(&z, self.cfg.temperature, self.cfg.entropy_floor);
            let out = if self.cfg.apply_weights {
                features
                    .iter()
                    .zip(&w.w)
                    .map(|(f, wm)| arl_scale_feature(f, *wm))
                    .collect::<std::result::Result<Vec<_>, _>>()?
            } else {
                features.clone()
            };
            self.current = Some(w);
            out
        } else {
            features.clone()
        };
        let (fused_logits, per_modality_logits) = model.head(&scaled)?;
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits,
            features: scaled,
        })
    }

    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        let names = model.modalities();
        let gamma = if self.active(ctx.epoch, ctx.num_epochs) {
            self.cfg.gamma
        } else {
            self.cfg.warmup_gamma
        };
        let fused = cross_entropy(&out.fused_logits, &batch.labels)?;
        let mut parts = BTreeMap::new();
        parts.insert("fused".to_string(), fused.detach());
        let mut total = fused;
        for (name, u) in names.iter().zip(Self::unimodal_logits(model, out)?) {
            let l = cross_entropy(&u, &batch.labels)?;
            parts.insert(name.clone(), l.detach());
            if gamma > 0.0 {
                total = (total + (l * gamma)?)?;
            }
        }
        ctx.log.set("gamma", gamma);
        Ok(LossTerms { total, parts })
    }

    fn backward(
        &mut self,
        model: &dyn MultimodalModel,
        _batch: &Batch,
        _out: &MultimodalOutput,
        loss: &LossTerms,
        _ctx: &mut RunContext,
    ) -> Result<GradStore> {
        let mut grads = loss.total.backward()?;
        let vars = model.params().trainable();
        let norm = if self.cfg.clip_grad_norm > 0.0 {
            clip_grad_norm(&mut grads, &vars, self.cfg.clip_grad_norm)?
        } else {
            global_grad_norm(&grads, &vars)?
        };
        let n = model.modalities().len();
        self.ensure_sums(n);
        let s = &mut self.sums;
        s.steps += 1;
        s.grad_norm += norm;
        if self.cfg.clip_grad_norm > 0.0 && norm > self.cfg.clip_grad_norm {
            s.clipped += 1;
        }
        match &self.current {
            Some(w) => {
                s.active += 1;
                for m in 0..n {
                    s.w[m] += w.w[m];
                    s.scale[m] += if self.cfg.apply_weights {
                        1.0 + w.w[m]
                    } else {
                        1.0
                    };
                    s.magnitude[m] += w.magnitude[m];
                    s.entropy[m] += w.entropy[m];
                }
            }
            None => {
                for m in 0..n {
                    s.scale[m] += 1.0;
                }
            }
        }
        Ok(grads)
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let s = std::mem::take(&mut self.sums);
        if s.steps == 0 {
            return Ok(());
        }
        let names = model.modalities();
        let n = s.steps as f64;
        let a = s.active.max(1) as f64;
        let div = |v: &[f64], d: f64| v.iter().map(|x| x / d).collect::<Vec<_>>();
        if s.active > 0 {
            ctx.log.set("w", by_name(names, &div(&s.w, a)));
            ctx.log
                .set("magnitude", by_name(names, &div(&s.magnitude, a)));
            ctx.log.set("entropy", by_name(names, &div(&s.entropy, a)));
        }
        ctx.log.set("scale", by_name(names, &div(&s.scale, n)));
        ctx.log.set("active", s.active as f64 / n);
        ctx.log.set("grad_norm", s.grad_norm / n);
        ctx.log.set("clipped", s.clipped as f64 / n);
        ctx.log
            .set("start_epoch", self.run_start_epoch(ctx.num_epochs) as f64);
        Ok(())
    }
}

/// Registry entry: `[method] name = "arl"` with [`ArlConfig`]'s keys; concat head.
impl MethodParams for ArlConfig {
    /// Heads: `{ADDITIVE_LATE_FUSIONS}` (`docs/fusion.md`): it reads the per-modality logits as an additive decomposition of the fused logits and encodes each modality alone with model.encode, which mmtm cannot.
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ADDITIVE_LATE_FUSIONS,
            "it reads the per-modality logits as an additive decomposition of the fused logits and encodes each modality alone with model.encode, which mmtm cannot",
        )
    }
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Arl::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed form for two modalities, computed by hand from the module-doc formulas.
    #[test]
    fn weights_follow_the_documented_softmax() {
        // audio: confident and large logits; visual: flat.
        let a = vec![vec![4.0, 0.0, 0.0], vec![0.0, 4.0, 0.0]];
        let v = vec![vec![0.5, 0.0, 0.0], vec![0.0, 0.0, 0.5]];
        let w = arl_weights(&[a.clone(), v.clone()], 8.0, 0.3);
        let mag_a = 8.0 / 2.0;
        let mag_v = 1.0 / 2.0;
        let h = |r: &[f64]| entropy(&softmax_row(r));
        let (ha, hv) = ((h(&a[0]) + h(&a[1])) / 2.0, (h(&v[0]) + h(&v[1])) / 2.0);
        let (ha, hv) = ((ha / (ha + hv)).max(0.3), (hv / (ha + hv)).max(0.3));
        let (ia, iv) = (1.0 / ha, 1.0 / hv);
        let (va, vv) = (ia / (ia + iv), iv / (ia + iv));
        let (sa, sv) = (mag_v / (mag_a + mag_v) * va, mag_a / (mag_a + mag_v) * vv);
        let wa = (8.0 * sa).exp() / ((8.0 * sa).exp() + (8.0 * sv).exp());
        assert!((w.w[0] - wa).abs() < 1e-12, "{:?} vs {wa}", w.w);
        assert!((w.w[0] + w.w[1] - 1.0).abs() < 1e-12);
        assert!((w.magnitude[0] - mag_a / (mag_a + mag_v)).abs() < 1e-12);
        // The floor binds for the confident audio head.
        assert_eq!(w.entropy[0], 0.3);
    }
}
