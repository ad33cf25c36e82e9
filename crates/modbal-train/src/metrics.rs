//! Per-epoch classification metrics.
//!
//! * accuracy of the fused prediction and of each modality's own logits (head slice);
//! * macro-F1 of the fused prediction: the unweighted mean of per-class F1 over the classes that
//!   occur in the labels or the predictions (scikit-learn's `f1_score(average="macro")`, where a
//!   class with no true and no predicted positive is left out and 0/0 precision counts as 0);
//! * discrepancy ratio: with `s_m = Σ_batch softmax(z_m)[y]` (OGM-GE's score, IBML's ρ^m),
//!   `max_m s_m / min_m s_m` (≥ 1; 1 = balanced; +∞ when the weakest score is 0). For two
//!   modalities this is `max(ρ, 1/ρ)` of OGM-GE's ρ = s_a/s_v.
//!
//! The per-modality statistics are those of [`modbal_core::stats`] in their tensor form
//! (`argmax` and an f64 softmax on the logits' device), accumulated in a
//! [`ModalityStats`]; the discrepancy ratio is [`stats::discrepancy_ratio`] unfloored.

use candle_core::{Result, Tensor};
use modbal_core::stats::{self, BatchStats, ModalityStats, RatioFloor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Accumulates predictions over an epoch.
#[derive(Clone, Debug, Default)]
pub struct MetricAccumulator {
    classes: usize,
    n: usize,
    loss_sum: f64,
    correct_fused: usize,
    per_modality: ModalityStats,
    // confusion counts for macro-F1
    tp: Vec<usize>,
    fp: Vec<usize>,
    fn_: Vec<usize>,
}

/// One split's metrics for one epoch (the keys of `metrics.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SplitMetrics {
    pub loss: f64,
    pub fusion_acc: f64,
    pub modality_acc: BTreeMap<String, f64>,
    pub macro_f1: f64,
    pub discrepancy_ratio: Option<f64>,
}

impl MetricAccumulator {
    pub fn new(classes: usize, modalities: usize) -> Self {
        Self {
            classes,
            per_modality: ModalityStats::new(modalities),
            tp: vec![0; classes],
            fp: vec![0; classes],
            fn_: vec![0; classes],
            ..Default::default()
        }
    }

    /// Add one batch: `loss` is the batch's mean loss; `fused` the prediction `[B, C]`;
    /// `per_modality` the modalities' logits.
    pub fn add(
        &mut self,
        loss: f64,
        labels: &[u32],
        fused: &Tensor,
        per_modality: &[Tensor],
    ) -> Result<()> {
        self.add_batches(&[loss], &[labels.len()], labels, fused, per_modality)
    }

    /// Add consecutive batches at once from their concatenated outputs: `losses[k]` is batch
    /// k's mean loss and `sizes[k]` its size; `labels`, `fused` and `per_modality` hold the
    /// `Σ sizes` rows in batch order. Each tensor crosses to the host once (an evaluation
    /// gathers its outputs on the device and calls this at the end); the sums are formed batch
    /// by batch as [`MetricAccumulator::add`] forms them, so the metrics are the same bits.
    pub fn add_batches(
        &mut self,
        losses: &[f64],
        sizes: &[usize],
        labels: &[u32],
        fused: &Tensor,
        per_modality: &[Tensor],
    ) -> Result<()> {
        let total: usize = sizes.iter().sum();
        if losses.len() != sizes.len() || total != labels.len() {
            candle_core::bail!(
                "{} batch losses for {} batch sizes adding up to {total}, with {} labels",
                losses.len(),
                sizes.len(),
                labels.len()
            );
        }
        let pred = stats::predictions(fused)?;
        let mut per_pred = Vec::with_capacity(per_modality.len());
        let mut per_prob = Vec::with_capacity(per_modality.len());
        for z in per_modality {
            per_pred.push(stats::predictions(z)?);
            per_prob.push(stats::true_class_probabilities(z, labels)?);
        }
        if let Some(n) = std::iter::once(pred.len())
            .chain(per_pred.iter().map(Vec::len))
            .find(|&n| n != total)
        {
            candle_core::bail!("{n} rows of logits for {total} labels");
        }
        let mut at = 0;
        for (&loss, &b) in losses.iter().zip(sizes) {
            let rows = at..at + b;
            at += b;
            let y = &labels[rows.clone()];
            self.n += b;
            self.loss_sum += loss * b as f64;
            for (&p, &y) in pred[rows.clone()].iter().zip(y) {
                if p == y {
                    self.correct_fused += 1;
                    self.tp[y as usize] += 1;
                } else {
                    self.fp[p as usize] += 1;
                    self.fn_[y as usize] += 1;
                }
            }
            let batch = BatchStats {
                size: b,
                correct: per_pred
                    .iter()
                    .map(|pm| stats::count_correct(&pm[rows.clone()], y))
                    .collect(),
                scores: per_prob
                    .iter()
                    .map(|pr| pr[rows.clone()].iter().sum::<f64>())
                    .collect(),
            };
            self.per_modality.add(&batch);
        }
        Ok(())
    }

