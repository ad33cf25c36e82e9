//! The [`Method`] trait: the hooks through which every balancing method plugs into the single
//! training loop of `modbal-train`, without touching it.
//!
//! One training step, as the loop runs it (each `→` is a hook with a default):
//!
//! ```text
//! epoch start:  stages() / trainable_prefixes()  → epoch_indices()  → on_epoch_start()
//! each batch:   train_step() = modulate_inputs() → forward() → loss() → backward()
//!                              [= loss.backward() + modulate_grads()] → optimizer.step()
//!                              → after_step()
//! epoch end:    validation pass with predict() + predict_modalities() → on_validation()
//!               → on_epoch_end()
//! logging:      everything put into ctx.log lands in metrics.jsonl under "method"
//! ```
//!
//! See `docs/architecture.md` for the table that maps CAL, ARM, IBML, UDI, OGM-GE, MMPareto,
//! PMR, MLA and ARL onto these hooks.

use crate::batch::{Batch, EvalOutputs, MultimodalOutput};
use crate::model::MultimodalModel;
use crate::Result;
use candle_core::{backprop::GradStore, Device, Tensor};
use modbal_tensors::{cross_entropy, Optimizer, SeededRng};
use std::collections::BTreeMap;

/// One stage of a multi-stage schedule (UDI: unimodal training, then the follower).
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    pub name: String,
    pub epochs: usize,
}

/// Per-epoch values a method wants logged (`metrics.jsonl`, key `method`). Scalars added with
/// [`MethodLog::add_mean`] are averaged over the calls of an epoch; values set with
/// [`MethodLog::set`] overwrite.
#[derive(Clone, Debug, Default)]
pub struct MethodLog {
    values: BTreeMap<String, serde_json::Value>,
    means: BTreeMap<String, (f64, usize)>,
}

impl MethodLog {
    pub fn set(&mut self, key: impl Into<String>, v: impl Into<serde_json::Value>) {
        self.values.insert(key.into(), v.into());
    }
    pub fn add_mean(&mut self, key: impl Into<String>, v: f64) {
        let e = self.means.entry(key.into()).or_insert((0.0, 0));
        e.0 += v;
        e.1 += 1;
    }
    /// Drain this epoch's values (means resolved) into a JSON object.
    pub fn take(&mut self) -> serde_json::Map<String, serde_json::Value> {
        let mut out: serde_json::Map<String, serde_json::Value> =
            std::mem::take(&mut self.values).into_iter().collect();
        for (k, (s, n)) in std::mem::take(&mut self.means) {
            out.insert(k, serde_json::json!(s / n.max(1) as f64));
        }
        out
    }
}

/// What the loop tells a hook about where training stands, plus the run's seeded RNG (every
/// random draw of a method must come from it, so that a seed reproduces a run).
#[derive(Debug)]
pub struct RunContext {
    /// 0-based epoch within the whole run.
    pub epoch: usize,
    /// Total epochs of the run (all stages).
    pub num_epochs: usize,
    /// Index of the current stage in [`Method::stages`].
    pub stage: usize,
    /// 0-based epoch within the current stage.
    pub stage_epoch: usize,
    /// Global optimizer step count.
    pub step: usize,
    /// Index of the batch within the epoch.
    pub batch_index: usize,
    pub batches_per_epoch: usize,
    pub rng: SeededRng,
    pub device: Device,
    pub log: MethodLog,
}

impl RunContext {
    pub fn new(seed: u64, device: Device, num_epochs: usize) -> Self {
        Self {
            epoch: 0,
            num_epochs,
            stage: 0,
            stage_epoch: 0,
            step: 0,
            batch_index: 0,
            batches_per_epoch: 0,
            rng: SeededRng::new(seed),
            device,
            log: MethodLog::default(),
        }
    }
}

/// The loss of one batch: `total` is what is backpropagated; `parts` are logged (epoch means)
/// under `method.loss.<name>`.
#[derive(Clone, Debug)]
pub struct LossTerms {
    pub total: Tensor,
    pub parts: BTreeMap<String, Tensor>,
}

impl LossTerms {
    pub fn single(total: Tensor) -> Self {
        Self {
            total,
            parts: BTreeMap::new(),
        }
    }
}

impl LossTerms {
    /// The value of `total` after the finiteness check, with every part added to the epoch's log
    /// as `loss.<name>` (epoch means). What the default [`Method::train_step`] does with a loss;
    /// methods with their own step use it (or [`check_loss`]) so that a NaN is reported the same
    /// way everywhere.
    pub fn value_logged(&self, ctx: &mut RunContext) -> Result<f64> {
        let value = check_loss(
            self.total
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?,
            "loss",
            ctx,
        )?;
        for (k, t) in &self.parts {
            let v = t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            ctx.log.add_mean(format!("loss.{k}"), v);
        }
        Ok(value)
    }
}

