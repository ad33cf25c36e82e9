//! Softmax: [`softmax`] and [`log_softmax`] as differentiable compositions of candle ops, and
//! the mean cross-entropy [`softmax_cross_entropy`] as one op with the closed-form gradient
//! `(softmax − onehot)/N` (CPU f32/f64).

use super::dispatch::use_fast_cpu;
use super::storage::contiguous_slice;
use crate::cpu::cross_entropy::{softmax_ce_bwd, softmax_ce_fwd};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

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
        && matches!(labels.dtype(), DType::U32 | DType::U8 | DType::I64)
        && labels.device().is_cpu()
        && use_fast_cpu(&[logits]);
    if !ok {
        return Ok(None);
    }
    logits
        .contiguous()?
        .apply_op2(&labels.contiguous()?, SoftmaxCe { c })
        .map(Some)
}
