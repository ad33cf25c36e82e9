//! The device-generic paths of the convolution and max-pooling ops: compositions of candle
//! tensor ops that every backend implements, taken off the CPU (or when forced, see
//! `dispatch.rs`).
//!
//! * Convolution: the forward value is candle's `conv2d` on detached operands (its forward is
//!   right for any H×W; per-axis padding, stride and dilation are made uniform by explicit zero
//!   padding, a dilated kernel and row / column selection). The gradients come from a hook op
//!   ([`ConvGradHook`]) whose forward copies that value and whose backward is again a pair of
//!   forward convolutions (candle's own conv2d backward is wrong for non-square inputs):
//!   `∂x` = the full correlation of the stride-dilated gradient with the flipped kernel, padded
//!   back to the padded input size (rows / columns no window reaches get 0) and cropped;
//!   `∂w` = the correlation of the padded input with the gradient as kernel (channels and batch
//!   swapped, the roles of stride and dilation exchanged), cut to `kh × kw`.
//! * Max-pooling: the `kh·kw` candidates of every window gathered by `index_select` from the
//!   −∞-padded input, the winner chosen as the CPU kernel does (the first NaN, else the first
//!   maximum among the cells inside the input, row-major), and taken with `gather`, whose
//!   backward sends the gradient to exactly that cell.

use super::dispatch::copy_storage;
use crate::window::Window;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp3, DType, Device, Layout, MetalStorage, Result, Shape, Tensor,
};

/// The indices `f(0), …, f(n − 1)` as a u32 tensor on `dev`.
fn steps(n: usize, f: impl Fn(usize) -> usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<u32> = (0..n).map(|i| f(i) as u32).collect();
    Tensor::from_vec(v, n, dev)
}

/// Inserts `d − 1` zeros between consecutive entries along `axis` (length `n → d·(n−1)+1`).
fn dilate(t: &Tensor, axis: usize, d: usize) -> Result<Tensor> {
    if d == 1 {
        return Ok(t.clone());
    }
    let n = t.dim(axis)?;
    let mut dims = t.dims().to_vec();
    dims[axis] = n * d;
    t.unsqueeze(axis + 1)?
        .pad_with_zeros(axis + 1, 0, d - 1)?
        .reshape(dims)?
        .narrow(axis, 0, d * (n - 1) + 1)
}

/// The entries `0, s, 2s, …` (`n` of them) along `axis`.
fn subsample(t: &Tensor, axis: usize, s: usize, n: usize) -> Result<Tensor> {
    if s == 1 && t.dim(axis)? == n {
        return Ok(t.clone());
    }
    t.index_select(&steps(n, |i| i * s, t.device())?, axis)
}

/// Forward-only convolution `x: [B, C, H, W] ⋆ w: [O, C, kh, kw]` with per-axis geometry, on
/// candle's conv2d (which takes one padding, stride and dilation for both axes).
fn conv_value(x: &Tensor, w: &Tensor, win: &Window) -> Result<Tensor> {
    let (h, wd) = (x.dim(2)?, x.dim(3)?);
    let (ho, wo) = win.out_hw(h, wd)?;
    let x = x
        .pad_with_zeros(2, win.ph, win.ph)?
        .pad_with_zeros(3, win.pw, win.pw)?;
    let (w, dilation) = if win.dh == win.dw {
        (w.clone(), win.dh)
    } else {
        (dilate(&dilate(w, 2, win.dh)?, 3, win.dw)?, 1)
    };
    let stride = if win.sh == win.sw { win.sh } else { 1 };
    let y = x
        .contiguous()?
        .conv2d(&w.contiguous()?, 0, stride, dilation, 1)?;
    if win.sh == win.sw {
        return Ok(y);
    }
    subsample(&subsample(&y, 2, win.sh, ho)?, 3, win.sw, wo)
}

/// `∂L/∂x` of a convolution for the output gradient `g: [B, O, Ho, Wo]`.
fn conv_grad_input(g: &Tensor, w: &Tensor, win: &Window, h: usize, wd: usize) -> Result<Tensor> {
    let (kh, kw) = (w.dim(2)?, w.dim(3)?);
    let dev = w.device();
    let gd = dilate(&dilate(g, 2, win.sh)?, 3, win.sw)?;
    let flipped = w
        .index_select(&steps(kh, |i| kh - 1 - i, dev)?, 2)?
        .index_select(&steps(kw, |i| kw - 1 - i, dev)?, 3)?
        .transpose(0, 1)?;
    let full = Window {
        kh,
        kw,
        sh: 1,
        sw: 1,
        ph: win.dh * (kh - 1),
        pw: win.dw * (kw - 1),
        dh: win.dh,
        dw: win.dw,
    };
    // Gradient with respect to the padded input, rows / columns 0..L reached by some window.
    let gp = conv_value(&gd, &flipped, &full)?;
    let (hp, wp) = (h + 2 * win.ph, wd + 2 * win.pw);
    gp.pad_with_zeros(2, 0, hp - gp.dim(2)?)?
        .pad_with_zeros(3, 0, wp - gp.dim(3)?)?
        .narrow(2, win.ph, h)?
        .narrow(3, win.pw, wd)
}

