//! MMTM blocks: squeeze-and-excitation across modalities between encoder stages (Joze et al.,
//! "MMTM: Multimodal Transfer Module for CNN Fusion", CVPR 2020, in the form of Wu et al.'s
//! `greedy` code, `nyukat/greedy_multimodal_learning`, `src/balanced_mmtm.py`).
//!
//! For stage outputs `h_m` (`[B, C_m, ...]` or `[B, C_m]`) of the `M` modalities:
//!
//! ```text
//! s_m = mean over the spatial axes of h_m            [B, C_m]  (identity for [B, C_m])
//! u   = ReLU(W_sq · [s_1; …; s_M] + b_sq)            [B, ⌊2·ΣC_m / ratio⌋]
//! e_m = σ(W_m · u + b_m)                             [B, C_m]
//! h'_m = h_m ⊙ e_m                                   (broadcast over the spatial axes)
//! ```
//!
//! The excitation is `σ` as in the greedy code (the MMTM paper uses `2σ`). With `M = 2` this is
//! the official two-stream block; more modalities concatenate every squeeze vector and get one
//! excitation layer each (the MMTM paper's general form).
//!
//! Parameters (under the block's builder, `fusion.mmtm.<k>` in a [`crate::MultimodalNet`]):
//! `squeeze.{weight, bias}`, `excite.<modality>.{weight, bias}` (Xavier-normal weights, zero
//! biases). Buffers: `avg.<modality>` `[C_m]`, the running average of that modality's
//! excitation (the arithmetic mean of the batch means `mean_b e_m` over every training forward),
//! and `count` `[1]`, the number of training forwards averaged. Being buffers they are
//! checkpointed with the model, so a resumed run continues them exactly.
//!
//! A forward may replace a modality's excitation by its running average, detached and the same
//! for every sample ([`MmtmBlock::forward`]'s `constant`): that modality's branch then receives
//! no sample-specific information from the others through this block (greedy's re-balancing
//! step). The running average is still updated with the computed excitation.

use crate::error::{config_err, Result};
use candle_core::{DType, Tensor, Var};
use modbal_tensors::{Linear, ParamBuilder, SeededRng};

/// `σ(x) = (1 + tanh(x/2))/2` (differentiable on every device).
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    crate::seqnn::sigmoid(x)
}

/// The squeeze width `⌊2·ΣC_m / ratio⌋` of a block over channels `channels`.
pub fn squeeze_width(channels: &[usize], ratio: usize) -> usize {
    if ratio == 0 {
        return 0;
    }
    2 * channels.iter().sum::<usize>() / ratio
}

/// One MMTM block; see the [module docs](self).
#[derive(Debug)]
pub struct MmtmBlock {
    /// `Linear(ΣC_m → ⌊2ΣC_m/ratio⌋)`.
    pub squeeze: Linear,
    /// One `Linear(width → C_m)` per modality.
    pub excite: Vec<Linear>,
    avg: Vec<Var>,
    count: Var,
    channels: Vec<usize>,
}

