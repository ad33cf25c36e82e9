//! # modbal-data: datasets, splits, batching and the built-in benchmarks
//!
//! * [`Dataset`]: `len`, `get(i)` → per-modality values + label, with fixed per-sample shapes.
//! * [`Splits`]: train / validation / test. Model selection and every held-out statistic a method
//!   needs use `val`; `test` is only for the final report.
//! * [`DataLoader`]: batches a given index order (the trainer shuffles with the run's seeded
//!   RNG), assembling batches on a background worker thread (prefetch).
//! * [`synth`]: the built-in imbalanced benchmarks `synth-av` and `synth-vec` (no download).

pub mod dataset;
pub mod loader;
pub mod noise;
pub mod npy;
pub mod real;
pub mod synth;
pub mod synth_shift;
pub mod vision;

pub use dataset::{Dataset, InMemoryDataset, ModalitySelect, Sample, Splits};
pub use loader::DataLoader;
pub use synth::{DatasetConfig, SynthAvConfig, SynthVecConfig};
pub use synth_shift::{SynthShiftConfig, ValidationShift};
