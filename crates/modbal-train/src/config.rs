//! The run configuration: one TOML document, fully resolved and written to
//! `runs/<name>/config.toml`, reloadable with `--config`.
//!
//! Overrides use dotted keys: `--set train.epochs=5`, `--set train.optimizer.lr=0.01`,
//! `--set dataset.visual_snr=0.8`. A value is parsed as TOML (`5`, `0.01`, `true`, `[1, 2]`,
//! `"text"`) and taken as a plain string if it is not valid TOML. Unknown keys are rejected,
//! naming the key, wherever they occur.

use modbal_core::{ModbalError, Result};
use modbal_data::noise::NoiseConfig;
use modbal_data::{DatasetConfig, Splits};
use modbal_encoders::EncoderConfig;
use modbal_tensors::{OptimizerConfig, ScheduleConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The method and its options (`[method] name = "concat"`, then the method's own keys).
///
/// The options are resolved by `modbal_methods::build`, which rejects unknown keys and fills
/// the defaults that `config.toml` records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodConfig {
    pub name: String,
    #[serde(flatten)]
    pub options: toml::Table,
}

pub use modbal_methods::METHOD_NAMES;

impl MethodConfig {
    /// The default configuration of a method by name (errors on unknown names).
    pub fn from_name(name: &str) -> Result<Self> {
        let built = modbal_methods::build(name, &toml::Table::new())?;
        Ok(Self {
            name: name.to_string(),
            options: built.resolved,
        })
    }

    /// A method with explicit options (validated when the run starts).
    pub fn with_options(name: &str, options: &[(&str, toml::Value)]) -> Self {
        Self {
            name: name.to_string(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// `unimodal` on one modality.
    pub fn unimodal(modality: &str) -> Self {
        Self::with_options(
            "unimodal",
            &[("modality", toml::Value::String(modality.into()))],
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instantiate the method (validates the options).
    pub fn build(&self) -> Result<modbal_methods::Built> {
        modbal_methods::build(&self.name, &self.options)
    }
}

/// A dataset of `modbal-text` (`food101`, `mvsa`, `cmu-mosei`), parsed from the opaque options
/// table that [`DatasetConfig`] keeps for it (modbal-data cannot name these types).
#[derive(Clone, Debug, PartialEq)]
pub enum TextDatasetConfig {
    Food101(modbal_text::Food101Config),
    Mvsa(modbal_text::MvsaConfig),
    CmuMosei(modbal_text::CmuMoseiConfig),
}

const TEXT_HINT: &str = "e.g. --set dataset.text.kind=glove_vectors --set dataset.text.glove=FILE \
     (or kind = \"wordpiece\" with tokenizer = FILE, or \"glove_ids\"); see datasets/<name>/README.md";

impl TextDatasetConfig {
    /// The typed options of `d`, `None` for the datasets of modbal-data. Errors name the
    /// offending key (`dataset.<key>`), including unknown keys and missing required ones.
    pub fn parse(d: &DatasetConfig) -> Result<Option<Self>> {
        let Some(t) = d.external_options() else {
            return Ok(None);
        };
        let name = d.name();
        let err = |e: toml::de::Error| {
            ModbalError::Config(format!("dataset ({name}): {}", e.message().trim()))
        };
        let required = |keys: &[(&str, &str)]| -> Result<()> {
            for (k, hint) in keys {
                if !t.contains_key(*k) {
                    return Err(ModbalError::Config(format!(
                        "dataset.{k} is required for dataset {name:?}: {hint}"
                    )));
                }
            }
            Ok(())
        };
        let v = toml::Value::Table(t.clone());
        let root = "--set dataset.root=DIR (see datasets/<name>/README.md for the layout)";
        Ok(Some(match d {
            DatasetConfig::Food101(_) => {
                required(&[("root", root), ("text", TEXT_HINT)])?;
                TextDatasetConfig::Food101(v.try_into().map_err(err)?)
            }
            DatasetConfig::Mvsa(_) => {
                required(&[("root", root), ("text", TEXT_HINT)])?;
                TextDatasetConfig::Mvsa(v.try_into().map_err(err)?)
            }
            DatasetConfig::CmuMosei(_) => {
                required(&[(
                    "path",
                    "--set dataset.path=FILE (a MulT-style pickle, e.g. mosei_senti_data.pkl, or its directory)",
                )])?;
                TextDatasetConfig::CmuMosei(v.try_into().map_err(err)?)
            }
            _ => unreachable!("external_options is Some only for modbal-text datasets"),
        }))
    }

    /// The options with every default filled in (what `config.toml` records).
    pub fn to_table(&self) -> Result<toml::Table> {
        let r = match self {
            TextDatasetConfig::Food101(c) => toml::Table::try_from(c),
            TextDatasetConfig::Mvsa(c) => toml::Table::try_from(c),
            TextDatasetConfig::CmuMosei(c) => toml::Table::try_from(c),
        };
        r.map_err(|e| ModbalError::Serde(e.to_string()))
    }

    /// How the dataset encodes its `text` modality (`None` for CMU-MOSEI's GloVe sequences).
    pub fn text_encoding(&self) -> Option<&modbal_text::TextEncoding> {
        match self {
            TextDatasetConfig::Food101(c) => Some(&c.text),
            TextDatasetConfig::Mvsa(c) => Some(&c.text),
            TextDatasetConfig::CmuMosei(_) => None,
        }
    }

    /// Build the three splits.
    pub fn load(&self) -> Result<Splits> {
        match self {
            TextDatasetConfig::Food101(c) => modbal_text::Food101::splits(c),
            TextDatasetConfig::Mvsa(c) => modbal_text::MvsaSingle::splits(c),
            TextDatasetConfig::CmuMosei(c) => modbal_text::CmuMosei::splits(c),
        }
    }
}

/// Build the splits of any dataset of the run config (modbal-data's and modbal-text's).
pub fn load_dataset(d: &DatasetConfig) -> Result<Splits> {
    match TextDatasetConfig::parse(d)? {
        Some(t) => t.load(),
        None => d.load(),
    }
}

/// `d` with the defaults of a modbal-text dataset's options filled in (others unchanged).
fn resolve_dataset(d: &DatasetConfig) -> Result<DatasetConfig> {
    let Some(t) = TextDatasetConfig::parse(d)? else {
        return Ok(d.clone());
    };
    let table = t.to_table()?;
    Ok(match d {
        DatasetConfig::Food101(_) => DatasetConfig::Food101(table),
        DatasetConfig::Mvsa(_) => DatasetConfig::Mvsa(table),
        _ => DatasetConfig::CmuMosei(table),
    })
}

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
    /// Batches assembled ahead on the worker thread.
    pub prefetch: usize,
    /// Save `checkpoints/last` every this many epochs (and always after the last epoch).
    pub checkpoint_every: usize,
    /// Where the run trains: `"cpu"` (default), `"cuda"` or `"cuda:N"` ([`DeviceConfig`]).
    pub device: DeviceConfig,
    /// Also evaluate the test split after every epoch (`test_curve.jsonl`) and report the best
    /// test epoch in `summary.json` (`test_curve`, clearly labelled). Nothing in training reads
    /// it: the run's decisions and headline stay on validation. Default false.
    pub report_test_curve: bool,
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
            report_test_curve: false,
        }
    }
}

/// Model options: encoders per modality (defaults chosen per dataset when absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub encoders: BTreeMap<String, EncoderConfig>,
}

/// Everything that defines a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Run name: the directory `out_dir/name`. Empty: `<dataset>-<method>-s<seed>`.
    pub name: String,
    pub seed: u64,
    pub out_dir: PathBuf,
    pub dataset: DatasetConfig,
    pub method: MethodConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// The paper-protocol preset the run started from (`--preset`, [`crate::presets`]); absent
    /// when none. Informational: the preset's values are already in the other sections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Robustness protocol (`[noise]`, `modbal_data::noise`): corruption of the test split (and
    /// the training / validation splits if asked). Absent: clean data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseConfig>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            seed: 0,
            out_dir: PathBuf::from("runs"),
            dataset: DatasetConfig::default(),
            method: MethodConfig {
                name: "concat".into(),
                options: toml::Table::new(),
            },
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            preset: None,
            noise: None,
        }
    }
}

