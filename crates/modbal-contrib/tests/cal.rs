//! CAL eq 1-5, 7 and the Table 5 variants against hand-computed values.

mod common;

use candle_core::{Device, Tensor};
use common::{assert_all_close, assert_close, col, LinearConcat};
use modbal_contrib::cal::{
    marginal_contribution, marginal_contribution_from_logits, modulation_coefficients,
    DEFAULT_TEMPERATURE,
};
use modbal_contrib::{
    CalConfig, CalContribution, CalEpochStats, CalState, CalVariant, ContribError, TemperatureForm,
};
use modbal_core::MultimodalModel;
use modbal_encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal_tensors::SeededRng;

const LN3: f64 = 1.098_612_288_668_109_8; // ln 3

/// Two 1-d modalities, two classes, W = [[0, 0], [1, 1]], b = 0: logit(class 1) = a + v,
/// logit(class 0) = 0. Features a = [ln3, ln3], v = [ln3, −ln3], labels [1, 1].
fn tiny() -> (LinearConcat, Vec<Tensor>, Vec<u32>) {
    let model = LinearConcat::new(&[1, 1], &[&[0.0, 0.0], &[1.0, 1.0]], &[0.0, 0.0]);
    let feats = vec![col(&[LN3, LN3]), col(&[LN3, -LN3])];
    (model, feats, vec![1, 1])
}

/// sample 1: all [0, 2ln3] → p(1) = 9/10; without a [0, ln3] → 3/4; without v [0, ln3] → 3/4
/// sample 2: all [0, 0] → 1/2; without a [0, −ln3] → 1/4; without v [0, ln3] → 3/4
/// φ(a) = ½[(ln .9 − ln .75) + (ln .5 − ln .25)] = ½ ln 2.4
/// φ(v) = ½[(ln .9 − ln .75) + (ln .5 − ln .75)] = ½ ln 0.8
#[test]
fn marginal_contribution_by_hand() {
    let (model, feats, labels) = tiny();
    let mc = marginal_contribution(&model, &feats, &labels).unwrap();
    assert_all_close(
        &mc.phi,
        &[0.5 * 2.4f64.ln(), 0.5 * 0.8f64.ln()],
        1e-12,
        "phi",
    );
    assert_close(mc.full_log_likelihood, 0.5 * 0.45f64.ln(), 1e-12, "full ll");
    assert_all_close(
        &mc.ablated_log_likelihood,
        &[0.5 * (0.75f64 * 0.25).ln(), 0.5 * (0.75f64 * 0.75).ln()],
        1e-12,
        "ablated ll",
    );
    assert_eq!(mc.num_samples, 2);

    // The same from explicitly given logits (e.g. separately trained ablation models).
    let full = common::t2(&[&[0.0, 2.0 * LN3], &[0.0, 0.0]]);
    let no_a = common::t2(&[&[0.0, LN3], &[0.0, -LN3]]);
    let no_v = common::t2(&[&[0.0, LN3], &[0.0, LN3]]);
    let mc2 = marginal_contribution_from_logits(&full, &[no_a, no_v], &labels).unwrap();
    assert_all_close(&mc2.phi, &mc.phi, 1e-12, "phi from logits");
}

