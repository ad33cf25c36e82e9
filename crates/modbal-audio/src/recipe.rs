//! The field's three audio feature recipes, end to end from a decoded clip.
//!
//! | recipe | follows | steps | output (`.npy`, f32, C order) |
//! |---|---|---|---|
//! | `ogm-ge` | OGM-GE (CVPR'22) CREMA-D loader | resample to 22050 Hz → tile to 3 s (66150 samples) → clip to [−1, 1] → `|STFT|` (n_fft 512, hop 353, periodic Hann, centred, zero padding) → `ln(|S| + 1e−7)` | `[257, 188]` frequency × time |
//! | `fbank` | MMPareto / BalanceMM / PMR (after AST) | resample to 16 kHz → subtract the clip mean → Kaldi fbank (25 ms / 10 ms, `"hanning"`, pre-emphasis 0.97, 128 mel, 20 Hz–Nyquist, dither 0) → zero-pad or cut to 1024 frames → `(F + 4.503877) / (2·5.141276)` | `[1024, 128]` time × mel |
//! | `ave` | PMR / OGM-GE AVE loaders | resample to 16 kHz → tile to 160000 samples → clip to [−1, 1] → `scipy.signal.spectrogram` (nperseg 512, noverlap 353, Tukey 0.25, density) → `ln(P + 1e−7)` → `(x − mean)/(std + 1e−9)` over the clip | `[257, 1004]` frequency × time |
//!
//! Tiling repeats the whole clip until it is at least the target length, then cuts (the field's
//! `np.tile(x, k)[:target]`, which equals this whenever the clip is long enough for `k` copies;
//! for clips shorter than `target/k` the field's arrays come out short, ours keep the shape).
//! Zero padding in `fbank` happens before the normalisation, as in the field (padded rows hold
//! 4.503877/10.282552 ≈ 0.438).

use crate::decode::Audio;
use crate::error::{AudioError, Result};
use crate::fbank::{fbank, FbankConfig};
use crate::resample::{resample, ResampleConfig};
use crate::spectrogram::{psd_spectrogram, PsdConfig};
use crate::stft::{stft_magnitude, PadMode, StftConfig};
use serde::{Deserialize, Serialize};

/// Recipe names accepted by [`Recipe::from_name`].
pub const RECIPE_NAMES: &[&str] = &["ogm-ge", "fbank", "ave"];

/// A computed feature: row-major `f32` with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    pub shape: [usize; 2],
    pub data: Vec<f32>,
}

/// `ogm-ge`: OGM-GE's log-magnitude STFT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OgmGeRecipe {
    pub sample_rate: u32,
    /// Samples after tiling (3 s at 22050 Hz).
    pub num_samples: usize,
    pub clip: bool,
    pub stft: StftConfig,
    /// `ln(|S| + log_offset)`.
    pub log_offset: f64,
    pub resample: ResampleConfig,
}

impl Default for OgmGeRecipe {
    fn default() -> Self {
        OgmGeRecipe {
            sample_rate: 22050,
            num_samples: 3 * 22050,
            clip: true,
            stft: StftConfig {
                n_fft: 512,
                hop_length: 353,
                center: true,
                pad_mode: PadMode::Constant,
            },
            log_offset: 1e-7,
            resample: ResampleConfig::default(),
        }
    }
}

/// `fbank`: the Kaldi-style filter bank of the AST family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FbankRecipe {
    pub sample_rate: u32,
    /// Subtract the whole clip's mean first (`waveform - waveform.mean()`).
    pub subtract_mean: bool,
    pub fbank: FbankConfig,
    /// Frames after zero-padding / cutting.
    pub target_frames: usize,
    /// Output `(F − norm_mean) / (2·norm_std)`.
    pub norm_mean: f64,
    pub norm_std: f64,
    pub resample: ResampleConfig,
}