/// Collects dotted key paths of every leaf of a TOML value (arrays are leaves).
fn key_paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(t) = v {
        for (k, v) in t {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if let toml::Value::Table(_) = v {
                key_paths(v, &p, out);
            } else {
                out.push(p);
            }
        }
    }
}

fn lookup<'a>(v: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    path.split('.').try_fold(v, |v, k| v.as_table()?.get(k))
}

/// Parse a `--set` value: TOML literal, else a string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Set `parts` (a dotted path) in `v`, creating tables on the way.
fn set_path(v: &mut toml::Value, parts: &[&str], value: toml::Value, key: &str) -> Result<()> {
    let table = v.as_table_mut().ok_or_else(|| {
        ModbalError::Config(format!(
            "--set {key}: a parent of {:?} is not a table",
            parts[0]
        ))
    })?;
    if parts.len() == 1 {
        table.insert(parts[0].to_string(), value);
        return Ok(());
    }
    let child = table
        .entry(parts[0].to_string())
        .or_insert_with(|| toml::Value::Table(Default::default()));
    set_path(child, &parts[1..], value, key)
}

impl RunConfig {
    /// Deserialize from a TOML value, rejecting unknown keys (named).
    pub fn from_toml_value(v: toml::Value) -> Result<Self> {
        let mut cfg: RunConfig = v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| ModbalError::Config(e.to_string().trim().to_string()))?;
        // modbal-text datasets: typed parse (unknown / missing keys named), defaults filled.
        cfg.dataset = resolve_dataset(&cfg.dataset)?;
        // serde cannot deny unknown keys inside tagged enums / flattened structs: compare the
        // user's keys with the keys of the resolved config instead.
        let resolved =
            toml::Value::try_from(&cfg).map_err(|e| ModbalError::Serde(e.to_string()))?;
        let mut keys = Vec::new();
        key_paths(&v, "", &mut keys);
        for k in keys {
            if lookup(&resolved, &k).is_none() {
                return Err(ModbalError::Config(format!("unknown key {k:?}")));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
        let v: toml::Value = text
            .parse::<toml::Table>()
            .map(toml::Value::Table)
            .map_err(|e| {
                ModbalError::Config(format!("{}: {}", path.display(), e.to_string().trim()))
            })?;
        Self::from_toml_value(v).map_err(|e| match e {
            ModbalError::Config(m) => ModbalError::Config(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Apply `key=value` overrides (dotted keys) and re-validate.
    pub fn with_overrides(&self, sets: &[String]) -> Result<Self> {
        let mut v = toml::Value::try_from(self).map_err(|e| ModbalError::Serde(e.to_string()))?;
        for s in sets {
            let Some((key, raw)) = s.split_once('=') else {
                return Err(ModbalError::Config(format!(
                    "malformed --set {s:?}: expected key=value, e.g. train.epochs=5"
                )));
            };
            let key = key.trim();
            if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
                return Err(ModbalError::Config(format!(
                    "malformed --set {s:?}: empty key"
                )));
            }
            let parts: Vec<&str> = key.split('.').collect();
            let value = parse_value(raw.trim());
            // Switching the kind of a tagged section (`dataset.name`, `method.name`,
            // `train.optimizer.kind`, `model.encoders.audio.kind`…) starts that section from the
            // new kind's defaults: the old kind's options do not carry over.
            if let [parents @ .., tag @ ("name" | "kind")] = parts.as_slice() {
                if !parents.is_empty() && lookup(&v, key) != Some(&value) {
                    let mut fresh = toml::Table::new();
                    fresh.insert(tag.to_string(), value);
                    set_path(&mut v, parents, toml::Value::Table(fresh), key)?;
                    if parents == ["dataset"] {
                        // Encoders are chosen per dataset.
                        if let Some(t) = v.as_table_mut() {
                            t.remove("model");
                        }
                    }
                    continue;
                }
            }
            set_path(&mut v, &parts, value, key)?;
        }
        Self::from_toml_value(v)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        if t.epochs == 0 {
            return Err(ModbalError::Config("train.epochs must be > 0".into()));
        }
        if t.batch_size == 0 || t.eval_batch_size == 0 {
            return Err(ModbalError::Config(
                "train.batch_size and train.eval_batch_size must be > 0".into(),
            ));
        }
        if t.checkpoint_every == 0 {
            return Err(ModbalError::Config(
                "train.checkpoint_every must be > 0".into(),
            ));
        }
        if let Some(c) = t.clip_grad_norm {
            if c.is_nan() || c <= 0.0 {
                return Err(ModbalError::Config(format!(
                    "train.clip_grad_norm must be > 0, got {c}"
                )));
            }
        }
        self.method.build()?;
        TextDatasetConfig::parse(&self.dataset)?;
        if let Some(n) = &self.noise {
            n.validate()?;
        }
        t.optimizer
            .validate()
            .map_err(|e| ModbalError::Config(format!("train.optimizer: {e}")))?;
        t.schedule
            .validate()
            .map_err(|e| ModbalError::Config(format!("train.{e}")))?;
        if t.device != DeviceConfig::Cpu {
            return Err(ModbalError::Config(format!(
                "train.device = \"{}\": training runs on the CPU only so far (the `cuda` \
                 feature, `cargo build --release --features cuda` / `just build-cuda`, builds the \
                 CUDA kernels of modbal-kernels, but the training loop has no CUDA path yet; \
                 docs/cuda.md)",
                t.device
            )));
        }
        Ok(())
    }

    /// The run directory name (`<dataset>-<method>-s<seed>`, then `-<noise tag>` with noise).
    pub fn run_name(&self) -> String {
        if self.name.is_empty() {
            let mut n = format!(
                "{}-{}-s{}",
                self.dataset.name(),
                self.method.name(),
                self.seed
            );
            if let Some(noise) = &self.noise {
                n.push('-');
                n.push_str(&noise.tag());
            }
            n
        } else {
            self.name.clone()
        }
    }

    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| ModbalError::Serde(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_roundtrip() {
        let c = RunConfig::default()
            .with_overrides(&[
                "train.epochs=3".into(),
                "train.optimizer.lr=0.05".into(),
                "dataset.classes=4".into(),
                "method.name=unimodal".into(),
                "method.modality=visual".into(),
            ])
            .unwrap();
        assert_eq!(c.train.epochs, 3);
        let a = RunConfig::default()
            .with_overrides(&[
                "train.optimizer.kind=adamw".into(),
                "train.optimizer.lr=0.002".into(),
                "train.schedule.schedule.kind=cosine".into(),
                "train.schedule.schedule.t_max=20".into(),
            ])
            .unwrap();
        assert_eq!(
            a.train.optimizer,
            modbal_tensors::OptimizerConfig::Adamw(modbal_tensors::AdamWConfig {
                lr: 0.002,
                ..Default::default()
            })
        );
        assert_eq!(c.train.optimizer.lr(), 0.05);
        assert_eq!(c.method, MethodConfig::unimodal("visual"));
        let text = c.to_toml_string().unwrap();
        let back = RunConfig::from_toml_value(toml::Value::Table(text.parse().unwrap())).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn devices_parse_print_and_are_checked() {
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
        let c = RunConfig::default()
            .with_overrides(&["train.device=\"cpu\"".into()])
            .unwrap();
        assert_eq!(c.train.device, DeviceConfig::Cpu);
        assert!(c.to_toml_string().unwrap().contains("device = \"cpu\""));
        let e = RunConfig::default()
            .with_overrides(&["train.device=\"cuda:1\"".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cuda:1") && e.contains("--features cuda"), "{e}");
        let e = RunConfig::default()
            .with_overrides(&["train.device=\"tpu\"".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tpu"), "{e}");
    }

    #[test]
    fn bad_overrides_are_named() {
        let c = RunConfig::default();
        let e = c
            .with_overrides(&["train.epochs".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("malformed --set") && e.contains("train.epochs"),
            "{e}"
        );
        let e = c
            .with_overrides(&["train.epoks=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("epoks"), "{e}");
        let e = c
            .with_overrides(&["dataset.clases=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("dataset.clases"), "{e}");
        let e = c
            .with_overrides(&["train.epochs=zero".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("epochs"), "{e}");
        let e = c
            .with_overrides(&["method.name=magic".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("magic"), "{e}");
        let e = c
            .with_overrides(&["train.epochs=0".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.epochs must be > 0"), "{e}");
    }
}
