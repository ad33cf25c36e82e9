//! `mla`: Multimodal Learning with Alternating unimodal adaptation (Zhang et al.,
//! "Multimodal Representation Learning by Alternating Unimodal Adaptation", CVPR 2024). See
//! `docs/methods/mla.md`.
//!
//! # Training: alternating unimodal steps on one shared head
//! One linear head `h(f) = W f + b` (`W: [C, d]`) is shared by all modalities (every encoder
//! must output the same width d). Each batch runs, for m = 1…M in modality order:
//!
//! ```text
//! f_m = enc_m(x_m);  z_m = h(f_m);  L_m = CE(z_m, y)      (only encoder m and h get gradients)
//! r   = mean_i f_m,i;  α = α_0^(1 + batch_idx/N)             (α_0 = 0.1)
//! k   = P rᵀ;  P ← P − k kᵀ / (α + r k);  P ← P / ‖P‖_F      (P = I at the start)
//! ∇W ← ∇W Pᵀ                                                (the bias gradient is not projected)
//! optimizer step
//! ```
//!
//! — the paper's gradient modification (orthogonal weight modification on the shared head;
//! [`modbal_modulate::MlaProjector`]). One `P` is shared by all modalities and accumulates the
//! directions of every modality's mean features, so each head update is (almost) orthogonal to
//! the feature directions the head has already been fitted on, by this or another modality.
//! After `P rᵀ ∝ α/(α + r k)·k`, `∇W Pᵀ rᵀ` is (almost) 0: the step barely changes `W rᵀ`.
//! Official-code difference: the official projection never fires (parameter-name mismatch),
//! i.e. plain alternating training (`projection = false` reproduces that).
//!
//! The shared head is stored as the model's **sum** head (`head.<m>.{weight, bias}`, one Linear
//! per modality): the first modality's Linear is the shared head that is trained, and after
//! every step its values are copied into the other modalities' Linears. So the model's
//! per-modality logits are exactly `h(f_m)`, the checkpoints hold the shared head, and the
//! evaluation's `modality_acc` is each modality's accuracy through the shared head.
//!
//! # Inference
//! `fusion = "entropy"` (the paper's test-time dynamic fusion, per sample):
//! `e_m = H(softmax(z_m))`, `λ_m = exp(max_k e_k − e_m) / Σ_j exp(max_k e_k − e_j)`
//! (= softmax(−e)), fused logits `Σ_m λ_m z_m`. `fusion = "average"`: `(1/M) Σ_m z_m`.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `projection.alpha`, `projection.residual` (`‖P rᵀ‖/‖r‖` after the update: how much of the
//! batch-mean direction survives; mean), `projection.grad_ratio` (per modality, mean
//! `‖∇W Pᵀ‖/‖∇W‖`), `projection.updates` (total updates of P), `lambda` (mean dynamic fusion
//! weight per modality on the training batches) and `val_lambda`, `val_lambda_max` (mean weight
//! and fraction of validation samples in which each modality had the largest weight), and the
//! loss parts `loss.<m>`.

use crate::params::MethodParams;
use crate::util::{by_name, entropy, rows};
use candle_core::{DType, Tensor, Var};
use modbal_core::stats::softmax_row;
use modbal_core::{
    check_loss, Batch, EvalOutputs, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext, StepOutput,
};
use modbal_encoders::FusionConfig;
use modbal_modulate::{MlaProjectionConfig, MlaProjector, MlaProjectorState};
use modbal_tensors::{cross_entropy, Optimizer};
use serde::{Deserialize, Serialize};

/// How the unimodal predictions are fused at inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlaFusion {
    /// Per-sample entropy weights `softmax(−e)` (the paper's dynamic fusion). Default.
    #[default]
    Entropy,
    /// Equal weights `1/M`.
    Average,
}

