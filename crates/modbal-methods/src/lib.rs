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

pub mod arl;
pub mod arm;
pub mod cal;
pub mod ibml;
pub mod mla;
pub mod mmpareto;
pub mod ogm_ge;
pub mod params;
pub mod plain;
pub mod pmr;
pub mod udi;

pub use params::{MethodParams, MethodPlan};

/// Small helpers shared by the baseline methods.
pub(crate) mod util {
    use candle_core::{DType, Tensor};
    use modbal_core::Result;

    /// Values per modality as a JSON object keyed by modality name.
    pub fn by_name(names: &[String], v: &[f64]) -> serde_json::Value {
        serde_json::Value::Object(
            names
                .iter()
                .zip(v)
                .map(|(n, x)| (n.clone(), serde_json::json!(x)))
                .collect(),
        )
    }

    /// A `[B, C]` tensor as f64 rows.
    pub fn rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
        Ok(t.to_dtype(DType::F64)?.to_vec2::<f64>()?)
    }

    /// Labels as indices.
    pub fn labels(t: &Tensor) -> Result<Vec<usize>> {
        Ok(t.to_dtype(DType::I64)?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|y| y.max(0) as usize)
            .collect())
    }

    /// Numerically stable softmax of one row.
    pub fn softmax_row(z: &[f64]) -> Vec<f64> {
        let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    }

    /// Shannon entropy (nats) of a probability row, `0·log 0 = 0`.
    pub fn entropy(p: &[f64]) -> f64 {
        -p.iter()
            .filter(|&&x| x > 0.0)
            .map(|&x| x * x.ln())
            .sum::<f64>()
    }

    /// Fraction of rows whose arg-max equals the label.
    pub fn accuracy(z: &[Vec<f64>], y: &[usize]) -> f64 {
        if z.is_empty() {
            return 0.0;
        }
        let hits = z
            .iter()
            .zip(y)
            .filter(|(row, &yi)| {
                let mut best = 0;
                for (j, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = j;
                    }
                }
                best == yi
            })
            .count();
        hits as f64 / z.len() as f64
    }
}
