//! Sample-level and modality-level modality valuation (`sample-valuation`, `modality-valuation`).
//!
//! Paper: Wei, Feng, Wang, Hu, *Enhancing Multimodal Cooperation via Sample-level Modality
//! Valuation*, CVPR 2024 (arXiv 2309.06255); official code
//! `GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation` (`code/sample_level.py`,
//! `code/modality_level.py`, `code/datasets/dataloader.py`). Both methods share one core,
//! [`Valuation`], and differ only in the re-sampling rule ([`Rule`]). See
//! `docs/methods/sample-valuation.md` for every difference between the official code and modbal.
//!
//! # The valuation (Shapley value of each modality for each training sample)
//!
//! For sample i and a coalition S of modalities, `v_i(S) = |S| · [argmax head(f^S_i) = y_i]`,
//! with `f^S` the encoder features with every modality outside S zeroed before the fusion head
//! (the official `exec_drop`). The contribution of modality m is its exact Shapley value
//!
//! `φ_{i,m} = Σ_{S ∌ m} |S|! (M − |S| − 1)! / M! · [v_i(S ∪ {m}) − v_i(S)]`
//!
//! (`modbal_contrib::shapley` with [`ShapleyValueFn::SizeAccuracy`]; M ≤ 4). For two modalities
//! this is the official `contrib_a = (value_a + value_all − value_v) / 2` with `value_all = 2`.
//! `Σ_m φ_{i,m} = M · [the full prediction is correct]`: a modality's fair share of a correct
//! prediction is 1.
//!
//! # The enhancement (targeted re-sampling)
//!
//! A re-sampled copy of sample i **for modality m** is trained with every other modality's
//! features zeroed before the head (official `drop` flags): the fused prediction must come from
//! modality m alone, so the copy's gradient trains m's encoder (and the head) only.
//!
//! * **`sample-valuation`** ([`Rule::Sample`]): sample i gets `s(φ_{i,m})` copies for each
//!   modality m, `s(φ) = #{k : φ < t_k}` with the descending thresholds
//!   `t = (1.0, 0.4, −0.1)` (official `AV_KS_Dataset_sample_level`): 0 copies at or above the
//!   fair share 1, then 1, 2, 3 copies as φ falls to 0.5, 0, −0.5.
//! * **`modality-valuation`** ([`Rule::Modality`]): the dataset-level contribution
//!   `c_m = mean φ_{·,m}` over a random subset of `⌊ρ N⌋` training samples (drawn with
//!   replacement, ρ = `part_ratio` = 0.2), the gaps `g_m = 1 − c_m`, the enhanced modality
//!   `m* = argmax_m g_m`, `d = F(|g_max − g_min| · 2/3, α)` (linear: `d = α·x`, tanh:
//!   `tanh(α·x)`, square: `α·x^1.5`), and `⌊d · N⌋` copies for m* of samples drawn uniformly
//!   with replacement (official `AV_KS_Dataset_modality_level`).
//!
//! The valuation runs at the end of every epoch (logged), and the copies it decides are trained
//! in the next epoch once the warm-up (`warm_up_epochs` = 5 of the official 60-epoch schedule,
//! scaled to the run) is over; warm-up epochs are plain joint training and are not selectable.
//!
//! # Where the valuation comes from
//!
//! As ARM's: no re-encoding. [`Method::loss`] records each training sample's encoder features
//! ([`FeatureRecord`]); [`Method::on_epoch_end`] applies the head to them for the 2^M coalitions.
//!
//! # Shapes
//! * `forward`: `inputs[m]: [B, ...]` → `features[m]: [B, D_m]` (returned unmasked) →
//!   `head(keep ⊙ features)`, `keep[m]: [B, 1]` (0 for the rows of a copy not for m) → `[B, C]`

use crate::params::MethodParams;
use crate::util::{fused_ce_logging_unimodal, FeatureRecord, RecordedSet};
use candle_core::{DType, Tensor};
use modbal_contrib::shapley::{
    modality_shapley_per_sample, ShapleyConfig, ShapleyValueFn, MAX_SHAPLEY_MODALITIES,
};
use modbal_core::{
    scale_epoch, Batch, LossTerms, Method, ModbalError, MultimodalModel, MultimodalOutput, Result,
    RunContext,
};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};

