//! The one name → thing table: methods, datasets, encoder kinds and presets.
//!
//! Everything that turns a name of a run config (`method.name`, `dataset.name`,
//! `model.encoders.<m>.kind`, `--preset`) into code goes through a [`Registry`].
//! [`Registry::builtin`] holds modbal's own; a program that adds its own method, dataset or
//! encoder starts from it and registers more, then hands the registry to the run functions
//! ([`Registry::train`], [`Registry::resume`]) or to the command line ([`crate::cli::main`]):
//!
//! ```
//! use modbal::{Registry, RunConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let reg = Registry::builtin();
//! assert!(reg.method_names().contains(&"cal"));
//! assert!(reg.dataset_names().contains(&"synth-av"));
//! // A run config is parsed and checked against a registry (unknown names are errors that list
//! // the registered ones).
//! let cfg = RunConfig::default().with_overrides_in(&reg, &["method.name=udi".into()])?;
//! assert_eq!(cfg.method.name, "udi");
//! let err = RunConfig::default().with_overrides_in(&reg, &["method.name=mine".into()]).unwrap_err();
//! assert!(err.to_string().contains("mine") && err.to_string().contains("ogm-ge"));
//! # Ok(())
//! # }
//! ```
//!
//! How to add each kind of thing: `docs/extending.md`.

use crate::presets::Preset;
use modbal_core::{ModbalError, Result};
use modbal_data::Splits;
use modbal_encoders::{Encoder, EncoderConfig};
use modbal_methods::params::{parse as parse_method, parse_typed, MethodParams, MethodPlan};
use modbal_tensors::{ParamBuilder, SeededRng};
use serde::{de::DeserializeOwned, Serialize};

/// A dataset's configuration: deserialised from the `[dataset]` section of a run config
/// (without its `name` key), checked once, then loaded.
///
/// Implement it for your own options struct and register it with
/// [`Registry::with_dataset`]; `modbal train --dataset <name>` then builds it.
pub trait DatasetSpec: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Keys that must be given, each with a hint of what to write (checked before parsing, so
    /// the error says how to fix it rather than "missing field").
    fn required() -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Checks what serde cannot; errors name the `dataset.` key.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// The three splits.
    fn load(&self) -> Result<Splits>;
    /// The encoder a modality gets when the run config names none (`None`: the generic rule by
    /// the rank of the input shape, see [`generic_encoder`]).
    fn default_encoder(&self, _modality: &str, _shape: &[usize]) -> Option<EncoderChoice> {
        None
    }
}

/// A parsed, checked dataset configuration behind a trait object.
pub trait DatasetPlan: Send + Sync {
    /// The options with every default filled in (what `config.toml` records).
    fn options(&self) -> Result<toml::Table>;
    /// See [`DatasetSpec::load`].
    fn load_splits(&self) -> Result<Splits>;
    /// See [`DatasetSpec::default_encoder`].
    fn encoder_for(&self, modality: &str, shape: &[usize]) -> Option<EncoderChoice>;
}

struct ParsedDataset<D>(D);

impl<D: DatasetSpec> DatasetPlan for ParsedDataset<D> {
    fn options(&self) -> Result<toml::Table> {
        to_table(&self.0)
    }
    fn load_splits(&self) -> Result<Splits> {
        self.0.load()
    }
    fn encoder_for(&self, modality: &str, shape: &[usize]) -> Option<EncoderChoice> {
        self.0.default_encoder(modality, shape)
    }
}

fn parse_dataset<D: DatasetSpec>(
    name: &str,
    options: &toml::Table,
) -> Result<Box<dyn DatasetPlan>> {
    for (k, hint) in D::required() {
        if !options.contains_key(*k) {
            return Err(ModbalError::Config(format!(
                "dataset.{k} is required for dataset {name:?}: {hint}"
            )));
        }
    }
    let d: D = parse_typed(&format!("dataset ({name})"), "dataset.", options)?;
    d.check()?;
    Ok(Box::new(ParsedDataset(d)))
}

/// A user encoder's configuration (`[model.encoders.<m>] kind = "<name>"` plus its options):
/// register it with [`Registry::with_encoder`].
pub trait EncoderSpec: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Checks the options against the modality's per-sample input shape.
    fn check(&self, _input_shape: &[usize]) -> Result<()> {
        Ok(())
    }
    /// Build the encoder with its parameters under `pb` and initial weights from `rng`.
    fn build(
        &self,
        pb: &ParamBuilder,
        input_shape: &[usize],
        rng: &mut SeededRng,
    ) -> Result<Box<dyn Encoder>>;
}

