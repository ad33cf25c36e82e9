//! CUDA paths (feature `cuda`): `src/kernels.cu` compiled once per process with nvrtc
//! (`--fmad=false`, so products and sums round as in the Rust CPU paths), loaded once per device
//! through candle's custom-module cache, launched with cudarc's builder API.

use crate::source::CUDA_SOURCE;
use crate::storage::unsupported_dtype;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use std::sync::OnceLock;

/// Name of the module in candle's per-device custom-module cache.
const MODULE: &str = "modbal_kernels";

/// Threads per block of the element-wise kernels.
const BLOCK: u32 = 256;

/// The PTX of [`CUDA_SOURCE`], compiled on first use (an nvrtc error is kept and reported on
/// every call).
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let compiled = PTX.get_or_init(|| {
        let opts = CompileOptions {
            fmad: Some(false),
            name: Some("modbal_kernels.cu".into()),
            ..Default::default()
        };
        compile_ptx_with_opts(CUDA_SOURCE, opts)
            .map(|p| p.to_src())
            .map_err(|e| format!("nvrtc could not compile modbal-kernels' kernels.cu: {e:?}"))
    });
    match compiled {
        Ok(p) => Ok(p.as_str()),
        Err(e) => Err(candle_core::Error::Cuda(e.clone().into())),
    }
}

fn suffix(dtype: DType, op: &str) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F64 => Ok("f64"),
        other => Err(unsupported_dtype(op, other)),
    }
}

/// An element-wise launch: grid-stride loops, at most 2¹⁶ blocks.
fn elementwise_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn contiguous_start(l: &Layout, op: &str) -> Result<usize> {
    match l.contiguous_offsets() {
        Some((a, _)) => Ok(a),
        None => candle_core::bail!("{op}: non-contiguous input {l:?}"),
    }
}

