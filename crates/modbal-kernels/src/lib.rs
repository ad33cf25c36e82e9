//! Custom candle ops of modbal, each with a CPU path (always compiled, tested in CI) and a CUDA
//! path (feature `cuda`: CUDA C in `src/kernels.cu`, compiled at run time with nvrtc and launched
//! with cudarc's builder API; no build-time nvcc is needed for these kernels).
//!
//! | op | function | used by (intended hook-up) |
//! |---|---|---|
//! | CLUB N×M Gaussian log-likelihood matrix | [`club_log_prob_matrix`] | `modbal_info::Club::log_prob_matrix` / `vclub` (UDI eq 8) |
//! | fused `k·x + σ·z` | [`scale_add_noise`], [`standard_normal`] | OGM-GE's GE term on gradients, IBML TCM's input noise |
//! | salt-and-pepper | [`salt_pepper`] | `modbal_data::noise` (CAL §4.3 robustness protocol) |
//!
//! Random numbers come from Philox4x32-10 keyed by `(seed, stream)` and indexed by the element
//! ([`rng`]): the values of element `i` do not depend on the chunking, the number of threads or
//! the device. See `docs/cuda.md` for the build and what remains to be verified on a GPU.
//!
//! Only f32 and f64 are supported; inputs are made contiguous by the wrapper functions.
//!
//! # Example
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use modbal_kernels::{rng, scale_add_noise, standard_normal};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Element i of a draw is normal(seed, offset + i), whatever the chunking or the device.
//! let z = standard_normal(6usize, DType::F64, &Device::Cpu, 7, 0)?.to_vec1::<f64>()?;
//! for (i, zi) in z.iter().enumerate() {
//!     assert_eq!(*zi, rng::normal_f64(7, i as u64));
//! }
//! // `offset` draws the continuation of the same stream.
//! let tail = standard_normal(3usize, DType::F64, &Device::Cpu, 7, 3)?.to_vec1::<f64>()?;
//! assert_eq!(tail, z[3..]);
//!
//! // Fused k·x + σ·z in one pass (OGM-GE's GE term, IBML TCM's input noise).
//! let x = Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu)?;
//! let y = scale_add_noise(&x, 0.5, 0.1, 7, 0)?.to_vec1::<f64>()?;
//! for i in 0..3 {
//!     assert!((y[i] - (0.5 * (i + 1) as f64 + 0.1 * z[i])).abs() < 1e-12);
//! }
//! # Ok(())
//! # }
//! ```

pub mod club;
#[cfg(feature = "cuda")]
mod cuda;
pub mod noise;
pub mod rng;
mod source;
mod storage;

pub use club::{club_log_prob_matrix, ClubLogProbMatrix};
pub use noise::{salt_pepper, scale_add_noise, standard_normal, SaltPepper, ScaleAddNoise};
pub use source::CUDA_SOURCE;

/// Whether a CUDA device can be opened (always `false` without the `cuda` feature). Tests use
/// it to skip the CUDA cases with a message on machines without a GPU.
pub fn cuda_device() -> Option<candle_core::Device> {
    #[cfg(feature = "cuda")]
    {
        candle_core::Device::new_cuda(0).ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        None
    }
}