/// Options of `mla` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "mla"
/// alpha_base = 0.1
/// projection = true
/// fusion = "entropy"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlaConfig {
    /// α_0 of `α = α_0^(1 + batch_idx/N)`, > 0. Default 0.1 (paper).
    pub alpha_base: f64,
    /// Project the shared head's weight gradient (the paper). `false`: plain alternating
    /// training (what the official code effectively runs). Default `true`.
    pub projection: bool,
    /// Inference fusion: `entropy` (default) or `average`.
    pub fusion: MlaFusion,
}

impl Default for MlaConfig {
    fn default() -> Self {
        Self {
            alpha_base: MlaProjectionConfig::default().alpha_base,
            projection: true,
            fusion: MlaFusion::Entropy,
        }
    }
}

/// Per-sample dynamic fusion weights `λ = softmax(−e)` from each modality's logits rows
/// (`logits[m][i]`); returns `λ[i][m]`.
pub fn entropy_weights(logits: &[Vec<Vec<f64>>]) -> Vec<Vec<f64>> {
    let b = logits.first().map(|z| z.len()).unwrap_or(0);
    (0..b)
        .map(|i| {
            let e: Vec<f64> = logits
                .iter()
                .map(|z| -entropy(&softmax_row(&z[i])))
                .collect();
            softmax_row(&e)
        })
        .collect()
}

#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    proj_steps: usize,
    alpha: f64,
    residual: f64,
    grad_ratio: Vec<f64>,
    grad_steps: Vec<f64>,
    lambda: Vec<f64>,
    lambda_rows: f64,
}

/// The MLA method; see the [module docs](self).
#[derive(Debug)]
pub struct Mla {
    cfg: MlaConfig,
    projector: Option<MlaProjector>,
    synced: bool,
    sums: EpochSums,
}

impl Mla {
    pub fn new(cfg: MlaConfig) -> Result<Self> {
        MlaProjectionConfig {
            alpha_base: cfg.alpha_base,
        }
        .validate()
        .map_err(|e| ModbalError::Config(format!("method mla: alpha_base: {e}")))?;
        Ok(Self {
            cfg,
            projector: None,
            synced: false,
            sums: EpochSums::default(),
        })
    }

    pub fn config(&self) -> &MlaConfig {
        &self.cfg
    }

    /// The projector (`None` before the first step or with `projection = false`).
    pub fn projector(&self) -> Option<&MlaProjector> {
        self.projector.as_ref()
    }

