//! Kaldi-style log mel filter-bank features, as `torchaudio.compliance.kaldi.fbank` computes them.
//!
//! For a waveform `x` at `fs` Hz (scale as loaded, i.e. [−1, 1], not Kaldi's int16 scale):
//!
//! ```text
//! L = ⌊fs·frame_length/1000⌋, S = ⌊fs·frame_shift/1000⌋ (400 and 160 at 16 kHz), P = 2^⌈log2 L⌉
//! frames        t = 0 .. 1 + ⌊(N − L)/S⌋ − 1            (snip_edges = true; none if N < L)
//! u[n]          = x[t·S + n] − mean_n x[t·S + n]       (remove_dc_offset)
//! v[n]          = u[n] − 0.97·u[max(n−1, 0)]          (preemphasis_coefficient; v[0] = 0.03·u[0])
//! z             = v ⊙ window, zero-padded to P          (window_type, see below)
//! p[k]          = |FFT_P(z)[k]|²,  k = 0..P/2          (use_power)
//! E[t, m]       = Σ_k p[k] · B[m, k]                    (mel banks B, below)
//! F[t, m]       = ln(max(E[t, m], ε)),  ε = 1.1920929e−7 (float32 machine epsilon)
//! ```
//!
//! Mel banks (no VTLN): `mel(f) = 1127·ln(1 + f/700)`; bin edges equally spaced in mel between
//! `mel(low_freq)` and `mel(high_freq)` (`high_freq ≤ 0` means Nyquist + high_freq); for FFT bin
//! `k < P/2` at `f = k·fs/P`, `B[m, k] = max(0, min((mel(f) − l_m)/(c_m − l_m), (r_m − mel(f))/(r_m − c_m)))`
//! with left/centre/right edges `l_m, c_m, r_m = mel_low + (m, m+1, m+2)·Δ`,
//! `Δ = (mel_high − mel_low)/(num_mel_bins + 1)`; the Nyquist bin has weight 0.
//!
//! The field (MMPareto, BalanceMM, PMR's KS scripts, all after AST) calls
//! `fbank(x − mean(x), htk_compat=True, sample_frequency=16000, use_energy=False,
//! window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)`: note **`"hanning"`**,
//! not torchaudio's default `"povey"`. [`FbankConfig::default`] is that call; `use_energy=False`
//! and `htk_compat` then change nothing, and `dither` is fixed at 0 (dither makes features random).
//! Output shape `[frames, num_mel_bins]` (time × mel), row-major.

use crate::error::{AudioError, Result};
use crate::fft::RealFft;
use crate::window;
use serde::{Deserialize, Serialize};

/// Kaldi window types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KaldiWindow {
    /// Symmetric Hann (`"hanning"`), the field's choice.
    Hanning,
    /// Symmetric Hann to the power 0.85 (Kaldi's and torchaudio's default).
    Povey,
    /// Symmetric Hamming 0.54/0.46.
    Hamming,
    /// No taper.
    Rectangular,
}

impl KaldiWindow {
    fn make(self, n: usize) -> Vec<f64> {
        match self {
            KaldiWindow::Hanning => window::hann_symmetric(n),
            KaldiWindow::Povey => window::povey(n),
            KaldiWindow::Hamming => window::hamming_symmetric(n),
            KaldiWindow::Rectangular => vec![1.0; n],
        }
    }
}

/// Parameters of [`fbank`] (defaults: the field's call, see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FbankConfig {
    pub frame_length_ms: f64,
    pub frame_shift_ms: f64,
    pub num_mel_bins: usize,
    pub window: KaldiWindow,
    pub preemphasis: f64,
    pub remove_dc_offset: bool,
    pub round_to_power_of_two: bool,
    pub low_freq: f64,
    /// ≤ 0: offset from the Nyquist frequency.
    pub high_freq: f64,
}

impl Default for FbankConfig {
    fn default() -> Self {
        FbankConfig {
            frame_length_ms: 25.0,
            frame_shift_ms: 10.0,
            num_mel_bins: 128,
            window: KaldiWindow::Hanning,
            preemphasis: 0.97,
            remove_dc_offset: true,
            round_to_power_of_two: true,
            low_freq: 20.0,
            high_freq: 0.0,
        }
    }
}

fn mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// Float32 machine epsilon, Kaldi's/torchaudio's log floor.
pub const LOG_FLOOR: f64 = f32::EPSILON as f64;

impl FbankConfig {
    /// Window length, shift and padded FFT size in samples at `fs`.
    pub fn sizes(&self, fs: f64) -> (usize, usize, usize) {
        let len = (fs * self.frame_length_ms * 0.001) as usize;
        let shift = (fs * self.frame_shift_ms * 0.001) as usize;
        let padded = if self.round_to_power_of_two {
            len.next_power_of_two()
        } else {
            len
        };
        (len, shift, padded)
    }

