//! # modbal-methods: the training methods
//!
//! Every method is one module implementing [`modbal_core::Method`] plus a config struct whose
//! defaults are the paper's (or the official code's where the paper is silent; each module
//! says which), registered in [`build`] by name. `docs/methods/<name>.md` documents each one.
//!
//! The registry contract: `build(name, options)` deserialises `options` (a TOML table: the
//! `[method]` section of a run config without its `name` key) into the method's config,
//! rejecting unknown keys, and returns the method, the fusion head its model needs, and the
//! fully resolved options (defaults filled in) that `config.toml` records.

pub mod arm;
pub mod baselines;
pub mod cal;
pub mod ibml;
pub mod ogm_ge;
pub mod registry;
pub mod udi;

pub use registry::{build, Built, METHOD_NAMES};
