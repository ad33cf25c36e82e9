//! # modbal-methods: the balancing methods and baselines, on the `Method` hooks
//!
//! Every method is one module implementing [`modbal_core::Method`] plus a config struct whose
//! defaults are the paper's (or the official code's where the paper is silent; each module
//! says which), registered in [`build`] by name. `docs/methods/<name>.md` documents each one.
//!
//! The registry contract: `build(name, options)` deserialises `options` (a TOML table: the
//! `[method]` section of a run config without its `name` key) into the method's config,
//! rejecting unknown keys, and returns the method, the fusion head its model needs, and the
//! fully resolved options (defaults filled in) that `config.toml` records.
//!
//! # Example
//!
//! ```
//! use modbal_encoders::FusionConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The `[method]` section of a run config, without its `name` key.
//! let mut options = toml::Table::new();
//! options.insert("alpha".into(), toml::Value::Float(0.5));
//! let built = modbal_methods::build("ogm-ge", &options)?;
//! assert_eq!(built.method.name(), "ogm-ge");
//! assert_eq!(built.fusion, FusionConfig::Concat);
//! // The resolved options have every default filled in (what `config.toml` records).
//! assert_eq!(built.resolved["alpha"].as_float(), Some(0.5));
//! assert!(built.resolved.contains_key("window"));
//!
//! // Unknown keys and unknown methods are errors that name them.
//! options.insert("alhpa".into(), toml::Value::Float(0.5));
//! assert!(modbal_methods::build("ogm-ge", &options).unwrap_err().to_string().contains("alhpa"));
//! assert!(modbal_methods::build("ogm", &toml::Table::new()).is_err());
//! # Ok(())
//! # }
//! ```

pub mod arl;
pub mod arm;
pub mod baselines;
pub mod built;
pub mod cal;
pub mod ibml;
pub mod mla;
pub mod mmpareto;
pub mod ogm_ge;
pub mod pmr;
pub mod registry;
pub mod udi;

pub use registry::{build, Built, METHOD_NAMES};

pub(crate) mod util;
