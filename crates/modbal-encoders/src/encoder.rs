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