/// The real MultimodalNet (identity MLP encoders, concat head with the weights of `tiny()` set
/// through its ParamStore) gives the same φ, in f32.
#[test]
fn marginal_contribution_on_multimodal_net() {
    let specs = [
        ModalitySpec::new("a", EncoderConfig::Mlp { hidden: vec![] }, &[1]),
        ModalitySpec::new("v", EncoderConfig::Mlp { hidden: vec![] }, &[1]),
    ];
    let mut rng = SeededRng::new(0);
    let net =
        MultimodalNet::new(&specs, &FusionConfig::default(), 2, &mut rng, &Device::Cpu).unwrap();
    for (name, var) in net.params().all() {
        let t = match name.as_str() {
            "head.fc.weight" => Tensor::new(&[[0f32, 0.], [1., 1.]], &Device::Cpu).unwrap(),
            "head.fc.bias" => Tensor::new(&[0f32, 0.], &Device::Cpu).unwrap(),
            other => panic!("unexpected parameter {other}"),
        };
        var.set(&t).unwrap();
    }
    let (_, feats, labels) = tiny();
    let f32s: Vec<Tensor> = feats
        .iter()
        .map(|f| f.to_dtype(candle_core::DType::F32).unwrap())
        .collect();
    let mc = marginal_contribution(&net, &f32s, &labels).unwrap();
    assert_all_close(
        &mc.phi,
        &[0.5 * 2.4f64.ln(), 0.5 * 0.8f64.ln()],
        1e-6,
        "phi (MultimodalNet, f32)",
    );
}

/// P^m(t) = accuracy of each modality's logits: z_a = a·[0, 1] → [0, ln3] twice → both correct
/// (acc 1); z_v = [0, ln3], [0, −ln3] → second predicts 0 ≠ 1 (acc 0.5).
#[test]
fn epoch_stats_from_eval() {
    let (model, feats, labels) = tiny();
    let eval = model.eval_outputs(&feats, &labels);
    let s = CalEpochStats::from_eval(&model, &eval).unwrap();
    assert_all_close(&s.performance, &[1.0, 0.5], 0.0, "performance");
    assert_all_close(
        &s.phi,
        &[0.5 * 2.4f64.ln(), 0.5 * 0.8f64.ln()],
        1e-12,
        "phi",
    );
}

fn stats(phi: [f64; 2], p: [f64; 2]) -> CalEpochStats {
    CalEpochStats {
        phi: phi.to_vec(),
        performance: p.to_vec(),
    }
}

fn softmax2(x: f64, y: f64) -> [f64; 2] {
    let a = 1.0 / (1.0 + (y - x).exp());
    [a, 1.0 - a]
}

/// Eq 7 at the default temperature, closed form for two modalities:
/// `a¹ = 1 / (1 + exp(T·(W² − W¹)))`.
fn eq7(w1: f64, w2: f64) -> [f64; 2] {
    softmax2(DEFAULT_TEMPERATURE * w1, DEFAULT_TEMPERATURE * w2)
}

