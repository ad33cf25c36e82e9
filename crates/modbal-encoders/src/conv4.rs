//! The Colored-and-Gray-MNIST 4-conv encoder.
//!
//! As the `convnet` of the PMR (CVPR'23) / AGM (ICCV'23) CGMNIST code:
//! `x → [conv3x3 pad 1 → BN → ReLU → maxpool 2×2/2] × 3 → conv3x3 pad 1 → BN → ReLU → GAP`.
//! Convolutions have no bias (each is followed by BatchNorm); Kaiming-normal (fan-out) weights.
//! Parameters: `conv{1..4}.weight`, `bn{1..4}.{weight, bias}` (+ running statistics).
//!
//! # Shapes
//! `[B, C, H, W]` (`H, W ≥ 8`) → `[B, c1, H, W]` → pool `[B, c1, ⌊H/2⌋, ⌊W/2⌋]` → … →
//! `[B, c4, ⌊H/8⌋, ⌊W/8⌋]` → GAP `[B, c4]`. For 28×28 digits: 28 → 14 → 7 → 3.

use crate::blocks::ConvBn;
use crate::encoder::{check_channels_input, Encoder};
use crate::error::Result;
use crate::EncoderConfig;
use candle_core::{DType, Tensor};
use modbal_tensors::{ops, ParamBuilder, SeededRng};

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Conv4Encoder {
    blocks: Vec<ConvBn>,
    input_shape: Vec<usize>,
    out_dim: usize,
    dtype: DType,
}

impl Conv4Encoder {
    /// Build under `pb` for a per-sample input `[C, H, W]`.
    pub fn new(
        pb: &ParamBuilder,
        input_shape: &[usize],
        channels: [usize; 4],
        rng: &mut SeededRng,
    ) -> Result<Self> {
        EncoderConfig::Conv4 { channels }.validate(input_shape)?;
        let mut c_in = input_shape[0];
        let mut blocks = Vec::with_capacity(4);
        for (i, &c) in channels.iter().enumerate() {
            blocks.push(ConvBn::new(
                &pb.pp(format!("conv{}", i + 1)),
                &pb.pp(format!("bn{}", i + 1)),
                c_in,
                c,
                3,
                1,
                1,
                rng,
            )?);
            c_in = c;
        }
        Ok(Self {
            blocks,
            input_shape: input_shape.to_vec(),
            out_dim: channels[3],
            dtype: pb.dtype(),
        })
    }
}

impl Encoder for Conv4Encoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        check_channels_input("conv4", x, &self.input_shape, "H, W", self.dtype)?;
        let (h, w) = (x.dim(2)?, x.dim(3)?);
        if h < 8 || w < 8 {
            candle_core::bail!(
                "conv4 encoder needs H, W >= 8 (three 2x2 max-pools), got input {:?}",
                x.dims()
            );
        }
        let mut h = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward_relu_t(&h, train)?;
            if i < 3 {
                h = ops::max_pool2d(&h, 2, 2, 0)?;
            }
        }
        ops::global_avg_pool(&h)
    }
    fn out_dim(&self) -> usize {
        self.out_dim
    }
    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
    fn kind(&self) -> &'static str {
        "conv4"
    }
}
