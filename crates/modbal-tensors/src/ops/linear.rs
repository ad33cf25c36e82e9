//! The fully connected layer [`linear`]: `x Wᵀ + b` (+ ReLU) as one op on CPU f32/f64 whose
//! backward is two gemm calls and a column sum; candle's composition elsewhere.

use super::dispatch::{strict_relu, use_fast_cpu};
use super::relu::ReluMask;
use super::storage::{contiguous_slice, float_dispatch, float_dispatch2};
use crate::cpu::linear::{col_sums, linear_bwd_input, linear_bwd_weight, linear_fwd};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

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
    let mut operands = vec![x, w];
    operands.extend(b);
    use_fast_cpu(&operands)
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
        strict_relu(&y)
    } else {
        Ok(y)
    }
}
