//! `scipy.signal.spectrogram` with its defaults (the AVE recipe's spectrogram).
//!
//! ```text
//! segments  t = 0 .. ⌊(N − nperseg)/step⌋,   step = nperseg − noverlap   (no padding)
//! z_t[n]    = (x[t·step + n] − mean_n x[t·step + n]) · w[n]                (detrend="constant")
//! P[f,t]    = c_f · |FFT(z_t)[f]|² / (fs · Σ w²),   f = 0..nperseg/2       (scaling="density")
//! c_f       = 2 except c_0 = 1 and, for even nperseg, c_{nperseg/2} = 1    (one-sided)
//! ```
//!
//! with `w` the periodic Tukey window, α = 0.25 (`window=("tukey", 0.25)`). Output shape
//! `[nperseg/2 + 1, segments]` (frequency × time), row-major.

use crate::error::{AudioError, Result};
use crate::fft::RealFft;
use crate::window::tukey_periodic;
use serde::{Deserialize, Serialize};

/// Parameters of [`psd_spectrogram`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsdConfig {
    pub nperseg: usize,
    pub noverlap: usize,
    /// Taper fraction of the Tukey window.
    pub tukey_alpha: f64,
    /// Subtract each segment's mean before windowing.
    pub detrend_constant: bool,
}

impl PsdConfig {
    pub fn validate(&self) -> Result<()> {
        if self.nperseg < 2 || self.noverlap >= self.nperseg {
            return Err(AudioError::Param(format!(
                "spectrogram: need nperseg ≥ 2 and noverlap < nperseg (got {} and {})",
                self.nperseg, self.noverlap
            )));
        }
        if !(0.0..=1.0).contains(&self.tukey_alpha) {
            return Err(AudioError::Param(
                "spectrogram: tukey_alpha must be in [0, 1]".into(),
            ));
        }
        Ok(())
    }

    /// Number of segments for a signal of `n` samples.
    pub fn segments(&self, n: usize) -> usize {
        if n < self.nperseg {
            0
        } else {
            1 + (n - self.nperseg) / (self.nperseg - self.noverlap)
        }
    }
}

/// One-sided power spectral density per segment, `[nperseg/2 + 1, segments]`, row-major.
pub fn psd_spectrogram(x: &[f32], fs: f64, cfg: &PsdConfig) -> Result<(Vec<f64>, [usize; 2])> {
    cfg.validate()?;
    let m = cfg.nperseg;
    let step = m - cfg.noverlap;
    let segs = cfg.segments(x.len());
    let bins = m / 2 + 1;
    let win = tukey_periodic(m, cfg.tukey_alpha);
    let scale = 1.0 / (fs * win.iter().map(|w| w * w).sum::<f64>());
    let fft = RealFft::new(m);
    let mut out = vec![0.0; bins * segs];
    let (mut z, mut scratch, mut spec, mut pw) = (vec![0.0; m], Vec::new(), Vec::new(), Vec::new());
    for t in 0..segs {
        let seg = &x[t * step..t * step + m];
        let mean = if cfg.detrend_constant {
            seg.iter().map(|&v| v as f64).sum::<f64>() / m as f64
        } else {
            0.0
        };
        for ((zi, &s), &w) in z.iter_mut().zip(seg).zip(&win) {
            *zi = (s as f64 - mean) * w;
        }
        fft.power(&z, &mut scratch, &mut spec, &mut pw);
        for (f, &p) in pw.iter().enumerate() {
            let c = if f == 0 || (m.is_multiple_of(2) && f == m / 2) {
                1.0
            } else {
                2.0
            };
            out[f * segs + t] = c * p * scale;
        }
    }
    Ok((out, [bins, segs]))
}
