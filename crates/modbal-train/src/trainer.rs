//! The training loop (see the crate docs for the run directory it writes).

use crate::config::{RunConfig, TextDatasetConfig};
use crate::metrics::{MetricAccumulator, SplitMetrics};
pub use crate::record::EpochRecord;
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use modbal_core::{EvalOutputs, Method, ModbalError, MultimodalModel, Result, RunContext};
use modbal_data::noise::{NoiseConfig, NoiseOn};
use modbal_data::{DataLoader, Dataset, DatasetConfig, Splits};
use modbal_encoders::{EncoderConfig, ModalitySpec, MultimodalNet};
use modbal_tensors::{global_grad_norm, Optimizer, OptimizerState, RngState, SeededRng};
use modbal_text::TextEncoding;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
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
    /// Write into exactly this directory (must not hold a run), instead of `out_dir/name`.
    pub run_dir: Option<PathBuf>,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub run: String,
    pub method: String,
    pub dataset: String,
    pub seed: u64,
    pub epochs: usize,
    pub best_epoch: usize,
    pub selected_on: String,
    /// Validation metrics of the selected model.
    pub val: SplitMetrics,
    /// The headline: test metrics of the model selected on validation (`best_epoch`).
    pub test: SplitMetrics,
    /// Test metrics of the model after the last epoch (no selection at all).
    pub test_last: SplitMetrics,
    /// Only with `train.report_test_curve = true` (`--report-test-curve`): the test curve's best
    /// epoch, i.e. test-set selection as some papers report it. Never used for any decision;
    /// present so that a run can be set beside such a published number like for like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_curve: Option<TestCurveSummary>,
    /// The robustness protocol's corruption (`noise.on` says which splits); absent when clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseConfig>,
}

/// `summary.json`'s `test_curve` (see [`Summary::test_curve`]); the per-epoch values are in
/// `test_curve.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TestCurveSummary {
    /// Always [`TEST_CURVE_WARNING`].
    pub warning: String,
    /// The epoch with the highest test fusion accuracy (first one on ties).
    pub best_epoch: usize,
    /// The test metrics at that epoch.
    pub test: SplitMetrics,
}

/// What `summary.json` says next to the test-selected numbers.
pub const TEST_CURVE_WARNING: &str = "selected on the TEST split: not a valid model selection; \
     for comparison with papers that report the best test epoch only (the headline is `test`)";

/// File of the per-epoch test metrics written with `train.report_test_curve`.
pub const TEST_CURVE_FILE: &str = "test_curve.jsonl";

/// What [`train`] returns.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub summary: Option<Summary>,
    pub history: Vec<EpochRecord>,
}

/// File of `checkpoints/last` holding [`Method::state_tensors`] (absent when a method has none).
const METHOD_TENSORS: &str = "method.safetensors";

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    /// Epochs completed.
    epochs_done: usize,
    step: usize,
    rng: RngState,
    method: serde_json::Value,
    best_epoch: Option<usize>,
    /// Validation accuracy of `best_epoch`; `None` (JSON `null`) while no selectable epoch has
    /// been validated (e.g. UDI inside its unimodal stages). Older checkpoints hold a number.
    best_val_acc: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct BestState {
    epoch: usize,
    method: serde_json::Value,
}