/// Default config (γ = 0.2, n = 5, ε = 1e-8, λ = 0.5, P_max = 1, T = 1), φ = [0.2, 0.1],
/// P_a = 0.5, 0.6, 0.7 and P_v = 0.3, 0.3, 0.4:
/// t = 0: P̂ = [0.5, 0.3]; T = 0; R = 0.5·(1 − P̂) = [0.25, 0.35]; W = [0.05, 0.035]
/// t = 1: P̂_a = 0.2·0.6 + 0.8·0.5 = 0.52, P̂_v = 0.3; T_a = 0.02/(0.5 + ε) ≈ 0.04, T_v = 0;
///        R = [0.5·0.48 + 0.5·0.04, 0.35] = [0.26, 0.35]; W = [0.052, 0.035]
/// t = 2: P̂_a = 0.14 + 0.416 = 0.556, P̂_v = 0.08 + 0.24 = 0.32;
///        T_a = 0.036 / mean(0.5, 0.52) = 0.036/0.51, T_v = 0.02 / mean(0.3, 0.3) = 0.02/0.3;
///        R_a = 0.5·0.444 + 0.5·0.036/0.51, R_v = 0.5·0.68 + 0.5·0.02/0.3; W = φ·R
/// a = softmax(T·W) at every step, T = DEFAULT_TEMPERATURE.
#[test]
fn tracker_sequence_by_hand() {
    let mut cal = CalContribution::new(CalConfig::default(), 2).unwrap();
    assert_all_close(&cal.modulation(), &[0.5, 0.5], 0.0, "a before any update");
    let phi = [0.2, 0.1];
    let tol = 1e-8;

    let r0 = cal.update(&stats(phi, [0.5, 0.3])).unwrap();
    assert_eq!(r0.epoch, 0);
    assert_all_close(&r0.smoothed, &[0.5, 0.3], 1e-15, "P̂(0)");
    assert_all_close(&r0.trend, &[0.0, 0.0], 0.0, "T(0)");
    assert_all_close(&r0.potential, &[0.25, 0.35], 1e-15, "R(0)");
    assert_all_close(&r0.contribution, &[0.05, 0.035], 1e-15, "W(0)");
    assert_all_close(&r0.modulation, &eq7(0.05, 0.035), 1e-14, "a(0)");

    let r1 = cal.update(&stats(phi, [0.6, 0.3])).unwrap();
    assert_all_close(&r1.smoothed, &[0.52, 0.3], 1e-15, "P̂(1)");
    assert_all_close(&r1.trend, &[0.04, 0.0], tol, "T(1)");
    assert_all_close(&r1.potential, &[0.26, 0.35], tol, "R(1)");
    assert_all_close(&r1.contribution, &[0.052, 0.035], tol, "W(1)");
    assert_all_close(&r1.modulation, &eq7(0.052, 0.035), tol, "a(1)");

    let r2 = cal.update(&stats(phi, [0.7, 0.4])).unwrap();
    let t2 = [0.036 / 0.51, 0.02 / 0.3];
    let rr = [0.5 * 0.444 + 0.5 * t2[0], 0.5 * 0.68 + 0.5 * t2[1]];
    assert_all_close(&r2.smoothed, &[0.556, 0.32], 1e-12, "P̂(2)");
    assert_all_close(&r2.trend, &t2, tol, "T(2)");
    assert_all_close(&r2.potential, &rr, tol, "R(2)");
    assert_all_close(&r2.contribution, &[0.2 * rr[0], 0.1 * rr[1]], tol, "W(2)");
    assert_all_close(&r2.modulation, &eq7(0.2 * rr[0], 0.1 * rr[1]), tol, "a(2)");
    assert_all_close(&cal.modulation(), &r2.modulation, 0.0, "current a");
    assert_eq!(cal.state().epoch, 3);
}

/// The window n: a fourth epoch with P_a = 0.7 gives P̂_a(3) = 0.2·0.7 + 0.8·0.556 = 0.5848 and
/// T_a(3) = 0.0288 / mean of the last n smoothed values:
/// n = 2 → mean(0.52, 0.556) = 0.538; n = 5 (only 3 exist) → mean(0.5, 0.52, 0.556).
#[test]
fn trend_window() {
    let run = |window: usize| {
        let cfg = CalConfig {
            window,
            ..CalConfig::default()
        };
        let mut cal = CalContribution::new(cfg, 2).unwrap();
        let mut last = None;
        for p in [0.5, 0.6, 0.7, 0.7] {
            last = Some(cal.update(&stats([0.2, 0.1], [p, 0.3])).unwrap());
        }
        let r = last.unwrap();
        assert!(cal.state().smoothed_history.len() <= window);
        r
    };
    let r2 = run(2);
    assert_close(r2.smoothed[0], 0.5848, 1e-12, "P̂_a(3)");
    assert_close(r2.trend[0], 0.0288 / 0.538, 1e-8, "T_a(3), n = 2");
    let r5 = run(5);
    assert_close(
        r5.trend[0],
        0.0288 / ((0.5 + 0.52 + 0.556) / 3.0),
        1e-8,
        "T_a(3), n = 5",
    );
    assert_close(r5.trend[1], 0.0, 1e-12, "constant P_v has no trend");
}

