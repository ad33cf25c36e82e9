//! CAL (`method.name = "cal"`): end-to-end runs on `synth-vec` and the mechanism on one step.
//!
//! Reference values are closed forms of the paper's equations: `W = φ × R` (eq 1),
//! `a = softmax(T·W)` with T = 1 (eq 7), `g ← (1 + a^m)·g` on `encoder.<m>` (eq 8).

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, EvalOutputs, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::cal::{Cal, CalMethodConfig, GradientStrategy};
use modbal::tensors::SeededRng;
use modbal::train::{EpochRecord, RunConfig, TrainOptions};
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
    let out = modbal::train::train(&cal_cfg(dir.path(), 0, 4, &[]), &quiet()).unwrap();
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
        // Eq 7 with T = 1: a = softmax(W), closed form for two modalities.
        assert!((sum_a - 1.0).abs() < 1e-12, "a sums to {sum_a}");
        let a0 = 1.0 / (1.0 + (w[1] - w[0]).exp());
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

    // (b) One step with a hand-set a: encoder.<m> gradients are exactly (1 + a^m)·g, the
    // head's are untouched.
    for strategy in [GradientStrategy::Strong, GradientStrategy::None] {
        let mut cal = Cal::new(CalMethodConfig {
            gradient: strategy,
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
            let (k, factor) = if name.starts_with("encoder.audio.") {
                (0, 1.0 + hand[0])
            } else if name.starts_with("encoder.visual.") {
                (1, 1.0 + hand[1])
            } else {
                (2, 1.0)
            };
            seen[k] += 1;
            let v0: Vec<f32> = g0.flatten_all().unwrap().to_vec1().unwrap();
            let v1: Vec<f32> = g1.flatten_all().unwrap().to_vec1().unwrap();
            if strategy == GradientStrategy::None || k == 2 {
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
        // The compressors' gradients are consumed by their own optimizer, not passed on.
        for (_, v) in cal.compressor_params() {
            assert!(grads.get(v.as_tensor()).is_none());
        }
    }
}

#[test]
fn aib_is_finite_and_its_gradient_reaches_compressors_and_encoders() {
    let (model, batch) = small_model_and_batch(32);
    for aib in ["beta", "mi", "mx", "mx_mi", "inv_beta"] {
        let mut t = toml::Table::new();
        t.insert("aib".into(), toml::Value::String(aib.into()));
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
    let r1 = modbal::train::train(&cal_cfg(d1.path(), 5, 2, &[]), &quiet()).unwrap();
    let r2 = modbal::train::train(&cal_cfg(d2.path(), 5, 2, &[]), &quiet()).unwrap();
    let m1 = std::fs::read_to_string(r1.run_dir.join("metrics.jsonl")).unwrap();
    let m2 = std::fs::read_to_string(r2.run_dir.join("metrics.jsonl")).unwrap();
    assert!(!m1.is_empty());
    assert_eq!(m1, m2);
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let full = modbal::train::train(&cal_cfg(d1.path(), 2, 3, &[]), &quiet()).unwrap();
    let part = modbal::train::train(
        &cal_cfg(d2.path(), 2, 3, &[]),
        &TrainOptions {
            quiet: true,
            stop_after: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    modbal::train::resume(&part.run_dir, &quiet()).unwrap();
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
                c.method.build().map(|_| ())
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
    let built = modbal::methods::build("cal", &toml::Table::new()).unwrap();
    assert_eq!(built.resolved["gamma"].as_float(), Some(0.2));
    assert_eq!(built.resolved["window"].as_integer(), Some(5));
    assert_eq!(built.resolved["lambda_potential"].as_float(), Some(0.5));
    assert_eq!(built.resolved["lambda_compression"].as_float(), Some(2.0));
    assert_eq!(built.resolved["lambda_m"].as_float(), Some(0.1));
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
    ] {
        let out = modbal::train::train(&cal_cfg(dir.path(), 1, 2, extra), &quiet()).unwrap();
        let s = out.summary.unwrap();
        assert!(s.test.fusion_acc > 0.0, "{extra:?}");
    }
}
