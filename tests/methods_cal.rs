//! CAL (`method.name = "cal"`): end-to-end runs on `synth-vec` and the mechanism on one step.
//!
//! Reference values are closed forms of the paper's equations: `W = φ × R` (eq 1),
//! `a = softmax(T·W)` at the default T (eq 7), `g ← (1 + a^m)·g` on `encoder.<m>` (eq 8; Table 6
//! "None": `(1 + η/M)·g`), `β = exp(−λ a)` inside eq 13, and the Gaussian MI of a correlated
//! Gaussian sample, `−½ log(1 − r²)` per pair (the `full_shrinkage` estimator).

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, EvalOutputs, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::cal::{
    eq9_beta, schafer_strimmer_lambda, shrinkage_gaussian_mi, Cal, CalMethodConfig,
    GradientStrategy, DEFAULT_TEMPERATURE,
};
use modbal::tensors::SeededRng;
use modbal::{EpochRecord, RunConfig, TrainOptions};
use std::path::Path;

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

/// A small synth-vec CAL run (480/160/160 samples, MLP encoders): a few seconds.
fn cal_cfg(out: &Path, seed: u64, epochs: usize, extra: &[&str]) -> RunConfig {
    let mut sets = vec![
        "dataset.name=synth-vec".to_string(),
        "dataset.train=480".into(),
        "dataset.val=160".into(),
        "dataset.test=160".into(),
        "method.name=cal".into(),
        format!("seed={seed}"),
        format!("train.epochs={epochs}"),
        format!("out_dir={:?}", out.display().to_string()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::default().with_overrides(&sets).unwrap()
}

fn read_metrics(dir: &Path) -> Vec<EpochRecord> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn per_mod(r: &EpochRecord, key: &str, m: &str) -> f64 {
    r.method
        .get(key)
        .and_then(|v| v.get(m))
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| {
            panic!(
                "epoch {}: method.{key}.{m} missing: {:?}",
                r.epoch, r.method
            )
        })
}

#[test]
fn run_logs_phi_r_w_a_per_modality_with_softmax_a() {
    let dir = tempfile::tempdir().unwrap();
    let out = modbal::train(&cal_cfg(dir.path(), 0, 4, &[]), &quiet()).unwrap();
    let summary = out.summary.unwrap();
    assert_eq!(summary.method, "cal");
    let recs = read_metrics(&out.run_dir);
    let train: Vec<&EpochRecord> = recs.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 4);
    let mods = ["audio", "visual"];
    for r in &train {
        let mut sum_a = 0.0;
        let w: Vec<f64> = mods.iter().map(|m| per_mod(r, "W", m)).collect();
        let a: Vec<f64> = mods.iter().map(|m| per_mod(r, "a", m)).collect();
        for (k, m) in mods.iter().enumerate() {
            let phi = per_mod(r, "phi", m);
            let rr = per_mod(r, "R", m);
            // Eq 1: W = φ × R as logged.
            assert!((w[k] - phi * rr).abs() < 1e-12, "W != phi*R for {m}");
            sum_a += a[k];
            for key in ["det_con", "beta", "P", "P_hat", "T", "a_applied"] {
                assert!(per_mod(r, key, m).is_finite(), "{key}.{m}");
            }
            for key in [
                format!("mi_zf.{m}"),
                format!("mi_zx.{m}"),
                format!("loss.aib.{m}"),
            ] {
                let v = r.method[&key].as_f64().unwrap();
                assert!(v.is_finite(), "{key} = {v}");
            }
        }
        // Eq 7 at the default T: a = softmax(T·W), closed form for two modalities.
        assert!((sum_a - 1.0).abs() < 1e-12, "a sums to {sum_a}");
        let a0 = 1.0 / (1.0 + (DEFAULT_TEMPERATURE * (w[1] - w[0])).exp());
        assert!(
            (a[0] - a0).abs() < 1e-12,
            "a_audio {} vs softmax {a0}",
            a[0]
        );
        // The larger W gets the larger a.
        assert_eq!(w[0] > w[1], a[0] > a[1], "W {w:?} a {a:?}");
        for key in [
            "loss.ce_fused",
            "loss.aib",
            "loss.ce.audio",
            "loss.ce.visual",
        ] {
            assert!(r.method[key].as_f64().unwrap().is_finite(), "{key}");
        }
    }
    // a takes effect for the next epoch: a_applied(t) = a(t−1), uniform at t = 0.
    for m in mods {
        assert_eq!(per_mod(train[0], "a_applied", m), 0.5);
        for t in 1..train.len() {
            assert_eq!(
                per_mod(train[t], "a_applied", m),
                per_mod(train[t - 1], "a", m)
            );
        }
    }
    eprintln!(
        "cal synth-vec 4 epochs: val {:.3} test {:.3}; last epoch {:?}",
        summary.val.fusion_acc,
        summary.test.fusion_acc,
        train.last().unwrap().method
    );
}

