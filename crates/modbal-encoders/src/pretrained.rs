//! Pretrained weights: where they come from and how they enter a [`ParamStore`].
//!
//! # Resolution ([`WeightsSource::resolve`])
//! A file (`config.json`, `model.safetensors`, `vocab.txt`, …) of a Hugging Face repository
//! (`bert-base-uncased`, `timm/resnet18.tv_in1k`) is looked for, in this order:
//! 1. in the explicit directory `weights` (`--weights DIR`), when one is given: `DIR/<file>`;
//! 2. in the local Hugging Face hub cache, through `hf-hub`'s cache layout
//!    `<cache>/models--<org>--<name>/refs/<revision>` → `snapshots/<commit>/<file>` (a revision
//!    that is already a commit hash is looked up directly under `snapshots/`).
//!    `<cache>` is `$HF_HUB_CACHE` if set, else `$HUGGINGFACE_HUB_CACHE` (the older name), else
//!    `$HF_HOME/hub`, else `~/.cache/huggingface/hub` — the same order as `huggingface_hub`.
//!
//! Nothing is ever downloaded: modbal works with `HF_HUB_OFFLINE=1` and on machines without
//! network. Fetch the files once with `huggingface-cli download <repo> <files>` (or
//! `hf download`), or copy them into a directory and pass it as `weights`. When neither place
//! has a file, the error names both places and the command that fetches it.
//!
//! # Loading ([`load_into_store`])
//! A safetensors file is read into a name → tensor map, each name is mapped by a function to
//! the model's own name (or dropped), and every parameter and buffer of the model under a
//! prefix is set from it. Missing and unexpected tensors and shape mismatches are errors
//! naming the tensor and the file.

use crate::error::{config_err, EncoderError, Result};
use candle_core::{Device, Tensor};
use modbal_tensors::ParamStore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where pretrained files come from: an explicit directory and/or a hub repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsSource {
    /// Hugging Face repository id, e.g. `bert-base-uncased`.
    pub repo: String,
    /// Revision (branch, tag or commit hash) in the local cache. Default `main`.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Explicit directory holding the files (`--weights DIR`); searched first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
}

/// Default revision: `main`.
pub fn default_revision() -> String {
    "main".to_string()
}

/// The local Hugging Face hub cache directory: `$HF_HUB_CACHE`, `$HUGGINGFACE_HUB_CACHE`,
/// `$HF_HOME/hub` or `~/.cache/huggingface/hub`, the first that is set.
pub fn hf_cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return PathBuf::from(p);
    }
    if let Some(h) = var("HF_HOME") {
        return PathBuf::from(h).join("hub");
    }
    // `hf_hub::Cache::default()` is `~/.cache/huggingface/hub`.
    hf_hub::Cache::default().path().clone()
}

impl WeightsSource {
    /// A source for `repo` at revision `main`, with an optional explicit directory.
    pub fn new(repo: impl Into<String>, weights: Option<PathBuf>) -> Self {
        Self {
            repo: repo.into(),
            revision: default_revision(),
            weights,
        }
    }

    /// Path of `file` (see the [module docs](self) for the search order), or an error naming
    /// the explicit directory and the cache location that were searched.
    pub fn resolve(&self, file: &str) -> Result<PathBuf> {
        self.resolve_in(file, &hf_cache_dir())
    }

    /// The first of `files` that [`WeightsSource::resolve`] finds (e.g. `model.safetensors`,
    /// then `pytorch_model.safetensors`); the error lists all of them.
    pub fn resolve_any(&self, files: &[&str]) -> Result<PathBuf> {
        let cache = hf_cache_dir();
        for f in files {
            if let Ok(p) = self.resolve_in(f, &cache) {
                return Ok(p);
            }
        }
        self.resolve_in(&files.join(" or "), &cache)
    }

