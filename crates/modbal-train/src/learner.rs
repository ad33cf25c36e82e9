//! [`Learner`]: the training loop. It takes a model, a method, the three splits and a typed
//! [`TrainConfig`], and knows no method, dataset or encoder by name: everything specific happens
//! in the [`Method`] hooks. See the crate docs for the run directory it writes.

use crate::clip::Clipped;
use crate::config::TrainConfig;
use crate::distributed::{
    broadcast_buffers, broadcast_state, shard_batches, AllReduced, Collective,
};
use crate::metrics::{MetricAccumulator, SplitMetrics};
pub use crate::record::EpochRecord;
use crate::run_dir::{
    append_line, claim_run_dir, crash_point, git_revision, lock_run_dir, read_json,
    recover_checkpoint, restore_journal, save_best, save_checkpoint, write_atomic, write_json,
    BestState, CheckpointState, RunLock, METHOD_TENSORS,
};
use crate::summary::{print_table, test_curve_summary, Summary, TEST_CURVE_FILE};
use crate::tensorboard::{
    config_markdown, epoch_scalars, event_files, EventWriter, CONFIG_TAG, TENSORBOARD_DIR,
};
use candle_core::{Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use modbal_core::{EvalOutputs, Method, ModbalError, MultimodalModel, Result, RunContext};
use modbal_data::noise::NoiseConfig;
use modbal_data::{DataLoader, Dataset, Splits};
use modbal_tensors::{Optimizer, OptimizerState, SeededRng};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// How the loop reports progress.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Show an indicatif progress bar per epoch.
    pub progress: bool,
    /// Print nothing (no per-epoch lines, no table).
    pub quiet: bool,
    /// Stop after this many epochs of this call (the run stays resumable). For tests and
    /// time-sliced jobs.
    pub stop_after: Option<usize>,
    /// Write into exactly this directory (must not hold a run), instead of the directory the
    /// caller names (a run config's `out_dir/name`).
    pub run_dir: Option<PathBuf>,
}

/// What [`Learner::fit`] and [`Learner::resume`] return.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub summary: Option<Summary>,
    pub history: Vec<EpochRecord>,
}

/// The two random streams of a run with seed `seed`: the model's initial weights come from the
/// first ([`init_rng`]), everything the loop and the method draw from the second (the
/// [`RunContext`]'s `rng`). Build the model with `init_rng(seed)` so that the same seed gives the
/// same run whoever composes it.
fn seed_streams(seed: u64) -> (SeededRng, SeededRng) {
    let mut root = SeededRng::new(seed);
    let init = root.fork();
    let run = root.fork();
    (init, run)
}

/// The generator a model of a run with seed `seed` draws its initial weights from.
pub fn init_rng(seed: u64) -> SeededRng {
    seed_streams(seed).0
}

/// A model, a method and the data, ready to train: the generic loop.
///
/// ```no_run
/// # fn demo(model: Box<dyn modbal_core::MultimodalModel>, method: Box<dyn modbal_core::Method>,
/// #         splits: modbal_data::Splits) -> modbal_core::Result<()> {
/// use modbal_train::{Learner, TrainConfig, TrainOptions};
/// let learner = Learner::new(model, method, splits, TrainConfig::default(), 0)?
///     .with_dataset_name("my-data");
/// let run = learner.fit("runs/my-run".as_ref(), "", &TrainOptions::default())?;
/// println!("{:?}", run.summary.map(|s| s.test.fusion_acc));
/// # Ok(()) }
/// ```
pub struct Learner {
    model: Box<dyn MultimodalModel>,
    method: Box<dyn Method>,
    splits: Splits,
    train: TrainConfig,
    seed: u64,
    dataset: String,
    noise: Option<NoiseConfig>,
    collective: Option<Arc<dyn Collective>>,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("method", &self.method.name())
            .field("modalities", &self.model.modalities())
            .field("splits", &self.splits)
            .field("train", &self.train)
            .field("seed", &self.seed)
            .finish()
    }
}

