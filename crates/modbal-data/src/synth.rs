//! The built-in imbalanced benchmarks `synth-av` and `synth-vec` (the train/test-shift benchmark
//! `synth-shift` lives in [`crate::synth_shift`]).
//!
//! Both are seeded generators of labelled multimodal samples (no download) that reproduce the
//! field's *modality imbalance*: one modality (`audio`) carries class evidence that is easy and
//! fast to learn, the other (`visual`) carries evidence that is weaker and slower to learn, and
//! some classes are separable **only** by the weak modality, so fusion can beat both.
//!
//! ## `synth-av`
//! * `audio` `[1, F, T]`: a 1-D signal of `L = hop·(T−1) + n_fft` samples — a sinusoid at a
//!   class-specific frequency bin, present on a random segment of at least half the clip, random
//!   phase, amplitude `audio_snr`, plus N(0, 1) noise — rendered to a log-magnitude spectrogram
//!   (Hann window, `n_fft = 2(F−1)`, `hop = n_fft/2`, `log(1 + |X|)`, per-clip standardisation).
//!   Class evidence: one bright row, the easiest possible feature.
//! * `visual` `[3, S, S]`: N(0, 1) noise plus a class-specific 5×5×3 ±1 template scaled by
//!   `visual_snr` at a uniformly random position. Class evidence is spatial and weak: slower to
//!   learn.
//! * optional `text` `[16]` (`third_modality = true`): class mean (unit vector × `text_snr`) plus
//!   N(0, I) noise.
//! * the last `audio_confusable` classes share one audio frequency: audio cannot tell them apart,
//!   only the visual modality can.
//!
//! ## `synth-vec`
//! The feature-vector version for tests and quick experiments: `audio` `[16]`, `visual` `[32]`,
//! optional `text` `[16]`; each is a class mean (random unit vector × SNR) plus N(0, I) noise,
//! with the same audio-confusable classes. MLP encoders train on it in seconds.
//!
//! ## Determinism
//! Class-level parameters (frequencies, templates, means) come from `data_seed`; sample `i` of
//! split `s` is drawn from its own generator seeded by `(data_seed, s, i)`, so the data do not
//! depend on the run seed, on split sizes, or on the order of generation.
//!
//! ## Size limit
//! All samples are generated in memory: the three splits × the values of one sample, plus the
//! class-level parameters, may hold at most [`MAX_SYNTH_VALUES`] = 2²⁸ values (1 GiB of `f32`;
//! `synth-shift` has the same limit). A larger `dataset.train` / `val` / `test`, dimension or
//! class count is an error naming the sizes.
//!
//! ## Calibration
//! Measured numbers (imbalance signature of the concat baseline) are in `datasets/README.md`
//! and checked by the test `imbalance_signature` of the `modbal` crate.

use crate::dataset::{Dataset, InMemoryDataset, Splits};
use modbal_core::{ModbalError, Result};
use modbal_tensors::SeededRng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The most values a synthetic benchmark may hold in memory: the samples of all three splits ×
/// the values of one sample (every modality), plus the class-level parameters (class means,
/// templates), at most 2²⁸ (1 GiB of `f32`). The defaults use about 7·10⁶. Larger
/// `dataset.train` / `val` / `test` sizes, dimensions or class counts are a configuration error
/// naming them, not an allocation failure.
pub const MAX_SYNTH_VALUES: usize = 1 << 28;

/// Checks that a synthetic benchmark of `sizes` (train, val, test) samples with per-sample
/// `shapes` and `classes × per_class` class-level parameters stays within [`MAX_SYNTH_VALUES`]
/// (checked arithmetic: nothing here can overflow).
pub(crate) fn check_synth_size(
    sizes: [usize; 3],
    shapes: &[Vec<usize>],
    classes: usize,
    per_class: usize,
) -> Result<()> {
    let per_sample = shapes.iter().try_fold(0usize, |acc, s| {
        s.iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|p| acc.checked_add(p))
    });
    let samples = sizes[0]
        .checked_add(sizes[1])
        .and_then(|v| v.checked_add(sizes[2]));
    let total = samples
        .zip(per_sample)
        .and_then(|(n, p)| n.checked_mul(p))
        .and_then(|v| {
            classes
                .checked_mul(per_class)
                .and_then(|c| v.checked_add(c))
        });
    match total {
        Some(t) if t <= MAX_SYNTH_VALUES => Ok(()),
        _ => {
            let show =
                |v: Option<usize>| v.map_or("more than usize::MAX".into(), |v| v.to_string());
            Err(ModbalError::Config(format!(
                "synthetic benchmark too large: dataset.train = {}, dataset.val = {}, \
                 dataset.test = {} samples of {} values each (shapes {shapes:?}) plus {classes} \
                 classes × {per_class} class parameters make {} values, more than the limit of \
                 {MAX_SYNTH_VALUES} (1 GiB of f32); use smaller sizes",
                sizes[0],
                sizes[1],
                sizes[2],
                show(per_sample),
                show(total)
            )))
        }
    }
}

