//! Late-fusion heads: per-modality features → fused logits and per-modality logits.
//!
//! With `M` modalities, features `f_m ∈ R^{D_m}` and `C` classes:
//!
//! * **Concat** (OGM-GE `ConcatFusion`): one `Linear(ΣD_m → C)`,
//!   `z = W·[f_1; …; f_M] + b`. Per-modality logits use the weight slices, as OGM-GE (CVPR'22)
//!   computes its uni-modal scores (`out_a = a·W[:, :512]ᵀ + b/2` in the official code):
//!   `z_m = W[:, slice_m]·f_m + b/M`, so that `Σ_m z_m = z` exactly (up to rounding).
//!   Parameters: `head.fc.{weight, bias}`.
//! * **Sum** (OGM-GE `SumFusion`): one `Linear(D_m → C)` per modality, `z_m = fc_m(f_m)`,
//!   `z = Σ_m z_m`. Parameters: `head.<modality>.{weight, bias}`.
//!
//! * **Mmtm** (greedy's intermediate fusion, [`crate::mmtm`]): the Sum head on the pooled
//!   features, plus MMTM blocks between the encoders' stages that [`crate::MultimodalNet`] owns
//!   (`fusion.mmtm.<k>.*`). The fused logits are the sum of the branch logits (the greedy code
//!   averages them: same argmax). Parameters of the head: as Sum.
//!
//! * **Film**, **Gated**, **Block** ([`crate::fusion_heads`]): two-modality heads with a
//!   multiplicative interaction (FiLM, OGM-GE's gated fusion, BLOCK). Their per-modality logits
//!   are the head's output with the other modality's features zeroed.
//!
//! Weights are Xavier-normal, biases zero. With a single modality concat and sum are a plain
//! linear classifier and `z_1 = z`.
//!
//! # Per-modality logits
//! [`FusionConfig::unimodal_logits`] says how each head defines them: concat
//! [`UnimodalLogits::Decomposed`] (weight slices + `b/M`, `Σ_m z_m = z`), sum and mmtm
//! [`UnimodalLogits::Branch`] (one classifier per modality, `z = Σ_m z_m`), film, gated, block
//! [`UnimodalLogits::ZeroOthers`] (`z_m = head(f ⊙ 1_{m})`, no additive relation). The methods
//! that treat the per-modality logits as an additive decomposition accept only the first two
//! kinds (`docs/fusion.md`).
//!
//! # Shapes
//! `features[m]: [B, D_m]` → `(fused [B, C], per_modality[m] [B, C])`.

use crate::error::{config_err, Result};
pub use crate::fusion_heads::UnimodalLogits;
use crate::fusion_heads::{
    BlockHead, FilmHead, GatedHead, DEFAULT_BLOCK_CHUNKS, DEFAULT_BLOCK_MM_DIM, DEFAULT_BLOCK_RANK,
};
use candle_core::Tensor;
use modbal_tensors::{Linear, ParamBuilder, SeededRng};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A fusion head. Object safe.
pub trait FusionHead: Send + Sync + fmt::Debug {
    /// `features[m]: [B, D_m]` → `(fused logits [B, C], per-modality logits [B, C] each)`.
    /// Callers may pass zeroed, detached or noisy features.
    fn forward(&self, features: &[Tensor]) -> candle_core::Result<(Tensor, Vec<Tensor>)>;
    /// Number of classes `C`.
    fn num_classes(&self) -> usize;
    /// Expected feature dimensions `D_m`, in modality order.
    fn feature_dims(&self) -> &[usize];
    /// How the per-modality logits are defined. Default: [`UnimodalLogits::ZeroOthers`] (the
    /// claim that assumes nothing about an additive decomposition).
    fn unimodal_logits(&self) -> UnimodalLogits {
        UnimodalLogits::ZeroOthers
    }
}