/// Default encoder of a modality of a built-in dataset.
fn default_encoder(dataset: &DatasetConfig, modality: &str, shape: &[usize]) -> EncoderConfig {
    // modbal-text datasets: the text encoder follows the text encoding.
    if let Ok(Some(t)) = TextDatasetConfig::parse(dataset) {
        if let (Some(enc), "text") = (t.text_encoding(), modality) {
            return match enc {
                // WordPiece ids only make sense to BERT (pretrained weights required).
                TextEncoding::Wordpiece { .. } => EncoderConfig::Bert {
                    repo: modbal_encoders::encoder_config::default_bert_repo(),
                    revision: modbal_encoders::pretrained::default_revision(),
                    weights: None,
                    pretrained: true,
                    pooling: Default::default(),
                },
                // IBML's text encoder: GloVe (same file and vocabulary) + BiGRU.
                TextEncoding::GloveIds {
                    glove, max_words, ..
                } => EncoderConfig::BiGru {
                    glove: Some(glove.clone()),
                    max_words: *max_words,
                    trainable_embeddings: false,
                    hidden: modbal_encoders::encoder_config::default_gru_hidden(),
                    pooling: Default::default(),
                },
                TextEncoding::GloveVectors { .. } => EncoderConfig::BiGru {
                    glove: None,
                    max_words: 0,
                    trainable_embeddings: false,
                    hidden: modbal_encoders::encoder_config::default_gru_hidden(),
                    pooling: Default::default(),
                },
            };
        }
    }
    match (dataset.name(), shape.len()) {
        ("synth-av", 3) => EncoderConfig::SmallCnn {
            channels: vec![16, 32, 64],
        },
        // The shift benchmark's two views: the same small CNN for both.
        ("synth-shift", 3) => EncoderConfig::SmallCnn {
            channels: vec![16, 32, 64],
        },
        ("synth-vec", _) => EncoderConfig::Mlp {
            hidden: vec![64, 64],
        },
        // PMR / AGM's 4-conv digit encoder for both CGMNIST views.
        ("cgmnist", 3) => EncoderConfig::conv4(),
        // CMU-MOSEI's [T, F] sequences: MulT's Transformer per modality.
        (_, 2) => EncoderConfig::SeqTransformer {
            transformer: Default::default(),
        },
        // Real audio-visual / RGB-flow / RGB-depth data: ResNet18 (OGM-GE family), with
        // T-frame pooling for clips [C, T, H, W] (the generic rules below). Food-101 / MVSA
        // images: ResNet18 from scratch (`resnet18_pretrained` must be asked for: it needs
        // weights).
        (_, 1) => EncoderConfig::Mlp { hidden: vec![64] },
        (_, 3) if modality == "audio" => EncoderConfig::resnet18(false),
        (_, 4) => EncoderConfig::resnet18(true),
        _ => EncoderConfig::resnet18(false),
    }
}

/// A default BERT text encoder whose weights cannot be found: a clear error with the ways out
/// (asked-for encoders report missing weights when they are built).
fn check_default_weights(dataset: &DatasetConfig, modality: &str, e: &EncoderConfig) -> Result<()> {
    if let EncoderConfig::Bert {
        repo,
        revision,
        weights,
        pretrained: true,
        ..
    } = e
    {
        let src = modbal_encoders::pretrained::WeightsSource {
            repo: repo.clone(),
            revision: revision.clone(),
            weights: weights.clone(),
        };
        if let Err(err) = src
            .resolve("config.json")
            .and_then(|_| src.resolve("model.safetensors"))
        {
            return Err(ModbalError::Config(format!(
                "model.encoders.{modality}: dataset {:?} with dataset.text.kind = \"wordpiece\" defaults to kind = \"bert\" ({repo}), whose pretrained weights are missing. Set model.encoders.{modality}.weights=DIR (config.json + model.safetensors), or model.encoders.{modality}.pretrained=false, or use dataset.text.kind=glove_vectors (default encoder bigru). {err}",
                dataset.name()
            )));
        }
    }
    Ok(())
}

/// The modalities a method trains on (all of the dataset's unless the method names some;
/// an empty name means the dataset's first modality).
fn method_modalities(built: &modbal_methods::Built, splits: &Splits) -> Result<Vec<String>> {
    let all = splits.train.modalities().to_vec();
    match &built.modalities {
        None => Ok(all),
        Some(names) => names
            .iter()
            .map(|m| {
                if m.is_empty() {
                    Ok(all[0].clone())
                } else if all.contains(m) {
                    Ok(m.clone())
                } else {
                    Err(ModbalError::Unknown {
                        kind: "modality",
                        name: m.clone(),
                        valid: all.join(", "),
                    })
                }
            })
            .collect(),
    }
}

