//! `synth-shift`: the built-in benchmark with a train/test shift, shaped like CGMNIST (no
//! download).
//!
//! Two views of one "digit" of class `y` (one of `classes` random 5×5 ±1 templates):
//!
//! * `gray` `[1, S, S]`: `g = snr · T_y` placed at a uniformly random position, plus N(0, 1)
//!   pixel noise. The label's **slow** evidence (spatial, weak: a CNN needs epochs to find it).
//! * `color` `[3, S, S]`: the same image `g` in every channel plus a colour tint,
//!   `x[c] = g + cue · (2·κ_c − 1)`, where `κ` is colour `k` of the CGMNIST palette
//!   ([`crate::real::cgmnist::PALETTE`]) with per-sample jitter `κ_c + N(0, color_var)`
//!   (Kim et al.'s colouring, variance 0.03 by default). It carries the same slow evidence **and**
//!   a **fast** cue: a per-channel mean shift that a network with global pooling reads at once.
//!
//! The colour class `k`:
//! * **training**: `k = y` with probability `color_correlation` (ρ, default 1: Kim et al.'s
//!   fully biased training set), otherwise uniform over the `classes` colours;
//! * **test**: uniform, independent of the label;
//! * **validation** (`validation`): `"ood"` (default) is coloured as the test split is —
//!   held-out training-distribution digits with test-distribution colours, the "OOD validation"
//!   of WILDS — so model selection does not reward the shortcut; `"iid"` colours them as
//!   training, which rewards it (validation accuracy 1.0 while test collapses).
//!
//! Calibration (docs/results/synth-shift.md, `just table-synth`): trained jointly, concat
//! follows the colour and falls far below the gray modality alone on test; checked by the test
//! `shift_benchmark_punishes_the_shortcut` of the `modbal` crate.
//!
//! Size: at most [`crate::synth::MAX_SYNTH_VALUES`] values in memory (the three splits × the
//! values of a sample), else an error naming `dataset.train` / `val` / `test`.
//!
//! Everything random is seeded by `(data_seed, split, index)`: the data do not depend on the run
//! seed, on the split sizes or on the validation protocol of the other splits.

pub use crate::dataset::ValidationShift;
use crate::dataset::{Dataset, InMemoryDataset, Splits};
use crate::real::cgmnist::PALETTE;
use modbal_core::{ModbalError, Result};
use modbal_tensors::{rng::derive_seed, SeededRng};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Options of `synth-shift`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthShiftConfig {
    /// Number of classes, 2..=10 (one palette colour each). Default 10, as CGMNIST's digits.
    pub classes: usize,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Image side S (≥ 6).
    pub image_size: usize,
    /// Amplitude of the class template relative to unit pixel noise (the slow evidence).
    pub snr: f64,
    /// Strength of the colour tint (the fast cue), in units of the pixel noise.
    pub cue: f64,
    /// ρ: probability that a training sample gets its class colour.
    pub color_correlation: f64,
    /// Variance of the per-sample colour jitter (Kim et al.: 0.03).
    pub color_var: f64,
    /// Distribution of the validation split: `"ood"` (default) or `"iid"`.
    pub validation: ValidationShift,
    /// Seed of the data (independent of the run seed).
    pub data_seed: u64,
}

impl Default for SynthShiftConfig {
    fn default() -> Self {
        Self {
            classes: 10,
            train: 3000,
            val: 600,
            test: 1000,
            image_size: 16,
            snr: 2.0,
            cue: 1.0,
            color_correlation: 1.0,
            color_var: 0.03,
            validation: ValidationShift::Ood,
            data_seed: 4321,
        }
    }
}

/// What a sample was drawn with (for tests and diagnostics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShiftSample {
    pub label: usize,
    /// Colour class `k`.
    pub color_class: usize,
}

