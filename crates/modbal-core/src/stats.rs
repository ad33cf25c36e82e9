//! Per-modality classification statistics, in one place: the true-class probability
//! `softmax(z)[y]`, its batch sum (OGM-GE's score), accuracy, the discrepancy ratio, and
//! [`ModalityStats`], the per-epoch accumulator of the per-modality values that methods and the
//! epoch metrics log.
//!
//! For logits `z_i ∈ ℝ^C` of sample i with label `y_i` (one modality's own logits, or any head's):
//!
//! * softmax `p_i[c] = exp(z_i[c] − max z_i) / Σ_k exp(z_i[k] − max z_i)` ([`softmax_row`]);
//! * true-class probability `p_i[y_i]` ([`true_class_prob`]) and its log
//!   `z_i[y_i] − max z_i − log Σ_k exp(z_i[k] − max z_i)` ([`true_class_log_prob`]);
//! * true-class score of a batch `s = Σ_i p_i[y_i]` (OGM-GE eq 9's `score_a`/`score_v`, IBML
//!   eq 13's `ρ^m`; [`true_class_score`], [`true_class_probabilities`]);
//! * prediction `argmax_c z_i[c]`, ties broken towards the lowest class index ([`argmax_row`],
//!   [`predictions`]); accuracy `(1/N) Σ_i [argmax z_i = y_i]` ([`accuracy_rows`], [`accuracy`]);
//! * discrepancy ratio over the modalities' scores `max_m s_m / min_m s_m` (≥ 1; 1 = balanced;
//!   [`discrepancy_ratio`]).
//!
//! # Which form a call site uses
//!
//! The copies this module replaces did not all compute the same bits, and modbal's recorded
//! metrics must not change, so the variants are kept side by side, each named:
//!
//! * **Ratio form on the host** ([`true_class_prob`], [`softmax_row`], [`true_class_score`]):
//!   f64 values copied to the host, `exp(z_y − max) / Σ exp(z − max)`, summed left to right.
//!   OGM-GE, CAL's OGM strategy, PMR, MMPareto, ARL and MLA use it.
//! * **Log form on the host** ([`true_class_log_prob`], then `exp`): what `modbal-contrib`'s
//!   label (log-)probabilities, OGM reports, CAL and IBML records use (CAL eq 2 needs the log).
//!   It can differ from the ratio form in the last bit.
//! * **Tensor form** ([`true_class_probabilities`], [`predictions`], [`accuracy`]): candle ops on
//!   the logits' device (softmax in f64 as `exp(log_softmax)`, `argmax` over the last
//!   dimension); the epoch metrics (`modbal-train`) and UDI's unimodal validation accuracy.
//!
//! # Shapes
//! * rows `&[f64]` of length C ≥ 1, labels `< C`
//! * logits `[N, C]` (any float dtype), labels `[N]` (integer tensor) or `&[u32]` of length N

use crate::error::{ModbalError, Result};
use candle_core::{DType, Tensor, D};

fn data_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModbalError::Data(msg.into()))
}

// ---------------------------------------------------------------------------------------------
// one row (host, f64)
// ---------------------------------------------------------------------------------------------

