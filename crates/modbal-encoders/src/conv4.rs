//! The Colored-and-Gray-MNIST 4-conv encoder.
//!
//! As the `convnet` of the PMR (CVPR'23) / AGM (ICCV'23) CGMNIST code:
//! `x → [conv3x3 pad 1 → BN → ReLU → maxpool 2×2/2] × 3 → conv3x3 pad 1 → BN → ReLU → GAP`.
//! Convolutions have no bias (each is followed by BatchNorm); Kaiming-normal (fan-out) weights.
//! Parameters: `conv{1..4}.weight`, `bn{1..4}.{weight, bias}` (+ running statistics).
//!
//! # Stages (intermediate fusion, [`crate::mmtm`])
//! Four stages, one per conv block: stage `k < 3` is `conv → BN → ReLU → maxpool`, stage 3 is
//! `conv → BN → ReLU`; [`Encoder::pool`] is the global average pool. An `mmtm` net puts its
//! blocks after stages 1, 2, 3 (channels `c2, c3, c4`), as after ResNet18's layers 2-4.
//!
//! # Shapes
//! `[B, C, H, W]` (`H, W ≥ 8`) → `[B, c1, H, W]` → pool `[B, c1, ⌊H/2⌋, ⌊W/2⌋]` → … →
//! `[B, c4, ⌊H/8⌋, ⌊W/8⌋]` → GAP `[B, c4]`. For 28×28 digits: 28 → 14 → 7 → 3.

use crate::blocks::ConvBn;
use crate::encoder::{check_channels_input, stage_range, Encoder};
use crate::error::Result;
use crate::EncoderConfig;
use candle_core::{DType, Tensor};
use modbal_tensors::{ops, ParamBuilder, SeededRng};

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Conv4Encoder {
    blocks: Vec<ConvBn>,
    channels: [usize; 4],
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
            channels,
            input_shape: input_shape.to_vec(),
            out_dim: channels[3],
            dtype: pb.dtype(),
        })
    }
}

impl Encoder for Conv4Encoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let mut h = x.clone();
        for i in 0..self.blocks.len() {
            h = self.stage(i, &h, train)?;
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
    /// One stage per conv block (its max-pool included).
    fn num_stages(&self) -> usize {
        self.blocks.len()
    }
    fn forward_stage(&self, k: usize, h: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        stage_range("conv4", k, self.blocks.len())?;
        if k == 0 {
            self.check_input(h)?;
        }
        self.stage(k, h, train)
    }
    fn stage_channels(&self, k: usize) -> usize {
        self.channels[k]
    }
    /// The global average pool.
    fn pool(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        ops::global_avg_pool(h)
    }
}

impl Conv4Encoder {
    /// The input checks of [`Encoder::forward_t`] (and of stage 0).
    fn check_input(&self, x: &Tensor) -> candle_core::Result<()> {
        check_channels_input("conv4", x, &self.input_shape, "H, W", self.dtype)?;
        let (h, w) = (x.dim(2)?, x.dim(3)?);
        if h < 8 || w < 8 {
            candle_core::bail!(
                "conv4 encoder needs H, W >= 8 (three 2x2 max-pools), got input {:?}",
                x.dims()
            );
        }
        Ok(())
    }

    /// Conv block `k`, followed by the 2×2/2 max-pool for `k < 3`.
    fn stage(&self, k: usize, h: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.blocks[k].forward_relu_t(h, train)?;
        if k < 3 {
            ops::max_pool2d(&h, 2, 2, 0)
        } else {
            Ok(h)
        }
    }
}
