//! ResNet18 (He et al., CVPR'16) in torchvision's BasicBlock layout, trainable from scratch, any
//! number of input channels and any H×W; OGM-GE's audio and visual encoder.
//!
//! * stem: `conv7x7/2 pad 3 → BN → ReLU → maxpool 3x3/2 pad 1`
//! * `layer1..layer4`: two BasicBlocks each, 64, 128, 256, 512 channels, stride 2 in the first
//!   block of layers 2-4. BasicBlock: `ReLU(BN(conv3x3(ReLU(BN(conv3x3/s(x))))) + down(x))`,
//!   `down = BN(conv1x1/s(x))` when the stride or the width changes, else the identity.
//! * convolutions have no bias; Kaiming-normal (fan-out) weights, BN ones/zeros.
//!
//! Parameter names follow torchvision (`conv1.weight`, `bn1.weight`, `layer2.0.conv1.weight`,
//! `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.running_mean`, ...), so a torchvision
//! state dict maps one to one (its `num_batches_tracked` and `fc.*` aside).
//!
//! Pooling of a `T`-frame clip follows OGM-GE (`models/basic_model.py`): the frames are folded
//! into the batch, `[B, C, T, H, W] → [B·T, C, H, W]`, encoded by the 2-D network to
//! `[B·T, 512, h, w]`, unfolded to `[B, T, 512, h, w]` and averaged over `T, h, w`
//! (`F.adaptive_avg_pool3d(v.permute(0, 2, 1, 3, 4), 1)`). In training mode BatchNorm therefore
//! takes its statistics over all `B·T` frames, as there.
//!
//! # Shapes
//! * image: `[B, C, H, W]` → feature map `[B, 512, h, w]` → GAP `[B, 512]`, with
//!   `h = s(s(s(s(s(H)))))`, `s(n) = ⌊(n − 1)/2⌋ + 1` (stem conv, stem pool, layers 2-4); e.g.
//!   224×224 → 7×7, 257×188 → 9×6.
//! * clip: `[B, C, T, H, W]` → `[B·T, 512, h, w]` → `[B, T, 512, h, w]` → mean over `T, h, w` →
//!   `[B, 512]`.

use crate::blocks::ConvBn;
use crate::encoder::{check_channels_input, stage_range, Encoder};
use crate::error::Result;
use crate::EncoderConfig;
use candle_core::{DType, Tensor};
use modbal_tensors::{ops, ParamBuilder, SeededRng};

/// Feature dimension of ResNet18 (channels of `layer4`).
pub const RESNET18_OUT_DIM: usize = 512;

const WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// torchvision's `BasicBlock` (expansion 1).
#[derive(Clone, Debug)]
struct BasicBlock {
    c1: ConvBn,
    c2: ConvBn,
    downsample: Option<ConvBn>,
}

impl BasicBlock {
    fn new(
        pb: &ParamBuilder,
        c_in: usize,
        c_out: usize,
        stride: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let c1 = ConvBn::new(
            &pb.pp("conv1"),
            &pb.pp("bn1"),
            c_in,
            c_out,
            3,
            stride,
            1,
            rng,
        )?;
        let c2 = ConvBn::new(&pb.pp("conv2"), &pb.pp("bn2"), c_out, c_out, 3, 1, 1, rng)?;
        let downsample = if stride != 1 || c_in != c_out {
            let pd = pb.pp("downsample");
            Some(ConvBn::new(
                &pd.pp("0"),
                &pd.pp("1"),
                c_in,
                c_out,
                1,
                stride,
                0,
                rng,
            )?)
        } else {
            None
        };
        Ok(Self { c1, c2, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.c1.forward_relu_t(x, train)?;
        let h = self.c2.forward_t(&h, train)?;
        let identity = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        ops::add_relu(&h, &identity)
    }
}

/// ResNet18 encoder; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ResNet18Encoder {
    stem: ConvBn,
    layers: Vec<[BasicBlock; 2]>,
    input_shape: Vec<usize>,
    frames_pooling: bool,
    dtype: DType,
}

impl ResNet18Encoder {
    /// Build under `pb` for a per-sample input `[C, H, W]` (`frames_pooling = false`) or
    /// `[C, T, H, W]` (`frames_pooling = true`).
    pub fn new(
        pb: &ParamBuilder,
        input_shape: &[usize],
        frames_pooling: bool,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        EncoderConfig::ResNet18 { frames_pooling }.validate(input_shape)?;
        let stem = ConvBn::new(
            &pb.pp("conv1"),
            &pb.pp("bn1"),
            input_shape[0],
            64,
            7,
            2,
            3,
            rng,
        )?;
        let mut layers = Vec::with_capacity(4);
        let mut c_in = 64;
        for (i, &c) in WIDTHS.iter().enumerate() {
            let pl = pb.pp(format!("layer{}", i + 1));
            let stride = if i == 0 { 1 } else { 2 };
            let b0 = BasicBlock::new(&pl.pp("0"), c_in, c, stride, rng)?;
            let b1 = BasicBlock::new(&pl.pp("1"), c, c, 1, rng)?;
            layers.push([b0, b1]);
            c_in = c;
        }
        Ok(Self {
            stem,
            layers,
            input_shape: input_shape.to_vec(),
            frames_pooling,
            dtype: pb.dtype(),
        })
    }

