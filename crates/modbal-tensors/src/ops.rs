//! Differentiable operations candle 0.11 lacks or gets wrong for training.
//!
//! * [`conv2d`] / [`conv2d_bias`]: 2-D convolution for any input H×W, stride, padding and
//!   dilation. candle's own conv2d backward derives the output padding from the height only and
//!   fails on inputs such as 257×188 spectrograms. Here forward and both backward passes are
//!   im2col / col2im + direct `gemm` calls (the `cpu` module), and the backward computes only
//!   the gradients of tracked operands.
//! * [`batch_norm_train`] (training-mode batch norm, optionally fused with ReLU), [`add_relu`]
//!   (ResNet's residual connection) and [`global_avg_pool`]: single fused ops with closed-form
//!   backward passes instead of chains of candle element-wise ops (CPU f32/f64).
//! * [`max_pool2d`]: max-pooling with any kernel, stride and padding and a backward pass that
//!   routes each output's gradient to the first arg-max of its window, as PyTorch does (candle
//!   only has a backward when kernel == stride).
//! * [`logdet`]: log det A for symmetric positive-definite A (Cholesky), with backward
//!   ∂ log det A / ∂A = A⁻¹ (A symmetric). Needed by the Gaussian MI of CAL eq 10-12. Its
//!   building blocks are public for callers that assemble the matrix themselves (the Gaussian
//!   estimators' graph-free path): [`cholesky_in_place`] (blocked, multi-threaded, reports the
//!   first failing pivot) and [`gram_lower`] (the lower triangle of `A Aᵀ`).
//! * [`linear`]: `x Wᵀ + b`, optionally followed by ReLU, as one op (one gemm call with the bias
//!   and the ReLU applied in the same output buffer) whose backward is two gemm calls and a
//!   column sum (the input gradient only for a tracked input); [`softmax_cross_entropy`]: the
//!   mean cross-entropy as one op with the closed-form gradient `(softmax − onehot)/N` (CPU
//!   f32/f64; candle's composition elsewhere).
//! * [`softmax`], [`log_softmax`]: numerically stable compositions of differentiable ops
//!   (`candle_nn::ops::softmax_last_dim` has no backward).
//!
//! # Shapes
//! * `conv2d(x: [B, C, H, W], w: [O, C, kh, kw]) -> [B, O, Ho, Wo]` with
//!   `Ho = (H + 2·ph − dh·(kh−1) − 1)/sh + 1` (same for W).
//! * `max_pool2d(x: [B, C, H, W]) -> [B, C, Ho, Wo]`, same formula with dilation 1; padded cells
//!   count as −∞.
//! * `logdet(a: [D, D] or [N, D, D]) -> [] or [N]`.

use crate::cpu::channel::{
    bn_bwd_input, bn_bwd_sums, channel_affine, channel_stats, channel_sums_as,
};
use crate::cpu::conv::{conv_bwd_input, conv_bwd_weight, conv_fwd, ConvShape};
use crate::cpu::cross_entropy::{softmax_ce_bwd, softmax_ce_fwd};
use crate::cpu::elementwise::{add_relu_fwd, relu_in_place, relu_mask};
use crate::cpu::linear::{col_sums, linear_bwd_input, linear_bwd_weight, linear_fwd};
use crate::cpu::pool::{max_pool_2x2_plane, max_pool_plane, plane_means, plane_spread};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

pub use crate::window::Window;

trait Elem: crate::cpu::simd::Float {}
impl Elem for f32 {}
impl Elem for f64 {}

fn contiguous_slice<'a, T: candle_core::WithDType>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("modbal op expects a contiguous tensor"),
    }
}

// ---------------------------------------------------------------------------------------------
// convolution (gemm kernels in `crate::cpu::conv`)
// ---------------------------------------------------------------------------------------------

/// Runs `$body` with `$v` bound to the f32 or f64 slice of a contiguous CPU storage and wraps
/// the resulting `Vec` back into a storage of the same type.
macro_rules! float_dispatch {
    ($op:expr, $s:expr, $l:expr, |$v:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(v) => {
                let $v = contiguous_slice(v, $l)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(v) => {
                let $v = contiguous_slice(v, $l)?;
                CpuStorage::F64($body)
            }
            other => candle_core::bail!("{} supports f32 and f64, got {:?}", $op, other.dtype()),
        }
    };
}

/// The f32/f64 slices of two (or three) storages of the same dtype.
macro_rules! float_dispatch2 {
    ($op:expr, ($s1:expr, $l1:expr), ($s2:expr, $l2:expr), |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let ($a, $b) = (contiguous_slice(a, $l1)?, contiguous_slice(b, $l2)?);
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let ($a, $b) = (contiguous_slice(a, $l1)?, contiguous_slice(b, $l2)?);
                CpuStorage::F64($body)
            }
            (a, b) => candle_core::bail!(
                "{}: f32 or f64 operands of one dtype expected, got {:?} and {:?}",
                $op,
                a.dtype(),
                b.dtype()
            ),
        }
    };
}

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
    let op = ConvOp { shape, relu };
    let Some(bias) = bias else {
        return x.contiguous()?.apply_op2(&w.contiguous()?, op);
    };
    if bias.dims() != [shape.o] || bias.dtype() != w.dtype() {
        candle_core::bail!(
            "conv2d: bias must be [{}] {:?}, got {:?} {:?}",
            shape.o,
            w.dtype(),
            bias.dims(),
            bias.dtype()
        );
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, op)
}

/// [`conv2d`] plus a per-output-channel `bias: [O]`, fused (the bias is the initial value of
/// the output; its gradient is the per-channel sum of the output gradient).
pub fn conv2d_bias(x: &Tensor, w: &Tensor, bias: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    conv2d_impl(x, w, Some(bias), g, false)
}
// ---------------------------------------------------------------------------------------------
// max-pool
// ---------------------------------------------------------------------------------------------

struct MaxPool {
    win: Window,
    /// Arg-max indices of the forward pass, kept for the backward (filled by `cpu_fwd`).
    arg: std::sync::Arc<std::sync::Mutex<Option<Vec<u32>>>>,
}

