//! Plain joint training: `concat`, `sum`, `unimodal`, and the fusion-architecture baselines
//! `film`, `gated`, `block`, `mmtm` — cross-entropy on the fused logits with every `Method`
//! hook at its default. They differ only in the model: concatenation head, sum head (one fc per
//! modality), a single modality, or the fusion head of that name
//! ([`modbal_encoders::fusion_heads`], [`modbal_encoders::mmtm`]; `docs/fusion.md`), whose
//! options are the method's options. (The *baselines* of the papers' tables are the other
//! methods of this crate: OGM-GE, MMPareto, PMR, MLA, ARL; the fusion baselines are the rows
//! "FiLM", "BiGated"/"Gated", "Block", "MMTM" of CAL's and ARM's tables.)

use crate::params::MethodParams;
use modbal_core::{Method, Result};
use modbal_encoders::fusion::DEFAULT_MMTM_RATIO;
use modbal_encoders::fusion_heads::{
    DEFAULT_BLOCK_CHUNKS, DEFAULT_BLOCK_MM_DIM, DEFAULT_BLOCK_RANK,
};
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

/// The configuration error of a fusion head's options, as a method option error.
fn check_head(method: &str, f: &FusionConfig) -> Result<()> {
    f.check()
        .map_err(|e| modbal_core::ModbalError::Config(format!("method {method}: {e}")))
}

/// `film`: joint training on a FiLM head (Perez et al., AAAI 2018, as OGM-GE's code).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilmConfig {
    /// Index of the conditioning modality (it produces `γ, β` for the other), in the model's
    /// modality order. Default 0: OGM-GE's `FiLM(x_film=True)`, the first modality (audio)
    /// conditions the second.
    pub condition: usize,
}

impl MethodParams for FilmConfig {
    fn check(&self) -> Result<()> {
        check_head("film", &self.fusion())
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Film {
            condition: self.condition,
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Plain::new("film")))
    }
}

/// `gated`: joint training on OGM-GE's gated-fusion head.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatedConfig {
    /// Index of the gating modality. Default 0: OGM-GE's `GatedFusion(x_gate=True)`.
    pub gate: usize,
    /// Hidden width `H` of `fc_x`, `fc_y`. Default: the gated modality's feature width (the
    /// official `dim = 512` = ResNet18's feature width).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
}

impl MethodParams for GatedConfig {
    fn check(&self) -> Result<()> {
        check_head("gated", &self.fusion())
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Gated {
            gate: self.gate,
            dim: self.dim,
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Plain::new("gated")))
    }
}

/// `block`: joint training on a BLOCK head (Ben-Younes et al., AAAI 2019).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockConfig {
    /// Width of the projected features. Default 1600 (official `Block(mm_dim=1600)`).
    pub mm_dim: usize,
    /// Number of blocks. Default 20 (official).
    pub chunks: usize,
    /// Rank of each block's tensor. Default 15 (official).
    pub rank: usize,
}

impl Default for BlockConfig {
    fn default() -> Self {
        Self {
            mm_dim: DEFAULT_BLOCK_MM_DIM,
            chunks: DEFAULT_BLOCK_CHUNKS,
            rank: DEFAULT_BLOCK_RANK,
        }
    }
}

impl MethodParams for BlockConfig {
    fn check(&self) -> Result<()> {
        check_head("block", &self.fusion())
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Block {
            mm_dim: self.mm_dim,
            chunks: self.chunks,
            rank: self.rank,
        }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Plain::new("block")))
    }
}

/// `mmtm`: joint training with MMTM blocks between the encoders' stages (Joze et al., CVPR
/// 2020) and the sum head; needs staged encoders (small_cnn, conv4, resnet18, mlp).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmtmConfig {
    /// Squeeze ratio: width `⌊2·ΣC_m / ratio⌋`. Default 4 (the greedy code's MMTM).
    pub ratio: usize,
}

impl Default for MmtmConfig {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_MMTM_RATIO,
        }
    }
}

impl MethodParams for MmtmConfig {
    fn check(&self) -> Result<()> {
        check_head("mmtm", &self.fusion())
    }
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Mmtm { ratio: self.ratio }
    }
    fn build(&self) -> Result<Box<dyn Method>> {
        Ok(Box::new(Plain::new("mmtm")))
    }
}