/// `∂L/∂w` of a convolution for the output gradient `g: [B, O, Ho, Wo]`.
fn conv_grad_weight(x: &Tensor, g: &Tensor, win: &Window, kh: usize, kw: usize) -> Result<Tensor> {
    let (ho, wo) = (g.dim(2)?, g.dim(3)?);
    let xp = x
        .pad_with_zeros(2, win.ph, win.ph)?
        .pad_with_zeros(3, win.pw, win.pw)?
        .transpose(0, 1)?;
    let swapped = Window {
        kh: ho,
        kw: wo,
        sh: win.dh,
        sw: win.dw,
        ph: 0,
        pw: 0,
        dh: win.sh,
        dw: win.sw,
    };
    conv_value(&xp, &g.transpose(0, 1)?, &swapped)? // [C, O, ≥kh, ≥kw]
        .narrow(2, 0, kh)?
        .narrow(3, 0, kw)?
        .transpose(0, 1)?
        .contiguous()
}

/// `(y, x, w) → y` (a copy); the backward gives `x` and `w` the convolution's gradients.
struct ConvGradHook {
    win: Window,
}

impl CustomOp3 for ConvGradHook {
    fn name(&self) -> &'static str {
        "modbal-conv2d-generic"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_storage(s1, l1)
    }
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        copy_storage(s1, l1)
    }
    fn metal_fwd(
        &self,
        s1: &MetalStorage,
        l1: &Layout,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        copy_storage(s1, l1)
    }
    fn bwd(
        &self,
        _y: &Tensor,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let gx = if x.track_op() {
            Some(conv_grad_input(
                &g,
                &w.detach(),
                &self.win,
                x.dim(2)?,
                x.dim(3)?,
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(conv_grad_weight(
                &x.detach(),
                &g,
                &self.win,
                w.dim(2)?,
                w.dim(3)?,
            )?)
        } else {
            None
        };
        Ok((None, gx, gw))
    }
}

/// Differentiable convolution (no bias, no ReLU) from candle tensor ops, on any device.
pub(super) fn conv2d(x: &Tensor, w: &Tensor, win: Window) -> Result<Tensor> {
    let y = conv_value(&x.detach(), &w.detach(), &win)?;
    y.apply_op3(x, w, ConvGradHook { win })
}

/// `x` padded by `p` cells of −∞ on both sides of `axis`.
fn pad_neg_inf(x: &Tensor, axis: usize, p: usize) -> Result<Tensor> {
    if p == 0 {
        return Ok(x.clone());
    }
    let mut dims = x.dims().to_vec();
    dims[axis] = p;
    let pad = Tensor::full(f64::NEG_INFINITY, dims, x.device())?.to_dtype(x.dtype())?;
    Tensor::cat(&[&pad, x, &pad], axis)
}

/// The window candidates of `t: [B, C, Hp, Wp]` (already padded): `[B, C, Ho, Wo, kh·kw]`, the
/// last axis in row-major window order.
fn candidates(t: &Tensor, win: &Window, ho: usize, wo: usize) -> Result<Tensor> {
    let (b, c) = (t.dim(0)?, t.dim(1)?);
    let (kh, kw) = (win.kh, win.kw);
    let dev = t.device();
    let rows = steps(kh * ho, |i| (i / ho) * win.dh + (i % ho) * win.sh, dev)?;
    let cols = steps(kw * wo, |i| (i / wo) * win.dw + (i % wo) * win.sw, dev)?;
    t.index_select(&rows, 2)?
        .index_select(&cols, 3)?
        .reshape((b, c, kh, ho, kw, wo))?
        .permute((0, 1, 3, 5, 2, 4))?
        .contiguous()?
        .reshape((b, c, ho, wo, kh * kw))
}

/// Max-pooling with the CPU kernel's semantics from candle tensor ops, on any device.
pub(super) fn max_pool2d(x: &Tensor, win: Window) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (ho, wo) = win.out_hw(h, w)?;
    let dev = x.device();
    let xp = pad_neg_inf(&pad_neg_inf(x, 2, win.ph)?, 3, win.pw)?;
    let cand = candidates(&xp, &win, ho, wo)?;
    let k = win.kh * win.kw;
    // Which candidates lie inside the input (padding never wins, even against −∞).
    let inside = Tensor::ones((1, 1, h, w), DType::U8, dev)?
        .pad_with_zeros(2, win.ph, win.ph)?
        .pad_with_zeros(3, win.pw, win.pw)?;
    let inside = candidates(&inside, &win, ho, wo)?;
    let c = cand.detach();
    let order = Tensor::arange(0u32, k as u32, dev)?.reshape((1, 1, 1, 1, k))?;
    let order = order.broadcast_as(c.shape())?;
    let none = Tensor::full(k as u32, c.shape(), dev)?;
    let first = |mask: &Tensor| mask.where_cond(&order, &none)?.min_keepdim(4);
    let at_max = first(&c.broadcast_eq(&c.max_keepdim(4)?)?.broadcast_mul(&inside)?)?;
    let at_nan = first(&c.ne(&c)?)?;
    let has_nan = at_nan.lt(&none.narrow(4, 0, 1)?)?;
    let idx = has_nan.where_cond(&at_nan, &at_max)?;
    cand.gather(&idx, 4)?.squeeze(4)
}