    /// The Linears of the sum head, `(weight, bias)` per modality, in modality order.
    pub fn head_vars(model: &dyn MultimodalModel) -> Result<Vec<(Var, Var)>> {
        let params = model.params().trainable_with_prefix(&model.head_prefix());
        let find = |n: String| -> Result<Var> {
            params
                .iter()
                .find(|(p, _)| *p == n)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    ModbalError::Config(format!(
                        "method mla needs the sum head (one Linear per modality); parameter {n:?} is missing"
                    ))
                })
        };
        let h = model.head_prefix();
        let vars = model
            .modalities()
            .iter()
            .map(|m| {
                Ok((
                    find(format!("{h}.{m}.weight"))?,
                    find(format!("{h}.{m}.bias"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some((w0, _)) = vars.first() {
            if let Some((i, (w, _))) = vars
                .iter()
                .enumerate()
                .find(|(_, (w, _))| w.dims() != w0.dims())
            {
                return Err(ModbalError::Config(format!(
                    "method mla shares one head across modalities, so every encoder must output the same width: {:?} has a head of shape {:?}, {:?} one of shape {:?}",
                    model.modalities()[0],
                    w0.dims(),
                    model.modalities()[i],
                    w.dims()
                )));
            }
        }
        Ok(vars)
    }

    /// Copy the shared head (the first modality's Linear) into the others.
    fn sync(vars: &[(Var, Var)]) -> Result<()> {
        let (w0, b0) = &vars[0];
        for (w, b) in &vars[1..] {
            w.set(&w0.as_tensor().detach())?;
            b.set(&b0.as_tensor().detach())?;
        }
        Ok(())
    }

    /// The fused inference logits from the per-modality logits (see the module docs).
    pub fn fuse(&self, per: &[Tensor]) -> Result<Tensor> {
        let m = per.len();
        if m == 0 {
            return Err(ModbalError::Data("mla: no per-modality logits".into()));
        }
        match self.cfg.fusion {
            MlaFusion::Average => {
                let mut acc = per[0].clone();
                for z in &per[1..] {
                    acc = (acc + z)?;
                }
                Ok((acc / m as f64)?)
            }
            MlaFusion::Entropy => {
                let z = per.iter().map(rows).collect::<Result<Vec<_>>>()?;
                let lam = entropy_weights(&z);
                let (b, c) = per[0].dims2()?;
                let mut out = vec![0.0f64; b * c];
                for i in 0..b {
                    for (mm, zm) in z.iter().enumerate() {
                        for j in 0..c {
                            out[i * c + j] += lam[i][mm] * zm[i][j];
                        }
                    }
                }
                Ok(Tensor::from_vec(out, (b, c), per[0].device())?.to_dtype(per[0].dtype())?)
            }
        }
    }

    fn ensure_sums(&mut self, m: usize) {
        if self.sums.grad_ratio.len() != m {
            self.sums = EpochSums {
                grad_ratio: vec![0.0; m],
                grad_steps: vec![0.0; m],
                lambda: vec![0.0; m],
                ..Default::default()
            };
        }
    }
}

impl Method for Mla {
    fn name(&self) -> &str {
        "mla"
    }

    fn on_stage_start(&mut self, model: &dyn MultimodalModel, _ctx: &mut RunContext) -> Result<()> {
        Self::sync(&Self::head_vars(model)?)?;
        self.synced = true;
        Ok(())
    }

    fn train_step(
        &mut self,
        model: &dyn MultimodalModel,
        mut batch: Batch,
        opt: &mut dyn Optimizer,
        ctx: &mut RunContext,
    ) -> Result<StepOutput> {
        self.modulate_inputs(&mut batch, ctx)?;
        let vars = Self::head_vars(model)?;
        if !self.synced {
            Self::sync(&vars)?;
            self.synced = true;
        }
        let names = model.modalities().to_vec();
        let n = names.len();
        if batch.inputs.len() != n {
            return Err(ModbalError::Data(format!(
                "mla: the batch has {} inputs for {n} modalities",
                batch.inputs.len()
            )));
        }
        self.ensure_sums(n);
        let (w, b) = (vars[0].0.clone(), vars[0].1.clone());
        let mut per = Vec::with_capacity(n);
        let mut feats = Vec::with_capacity(n);
        let mut loss_sum = 0.0;
        for m in 0..n {
            let f = model.encode(m, &batch.inputs[m], true)?;
            let z = f
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            let loss = cross_entropy(&z, &batch.labels)?;
            let value = check_loss(
                loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
                &format!("loss of modality {}", names[m]),
                ctx,
            )?;
            ctx.log.add_mean(format!("loss.{}", names[m]), value);
            loss_sum += value;
            let mut grads = loss.backward()?;
            if self.cfg.projection {
                let d = f.dim(1)?;
                let proj = match &mut self.projector {
                    Some(p) => p,
                    None => self.projector.insert(MlaProjector::new(
                        MlaProjectionConfig {
                            alpha_base: self.cfg.alpha_base,
                        },
                        d,
                    )?),
                };
                let r = proj.apply(
                    &mut grads,
                    &w,
                    &f,
                    ctx.batch_index,
                    ctx.batches_per_epoch.max(1),
                )?;
                let s = &mut self.sums;
                s.proj_steps += 1;
                s.alpha += r.alpha;
                s.residual += r.residual;
                if r.grad_norm_before > 0.0 {
                    s.grad_ratio[m] += r.grad_norm_after / r.grad_norm_before;
                    s.grad_steps[m] += 1.0;
                }
            }
            opt.step(&grads)?;
            per.push(z.detach());
            feats.push(f.detach());
        }
        Self::sync(&vars)?;
        self.sums.steps += 1;
        let z = per.iter().map(rows).collect::<Result<Vec<_>>>()?;
        for row in entropy_weights(&z) {
            for (acc, l) in self.sums.lambda.iter_mut().zip(row) {
                *acc += l;
            }
            self.sums.lambda_rows += 1.0;
        }
        let mut fused = per[0].clone();
        for p in &per[1..] {
            fused = (fused + p)?;
        }
        Ok(StepOutput {
            loss: loss_sum / n as f64,
            output: MultimodalOutput {
                fused_logits: fused,
                per_modality_logits: per,
                features: feats,
            },
        })
    }

    fn predict(&self, _model: &dyn MultimodalModel, out: &MultimodalOutput) -> Result<Tensor> {
        self.fuse(&out.per_modality_logits)
    }

    fn on_validation(
        &mut self,
        model: &dyn MultimodalModel,
        val: &EvalOutputs,
        ctx: &mut RunContext,
    ) -> Result<()> {
        let names = model.modalities();
        let z = val
            .per_modality_logits
            .iter()
            .map(rows)
            .collect::<Result<Vec<_>>>()?;
        let lam = entropy_weights(&z);
        let n = names.len();
        let (mut mean, mut top) = (vec![0.0; n], vec![0.0; n]);
        for row in &lam {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
            top[best] += 1.0;
            for (a, l) in mean.iter_mut().zip(row) {
                *a += l;
            }
        }
        let rows_n = lam.len().max(1) as f64;
        let div = |v: &[f64]| v.iter().map(|x| x / rows_n).collect::<Vec<_>>();
        ctx.log.set("val_lambda", by_name(names, &div(&mean)));
        ctx.log.set("val_lambda_max", by_name(names, &div(&top)));
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let names = model.modalities();
        let s = std::mem::take(&mut self.sums);
        if s.proj_steps > 0 {
            let p = s.proj_steps as f64;
            ctx.log.set("projection.alpha", s.alpha / p);
            ctx.log.set("projection.residual", s.residual / p);
            let ratio: Vec<f64> = s
                .grad_ratio
                .iter()
                .zip(&s.grad_steps)
                .map(|(r, c)| if *c > 0.0 { r / c } else { 1.0 })
                .collect();
            ctx.log.set("projection.grad_ratio", by_name(names, &ratio));
        }
        if let Some(p) = &self.projector {
            ctx.log.set("projection.updates", p.updates() as f64);
        }
        if s.lambda_rows > 0.0 {
            let l: Vec<f64> = s.lambda.iter().map(|x| x / s.lambda_rows).collect();
            ctx.log.set("lambda", by_name(names, &l));
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "projector": self.projector.as_ref().map(|p| p.state()),
        })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() || state["projector"].is_null() {
            return Ok(());
        }
        let st: MlaProjectorState = serde_json::from_value(state["projector"].clone())
            .map_err(|e| ModbalError::Data(format!("mla state projector: {e}")))?;
        self.projector = Some(MlaProjector::from_state(
            MlaProjectionConfig {
                alpha_base: self.cfg.alpha_base,
            },
            &st,
        )?);
        Ok(())
    }
}

/// Registry entry: `[method] name = "mla"` with [`MlaConfig`]'s keys; sum head (tied, see the
/// module docs).
impl MethodParams for MlaConfig {
    fn check(&self) -> Result<()> {
        MlaProjectionConfig {
            alpha_base: self.alpha_base,
        }
        .validate()
        .map_err(|e| ModbalError::Config(format!("method mla: alpha_base: {e}")))
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Sum
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Mla::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_weights_favour_the_confident_modality() {
        let a = vec![vec![5.0, 0.0, 0.0]];
        let v = vec![vec![0.1, 0.0, 0.0]];
        let lam = entropy_weights(&[a.clone(), v.clone()]);
        let (ea, ev) = (entropy(&softmax_row(&a[0])), entropy(&softmax_row(&v[0])));
        let mx = ea.max(ev);
        let (xa, xv) = ((mx - ea).exp(), (mx - ev).exp());
        assert!((lam[0][0] - xa / (xa + xv)).abs() < 1e-12);
        assert!(lam[0][0] > 0.5);
    }
}
