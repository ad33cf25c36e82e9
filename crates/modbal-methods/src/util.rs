//! Small helpers shared by the methods: JSON by modality name, host rows and labels, entropy, and
//! [`FlatKeys`], which embeds a building block's config in a method config under flat keys.
//! The per-modality statistics (softmax rows, `softmax(z)[y]`, accuracy, the epoch accumulator)
//! live in [`modbal_core::stats`].

use candle_core::{DType, Tensor};
use modbal_core::Result;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The loss of the methods that train on the fused cross-entropy alone (OGM-GE, OPM, MMCosine):
/// `CE(fused)` as the total, with `parts` holding it (`fused`) and each modality's CE on its
/// detached logits (logged only, as their official codes log `loss_a` / `loss_v`: never in the
/// graph).
pub fn fused_ce_logging_unimodal(
    model: &dyn modbal_core::MultimodalModel,
    batch: &modbal_core::Batch,
    out: &modbal_core::MultimodalOutput,
) -> Result<modbal_core::LossTerms> {
    let fused = modbal_tensors::cross_entropy(&out.fused_logits, &batch.labels)?;
    let mut parts = std::collections::BTreeMap::new();
    parts.insert("fused".to_string(), fused.detach());
    for (name, z) in model.modalities().iter().zip(&out.per_modality_logits) {
        parts.insert(
            name.clone(),
            modbal_tensors::cross_entropy(&z.detach(), &batch.labels)?,
        );
    }
    Ok(modbal_core::LossTerms {
        total: fused,
        parts,
    })
}

/// Checks that `batch` has one input per modality of `model`; the error names the method `who`.
pub fn check_batch_inputs(
    who: &str,
    model: &dyn modbal_core::MultimodalModel,
    batch: &modbal_core::Batch,
) -> Result<()> {
    let m = model.modalities().len();
    if batch.inputs.len() != m {
        return Err(modbal_core::ModbalError::Data(format!(
            "{who}: model has {m} modalities ({:?}) but the batch has {} inputs",
            model.modalities(),
            batch.inputs.len()
        )));
    }
    Ok(())
}

/// The widths `D_m` of one `[B, D_m]` feature tensor per modality of `model`; errors (naming the
/// method `who`) for a wrong count or rank.
pub fn feature_widths(
    who: &str,
    model: &dyn modbal_core::MultimodalModel,
    features: &[Tensor],
) -> Result<Vec<usize>> {
    let n = model.modalities().len();
    if features.len() != n || n == 0 {
        return Err(modbal_core::ModbalError::Data(format!(
            "{who}: {} feature tensors for the {n} modalities {:?}",
            features.len(),
            model.modalities()
        )));
    }
    model
        .modalities()
        .iter()
        .zip(features)
        .map(|(name, f)| match f.dims() {
            [_, d] => Ok(*d),
            s => Err(modbal_core::ModbalError::Data(format!(
                "{who}: features of {name:?} are {s:?}, expected [B, D]"
            ))),
        })
        .collect()
}