/// Numerically stable softmax of one row: `p[c] = exp(z[c] − m) / Σ_k exp(z[k] − m)` with
/// `m = max_k z[k]`, the sum taken left to right.
///
/// The ratio form: `softmax_row(z)[y]` and [`true_class_prob`]`(z, y)` are the same bits.
pub fn softmax_row(z: &[f64]) -> Vec<f64> {
    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// True-class probability of one row, ratio form: `exp(z[y] − m) / Σ_k exp(z[k] − m)` with
/// `m = max_k z[k]` (bit-identical to `softmax_row(z)[y]`).
///
/// Panics if `y >= z.len()`.
pub fn true_class_prob(z: &[f64], y: usize) -> f64 {
    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let denom: f64 = z.iter().map(|v| (v - mx).exp()).sum();
    (z[y] - mx).exp() / denom
}

/// True-class log-probability of one row, log form: `z[y] − m − ln Σ_k exp(z[k] − m)` with
/// `m = max_k z[k]` (finite for any finite row; CAL eq 2's `log p(y | x)`).
///
/// Panics if `y >= z.len()`.
pub fn true_class_log_prob(z: &[f64], y: usize) -> f64 {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = z.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
    z[y] - m - lse
}

/// Index of the largest entry `argmax_c z[c]`, ties → the lowest index (so a row of zeros
/// predicts class 0); a NaN entry never replaces the current best.
pub fn argmax_row(z: &[f64]) -> usize {
    let mut best = 0;
    for (j, v) in z.iter().enumerate() {
        if *v > z[best] {
            best = j;
        }
    }
    best
}

/// Accuracy of host rows: `(1/N) Σ_i [argmax z_i = y_i]` with [`argmax_row`]'s ties; 0 for
/// `N = 0`.
pub fn accuracy_rows(z: &[Vec<f64>], y: &[usize]) -> f64 {
    if z.is_empty() {
        return 0.0;
    }
    let hits = z
        .iter()
        .zip(y)
        .filter(|(row, &yi)| argmax_row(row) == yi)
        .count();
    hits as f64 / z.len() as f64
}

// ---------------------------------------------------------------------------------------------
// one batch (tensors)
// ---------------------------------------------------------------------------------------------

/// `(s, hits)` of one modality's batch: `s = Σ_i softmax(z_i)[y_i]` (ratio form, host f64, summed
/// in row order from 0) and `hits = Σ_i [argmax z_i = y_i]`.
fn score_and_hits(logits: &Tensor, labels: &Tensor) -> Result<(f64, usize)> {
    let (b, c) = logits.dims2()?;
    let y = labels.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    if y.len() != b {
        return data_err(format!(
            "logits have {b} rows but there are {} labels",
            y.len()
        ));
    }
    let z = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut s = 0.0;
    let mut hits = 0;
    for (row, &yi) in z.iter().zip(&y) {
        if yi < 0 || yi as usize >= c {
            return data_err(format!("label {yi} out of range for {c} classes"));
        }
        s += true_class_prob(row, yi as usize);
        hits += usize::from(argmax_row(row) == yi as usize);
    }
    if !s.is_finite() {
        return data_err("logits contain NaN or infinite values");
    }
    Ok((s, hits))
}

/// The OGM-GE / IBML score of one modality on a batch: `s = Σ_i softmax(z_i)[y_i]`, the sum over
/// the batch of the probability given to the true class (OGM-GE's `score_a`/`score_v`; IBML eq 13
/// `ρ^m`). Ratio form on the host in f64 ([`true_class_prob`] per row), summed in row order.
///
/// # Shapes
/// `logits: [B, C]` (any float dtype), `labels: [B]` (integer class ids `< C`) → scalar.
///
/// Errors ([`ModbalError::Data`]): label count ≠ B, a label out of range, a non-finite sum (NaN
/// or infinite logits); candle errors for a rank other than 2.
pub fn true_class_score(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    Ok(score_and_hits(logits, labels)?.0)
}

/// Per-sample true-class probabilities `softmax(z_i)[y_i]`, tensor form: the softmax is taken
/// with candle ops on the logits' device in f64 (`exp(log_softmax(z))`, see
/// `modbal_tensors::ops::softmax`), then copied to the host. The epoch metrics' form.
///
/// `logits: [N, C]`, `labels` of length N → N values in [0, 1]. Errors: rank, N mismatch or a
/// label out of range (candle errors).
pub fn true_class_probabilities(logits: &Tensor, labels: &[u32]) -> candle_core::Result<Vec<f64>> {
    let p = modbal_tensors::ops::softmax(&logits.to_dtype(DType::F64)?, D::Minus1)?;
    let rows: Vec<Vec<f64>> = p.to_vec2()?;
    if rows.len() != labels.len() {
        candle_core::bail!(
            "logits have {} rows but there are {} labels",
            rows.len(),
            labels.len()
        );
    }
    rows.iter()
        .zip(labels)
        .map(|(r, &c)| match r.get(c as usize) {
            Some(&p) => Ok(p),
            None => candle_core::bail!("label {c} out of range for {} classes", r.len()),
        })
        .collect()
}

/// Per-sample predictions `argmax_c z_i[c]` with candle's `argmax` over the last dimension on the
/// logits' device (ties → lowest index on the CPU). `logits: [N, C]` → N class ids.
pub fn predictions(logits: &Tensor) -> candle_core::Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
}