impl Learner {
    /// A learner for `model` (built with [`init_rng`]`(seed)` for reproducible runs) trained by
    /// `method` on `splits` under `train`. Checks `train` ([`TrainConfig::check`]), the splits,
    /// and that the model's modalities and classes are the data's.
    pub fn new(
        model: Box<dyn MultimodalModel>,
        method: Box<dyn Method>,
        splits: Splits,
        train: TrainConfig,
        seed: u64,
    ) -> Result<Self> {
        train.check()?;
        splits.validate()?;
        if model.modalities() != splits.train.modalities() {
            return Err(ModbalError::Config(format!(
                "the model's modalities {:?} are not the data's {:?} (same names, same order)",
                model.modalities(),
                splits.train.modalities()
            )));
        }
        if model.num_classes() != splits.train.num_classes() {
            return Err(ModbalError::Config(format!(
                "the model has {} classes, the data {}",
                model.num_classes(),
                splits.train.num_classes()
            )));
        }
        Ok(Self {
            model,
            method,
            splits,
            train,
            seed,
            dataset: "custom".into(),
            noise: None,
            collective: None,
        })
    }

    /// The dataset's name as `summary.json` reports it (default `"custom"`).
    pub fn with_dataset_name(mut self, name: impl Into<String>) -> Self {
        self.dataset = name.into();
        self
    }

    /// The robustness protocol's corruption already applied to the splits (recorded in
    /// `metrics.jsonl` and `summary.json`; the learner does not apply it).
    pub fn with_noise(mut self, noise: Option<NoiseConfig>) -> Self {
        self.noise = noise;
        self
    }

    /// Train as rank `c.rank()` of `c.world_size()` data-parallel replicas
    /// ([`crate::distributed`], PyTorch DDP's semantics): the replicas start from rank 0's
    /// weights; each epoch's seeded order is cut into global batches of
    /// `world_size × batch_size` of which this rank trains its share
    /// ([`crate::distributed::shard_batches`]); every optimizer step averages the gradients over
    /// the ranks first (before clipping); BatchNorm running statistics are rank 0's before each
    /// forward. Validation and test are evaluated whole on every rank (the replicas are equal,
    /// so are the results); the training metrics of `metrics.jsonl` are summed over the ranks
    /// (the whole epoch, as one process would log it).
    /// Every rank writes a run directory: the caller gives rank 0 the real one and the others
    /// scratch directories (`modbal`'s launcher does).
    pub fn with_collective(mut self, c: Arc<dyn Collective>) -> Self {
        self.collective = Some(c);
        self
    }

    /// The model.
    pub fn model(&self) -> &dyn MultimodalModel {
        self.model.as_ref()
    }

    /// The method.
    pub fn method(&self) -> &dyn Method {
        self.method.as_ref()
    }

    /// The splits.
    pub fn splits(&self) -> &Splits {
        &self.splits
    }

    /// Training needs as many ranks as `train.world_size` says (evaluation needs none).
    fn check_world(&self) -> Result<()> {
        let world = self.collective.as_ref().map_or(1, |c| c.world_size());
        if world != self.train.world_size {
            return Err(ModbalError::Config(format!(
                "train.world_size is {} but the learner has {world} rank(s): train it with \
                 `modbal train` (which starts the ranks) or give it a collective of that size \
                 (Learner::with_collective)",
                self.train.world_size
            )));
        }
        Ok(())
    }

    fn session(self, dir: PathBuf, lock: Option<RunLock>, opts: &TrainOptions) -> Result<Session> {
        // The run trains where the model lives (candle tells two openings of one GPU apart, so
        // the device is taken from the parameters, not opened again); it must be the
        // configured one.
        let device = match self.model.params().all().into_iter().next() {
            Some((_, v)) => v.device().clone(),
            None => self.train.device.open()?,
        };
        if !self.train.device.is_location(&device) {
            return Err(ModbalError::Config(format!(
                "the model's parameters are on {:?} but train.device is \"{}\": build the \
                 model on `train.device.open()`",
                device.location(),
                self.train.device
            )));
        }
        let mut ctx = RunContext::new(self.seed, device.clone(), self.train.epochs);
        ctx.rng = seed_streams(self.seed).1;
        Ok(Session {
            job: self,
            ctx,
            dir,
            device,
            opts: opts.clone(),
            _lock: lock,
            tensorboard: None,
        })
    }

    /// Train a new run in `base` (or `base-1`, `base-2`… if `base` holds a run already or
    /// another process is using it; or in `opts.run_dir`), writing `config_toml` (the caller's
    /// record of the run's configuration, reloaded by whoever resumes it) as `config.toml`. A
    /// directory left by a run killed before its first checkpoint is reused.
    pub fn fit(self, base: &Path, config_toml: &str, opts: &TrainOptions) -> Result<RunOutcome> {
        self.check_world()?;
        let (dir, lock) = claim_run_dir(opts.run_dir.as_deref().unwrap_or(base))?;
        let mut s = self.session(dir, Some(lock), opts)?;
        write_atomic(&s.dir.join("config.toml"), config_toml.as_bytes())?;
        write_json(
            &s.dir.join("meta.json"),
            &serde_json::json!({
                "modbal_version": env!("CARGO_PKG_VERSION"),
                "git_revision": git_revision(),
                "seed": s.job.seed,
                "trainable_parameters": s.job.model.params().num_trainable(),
            }),
        )?;
        for f in ["metrics.jsonl", "timing.jsonl"] {
            write_atomic(&s.dir.join(f), b"")?;
        }
        run_loop(&mut s, None)
    }

