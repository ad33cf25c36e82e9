//! `mmpareto`: Pareto integration of multimodal and unimodal gradients (Wei & Hu, "MMPareto:
//! Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024). See
//! `docs/methods/mmpareto.md`.
//!
//! # Maths
//! The model's concat head gives the fused logits `z`; the method owns one unimodal head per
//! modality, `u_m = V_m f_m + c_m` (Linear `D_m → C`, Xavier-normal weights, zero bias, as the
//! official `head_audio` / `head_video`). The loss is `L = L_mm + Σ_m L_m` with
//! `L_mm = CE(z)` and `L_m = CE(u_m)`. Separate backward passes over one graph give `g_mm` and
//! `g_m`; for every encoder m (flattened over all its tensors):
//!
//! ```text
//! cos = ⟨g_mm, g_m⟩ / (‖g_mm‖ ‖g_m‖)
//! cos > 0:  k0 = k1 = 1/2
//! cos ≤ 0:  k0 = clamp((⟨g_m,g_m⟩ − ⟨g_mm,g_m⟩)/‖g_mm − g_m‖², 0.001, 0.999),  k1 = 1 − k0
//! per tensor t:  g_new = 2k0·g_mm + 2k1·g_m,   g_t ← γ·g_new·max(1, ‖g_mm + g_m‖/‖g_new‖)
//! ```
//!
//! (`γ = 1.5`; [`modbal_modulate::MmPareto`], which guards every division: no NaN on a
//! conflict, unlike BalanceMM's port.) The fused head and the unimodal heads keep their plain
//! gradients (of `L_mm` and `L_m` respectively).
//!
//! The unimodal heads are trained by their own SGD (`head_momentum` 0.9, `head_weight_decay`
//! 1e-4: the official MMPareto optimizer) at the main optimizer's current learning rate (read
//! every step, so the run's schedule applies to them too). Their parameters and momentum
//! buffers are checkpointed through [`Method::state_tensors`]; predictions use the fused head
//! only, so the best-model snapshot does not need them.
//!
//! # Logged per epoch (`metrics.jsonl`, `method`)
//! `cos`, `k_mm` (k0), `k_uni` (k1) — epoch means per encoder; `conflicts` (number of steps with
//! `cos ≤ 0`) and `conflict_rate` per encoder; `uni_acc` (training-batch accuracy of each
//! unimodal head) and `val_uni_acc` (its validation accuracy); the loss parts `loss.mm`,
//! `loss.<m>`.

use crate::params::MethodParams;
use crate::util::{by_name, option_keys, rows, FlatKeys};
use candle_core::{backprop::GradStore, DType, Tensor, Var};
use modbal_core::stats::{accuracy_rows, BatchStats, ModalityStats};
use modbal_core::{
    check_loss, Batch, EvalOutputs, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext, StepOutput,
};
use modbal_modulate::{sum_grads, MmPareto, MmParetoConfig, MmParetoReport};
use modbal_tensors::{
    cross_entropy, Linear, Optimizer, OptimizerState, ParamStore, SeededRng, Sgd, SgdConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Options of `mmpareto` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "mmpareto"
/// gamma = 1.5
/// k_min = 0.001
/// k_max = 0.999
/// ```
///
/// The modulator's [`MmParetoConfig`] is embedded under its own keys (`gamma`, `k_min`, `k_max`),
/// not copied; unknown keys are errors that name them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MmParetoMethodConfig {
    /// The gradient integration (keys `gamma`: magnitude factor γ > 0, default 1.5, official
    /// code, the paper's "γ"; `k_min`, `k_max`: clamps of k0, default 0.001 and 0.999, official
    /// solver). Default [`MmParetoConfig::default`].
    #[serde(flatten, with = "modulator_keys")]
    pub modulator: MmParetoConfig,
    /// Momentum of the unimodal heads' SGD, in [0, 1). Default 0.9 (official).
    pub head_momentum: f64,
    /// Weight decay of the unimodal heads' SGD, ≥ 0. Default 1e-4 (official).
    pub head_weight_decay: f64,
}

impl Default for MmParetoMethodConfig {
    fn default() -> Self {
        Self {
            modulator: MmParetoConfig::default(),
            head_momentum: 0.9,
            head_weight_decay: 1e-4,
        }
    }
}

/// [`MmParetoMethodConfig::modulator`]'s keys: [`MmParetoConfig`]'s field names.
const MODULATOR_KEYS: FlatKeys = FlatKeys {
    prefix: "",
    renames: &[],
};