impl Default for FbankRecipe {
    fn default() -> Self {
        FbankRecipe {
            sample_rate: 16000,
            subtract_mean: true,
            fbank: FbankConfig::default(),
            target_frames: 1024,
            norm_mean: -4.503877,
            norm_std: 5.141276,
            resample: ResampleConfig::default(),
        }
    }
}

/// `ave`: the AVE spectrogram (PMR, OGM-GE's AVE loader).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AveRecipe {
    pub sample_rate: u32,
    pub num_samples: usize,
    pub clip: bool,
    pub psd: PsdConfig,
    pub log_offset: f64,
    /// `(x − mean) / (std + std_eps)` over the whole clip (population std).
    pub std_eps: f64,
    pub resample: ResampleConfig,
}

impl Default for AveRecipe {
    fn default() -> Self {
        AveRecipe {
            sample_rate: 16000,
            num_samples: 160000,
            clip: true,
            psd: PsdConfig {
                nperseg: 512,
                noverlap: 353,
                tukey_alpha: 0.25,
                detrend_constant: true,
            },
            log_offset: 1e-7,
            std_eps: 1e-9,
            resample: ResampleConfig::default(),
        }
    }
}

/// One of the recipes, with its parameters (serialised into the manifest as `{"name": ..., ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Recipe {
    OgmGe(OgmGeRecipe),
    Fbank(FbankRecipe),
    Ave(AveRecipe),
}

impl Recipe {
    /// The recipe `name` with the field's parameters.
    pub fn from_name(name: &str) -> Result<Recipe> {
        Ok(match name {
            "ogm-ge" | "stft" => Recipe::OgmGe(OgmGeRecipe::default()),
            "fbank" => Recipe::Fbank(FbankRecipe::default()),
            "ave" => Recipe::Ave(AveRecipe::default()),
            other => {
                return Err(AudioError::Param(format!(
                    "unknown recipe {other:?}; valid choices: {}",
                    RECIPE_NAMES.join(", ")
                )))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Recipe::OgmGe(_) => "ogm-ge",
            Recipe::Fbank(_) => "fbank",
            Recipe::Ave(_) => "ave",
        }
    }

    /// Axis names of the output, e.g. `["freq", "time"]`.
    pub fn axes(&self) -> [&'static str; 2] {
        match self {
            Recipe::Fbank(_) => ["time", "mel"],
            _ => ["freq", "time"],
        }
    }

    /// Sampling rate the recipe works at.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Recipe::OgmGe(r) => r.sample_rate,
            Recipe::Fbank(r) => r.sample_rate,
            Recipe::Ave(r) => r.sample_rate,
        }
    }

    /// Shape of every output of this recipe.
    pub fn output_shape(&self) -> [usize; 2] {
        match self {
            Recipe::OgmGe(r) => [r.stft.n_fft / 2 + 1, r.stft.frames(r.num_samples)],
            Recipe::Fbank(r) => [r.target_frames, r.fbank.num_mel_bins],
            Recipe::Ave(r) => [r.psd.nperseg / 2 + 1, r.psd.segments(r.num_samples)],
        }
    }