/// Which fusion head to build. Serialised as `{ kind = "concat" }` (the default),
/// `{ kind = "sum" }`, `{ kind = "mmtm", ratio = 4 }`, `{ kind = "film", condition = 0 }`,
/// `{ kind = "gated", gate = 0 }` (optionally `dim = H`) or
/// `{ kind = "block", mm_dim = 1600, chunks = 20, rank = 15 }`; left-out options take these
/// defaults. `condition` and `gate` are modality indices in the model's modality order (the
/// dataset's order, e.g. synth-av: 0 = audio, 1 = visual).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FusionRepr", into = "FusionRepr")]
pub enum FusionConfig {
    /// One linear layer on the concatenated features; per-modality logits from its weight
    /// slices plus `b/M`. Default.
    #[default]
    Concat,
    /// One linear layer per modality; the fused logits are their sum.
    Sum,
    /// Sum head plus MMTM blocks between the encoder stages ([`crate::mmtm`]) with squeeze
    /// width `⌊2·ΣC_m / ratio⌋` (official MMTM in the greedy code: ratio 4).
    Mmtm { ratio: usize },
    /// FiLM ([`crate::fusion_heads::FilmHead`]): modality `condition` (default 0, OGM-GE's
    /// `x_film=True`) produces `γ, β` for the other, `z = fc_out(γ ⊙ y + β)`. Two modalities.
    Film { condition: usize },
    /// OGM-GE's gated fusion ([`crate::fusion_heads::GatedHead`]): modality `gate` (default 0,
    /// the official `x_gate=True`) gates the other's projection, `z = fc_out(σ(h_g) ⊙ h_o)`;
    /// `dim` = `H` (default: the gated modality's feature width). Two modalities.
    Gated { gate: usize, dim: Option<usize> },
    /// BLOCK ([`crate::fusion_heads::BlockHead`]): block-superdiagonal bilinear fusion,
    /// defaults `mm_dim = 1600`, `chunks = 20`, `rank = 15` (official). Two modalities.
    Block {
        mm_dim: usize,
        chunks: usize,
        rank: usize,
    },
}

/// The MMTM ratio of `{ kind = "mmtm" }` without `ratio` (greedy's `src/model.py`: 4).
pub const DEFAULT_MMTM_RATIO: usize = 4;

/// Serde form of [`FusionConfig`]: `{ kind = "..." }`. serde ignores unknown keys beside the
/// tag of a unit variant even with `deny_unknown_fields`, so the tag is read through this struct.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FusionRepr {
    kind: FusionKind,
    /// Only for `mmtm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ratio: Option<usize>,
    /// Only for `film`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    condition: Option<usize>,
    /// Only for `gated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gate: Option<usize>,
    /// Only for `gated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dim: Option<usize>,
    /// Only for `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mm_dim: Option<usize>,
    /// Only for `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunks: Option<usize>,
    /// Only for `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rank: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FusionKind {
    Concat,
    Sum,
    Mmtm,
    Film,
    Gated,
    Block,
}

impl FusionKind {
    fn name(self) -> &'static str {
        match self {
            FusionKind::Concat => "concat",
            FusionKind::Sum => "sum",
            FusionKind::Mmtm => "mmtm",
            FusionKind::Film => "film",
            FusionKind::Gated => "gated",
            FusionKind::Block => "block",
        }
    }
    /// The options of this kind (besides `kind`).
    fn options(self) -> &'static [&'static str] {
        match self {
            FusionKind::Concat | FusionKind::Sum => &[],
            FusionKind::Mmtm => &["ratio"],
            FusionKind::Film => &["condition"],
            FusionKind::Gated => &["gate", "dim"],
            FusionKind::Block => &["mm_dim", "chunks", "rank"],
        }
    }
}

/// Every fusion kind, in the order of [`FusionConfig`]'s variants.
pub const FUSION_KINDS: [&str; 6] = ["concat", "sum", "mmtm", "film", "gated", "block"];

