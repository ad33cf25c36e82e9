#![allow(dead_code)]
//! Helpers shared by the integration tests.

use modbal::{EpochRecord, RunConfig, RunOutcome, TrainOptions};
use std::path::Path;

pub fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

/// Quiet, and stopping after `epochs` epochs of this call (the run stays resumable).
pub fn stop_after(epochs: usize) -> TrainOptions {
    TrainOptions {
        stop_after: Some(epochs),
        ..quiet()
    }
}

/// A small synth-vec run configuration (seconds to train).
pub fn small_vec(out: &Path, seed: u64, epochs: usize) -> RunConfig {
    RunConfig::default()
        .with_overrides(&[
            "dataset.name=synth-vec".into(),
            "dataset.train=480".into(),
            "dataset.val=160".into(),
            "dataset.test=160".into(),
            format!("seed={seed}"),
            format!("train.epochs={epochs}"),
            format!("out_dir={:?}", out.display().to_string()),
        ])
        .unwrap()
}

pub fn train(cfg: &RunConfig) -> RunOutcome {
    modbal::train(cfg, &quiet()).unwrap()
}

pub fn read_metrics(dir: &Path) -> Vec<EpochRecord> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A built-in method's `[method]` options parsed and checked by the registry.
#[derive(Debug)]
pub struct Built {
    /// The options with every default filled in (what `config.toml` records).
    pub resolved: toml::Table,
    /// The fusion head the method's model needs.
    pub fusion: modbal::encoders::FusionConfig,
}

pub fn build_method(name: &str, options: &toml::Table) -> modbal::core::Result<Built> {
    let plan = modbal::Registry::builtin().method(name, options)?;
    Ok(Built {
        resolved: plan.options()?,
        fusion: plan.fusion_head(),
    })
}

/// Every built-in method name.
pub fn method_names() -> Vec<String> {
    modbal::Registry::builtin()
        .method_names()
        .into_iter()
        .map(String::from)
        .collect()
}

/// Run the `modbal` binary: (exit code, stdout, stderr).
pub fn modbal_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modbal"))
        .args(args)
        .output()
        .expect("run modbal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