/// `serde(with)` of [`MmParetoMethodConfig::modulator`].
mod modulator_keys {
    use super::{option_keys, MmParetoConfig, MmParetoMethodConfig, MODULATOR_KEYS};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &MmParetoConfig, s: S) -> Result<S::Ok, S::Error> {
        MODULATOR_KEYS.serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MmParetoConfig, D::Error> {
        let default = MmParetoMethodConfig::default();
        MODULATOR_KEYS.deserialize(d, &default.modulator, &option_keys(&default))
    }
}

impl MmParetoMethodConfig {
    fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModbalError::Config(format!("method mmpareto: {m}")));
        if let Err(e) = self.modulator.validate() {
            return err(e.to_string());
        }
        if !(0.0..1.0).contains(&self.head_momentum) {
            return err(format!(
                "head_momentum must be in [0, 1), got {}",
                self.head_momentum
            ));
        }
        if !(self.head_weight_decay.is_finite() && self.head_weight_decay >= 0.0) {
            return err(format!(
                "head_weight_decay must be finite and >= 0, got {}",
                self.head_weight_decay
            ));
        }
        Ok(())
    }
}

/// The method-owned unimodal heads and their optimizer.
struct UniHeads {
    store: ParamStore,
    heads: Vec<Linear>,
    opt: Sgd,
}

#[derive(Clone, Debug, Default)]
struct EpochSums {
    steps: usize,
    cos: Vec<f64>,
    k_mm: Vec<f64>,
    k_uni: Vec<f64>,
    conflicts: Vec<f64>,
    /// Per-step accuracy of the unimodal heads (`uni_acc` = its mean over the steps).
    uni: ModalityStats,
}

/// The MMPareto method; see the [module docs](self).
pub struct MmParetoMethod {
    cfg: MmParetoMethodConfig,
    modulator: MmPareto,
    init_seed: Option<u64>,
    heads: Option<UniHeads>,
    pending: Option<BTreeMap<String, Tensor>>,
    /// The loaded checkpoint says the unimodal heads existed (so their tensors must come too).
    expect_heads: bool,
    sums: EpochSums,
    last: Option<MmParetoReport>,
}

impl std::fmt::Debug for MmParetoMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmParetoMethod")
            .field("cfg", &self.cfg)
            .field("init_seed", &self.init_seed)
            .field("heads", &self.heads.as_ref().map(|h| h.heads.len()))
            .finish()
    }
}

/// The tensor-name prefix of the unimodal heads' parameters (`uni_head.<m>.{weight,bias}`).
pub const HEAD_PREFIX: &str = "uni_head";