    /// Continue the interrupted run in `run_dir` from `checkpoints/last`. The learner must be
    /// built as the run's was (same configuration, seed and data): its weights, optimizer and
    /// method state and the RNG are then replaced by the checkpoint's, and the resumed
    /// `metrics.jsonl` is byte-identical to an uninterrupted run's.
    pub fn resume(self, run_dir: &Path, opts: &TrainOptions) -> Result<RunOutcome> {
        self.check_world()?;
        let lock = lock_run_dir(run_dir)?;
        let mut s = self.session(run_dir.to_path_buf(), Some(lock), opts)?;
        // The newest complete checkpoint (checksums verified), made `checkpoints/last`.
        let (last, st) = recover_checkpoint(run_dir)?;
        s.job
            .model
            .params()
            .load(last.join("model.safetensors"))
            .map_err(|e| ModbalError::Data(format!("{}: {e}", last.display())))?;
        s.job.method.load_state(&st.method)?;
        let mt = last.join(METHOD_TENSORS);
        let method_tensors: BTreeMap<String, Tensor> = if mt.exists() {
            candle_core::safetensors::load(&mt, &s.device)
                .map_err(|e| ModbalError::Data(format!("{}: {e}", mt.display())))?
                .into_iter()
                .collect()
        } else {
            BTreeMap::new()
        };
        s.job.method.load_state_tensors(&method_tensors)?;
        s.ctx.rng = SeededRng::from_state(&st.rng).map_err(ModbalError::Data)?;
        s.ctx.step = st.step;
        // The metrics files hold exactly the completed epochs' lines (rebuilt from the
        // checkpoint's copies).
        restore_journal(run_dir, &last, st.epochs_done)?;
        let opt_state = OptimizerState::load(&last, "optimizer", &s.device)?;
        run_loop(&mut s, Some((st, opt_state)))
    }

    /// Load the selected (best-on-validation) model and method state of the finished run in
    /// `run_dir` (`checkpoints/best`) and evaluate it on this learner's test split.
    pub fn test_checkpoint(self, run_dir: &Path) -> Result<SplitMetrics> {
        let opts = TrainOptions {
            quiet: true,
            ..Default::default()
        };
        let mut s = self.session(run_dir.to_path_buf(), None, &opts)?;
        let best = run_dir.join("checkpoints").join("best");
        s.job
            .model
            .params()
            .load(best.join("model.safetensors"))
            .map_err(|e| ModbalError::Data(format!("{}: {e}", best.display())))?;
        let bs: BestState = read_json(&best.join("state.json"))?;
        s.job.method.load_state(&bs.method)?;
        Ok(s.evaluate(s.job.splits.test.clone())?.0)
    }
}

/// Everything a run needs in memory: the learner and where the run stands.
struct Session {
    job: Learner,
    ctx: RunContext,
    dir: PathBuf,
    device: Device,
    opts: TrainOptions,
    /// Held while training in `dir` (none when only evaluating a finished run).
    _lock: Option<RunLock>,
    /// The event file of this session (`train.tensorboard`, rank 0 only).
    tensorboard: Option<EventWriter>,
}

impl Session {
    /// Evaluate the current model and method on `ds` (see [`evaluate`]).
    fn evaluate(&self, ds: Arc<dyn Dataset>) -> Result<(SplitMetrics, EvalOutputs)> {
        evaluate(
            self.job.model.as_ref(),
            self.job.method.as_ref(),
            ds,
            self.job.train.eval_batch_size,
            self.job.train.prefetch,
            &self.device,
        )
    }
}

