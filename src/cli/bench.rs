//! `modbal bench step`: time training steps of the reference workloads and print one JSON
//! object, the same one `bench/torch_reference.py` prints for PyTorch.
//!
//! A step is forward, mean cross-entropy on the fused logits, backward and one SGD update
//! (lr 1e-3, momentum 0.9, weight decay 1e-4) on a fixed batch drawn once from the seeded RNG.
//!
//! | workload | model | batch | inputs |
//! |---|---|---|---|
//! | `small-cnn` | conv3×3 1→64 (pad 1, bias), ReLU, max-pool 2, conv3×3 64→64 (pad 1, bias), ReLU, GAP, fc 64→10 | 64 | `[1, 64, 64]` |
//! | `conv4-pair` | two CGMNIST conv4 encoders (32-64-128-256, BN) on `[1, 28, 28]` and `[3, 28, 28]`, concat fc 512→10 | 64 | CGMNIST |
//! | `resnet18-av` | ResNet18 on `[1, 128, 128]` + ResNet18 on `[3, 112, 112]`, concat fc 1024→6 | 16 | AV |
//! | `mlp-pair` | two MLPs 256→512→512 (ReLU), concat fc 1024→10 | 256 | `[256]` each |
//! | `synth-av-epoch` | one epoch of the default `modbal train` (a "step" is an epoch, timed by the trainer) | – | synth-av |

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use modbal_core::MultimodalModel;
use modbal_encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal_tensors::layers::{Conv2d, Conv2dConfig, Linear};
use modbal_tensors::{cross_entropy, ops, Optimizer, ParamStore, SeededRng, Sgd, SgdConfig};
use serde_json::{json, Value};
use std::time::Instant;

/// The workload names (part of the interface: `bench/torch_reference.py` uses the same).
pub const WORKLOADS: [&str; 5] = [
    "small-cnn",
    "conv4-pair",
    "resnet18-av",
    "mlp-pair",
    "synth-av-epoch",
];

#[derive(clap::Args)]
pub struct StepArgs {
    /// small-cnn, conv4-pair, resnet18-av, mlp-pair or synth-av-epoch.
    #[arg(long)]
    pub workload: String,
    /// Timed steps (default 20; 10 for resnet18-av; 3 epochs for synth-av-epoch).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Untimed warm-up steps before them (default 3; 1 for synth-av-epoch).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// CPU threads for every kernel (candle's rayon pool and gemm, modbal's kernels). Default:
    /// RAYON_NUM_THREADS, else rayon's default (the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the initial weights and of the input batch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the steps run: cpu, cuda or cuda:N (needs a `--features cuda` build). On a GPU the
    /// device is synchronised before each clock reading (candle launches asynchronously).
    #[arg(long, default_value = "cpu")]
    pub device: modbal_train::DeviceConfig,
}

/// SGD as the issue fixes it (PyTorch: `torch.optim.SGD(lr=1e-3, momentum=0.9, weight_decay=1e-4)`).
fn sgd_config() -> SgdConfig {
    SgdConfig {
        lr: 1e-3,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 1e-4,
    }
}

/// The small CNN of the table (no BatchNorm, convolutions with bias as `nn.Conv2d`).
struct SmallCnn {
    params: ParamStore,
    c1: Conv2d,
    c2: Conv2d,
    fc: Linear,
}

impl SmallCnn {
    fn new(rng: &mut SeededRng, dev: &Device) -> Result<Self> {
        let params = ParamStore::new();
        let root = params.root(DType::F32, dev);
        let cfg = Conv2dConfig {
            kernel: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            bias: true,
        };
        let c1 = Conv2d::new(&root.pp("conv1"), 1, 64, cfg, rng)?;
        let c2 = Conv2d::new(&root.pp("conv2"), 64, 64, cfg, rng)?;
        let fc = Linear::new(&root.pp("fc"), 64, 10, rng)?;
        Ok(Self { params, c1, c2, fc })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.c1.forward_relu(x)?;
        let h = ops::max_pool2d(&h, 2, 2, 0)?;
        let h = self.c2.forward_relu(&h)?;
        self.fc.forward(&ops::global_avg_pool(&h)?)
    }
}

enum Model {
    SmallCnn(SmallCnn),
    Net(MultimodalNet),
}

