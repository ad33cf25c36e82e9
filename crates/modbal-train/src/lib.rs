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

pub mod config;
pub mod metrics;
pub mod plot;
pub mod presets;
pub mod trainer;

pub use config::{MethodConfig, ModelConfig, RunConfig, TrainConfig, METHOD_NAMES};
pub use metrics::{MetricAccumulator, SplitMetrics};
pub use trainer::{
    evaluate_test, load_splits, resume, train, EpochRecord, RunOutcome, Summary, TestCurveSummary,
    TrainOptions, TEST_CURVE_FILE, TEST_CURVE_WARNING,
};
