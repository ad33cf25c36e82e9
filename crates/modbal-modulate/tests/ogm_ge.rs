//! OGM-GE: coefficients (both forms, M = 2 and M = 3), the deterministic part of the update,
//! and the GE noise (statistics and reproducibility).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use modbal_modulate::*;
use modbal_tensors::SeededRng;

fn ogm(form: OgmForm, ge: bool) -> OgmGe {
    OgmGe::new(OgmGeConfig {
        alpha: 0.8,
        form,
        ge,
        ..Default::default()
    })
    .unwrap()
}

// Reference numbers computed with PyTorch 2.15 (CPU), float64:
//
//   alpha = 0.8; s_a, s_v = torch.tensor(30.0, dtype=torch.float64), torch.tensor(12.0, dtype=torch.float64)
//   r_v = s_v / s_a; r_a = 1 / r_v
//   paper:    1 - torch.tanh(alpha * torch.relu(r_a - 1))   -> 0.16634539298784468 (k_v: 1.0)
//   official: if r_v > 1: k_v = 1 - tanh(alpha * relu(r_v)); k_a = 1
//             else:       k_a = 1 - tanh(alpha * relu(r_a)); k_v = 1   -> k_a 0.0359724199241831
//   BalanceMM (3 modalities): s = [30, 12, 18]; r = s / s.min() -> [2.5, 1.0, 1.5]
//             k = 1 - tanh(alpha * relu(r)) if r > 1 else 1    -> [0.0359724199241831, 1.0, 0.16634539298784468]
//   paper form on the same ratios: 1 - tanh(alpha * relu(r - 1)) -> [0.16634539298784468, 1.0, 0.6200510377447751]
//
// Hand check: ρ_a = 30/12 = 2.5; paper k_a = 1 − tanh(0.8·1.5) = 1 − tanh(1.2) = 1 − 0.833654607 = 0.166345393;
// official k_a = 1 − tanh(0.8·2.5) = 1 − tanh(2) = 1 − 0.964027580 = 0.035972420.
#[test]
fn coefficients_match_pytorch_two_modalities() {
    let (r, k) = ogm(OgmForm::Paper, true)
        .coefficients(&[30.0, 12.0])
        .unwrap();
    assert_close(&r, &[2.5, 1.0], 1e-12, "ratios");
    assert_close(&k, &[0.16634539298784468, 1.0], 1e-12, "paper k");
    let (_, k) = ogm(OgmForm::Official, true)
        .coefficients(&[30.0, 12.0])
        .unwrap();
    assert_close(&k, &[0.0359724199241831, 1.0], 1e-12, "official k");
    // The order of the modalities does not matter.
    let (_, k) = ogm(OgmForm::Official, true)
        .coefficients(&[12.0, 30.0])
        .unwrap();
    assert_close(&k, &[1.0, 0.0359724199241831], 1e-12, "official k, swapped");
}

#[test]
fn coefficients_match_pytorch_three_modalities() {
    let (r, k) = ogm(OgmForm::Official, true)
        .coefficients(&[30.0, 12.0, 18.0])
        .unwrap();
    assert_close(&r, &[2.5, 1.0, 1.5], 1e-12, "ratios");
    assert_close(
        &k,
        &[0.0359724199241831, 1.0, 0.16634539298784468],
        1e-12,
        "BalanceMM k",
    );
    let (_, k) = ogm(OgmForm::Paper, true)
        .coefficients(&[30.0, 12.0, 18.0])
        .unwrap();
    assert_close(
        &k,
        &[0.16634539298784468, 1.0, 0.6200510377447751],
        1e-12,
        "paper k",
    );
}

#[test]
fn paper_form_is_continuous_and_official_jumps_at_one() {
    // ρ = 1 + 1e-9: paper k ≈ 1 − 0.8e-9; official k = 1 − tanh(0.8) = 0.3359...
    let s = [1.0 + 1e-9, 1.0];
    let (_, kp) = ogm(OgmForm::Paper, true).coefficients(&s).unwrap();
    let (_, ko) = ogm(OgmForm::Official, true).coefficients(&s).unwrap();
    assert!((kp[0] - 1.0).abs() < 1e-8);
    assert!((ko[0] - (1.0 - 0.8f64.tanh())).abs() < 1e-8);
    // Equal scores: k = 1 for everyone under both forms.
    for f in [OgmForm::Paper, OgmForm::Official] {
        let (_, k) = ogm(f, true).coefficients(&[7.0, 7.0]).unwrap();
        assert_eq!(k, vec![1.0, 1.0]);
    }
    // A zero minimum score: the others get ρ = ∞ and k = 0, never NaN.
    let (r, k) = ogm(OgmForm::Paper, true).coefficients(&[3.0, 0.0]).unwrap();
    assert!(r[0].is_infinite() && r[1] == 1.0);
    assert_eq!(k, vec![0.0, 1.0]);
    // Bad scores are input errors.
    assert!(matches!(
        ogm(OgmForm::Paper, true).coefficients(&[f64::NAN, 1.0]),
        Err(ModulateError::Input(_))
    ));
    assert!(matches!(
        ogm(OgmForm::Paper, true).coefficients(&[-1.0, 1.0]),
        Err(ModulateError::Input(_))
    ));
}