    /// [`WeightsSource::resolve`] against an explicit cache directory.
    pub fn resolve_in(&self, file: &str, cache: &Path) -> Result<PathBuf> {
        if let Some(dir) = &self.weights {
            let p = dir.join(file);
            if p.is_file() {
                return Ok(p);
            }
        }
        let repo = hf_hub::Repo::with_revision(
            self.repo.clone(),
            hf_hub::RepoType::Model,
            self.revision.clone(),
        );
        let cache_repo = hf_hub::Cache::new(cache.to_path_buf()).repo(repo.clone());
        if let Some(p) = cache_repo.get(file) {
            return Ok(p);
        }
        // A revision given as a commit hash has no ref file: look at the snapshot directly.
        let direct = cache
            .join(repo.folder_name())
            .join("snapshots")
            .join(&self.revision)
            .join(file);
        if direct.is_file() {
            return Ok(direct);
        }
        let explicit = match &self.weights {
            Some(d) => format!("not in the weights directory {}", d.display()),
            None => "no weights directory given (--weights DIR)".to_string(),
        };
        config_err(format!(
            "pretrained file {file:?} of {:?} (revision {:?}) not found: {explicit}, and not in the Hugging Face cache {} (looked for {}/refs/{} → snapshots/<commit>/{file}; cache from HF_HUB_CACHE / HF_HOME). Fetch it once with `huggingface-cli download {} {file}` or pass --weights DIR holding {file}",
            self.repo,
            self.revision,
            cache.display(),
            cache.join(repo.folder_name()).display(),
            self.revision,
            self.repo,
        ))
    }
}

/// Read every tensor of a safetensors file onto `device` (errors name the file).
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| {
        EncoderError::Config(format!(
            "cannot read safetensors file {}: {e}",
            path.display()
        ))
    })
}

/// What [`load_into_store`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Model names that were set.
    pub loaded: Vec<String>,
    /// File names that the mapping dropped (e.g. a classifier head, `num_batches_tracked`).
    pub ignored: Vec<String>,
}

/// Set every entry (parameters and buffers) of `store` under `prefix` from `tensors`.
///
/// `map(file_name)` returns the model-relative name (without `prefix`) a file tensor provides,
/// or `None` to drop it; `adapt(model_name, tensor, expected_dims)` may reshape or convert a
/// tensor (e.g. a stem adapted to fewer input channels) and must return a tensor of
/// `expected_dims`. Errors (naming `file`): two file tensors mapping to one name, a model entry
/// the file lacks, a mapped name the model lacks, a shape mismatch.
pub fn load_into_store(
    store: &ParamStore,
    prefix: &str,
    tensors: HashMap<String, Tensor>,
    file: &Path,
    map: impl Fn(&str) -> Option<String>,
    adapt: impl Fn(&str, Tensor, &[usize]) -> Result<Tensor>,
) -> Result<LoadReport> {
    let mut by_model: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
    let mut report = LoadReport::default();
    let mut names: Vec<(String, Tensor)> = tensors.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (fname, t) in names {
        match map(&fname) {
            Some(m) => {
                if let Some((other, _)) = by_model.get(&m) {
                    return config_err(format!(
                        "{}: tensors {other:?} and {fname:?} both map to parameter {m:?}",
                        file.display()
                    ));
                }
                by_model.insert(m, (fname, t));
            }
            None => report.ignored.push(fname),
        }
    }
    let full = |m: &str| {
        if prefix.is_empty() {
            m.to_string()
        } else {
            format!("{prefix}.{m}")
        }
    };
    let entries: BTreeMap<String, candle_core::Var> = store
        .all()
        .into_iter()
        .filter(|(n, _)| modbal_tensors::params::in_group(n, prefix))
        .collect();
    if let Some(extra) = by_model.keys().find(|m| !entries.contains_key(&full(m))) {
        let (fname, _) = &by_model[extra];
        return config_err(format!(
            "{}: tensor {fname:?} (as {extra:?}) has no counterpart in the model under {prefix:?}",
            file.display()
        ));
    }
    for (name, var) in &entries {
        let rel = if prefix.is_empty() {
            name.as_str()
        } else {
            &name[prefix.len() + 1..]
        };
        let Some((fname, t)) = by_model.remove(rel) else {
            return config_err(format!(
                "{} lacks a tensor for parameter {rel:?} (model name {name:?})",
                file.display()
            ));
        };
        let t = adapt(rel, t, var.dims())?;
        if t.dims() != var.dims() {
            return config_err(format!(
                "{}: tensor {fname:?} has shape {:?}, parameter {rel:?} expects {:?}",
                file.display(),
                t.dims(),
                var.dims()
            ));
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        report.loaded.push(name.clone());
    }
    Ok(report)
}
