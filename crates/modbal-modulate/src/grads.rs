//! Helpers shared by the gradient modulators: parameter groups, f64 reductions over gradient
//! tensors, building tensors from f64 buffers. (The OGM / IBML true-class score lives in
//! [`modbal_core::stats`], re-exported here as [`crate::true_class_score`].)

use crate::error::{input_err, Result};
use candle_core::{DType, Tensor, Var};
use modbal_tensors::params::in_group;

/// The entries of `params` that belong to the group `prefix` (a dotted name prefix such as
/// `encoder.audio`; see [`modbal_tensors::params::in_group`]), in the order of `params`.
pub fn group_vars<'a>(params: &'a [(String, Var)], prefix: &str) -> Vec<&'a (String, Var)> {
    params.iter().filter(|(n, _)| in_group(n, prefix)).collect()
}

/// All values of `t` as f64, flattened in row-major order.
pub(crate) fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// A tensor with the values `v` (row-major), the shape of `like`, and `like`'s dtype and device.
pub(crate) fn tensor_like(v: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    Ok(
        Tensor::from_vec(v, like.shape(), &candle_core::Device::Cpu)?
            .to_dtype(like.dtype())?
            .to_device(like.device())?,
    )
}

/// ⟨a, b⟩ accumulated in f64.
pub(crate) fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        return input_err(format!(
            "cannot take the inner product of gradients with shapes {:?} and {:?}",
            a.dims(),
            b.dims()
        ));
    }
    Ok(a.to_dtype(DType::F64)?
        .mul(&b.to_dtype(DType::F64)?)?
        .sum_all()?
        .to_scalar::<f64>()?)
}

/// ‖a‖² accumulated in f64.
pub(crate) fn sq_norm(a: &Tensor) -> Result<f64> {
    Ok(a.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?)
}

/// Unbiased (n − 1) standard deviation of `v`, as `torch.std()`; 0 when `v` has fewer than two
/// elements (where torch returns NaN).
pub(crate) fn unbiased_std(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
    (ss / (n - 1) as f64).sqrt()
}

/// Error unless `v` has `expected` entries; `what` names the argument.
pub(crate) fn check_len(what: &str, got: usize, expected: usize, of: &str) -> Result<()> {
    if got != expected {
        return input_err(format!(
            "{what} has {got} entries but there are {expected} {of}"
        ));
    }
    Ok(())
}

/// Error unless every value is finite; `what` names the argument.
pub(crate) fn check_finite(what: &str, v: &[f64]) -> Result<()> {
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return input_err(format!("{what}[{i}] = {x} is not finite"));
    }
    Ok(())
}
