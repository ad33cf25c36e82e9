//! Training-mode batch normalisation ([`batch_norm_train`], optionally fused with ReLU) as one
//! op with the closed-form backward through the batch statistics (CPU f32/f64).

use super::dispatch::{strict_relu, use_fast_cpu};
use super::storage::contiguous_slice;
use crate::cpu::channel::{bn_bwd_input, bn_bwd_sums, channel_affine, channel_stats};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};

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
/// running-statistics update. One op on CPU f32/f64 (see [`batch_norm_train_supported`]); elsewhere
/// (or when forced, see [`super::force_generic`]) the same formula as a composition of candle
/// ops, the statistics computed in `x`'s dtype.
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
    if !use_fast_cpu(&[x, weight, bias]) {
        return batch_norm_generic(x, weight, bias, eps, relu);
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

/// The device-generic path of [`batch_norm_train`]: `(x − μ)·(weight/√(σ² + eps)) + bias` with
/// the batch statistics as differentiable tensor ops (then ReLU); `μ` and `σ²` returned detached.
fn batch_norm_generic(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = weight.dim(0)?;
    let (xc, bshape) = if x.rank() == 4 {
        (x.transpose(0, 1)?.flatten_from(1)?, vec![1, c, 1, 1])
    } else {
        (x.t()?, vec![1, c])
    };
    let mean = xc.mean(1)?; // [C]
    let var = xc.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(1)?; // biased
    let scale = ((var.clone() + eps)?.sqrt()?.recip()? * weight)?;
    let y = x
        .broadcast_sub(&mean.reshape(bshape.as_slice())?)?
        .broadcast_mul(&scale.reshape(bshape.as_slice())?)?
        .broadcast_add(&bias.reshape(bshape.as_slice())?)?;
    let y = if relu { strict_relu(&y)? } else { y };
    Ok((y, mean.detach(), var.detach()))
}

/// Whether [`batch_norm_train`] runs as the fused CPU op for `x` (a CPU f32/f64 tensor, the
/// generic paths not forced; see [`super::use_fast_cpu`]).
pub fn batch_norm_train_supported(x: &Tensor) -> bool {
    use_fast_cpu(&[x])
}