/// Fill defaults that depend on the data (encoders, unimodal modality): the result is what
/// `config.toml` records, so that reloading it reproduces the run exactly.
fn resolve(cfg: &RunConfig, splits: &Splits) -> Result<RunConfig> {
    let mut r = cfg.clone();
    let built = r.method.build()?;
    let mods = method_modalities(&built, splits)?;
    r.method.options = built.resolved;
    if r.method.name == "unimodal" {
        r.method
            .options
            .insert("modality".into(), toml::Value::String(mods[0].clone()));
    }
    for name in r.model.encoders.keys() {
        if !splits.train.modalities().contains(name) {
            return Err(ModbalError::Config(format!(
                "model.encoders.{name}: the dataset has no modality {name:?} (it has {})",
                splits.train.modalities().join(", ")
            )));
        }
    }
    for (name, shape) in splits
        .train
        .modalities()
        .iter()
        .zip(splits.train.input_shapes())
    {
        if mods.contains(name) {
            if !r.model.encoders.contains_key(name) {
                let e = default_encoder(&cfg.dataset, name, shape);
                check_default_weights(&cfg.dataset, name, &e)?;
                r.model.encoders.insert(name.clone(), e);
            }
        } else {
            r.model.encoders.remove(name);
        }
    }
    Ok(r)
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)?;
    std::fs::write(path, s + "\n").map_err(|e| ModbalError::io("writing", path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
    serde_json::from_str(&s)
        .map_err(|e| ModbalError::Serde(format!("parsing {}: {e}", path.display())))
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A fresh directory for a new run: `base`, or `base-1`, `base-2`… if it already holds a run
/// (earlier results are never overwritten).
fn fresh_run_dir(base: &Path) -> Result<PathBuf> {
    let holds_run = |p: &Path| p.join("config.toml").exists() || p.join("metrics.jsonl").exists();
    let mut dir = base.to_path_buf();
    let mut i = 1;
    while holds_run(&dir) {
        dir = PathBuf::from(format!("{}-{i}", base.display()));
        i += 1;
    }
    std::fs::create_dir_all(&dir).map_err(|e| ModbalError::io("creating", &dir, e))?;
    Ok(dir)
}

/// Optimizer wrapper applying global-norm gradient clipping before the inner step
/// (`torch.nn.utils.clip_grad_norm_` semantics).
struct Clipped {
    inner: Box<dyn Optimizer>,
    max_norm: Option<f64>,
}

impl Optimizer for Clipped {
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let Some(max_norm) = self.max_norm else {
            return self.inner.step(grads);
        };
        let norm = global_grad_norm(grads, self.inner.vars())?;
        let coef = max_norm / (norm + 1e-6);
        if coef >= 1.0 || !norm.is_finite() {
            return self.inner.step(grads);
        }
        let mut scaled = GradStore::default();
        for (_, v) in self.inner.vars() {
            if let Some(g) = grads.get(v.as_tensor()) {
                scaled.insert(v.as_tensor(), (g * coef)?);
            }
        }
        self.inner.step(&scaled)
    }
    fn lr(&self) -> f64 {
        self.inner.lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.inner.set_lr(lr)
    }
    fn vars(&self) -> &[(String, Var)] {
        self.inner.vars()
    }
    fn state(&self) -> OptimizerState {
        self.inner.state()
    }
    fn load_state(&mut self, s: &OptimizerState) -> candle_core::Result<()> {
        self.inner.load_state(s)
    }
}

/// Everything a run needs in memory.
struct Session {
    cfg: RunConfig,
    splits: Splits,
    model: MultimodalNet,
    method: Box<dyn Method>,
    ctx: RunContext,
    dir: PathBuf,
    device: Device,
    opts: TrainOptions,
}

impl Session {
    /// Evaluate the current model and method on `ds` (see [`evaluate`]).
    fn evaluate(&self, ds: Arc<dyn Dataset>) -> Result<(SplitMetrics, EvalOutputs)> {
        evaluate(
            &self.model,
            self.method.as_ref(),
            ds,
            self.cfg.train.eval_batch_size,
            self.cfg.train.prefetch,
            &self.device,
        )
    }
}

/// Evaluate on a split: metrics and the collected outputs (for `on_validation`).
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
    let mut labels = Vec::new();
    let mut fused = Vec::new();
    let mut per: Vec<Vec<Tensor>> = vec![Vec::new(); names.len()];
    let mut feats: Vec<Vec<Tensor>> = vec![Vec::new(); names.len()];
    for batch in DataLoader::new(ds.clone(), (0..ds.len()).collect(), batch_size, prefetch)? {
        let batch = batch?.to_device(device)?;
        let out = model.forward_t(&batch.inputs, false)?;
        let pred = method.predict(model, &out)?;
        let loss = modbal_tensors::cross_entropy(&pred, &batch.labels)?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let y: Vec<u32> = batch.labels.to_vec1()?;
        acc.add(loss, &y, &pred, &out.per_modality_logits)?;
        ids.extend(batch.sample_ids.iter().copied());
        labels.extend(y);
        fused.push(pred.to_device(&Device::Cpu)?);
        for m in 0..names.len() {
            per[m].push(out.per_modality_logits[m].to_device(&Device::Cpu)?);
            feats[m].push(out.features[m].to_device(&Device::Cpu)?);
        }
    }
    let cat = |v: &[Tensor]| Tensor::cat(v, 0);
    let outputs = EvalOutputs {
        sample_ids: ids,
        labels,
        fused_logits: cat(&fused)?,
        per_modality_logits: per
            .iter()
            .map(|v| cat(v))
            .collect::<candle_core::Result<_>>()?,
        features: feats
            .iter()
            .map(|v| cat(v))
            .collect::<candle_core::Result<_>>()?,
    };
    Ok((acc.finish(&names), outputs))
}

