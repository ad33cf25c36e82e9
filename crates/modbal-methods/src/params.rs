//! A method's configuration, typed and checked once: [`MethodParams`] (what every method's
//! config implements: `check`, the model it needs, `build`) and [`MethodPlan`] (the same behind
//! a trait object, what a registry stores). [`parse`] turns a `[method]` table into a checked
//! plan: unknown keys are errors naming them, defaults are filled in ([`MethodPlan::options`]
//! is what `config.toml` records), and [`MethodParams::check`] runs once. The method itself is
//! built once per run, by [`MethodPlan::instantiate`].
//!
//! The name → method table is not here: it belongs to whoever composes a program (the `modbal`
//! crate's `Registry`), so a user's own method registers exactly like a built-in one.

use modbal_core::{Method, ModbalError, Result};
use modbal_encoders::FusionConfig;
use serde::{de::DeserializeOwned, Serialize};

/// The configuration of a method: deserialised from the `[method]` section of a run config
/// (without its `name` key), checked once, then turned into the method.
///
/// Every field needs a default (`#[serde(default)]`) so that `[method] name = "..."` alone is a
/// complete configuration.
pub trait MethodParams: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Checks what serde cannot (ranges, combinations); the error names the option. Called once,
    /// when the options are parsed.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// The fusion head the method's model needs. Default: concatenation.
    fn fusion(&self) -> FusionConfig {
        FusionConfig::Concat
    }
    /// Whether the method runs with the fusion head `f` that the run config's `model.fusion`
    /// asks for instead of [`MethodParams::fusion`]. The error says why not (the caller adds
    /// the method's name). Default: only the method's own kind ([`supports_fusion`] with
    /// `[self.fusion().kind()]`), so a method accepts other heads only where it says so.
    /// `docs/fusion.md` has the table of which method supports which head.
    fn check_fusion(&self, f: &FusionConfig) -> Result<()> {
        supports_fusion(
            f,
            &[self.fusion().kind()],
            "its own head (choose the head with its options)",
        )
    }
    /// The modalities the model must have, in this order (`None`: all of the dataset's).
    fn modalities(&self) -> Option<Vec<String>> {
        None
    }
    /// Fill the defaults that depend on the data, given the dataset's modalities (e.g.
    /// `unimodal`'s modality: the first). Called once the data are known, before
    /// [`MethodParams::modalities`]; the result is what `config.toml` records.
    fn fit_data(&mut self, _dataset_modalities: &[String]) {}
    /// The method, ready to train (called once per run, after [`MethodParams::check`]).
    fn build(&self) -> Result<Box<dyn Method>>;
}

/// A parsed, checked method configuration behind a trait object (see [`parse`]).
pub trait MethodPlan: Send + Sync {
    /// The options with every default filled in (the `[method]` keys `config.toml` records).
    fn options(&self) -> Result<toml::Table>;
    /// See [`MethodParams::fusion`].
    fn fusion_head(&self) -> FusionConfig;
    /// See [`MethodParams::check_fusion`]; the error names the method. Default: only the kind
    /// of [`MethodPlan::fusion_head`].
    fn check_fusion(&self, f: &FusionConfig) -> Result<()> {
        supports_fusion(f, &[self.fusion_head().kind()], "its own head")
    }
    /// See [`MethodParams::modalities`].
    fn required_modalities(&self) -> Option<Vec<String>>;
    /// See [`MethodParams::fit_data`].
    fn fit_to_data(&mut self, dataset_modalities: &[String]);
    /// See [`MethodParams::build`].
    fn instantiate(&self) -> Result<Box<dyn Method>>;
}

/// Every fusion head kind (`model.fusion.kind`).
pub const ALL_FUSIONS: &[&str] = &["concat", "sum", "mmtm", "film", "gated", "block"];
/// The late-fusion heads: each encoder sees only its modality, so `model.encode` works and
/// zeroing a feature before `model.head` removes the modality (all but mmtm).
pub const LATE_FUSIONS: &[&str] = &["concat", "sum", "film", "gated", "block"];
/// The heads whose per-modality logits add up to the fused logits
/// ([`modbal_encoders::UnimodalLogits::is_additive`]: weight slices or branches).
pub const ADDITIVE_FUSIONS: &[&str] = &["concat", "sum", "mmtm"];
/// Additive and late: concat and sum.
pub const ADDITIVE_LATE_FUSIONS: &[&str] = &["concat", "sum"];

