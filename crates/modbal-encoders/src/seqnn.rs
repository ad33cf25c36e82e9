//! Small differentiable pieces shared by the sequence encoders (BERT, BiGRU, sequence
//! Transformer): seeded dropout, sigmoid, embedding lookup, token-id checks.

use candle_core::{DType, Result, Tensor};
use modbal_tensors::SeededRng;
use std::sync::Mutex;

/// A dropout whose masks come from modbal's seeded generator (candle's CPU RNG cannot be
/// seeded, and candle-transformers' dropout is a no-op). Inverted dropout as PyTorch: in
/// training mode each element is zeroed with probability `p` and the survivors are scaled by
/// `1/(1 − p)`; evaluation mode is the identity.
///
/// The generator is forked from the build RNG, so a model's dropout masks are a function of
/// the build seed and of the order of forward passes. (Its state is not part of a checkpoint:
/// a resumed run draws other masks than an uninterrupted one.)
#[derive(Debug)]
pub struct SeededDropout {
    rng: Mutex<SeededRng>,
}

impl Clone for SeededDropout {
    fn clone(&self) -> Self {
        Self {
            rng: Mutex::new(self.rng.lock().expect("dropout rng poisoned").clone()),
        }
    }
}

impl SeededDropout {
    /// A dropout generator forked from `rng` (consumes one draw of `rng`).
    pub fn new(rng: &mut SeededRng) -> Self {
        Self {
            rng: Mutex::new(rng.fork()),
        }
    }

    /// Re-seed the mask generator.
    pub fn reseed(&self, seed: u64) {
        *self.rng.lock().expect("dropout rng poisoned") = SeededRng::new(seed);
    }

    /// `x` with dropout probability `p` applied when `train` (identity otherwise or if `p == 0`).
    pub fn apply(&self, x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
        if !train || p <= 0.0 {
            return Ok(x.clone());
        }
        if p >= 1.0 {
            return x.zeros_like();
        }
        let n = x.elem_count();
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().expect("dropout rng poisoned");
            (0..n)
                .map(|_| if rng.uniform() < p { 0.0 } else { keep as f32 })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

/// `σ(x) = (1 + tanh(x/2))/2`, differentiable (candle's `sigmoid` op is avoided on purpose:
/// composed ops have a backward on every device).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    ((x * 0.5)?.tanh()? + 1.0)? * 0.5
}

/// Token ids given as floats (`[B, L]`, how [`crate::Encoder`] inputs arrive) → `u32`, checked
/// to be non-negative integers below `vocab`.
pub fn ids_from_float(kind: &str, x: &Tensor, vocab: usize) -> Result<Tensor> {
    if x.rank() != 2 {
        candle_core::bail!(
            "{kind} encoder expects token ids [B, L], got shape {:?}",
            x.dims()
        );
    }
    let v: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut out = Vec::with_capacity(v.len());
    for (i, &f) in v.iter().enumerate() {
        if !(f >= 0.0 && f.fract() == 0.0 && (f as usize) < vocab) {
            candle_core::bail!(
                "{kind} encoder: token id {f} at flat position {i} is not an integer in [0, {vocab})"
            );
        }
        out.push(f as u32);
    }
    Tensor::from_vec(out, x.dims(), x.device())
}

/// Embedding lookup `table[ids]`: `ids [B, L]` (u32) → `[B, L, D]`; differentiable in `table`.
pub fn embed(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, l) = ids.dims2()?;
    let d = table.dim(1)?;
    table
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, l, d))
}

/// PyTorch-style masked fill value used for attention logits of padded keys.
pub(crate) const NEG_LARGE: f64 = -1e9;