fn cfg_err<T>(msg: String) -> Result<T> {
    Err(ModbalError::Config(msg))
}

/// The warm-up both methods share (official `--warmup 5`, `--epochs 60`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmUp {
    /// Epochs of plain joint training before re-sampling, on a `schedule_epochs` schedule.
    pub epochs: usize,
    /// The schedule `epochs` refers to (0 = take `epochs` literally).
    pub schedule_epochs: usize,
}

impl WarmUp {
    /// `round(epochs · run_epochs / schedule_epochs)` ([`scale_epoch`]).
    pub fn for_run(&self, run_epochs: usize) -> usize {
        scale_epoch(self.epochs, self.schedule_epochs, run_epochs)
    }

    fn check(&self, method: &str) -> Result<()> {
        if self.schedule_epochs > 0 && self.epochs >= self.schedule_epochs {
            return cfg_err(format!(
                "method {method}: warm_up_epochs ({}) must be < schedule_epochs ({}), else the \
                 re-sampling never starts (schedule_epochs = 0 takes warm_up_epochs literally)",
                self.epochs, self.schedule_epochs
            ));
        }
        Ok(())
    }
}

/// The sample-level rule: `s(φ) = #{k : φ < t_k}` extra copies per sample and modality.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleRule {
    /// Strictly descending thresholds `t_k`.
    pub thresholds: Vec<f64>,
}

impl SampleRule {
    /// Copies of a sample for a modality with contribution `phi` (0 for a non-finite φ).
    pub fn copies(&self, phi: f64) -> u32 {
        if !phi.is_finite() {
            return 0;
        }
        self.thresholds.iter().filter(|&&t| phi < t).count() as u32
    }
}

/// `F` of the modality-level rule (official `func`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResampleFunc {
    /// `d = α x`. Default (official default).
    #[default]
    Linear,
    /// `d = tanh(α x)`.
    Tanh,
    /// `d = α x^1.5`.
    Square,
}

/// The modality-level rule.
#[derive(Clone, Debug, PartialEq)]
pub struct ModalityRule {
    /// ρ: fraction of the training set drawn (with replacement) to estimate `c_m`.
    pub part_ratio: f64,
    /// α.
    pub alpha: f64,
    /// F.
    pub func: ResampleFunc,
}

impl ModalityRule {
    /// The re-sampled fraction `d = F(|g_max − g_min| · 2/3, α)` from the subset means `c_m`
    /// (`g_m = 1 − c_m`), and the enhanced modality `argmax_m g_m` (lowest index on ties).
    pub fn difference(&self, contrib: &[f64]) -> (f64, usize) {
        let gaps: Vec<f64> = contrib.iter().map(|c| 1.0 - c).collect();
        let (mut lo, mut hi, mut arg) = (f64::INFINITY, f64::NEG_INFINITY, 0);
        for (m, &g) in gaps.iter().enumerate() {
            lo = lo.min(g);
            if g > hi {
                hi = g;
                arg = m;
            }
        }
        let x = (hi - lo).abs() / 3.0 * 2.0;
        let d = match self.func {
            ResampleFunc::Linear => x * self.alpha,
            ResampleFunc::Tanh => (x * self.alpha).tanh(),
            ResampleFunc::Square => x.powf(1.5) * self.alpha,
        };
        (if d.is_finite() { d.max(0.0) } else { 0.0 }, arg)
    }
}

/// Which re-sampling the core applies.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// `sample-valuation`.
    Sample(SampleRule),
    /// `modality-valuation`.
    Modality(ModalityRule),
}

/// Options of `sample-valuation` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "sample-valuation"
/// warm_up_epochs = 5
/// schedule_epochs = 60
/// copy_thresholds = [1.0, 0.4, -0.1]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleValuationConfig {
    /// Epochs of plain joint training before the re-sampling starts, on the `schedule_epochs`
    /// schedule. Default 5 (official `--warmup 5`; the paper: "a warm-up stage").
    pub warm_up_epochs: usize,
    /// Length of the schedule `warm_up_epochs` refers to (scaled with `scale_epoch`: 1 warm-up
    /// epoch of a 12-epoch run); 0 = literal. Default 60 (official `--epochs 60`).
    pub schedule_epochs: usize,
    /// Strictly descending thresholds `t_k`: a sample gets `#{k : φ_{i,m} < t_k}` copies for
    /// modality m. Default `[1.0, 0.4, -0.1]` (official `AV_KS_Dataset_sample_level`: φ in
    /// (0.4, 1) → 1, (−0.1, 0.4) → 2, below −0.1 → 3 copies; identical on every attainable φ).
    pub copy_thresholds: Vec<f64>,
}