impl Model {
    fn params(&self) -> &ParamStore {
        match self {
            Model::SmallCnn(m) => &m.params,
            Model::Net(n) => n.params(),
        }
    }
    fn logits(&self, inputs: &[Tensor]) -> candle_core::Result<Tensor> {
        match self {
            Model::SmallCnn(m) => m.forward(&inputs[0]),
            Model::Net(n) => Ok(n.forward_t(inputs, true)?.fused_logits),
        }
    }
}

/// A model, its optimizer and one fixed batch.
struct StepBench {
    model: Model,
    opt: Sgd,
    inputs: Vec<Tensor>,
    labels: Tensor,
    batch: usize,
}

impl StepBench {
    fn new(workload: &str, seed: u64, dev: &Device) -> Result<Self> {
        let dev = dev.clone();
        let mut rng = SeededRng::new(seed);
        let mut data_rng = rng.fork();
        let pair = |specs: [(&str, EncoderConfig, Vec<usize>); 2],
                    classes: usize,
                    rng: &mut SeededRng|
         -> Result<Model> {
            let specs: Vec<ModalitySpec> = specs
                .into_iter()
                .map(|(n, e, s)| ModalitySpec::new(n, e, &s))
                .collect();
            Ok(Model::Net(MultimodalNet::new(
                &specs,
                &FusionConfig::Concat,
                classes,
                rng,
                &dev,
            )?))
        };
        let (model, batch, shapes, classes) = match workload {
            "small-cnn" => (
                Model::SmallCnn(SmallCnn::new(&mut rng, &dev)?),
                64,
                vec![vec![1, 64, 64]],
                10,
            ),
            "conv4-pair" => (
                pair(
                    [
                        ("gray", EncoderConfig::conv4(), vec![1, 28, 28]),
                        ("colored", EncoderConfig::conv4(), vec![3, 28, 28]),
                    ],
                    10,
                    &mut rng,
                )?,
                64,
                vec![vec![1, 28, 28], vec![3, 28, 28]],
                10,
            ),
            "resnet18-av" => (
                pair(
                    [
                        ("audio", EncoderConfig::resnet18(false), vec![1, 128, 128]),
                        ("visual", EncoderConfig::resnet18(false), vec![3, 112, 112]),
                    ],
                    6,
                    &mut rng,
                )?,
                16,
                vec![vec![1, 128, 128], vec![3, 112, 112]],
                6,
            ),
            "mlp-pair" => {
                let mlp = || EncoderConfig::Mlp {
                    hidden: vec![512, 512],
                };
                (
                    pair(
                        [("a", mlp(), vec![256]), ("b", mlp(), vec![256])],
                        10,
                        &mut rng,
                    )?,
                    256,
                    vec![vec![256], vec![256]],
                    10,
                )
            }
            other => bail!(
                "unknown workload {other:?}; valid choices: {}",
                WORKLOADS.join(", ")
            ),
        };
        let inputs = shapes
            .iter()
            .map(|s| {
                let mut shape = vec![batch];
                shape.extend_from_slice(s);
                data_rng.randn(shape, 0.0, 1.0, DType::F32, &dev)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let labels: Vec<u32> = (0..batch).map(|_| data_rng.below(classes) as u32).collect();
        let labels = Tensor::from_vec(labels, batch, &dev)?;
        let opt = Sgd::new(model.params().trainable(), sgd_config());
        Ok(Self {
            model,
            opt,
            inputs,
            labels,
            batch,
        })
    }

    /// One training step; returns the loss.
    fn step(&mut self) -> Result<f64> {
        let logits = self.model.logits(&self.inputs)?;
        let loss = cross_entropy(&logits, &self.labels)?;
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        Ok(loss.to_scalar::<f32>()? as f64)
    }
}

/// Peak resident set size of this process in MiB (`VmHWM` of /proc/self/status), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `(median, p10, p90)` of `v` (linear interpolation between order statistics, as
/// `numpy.percentile`).
pub fn percentiles(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        if s.is_empty() {
            return f64::NAN;
        }
        let x = p * (s.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x - x.floor());
        if i + 1 < s.len() {
            s[i] * (1.0 - f) + s[i + 1] * f
        } else {
            s[i]
        }
    };
    (q(0.5), q(0.1), q(0.9))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs the benchmark described by `a` and returns its JSON object.
pub fn run_step(a: &StepArgs) -> Result<Value> {
    if !WORKLOADS.contains(&a.workload.as_str()) {
        bail!(
            "unknown workload {:?}; valid choices: {}",
            a.workload,
            WORKLOADS.join(", ")
        );
    }
    // Before any tensor operation: candle sizes its gemm parallelism from RAYON_NUM_THREADS.
    let threads = match a.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => modbal_tensors::set_num_threads(t),
        None => modbal_tensors::threads::num_threads(),
    };
    let epoch = a.workload == "synth-av-epoch";
    let steps = a.steps.unwrap_or(match a.workload.as_str() {
        "synth-av-epoch" => 3,
        "resnet18-av" => 10,
        _ => 20,
    });
    let warmup = a.warmup.unwrap_or(if epoch { 1 } else { 3 });
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let run = || -> Result<(Vec<f64>, Value)> {
        Ok(if epoch {
            synth_av_epochs(warmup, steps, a.seed, a.device)?
        } else {
            let dev = a.device.open()?;
            let mut b = StepBench::new(&a.workload, a.seed, &dev)?;
            let mut first = f64::NAN;
            for i in 0..warmup {
                let l = b.step()?;
                if i == 0 {
                    first = l;
                }
            }
            let mut times = Vec::with_capacity(steps);
            let mut last = f64::NAN;
            for i in 0..steps {
                dev.synchronize()?;
                let t0 = Instant::now();
                last = b.step()?;
                dev.synchronize()?;
                times.push(t0.elapsed().as_secs_f64() * 1e3);
                if i == 0 && warmup == 0 {
                    first = last;
                }
            }
            let n_params: usize = b
                .model
                .params()
                .trainable()
                .iter()
                .map(|(_, v)| v.elem_count())
                .sum();
            (
                times,
                json!({"batch": b.batch, "params": n_params, "loss_first": first, "loss_last": last}),
            )
        })
    };
    // On a worker of the pool, as `modbal train` runs its loop (threads::run_loops_in_pool).
    let (times, extra) = if modbal_tensors::threads::loops_in_pool() {
        modbal_tensors::threads::in_pool(run)?
    } else {
        run()?
    };
    let (med, p10, p90) = percentiles(&times);
    let mut out = json!({
        "workload": a.workload,
        "framework": "modbal",
        "ms_per_step_median": round3(med),
        "ms_per_step_p10": round3(p10),
        "ms_per_step_p90": round3(p90),
        "steps": steps,
        "warmup": warmup,
        "threads": threads,
        "peak_rss_mb": peak_rss_mb().map(|m| (m * 10.0).round() / 10.0),
        "version": env!("CARGO_PKG_VERSION"),
        "device": a.device.to_string(),
    });
    if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

/// `warmup + steps` epochs of the default `modbal train` in a scratch directory; returns the
/// trainer's own per-epoch seconds (timing.jsonl) of the timed epochs, in ms.
fn synth_av_epochs(
    warmup: usize,
    steps: usize,
    seed: u64,
    device: modbal_train::DeviceConfig,
) -> Result<(Vec<f64>, Value)> {
    let dir = std::env::temp_dir().join(format!(
        "modbal-bench-epoch-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let mut cfg = crate::RunConfig {
        seed,
        ..Default::default()
    };
    cfg.train.epochs = warmup + steps;
    cfg.train.device = device;
    let opts = modbal_train::TrainOptions {
        quiet: true,
        run_dir: Some(dir.clone()),
        ..Default::default()
    };
    let res = crate::run::train(&cfg, &opts).context("training synth-av");
    let timing = std::fs::read_to_string(dir.join("timing.jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
    res?;
    let timing = timing.context("reading timing.jsonl")?;
    let secs: Vec<f64> = timing
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("seconds").and_then(Value::as_f64))
        .collect();
    if secs.len() != warmup + steps {
        bail!(
            "timing.jsonl has {} epochs, expected {}",
            secs.len(),
            warmup + steps
        );
    }
    let ms = secs[warmup..].iter().map(|s| s * 1e3).collect();
    Ok((
        ms,
        json!({"batch": cfg.train.batch_size, "unit": "epoch (train + validation)"}),
    ))
}