/// Number of correct predictions `Σ_i [pred_i = y_i]` (pairs beyond the shorter slice ignored).
pub fn count_correct(pred: &[u32], labels: &[u32]) -> usize {
    pred.iter().zip(labels).filter(|(p, y)| p == y).count()
}

/// Accuracy `(1/N) Σ_i [argmax z_i = y_i]` with [`predictions`] (tensor form), divided by
/// `max(N, 1)` (0 for no labels).
pub fn accuracy(logits: &Tensor, labels: &[u32]) -> candle_core::Result<f64> {
    let pred = predictions(logits)?;
    Ok(count_correct(&pred, labels) as f64 / labels.len().max(1) as f64)
}

// ---------------------------------------------------------------------------------------------
// across modalities
// ---------------------------------------------------------------------------------------------

/// How [`discrepancy_ratio`] treats a weakest score of 0 (a sum of probabilities that
/// underflowed, or a modality that never predicts its labels).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RatioFloor {
    /// `max / min` when `min > 0`, `+∞` otherwise (the epoch metrics' `discrepancy_ratio`).
    Unfloored,
    /// `max(max, f) / max(min, f)`: never infinite (`modbal-contrib`'s reports, with
    /// `f = modbal_contrib::ogm::RATIO_FLOOR = 1e-12`).
    Floor(f64),
}

/// The discrepancy ratio `max_m s_m / min_m s_m` of per-modality scores (≥ 1 for non-negative
/// scores; 1 = balanced; for two modalities `max(ρ, 1/ρ)` of OGM-GE's `ρ = s_0 / s_1`), with the
/// zero handling of `floor`.
///
/// The maximum and minimum are folds from `f64::MIN` and `f64::MAX` (NaN scores are skipped by
/// `f64::max`/`f64::min`). No scores give `f64::MIN / f64::MAX` (≈ −0); callers check the
/// length (the epoch metrics report `None` below two modalities).
pub fn discrepancy_ratio(scores: &[f64], floor: RatioFloor) -> f64 {
    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
    let min = scores.iter().cloned().fold(f64::MAX, f64::min);
    match floor {
        RatioFloor::Unfloored => {
            if min > 0.0 {
                max / min
            } else {
                f64::INFINITY
            }
        }
        RatioFloor::Floor(f) => max.max(f) / min.max(f),
    }
}

// ---------------------------------------------------------------------------------------------
// per-epoch accumulation
// ---------------------------------------------------------------------------------------------

/// One batch's per-modality statistics: the batch size, and per modality the number of correct
/// predictions and the true-class score `s_m = Σ_i softmax(z_m,i)[y_i]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// B, the number of samples of the batch.
    pub size: usize,
    /// `Σ_i [argmax z_m,i = y_i]` per modality.
    pub correct: Vec<usize>,
    /// `s_m = Σ_i softmax(z_m,i)[y_i]` per modality.
    pub scores: Vec<f64>,
}

impl BatchStats {
    /// The statistics of every modality's logits on one batch, host ratio form: each score is
    /// [`true_class_score`] (same bits), each count uses [`argmax_row`].
    ///
    /// `per_modality_logits[m]: [B, C]`, `labels: [B]`. Errors: those of [`true_class_score`].
    pub fn from_logits(per_modality_logits: &[Tensor], labels: &Tensor) -> Result<Self> {
        let size = labels.dims1()?;
        let mut correct = Vec::with_capacity(per_modality_logits.len());
        let mut scores = Vec::with_capacity(per_modality_logits.len());
        for z in per_modality_logits {
            let (s, hits) = score_and_hits(z, labels)?;
            scores.push(s);
            correct.push(hits);
        }
        Ok(Self {
            size,
            correct,
            scores,
        })
    }

    /// `correct_m / B` per modality (0 for an empty batch).
    pub fn accuracy(&self) -> Vec<f64> {
        self.correct
            .iter()
            .map(|&c| {
                if self.size == 0 {
                    0.0
                } else {
                    c as f64 / self.size as f64
                }
            })
            .collect()
    }
}

