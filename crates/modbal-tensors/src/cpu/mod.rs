//! CPU kernels: the plain loops and direct `gemm` calls behind the fused training ops (the `ops`
//! module) and the optimiser updates (`optim`). They work on `f32` / `f64` slices and know
//! nothing of tensors, layouts or autograd; the ops unpack candle's storages and call them.
//!
//! Inner loops are compiled for AVX-512, for AVX2 + FMA and for the build's baseline, and the best
//! one the running CPU has is picked at run time (`simd_fn!` in [`simd`]); matrix products are
//! single-threaded `gemm` calls over blocks of the output, one per thread ([`matmul`]). Results do
//! not depend on the number of threads.
//!
//! | module | kernels |
//! |---|---|
//! | [`simd`] | run-time instruction-set dispatch (`simd_fn!`), the element trait `Float` |
//! | [`matmul`] | one matrix product split over threads (`Par`, `mm`), tiled transpose |
//! | [`conv`] | convolution forward and both backward passes (im2col / col2im + gemm) |
//! | [`channel`] | per-channel sums, batch-norm statistics, affine map and backward |
//! | [`pool`] | max-pooling of a plane (with arg-max), global average pool and its backward |
//! | [`linear`] | fully connected layer forward (+ ReLU) and its gradients |
//! | [`cross_entropy`] | mean softmax cross-entropy and its gradient |
//! | [`elementwise`] | ReLU, fused add + ReLU, the ReLU backward mask, the finiteness test |
//! | [`sgd`] | SGD momentum buffer and parameter step |

pub(crate) mod channel;
pub(crate) mod conv;
pub(crate) mod cross_entropy;
pub(crate) mod elementwise;
pub(crate) mod linear;
pub(crate) mod matmul;
pub(crate) mod pool;
pub(crate) mod scratch;
pub(crate) mod sgd;
pub(crate) mod simd;
pub(crate) mod winograd;
