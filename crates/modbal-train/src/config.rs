//! The typed options of the training loop: [`TrainConfig`] (the `[train]` section of a run
//! config) and [`DeviceConfig`]. Checked once by [`TrainConfig::check`] when a
//! [`crate::Learner`] is made.

use modbal_core::{ModbalError, Result};
use modbal_tensors::{OptimizerConfig, ScheduleConfig};
use serde::{Deserialize, Serialize};

/// The device of a run: `"cpu"`, `"cuda"` (GPU 0) or `"cuda:N"` in TOML and `--set`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceConfig {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

impl std::fmt::Display for DeviceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceConfig::Cpu => f.write_str("cpu"),
            DeviceConfig::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceConfig {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceConfig::Cpu),
            "cuda" => Ok(DeviceConfig::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceConfig::Cuda)
                .ok_or_else(|| {
                    format!("unknown device {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\"")
                }),
        }
    }
}

/// Why a build without the `cuda` feature refuses a CUDA device.
const NO_CUDA: &str = "this build has no CUDA support: build with `cargo build --release \
     --features cuda` (or `just build-cuda`; docs/cuda.md)";

impl DeviceConfig {
    /// Whether `device` is this one (the CPU, or the GPU with this ordinal).
    pub fn is_location(self, device: &candle_core::Device) -> bool {
        match (self, device.location()) {
            (DeviceConfig::Cpu, candle_core::DeviceLocation::Cpu) => true,
            (DeviceConfig::Cuda(n), candle_core::DeviceLocation::Cuda { gpu_id }) => n == gpu_id,
            _ => false,
        }
    }

    /// Open the device: the CPU, or CUDA GPU `N` (an error naming the device and why it could
    /// not be opened: no such GPU, no driver, or a build without the `cuda` feature).
    pub fn open(self) -> Result<candle_core::Device> {
        match self {
            DeviceConfig::Cpu => Ok(candle_core::Device::Cpu),
            DeviceConfig::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(ModbalError::Config(format!(
                        "train.device = \"{self}\": {NO_CUDA}"
                    )));
                }
                candle_core::Device::new_cuda(n).map_err(|e| {
                    ModbalError::Config(format!("train.device = \"{self}\": cannot open it: {e}"))
                })
            }
        }
    }
}

impl Serialize for DeviceConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The most data-parallel ranks a run may ask for (`train.world_size`): each rank is a thread
/// with its own copy of the model and data on the CPU, or a GPU.
pub const MAX_WORLD_SIZE: usize = 64;

/// Training-loop options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    /// Global-norm gradient clipping (none if absent).
    pub clip_grad_norm: Option<f64>,
    /// Batches assembled ahead on the worker thread (at most
    /// [`modbal_data::loader::MAX_PREFETCH`] = 1024).
    pub prefetch: usize,
    /// Save `checkpoints/last` every this many epochs (and always after the last epoch).
    pub checkpoint_every: usize,
    /// Where the run trains: `"cpu"` (default), `"cuda"` or `"cuda:N"` ([`DeviceConfig`]).
    /// With `world_size > 1` on CUDA, rank r trains on GPU `N + r`.
    pub device: DeviceConfig,
    /// Data-parallel ranks (default 1): each trains on `batch_size` samples of every global
    /// batch of `world_size × batch_size`, gradients averaged over the ranks before each step
    /// (PyTorch DDP's semantics; `modbal_train::distributed`). On the CPU the ranks are threads
    /// of one process (the stand-in that tests the arithmetic); on CUDA one GPU per rank,
    /// all-reduced with NCCL (a `--features cuda,nccl` build).
    pub world_size: usize,
    /// Also evaluate the test split after every epoch (`test_curve.jsonl`) and report the best
    /// test epoch in `summary.json` (`test_curve`, clearly labelled). Nothing in training reads
    /// it: the run's decisions and headline stay on validation. Default false.
    pub report_test_curve: bool,
    /// Write TensorBoard event files to `<run>/tensorboard/` (the metrics of every epoch as
    /// scalars, `config.toml` as text; [`crate::tensorboard`]). Default true; `false` (the CLI's
    /// `--no-tensorboard`) writes none. Metrics are the same either way.
    pub tensorboard: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 12,
            batch_size: 64,
            eval_batch_size: 256,
            optimizer: OptimizerConfig::Sgd(modbal_tensors::SgdConfig {
                lr: 0.01,
                ..Default::default()
            }),
            schedule: ScheduleConfig::default(),
            clip_grad_norm: None,
            prefetch: 2,
            checkpoint_every: 1,
            device: DeviceConfig::Cpu,
            world_size: 1,
            report_test_curve: false,
            tensorboard: true,
        }
    }
}