fn conv_grad() -> (Var, Vec<(String, Var)>, candle_core::backprop::GradStore) {
    // A 2×1×2×2 "conv kernel" w with loss Σ w ⊙ c, so that ∂L/∂w = c exactly.
    let c = [0.5, -1.25, 2.0, 0.125, -0.75, 3.0, -2.5, 1.0];
    let w =
        Var::from_tensor(&Tensor::zeros((2, 1, 2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let loss = (w.as_tensor() * t32(&c, &[2, 1, 2, 2]))
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let params = vec![("encoder.audio.conv.weight".to_string(), w.clone())];
    (w, params, grads)
}

// PyTorch 2.15 (CPU), float32, the official `parms.grad * coeff` (plain OGM, no GE):
//   g = torch.tensor([0.5, -1.25, 2.0, 0.125, -0.75, 3.0, -2.5, 1.0]).reshape(2, 1, 2, 2)
//   k = float(1 - torch.tanh(torch.tensor(0.8 * 1.5, dtype=torch.float64)))
//   (g * k).flatten().tolist()
//   -> [0.08317269384860992, -0.2079317271709442, 0.3326907753944397, 0.02079317346215248,
//       -0.12475904077291489, 0.49903616309165955, -0.4158634543418884, 0.16634538769721985]
//   g.std().item() + 1e-8 -> 1.7758768896920776
#[test]
fn deterministic_update_matches_pytorch() {
    let (w, params, mut grads) = conv_grad();
    let groups = ["encoder.audio".to_string(), "encoder.visual".to_string()];
    let report = ogm(OgmForm::Paper, false)
        .apply(
            &mut grads,
            &params,
            &groups,
            &[30.0, 12.0],
            0,
            &mut SeededRng::new(0),
        )
        .unwrap();
    assert!(report.active);
    assert_eq!(report.tensors, vec![1, 0]);
    let got = vec_f64(grads.get(w.as_tensor()).unwrap());
    let want = [
        0.08317269384860992,
        -0.2079317271709442,
        0.3326907753944397,
        0.02079317346215248,
        -0.12475904077291489,
        0.49903616309165955,
        -0.4158634543418884,
        0.16634538769721985,
    ];
    assert_close(&got, &want, 1e-6, "k·g");

    // With GE, the noise σ reported is std(g) + 1e-8 of the original gradient.
    let (_, params, mut grads) = conv_grad();
    let report = ogm(OgmForm::Paper, true)
        .apply(
            &mut grads,
            &params,
            &groups,
            &[30.0, 12.0],
            0,
            &mut SeededRng::new(0),
        )
        .unwrap();
    assert!((report.noise_std[0] - 1.7758768896920776).abs() < 1e-6);
}

/// A large "conv kernel" with gradient drawn from N(0.3, 2²) (so std(g) ≈ 2).
fn big_grad(
    n_side: usize,
) -> (
    Var,
    Vec<(String, Var)>,
    candle_core::backprop::GradStore,
    Vec<f64>,
) {
    let mut rng = SeededRng::new(77);
    let c = rng
        .randn(vec![n_side, 4, 5, 5], 0.3, 2.0, DType::F32, &Device::Cpu)
        .unwrap();
    let w = Var::from_tensor(&c.zeros_like().unwrap()).unwrap();
    let grads = (w.as_tensor() * &c)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let params = vec![("encoder.visual.conv.weight".to_string(), w.clone())];
    (w, params, grads, vec_f64(&c))
}

#[test]
fn ge_noise_has_the_gradient_std_and_is_reproducible_per_seed() {
    // 100·4·5·5 = 10000 elements. The residual ε = g_new − k·g must have mean ≈ 0 and
    // std ≈ std(g) + 1e-8 (closed form). Standard error of the std estimate at n = 10^4 is
    // σ/√(2n) ≈ 0.7 %, of the mean σ/√n = 0.02: tolerances 3 % and 0.1.
    let (w, params, mut grads, g) = big_grad(100);
    let groups = ["encoder.audio".to_string(), "encoder.visual".to_string()];
    let o = ogm(OgmForm::Paper, true);
    // visual is the stronger modality: k_v = 1 − tanh(0.8·relu(1.5 − 1)) = 1 − tanh(0.4)
    let report = o
        .apply(
            &mut grads,
            &params,
            &groups,
            &[10.0, 15.0],
            3,
            &mut SeededRng::new(11),
        )
        .unwrap();
    let k = report.coefficients[1];
    assert!((k - (1.0 - 0.4f64.tanh())).abs() < 1e-12);
    let new = vec_f64(grads.get(w.as_tensor()).unwrap());
    let eps: Vec<f64> = new.iter().zip(&g).map(|(a, b)| a - k * b).collect();
    let n = eps.len() as f64;
    let mean = eps.iter().sum::<f64>() / n;
    let std = (eps.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / (n - 1.0)).sqrt();
    let gm = g.iter().sum::<f64>() / n;
    let gstd = (g.iter().map(|x| (x - gm) * (x - gm)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!((report.noise_std[1] - (gstd + 1e-8)).abs() < 1e-5);
    assert!(mean.abs() < 0.1, "noise mean {mean}");
    assert!(
        (std / gstd - 1.0).abs() < 0.03,
        "noise std {std} vs std(g) {gstd}"
    );

    // Same seed → bit-identical; another seed → different.
    let run = |seed: u64| {
        let (w, params, mut grads, _) = big_grad(100);
        o.apply(
            &mut grads,
            &params,
            &groups,
            &[10.0, 15.0],
            3,
            &mut SeededRng::new(seed),
        )
        .unwrap();
        grads
            .get(w.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(run(11), run(11));
    assert_eq!(run(11), new.iter().map(|x| *x as f32).collect::<Vec<_>>());
    assert_ne!(run(11), run(12));
}

#[test]
fn ge_noise_is_added_to_the_weak_modality_too() {
    // k = 1 for the weaker modality, but the official code still adds GE noise.
    let (w, params, mut grads, g) = big_grad(2);
    let groups = ["encoder.audio".to_string(), "encoder.visual".to_string()];
    let report = ogm(OgmForm::Paper, true)
        .apply(
            &mut grads,
            &params,
            &groups,
            &[20.0, 10.0],
            0,
            &mut SeededRng::new(1),
        )
        .unwrap();
    assert_eq!(report.coefficients[1], 1.0);
    assert_eq!(report.tensors, vec![0, 1]);
    assert_ne!(vec_f64(grads.get(w.as_tensor()).unwrap()), g);
}

#[test]
fn window_is_half_open() {
    let o = ogm(OgmForm::Paper, false);
    for (epoch, active) in [(0, true), (50, true), (51, false)] {
        let (_, params, mut grads) = conv_grad();
        let r = o
            .apply(
                &mut grads,
                &params,
                &["encoder.audio".to_string(), "encoder.visual".to_string()],
                &[30.0, 12.0],
                epoch,
                &mut SeededRng::new(0),
            )
            .unwrap();
        assert_eq!(r.active, active, "epoch {epoch}");
    }
}

#[test]
fn config_validation_and_serde_defaults() {
    let c: OgmGeConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, OgmGeConfig::default());
    assert_eq!(c.window, ModulationWindow { start: 0, end: 51 });
    let c: OgmGeConfig =
        serde_json::from_str(r#"{"alpha": 0.1, "form": "official", "scope": "all_encoder"}"#)
            .unwrap();
    assert_eq!(c.form, OgmForm::Official);
    assert_eq!(c.scope, OgmScope::AllEncoder);
    assert!(serde_json::from_str::<OgmGeConfig>(r#"{"alpah": 0.1}"#).is_err());
    assert!(matches!(
        OgmGe::new(OgmGeConfig {
            alpha: -1.0,
            ..Default::default()
        }),
        Err(ModulateError::Param(_))
    ));
    assert!(matches!(
        OgmGe::new(OgmGeConfig {
            window: ModulationWindow { start: 5, end: 2 },
            ..Default::default()
        }),
        Err(ModulateError::Param(_))
    ));
    // Lengths must agree.
    let (_, params, mut grads) = conv_grad();
    assert!(matches!(
        OgmGe::new(OgmGeConfig::default()).unwrap().apply(
            &mut grads,
            &params,
            &["encoder.audio".to_string()],
            &[1.0, 2.0],
            0,
            &mut SeededRng::new(0)
        ),
        Err(ModulateError::Input(_))
    ));
    // The report serialises for metrics.jsonl.
    let r = OgmGe::new(OgmGeConfig::default())
        .unwrap()
        .apply(
            &mut grads,
            &params,
            &["encoder.audio".to_string()],
            &[1.0],
            0,
            &mut SeededRng::new(0),
        )
        .unwrap();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["coefficients"][0], 1.0);
}

#[test]
fn true_class_score_sums_the_true_class_probability() {
    // logits [[0, ln 3], [ln 4, 0]] → softmax rows [1/4, 3/4], [4/5, 1/5];
    // labels [1, 1] → s = 3/4 + 1/5 = 0.95.
    let z = t32(&[0.0, 3f64.ln(), 4f64.ln(), 0.0], &[2, 2]);
    let y = Tensor::from_vec(vec![1u32, 1], 2, &Device::Cpu).unwrap();
    assert!((true_class_score(&z, &y).unwrap() - 0.95).abs() < 1e-6);
    let bad = Tensor::from_vec(vec![1u32, 2], 2, &Device::Cpu).unwrap();
    assert!(matches!(
        true_class_score(&z, &bad),
        Err(ModulateError::Input(_))
    ));
}
