//! Seeded, checkpointable random numbers.
//!
//! candle's CPU `randn`/`rand` draw from an unseeded generator, so every random quantity in modbal
//! (initial weights, noise, shuffles, dropout masks) comes from a [`SeededRng`] instead. The
//! generator is ChaCha8, whose output stream is fixed by the algorithm (not by the `rand`
//! version), and whose full state is `(seed, stream, word position)`: that is what a checkpoint
//! stores ([`RngState`]).

use candle_core::{DType, Device, Result, Shape, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// A seeded ChaCha8 generator with a serialisable state.
#[derive(Clone, Debug)]
pub struct SeededRng {
    inner: ChaCha8Rng,
}

/// The complete state of a [`SeededRng`]: restoring it continues the exact same stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte ChaCha key, hex encoded.
    pub seed_hex: String,
    /// The ChaCha stream id.
    pub stream: u64,
    /// Position in the stream in 32-bit words (decimal string: it is a u128).
    pub word_pos: String,
}

impl SeededRng {
    /// A generator whose stream is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// An independent child generator, derived deterministically from this one (advances `self`).
    /// Use it to give a component its own stream, so that adding draws elsewhere does not shift it.
    pub fn fork(&mut self) -> Self {
        Self::new(self.inner.next_u64())
    }

    /// The state to store in a checkpoint.
    pub fn state(&self) -> RngState {
        let seed = self.inner.get_seed();
        RngState {
            seed_hex: seed.iter().map(|b| format!("{b:02x}")).collect(),
            stream: self.inner.get_stream(),
            word_pos: self.inner.get_word_pos().to_string(),
        }
    }

    /// Rebuild a generator from [`SeededRng::state`].
    pub fn from_state(state: &RngState) -> std::result::Result<Self, String> {
        if state.seed_hex.len() != 64 {
            return Err(format!(
                "rng state: seed_hex must have 64 hex digits, got {}",
                state.seed_hex.len()
            ));
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&state.seed_hex[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("rng state: bad seed_hex: {e}"))?;
        }
        let word_pos: u128 = state
            .word_pos
            .parse()
            .map_err(|e| format!("rng state: bad word_pos {:?}: {e}", state.word_pos))?;
        let mut inner = ChaCha8Rng::from_seed(seed);
        inner.set_stream(state.stream);
        inner.set_word_pos(word_pos);
        Ok(Self { inner })
    }

    /// A uniform draw in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    /// A standard normal draw.
    pub fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.inner)
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.random_range(0..n)
    }

    /// `n` draws from N(mean, std²).
    pub fn normal_vec(&mut self, n: usize, mean: f64, std: f64) -> Vec<f64> {
        (0..n).map(|_| mean + std * self.normal()).collect()
    }

    /// `n` draws from U[lo, hi).
    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| lo + (hi - lo) * self.uniform()).collect()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.inner.random_range(0..=i);
            xs.swap(i, j);
        }
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// A tensor of N(mean, std²) draws.
    pub fn randn<S: Into<Shape>>(
        &mut self,
        shape: S,
        mean: f64,
        std: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.normal_vec(shape.elem_count(), mean, std);
        Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }

    /// A tensor of U[lo, hi) draws.
    pub fn rand<S: Into<Shape>>(
        &mut self,
        shape: S,
        lo: f64,
        hi: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.uniform_vec(shape.elem_count(), lo, hi);
        Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst)
    }
}

/// splitmix64 over a list of words: a well-mixed seed derived from several (run seed, epoch,
/// sample, modality, ...), for generators that must not depend on what ran before them.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut z: u64 = 0x243F_6A88_85A3_08D3;
    for &p in parts {
        z = z.wrapping_add(p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_roundtrip() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        assert_eq!(a.normal_vec(5, 0.0, 1.0), b.normal_vec(5, 0.0, 1.0));
        let st = a.state();
        let x = a.uniform_vec(10, 0.0, 1.0);
        let mut c = SeededRng::from_state(&st).unwrap();
        assert_eq!(x, c.uniform_vec(10, 0.0, 1.0));
        let mut d = SeededRng::new(8);
        assert_ne!(
            d.uniform_vec(3, 0.0, 1.0),
            SeededRng::new(7).uniform_vec(3, 0.0, 1.0)
        );
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut r = SeededRng::new(1);
        let mut p = r.permutation(100);
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn normal_moments() {
        // Closed form: mean 0, variance 1; standard error of the mean at n = 20000 is 0.007.
        let mut r = SeededRng::new(3);
        let v = r.normal_vec(20000, 0.0, 1.0);
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
        assert!(m.abs() < 0.03, "mean {m}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
