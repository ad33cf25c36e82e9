//! Batching with background prefetch.
//!
//! [`DataLoader`] turns an index order into [`Batch`]es. A worker thread assembles up to
//! `prefetch` batches ahead of the consumer (bounded channel), so sample decoding overlaps the
//! training step. The order is exactly the given one: shuffling is the caller's job (the trainer
//! draws it from the run's seeded RNG), which keeps runs reproducible.

use crate::dataset::Dataset;
use candle_core::{Device, Tensor};
use modbal_core::{Batch, ModbalError, Result};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The most batches [`DataLoader`] assembles ahead (`train.prefetch`): the channel holding them
/// is allocated up front, so the bound keeps a mistyped value from becoming a huge allocation.
pub const MAX_PREFETCH: usize = 1024;

/// Assemble the batch of samples `ids` (CPU tensors).
pub fn make_batch(ds: &dyn Dataset, ids: &[usize]) -> Result<Batch> {
    let shapes = ds.input_shapes();
    let mut cols: Vec<Vec<f32>> = Vec::with_capacity(shapes.len());
    for (m, s) in shapes.iter().enumerate() {
        let n = s
            .iter()
            .try_fold(ids.len(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                ModbalError::Data(format!(
                    "a batch of {} samples of modality {:?} with shape {s:?} overflows usize",
                    ids.len(),
                    ds.modalities().get(m).map_or("?", String::as_str)
                ))
            })?;
        cols.push(Vec::with_capacity(n));
    }
    let mut labels = Vec::with_capacity(ids.len());
    if let Some(&bad) = ids.iter().find(|&&i| i >= ds.len()) {
        return Err(ModbalError::Data(format!(
            "sample index {bad} out of range (len {})",
            ds.len()
        )));
    }
    let samples = ds.get_many(ids)?;
    for (&i, s) in ids.iter().zip(samples) {
        if s.inputs.len() != shapes.len() {
            return Err(ModbalError::Data(format!(
                "sample {i} has {} modalities, dataset declares {}",
                s.inputs.len(),
                shapes.len()
            )));
        }
        for (m, v) in s.inputs.into_iter().enumerate() {
            let per: usize = shapes[m].iter().product();
            if v.len() != per {
                return Err(ModbalError::Data(format!(
                    "sample {i}, modality {:?}: {} values, expected shape {:?}",
                    ds.modalities()[m],
                    v.len(),
                    shapes[m]
                )));
            }
            if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                return Err(ModbalError::Data(format!(
                    "sample {i}, modality {:?}: non-finite value {} at flat position {j}",
                    ds.modalities()[m],
                    v[j]
                )));
            }
            cols[m].extend(v);
        }
        labels.push(s.label);
    }
    let inputs = cols
        .into_iter()
        .zip(shapes)
        .map(|(v, s)| {
            let mut shape = vec![ids.len()];
            shape.extend(s);
            Tensor::from_vec(v, shape, &Device::Cpu)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Batch {
        inputs,
        labels: Tensor::from_vec(labels, ids.len(), &Device::Cpu)?,
        sample_ids: ids.to_vec(),
    })
}

/// An iterator of batches over a fixed index order, prefetched on a worker thread.
pub struct DataLoader {
    rx: Receiver<Result<Batch>>,
    worker: Option<JoinHandle<()>>,
    num_batches: usize,
}

