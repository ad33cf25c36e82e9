//! [`logdet`]: log det A of symmetric positive-definite matrices (Cholesky, in f64) with backward
//! ∂ log det A / ∂A = A⁻¹, and [`spd_inv`]; both check the input for symmetry
//! ([`SYMMETRY_TOLERANCE`]) and positive definiteness and error instead of returning NaN.
//! Off the CPU (or forced) the matrices make a round trip to the host (they are small: D ≤ 512),
//! through candle's differentiable `to_device`.

use super::dispatch::use_fast_cpu;
use super::linalg::{cholesky, spd_inverse};
use super::storage::contiguous_slice;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

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
    if !use_fast_cpu(&[a]) {
        // Generic path: a host round trip (`to_device` is differentiable), then the CPU op.
        let host = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        return host
            .contiguous()?
            .apply_op1(LogDet)?
            .to_dtype(a.dtype())?
            .to_device(a.device());
    }
    a.contiguous()?.apply_op1(LogDet)
}

/// Inverse of symmetric positive-definite matrices (no gradient); same input checks as
/// [`logdet`].
pub fn spd_inv(a: &Tensor) -> Result<Tensor> {
    if !use_fast_cpu(&[a]) {
        let host = a.detach().to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        return host
            .contiguous()?
            .apply_op1_no_bwd(&SpdInverse)?
            .to_dtype(a.dtype())?
            .to_device(a.device());
    }
    a.contiguous()?.apply_op1_no_bwd(&SpdInverse)
}