/// Returns (values, argmax flat index into the input plane) for each output cell: the 2×2 /
/// stride-2 window (unpadded) by its own vectorised kernel, every other window by the general
/// one; both scan row-major, first maximum wins, NaN propagates (as PyTorch).
fn max_pool_fwd<T: Elem>(x: &[T], dims: &[usize], win: &Window) -> Result<(Vec<T>, Vec<u32>)> {
    let (b, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let (ho, wo) = win.out_hw(h, w)?;
    let two_by_two = (
        win.kh, win.kw, win.sh, win.sw, win.ph, win.pw, win.dh, win.dw,
    ) == (2, 2, 2, 2, 0, 0, 1, 1);
    let mut out = vec![T::from_f64(0.0); b * c * ho * wo];
    let mut arg = vec![0u32; b * c * ho * wo];
    out.par_chunks_mut(ho * wo)
        .zip(arg.par_chunks_mut(ho * wo))
        .enumerate()
        .for_each(|(bc, (o, a))| {
            let plane = &x[bc * h * w..(bc + 1) * h * w];
            if two_by_two {
                max_pool_2x2_plane(plane, w, o, a, wo);
            } else {
                max_pool_plane(plane, h, w, win, o, a, wo);
            }
        });
    Ok((out, arg))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "modbal-max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        let (ho, wo) = self.win.out_hw(dims[2], dims[3])?;
        let shape = Shape::from((dims[0], dims[1], ho, wo));
        let (st, arg) = match s {
            CpuStorage::F32(v) => {
                let (o, a) = max_pool_fwd(contiguous_slice(v, l)?, dims, &self.win)?;
                (CpuStorage::F32(o), a)
            }
            CpuStorage::F64(v) => {
                let (o, a) = max_pool_fwd(contiguous_slice(v, l)?, dims, &self.win)?;
                (CpuStorage::F64(o), a)
            }
            _ => candle_core::bail!("max_pool2d supports f32 and f64, got {:?}", s.dtype()),
        };
        if let Ok(mut slot) = self.arg.lock() {
            *slot = Some(arg);
        }
        Ok((st, shape))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // The forward's arg-max indices (lent to the backward op and put back afterwards, so a
        // second backward over the same graph finds them too; recomputed if missing).
        let cached = self.arg.lock().ok().and_then(|mut a| a.take());
        let op = MaxPoolBwd {
            win: self.win,
            arg: std::sync::Mutex::new(cached),
        };
        let g = arg.apply_op2_no_bwd(&grad_res.contiguous()?, &op)?;
        if let Ok(mut back) = op.arg.lock() {
            if let (Ok(mut slot), Some(a)) = (self.arg.lock(), back.take()) {
                *slot = Some(a);
            }
        }
        Ok(Some(g))
    }
}

struct MaxPoolBwd {
    win: Window,
    arg: std::sync::Mutex<Option<Vec<u32>>>,
}

fn max_pool_bwd<T: Elem>(
    x: &[T],
    dims: &[usize],
    g: &[T],
    win: &Window,
    cached: &std::sync::Mutex<Option<Vec<u32>>>,
) -> Result<Vec<T>> {
    let (b, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let (ho, wo) = win.out_hw(h, w)?;
    let mut slot = cached
        .lock()
        .map_err(|_| candle_core::Error::Msg("max_pool2d: poisoned arg-max cache".into()))?;
    let arg = match slot.take() {
        Some(a) if a.len() == b * c * ho * wo => a,
        _ => max_pool_fwd(x, dims, win)?.1,
    };
    let mut gx = vec![T::from_f64(0.0); b * c * h * w];
    gx.par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(bc, plane)| {
            let a = &arg[bc * ho * wo..(bc + 1) * ho * wo];
            let gg = &g[bc * ho * wo..(bc + 1) * ho * wo];
            for (i, &idx) in a.iter().enumerate() {
                plane[idx as usize] += gg[i];
            }
        });
    *slot = Some(arg);
    Ok(gx)
}

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "modbal-max-pool2d-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.dims();
        let shape = l1.shape().clone();
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => Ok((
                CpuStorage::F32(max_pool_bwd(
                    contiguous_slice(x, l1)?,
                    dims,
                    contiguous_slice(g, l2)?,
                    &self.win,
                    &self.arg,
                )?),
                shape,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => Ok((
                CpuStorage::F64(max_pool_bwd(
                    contiguous_slice(x, l1)?,
                    dims,
                    contiguous_slice(g, l2)?,
                    &self.win,
                    &self.arg,
                )?),
                shape,
            )),
            _ => candle_core::bail!("max_pool2d backward: dtype mismatch"),
        }
    }
}

/// Max-pooling over `kernel × kernel` windows with `stride` and zero-size `padding` cells that
/// never win (−∞), differentiable (gradient to the first arg-max, as PyTorch).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if x.rank() != 4 {
        candle_core::bail!("max_pool2d expects [B, C, H, W], got {:?}", x.dims());
    }
    if padding * 2 > kernel {
        candle_core::bail!("max_pool2d: padding {padding} exceeds half the kernel {kernel}");
    }
    x.contiguous()?.apply_op1(MaxPool {
        arg: Default::default(),
        win: Window {
            kh: kernel,
            kw: kernel,
            sh: stride,
            sw: stride,
            ph: padding,
            pw: padding,
            dh: 1,
            dw: 1,
        },
    })
}

/// Mean over the spatial axes: `[B, C, H, W] -> [B, C]` (one fused op on CPU f32/f64).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    match x.dims() {
        &[_, _, h, w] if h * w > 0 && batch_norm_train_supported(x) => {
            x.contiguous()?.apply_op1(Gap { hw: h * w })
        }
        _ => x.mean(D::Minus1)?.mean(D::Minus1),
    }
}

// ---------------------------------------------------------------------------------------------
// batch normalisation (training mode) and global average pooling
// ---------------------------------------------------------------------------------------------

/// `[B, C, H, W]` or `[B, C]` as `(B, C, H·W)`.
fn bn_dims(x: &Tensor) -> Result<(usize, usize, usize)> {
    match x.dims() {
        &[b, c, h, w] => Ok((b, c, h * w)),
        &[b, c] => Ok((b, c, 1)),
        d => candle_core::bail!("batch norm expects [B, C, H, W] or [B, C], got {d:?}"),
    }
}

/// `x → [2, C]` f64: per-channel mean and biased variance.
struct BnStats {
    dims: (usize, usize, usize),
}

impl CustomOp1 for BnStats {
    fn name(&self) -> &'static str {
        "modbal-bn-stats"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, hw) = self.dims;
        let st = match s {
            CpuStorage::F32(v) => channel_stats(contiguous_slice(v, l)?, b, c, hw),
            CpuStorage::F64(v) => channel_stats(contiguous_slice(v, l)?, b, c, hw),
            other => candle_core::bail!("batch norm supports f32 and f64, got {:?}", other.dtype()),
        };
        let mut out: Vec<f64> = st.iter().map(|p| p.0).collect();
        out.extend(st.iter().map(|p| p.1));
        Ok((CpuStorage::F64(out), Shape::from((2, c))))
    }
}