    /// Checks every parameter.
    pub fn validate(&self) -> Result<()> {
        let positive = |sr: u32, n: usize| {
            if sr == 0 || n == 0 {
                Err(AudioError::Param(
                    "sample_rate and lengths must be positive".into(),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Recipe::OgmGe(r) => {
                positive(r.sample_rate, r.num_samples)?;
                r.stft.validate()?;
                r.resample.validate()
            }
            Recipe::Fbank(r) => {
                positive(r.sample_rate, r.target_frames)?;
                r.fbank.validate(r.sample_rate as f64)?;
                if r.norm_std.is_nan() || r.norm_std <= 0.0 {
                    return Err(AudioError::Param("fbank: norm_std must be > 0".into()));
                }
                r.resample.validate()
            }
            Recipe::Ave(r) => {
                positive(r.sample_rate, r.num_samples)?;
                r.psd.validate()?;
                r.resample.validate()
            }
        }
    }

    /// Computes the feature of a decoded clip (any rate; resampled as the recipe says).
    pub fn compute(&self, audio: &Audio) -> Result<Feature> {
        self.validate()?;
        if audio.samples.is_empty() {
            return Err(AudioError::Param("empty clip".into()));
        }
        match self {
            Recipe::OgmGe(r) => {
                let x = resample(
                    &audio.samples,
                    audio.sample_rate,
                    r.sample_rate,
                    &r.resample,
                )?;
                let x = tile_clip(&x, r.num_samples, r.clip);
                let (s, shape) = stft_magnitude(&x, &r.stft)?;
                let data = s.iter().map(|&v| (v + r.log_offset).ln() as f32).collect();
                Ok(Feature { shape, data })
            }
            Recipe::Fbank(r) => {
                let mut x = resample(
                    &audio.samples,
                    audio.sample_rate,
                    r.sample_rate,
                    &r.resample,
                )?;
                if r.subtract_mean {
                    let mean = (x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64) as f32;
                    x.iter_mut().for_each(|v| *v -= mean);
                }
                let (f, [frames, nm]) = fbank(&x, r.sample_rate as f64, &r.fbank)?;
                let t = r.target_frames;
                let scale = 1.0 / (2.0 * r.norm_std);
                let mut data = vec![(-r.norm_mean * scale) as f32; t * nm];
                let keep = frames.min(t);
                for (d, &v) in data[..keep * nm].iter_mut().zip(&f[..keep * nm]) {
                    *d = ((v - r.norm_mean) * scale) as f32;
                }
                Ok(Feature {
                    shape: [t, nm],
                    data,
                })
            }
            Recipe::Ave(r) => {
                let x = resample(
                    &audio.samples,
                    audio.sample_rate,
                    r.sample_rate,
                    &r.resample,
                )?;
                let x = tile_clip(&x, r.num_samples, r.clip);
                let (p, shape) = psd_spectrogram(&x, r.sample_rate as f64, &r.psd)?;
                let logp: Vec<f64> = p.iter().map(|&v| (v + r.log_offset).ln()).collect();
                let n = logp.len() as f64;
                let mean = logp.iter().sum::<f64>() / n;
                let std = (logp.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
                let data = logp
                    .iter()
                    .map(|v| ((v - mean) / (std + r.std_eps)) as f32)
                    .collect();
                Ok(Feature { shape, data })
            }
        }
    }
}

/// Repeats `x` until it has at least `n` samples, cuts to `n`, optionally clips to [−1, 1].
pub fn tile_clip(x: &[f32], n: usize, clip: bool) -> Vec<f32> {
    let mut out: Vec<f32> = x.iter().copied().cycle().take(n).collect();
    if clip {
        out.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_the_papers() {
        assert_eq!(
            Recipe::from_name("ogm-ge").unwrap().output_shape(),
            [257, 188]
        );
        assert_eq!(
            Recipe::from_name("fbank").unwrap().output_shape(),
            [1024, 128]
        );
        assert_eq!(
            Recipe::from_name("ave").unwrap().output_shape(),
            [257, 1004]
        );
        let e = Recipe::from_name("mfcc").unwrap_err().to_string();
        assert!(
            e.contains("mfcc") && e.contains("ogm-ge, fbank, ave"),
            "{e}"
        );
    }

    #[test]
    fn tiling_repeats_then_cuts() {
        assert_eq!(
            tile_clip(&[0.5, 2.0, -3.0], 7, true),
            vec![0.5, 1.0, -1.0, 0.5, 1.0, -1.0, 0.5]
        );
        assert_eq!(tile_clip(&[0.5, 2.0, -3.0], 2, false), vec![0.5, 2.0]);
    }

    #[test]
    fn manifest_form_roundtrips() {
        for name in RECIPE_NAMES {
            let r = Recipe::from_name(name).unwrap();
            let j = serde_json::to_value(&r).unwrap();
            assert_eq!(j["name"], *name);
            let back: Recipe = serde_json::from_value(j).unwrap();
            assert_eq!(back, r);
        }
    }
}