/// `Ok` when `f`'s kind is in `supported`, else an error naming the head, the supported heads
/// and `why` (what the method needs from the head).
pub fn supports_fusion(f: &FusionConfig, supported: &[&str], why: &str) -> Result<()> {
    if supported.contains(&f.kind()) {
        return Ok(());
    }
    Err(ModbalError::Config(format!(
        "model.fusion kind {:?} is not supported; supported heads: {} ({why})",
        f.kind(),
        supported.join(", ")
    )))
}

struct Parsed<P>(P, String);

impl<P: MethodParams> MethodPlan for Parsed<P> {
    fn options(&self) -> Result<toml::Table> {
        to_table(&self.0)
    }
    fn fusion_head(&self) -> FusionConfig {
        self.0.fusion()
    }
    fn check_fusion(&self, f: &FusionConfig) -> Result<()> {
        self.0.check_fusion(f).map_err(|e| match e {
            ModbalError::Config(m) => ModbalError::Config(format!("method {}: {m}", self.1)),
            e => e,
        })
    }
    fn required_modalities(&self) -> Option<Vec<String>> {
        self.0.modalities()
    }
    fn fit_to_data(&mut self, dataset_modalities: &[String]) {
        self.0.fit_data(dataset_modalities)
    }
    fn instantiate(&self) -> Result<Box<dyn Method>> {
        self.0.build()
    }
}

/// Parse and check the options of method `name` as `P` (see the module docs).
pub fn parse<P: MethodParams>(name: &str, options: &toml::Table) -> Result<Box<dyn MethodPlan>> {
    let p: P = parse_typed(&format!("method {name}"), "method.", options)?;
    p.check()?;
    Ok(Box::new(Parsed(p, name.to_string())))
}

/// Deserialise `options` as `P`: serde's errors (prefixed with `what`, e.g. `"method cal"`) and
/// every key that `P` does not have (also under `#[serde(flatten)]`, where serde cannot deny
/// unknown fields; named with `key_prefix`, e.g. `"method."`) are configuration errors.
pub fn parse_typed<P: Serialize + DeserializeOwned>(
    what: &str,
    key_prefix: &str,
    options: &toml::Table,
) -> Result<P> {
    let p: P = toml::Value::Table(options.clone())
        .try_into()
        .map_err(|e: toml::de::Error| {
            ModbalError::Config(format!("{what}: {}", e.to_string().trim()))
        })?;
    let known = to_table(&p)?;
    if let Some(k) = unknown_key(options, &known, "") {
        return Err(ModbalError::Config(format!(
            "{what}: unknown key \"{key_prefix}{k}\""
        )));
    }
    Ok(p)
}

/// The first dotted key of `given` that `known` lacks (tables are compared key by key).
fn unknown_key(given: &toml::Table, known: &toml::Table, prefix: &str) -> Option<String> {
    for (k, v) in given {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (v, known.get(k)) {
            (_, None) => return Some(path),
            (toml::Value::Table(g), Some(toml::Value::Table(kn))) => {
                if let Some(p) = unknown_key(g, kn, &path) {
                    return Some(p);
                }
            }
            _ => {}
        }
    }
    None
}

fn to_table<P: Serialize>(p: &P) -> Result<toml::Table> {
    match toml::Value::try_from(p) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Ok(toml::Table::new()),
        Err(e) => Err(ModbalError::Serde(e.to_string())),
    }
}

/// What the unit tests of the method modules use: a method's options parsed as the registry
/// does (`resolved`: with its defaults filled in), and `(config, resolved)` without `check`.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    #[derive(Debug)]
    pub(crate) struct Built {
        pub(crate) resolved: toml::Table,
    }

    pub(crate) fn build<P: MethodParams>(name: &str, options: &toml::Table) -> Result<Built> {
        Ok(Built {
            resolved: parse::<P>(name, options)?.options()?,
        })
    }

    pub(crate) fn parse_options<P: Serialize + DeserializeOwned>(
        name: &str,
        options: &toml::Table,
    ) -> Result<(P, toml::Table)> {
        let p: P = parse_typed(&format!("method {name}"), "method.", options)?;
        let t = to_table(&p)?;
        Ok((p, t))
    }
}
