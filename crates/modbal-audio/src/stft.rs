//! Magnitude STFT with librosa's conventions (`librosa.stft`).
//!
//! ```text
//! x_pad  = pad(x, n_fft/2 on both sides)            (center = true; zeros, or reflection)
//! S[f,t] = | Σ_{n<n_fft} w[n] · x_pad[t·hop + n] · e^{−2πi·f·n/n_fft} |,   f = 0..n_fft/2
//! frames = 1 + ⌊(len(x_pad) − n_fft) / hop⌋
//! ```
//!
//! `w` is the periodic Hann window of length `n_fft` (librosa's `window="hann"`,
//! `win_length = n_fft`). Output shape `[n_fft/2 + 1, frames]` (frequency × time), row-major.
//!
//! Padding: librosa ≥ 0.10 pads with zeros (`pad_mode="constant"`), librosa ≤ 0.9 reflected the
//! signal (`pad_mode="reflect"`); both are offered ([`PadMode`]). They differ only in the first
//! and last frame.

use crate::error::{AudioError, Result};
use crate::fft::RealFft;
use crate::window::hann_periodic;
use serde::{Deserialize, Serialize};

/// How `center = true` pads the signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadMode {
    /// Zeros (librosa ≥ 0.10 default).
    Constant,
    /// Mirror without repeating the edge sample, `numpy.pad(mode="reflect")` (librosa ≤ 0.9).
    Reflect,
}

/// Parameters of [`stft_magnitude`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StftConfig {
    pub n_fft: usize,
    pub hop_length: usize,
    pub center: bool,
    pub pad_mode: PadMode,
}

impl StftConfig {
    pub fn validate(&self) -> Result<()> {
        if self.n_fft < 2 || self.hop_length == 0 {
            return Err(AudioError::Param(format!(
                "stft: n_fft must be ≥ 2 and hop_length ≥ 1 (got {} and {})",
                self.n_fft, self.hop_length
            )));
        }
        Ok(())
    }

    /// Number of frames for a signal of `n` samples.
    pub fn frames(&self, n: usize) -> usize {
        let len = if self.center {
            n + 2 * (self.n_fft / 2)
        } else {
            n
        };
        if len < self.n_fft {
            0
        } else {
            1 + (len - self.n_fft) / self.hop_length
        }
    }
}

/// Magnitude spectrogram `[n_fft/2 + 1, frames]`, row-major, in `f64`.
pub fn stft_magnitude(x: &[f32], cfg: &StftConfig) -> Result<(Vec<f64>, [usize; 2])> {
    cfg.validate()?;
    let n_fft = cfg.n_fft;
    let pad = if cfg.center { n_fft / 2 } else { 0 };
    let n = x.len();
    if cfg.center && cfg.pad_mode == PadMode::Reflect && n <= pad {
        return Err(AudioError::Param(format!(
            "stft: reflect padding needs more than {pad} samples, got {n}"
        )));
    }
    let mut padded = Vec::with_capacity(n + 2 * pad);
    for i in 0..pad {
        let k = pad - i; // distance to x[0]
        padded.push(match cfg.pad_mode {
            PadMode::Constant => 0.0,
            PadMode::Reflect => x[k] as f64,
        });
    }
    padded.extend(x.iter().map(|&v| v as f64));
    for i in 0..pad {
        padded.push(match cfg.pad_mode {
            PadMode::Constant => 0.0,
            PadMode::Reflect => x[n - 2 - i] as f64,
        });
    }
    let frames = cfg.frames(n);
    let bins = n_fft / 2 + 1;
    let win = hann_periodic(n_fft);
    let fft = RealFft::new(n_fft);
    let mut out = vec![0.0; bins * frames];
    let (mut frame, mut scratch, mut spec) = (vec![0.0; n_fft], Vec::new(), Vec::new());
    for t in 0..frames {
        let seg = &padded[t * cfg.hop_length..t * cfg.hop_length + n_fft];
        for ((f, &s), &w) in frame.iter_mut().zip(seg).zip(&win) {
            *f = s * w;
        }
        fft.forward(&frame, &mut scratch, &mut spec);
        for (k, &(re, im)) in spec.iter().enumerate() {
            out[k * frames + t] = (re * re + im * im).sqrt();
        }
    }
    Ok((out, [bins, frames]))
}