/// The class weights `W_m: [C, D_m]` and the bias of each modality's logits in a linear fusion
/// head, for features of widths `dims`: the concat head's column slices `head.fc.weight[:, slice_m]`
/// with its whole bias `head.fc.bias` (the same tensor for every modality), or the sum head's
/// `head.<m>.{weight, bias}` (`sum = true`). The tensors are the live parameters (callers detach
/// them where the gradient must not reach the head). `who` names the method in errors, which
/// list the head's parameters.
pub fn linear_head_params(
    model: &dyn modbal_core::MultimodalModel,
    sum: bool,
    dims: &[usize],
    who: &str,
) -> Result<Vec<(Tensor, Option<Tensor>)>> {
    use modbal_core::ModbalError;
    let prefix = model.head_prefix();
    let params = model.params().trainable_with_prefix(&prefix);
    let find = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor().clone())
    };
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let c = model.num_classes();
    let head = if sum { "sum" } else { "concat" };
    let missing = |name: &str| {
        ModbalError::Config(format!(
            "{who} (head = \"{head}\"): the model has no `{name}`; its head parameters are {names:?}"
        ))
    };
    if !sum {
        let name = format!("{prefix}.fc.weight");
        let w = find(&name).ok_or_else(|| missing(&name))?;
        let total: usize = dims.iter().sum();
        if w.dims() != [c, total] {
            return Err(ModbalError::Data(format!(
                "{who}: `{name}` is {:?}, expected [{c}, {total}] for features of widths {dims:?}",
                w.dims()
            )));
        }
        let b = find(&format!("{prefix}.fc.bias"));
        let mut off = 0;
        return dims
            .iter()
            .map(|&d| {
                let s = w.narrow(1, off, d)?;
                off += d;
                Ok((s, b.clone()))
            })
            .collect();
    }
    model
        .modalities()
        .iter()
        .zip(dims)
        .map(|(m, &d)| {
            let name = format!("{prefix}.{m}.weight");
            let w = find(&name).ok_or_else(|| missing(&name))?;
            if w.dims() != [c, d] {
                return Err(ModbalError::Data(format!(
                    "{who}: `{name}` is {:?}, expected [{c}, {d}]",
                    w.dims()
                )));
            }
            Ok((w, find(&format!("{prefix}.{m}.bias"))))
        })
        .collect()
}

/// A method's JSON state for [`modbal_core::Method::state`] (`null` if it cannot be serialised,
/// which plain state structs never fail).
pub fn state_json<T: Serialize>(state: &T) -> serde_json::Value {
    serde_json::to_value(state).unwrap_or(serde_json::Value::Null)
}

/// A method's saved JSON state read back for [`modbal_core::Method::load_state`]: `None` for
/// `null` (a checkpoint without state), an error naming the method `who` if it does not parse.
pub fn saved_state<T: DeserializeOwned>(who: &str, state: &serde_json::Value) -> Result<Option<T>> {
    if state.is_null() {
        return Ok(None);
    }
    serde_json::from_value(state.clone())
        .map(Some)
        .map_err(|e| {
            modbal_core::ModbalError::Serde(format!("method {who}: unreadable saved state: {e}"))
        })
}

/// Values per modality as a JSON object keyed by modality name.
pub fn by_name(names: &[String], v: &[f64]) -> serde_json::Value {
    serde_json::Value::Object(
        names
            .iter()
            .zip(v)
            .map(|(n, x)| (n.clone(), serde_json::json!(x)))
            .collect(),
    )
}

/// A `[B, C]` tensor as f64 rows.
pub fn rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(t.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

/// Labels as indices.
pub fn labels(t: &Tensor) -> Result<Vec<usize>> {
    Ok(t.to_dtype(DType::I64)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|y| y.max(0) as usize)
        .collect())
}

/// Shannon entropy (nats) of a probability row, `0·log 0 = 0`.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| x * x.ln())
        .sum::<f64>()
}

/// How a building block's config is embedded in a method config whose `[method]` keys are flat:
/// the block's field `f` is the key `prefix + f`, except for the explicit `renames`
/// (`(field, key)` pairs). With `#[serde(flatten, with = "…")]` on the embedded field, a module
/// whose `serialize` / `deserialize` call [`FlatKeys::serialize`] / [`FlatKeys::deserialize`]
/// keeps the method's keys as they were while the block's config (fields, defaults, checks) is
/// declared once, in the block's crate.
///
/// `serde(flatten)` does not support `deny_unknown_fields`: [`FlatKeys::deserialize`] therefore
/// rejects every key that is not one of the method's (an error naming the key, as serde's).
///
/// The block's fields are found by serialising a value of it, so every field must serialise
/// (no `skip_serializing_if`).
#[derive(Clone, Copy, Debug)]
pub struct FlatKeys {
    /// Prepended to every field name that is not renamed (`"mi_"`: `ridge` is `mi_ridge`).
    pub prefix: &'static str,
    /// `(field, key)` pairs for fields whose key is not `prefix + field`.
    pub renames: &'static [(&'static str, &'static str)],
}