/// The resolved config, the data of the run (noise applied, the method's modalities selected in
/// its order), the built method and its modalities.
fn prepare(cfg: &RunConfig) -> Result<(RunConfig, Splits, modbal_methods::Built, Vec<String>)> {
    cfg.validate()?;
    let all = crate::config::load_dataset(&cfg.dataset)?;
    all.validate()?;
    // Robustness protocol: corrupt the chosen splits before any modality selection, so every
    // method sees the same corrupted samples of a modality.
    let all = match &cfg.noise {
        Some(n) => n.apply(&all)?,
        None => all,
    };
    let cfg = resolve(cfg, &all)?;
    let built = cfg.method.build()?;
    let mods = method_modalities(&built, &all)?;
    let splits = if mods.as_slice() == all.train.modalities() {
        all
    } else {
        all.select(&mods)?
    };
    Ok((cfg, splits, built, mods))
}

/// The splits a run of `cfg` trains, validates and tests on: the dataset's, corrupted as
/// `cfg.noise` says, restricted to (and ordered as) the method's modalities.
pub fn load_splits(cfg: &RunConfig) -> Result<Splits> {
    Ok(prepare(cfg)?.1)
}

fn build_session(cfg: &RunConfig, opts: &TrainOptions, dir: Option<PathBuf>) -> Result<Session> {
    let device = Device::Cpu;
    let (cfg, splits, built, mods) = prepare(cfg)?;
    let mut root = SeededRng::new(cfg.seed);
    let mut init_rng = root.fork();
    let run_rng = root.fork();
    let specs: Vec<ModalitySpec> = mods
        .iter()
        .zip(splits.train.input_shapes())
        .map(|(m, shape)| ModalitySpec::new(m.clone(), cfg.model.encoders[m].clone(), shape))
        .collect();
    let model = MultimodalNet::new(
        &specs,
        &built.fusion,
        splits.train.num_classes(),
        &mut init_rng,
        &device,
    )
    .map_err(|e| ModbalError::Config(format!("building the model: {e}")))?;
    let method = built.method;
    let mut ctx = RunContext::new(cfg.seed, device.clone(), cfg.train.epochs);
    ctx.rng = run_rng;
    let dir = match dir {
        Some(d) => d,
        None => match &opts.run_dir {
            Some(d) => fresh_run_dir(d)?,
            None => fresh_run_dir(&cfg.out_dir.join(cfg.run_name()))?,
        },
    };
    Ok(Session {
        cfg,
        splits,
        model,
        method,
        ctx,
        dir,
        device,
        opts: opts.clone(),
    })
}

/// Train a new run.
pub fn train(cfg: &RunConfig, opts: &TrainOptions) -> Result<RunOutcome> {
    let mut s = build_session(cfg, opts, None)?;
    std::fs::write(s.dir.join("config.toml"), s.cfg.to_toml_string()?)
        .map_err(|e| ModbalError::io("writing", s.dir.join("config.toml"), e))?;
    write_json(
        &s.dir.join("meta.json"),
        &serde_json::json!({
            "modbal_version": env!("CARGO_PKG_VERSION"),
            "git_revision": git_revision(),
            "seed": s.cfg.seed,
            "trainable_parameters": s.model.params().num_trainable(),
        }),
    )?;
    for f in ["metrics.jsonl", "timing.jsonl"] {
        std::fs::write(s.dir.join(f), "")
            .map_err(|e| ModbalError::io("writing", s.dir.join(f), e))?;
    }
    run_loop(&mut s, None)
}

/// Evaluate the selected (best-validation) model of a finished run, `run_dir/checkpoints/best`,
/// on the run's test split corrupted as `noise` says (`None`: clean).
///
/// This is the robustness protocol's "noise on the test set only" (CAL Table 2) without
/// retraining: with `noise.on = "test"` training and validation see clean data, so a run trained
/// with that noise selects the same model and reports these test metrics (tested). `noise.on`
/// must therefore be `"test"`; corrupting the training split needs a new run.
pub fn evaluate_test(run_dir: &Path, noise: Option<&NoiseConfig>) -> Result<SplitMetrics> {
    let mut cfg = RunConfig::from_file(&run_dir.join("config.toml"))?;
    if let Some(n) = noise {
        if n.on != NoiseOn::Test {
            return Err(ModbalError::Config(format!(
                "evaluate_test corrupts the test split only (noise.on = \"test\"), got noise.on \
                 = {:?}: noise on other splits changes training and needs a new run",
                n.on.name()
            )));
        }
    }
    cfg.noise = noise.cloned();
    let opts = TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let mut s = build_session(&cfg, &opts, Some(run_dir.to_path_buf()))?;
    let best = run_dir.join("checkpoints").join("best");
    s.model
        .params()
        .load(best.join("model.safetensors"))
        .map_err(|e| ModbalError::Data(format!("{}: {e}", best.display())))?;
    let bs: BestState = read_json(&best.join("state.json"))?;
    s.method.load_state(&bs.method)?;
    Ok(s.evaluate(s.splits.test.clone())?.0)
}

