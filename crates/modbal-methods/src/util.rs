//! Small helpers shared by the methods: JSON by modality name, host rows and labels, entropy.
//! The per-modality statistics (softmax rows, `softmax(z)[y]`, accuracy, the epoch accumulator)
//! live in [`modbal_core::stats`].

use candle_core::{DType, Tensor};
use modbal_core::Result;

/// Values per modality as a JSON object keyed by modality name.
pub fn by_name(names: &[String], v: &[f64]) -> serde_json::Value {
    serde_json::Value::Object(
        names
            .iter()
            .zip(v)
            .map(|(n, x)| (n.clone(), serde_json::json!(x)))
            .collect(),
    )
}

/// A `[B, C]` tensor as f64 rows.
pub fn rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(t.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

/// Labels as indices.
pub fn labels(t: &Tensor) -> Result<Vec<usize>> {
    Ok(t.to_dtype(DType::I64)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|y| y.max(0) as usize)
        .collect())
}

/// Shannon entropy (nats) of a probability row, `0·log 0 = 0`.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| x * x.ln())
        .sum::<f64>()
}
