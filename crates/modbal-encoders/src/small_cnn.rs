//! A light CNN for the built-in synthetic benchmark.
//!
//! Per channel entry `c_i`: `conv3x3 pad 1 → BN → ReLU → maxpool 2×2/2`, the pool skipped when
//! the current height or width is below 2; then a global average pool. Convolutions have no bias
//! (each is followed by BatchNorm). Parameters: `blocks.<i>.conv.weight`,
//! `blocks.<i>.bn.{weight, bias}` (+ running statistics).
//!
//! # Shapes
//! `[B, C, H, W]` → … → `[B, c_last, h, w]` → GAP `[B, c_last]`; each pooled stage halves
//! (floor) H and W.

use crate::blocks::ConvBn;
use crate::encoder::{check_channels_input, stage_range, Encoder};
use crate::error::Result;
use crate::EncoderConfig;
use candle_core::{DType, Tensor};
use modbal_tensors::{ops, ParamBuilder, SeededRng};

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct SmallCnnEncoder {
    blocks: Vec<ConvBn>,
    channels: Vec<usize>,
    input_shape: Vec<usize>,
    out_dim: usize,
    dtype: DType,
}

impl SmallCnnEncoder {
    /// Build under `pb` for a per-sample input `[C, H, W]`.
    pub fn new(
        pb: &ParamBuilder,
        input_shape: &[usize],
        channels: &[usize],
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let out_dim = EncoderConfig::SmallCnn {
            channels: channels.to_vec(),
        }
        .validate(input_shape)?;
        let mut c_in = input_shape[0];
        let mut blocks = Vec::with_capacity(channels.len());
        for (i, &c) in channels.iter().enumerate() {
            let pb = pb.pp(format!("blocks.{i}"));
            blocks.push(ConvBn::new(
                &pb.pp("conv"),
                &pb.pp("bn"),
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
            channels: channels.to_vec(),
            input_shape: input_shape.to_vec(),
            out_dim,
            dtype: pb.dtype(),
        })
    }
}

impl Encoder for SmallCnnEncoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        check_channels_input("small_cnn", x, &self.input_shape, "H, W", self.dtype)?;
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward_relu_t(&h, train)?;
            if h.dim(2)? >= 2 && h.dim(3)? >= 2 {
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
        "small_cnn"
    }
    /// One stage per conv block (its max-pool included).
    fn num_stages(&self) -> usize {
        self.blocks.len()
    }
    fn forward_stage(&self, k: usize, h: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        stage_range("small_cnn", k, self.blocks.len())?;
        if k == 0 {
            check_channels_input("small_cnn", h, &self.input_shape, "H, W", self.dtype)?;
        }
        let mut h = self.blocks[k].forward_relu_t(h, train)?;
        if h.dim(2)? >= 2 && h.dim(3)? >= 2 {
            h = ops::max_pool2d(&h, 2, 2, 0)?;
        }
        Ok(h)
    }
    fn stage_channels(&self, k: usize) -> usize {
        self.channels[k]
    }
    /// The global average pool.
    fn pool(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        ops::global_avg_pool(h)
    }
}