/// Evaluate on a split: metrics and the collected outputs (for `on_validation`).
///
/// The outputs stay on the run's device until the split is done (no host round trip per
/// batch: on a GPU the batches queue up back to back); then labels, losses and logits cross to
/// the host once, and the returned [`EvalOutputs`] are CPU tensors.
fn evaluate(
    model: &dyn MultimodalModel,
    method: &dyn Method,
    ds: Arc<dyn Dataset>,
    batch_size: usize,
    prefetch: usize,
    device: &Device,
) -> Result<(SplitMetrics, EvalOutputs)> {
    let names = model.modalities().to_vec();
    let mut acc = MetricAccumulator::new(model.num_classes(), names.len());
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut losses = Vec::new();
    let mut labels = Vec::new();
    let mut fused = Vec::new();
    let mut per: Vec<Vec<Tensor>> = vec![Vec::new(); names.len()];
    let mut feats: Vec<Vec<Tensor>> = vec![Vec::new(); names.len()];
    let order = (0..ds.len()).collect();
    for batch in DataLoader::new_on(ds, order, batch_size, prefetch, device)? {
        let batch = batch?;
        let out = model.forward_t(&batch.inputs, false)?;
        let pred = method.predict(model, &out)?;
        let per_logits = method.predict_modalities(model, &out)?;
        if per_logits.len() != names.len() {
            return Err(ModbalError::Data(format!(
                "method {}: predict_modalities gave {} logits for the {} modalities {names:?}",
                method.name(),
                per_logits.len(),
                names.len()
            )));
        }
        losses.push(modbal_tensors::cross_entropy(&pred, &batch.labels)?);
        sizes.push(batch.len());
        ids.extend(batch.sample_ids.iter().copied());
        labels.push(batch.labels);
        fused.push(pred);
        for m in 0..names.len() {
            per[m].push(per_logits[m].clone());
            feats[m].push(out.features[m].clone());
        }
    }
    // One transfer per output: concatenated on the device, then moved.
    let gather = |v: &[Tensor]| -> candle_core::Result<Tensor> {
        if v.is_empty() {
            candle_core::bail!("evaluation on an empty split");
        }
        Tensor::cat(v, 0)?.to_device(&Device::Cpu)
    };
    let labels: Vec<u32> = gather(&labels)?.to_vec1()?;
    let losses: Vec<f64> = Tensor::stack(&losses, 0)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1()?;
    let outputs = EvalOutputs {
        sample_ids: ids,
        labels,
        fused_logits: gather(&fused)?,
        per_modality_logits: per
            .iter()
            .map(|v| gather(v))
            .collect::<candle_core::Result<_>>()?,
        features: feats
            .iter()
            .map(|v| gather(v))
            .collect::<candle_core::Result<_>>()?,
    };
    acc.add_batches(
        &losses,
        &sizes,
        &outputs.labels,
        &outputs.fused_logits,
        &outputs.per_modality_logits,
    )?;
    Ok((acc.finish(&names), outputs))
}

fn stage_of(stages: &[modbal_core::StageSpec], epoch: usize) -> (usize, usize) {
    let mut start = 0;
    for (i, st) in stages.iter().enumerate() {
        if epoch < start + st.epochs {
            return (i, epoch - start);
        }
        start += st.epochs;
    }
    (
        stages.len() - 1,
        epoch - (start - stages.last().map(|s| s.epochs).unwrap_or(0)),
    )
}

fn build_optimizer(s: &Session, stage: usize) -> Result<Box<dyn Optimizer>> {
    let prefixes = s.job.method.trainable_prefixes(stage, s.job.model.as_ref());
    let mut vars: BTreeMap<String, Var> = BTreeMap::new();
    for p in &prefixes {
        for (n, v) in s.job.model.params().trainable_with_prefix(p) {
            vars.insert(n, v);
        }
    }
    if vars.is_empty() {
        return Err(ModbalError::Config(format!(
            "stage {stage}: no trainable parameters match the prefixes {prefixes:?}"
        )));
    }
    let inner = s.job.train.optimizer.build(vars.into_iter().collect())?;
    let clipped = Box::new(Clipped {
        inner,
        max_norm: s.job.train.clip_grad_norm,
    });
    Ok(match &s.job.collective {
        // DDP clips the averaged gradient: the all-reduce goes outside.
        Some(c) => Box::new(AllReduced::new(clipped, c.clone())),
        None => clipped,
    })
}

