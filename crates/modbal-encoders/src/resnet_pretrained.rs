//! ImageNet-pretrained ResNet18 weights for [`ResNet18Encoder`] (CAL's MVSA / NYUD2 image
//! encoder, QMF, IBML's image encoder).
//!
//! # Names
//! [`ResNet18Encoder`] registers torchvision's names, so torchvision state dicts
//! (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`,
//! `layer2.0.downsample.1.running_var`, …) map one to one. timm's `resnet18*` checkpoints
//! (e.g. `timm/resnet18.tv_in1k`, torchvision's original weights re-published by timm, or
//! `timm/resnet18.a1_in1k`) use the same names. Accepted as well: a `module.` (DataParallel),
//! `model.` or `backbone.` prefix. Dropped: `fc.*` (the 1000-class ImageNet head; modbal's
//! fusion head replaces it) and `*.num_batches_tracked`.
//!
//! # Stem adaptation (fewer input channels)
//! The first convolution `conv1.weight [64, 3, 7, 7]` is adapted to the encoder's `C` input
//! channels:
//! * `C = 1` (grey images, spectrograms, depth): the **sum** of the three RGB filters,
//!   `W'[:, 0] = Σ_c W[:, c]` — a grey image fed as `R = G = B` gives the same response as the
//!   RGB network (timm's `adapt_input_conv` for `in_chans = 1`);
//! * `C ≠ 1, 3` (e.g. `C = 2`, optical flow u/v): the **mean** of the RGB filters replicated
//!   on every channel, `W'[:, c] = (1/3)·Σ_k W[:, k]` — TSN's cross-modality initialisation
//!   (Wang et al., ECCV'16 §3.2);
//! * `C = 3`: unchanged.
//!
//! Inputs must be normalised as the weights expect (ImageNet mean/std for torchvision / timm
//! `tv_in1k`, which the image datasets of modbal-data do).

use crate::error::{config_err, Result};
use crate::pretrained::{load_into_store, read_safetensors, LoadReport, WeightsSource};
use crate::resnet::ResNet18Encoder;
use candle_core::Tensor;
use modbal_tensors::{ParamBuilder, SeededRng};
use std::path::Path;

/// Default hub repository of the ImageNet weights: torchvision's ResNet18
/// (`IMAGENET1K_V1`, 69.76 % top-1) as published by timm in safetensors.
pub const DEFAULT_RESNET18_REPO: &str = "timm/resnet18.tv_in1k";

/// Map a torchvision / timm tensor name to [`ResNet18Encoder`]'s name, or `None` for tensors
/// that are dropped (`fc.*`, `num_batches_tracked`).
pub fn map_resnet18_name(name: &str) -> Option<String> {
    let mut n = name;
    for p in ["module.", "model.", "backbone."] {
        if let Some(s) = n.strip_prefix(p) {
            n = s;
        }
    }
    if n.starts_with("fc.") || n.ends_with("num_batches_tracked") {
        return None;
    }
    Some(n.to_string())
}

/// Adapt the RGB stem `[O, 3, k, k]` to `c` input channels (see the [module docs](self)).
pub fn adapt_stem(w: &Tensor, c: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims();
    if dims.len() != 4 {
        candle_core::bail!("stem weight must be [O, C, k, k], got {dims:?}");
    }
    let c_src = dims[1];
    if c == c_src {
        return Ok(w.clone());
    }
    if c_src != 3 {
        candle_core::bail!("stem adaptation needs an RGB stem [O, 3, k, k], got {dims:?}");
    }
    if c == 1 {
        w.sum_keepdim(1)
    } else {
        let mean = w.mean_keepdim(1)?;
        Tensor::cat(&vec![mean; c], 1)
    }
}

/// Load torchvision / timm ResNet18 weights from a safetensors file into an encoder built
/// under `pb` (its prefix), adapting the stem to the encoder's input channels.
pub fn load_resnet18_safetensors(pb: &ParamBuilder, path: &Path) -> Result<LoadReport> {
    let tensors = read_safetensors(path, pb.device())?;
    load_into_store(
        pb.store(),
        pb.prefix(),
        tensors,
        path,
        map_resnet18_name,
        |name, t, want| {
            if name == "conv1.weight" && t.dims() != want && want.len() == 4 {
                Ok(adapt_stem(&t, want[1])?)
            } else {
                Ok(t)
            }
        },
    )
}

/// Build a [`ResNet18Encoder`] under `pb` and load ImageNet weights resolved from `source`
/// (`model.safetensors`, see [`WeightsSource::resolve`]).
pub fn pretrained_resnet18(
    pb: &ParamBuilder,
    input_shape: &[usize],
    frames_pooling: bool,
    source: &WeightsSource,
    rng: &mut SeededRng,
) -> Result<ResNet18Encoder> {
    let enc = ResNet18Encoder::new(pb, input_shape, frames_pooling, rng)?;
    let path = source.resolve("model.safetensors")?;
    let report = load_resnet18_safetensors(pb, &path)?;
    if report.loaded.is_empty() {
        return config_err(format!("{}: no ResNet18 tensor loaded", path.display()));
    }
    Ok(enc)
}