/// Rewrite a JSONL file of [`EpochRecord`]s keeping the lines of epochs `< epochs_done`.
fn keep_completed_epochs(path: &Path, epochs_done: usize) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<EpochRecord>(l)
                .map(|r| r.epoch < epochs_done)
                .unwrap_or(false)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    std::fs::write(path, body).map_err(|e| ModbalError::io("writing", path, e))
}

/// Continue an interrupted run from `run_dir/checkpoints/last`.
pub fn resume(run_dir: &Path, opts: &TrainOptions) -> Result<RunOutcome> {
    let cfg = RunConfig::from_file(&run_dir.join("config.toml"))?;
    let mut s = build_session(&cfg, opts, Some(run_dir.to_path_buf()))?;
    let last = run_dir.join("checkpoints").join("last");
    let st: CheckpointState = read_json(&last.join("state.json"))?;
    s.model
        .params()
        .load(last.join("model.safetensors"))
        .map_err(|e| ModbalError::Data(format!("{}: {e}", last.display())))?;
    s.method.load_state(&st.method)?;
    let mt = last.join(METHOD_TENSORS);
    let method_tensors: BTreeMap<String, Tensor> = if mt.exists() {
        candle_core::safetensors::load(&mt, &s.device)
            .map_err(|e| ModbalError::Data(format!("{}: {e}", mt.display())))?
            .into_iter()
            .collect()
    } else {
        BTreeMap::new()
    };
    s.method.load_state_tensors(&method_tensors)?;
    s.ctx.rng = SeededRng::from_state(&st.rng).map_err(ModbalError::Data)?;
    s.ctx.step = st.step;
    // Keep only the metrics of completed epochs.
    keep_completed_epochs(&run_dir.join("metrics.jsonl"), st.epochs_done)?;
    let tc = run_dir.join(TEST_CURVE_FILE);
    if tc.exists() {
        keep_completed_epochs(&tc, st.epochs_done)?;
    }
    let opt_state = OptimizerState::load(&last, "optimizer", &s.device)?;
    run_loop(&mut s, Some((st, opt_state)))
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
    let prefixes = s.method.trainable_prefixes(stage, &s.model);
    let mut vars: BTreeMap<String, Var> = BTreeMap::new();
    for p in &prefixes {
        for (n, v) in s.model.params().trainable_with_prefix(p) {
            vars.insert(n, v);
        }
    }
    if vars.is_empty() {
        return Err(ModbalError::Config(format!(
            "stage {stage}: no trainable parameters match the prefixes {prefixes:?}"
        )));
    }
    let inner = s.cfg.train.optimizer.build(vars.into_iter().collect())?;
    Ok(Box::new(Clipped {
        inner,
        max_norm: s.cfg.train.clip_grad_norm,
    }))
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| ModbalError::io("opening", path, e))?;
    writeln!(f, "{line}").map_err(|e| ModbalError::io("writing", path, e))
}