impl DataLoader {
    /// Batches of `batch_size` over `order` (the last one may be smaller; no sample is dropped),
    /// up to `prefetch` (at most [`MAX_PREFETCH`]) of them assembled ahead.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        order: Vec<usize>,
        batch_size: usize,
        prefetch: usize,
    ) -> Result<Self> {
        Self::new_on(dataset, order, batch_size, prefetch, &Device::Cpu)
    }

    /// As [`DataLoader::new`], with every batch moved to `device` on the worker thread: on a
    /// GPU the next batches are assembled and transferred while the current step runs.
    pub fn new_on(
        dataset: Arc<dyn Dataset>,
        order: Vec<usize>,
        batch_size: usize,
        prefetch: usize,
        device: &Device,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(ModbalError::Config("batch_size must be > 0".into()));
        }
        let batches = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
        Self::from_batches(dataset, batches, prefetch, device)
    }

    /// Exactly these batches, in this order (e.g. one rank's shard of a data-parallel epoch),
    /// moved to `device` on the worker thread. An empty batch is an error.
    pub fn from_batches(
        dataset: Arc<dyn Dataset>,
        batches: Vec<Vec<usize>>,
        prefetch: usize,
        device: &Device,
    ) -> Result<Self> {
        if let Some(k) = batches.iter().position(Vec::is_empty) {
            return Err(ModbalError::Config(format!(
                "batch {k} of the loader is empty"
            )));
        }
        if prefetch > MAX_PREFETCH {
            return Err(ModbalError::Config(format!(
                "prefetch = {prefetch} batches is more than the limit of {MAX_PREFETCH}"
            )));
        }
        let num_batches = batches.len();
        let (tx, rx) = sync_channel(prefetch.max(1));
        let device = device.clone();
        let worker = std::thread::Builder::new()
            .name("modbal-prefetch".into())
            .spawn(move || {
                for chunk in &batches {
                    let b = make_batch(dataset.as_ref(), chunk).and_then(|b| {
                        if device.is_cpu() {
                            Ok(b)
                        } else {
                            b.to_device(&device).map_err(|e| {
                                ModbalError::Data(format!(
                                    "moving a batch of samples {:?}.. to {:?}: {e}",
                                    &chunk[..chunk.len().min(4)],
                                    device.location()
                                ))
                            })
                        }
                    });
                    let stop = b.is_err();
                    if tx.send(b).is_err() || stop {
                        break;
                    }
                }
            })
            .map_err(|e| ModbalError::Data(format!("cannot start prefetch thread: {e}")))?;
        Ok(Self {
            rx,
            worker: Some(worker),
            num_batches,
        })
    }

    pub fn num_batches(&self) -> usize {
        self.num_batches
    }
}

impl Iterator for DataLoader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl Drop for DataLoader {
    fn drop(&mut self) {
        // Drain so the worker unblocks, then join it.
        while self.rx.try_recv().is_ok() {}
        if let Some(w) = self.worker.take() {
            // The worker exits once the receiver is gone or the order is exhausted.
            let rx = std::mem::replace(&mut self.rx, sync_channel(1).1);
            drop(rx);
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::InMemoryDataset;

    fn toy(n: usize) -> Arc<dyn Dataset> {
        Arc::new(
            InMemoryDataset::new(
                vec!["a".into(), "b".into()],
                vec![vec![2], vec![1, 1, 3]],
                3,
                vec![
                    (0..n * 2).map(|x| x as f32).collect(),
                    (0..n * 3).map(|x| -(x as f32)).collect(),
                ],
                (0..n).map(|i| (i % 3) as u32).collect(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn batches_follow_order_and_keep_last_partial() {
        let ds = toy(7);
        let order = vec![6, 0, 3, 1, 2, 5, 4];
        let batches: Vec<Batch> = DataLoader::new(ds, order.clone(), 3, 2)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].len(), 1);
        let ids: Vec<usize> = batches.iter().flat_map(|b| b.sample_ids.clone()).collect();
        assert_eq!(ids, order);
        assert_eq!(batches[0].inputs[1].dims(), &[3, 1, 1, 3]);
        let a0: Vec<Vec<f32>> = batches[0].inputs[0].to_vec2().unwrap();
        assert_eq!(a0[0], vec![12.0, 13.0]);
        assert_eq!(batches[0].labels.to_vec1::<u32>().unwrap(), vec![0, 0, 0]);
    }

    #[test]
    fn bad_index_is_an_error_naming_it() {
        let ds = toy(2);
        let mut l = DataLoader::new(ds, vec![0, 5], 1, 1).unwrap();
        assert!(l.next().unwrap().is_ok());
        let e = l.next().unwrap().unwrap_err().to_string();
        assert!(e.contains('5'), "{e}");
    }

    #[test]
    fn non_finite_input_is_named() {
        let ds: Arc<dyn Dataset> = Arc::new(
            InMemoryDataset::new(
                vec!["a".into()],
                vec![vec![2]],
                2,
                vec![vec![0.0, 1.0, f32::NAN, 2.0]],
                vec![0, 1],
            )
            .unwrap(),
        );
        let e = make_batch(ds.as_ref(), &[0, 1]).unwrap_err().to_string();
        assert!(
            e.contains("sample 1") && e.contains("\"a\"") && e.contains("NaN"),
            "{e}"
        );
    }

    #[test]
    fn huge_prefetch_is_an_error_naming_it() {
        // Regression (issue 17): the channel of `prefetch` slots is allocated up front.
        let e = DataLoader::new(toy(2), vec![0, 1], 1, 1_000_000_000)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("prefetch = 1000000000") && e.contains("1024"),
            "{e}"
        );
        assert!(DataLoader::new(toy(2), vec![0, 1], 1, MAX_PREFETCH).is_ok());
    }

    #[test]
    fn dropping_midway_does_not_hang() {
        let ds = toy(100);
        let mut l = DataLoader::new(ds, (0..100).collect(), 1, 2).unwrap();
        let _ = l.next();
        drop(l);
    }
}