impl MmtmBlock {
    /// Build under `pb` for `modalities` with stage channels `channels` (same order).
    pub fn new(
        pb: &ParamBuilder,
        modalities: &[String],
        channels: &[usize],
        ratio: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        if modalities.len() != channels.len() || modalities.is_empty() {
            return config_err(format!(
                "mmtm block: {} modalities {modalities:?} but channels {channels:?}",
                modalities.len()
            ));
        }
        if ratio == 0 {
            return config_err("mmtm fusion: ratio must be >= 1");
        }
        if let Some(i) = channels.iter().position(|&c| c == 0) {
            return config_err(format!(
                "mmtm block: modality {:?} has 0 channels",
                modalities[i]
            ));
        }
        let total: usize = channels.iter().sum();
        let width = squeeze_width(channels, ratio);
        if width == 0 {
            return config_err(format!(
                "mmtm fusion: the squeeze width floor(2*{total}/{ratio}) is 0 (channels \
                 {channels:?}); use a smaller ratio"
            ));
        }
        let squeeze = Linear::new(&pb.pp("squeeze"), total, width, rng)?;
        let pe = pb.pp("excite");
        let excite = modalities
            .iter()
            .zip(channels)
            .map(|(m, &c)| Linear::new(&pe.pp(m), width, c, rng))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pa = pb.pp("avg");
        let avg = modalities
            .iter()
            .zip(channels)
            .map(|(m, &c)| pa.buffer(m, c, 0.0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let count = pb.buffer("count", 1, 0.0)?;
        Ok(Self {
            squeeze,
            excite,
            avg,
            count,
            channels: channels.to_vec(),
        })
    }

    /// Channels `C_m` per modality.
    pub fn channels(&self) -> &[usize] {
        &self.channels
    }

    /// The running average `ē_m` of modality `m`'s excitation `[C_m]`.
    pub fn running_average(&self, m: usize) -> Tensor {
        self.avg[m].as_tensor().detach()
    }

    /// Number of training forwards in the running averages.
    pub fn count(&self) -> candle_core::Result<f64> {
        self.count
            .as_tensor()
            .to_dtype(DType::F64)?
            .flatten_all()?
            .get(0)?
            .to_scalar::<f64>()
    }

    /// The excitations `e_m` `[B, C_m]` of stage outputs `hs` (see the module docs).
    pub fn excitations(&self, hs: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
        let dims: Vec<&[usize]> = hs.iter().map(|h| h.dims()).collect();
        let bad = hs.len() != self.channels.len()
            || dims
                .iter()
                .zip(&self.channels)
                .any(|(d, &c)| d.len() < 2 || d[1] != c || d[0] != dims[0][0]);
        if bad {
            candle_core::bail!(
                "mmtm block expects stage outputs [B, C_m, ...] with C = {:?} and a common B, got {dims:?}",
                self.channels
            );
        }
        let squeezed = hs
            .iter()
            .map(|h| {
                if h.rank() == 2 {
                    Ok(h.clone())
                } else {
                    h.flatten_from(2)?.mean(2)
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let u = self.squeeze.forward_relu(&Tensor::cat(&squeezed, 1)?)?;
        self.excite
            .iter()
            .map(|l| sigmoid(&l.forward(&u)?))
            .collect()
    }

    /// `h'_m = h_m ⊙ e_m`; where `constant[m]` is true, `e_m` is replaced by the running
    /// average `ē_m` (detached). With `train`, the running averages take this forward's batch
    /// means of the computed excitations (before any replacement). `constant` may be empty
    /// (nothing replaced).
    pub fn forward(
        &self,
        hs: &[Tensor],
        train: bool,
        constant: &[bool],
    ) -> candle_core::Result<Vec<Tensor>> {
        if !constant.is_empty() && constant.len() != self.channels.len() {
            candle_core::bail!(
                "mmtm block: {} constant-excitation flags for {} modalities",
                constant.len(),
                self.channels.len()
            );
        }
        let es = self.excitations(hs)?;
        let out = hs
            .iter()
            .zip(&es)
            .enumerate()
            .map(|(m, (h, e))| {
                let e = if constant.get(m).copied().unwrap_or(false) {
                    self.avg[m]
                        .as_tensor()
                        .detach()
                        .unsqueeze(0)?
                        .broadcast_as(e.dims())?
                        .contiguous()?
                } else {
                    e.clone()
                };
                let mut shape = e.dims().to_vec();
                shape.resize(h.rank(), 1);
                h.broadcast_mul(&e.reshape(shape)?)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        if train {
            let n = self.count()?;
            for (avg, e) in self.avg.iter().zip(&es) {
                let batch_mean = e.detach().mean(0)?;
                let next = ((batch_mean + (avg.as_tensor() * n)?)? / (n + 1.0))?;
                avg.set(&next)?;
            }
            self.count.set(&(self.count.as_tensor() + 1.0)?)?;
        }
        Ok(out)
    }
}
