//! 2-D convolution ([`conv2d`], [`conv2d_bias`], and both fused with ReLU) for any input H×W,
//! stride, padding and dilation, as custom ops whose forward and backward passes are the
//! im2col / col2im + gemm kernels of `cpu::conv` (Winograd F(2×2, 3×3) for the 3 × 3 stride-1
//! layers that [`crate::ops::ConvAlgorithm`] selects). The backward computes only the gradients of
//! tracked operands. Off the CPU (or forced) the generic path of `generic.rs`.

use super::dispatch::{strict_relu, use_fast_cpu};
use super::generic;
use super::relu::ReluMask;
use super::storage::{contiguous_slice, float_dispatch, float_dispatch2, Elem};
use crate::cpu::channel::channel_sums_as;
use crate::cpu::conv::{conv_bwd_input, conv_bwd_weight, conv_fwd, ConvShape};
use crate::cpu::elementwise::relu_in_place;
use crate::window::Window;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// Convolution forward as a custom op over `(x, w)` or `(x, w, bias)`. The backward computes
/// only the gradients of operands that are tracked (a network's input needs none).
#[derive(Clone)]
struct ConvOp {
    shape: ConvShape,
    /// ReLU applied to the output in place; the backward masks the gradient with `res > 0`.
    relu: bool,
}

impl ConvOp {
    fn out_shape(&self) -> Shape {
        let s = &self.shape;
        Shape::from((s.b, s.o, s.ho, s.wo))
    }
    /// The output on CPU: the convolution (bias as its initial value), then the ReLU in place.
    fn forward<T: Elem>(&self, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
        let mut y = conv_fwd(x, w, bias, &self.shape);
        if self.relu {
            relu_in_place(&mut y);
        }
        y
    }
    /// The output gradient as the convolution sees it: `grad`, or `grad·[res > 0]` after a
    /// fused ReLU.
    fn pre_act_grad(&self, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let grad = grad.contiguous()?;
        if self.relu {
            grad.apply_op2_no_bwd(&res.contiguous()?, &ReluMask)
        } else {
            Ok(grad)
        }
    }
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(&w.contiguous()?, &ConvBwdInput { shape: self.shape })?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(
                x.contiguous()?
                    .apply_op2_no_bwd(&grad, &ConvBwdWeight { shape: self.shape })?
                    .reshape(w.shape())?,
            )
        } else {
            None
        };
        Ok((gx, gw))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "modbal-conv2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let st = float_dispatch2!("conv2d", (s1, l1), (s2, l2), |x, w| self
            .forward(x, w, None));
        Ok((st, self.out_shape()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, &self.pre_act_grad(res, grad)?)
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "modbal-conv2d-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let st = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                CpuStorage::F32(self.forward(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(w, l2)?,
                    Some(contiguous_slice(b, l3)?),
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(self.forward(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(w, l2)?,
                    Some(contiguous_slice(b, l3)?),
                ))
            }
            _ => candle_core::bail!(
                "conv2d: input, kernel and bias must all be f32 or all f64, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((st, self.out_shape()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = &self.pre_act_grad(res, grad)?;
        let (gx, gw) = self.grads(x, w, grad)?;
        let gb = if b.track_op() {
            let s = &self.shape;
            Some(
                grad.contiguous()?
                    .apply_op1_no_bwd(&ChannelSum {
                        b: s.b,
                        c: s.o,
                        hw: s.ho * s.wo,
                    })?
                    .reshape(b.shape())?,
            )
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

/// `(gy, w) → ∂L/∂x`.
struct ConvBwdInput {
    shape: ConvShape,
}

impl CustomOp2 for ConvBwdInput {
    fn name(&self) -> &'static str {
        "modbal-conv2d-bwd-input"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = &self.shape;
        let st = float_dispatch2!("conv2d backward", (s1, l1), (s2, l2), |gy, w| {
            conv_bwd_input(gy, w, s)
        });
        Ok((st, Shape::from((s.b, s.c, s.h, s.w))))
    }
}

/// `(x, gy) → ∂L/∂w` as `[O, C·kh·kw]`.
struct ConvBwdWeight {
    shape: ConvShape,
}

impl CustomOp2 for ConvBwdWeight {
    fn name(&self) -> &'static str {
        "modbal-conv2d-bwd-weight"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = &self.shape;
        let st = float_dispatch2!("conv2d backward", (s1, l1), (s2, l2), |x, gy| {
            conv_bwd_weight(x, gy, s)
        });
        Ok((st, Shape::from((s.o, s.c * s.win.kh * s.win.kw))))
    }
}

