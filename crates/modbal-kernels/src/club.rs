//! The CLUB Gaussian log-likelihood matrix as one op.
//!
//! For a diagonal Gaussian q(y|x_i) = N(μ_i, diag exp(lv_i)) and samples y_j, D = y's dimension:
//!
//! ```text
//! L_ij = log q(y_j | x_i) = −Σ_d (y_jd − μ_id)² / (2 exp(lv_id)) − ½ Σ_d lv_id − (D/2) log 2π
//! ```
//!
//! the convention of `modbal_info::Club::log_prob_matrix` (a true log-density, with the constant;
//! vCLUB, UDI eq 8, is `mean_i L_ii − mean_ij L_ij`). modbal-info builds it from two matmuls on
//! centred y; this op computes every entry directly, `O(N·M·D)` time and `O(N·M)` memory, in the
//! order `w_id = ½ exp(−lv_id)`, `acc += w_id·δ·δ` over `d = 0..D`, `L_ij = −acc − c_i` with
//! `c_i = ½ Σ_d lv_id + D·½ log 2π` — the same sequence in Rust (CPU) and CUDA (GPU).
//!
//! Backward (`∂/∂μ`, `∂/∂lv`, `∂/∂y`) is three matmul formulas on y centred on its mean:
//! with `G = ∂loss/∂L` `[N, M]`, `s_i = Σ_j G_ij`, `w = ½ exp(−lv)`, `c = y − ȳ`, `m = μ − ȳ`,
//!
//! ```text
//! ∂μ  = 2 w ⊙ (G c − s ⊙ m)
//! ∂lv = w ⊙ (G c² − 2 m ⊙ (G c) + s ⊙ m²) − ½ s
//! ∂y  = −2 (c ⊙ (Gᵀ w) − Gᵀ (w ⊙ m))
//! ```

use crate::storage::{contiguous_slice, unsupported_dtype};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `½ log 2π`.
pub const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// `L [N, M]` from `mu [N, D]`, `logvar [N, D]`, `y [M, D]` (same float dtype f32/f64, same
/// device). Differentiable in all three. See the [module docs](self).
pub fn club_log_prob_matrix(mu: &Tensor, logvar: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (n, d) = mu.dims2()?;
    let (n2, d2) = logvar.dims2()?;
    let (_, d3) = y.dims2()?;
    if n != n2 || d != d2 || d != d3 {
        candle_core::bail!(
            "club_log_prob_matrix: mu [N, D], logvar [N, D] and y [M, D] expected, got mu {:?}, \
             logvar {:?}, y {:?}",
            mu.dims(),
            logvar.dims(),
            y.dims()
        );
    }
    if mu.dtype() != logvar.dtype() || mu.dtype() != y.dtype() {
        candle_core::bail!(
            "club_log_prob_matrix: one dtype expected, got mu {:?}, logvar {:?}, y {:?}",
            mu.dtype(),
            logvar.dtype(),
            y.dtype()
        );
    }
    mu.contiguous()?
        .apply_op3(&logvar.contiguous()?, &y.contiguous()?, ClubLogProbMatrix)
}

/// The op behind [`club_log_prob_matrix`] (inputs must be contiguous).
#[derive(Clone, Copy, Debug)]
pub struct ClubLogProbMatrix;

/// Rows of `L` per rayon task.
const ROWS_PER_TASK: usize = 8;

macro_rules! club_cpu {
    ($t:ty, $mu:expr, $lv:expr, $y:expr, $n:expr, $m:expr, $d:expr) => {{
        let (mu, lv, y, n, m, d): (&[$t], &[$t], &[$t], usize, usize, usize) =
            ($mu, $lv, $y, $n, $m, $d);
        let mut out = vec![0 as $t; n * m];
        let constant = (d as f64 * HALF_LN_2PI) as $t;
        out.par_chunks_mut(ROWS_PER_TASK * m.max(1))
            .enumerate()
            .for_each(|(task, rows)| {
                let mut w = vec![0 as $t; d];
                for (r, row) in rows.chunks_mut(m.max(1)).enumerate() {
                    let i = task * ROWS_PER_TASK + r;
                    let mu_i = &mu[i * d..(i + 1) * d];
                    let mut s = 0 as $t;
                    for (wd, &v) in w.iter_mut().zip(&lv[i * d..(i + 1) * d]) {
                        *wd = 0.5 * (-v).exp();
                        s += v;
                    }
                    let c = 0.5 * s + constant;
                    for (j, o) in row.iter_mut().enumerate() {
                        let y_j = &y[j * d..(j + 1) * d];
                        let mut acc = 0 as $t;
                        for e in 0..d {
                            let diff = y_j[e] - mu_i[e];
                            acc += w[e] * diff * diff;
                        }
                        *o = -acc - c;
                    }
                }
            });
        out
    }};
}

impl CustomOp3 for ClubLogProbMatrix {
    fn name(&self) -> &'static str {
        "modbal-club-log-prob-matrix"
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
        let (n, d) = l1.shape().dims2()?;
        let (m, _) = l3.shape().dims2()?;
        let shape = Shape::from((n, m));
        match (s1, s2, s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                let (a, b, c) = (
                    contiguous_slice(a, l1)?,
                    contiguous_slice(b, l2)?,
                    contiguous_slice(c, l3)?,
                );
                Ok((CpuStorage::F32(club_cpu!(f32, a, b, c, n, m, d)), shape))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                let (a, b, c) = (
                    contiguous_slice(a, l1)?,
                    contiguous_slice(b, l2)?,
                    contiguous_slice(c, l3)?,
                );
                Ok((CpuStorage::F64(club_cpu!(f64, a, b, c, n, m, d)), shape))
            }
            _ => Err(unsupported_dtype(self.name(), s1.dtype())),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::club_fwd(s1, l1, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        mu: &Tensor,
        logvar: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let w = (logvar.neg()?.exp()? * 0.5)?;
        let y_mean = y.mean_keepdim(0)?;
        let c = y.broadcast_sub(&y_mean)?;
        let m = mu.broadcast_sub(&y_mean)?;
        let s = grad.sum_keepdim(1)?; // [N, 1]
        let gc = grad.matmul(&c)?; // [N, D]
        let d_mu = ((gc.clone() - m.broadcast_mul(&s)?)? * &w)? * 2.0;
        let gc2 = grad.matmul(&c.sqr()?)?;
        let quad = ((gc2 - (m.clone() * &gc)? * 2.0)? + m.sqr()?.broadcast_mul(&s)?)?;
        let d_lv = (quad * &w)?.broadcast_sub(&(s * 0.5)?)?;
        let gt = grad.t()?;
        let d_y = ((c * gt.matmul(&w)?)? - gt.matmul(&(w * m)?)?)? * -2.0;
        Ok((Some(d_mu?), Some(d_lv), Some(d_y?)))
    }
}
