//! The command line of `modbal` ([`main`]) as a library: a program with its own methods,
//! datasets or encoders gets every subcommand and flag of `modbal` by registering them in a
//! [`Registry`] and calling [`main`] with it:
//!
//! ```no_run
//! // In `fn main` of your binary:
//! let registry = modbal::Registry::builtin(); // .with_method::<MyConfig>("mine") ...
//! modbal::cli::main(registry);
//! ```
//!
//! `my-bin train --method mine --dataset synth-vec --epochs 5 --set method.my_option=2` then
//! trains, and `my-bin resume DIR` resumes, exactly as `modbal` does.

mod bench;
mod estimate;
mod prepare;
mod report;
mod sweep;

use crate::config::{DatasetChoice, MethodConfig, RunConfig};
use crate::registry::Registry;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use modbal_train::TrainOptions;
use std::ffi::OsString;
use std::path::PathBuf;

/// The command line (see `modbal --help`).
#[derive(Parser)]
#[command(
    name = "modbal",
    version,
    about = "Imbalanced multimodal learning on candle",
    long_about = "Train and evaluate multimodal classifiers whose modalities learn at different \
                  speeds, with the methods that rebalance them.\n\n\
                  Quick start (built-in benchmark, no download):\n  modbal train"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of `TrainArgs` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Train a model and write runs/<name>/ (config.toml, metrics.jsonl, summary.json, plots,
    /// checkpoints).
    Train(TrainArgs),
    /// Run an information-theoretic estimator on arrays from .npy or CSV files; prints one JSON
    /// object {"estimator", "estimate", "n", "unit", ...}.
    Estimate(estimate::EstimateArgs),
    /// Turn a raw audio-visual dataset (crema-d, kinetics-sounds, ave, vggsound) into spectrogram
    /// .npy files, 1 fps frames, split lists and manifest.json. Exit status 3: finished, but some
    /// clips were skipped (listed in manifest.json).
    Prepare(prepare::PrepareArgs),
    /// Benchmarks: `modbal bench step --workload small-cnn` times training steps and prints one
    /// JSON object {"workload", "ms_per_step_median", "peak_rss_mb", ...}.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// List the paper-protocol presets (`modbal presets`) or show one with the source of every
    /// value (`modbal presets udi/crema-d`); use one with `modbal train --preset NAME`.
    Presets {
        /// A preset to show (default: list them all).
        name: Option<String>,
    },
    /// Run a grid of runs (methods × seeds × datasets × presets × --set values) with parallel
    /// local jobs, or write a Slurm job array for it (--slurm) and gather its runs (--collect).
    Sweep(sweep::SweepArgs),
    /// Write a report of run directories or sweep folders: a self-contained HTML page with
    /// plots, a Markdown summary and CSV tables (mean ± std over seeds).
    Report(report::ReportArgs),
    /// Continue an interrupted run from its last checkpoint.
    Resume {
        /// The run directory (holds config.toml and checkpoints/last).
        run_dir: PathBuf,
        /// Hide the progress bar.
        #[arg(long)]
        no_progress: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Median / p10 / p90 milliseconds per training step (forward, cross-entropy, backward, SGD
    /// lr 1e-3, momentum 0.9, weight decay 1e-4) of a reference workload, after warm-up steps.
    Step(bench::StepArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Dataset: synth-av (default), synth-vec, synth-shift (built-in, no download) or a real
    /// one (crema-d, cgmnist, …: see datasets/; they need --set dataset.root=DIR).
    #[arg(long)]
    dataset: Option<String>,
    /// Method (default concat); `modbal train --method help` is not needed: an unknown name lists
    /// the available ones.
    #[arg(long)]
    method: Option<String>,
    /// Modality for --method unimodal (default: the dataset's first).
    #[arg(long)]
    modality: Option<String>,
    /// Number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Run seed (initial weights, shuffles, noise). Same seed, same metrics on CPU.
    #[arg(long)]
    seed: Option<u64>,
    /// Directory that holds the run directories (default: runs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run name (default: <dataset>-<method>-s<seed>).
    #[arg(long)]
    name: Option<String>,
    /// A config.toml to start from (e.g. one written by an earlier run).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A paper's protocol, e.g. udi/crema-d (`modbal presets` lists them): optimizer, lr,
    /// schedule, batch, epochs, frames and the method's hyper-parameters, each with its source.
    /// Applied after --config and before the other flags and --set (which win). With --method
    /// naming another method, the preset's method options are skipped.
    #[arg(long, value_name = "PAPER/DATASET")]
    preset: Option<String>,
    /// Also evaluate the test split after every epoch (test_curve.jsonl) and report the best
    /// TEST epoch in summary.json (`test_curve`), labelled as test-set selection, for comparison
    /// with papers that select on test. Never used by training; the headline stays the
    /// validation-selected model.
    #[arg(long)]
    report_test_curve: bool,
    /// Write no TensorBoard event files (config `train.tensorboard = false`; default: written to
    /// <run>/tensorboard/, see docs/tensorboard.md).
    #[arg(long)]
    no_tensorboard: bool,
    /// Where to train: cpu (default), cuda (GPU 0) or cuda:N (config `train.device`).
    #[arg(long, value_name = "DEVICE")]
    device: Option<modbal_train::DeviceConfig>,
    /// Data-parallel ranks (config `train.world_size`): each trains on --batch-size samples of
    /// every global batch of N × batch, gradients averaged before each step (DDP semantics). On
    /// the CPU the ranks are threads of this process.
    #[arg(long, value_name = "N")]
    world_size: Option<usize>,
    /// GPUs for data-parallel training, one rank each, e.g. --devices 0,1,2,3 (consecutive
    /// ordinals; sets train.device = cuda:FIRST and train.world_size; a `--features cuda,nccl`
    /// build).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    devices: Vec<usize>,
    /// Override any config key: --set train.optimizer.lr=0.05 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Robustness protocol: corrupt inputs with salt-pepper or gaussian noise (config `[noise]`).
    #[arg(long, value_name = "KIND")]
    noise: Option<String>,
    /// Noise strength. Default scale: salt-pepper = per-element probability in [0, 1] (half min,
    /// half max of the modality); gaussian = std in units of the modality's training std. With
    /// --noise-scale qmf: QMF's / CAL Tables 2-3's ε (e.g. 5, 10).
    #[arg(long, value_name = "EPS", allow_negative_numbers = true)]
    noise_eps: Option<f64>,
    /// How --noise-eps is read: modbal (default) or qmf (QMF's code, as CAL's robustness
    /// tables: half the samples corrupted, Gaussian std 10ε grey levels, salt-pepper density 0.1
    /// on a share ε/10 of the images, text masked word by word).
    #[arg(long, value_name = "SCALE")]
    noise_scale: Option<String>,
    /// Corrupted splits: test (default), train+test, val+test or train+val+test.
    #[arg(long, value_name = "SPLITS")]
    noise_on: Option<String>,
    /// A modality to corrupt (repeatable; default: all).
    #[arg(long = "noise-modality", value_name = "NAME")]
    noise_modalities: Vec<String>,
    /// Seed of the corruption (default 0; independent of --seed, so every method and run seed
    /// sees the same corrupted test set).
    #[arg(long, value_name = "S")]
    noise_seed: Option<u64>,
    /// Stop after this many epochs (the run stays resumable: `resume RUN_DIR` continues it,
    /// with the same metrics as an uninterrupted run). For time-sliced jobs.
    #[arg(long, value_name = "N")]
    stop_after: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print only errors.
    #[arg(long)]
    quiet: bool,
}

fn build_config(reg: &Registry, a: &TrainArgs) -> Result<RunConfig> {
    let mut cfg = match &a.config {
        Some(p) => RunConfig::from_file_in(reg, p)?,
        None => RunConfig::default(),
    };
    if let Some(name) = &a.preset {
        let p = reg.preset(name)?;
        if let (Some(d), Some(pd)) = (&a.dataset, p.dataset()) {
            if d != pd {
                bail!("--dataset {d} conflicts with --preset {name} (a {pd} protocol)");
            }
        }
        // The user's --set go with the preset (and again at the end, after the other flags),
        // so that a dataset's required keys can come from them.
        cfg = p.apply_with(reg, &cfg, a.method.as_deref(), &a.sets)?;
    }
    if let Some(d) = a.device {
        cfg.train.device = d;
    }
    if let Some(n) = a.world_size {
        cfg.train.world_size = n;
    }
    if let Some(&first) = a.devices.first() {
        if a.device.is_some() || a.world_size.is_some() {
            bail!("--devices sets the device and the world size: give it without --device and --world-size");
        }
        if a.devices.iter().enumerate().any(|(i, &d)| d != first + i) {
            bail!(
                "--devices {:?}: give consecutive GPU ordinals (rank r trains on GPU FIRST + r)",
                a.devices
            );
        }
        cfg.train.device = modbal_train::DeviceConfig::Cuda(first);
        cfg.train.world_size = a.devices.len();
    }
    if a.report_test_curve {
        cfg.train.report_test_curve = true;
    }
    if a.no_tensorboard {
        cfg.train.tensorboard = false;
    }
    if let Some(d) = &a.dataset {
        if !reg.dataset_names().contains(&d.as_str()) {
            bail!(
                "unknown dataset {d:?}; valid choices: {}",
                reg.dataset_names().join(", ")
            );
        }
        if d != cfg.dataset.name() {
            cfg.dataset = DatasetChoice::named(d);
            cfg.model.encoders.clear();
        }
    }
    if let Some(m) = &a.method {
        if !reg.method_names().contains(&m.as_str()) {
            bail!(
                "unknown method {m:?}; valid choices: {}",
                reg.method_names().join(", ")
            );
        }
        if m != cfg.method.name() {
            cfg.method = MethodConfig::from_name_in(reg, m)?;
        }
    }
    if let Some(modality) = &a.modality {
        // The methods with a `modality` option (e.g. `unimodal`).
        let options = reg
            .method(cfg.method.name(), &cfg.method.options)?
            .options()?;
        if !options.contains_key("modality") {
            bail!(
                "--modality is for methods with a `modality` option, e.g. --method unimodal \
                 (method {} has none)",
                cfg.method.name()
            );
        }
        cfg.method
            .options
            .insert("modality".into(), modality.clone().into());
    }
    if let Some(e) = a.epochs {
        cfg.train.epochs = e;
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(o) = &a.out {
        cfg.out_dir = o.clone();
    }
    if let Some(n) = &a.name {
        cfg.name = n.clone();
    }
    apply_noise_args(a, &mut cfg)?;
    Ok(cfg.with_overrides_in(reg, &a.sets)?)
}

/// `--noise KIND --noise-eps E [--noise-scale S] [--noise-on S] [--noise-modality M]...
/// [--noise-seed N]` onto
/// `cfg.noise` (the flags refine a `[noise]` table from --config; without one, --noise and
/// --noise-eps are both needed).
fn apply_noise_args(a: &TrainArgs, cfg: &mut RunConfig) -> Result<()> {
    use modbal_data::noise::{NoiseConfig, NoiseKind, NoiseOn, NoiseScale};
    let given = a.noise.is_some()
        || a.noise_eps.is_some()
        || a.noise_scale.is_some()
        || a.noise_on.is_some()
        || a.noise_seed.is_some()
        || !a.noise_modalities.is_empty();
    if !given {
        return Ok(());
    }
    let mut n = match (cfg.noise.take(), &a.noise, a.noise_eps) {
        (Some(n), _, _) => n,
        (None, Some(k), Some(e)) => NoiseConfig::new(NoiseKind::from_name(k)?, e, NoiseOn::Test),
        (None, None, _) => bail!(
            "--noise-eps, --noise-scale, --noise-on, --noise-modality and --noise-seed need \
             --noise salt-pepper|gaussian"
        ),
        (None, Some(_), None) => bail!("--noise needs --noise-eps (the noise strength)"),
    };
    if let Some(k) = &a.noise {
        n.kind = NoiseKind::from_name(k)?;
    }
    if let Some(e) = a.noise_eps {
        n.eps = e;
    }
    if let Some(scale) = &a.noise_scale {
        n.scale = NoiseScale::from_name(scale)?;
    }
    if let Some(on) = &a.noise_on {
        n.on = NoiseOn::from_name(on)?;
    }
    if !a.noise_modalities.is_empty() {
        n.modalities = a.noise_modalities.clone();
    }
    if let Some(seed) = a.noise_seed {
        n.seed = seed;
    }
    n.validate()?;
    cfg.noise = Some(n);
    Ok(())
}

/// Parse the process's arguments and run `modbal` with the names of `registry`; exits with
/// status 1 and the error on failure (what the `modbal` binary does with
/// [`Registry::builtin`]).
pub fn main(registry: Registry) {
    // Freed memory kept for reuse, candle's element-wise ops on the calling thread (README,
    // Benchmarks; MODBAL_MALLOC=system and CANDLE_NUM_THREADS override).
    modbal_tensors::apply_speed_defaults();
    // One training loop per process: run it on the thread pool, workers kept awake between
    // kernels (threads::run_loops_in_pool); MODBAL_POOL_LOOP=0 turns it off.
    modbal_tensors::threads::run_loops_in_pool(modbal_tensors::threads::pool_loop_wanted());
    let cli = Cli::parse();
    if let Err(e) = run(&registry, cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Parse `args` (the first is the program name) and run; errors are returned, help and usage
/// errors exit as clap does.
pub fn run_from<I, T>(registry: &Registry, args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(registry, Cli::parse_from(args))
}

/// Run a parsed command line with the names of `reg`.
pub fn run(reg: &Registry, cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => {
            let cfg = build_config(reg, &a)?;
            if a.stop_after == Some(0) {
                bail!("--stop-after must be at least 1");
            }
            let opts = TrainOptions {
                progress: !a.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                quiet: a.quiet,
                stop_after: a.stop_after,
                ..Default::default()
            };
            reg.train(&cfg, &opts).context("training failed")?;
        }
        Command::Bench(BenchCommand::Step(a)) => {
            let v = bench::run_step(&a)?;
            println!("{}", serde_json::to_string(&v)?);
        }
        Command::Prepare(a) => prepare::run(&a)?,
        Command::Sweep(a) => sweep::run(reg, &a)?,
        Command::Report(a) => report::run(&a)?,
        Command::Presets { name } => match name {
            Some(n) => print!("{}", reg.preset(&n)?.describe()),
            None => {
                for p in reg.presets() {
                    println!("{:<22} {}", p.name, p.paper);
                }
                println!("\nShow one with `modbal presets NAME`; train with `modbal train --preset NAME --set dataset.root=DIR`.");
            }
        },
        Command::Estimate(a) => {
            let v = estimate::run(&a)?;
            println!("{}", serde_json::to_string(&v)?);
        }
        Command::Resume {
            run_dir,
            no_progress,
        } => {
            let opts = TrainOptions {
                progress: !no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                ..Default::default()
            };
            reg.resume(&run_dir, &opts)
                .with_context(|| format!("resuming {}", run_dir.display()))?;
        }
    }
    Ok(())
}