/// `(x, weight, bias) → (x − mean)·invstd·weight + bias` (then ReLU), with the batch statistics
/// fixed in the op; the backward differentiates through them (full batch-norm backward).
struct BnTrain {
    dims: (usize, usize, usize),
    /// (mean, 1/√(var + eps)) per channel.
    stats: Vec<(f64, f64)>,
    relu: bool,
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "modbal-batch-norm-train"
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
        let (_, c, hw) = self.dims;
        macro_rules! go {
            ($x:expr, $w:expr, $b:expr, $t:ty) => {{
                let (x, w, b) = (
                    contiguous_slice($x, l1)?,
                    contiguous_slice($w, l2)?,
                    contiguous_slice($b, l3)?,
                );
                let mut a = Vec::with_capacity(c);
                let mut sh = Vec::with_capacity(c);
                for ci in 0..c {
                    let (mean, invstd) = self.stats[ci];
                    let ac = w[ci] as f64 * invstd;
                    a.push(ac as $t);
                    sh.push((b[ci] as f64 - mean * ac) as $t);
                }
                channel_affine(x, c, hw, &a, &sh, self.relu)
            }};
        }
        let st = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                CpuStorage::F32(go!(x, w, b, f32))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(go!(x, w, b, f64))
            }
            _ => candle_core::bail!("batch norm: input, weight and bias must share f32 or f64"),
        };
        Ok((st, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let x = x.contiguous()?;
        let op = BnBwd {
            dims: self.dims,
            stats: self.stats.clone(),
            relu: self.relu,
            sums: Vec::new(),
            weight: Vec::new(),
        };
        // (Σg, Σg·x̂) per channel, f64 [2, C].
        let sums = x.apply_op3_no_bwd(&grad, res, &op)?;
        let sv = sums.to_vec2::<f64>()?;
        let gx = if x.track_op() {
            let op = BnBwd {
                sums: sv[0].iter().copied().zip(sv[1].iter().copied()).collect(),
                weight: w.to_dtype(DType::F64)?.to_vec1::<f64>()?,
                ..op
            };
            Some(x.apply_op3_no_bwd(&grad, res, &op)?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(sums.get(1)?.to_dtype(w.dtype())?)
        } else {
            None
        };
        let gb = if b.track_op() {
            Some(sums.get(0)?.to_dtype(b.dtype())?)
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

/// Batch-norm backward, `(x, gy, y)`: with empty `sums` the per-channel sums `[2, C]` (f64),
/// else the input gradient.
struct BnBwd {
    dims: (usize, usize, usize),
    stats: Vec<(f64, f64)>,
    relu: bool,
    sums: Vec<(f64, f64)>,
    weight: Vec<f64>,
}

impl CustomOp3 for BnBwd {
    fn name(&self) -> &'static str {
        "modbal-batch-norm-bwd"
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
        let c = self.dims.1;
        macro_rules! go {
            ($x:expr, $g:expr, $y:expr, $t:ty, $variant:ident) => {{
                let (x, g, y) = (
                    contiguous_slice($x, l1)?,
                    contiguous_slice($g, l2)?,
                    contiguous_slice($y, l3)?,
                );
                let y = if self.relu { Some(y) } else { None };
                if self.sums.is_empty() {
                    let s = bn_bwd_sums(x, g, y, self.dims, &self.stats);
                    let mut out: Vec<f64> = s.iter().map(|p| p.0).collect();
                    out.extend(s.iter().map(|p| p.1));
                    (CpuStorage::F64(out), Shape::from((2, c)))
                } else {
                    let w: Vec<$t> = self.weight.iter().map(|&v| v as $t).collect();
                    let gx = bn_bwd_input(x, g, y, self.dims, &self.stats, &w, &self.sums);
                    (CpuStorage::$variant(gx), l1.shape().clone())
                }
            }};
        }
        Ok(match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(y)) => go!(x, g, y, f32, F32),
            (CpuStorage::F64(x), CpuStorage::F64(g), CpuStorage::F64(y)) => go!(x, g, y, f64, F64),
            _ => candle_core::bail!("batch norm backward: f32 or f64 operands of one dtype"),
        })
    }
}

/// Training-mode batch normalisation over `x: [B, C, H, W]` or `[B, C]`, fused into one op
/// (optionally followed by ReLU): `y = (x − μ_c)/√(σ²_c + eps)·weight_c + bias_c` with the batch
/// mean `μ_c` and biased variance `σ²_c` of channel `c`. Differentiable in `x`, `weight` and
/// `bias` (the backward includes the dependence of μ and σ² on `x`:
/// `∂L/∂x = weight·invstd·(g − mean(g) − x̂·mean(g·x̂))`, `g` the output gradient masked by
/// `y > 0` with `relu`). Returns `(y, μ [C], σ² [C])`, the statistics in `x`'s dtype for the
/// running-statistics update. CPU, f32/f64 only (see [`batch_norm_train_supported`]).
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = bn_dims(x)?;
    let (b, c, hw) = dims;
    if weight.dims() != [c] || bias.dims() != [c] {
        candle_core::bail!(
            "batch norm over {c} channels: weight {:?} and bias {:?} must be [{c}]",
            weight.dims(),
            bias.dims()
        );
    }
    if b * hw < 2 {
        candle_core::bail!(
            "batch norm in training mode needs more than one value per channel, got input {:?}",
            x.dims()
        );
    }
    let x = x.contiguous()?;
    let st = x.apply_op1_no_bwd(&BnStats { dims })?; // [2, C] f64
    let sv = st.to_vec2::<f64>()?;
    let stats: Vec<(f64, f64)> = sv[0]
        .iter()
        .zip(&sv[1])
        .map(|(&m, &v)| (m, 1.0 / (v + eps).sqrt()))
        .collect();
    let y = x.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        BnTrain { dims, stats, relu },
    )?;
    let mean = st.get(0)?.to_dtype(x.dtype())?;
    let var = st.get(1)?.to_dtype(x.dtype())?;
    Ok((y, mean, var))
}

