//! # modbal: imbalanced multimodal learning on candle (the CLI and facade crate)
//!
//! Imbalanced multimodal learning on candle. This facade re-exports the workspace crates; the
//! `modbal` binary is the command-line interface (`modbal --help`).
//!
//! | crate | role |
//! |---|---|
//! | [`core`] | vocabulary: `Batch`, `MultimodalOutput`, `MultimodalModel`, the `Method` hooks |
//! | [`tensors`] | what candle lacks for training: seeded RNG, init, optimizers, conv/pool/logdet ops |
//! | [`encoders`] | MLP, CGMNIST conv4, ResNet18, small CNN, BERT, BiGRU, Transformer; fusion heads |
//! | [`data`] | `Dataset`, splits, prefetching loader, the built-in and real-data loaders |
//! | [`train`](mod@train) | the generic training loop ([`train::Learner`]): metrics, run directory, checkpoints |
//! | [`info`] | estimators: Gaussian MI/entropy, CLUB, discrete NMI/CMI/NCMI, KL/JS, softmax bound |
//! | [`contrib`] | contribution metrics: OGM scores and ratios, CAL φ, ARM MIV, IBML ρ, Shapley values |
//! | [`modulate`] | gradient and input modulators: OGM-GE, CAL, MMPareto, ARL, MLA, IBML TCM, UDI |
//! | [`methods`] | the balancing methods and baselines on the `Method` hooks, each with its `MethodParams` |
//! | [`kernels`] | custom ops with CPU and CUDA paths (CLUB matrix, fused noise, Philox RNG) |
//!
//! This crate is the composition layer: the one name → thing table ([`Registry`]: methods,
//! datasets, encoder kinds, presets), the run configuration with `--set` ([`RunConfig`]), the
//! run functions ([`train()`], [`resume`], [`evaluate_test`]) and the command line
//! ([`cli::main`]). A program adds its own method, dataset or encoder to a registry and gets
//! the same loop, run directory, checkpoints, resume and CLI as the built-in ones
//! (`examples/custom-method/`, `docs/extending.md`).
//!
//! # Example
//!
//! ```
//! use modbal::data::Dataset;
//! use modbal::RunConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // What `modbal train --set dataset.name=synth-vec --set method.name=ogm-ge --set train.epochs=5`
//! // resolves before training.
//! let cfg = RunConfig::default().with_overrides(&[
//!     "dataset.name=synth-vec".into(),
//!     "dataset.train=60".into(),
//!     "method.name=ogm-ge".into(),
//!     "train.epochs=5".into(),
//! ])?;
//! assert_eq!(cfg.run_name(), "synth-vec-ogm-ge-s0");
//! let splits = modbal::load_splits(&cfg)?;
//! assert_eq!(splits.train.modalities(), ["audio", "visual"]);
//! assert_eq!(splits.train.len(), 60);
//! // `modbal::train(&cfg, &modbal::TrainOptions::default())?` would now train and
//! // write `runs/synth-vec-ogm-ge-s0`.
//! # Ok(())
//! # }
//! ```

/// candle (`candle-core`), the tensor library everything is built on.
pub use candle_core as candle;
pub use modbal_contrib as contrib;
pub use modbal_core as core;
pub use modbal_data as data;
pub use modbal_encoders as encoders;
pub use modbal_info as info;
pub use modbal_kernels as kernels;
pub use modbal_methods as methods;
pub use modbal_modulate as modulate;
pub use modbal_report as report;
pub use modbal_tensors as tensors;
pub use modbal_train as train;

mod builtin;
pub mod cli;
pub mod config;
pub mod example_support;
mod parallel;
pub mod presets;
pub mod registry;
pub mod run;
pub mod sweep;

pub use config::{DatasetChoice, MethodConfig, ModelConfig, RunConfig};
pub use modbal_methods::{MethodParams, MethodPlan};
pub use modbal_train::{
    EpochRecord, Learner, RunOutcome, SplitMetrics, Summary, TrainConfig, TrainOptions,
    TEST_CURVE_FILE,
};
pub use registry::{DatasetSpec, EncoderChoice, EncoderSpec, Registry};
pub use run::{evaluate_test, load_splits, resume, train};
