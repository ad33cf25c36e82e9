//! The CUDA C source of the ops' device paths (`src/kernels.cu`), embedded in the library.

/// The CUDA C source of every kernel of this crate (compiled with nvrtc under `cuda`).
pub const CUDA_SOURCE: &str = include_str!("kernels.cu");
