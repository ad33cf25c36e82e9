//! What building a method yields ([`Built`]) and how a method's options are parsed
//! ([`parse_options`]): the part of the registry every method module uses, kept apart from the
//! name table ([`crate::registry`]) so that no module imports the registry that imports it.

use modbal_core::{Method, ModbalError, Result};
use modbal_encoders::FusionConfig;
use serde::{de::DeserializeOwned, Serialize};

/// A method ready to train, with the model head it needs.
pub struct Built {
    pub method: Box<dyn Method>,
    pub fusion: FusionConfig,
    /// The method's options with every default filled in (recorded in `config.toml`).
    pub resolved: toml::Table,
    /// Modalities the model must have (`None`: all of the dataset's). Unimodal training uses it.
    pub modalities: Option<Vec<String>>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("method", &self.method.name())
            .field("fusion", &self.fusion)
            .field("resolved", &self.resolved)
            .finish()
    }
}

/// Deserialise a method's options into its config type (unknown keys are errors naming them),
/// and serialise the config back (defaults filled in).
pub fn parse_options<C: DeserializeOwned + Serialize>(
    method: &str,
    options: &toml::Table,
) -> Result<(C, toml::Table)> {
    let cfg: C = toml::Value::Table(options.clone())
        .try_into()
        .map_err(|e: toml::de::Error| {
            ModbalError::Config(format!("method {method}: {}", e.to_string().trim()))
        })?;
    let resolved = match toml::Value::try_from(&cfg) {
        Ok(toml::Value::Table(t)) => t,
        Ok(_) => toml::Table::new(),
        Err(e) => return Err(ModbalError::Serde(e.to_string())),
    };
    Ok((cfg, resolved))
}
