//! MLA's gradient projection: the update against PyTorch, the normalisation, symmetry and
//! positive semi-definiteness of P, the orthogonality of the projected update to the features
//! already seen, and the checkpoint state.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use modbal_modulate::*;
use modbal_tensors::SeededRng;

fn proj(d: usize) -> MlaProjector {
    MlaProjector::new(MlaProjectionConfig::default(), d).unwrap()
}

fn fro(p: &[f64]) -> f64 {
    p.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn matvec(p: &[f64], v: &[f64]) -> Vec<f64> {
    let d = v.len();
    (0..d)
        .map(|i| (0..d).map(|j| p[i * d + j] * v[j]).sum())
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

// PyTorch 2.15 (CPU, float64):
//   def update(P, r, alpha):
//       r = r.reshape(1, -1); k = P @ r.t()
//       P = P - (k @ k.t()) / (alpha + (r @ k))
//       return P / torch.norm(P, p='fro')
//   P = torch.eye(2, dtype=torch.float64)
//   P = update(P, torch.tensor([1.0, 0.0], dtype=torch.float64), 0.1 ** (1 + 0 / 10))
//   -> [0.09053574604251856, 0.0, 0.0, 0.9958932064677037]
//   P = update(P, torch.tensor([1.0, 1.0], dtype=torch.float64), 0.1 ** (1 + 5 / 10))
//   -> [0.46680959264398414, -0.4524430857409895, -0.4524430857409895, 0.6104746616739314]
//   G = torch.tensor([[1.0, 2.0], [3.0, 4.0]]); (G @ P.t().float()).flatten().tolist()
//   -> [-0.43807658553123474, 0.7685061693191528, -0.4093436002731323, 1.0845693349838257]
//
// Hand check of the first update: α = 0.1, k = r = [1, 0], r·k = 1,
// P̃ = I − diag(1, 0)/1.1 = diag(0.0909091, 1), ‖P̃‖_F = √1.0082645 = 1.0041237,
// P = diag(0.0905357, 0.9958932).
#[test]
fn updates_and_projection_match_pytorch() {
    let mut p = proj(2);
    assert_eq!(p.p(), &[1.0, 0.0, 0.0, 1.0]);
    let a0 = p.alpha(0, 10).unwrap();
    assert!((a0 - 0.1).abs() < 1e-15);
    p.update(&[1.0, 0.0], a0).unwrap();
    assert_close(
        p.p(),
        &[0.09053574604251856, 0.0, 0.0, 0.9958932064677037],
        1e-12,
        "P1",
    );
    let a1 = p.alpha(5, 10).unwrap();
    assert!((a1 - 0.1f64.powf(1.5)).abs() < 1e-15);
    p.update(&[1.0, 1.0], a1).unwrap();
    assert_close(
        p.p(),
        &[
            0.46680959264398414,
            -0.4524430857409895,
            -0.4524430857409895,
            0.6104746616739314,
        ],
        1e-12,
        "P2",
    );
    assert_eq!(p.updates(), 2);
    let g = t32(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    assert_close(
        &vec_f64(&p.project(&g).unwrap()),
        &[
            -0.43807658553123474,
            0.7685061693191528,
            -0.4093436002731323,
            1.0845693349838257,
        ],
        1e-6,
        "G Pᵀ",
    );
}

#[test]
fn p_stays_normalised_symmetric_and_psd() {
    let d = 6;
    let mut p = proj(d);
    let mut rng = SeededRng::new(5);
    for step in 0..40 {
        let r = rng.normal_vec(d, 0.5, 2.0);
        let a = p.alpha(step % 10, 10).unwrap();
        p.update(&r, a).unwrap();
        let m = p.p();
        assert!((fro(m) - 1.0).abs() < 1e-12, "‖P‖_F at step {step}");
        for i in 0..d {
            for j in 0..d {
                assert!((m[i * d + j] - m[j * d + i]).abs() < 1e-12, "symmetry");
            }
        }
        // PSD: vᵀ P v ≥ 0 for random v.
        for _ in 0..5 {
            let v = rng.normal_vec(d, 0.0, 1.0);
            let q: f64 = v.iter().zip(matvec(m, &v)).map(|(a, b)| a * b).sum();
            assert!(q >= -1e-12, "vᵀPv = {q}");
        }
    }
}

#[test]
fn projected_update_is_orthogonal_to_the_seen_features() {
    // Closed form from the paper's update with P = I: P̃ rᵀ = rᵀ · α/(α + ‖r‖²), hence
    // (∇W Pᵀ) rᵀ = ∇W rᵀ · α / ((α + ‖r‖²) ‖P̃‖_F): the projected step does not change the head's
    // response to r (up to that factor), while a generic direction keeps ~1/‖P̃‖_F of it.
    let d = 16;
    let mut rng = SeededRng::new(3);
    let r = rng.normal_vec(d, 0.0, 1.0);
    let r2: f64 = r.iter().map(|x| x * x).sum();
    let alpha = 0.1;
    let mut p = proj(d);
    // Through `apply`: features whose batch mean is r (two rows r ± e).
    let e = rng.normal_vec(d, 0.0, 1.0);
    let rows: Vec<f64> = r
        .iter()
        .zip(&e)
        .map(|(a, b)| a + b)
        .chain(r.iter().zip(&e).map(|(a, b)| a - b))
        .collect();
    let feats = Tensor::from_vec(rows, (2, d), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let w = Var::from_tensor(&Tensor::zeros((3, d), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let gw = rng
        .randn(vec![3, d], 0.0, 1.0, DType::F32, &Device::Cpu)
        .unwrap();
    let mut grads = (w.as_tensor() * &gw)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let report = p.apply(&mut grads, &w, &feats, 0, 7).unwrap();
    assert!((report.alpha - alpha).abs() < 1e-15);
    let fro_tilde = ((d - 1) as f64 + (alpha / (alpha + r2)).powi(2)).sqrt();
    let want_residual = alpha / ((alpha + r2) * fro_tilde);
    assert!(
        (report.residual - want_residual).abs() < 1e-5 * want_residual.max(1e-3),
        "residual {} vs {want_residual}",
        report.residual
    );
    let projected = grads
        .get(w.as_tensor())
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let g = gw.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let rt = Tensor::from_vec(r.clone(), (d, 1), &Device::Cpu).unwrap();
    let resp = |m: &Vec<Vec<f64>>| {
        let t = Tensor::from_vec(m.concat(), (3, d), &Device::Cpu).unwrap();
        norm(
            &t.matmul(&rt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
        )
    };
    let ratio = resp(&projected) / resp(&g);
    assert!(
        (ratio - want_residual).abs() < 1e-4,
        "‖G Pᵀ r‖/‖G r‖ = {ratio}, closed form {want_residual}"
    );
    assert!(ratio < 0.01);
    // A direction orthogonal to r keeps the full 1/‖P̃‖_F.
    let mut v = rng.normal_vec(d, 0.0, 1.0);
    let c: f64 = v.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>() / r2;
    for (vi, ri) in v.iter_mut().zip(&r) {
        *vi -= c * ri;
    }
    let pv = matvec(p.p(), &v);
    assert!((norm(&pv) / norm(&v) - 1.0 / fro_tilde).abs() < 1e-9);

    // Two modalities' directions in turn: both stay (almost) projected out.
    let r_b = rng.normal_vec(d, 0.0, 1.0);
    p.update(&r_b, p.alpha(3, 7).unwrap()).unwrap();
    let generic = {
        let v = rng.normal_vec(d, 0.0, 1.0);
        norm(&matvec(p.p(), &v)) / norm(&v)
    };
    for (name, x) in [("r", &r), ("r_b", &r_b)] {
        let res = norm(&matvec(p.p(), x)) / norm(x);
        assert!(
            res < 0.1 * generic,
            "{name}: residual {res} vs generic {generic}"
        );
    }
}

#[test]
fn state_roundtrip_and_errors() {
    let mut p = proj(3);
    p.update(&[1.0, 2.0, -1.0], 0.1).unwrap();
    let json = serde_json::to_string(&p.state()).unwrap();
    let st: MlaProjectorState = serde_json::from_str(&json).unwrap();
    let q = MlaProjector::from_state(MlaProjectionConfig::default(), &st).unwrap();
    assert_eq!(q.p(), p.p());
    assert_eq!(q.updates(), 1);
    let bad = MlaProjectorState {
        dim: 3,
        p: vec![0.0; 8],
        updates: 0,
    };
    assert!(matches!(
        MlaProjector::from_state(MlaProjectionConfig::default(), &bad),
        Err(ModulateError::Input(_))
    ));
    assert!(matches!(
        p.update(&[1.0, 2.0], 0.1),
        Err(ModulateError::Input(_))
    ));
    assert!(matches!(
        p.project(&t32(&[1.0, 2.0], &[1, 2])),
        Err(ModulateError::Input(_))
    ));
    assert!(matches!(p.alpha(0, 0), Err(ModulateError::Input(_))));
    assert!(matches!(
        MlaProjector::new(MlaProjectionConfig { alpha_base: 0.0 }, 3),
        Err(ModulateError::Param(_))
    ));
    assert!(matches!(
        MlaProjector::new(MlaProjectionConfig::default(), 0),
        Err(ModulateError::Param(_))
    ));
}