/// Table 5 variants at t = 0 with φ = [0.2, 0.1], P = [0.5, 0.3] (so R = [0.25, 0.35]):
/// φ only [0.2, 0.1]; R only [0.25, 0.35]; φ + R [0.45, 0.45]; P × R [0.125, 0.105];
/// φ × R [0.05, 0.035].
#[test]
fn table5_variants() {
    let cases = [
        (CalVariant::PhiOnly, [0.2, 0.1]),
        (CalVariant::ROnly, [0.25, 0.35]),
        (CalVariant::PhiPlusR, [0.45, 0.45]),
        (CalVariant::PTimesR, [0.125, 0.105]),
        (CalVariant::PhiTimesR, [0.05, 0.035]),
    ];
    for (variant, w) in cases {
        let cfg = CalConfig {
            variant,
            ..CalConfig::default()
        };
        let mut cal = CalContribution::new(cfg, 2).unwrap();
        let r = cal.update(&stats([0.2, 0.1], [0.5, 0.3])).unwrap();
        assert_eq!(r.variant, variant);
        assert_all_close(&r.contribution, &w, 1e-15, &format!("{variant:?}"));
        assert_all_close(&r.modulation, &eq7(w[0], w[1]), 1e-14, "a");
    }
}

/// Eq 7: softmax(T·W) as printed, softmax(W/T) as the text describes; equal at T = 1.
#[test]
fn temperature_forms() {
    let w = [0.05, 0.035];
    let m = modulation_coefficients(&w, 2.0, TemperatureForm::Multiply).unwrap();
    assert_all_close(&m, &softmax2(0.1, 0.07), 1e-15, "T·W");
    let d = modulation_coefficients(&w, 2.0, TemperatureForm::Divide).unwrap();
    assert_all_close(&d, &softmax2(0.025, 0.0175), 1e-15, "W/T");
    let m1 = modulation_coefficients(&w, 1.0, TemperatureForm::Multiply).unwrap();
    let d1 = modulation_coefficients(&w, 1.0, TemperatureForm::Divide).unwrap();
    assert_all_close(&m1, &d1, 0.0, "T = 1");
    // Large W stays finite (max shift).
    let big = modulation_coefficients(&[1000.0, 0.0], 1.0, TemperatureForm::Multiply).unwrap();
    assert_all_close(&big, &[1.0, 0.0], 1e-300, "large W");
}

/// The default T (docs/results/cal-temperature-sweep.md): eq 7 on given W against the closed
/// form of a two-way softmax, `a¹ − a² = tanh(T·(W¹ − W²)/2)`, for contributions of the size
/// seen in training (W ≈ 0.01–0.1), and through the tracker's default config.
#[test]
fn default_temperature_closed_form() {
    let t = DEFAULT_TEMPERATURE;
    assert_eq!(CalConfig::default().temperature, t);
    for (w1, w2) in [(0.06, 0.02), (0.02, 0.06), (0.1, 0.01), (0.035, 0.035)] {
        let a = modulation_coefficients(&[w1, w2], t, TemperatureForm::Multiply).unwrap();
        let a1 = 1.0 / (1.0 + (-t * (w1 - w2)).exp());
        assert_all_close(&a, &[a1, 1.0 - a1], 1e-14, "a = softmax(T·W)");
        assert_close(a[0] - a[1], (t * (w1 - w2) / 2.0).tanh(), 1e-14, "a¹ − a²");
    }
    // Three modalities: a^m = exp(T W^m) / Σ_k exp(T W^k).
    let w = [0.08, 0.03, -0.01];
    let e: Vec<f64> = w.iter().map(|x| (t * x).exp()).collect();
    let z: f64 = e.iter().sum();
    let want: Vec<f64> = e.iter().map(|x| x / z).collect();
    let a = modulation_coefficients(&w, t, TemperatureForm::Multiply).unwrap();
    assert_all_close(&a, &want, 1e-14, "three modalities");
    // The tracker at its default config: φ = [0.2, 0.1], P = [0.5, 0.3] → W = [0.05, 0.035].
    let mut cal = CalContribution::new(CalConfig::default(), 2).unwrap();
    let r = cal.update(&stats([0.2, 0.1], [0.5, 0.3])).unwrap();
    let a1 = 1.0 / (1.0 + (-t * 0.015f64).exp());
    assert_all_close(&r.modulation, &[a1, 1.0 - a1], 1e-14, "tracker a");
}