/// `value` if it is finite, else [`crate::ModbalError::NonFinite`] naming `what` (e.g. `"loss"`,
/// `"loss of modality audio"`), the epoch and the step.
pub fn check_loss(value: f64, what: &str, ctx: &RunContext) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(crate::ModbalError::NonFinite {
            what: format!("{what} ({value})"),
            epoch: ctx.epoch,
            step: ctx.step,
        })
    }
}

/// What a train step reports back to the loop (for metrics).
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// The backpropagated loss value.
    pub loss: f64,
    /// The forward outputs, detached.
    pub output: MultimodalOutput,
}

/// A training method: baselines and balancing methods alike. Every hook has a default that
/// gives plain joint training with cross-entropy on the fused logits.
pub trait Method: Send {
    /// Registry name (`concat`, `ogm-ge`, `cal`…).
    fn name(&self) -> &str;

    // ---- schedule -----------------------------------------------------------------------

    /// The stages of the run; their epochs must add up to `epochs` (the trainer checks). Called
    /// once the model is built, with the model's modalities in input order (after a method's own
    /// selection, e.g. `method.modalities`), so a per-modality schedule (UDI: one unimodal stage
    /// per modality, then M − 1 follower stages) can be planned for the real modality count.
    /// Default: one stage `train`.
    fn stages(&self, epochs: usize, _modalities: &[String]) -> Vec<StageSpec> {
        vec![StageSpec {
            name: "train".into(),
            epochs,
        }]
    }

    /// Whether the model after the epoch `ctx.epoch` (in stage `ctx.stage`, an index into
    /// `stages`) may be selected as the run's result (the best-on-validation snapshot that
    /// `summary.json` reports). Epochs that are not selectable are trained, validated and logged
    /// as usual, but never reported as the method's number: UDI's unimodal stages train single
    /// encoders, so only its (last) follower stage is UDI; ARM's warm-up epochs are plain joint
    /// training, so only the epochs after it are ARM. The trainer errors if no epoch of a
    /// finished run was selectable. Default: every epoch.
    fn selectable(&self, _ctx: &RunContext, _stages: &[StageSpec]) -> bool {
        true
    }

    /// The learning rate of this epoch's steps, given the rate of the run's schedule
    /// (`train.schedule` at this stage epoch): the loop calls it once per epoch, before
    /// [`Method::on_epoch_start`], and sets the optimizer to the result. A method with its own
    /// schedule on top of the run's (IBML's warm-up) overrides it; values it wants logged go
    /// through `ctx.log`. Default: `scheduled` unchanged.
    fn epoch_lr(&mut self, scheduled: f64, _ctx: &mut RunContext) -> Result<f64> {
        Ok(scheduled)
    }

    /// Parameter-group prefixes trained in `stage` (a fresh optimizer is built over them at
    /// each stage start). `""` means every trainable parameter. Called at stage start, so it may
    /// depend on what earlier stages decided (UDI's anchor).
    fn trainable_prefixes(&self, _stage: usize, _model: &dyn MultimodalModel) -> Vec<String> {
        vec![String::new()]
    }

    /// Called when a stage begins (after the optimizer is built).
    fn on_stage_start(
        &mut self,
        _model: &dyn MultimodalModel,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        Ok(())
    }

    /// The training indices of this epoch, with repeats for over-sampling (ARM's dynamic
    /// re-sampling). `None`: every index once. The loop shuffles the list with the run's RNG.
    fn epoch_indices(
        &mut self,
        _train_len: usize,
        _ctx: &mut RunContext,
    ) -> Result<Option<Vec<usize>>> {
        Ok(None)
    }

    /// Called before the first batch of each epoch (PMR's prototypes, controllers…).
    fn on_epoch_start(
        &mut self,
        _model: &dyn MultimodalModel,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        Ok(())
    }

    // ---- one step -----------------------------------------------------------------------

    /// Per-batch input modulation of selected samples (IBML's TCM noise), before the forward.
    fn modulate_inputs(&mut self, _batch: &mut Batch, _ctx: &mut RunContext) -> Result<()> {
        Ok(())
    }

