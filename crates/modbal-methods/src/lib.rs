//! # modbal-methods: the balancing methods and baselines, on the `Method` hooks
//!
//! Every method is one module implementing [`modbal_core::Method`] plus a config struct whose
//! defaults are the paper's (or the official code's where the paper is silent; each module
//! says which) and which implements [`MethodParams`] (checked once, then built once per run).
//! `docs/methods/<name>.md` documents each one. The name → method table lives in the `modbal`
//! crate's `Registry`, where a user's own method registers the same way.
//!
//! # Example
//!
//! ```
//! use modbal_encoders::FusionConfig;
//! use modbal_methods::{ogm_ge::OgmGeMethodConfig, params};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The `[method]` section of a run config, without its `name` key.
//! let mut options = toml::Table::new();
//! options.insert("alpha".into(), toml::Value::Float(0.5));
//! let plan = params::parse::<OgmGeMethodConfig>("ogm-ge", &options)?;
//! assert_eq!(plan.fusion_head(), FusionConfig::Concat);
//! // The resolved options have every default filled in (what `config.toml` records).
//! let resolved = plan.options()?;
//! assert_eq!(resolved["alpha"].as_float(), Some(0.5));
//! assert!(resolved.contains_key("window"));
//! // Built once per run.
//! assert_eq!(plan.instantiate()?.name(), "ogm-ge");
//!
//! // Unknown keys and out-of-range values are errors that name them.
//! options.insert("alhpa".into(), toml::Value::Float(0.5));
//! let err = params::parse::<OgmGeMethodConfig>("ogm-ge", &options).err().unwrap();
//! assert!(err.to_string().contains("alhpa"));
//! # Ok(())
//! # }
//! ```

pub mod agm;
pub mod arl;
pub mod arm;
pub mod cal;
pub mod cml;
pub mod dgl;
pub mod dnr;
pub mod eau;
pub mod g_blending;
pub mod greedy;
pub mod ibml;
pub mod inforeg;
pub mod lfm;
pub mod mla;
pub mod mmcosine;
pub mod mmpareto;
pub mod ogm_ge;
pub mod opm;
pub mod params;
pub mod plain;
pub mod pmr;
pub mod qmf;
pub mod reconboost;
pub mod tmc;
pub mod udi;
pub mod valuation;

pub use params::{MethodParams, MethodPlan};

pub(crate) mod util;
