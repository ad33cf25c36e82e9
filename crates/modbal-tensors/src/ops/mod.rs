//! Differentiable operations candle 0.11 lacks or gets wrong for training.
//!
//! * [`conv2d`] / [`conv2d_bias`]: 2-D convolution for any input H×W, stride, padding and
//!   dilation. candle's own conv2d backward derives the output padding from the height only and
//!   fails on inputs such as 257×188 spectrograms. Here forward and both backward passes are
//!   im2col / col2im + direct `gemm` calls (the `cpu` module), and the backward computes only
//!   the gradients of tracked operands.
//! * [`batch_norm_train`] (training-mode batch norm, optionally fused with ReLU), [`add_relu`]
//!   (ResNet's residual connection) and [`global_avg_pool`]: single fused ops with closed-form
//!   backward passes instead of chains of candle element-wise ops (CPU f32/f64).
//! * [`max_pool2d`]: max-pooling with any kernel, stride and padding and a backward pass that
//!   routes each output's gradient to the first arg-max of its window, as PyTorch does (candle
//!   only has a backward when kernel == stride).
//! * [`logdet`]: log det A for symmetric positive-definite A (Cholesky), with backward
//!   ∂ log det A / ∂A = A⁻¹ (A symmetric). Needed by the Gaussian MI of CAL eq 10-12. Its
//!   building blocks are public for callers that assemble the matrix themselves (the Gaussian
//!   estimators' graph-free path): [`cholesky_in_place`] (blocked, multi-threaded, reports the
//!   first failing pivot) and [`gram_lower`] (the lower triangle of `A Aᵀ`).
//! * [`linear`]: `x Wᵀ + b`, optionally followed by ReLU, as one op (one gemm call with the bias
//!   and the ReLU applied in the same output buffer) whose backward is two gemm calls and a
//!   column sum (the input gradient only for a tracked input); [`softmax_cross_entropy`]: the
//!   mean cross-entropy as one op with the closed-form gradient `(softmax − onehot)/N` (CPU
//!   f32/f64; candle's composition elsewhere).
//! * [`softmax`], [`log_softmax`]: numerically stable compositions of differentiable ops
//!   (`candle_nn::ops::softmax_last_dim` has no backward).
//!
//! # Device-generic paths
//! The fast kernels above run on CPU f32/f64 tensors only. Every op also has a device-generic
//! path built from candle tensor ops that all backends implement, taken automatically for any
//! other device or dtype: the convolutions compute their value with candle's conv2d forward and
//! their gradients with a hook op whose backward is two more forward convolutions; max-pooling
//! gathers each window's candidates and picks the CPU kernel's winner (first NaN, else first
//! maximum, padding never); `logdet` / `spd_inv` copy the (small) matrices to the host and back
//! (`to_device` is differentiable); batch norm, the linear layer, `add_relu`, the average pool
//! and the cross-entropy fall back to their formulas. Each op decides with [`use_fast_cpu`] on
//! the calling thread. [`force_generic`] forces the generic paths on the CPU for the calling
//! thread (a guard restores the previous setting), and `MODBAL_GENERIC_OPS=1` makes that the
//! process default, so that the GPU code paths can be tested, and a whole run made, on a CPU.
//!
//! # Shapes
//! * `conv2d(x: [B, C, H, W], w: [O, C, kh, kw]) -> [B, O, Ho, Wo]` with
//!   `Ho = (H + 2·ph − dh·(kh−1) − 1)/sh + 1` (same for W).
//! * `max_pool2d(x: [B, C, H, W]) -> [B, C, Ho, Wo]`, same formula with dilation 1; padded cells
//!   count as −∞.
//! * `logdet(a: [D, D] or [N, D, D]) -> [] or [N]`.
//!
//! # Layout
//! One file per kind of op: convolution (`conv.rs`), pooling (`pool.rs`), batch norm
//! (`norm.rs`), the fused add + ReLU and the ReLU backward mask (`relu.rs`), the linear layer
//! (`linear.rs`), softmax and its cross-entropy (`softmax.rs`), Cholesky and Gram products
//! (`linalg.rs`), the log-determinant (`logdet.rs`); `storage.rs` holds the f32/f64 storage
//! dispatch they share, `dispatch.rs` the choice of path and its switch, `generic.rs` the
//! generic convolution and max-pooling. Their CPU loops are in the crate's private `cpu` module.

mod conv;
pub(crate) mod dispatch;
mod generic;
mod linalg;
mod linear;
mod logdet;
mod norm;
mod pool;
mod relu;
mod softmax;
mod storage;

pub use crate::window::Window;
pub use conv::{conv2d, conv2d_bias, conv2d_bias_relu, conv2d_relu, ConvGeometry};
pub use dispatch::{
    conv_algorithm, set_conv_algorithm, winograd_count, ConvAlgorithm, ConvAlgorithmGuard,
    CONV_ALGORITHM_ENV,
};
pub use dispatch::{
    force_generic, generic_forced, generic_path_count, use_fast_cpu, GenericGuard, GENERIC_OPS_ENV,
};
pub use linalg::{cholesky_in_place, gram_lower, gram_lower_into};
pub use linear::linear;
pub use logdet::{logdet, spd_inv, SYMMETRY_TOLERANCE};
pub use norm::{batch_norm_train, batch_norm_train_supported};
pub use pool::{global_avg_pool, max_pool2d};
pub use relu::add_relu;
pub use softmax::{log_softmax, softmax, softmax_cross_entropy};