impl MmParetoMethod {
    pub fn new(cfg: MmParetoMethodConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            modulator: MmPareto::new(cfg.modulator.clone())?,
            cfg,
            init_seed: None,
            heads: None,
            pending: None,
            expect_heads: false,
            sums: EpochSums::default(),
            last: None,
        })
    }

    pub fn config(&self) -> &MmParetoMethodConfig {
        &self.cfg
    }

    /// The report of the last step's gradient integration.
    pub fn last_report(&self) -> Option<&MmParetoReport> {
        self.last.as_ref()
    }

    /// The unimodal heads' parameters (empty before the first step).
    pub fn head_params(&self) -> Vec<(String, Var)> {
        self.heads
            .as_ref()
            .map(|h| h.store.trainable())
            .unwrap_or_default()
    }

    /// Build the unimodal heads at the first step (the feature widths are known then).
    fn ensure_heads(
        &mut self,
        model: &dyn MultimodalModel,
        out: &MultimodalOutput,
        ctx: &mut RunContext,
    ) -> Result<()> {
        if self.heads.is_some() {
            return Ok(());
        }
        let seed = *self
            .init_seed
            .get_or_insert_with(|| next_seed(&mut ctx.rng));
        let mut rng = SeededRng::new(seed);
        let store = ParamStore::new();
        let dev = out.fused_logits.device();
        let root = store.root(DType::F32, dev);
        let c = model.num_classes();
        let heads = model
            .modalities()
            .iter()
            .zip(&out.features)
            .map(|(name, f)| Linear::new(&root.pp(HEAD_PREFIX).pp(name), f.dim(1)?, c, &mut rng))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let opt = Sgd::new(
            store.trainable(),
            SgdConfig {
                lr: 1e-3,
                momentum: self.cfg.head_momentum,
                dampening: 0.0,
                nesterov: false,
                weight_decay: self.cfg.head_weight_decay,
            },
        );
        let mut h = UniHeads { store, heads, opt };
        if let Some(t) = self.pending.take() {
            restore_heads(&mut h, &t)?;
        }
        self.heads = Some(h);
        Ok(())
    }

    fn ensure_sums(&mut self, m: usize) {
        if self.sums.cos.len() != m {
            self.sums = EpochSums {
                cos: vec![0.0; m],
                k_mm: vec![0.0; m],
                k_uni: vec![0.0; m],
                conflicts: vec![0.0; m],
                uni: ModalityStats::new(m),
                ..Default::default()
            };
        }
    }

    /// One MMPareto step without the optimizer: the forward pass, the losses, the gradient
    /// stores, the integration. Returns (output, unimodal logits, loss value, integrated grads
    /// — model parameters and unimodal heads —, plain grads of `L_mm + Σ L_m`).
    #[allow(clippy::type_complexity)]
    pub fn gradients(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        ctx: &mut RunContext,
    ) -> Result<(MultimodalOutput, Vec<Tensor>, f64, GradStore, GradStore)> {
        let out = model.forward_t(&batch.inputs, true)?;
        self.ensure_heads(model, &out, ctx)?;
        let names = model.modalities().to_vec();
        let heads = self.heads.as_ref().expect("built above");
        let uni = heads
            .heads
            .iter()
            .zip(&out.features)
            .map(|(h, f)| h.forward(f))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let l_mm = cross_entropy(&out.fused_logits, &batch.labels)?;
        let l_uni = uni
            .iter()
            .map(|u| cross_entropy(u, &batch.labels))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut value = l_mm.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        ctx.log.add_mean("loss.mm", value);
        for (n, l) in names.iter().zip(&l_uni) {
            let v = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            ctx.log.add_mean(format!("loss.{n}"), v);
            value += v;
        }
        check_loss(value, "loss", ctx)?;
        let g_mm = l_mm.backward()?;
        let g_uni = l_uni
            .iter()
            .map(|l| l.backward())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let model_params = model.params().trainable();
        let mut all = model_params.clone();
        all.extend(heads.store.trainable());
        let mut stores: Vec<&GradStore> = vec![&g_mm];
        stores.extend(g_uni.iter());
        let plain = sum_grads(&stores, &all)?;
        let mut total = sum_grads(&stores, &all)?;
        let groups: Vec<String> = (0..names.len()).map(|m| model.encoder_prefix(m)).collect();
        let uni_refs: Vec<&GradStore> = g_uni.iter().collect();
        let report = self
            .modulator
            .apply(&mut total, &g_mm, &uni_refs, &model_params, &groups)?;
        self.ensure_sums(names.len());
        let detached = uni.iter().map(Tensor::detach).collect::<Vec<_>>();
        let uni_stats = BatchStats::from_logits(&detached, &batch.labels)?;
        let s = &mut self.sums;
        s.steps += 1;
        for m in 0..names.len() {
            s.cos[m] += report.cos[m];
            s.k_mm[m] += report.k_mm[m];
            s.k_uni[m] += report.k_uni[m];
            s.conflicts[m] += f64::from(u8::from(report.conflict[m]));
        }
        s.uni.add(&uni_stats);
        self.last = Some(report);
        Ok((out, uni, value, total, plain))
    }
}

/// A seed drawn from the run's RNG (one fork; its first uniform gives 53 bits).
fn next_seed(rng: &mut SeededRng) -> u64 {
    let mut child = rng.fork();
    (child.uniform() * 9_007_199_254_740_992.0) as u64
}

fn restore_heads(h: &mut UniHeads, t: &BTreeMap<String, Tensor>) -> Result<()> {
    let weights: std::collections::HashMap<String, Tensor> = h
        .store
        .all()
        .into_iter()
        .filter_map(|(n, _)| t.get(&n).map(|x| (n, x.clone())))
        .collect();
    if !weights.is_empty() {
        h.store
            .restore(&weights)
            .map_err(|e| ModbalError::Data(format!("mmpareto state: unimodal heads: {e}")))?;
    }
    let mut st = OptimizerState {
        kind: "sgd".into(),
        ..Default::default()
    };
    for (n, x) in t {
        if let Some(rest) = n.strip_prefix("opt.") {
            st.tensors.insert(rest.to_string(), x.clone());
        }
        if let Some(rest) = n.strip_prefix("steps.") {
            let v = x.to_dtype(DType::F64)?.to_scalar::<f64>()? as u64;
            st.steps.insert(rest.to_string(), v);
        }
    }
    h.opt.load_state(&st)?;
    Ok(())
}

impl Method for MmParetoMethod {
    fn name(&self) -> &str {
        "mmpareto"
    }

    fn on_stage_start(&mut self, _model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        if self.init_seed.is_none() {
            self.init_seed = Some(next_seed(&mut ctx.rng));
        }
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
        let (out, _uni, value, mut grads, _) = self.gradients(model, &batch, ctx)?;
        let heads = self.heads.as_mut().expect("built in gradients");
        heads.opt.set_lr(opt.lr());
        heads.opt.step(&grads)?;
        for (_, v) in heads.store.trainable() {
            grads.remove(v.as_tensor());
        }
        opt.step(&grads)?;
        Ok(StepOutput {
            loss: value,
            output: out.detach(),
        })
    }