/// A 2-modality MLP model (audio 6-d, visual 5-d inputs, 8-d features, 3 classes) and a batch.
fn small_model_and_batch(b: usize) -> (MultimodalNet, Batch) {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(7);
    let specs = [
        ModalitySpec::new("audio", EncoderConfig::Mlp { hidden: vec![8] }, &[6]),
        ModalitySpec::new("visual", EncoderConfig::Mlp { hidden: vec![8] }, &[5]),
    ];
    let model = MultimodalNet::new(&specs, &FusionConfig::Concat, 3, &mut rng, &dev).unwrap();
    let xa = rng.randn((b, 6), 0.0, 1.0, DType::F32, &dev).unwrap();
    let xv = rng.randn((b, 5), 0.0, 1.0, DType::F32, &dev).unwrap();
    let y: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
    let batch = Batch {
        inputs: vec![xa, xv],
        labels: Tensor::new(y, &dev).unwrap(),
        sample_ids: (0..b).collect(),
    };
    (model, batch)
}

fn ctx() -> RunContext {
    RunContext::new(3, Device::Cpu, 1)
}

#[test]
fn larger_w_gets_larger_a_and_eq8_scales_exactly_that_encoder() {
    let (model, batch) = small_model_and_batch(32);
    let mut c = ctx();
    // (a) On a validation pass, the modality with the larger W gets the larger a.
    let mut cal = Cal::new(CalMethodConfig::default()).unwrap();
    let out = model.forward_t(&batch.inputs, false).unwrap();
    let y: Vec<u32> = batch.labels.to_vec1().unwrap();
    let eval = EvalOutputs {
        sample_ids: batch.sample_ids.clone(),
        labels: y,
        fused_logits: out.fused_logits.clone(),
        per_modality_logits: out.per_modality_logits.clone(),
        features: out.features.clone(),
    };
    cal.on_validation(&model, &eval, &mut c).unwrap();
    let log = c.log.take();
    let w = [
        log["W"]["audio"].as_f64().unwrap(),
        log["W"]["visual"].as_f64().unwrap(),
    ];
    let a = cal.modulation(2);
    assert!(w[0] != w[1]);
    assert_eq!(w[0] > w[1], a[0] > a[1], "W {w:?} a {a:?}");

    // (b) One step with a hand-set a: encoder.<m> gradients are exactly (1 + η a^m)·g for
    // "strong", (1 + η/M)·g for Table 6 "None" (fixed a = [0.5, 0.5]), untouched for "off";
    // the head's are untouched.
    for (strategy, eta) in [
        (GradientStrategy::Strong, 1.0),
        (GradientStrategy::None, 1.0),
        (GradientStrategy::None, 0.4),
        (GradientStrategy::Off, 1.0),
    ] {
        let mut cal = Cal::new(CalMethodConfig {
            gradient: strategy,
            eta,
            ..Default::default()
        })
        .unwrap();
        let hand = vec![0.7, 0.3];
        cal.set_modulation(hand.clone());
        let mut c = ctx();
        cal.on_stage_start(&model, &mut c).unwrap();
        let out = model.forward_t(&batch.inputs, true).unwrap();
        let loss = cal.loss(&model, &batch, &out, &mut c).unwrap();
        // Plain gradients first: the method's backward steps the compressors.
        let plain = loss.total.backward().unwrap();
        let grads = cal.backward(&model, &batch, &out, &loss, &mut c).unwrap();
        let mut seen = [0usize; 3];
        for (name, var) in model.params().trainable() {
            let g0 = plain.get(var.as_tensor()).unwrap();
            let g1 = grads.get(var.as_tensor()).unwrap();
            let enc_factor = |m: usize| match strategy {
                GradientStrategy::Strong => 1.0 + eta * hand[m],
                GradientStrategy::None => 1.0 + eta / 2.0,
                _ => 1.0,
            };
            let (k, factor) = if name.starts_with("encoder.audio.") {
                (0, enc_factor(0))
            } else if name.starts_with("encoder.visual.") {
                (1, enc_factor(1))
            } else {
                (2, 1.0)
            };
            seen[k] += 1;
            let v0: Vec<f32> = g0.flatten_all().unwrap().to_vec1().unwrap();
            let v1: Vec<f32> = g1.flatten_all().unwrap().to_vec1().unwrap();
            if strategy == GradientStrategy::Off || k == 2 {
                assert_eq!(
                    v0, v1,
                    "{name}: {strategy:?} must leave the gradient bit-identical"
                );
            } else {
                for (x0, x1) in v0.iter().zip(&v1) {
                    let want = (*x0 as f64) * factor;
                    assert!(
                        ((*x1 as f64) - want).abs() <= 1e-6 * want.abs().max(1e-12),
                        "{name}: {x1} vs {want}"
                    );
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        // The logged factors are the applied ones.
        let log = c.log.take();
        for (m, name) in ["audio", "visual"].iter().enumerate() {
            let want = match strategy {
                GradientStrategy::Strong => 1.0 + eta * hand[m],
                GradientStrategy::None => 1.0 + eta / 2.0,
                _ => 1.0,
            };
            let got = log[&format!("factor.{name}")].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-12,
                "{strategy:?} factor.{name} {got}"
            );
        }
        // The compressors' gradients are consumed by their own optimizer, not passed on.
        for (_, v) in cal.compressor_params() {
            assert!(grads.get(v.as_tensor()).is_none());
        }
    }
}

#[test]
fn aib_is_finite_and_its_gradient_reaches_compressors_and_encoders() {
    let (model, batch) = small_model_and_batch(32);
    let cases = ["beta", "mi", "mx", "mx_mi", "inv_beta"]
        .iter()
        .flat_map(|a| [(*a, "projected"), (*a, "full_shrinkage")]);
    for (aib, estimator) in cases {
        let aib = &*format!("{aib} ({estimator})");
        let mut t = toml::Table::new();
        t.insert(
            "aib".into(),
            toml::Value::String(aib.split(' ').next().unwrap().into()),
        );
        t.insert("mi_estimator".into(), toml::Value::String(estimator.into()));
        let cfg: CalMethodConfig = toml::Value::Table(t).try_into().unwrap();
        let mut cal = Cal::new(cfg).unwrap();
        let mut c = ctx();
        cal.on_stage_start(&model, &mut c).unwrap();
        let out = model.forward_t(&batch.inputs, true).unwrap();
        let loss = cal.loss(&model, &batch, &out, &mut c).unwrap();
        let aib_t = &loss.parts["aib"];
        let v = aib_t.to_scalar::<f32>().unwrap();
        assert!(v.is_finite() && v > 0.0, "{aib}: L_AIB = {v}");
        // Gradient of the AIB term alone.
        let g = aib_t.backward().unwrap();
        let nonzero = |vars: Vec<(String, candle_core::Var)>| {
            vars.iter().any(|(_, v)| {
                g.get(v.as_tensor())
                    .map(|t| {
                        t.abs()
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap()
                            > 0.0
                    })
                    .unwrap_or(false)
            })
        };
        assert!(
            nonzero(cal.compressor_params()),
            "{aib}: no compressor gradient"
        );
        for m in ["encoder.audio", "encoder.visual"] {
            assert!(
                nonzero(model.params().trainable_with_prefix(m)),
                "{aib}: no gradient on {m}"
            );
        }
    }
}

#[test]
fn same_seed_gives_identical_metrics() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let r1 = modbal::train(&cal_cfg(d1.path(), 5, 2, &[]), &quiet()).unwrap();
    let r2 = modbal::train(&cal_cfg(d2.path(), 5, 2, &[]), &quiet()).unwrap();
    let m1 = std::fs::read_to_string(r1.run_dir.join("metrics.jsonl")).unwrap();
    let m2 = std::fs::read_to_string(r2.run_dir.join("metrics.jsonl")).unwrap();
    assert!(!m1.is_empty());
    assert_eq!(m1, m2);
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let full = modbal::train(&cal_cfg(d1.path(), 2, 3, &[]), &quiet()).unwrap();
    let part = modbal::train(
        &cal_cfg(d2.path(), 2, 3, &[]),
        &TrainOptions {
            quiet: true,
            stop_after: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    modbal::resume(&part.run_dir, &quiet()).unwrap();
    let m1 = std::fs::read_to_string(full.run_dir.join("metrics.jsonl")).unwrap();
    let m2 = std::fs::read_to_string(part.run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(m1, m2);
}

#[test]
fn bad_options_are_errors_naming_them() {
    let err = |sets: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let e = match RunConfig::default()
            .with_overrides(
                &[&["method.name=cal"][..], sets]
                    .concat()
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .and_then(|c| {
                let mut c = c;
                c.out_dir = dir.path().into();
                common::build_method(&c.method.name, &c.method.options).map(|_| ())
            }) {
            Ok(()) => panic!("{sets:?} accepted"),
            Err(e) => e.to_string(),
        };
        e
    };
    let e = err(&["method.gamm=0.3"]);
    assert!(e.contains("gamm"), "{e}");
    let e = err(&["method.gamma=-0.2"]);
    assert!(e.contains("gamma") && e.contains("-0.2"), "{e}");
    let e = err(&["method.lambda_m=-1"]);
    assert!(e.contains("lambda_m"), "{e}");
    let e = err(&["method.gradient=\"sideways\""]);
    assert!(e.contains("sideways") || e.contains("gradient"), "{e}");
    // Defaults resolve to the paper's values.
    let built = common::build_method("cal", &toml::Table::new()).unwrap();
    assert_eq!(built.resolved["gamma"].as_float(), Some(0.2));
    assert_eq!(built.resolved["window"].as_integer(), Some(5));
    assert_eq!(built.resolved["lambda_potential"].as_float(), Some(0.5));
    assert_eq!(built.resolved["lambda_compression"].as_float(), Some(2.0));
    assert_eq!(built.resolved["lambda_m"].as_float(), Some(0.1));
    assert_eq!(
        built.resolved["temperature"].as_float(),
        Some(DEFAULT_TEMPERATURE)
    );
    assert_eq!(built.resolved["gradient"].as_str(), Some("strong"));
    assert_eq!(built.resolved["mi_estimator"].as_str(), Some("projected"));
    let e = err(&["method.mi_shrinkage_min=0"]);
    assert!(e.contains("mi_shrinkage_min"), "{e}");
    let e = err(&["method.mi_estimator=\"exact\""]);
    assert!(e.contains("exact") || e.contains("mi_estimator"), "{e}");
}

/// Eq 9 and eq 13 on one batch with a hand-set a = (0.7, 0.3), λ_c = 2: each modality's AIB
/// term is `softplus(−s)`, `s = β I(Z;F) − I(Z;X)` with `β = exp(−λ a)` ("beta", eq 9 as
/// printed: the larger a gets the smaller β, i.e. relatively more compression) or
/// `I(Z;F)/β − I(Z;X)` ("inv_beta" = `β' = exp(+λ a)`, the text's direction: the larger a gets
/// the larger weight on I(Z;F), i.e. less compression).
#[test]
fn eq9_beta_direction_and_eq13_closed_form() {
    let (model, batch) = small_model_and_batch(32);
    let hand = [0.7, 0.3];
    assert!(eq9_beta(2.0, hand[0]) < eq9_beta(2.0, hand[1]));
    assert_eq!(eq9_beta(2.0, 0.7), (-1.4f64).exp());
    for (aib, sign) in [("beta", -1.0), ("inv_beta", 1.0)] {
        let mut t = toml::Table::new();
        t.insert("aib".into(), toml::Value::String(aib.into()));
        let cfg: CalMethodConfig = toml::Value::Table(t).try_into().unwrap();
        let mut cal = Cal::new(cfg).unwrap();
        cal.set_modulation(hand.to_vec());
        let mut c = ctx();
        cal.on_stage_start(&model, &mut c).unwrap();
        let out = model.forward_t(&batch.inputs, true).unwrap();
        let loss = cal.loss(&model, &batch, &out, &mut c).unwrap();
        let log = c.log.take();
        let mut weights = Vec::new();
        for (m, name) in ["audio", "visual"].iter().enumerate() {
            let i_f = log[&format!("mi_zf.{name}")].as_f64().unwrap();
            let i_x = log[&format!("mi_zx.{name}")].as_f64().unwrap();
            // The weight of I(Z;F) relative to I(Z;X) inside σ(·).
            let w = (sign * 2.0 * hand[m]).exp();
            weights.push(w);
            let s = w * i_f - i_x;
            let want = (1.0 + (-s).exp()).ln(); // softplus(−s) = −log σ(s), det_con = 1
            let got = loss.parts[&format!("aib.{name}")]
                .to_scalar::<f32>()
                .unwrap() as f64;
            assert!(
                (got - want).abs() < 1e-5 * want.max(1.0),
                "{aib} {name}: L = {got} vs {want}"
            );
        }
        // beta: the high-a modality (audio) has the smaller weight on I(Z;F) → compressed more.
        assert_eq!(weights[0] < weights[1], aib == "beta", "{aib}: {weights:?}");
    }
}

/// `n` samples of `d` independent pairs (x_j, y_j), each standard bivariate normal with
/// correlation r: `I(X; Y) = −(d/2)·log(1 − r²)`.
fn correlated(n: usize, d: usize, r: f64, seed: u64) -> (Tensor, Tensor) {
    let mut rng = SeededRng::new(seed);
    let x = rng.normal_vec(n * d, 0.0, 1.0);
    let e = rng.normal_vec(n * d, 0.0, 1.0);
    let y: Vec<f64> = x
        .iter()
        .zip(&e)
        .map(|(a, b)| r * a + (1.0 - r * r).sqrt() * b)
        .collect();
    (
        Tensor::from_vec(x, (n, d), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, (n, d), &Device::Cpu).unwrap(),
    )
}

/// The `full_shrinkage` estimator against the closed-form MI of correlated Gaussians (the
/// estimated λ is small when N ≫ D), with x rescaled per column (MI is scale-free), and 0 for
/// independent variables; f32 inputs give the same value. Tolerance: 4 asymptotic standard
/// errors of the plug-in estimate (`√d·r/√N`) plus its bias for independent columns
/// (`D_X·D_Y/(2N)`).
#[test]
fn full_shrinkage_mi_matches_gaussian_closed_form() {
    let n = 20_000;
    for (d, r) in [(1usize, 0.8), (3, 0.6), (4, 0.3)] {
        let (x, y) = correlated(n, d, r, 11 + d as u64);
        let want = -(d as f64) / 2.0 * (1.0 - r * r).ln();
        let nf = n as f64;
        let tol = 4.0 * (d as f64).sqrt() * r / nf.sqrt() + (d * d) as f64 / (2.0 * nf);
        let scale = Tensor::new(&[3.0f64, 0.01, 250.0, 1.0][..d], &Device::Cpu).unwrap();
        let xs = x.broadcast_mul(&scale).unwrap();
        let est = shrinkage_gaussian_mi(&xs, &y, None, 1e-3).unwrap();
        let got = est.mi.to_scalar::<f64>().unwrap();
        assert!(
            (got - want).abs() < tol,
            "d {d} r {r}: {got} vs {want} ± {tol} (λ {})",
            est.lambda
        );
        assert!(est.lambda < 0.01, "λ = {}", est.lambda);
        eprintln!(
            "d {d} r {r}: {got:.5} vs {want:.5} ± {tol:.5}, λ {:.2e}",
            est.lambda
        );
        let f32s = shrinkage_gaussian_mi(
            &xs.to_dtype(DType::F32).unwrap(),
            &y.to_dtype(DType::F32).unwrap(),
            Some(est.lambda),
            1e-3,
        )
        .unwrap();
        let g32 = f32s.mi.to_scalar::<f32>().unwrap() as f64;
        assert!((g32 - got).abs() < 1e-4, "f32 {g32} vs f64 {got}");
    }
    // Independent: I = 0 (up to the plug-in bias D_X·D_Y/(2N) = 1e-4).
    let (x, _) = correlated(n, 2, 0.0, 1);
    let (_, y) = correlated(n, 2, 0.0, 2);
    let got = shrinkage_gaussian_mi(&x, &y, None, 1e-3)
        .unwrap()
        .mi
        .to_scalar::<f64>()
        .unwrap();
    assert!((0.0..0.001).contains(&got), "independent: {got}");
}

/// With a fixed λ, the estimator is `gaussian_mi` with `shrinkage = λ, ridge = 0` (covariance
/// shrunk to its diagonal = correlation shrunk to I) — both when `D_X + D_Y ≤ N` (D × D blocks)
/// and when the widths exceed N (the N × N Gram route of the determinant lemma); its gradient
/// reaches both operands.
#[test]
fn full_shrinkage_mi_equals_shrunk_gaussian_mi_on_both_routes() {
    use modbal::info::gaussian::{gaussian_mi, GaussianConfig};
    for (n, dx, dy, lambda) in [(50, 5, 3, 0.3), (24, 40, 10, 0.2), (16, 100, 1, 0.05)] {
        let mut rng = SeededRng::new(n as u64);
        let x = Tensor::from_vec(rng.normal_vec(n * dx, 0.0, 1.0), (n, dx), &Device::Cpu).unwrap();
        // y depends on the first columns of x.
        let noise =
            Tensor::from_vec(rng.normal_vec(n * dy, 0.0, 1.0), (n, dy), &Device::Cpu).unwrap();
        let y = ((x.narrow(1, 0, dy.min(dx)).unwrap() * 0.7).unwrap() + noise).unwrap();
        let got = shrinkage_gaussian_mi(&x, &y, Some(lambda), 1e-3).unwrap();
        let want = gaussian_mi(
            &x,
            &y,
            &GaussianConfig {
                ridge: 0.0,
                shrinkage: lambda,
            },
        )
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
        let g = got.mi.to_scalar::<f64>().unwrap();
        assert!(
            (g - want).abs() < 1e-9 * want.abs().max(1.0),
            "N {n}, D {dx}+{dy}: {g} vs gaussian_mi {want}"
        );
        assert!(g > 0.0);
        // Differentiable in both operands.
        let xv = candle_core::Var::from_tensor(&x).unwrap();
        let yv = candle_core::Var::from_tensor(&y).unwrap();
        let mi = shrinkage_gaussian_mi(xv.as_tensor(), yv.as_tensor(), Some(lambda), 1e-3)
            .unwrap()
            .mi;
        let grads = mi.backward().unwrap();
        for v in [&xv, &yv] {
            let s = grads
                .get(v.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(s > 0.0 && s.is_finite(), "gradient {s}");
        }
    }
}

/// The Schäfer–Strimmer intensity by its definition (loops over i ≠ j and samples k) against the
/// Gram-matrix evaluation, for D < N and D > N.
#[test]
fn schafer_strimmer_lambda_matches_its_definition() {
    for (n, d, seed) in [(12usize, 4usize, 1u64), (7, 11, 2), (30, 3, 3)] {
        let mut rng = SeededRng::new(seed);
        let mut u = rng.normal_vec(n * d, 0.0, 1.0);
        // Correlate column 1 with column 0.
        for k in 0..n {
            u[k * d + 1] += 0.8 * u[k * d];
        }
        let nf = n as f64;
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..d {
            for j in 0..d {
                if i == j {
                    continue;
                }
                let w: Vec<f64> = (0..n).map(|k| u[k * d + i] * u[k * d + j]).collect();
                let wbar = w.iter().sum::<f64>() / nf;
                let r = w.iter().sum::<f64>() / (nf - 1.0);
                num += nf / (nf - 1.0).powi(3) * w.iter().map(|x| (x - wbar).powi(2)).sum::<f64>();
                den += r * r;
            }
        }
        let want = (num / den).clamp(0.0, 1.0);
        let t = Tensor::from_vec(u, (n, d), &Device::Cpu).unwrap();
        let got = schafer_strimmer_lambda(&t).unwrap();
        assert!((got - want).abs() < 1e-12, "N {n} D {d}: {got} vs {want}");
        assert!(want > 0.0 && want < 1.0, "{want}");
    }
}

#[test]
fn ablation_options_run() {
    // Table 4-6 switches: one short run each way off the defaults.
    let dir = tempfile::tempdir().unwrap();
    for extra in [
        &["method.gradient=\"ogm\"", "method.variant=\"phi_plus_r\""][..],
        &["method.gradient=\"weak\"", "method.aib=\"mi\""][..],
        &[
            "method.gradient=\"none\"",
            "method.fused_target=\"features\"",
        ][..],
        &[
            "method.gradient=\"off\"",
            "method.mi_estimator=\"full_shrinkage\"",
        ][..],
    ] {
        let out = modbal::train(&cal_cfg(dir.path(), 1, 2, extra), &quiet()).unwrap();
        let s = out.summary.unwrap();
        assert!(s.test.fusion_acc > 0.0, "{extra:?}");
        let recs = read_metrics(&out.run_dir);
        let last = recs.iter().rev().find(|r| r.split == "train").unwrap();
        for m in ["audio", "visual"] {
            let f = last.method[&format!("factor.{m}")].as_f64().unwrap();
            if extra[0].contains("\"none\"") {
                assert_eq!(f, 1.5, "none: fixed a = 1/2");
            }
            if extra[0].contains("\"off\"") {
                assert_eq!(f, 1.0, "off");
            }
            if extra.iter().any(|e| e.contains("full_shrinkage")) {
                // Synth-vec widths (Z 32 + X 16 or 32, F 4 classes): the estimated λ per term.
                for key in ["mi_lambda_zx", "mi_lambda_zf", "mi_zx", "mi_zf"] {
                    let v = last.method[&format!("{key}.{m}")].as_f64().unwrap();
                    assert!(v.is_finite() && v >= 0.0, "{key}.{m} = {v}");
                }
                let l = last.method[&format!("mi_lambda_zx.{m}")].as_f64().unwrap();
                assert!(l > 0.0 && l <= 1.0, "λ {l}");
            }
        }
    }
}
