//! MMPareto: the weights (cosine test, min-norm solution, clamps, guards) and the per-tensor
//! rescaled update, against the official algorithm run in PyTorch.

mod common;

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use common::*;
use modbal_modulate::*;

/// Variables of an "encoder" with two tensors ([2, 3] and [3]) and a head bias [3].
fn vars() -> Vec<(String, Var)> {
    let z = |s: &[usize]| {
        Var::from_tensor(&Tensor::zeros(s.to_vec(), DType::F32, &Device::Cpu).unwrap()).unwrap()
    };
    vec![
        ("encoder.audio.t1".to_string(), z(&[2, 3])),
        ("encoder.audio.t2".to_string(), z(&[3])),
        ("head.bias".to_string(), z(&[3])),
    ]
}

/// A store whose gradients are exactly `values` (loss Σ_i ⟨w_i, c_i⟩).
fn store(params: &[(String, Var)], values: &[&[f64]]) -> GradStore {
    let mut loss: Option<Tensor> = None;
    for ((_, v), c) in params.iter().zip(values) {
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

const MM_T1: [f64; 6] = [1.0, -2.0, 0.5, 0.3, 0.0, 1.0];
const MM_T2: [f64; 3] = [0.2, -0.1, 0.4];
const HEAD_MM: [f64; 3] = [0.1, 0.2, 0.3];
const HEAD_UNI: [f64; 3] = [-0.5, 0.25, 1.0];

// Reference computed with PyTorch 2.15 (CPU, float32), restating the official MMPareto step
// (cosine on the concatenated encoder gradient; MinNormSolver._min_norm_element_from2; per-tensor
// rescale against the norm of the total-loss gradient):
//
//   def min_norm_from2(v1v1, v1v2, v2v2):
//       if v1v2 >= v1v1: return 0.999
//       if v1v2 >= v2v2: return 0.001
//       return -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))
//   def mmpareto(g_mm, g_m, gamma=1.5):
//       cat = lambda gs: torch.cat([g.flatten() for g in gs])
//       cos = F.cosine_similarity(cat(g_mm), cat(g_m), dim=0)
//       if cos > 0: k = [0.5, 0.5]
//       else:
//           v11 = sum((a*a).sum() for a in g_mm); v12 = sum((a*b).sum() for a, b in zip(g_mm, g_m))
//           v22 = sum((b*b).sum() for b in g_m); k0 = float(min_norm_from2(v11, v12, v22)); k = [k0, 1-k0]
//       out = []
//       for a, b in zip(g_mm, g_m):
//           three_norm = torch.norm(a + b)      # param.grad after (L_mm + L_a + L_v).backward()
//           new_grad = 2*k[0]*a + 2*k[1]*b
//           diff = three_norm / torch.norm(new_grad)
//           out.append(diff*new_grad*gamma if diff > 1 else new_grad*gamma)
//       return cos.item(), k, out
//   g_mm = [t([[1.0, -2.0, 0.5], [0.3, 0.0, 1.0]]), t([0.2, -0.1, 0.4])]
//   g_m  = [t([[-1.5, 1.0, 0.2], [0.1, -0.4, -0.6]]), t([-0.3, 0.2, 0.1])]
//   -> cos -0.7873650789260864, k [0.4301133155822754, 0.5698866844177246]
//      t1 [-1.3885914087295532, -0.9492529034614563, 1.075761318206787, 0.6081924438476562, -0.7452871203422546, 0.2883045971393585]
//      t2 [-0.2602693736553192, 0.2174423336982727, 0.7017682194709778]
//
// Hand check of k0: ⟨g_mm,g_mm⟩ = 6.34 + 0.21 = 6.55, ⟨g_m,g_m⟩ = 3.82 + 0.14 = 3.96,
// ⟨g_mm,g_m⟩ = −3.97 − 0.04 = −4.01; k0 = (3.96 + 4.01)/(6.55 + 3.96 + 8.02) = 7.97/18.53 = 0.43011.
#[test]
fn conflicting_gradients_match_pytorch() {
    let params = vars();
    let uni_t1 = [-1.5, 1.0, 0.2, 0.1, -0.4, -0.6];
    let uni_t2 = [-0.3, 0.2, 0.1];
    let mm = store(&params, &[&MM_T1, &MM_T2, &HEAD_MM]);
    let uni = store(&params, &[&uni_t1, &uni_t2, &HEAD_UNI]);
    let mut total = sum_grads(&[&mm, &uni], &params).unwrap();
    let head_before = vec_f64(total.get(params[2].1.as_tensor()).unwrap());
    let report = MmPareto::new(MmParetoConfig::default())
        .unwrap()
        .apply(
            &mut total,
            &mm,
            &[&uni],
            &params,
            &["encoder.audio".to_string()],
        )
        .unwrap();
    assert!((report.cos[0] - -0.7873650789260864).abs() < 1e-6);
    assert!(report.conflict[0]);
    assert!((report.k_mm[0] - 0.4301133155822754).abs() < 1e-6);
    assert!((report.k_uni[0] - 0.5698866844177246).abs() < 1e-6);
    assert_eq!(report.tensors, vec![2]);
    let t1 = vec_f64(total.get(params[0].1.as_tensor()).unwrap());
    let t2 = vec_f64(total.get(params[1].1.as_tensor()).unwrap());
    assert_close(
        &t1,
        &[
            -1.3885914087295532,
            -0.9492529034614563,
            1.075761318206787,
            0.6081924438476562,
            -0.7452871203422546,
            0.2883045971393585,
        ],
        1e-6,
        "t1",
    );
    assert_close(
        &t2,
        &[-0.2602693736553192, 0.2174423336982727, 0.7017682194709778],
        1e-6,
        "t2",
    );
    // The head keeps its plain gradient g_mm + g_m = [−0.4, 0.45, 1.3].
    let head = vec_f64(total.get(params[2].1.as_tensor()).unwrap());
    assert_eq!(head, head_before);
    assert_close(&head, &[-0.4, 0.45, 1.3], 1e-6, "head");
}

// Same snippet with g_m2 = [t([[0.5, -0.5, 0.0], [0.1, 0.2, 0.3]]), t([0.05, 0.0, -0.2])]:
//   -> cos 0.8324165344238281, k [0.5, 0.5]
//      t1 [2.25, -3.75, 0.75, 0.6000000238418579, 0.30000001192092896, 1.9499999284744263]
//      t2 [0.375, -0.15000000596046448, 0.30000001192092896]
// (cos > 0: g_new = g_mm + g_m = g_sum, so diff = 1 and the result is γ·g_sum = 1.5·g_sum.)
#[test]
fn aligned_gradients_match_pytorch() {
    let params = vars();
    let uni_t1 = [0.5, -0.5, 0.0, 0.1, 0.2, 0.3];
    let uni_t2 = [0.05, 0.0, -0.2];
    let mm = store(&params, &[&MM_T1, &MM_T2, &HEAD_MM]);
    let uni = store(&params, &[&uni_t1, &uni_t2, &HEAD_UNI]);
    let mut total = sum_grads(&[&mm, &uni], &params).unwrap();
    let report = MmPareto::new(MmParetoConfig::default())
        .unwrap()
        .apply(
            &mut total,
            &mm,
            &[&uni],
            &params,
            &["encoder.audio".to_string()],
        )
        .unwrap();
    assert!((report.cos[0] - 0.8324165344238281).abs() < 1e-6);
    assert!(!report.conflict[0]);
    assert_eq!((report.k_mm[0], report.k_uni[0]), (0.5, 0.5));
    assert_close(
        &vec_f64(total.get(params[0].1.as_tensor()).unwrap()),
        &[
            2.25,
            -3.75,
            0.75,
            0.6000000238418579,
            0.30000001192092896,
            1.9499999284744263,
        ],
        1e-6,
        "t1",
    );
    assert_close(
        &vec_f64(total.get(params[1].1.as_tensor()).unwrap()),
        &[0.375, -0.15000000596046448, 0.30000001192092896],
        1e-6,
        "t2",
    );
}

#[test]
fn weights_cases_and_guards_never_nan() {
    let m = MmPareto::new(MmParetoConfig::default()).unwrap();
    // Opposite gradients g_m = −g_mm (‖g_mm‖² = ‖g_m‖² = 1, ⟨·,·⟩ = −1):
    // k0 = (1 + 1)/(1 + 1 + 2) = 0.5.
    let (k0, k1, cos) = m.weights(1.0, -1.0, 1.0);
    assert_eq!((k0, k1), (0.5, 0.5));
    assert!((cos + 1.0).abs() < 1e-12);
    // Orthogonal (cos = 0 counts as a conflict), ‖g_mm‖² = 4, ‖g_m‖² = 1: k0 = 1/(4 + 1) = 0.2.
    let (k0, _, _) = m.weights(4.0, 0.0, 1.0);
    assert!((k0 - 0.2).abs() < 1e-12);
    // g_mm = 0: ⟨g_mm,g_m⟩ = 0 ≥ ‖g_mm‖² = 0 → k0 = 0.999 (the solver's first case).
    assert_eq!(m.weights(0.0, 0.0, 1.0).0, 0.999);
    // g_m = 0: second case → k0 = 0.001.
    assert_eq!(m.weights(1.0, 0.0, 0.0).0, 0.001);
    // Both zero (‖g_mm − g_m‖ = 0): 0.999, no division by zero.
    let (k0, k1, cos) = m.weights(0.0, 0.0, 0.0);
    assert_eq!((k0, cos), (0.999, 0.0));
    assert!((k1 - 0.001).abs() < 1e-15);
    // Interior solutions are clamped: ‖g_mm‖² = 1e6, ‖g_m‖² = 1, ⟨·,·⟩ = 0 → k0 = 1/(1e6+1) → 0.001.
    assert_eq!(m.weights(1e6, 0.0, 1.0).0, 0.001);
}

#[test]
fn zero_gradients_give_zero_not_nan() {
    // Encoder with no gradient signal at all, but a total store entry (e.g. an unused tensor).
    let params = vars();
    let zeros: [f64; 6] = [0.0; 6];
    let mm = store(&params, &[&zeros, &[0.0; 3], &HEAD_MM]);
    let uni = store(&params, &[&zeros, &[0.0; 3], &HEAD_UNI]);
    let mut total = sum_grads(&[&mm, &uni], &params).unwrap();
    MmPareto::new(MmParetoConfig::default())
        .unwrap()
        .apply(
            &mut total,
            &mm,
            &[&uni],
            &params,
            &["encoder.audio".to_string()],
        )
        .unwrap();
    for (_, v) in &params[..2] {
        assert!(vec_f64(total.get(v.as_tensor()).unwrap())
            .iter()
            .all(|x| *x == 0.0));
    }
    // A total gradient with signal while g_mm and g_m are zero (caller passed a separate total
    // backward): still finite.
    let mut total = store(&params, &[&MM_T1, &MM_T2, &HEAD_MM]);
    MmPareto::new(MmParetoConfig::default())
        .unwrap()
        .apply(
            &mut total,
            &mm,
            &[&uni],
            &params,
            &["encoder.audio".to_string()],
        )
        .unwrap();
    for (_, v) in &params {
        assert!(vec_f64(total.get(v.as_tensor()).unwrap())
            .iter()
            .all(|x| x.is_finite()));
    }
}

#[test]
fn config_validation() {
    let c: MmParetoConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, MmParetoConfig::default());
    assert_eq!(c.gamma, 1.5);
    for bad in [
        MmParetoConfig {
            gamma: 0.0,
            ..Default::default()
        },
        MmParetoConfig {
            k_min: 0.6,
            k_max: 0.4,
            ..Default::default()
        },
        MmParetoConfig {
            k_max: 1.5,
            ..Default::default()
        },
    ] {
        assert!(matches!(MmPareto::new(bad), Err(ModulateError::Param(_))));
    }
}
