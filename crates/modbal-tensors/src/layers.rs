//! Trainable layers whose gradients reach both inputs and weights.
//!
//! Each layer is built through a [`ParamBuilder`] and draws its initial weights from a
//! [`SeededRng`]. Defaults follow the field's code (OGM-GE family): Xavier-normal for `Linear`,
//! Kaiming-normal (fan-out) for convolutions, ones/zeros for normalisation layers.
//!
//! # Shapes
//! * `Linear`: `[..., in] -> [..., out]`
//! * `Conv2d`: `[B, C, H, W] -> [B, O, Ho, Wo]` (see [`crate::ops::conv2d`])
//! * `BatchNorm2d`: `[B, C, H, W]` (or `[B, C]`) unchanged
//! * `LayerNorm`: normalises the last axis

use crate::init::Init;
use crate::ops::{self, ConvGeometry};
use crate::params::ParamBuilder;
use crate::rng::SeededRng;
use candle_core::{Result, Tensor, Var, D};

/// `y = x Wᵀ + b`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Xavier-normal weight, zero bias (the field's `nn.init.xavier_normal_` + `constant_(0)`).
    pub fn new(pb: &ParamBuilder, d_in: usize, d_out: usize, rng: &mut SeededRng) -> Result<Self> {
        Self::with_init(pb, d_in, d_out, Init::XavierNormal { gain: 1.0 }, true, rng)
    }

    pub fn with_init(
        pb: &ParamBuilder,
        d_in: usize,
        d_out: usize,
        init: Init,
        bias: bool,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let weight = pb.param("weight", (d_out, d_in), init, rng)?;
        let bias = if bias {
            Some(pb.param("bias", d_out, Init::Const(0.0), rng)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x Wᵀ + b` over the last axis (one fused op on CPU f32/f64, see [`ops::linear`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_impl(x, false)
    }

    /// `relu(self.forward(x))`; on CPU f32/f64 one fused op (product, bias and ReLU in one
    /// output buffer; the backward masks the gradient once).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_impl(x, true)
    }

    fn forward_impl(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let d_in = self.in_dim();
        if x.rank() == 0 || x.dim(D::Minus1)? != d_in {
            candle_core::bail!(
                "linear layer expects last dimension {d_in}, got input {:?}",
                x.dims()
            );
        }
        if x.rank() == 2 {
            return ops::linear(x, &self.weight, self.bias.as_ref(), relu);
        }
        let lead: Vec<usize> = x.dims()[..x.rank() - 1].to_vec();
        let n: usize = lead.iter().product();
        let mut out_shape = lead;
        out_shape.push(self.out_dim());
        ops::linear(
            &x.reshape((n, d_in))?,
            &self.weight,
            self.bias.as_ref(),
            relu,
        )?
        .reshape(out_shape)
    }
}

/// Hyper-parameters of a [`Conv2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            kernel: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            bias: false,
        }
    }
}

/// 2-D convolution backed by [`ops::conv2d`] (any H×W).
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub cfg: Conv2dConfig,
}

impl Conv2d {
    /// Kaiming-normal (fan-out, ReLU) weight; zero bias if any.
    pub fn new(
        pb: &ParamBuilder,
        c_in: usize,
        c_out: usize,
        cfg: Conv2dConfig,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let weight = pb.param(
            "weight",
            (c_out, c_in, cfg.kernel, cfg.kernel),
            Init::KaimingNormalFanOut,
            rng,
        )?;
        let bias = if cfg.bias {
            Some(pb.param("bias", c_out, Init::Const(0.0), rng)?)
        } else {
            None
        };
        Ok(Self { weight, bias, cfg })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) => ops::conv2d_bias(x, &self.weight, b, self.geometry()),
            None => ops::conv2d(x, &self.weight, self.geometry()),
        }
    }

    /// `relu(self.forward(x))` as one op ([`ops::conv2d_bias_relu`]).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) => ops::conv2d_bias_relu(x, &self.weight, b, self.geometry()),
            None => ops::conv2d_relu(x, &self.weight, self.geometry()),
        }
    }

    fn geometry(&self) -> ConvGeometry {
        ConvGeometry {
            stride: (self.cfg.stride, self.cfg.stride),
            padding: (self.cfg.padding, self.cfg.padding),
            dilation: (self.cfg.dilation, self.cfg.dilation),
        }
    }
}

