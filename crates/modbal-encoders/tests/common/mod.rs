//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use modbal_core::MultimodalModel;
use modbal_tensors::{cross_entropy, SeededRng};

/// `N(0, 1)` input of `shape` from a seeded generator.
pub fn randn(rng: &mut SeededRng, shape: &[usize]) -> Tensor {
    rng.randn(shape.to_vec(), 0.0, 1.0, DType::F32, &Device::Cpu)
        .unwrap()
}

/// Labels `0, 1, ..., B-1` modulo `num_classes`.
pub fn labels(b: usize, num_classes: usize) -> Tensor {
    let v: Vec<u32> = (0..b).map(|i| (i % num_classes) as u32).collect();
    Tensor::from_vec(v, b, &Device::Cpu).unwrap()
}

pub fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// One forward + backward of the fused cross-entropy in TRAIN mode; asserts that every
/// trainable parameter receives a finite, not all-zero gradient of its own shape.
pub fn assert_every_param_gets_gradient(
    model: &dyn MultimodalModel,
    inputs: &[Tensor],
    what: &str,
) {
    let b = inputs[0].dim(0).unwrap();
    let y = labels(b, model.num_classes());
    let out = model.forward_t(inputs, true).unwrap();
    assert_eq!(out.fused_logits.dims(), &[b, model.num_classes()], "{what}");
    let loss = cross_entropy(&out.fused_logits, &y).unwrap();
    let l = loss.to_scalar::<f32>().unwrap();
    assert!(l.is_finite(), "{what}: loss {l}");
    let grads = loss.backward().unwrap();
    let params = model.params().trainable();
    assert!(!params.is_empty(), "{what}: no trainable parameters");
    for (name, var) in &params {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: parameter {name} received no gradient"));
        assert_eq!(g.dims(), var.dims(), "{what}: gradient shape of {name}");
        let v = to_vec(g);
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{what}: gradient of {name} has non-finite values"
        );
        assert!(
            v.iter().any(|&x| x != 0.0),
            "{what}: gradient of {name} is all zero"
        );
    }
}
