//! The method registry. This baselines (`concat`, `sum`, `unimodal`) are plain joint
//! training with cross-entropy on the fused logits: every [`Method`] hook keeps its default, and
//! the baselines differ only in the model they are given (fusion head; one modality for
//! `unimodal`). Balancing methods arrive as further registry entries.

use crate::config::MethodConfig;
use modbal_core::Method;
use modbal_encoders::FusionConfig;

/// Joint training with the default hooks.
#[derive(Debug, Clone)]
pub struct Plain {
    name: &'static str,
}

impl Method for Plain {
    fn name(&self) -> &str {
        self.name
    }
}

/// Instantiate the method of a config.
pub fn build_method(cfg: &MethodConfig) -> Box<dyn Method> {
    Box::new(Plain { name: cfg.name() })
}

/// The fusion head a method trains.
pub fn fusion_for(cfg: &MethodConfig) -> FusionConfig {
    match cfg {
        MethodConfig::Sum {} => FusionConfig::Sum,
        MethodConfig::Concat {} | MethodConfig::Unimodal { .. } => FusionConfig::Concat,
    }
}