    /// Whether the encoder takes `T`-frame clips.
    pub fn frames_pooling(&self) -> bool {
        self.frames_pooling
    }

    /// The 2-D network without pooling: `[N, C, H, W] → [N, 512, h, w]` (`N` images or frames).
    pub fn feature_map(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let c = self.input_shape[0];
        if x.rank() != 4 || x.dim(1)? != c {
            candle_core::bail!(
                "resnet18 feature map expects input [N, {c}, H, W], got {:?}",
                x.dims()
            );
        }
        let mut h = self.stem.forward_relu_t(x, train)?;
        h = ops::max_pool2d(&h, 3, 2, 1)?;
        for layer in &self.layers {
            for block in layer {
                h = block.forward_t(&h, train)?;
            }
        }
        Ok(h)
    }
}

impl ResNet18Encoder {
    /// The 2-D part of stage `k` on `[N, C, H, W]`: stem + max-pool + `layer1` for `k = 0`,
    /// `layer{k+1}` otherwise.
    fn stage_2d(&self, k: usize, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = if k == 0 {
            let h = self.stem.forward_relu_t(x, train)?;
            ops::max_pool2d(&h, 3, 2, 1)?
        } else {
            x.clone()
        };
        for block in &self.layers[k] {
            h = block.forward_t(&h, train)?;
        }
        Ok(h)
    }
}

impl Encoder for ResNet18Encoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if self.frames_pooling {
            check_channels_input("resnet18", x, &self.input_shape, "T, H, W", self.dtype)?;
            let (b, c, t, h, w) = x.dims5()?;
            let frames = x
                .permute((0, 2, 1, 3, 4))?
                .contiguous()?
                .reshape((b * t, c, h, w))?;
            let fm = self.feature_map(&frames, train)?; // [B·T, 512, h', w']
            let (_, d, ho, wo) = fm.dims4()?;
            // [B, T, 512, h'·w'] → mean over (T, h'·w').
            fm.reshape((b, t, d, ho * wo))?.mean((1, 3))
        } else {
            check_channels_input("resnet18", x, &self.input_shape, "H, W", self.dtype)?;
            ops::global_avg_pool(&self.feature_map(x, train)?)
        }
    }
    fn out_dim(&self) -> usize {
        RESNET18_OUT_DIM
    }
    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
    fn kind(&self) -> &'static str {
        "resnet18"
    }
    /// Four stages: stem + `layer1`, `layer2`, `layer3`, `layer4` (the greedy code's MMTM
    /// positions follow stages 2-4). A clip's stage outputs are `[B, C, T, h, w]` (frames
    /// folded into the batch inside each stage).
    fn num_stages(&self) -> usize {
        4
    }
    fn forward_stage(&self, k: usize, h: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        stage_range("resnet18", k, 4)?;
        if !self.frames_pooling {
            if k == 0 {
                check_channels_input("resnet18", h, &self.input_shape, "H, W", self.dtype)?;
            }
            return self.stage_2d(k, h, train);
        }
        if k == 0 {
            check_channels_input("resnet18", h, &self.input_shape, "T, H, W", self.dtype)?;
        }
        // [B, C, T, H, W] → [B·T, C, H, W] → stage → [B, C', T, h, w].
        let (b, c, t, hh, ww) = h.dims5()?;
        let frames = h
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((b * t, c, hh, ww))?;
        let out = self.stage_2d(k, &frames, train)?;
        let (_, d, ho, wo) = out.dims4()?;
        out.reshape((b, t, d, ho, wo))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }
    fn stage_channels(&self, k: usize) -> usize {
        WIDTHS[k]
    }
    /// Global average pool (over `T, h, w` for a clip, as [`Encoder::forward_t`]).
    fn pool(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        if self.frames_pooling {
            let (b, d, t, ho, wo) = h.dims5()?;
            h.permute((0, 2, 1, 3, 4))?
                .contiguous()?
                .reshape((b, t, d, ho * wo))?
                .mean((1, 3))
        } else {
            ops::global_avg_pool(h)
        }
    }
}
