//! The run directory's files: fresh directories, JSON and JSONL writes, the checkpoint states
//! and `checkpoints/last` (see the crate docs for the layout).

use crate::record::EpochRecord;
use candle_core::Tensor;
use modbal_core::{Method, ModbalError, MultimodalModel, Result};
use modbal_tensors::{Optimizer, RngState};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File of `checkpoints/last` holding [`Method::state_tensors`] (absent when a method has none).
pub(crate) const METHOD_TENSORS: &str = "method.safetensors";

#[derive(Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    /// Epochs completed.
    pub(crate) epochs_done: usize,
    pub(crate) step: usize,
    pub(crate) rng: RngState,
    pub(crate) method: serde_json::Value,
    pub(crate) best_epoch: Option<usize>,
    /// Validation accuracy of `best_epoch`; `None` (JSON `null`) while no selectable epoch has
    /// been validated (e.g. UDI inside its unimodal stages). Older checkpoints hold a number.
    pub(crate) best_val_acc: Option<f64>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct BestState {
    pub(crate) epoch: usize,
    pub(crate) method: serde_json::Value,
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)?;
    std::fs::write(path, s + "\n").map_err(|e| ModbalError::io("writing", path, e))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
    serde_json::from_str(&s)
        .map_err(|e| ModbalError::Serde(format!("parsing {}: {e}", path.display())))
}

pub(crate) fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A fresh directory for a new run: `base`, or `base-1`, `base-2`… if it already holds a run
/// (earlier results are never overwritten).
pub fn fresh_run_dir(base: &Path) -> Result<PathBuf> {
    let holds_run = |p: &Path| p.join("config.toml").exists() || p.join("metrics.jsonl").exists();
    let mut dir = base.to_path_buf();
    let mut i = 1;
    while holds_run(&dir) {
        dir = PathBuf::from(format!("{}-{i}", base.display()));
        i += 1;
    }
    std::fs::create_dir_all(&dir).map_err(|e| ModbalError::io("creating", &dir, e))?;
    Ok(dir)
}

/// Rewrite a JSONL file of [`EpochRecord`]s keeping the lines of epochs `< epochs_done`.
pub(crate) fn keep_completed_epochs(path: &Path, epochs_done: usize) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<EpochRecord>(l)
                .map(|r| r.epoch < epochs_done)
                .unwrap_or(false)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    std::fs::write(path, body).map_err(|e| ModbalError::io("writing", path, e))
}

pub(crate) fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| ModbalError::io("opening", path, e))?;
    writeln!(f, "{line}").map_err(|e| ModbalError::io("writing", path, e))
}

pub(crate) fn save_checkpoint(
    dir: &Path,
    model: &dyn MultimodalModel,
    method: &dyn Method,
    opt: &dyn Optimizer,
    st: &CheckpointState,
) -> Result<()> {
    let ck = dir.join("checkpoints");
    let tmp = ck.join("last.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ModbalError::io("creating", &tmp, e))?;
    model.params().save(tmp.join("model.safetensors"))?;
    let method_tensors: HashMap<String, Tensor> = method.state_tensors()?.into_iter().collect();
    if !method_tensors.is_empty() {
        candle_core::safetensors::save(&method_tensors, tmp.join(METHOD_TENSORS))?;
    }
    opt.state().save(&tmp, "optimizer")?;
    write_json(&tmp.join("state.json"), st)?;
    let last = ck.join("last");
    let _ = std::fs::remove_dir_all(&last);
    std::fs::rename(&tmp, &last).map_err(|e| ModbalError::io("renaming", &tmp, e))
}