/// Whether [`batch_norm_train`] (and the other fused CPU ops) can take `x`: a CPU f32/f64 tensor.
pub fn batch_norm_train_supported(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// `[B, C, H, W] → [B, C]` plane means; backward spreads `g/(H·W)` over each plane.
struct Gap {
    hw: usize,
}

impl CustomOp1 for Gap {
    fn name(&self) -> &'static str {
        "modbal-global-avg-pool"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = l.dims();
        let st = float_dispatch!("global_avg_pool", s, l, |v| plane_means(v, self.hw));
        Ok((st, Shape::from((d[0], d[1]))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?.apply_op1_no_bwd(&GapBwd {
            hw: self.hw,
            shape: arg.shape().clone(),
        })?;
        Ok(Some(g))
    }
}

struct GapBwd {
    hw: usize,
    shape: Shape,
}

impl CustomOp1 for GapBwd {
    fn name(&self) -> &'static str {
        "modbal-global-avg-pool-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let st = float_dispatch!("global_avg_pool backward", s, l, |v| plane_spread(
            v, self.hw
        ));
        Ok((st, self.shape.clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// fused residual add + ReLU
// ---------------------------------------------------------------------------------------------

/// `(a, b) → max(a + b, 0)`; backward `g·[y > 0]` to both operands.
struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "modbal-add-relu"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let st = float_dispatch2!("add_relu", (s1, l1), (s2, l2), |a, b| add_relu_fwd(a, b));
        Ok((st, l1.shape().clone()))
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if !a.track_op() && !b.track_op() {
            return Ok((None, None));
        }
        let g = grad.contiguous()?.apply_op2_no_bwd(res, &ReluMask)?;
        Ok((a.track_op().then(|| g.clone()), b.track_op().then_some(g)))
    }
}

/// `(g, y) → g·[y > 0]`.
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "modbal-relu-mask"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let st = float_dispatch2!("relu backward", (s1, l1), (s2, l2), |g, y| relu_mask(g, y));
        Ok((st, l1.shape().clone()))
    }
}

/// `relu(a + b)` for two tensors of one shape, one fused op on CPU f32/f64 (a ResNet block's
/// residual connection); elsewhere the composition of candle ops. Gradient: `g·[y > 0]` to both.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        candle_core::bail!("add_relu: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    if batch_norm_train_supported(a) && a.dtype() == b.dtype() && b.device().is_cpu() {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        (a + b)?.relu()
    }
}

// ---------------------------------------------------------------------------------------------
// fully connected layer (+ ReLU)
// ---------------------------------------------------------------------------------------------

/// `(x [n, k], w [o, k] [, b [o]]) → x wᵀ + b`, optionally followed by ReLU.
#[derive(Clone, Copy)]
struct LinearOp {
    dims: (usize, usize, usize),
    relu: bool,
}

impl LinearOp {
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        need_bias: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !x.track_op() && !w.track_op() && !need_bias {
            return Ok((None, None, None));
        }
        let grad = grad.contiguous()?;
        let g = if self.relu {
            grad.apply_op2_no_bwd(res, &ReluMask)?
        } else {
            grad
        };
        let d = LinearBwd { dims: self.dims };
        let gx = if x.track_op() {
            Some(g.apply_op2_no_bwd(w, &LinearBwdInput(d))?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(g.apply_op2_no_bwd(x, &LinearBwdWeight(d))?)
        } else {
            None
        };
        let gb = if need_bias {
            Some(g.apply_op1_no_bwd(&ColSum { o: self.dims.2 })?)
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "modbal-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let st = float_dispatch2!("linear", (s1, l1), (s2, l2), |x, w| linear_fwd(
            x, w, None, self.dims, self.relu
        ));
        Ok((st, Shape::from((self.dims.0, self.dims.2))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = self.grads(x, w, res, grad, false)?;
        Ok((gx, gw))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "modbal-linear-bias"
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
                CpuStorage::F32(linear_fwd(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(w, l2)?,
                    Some(contiguous_slice(b, l3)?),
                    self.dims,
                    self.relu,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(linear_fwd(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(w, l2)?,
                    Some(contiguous_slice(b, l3)?),
                    self.dims,
                    self.relu,
                ))
            }
            _ => candle_core::bail!(
                "linear: input, weight and bias must all be f32 or all f64, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((st, Shape::from((self.dims.0, self.dims.2))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, res, grad, b.track_op())
    }
}

/// Dimensions `(n, k, o)` of a fully connected layer's backward products.
#[derive(Clone, Copy)]
struct LinearBwd {
    dims: (usize, usize, usize),
}

/// `(g [n, o], w [o, k]) → g w`.
struct LinearBwdInput(LinearBwd);

impl CustomOp2 for LinearBwdInput {
    fn name(&self) -> &'static str {
        "modbal-linear-bwd-input"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.0.dims;
        let st = float_dispatch2!("linear backward", (s1, l1), (s2, l2), |g, w| {
            linear_bwd_input(g, w, d)
        });
        Ok((st, Shape::from((d.0, d.1))))
    }
}

/// `(g [n, o], x [n, k]) → gᵀ x`.
struct LinearBwdWeight(LinearBwd);

impl CustomOp2 for LinearBwdWeight {
    fn name(&self) -> &'static str {
        "modbal-linear-bwd-weight"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.0.dims;
        let st = float_dispatch2!("linear backward", (s1, l1), (s2, l2), |g, x| {
            linear_bwd_weight(g, x, d)
        });
        Ok((st, Shape::from((d.2, d.1))))
    }
}

/// `[n, o] → [o]` column sums (no gradient).
struct ColSum {
    o: usize,
}

impl CustomOp1 for ColSum {
    fn name(&self) -> &'static str {
        "modbal-col-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let st = float_dispatch!("column sum", s, l, |v| col_sums(v, self.o));
        Ok((st, Shape::from(self.o)))
    }
}

/// Whether [`linear`] runs as one fused op (CPU, f32/f64, operands of one dtype).
fn linear_fused_supported(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    let dt = x.dtype();
    matches!(dt, DType::F32 | DType::F64)
        && x.device().is_cpu()
        && w.device().is_cpu()
        && w.dtype() == dt
        && b.is_none_or(|b| b.dtype() == dt && b.device().is_cpu())
}