fn save_checkpoint(s: &Session, opt: &dyn Optimizer, st: &CheckpointState) -> Result<()> {
    let ck = s.dir.join("checkpoints");
    let tmp = ck.join("last.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ModbalError::io("creating", &tmp, e))?;
    s.model.params().save(tmp.join("model.safetensors"))?;
    let method_tensors: HashMap<String, Tensor> = s.method.state_tensors()?.into_iter().collect();
    if !method_tensors.is_empty() {
        candle_core::safetensors::save(&method_tensors, tmp.join(METHOD_TENSORS))?;
    }
    opt.state().save(&tmp, "optimizer")?;
    write_json(&tmp.join("state.json"), st)?;
    let last = ck.join("last");
    let _ = std::fs::remove_dir_all(&last);
    std::fs::rename(&tmp, &last).map_err(|e| ModbalError::io("renaming", &tmp, e))
}

/// One training epoch: the method's indices (shuffled), the loader, every step; the epoch's
/// training metrics.
fn train_epoch(
    s: &mut Session,
    opt: &mut dyn Optimizer,
    epoch: usize,
    epochs: usize,
) -> Result<SplitMetrics> {
    let names = s.model.modalities().to_vec();
    let n = s.splits.train.len();
    let mut order = match s.method.epoch_indices(n, &mut s.ctx)? {
        Some(v) => {
            if let Some(&bad) = v.iter().find(|&&i| i >= n) {
                return Err(ModbalError::Data(format!(
                    "method {} asked for training index {bad} of {n}",
                    s.method.name()
                )));
            }
            v
        }
        None => (0..n).collect(),
    };
    s.ctx.rng.shuffle(&mut order);
    // Augmentation of the real datasets is seeded by (run seed, epoch, sample).
    s.splits.train.set_epoch(s.cfg.seed, epoch);
    // Dropout masks too (BERT, sequence Transformer): seeded by (run seed, epoch, modality).
    s.model.set_epoch(s.cfg.seed, epoch);
    let loader = DataLoader::new(
        s.splits.train.clone(),
        order,
        s.cfg.train.batch_size,
        s.cfg.train.prefetch,
    )?;
    s.ctx.batches_per_epoch = loader.num_batches();
    s.method.on_epoch_start(&s.model, &mut s.ctx)?;
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
    let mut acc = MetricAccumulator::new(s.model.num_classes(), names.len());
    for (bi, batch) in loader.enumerate() {
        let batch = batch?.to_device(&s.device)?;
        s.ctx.batch_index = bi;
        let y: Vec<u32> = batch.labels.to_vec1()?;
        let step = s
            .method
            .train_step(&s.model, batch, opt, &mut s.ctx)
            .map_err(|e| match e {
                ModbalError::Candle(c) => ModbalError::Data(format!(
                    "epoch {epoch}, batch {bi}: {c} (metrics and checkpoints of completed epochs are kept in {})",
                    s.dir.display()
                )),
                e => e,
            })?;
        s.ctx.step += 1;
        let pred = s.method.predict(&s.model, &step.output)?;
        acc.add(step.loss, &y, &pred, &step.output.per_modality_logits)?;
        pb.inc(1);
        pb.set_message(format!("loss {:.4}", step.loss));
    }
    pb.finish_and_clear();
    Ok(acc.finish(&names))
}

fn run_loop(
    s: &mut Session,
    resumed: Option<(CheckpointState, OptimizerState)>,
) -> Result<RunOutcome> {
    let epochs = s.cfg.train.epochs;
    let stages = s.method.stages(epochs, s.model.modalities());
    let total: usize = stages.iter().map(|x| x.epochs).sum();
    if total != epochs {
        let plan: Vec<String> = stages
            .iter()
            .map(|x| format!("{} {}", x.name, x.epochs))
            .collect();
        return Err(ModbalError::Config(format!(
            "method {} plans {total} epochs over its stages ({}), train.epochs is {epochs}",
            s.method.name(),
            plan.join(", ")
        )));
    }
    let metrics_path = s.dir.join("metrics.jsonl");
    let mut history: Vec<EpochRecord> = Vec::new();
    let (mut start_epoch, mut best_epoch, mut best_acc) = (0, None, f64::NEG_INFINITY);
    let mut best_snapshot: Option<Snapshot> = None;
    let mut pending_opt_state = None;
    if let Some((st, os)) = resumed {
        start_epoch = st.epochs_done;
        best_epoch = st.best_epoch;
        best_acc = st.best_val_acc.unwrap_or(f64::NEG_INFINITY);
        let bdir = s.dir.join("checkpoints").join("best");
        if best_epoch.is_some() {
            let map = candle_core::safetensors::load(bdir.join("model.safetensors"), &s.device)?;
            let bs: BestState = read_json(&bdir.join("state.json"))?;
            best_snapshot = Some((map.into_iter().collect(), bs.method));
        }
        pending_opt_state = Some(os);
        for line in std::fs::read_to_string(&metrics_path)
            .map_err(|e| ModbalError::io("reading", &metrics_path, e))?
            .lines()
        {
            history.push(serde_json::from_str(line)?);
        }
    }
    let stop_at = s
        .opts
        .stop_after
        .map(|n| (start_epoch + n).min(epochs))
        .unwrap_or(epochs);
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
                s.method.on_stage_start(&s.model, &mut s.ctx)?;
            }
        }
        let opt = opt.as_mut().expect("optimizer built at stage start");
        let lr = s
            .cfg
            .train
            .schedule
            .lr_at(s.cfg.train.optimizer.lr(), stage_epoch);
        let lr = s.method.epoch_lr(lr, &mut s.ctx)?;
        opt.set_lr(lr);
        let train_m = train_epoch(s, opt.as_mut(), epoch, epochs)?;
        // The rate the optimizer ended the epoch with (a method may set it per step).
        let lr = opt.lr();
        let (val_m, val_out) = s.evaluate(s.splits.val.clone())?;
        s.method.on_validation(&s.model, &val_out, &mut s.ctx)?;
        s.method.on_epoch_end(&s.model, &mut s.ctx)?;
        let stage_name = stages[stage].name.clone();
        let mut tr = EpochRecord::new(epoch, &stage_name, "train", &train_m, lr);
        tr.method = s.ctx.log.take();
        let mut va = EpochRecord::new(epoch, &stage_name, "val", &val_m, lr);
        if let Some(n) = &s.cfg.noise {
            tr.noise = n.on.covers("train").then(|| n.clone());
            va.noise = n.on.covers("val").then(|| n.clone());
        }
        for r in [&tr, &va] {
            append_line(&metrics_path, &serde_json::to_string(r)?)?;
        }
        // Opt-in test curve: evaluated after every decision of the epoch, written to its own
        // file; nothing reads it back during training.
        if s.cfg.train.report_test_curve {
            let (test_m, _) = s.evaluate(s.splits.test.clone())?;
            let mut te = EpochRecord::new(epoch, &stage_name, "test", &test_m, lr);
            if let Some(n) = &s.cfg.noise {
                te.noise = n.on.covers("test").then(|| n.clone());
            }
            append_line(&s.dir.join(TEST_CURVE_FILE), &serde_json::to_string(&te)?)?;
        }
        // Model selection on validation only, among the epochs the method may report.
        if s.method.selectable(&s.ctx, &stages) && val_m.fusion_acc > best_acc {
            best_acc = val_m.fusion_acc;
            best_epoch = Some(epoch);
            let snap = s.model.params().snapshot()?;
            let bdir = s.dir.join("checkpoints").join("best");
            std::fs::create_dir_all(&bdir).map_err(|e| ModbalError::io("creating", &bdir, e))?;
            s.model.params().save(bdir.join("model.safetensors"))?;
            write_json(
                &bdir.join("state.json"),
                &BestState {
                    epoch,
                    method: s.method.state(),
                },
            )?;
            best_snapshot = Some((snap, s.method.state()));
        }
        let secs = t0.elapsed().as_secs_f64();
        append_line(
            &s.dir.join("timing.jsonl"),
            &serde_json::json!({"epoch": epoch, "seconds": secs}).to_string(),
        )?;
        if !s.opts.quiet {
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
        history.push(tr);
        history.push(va);
        if (epoch + 1) % s.cfg.train.checkpoint_every == 0 || epoch + 1 == stop_at {
            save_checkpoint(
                s,
                opt.as_ref(),
                &CheckpointState {
                    epochs_done: epoch + 1,
                    step: s.ctx.step,
                    rng: s.ctx.rng.state(),
                    method: s.method.state(),
                    best_epoch,
                    best_val_acc: best_epoch.map(|_| best_acc),
                },
            )?;
        }
    }
    crate::plot::write_plots(&s.dir, &history)?;
    if stop_at < epochs {
        return Ok(RunOutcome {
            run_dir: s.dir.clone(),
            summary: None,
            history,
        });
    }
    let summary = finish_run(s, &stages, best_epoch.zip(best_snapshot))?;
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
    let epochs = s.cfg.train.epochs;
    // The model as the last epoch left it, on test (no selection).
    let test_last = s.evaluate(s.splits.test.clone())?.0;
    let test_curve = if s.cfg.train.report_test_curve {
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
            s.method.name(),
            stages
                .iter()
                .map(|x| format!("{} {}", x.name, x.epochs))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let snap: HashMap<String, Tensor> = snap.into_iter().collect();
    s.model.params().restore(&snap)?;
    s.method.load_state(&mstate)?;
    let val = s.evaluate(s.splits.val.clone())?.0;
    let test = s.evaluate(s.splits.test.clone())?.0;
    let summary = Summary {
        run: s
            .dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        method: s.method.name().to_string(),
        dataset: s.cfg.dataset.name().to_string(),
        seed: s.cfg.seed,
        epochs,
        best_epoch: best,
        selected_on: "val.fusion_acc".into(),
        val,
        test,
        test_last,
        test_curve,
        noise: s.cfg.noise.clone(),
    };
    write_json(&s.dir.join("summary.json"), &summary)?;
    if !s.opts.quiet {
        print_table(&summary, &s.dir);
    }
    Ok(summary)
}