impl TryFrom<FusionRepr> for FusionConfig {
    type Error = String;
    fn try_from(r: FusionRepr) -> std::result::Result<Self, String> {
        if r.ratio.is_some() && r.kind != FusionKind::Mmtm {
            return Err("fusion: `ratio` is an option of kind \"mmtm\" only".into());
        }
        let given = [
            ("condition", r.condition.is_some()),
            ("gate", r.gate.is_some()),
            ("dim", r.dim.is_some()),
            ("mm_dim", r.mm_dim.is_some()),
            ("chunks", r.chunks.is_some()),
            ("rank", r.rank.is_some()),
        ];
        let allowed = r.kind.options();
        if let Some((name, _)) = given.iter().find(|(n, g)| *g && !allowed.contains(n)) {
            let has = if allowed.is_empty() {
                "no options".to_string()
            } else {
                format!("options {}", allowed.join(", "))
            };
            return Err(format!(
                "fusion: `{name}` is not an option of kind \"{}\" (it has {has})",
                r.kind.name()
            ));
        }
        let c = match r.kind {
            FusionKind::Concat => FusionConfig::Concat,
            FusionKind::Sum => FusionConfig::Sum,
            FusionKind::Mmtm => FusionConfig::Mmtm {
                ratio: r.ratio.unwrap_or(DEFAULT_MMTM_RATIO),
            },
            FusionKind::Film => FusionConfig::Film {
                condition: r.condition.unwrap_or(0),
            },
            FusionKind::Gated => FusionConfig::Gated {
                gate: r.gate.unwrap_or(0),
                dim: r.dim,
            },
            FusionKind::Block => FusionConfig::Block {
                mm_dim: r.mm_dim.unwrap_or(DEFAULT_BLOCK_MM_DIM),
                chunks: r.chunks.unwrap_or(DEFAULT_BLOCK_CHUNKS),
                rank: r.rank.unwrap_or(DEFAULT_BLOCK_RANK),
            },
        };
        c.check().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

impl From<FusionConfig> for FusionRepr {
    fn from(c: FusionConfig) -> Self {
        let mut r = FusionRepr {
            kind: FusionKind::Concat,
            ratio: None,
            condition: None,
            gate: None,
            dim: None,
            mm_dim: None,
            chunks: None,
            rank: None,
        };
        match c {
            FusionConfig::Concat => {}
            FusionConfig::Sum => r.kind = FusionKind::Sum,
            FusionConfig::Mmtm { ratio } => {
                r.kind = FusionKind::Mmtm;
                r.ratio = Some(ratio);
            }
            FusionConfig::Film { condition } => {
                r.kind = FusionKind::Film;
                r.condition = Some(condition);
            }
            FusionConfig::Gated { gate, dim } => {
                r.kind = FusionKind::Gated;
                r.gate = Some(gate);
                r.dim = dim;
            }
            FusionConfig::Block {
                mm_dim,
                chunks,
                rank,
            } => {
                r.kind = FusionKind::Block;
                r.mm_dim = Some(mm_dim);
                r.chunks = Some(chunks);
                r.rank = Some(rank);
            }
        }
        r
    }
}

impl FusionConfig {
    /// The serde tag of this kind.
    pub fn kind(&self) -> &'static str {
        match self {
            FusionConfig::Concat => "concat",
            FusionConfig::Sum => "sum",
            FusionConfig::Mmtm { .. } => "mmtm",
            FusionConfig::Film { .. } => "film",
            FusionConfig::Gated { .. } => "gated",
            FusionConfig::Block { .. } => "block",
        }
    }

    /// FiLM with the official defaults (`condition = 0`).
    pub fn film() -> Self {
        FusionConfig::Film { condition: 0 }
    }
    /// Gated fusion with the official defaults (`gate = 0`, `dim` = the gated width).
    pub fn gated() -> Self {
        FusionConfig::Gated { gate: 0, dim: None }
    }
    /// BLOCK with the official defaults (1600, 20, 15).
    pub fn block() -> Self {
        FusionConfig::Block {
            mm_dim: DEFAULT_BLOCK_MM_DIM,
            chunks: DEFAULT_BLOCK_CHUNKS,
            rank: DEFAULT_BLOCK_RANK,
        }
    }
    /// MMTM with the greedy code's ratio 4.
    pub fn mmtm() -> Self {
        FusionConfig::Mmtm {
            ratio: DEFAULT_MMTM_RATIO,
        }
    }

    /// How this head's per-modality logits are defined (see the [module docs](self)).
    pub fn unimodal_logits(&self) -> UnimodalLogits {
        match self {
            FusionConfig::Concat => UnimodalLogits::Decomposed,
            FusionConfig::Sum | FusionConfig::Mmtm { .. } => UnimodalLogits::Branch,
            FusionConfig::Film { .. } | FusionConfig::Gated { .. } | FusionConfig::Block { .. } => {
                UnimodalLogits::ZeroOthers
            }
        }
    }

    /// `true` for the late-fusion heads: every encoder sees only its own modality (all but
    /// mmtm, whose blocks exchange information between the encoders' stages), so
    /// [`modbal_core::MultimodalModel::encode`] works and zeroing a feature removes the modality.
    pub fn is_late(&self) -> bool {
        !matches!(self, FusionConfig::Mmtm { .. })
    }

    /// The number of modalities the head fuses, if fixed (film, gated, block: 2).
    pub fn required_modalities(&self) -> Option<usize> {
        match self {
            FusionConfig::Film { .. } | FusionConfig::Gated { .. } | FusionConfig::Block { .. } => {
                Some(2)
            }
            _ => None,
        }
    }

    /// Checks the options that do not depend on the data (ranges, BLOCK's chunking).
    pub fn check(&self) -> Result<()> {
        match *self {
            FusionConfig::Mmtm { ratio: 0 } => config_err("mmtm fusion: ratio must be >= 1"),
            FusionConfig::Film { condition } if condition > 1 => config_err(format!(
                "film fusion: condition = {condition} is not a modality index (0 or 1, in the \
                 model's modality order)"
            )),
            FusionConfig::Gated { gate, .. } if gate > 1 => config_err(format!(
                "gated fusion: gate = {gate} is not a modality index (0 or 1, in the model's \
                 modality order)"
            )),
            FusionConfig::Gated { dim: Some(0), .. } => {
                config_err("gated fusion: dim must be >= 1")
            }
            FusionConfig::Block {
                mm_dim,
                chunks,
                rank,
            } => {
                if rank == 0 {
                    return config_err("block fusion: rank must be >= 1");
                }
                crate::fusion_heads::block_chunk_sizes(mm_dim, chunks).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// Build the head under `pb` (the caller passes the `head` builder) for features of
    /// dimensions `feature_dims` belonging to `modalities` (same length, in order).
    pub fn build(
        &self,
        pb: &ParamBuilder,
        modalities: &[String],
        feature_dims: &[usize],
        num_classes: usize,
        rng: &mut SeededRng,
    ) -> Result<Box<dyn FusionHead>> {
        if modalities.len() != feature_dims.len() {
            return config_err(format!(
                "{} fusion head: {} modality names {modalities:?} but {} feature dimensions {feature_dims:?}",
                self.kind(),
                modalities.len(),
                feature_dims.len()
            ));
        }
        if modalities.is_empty() {
            return config_err(format!("{} fusion head: no modalities", self.kind()));
        }
        if let Some(i) = feature_dims.iter().position(|&d| d == 0) {
            return config_err(format!(
                "{} fusion head: modality {:?} has feature dimension 0",
                self.kind(),
                modalities[i]
            ));
        }
        if num_classes == 0 {
            return config_err(format!("{} fusion head: num_classes is 0", self.kind()));
        }
        self.check()?;
        if let Some(n) = self.required_modalities() {
            if modalities.len() != n {
                return config_err(format!(
                    "{} fusion fuses exactly {n} modalities (as its official code), the model \
                     has {}: {modalities:?}",
                    self.kind(),
                    modalities.len()
                ));
            }
        }
        Ok(match *self {
            FusionConfig::Film { condition } => Box::new(FilmHead::new(
                pb,
                feature_dims,
                condition,
                num_classes,
                rng,
            )?),
            FusionConfig::Gated { gate, dim } => Box::new(GatedHead::new(
                pb,
                feature_dims,
                gate,
                dim,
                num_classes,
                rng,
            )?),
            FusionConfig::Block {
                mm_dim,
                chunks,
                rank,
            } => Box::new(BlockHead::new(
                pb,
                feature_dims,
                mm_dim,
                chunks,
                rank,
                num_classes,
                rng,
            )?),
            FusionConfig::Concat => Box::new(ConcatHead::new(pb, feature_dims, num_classes, rng)?),
            FusionConfig::Sum | FusionConfig::Mmtm { .. } => Box::new(SumHead::new(
                pb,
                modalities,
                feature_dims,
                num_classes,
                rng,
            )?),
        })
    }
}

/// Check `features` against the head's `dims`: count, rank 2, widths, common batch size.
pub(crate) fn check_features(
    kind: &str,
    dims: &[usize],
    features: &[Tensor],
) -> candle_core::Result<()> {
    let shapes: Vec<&[usize]> = features.iter().map(|f| f.dims()).collect();
    let expected: Vec<String> = dims.iter().map(|d| format!("[B, {d}]")).collect();
    let bad = features.len() != dims.len()
        || shapes
            .iter()
            .zip(dims)
            .any(|(s, &d)| s.len() != 2 || s[1] != d)
        || shapes
            .iter()
            .any(|s| s.first() != shapes.first().and_then(|s0| s0.first()));
    if bad {
        candle_core::bail!(
            "{kind} fusion head expects features [{}] (one per modality, common B), got {shapes:?}",
            expected.join(", ")
        );
    }
    Ok(())
}

/// The concatenation head; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ConcatHead {
    /// `Linear(ΣD_m → C)`, parameters `fc.weight [C, ΣD_m]`, `fc.bias [C]`.
    pub fc: Linear,
    dims: Vec<usize>,
}

impl ConcatHead {
    pub fn new(
        pb: &ParamBuilder,
        feature_dims: &[usize],
        num_classes: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let total = feature_dims.iter().sum();
        Ok(Self {
            fc: Linear::new(&pb.pp("fc"), total, num_classes, rng)?,
            dims: feature_dims.to_vec(),
        })
    }

    /// Column range of modality `m` in the weight matrix: `(offset, D_m)`.
    pub fn slice(&self, m: usize) -> (usize, usize) {
        (self.dims[..m].iter().sum(), self.dims[m])
    }
}

impl FusionHead for ConcatHead {
    fn forward(&self, features: &[Tensor]) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        check_features("concat", &self.dims, features)?;
        let fused = if features.len() == 1 {
            self.fc.forward(&features[0])?
        } else {
            self.fc.forward(&Tensor::cat(features, 1)?)?
        };
        let m_count = features.len() as f64;
        let bias_share = match &self.fc.bias {
            Some(b) => Some((b / m_count)?),
            None => None,
        };
        let per = features
            .iter()
            .enumerate()
            .map(|(m, f)| {
                let (off, d) = self.slice(m);
                let z = f.matmul(&self.fc.weight.narrow(1, off, d)?.t()?)?;
                match &bias_share {
                    Some(b) => z.broadcast_add(b),
                    None => Ok(z),
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((fused, per))
    }
    fn num_classes(&self) -> usize {
        self.fc.out_dim()
    }
    fn unimodal_logits(&self) -> UnimodalLogits {
        UnimodalLogits::Decomposed
    }
    fn feature_dims(&self) -> &[usize] {
        &self.dims
    }
}

/// The sum head; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct SumHead {
    /// One `Linear(D_m → C)` per modality, parameters `<modality>.{weight, bias}`.
    pub fcs: Vec<Linear>,
    dims: Vec<usize>,
}

impl SumHead {
    pub fn new(
        pb: &ParamBuilder,
        modalities: &[String],
        feature_dims: &[usize],
        num_classes: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let fcs = modalities
            .iter()
            .zip(feature_dims)
            .map(|(name, &d)| Linear::new(&pb.pp(name), d, num_classes, rng))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            fcs,
            dims: feature_dims.to_vec(),
        })
    }
}

impl FusionHead for SumHead {
    fn forward(&self, features: &[Tensor]) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        check_features("sum", &self.dims, features)?;
        let per = self
            .fcs
            .iter()
            .zip(features)
            .map(|(fc, f)| fc.forward(f))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut fused = per[0].clone();
        for z in &per[1..] {
            fused = (fused + z)?;
        }
        Ok((fused, per))
    }
    fn num_classes(&self) -> usize {
        self.fcs[0].out_dim()
    }
    fn unimodal_logits(&self) -> UnimodalLogits {
        UnimodalLogits::Branch
    }
    fn feature_dims(&self) -> &[usize] {
        &self.dims
    }
}
