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
//! Weights are Xavier-normal, biases zero. With a single modality both heads are a plain linear
//! classifier and `z_1 = z`.
//!
//! # Shapes
//! `features[m]: [B, D_m]` → `(fused [B, C], per_modality[m] [B, C])`.

use crate::error::{config_err, Result};
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
}

/// Which fusion head to build. Serialised as `{ kind = "concat" }` (the default),
/// `{ kind = "sum" }` or `{ kind = "mmtm", ratio = 4 }`.
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
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FusionKind {
    Concat,
    Sum,
    Mmtm,
}

impl TryFrom<FusionRepr> for FusionConfig {
    type Error = String;
    fn try_from(r: FusionRepr) -> std::result::Result<Self, String> {
        match (r.kind, r.ratio) {
            (FusionKind::Concat, None) => Ok(FusionConfig::Concat),
            (FusionKind::Sum, None) => Ok(FusionConfig::Sum),
            (FusionKind::Mmtm, ratio) => Ok(FusionConfig::Mmtm {
                ratio: ratio.unwrap_or(DEFAULT_MMTM_RATIO),
            }),
            (_, Some(_)) => Err("fusion: `ratio` is an option of kind \"mmtm\" only".into()),
        }
    }
}

impl From<FusionConfig> for FusionRepr {
    fn from(c: FusionConfig) -> Self {
        let (kind, ratio) = match c {
            FusionConfig::Concat => (FusionKind::Concat, None),
            FusionConfig::Sum => (FusionKind::Sum, None),
            FusionConfig::Mmtm { ratio } => (FusionKind::Mmtm, Some(ratio)),
        };
        FusionRepr { kind, ratio }
    }
}

impl FusionConfig {
    /// The serde tag of this kind.
    pub fn kind(&self) -> &'static str {
        match self {
            FusionConfig::Concat => "concat",
            FusionConfig::Sum => "sum",
            FusionConfig::Mmtm { .. } => "mmtm",
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
        Ok(match self {
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
fn check_features(kind: &str, dims: &[usize], features: &[Tensor]) -> candle_core::Result<()> {
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
    fn feature_dims(&self) -> &[usize] {
        &self.dims
    }
}
