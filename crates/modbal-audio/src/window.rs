//! Analysis windows, with the exact conventions of the libraries the field uses.
//!
//! | function | formula (`n = 0..N−1`) | equals |
//! |---|---|---|
//! | [`hann_periodic`] | `0.5 − 0.5·cos(2πn/N)` | `scipy.signal.get_window("hann", N)`, librosa's STFT window |
//! | [`hann_symmetric`] | `0.5 − 0.5·cos(2πn/(N−1))` | `torch.hann_window(N, periodic=False)`, Kaldi/torchaudio `"hanning"` |
//! | [`povey`] | `hann_symmetric^0.85` | Kaldi/torchaudio `"povey"` |
//! | [`hamming_symmetric`] | `0.54 − 0.46·cos(2πn/(N−1))` | Kaldi/torchaudio `"hamming"` |
//! | [`tukey_periodic`] | tapered cosine, taper fraction α, of length N+1 with the last point dropped | `scipy.signal.get_window(("tukey", α), N)`, `scipy.signal.spectrogram`'s default (α = 0.25) |

use std::f64::consts::PI;

pub fn hann_periodic(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos())
        .collect()
}

pub fn hann_symmetric(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![1.0];
    }
    (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / (n - 1) as f64).cos())
        .collect()
}

pub fn povey(n: usize) -> Vec<f64> {
    hann_symmetric(n)
        .into_iter()
        .map(|w| w.powf(0.85))
        .collect()
}

pub fn hamming_symmetric(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![1.0];
    }
    (0..n)
        .map(|i| 0.54 - 0.46 * (2.0 * PI * i as f64 / (n - 1) as f64).cos())
        .collect()
}

/// Symmetric Tukey window of length `m` (taper fraction `alpha` ∈ [0, 1]).
fn tukey_symmetric(m: usize, alpha: f64) -> Vec<f64> {
    if m <= 1 {
        return vec![1.0; m];
    }
    if alpha <= 0.0 {
        return vec![1.0; m];
    }
    if alpha >= 1.0 {
        return hann_symmetric(m);
    }
    let span = alpha * (m - 1) as f64;
    let width = (span / 2.0).floor() as usize;
    (0..m)
        .map(|i| {
            let x = i as f64;
            if i <= width {
                0.5 * (1.0 + (PI * (-1.0 + 2.0 * x / span)).cos())
            } else if i < m - width - 1 {
                1.0
            } else {
                0.5 * (1.0 + (PI * (-2.0 / alpha + 1.0 + 2.0 * x / span)).cos())
            }
        })
        .collect()
}

pub fn tukey_periodic(n: usize, alpha: f64) -> Vec<f64> {
    let mut w = tukey_symmetric(n + 1, alpha);
    w.pop();
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_scipy_and_torch() {
        // Reference values (scipy 1.17.1 / torch 2.15):
        //   scipy.signal.get_window('hann', 8)            -> [0, .1464466, .5, .8535534, 1, ...]
        //   scipy.signal.get_window(('tukey', .25), 512)[[0,1,32,63,64,65,448,449,511]]
        //   torch.hann_window(400, periodic=False)[[1,199,200]]
        let h = hann_periodic(8);
        for (a, b) in h
            .iter()
            .zip([0.0, 0.14644660940672624, 0.5, 0.8535533905932737, 1.0])
        {
            assert!((a - b).abs() < 1e-15);
        }
        let t = tukey_periodic(512, 0.25);
        let want = [
            (0, 0.0),
            (1, 0.0006022718974137975),
            (32, 0.5),
            (63, 0.9993977281025862),
            (64, 1.0),
            (65, 1.0),
            (448, 1.0),
            (449, 0.9993977281025862),
            (511, 0.0006022718974137975),
        ];
        for (i, v) in want {
            assert!((t[i] - v).abs() < 1e-12, "tukey[{i}] = {} vs {v}", t[i]);
        }
        let s = hann_symmetric(400);
        assert!((s[1] - 6.199333200590518e-05).abs() < 1e-12);
        assert!((s[199] - 0.9999845014267927).abs() < 1e-12);
        assert!((s[199] - s[200]).abs() < 1e-15);
    }
}