/// `out = k·x + σ·z` on the device (the parameters of `noise::ScaleAddNoise`).
pub(crate) fn scale_add_noise_fwd(
    (k, sigma): (f64, f64),
    (seed, offset): (u64, u64),
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(
        s: &CudaStorage,
        start: usize,
        n: usize,
        k: T,
        sigma: T,
        (seed, offset): (u64, u64),
        name: &str,
    ) -> Result<CudaStorage> {
        let dev: &CudaDevice = s.device();
        let x = s.as_cuda_slice::<T>()?.slice(start..start + n);
        // SAFETY: every element is written by the kernel before it is read.
        let out: CudaSlice<T> = unsafe { dev.alloc::<T>(n)? };
        if n > 0 {
            let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
            let n64 = n as u64;
            let mut b = func.builder();
            b.arg(&x).arg(&out).arg(&n64).arg(&k).arg(&sigma);
            b.arg(&seed).arg(&offset);
            // SAFETY: argument types and order match `scale_add_noise_*` in kernels.cu.
            unsafe { b.launch(elementwise_cfg(n)) }.w()?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
    let start = contiguous_start(l, "scale_add_noise")?;
    let n = l.shape().elem_count();
    let name = format!("scale_add_noise_{}", suffix(s.dtype(), "scale_add_noise")?);
    let out = match s.dtype() {
        DType::F32 => run(s, start, n, k as f32, sigma as f32, (seed, offset), &name)?,
        _ => run(s, start, n, k, sigma, (seed, offset), &name)?,
    };
    Ok((out, l.shape().clone()))
}

/// Salt-and-pepper on the device (the parameters of `noise::SaltPepper`).
pub(crate) fn salt_pepper_fwd(
    (eps, lo, hi): (f64, f64, f64),
    (seed, offset): (u64, u64),
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(
        s: &CudaStorage,
        start: usize,
        n: usize,
        eps: f64,
        (lo, hi): (T, T),
        (seed, offset): (u64, u64),
        name: &str,
    ) -> Result<CudaStorage> {
        let dev: &CudaDevice = s.device();
        let x = s.as_cuda_slice::<T>()?.slice(start..start + n);
        // SAFETY: every element is written by the kernel before it is read.
        let out: CudaSlice<T> = unsafe { dev.alloc::<T>(n)? };
        if n > 0 {
            let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
            let (n64, half_eps) = (n as u64, eps / 2.0);
            let mut b = func.builder();
            b.arg(&x).arg(&out).arg(&n64).arg(&half_eps).arg(&eps);
            b.arg(&lo).arg(&hi).arg(&seed).arg(&offset);
            // SAFETY: argument types and order match `salt_pepper_*` in kernels.cu.
            unsafe { b.launch(elementwise_cfg(n)) }.w()?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
    let start = contiguous_start(l, "salt_pepper")?;
    let n = l.shape().elem_count();
    let name = format!("salt_pepper_{}", suffix(s.dtype(), "salt_pepper")?);
    let out = match s.dtype() {
        DType::F32 => run(
            s,
            start,
            n,
            eps,
            (lo as f32, hi as f32),
            (seed, offset),
            &name,
        )?,
        _ => run(s, start, n, eps, (lo, hi), (seed, offset), &name)?,
    };
    Ok((out, l.shape().clone()))
}

/// The CLUB log-likelihood matrix on the device: `club_prep_*` (w, c per row), then the tiled
/// `club_llmat_*`.
pub(crate) fn club_fwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(
        s: [&CudaStorage; 3],
        l: [&Layout; 3],
        (n, m, d): (usize, usize, usize),
        sfx: &str,
    ) -> Result<CudaStorage> {
        let dev: &CudaDevice = s[0].device();
        let op = "club_log_prob_matrix";
        let mu = s[0].as_cuda_slice::<T>()?;
        let lv = s[1].as_cuda_slice::<T>()?;
        let y = s[2].as_cuda_slice::<T>()?;
        let (a, b, c) = (
            contiguous_start(l[0], op)?,
            contiguous_start(l[1], op)?,
            contiguous_start(l[2], op)?,
        );
        let (mu, lv, y) = (
            mu.slice(a..a + n * d),
            lv.slice(b..b + n * d),
            y.slice(c..c + m * d),
        );
        // SAFETY: every element is written by the kernels before it is read.
        let out: CudaSlice<T> = unsafe { dev.alloc::<T>(n * m)? };
        if n == 0 || m == 0 {
            return Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()));
        }
        let w: CudaSlice<T> = unsafe { dev.alloc::<T>(n * d)? };
        let cst: CudaSlice<T> = unsafe { dev.alloc::<T>(n)? };
        let (n32, m32, d32) = (n as u32, m as u32, d as u32);
        let prep = dev.get_or_load_custom_func(&format!("club_prep_{sfx}"), MODULE, ptx()?)?;
        let mut bp = prep.builder();
        bp.arg(&lv).arg(&w).arg(&cst).arg(&n32).arg(&d32);
        let cfg = LaunchConfig {
            grid_dim: (n32.div_ceil(128), 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types and order match `club_prep_*` in kernels.cu.
        unsafe { bp.launch(cfg) }.w()?;
        let mat = dev.get_or_load_custom_func(&format!("club_llmat_{sfx}"), MODULE, ptx()?)?;
        let mut bm = mat.builder();
        bm.arg(&mu).arg(&w).arg(&cst).arg(&y).arg(&out);
        bm.arg(&n32).arg(&m32).arg(&d32);
        let cfg = LaunchConfig {
            grid_dim: (m32.div_ceil(16), n32.div_ceil(16), 1),
            block_dim: (16, 16, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types and order match `club_llmat_*` in kernels.cu (16×16 tiles).
        unsafe { bm.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
    let (n, d) = l1.shape().dims2()?;
    let (m, _) = l3.shape().dims2()?;
    if n.max(m) > u32::MAX as usize / 2 || n * d > u32::MAX as usize {
        candle_core::bail!("club_log_prob_matrix: sizes beyond the CUDA kernel's u32 indices");
    }
    let sfx = suffix(s1.dtype(), "club_log_prob_matrix")?;
    let out = match s1.dtype() {
        DType::F32 => run::<f32>([s1, s2, s3], [l1, l2, l3], (n, m, d), sfx)?,
        _ => run::<f64>([s1, s2, s3], [l1, l2, l3], (n, m, d), sfx)?,
    };
    Ok((out, Shape::from((n, m))))
}