impl SynthShiftConfig {
    fn validate(&self) -> Result<()> {
        if !(2..=PALETTE.len()).contains(&self.classes) {
            return Err(ModbalError::Config(format!(
                "dataset.classes must be in 2..={}, got {}",
                PALETTE.len(),
                self.classes
            )));
        }
        if self.train == 0 || self.val == 0 || self.test == 0 {
            return Err(ModbalError::Config(
                "dataset.train, dataset.val and dataset.test must be > 0".into(),
            ));
        }
        if self.image_size < 6 {
            return Err(ModbalError::Config(format!(
                "dataset.image_size must be >= 6, got {}",
                self.image_size
            )));
        }
        if !(0.0..=1.0).contains(&self.color_correlation) {
            return Err(ModbalError::Config(format!(
                "dataset.color_correlation must be in [0, 1], got {}",
                self.color_correlation
            )));
        }
        for (k, v) in [
            ("snr", self.snr),
            ("cue", self.cue),
            ("color_var", self.color_var),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ModbalError::Config(format!(
                    "dataset.{k} must be finite and >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }

    /// Whether split `s` (0 train, 1 val, 2 test) has the training colour distribution.
    fn biased(&self, split: usize) -> bool {
        match split {
            0 => true,
            1 => self.validation == ValidationShift::Iid,
            _ => false,
        }
    }

    /// Sample `i` of split `s`: its inputs `[gray, color]` and what it was drawn with.
    fn draw(&self, templates: &[Vec<f64>], split: usize, i: usize) -> (Vec<Vec<f32>>, ShiftSample) {
        let mut rng = SeededRng::new(derive_seed(&[self.data_seed, split as u64, i as u64]));
        // Balanced classes, order mixed by the sample generator (as synth-av).
        let y = (i + rng.below(self.classes)) % self.classes;
        let s = self.image_size;
        let tsz = 5.min(s);
        let mut g: Vec<f64> = (0..s * s).map(|_| rng.normal()).collect();
        let oy = rng.below(s - tsz + 1);
        let ox = rng.below(s - tsz + 1);
        for dy in 0..tsz {
            for dx in 0..tsz {
                g[(oy + dy) * s + ox + dx] += self.snr * templates[y][dy * tsz + dx];
            }
        }
        // The colour: drawn for every split with the same number of draws, so a sample's
        // pixels do not depend on its split's protocol.
        let matched = rng.uniform() < self.color_correlation;
        let random_k = rng.below(self.classes);
        let k = if self.biased(split) && matched {
            y
        } else {
            random_k
        };
        let sd = self.color_var.sqrt();
        let tint: Vec<f64> = (0..3)
            .map(|c| self.cue * (2.0 * (PALETTE[k][c] as f64 + sd * rng.normal()) - 1.0))
            .collect();
        let gray: Vec<f32> = g.iter().map(|&v| v as f32).collect();
        let mut color = Vec::with_capacity(3 * s * s);
        for t in &tint {
            color.extend(g.iter().map(|&v| (v + t) as f32));
        }
        (
            vec![gray, color],
            ShiftSample {
                label: y,
                color_class: k,
            },
        )
    }

    fn templates(&self) -> Vec<Vec<f64>> {
        let mut class_rng = SeededRng::new(self.data_seed);
        let tsz = 5.min(self.image_size);
        (0..self.classes)
            .map(|_| {
                (0..tsz * tsz)
                    .map(|_| if class_rng.uniform() < 0.5 { -1.0 } else { 1.0 })
                    .collect()
            })
            .collect()
    }

    /// What sample `i` of split `split` (0 train, 1 val, 2 test) was drawn with.
    pub fn sample_info(&self, split: usize, i: usize) -> ShiftSample {
        self.draw(&self.templates(), split, i).1
    }

    pub fn build(&self) -> Result<Splits> {
        self.validate()?;
        let s = self.image_size;
        let names = vec!["gray".to_string(), "color".to_string()];
        let shapes = vec![vec![1, s, s], vec![3, s, s]];
        // Bounded before anything is allocated (the 5×5 class templates included).
        crate::synth::check_synth_size(
            [self.train, self.val, self.test],
            &shapes,
            self.classes,
            25,
        )?;
        let templates = self.templates();
        let mut out: Vec<Arc<dyn Dataset>> = Vec::new();
        for (split, n) in [self.train, self.val, self.test].into_iter().enumerate() {
            let mut data = vec![Vec::new(), Vec::new()];
            let mut labels = Vec::with_capacity(n);
            for i in 0..n {
                let (xs, info) = self.draw(&templates, split, i);
                for (m, x) in xs.into_iter().enumerate() {
                    data[m].extend(x);
                }
                labels.push(info.label as u32);
            }
            out.push(Arc::new(InMemoryDataset::new(
                names.clone(),
                shapes.clone(),
                self.classes,
                data,
                labels,
            )?));
        }
        let test = out.pop().expect("3 splits");
        let val = out.pop().expect("3 splits");
        let train = out.pop().expect("3 splits");
        Ok(Splits { train, val, test })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthShiftConfig {
        SynthShiftConfig {
            train: 2000,
            val: 2000,
            test: 2000,
            ..Default::default()
        }
    }

    /// Fraction of samples of a split whose colour is their label's.
    fn match_rate(c: &SynthShiftConfig, split: usize) -> f64 {
        let n = [c.train, c.val, c.test][split];
        (0..n)
            .filter(|&i| {
                let s = c.sample_info(split, i);
                s.label == s.color_class
            })
            .count() as f64
            / n as f64
    }

    #[test]
    fn colour_follows_the_label_in_training_only() {
        // Closed forms: P(k = y) = ρ + (1 − ρ)/C in training, 1/C at test; 5σ binomial bounds.
        let mut c = small();
        c.color_correlation = 0.8;
        let n = 2000.0;
        let within = |p: f64, want: f64| (p - want).abs() < 5.0 * (want * (1.0 - want) / n).sqrt();
        let train = match_rate(&c, 0);
        assert!(within(train, 0.8 + 0.2 / 10.0), "train {train}");
        let test = match_rate(&c, 2);
        assert!(within(test, 0.1), "test {test}");
        // OOD validation (default) is coloured as test; IID as training.
        let val = match_rate(&c, 1);
        assert!(within(val, 0.1), "ood val {val}");
        c.validation = ValidationShift::Iid;
        let val = match_rate(&c, 1);
        assert!(within(val, 0.82), "iid val {val}");
    }

    #[test]
    fn the_colour_view_is_the_gray_view_plus_a_tint() {
        let c = SynthShiftConfig {
            train: 5,
            val: 5,
            test: 5,
            color_var: 0.0,
            ..Default::default()
        };
        let splits = c.build().unwrap();
        let s = c.image_size * c.image_size;
        for i in 0..5 {
            let x = splits.train.get(i).unwrap();
            let k = c.sample_info(0, i).color_class;
            assert_eq!(k, x.label as usize, "rho = 1: class colour");
            for ch in 0..3 {
                let want = (2.0 * PALETTE[k][ch] as f64 - 1.0) * c.cue;
                for p in 0..s {
                    let d = x.inputs[1][ch * s + p] as f64 - x.inputs[0][p] as f64;
                    assert!(
                        (d - want).abs() < 1e-5,
                        "channel {ch} pixel {p}: {d} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn samples_do_not_depend_on_the_validation_protocol_or_split_sizes() {
        let a = small().build().unwrap();
        let mut c = small();
        c.validation = ValidationShift::Iid;
        c.test = 100;
        let b = c.build().unwrap();
        assert_eq!(a.train.get(7).unwrap(), b.train.get(7).unwrap());
        assert_eq!(a.test.get(7).unwrap(), b.test.get(7).unwrap());
        // The validation gray view is the same digit under both protocols.
        assert_eq!(
            a.val.get(7).unwrap().inputs[0],
            b.val.get(7).unwrap().inputs[0]
        );
    }

    #[test]
    fn bad_options_are_named() {
        let mut c = small();
        c.classes = 11;
        assert!(c.build().unwrap_err().to_string().contains("classes"));
        let mut c = small();
        c.color_correlation = 1.5;
        assert!(c
            .build()
            .unwrap_err()
            .to_string()
            .contains("color_correlation"));
    }
}