/// `x Wᵀ + b` (`x [N, K]`, `w [O, K]`, `b [O]`), followed by ReLU when `relu`; `[N, O]`.
///
/// On CPU with f32/f64 operands one op: the bias is written into the output, the product
/// accumulated onto it by one gemm call and the ReLU applied in place; the backward masks the
/// incoming gradient once (ReLU) and computes `∂x = g W` (only for a tracked `x`), `∂W = gᵀ x`
/// (gemm) and `∂b = Σ_rows g`. Elsewhere the composition `relu(x.matmul(wᵀ) + b)` of candle ops.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    let (n, k) = x.dims2()?;
    let (o, kw) = w.dims2()?;
    if kw != k {
        candle_core::bail!(
            "linear: input {:?} does not match weight {:?}",
            x.dims(),
            w.dims()
        );
    }
    if let Some(b) = b {
        if b.dims() != [o] {
            candle_core::bail!(
                "linear: bias {:?} does not match weight {:?}",
                b.dims(),
                w.dims()
            );
        }
    }
    if n > 0 && linear_fused_supported(x, w, b) {
        let op = LinearOp {
            dims: (n, k, o),
            relu,
        };
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        return match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
            None => x.apply_op2(&w, op),
        };
    }
    let y = x.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

// ---------------------------------------------------------------------------------------------
// softmax cross-entropy
// ---------------------------------------------------------------------------------------------

/// Class indices of a label storage, checked against `0..c`.
fn label_indices(s: &CpuStorage, l: &Layout, c: usize) -> Result<Vec<usize>> {
    fn check(v: i128, c: usize) -> Result<usize> {
        if v < 0 {
            candle_core::bail!("cross-entropy: negative label {v}");
        }
        if v as u128 >= c as u128 {
            candle_core::bail!("cross-entropy: label {v} out of range for {c} classes");
        }
        Ok(v as usize)
    }
    match s {
        CpuStorage::U32(v) => contiguous_slice(v, l)?
            .iter()
            .map(|&y| check(y as i128, c))
            .collect(),
        CpuStorage::U8(v) => contiguous_slice(v, l)?
            .iter()
            .map(|&y| check(y as i128, c))
            .collect(),
        CpuStorage::I64(v) => contiguous_slice(v, l)?
            .iter()
            .map(|&y| check(y as i128, c))
            .collect(),
        other => candle_core::bail!(
            "cross-entropy: labels must be an integer dtype, got {:?}",
            other.dtype()
        ),
    }
}

/// `(logits [N, C], labels [N]) → mean_i (logsumexp(z_i) − z_{i, y_i})` (scalar).
struct SoftmaxCe {
    c: usize,
}

impl CustomOp2 for SoftmaxCe {
    fn name(&self) -> &'static str {
        "modbal-softmax-cross-entropy"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = label_indices(s2, l2, self.c)?;
        let st = match s1 {
            CpuStorage::F32(z) => {
                CpuStorage::F32(vec![
                    softmax_ce_fwd(contiguous_slice(z, l1)?, &y, self.c) as f32
                ])
            }
            CpuStorage::F64(z) => {
                CpuStorage::F64(vec![softmax_ce_fwd(contiguous_slice(z, l1)?, &y, self.c)])
            }
            other => candle_core::bail!(
                "cross-entropy supports f32 and f64 logits, got {:?}",
                other.dtype()
            ),
        };
        Ok((st, Shape::from(())))
    }
    fn bwd(
        &self,
        z: &Tensor,
        labels: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if !z.track_op() {
            return Ok((None, None));
        }
        let g = z.apply_op3_no_bwd(labels, &grad.contiguous()?, &SoftmaxCeBwd { c: self.c })?;
        Ok((Some(g), None))
    }
}

/// `(logits, labels, g) → g·(softmax(z) − onehot(y))/N`.
struct SoftmaxCeBwd {
    c: usize,
}

impl CustomOp3 for SoftmaxCeBwd {
    fn name(&self) -> &'static str {
        "modbal-softmax-cross-entropy-bwd"
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
        let y = label_indices(s2, l2, self.c)?;
        let st = match (s1, s3) {
            (CpuStorage::F32(z), CpuStorage::F32(g)) => {
                let g = contiguous_slice(g, l3)?[0] as f64;
                CpuStorage::F32(softmax_ce_bwd(contiguous_slice(z, l1)?, &y, self.c, g))
            }
            (CpuStorage::F64(z), CpuStorage::F64(g)) => {
                let g = contiguous_slice(g, l3)?[0];
                CpuStorage::F64(softmax_ce_bwd(contiguous_slice(z, l1)?, &y, self.c, g))
            }
            (a, b) => candle_core::bail!(
                "cross-entropy backward: logits {:?} and gradient {:?}",
                a.dtype(),
                b.dtype()
            ),
        };
        Ok((st, l1.shape().clone()))
    }
}

/// Mean softmax cross-entropy of `logits [N, C]` against integer `labels [N]` (scalar), as one
/// op on CPU f32/f64 logits with the closed-form gradient `(softmax(z) − onehot(y))/N`
/// (log-sum-exp and mean accumulated in f64). `None` when the fused op does not apply (another
/// device or dtype, or an empty batch): the caller falls back to the composition.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Option<Tensor>> {
    let (n, c) = logits.dims2()?;
    if labels.dims() != [n] {
        candle_core::bail!(
            "cross-entropy: labels have shape {:?}, expected [{n}]",
            labels.dims()
        );
    }
    let ok = n > 0
        && c > 0
        && matches!(logits.dtype(), DType::F32 | DType::F64)
        && matches!(labels.dtype(), DType::U32 | DType::U8 | DType::I64)
        && logits.device().is_cpu()
        && labels.device().is_cpu();
    if !ok {
        return Ok(None);
    }
    logits
        .contiguous()?
        .apply_op2(&labels.contiguous()?, SoftmaxCe { c })
        .map(Some)
}

// ---------------------------------------------------------------------------------------------
// log-determinant
// ---------------------------------------------------------------------------------------------

/// Block size of the blocked Cholesky factorisation.
const CHOL_BLOCK: usize = 64;

/// Unblocked Cholesky of the `b × b` diagonal block at `(k0, k0)` of a row-major `d × d` matrix.
/// Errors with the (global) index of the first column whose pivot is not positive or not finite.
fn cholesky_block(a: &mut [f64], d: usize, k0: usize, b: usize) -> std::result::Result<(), usize> {
    for j in k0..k0 + b {
        let mut s = a[j * d + j];
        for k in k0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        // Not finite covers NaN.
        if !s.is_finite() || s <= 0.0 {
            return Err(j);
        }
        let ljj = s.sqrt();
        a[j * d + j] = ljj;
        for i in j + 1..k0 + b {
            let mut s = a[i * d + j];
            for k in k0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / ljj;
        }
    }
    Ok(())
}