impl FlatKeys {
    /// The method key of the block's field `field`.
    pub fn key(&self, field: &str) -> String {
        match self.renames.iter().find(|(f, _)| *f == field) {
            Some((_, k)) => (*k).to_string(),
            None => format!("{}{field}", self.prefix),
        }
    }

    /// The block's fields and values (serialised `part`), keyed by field name.
    fn fields<T: Serialize>(part: &T) -> std::result::Result<toml::Table, String> {
        match toml::Value::try_from(part) {
            Ok(toml::Value::Table(t)) => Ok(t),
            Ok(v) => Err(format!("expected a table of options, got {}", v.type_str())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Serialises `part` as the method's flat keys (the `serialize` of a `with` module).
    pub fn serialize<T: Serialize, S: Serializer>(
        &self,
        part: &T,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let flat: toml::Table = Self::fields(part)
            .map_err(S::Error::custom)?
            .into_iter()
            .map(|(f, v)| (self.key(&f), v))
            .collect();
        flat.serialize(s)
    }

    /// Deserialises the block from the method's flat keys (the `deserialize` of a `with`
    /// module): `d` holds the options no plain field of the method took; those that are the
    /// block's keys set its fields, its other fields keep their values in `default` (the
    /// method's defaults for the block, which may differ from the block's own). A key that is
    /// not in `method_keys` (every key of the method) is an error naming it; an error in a value
    /// names its method key.
    pub fn deserialize<'de, T, D>(
        &self,
        d: D,
        default: &T,
        method_keys: &[String],
    ) -> std::result::Result<T, D::Error>
    where
        T: Serialize + DeserializeOwned,
        D: Deserializer<'de>,
    {
        let given = toml::Table::deserialize(d)?;
        if let Some(k) = given.keys().find(|k| !method_keys.contains(k)) {
            let expected = method_keys
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(D::Error::custom(format!(
                "unknown field `{k}`, expected one of {expected}"
            )));
        }
        let mut fields = Self::fields(default).map_err(D::Error::custom)?;
        for (f, v) in fields.iter_mut() {
            if let Some(x) = given.get(&self.key(f)) {
                *v = x.clone();
            }
        }
        toml::Value::Table(fields)
            .try_into()
            .map_err(|e: toml::de::Error| {
                // toml ends the message with "in `field…`"; name the method's key instead.
                let msg = e.to_string();
                let msg = match msg.rsplit_once("\nin `") {
                    Some((head, path)) => {
                        let end = path.find(['`', '.']).unwrap_or(path.len());
                        format!("{head}\nin `{}{}", self.key(&path[..end]), &path[end..])
                    }
                    None => msg,
                };
                D::Error::custom(msg.trim_end())
            })
    }
}

/// The keys of a method config: those of its serialised `value` (e.g. its `Default`).
pub fn option_keys<T: Serialize>(value: &T) -> Vec<String> {
    match toml::Value::try_from(value) {
        Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A building block's config with its own defaults.
    #[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Block {
        ridge: f64,
        steps: usize,
    }

    impl Default for Block {
        fn default() -> Self {
            Self {
                ridge: 1e-6,
                steps: 1,
            }
        }
    }

    /// A method config embedding `Block` as `blk_ridge` and `n_steps`.
    #[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Method {
        eta: f64,
        #[serde(flatten, with = "block_keys")]
        block: Block,
    }

    impl Default for Method {
        fn default() -> Self {
            Self {
                eta: 1.0,
                block: Block {
                    ridge: 1e-3,
                    steps: 1,
                },
            }
        }
    }

    const KEYS: FlatKeys = FlatKeys {
        prefix: "blk_",
        renames: &[("steps", "n_steps")],
    };

    mod block_keys {
        use super::{option_keys, Block, Method, KEYS};
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Block, s: S) -> Result<S::Ok, S::Error> {
            KEYS.serialize(v, s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Block, D::Error> {
            let default = Method::default();
            KEYS.deserialize(d, &default.block, &option_keys(&default))
        }
    }

    fn parse(s: &str) -> std::result::Result<Method, String> {
        toml::from_str::<Method>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn flat_keys_map_prefix_and_renames_both_ways() {
        assert_eq!(KEYS.key("ridge"), "blk_ridge");
        assert_eq!(KEYS.key("steps"), "n_steps");
        assert_eq!(
            option_keys(&Method::default()),
            vec!["blk_ridge", "eta", "n_steps"]
        );
        // Unset fields keep the method's default for the block (1e-3), not the block's (1e-6).
        let m = parse("n_steps = 3").unwrap();
        assert_eq!(
            m.block,
            Block {
                ridge: 1e-3,
                steps: 3
            }
        );
        let m = parse("blk_ridge = 0.5\neta = 2.0").unwrap();
        assert_eq!((m.eta, m.block.ridge, m.block.steps), (2.0, 0.5, 1));
        let back: Method = toml::from_str(&toml::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_method_key() {
        for bad in ["ridge = 1.0", "steps = 2", "etaa = 1.0"] {
            let e = parse(bad).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
            assert!(e.contains("`blk_ridge`, `eta`, `n_steps`"), "{e}");
        }
        let e = toml::Value::Table(toml::from_str("n_steps = -1").unwrap())
            .try_into::<Method>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("in `n_steps`"), "{e}");
    }
}

/// One training sample's detached encoder features (host f32 rows, one per modality) and label.
#[derive(Clone, Debug)]
struct RecordedSample {
    label: u32,
    features: Vec<Vec<f32>>,
}

/// The training set's encoder features as seen during an epoch, keyed by `sample_id` (a sample
/// seen several times keeps its last occurrence). The methods that value every training sample
/// at the end of an epoch (ARM's MIV, the sample/modality valuation's Shapley values) apply the
/// head to these instead of re-encoding the training set: one head pass per epoch, O(N·ΣD_m)
/// floats of memory.
#[derive(Clone, Debug, Default)]
pub struct FeatureRecord {
    samples: std::collections::BTreeMap<usize, RecordedSample>,
}

/// A [`FeatureRecord`] as tensors: rows in ascending `sample_id` order.
#[derive(Debug)]
pub struct RecordedSet {
    /// `[N]` sample ids, ascending.
    pub ids: Vec<usize>,
    /// `[N]` labels.
    pub labels: Vec<u32>,
    /// `features[m]: [N, D_m]` (CPU, f32).
    pub features: Vec<Tensor>,
}

impl FeatureRecord {
    /// Records the batch's features (`features[m]: [B, D_m]`, detached here) under its sample ids.
    pub fn record(
        &mut self,
        sample_ids: &[usize],
        features: &[Tensor],
        labels: &[u32],
    ) -> Result<()> {
        let feats = features
            .iter()
            .map(|f| {
                f.detach()
                    .to_dtype(DType::F32)?
                    .to_device(&candle_core::Device::Cpu)?
                    .to_vec2::<f32>()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        for (row, &id) in sample_ids.iter().enumerate() {
            self.samples.insert(
                id,
                RecordedSample {
                    label: labels[row],
                    features: feats.iter().map(|f| f[row].clone()).collect(),
                },
            );
        }
        Ok(())
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Empties the record into tensors (`None` if nothing was recorded).
    pub fn take(&mut self) -> Result<Option<RecordedSet>> {
        let samples = std::mem::take(&mut self.samples);
        let Some(first) = samples.values().next() else {
            return Ok(None);
        };
        let m = first.features.len();
        let ids: Vec<usize> = samples.keys().copied().collect();
        let labels: Vec<u32> = samples.values().map(|r| r.label).collect();
        let mut features = Vec::with_capacity(m);
        for i in 0..m {
            let d = first.features[i].len();
            let flat: Vec<f32> = samples
                .values()
                .flat_map(|r| r.features[i].iter().copied())
                .collect();
            features.push(Tensor::from_vec(
                flat,
                (ids.len(), d),
                &candle_core::Device::Cpu,
            )?);
        }
        Ok(Some(RecordedSet {
            ids,
            labels,
            features,
        }))
    }
}
