//! The `Dataset` trait and simple implementations.

use modbal_core::{ModbalError, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One sample: per-modality values (row-major, shape [`Dataset::input_shapes`]) and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub inputs: Vec<Vec<f32>>,
    pub label: u32,
}

/// A labelled multimodal dataset with fixed per-sample shapes.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Modality names, in input order.
    fn modalities(&self) -> &[String];
    /// Per-sample shape of each modality (no batch axis).
    fn input_shapes(&self) -> &[Vec<usize>];
    fn num_classes(&self) -> usize;
    /// Sample `i` (`i < len()`), or an error naming the sample and the problem.
    fn get(&self, i: usize) -> Result<Sample>;
    /// Samples `ids`, in order. The default calls [`Dataset::get`] one after the other; loaders
    /// that decode files override it to decode on several threads (the result must not depend
    /// on the number of threads).
    fn get_many(&self, ids: &[usize]) -> Result<Vec<Sample>> {
        ids.iter().map(|&i| self.get(i)).collect()
    }
    /// Called by the trainer before each training epoch with the run seed: datasets with
    /// random augmentation derive each sample's generator from `(seed, epoch, index)`, so an
    /// epoch's batches do not depend on thread timing and a resumed run sees the same
    /// augmentations as an uninterrupted one. Default: nothing (no augmentation).
    fn set_epoch(&self, _seed: u64, _epoch: usize) {}
    /// For a modality built from text (e.g. MVSA's `text`, encoded as token ids or word
    /// vectors): access to each sample's raw text and to the dataset's encoding, so that
    /// corruption can act on words as QMF's protocol does (`modbal_data::noise`). Default: none
    /// (the modality's values are dense numbers that noise may act on directly).
    fn text_source(&self, _m: usize) -> Option<Arc<dyn TextSource>> {
        None
    }
}

/// The raw text behind a text modality (see [`Dataset::text_source`]).
pub trait TextSource: Send + Sync {
    /// The raw text of sample `i`.
    fn text(&self, i: usize) -> Result<String>;
    /// `text` encoded as the dataset encodes it: the modality's values for that text.
    fn encode(&self, text: &str) -> Result<Vec<f32>>;
}

/// How the validation split of a dataset with a train/test shift is distributed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidationShift {
    /// Held-out training samples with the TEST split's distribution of the shifted factor
    /// ("OOD validation", as WILDS): selection does not reward the shortcut.
    #[default]
    Ood,
    /// Held-out training samples as they are (the training distribution).
    Iid,
}

/// The three splits of a benchmark.
#[derive(Clone)]
pub struct Splits {
    pub train: Arc<dyn Dataset>,
    pub val: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
}

impl std::fmt::Debug for Splits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Splits {{ modalities: {:?}, train: {}, val: {}, test: {} }}",
            self.train.modalities(),
            self.train.len(),
            self.val.len(),
            self.test.len()
        )
    }
}

impl Splits {
    /// Checks that the splits agree on modalities, shapes and classes.
    pub fn validate(&self) -> Result<()> {
        for (name, d) in [("val", &self.val), ("test", &self.test)] {
            if d.modalities() != self.train.modalities()
                || d.input_shapes() != self.train.input_shapes()
                || d.num_classes() != self.train.num_classes()
            {
                return Err(ModbalError::Data(format!(
                    "{name} split disagrees with train on modalities/shapes/classes"
                )));
            }
        }
        if self.train.is_empty() || self.val.is_empty() || self.test.is_empty() {
            return Err(ModbalError::Data(format!(
                "empty split: train {}, val {}, test {}",
                self.train.len(),
                self.val.len(),
                self.test.len()
            )));
        }
        Ok(())
    }

    /// Keep only the named modalities (unimodal training), in the given order.
    pub fn select(&self, names: &[String]) -> Result<Splits> {
        Ok(Splits {
            train: Arc::new(ModalitySelect::new(self.train.clone(), names)?),
            val: Arc::new(ModalitySelect::new(self.val.clone(), names)?),
            test: Arc::new(ModalitySelect::new(self.test.clone(), names)?),
        })
    }
}