impl Default for SampleValuationConfig {
    fn default() -> Self {
        Self {
            warm_up_epochs: 5,
            schedule_epochs: 60,
            copy_thresholds: vec![1.0, 0.4, -0.1],
        }
    }
}

impl SampleValuationConfig {
    fn warm_up(&self) -> WarmUp {
        WarmUp {
            epochs: self.warm_up_epochs,
            schedule_epochs: self.schedule_epochs,
        }
    }
}

impl MethodParams for SampleValuationConfig {
    /// Heads: `{LATE_FUSIONS}` (`docs/fusion.md`): it encodes each modality with model.encode and masks features before model.head, which needs encoders that see only their own modality (not mmtm).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::LATE_FUSIONS,
            "it encodes each modality with model.encode and masks features before model.head, which needs encoders that see only their own modality (not mmtm)",
        )
    }
    fn check(&self) -> Result<()> {
        self.warm_up().check("sample-valuation")?;
        let t = &self.copy_thresholds;
        if let Some(v) = t.iter().find(|v| !v.is_finite()) {
            return cfg_err(format!(
                "method sample-valuation: copy_thresholds must be finite, got {v}"
            ));
        }
        if t.windows(2).any(|w| w[1] >= w[0]) {
            return cfg_err(format!(
                "method sample-valuation: copy_thresholds must be strictly descending, got {t:?}"
            ));
        }
        Ok(())
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        self.check()?;
        Ok(Box::new(Valuation::new(
            "sample-valuation",
            self.warm_up(),
            Rule::Sample(SampleRule {
                thresholds: self.copy_thresholds.clone(),
            }),
        )))
    }
}

/// Options of `modality-valuation` (`[method]` section).
///
/// ```toml
/// [method]
/// name = "modality-valuation"
/// warm_up_epochs = 5
/// schedule_epochs = 60
/// part_ratio = 0.2
/// alpha = 1.0
/// func = "linear"     # or "tanh", "square"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModalityValuationConfig {
    /// As `sample-valuation`'s. Default 5 (official `modality_level.py --warmup 5`).
    pub warm_up_epochs: usize,
    /// As `sample-valuation`'s. Default 60 (official `--epochs 60`).
    pub schedule_epochs: usize,
    /// ρ in (0, 1]: the dataset-level contributions are the means over `⌊ρ N⌋` training samples
    /// drawn with replacement (at least 1). Default 0.2 (official `--part_ratio 0.2`).
    pub part_ratio: f64,
    /// α ≥ 0, finite. Default 1.0 (official `--alpha 1`).
    pub alpha: f64,
    /// F of the re-sampled fraction. Default `"linear"` (official `func='linear'`).
    pub func: ResampleFunc,
}

impl Default for ModalityValuationConfig {
    fn default() -> Self {
        Self {
            warm_up_epochs: 5,
            schedule_epochs: 60,
            part_ratio: 0.2,
            alpha: 1.0,
            func: ResampleFunc::Linear,
        }
    }
}

impl MethodParams for ModalityValuationConfig {
    /// Heads: `{LATE_FUSIONS}` (`docs/fusion.md`): it encodes each modality with model.encode and masks features before model.head, which needs encoders that see only their own modality (not mmtm).
    fn check_fusion(&self, f: &modbal_encoders::FusionConfig) -> Result<()> {
        crate::params::supports_fusion(
            f,
            crate::params::LATE_FUSIONS,
            "it encodes each modality with model.encode and masks features before model.head, which needs encoders that see only their own modality (not mmtm)",
        )
    }
    fn check(&self) -> Result<()> {
        WarmUp {
            epochs: self.warm_up_epochs,
            schedule_epochs: self.schedule_epochs,
        }
        .check("modality-valuation")?;
        if !(self.part_ratio.is_finite() && self.part_ratio > 0.0 && self.part_ratio <= 1.0) {
            return cfg_err(format!(
                "method modality-valuation: part_ratio must be in (0, 1], got {}",
                self.part_ratio
            ));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return cfg_err(format!(
                "method modality-valuation: alpha must be finite and >= 0, got {}",
                self.alpha
            ));
        }
        Ok(())
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        self.check()?;
        Ok(Box::new(Valuation::new(
            "modality-valuation",
            WarmUp {
                epochs: self.warm_up_epochs,
                schedule_epochs: self.schedule_epochs,
            },
            Rule::Modality(ModalityRule {
                part_ratio: self.part_ratio,
                alpha: self.alpha,
                func: self.func,
            }),
        )))
    }
}

