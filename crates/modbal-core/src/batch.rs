//! Batches and model outputs.
//!
//! # Shapes
//! * `Batch::inputs[m]`: `[B, ...]`, modality `m`'s input (e.g. `[B, 1, H, W]` spectrograms,
//!   `[B, C, T, H, W]` frames, `[B, D]` vectors)
//! * `Batch::labels`: `[B]`, u32 class ids
//! * `MultimodalOutput::fused_logits`: `[B, C]`; `per_modality_logits[m]`: `[B, C]`;
//!   `features[m]`: `[B, D_m]`

use candle_core::{Device, Tensor};

/// One mini-batch: per-modality inputs (in the model's modality order), labels and the
/// dataset indices of its samples (methods key per-sample state on them).
#[derive(Clone, Debug)]
pub struct Batch {
    pub inputs: Vec<Tensor>,
    pub labels: Tensor,
    pub sample_ids: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.sample_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sample_ids.is_empty()
    }
    /// Move every tensor to `device`.
    pub fn to_device(&self, device: &Device) -> candle_core::Result<Self> {
        Ok(Self {
            inputs: self
                .inputs
                .iter()
                .map(|t| t.to_device(device))
                .collect::<candle_core::Result<_>>()?,
            labels: self.labels.to_device(device)?,
            sample_ids: self.sample_ids.clone(),
        })
    }
}

/// Everything a forward pass produces, returned explicitly (never stashed on the model).
#[derive(Clone, Debug)]
pub struct MultimodalOutput {
    /// Logits of the fused prediction, `[B, C]`.
    pub fused_logits: Tensor,
    /// Each modality's own logits, `[B, C]` (for concat fusion: the head's weight slice
    /// `W[:, slice_m]·f_m + b/M`; for sum fusion: that modality's fc).
    pub per_modality_logits: Vec<Tensor>,
    /// Each encoder's output feature, `[B, D_m]`.
    pub features: Vec<Tensor>,
}

impl MultimodalOutput {
    /// The same output cut from the graph.
    pub fn detach(&self) -> Self {
        Self {
            fused_logits: self.fused_logits.detach(),
            per_modality_logits: self
                .per_modality_logits
                .iter()
                .map(|t| t.detach())
                .collect(),
            features: self.features.iter().map(|t| t.detach()).collect(),
        }
    }
}

/// A whole split's outputs after an evaluation pass (CPU tensors, rows in `sample_ids` order).
/// Methods read their held-out statistics from it (CAL's φ and R, ARM's MIV, UDI's anchor choice).
#[derive(Clone, Debug)]
pub struct EvalOutputs {
    pub sample_ids: Vec<usize>,
    pub labels: Vec<u32>,
    /// `[N, C]`: the method's inference prediction (see [`crate::Method::predict`]).
    pub fused_logits: Tensor,
    pub per_modality_logits: Vec<Tensor>,
    pub features: Vec<Tensor>,
}
