//! One line of `metrics.jsonl` (and of `test_curve.jsonl`), written by the loop
//! ([`crate::learner`]) and read by the plots ([`crate::plot`]) and by resume.

use crate::metrics::SplitMetrics;
use modbal_data::noise::NoiseConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub stage: String,
    pub split: String,
    pub loss: f64,
    pub fusion_acc: f64,
    pub modality_acc: BTreeMap<String, f64>,
    pub macro_f1: f64,
    pub discrepancy_ratio: Option<f64>,
    pub lr: f64,
    pub method: serde_json::Map<String, serde_json::Value>,
    /// The corruption applied to this split's inputs (robustness protocol); absent when clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseConfig>,
}

impl EpochRecord {
    pub(crate) fn new(epoch: usize, stage: &str, split: &str, m: &SplitMetrics, lr: f64) -> Self {
        Self {
            epoch,
            stage: stage.into(),
            split: split.into(),
            loss: m.loss,
            fusion_acc: m.fusion_acc,
            modality_acc: m.modality_acc.clone(),
            macro_f1: m.macro_f1,
            discrepancy_ratio: m.discrepancy_ratio,
            lr,
            method: Default::default(),
            noise: None,
        }
    }
}
