//! Fused "scale + Gaussian noise" and salt-and-pepper corruption with the counter-based RNG.
//!
//! * [`scale_add_noise`]: `out_i = k·x_i + σ·z_i`, `z_i = normal(seed, offset + i)`
//!   ([`crate::rng`]): OGM-GE's GE term on a gradient (`k` = the modality's coefficient,
//!   σ = std(g) + 1e-8) and IBML TCM's input noise (`k = 1`, σ = the batch std) in one pass.
//! * [`salt_pepper`]: `out_i = lo` if `u_i < ε/2`, `hi` if `ε/2 ≤ u_i < ε`, else `x_i`, with
//!   `u_i = salt_pepper_uniform(seed, offset + i)` — the thresholds of
//!   `modbal_data::noise::corrupt` (CAL §4.3's salt-and-pepper).
//!
//! `i` is the element's row-major index in the (contiguous) tensor. Because each element's draw
//! depends only on `(seed, offset + i)`, the result is the same for any chunking, thread count or
//! device (up to the device math library's `ln`/`cos`, see [`crate::rng`]), and `offset` lets a
//! caller draw consecutive, non-overlapping blocks from one seed (e.g. `offset` = the number of
//! elements drawn before).
//!
//! Gradients: `scale_add_noise` is differentiable in x (`∂out/∂x = k`); `salt_pepper` is a data
//! corruption without backward.

use crate::rng::{normal_f32, normal_f64, salt_pepper_uniform};
use crate::storage::{contiguous_slice, unsupported_dtype};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per rayon task of the CPU paths.
pub const CPU_CHUNK: usize = 16 * 1024;

/// `k·x + σ·z` with `z_i = normal(seed, offset + i)`; f32 or f64, any shape, any device.
pub fn scale_add_noise(x: &Tensor, k: f64, sigma: f64, seed: u64, offset: u64) -> Result<Tensor> {
    check_finite_param("scale_add_noise", "k", k)?;
    check_finite_param("scale_add_noise", "sigma", sigma)?;
    x.contiguous()?.apply_op1(ScaleAddNoise {
        k,
        sigma,
        seed,
        offset,
    })
}

/// `N(0, 1)` draws `z_i = normal(seed, offset + i)` of the given shape, f32 or f64.
pub fn standard_normal<S: Into<Shape>>(
    shape: S,
    dtype: candle_core::DType,
    device: &candle_core::Device,
    seed: u64,
    offset: u64,
) -> Result<Tensor> {
    let zeros = Tensor::zeros(shape, dtype, device)?;
    zeros.apply_op1_no_bwd(&ScaleAddNoise {
        k: 0.0,
        sigma: 1.0,
        seed,
        offset,
    })
}

/// Salt-and-pepper corruption at rate `eps ∈ [0, 1]` to the values `lo` (pepper, probability
/// ε/2) and `hi` (salt, probability ε/2); f32 or f64, any shape, any device. No gradient.
pub fn salt_pepper(
    x: &Tensor,
    eps: f64,
    lo: f64,
    hi: f64,
    seed: u64,
    offset: u64,
) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&eps) {
        candle_core::bail!("salt_pepper: eps must be in [0, 1], got {eps}");
    }
    check_finite_param("salt_pepper", "lo", lo)?;
    check_finite_param("salt_pepper", "hi", hi)?;
    x.contiguous()?.apply_op1_no_bwd(&SaltPepper {
        eps,
        lo,
        hi,
        seed,
        offset,
    })
}

fn check_finite_param(op: &str, name: &str, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        candle_core::bail!("{op}: {name} must be finite, got {v}")
    }
}

/// The op behind [`scale_add_noise`] (input must be contiguous).
#[derive(Clone, Copy, Debug)]
pub struct ScaleAddNoise {
    pub k: f64,
    pub sigma: f64,
    pub seed: u64,
    pub offset: u64,
}

impl ScaleAddNoise {
    /// The f32 CPU path with an explicit task size (the result does not depend on it).
    pub fn cpu_f32(&self, x: &[f32], chunk: usize) -> Vec<f32> {
        let (k, sigma) = (self.k as f32, self.sigma as f32);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(chunk.max(1))
            .zip(x.par_chunks(chunk.max(1)))
            .enumerate()
            .for_each(|(c, (o, x))| {
                let base = self.offset.wrapping_add((c * chunk.max(1)) as u64);
                for (i, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                    *o = k * x + sigma * normal_f32(self.seed, base.wrapping_add(i as u64));
                }
            });
        out
    }

    /// The f64 CPU path with an explicit task size (the result does not depend on it).
    pub fn cpu_f64(&self, x: &[f64], chunk: usize) -> Vec<f64> {
        let (k, sigma) = (self.k, self.sigma);
        let mut out = vec![0f64; x.len()];
        out.par_chunks_mut(chunk.max(1))
            .zip(x.par_chunks(chunk.max(1)))
            .enumerate()
            .for_each(|(c, (o, x))| {
                let base = self.offset.wrapping_add((c * chunk.max(1)) as u64);
                for (i, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                    *o = k * x + sigma * normal_f64(self.seed, base.wrapping_add(i as u64));
                }
            });
        out
    }
}

impl CustomOp1 for ScaleAddNoise {
    fn name(&self) -> &'static str {
        "modbal-scale-add-noise"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.cpu_f32(contiguous_slice(v, l)?, CPU_CHUNK)),
            CpuStorage::F64(v) => CpuStorage::F64(self.cpu_f64(contiguous_slice(v, l)?, CPU_CHUNK)),
            _ => return Err(unsupported_dtype(self.name(), s.dtype())),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::scale_add_noise_fwd((self.k, self.sigma), (self.seed, self.offset), s, l)
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((grad * self.k)?))
    }
}

/// The op behind [`salt_pepper`] (input must be contiguous).
#[derive(Clone, Copy, Debug)]
pub struct SaltPepper {
    pub eps: f64,
    pub lo: f64,
    pub hi: f64,
    pub seed: u64,
    pub offset: u64,
}

impl SaltPepper {
    /// The CPU path with an explicit task size (the result does not depend on it).
    pub fn cpu<T: Copy + Send + Sync>(&self, x: &[T], lo: T, hi: T, chunk: usize) -> Vec<T> {
        let half = self.eps / 2.0;
        let mut out = x.to_vec();
        out.par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(c, o)| {
                let base = self.offset.wrapping_add((c * chunk.max(1)) as u64);
                for (i, o) in o.iter_mut().enumerate() {
                    let u = salt_pepper_uniform(self.seed, base.wrapping_add(i as u64));
                    if u < half {
                        *o = lo;
                    } else if u < self.eps {
                        *o = hi;
                    }
                }
            });
        out
    }
}

impl CustomOp1 for SaltPepper {
    fn name(&self) -> &'static str {
        "modbal-salt-pepper"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.cpu(
                contiguous_slice(v, l)?,
                self.lo as f32,
                self.hi as f32,
                CPU_CHUNK,
            )),
            CpuStorage::F64(v) => {
                CpuStorage::F64(self.cpu(contiguous_slice(v, l)?, self.lo, self.hi, CPU_CHUNK))
            }
            _ => return Err(unsupported_dtype(self.name(), s.dtype())),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::salt_pepper_fwd((self.eps, self.lo, self.hi), (self.seed, self.offset), s, l)
    }
}
