//! The run configuration: one TOML document, fully resolved and written to
//! `runs/<name>/config.toml`, reloadable with `--config`.
//!
//! Overrides use dotted keys: `--set train.epochs=5`, `--set train.optimizer.lr=0.01`,
//! `--set dataset.visual_snr=0.8`. A value is parsed as TOML (`5`, `0.01`, `true`, `[1, 2]`,
//! `"text"`) and taken as a plain string if it is not valid TOML. Unknown keys are rejected,
//! naming the key, wherever they occur.
//!
//! The `[method]`, `[dataset]` and `[model.encoders.*]` sections are resolved by a
//! [`Registry`]: the plain functions use [`Registry::builtin`], the `_in` ones the registry
//! given (a program with its own methods, datasets or encoders).

use crate::presets::Preset;
use crate::registry::{EncoderChoice, Registry};
use modbal_core::{ModbalError, Result};
use modbal_data::noise::NoiseConfig;
use modbal_encoders::FusionConfig;
use modbal_train::TrainConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

static BUILTIN: LazyLock<Registry> = LazyLock::new(Registry::builtin);

/// The registry the plain (non-`_in`) functions use.
pub(crate) fn builtin() -> &'static Registry {
    &BUILTIN
}

/// The method and its options (`[method] name = "concat"`, then the method's own keys),
/// resolved by the registry's method of that name (unknown keys rejected, defaults filled in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodConfig {
    pub name: String,
    #[serde(flatten)]
    pub options: toml::Table,
}

impl MethodConfig {
    /// The default configuration of a built-in method by name (errors on unknown names).
    pub fn from_name(name: &str) -> Result<Self> {
        Self::from_name_in(builtin(), name)
    }

    /// The default configuration of method `name` of `reg`.
    pub fn from_name_in(reg: &Registry, name: &str) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            options: reg.method(name, &toml::Table::new())?.options()?,
        })
    }

    /// A method with explicit options (checked when the config is).
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
}

/// The dataset and its options (`[dataset] name = "synth-av"`, then the dataset's own keys),
/// resolved by the registry's dataset of that name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetChoice {
    pub name: String,
    #[serde(flatten)]
    pub options: toml::Table,
}

impl Default for DatasetChoice {
    fn default() -> Self {
        Self {
            name: "synth-av".into(),
            options: crate::registry::to_table(&modbal_data::SynthAvConfig::default())
                .expect("synth-av options serialise"),
        }
    }
}

impl DatasetChoice {
    /// Dataset `name` with no options given (its defaults are filled in when the config is
    /// checked; datasets that need a root or a path say so then).
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            options: toml::Table::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Model options: encoders per modality (defaults chosen per dataset when absent) and the
/// fusion head.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub encoders: BTreeMap<String, EncoderChoice>,
    /// The fusion head (`[model.fusion] kind = "film"`, `--set model.fusion.kind=film`; options
    /// as [`FusionConfig`]). Absent: the method's own head
    /// (`modbal_methods::params::MethodParams::fusion`). Present: the method must support it
    /// (`MethodParams::check_fusion`, checked when the config is); `docs/fusion.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionConfig>,
}