/// One training epoch: the method's indices (shuffled), the loader, every step; the epoch's
/// training metrics.
fn train_epoch(
    s: &mut Session,
    opt: &mut dyn Optimizer,
    epoch: usize,
    epochs: usize,
) -> Result<SplitMetrics> {
    let names = s.job.model.modalities().to_vec();
    let n = s.job.splits.train.len();
    let mut order = match s.job.method.epoch_indices(n, &mut s.ctx)? {
        Some(v) => {
            if let Some(&bad) = v.iter().find(|&&i| i >= n) {
                return Err(ModbalError::Data(format!(
                    "method {} asked for training index {bad} of {n}",
                    s.job.method.name()
                )));
            }
            v
        }
        None => (0..n).collect(),
    };
    s.ctx.rng.shuffle(&mut order);
    // Augmentation of the real datasets is seeded by (run seed, epoch, sample).
    s.job.splits.train.set_epoch(s.job.seed, epoch);
    // Dropout masks too (BERT, sequence Transformer): seeded by (run seed, epoch, modality).
    s.job.model.set_epoch(s.job.seed, epoch);
    let loader = match &s.job.collective {
        // This rank's share of each global batch of world × batch_size.
        Some(c) => DataLoader::from_batches(
            s.job.splits.train.clone(),
            shard_batches(&order, c.world_size(), s.job.train.batch_size, c.rank())?,
            s.job.train.prefetch,
            &s.device,
        )?,
        None => DataLoader::new_on(
            s.job.splits.train.clone(),
            order,
            s.job.train.batch_size,
            s.job.train.prefetch,
            &s.device,
        )?,
    };
    s.ctx.batches_per_epoch = loader.num_batches();
    s.job
        .method
        .on_epoch_start(s.job.model.as_ref(), &mut s.ctx)?;
    let pb = if s.opts.progress && !s.opts.quiet {
        let pb = ProgressBar::new(loader.num_batches() as u64);
        pb.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("static template")
                .progress_chars("=> "),
        );
        pb.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut acc = MetricAccumulator::new(s.job.model.num_classes(), names.len());
    for (bi, batch) in loader.enumerate() {
        let batch = batch?;
        s.ctx.batch_index = bi;
        if let Some(c) = &s.job.collective {
            // DDP's broadcast_buffers: every replica normalises with rank 0's running stats.
            broadcast_buffers(c.as_ref(), s.job.model.params())?;
        }
        let y: Vec<u32> = batch.labels.to_vec1()?;
        let step = s
            .job
            .method
            .train_step(s.job.model.as_ref(), batch, opt, &mut s.ctx)
            .map_err(|e| match e {
                ModbalError::Candle(c) => ModbalError::Data(format!(
                    "epoch {epoch}, batch {bi}: {c} (metrics and checkpoints of completed epochs are kept in {})",
                    s.dir.display()
                )),
                e => e,
            })?;
        s.ctx.step += 1;
        let pred = s.job.method.predict(s.job.model.as_ref(), &step.output)?;
        let per_logits = s
            .job
            .method
            .predict_modalities(s.job.model.as_ref(), &step.output)?;
        acc.add(step.loss, &y, &pred, &per_logits)?;
        pb.inc(1);
        pb.set_message(format!("loss {:.4}", step.loss));
    }
    pb.finish_and_clear();
    if let Some(c) = &s.job.collective {
        // The epoch's training metrics over every rank's share, not this rank's alone.
        let v = acc.to_values();
        let n = v.len();
        let local = Tensor::from_vec(v, n, &s.device)?;
        let total: Vec<f64> = c
            .all_reduce_sum(&local)?
            .to_device(&Device::Cpu)?
            .to_vec1()?;
        acc.set_values(&total)?;
    }
    Ok(acc.finish(&names))
}

/// The best selectable epoch so far: its validation accuracy and a snapshot of the model and
/// the method state it left (what the end of the run restores).
#[derive(Default)]
struct Best {
    epoch: Option<usize>,
    acc: Option<f64>,
    snapshot: Option<Snapshot>,
}

impl Best {
    /// Model selection on validation only, among the epochs the method may report: a new best
    /// is kept in memory and written to `checkpoints/best`.
    fn consider(
        &mut self,
        s: &Session,
        epoch: usize,
        val_acc: f64,
        selectable: bool,
    ) -> Result<()> {
        // `>`: a NaN accuracy is never better.
        let better = val_acc > self.acc.unwrap_or(f64::NEG_INFINITY);
        if !selectable || !better {
            return Ok(());
        }
        self.acc = Some(val_acc);
        self.epoch = Some(epoch);
        let snap = s.job.model.params().snapshot()?;
        // `checkpoints/best.pending`, promoted to `best/` with this epoch's checkpoint.
        save_best(
            &s.dir,
            s.job.model.params(),
            &BestState {
                epoch,
                method: s.job.method.state(),
            },
        )?;
        self.snapshot = Some((snap, s.job.method.state()));
        Ok(())
    }
}

