//! # modbal
//!
//! Imbalanced multimodal learning on candle. This facade re-exports the workspace crates; the
//! `modbal` binary is the command-line interface (`modbal --help`).
//!
//! | crate | role |
//! |---|---|
//! | [`core`] | vocabulary: `Batch`, `MultimodalOutput`, `MultimodalModel`, the `Method` hooks |
//! | [`tensors`] | what candle lacks for training: seeded RNG, init, optimizers, conv/pool/logdet ops |
//! | [`encoders`] | MLP, CGMNIST conv4, ResNet18, small CNN; concat and sum fusion heads |
//! | [`data`] | `Dataset`, splits, prefetching loader, the built-in `synth-av` / `synth-vec` |
//! | [`train`] | the one training loop, metrics, run directory, checkpoints |
//! | [`info`] | estimators: Gaussian MI/entropy, CLUB, discrete NMI/CMI/NCMI, KL/JS, softmax bound |

pub use modbal_contrib as contrib;
pub use modbal_core as core;
pub use modbal_data as data;
pub use modbal_encoders as encoders;
pub use modbal_info as info;
pub use modbal_kernels as kernels;
pub use modbal_methods as methods;
pub use modbal_modulate as modulate;
pub use modbal_tensors as tensors;
pub use modbal_train as train;

pub mod example_support;