/// A parsed user encoder configuration behind a trait object.
pub trait EncoderPlan: Send + Sync {
    /// The options with every default filled in (without `kind`).
    fn options(&self) -> Result<toml::Table>;
    /// See [`EncoderSpec::check`].
    fn check_shape(&self, input_shape: &[usize]) -> Result<()>;
    /// See [`EncoderSpec::build`].
    fn build_encoder(
        &self,
        pb: &ParamBuilder,
        input_shape: &[usize],
        rng: &mut SeededRng,
    ) -> Result<Box<dyn Encoder>>;
}

struct ParsedEncoder<E>(E);

impl<E: EncoderSpec> EncoderPlan for ParsedEncoder<E> {
    fn options(&self) -> Result<toml::Table> {
        to_table(&self.0)
    }
    fn check_shape(&self, input_shape: &[usize]) -> Result<()> {
        self.0.check(input_shape)
    }
    fn build_encoder(
        &self,
        pb: &ParamBuilder,
        input_shape: &[usize],
        rng: &mut SeededRng,
    ) -> Result<Box<dyn Encoder>> {
        self.0.build(pb, input_shape, rng)
    }
}

fn parse_encoder<E: EncoderSpec>(
    kind: &str,
    options: &toml::Table,
) -> Result<Box<dyn EncoderPlan>> {
    let e: E = parse_typed(&format!("encoder {kind}"), "", options)?;
    Ok(Box::new(ParsedEncoder(e)))
}

/// The encoder of one modality in a run config: one of modbal's ([`EncoderConfig`]) or a kind
/// registered with [`Registry::with_encoder`] (its options kept as a table until the registry
/// parses them).
#[derive(Clone, Debug, PartialEq)]
pub enum EncoderChoice {
    Builtin(EncoderConfig),
    Custom { kind: String, options: toml::Table },
}

impl From<EncoderConfig> for EncoderChoice {
    fn from(e: EncoderConfig) -> Self {
        EncoderChoice::Builtin(e)
    }
}

impl EncoderChoice {
    /// The `kind` tag.
    pub fn kind(&self) -> &str {
        match self {
            EncoderChoice::Builtin(e) => e.kind(),
            EncoderChoice::Custom { kind, .. } => kind,
        }
    }
}

impl Serialize for EncoderChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            EncoderChoice::Builtin(e) => e.serialize(s),
            EncoderChoice::Custom { kind, options } => {
                let mut t = toml::Table::new();
                t.insert("kind".into(), toml::Value::String(kind.clone()));
                t.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
                t.serialize(s)
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for EncoderChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let mut t = toml::Table::deserialize(d)?;
        let kind = match t.get("kind") {
            Some(toml::Value::String(k)) => k.clone(),
            _ => {
                return Err(D::Error::custom(
                    "an encoder section needs kind = \"...\" (set it with its options, e.g. \
                     --set model.encoders.<m>.kind=mlp; a dataset's default encoder is used \
                     only when the modality's section is absent)",
                ))
            }
        };
        if EncoderConfig::KINDS.contains(&kind.as_str()) {
            toml::Value::Table(t)
                .try_into()
                .map(EncoderChoice::Builtin)
                .map_err(|e: toml::de::Error| D::Error::custom(e.message().trim()))
        } else {
            t.remove("kind");
            Ok(EncoderChoice::Custom { kind, options: t })
        }
    }
}

type MethodParser = fn(&str, &toml::Table) -> Result<Box<dyn MethodPlan>>;
type DatasetParser = fn(&str, &toml::Table) -> Result<Box<dyn DatasetPlan>>;
type EncoderParser = fn(&str, &toml::Table) -> Result<Box<dyn EncoderPlan>>;

/// Names → methods, datasets, encoder kinds and presets (see the module docs).
#[derive(Clone)]
pub struct Registry {
    methods: Vec<(String, MethodParser)>,
    datasets: Vec<(String, DatasetParser)>,
    encoders: Vec<(String, EncoderParser)>,
    presets: Vec<Preset>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("methods", &self.method_names())
            .field("datasets", &self.dataset_names())
            .field("encoders", &self.encoder_kinds())
            .field("presets", &self.presets.len())
            .finish()
    }
}

impl Registry {
    /// A registry with nothing in it (built-in encoder kinds are always known).
    pub fn empty() -> Self {
        Self {
            methods: Vec::new(),
            datasets: Vec::new(),
            encoders: Vec::new(),
            presets: Vec::new(),
        }
    }

