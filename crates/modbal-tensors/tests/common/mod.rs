//! Helpers shared by the reference tests (each test binary uses a subset).
#![allow(dead_code)]

use candle_core::{DType, Device, Shape, Tensor};

/// A tensor whose flat (row-major) element `i` is `f(i)`: deterministic inputs that a Python
/// snippet can rebuild exactly (`torch.tensor([f(i) for i in range(n)]).reshape(shape)`).
pub fn formula(shape: &[usize], dtype: DType, f: impl Fn(usize) -> f64) -> Tensor {
    let shape = Shape::from(shape);
    let v: Vec<f64> = (0..shape.elem_count()).map(f).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("building a test tensor")
}

/// All elements as `f64`, row-major.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("reading a tensor")
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` element-wise, naming the first offender.
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite() && (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g:.15e}, expected {w:.15e} (|diff| {:.3e}, rtol {rtol:e}, atol {atol:e})",
            (g - w).abs()
        );
    }
}

/// [`assert_close`] on a tensor.
#[track_caller]
pub fn assert_tensor_close(what: &str, got: &Tensor, want: &[f64], rtol: f64, atol: f64) {
    assert_close(what, &values(got), want, rtol, atol)
}