    pub fn validate(&self, fs: f64) -> Result<()> {
        let (len, shift, _) = self.sizes(fs);
        if len < 2 || shift == 0 || self.num_mel_bins < 3 {
            return Err(AudioError::Param(format!(
                "fbank: window {len} and shift {shift} samples at {fs} Hz, {} mel bins: need window ≥ 2, shift ≥ 1, ≥ 3 bins",
                self.num_mel_bins
            )));
        }
        let nyquist = fs / 2.0;
        let high = if self.high_freq <= 0.0 {
            nyquist + self.high_freq
        } else {
            self.high_freq
        };
        if !(self.low_freq >= 0.0 && self.low_freq < high && high <= nyquist) {
            return Err(AudioError::Param(format!(
                "fbank: need 0 ≤ low_freq < high_freq ≤ Nyquist (got {} and {high} at {fs} Hz)",
                self.low_freq
            )));
        }
        Ok(())
    }

    /// Mel filter bank `[num_mel_bins, padded/2 + 1]`, row-major (last column, Nyquist, is 0).
    pub fn mel_banks(&self, fs: f64) -> Vec<f64> {
        let (_, _, padded) = self.sizes(fs);
        let half = padded / 2;
        let nyquist = fs / 2.0;
        let high = if self.high_freq <= 0.0 {
            nyquist + self.high_freq
        } else {
            self.high_freq
        };
        let (ml, mh) = (mel(self.low_freq), mel(high));
        let delta = (mh - ml) / (self.num_mel_bins + 1) as f64;
        let bin_width = fs / padded as f64;
        let mut b = vec![0.0; self.num_mel_bins * (half + 1)];
        for m in 0..self.num_mel_bins {
            let (l, c, r) = (
                ml + m as f64 * delta,
                ml + (m + 1) as f64 * delta,
                ml + (m + 2) as f64 * delta,
            );
            for k in 0..half {
                let f = mel(bin_width * k as f64);
                let up = (f - l) / (c - l);
                let down = (r - f) / (r - c);
                b[m * (half + 1) + k] = up.min(down).max(0.0);
            }
        }
        b
    }
}

/// Log mel filter-bank energies `[frames, num_mel_bins]`, row-major (see the module docs).
pub fn fbank(x: &[f32], fs: f64, cfg: &FbankConfig) -> Result<(Vec<f64>, [usize; 2])> {
    cfg.validate(fs)?;
    let (len, shift, padded) = cfg.sizes(fs);
    let frames = if x.len() < len {
        0
    } else {
        1 + (x.len() - len) / shift
    };
    let nm = cfg.num_mel_bins;
    let half = padded / 2;
    let banks = cfg.mel_banks(fs);
    // Sparse rows: each triangle covers a contiguous run of FFT bins.
    let ranges: Vec<(usize, usize)> = (0..nm)
        .map(|m| {
            let row = &banks[m * (half + 1)..(m + 1) * (half + 1)];
            let lo = row.iter().position(|&w| w > 0.0).unwrap_or(0);
            let hi = row.iter().rposition(|&w| w > 0.0).map_or(0, |i| i + 1);
            (lo, hi.max(lo))
        })
        .collect();
    let win = cfg.window.make(len);
    let fft = RealFft::new(padded);
    let mut out = vec![0.0; frames * nm];
    let (mut u, mut z) = (vec![0.0; len], vec![0.0; padded]);
    let (mut scratch, mut spec, mut pw) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..frames {
        let seg = &x[t * shift..t * shift + len];
        for (ui, &s) in u.iter_mut().zip(seg) {
            *ui = s as f64;
        }
        if cfg.remove_dc_offset {
            let mean = u.iter().sum::<f64>() / len as f64;
            u.iter_mut().for_each(|v| *v -= mean);
        }
        if cfg.preemphasis != 0.0 {
            for n in (1..len).rev() {
                u[n] -= cfg.preemphasis * u[n - 1];
            }
            u[0] -= cfg.preemphasis * u[0];
        }
        for ((zi, &ui), &w) in z.iter_mut().zip(&u).zip(&win) {
            *zi = ui * w;
        }
        z[len..].iter_mut().for_each(|v| *v = 0.0);
        fft.power(&z, &mut scratch, &mut spec, &mut pw);
        for (m, &(lo, hi)) in ranges.iter().enumerate() {
            let row = &banks[m * (half + 1)..];
            let e: f64 = (lo..hi).map(|k| pw[k] * row[k]).sum();
            out[t * nm + m] = e.max(LOG_FLOOR).ln();
        }
    }
    Ok((out, [frames, nm]))
}
