//! `modbal`: the command-line interface.

mod estimate;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use modbal_data::{synth::DATASET_NAMES, DatasetConfig};
use modbal_train::{MethodConfig, RunConfig, TrainOptions, METHOD_NAMES};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "modbal",
    version,
    about = "Imbalanced multimodal learning on candle",
    long_about = "Train and evaluate multimodal classifiers whose modalities learn at different \
                  speeds, with the methods that rebalance them.\n\n\
                  Quick start (built-in benchmark, no download):\n  modbal train"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model and write runs/<name>/ (config.toml, metrics.jsonl, summary.json, plots,
    /// checkpoints).
    Train(TrainArgs),
    /// Run an information-theoretic estimator on arrays from .npy or CSV files; prints one JSON
    /// object {"estimator", "estimate", "n", "unit", ...}.
    Estimate(estimate::EstimateArgs),
    /// Continue an interrupted run from its last checkpoint.
    Resume {
        /// The run directory (holds config.toml and checkpoints/last).
        run_dir: PathBuf,
        /// Hide the progress bar.
        #[arg(long)]
        no_progress: bool,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Dataset: synth-av (default) or synth-vec.
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
    /// Override any config key: --set train.optimizer.lr=0.05 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print only errors.
    #[arg(long)]
    quiet: bool,
}

fn build_config(a: &TrainArgs) -> Result<RunConfig> {
    let mut cfg = match &a.config {
        Some(p) => RunConfig::from_file(p)?,
        None => RunConfig::default(),
    };
    if let Some(d) = &a.dataset {
        if !DATASET_NAMES.contains(&d.as_str()) {
            bail!(
                "unknown dataset {d:?}; valid choices: {}",
                DATASET_NAMES.join(", ")
            );
        }
        if d != cfg.dataset.name() {
            cfg.dataset = DatasetConfig::from_name(d)?;
            cfg.model.encoders.clear();
        }
    }
    if let Some(m) = &a.method {
        if !METHOD_NAMES.contains(&m.as_str()) {
            bail!(
                "unknown method {m:?}; valid choices: {}",
                METHOD_NAMES.join(", ")
            );
        }
        if m != cfg.method.name() {
            cfg.method = MethodConfig::from_name(m)?;
        }
    }
    if let Some(modality) = &a.modality {
        if cfg.method.name() != "unimodal" {
            bail!(
                "--modality is only for --method unimodal (method is {})",
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
    Ok(cfg.with_overrides(&a.sets)?)
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => {
            let cfg = build_config(&a)?;
            let opts = TrainOptions {
                progress: !a.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                quiet: a.quiet,
                ..Default::default()
            };
            modbal_train::train(&cfg, &opts).context("training failed")?;
        }
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
            modbal_train::resume(&run_dir, &opts)
                .with_context(|| format!("resuming {}", run_dir.display()))?;
        }
    }
    Ok(())
}
