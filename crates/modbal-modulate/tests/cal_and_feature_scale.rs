//! CAL's asymmetric reinforcement (eq 7-8) and the ARL-style feature-gradient scaling.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use modbal_modulate::*;

#[test]
fn softmax_coefficients_eq7() {
    // W = [0.2, 0.6], T = 5 → T·W = [1, 3] → a = [1/(1+e²), e²/(1+e²)] = [0.119202922, 0.880797078].
    let a = softmax_coefficients(&[0.2, 0.6], 5.0).unwrap();
    assert_close(&a, &[0.11920292202211755, 0.8807970779778823], 1e-12, "a");
    // T = 0 → uniform.
    assert_eq!(
        softmax_coefficients(&[0.2, 0.6, 9.0], 0.0).unwrap(),
        vec![1.0 / 3.0; 3]
    );
    assert!(matches!(
        softmax_coefficients(&[], 1.0),
        Err(ModulateError::Input(_))
    ));
    assert!(matches!(
        softmax_coefficients(&[1.0], f64::NAN),
        Err(ModulateError::Param(_))
    ));
}

#[test]
fn reinforcement_eq8_on_hand_computed_gradients() {
    // Two encoders with one tensor each; L = ⟨w_a, c_a⟩ + ⟨w_v, c_v⟩ so ∂L/∂w = c.
    let w_a = Var::from_tensor(&Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let w_v = Var::from_tensor(&Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let loss = ((w_a.as_tensor() * t32(&[1.0, -2.0], &[2]))
        .unwrap()
        .sum_all()
        .unwrap()
        + (w_v.as_tensor() * t32(&[0.5, 4.0], &[2]))
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap();
    let mut grads = loss.backward().unwrap();
    let params = vec![
        ("encoder.audio.w".to_string(), w_a.clone()),
        ("encoder.visual.w".to_string(), w_v.clone()),
    ];
    let groups = ["encoder.audio".to_string(), "encoder.visual".to_string()];
    // a = [0.25, 0.75]: g_a ← g_a + 0.25 g_a = 1.25·[1, −2] = [1.25, −2.5];
    //                   g_v ← 1.75·[0.5, 4] = [0.875, 7].
    let cal = CalReinforcement::new(CalReinforcementConfig::default()).unwrap();
    let r = cal
        .apply(&mut grads, &params, &groups, &[0.25, 0.75])
        .unwrap();
    assert_eq!(r.factors, vec![1.25, 1.75]);
    assert_eq!(r.tensors, vec![1, 1]);
    assert_close(
        &vec_f64(grads.get(w_a.as_tensor()).unwrap()),
        &[1.25, -2.5],
        1e-7,
        "audio",
    );
    assert_close(
        &vec_f64(grads.get(w_v.as_tensor()).unwrap()),
        &[0.875, 7.0],
        1e-7,
        "visual",
    );
    // η = 2: factor 1 + 2·0.5 = 2 on audio: [2.5, −5].
    let cal2 = CalReinforcement::new(CalReinforcementConfig { eta: 2.0 }).unwrap();
    cal2.apply(&mut grads, &params, &groups[..1], &[0.5])
        .unwrap();
    assert_close(
        &vec_f64(grads.get(w_a.as_tensor()).unwrap()),
        &[2.5, -5.0],
        1e-7,
        "eta",
    );
    // Bad input.
    assert!(matches!(
        cal.apply(&mut grads, &params, &groups, &[0.5]),
        Err(ModulateError::Input(_))
    ));
    assert!(matches!(
        cal.apply(&mut grads, &params, &groups, &[-0.5, 1.0]),
        Err(ModulateError::Input(_))
    ));
    assert!(matches!(
        CalReinforcement::new(CalReinforcementConfig { eta: -1.0 }),
        Err(ModulateError::Param(_))
    ));
    let c: CalReinforcementConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c.eta, 1.0);
}

#[test]
fn feature_scaling_keeps_the_forward_and_scales_the_backward() {
    // f = x ⊙ w, y = scale(f, c), L = ⟨y, u⟩ → ∂L/∂w = c · u ⊙ x.
    let x = t32(&[0.3, -1.7, 2.2, 0.1], &[2, 2]);
    let u = t32(&[1.0, 2.0, -1.0, 0.5], &[2, 2]);
    let w = Var::from_tensor(&t32(&[1.1, -0.4, 0.7, 3.0], &[2, 2])).unwrap();
    let f = (&x * w.as_tensor()).unwrap();
    for c in [1.0, 1.5, 0.25, 0.0] {
        let y = scale_feature_grad(&f, c).unwrap();
        // Forward bit-identical.
        let fb: Vec<u32> = f
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let yb: Vec<u32> = y
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(fb, yb, "c = {c}: forward changed");
        let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
        let Some(gw) = g.get(w.as_tensor()) else {
            // c = 0: candle prunes the zero-gradient path, so `w` gets no entry at all.
            assert_eq!(c, 0.0, "no gradient for c = {c}");
            continue;
        };
        let gw = vec_f64(gw);
        // c·u⊙x, e.g. c = 1.5: 1.5·[0.3, −3.4, −2.2, 0.05] = [0.45, −5.1, −3.3, 0.075].
        let want: Vec<f64> = [0.3, -3.4, -2.2, 0.05].iter().map(|v| c * v).collect();
        assert_close(&gw, &want, 1e-6, &format!("c = {c}"));
    }
    // ARL: c = 1 + w_m.
    let y = arl_scale_feature(&f, 0.5).unwrap();
    let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(
        &vec_f64(g.get(w.as_tensor()).unwrap()),
        &[0.45, -5.1, -3.3, 0.075],
        1e-6,
        "arl",
    );
    assert!(matches!(
        scale_feature_grad(&f, f64::INFINITY),
        Err(ModulateError::Input(_))
    ));
}
