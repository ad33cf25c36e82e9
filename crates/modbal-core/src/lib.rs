//! # modbal-core: the shared vocabulary of modbal
//!
//! Types every other crate speaks: modality names, [`Batch`], [`MultimodalOutput`], the
//! [`MultimodalModel`] a method trains, the [`Method`] trait whose hooks let every balancing
//! method plug into the one training loop, the [`RunContext`] handed to those hooks, and the
//! core error type [`ModbalError`].
//!
//! [`stats`] is the one place for the per-modality classification statistics that the epoch
//! metrics, the contribution metrics and the methods share: `softmax(z)[y]` and its batch sum
//! (OGM-GE's score), accuracy, the discrepancy ratio, and the per-epoch accumulator
//! [`ModalityStats`].
//!
//! The hook design and the mapping of every method onto it are in `docs/architecture.md`.
//!
//! # Example
//!
//! ```
//! use modbal_core::RunContext;
//!
//! // What the training loop hands to every `Method` hook: where training stands, the run's
//! // seeded RNG and the per-epoch log written under `method` in `metrics.jsonl`.
//! let mut ctx = RunContext::new(0, candle_core::Device::Cpu, 10);
//! ctx.log.add_mean("weight.audio", 0.25); // averaged over the calls of an epoch
//! ctx.log.add_mean("weight.audio", 0.75);
//! ctx.log.set("phase", "warm-up"); // overwritten by later calls
//! let logged = ctx.log.take(); // what the loop writes at the epoch's end
//! assert_eq!(logged["weight.audio"], 0.5);
//! assert_eq!(logged["phase"], "warm-up");
//! assert!(ctx.log.take().is_empty());
//! ```

pub mod batch;
pub mod error;
pub mod method;
pub mod model;
pub mod schedule;
pub mod stats;

pub use batch::{Batch, EvalOutputs, MultimodalOutput};
pub use error::{ModbalError, Result};
pub use method::{check_loss, LossTerms, Method, MethodLog, RunContext, StageSpec, StepOutput};
pub use modbal_tensors as tensors;
pub use model::{FusionControl, MultimodalModel};
pub use schedule::scale_epoch;
pub use stats::{BatchStats, ModalityStats};
