//! # modbal-train: the generic training loop
//!
//! [`Learner`] trains any [`modbal_core::MultimodalModel`] with any [`modbal_core::Method`] on
//! any [`modbal_data::Splits`] under a typed [`TrainConfig`]. It knows no method, dataset or
//! encoder by name (the name tables live in the `modbal` crate's registry). Per epoch it
//! trains stage by stage through the method's hooks, evaluates on the validation split, selects
//! the best epoch on validation fusion accuracy among the epochs the method reports (never on
//! test), evaluates that model once on test, and writes the run directory:
//!
//! ```text
//! runs/<name>/
//!   config.toml        the caller's record of the configuration (the modbal CLI writes the fully
//!                      resolved run config, reloadable with --config)
//!   metrics.jsonl      one JSON object per (epoch, split); no timing fields (deterministic)
//!   timing.jsonl       wall-clock seconds per epoch
//!   summary.json       best-val epoch, its val and test metrics (the headline), test metrics
//!                      after the last epoch (`test_last`); with `train.report_test_curve` also
//!                      the best TEST epoch (`test_curve`, labelled, never used for a decision)
//!   test_curve.jsonl   only with `train.report_test_curve`: test metrics after every epoch
//!   meta.json          modbal version, git revision, command-independent facts
//!   plots/*.svg        accuracy and loss curves
//!   tensorboard/       TensorBoard event files: the metrics as scalars per epoch and config.toml
//!                      as text (`train.tensorboard`, default on; see [`tensorboard`])
//!   checkpoints/last/  model.safetensors, optimizer.{safetensors,json}, state.json (epoch, RNG, method),
//!                      method.safetensors (method-owned tensors, e.g. UDI's q-networks; if any)
//!   checkpoints/best/  model.safetensors, state.json
//!   run.lock           held by the process training in the directory
//! ```
//!
//! Every file is written so that a kill at any point loses no completed epoch: whole files
//! through a temporary file, fsync and rename; checkpoints sealed with checksums and swapped in
//! atomically; the metrics files rebuilt on resume from the checkpoint's copy (see the
//! `run_dir` module for the protocol).
//!
//! A run can be resumed from `checkpoints/last` with [`Learner::resume`]; the resumed run's
//! `metrics.jsonl` is byte-identical to an uninterrupted one.
//!
//! # Example
//!
//! ```
//! use modbal_core::Method;
//! use modbal_data::{synth::SynthVecConfig, Dataset};
//! use modbal_encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
//! use modbal_train::{init_rng, Learner, TrainConfig, TrainOptions};
//!
//! /// Plain joint training: every hook keeps its default (cross-entropy on the fused logits).
//! struct Joint;
//! impl Method for Joint {
//!     fn name(&self) -> &str {
//!         "joint"
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = SynthVecConfig { common: modbal_data::synth::SynthCommon { train: 64, val: 32, test: 32, ..Default::default() }, ..Default::default() };
//! let splits = data.build()?;
//! let specs: Vec<ModalitySpec> = splits.train.modalities().iter()
//!     .zip(splits.train.input_shapes())
//!     .map(|(m, shape)| ModalitySpec::new(m.clone(), EncoderConfig::Mlp { hidden: vec![16] }, shape))
//!     .collect();
//! let seed = 3;
//! let model = MultimodalNet::new(&specs, &FusionConfig::Concat, splits.train.num_classes(),
//!                                &mut init_rng(seed), &candle_core::Device::Cpu)?;
//! let train = TrainConfig { epochs: 2, batch_size: 16, ..Default::default() };
//! let dir = tempfile::tempdir()?;
//! let run = Learner::new(Box::new(model), Box::new(Joint), splits, train, seed)?
//!     .with_dataset_name("synth-vec")
//!     .fit(&dir.path().join("joint"), "", &TrainOptions { quiet: true, ..Default::default() })?;
//! let summary = run.summary.expect("a finished run has a summary");
//! assert_eq!((summary.method.as_str(), summary.epochs), ("joint", 2));
//! assert!(run.run_dir.join("checkpoints/best/model.safetensors").exists());
//! # Ok(())
//! # }
//! ```

mod clip;
pub mod config;
pub mod distributed;
pub mod learner;
pub mod metrics;
pub mod plot;
pub mod record;
mod run_dir;
pub mod summary;
pub mod tensorboard;

pub use config::{DeviceConfig, TrainConfig};
pub use distributed::{
    broadcast_buffers, shard_batches, shard_order, AllReduced, Collective, LocalCollective,
};
pub use learner::{init_rng, EpochRecord, Learner, RunOutcome, TrainOptions};
pub use metrics::{MetricAccumulator, SplitMetrics};
pub use run_dir::is_resumable;
pub use summary::{format_table, Summary, TestCurveSummary, TEST_CURVE_FILE, TEST_CURVE_WARNING};
