//! Named parameters and buffers.
//!
//! A [`ParamStore`] owns every `Var` of a model under a dotted name (`encoder.audio.conv1.weight`).
//! Names are kept sorted, so iteration order (and hence optimizer state order and initialisation
//! order) never depends on hashing. Each entry is either *trainable* (handed to optimizers) or a
//! *buffer* (BatchNorm running statistics: saved and restored, never optimised). Parameter groups
//! are name prefixes: `encoder.audio` is the audio encoder, `head` the fusion head.

use crate::init::Init;
use crate::rng::SeededRng;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
struct Entry {
    var: Var,
    trainable: bool,
}

/// A shared, sorted map of named variables.
#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder rooted at the empty prefix.
    pub fn root(&self, dtype: DType, device: &Device) -> ParamBuilder {
        ParamBuilder {
            store: self.clone(),
            prefix: String::new(),
            dtype,
            device: device.clone(),
        }
    }

    fn insert(&self, name: String, t: Tensor, trainable: bool) -> Result<Var> {
        let mut e = self.entries.lock().expect("param store poisoned");
        if e.contains_key(&name) {
            candle_core::bail!("parameter {name:?} registered twice");
        }
        let var = Var::from_tensor(&t)?;
        e.insert(
            name,
            Entry {
                var: var.clone(),
                trainable,
            },
        );
        Ok(var)
    }

    /// Number of entries (parameters and buffers).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("param store poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All trainable variables, sorted by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.filtered(|_, e| e.trainable)
    }

    /// Trainable variables of the group `prefix`: names equal to `prefix` or starting with
    /// `prefix.` (so `encoder.audio` does not match `encoder.audio2.w`); `""` matches all.
    pub fn trainable_with_prefix(&self, prefix: &str) -> Vec<(String, Var)> {
        self.filtered(|n, e| e.trainable && in_group(n, prefix))
    }

    /// Every entry, buffers included, sorted by name.
    pub fn all(&self) -> Vec<(String, Var)> {
        self.filtered(|_, _| true)
    }

    /// Names of the buffers (non-trainable entries).
    pub fn buffers(&self) -> Vec<(String, Var)> {
        self.filtered(|_, e| !e.trainable)
    }

    fn filtered(&self, f: impl Fn(&str, &Entry) -> bool) -> Vec<(String, Var)> {
        self.entries
            .lock()
            .expect("param store poisoned")
            .iter()
            .filter(|(n, e)| f(n, e))
            .map(|(n, e)| (n.clone(), e.var.clone()))
            .collect()
    }

    /// Total number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// A deep copy of every value (to keep the best model in memory).
    pub fn snapshot(&self) -> Result<BTreeMap<String, Tensor>> {
        self.all()
            .into_iter()
            .map(|(n, v)| Ok((n, v.as_tensor().copy()?)))
            .collect()
    }

    /// Set every value from a map produced by [`ParamStore::snapshot`] or a safetensors file.
    /// Fails, naming the culprit, on a missing entry or a shape mismatch; extra keys are an error too.
    pub fn restore<T: std::borrow::Borrow<Tensor>>(
        &self,
        values: &HashMap<String, T>,
    ) -> Result<()> {
        let all = self.all();
        for (name, var) in &all {
            let Some(t) = values.get(name) else {
                candle_core::bail!("checkpoint lacks parameter {name:?}");
            };
            let t = t.borrow();
            if t.dims() != var.dims() {
                candle_core::bail!(
                    "checkpoint parameter {name:?} has shape {:?}, model expects {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        if values.len() != all.len() {
            let known: std::collections::HashSet<&String> = all.iter().map(|(n, _)| n).collect();
            let extra: Vec<&String> = values.keys().filter(|k| !known.contains(k)).collect();
            candle_core::bail!("checkpoint has parameters the model lacks: {extra:?}");
        }
        Ok(())
    }

    /// Save every entry (buffers included) as safetensors.
    pub fn save<P: AsRef<Path>>(&self, path: P) -> Result<()> {
        let map: HashMap<String, Tensor> = self
            .all()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&map, path)
    }

    /// Load a safetensors file written by [`ParamStore::save`].
    pub fn load<P: AsRef<Path>>(&self, path: P) -> Result<()> {
        let path = path.as_ref();
        let device = self
            .all()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let map = candle_core::safetensors::load(path, &device)
            .map_err(|e| candle_core::Error::Msg(format!("reading {}: {e}", path.display())))?;
        self.restore(&map)
    }
}

/// Whether the dotted name `name` belongs to the group `prefix`.
pub fn in_group(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'.'))
}

/// Registers parameters under a name prefix. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ParamBuilder {
    store: ParamStore,
    prefix: String,
    dtype: DType,
    device: Device,
}

impl ParamBuilder {
    /// A builder for the sub-path `name` (`encoder` → `encoder.layer1`).
    pub fn pp(&self, name: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Register a trainable parameter drawn from `init`.
    pub fn param<S: Into<Shape>>(
        &self,
        name: &str,
        shape: S,
        init: Init,
        rng: &mut SeededRng,
    ) -> Result<Tensor> {
        let t = init.tensor(shape, rng, self.dtype, &self.device)?;
        Ok(self
            .store
            .insert(self.full_name(name), t, true)?
            .as_tensor()
            .clone())
    }

    /// Register a non-trainable buffer with a constant value; returns the `Var` so that the owner
    /// can update it in place (running statistics).
    pub fn buffer<S: Into<Shape>>(&self, name: &str, shape: S, value: f64) -> Result<Var> {
        let t = Tensor::full(value, shape, &self.device)?.to_dtype(self.dtype)?;
        self.store.insert(self.full_name(name), t, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_roundtrip_and_errors() {
        let dir = std::env::temp_dir().join(format!("modbal-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = SeededRng::new(0);
        let store = ParamStore::new();
        let pb = store.root(DType::F32, &Device::Cpu).pp("enc");
        let w = pb
            .param(
                "w",
                (3, 4),
                Init::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                &mut rng,
            )
            .unwrap();
        pb.buffer("running_mean", 4, 0.0).unwrap();
        let path = dir.join("p.safetensors");
        store.save(&path).unwrap();
        let snap = store.snapshot().unwrap();
        // Overwrite then load back.
        store.trainable()[0]
            .1
            .set(&w.zeros_like().unwrap())
            .unwrap();
        store.load(&path).unwrap();
        let back = store.trainable()[0].1.as_tensor().clone();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            snap["enc.w"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        assert_eq!(store.trainable().len(), 1);
        assert_eq!(store.trainable_with_prefix("enc").len(), 1);
        assert_eq!(
            store.trainable_with_prefix("en").len(),
            0,
            "groups match whole name segments"
        );
        assert!(
            in_group("encoder.audio.w", "encoder.audio")
                && !in_group("encoder.audio2.w", "encoder.audio")
        );
        assert_eq!(store.buffers().len(), 1);
        // A store with a different shape must refuse the file, naming the parameter.
        let other = ParamStore::new();
        other
            .root(DType::F32, &Device::Cpu)
            .pp("enc")
            .param("w", (4, 4), Init::Const(0.0), &mut rng)
            .unwrap();
        let err = other.load(&path).unwrap_err().to_string();
        assert!(
            err.contains("enc.w") || err.contains("running_mean"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
