//! Building blocks shared by the convolutional encoders.

use candle_core::{Result, Tensor};
use modbal_tensors::{BatchNorm2d, Conv2d, Conv2dConfig, ParamBuilder, SeededRng};

/// `conv (no bias) → BatchNorm`, registered as `<conv_name>.weight` and `<bn_name>.{weight, bias,
/// running_mean, running_var}`. The convolution has no bias: a bias before a training-mode
/// BatchNorm is cancelled by the mean subtraction and would never receive a gradient.
#[derive(Clone, Debug)]
pub(crate) struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pb_conv: &ParamBuilder,
        pb_bn: &ParamBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            kernel,
            stride,
            padding,
            dilation: 1,
            bias: false,
        };
        let conv = Conv2d::new(pb_conv, c_in, c_out, cfg, rng)?;
        let bn = BatchNorm2d::new(pb_bn, c_out, rng)?;
        Ok(Self { conv, bn })
    }

    /// `BN(conv(x))`, without activation.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)
    }

    /// `ReLU(BN(conv(x)))` (batch norm and ReLU fused in training mode).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_relu_t(&self.conv.forward(x)?, train)
    }
}