/// Solves `x · L11ᵀ = row` in place for one row of the panel, with `lt` the columns of the
/// `b × b` lower-triangular block L11 stored contiguously (`lt[j·b + i] = L11[i][j]`).
/// Column-oriented forward substitution: after `x_j` is known, `x_i −= L11[i][j]·x_j` for all
/// `i > j` at once, a contiguous update the compiler vectorises (the row-oriented dot products
/// are a serial dependency chain).
#[inline(always)]
fn panel_row_solve(x: &mut [f64], lt: &[f64], b: usize) {
    for j in 0..b {
        let xj = x[j] / lt[j * b + j];
        x[j] = xj;
        let col = &lt[j * b + j + 1..(j + 1) * b];
        for (xi, &l) in x[j + 1..b].iter_mut().zip(col) {
            *xi -= xj * l;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_rows_avx2(rows: &mut [f64], d: usize, k0: usize, lt: &[f64], b: usize) {
    for row in rows.chunks_exact_mut(d) {
        panel_row_solve(&mut row[k0..k0 + b], lt, b);
    }
}

/// [`panel_row_solve`] for every row of `rows` (rows of length `d`), with AVX2/FMA code when
/// the CPU has it.
fn panel_rows(rows: &mut [f64], d: usize, k0: usize, lt: &[f64], b: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the enabled features (checked just above).
            unsafe { panel_rows_avx2(rows, d, k0, lt, b) };
            return;
        }
    }
    for row in rows.chunks_exact_mut(d) {
        panel_row_solve(&mut row[k0..k0 + b], lt, b);
    }
}

/// In-place Cholesky factorisation (A = L Lᵀ) of a row-major `d × d` symmetric matrix of which
/// only the **lower triangle** is read; on success the lower triangle holds L (the strict upper
/// triangle is left in an unspecified state). Errors with the index of the first column whose
/// pivot is not positive or not finite (A is not numerically positive definite there; the
/// leading `j × j` block was factorised successfully, so e.g. `log det` of every leading block
/// before it is available from the diagonal).
///
/// Right-looking blocked algorithm: factor a 64-wide diagonal block, solve the panel below it
/// (rows in parallel, vectorised column-oriented substitution), and update the lower triangle
/// of the trailing matrix with multi-threaded gemm calls over column blocks
/// (`A22 ← A22 − L21 L21ᵀ`, about half the flops of a full update), so that large matrices run at
/// matrix-product speed.
pub fn cholesky_in_place(a: &mut [f64], d: usize) -> std::result::Result<(), usize> {
    assert_eq!(a.len(), d * d, "cholesky_in_place: buffer is not {d}x{d}");
    // Small factorisations (≲ 1M multiply-adds) run on one thread: splitting them costs more
    // than it saves.
    let threads = if d < 160 {
        1
    } else {
        rayon::current_num_threads()
    };
    let mut lt = vec![0.0; CHOL_BLOCK * CHOL_BLOCK];
    let mut k0 = 0;
    while k0 < d {
        let b = CHOL_BLOCK.min(d - k0);
        cholesky_block(a, d, k0, b)?;
        let rest = d - k0 - b;
        if rest == 0 {
            break;
        }
        // Panel: each row i below the block solves x · L11ᵀ = a[i, k0..k0+b].
        for j in 0..b {
            for i in j..b {
                lt[j * b + i] = a[(k0 + i) * d + k0 + j];
            }
        }
        let lt = &lt[..b * b];
        let (_, bottom) = a.split_at_mut((k0 + b) * d);
        // Enough rows per task to amortise the task overhead (≳ 64 rows of b²/2 each).
        let rows_per_task = rest.div_ceil(threads).max(64);
        if rest <= rows_per_task {
            panel_rows(bottom, d, k0, lt, b);
        } else {
            bottom
                .par_chunks_mut(rows_per_task * d)
                .for_each(|rows| panel_rows(rows, d, k0, lt, b));
        }
        // Trailing update of the lower triangle, A22 -= P Pᵀ with P = a[k0+b.., k0..k0+b], by
        // column blocks: block [c0, c0+w) updates rows c0.. of those columns.
        let n_blocks = rest.div_ceil(256).clamp(1, 8).min(rest.div_ceil(32));
        let w_blk = rest.div_ceil(n_blocks);
        // The last, small updates (≲ 1M multiply-adds) on one thread.
        let parallelism = if threads > 1 && rest * rest * b / 2 >= 1 << 20 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let p = a.as_mut_ptr();
        let mut c0 = k0 + b;
        while c0 < d {
            let w = w_blk.min(d - c0);
            let m = d - c0;
            // SAFETY: the destination (rows c0.., columns c0..c0+w, all ≥ k0+b) and the panel
            // read as lhs and rhs (columns k0..k0+b) are disjoint regions of `a`; every offset
            // stays inside the d × d buffer.
            unsafe {
                gemm::gemm(
                    m,
                    w,
                    b,
                    p.add(c0 * d + c0),
                    1,
                    d as isize,
                    true,
                    p.add(c0 * d + k0) as *const f64,
                    1,
                    d as isize,
                    p.add(c0 * d + k0) as *const f64,
                    d as isize,
                    1,
                    1.0,
                    -1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
            c0 += w;
        }
        k0 += b;
    }
    Ok(())
}

/// A `*mut f64` shared by the tasks of [`gram_lower`], which write disjoint panels.
#[derive(Clone, Copy)]
struct PanelOut(*mut f64);
// SAFETY: only used to write disjoint column panels of one buffer (see `gram_lower`).
unsafe impl Send for PanelOut {}
unsafe impl Sync for PanelOut {}

impl PanelOut {
    fn ptr(self) -> *mut f64 {
        self.0
    }
}

/// The lower triangle of the Gram matrix `A Aᵀ` (row-major `rows × rows`; the strict upper
/// triangle is left unspecified, as [`cholesky_in_place`] never reads it) of the row-major
/// `rows × k` matrix `a` whose rows are `ld ≥ k` apart: the input of a log-determinant of a
/// covariance (`A` = the centred data transposed, `rows` = features, `k` = samples) or of its
/// `N × N` dual.
///
/// The lower triangle is cut into column panels (panel `[i0, i0 + w)` is rows `i0..` of those
/// columns, one gemm call each; about `(b + 1)/(2b)` of the flops of a full product for `b`
/// panels). With enough panels, they are computed concurrently by single-threaded gemm calls:
/// the gemm crate's own parallelism splits one output, which scales poorly for these
/// short-and-wide products. Each entry is computed the same way whatever the number of threads.
pub fn gram_lower(a: &[f64], rows: usize, k: usize, ld: usize) -> Vec<f64> {
    let mut c = vec![0.0; rows * rows];
    gram_lower_into(a, rows, k, ld, &mut c);
    c
}

/// [`gram_lower`] into `c` (at least `rows × rows` values; the first `rows²` are used, with the
/// same layout), e.g. a reused buffer.
pub fn gram_lower_into(a: &[f64], rows: usize, k: usize, ld: usize, c: &mut [f64]) {
    assert!(
        ld >= k && (rows == 0 || a.len() >= (rows - 1) * ld + k),
        "gram_lower: input buffer too small"
    );
    assert!(
        c.len() >= rows * rows,
        "gram_lower: output buffer too small"
    );
    // Below ~16M multiply-adds (≈ 0.7 ms) one thread is faster than splitting the work.
    let work = rows * rows * k / 2;
    let threads = if work < 16 << 20 {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    // Panels of about 32 columns (at most 32 panels): narrow panels waste little of the upper
    // triangle, and were measured faster than wider ones even though the rows below each panel
    // are packed once per panel.
    let n_panels = rows.div_ceil(32).clamp(1, 32);
    let w_pan = rows.div_ceil(n_panels).max(1);
    let panels: Vec<(usize, usize)> = (0..rows)
        .step_by(w_pan)
        .map(|i0| (i0, w_pan.min(rows - i0)))
        .collect();
    let out = PanelOut(c.as_mut_ptr());
    let panel = |(i0, w): (usize, usize), par: gemm::Parallelism| {
        // SAFETY: `c` holds rows × rows values and the destination panel (rows i0.., columns i0..i0+w)
        // is written by this call only; the operands (rows i0.. of `a`, columns 0..k ≤ ld) are
        // in bounds (checked above); `c` does not alias `a`.
        unsafe {
            gemm::gemm(
                rows - i0,
                w,
                k,
                out.ptr().add(i0 * rows + i0),
                1,
                rows as isize,
                false,
                a.as_ptr().add(i0 * ld),
                1,
                ld as isize,
                a.as_ptr().add(i0 * ld),
                ld as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    };
    if threads > 1 && panels.len() >= threads {
        // One group of panels per thread, balanced by work (≈ rows below × width), each panel
        // by a single-threaded gemm call; largest first, to the least loaded group.
        let mut groups: Vec<(usize, Vec<(usize, usize)>)> = vec![(0, Vec::new()); threads];
        let mut order = panels.clone();
        order.sort_by_key(|&(i0, w)| std::cmp::Reverse((rows - i0) * w));
        for p in order {
            let g = groups
                .iter_mut()
                .min_by_key(|g| g.0)
                .expect("at least one group");
            g.0 += (rows - p.0) * p.1;
            g.1.push(p);
        }
        groups.par_iter().for_each(|(_, ps)| {
            for &p in ps {
                panel(p, gemm::Parallelism::None);
            }
        });
    } else {
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        for &p in &panels {
            panel(p, par);
        }
    }
}

/// [`cholesky_in_place`] as a yes/no answer.
fn cholesky(a: &mut [f64], d: usize) -> bool {
    cholesky_in_place(a, d).is_ok()
}

/// Inverse of an SPD matrix from its Cholesky factor L (A = L Lᵀ): A⁻¹ = L⁻ᵀ L⁻¹, with L⁻¹
/// computed column by column in parallel and the product by gemm.
fn spd_inverse(l: &[f64], d: usize) -> Vec<f64> {
    // Columns of L⁻¹ (stored as rows of its transpose: row j = column j of L⁻¹).
    let mut linv_t = vec![0.0; d * d];
    linv_t.par_chunks_mut(d).enumerate().for_each(|(j, col)| {
        // Solve L x = e_j; x_i = 0 for i < j.
        col[j] = 1.0 / l[j * d + j];
        for i in j + 1..d {
            let mut s = 0.0;
            for k in j..i {
                s -= l[i * d + k] * col[k];
            }
            col[i] = s / l[i * d + i];
        }
    });
    // A⁻¹ = (L⁻¹)ᵀ L⁻¹; with M = L⁻ᵀ stored row-major in `linv_t` (M[j, i] = (L⁻¹)[i, j]),
    // A⁻¹ = M Mᵀ.
    let mut inv = vec![0.0; d * d];
    // SAFETY: distinct buffers of d × d elements with the given strides.
    unsafe {
        gemm::gemm(
            d,
            d,
            d,
            inv.as_mut_ptr(),
            1,
            d as isize,
            false,
            linv_t.as_ptr(),
            1,
            d as isize,
            linv_t.as_ptr(),
            d as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    inv
}

/// Largest accepted asymmetry `|a_ij − a_ji|`, relative to the largest diagonal magnitude.
/// Loose enough for covariances built by f32 matrix products (which are symmetric only up to
/// rounding), tight enough to reject a matrix that is not symmetric at all: Cholesky reads only
/// the lower triangle, so such a matrix would silently be replaced by a different one.
pub const SYMMETRY_TOLERANCE: f64 = 1e-3;

/// Errors unless the row-major `d × d` matrix `m` (number `idx` of a batch) is symmetric up to
/// [`SYMMETRY_TOLERANCE`].
fn check_symmetric(op: &str, m: &[f64], d: usize, idx: usize) -> Result<()> {
    let scale = (0..d).map(|k| m[k * d + k].abs()).fold(0.0, f64::max);
    for i in 0..d {
        for j in 0..i {
            let (a, b) = (m[i * d + j], m[j * d + i]);
            let diff = (a - b).abs();
            if diff.is_nan() || diff > SYMMETRY_TOLERANCE * scale {
                candle_core::bail!(
                    "{op}: matrix {idx} ({d}x{d}) is not symmetric: a[{i}][{j}] = {a} but a[{j}][{i}] = {b}"
                );
            }
        }
    }
    Ok(())
}

fn batched_f64(s: &CpuStorage, l: &Layout) -> Result<(Vec<f64>, usize, usize)> {
    let dims = l.dims();
    let (n, d) = match dims.len() {
        2 => (1, dims[0]),
        3 => (dims[0], dims[1]),
        _ => candle_core::bail!("logdet expects [D, D] or [N, D, D], got {dims:?}"),
    };
    if dims[dims.len() - 1] != d {
        candle_core::bail!("logdet expects square matrices, got {dims:?}");
    }
    let v: Vec<f64> = match s {
        CpuStorage::F32(v) => contiguous_slice(v, l)?.iter().map(|&x| x as f64).collect(),
        CpuStorage::F64(v) => contiguous_slice(v, l)?.to_vec(),
        _ => candle_core::bail!("logdet supports f32 and f64, got {:?}", s.dtype()),
    };
    Ok((v, n, d))
}

fn to_storage(v: Vec<f64>, dtype: DType) -> CpuStorage {
    match dtype {
        DType::F32 => CpuStorage::F32(v.into_iter().map(|x| x as f32).collect()),
        _ => CpuStorage::F64(v),
    }
}

struct LogDet;

impl CustomOp1 for LogDet {
    fn name(&self) -> &'static str {
        "modbal-logdet"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (mut v, n, d) = batched_f64(s, l)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let m = &mut v[i * d * d..(i + 1) * d * d];
            check_symmetric("logdet", m, d, i)?;
            if !cholesky(m, d) {
                candle_core::bail!(
                    "logdet: matrix {i} ({d}x{d}) is not positive definite (singular covariance? add a ridge)"
                );
            }
            out.push(2.0 * (0..d).map(|j| m[j * d + j].ln()).sum::<f64>());
        }
        let shape = if l.dims().len() == 2 {
            Shape::from(())
        } else {
            Shape::from(n)
        };
        Ok((to_storage(out, s.dtype()), shape))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let inv = arg.contiguous()?.apply_op1_no_bwd(&SpdInverse)?;
        // d logdet(A)/dA = A^{-T} = A^{-1} for symmetric A.
        let g = if arg.rank() == 2 {
            inv.broadcast_mul(grad_res)?
        } else {
            inv.broadcast_mul(&grad_res.reshape((arg.dim(0)?, 1, 1))?)?
        };
        Ok(Some(g))
    }
}

struct SpdInverse;

impl CustomOp1 for SpdInverse {
    fn name(&self) -> &'static str {
        "modbal-spd-inverse"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (mut v, n, d) = batched_f64(s, l)?;
        let mut out = Vec::with_capacity(n * d * d);
        for i in 0..n {
            let m = &mut v[i * d * d..(i + 1) * d * d];
            check_symmetric("spd_inverse", m, d, i)?;
            if !cholesky(m, d) {
                candle_core::bail!("spd_inverse: matrix {i} ({d}x{d}) is not positive definite");
            }
            out.extend(spd_inverse(m, d));
        }
        Ok((to_storage(out, s.dtype()), l.shape().clone()))
    }
}

/// log det A for symmetric positive-definite `a` (`[D, D]` → scalar, `[N, D, D]` → `[N]`),
/// differentiable. Errors (never NaN) when a matrix is not positive definite or not symmetric
/// (up to [`SYMMETRY_TOLERANCE`] relative to its largest diagonal entry).
///
/// Computed in f64 whatever the storage type. The gradient is the symmetric `A⁻¹`: for an input
/// built symmetrically (a covariance), the chain rule through both `a_ij` and `a_ji` gives the
/// exact derivative.
pub fn logdet(a: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op1(LogDet)
}

/// Inverse of symmetric positive-definite matrices (no gradient); same input checks as
/// [`logdet`].
pub fn spd_inv(a: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op1_no_bwd(&SpdInverse)
}

// ---------------------------------------------------------------------------------------------
// softmax
// ---------------------------------------------------------------------------------------------

/// log-softmax over `dim`, built from differentiable ops (the max shift is detached: it cancels).
pub fn log_softmax<Dim: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dim) -> Result<Tensor> {
    let m = x.max_keepdim(dim)?.detach();
    let z = x.broadcast_sub(&m)?;
    let lse = z.exp()?.sum_keepdim(dim)?.log()?;
    z.broadcast_sub(&lse)
}

/// softmax over `dim`, differentiable.
pub fn softmax<Dim: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dim) -> Result<Tensor> {
    log_softmax(x, dim)?.exp()
}

#[cfg(test)]
mod cholesky_tests {
    use super::{cholesky_in_place, gram_lower};

    /// `M Mᵀ + shift·I` for a deterministic `M` (`d × d`): symmetric positive definite.
    fn spd(d: usize, shift: f64) -> Vec<f64> {
        let m: Vec<f64> = (0..d * d).map(|i| ((i * 7 + 3) as f64).sin()).collect();
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                a[i * d + j] = (0..d).map(|k| m[i * d + k] * m[j * d + k]).sum::<f64>();
            }
            a[i * d + i] += shift;
        }
        a
    }

    #[test]
    fn blocked_factor_reproduces_the_matrix() {
        for d in [1usize, 2, 63, 64, 65, 130, 200] {
            let a = spd(d, 0.5);
            let mut l = a.clone();
            cholesky_in_place(&mut l, d).unwrap();
            let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for i in 0..d {
                for j in 0..=i {
                    let v: f64 = (0..=j).map(|k| l[i * d + k] * l[j * d + k]).sum();
                    assert!((v - a[i * d + j]).abs() <= 1e-12 * scale, "d={d} ({i},{j})");
                }
            }
        }
    }

    #[test]
    fn failure_names_the_first_bad_pivot() {
        // Leading 70×70 block positive definite, then a zero row/column at 70.
        let d = 100;
        let mut a = spd(d, 1.0);
        for k in 0..d {
            a[70 * d + k] = 0.0;
            a[k * d + 70] = 0.0;
        }
        assert_eq!(cholesky_in_place(&mut a, d), Err(70));
    }

    #[test]
    fn gram_lower_matches_the_naive_product() {
        for &(rows, k, ld) in &[
            (1usize, 1usize, 1usize),
            (5, 3, 4),
            (33, 70, 70),
            (130, 40, 48),
            (64, 1100, 1108),
        ] {
            let a: Vec<f64> = (0..rows * ld)
                .map(|i| ((i * 13 + 1) as f64).cos())
                .collect();
            let c = gram_lower(&a, rows, k, ld);
            for i in 0..rows {
                for j in 0..=i {
                    let v: f64 = (0..k).map(|t| a[i * ld + t] * a[j * ld + t]).sum();
                    assert!(
                        (v - c[i * rows + j]).abs() <= 1e-11 * (k as f64),
                        "{rows}x{k} ({i},{j})"
                    );
                }
            }
        }
    }
}