/// Options shared by both synthetic benchmarks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthCommon {
    /// Number of classes (≥ 2).
    pub classes: usize,
    /// Samples per split.
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// How many classes (the last ones) share one audio signature (0 = none).
    pub audio_confusable: usize,
    /// Add a third modality `text`.
    pub third_modality: bool,
    pub text_snr: f64,
    /// Seed of the data (independent of the run seed).
    pub data_seed: u64,
}

impl Default for SynthCommon {
    fn default() -> Self {
        Self {
            classes: 6,
            train: 2400,
            val: 600,
            test: 600,
            audio_confusable: 2,
            third_modality: false,
            text_snr: 1.0,
            data_seed: 1234,
        }
    }
}

impl SynthCommon {
    fn validate(&self) -> Result<()> {
        if self.classes < 2 {
            return Err(ModbalError::Config(format!(
                "dataset.classes must be >= 2, got {}",
                self.classes
            )));
        }
        if self.audio_confusable == 1 || self.audio_confusable > self.classes {
            return Err(ModbalError::Config(format!(
                "dataset.audio_confusable must be 0 or in 2..={}, got {}",
                self.classes, self.audio_confusable
            )));
        }
        if self.train == 0 || self.val == 0 || self.test == 0 {
            return Err(ModbalError::Config(
                "dataset.train, dataset.val and dataset.test must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// The audio "signature" class of label y (confusable classes share the first one's).
    fn audio_class(&self, y: usize) -> usize {
        let first = self.classes - self.audio_confusable;
        if self.audio_confusable > 0 && y >= first {
            first
        } else {
            y
        }
    }

    fn audio_signatures(&self) -> usize {
        if self.audio_confusable > 0 {
            self.classes - self.audio_confusable + 1
        } else {
            self.classes
        }
    }

    fn split_len(&self, split: usize) -> usize {
        [self.train, self.val, self.test][split]
    }
}

/// splitmix64: a well-mixed seed for sample `i` of split `s`.
fn sample_seed(data_seed: u64, split: usize, i: usize) -> u64 {
    let mut z = data_seed
        .wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(1 + split as u64))
        .wrapping_add((i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit_vectors(rng: &mut SeededRng, n: usize, d: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| {
            let v = rng.normal_vec(d, 0.0, 1.0);
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn gaussian_vector(rng: &mut SeededRng, mean: &[f64], snr: f64) -> Vec<f32> {
    mean.iter()
        .map(|m| (m * snr + rng.normal()) as f32)
        .collect()
}

fn build_splits(
    common: &SynthCommon,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    mut draw: impl FnMut(&mut SeededRng, usize) -> Vec<Vec<f32>>,
) -> Result<Splits> {
    let mut splits: Vec<Arc<dyn Dataset>> = Vec::new();
    for split in 0..3 {
        let n = common.split_len(split);
        let mut data: Vec<Vec<f32>> = vec![Vec::new(); names.len()];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let mut rng = SeededRng::new(sample_seed(common.data_seed, split, i));
            // Balanced classes, order mixed by the sample generator.
            let y = (i + rng.below(common.classes)) % common.classes;
            let _ = i;
            let xs = draw(&mut rng, y);
            for (m, x) in xs.into_iter().enumerate() {
                data[m].extend(x);
            }
            labels.push(y as u32);
        }
        splits.push(Arc::new(InMemoryDataset::new(
            names.clone(),
            shapes.clone(),
            common.classes,
            data,
            labels,
        )?));
    }
    let test = splits.pop().expect("3 splits");
    let val = splits.pop().expect("3 splits");
    let train = splits.pop().expect("3 splits");
    Ok(Splits { train, val, test })
}

/// Options of `synth-vec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthVecConfig {
    #[serde(flatten)]
    pub common: SynthCommon,
    pub audio_dim: usize,
    pub visual_dim: usize,
    /// Norm of the audio class mean relative to unit noise.
    pub audio_snr: f64,
    pub visual_snr: f64,
}

impl Default for SynthVecConfig {
    fn default() -> Self {
        Self {
            common: SynthCommon::default(),
            audio_dim: 16,
            visual_dim: 32,
            audio_snr: 4.0,
            visual_snr: 2.0,
        }
    }
}

impl SynthVecConfig {
    pub fn build(&self) -> Result<Splits> {
        let c = &self.common;
        c.validate()?;
        let mut names = vec!["audio".to_string(), "visual".to_string()];
        let mut shapes = vec![vec![self.audio_dim], vec![self.visual_dim]];
        if c.third_modality {
            names.push("text".into());
            shapes.push(vec![16]);
        }
        // Class means: audio_dim + visual_dim + 16 values per class.
        let per_class = self
            .audio_dim
            .checked_add(self.visual_dim)
            .and_then(|v| v.checked_add(16))
            .unwrap_or(usize::MAX);
        check_synth_size([c.train, c.val, c.test], &shapes, c.classes, per_class)?;
        let mut class_rng = SeededRng::new(c.data_seed);
        let mu_a = unit_vectors(&mut class_rng, c.audio_signatures(), self.audio_dim);
        let mu_v = unit_vectors(&mut class_rng, c.classes, self.visual_dim);
        let mu_t = unit_vectors(&mut class_rng, c.classes, 16);
        build_splits(c, names, shapes, |rng, y| {
            let mut xs = vec![
                gaussian_vector(rng, &mu_a[c.audio_class(y)], self.audio_snr),
                gaussian_vector(rng, &mu_v[y], self.visual_snr),
            ];
            if c.third_modality {
                xs.push(gaussian_vector(rng, &mu_t[y], c.text_snr));
            }
            xs
        })
    }
}

/// Options of `synth-av`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthAvConfig {
    #[serde(flatten)]
    pub common: SynthCommon,
    /// Spectrogram size F = T (frequency bins and frames).
    pub spec_size: usize,
    /// Image side S.
    pub image_size: usize,
    /// Tone amplitude relative to unit noise.
    pub audio_snr: f64,
    /// Template amplitude relative to unit pixel noise.
    pub visual_snr: f64,
}

impl Default for SynthAvConfig {
    fn default() -> Self {
        Self {
            common: SynthCommon::default(),
            spec_size: 32,
            image_size: 16,
            audio_snr: 1.0,
            visual_snr: 1.0,
        }
    }
}

/// Log-magnitude spectrogram `[F, T]` (row-major, frequency rows) of `signal`, Hann window,
/// per-clip standardised.
pub fn log_spectrogram(signal: &[f64], n_fft: usize, hop: usize, frames: usize) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let window: Vec<f64> = (0..n_fft)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / n_fft as f64).cos())
        .collect();
    let mut spec = vec![0.0f64; bins * frames];
    for t in 0..frames {
        let seg = &signal[t * hop..t * hop + n_fft];
        for k in 0..bins {
            let (mut re, mut im) = (0.0, 0.0);
            for (n, (&x, &w)) in seg.iter().zip(&window).enumerate() {
                let ang = -2.0 * std::f64::consts::PI * (k * n) as f64 / n_fft as f64;
                re += x * w * ang.cos();
                im += x * w * ang.sin();
            }
            spec[k * frames + t] = (1.0 + (re * re + im * im).sqrt()).ln();
        }
    }
    let n = spec.len() as f64;
    let mean = spec.iter().sum::<f64>() / n;
    let std = (spec.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
        .sqrt()
        .max(1e-8);
    spec.iter().map(|x| ((x - mean) / std) as f32).collect()
}

impl SynthAvConfig {
    pub fn build(&self) -> Result<Splits> {
        let c = &self.common;
        c.validate()?;
        if self.spec_size < 8 || self.image_size < 6 {
            return Err(ModbalError::Config(format!(
                "dataset.spec_size must be >= 8 and dataset.image_size >= 6, got {} and {}",
                self.spec_size, self.image_size
            )));
        }
        let f = self.spec_size;
        let s = self.image_size;
        let mut names = vec!["audio".to_string(), "visual".to_string()];
        let mut shapes = vec![vec![1, f, f], vec![3, s, s]];
        if c.third_modality {
            names.push("text".into());
            shapes.push(vec![16]);
        }
        // Class templates (3·5·5) and text means (16) per class.
        check_synth_size([c.train, c.val, c.test], &shapes, c.classes, 3 * 25 + 16)?;
        let n_fft = 2 * (f - 1);
        let hop = n_fft / 2;
        let frames = f;
        let len = hop * (frames - 1) + n_fft;
        let sigs = c.audio_signatures();
        // Class frequency bins, evenly spread away from DC and Nyquist.
        let lo = 2.0;
        let hi = (f - 3) as f64;
        let freq: Vec<f64> = (0..sigs)
            .map(|s| lo + (hi - lo) * s as f64 / (sigs.max(2) - 1) as f64)
            .collect();
        let mut class_rng = SeededRng::new(c.data_seed);
        let tsz = 5;
        let templates: Vec<Vec<f64>> = (0..c.classes)
            .map(|_| {
                (0..3 * tsz * tsz)
                    .map(|_| if class_rng.uniform() < 0.5 { -1.0 } else { 1.0 })
                    .collect()
            })
            .collect();
        let mu_t = unit_vectors(&mut class_rng, c.classes, 16);
        build_splits(c, names, shapes, |rng, y| {
            // audio
            let k = freq[c.audio_class(y)];
            let phase = 2.0 * std::f64::consts::PI * rng.uniform();
            let seg_len = len / 2 + rng.below(len / 2 + 1);
            let start = rng.below(len - seg_len + 1);
            let signal: Vec<f64> = (0..len)
                .map(|n| {
                    let tone = if n >= start && n < start + seg_len {
                        self.audio_snr
                            * (2.0 * std::f64::consts::PI * k * n as f64 / n_fft as f64 + phase)
                                .sin()
                    } else {
                        0.0
                    };
                    tone + rng.normal()
                })
                .collect();
            let audio = log_spectrogram(&signal, n_fft, hop, frames);
            // visual
            let mut img: Vec<f32> = (0..3 * s * s).map(|_| rng.normal() as f32).collect();
            let oy = rng.below(s - tsz + 1);
            let ox = rng.below(s - tsz + 1);
            let tpl = &templates[y];
            for ch in 0..3 {
                for dy in 0..tsz {
                    for dx in 0..tsz {
                        img[ch * s * s + (oy + dy) * s + ox + dx] +=
                            (self.visual_snr * tpl[ch * tsz * tsz + dy * tsz + dx]) as f32;
                    }
                }
            }
            let mut xs = vec![audio, img];
            if c.third_modality {
                xs.push(gaussian_vector(rng, &mu_t[y], c.text_snr));
            }
            xs
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        let cfg = SynthAvConfig {
            common: SynthCommon {
                train: 20,
                val: 5,
                test: 5,
                third_modality: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let a = cfg.build().unwrap();
        let b = cfg.build().unwrap();
        a.validate().unwrap();
        assert_eq!(a.train.get(3).unwrap(), b.train.get(3).unwrap());
        assert_eq!(
            a.train.input_shapes(),
            &[vec![1, 32, 32], vec![3, 16, 16], vec![16]]
        );
        assert_eq!(a.train.get(0).unwrap().inputs[0].len(), 32 * 32);
        // Changing the split size does not change the earlier samples.
        let mut bigger = cfg.clone();
        bigger.common.train = 40;
        assert_eq!(
            bigger.build().unwrap().train.get(3).unwrap(),
            a.train.get(3).unwrap()
        );
    }

    #[test]
    fn spectrogram_peaks_at_the_tone_bin() {
        // Closed form: a pure tone at bin k of an n_fft-point DFT peaks at row k.
        let n_fft = 62;
        let hop = 31;
        let frames = 32;
        let len = hop * (frames - 1) + n_fft;
        let k = 10.0;
        let sig: Vec<f64> = (0..len)
            .map(|n| (2.0 * std::f64::consts::PI * k * n as f64 / n_fft as f64).sin())
            .collect();
        let spec = log_spectrogram(&sig, n_fft, hop, frames);
        let bins = n_fft / 2 + 1;
        let row_mean =
            |r: usize| spec[r * frames..(r + 1) * frames].iter().sum::<f32>() / frames as f32;
        let best = (0..bins)
            .max_by(|&a, &b| row_mean(a).partial_cmp(&row_mean(b)).unwrap())
            .unwrap();
        assert_eq!(best, 10);
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut c = SynthVecConfig::default();
        c.common.classes = 1;
        assert!(c.build().unwrap_err().to_string().contains("classes"));
    }

    #[test]
    fn toml_roundtrip() {
        let c = SynthVecConfig::default();
        let s = toml::to_string(&c).unwrap();
        let back: SynthVecConfig = toml::from_str(&s).unwrap();
        assert_eq!(c, back);
    }
}