/// A dataset held in memory: per modality one flat `Vec<f32>` of `len × prod(shape)` values.
#[derive(Clone, Debug)]
pub struct InMemoryDataset {
    modalities: Vec<String>,
    shapes: Vec<Vec<usize>>,
    num_classes: usize,
    data: Vec<Vec<f32>>,
    labels: Vec<u32>,
}

impl InMemoryDataset {
    pub fn new(
        modalities: Vec<String>,
        shapes: Vec<Vec<usize>>,
        num_classes: usize,
        data: Vec<Vec<f32>>,
        labels: Vec<u32>,
    ) -> Result<Self> {
        if modalities.len() != shapes.len() || modalities.len() != data.len() {
            return Err(ModbalError::Data(format!(
                "{} modality names, {} shapes, {} data arrays",
                modalities.len(),
                shapes.len(),
                data.len()
            )));
        }
        for ((m, s), d) in modalities.iter().zip(&shapes).zip(&data) {
            let per: usize = s.iter().product();
            if d.len() != per * labels.len() {
                return Err(ModbalError::Data(format!(
                    "modality {m:?}: {} values for {} samples of shape {s:?}",
                    d.len(),
                    labels.len()
                )));
            }
        }
        if let Some(&bad) = labels.iter().find(|&&y| y as usize >= num_classes) {
            return Err(ModbalError::Data(format!(
                "label {bad} out of range for {num_classes} classes"
            )));
        }
        Ok(Self {
            modalities,
            shapes,
            num_classes,
            data,
            labels,
        })
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn modalities(&self) -> &[String] {
        &self.modalities
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn get(&self, i: usize) -> Result<Sample> {
        if i >= self.len() {
            return Err(ModbalError::Data(format!(
                "sample index {i} out of range (len {})",
                self.len()
            )));
        }
        let inputs = self
            .data
            .iter()
            .zip(&self.shapes)
            .map(|(d, s)| {
                let per: usize = s.iter().product();
                d[i * per..(i + 1) * per].to_vec()
            })
            .collect();
        Ok(Sample {
            inputs,
            label: self.labels[i],
        })
    }
}

/// A view of a dataset restricted to some of its modalities.
pub struct ModalitySelect {
    inner: Arc<dyn Dataset>,
    keep: Vec<usize>,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
}

impl ModalitySelect {
    pub fn new(inner: Arc<dyn Dataset>, names: &[String]) -> Result<Self> {
        let mut keep = Vec::new();
        for n in names {
            match inner.modalities().iter().position(|m| m == n) {
                Some(i) => keep.push(i),
                None => {
                    return Err(ModbalError::Unknown {
                        kind: "modality",
                        name: n.clone(),
                        valid: inner.modalities().join(", "),
                    })
                }
            }
        }
        let shapes = keep
            .iter()
            .map(|&i| inner.input_shapes()[i].clone())
            .collect();
        Ok(Self {
            inner,
            keep,
            names: names.to_vec(),
            shapes,
        })
    }
}

impl Dataset for ModalitySelect {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn modalities(&self) -> &[String] {
        &self.names
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        Ok(self.pick(self.inner.get(i)?))
    }
    fn get_many(&self, ids: &[usize]) -> Result<Vec<Sample>> {
        Ok(self
            .inner
            .get_many(ids)?
            .into_iter()
            .map(|s| self.pick(s))
            .collect())
    }
    fn set_epoch(&self, seed: u64, epoch: usize) {
        self.inner.set_epoch(seed, epoch)
    }
    fn text_source(&self, m: usize) -> Option<Arc<dyn TextSource>> {
        self.inner.text_source(*self.keep.get(m)?)
    }
}

impl ModalitySelect {
    fn pick(&self, mut s: Sample) -> Sample {
        let mut inputs = Vec::with_capacity(self.keep.len());
        for &k in &self.keep {
            inputs.push(std::mem::take(&mut s.inputs[k]));
        }
        Sample {
            inputs,
            label: s.label,
        }
    }
}