/// The method's stages, checked to add up to `train.epochs`.
fn planned_stages(s: &Session) -> Result<Vec<modbal_core::StageSpec>> {
    let epochs = s.job.train.epochs;
    let stages = s.job.method.stages(epochs, s.job.model.modalities());
    let total: usize = stages.iter().map(|x| x.epochs).sum();
    if total != epochs {
        let plan: Vec<String> = stages
            .iter()
            .map(|x| format!("{} {}", x.name, x.epochs))
            .collect();
        return Err(ModbalError::Config(format!(
            "method {} plans {total} epochs over its stages ({}), train.epochs is {epochs}",
            s.job.method.name(),
            plan.join(", ")
        )));
    }
    Ok(stages)
}

/// Where a resumed run stands: the best epoch so far (and its snapshot from
/// `checkpoints/best`) and the metrics lines of the completed epochs.
fn restore_progress(s: &Session, st: &CheckpointState) -> Result<(Best, Vec<EpochRecord>)> {
    let mut best = Best {
        epoch: st.best_epoch,
        acc: st.best_val_acc,
        snapshot: None,
    };
    if best.epoch.is_some() {
        let bdir = s.dir.join("checkpoints").join("best");
        let map = candle_core::safetensors::load(bdir.join("model.safetensors"), &s.device)?;
        let bs: BestState = read_json(&bdir.join("state.json"))?;
        if Some(bs.epoch) != best.epoch {
            return Err(ModbalError::Data(format!(
                "{}: holds epoch {} but the checkpoint's best epoch is {:?}",
                bdir.display(),
                bs.epoch,
                best.epoch
            )));
        }
        best.snapshot = Some((map.into_iter().collect(), bs.method));
    }
    let metrics_path = s.dir.join("metrics.jsonl");
    let mut history = Vec::new();
    for line in std::fs::read_to_string(&metrics_path)
        .map_err(|e| ModbalError::io("reading", &metrics_path, e))?
        .lines()
    {
        history.push(serde_json::from_str(line)?);
    }
    Ok((best, history))
}

/// The epoch's `metrics.jsonl` lines (train with the method's log, val), and with
/// `train.report_test_curve` the test split's line in `test_curve.jsonl` (evaluated after every
/// decision of the epoch; nothing reads it back during training).
fn record_epoch(
    s: &mut Session,
    epoch: usize,
    stage: &str,
    lr: f64,
    train_m: &SplitMetrics,
    val_m: &SplitMetrics,
) -> Result<([EpochRecord; 2], Option<EpochRecord>)> {
    let mut tr = EpochRecord::new(epoch, stage, "train", train_m, lr);
    tr.method = s.ctx.log.take();
    let mut va = EpochRecord::new(epoch, stage, "val", val_m, lr);
    if let Some(n) = &s.job.noise {
        tr.noise = n.on.covers("train").then(|| n.clone());
        va.noise = n.on.covers("val").then(|| n.clone());
    }
    let metrics_path = s.dir.join("metrics.jsonl");
    for r in [&tr, &va] {
        append_line(&metrics_path, &serde_json::to_string(r)?)?;
    }
    let mut test = None;
    if s.job.train.report_test_curve {
        let (test_m, _) = s.evaluate(s.job.splits.test.clone())?;
        let mut te = EpochRecord::new(epoch, stage, "test", &test_m, lr);
        if let Some(n) = &s.job.noise {
            te.noise = n.on.covers("test").then(|| n.clone());
        }
        append_line(&s.dir.join(TEST_CURVE_FILE), &serde_json::to_string(&te)?)?;
        test = Some(te);
    }
    Ok(([tr, va], test))
}

