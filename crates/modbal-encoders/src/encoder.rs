//! The [`Encoder`] trait every modality encoder implements, and the input checks they share.
//! Which encoder a configuration builds is [`crate::encoder_config`].

use candle_core::{DType, Tensor};
use std::fmt;

/// A modality encoder: `[B, ...] -> [B, out_dim]`. Object safe.
pub trait Encoder: Send + Sync + fmt::Debug {
    /// Encode a mini-batch. `train` selects batch statistics (and updates the running
    /// statistics) in BatchNorm layers; `false` uses the running statistics.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
    /// Feature dimension `D` of the output `[B, D]`.
    fn out_dim(&self) -> usize;
    /// The per-sample input shape the encoder was built for (no batch axis).
    fn input_shape(&self) -> &[usize];
    /// Short name of the encoder kind (`"mlp"`, `"conv4"`, `"resnet18"`, `"small_cnn"`).
    fn kind(&self) -> &'static str;
    /// Re-seeds the random draws of the training forward pass (dropout masks) with `seed`,
    /// which the caller derives from (run seed, epoch, modality): an epoch's masks then do not
    /// depend on what ran before it, so a resumed run draws what the uninterrupted one drew.
    /// No-op for encoders without randomness.
    fn set_epoch_seed(&self, _seed: u64) {}

    /// Number of stages the encoder splits into for intermediate fusion (MMTM blocks between
    /// stages, [`crate::mmtm`]). Invariant: `forward_t(x) == pool(stage_{n−1}(… stage_0(x)))`.
    /// Default 1: the whole encoder is one stage.
    fn num_stages(&self) -> usize {
        1
    }
    /// Stage `k` (`0 ≤ k < num_stages()`) on the previous stage's output (the input for
    /// `k = 0`, which checks it as [`Encoder::forward_t`] does). Default: stage 0 is
    /// [`Encoder::forward_t`].
    fn forward_stage(&self, k: usize, h: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if k != 0 {
            candle_core::bail!("{} encoder has 1 stage, stage {k} requested", self.kind());
        }
        self.forward_t(h, train)
    }
    /// Channels `C` of stage `k`'s output (`[B, C, ...]` or `[B, C]`). Default: the feature
    /// dimension (one stage).
    fn stage_channels(&self, _k: usize) -> usize {
        self.out_dim()
    }
    /// The last stage's output → the feature `[B, out_dim]`. Default: identity.
    fn pool(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        Ok(h.clone())
    }
}

/// The error of a stage index past an encoder's stages.
pub(crate) fn stage_range(kind: &str, k: usize, n: usize) -> candle_core::Result<()> {
    if k >= n {
        candle_core::bail!("{kind} encoder has {n} stages, stage {k} requested");
    }
    Ok(())
}

/// `[B, d1, d2, ...]` as text, with `B` symbolic.
pub(crate) fn batched(shape: &[usize]) -> String {
    let mut s = String::from("[B");
    for d in shape {
        s.push_str(&format!(", {d}"));
    }
    s.push(']');
    s
}

/// Check a float input of an image / clip encoder: rank `2 + spatial_rank` (`[B, C, ...]`), `C`
/// channels, and the parameters' dtype. `spatial` names the free axes (`"H, W"`, `"T, H, W"`).
pub(crate) fn check_channels_input(
    kind: &str,
    x: &Tensor,
    input_shape: &[usize],
    spatial: &str,
    dtype: DType,
) -> candle_core::Result<()> {
    let c = input_shape[0];
    let rank = input_shape.len() + 1;
    if x.rank() != rank || x.dim(1)? != c {
        candle_core::bail!(
            "{kind} encoder expects input [B, {c}, {spatial}] (built for per-sample shape {input_shape:?}), got {:?}",
            x.dims()
        );
    }
    if x.dims()[0] == 0 {
        candle_core::bail!("{kind} encoder got an empty batch {:?}", x.dims());
    }
    check_dtype(kind, x, dtype)
}

pub(crate) fn check_dtype(kind: &str, x: &Tensor, dtype: DType) -> candle_core::Result<()> {
    if x.dtype() != dtype {
        candle_core::bail!(
            "{kind} encoder expects {dtype:?} input, got {:?} of shape {:?}",
            x.dtype(),
            x.dims()
        );
    }
    Ok(())
}