    /// The training forward pass. Default: encode every modality, fuse.
    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        _ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        Ok(model.forward_t(&batch.inputs, true)?)
    }

    /// The loss: extra terms (CAL's AIB, UDI's JS and CLUB terms, PMR's prototype CE) go here.
    /// Default: cross-entropy of the fused logits.
    fn loss(
        &mut self,
        _model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        Ok(LossTerms::single(cross_entropy(
            &out.fused_logits,
            &batch.labels,
        )?))
    }

    /// Backward pass(es). Default: one backward of `loss.total`, then [`Method::modulate_grads`].
    /// Override for several backward passes over one graph (MMPareto, UDI's controller).
    fn backward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        loss: &LossTerms,
        ctx: &mut RunContext,
    ) -> Result<GradStore> {
        let mut grads = loss.total.backward()?;
        self.modulate_grads(&mut grads, model, batch, out, ctx)?;
        Ok(grads)
    }

    /// Gradient modulation on the `GradStore` before the optimizer step, per parameter group
    /// (OGM-GE's k_m and GE noise, CAL's asymmetric reinforcement, MLA's projection).
    fn modulate_grads(
        &mut self,
        _grads: &mut GradStore,
        _model: &dyn MultimodalModel,
        _batch: &Batch,
        _out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        Ok(())
    }

    /// After the optimizer step: auxiliary networks' own updates (UDI's CLUB q-network, CAL's
    /// compressors if they have their own optimizer).
    fn after_step(
        &mut self,
        _model: &dyn MultimodalModel,
        _batch: &Batch,
        _out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        Ok(())
    }

    /// The whole step. Override only when one batch needs several optimizer steps (MLA's
    /// alternating unimodal updates); the default composes the hooks above.
    fn train_step(
        &mut self,
        model: &dyn MultimodalModel,
        mut batch: Batch,
        opt: &mut dyn Optimizer,
        ctx: &mut RunContext,
    ) -> Result<StepOutput> {
        self.modulate_inputs(&mut batch, ctx)?;
        let out = self.forward(model, &batch, ctx)?;
        let loss = self.loss(model, &batch, &out, ctx)?;
        let value = loss.value_logged(ctx)?;
        let grads = self.backward(model, &batch, &out, &loss, ctx)?;
        opt.step(&grads)?;
        self.after_step(model, &batch, &out, ctx)?;
        Ok(StepOutput {
            loss: value,
            output: out.detach(),
        })
    }

    // ---- evaluation and epoch statistics ---------------------------------------------------

    /// The inference-time fused prediction (ARM's fusion weights, MLA's entropy fusion).
    /// Never uses labels. Default: the fused logits.
    fn predict(&self, _model: &dyn MultimodalModel, out: &MultimodalOutput) -> Result<Tensor> {
        Ok(out.fused_logits.clone())
    }

    /// The inference-time per-modality logits (`[B, C]` each, modality order) that the
    /// per-modality metrics (`modality_acc`, the discrepancy ratio) and [`EvalOutputs`] use,
    /// for a method whose classifier is not the model's head (MMCosine's cosine logits).
    /// Called with the model's forward output on every split and with the training step's
    /// output. Never uses labels. Default: the model's `per_modality_logits`.
    fn predict_modalities(
        &self,
        _model: &dyn MultimodalModel,
        out: &MultimodalOutput,
    ) -> Result<Vec<Tensor>> {
        Ok(out.per_modality_logits.clone())
    }

    /// Statistics from the validation split after each epoch, feeding the next epoch (CAL's φ
    /// and R, ARM's MIV, UDI's anchor choice). Never sees the test split.
    fn on_validation(
        &mut self,
        _model: &dyn MultimodalModel,
        _val: &EvalOutputs,
        _ctx: &mut RunContext,
    ) -> Result<()> {
        Ok(())
    }

    /// Called at the end of each epoch, after validation.
    fn on_epoch_end(&mut self, _model: &dyn MultimodalModel, _ctx: &mut RunContext) -> Result<()> {
        Ok(())
    }

    // ---- checkpointing ----------------------------------------------------------------------

    /// The method's own state for checkpoints (smoothed contributions, controllers…).
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// Method-owned tensors that the JSON [`Method::state`] should not carry: the parameters and
    /// optimizer moments of auxiliary networks (UDI's CLUB q-networks), by unique name. The
    /// trainer writes them to `checkpoints/last/method.safetensors` (only when there are any)
    /// and, on resume, passes them to [`Method::load_state_tensors`] right after
    /// [`Method::load_state`], so the auxiliary networks continue exactly where they were. They
    /// are not part of the best-model snapshot (`predict` must not depend on them). Default:
    /// none.
    fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(BTreeMap::new())
    }

    /// Restore what [`Method::state_tensors`] returned (already on the run's device). Called on
    /// resume, after [`Method::load_state`], with an empty map when the checkpoint has none.
    fn load_state_tensors(&mut self, _tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}
