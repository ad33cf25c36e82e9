//! A small real-input FFT: iterative radix-2 Cooley–Tukey in `f64` for power-of-two sizes, a
//! direct O(n²) DFT otherwise (only used for unusual parameter choices).
//!
//! `X[k] = Σ_{n=0}^{N−1} x[n]·e^{−2πi·kn/N}` for `k = 0..=N/2` (the one-sided spectrum of a real
//! signal, as `numpy.fft.rfft`).

/// A planned real FFT of one size.
#[derive(Clone, Debug)]
pub struct RealFft {
    n: usize,
    /// `e^{−2πi·k/N}` for `k < N/2` (radix-2) or `k < N` (direct DFT).
    twiddle: Vec<(f64, f64)>,
    bitrev: Vec<usize>,
    pow2: bool,
}

impl RealFft {
    /// Plans an FFT of size `n ≥ 1`.
    pub fn new(n: usize) -> Self {
        assert!(n >= 1, "FFT size must be at least 1");
        let pow2 = n.is_power_of_two();
        let count = if pow2 { n / 2 } else { n };
        let twiddle = (0..count)
            .map(|k| {
                let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                (a.cos(), a.sin())
            })
            .collect();
        let bitrev = if pow2 {
            let bits = n.trailing_zeros();
            (0..n)
                .map(|i| {
                    if bits == 0 {
                        0
                    } else {
                        i.reverse_bits() >> (usize::BITS - bits)
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        RealFft {
            n,
            twiddle,
            bitrev,
            pow2,
        }
    }

    /// FFT size.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false (sizes are ≥ 1); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// One-sided spectrum `X[0..=N/2]` of `x` (length `N`) as `(re, im)` pairs, written to `out`
    /// (resized to `N/2 + 1`). `scratch` is reused between calls.
    pub fn forward(&self, x: &[f64], scratch: &mut Vec<(f64, f64)>, out: &mut Vec<(f64, f64)>) {
        let n = self.n;
        assert_eq!(
            x.len(),
            n,
            "FFT input length {} != planned size {n}",
            x.len()
        );
        out.clear();
        if !self.pow2 {
            for k in 0..=n / 2 {
                let (mut re, mut im) = (0.0, 0.0);
                for (t, &v) in x.iter().enumerate() {
                    let (c, s) = self.twiddle[(k * t) % n];
                    re += v * c;
                    im += v * s;
                }
                out.push((re, im));
            }
            return;
        }
        scratch.clear();
        scratch.resize(n, (0.0, 0.0));
        for (i, &v) in x.iter().enumerate() {
            scratch[self.bitrev[i]] = (v, 0.0);
        }
        let mut len = 2;
        while len <= n {
            let half = len / 2;
            let step = n / len;
            for start in (0..n).step_by(len) {
                for j in 0..half {
                    let (wr, wi) = self.twiddle[j * step];
                    let (ar, ai) = scratch[start + j];
                    let (br, bi) = scratch[start + j + half];
                    let tr = br * wr - bi * wi;
                    let ti = br * wi + bi * wr;
                    scratch[start + j] = (ar + tr, ai + ti);
                    scratch[start + j + half] = (ar - tr, ai - ti);
                }
            }
            len *= 2;
        }
        out.extend_from_slice(&scratch[..=n / 2]);
    }

    /// `|X[k]|²` for `k = 0..=N/2`, written to `out`.
    pub fn power(
        &self,
        x: &[f64],
        scratch: &mut Vec<(f64, f64)>,
        spec: &mut Vec<(f64, f64)>,
        out: &mut Vec<f64>,
    ) {
        self.forward(x, scratch, spec);
        out.clear();
        out.extend(spec.iter().map(|&(r, i)| r * r + i * i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f64]) -> Vec<(f64, f64)> {
        let n = x.len();
        (0..=n / 2)
            .map(|k| {
                x.iter().enumerate().fold((0.0, 0.0), |(r, i), (t, &v)| {
                    let a = -2.0 * std::f64::consts::PI * (k * t) as f64 / n as f64;
                    (r + v * a.cos(), i + v * a.sin())
                })
            })
            .collect()
    }

    #[test]
    fn radix2_and_direct_match_the_definition() {
        for n in [1usize, 2, 4, 8, 64, 512, 6, 30] {
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.3 + (i as f64).sin())
                .collect();
            let f = RealFft::new(n);
            let (mut s, mut out) = (Vec::new(), Vec::new());
            f.forward(&x, &mut s, &mut out);
            let want = naive(&x);
            assert_eq!(out.len(), want.len());
            for (a, b) in out.iter().zip(&want) {
                assert!(
                    (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9,
                    "n={n}: {a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn impulse_and_cosine() {
        // closed forms: an impulse has a flat spectrum; cos(2π·5n/64) puts N/2 in bin 5.
        let f = RealFft::new(64);
        let (mut s, mut sp, mut p) = (Vec::new(), Vec::new(), Vec::new());
        let mut x = vec![0.0; 64];
        x[0] = 1.0;
        f.power(&x, &mut s, &mut sp, &mut p);
        assert!(p.iter().all(|&v| (v - 1.0).abs() < 1e-12));
        let x: Vec<f64> = (0..64)
            .map(|n| (2.0 * std::f64::consts::PI * 5.0 * n as f64 / 64.0).cos())
            .collect();
        f.forward(&x, &mut s, &mut sp);
        assert!((sp[5].0 - 32.0).abs() < 1e-9 && sp[5].1.abs() < 1e-9);
        assert!(sp
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != 5)
            .all(|(_, v)| v.0.abs() < 1e-9 && v.1.abs() < 1e-9));
    }
}
