//! # modbal-data: datasets, splits, batching and the built-in benchmarks
//!
//! * [`Dataset`]: `len`, `get(i)` → per-modality values + label, with fixed per-sample shapes.
//! * [`Splits`]: train / validation / test. Model selection and every held-out statistic a method
//!   needs use `val`; `test` is only for the final report.
//! * [`DataLoader`]: batches a given index order (the trainer shuffles with the run's seeded
//!   RNG), assembling batches on a background worker thread (prefetch).
//! * [`synth`]: the built-in imbalanced benchmarks `synth-av` and `synth-vec` (no download).
//!
//! # Example
//!
//! ```
//! use modbal_data::synth::SynthCommon;
//! use modbal_data::{DataLoader, Dataset, SynthVecConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A tiny `synth-vec`: a strong audio and a weak visual Gaussian vector per sample.
//! let cfg = SynthVecConfig {
//!     common: SynthCommon { classes: 3, train: 20, val: 6, test: 6, audio_confusable: 0, ..Default::default() },
//!     ..Default::default()
//! };
//! let splits = cfg.build()?;
//! assert_eq!(splits.train.modalities(), ["audio", "visual"]);
//! assert_eq!(splits.train.input_shapes(), [vec![16], vec![32]]);
//! assert_eq!((splits.train.len(), splits.val.len(), splits.test.len()), (20, 6, 6));
//!
//! // Batches of 8 in a given order, assembled on a prefetch thread; the last one is smaller.
//! let loader = DataLoader::new(splits.train.clone(), (0..20).collect(), 8, 2)?;
//! let batches = loader.collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(batches.len(), 3);
//! assert_eq!(batches[0].inputs[0].dims(), &[8, 16]);
//! assert_eq!(batches[2].len(), 4);
//! # Ok(())
//! # }
//! ```

pub mod dataset;
pub mod loader;
pub mod noise;
pub mod npy;
pub mod real;
pub mod synth;
pub mod synth_shift;
pub mod vision;

pub use dataset::{Dataset, InMemoryDataset, ModalitySelect, Sample, Splits, TextSource};
pub use loader::DataLoader;
pub use synth::{SynthAvConfig, SynthVecConfig};
pub use synth_shift::{SynthShiftConfig, ValidationShift};