/// The best test epoch of `test_curve.jsonl` (one line per epoch `0..epochs`, checked).
fn test_curve_summary(path: &Path, epochs: usize) -> Result<TestCurveSummary> {
    let text = std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
    let mut best: Option<EpochRecord> = None;
    let mut seen = vec![false; epochs];
    for (i, line) in text.lines().enumerate() {
        let r: EpochRecord = serde_json::from_str(line)
            .map_err(|e| ModbalError::Data(format!("{} line {}: {e}", path.display(), i + 1)))?;
        if r.epoch >= epochs {
            return Err(ModbalError::Data(format!(
                "{} line {}: epoch {} of a {epochs}-epoch run",
                path.display(),
                i + 1,
                r.epoch
            )));
        }
        seen[r.epoch] = true;
        if best.as_ref().is_none_or(|b| r.fusion_acc > b.fusion_acc) {
            best = Some(r);
        }
    }
    if let Some(missing) = seen.iter().position(|x| !x) {
        return Err(ModbalError::Data(format!(
            "{} has no line for epoch {missing} (was train.report_test_curve switched on \
             after the run started?)",
            path.display()
        )));
    }
    let b = best.expect("epochs > 0 lines");
    Ok(TestCurveSummary {
        warning: TEST_CURVE_WARNING.into(),
        best_epoch: b.epoch,
        test: SplitMetrics {
            loss: b.loss,
            fusion_acc: b.fusion_acc,
            modality_acc: b.modality_acc,
            macro_f1: b.macro_f1,
            discrepancy_ratio: b.discrepancy_ratio,
        },
    })
}

