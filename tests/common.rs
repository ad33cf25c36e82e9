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

/// `small_vec` trained with `method.name = method` and the extra `--set` overrides.
pub fn run_method(
    out: &Path,
    method: &str,
    seed: u64,
    epochs: usize,
    extra: &[&str],
) -> RunOutcome {
    let mut sets = vec![format!("method.name={method}")];
    sets.extend(extra.iter().map(|s| s.to_string()));
    train(&small_vec(out, seed, epochs).with_overrides(&sets).unwrap())
}

/// An MLP net (inputs 4, hidden 8, 3 classes) over the first `m` of `audio`, `visual`, `text`.
pub fn tiny_mlp_net(
    m: usize,
    fusion: &modbal::encoders::FusionConfig,
    rng: &mut modbal::tensors::SeededRng,
) -> modbal::encoders::MultimodalNet {
    use modbal::encoders::{EncoderConfig, ModalitySpec, MultimodalNet};
    let specs: Vec<_> = ["audio", "visual", "text"][..m]
        .iter()
        .map(|n| ModalitySpec::new(*n, EncoderConfig::Mlp { hidden: vec![8] }, &[4]))
        .collect();
    MultimodalNet::new(&specs, fusion, 3, rng, &candle_core::Device::Cpu).unwrap()
}

/// A batch of `b` samples for [`tiny_mlp_net`] in which `audio` carries the label (3 at the
/// label's position of 4) and the other `m − 1` modalities are N(0, 1) noise; labels `i % 3`.
pub fn audio_label_batch(
    m: usize,
    b: usize,
    rng: &mut modbal::tensors::SeededRng,
) -> modbal::core::Batch {
    use candle_core::{DType, Device, Tensor};
    let dev = Device::Cpu;
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
    let a: Vec<f32> = labels
        .iter()
        .flat_map(|&y| (0..4).map(move |j| if j == y as usize { 3.0 } else { 0.0 }))
        .collect();
    let mut inputs = vec![Tensor::from_vec(a, (b, 4), &dev).unwrap()];
    for _ in 1..m {
        inputs.push(rng.randn((b, 4), 0.0, 1.0, DType::F32, &dev).unwrap());
    }
    modbal::core::Batch {
        inputs,
        labels: Tensor::from_vec(labels, b, &dev).unwrap(),
        sample_ids: (0..b).collect(),
    }
}

/// All values of `t` as f64, flattened.
pub fn v64(t: &candle_core::Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A `[B, C]` tensor as f64 rows.
pub fn rows(t: &candle_core::Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// Resume is exact: a [`small_vec`] run (`seed`, `epochs`, `--set` overrides `sets`) stopped after
/// `stop` epochs and resumed writes the same `metrics.jsonl` bytes as the uninterrupted run; the
/// stop must have taken effect (the stopped run's metrics differ before the resume). `label`
/// names the case in failures.
pub fn assert_resume_matches(sets: &[String], seed: u64, epochs: usize, stop: usize, label: &str) {
    let read = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    let cfg = |out: &Path| small_vec(out, seed, epochs).with_overrides(sets).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = train(&cfg(a.path()));
    let part = modbal::train(&cfg(b.path()), &stop_after(stop)).unwrap();
    assert_ne!(
        read(&full.run_dir),
        read(&part.run_dir),
        "{label}: the stop took effect"
    );
    modbal::resume(&part.run_dir, &quiet()).unwrap();
    assert_eq!(read(&full.run_dir), read(&part.run_dir), "{label}");
}

/// The error of building built-in method `method` with the single option `key = value` (which
/// must be rejected: the call panics if it is accepted).
pub fn option_error(method: &str, key: &str, value: toml::Value) -> String {
    let mut t = toml::Table::new();
    t.insert(key.into(), value);
    build_method(method, &t)
        .map(|_| ())
        .expect_err(&format!("{method}: {key} should be rejected"))
        .to_string()
}

/// The trainable parameter `name` of `model` (panics naming it if absent).
pub fn var(model: &dyn modbal::core::MultimodalModel, name: &str) -> candle_core::Var {
    model
        .params()
        .trainable()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .1
}

/// Asserts `|a_i − b_i| ≤ tol` element-wise (and equal lengths).
pub fn assert_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

/// The features with every modality whose `keep` flag is false zeroed (a coalition's input to
/// the head).
pub fn mask_features(features: &[candle_core::Tensor], keep: &[bool]) -> Vec<candle_core::Tensor> {
    features
        .iter()
        .zip(keep)
        .map(|(f, &k)| {
            if k {
                f.clone()
            } else {
                f.zeros_like().unwrap()
            }
        })
        .collect()
}
