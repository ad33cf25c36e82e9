//! UDI's dynamic controller (eq 13-16) on constructed gradients.

mod common;

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use common::*;
use modbal_modulate::*;

fn vars() -> Vec<(String, Var)> {
    let z =
        |n: usize| Var::from_tensor(&Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap()).unwrap();
    vec![
        ("shared.a".into(), z(3)),
        ("shared.b".into(), z(2)),
        ("private.c".into(), z(1)),
    ]
}

/// A store with gradient `values[i]` on `params[i]` (None: no entry).
fn store(params: &[(String, Var)], values: &[Option<&[f64]>]) -> GradStore {
    let mut loss: Option<Tensor> = None;
    for ((_, v), c) in params.iter().zip(values) {
        let Some(c) = c else { continue };
        let term = (v.as_tensor() * t32(c, v.dims()))
            .unwrap()
            .sum_all()
            .unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => (l + term).unwrap(),
        });
    }
    loss.unwrap().backward().unwrap()
}

#[test]
fn aligned_conflicting_and_partial_terms() {
    let p = vars();
    let shared = &p[..2];
    let cls = store(
        &p,
        &[Some(&[1.0, 2.0, 0.0]), Some(&[1.0, 1.0]), Some(&[9.0])],
    );
    // aligned:     ξ = 1·2 + 2·1 + 0 + 1·0 + 1·1 = 5
    let aligned = store(
        &p,
        &[Some(&[2.0, 1.0, 0.0]), Some(&[0.0, 1.0]), Some(&[9.0])],
    );
    // conflicting: ξ = −1 − 2 + 0 − 1 + 0 = −4 → ReLU 0
    let conflicting = store(&p, &[Some(&[-1.0, -1.0, 1.0]), Some(&[-1.0, 0.0]), None]);
    // partial:     ξ = 0 + 0 + 0 + 1 − 0.5 = 0.5 (private.c is not shared: its 9·9 is ignored)
    let partial = store(
        &p,
        &[Some(&[0.0, 0.0, 5.0]), Some(&[1.0, -0.5]), Some(&[9.0])],
    );
    let ctl = UdiController::new(UdiControllerConfig::default()).unwrap();
    let r = ctl
        .weights(&cls, &[&aligned, &conflicting, &partial], shared)
        .unwrap();
    assert_close(&r.inner_products, &[5.0, -4.0, 0.5], 1e-12, "ξ");
    assert_eq!(r.clipped, vec![5.0, 0.0, 0.5]);
    // α = ξ̃ / (Σξ̃ + ε) = [5/5.5, 0, 0.5/5.5] (ε = 1e-8 changes the 9th digit).
    assert_close(&r.alphas, &[5.0 / 5.5, 0.0, 0.5 / 5.5], 1e-8, "α");
    assert_eq!(r.shared_tensors, vec![2, 2, 2]);
    // The paper's two-term case: one aligned (con), one conflicting (com) → α = [≈1, 0].
    let r = ctl
        .weights(&cls, &[&aligned, &conflicting], shared)
        .unwrap();
    assert_close(&r.alphas, &[5.0 / (5.0 + 1e-8), 0.0], 1e-15, "α two terms");
    // Both conflicting: every α is 0 (eq 16 with Σξ̃ = 0: 0/ε).
    let r = ctl
        .weights(&cls, &[&conflicting, &conflicting], shared)
        .unwrap();
    assert_eq!(r.alphas, vec![0.0, 0.0]);
    // Missing key: only the intersection counts (eq 14). Aux without `shared.b`: ξ = 1·2 + 2·1 = 4.
    let only_a = store(&p, &[Some(&[2.0, 1.0, 0.0]), None, None]);
    let r = ctl.weights(&cls, &[&only_a], shared).unwrap();
    assert_eq!(r.inner_products, vec![4.0]);
    assert_eq!(r.shared_tensors, vec![1]);
}

#[test]
fn eps_and_validation() {
    let ctl = UdiController::new(UdiControllerConfig { eps: 1.0 }).unwrap();
    // ξ = [1, 1], ε = 1 → α = 1/3 each.
    assert_close(
        &ctl.alphas_from_inner_products(&[1.0, 1.0]).unwrap(),
        &[1.0 / 3.0; 2],
        1e-15,
        "α",
    );
    assert!(matches!(
        UdiController::new(UdiControllerConfig { eps: 0.0 }),
        Err(ModulateError::Param(_))
    ));
    assert!(matches!(
        ctl.alphas_from_inner_products(&[f64::NAN]),
        Err(ModulateError::Input(_))
    ));
    let c: UdiControllerConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c.eps, 1e-8);
}