/// Everything that defines a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Run name: the directory `out_dir/name`. Empty: `<dataset>-<method>-s<seed>`.
    pub name: String,
    pub seed: u64,
    pub out_dir: PathBuf,
    pub dataset: DatasetChoice,
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
            dataset: DatasetChoice::default(),
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
pub(crate) fn parse_value(raw: &str) -> toml::Value {
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

/// A run name is one directory name inside `out_dir`: it cannot climb out of it or point
/// elsewhere (`../x`, `/tmp/x`, `a/b`).
fn check_run_name(name: &str) -> Result<()> {
    let bad = name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || Path::new(name).is_absolute();
    if bad {
        return Err(ModbalError::Config(format!(
            "name {name:?}: a run name is one directory name inside out_dir (no '/', '\\', '..'); \
             use --out to choose where runs go"
        )));
    }
    Ok(())
}

impl RunConfig {
    /// Deserialize from a TOML value, rejecting unknown keys (named), with the built-in names.
    pub fn from_toml_value(v: toml::Value) -> Result<Self> {
        Self::from_toml_value_in(builtin(), v)
    }

    /// [`RunConfig::from_toml_value`] with the names of `reg`: the method's, dataset's and
    /// registered encoders' options are parsed and checked once and recorded with their
    /// defaults filled in.
    pub fn from_toml_value_in(reg: &Registry, v: toml::Value) -> Result<Self> {
        let mut cfg: RunConfig = v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| ModbalError::Config(e.to_string().trim().to_string()))?;
        cfg.resolve_options(reg)?;
        // serde cannot deny unknown keys inside flattened tables: compare the user's keys with
        // the keys of the resolved config instead.
        let resolved =
            toml::Value::try_from(&cfg).map_err(|e| ModbalError::Serde(e.to_string()))?;
        let mut keys = Vec::new();
        key_paths(&v, "", &mut keys);
        for k in keys {
            if lookup(&resolved, &k).is_none() {
                return Err(ModbalError::Config(format!("unknown key {k:?}")));
            }
        }
        Ok(cfg)
    }

    /// Parse every registry-owned section (method, dataset, registered encoders), check them
    /// and the rest, and record the options with their defaults.
    fn resolve_options(&mut self, reg: &Registry) -> Result<()> {
        check_run_name(&self.name)?;
        self.train.check()?;
        let method = reg.method(&self.method.name, &self.method.options)?;
        self.method.options = method.options()?;
        if let Some(f) = &self.model.fusion {
            method.check_fusion(f)?;
        }
        self.dataset.options = reg
            .dataset(&self.dataset.name, &self.dataset.options)?
            .options()?;
        for (m, e) in self.model.encoders.iter_mut() {
            if let EncoderChoice::Custom { kind, options } = e {
                *options = reg
                    .encoder(kind, options)
                    .and_then(|p| p.options())
                    .map_err(|e| ModbalError::Config(format!("model.encoders.{m}: {e}")))?;
            }
        }
        if let Some(n) = &self.noise {
            n.validate()?;
        }
        Ok(())
    }

    /// Read a config file (built-in names).
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_in(builtin(), path)
    }

    /// Read a config file with the names of `reg`.
    pub fn from_file_in(reg: &Registry, path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
        if text.trim().is_empty() {
            // Not the default config: an empty file is a damaged or wrong one.
            return Err(ModbalError::Config(format!(
                "{} is empty (a run's config.toml is never empty: was it truncated?)",
                path.display()
            )));
        }
        let v: toml::Value = text
            .parse::<toml::Table>()
            .map(toml::Value::Table)
            .map_err(|e| {
                ModbalError::Config(format!("{}: {}", path.display(), e.to_string().trim()))
            })?;
        Self::from_toml_value_in(reg, v).map_err(|e| match e {
            ModbalError::Config(m) => ModbalError::Config(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Apply `key=value` overrides (dotted keys) and re-validate.
    pub fn with_overrides(&self, sets: &[String]) -> Result<Self> {
        self.with_overrides_in(builtin(), sets)
    }

    /// [`RunConfig::with_overrides`] with the names of `reg`.
    pub fn with_overrides_in(&self, reg: &Registry, sets: &[String]) -> Result<Self> {
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
                        // Encoders are chosen per dataset (the fusion head stays).
                        if let Some(t) = v.get_mut("model").and_then(|m| m.as_table_mut()) {
                            t.remove("encoders");
                        }
                    }
                    continue;
                }
            }
            set_path(&mut v, &parts, value, key)?;
        }
        Self::from_toml_value_in(reg, v)
    }

    /// Checks the whole config against the built-in names.
    pub fn validate(&self) -> Result<()> {
        self.validate_in(builtin())
    }

    /// Checks the whole config against the names of `reg`.
    pub fn validate_in(&self, reg: &Registry) -> Result<()> {
        self.clone().resolve_options(reg)
    }

    /// The run directory name (`<dataset>-<method>-s<seed>`, then `-<noise tag>` with noise).
    pub fn run_name(&self) -> String {
        if self.name.is_empty() {
            let mut n = format!("{}-{}-s{}", self.dataset.name, self.method.name, self.seed);
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

impl Preset {
    /// `cfg` with the preset applied. `method`: the method the user asked for (`--method`), if
    /// any; when it differs from the preset's, the preset's `method.*` keys are skipped and
    /// `method.name` is set to it. The result records the preset's name.
    pub fn apply(&self, cfg: &RunConfig, method: Option<&str>) -> Result<RunConfig> {
        self.apply_in(builtin(), cfg, method)
    }

    /// [`Preset::apply`] with the names of `reg`.
    pub fn apply_in(
        &self,
        reg: &Registry,
        cfg: &RunConfig,
        method: Option<&str>,
    ) -> Result<RunConfig> {
        self.apply_with(reg, cfg, method, &[])
    }

    /// [`Preset::apply_in`], then the user's `--set` overrides `sets`, checked once at the end:
    /// a preset whose dataset needs keys the preset cannot know (MVSA's `dataset.root` and
    /// `dataset.text`) applies when the user gives them (`--preset eau/mvsa --set
    /// dataset.root=DIR --set dataset.text.kind=...`).
    pub fn apply_with(
        &self,
        reg: &Registry,
        cfg: &RunConfig,
        method: Option<&str>,
        sets: &[String],
    ) -> Result<RunConfig> {
        let other_method = method.filter(|m| Some(*m) != self.method());
        let mut preset_sets: Vec<String> = Vec::new();
        for x in self.values {
            if other_method.is_some() && x.key.starts_with("method.") {
                continue;
            }
            preset_sets.push(format!("{}={}", x.key, x.value));
        }
        if let Some(m) = other_method {
            preset_sets.push(format!("method.name=\"{m}\""));
        }
        preset_sets.extend(sets.iter().cloned());
        let mut out = cfg
            .with_overrides_in(reg, &preset_sets)
            .map_err(|e| match e {
                ModbalError::Config(m) => ModbalError::Config(format!("preset {}: {m}", self.name)),
                e => e,
            })?;
        out.preset = Some(self.name.to_string());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modbal_train::DeviceConfig;

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

    /// The device through `--set` (its parsing is tested in modbal-train).
    #[test]
    fn devices_are_set_and_checked() {
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
    fn run_names_stay_inside_out_dir() {
        for bad in ["../../x", "..", ".", "a/b", "/tmp/x", "a\\b"] {
            let e = RunConfig::default()
                .with_overrides(&[format!("name={bad:?}")])
                .unwrap_err()
                .to_string();
            assert!(e.contains("one directory name"), "{bad}: {e}");
        }
        for ok in ["run-1", "udi.crema-d", "x..y"] {
            RunConfig::default()
                .with_overrides(&[format!("name={ok:?}")])
                .unwrap();
        }
    }

    #[test]
    fn an_empty_config_file_is_an_error_not_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "\n  \n").unwrap();
        let e = RunConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
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

    #[test]
    fn every_preset_builds_a_valid_config_with_its_values() {
        for p in crate::presets::PRESETS {
            // Keys only the user can give (MVSA's root and text encoding) come as --set.
            let user: Vec<String> = match p.dataset() {
                Some("mvsa") | Some("food101") => vec![
                    "dataset.root=\"/data/mvsa\"".into(),
                    "dataset.text.kind=\"glove_vectors\"".into(),
                    "dataset.text.glove=\"/data/glove.txt\"".into(),
                ],
                _ => Vec::new(),
            };
            let cfg = p
                .apply_with(builtin(), &RunConfig::default(), None, &user)
                .unwrap_or_else(|e| {
                    panic!("{}: {e}", p.name);
                });
            assert_eq!(cfg.preset.as_deref(), Some(p.name));
            assert_eq!(Some(cfg.dataset.name()), p.dataset(), "{}", p.name);
            assert_eq!(Some(cfg.method.name()), p.method(), "{}", p.name);
            // Every value lands in the resolved config (read back through TOML).
            let t = toml::Value::try_from(&cfg).unwrap();
            for x in p.values {
                let got = x
                    .key
                    .split('.')
                    .try_fold(&t, |v, k| v.as_table()?.get(k))
                    .unwrap_or_else(|| panic!("{}: {} missing", p.name, x.key));
                let want: toml::Value =
                    format!("v = {}", x.value).parse::<toml::Table>().unwrap()["v"].clone();
                assert_eq!(got, &want, "{}: {}", p.name, x.key);
                assert!(!x.source.is_empty(), "{}: {} has no source", p.name, x.key);
            }
            // Names are <paper>/<dataset>.
            assert_eq!(p.name.split('/').nth(1), p.dataset(), "{}", p.name);
        }
    }

    #[test]
    fn another_method_keeps_the_protocol_and_drops_the_method_keys() {
        let p = crate::presets::find("ogm-ge/crema-d").unwrap();
        let cfg = p.apply(&RunConfig::default(), Some("concat")).unwrap();
        assert_eq!(cfg.method.name(), "concat");
        assert!(!cfg.method.options.contains_key("alpha"));
        assert_eq!(cfg.train.epochs, 100);
        assert_eq!(cfg.train.optimizer.lr(), 0.001);
        // A user's --set after the preset wins.
        let c2 = cfg.with_overrides(&["train.epochs=3".into()]).unwrap();
        assert_eq!(c2.train.epochs, 3);
        assert_eq!(c2.preset.as_deref(), Some("ogm-ge/crema-d"));
    }

    #[test]
    fn a_preset_on_a_dataset_with_required_keys_takes_them_from_the_user() {
        let p = crate::presets::find("eau/mvsa").unwrap();
        let e = p
            .apply(&RunConfig::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("preset eau/mvsa") && e.contains("dataset.root"),
            "{e}"
        );
        let sets = [
            "dataset.root=\"/data/mvsa\"".to_string(),
            "dataset.text.kind=\"glove_vectors\"".into(),
            "dataset.text.glove=\"/data/glove.txt\"".into(),
            "train.epochs=3".into(),
        ];
        let cfg = p
            .apply_with(builtin(), &RunConfig::default(), None, &sets)
            .unwrap();
        assert_eq!(cfg.dataset.name(), "mvsa");
        assert_eq!(cfg.method.name(), "eau");
        // The user's --set comes after the preset's values.
        assert_eq!(cfg.train.epochs, 3);
        assert_eq!(cfg.train.batch_size, 8);
    }

    #[test]
    fn unknown_presets_list_the_valid_ones() {
        let e = crate::presets::find("udi/mnist").unwrap_err().to_string();
        assert!(
            e.contains("udi/cgmnist") && e.contains("ogm-ge/crema-d"),
            "{e}"
        );
    }
}