/// Per-modality statistics of one epoch, accumulated batch by batch ([`ModalityStats::add`]) and
/// read at the epoch's end: sample-weighted accuracy and mean true-class probability, the
/// per-batch means methods log, the summed scores and their discrepancy ratio.
///
/// Every sum starts at 0 and adds the batches in order, so the readers give the same bits as the
/// hand-written running sums they replace.
///
/// ```
/// use modbal_core::stats::{BatchStats, ModalityStats, RatioFloor};
///
/// let mut st = ModalityStats::new(2);
/// st.add(&BatchStats { size: 4, correct: vec![3, 1], scores: vec![3.0, 1.5] });
/// st.add(&BatchStats { size: 2, correct: vec![2, 1], scores: vec![1.0, 0.5] });
/// assert_eq!(st.accuracy(), vec![5.0 / 6.0, 2.0 / 6.0]); // Σ correct / Σ B
/// assert_eq!(st.mean_batch_accuracy(), vec![(0.75 + 1.0) / 2.0, (0.25 + 0.5) / 2.0]);
/// assert_eq!(st.mean_batch_score(), vec![2.0, 1.0]); // Σ_b s_b / batches
/// assert_eq!(st.discrepancy_ratio(RatioFloor::Unfloored), Some(2.0)); // 4 / 2
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModalityStats {
    batches: usize,
    samples: usize,
    correct: Vec<usize>,
    batch_accuracy: Vec<f64>,
    scores: Vec<f64>,
}

impl ModalityStats {
    /// An empty accumulator for `modalities` modalities.
    pub fn new(modalities: usize) -> Self {
        Self {
            correct: vec![0; modalities],
            batch_accuracy: vec![0.0; modalities],
            scores: vec![0.0; modalities],
            ..Default::default()
        }
    }

    /// The number of modalities.
    pub fn modalities(&self) -> usize {
        self.scores.len()
    }

    /// Adds one batch. Panics if the batch has more modalities than the accumulator (fewer leave
    /// the others unchanged).
    pub fn add(&mut self, batch: &BatchStats) {
        self.batches += 1;
        self.samples += batch.size;
        for (m, &c) in batch.correct.iter().enumerate() {
            self.correct[m] += c;
        }
        for (m, a) in batch.accuracy().into_iter().enumerate() {
            self.batch_accuracy[m] += a;
        }
        for (m, &s) in batch.scores.iter().enumerate() {
            self.scores[m] += s;
        }
    }

    /// Everything accumulated, as numbers (counts exact below 2⁵³): `[batches, samples,
    /// correct…, batch accuracy sums…, score sums…]`. Every entry is a sum over batches, so the
    /// element-wise sum of two accumulators' values is the values of one that saw both batch
    /// sets ([`ModalityStats::from_values`]); data-parallel ranks all-reduce them.
    pub fn to_values(&self) -> Vec<f64> {
        let mut v = vec![self.batches as f64, self.samples as f64];
        v.extend(self.correct.iter().map(|&c| c as f64));
        v.extend(&self.batch_accuracy);
        v.extend(&self.scores);
        v
    }

    /// The accumulator of [`ModalityStats::to_values`] for `modalities` modalities (`None` if
    /// `v` has the wrong length).
    pub fn from_values(modalities: usize, v: &[f64]) -> Option<Self> {
        if v.len() != 2 + 3 * modalities {
            return None;
        }
        let m = modalities;
        Some(Self {
            batches: v[0].round() as usize,
            samples: v[1].round() as usize,
            correct: v[2..2 + m].iter().map(|x| x.round() as usize).collect(),
            batch_accuracy: v[2 + m..2 + 2 * m].to_vec(),
            scores: v[2 + 2 * m..].to_vec(),
        })
    }

    /// The number of batches added.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// The number of samples added, `Σ_b B_b`.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Sample-weighted accuracy per modality, `Σ_b correct_b,m / max(Σ_b B_b, 1)`.
    pub fn accuracy(&self) -> Vec<f64> {
        let n = self.samples.max(1) as f64;
        self.correct.iter().map(|&c| c as f64 / n).collect()
    }

    /// Mean over batches of the batch accuracy, `(1/n_b) Σ_b correct_b,m / B_b` (NaN before the
    /// first batch).
    pub fn mean_batch_accuracy(&self) -> Vec<f64> {
        let n = self.batches as f64;
        self.batch_accuracy.iter().map(|x| x / n).collect()
    }

    /// The summed scores `S_m = Σ_b s_b,m = Σ_i softmax(z_m,i)[y_i]` over the epoch's samples.
    pub fn score_sums(&self) -> &[f64] {
        &self.scores
    }

