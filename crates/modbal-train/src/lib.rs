//! # modbal-train: the one training loop
//!
//! [`train`] runs a [`RunConfig`]: it loads the dataset, builds the model and the method,
//! trains stage by stage and epoch by epoch through the [`modbal_core::Method`] hooks, evaluates
//! on the validation split after every epoch, selects the best epoch on validation fusion
//! accuracy (never on test), evaluates that model once on test, and writes the run directory:
//!
//! ```text
//! runs/<name>/
//!   config.toml        fully resolved, reloadable with --config
//!   metrics.jsonl      one JSON object per (epoch, split); no timing fields (deterministic)
//!   timing.jsonl       wall-clock seconds per epoch
//!   summary.json       best-val epoch, its val and test metrics (the headline), test metrics
//!                      after the last epoch (`test_last`); with `train.report_test_curve` also
//!                      the best TEST epoch (`test_curve`, labelled, never used for a decision)
//!   test_curve.jsonl   only with `train.report_test_curve`: test metrics after every epoch
//!   meta.json          modbal version, git revision, command-independent facts
//!   plots/*.svg        accuracy and loss curves
//!   checkpoints/last/  model.safetensors, optimizer.{safetensors,json}, state.json (epoch, RNG, method),
//!                      method.safetensors (method-owned tensors, e.g. UDI's q-networks; if any)
//!   checkpoints/best/  model.safetensors, state.json
//! ```
//!
//! A run can be resumed from `checkpoints/last` with [`resume`]; the resumed run's
//! `metrics.jsonl` is byte-identical to an uninterrupted one.
//!
//! # Example
//!
//! ```
//! use modbal_train::{MethodConfig, RunConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // What `modbal train --set dataset.name=synth-vec --set method.name=unimodal ...` resolves.
//! let cfg = RunConfig::default().with_overrides(&[
//!     "dataset.name=synth-vec".into(),
//!     "dataset.classes=4".into(),
//!     "method.name=unimodal".into(),
//!     "method.modality=visual".into(),
//!     "train.epochs=3".into(),
//!     "train.optimizer.lr=0.05".into(),
//! ])?;
//! assert_eq!(cfg.train.epochs, 3);
//! assert_eq!(cfg.method, MethodConfig::unimodal("visual"));
//! assert_eq!(cfg.run_name(), "synth-vec-unimodal-s0");
//!
//! // Unknown keys are errors that name them.
//! let err = RunConfig::default().with_overrides(&["train.epoks=3".into()]).unwrap_err();
//! assert!(err.to_string().contains("epoks"));
//!
//! // The resolved config (a run's `config.toml`) reloads to the same config.
//! let back = RunConfig::from_toml_value(toml::Value::Table(cfg.to_toml_string()?.parse()?))?;
//! assert_eq!(back, cfg);
//! // `modbal_train::train(&cfg, &TrainOptions::default())` would now train and write the run
//! // directory `runs/synth-vec-unimodal-s0`.
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod metrics;
pub mod plot;
pub mod presets;
pub mod record;
pub mod trainer;

pub use config::{DeviceConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig, METHOD_NAMES};
pub use metrics::{MetricAccumulator, SplitMetrics};
pub use trainer::{
    evaluate_test, load_splits, resume, train, EpochRecord, RunOutcome, Summary, TestCurveSummary,
    TrainOptions, TEST_CURVE_FILE, TEST_CURVE_WARNING,
};