    fn on_validation(
        &mut self,
        model: &dyn MultimodalModel,
        val: &EvalOutputs,
        ctx: &mut RunContext,
    ) -> Result<()> {
        let Some(h) = &self.heads else { return Ok(()) };
        let y: Vec<usize> = val.labels.iter().map(|&v| v as usize).collect();
        let acc = h
            .heads
            .iter()
            .zip(&val.features)
            .map(|(head, f)| {
                let f = f.to_device(head.weight.device())?;
                Ok(accuracy_rows(&rows(&head.forward(&f)?)?, &y))
            })
            .collect::<Result<Vec<_>>>()?;
        ctx.log
            .set("val_uni_acc", by_name(model.modalities(), &acc));
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        let s = std::mem::take(&mut self.sums);
        if s.steps == 0 {
            return Ok(());
        }
        let names = model.modalities();
        let n = s.steps as f64;
        let div = |v: &[f64]| v.iter().map(|x| x / n).collect::<Vec<_>>();
        ctx.log.set("cos", by_name(names, &div(&s.cos)));
        ctx.log.set("k_mm", by_name(names, &div(&s.k_mm)));
        ctx.log.set("k_uni", by_name(names, &div(&s.k_uni)));
        ctx.log.set("conflicts", by_name(names, &s.conflicts));
        ctx.log
            .set("conflict_rate", by_name(names, &div(&s.conflicts)));
        ctx.log
            .set("uni_acc", by_name(names, &s.uni.mean_batch_accuracy()));
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "init_seed": self.init_seed,
            "has_heads": self.heads.is_some() || self.pending.is_some(),
        })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if let Some(s) = state["init_seed"].as_u64() {
            self.init_seed = Some(s);
        }
        self.expect_heads = state["has_heads"].as_bool().unwrap_or(false);
        Ok(())
    }

    fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        let Some(h) = &self.heads else {
            return Ok(self.pending.clone().unwrap_or_default());
        };
        for (n, v) in h.store.all() {
            out.insert(n, v.as_tensor().clone());
        }
        let st = h.opt.state();
        for (n, t) in st.tensors {
            out.insert(format!("opt.{n}"), t);
        }
        for (n, s) in st.steps {
            out.insert(
                format!("steps.{n}"),
                Tensor::new(s as f64, h.heads[0].weight.device())?,
            );
        }
        Ok(out)
    }

    fn load_state_tensors(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        if tensors.is_empty() {
            if self.expect_heads {
                // Re-initialised heads would silently change the resumed run.
                return Err(ModbalError::Data(
                    "method mmpareto: the checkpoint's state has unimodal heads but no tensors \
                     for them (method.safetensors missing?)"
                        .into(),
                ));
            }
            return Ok(());
        }
        match self.heads.as_mut() {
            Some(h) => restore_heads(h, tensors),
            None => {
                self.pending = Some(tensors.clone());
                Ok(())
            }
        }
    }
}

/// Registry entry: `[method] name = "mmpareto"` with [`MmParetoMethodConfig`]'s keys; concat
/// head (the fused head) plus the method-owned unimodal heads.
impl MethodParams for MmParetoMethodConfig {
    /// Heads: `{ALL_FUSIONS}` (`docs/fusion.md`): its own unimodal heads read the encoders' features; the fused loss uses the fused logits.
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::ALL_FUSIONS,
            "its own unimodal heads read the encoders' features; the fused loss uses the fused logits",
        )
    }
    fn check(&self) -> Result<()> {
        // Includes the modulator's own checks.
        self.validate()
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(MmParetoMethod::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::test_support::{self, parse_options};

    fn build(options: &toml::Table) -> Result<test_support::Built> {
        test_support::build::<MmParetoMethodConfig>("mmpareto", options)
    }

    #[test]
    fn embedded_modulator_keeps_the_flat_keys() {
        let built = build(&toml::Table::new()).unwrap();
        let keys: Vec<&str> = built.resolved.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "gamma",
                "head_momentum",
                "head_weight_decay",
                "k_max",
                "k_min"
            ]
        );
        let t: toml::Table = toml::from_str("gamma = 2\nk_max = 0.5").unwrap();
        let (cfg, _): (MmParetoMethodConfig, _) = parse_options("mmpareto", &t).unwrap();
        assert_eq!(
            cfg.modulator,
            MmParetoConfig {
                gamma: 2.0,
                k_max: 0.5,
                ..Default::default()
            }
        );
        let t: toml::Table = toml::from_str("gama = 2").unwrap();
        let e = build(&t).unwrap_err().to_string();
        assert!(e.contains("unknown field `gama`"), "{e}");
    }
}
