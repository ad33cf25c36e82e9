//! OGM-GE: coefficients (eq 10 and the continuous variant, M = 2 and M = 3), the deterministic
//! part of the update, the GE noise (statistics and reproducibility), the scaled window.

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

// Closed forms (OGM-GE eq 10, as quoted in the official `main.py` comment):
//   k = 1 − tanh(α·ρ) if ρ > 1, else 1                       (form "paper", default)
//   k = 1 − tanh(α·relu(ρ − 1))                              (form "continuous", not in the paper)
// with ρ_m = s_m / min s. Hand values (α = 0.8), checked with Python's math.tanh:
//   1 − tanh(0.8·2.5) = 1 − tanh(2.0)  = 0.0359724199241831
//   1 − tanh(0.8·1.5) = 1 − tanh(1.2)  = 0.16634539298784468
//   1 − tanh(0.8·1.2) = 1 − tanh(0.96) = 0.2557231326381628
//   1 − tanh(0.8·0.5) = 1 − tanh(0.4)  = 0.6200510377447751
//   1 − tanh(0.8·0.2) = 1 − tanh(0.16) = 0.8413514957025011
//   1 − tanh(0.8)                      = 0.33596322973215087
#[test]
fn paper_form_is_eq_10() {
    // ρ = 1.2 (scores 12 and 10): eq 10 gives 1 − tanh(0.96), the continuous variant
    // 1 − tanh(0.16); the weaker modality (ρ = 1) keeps k = 1 under both.
    let (r, k) = ogm(OgmForm::Paper, true)
        .coefficients(&[12.0, 10.0])
        .unwrap();
    assert_close(&r, &[1.2, 1.0], 1e-12, "ratios");
    assert_close(&k, &[0.2557231326381628, 1.0], 1e-12, "eq 10 k");
    let (_, k) = ogm(OgmForm::Continuous, true)
        .coefficients(&[12.0, 10.0])
        .unwrap();
    assert_close(&k, &[0.8413514957025011, 1.0], 1e-12, "continuous k");
    // The default form is eq 10.
    assert_eq!(OgmGeConfig::default().form, OgmForm::Paper);
    // ρ ≤ 1 ⇒ k = 1 (every modality at the minimum score, e.g. a tie).
    for f in [OgmForm::Paper, OgmForm::Continuous] {
        let (_, k) = ogm(f, true).coefficients(&[7.0, 7.0, 7.0]).unwrap();
        assert_eq!(k, vec![1.0, 1.0, 1.0], "{f:?}");
    }
}

#[test]
fn coefficients_two_modalities() {
    // s = (30, 12): ρ_a = 2.5, ρ_v = 1.
    let (r, k) = ogm(OgmForm::Paper, true)
        .coefficients(&[30.0, 12.0])
        .unwrap();
    assert_close(&r, &[2.5, 1.0], 1e-12, "ratios");
    assert_close(&k, &[0.0359724199241831, 1.0], 1e-12, "eq 10 k");
    let (_, k) = ogm(OgmForm::Continuous, true)
        .coefficients(&[30.0, 12.0])
        .unwrap();
    assert_close(&k, &[0.16634539298784468, 1.0], 1e-12, "continuous k");
    // The order of the modalities does not matter.
    let (_, k) = ogm(OgmForm::Paper, true)
        .coefficients(&[12.0, 30.0])
        .unwrap();
    assert_close(&k, &[1.0, 0.0359724199241831], 1e-12, "eq 10 k, swapped");
}

#[test]
fn coefficients_three_modalities() {
    // s = (30, 12, 18): ρ = s / min s = (2.5, 1, 1.5) (BalanceMM's M ≥ 3 ratio).
    let (r, k) = ogm(OgmForm::Paper, true)
        .coefficients(&[30.0, 12.0, 18.0])
        .unwrap();
    assert_close(&r, &[2.5, 1.0, 1.5], 1e-12, "ratios");
    assert_close(
        &k,
        &[0.0359724199241831, 1.0, 0.16634539298784468],
        1e-12,
        "eq 10 k",
    );
    let (_, k) = ogm(OgmForm::Continuous, true)
        .coefficients(&[30.0, 12.0, 18.0])
        .unwrap();
    assert_close(
        &k,
        &[0.16634539298784468, 1.0, 0.6200510377447751],
        1e-12,
        "continuous k",
    );
}

