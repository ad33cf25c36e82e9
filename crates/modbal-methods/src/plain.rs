//! Plain joint training: `concat`, `sum` and `unimodal` — cross-entropy on the fused logits with
//! every `Method` hook at its default. They differ only in the model: concatenation head, sum
//! head (one fc per modality), or a single modality. (The *baselines* of the papers' tables are
//! the other methods of this crate: OGM-GE, MMPareto, PMR, MLA, ARL.)

use crate::params::MethodParams;
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

/// `concat`: joint training on a concatenation head. No options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcatConfig {}

impl MethodParams for ConcatConfig {
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Plain::new("concat")))
    }
}

/// `sum`: joint training on a sum head (one fc per modality). No options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SumConfig {}

impl MethodParams for SumConfig {
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Sum
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Plain::new("sum")))
    }
}

/// Options of `unimodal`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnimodalConfig {
    /// The modality to train; empty means the dataset's first (the resolved config records it).
    pub modality: String,
}

impl MethodParams for UnimodalConfig {
    fn modalities(&self) -> Option<Vec<String>> {
        Some(vec![self.modality.clone()])
    }
    fn fit_data(&mut self, dataset_modalities: &[String]) {
        if self.modality.is_empty() {
            if let Some(first) = dataset_modalities.first() {
                self.modality = first.clone();
            }
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Plain::new("unimodal")))
    }
}