/// The lines of a JSONL file (absent: none), parsed; the error names the file and line.
fn read_jsonl<T: for<'de> serde::Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ModbalError::io("reading", path, e)),
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| ModbalError::Data(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// The session's TensorBoard event file (`train.tensorboard`; rank 0 only: the other ranks'
/// directories are scratch). Each session opens a new file in `<run>/tensorboard/`. A resumed
/// run whose directory already holds event files first writes `SessionLog START` at the epoch
/// it trains next, so that TensorBoard drops the events of epochs after the checkpoint that an
/// interrupted session wrote (they are trained again). Otherwise (a new run, or one resumed
/// from a directory without event files) the file starts with `config.toml` as text at step 0
/// and the completed epochs' scalars, from the metrics files.
fn open_tensorboard(
    s: &Session,
    start_epoch: usize,
    history: &[EpochRecord],
) -> Result<Option<EventWriter>> {
    let rank0 = s.job.collective.as_ref().is_none_or(|c| c.rank() == 0);
    if !s.job.train.tensorboard || !rank0 {
        return Ok(None);
    }
    let dir = s.dir.join(TENSORBOARD_DIR);
    let earlier = !event_files(&dir)?.is_empty();
    let mut w = EventWriter::create(&dir)?;
    if start_epoch > 0 && earlier {
        w.session_start(start_epoch as i64)?;
    } else {
        let cfg_path = s.dir.join("config.toml");
        let cfg = std::fs::read_to_string(&cfg_path)
            .map_err(|e| ModbalError::io("reading", &cfg_path, e))?;
        w.text(0, CONFIG_TAG, &config_markdown(&cfg))?;
        #[derive(serde::Deserialize)]
        struct Timing {
            epoch: usize,
            seconds: f64,
        }
        let timing: Vec<Timing> = read_jsonl(&s.dir.join("timing.jsonl"))?;
        let test: Vec<EpochRecord> = read_jsonl(&s.dir.join(TEST_CURVE_FILE))?;
        for epoch in 0..start_epoch {
            let mut recs: Vec<&EpochRecord> = history.iter().filter(|r| r.epoch == epoch).collect();
            recs.extend(test.iter().filter(|r| r.epoch == epoch));
            let secs = timing.iter().find(|t| t.epoch == epoch).map(|t| t.seconds);
            w.scalars(epoch as i64, &epoch_scalars(&recs, secs))?;
        }
    }
    w.flush()?;
    Ok(Some(w))
}

/// The per-epoch line on stdout.
fn print_epoch(
    epoch: usize,
    epochs: usize,
    train_m: &SplitMetrics,
    val_m: &SplitMetrics,
    lr: f64,
    secs: f64,
) {
    let mods: Vec<String> = val_m
        .modality_acc
        .iter()
        .map(|(k, v)| format!("{k} {v:.3}"))
        .collect();
    println!(
        "epoch {:>3}/{epochs}  train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} ({}) | lr {lr:.2e} | {secs:.1}s",
        epoch + 1,
        train_m.loss,
        train_m.fusion_acc,
        val_m.loss,
        val_m.fusion_acc,
        mods.join(", ")
    );
}

/// Epochs from the start (or the checkpoint) to the end (or `stop_after`): per stage a fresh
/// optimizer over the method's trainable prefixes, per epoch the scheduled rate, training,
/// validation and the method's epoch-end hooks, the records, model selection, the checkpoint;
/// then the plots and, for a finished run, [`finish_run`].
fn run_loop(
    s: &mut Session,
    resumed: Option<(CheckpointState, OptimizerState)>,
) -> Result<RunOutcome> {
    let epochs = s.job.train.epochs;
    let stages = planned_stages(s)?;
    let (mut start_epoch, mut best, mut history) = (0, Best::default(), Vec::new());
    let mut pending_opt_state = None;
    if let Some((st, os)) = resumed {
        start_epoch = st.epochs_done;
        (best, history) = restore_progress(s, &st)?;
        pending_opt_state = Some(os);
    }
    s.tensorboard = open_tensorboard(s, start_epoch, &history)?;
    let stop_at = s
        .opts
        .stop_after
        .map(|n| (start_epoch + n).min(epochs))
        .unwrap_or(epochs);
    if let Some(c) = &s.job.collective {
        // Replicas start equal (as DDP's constructor makes them): rank 0's weights and buffers.
        broadcast_state(c.as_ref(), s.job.model.params())?;
    }
    let mut opt: Option<Box<dyn Optimizer>> = None;
    let mut cur_stage = usize::MAX;
    for epoch in start_epoch..stop_at {
        let t0 = Instant::now();
        let (stage, stage_epoch) = stage_of(&stages, epoch);
        s.ctx.epoch = epoch;
        s.ctx.stage = stage;
        s.ctx.stage_epoch = stage_epoch;
        if stage != cur_stage {
            let mut o = build_optimizer(s, stage)?;
            if let Some(os) = pending_opt_state.take() {
                if stage_epoch > 0 {
                    o.load_state(&os)?;
                }
            }
            opt = Some(o);
            cur_stage = stage;
            if stage_epoch == 0 {
                s.job
                    .method
                    .on_stage_start(s.job.model.as_ref(), &mut s.ctx)?;
            }
        }
        let opt = opt.as_mut().expect("optimizer built at stage start");
        let lr = s
            .job
            .train
            .schedule
            .lr_at(s.job.train.optimizer.lr(), stage_epoch);
        let lr = s.job.method.epoch_lr(lr, &mut s.ctx)?;
        opt.set_lr(lr);
        let train_m = train_epoch(s, opt.as_mut(), epoch, epochs)?;
        // The rate the optimizer ended the epoch with (a method may set it per step).
        let lr = opt.lr();
        let (val_m, val_out) = s.evaluate(s.job.splits.val.clone())?;
        s.job
            .method
            .on_validation(s.job.model.as_ref(), &val_out, &mut s.ctx)?;
        s.job
            .method
            .on_epoch_end(s.job.model.as_ref(), &mut s.ctx)?;
        let (records, test_record) =
            record_epoch(s, epoch, &stages[stage].name, lr, &train_m, &val_m)?;
        let selectable = s.job.method.selectable(&s.ctx, &stages);
        best.consider(s, epoch, val_m.fusion_acc, selectable)?;
        let secs = t0.elapsed().as_secs_f64();
        append_line(
            &s.dir.join("timing.jsonl"),
            &serde_json::json!({"epoch": epoch, "seconds": secs}).to_string(),
        )?;
        if let Some(w) = &mut s.tensorboard {
            let mut recs: Vec<&EpochRecord> = records.iter().collect();
            recs.extend(test_record.as_ref());
            w.scalars(epoch as i64, &epoch_scalars(&recs, Some(secs)))?;
            w.flush()?;
        }
        if !s.opts.quiet {
            print_epoch(epoch, epochs, &train_m, &val_m, lr, secs);
        }
        history.extend(records);
        if (epoch + 1) % s.job.train.checkpoint_every == 0 || epoch + 1 == stop_at {
            save_checkpoint(
                &s.dir,
                &*s.job.model,
                s.job.method.as_ref(),
                opt.as_ref(),
                &CheckpointState {
                    epochs_done: epoch + 1,
                    step: s.ctx.step,
                    rng: s.ctx.rng.state(),
                    method: s.job.method.state(),
                    best_epoch: best.epoch,
                    best_val_acc: best.epoch.and(best.acc),
                },
            )?;
        }
        crash_point("epoch-end");
    }
    crate::plot::write_plots(&s.dir, &history)?;
    if stop_at < epochs {
        return Ok(RunOutcome {
            run_dir: s.dir.clone(),
            summary: None,
            history,
        });
    }
    let summary = finish_run(s, &stages, best.epoch.zip(best.snapshot))?;
    Ok(RunOutcome {
        run_dir: s.dir.clone(),
        summary: Some(summary),
        history,
    })
}

/// A model's parameters and the method's state, as the best-on-validation epoch left them.
type Snapshot = (BTreeMap<String, Tensor>, serde_json::Value);

/// The end of a finished run: test after the last epoch, the opt-in test curve's summary, then
/// the selected (best-on-validation) model and method state restored and evaluated once on
/// validation and test; `summary.json` written (and the table printed unless quiet).
fn finish_run(
    s: &mut Session,
    stages: &[modbal_core::StageSpec],
    best: Option<(usize, Snapshot)>,
) -> Result<Summary> {
    let epochs = s.job.train.epochs;
    // The model as the last epoch left it, on test (no selection).
    let test_last = s.evaluate(s.job.splits.test.clone())?.0;
    let test_curve = if s.job.train.report_test_curve {
        Some(test_curve_summary(&s.dir.join(TEST_CURVE_FILE), epochs)?)
    } else {
        None
    };
    // Final report: the best-val model, evaluated once on test.
    let (best, (snap, mstate)) = best.ok_or_else(|| {
        ModbalError::Config(format!(
            "method {} reported no selectable epoch in {epochs} epochs (stages: {}): no model to \
             evaluate; give the stages that the method reports (e.g. UDI's follower stage) at \
             least one epoch",
            s.job.method.name(),
            stages
                .iter()
                .map(|x| format!("{} {}", x.name, x.epochs))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let snap: HashMap<String, Tensor> = snap.into_iter().collect();
    s.job.model.params().restore(&snap)?;
    s.job.method.load_state(&mstate)?;
    let val = s.evaluate(s.job.splits.val.clone())?.0;
    let test = s.evaluate(s.job.splits.test.clone())?.0;
    let summary = Summary {
        run: s
            .dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        method: s.job.method.name().to_string(),
        dataset: s.job.dataset.clone(),
        seed: s.job.seed,
        epochs,
        best_epoch: best,
        selected_on: "val.fusion_acc".into(),
        val,
        test,
        test_last,
        test_curve,
        noise: s.job.noise.clone(),
    };
    write_json(&s.dir.join("summary.json"), &summary)?;
    if !s.opts.quiet {
        print_table(&summary, &s.dir);
    }
    Ok(summary)
}