/// A checkpointed state (JSON round trip) continues the exact sequence.
#[test]
fn state_round_trip() {
    let seq = [[0.5, 0.3], [0.6, 0.3], [0.7, 0.4], [0.65, 0.5]];
    let mut a = CalContribution::new(CalConfig::default(), 2).unwrap();
    let reports: Vec<_> = seq
        .iter()
        .map(|p| a.update(&stats([0.2, 0.1], *p)).unwrap())
        .collect();
    let mut b = CalContribution::new(CalConfig::default(), 2).unwrap();
    for p in &seq[..2] {
        b.update(&stats([0.2, 0.1], *p)).unwrap();
    }
    let json = serde_json::to_string(b.state()).unwrap();
    let state: CalState = serde_json::from_str(&json).unwrap();
    let mut c = CalContribution::new(CalConfig::default(), 2).unwrap();
    c.load_state(state).unwrap();
    assert_all_close(&c.modulation(), &reports[1].modulation, 0.0, "restored a");
    for (k, p) in seq[2..].iter().enumerate() {
        let r = c.update(&stats([0.2, 0.1], *p)).unwrap();
        assert_eq!(r, reports[2 + k], "epoch {}", 2 + k);
    }
    // A state of the wrong width is refused.
    let bad = CalState {
        epoch: 1,
        smoothed_history: vec![vec![0.5]],
        modulation: None,
    };
    assert!(matches!(c.load_state(bad), Err(ContribError::Input(_))));
}

#[test]
fn config_defaults_serde_and_validation() {
    let d: CalConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(d, CalConfig::default());
    assert_eq!(
        (d.gamma, d.window, d.epsilon, d.lambda),
        (0.2, 5, 1e-8, 0.5)
    );
    assert_eq!((d.p_max, d.temperature), (1.0, DEFAULT_TEMPERATURE));
    assert_eq!(d.variant, CalVariant::PhiTimesR);
    let v: CalConfig = serde_json::from_str(r#"{"variant": "p_times_r"}"#).unwrap();
    assert_eq!(v.variant, CalVariant::PTimesR);
    assert!(serde_json::from_str::<CalConfig>(r#"{"gama": 0.1}"#).is_err());
    for bad in [
        CalConfig {
            gamma: 0.0,
            ..CalConfig::default()
        },
        CalConfig {
            window: 0,
            ..CalConfig::default()
        },
        CalConfig {
            lambda: 1.5,
            ..CalConfig::default()
        },
        CalConfig {
            temperature: 0.0,
            ..CalConfig::default()
        },
    ] {
        assert!(matches!(
            CalContribution::new(bad, 2),
            Err(ContribError::Param(_))
        ));
    }
    let mut cal = CalContribution::new(CalConfig::default(), 2).unwrap();
    let e = cal
        .update(&CalEpochStats {
            phi: vec![0.1],
            performance: vec![0.5, 0.5],
        })
        .unwrap_err();
    assert!(
        matches!(e, ContribError::Input(ref m) if m.contains("phi")),
        "{e}"
    );
}

#[test]
fn feature_count_mismatch_is_named() {
    let (model, feats, labels) = tiny();
    let e = marginal_contribution(&model, &feats[..1], &labels).unwrap_err();
    assert!(
        matches!(e, ContribError::Input(ref m) if m.contains("2 modalities")),
        "{e}"
    );
    let e = marginal_contribution(&model, &feats, &[1]).unwrap_err();
    assert!(
        matches!(e, ContribError::Input(ref m) if m.contains("[2, 1]")),
        "{e}"
    );
}