/// `[B, C, HW] → [C]`: per-channel sums (no gradient).
struct ChannelSum {
    b: usize,
    c: usize,
    hw: usize,
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "modbal-channel-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let st = float_dispatch!("channel sum", s, l, |v| channel_sums_as(
            v, self.b, self.c, self.hw
        ));
        Ok((st, Shape::from(self.c)))
    }
}

/// Stride, padding and dilation of a convolution (per axis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
}

impl Default for ConvGeometry {
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
        }
    }
}

fn conv_shape(x: &Tensor, w: &Tensor, g: ConvGeometry) -> Result<ConvShape> {
    let (b, c, h, wd) = x.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "conv2d input must be [B, C, H, W], got {:?}",
            x.dims()
        ))
    })?;
    let (o, wc, kh, kw) = w.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "conv2d kernel must be [O, C, kh, kw], got {:?}",
            w.dims()
        ))
    })?;
    if c == 0 {
        candle_core::bail!("conv2d: input {:?} has no channels", x.dims());
    }
    if wc != c {
        candle_core::bail!(
            "conv2d: input has {c} channels but the kernel expects {wc} (input {:?}, kernel {:?})",
            x.dims(),
            w.dims()
        );
    }
    if x.dtype() != w.dtype() {
        candle_core::bail!(
            "conv2d: input is {:?} but the kernel is {:?}",
            x.dtype(),
            w.dtype()
        );
    }
    let win = Window {
        kh,
        kw,
        sh: g.stride.0,
        sw: g.stride.1,
        ph: g.padding.0,
        pw: g.padding.1,
        dh: g.dilation.0,
        dw: g.dilation.1,
    };
    let (ho, wo) = win.out_hw(h, wd)?;
    Ok(ConvShape {
        b,
        c,
        h,
        w: wd,
        o,
        ho,
        wo,
        win,
    })
}

/// 2-D convolution (cross-correlation, as PyTorch), differentiable in `x` and `w`.
///
/// `x: [B, C, H, W]`, `w: [O, C, kh, kw]` → `[B, O, Ho, Wo]`. No bias (see [`conv2d_bias`]).
/// Forward and both backward passes are im2col / col2im + gemm (see the `cpu` module); the
/// backward computes only the gradients that are needed (none for an untracked input).
pub fn conv2d(x: &Tensor, w: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    conv2d_impl(x, w, None, g, false)
}

/// `relu(conv2d(x, w))` as one op: the ReLU is applied to the output buffer in place, and the
/// backward masks the output gradient with `y > 0` once (instead of candle's ReLU node, whose
/// backward builds a zero tensor, a comparison, a cast and a product).
pub fn conv2d_relu(x: &Tensor, w: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    conv2d_impl(x, w, None, g, true)
}

/// `relu(conv2d_bias(x, w, bias))` as one op (see [`conv2d_relu`]).
pub fn conv2d_bias_relu(x: &Tensor, w: &Tensor, bias: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    conv2d_impl(x, w, Some(bias), g, true)
}

fn conv2d_impl(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    g: ConvGeometry,
    relu: bool,
) -> Result<Tensor> {
    let shape = conv_shape(x, w, g)?;
    if let Some(bias) = bias {
        if bias.dims() != [shape.o] || bias.dtype() != w.dtype() {
            candle_core::bail!(
                "conv2d: bias must be [{}] {:?}, got {:?} {:?}",
                shape.o,
                w.dtype(),
                bias.dims(),
                bias.dtype()
            );
        }
    }
    let mut operands = vec![x, w];
    operands.extend(bias);
    if !use_fast_cpu(&operands) {
        // Device-generic: the convolution, then the bias and the ReLU as tensor ops.
        let y = generic::conv2d(x, w, shape.win)?;
        let y = match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, shape.o, 1, 1))?)?,
            None => y,
        };
        return if relu { strict_relu(&y) } else { Ok(y) };
    }
    let op = ConvOp { shape, relu };
    let Some(bias) = bias else {
        return x.contiguous()?.apply_op2(&w.contiguous()?, op);
    };
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, op)
}

/// [`conv2d`] plus a per-output-channel `bias: [O]`, fused (the bias is the initial value of
/// the output; its gradient is the per-channel sum of the output gradient).
pub fn conv2d_bias(x: &Tensor, w: &Tensor, bias: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    conv2d_impl(x, w, Some(bias), g, false)
}