    /// Register a method: `[method] name = "<name>"` parses its options as `P`. A name
    /// registered before is replaced.
    pub fn with_method<P: MethodParams>(mut self, name: &str) -> Self {
        self.methods.retain(|(n, _)| n != name);
        self.methods.push((name.to_string(), parse_method::<P>));
        self
    }

    /// Register a dataset: `[dataset] name = "<name>"` parses its options as `D`.
    pub fn with_dataset<D: DatasetSpec>(mut self, name: &str) -> Self {
        self.datasets.retain(|(n, _)| n != name);
        self.datasets.push((name.to_string(), parse_dataset::<D>));
        self
    }

    /// Register an encoder kind: `[model.encoders.<m>] kind = "<kind>"` parses its options as
    /// `E`. The kinds of [`EncoderConfig`] cannot be replaced.
    pub fn with_encoder<E: EncoderSpec>(mut self, kind: &str) -> Self {
        assert!(
            !EncoderConfig::KINDS.contains(&kind),
            "encoder kind {kind:?} is a built-in kind"
        );
        self.encoders.retain(|(n, _)| n != kind);
        self.encoders.push((kind.to_string(), parse_encoder::<E>));
        self
    }

    /// Register a preset (`--preset <name>`).
    pub fn with_preset(mut self, preset: Preset) -> Self {
        self.presets.retain(|p| p.name != preset.name);
        self.presets.push(preset);
        self
    }

    /// Registered method names, in registration order.
    pub fn method_names(&self) -> Vec<&str> {
        self.methods.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Registered dataset names, in registration order.
    pub fn dataset_names(&self) -> Vec<&str> {
        self.datasets.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Registered (non-built-in) encoder kinds.
    pub fn encoder_kinds(&self) -> Vec<&str> {
        self.encoders.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Every preset.
    pub fn presets(&self) -> &[Preset] {
        &self.presets
    }

    /// The preset called `name` (errors list the valid ones).
    pub fn preset(&self, name: &str) -> Result<&Preset> {
        self.presets
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ModbalError::Unknown {
                kind: "preset",
                name: name.into(),
                valid: self
                    .presets
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Parse and check the options of method `name` (see [`modbal_methods::params`]).
    pub fn method(&self, name: &str, options: &toml::Table) -> Result<Box<dyn MethodPlan>> {
        match self.methods.iter().find(|(n, _)| n == name) {
            Some((_, parse)) => parse(name, options),
            None => Err(ModbalError::Unknown {
                kind: "method",
                name: name.into(),
                valid: self.method_names().join(", "),
            }),
        }
    }

    /// Parse and check the options of dataset `name`.
    pub fn dataset(&self, name: &str, options: &toml::Table) -> Result<Box<dyn DatasetPlan>> {
        match self.datasets.iter().find(|(n, _)| n == name) {
            Some((_, parse)) => parse(name, options),
            None => Err(ModbalError::Unknown {
                kind: "dataset",
                name: name.into(),
                valid: self.dataset_names().join(", "),
            }),
        }
    }

    /// Parse a registered encoder kind's options.
    pub fn encoder(&self, kind: &str, options: &toml::Table) -> Result<Box<dyn EncoderPlan>> {
        match self.encoders.iter().find(|(n, _)| n == kind) {
            Some((_, parse)) => parse(kind, options),
            None => Err(ModbalError::Unknown {
                kind: "encoder kind",
                name: kind.into(),
                valid: EncoderConfig::KINDS
                    .iter()
                    .copied()
                    .chain(self.encoder_kinds())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// The default encoder of a modality by the rank of its per-sample shape, for datasets that
/// do not choose ([`DatasetSpec::default_encoder`]): `[T, F]` sequences get MulT's Transformer,
/// vectors an MLP, `[C, H, W]` images and spectrograms ResNet18, `[C, T, H, W]` clips ResNet18
/// with T-frame pooling (the OGM-GE family's encoders).
pub fn generic_encoder(modality: &str, shape: &[usize]) -> EncoderConfig {
    match shape.len() {
        2 => EncoderConfig::SeqTransformer {
            transformer: Default::default(),
        },
        1 => EncoderConfig::Mlp { hidden: vec![64] },
        3 if modality == "audio" => EncoderConfig::resnet18(false),
        4 => EncoderConfig::resnet18(true),
        _ => EncoderConfig::resnet18(false),
    }
}

pub(crate) fn to_table<P: Serialize>(p: &P) -> Result<toml::Table> {
    match toml::Value::try_from(p) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Ok(toml::Table::new()),
        Err(e) => Err(ModbalError::Serde(e.to_string())),
    }
}
