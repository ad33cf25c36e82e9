//! Helpers shared by the integration tests: a hand-set linear concat model and tensor builders.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use modbal_core::{EvalOutputs, MultimodalModel};
use modbal_tensors::ParamStore;

/// `[N, C]` f64 tensor from rows.
pub fn t2(rows: &[&[f64]]) -> Tensor {
    let c = rows[0].len();
    let v: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(v, (rows.len(), c), &Device::Cpu).unwrap()
}

/// `[N, 1]` f64 feature column.
pub fn col(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), (v.len(), 1), &Device::Cpu).unwrap()
}

pub fn assert_close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol,
        "{what}: got {a}, expected {b} (tolerance {tol})"
    );
}

pub fn assert_all_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: lengths {} vs {}",
        a.len(),
        b.len()
    );
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert_close(*x, *y, tol, &format!("{what}[{k}]"));
    }
}

/// A late-fusion model with identity encoders and a hand-set concat head:
/// fused = W·[f_0; …; f_{M−1}] + b, per-modality z_m = W[:, slice_m]·f_m + b/M (f64).
pub struct LinearConcat {
    names: Vec<String>,
    dims: Vec<usize>,
    /// `[C, ΣD]`.
    w: Tensor,
    /// `[C]`.
    b: Tensor,
    params: ParamStore,
}

impl LinearConcat {
    /// `w`: C rows of ΣD weights; `b`: C biases; `dims`: D_m per modality.
    pub fn new(dims: &[usize], w: &[&[f64]], b: &[f64]) -> Self {
        let total: usize = dims.iter().sum();
        assert!(w.iter().all(|r| r.len() == total));
        Self {
            names: (0..dims.len()).map(|m| format!("m{m}")).collect(),
            dims: dims.to_vec(),
            w: t2(w),
            b: Tensor::from_vec(b.to_vec(), b.len(), &Device::Cpu).unwrap(),
            params: ParamStore::new(),
        }
    }

    /// Evaluation outputs of the model on the given features (as the training loop would
    /// produce them).
    pub fn eval_outputs(&self, features: &[Tensor], labels: &[u32]) -> EvalOutputs {
        let (fused, per) = self.head(features).unwrap();
        EvalOutputs {
            sample_ids: (0..labels.len()).collect(),
            labels: labels.to_vec(),
            fused_logits: fused,
            per_modality_logits: per,
            features: features.to_vec(),
        }
    }
}

impl MultimodalModel for LinearConcat {
    fn modalities(&self) -> &[String] {
        &self.names
    }
    fn num_classes(&self) -> usize {
        self.b.dims()[0]
    }
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn encode(&self, _m: usize, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        Ok(x.clone())
    }
    fn head(&self, features: &[Tensor]) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let f = Tensor::cat(features, 1)?.to_dtype(DType::F64)?;
        let fused = f.matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        let share = (&self.b / self.dims.len() as f64)?;
        let mut off = 0;
        let mut per = Vec::new();
        for (m, &d) in self.dims.iter().enumerate() {
            let wm = self.w.narrow(1, off, d)?;
            per.push(
                features[m]
                    .to_dtype(DType::F64)?
                    .matmul(&wm.t()?.contiguous()?)?
                    .broadcast_add(&share)?,
            );
            off += d;
        }
        Ok((fused, per))
    }
}
