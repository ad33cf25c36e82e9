//! # modbal-tensors: what candle 0.11 lacks for training
//!
//! candle-core/candle-nn 0.11 can run forward passes and backpropagate, but several pieces a
//! training framework needs are missing or silently broken (see `docs/architecture.md` and the
//! project notes on candle gaps). This crate fills them inside modbal, without vendoring candle:
//!
//! | module | provides |
//! |---|---|
//! | [`rng`] | [`SeededRng`]: a seedable, checkpointable RNG (ChaCha8); candle's CPU RNG cannot be seeded |
//! | [`init`] | Xavier-normal, Kaiming (fan-out) normal, PyTorch-default uniform, constants |
//! | [`params`] | [`ParamStore`]: named parameters and buffers with groups, trainable flags, safetensors I/O |
//! | [`ops`] | conv2d for any H×W / stride / padding / dilation (im2col + gemm), max-pool with backward for any kernel/stride, log-determinant (Cholesky) with backward, softmax / log-softmax with gradients, fused linear (+ReLU) and softmax cross-entropy |
//! | [`layers`] | `Linear`, `Conv2d`, `BatchNorm2d`, `LayerNorm` whose gradients reach inputs and weights |
//! | [`loss`] | per-sample and mean cross-entropy (the mean one fused op on CPU) |
//! | [`optim`] | SGD (momentum, dampening, Nesterov, weight decay) and AdamW with saveable state |
//! | [`schedule`] | step, multi-step, cosine LR schedules with linear warm-up |
//! | [`clip`] | global-norm gradient clipping over a `GradStore` |
//! | [`special`] | digamma and log-gamma with gradients (TMC's evidential loss) |
//! | [`threads`] | one switch for the CPU thread count of candle's and modbal's kernels |
//!
//! Everything works on any candle device for which the underlying tensor ops exist; the custom
//! ops (`ops::conv2d`, `ops::max_pool2d`, `ops::logdet`) have CPU kernels.
//!
//! # Example
//!
//! ```
//! use candle_core::{DType, Device};
//! use modbal_tensors::SeededRng;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Same seed ⇒ same draws, on any machine (candle's own CPU RNG cannot be seeded).
//! let mut a = SeededRng::new(42);
//! let mut b = SeededRng::new(42);
//! assert_eq!(a.normal_vec(4, 0.0, 1.0), b.normal_vec(4, 0.0, 1.0));
//! assert_eq!(a.permutation(10), b.permutation(10));
//!
//! // The state goes into a checkpoint; restoring it continues the exact same stream.
//! let saved = a.state();
//! let next = a.uniform();
//! let mut resumed = SeededRng::from_state(&saved)?;
//! assert_eq!(resumed.uniform(), next);
//!
//! // Tensors are drawn from it too (here initial weights of a 3×2 layer).
//! let w = resumed.randn((3, 2), 0.0, 0.02, DType::F32, &Device::Cpu)?;
//! assert_eq!(w.dims(), &[3, 2]);
//! # Ok(())
//! # }
//! ```

pub mod alloc;
pub mod clip;
mod cpu;
pub mod init;
pub mod layers;
pub mod loss;
pub mod ops;
pub mod optim;
pub mod params;
pub mod rng;
pub mod schedule;
pub mod special;
pub mod threads;
pub mod window;

pub use clip::{clip_grad_norm, global_grad_norm};
pub use init::Init;
pub use layers::{BatchNorm2d, Conv2d, Conv2dConfig, LayerNorm, Linear};
pub use loss::{cross_entropy, cross_entropy_per_sample, cross_entropy_unfused};
pub use optim::{AdamW, AdamWConfig, Optimizer, OptimizerConfig, OptimizerState, Sgd, SgdConfig};
pub use params::{ParamBuilder, ParamStore};
pub use rng::{RngState, SeededRng};
pub use schedule::{LrSchedule, ScheduleConfig};
pub use threads::set_num_threads;

/// The process-wide settings the `modbal` binary starts with, for programs that use the crates
/// directly (call it first thing in `main`): keep freed memory for reuse
/// ([`alloc::retain_freed_memory`], skipped when `MODBAL_MALLOC=system`) and run candle's
/// element-wise ops on the calling thread ([`threads::serial_candle_elementwise`], unless
/// `CANDLE_NUM_THREADS` is set). Measured effects: docs/benchmarks.md.
pub fn apply_speed_defaults() {
    if std::env::var("MODBAL_MALLOC").as_deref() != Ok("system") {
        alloc::retain_freed_memory();
    }
    threads::serial_candle_elementwise();
}