/// Per-sample contributions `[N][M]` of the recorded samples (ids ascending), exact Shapley values
/// with `v(S) = |S|·[correct]`. Errors: M = 0 or M > 4, shape mismatches.
pub fn sample_contributions(
    model: &dyn MultimodalModel,
    features: &[Tensor],
    labels: &[u32],
) -> Result<Vec<Vec<f64>>> {
    let cfg = ShapleyConfig {
        value: ShapleyValueFn::SizeAccuracy,
    };
    Ok(modality_shapley_per_sample(model, features, labels, &cfg)?.values)
}

/// Column means of `[N][M]` rows (0 for no rows).
fn column_means(rows: &[Vec<f64>], m: usize) -> Vec<f64> {
    let n = rows.len().max(1) as f64;
    (0..m)
        .map(|k| rows.iter().map(|r| r[k]).sum::<f64>() / n)
        .collect()
}

/// The copies `extra[i][m]` (sample position i in `contrib`, modality m) that `rule` gives, and
/// the modality-level diagnostics (subset means, d, enhanced modality, copies drawn).
pub fn plan_copies(
    rule: &Rule,
    contrib: &[Vec<f64>],
    m: usize,
    rng: &mut SeededRng,
) -> (Vec<Vec<u32>>, Option<ModalityPlan>) {
    let n = contrib.len();
    match rule {
        Rule::Sample(r) => (
            contrib
                .iter()
                .map(|row| row.iter().map(|&p| r.copies(p)).collect())
                .collect(),
            None,
        ),
        Rule::Modality(r) => {
            let mut extra = vec![vec![0u32; m]; n];
            if n == 0 {
                return (extra, None);
            }
            let k = ((n as f64 * r.part_ratio) as usize).max(1);
            let subset: Vec<Vec<f64>> = (0..k).map(|_| contrib[rng.below(n)].clone()).collect();
            let means = column_means(&subset, m);
            let (d, arg) = r.difference(&means);
            let num = (d * n as f64) as usize;
            for _ in 0..num {
                extra[rng.below(n)][arg] += 1;
            }
            (
                extra,
                Some(ModalityPlan {
                    subset_contrib: means,
                    difference: d,
                    enhanced: arg,
                    resample_num: num,
                }),
            )
        }
    }
}

/// Diagnostics of one modality-level decision.
#[derive(Clone, Debug, PartialEq)]
pub struct ModalityPlan {
    /// `c_m` over the drawn subset.
    pub subset_contrib: Vec<f64>,
    /// d.
    pub difference: f64,
    /// `argmax_m (1 − c_m)`.
    pub enhanced: usize,
    /// `⌊d N⌋`.
    pub resample_num: usize,
}

/// Checkpointed state: the copies planned for the next active epoch, by sample id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValuationState {
    /// `extra[id][m]`: copies of sample `id` trained with only modality m.
    pub extra: Vec<Vec<u32>>,
}

/// The shared method (see the module docs).
#[derive(Debug)]
pub struct Valuation {
    name: &'static str,
    warm_up: WarmUp,
    rule: Rule,
    state: ValuationState,
    record: FeatureRecord,
    /// This epoch's occurrences per sample id: `None` (all modalities) then one `Some(m)` per
    /// copy; consumed in batch order by `forward`.
    modes: Vec<Vec<Option<usize>>>,
    cursor: Vec<usize>,
}

impl Valuation {
    pub fn new(name: &'static str, warm_up: WarmUp, rule: Rule) -> Self {
        Self {
            name,
            warm_up,
            rule,
            state: ValuationState::default(),
            record: FeatureRecord::default(),
            modes: Vec::new(),
            cursor: Vec::new(),
        }
    }

