//! The model a method trains: one encoder per modality and a fusion head, with named
//! parameter groups (`encoder.<modality>`, `head`).

use crate::batch::MultimodalOutput;
use candle_core::{Result, Tensor};
use modbal_tensors::ParamStore;

/// What a controlled forward ([`MultimodalModel::forward_controlled`]) changes in a model with
/// intermediate fusion (greedy's re-balancing steps).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FusionControl {
    /// Per modality (input order; empty = none): replace that modality's excitation in every
    /// fusion block by its running average, detached, so that its branch receives nothing
    /// sample-specific from the other modalities.
    pub constant_excitation: Vec<bool>,
}

impl FusionControl {
    /// Whether the control changes nothing.
    pub fn is_regular(&self) -> bool {
        !self.constant_excitation.iter().any(|&c| c)
    }
}

/// A late-fusion multimodal classifier.
pub trait MultimodalModel: Send + Sync {
    /// Modality names, in input order.
    fn modalities(&self) -> &[String];
    fn num_classes(&self) -> usize;
    /// All parameters and buffers.
    fn params(&self) -> &ParamStore;
    /// Encoder of modality `m`: `[B, ...] → [B, D_m]`.
    fn encode(&self, m: usize, x: &Tensor, train: bool) -> Result<Tensor>;
    /// The fusion head on per-modality features → (fused logits, per-modality logits). Callers
    /// may pass zeroed features (ablation "all but m"), detached features (freezing), or noisy ones.
    fn head(&self, features: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)>;
    /// Called by the trainer before each training epoch: re-seed the model's own random draws
    /// (dropout) from (run seed, epoch), so that a resumed run continues with the masks of the
    /// uninterrupted one. Default: nothing to re-seed.
    fn set_epoch(&self, _seed: u64, _epoch: usize) {}

    /// Encode every modality, then fuse.
    fn forward_t(&self, inputs: &[Tensor], train: bool) -> Result<MultimodalOutput> {
        if inputs.len() != self.modalities().len() {
            candle_core::bail!(
                "model has {} modalities ({:?}) but the batch has {} inputs",
                self.modalities().len(),
                self.modalities(),
                inputs.len()
            );
        }
        let features = inputs
            .iter()
            .enumerate()
            .map(|(m, x)| self.encode(m, x, train))
            .collect::<Result<Vec<_>>>()?;
        let (fused_logits, per_modality_logits) = self.head(&features)?;
        Ok(MultimodalOutput {
            fused_logits,
            per_modality_logits,
            features,
        })
    }

    /// [`MultimodalModel::forward_t`] with the intermediate-fusion changes of `control`.
    /// Default (a model without intermediate fusion): `forward_t` when nothing is replaced,
    /// else an error.
    fn forward_controlled(
        &self,
        inputs: &[Tensor],
        train: bool,
        control: &FusionControl,
    ) -> Result<MultimodalOutput> {
        if !control.is_regular() {
            candle_core::bail!(
                "this model has no intermediate fusion blocks: a constant excitation \
                 (re-balancing step) needs a model with fusion = \"mmtm\""
            );
        }
        self.forward_t(inputs, train)
    }

    /// Parameter-group prefix of the intermediate fusion blocks (MMTM: `fusion`), `None` for
    /// a late-fusion model.
    fn fusion_prefix(&self) -> Option<String> {
        None
    }

    /// Parameter-group prefix of modality `m`'s encoder.
    fn encoder_prefix(&self, m: usize) -> String {
        format!("encoder.{}", self.modalities()[m])
    }
    /// Parameter-group prefix of the fusion head.
    fn head_prefix(&self) -> String {
        "head".to_string()
    }
}
