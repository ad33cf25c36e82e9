//! CMU-MOSEI (Zadeh et al., ACL'18) in the MulT-style pickle (`mosei_senti_data.pkl`, aligned
//! to 50 words, or `mosei_senti_data_noalign.pkl`), read in Rust with [`crate::pickle`].
//!
//! File layout: a dict `{"train", "valid", "test"}`, each a dict of numpy arrays `text
//! [N, T_t, 300]` (GloVe), `audio [N, T_a, 74]` (COVAREP), `vision [N, T_v, 35]` (Facet),
//! `labels [N, 1, 1]` (sentiment in [−3, 3]) and an `id` array (ignored). Modalities keep the
//! file's sequence lengths: aligned files have `T = 50` everywhere, unaligned ones e.g. 50 /
//! 500 / 500.
//!
//! Labels ([`MoseiLabels`]): `binary`: `y < 0 → 0`, else `1` (the BalanceMM / UDI convention;
//! zero counts as positive); `seven`: `round(clip(y, −3, 3)) + 3` with round-half-to-even
//! (numpy's `np.round`, as MulT's 7-class accuracy). Non-finite feature values (the audio
//! features contain `−inf`) are replaced by 0, as MulT's dataset class does
//! (`audio[audio == -np.inf] = 0`); `zero_nonfinite = false` makes them an error instead.

use crate::pickle::{self, Value};
use modbal_core::{ModbalError, Result};
use modbal_data::{Dataset, InMemoryDataset, Sample, Splits};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Label scheme of CMU-MOSEI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoseiLabels {
    /// Negative (`y < 0`) vs non-negative. Default.
    #[default]
    Binary,
    /// `round(clip(y, −3, 3)) + 3` ∈ 0..=6.
    Seven,
}

/// Options of [`CmuMosei`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CmuMoseiConfig {
    /// The pickle file (or a directory holding `mosei_senti_data.pkl`).
    pub path: PathBuf,
    pub labels: MoseiLabels,
    /// Modalities in input order. Default `["text", "audio", "vision"]`.
    pub modalities: Vec<String>,
    /// Replace non-finite features by 0 (MulT). Default `true`.
    pub zero_nonfinite: bool,
}

impl Default for CmuMoseiConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            labels: MoseiLabels::Binary,
            modalities: vec!["text".into(), "audio".into(), "vision".into()],
            zero_nonfinite: true,
        }
    }
}

/// One split of CMU-MOSEI, in memory.
#[derive(Clone, Debug)]
pub struct CmuMoseiDataset {
    inner: InMemoryDataset,
    /// The raw sentiment scores.
    pub scores: Vec<f32>,
}

impl Dataset for CmuMoseiDataset {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn modalities(&self) -> &[String] {
        self.inner.modalities()
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        self.inner.input_shapes()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        self.inner.get(i)
    }
}

/// CMU-MOSEI loader; see the [module docs](self).
#[derive(Debug)]
pub struct CmuMosei;

fn bad(path: &Path, msg: impl std::fmt::Display) -> ModbalError {
    ModbalError::Data(format!("{}: {msg}", path.display()))
}

impl CmuMosei {
    /// Train (`train`), validation (`valid`) and test (`test`) splits.
    pub fn splits(cfg: &CmuMoseiConfig) -> Result<Splits> {
        let path = Self::file(cfg);
        let root = Self::read(&path)?;
        let mut parts = Vec::new();
        for split in ["train", "valid", "test"] {
            parts.push(Arc::new(Self::split_from(&root, split, cfg, &path)?) as Arc<dyn Dataset>);
        }
        let splits = Splits {
            train: parts[0].clone(),
            val: parts[1].clone(),
            test: parts[2].clone(),
        };
        splits.validate()?;
        Ok(splits)
    }

    /// One split (`train`, `valid` or `test`).
    pub fn split(cfg: &CmuMoseiConfig, split: &str) -> Result<CmuMoseiDataset> {
        let path = Self::file(cfg);
        Self::split_from(&Self::read(&path)?, split, cfg, &path)
    }

    fn file(cfg: &CmuMoseiConfig) -> PathBuf {
        if cfg.path.is_dir() {
            cfg.path.join("mosei_senti_data.pkl")
        } else {
            cfg.path.clone()
        }
    }

    fn read(path: &Path) -> Result<Value> {
        let bytes = std::fs::read(path).map_err(|e| ModbalError::io("reading", path, e))?;
        pickle::loads(&bytes).map_err(|e| bad(path, format!("not a readable pickle: {e}")))
    }

    fn split_from(
        root: &Value,
        split: &str,
        cfg: &CmuMoseiConfig,
        path: &Path,
    ) -> Result<CmuMoseiDataset> {
        let part = root.get(split).ok_or_else(|| {
            bad(
                path,
                format!(
                    "no split {split:?} (keys: {:?}); expected a MulT-style dict train/valid/test",
                    root.keys()
                ),
            )
        })?;
        let array = |key: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            match part.get(key) {
                Some(Value::Array(a)) => Ok((
                    a.shape.clone(),
                    a.to_f32()
                        .map_err(|e| bad(path, format!("{split}/{key}: {e}")))?,
                )),
                Some(other) => Err(bad(
                    path,
                    format!(
                        "{split}/{key} is not a numpy array (it is a {})",
                        other.kind()
                    ),
                )),
                None => Err(bad(
                    path,
                    format!("{split} lacks {key:?} (keys: {:?})", part.keys()),
                )),
            }
        };
        let (lshape, scores) = array("labels")?;
        let n = lshape.first().copied().unwrap_or(0);
        let per: usize = lshape.iter().skip(1).product();
        if n == 0 || per == 0 {
            return Err(bad(path, format!("{split}/labels has shape {lshape:?}")));
        }
        let scores: Vec<f32> = (0..n).map(|i| scores[i * per]).collect();
        let mut labels = Vec::with_capacity(n);
        for (i, &y) in scores.iter().enumerate() {
            if !y.is_finite() {
                return Err(bad(path, format!("{split}/labels[{i}] is {y}")));
            }
            labels.push(match cfg.labels {
                MoseiLabels::Binary => u32::from(y >= 0.0),
                MoseiLabels::Seven => ((y as f64).clamp(-3.0, 3.0).round_ties_even() + 3.0) as u32,
            });
        }
        let mut shapes = Vec::new();
        let mut data = Vec::new();
        for m in &cfg.modalities {
            let (shape, mut v) = array(m)?;
            if shape.first() != Some(&n) || shape.len() < 2 {
                return Err(bad(
                    path,
                    format!("{split}/{m} has shape {shape:?}, expected [{n}, T, F] like labels"),
                ));
            }
            if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                if !cfg.zero_nonfinite {
                    return Err(bad(
                        path,
                        format!("{split}/{m}: non-finite value at flat index {k}"),
                    ));
                }
                v.iter_mut()
                    .filter(|x| !x.is_finite())
                    .for_each(|x| *x = 0.0);
            }
            shapes.push(shape[1..].to_vec());
            data.push(v);
        }
        let classes = match cfg.labels {
            MoseiLabels::Binary => 2,
            MoseiLabels::Seven => 7,
        };
        let inner = InMemoryDataset::new(cfg.modalities.clone(), shapes, classes, data, labels)?;
        Ok(CmuMoseiDataset { inner, scores })
    }
}