impl TrainConfig {
    /// Checks the values serde cannot (errors name the `train.` key).
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(ModbalError::Config("train.epochs must be > 0".into()));
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(ModbalError::Config(
                "train.batch_size and train.eval_batch_size must be > 0".into(),
            ));
        }
        if self.prefetch > modbal_data::loader::MAX_PREFETCH {
            return Err(ModbalError::Config(format!(
                "train.prefetch = {} is more than the limit of {} batches",
                self.prefetch,
                modbal_data::loader::MAX_PREFETCH
            )));
        }
        if self.world_size == 0 || self.world_size > MAX_WORLD_SIZE {
            return Err(ModbalError::Config(format!(
                "train.world_size must be between 1 and {MAX_WORLD_SIZE}, got {}",
                self.world_size
            )));
        }
        if self.checkpoint_every == 0 {
            return Err(ModbalError::Config(
                "train.checkpoint_every must be > 0".into(),
            ));
        }
        if let Some(c) = self.clip_grad_norm {
            if c.is_nan() || c <= 0.0 {
                return Err(ModbalError::Config(format!(
                    "train.clip_grad_norm must be > 0, got {c}"
                )));
            }
        }
        self.optimizer
            .validate()
            .map_err(|e| ModbalError::Config(format!("train.optimizer: {e}")))?;
        self.schedule
            .validate()
            .map_err(|e| ModbalError::Config(format!("train.{e}")))?;
        if self.device != DeviceConfig::Cpu && !cfg!(feature = "cuda") {
            return Err(ModbalError::Config(format!(
                "train.device = \"{}\": {NO_CUDA}",
                self.device
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_device() {
        assert!(DeviceConfig::Cpu.open().unwrap().is_cpu());
        let e = DeviceConfig::Cuda(7).open().unwrap_err().to_string();
        // Without the feature: how to build with it; with it (and no GPU 7): the reason.
        assert!(e.contains("cuda:7"), "{e}");
        if !cfg!(feature = "cuda") {
            assert!(e.contains("--features cuda"), "{e}");
        }
    }

    #[test]
    fn devices_parse_and_print() {
        for (text, d) in [
            ("cpu", DeviceConfig::Cpu),
            ("cuda", DeviceConfig::Cuda(0)),
            ("cuda:3", DeviceConfig::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceConfig>().unwrap(), d);
        }
        assert_eq!(DeviceConfig::Cuda(2).to_string(), "cuda:2");
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            assert!(bad.parse::<DeviceConfig>().unwrap_err().contains(bad));
        }
    }

    #[test]
    fn tensorboard_defaults_on_and_turns_off() {
        // A config without the key (any run written before it existed) gets the default.
        // (serde_json here; the run config's TOML goes through the same serde derive.)
        let c: TrainConfig = serde_json::from_str(r#"{"epochs": 3}"#).unwrap();
        assert!(c.tensorboard);
        let c: TrainConfig = serde_json::from_str(r#"{"tensorboard": false}"#).unwrap();
        assert!(!c.tensorboard);
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn check_names_the_key() {
        let ok = TrainConfig::default();
        ok.check().unwrap();
        for (cfg, key) in [
            (
                TrainConfig {
                    epochs: 0,
                    ..ok.clone()
                },
                "train.epochs",
            ),
            (
                TrainConfig {
                    batch_size: 0,
                    ..ok.clone()
                },
                "train.batch_size",
            ),
            (
                TrainConfig {
                    checkpoint_every: 0,
                    ..ok.clone()
                },
                "train.checkpoint_every",
            ),
            (
                TrainConfig {
                    prefetch: 1_000_000_000,
                    ..ok.clone()
                },
                "train.prefetch = 1000000000",
            ),
            (
                TrainConfig {
                    clip_grad_norm: Some(f64::NAN),
                    ..ok.clone()
                },
                "train.clip_grad_norm",
            ),
            (
                TrainConfig {
                    device: DeviceConfig::Cuda(1),
                    ..ok.clone()
                },
                "--features cuda",
            ),
        ] {
            if cfg!(feature = "cuda") && cfg.device != DeviceConfig::Cpu {
                continue; // a CUDA build accepts the device; opening it is checked at run time
            }
            let e = cfg.check().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