    /// The planned copies (`extra[id][m]`).
    pub fn extra_copies(&self) -> &[Vec<u32>] {
        &self.state.extra
    }

    /// Sets the planned copies (tests).
    pub fn set_extra_copies(&mut self, extra: Vec<Vec<u32>>) {
        self.state.extra = extra;
    }

    /// The run's warm-up in epochs; an error when it covers the whole run.
    pub fn warm_up_epochs(&self, ctx: &RunContext) -> Result<usize> {
        let w = self.warm_up.for_run(ctx.num_epochs);
        if ctx.num_epochs > 0 && w >= ctx.num_epochs {
            return cfg_err(format!(
                "method {}: the warm-up ({w} epochs: warm_up_epochs = {} of schedule_epochs = {}) \
                 covers the whole {}-epoch run, so the re-sampling never starts; lower \
                 method.warm_up_epochs or raise train.epochs",
                self.name, self.warm_up.epochs, self.warm_up.schedule_epochs, ctx.num_epochs
            ));
        }
        Ok(w)
    }

    fn active(&self, ctx: &RunContext) -> Result<bool> {
        Ok(ctx.epoch >= self.warm_up_epochs(ctx)?)
    }

    fn check_modalities(&self, model: &dyn MultimodalModel) -> Result<usize> {
        let m = model.modalities().len();
        if m < 2 {
            return Err(ModbalError::Config(format!(
                "method {}: needs at least 2 modalities (it re-trains the low-contributing one), \
                 the model has {m} ({:?})",
                self.name,
                model.modalities()
            )));
        }
        if m > MAX_SHAPLEY_MODALITIES {
            return Err(ModbalError::Config(format!(
                "method {}: the exact Shapley valuation is limited to {MAX_SHAPLEY_MODALITIES} \
                 modalities (2^M head evaluations per sample), the model has {m} ({:?})",
                self.name,
                model.modalities()
            )));
        }
        Ok(m)
    }

    /// The next occurrence's mode of sample `id` (`None`: every modality).
    fn next_mode(&mut self, id: usize) -> Option<usize> {
        let modes = self.modes.get(id)?;
        let c = self.cursor.get_mut(id)?;
        let mode = modes.get(*c).copied().flatten();
        *c += 1;
        mode
    }

    /// Values the recorded training set; plans the next epoch's copies when it is active.
    fn value_training_set(
        &mut self,
        model: &dyn MultimodalModel,
        ctx: &mut RunContext,
    ) -> Result<()> {
        let Some(RecordedSet {
            ids,
            labels,
            features,
        }) = self.record.take()?
        else {
            return Ok(());
        };
        let names = model.modalities().to_vec();
        let m = names.len();
        let contrib = sample_contributions(model, &features, &labels)?;
        let means = column_means(&contrib, m);
        for (k, name) in names.iter().enumerate() {
            ctx.log.set(format!("contrib.{name}"), means[k]);
        }
        ctx.log.set("valuation.samples", ids.len());
        // Copies are planned only for an epoch that re-samples (official: from epoch warmup − 1).
        if ctx.epoch + 1 < self.warm_up_epochs(ctx)? {
            return Ok(());
        }
        let (planned, plan) = plan_copies(&self.rule, &contrib, m, &mut ctx.rng);
        let len = ids.iter().max().map(|&i| i + 1).unwrap_or(0);
        let mut extra = vec![vec![0u32; m]; len];
        for (&id, row) in ids.iter().zip(planned) {
            extra[id] = row;
        }
        let n = ids.len().max(1) as f64;
        let mut total = 0usize;
        for (k, name) in names.iter().enumerate() {
            let c: usize = extra.iter().map(|r| r[k] as usize).sum();
            total += c;
            ctx.log.set(format!("next_copies.{name}"), c);
        }
        ctx.log.set("next_epoch_len_ratio", 1.0 + total as f64 / n);
        if let Some(p) = plan {
            for (k, name) in names.iter().enumerate() {
                ctx.log
                    .set(format!("subset_contrib.{name}"), p.subset_contrib[k]);
            }
            ctx.log.set("difference", p.difference);
            ctx.log.set("enhanced", names[p.enhanced].clone());
            ctx.log.set("resample_num", p.resample_num);
        }
        self.state.extra = extra;
        Ok(())
    }
}

