//! # modbal-core: the shared vocabulary of modbal
//!
//! Types every other crate speaks: modality names, [`Batch`], [`MultimodalOutput`], the
//! [`MultimodalModel`] a method trains, the [`Method`] trait whose hooks let every balancing
//! method plug into the one training loop, the [`RunContext`] handed to those hooks, and the
//! core error type [`ModbalError`].
//!
//! The hook design and the mapping of every method onto it are in `docs/architecture.md`.

pub mod batch;
pub mod error;
pub mod method;
pub mod model;
pub mod schedule;

pub use batch::{Batch, EvalOutputs, MultimodalOutput};
pub use error::{ModbalError, Result};
pub use method::{check_loss, LossTerms, Method, MethodLog, RunContext, StageSpec, StepOutput};
pub use modbal_tensors as tensors;
pub use model::MultimodalModel;
pub use schedule::scale_epoch;