/// Batch normalisation over `[B, C, H, W]` or `[B, C]` with PyTorch semantics: training mode
/// normalises with the biased batch variance and updates running statistics with momentum 0.1
/// and the *unbiased* variance; evaluation mode uses the running statistics.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
    pub momentum: f64,
    pub eps: f64,
}

impl BatchNorm2d {
    pub fn new(pb: &ParamBuilder, c: usize, rng: &mut SeededRng) -> Result<Self> {
        Ok(Self {
            weight: pb.param("weight", c, Init::Const(1.0), rng)?,
            bias: pb.param("bias", c, Init::Const(0.0), rng)?,
            running_mean: pb.buffer("running_mean", c, 0.0)?,
            running_var: pb.buffer("running_var", c, 1.0)?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, false)
    }

    /// `relu(self.forward_t(x, train))`; in training mode on CPU one fused op (normalisation,
    /// affine map and ReLU forward, and their backward, in one pass each).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, true)
    }

    fn forward_impl(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let rank = x.rank();
        if (rank != 4 && rank != 2) || x.dim(1)? != c {
            candle_core::bail!(
                "batch norm over {c} channels expects [B, {c}, H, W] or [B, {c}], got {:?}",
                x.dims()
            );
        }
        let bshape: Vec<usize> = if rank == 4 {
            vec![1, c, 1, 1]
        } else {
            vec![1, c]
        };
        if train && ops::batch_norm_train_supported(x) {
            let (y, mean, var) =
                ops::batch_norm_train(x, &self.weight, &self.bias, self.eps, relu)?;
            let n = (x.elem_count() / c) as f64;
            let m = self.momentum;
            let unbiased = (var * (n / (n - 1.0)))?;
            let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
            let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
            self.running_mean.set(&rm)?;
            self.running_var.set(&rv)?;
            return Ok(y);
        }
        // Move channels first and flatten the rest: [C, N].
        let xc = if rank == 4 {
            x.transpose(0, 1)?.flatten_from(1)?
        } else {
            x.t()?
        };
        let (mean, var) = if train {
            let n = xc.dim(1)?;
            if n < 2 {
                candle_core::bail!(
                    "batch norm in training mode needs more than one value per channel, got input {:?}",
                    x.dims()
                );
            }
            let mean = xc.mean(1)?; // [C]
            let centered = xc.broadcast_sub(&mean.unsqueeze(1)?)?;
            let var = centered.sqr()?.mean(1)?; // biased
            let m = self.momentum;
            let unbiased = (var.detach() * (n as f64 / (n as f64 - 1.0)))?;
            let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?;
            let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
            self.running_mean.set(&rm)?;
            self.running_var.set(&rv)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().detach(),
                self.running_var.as_tensor().detach(),
            )
        };
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        let scale = (inv * &self.weight)?; // [C]
        let shift = (self.bias.clone() - (mean * &scale)?)?;
        let y = x
            .broadcast_mul(&scale.reshape(bshape.as_slice())?)?
            .broadcast_add(&shift.reshape(bshape.as_slice())?)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }
}

/// Layer normalisation over the last axis, from differentiable ops (candle-nn's `LayerNorm`
/// registers no backward).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(pb: &ParamBuilder, d: usize, eps: f64, rng: &mut SeededRng) -> Result<Self> {
        Ok(Self {
            weight: pb.param("weight", d, Init::Const(1.0), rng)?,
            bias: pb.param("bias", d, Init::Const(0.0), rng)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}