impl Method for Valuation {
    fn name(&self) -> &str {
        self.name
    }

    /// Warm-up epochs are plain joint training: only the re-sampling epochs are reported.
    fn selectable(&self, ctx: &RunContext, _stages: &[modbal_core::StageSpec]) -> bool {
        self.active(ctx).unwrap_or(false)
    }

    /// Every index once, plus one occurrence per planned copy (active epochs only).
    fn epoch_indices(
        &mut self,
        train_len: usize,
        ctx: &mut RunContext,
    ) -> Result<Option<Vec<usize>>> {
        self.modes = vec![vec![None]; train_len];
        self.cursor = vec![0; train_len];
        let active = self.active(ctx)? && !self.state.extra.is_empty();
        ctx.log.set("resample.active", active);
        if !active {
            ctx.log.set("resample.epoch_len", train_len);
            return Ok(None);
        }
        let mut order = Vec::with_capacity(train_len);
        for (i, modes) in self.modes.iter_mut().enumerate() {
            order.push(i);
            if let Some(row) = self.state.extra.get(i) {
                for (m, &c) in row.iter().enumerate() {
                    for _ in 0..c {
                        modes.push(Some(m));
                        order.push(i);
                    }
                }
            }
        }
        ctx.log.set("resample.epoch_len", order.len());
        Ok(Some(order))
    }

    /// Checks the modality count (2 ≤ M ≤ 4) and logs the copies of this epoch per modality.
    fn on_epoch_start(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.check_modalities(model)?;
        ctx.log.set("warm_up_epochs_run", self.warm_up_epochs(ctx)?);
        for (k, name) in model.modalities().iter().enumerate() {
            let c = self
                .modes
                .iter()
                .flatten()
                .filter(|&&mode| mode == Some(k))
                .count();
            ctx.log.set(format!("resample.copies.{name}"), c);
        }
        Ok(())
    }

    /// Encoders, then the head on the features with, for each copy's row, every modality but the
    /// copy's zeroed. Returns the unmasked features.
    fn forward(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        _ctx: &mut RunContext,
    ) -> Result<MultimodalOutput> {
        crate::util::check_batch_inputs(self.name, model, batch)?;
        let m = model.modalities().len();
        let features = (0..m)
            .map(|i| model.encode(i, &batch.inputs[i], true))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let modes: Vec<Option<usize>> = batch
            .sample_ids
            .iter()
            .map(|&id| self.next_mode(id))
            .collect();
        let (fused_logits, per_modality_logits) = if modes.iter().all(Option::is_none) {
            model.head(&features)?
        } else {
            let b = modes.len();
            let masked = features
                .iter()
                .enumerate()
                .map(|(k, f)| {
                    let keep: Vec<f32> = modes
                        .iter()
                        .map(|mode| match mode {
                            Some(j) if *j != k => 0.0,
                            _ => 1.0,
                        })
                        .collect();
                    let keep = Tensor::from_vec(keep, (b, 1), f.device())?.to_dtype(f.dtype())?;
                    f.broadcast_mul(&keep)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            model.head(&masked)?
        };
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits,
            features,
        })
    }

    /// CE of the fused logits (unimodal CEs logged); the batch's features are recorded for the
    /// end-of-epoch valuation.
    fn loss(
        &mut self,
        model: &dyn MultimodalModel,
        batch: &Batch,
        out: &MultimodalOutput,
        _ctx: &mut RunContext,
    ) -> Result<LossTerms> {
        let labels: Vec<u32> = batch.labels.to_dtype(DType::U32)?.to_vec1()?;
        self.record
            .record(&batch.sample_ids, &out.features, &labels)?;
        fused_ce_logging_unimodal(model, batch, out)
    }

    /// Values the recorded training set (logged `contrib.*`) and plans the next epoch's copies.
    fn on_epoch_end(&mut self, model: &dyn MultimodalModel, ctx: &mut RunContext) -> Result<()> {
        self.value_training_set(model, ctx)
    }

    fn state(&self) -> serde_json::Value {
        crate::util::state_json(&self.state)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.state = crate::util::saved_state(self.name, state)?.unwrap_or_default();
        self.record.clear();
        Ok(())
    }
}
