//! The foundation baselines: `concat`, `sum` and `unimodal` — plain joint training with
//! cross-entropy on the fused logits (every `Method` hook keeps its default). They differ only in
//! the model: concatenation head, sum head (one fc per modality), or a single modality.

use crate::built::{parse_options, Built};
use modbal_core::{Method, Result};
use modbal_encoders::FusionConfig;
use serde::{Deserialize, Serialize};

/// Joint training with the default hooks.
#[derive(Debug, Clone)]
pub struct Plain {
    name: &'static str,
}

impl Plain {
    pub fn new(name: &'static str) -> Self {
        Self { name }
    }
}

impl Method for Plain {
    fn name(&self) -> &str {
        self.name
    }
}

/// `concat` and `sum` take no options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// Options of `unimodal`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnimodalConfig {
    /// The modality to train; empty means the dataset's first (the resolved config records it).
    pub modality: String,
}

pub fn build(name: &str, options: &toml::Table) -> Result<Built> {
    match name {
        "unimodal" => {
            let (cfg, resolved): (UnimodalConfig, _) = parse_options(name, options)?;
            Ok(Built {
                method: Box::new(Plain::new("unimodal")),
                fusion: FusionConfig::Concat,
                resolved,
                modalities: Some(vec![cfg.modality]),
            })
        }
        _ => {
            let (_, resolved): (NoOptions, _) = parse_options(name, options)?;
            let (n, fusion) = if name == "sum" {
                ("sum", FusionConfig::Sum)
            } else {
                ("concat", FusionConfig::Concat)
            };
            Ok(Built {
                method: Box::new(Plain::new(n)),
                fusion,
                resolved,
                modalities: None,
            })
        }
    }
}