#[test]
fn paper_form_jumps_at_one_and_continuous_does_not() {
    // ρ = 1 + 1e-9: eq 10 k = 1 − tanh(0.8·(1 + 1e-9)) ≈ 0.33596; continuous k ≈ 1 − 0.8e-9.
    let s = [1.0 + 1e-9, 1.0];
    let (_, kp) = ogm(OgmForm::Paper, true).coefficients(&s).unwrap();
    let (_, kc) = ogm(OgmForm::Continuous, true).coefficients(&s).unwrap();
    assert!((kp[0] - 0.33596322973215087).abs() < 1e-8, "{kp:?}");
    assert!((kc[0] - 1.0).abs() < 1e-8, "{kc:?}");
    // A zero minimum score: the others get ρ = ∞ and k = 0, never NaN.
    for f in [OgmForm::Paper, OgmForm::Continuous] {
        let (r, k) = ogm(f, true).coefficients(&[3.0, 0.0]).unwrap();
        assert!(r[0].is_infinite() && r[1] == 1.0);
        assert_eq!(k, vec![0.0, 1.0]);
    }
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

// The official `parms.grad * coeff` (plain OGM, no GE) with s = (30, 12): ρ_audio = 2.5,
// k = 1 − tanh(0.8·2.5) = 0.0359724199241831 (closed form), so the new gradient is k·c element by
// element (c the gradient below). The GE σ is std(c) + 1e-8 of the ORIGINAL gradient, independent
// of k; PyTorch 2.15 (CPU), float32:
//   g = torch.tensor([0.5, -1.25, 2.0, 0.125, -0.75, 3.0, -2.5, 1.0]).reshape(2, 1, 2, 2)
//   g.std().item() + 1e-8 -> 1.7758768896920776
#[test]
fn deterministic_update_is_k_times_the_gradient() {
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
    let k = 0.0359724199241831;
    assert!((report.coefficients[0] - k).abs() < 1e-12);
    let got = vec_f64(grads.get(w.as_tensor()).unwrap());
    let c = [0.5, -1.25, 2.0, 0.125, -0.75, 3.0, -2.5, 1.0];
    let want: Vec<f64> = c.iter().map(|x| x * k).collect();
    assert_close(&got, &want, 1e-7, "k·g");

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
    // visual is the stronger modality: ρ_v = 1.5 > 1, k_v = 1 − tanh(0.8·1.5) = 1 − tanh(1.2)
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
    assert!((k - (1.0 - 1.2f64.tanh())).abs() < 1e-12);
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

/// The official window `0 <= epoch <= 50` of 100 epochs, scaled to a 12-epoch run:
/// `[0, round(51·12/100)) = [0, 6)`; `set_window` installs it.
#[test]
fn scaled_window_covers_the_same_share_of_the_run() {
    let w = ModulationWindow { start: 0, end: 51 };
    assert_eq!(w.scaled(100, 12), ModulationWindow { start: 0, end: 6 });
    assert_eq!(w.scaled(100, 100), w);
    assert_eq!(w.scaled(0, 12), w, "schedule 0 = literal epochs");
    assert_eq!(w.scaled(100, 200), ModulationWindow { start: 0, end: 102 });
    // IBML's [1, 90) of 100 in 12 epochs: 0.12 → 0, 10.8 → 11; PMR's [0, 101) of 150: 8.08 → 8.
    assert_eq!(
        ModulationWindow { start: 1, end: 90 }.scaled(100, 12),
        ModulationWindow { start: 0, end: 11 }
    );
    assert_eq!(
        ModulationWindow { start: 0, end: 101 }.scaled(150, 12),
        ModulationWindow { start: 0, end: 8 }
    );
    let mut o = ogm(OgmForm::Paper, false);
    o.set_window(w.scaled(100, 12)).unwrap();
    for (epoch, active) in [(0, true), (5, true), (6, false), (11, false)] {
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
    assert!(matches!(
        o.set_window(ModulationWindow { start: 3, end: 2 }),
        Err(ModulateError::Param(_))
    ));
}

#[test]
fn config_validation_and_serde_defaults() {
    let c: OgmGeConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, OgmGeConfig::default());
    assert_eq!(c.window, ModulationWindow { start: 0, end: 51 });
    assert_eq!(c.form, OgmForm::Paper);
    let c: OgmGeConfig =
        serde_json::from_str(r#"{"alpha": 0.1, "form": "official", "scope": "all_encoder"}"#)
            .unwrap();
    // "official" is an alias of "paper": the paper's eq 10 and the official code agree.
    assert_eq!(c.form, OgmForm::Paper);
    assert_eq!(c.scope, OgmScope::AllEncoder);
    let c: OgmGeConfig = serde_json::from_str(r#"{"form": "continuous"}"#).unwrap();
    assert_eq!(c.form, OgmForm::Continuous);
    assert_eq!(serde_json::to_value(OgmForm::Paper).unwrap(), "paper");
    assert_eq!(
        serde_json::to_value(OgmForm::Continuous).unwrap(),
        "continuous"
    );
    assert!(serde_json::from_str::<OgmGeConfig>(r#"{"form": "relu"}"#).is_err());
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
        Err(modbal_core::ModbalError::Data(_))
    ));
}