    /// Mean over batches of the batch score, `(1/n_b) Σ_b s_b,m` (OGM-GE's logged `s`; NaN
    /// before the first batch).
    pub fn mean_batch_score(&self) -> Vec<f64> {
        let n = self.batches as f64;
        self.scores.iter().map(|x| x / n).collect()
    }

    /// Mean true-class probability per modality, `S_m / max(Σ_b B_b, 1)`.
    pub fn mean_true_class_prob(&self) -> Vec<f64> {
        let n = self.samples.max(1) as f64;
        self.scores.iter().map(|x| x / n).collect()
    }

    /// [`discrepancy_ratio`] of the summed scores; `None` below two modalities.
    pub fn discrepancy_ratio(&self, floor: RatioFloor) -> Option<f64> {
        (self.scores.len() >= 2).then(|| discrepancy_ratio(&self.scores, floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1.0)
    }

    #[test]
    fn softmax_row_closed_form() {
        // z = (ln 1, ln 2, ln 5): p = (1, 2, 5) / 8; shifted by a constant, unchanged.
        let z = [0.0, 2f64.ln(), 5f64.ln()];
        let p = softmax_row(&z);
        for (got, want) in p.iter().zip([0.125, 0.25, 0.625]) {
            assert!(close(*got, want), "{got} vs {want}");
        }
        let shifted: Vec<f64> = z.iter().map(|v| v + 700.0).collect();
        let q = softmax_row(&shifted);
        for (a, b) in p.iter().zip(&q) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn true_class_prob_is_the_softmax_entry_and_the_log_form_its_log() {
        // (0, ln 3): p = (1/4, 3/4); log p_1 = ln 3 − ln 4.
        let z = [0.0, 3f64.ln()];
        assert!(close(true_class_prob(&z, 0), 0.25));
        assert!(close(true_class_prob(&z, 1), 0.75));
        assert!(close(true_class_log_prob(&z, 1), 3f64.ln() - 4f64.ln()));
        // The ratio form is the same bits as the softmax row's entry.
        for z in [[0.3, -1.7, 2.9], [1e3, 1e3 - 1e-9, -5.0], [0.1, 0.2, 0.3]] {
            let p = softmax_row(&z);
            for y in 0..3 {
                assert_eq!(true_class_prob(&z, y).to_bits(), p[y].to_bits());
                assert!((true_class_log_prob(&z, y).exp() - p[y]).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn argmax_and_accuracy_ties_go_to_the_lowest_class() {
        assert_eq!(argmax_row(&[0.0, 0.0, 0.0]), 0);
        assert_eq!(argmax_row(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax_row(&[-1.0, -2.0]), 0);
        // rows predict 1, 0, 2 (tie 0/2 → 0), 2; labels 1, 1, 0, 2 → 3 of 4.
        let z = vec![
            vec![0.0, 1.0, 0.5],
            vec![2.0, 1.0, 0.0],
            vec![4.0, 1.0, 4.0],
            vec![0.0, 0.0, 1.0],
        ];
        assert_eq!(accuracy_rows(&z, &[1, 1, 0, 2]), 0.75);
        assert_eq!(accuracy_rows(&[], &[]), 0.0);
    }

    #[test]
    fn batch_score_and_accuracy_closed_form() {
        // logits [[0, ln 3], [ln 4, 0]] → softmax rows (1/4, 3/4), (4/5, 1/5);
        // labels [1, 1] → s = 3/4 + 1/5 = 0.95; predictions (1, 0) → 1 correct.
        let l3 = 3f64.ln();
        let l4 = 4f64.ln();
        let z = Tensor::new(&[[0.0, l3], [l4, 0.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1u32, 1], &Device::Cpu).unwrap();
        assert!((true_class_score(&z, &y).unwrap() - 0.95).abs() < 1e-15);
        let z32 = z.to_dtype(DType::F32).unwrap();
        assert!((true_class_score(&z32, &y).unwrap() - 0.95).abs() < 1e-6);
        let p = true_class_probabilities(&z, &[1, 1]).unwrap();
        assert!((p[0] - 0.75).abs() < 1e-15 && (p[1] - 0.2).abs() < 1e-15);
        assert_eq!(predictions(&z).unwrap(), vec![1, 0]);
        assert_eq!(count_correct(&[1, 0], &[1, 1]), 1);
        assert_eq!(accuracy(&z, &[1, 1]).unwrap(), 0.5);

        let b = BatchStats::from_logits(&[z.clone(), z.zeros_like().unwrap()], &y).unwrap();
        assert_eq!(b.size, 2);
        assert_eq!(b.correct, vec![1, 0]); // zeros predict class 0
        assert_eq!(
            b.scores[0].to_bits(),
            true_class_score(&z, &y).unwrap().to_bits()
        );
        assert_eq!(b.scores[1], 1.0); // 1/2 + 1/2
        assert_eq!(b.accuracy(), vec![0.5, 0.0]);
    }

    #[test]
    fn bad_labels_and_non_finite_logits_are_data_errors() {
        let z = Tensor::new(&[[0.0f32, 1.0], [1.0, 0.0]], &Device::Cpu).unwrap();
        let bad = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        let e = true_class_score(&z, &bad).unwrap_err();
        assert!(
            matches!(&e, ModbalError::Data(m) if m == "label 2 out of range for 2 classes"),
            "{e}"
        );
        let short = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        assert!(matches!(
            true_class_score(&z, &short),
            Err(ModbalError::Data(_))
        ));
        let nan = Tensor::new(&[[f32::NAN, 1.0], [1.0, 0.0]], &Device::Cpu).unwrap();
        let ok = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
        assert!(matches!(
            BatchStats::from_logits(&[nan], &ok),
            Err(ModbalError::Data(_))
        ));
        assert!(true_class_probabilities(&z, &[0, 2]).is_err());
    }

    #[test]
    fn discrepancy_ratio_closed_form_and_floors() {
        assert_eq!(discrepancy_ratio(&[1.0, 1.5], RatioFloor::Unfloored), 1.5);
        assert_eq!(
            discrepancy_ratio(&[3.0, 1.0, 2.0], RatioFloor::Unfloored),
            3.0
        );
        assert_eq!(
            discrepancy_ratio(&[0.0, 2.0], RatioFloor::Unfloored),
            f64::INFINITY
        );
        let floored = discrepancy_ratio(&[0.0, 2.0], RatioFloor::Floor(1e-12));
        assert!((floored / 2e12 - 1.0).abs() < 1e-15, "{floored}");
        assert_eq!(
            discrepancy_ratio(&[0.0, 0.0], RatioFloor::Floor(1e-12)),
            1.0
        );
        assert_eq!(
            discrepancy_ratio(&[1.0, 1.5], RatioFloor::Floor(1e-12)),
            1.5
        );
    }

    #[test]
    fn modality_stats_accumulates_in_batch_order() {
        let mut st = ModalityStats::new(2);
        assert_eq!(st.modalities(), 2);
        assert_eq!(st.accuracy(), vec![0.0, 0.0]);
        assert_eq!(
            st.discrepancy_ratio(RatioFloor::Unfloored),
            Some(f64::INFINITY)
        );
        let b1 = BatchStats {
            size: 3,
            correct: vec![1, 3],
            scores: vec![0.1, 0.7],
        };
        let b2 = BatchStats {
            size: 2,
            correct: vec![2, 0],
            scores: vec![0.2, 0.3],
        };
        st.add(&b1);
        st.add(&b2);
        assert_eq!((st.batches(), st.samples()), (2, 5));
        assert_eq!(st.accuracy(), vec![3.0 / 5.0, 3.0 / 5.0]);
        assert_eq!(
            st.mean_batch_accuracy(),
            vec![(1.0 / 3.0 + 1.0) / 2.0, (1.0 + 0.0) / 2.0]
        );
        // The sums are the hand-written running sums: 0 + 0.1 + 0.2, 0 + 0.7 + 0.3.
        assert_eq!(st.score_sums(), &[0.0 + 0.1 + 0.2, 0.0 + 0.7 + 0.3]);
        assert_eq!(st.mean_batch_score(), vec![(0.1 + 0.2) / 2.0, 1.0 / 2.0]);
        assert_eq!(
            st.mean_true_class_prob(),
            vec![(0.1 + 0.2) / 5.0, 1.0 / 5.0]
        );
        assert_eq!(
            st.discrepancy_ratio(RatioFloor::Unfloored),
            Some(1.0 / (0.1 + 0.2))
        );
        assert_eq!(
            ModalityStats::new(1).discrepancy_ratio(RatioFloor::Unfloored),
            None
        );
    }
}