/// The results table printed at the end of a run.
pub fn format_table(summary: &Summary) -> String {
    let mods: Vec<&String> = summary.val.modality_acc.keys().collect();
    let mut out = String::new();
    out.push_str(&format!(
        "{} on {} (seed {}): best epoch {} of {}, selected on validation fusion accuracy\n",
        summary.method,
        summary.dataset,
        summary.seed,
        summary.best_epoch + 1,
        summary.epochs
    ));
    if let Some(n) = &summary.noise {
        out.push_str(&format!(
            "noise: {} eps {} on {} (modalities: {}; noise seed {})\n",
            n.kind.name(),
            n.eps,
            n.on.name(),
            if n.modalities.is_empty() {
                "all".to_string()
            } else {
                n.modalities.join(", ")
            },
            n.seed
        ));
    }
    let mut header = format!("{:<6} {:>10} {:>9}", "split", "fusion_acc", "macro_f1");
    for m in &mods {
        header.push_str(&format!(" {:>10}", format!("{m}_acc")));
    }
    header.push_str(&format!(" {:>10} {:>8}", "disc_ratio", "loss"));
    out.push_str(&header);
    out.push('\n');
    let mut rows = vec![
        ("val", &summary.val),
        ("test", &summary.test),
        ("last", &summary.test_last),
    ];
    if let Some(c) = &summary.test_curve {
        rows.push(("test*", &c.test));
    }
    for (name, m) in rows {
        let mut row = format!("{name:<6} {:>10.4} {:>9.4}", m.fusion_acc, m.macro_f1);
        for k in &mods {
            row.push_str(&format!(" {:>10.4}", m.modality_acc[*k]));
        }
        let dr = m
            .discrepancy_ratio
            .map(|d| format!("{d:.3}"))
            .unwrap_or_else(|| "-".into());
        row.push_str(&format!(" {dr:>10} {:>8.4}", m.loss));
        out.push_str(&row);
        out.push('\n');
    }
    out.push_str(&format!(
        "(val, test: the model of epoch {}; last: test after the last epoch",
        summary.best_epoch + 1
    ));
    if let Some(c) = &summary.test_curve {
        out.push_str(&format!(
            "; test*: epoch {} {}",
            c.best_epoch + 1,
            "selected on the TEST split, for comparison with papers that do so only"
        ));
    }
    out.push_str(")\n");
    out
}

fn print_table(summary: &Summary, dir: &Path) {
    println!();
    print!("{}", format_table(summary));
    println!("run directory: {}", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_encoders_follow_the_encoding() {
        let mut t = toml::Table::new();
        t.insert("root".into(), "/data/mvsa".into());
        let mut text = toml::Table::new();
        text.insert("kind".into(), "glove_ids".into());
        text.insert("glove".into(), "g.txt".into());
        t.insert("text".into(), text.into());
        let d = DatasetConfig::Mvsa(t.clone());
        match default_encoder(&d, "text", &[64]) {
            EncoderConfig::BiGru { glove, .. } => assert_eq!(glove, Some("g.txt".into())),
            e => panic!("{e:?}"),
        }
        assert_eq!(
            default_encoder(&d, "image", &[3, 224, 224]),
            EncoderConfig::resnet18(false)
        );
        // A default BERT without weights: a clear error naming the way out.
        let bert = EncoderConfig::Bert {
            repo: "modbal-test/no-such-repo".into(),
            revision: "main".into(),
            weights: Some(std::env::temp_dir().join("modbal-no-weights-here")),
            pretrained: true,
            pooling: Default::default(),
        };
        let e = check_default_weights(&d, "text", &bert)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.encoders.text.weights") && e.contains("glove_vectors"),
            "{e}"
        );
    }
}
