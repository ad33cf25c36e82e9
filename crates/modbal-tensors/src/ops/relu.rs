//! The fused residual connection [`add_relu`] (`relu(a + b)` as one op) and the ReLU backward
//! mask op that it, the fused convolutions and the fused linear layer share.

use super::dispatch::{strict_relu, use_fast_cpu};
use super::storage::{contiguous_slice, float_dispatch2};
use crate::cpu::elementwise::{add_relu_fwd, relu_mask};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

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
pub(super) struct ReluMask;

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
    if use_fast_cpu(&[a, b]) {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        strict_relu(&(a + b)?)
    }
}