    /// Everything accumulated as numbers (sums over batches: counts, loss sum, confusion counts,
    /// the per-modality statistics), to be summed over data-parallel ranks.
    pub(crate) fn to_values(&self) -> Vec<f64> {
        let mut v = vec![self.n as f64, self.loss_sum, self.correct_fused as f64];
        for c in [&self.tp, &self.fp, &self.fn_] {
            v.extend(c.iter().map(|&x| x as f64));
        }
        v.extend(self.per_modality.to_values());
        v
    }

    /// Replace the accumulated sums by `v` (the layout of [`Self::to_values`], e.g. its sum
    /// over the ranks).
    pub(crate) fn set_values(&mut self, v: &[f64]) -> Result<()> {
        let k = self.classes;
        let m = self.per_modality.modalities();
        let stats = (v.len() >= 3 + 3 * k)
            .then(|| ModalityStats::from_values(m, &v[3 + 3 * k..]))
            .flatten();
        let Some(stats) = stats else {
            candle_core::bail!(
                "{} metric values for {k} classes and {m} modalities",
                v.len()
            );
        };
        let count = |x: &f64| x.round() as usize;
        self.n = count(&v[0]);
        self.loss_sum = v[1];
        self.correct_fused = count(&v[2]);
        self.tp = v[3..3 + k].iter().map(count).collect();
        self.fp = v[3 + k..3 + 2 * k].iter().map(count).collect();
        self.fn_ = v[3 + 2 * k..3 + 3 * k].iter().map(count).collect();
        self.per_modality = stats;
        Ok(())
    }

    pub fn finish(&self, modality_names: &[String]) -> SplitMetrics {
        let n = self.n.max(1) as f64;
        let mut f1s = Vec::new();
        for c in 0..self.classes {
            let (tp, fp, fneg) = (self.tp[c], self.fp[c], self.fn_[c]);
            if tp + fp + fneg == 0 {
                continue;
            }
            f1s.push(2.0 * tp as f64 / (2 * tp + fp + fneg) as f64);
        }
        let macro_f1 = if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        };
        let discrepancy_ratio = self.per_modality.discrepancy_ratio(RatioFloor::Unfloored);
        SplitMetrics {
            loss: self.loss_sum / n,
            fusion_acc: self.correct_fused as f64 / n,
            modality_acc: modality_names
                .iter()
                .zip(self.per_modality.accuracy())
                .map(|(name, a)| (name.clone(), a))
                .collect(),
            macro_f1,
            discrepancy_ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn macro_f1_and_accuracy_match_sklearn() {
        // scikit-learn 1.9.1:
        //   from sklearn.metrics import f1_score, accuracy_score
        //   y = [0, 1, 2, 2, 1, 0, 3]; p = [0, 2, 2, 2, 1, 1, 0]
        //   f1_score(y, p, average="macro") -> 0.45
        //   accuracy_score(y, p) -> 0.5714285714285714
        let y = [0u32, 1, 2, 2, 1, 0, 3];
        let p = [0usize, 2, 2, 2, 1, 1, 0];
        let mut logits = vec![0f32; 7 * 4];
        for (i, &c) in p.iter().enumerate() {
            logits[i * 4 + c] = 5.0;
        }
        let z = Tensor::from_vec(logits, (7, 4), &Device::Cpu).unwrap();
        let mut acc = MetricAccumulator::new(4, 1);
        acc.add(1.0, &y, &z, std::slice::from_ref(&z)).unwrap();
        let m = acc.finish(&["a".into()]);
        assert!((m.macro_f1 - 0.45).abs() < 1e-12, "{}", m.macro_f1);
        assert!((m.fusion_acc - 0.5714285714285714).abs() < 1e-12);
        assert_eq!(m.discrepancy_ratio, None);

        // A class that is never predicted counts with F1 = 0 (scikit-learn 1.9.1:
        //   f1_score([0, 0, 1, 1, 2], [0, 0, 1, 1, 1], average="macro") -> 0.6)
        let y = [0u32, 0, 1, 1, 2];
        let p = [0usize, 0, 1, 1, 1];
        let mut logits = vec![0f32; 5 * 3];
        for (i, &c) in p.iter().enumerate() {
            logits[i * 3 + c] = 5.0;
        }
        let z = Tensor::from_vec(logits, (5, 3), &Device::Cpu).unwrap();
        let mut acc = MetricAccumulator::new(3, 1);
        acc.add(0.0, &y, &z, std::slice::from_ref(&z)).unwrap();
        assert!((acc.finish(&["a".into()]).macro_f1 - 0.6).abs() < 1e-12);
    }

    #[test]
    fn discrepancy_ratio_closed_form() {
        // Two samples, two classes. Modality a: logits (0, 0) → p_y = 0.5 each, s_a = 1.0.
        // Modality v: logits (ln 3, 0) for y = 0 → p_y = 0.75, and (0, ln 3) for y = 1 → 0.75;
        // s_v = 1.5; ratio = 1.5.
        let y = [0u32, 1];
        let za = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let l3 = 3f32.ln();
        let zv = Tensor::from_vec(vec![l3, 0.0, 0.0, l3], (2, 2), &Device::Cpu).unwrap();
        let mut acc = MetricAccumulator::new(2, 2);
        acc.add(0.0, &y, &zv, &[za, zv.clone()]).unwrap();
        let m = acc.finish(&["a".into(), "v".into()]);
        assert!((m.discrepancy_ratio.unwrap() - 1.5).abs() < 1e-6);
    }
}
