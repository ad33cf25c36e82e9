//! ARM (AAAI'25): the paper's eq 5-18 on the `Method` hooks (`crates/modbal-methods/src/arm.rs`).
//!
//! Reference numbers are closed forms worked out in the comments (eq 13 ratios, eq 15's bounded
//! denominator, eq 18's spread and slope functions, the official draft's step function, the
//! warm-up scaled from the paper's schedule); run-level tests use small `synth-vec` runs.

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::contrib::arm::ArmFusionWeights;
use modbal::core::{Batch, EvalOutputs, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::arm::{Arm, ArmConfig, Sampling};
use modbal::tensors::SeededRng;
use modbal::RunConfig;
use std::path::Path;

// ---- helpers ------------------------------------------------------------------------------------

/// Two modalities (`audio` [4], `visual` [3]), MLP encoders with 5 hidden units, 3 classes.
fn tiny_model() -> MultimodalNet {
    let specs = [
        ModalitySpec::new("audio", EncoderConfig::Mlp { hidden: vec![5] }, &[4]),
        ModalitySpec::new("visual", EncoderConfig::Mlp { hidden: vec![5] }, &[3]),
    ];
    MultimodalNet::new(
        &specs,
        &FusionConfig::Concat,
        3,
        &mut SeededRng::new(7),
        &Device::Cpu,
    )
    .unwrap()
}

/// A deterministic batch of `n` samples with ids `first..first+n`.
fn tiny_batch(n: usize, first: usize) -> Batch {
    let a: Vec<f32> = (0..n * 4)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
        .collect();
    let v: Vec<f32> = (0..n * 3)
        .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
        .collect();
    let y: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
    Batch {
        inputs: vec![
            Tensor::from_vec(a, (n, 4), &Device::Cpu).unwrap(),
            Tensor::from_vec(v, (n, 3), &Device::Cpu).unwrap(),
        ],
        labels: Tensor::from_vec(y, n, &Device::Cpu).unwrap(),
        sample_ids: (first..first + n).collect(),
    }
}

fn ctx_at(epoch: usize) -> RunContext {
    let mut ctx = RunContext::new(0, Device::Cpu, 20);
    ctx.epoch = epoch;
    ctx
}

/// An `Arm` with `opts` over the defaults; `schedule_epochs = 0` (warm-up taken literally) unless
/// given.
fn arm(opts: &[(&str, toml::Value)]) -> Arm {
    let mut cfg = ArmConfig {
        schedule_epochs: 0,
        ..Default::default()
    };
    let mut t = toml::Table::try_from(&cfg).unwrap();
    for (k, v) in opts {
        t.insert(k.to_string(), v.clone());
    }
    cfg = toml::Value::Table(t).try_into().unwrap();
    Arm::new(cfg).unwrap()
}

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn arm_run(out: &Path, seed: u64, epochs: usize, extra: &[&str]) -> RunConfig {
    let mut sets: Vec<String> = vec![
        "dataset.name=synth-vec".into(),
        "dataset.train=480".into(),
        "dataset.val=160".into(),
        "dataset.test=160".into(),
        format!("seed={seed}"),
        format!("train.epochs={epochs}"),
        format!("out_dir={:?}", out.display().to_string()),
        "method.name=arm".into(),
        "method.warm_up_epochs=1".into(),
        "method.schedule_epochs=0".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::default().with_overrides(&sets).unwrap()
}

// ---- (1) a run completes and logs the mechanism ----------------------------------------------

#[test]
fn run_completes_and_logs_miv_fw_and_resampling() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = arm_run(dir.path(), 0, 4, &[]);
    let outcome = common::train(&cfg);
    let summary = outcome.summary.expect("full run");
    let train: Vec<_> = outcome
        .history
        .iter()
        .filter(|r| r.split == "train")
        .collect();
    assert_eq!(train.len(), 4);
    for r in &train {
        for k in [
            "phi_mi.audio",
            "phi_mi.visual",
            "phi_cmi.audio",
            "phi_cmi.visual",
            "phi_mi_joint",
            "phi_cmi_joint",
            "fw.audio",
            "fw.visual",
            "fw_next.audio",
            "miv_train.phi_cmi.visual",
            "loss.ce",
            "loss.phi_mi",
            "loss.phi_cmi",
            "dsr.next_copies_hist",
            "dsr.copies_hist",
            "dsr.epoch_len_ratio",
            "warm_up_epochs_run",
        ] {
            assert!(
                r.method.contains_key(k),
                "epoch {}: {k} not logged",
                r.epoch
            );
        }
    }
    // Warm-up epoch: plain training.
    assert_eq!(train[0].method["fw_active"], serde_json::json!(false));
    assert_eq!(train[0].method["bmml_active"], serde_json::json!(false));
    assert_eq!(train[0].method["dsr.active"], serde_json::json!(false));
    assert_eq!(train[0].method["dsr.copies_hist"], serde_json::json!([480]));
    assert_eq!(
        train[0].method["dsr.epoch_len_ratio"],
        serde_json::json!(1.0)
    );
    let bound = ArmConfig::default().spread_mean_copies_bound();
    for r in &train {
        // Eq 15 with the bounded denominator: every per-sample term ≤ 2(M − 1) = 2.
        let l = r.method["loss.phi_cmi"].as_f64().unwrap();
        assert!((0.0..=2.0).contains(&l), "epoch {}: L_phiCMI {l}", r.epoch);
        assert_eq!(r.method["warm_up_epochs_run"], serde_json::json!(1));
    }
    // Afterwards: FW in use (FW ≥ 0, Σ FW = M = 2, eq 13), re-sampled epochs, selective.
    for r in &train[1..] {
        assert_eq!(r.method["fw_active"], serde_json::json!(true));
        assert_eq!(r.method["bmml_active"], serde_json::json!(true));
        assert_eq!(r.method["dsr.active"], serde_json::json!(true));
        let fa = r.method["fw.audio"].as_f64().unwrap();
        let fv = r.method["fw.visual"].as_f64().unwrap();
        assert!(fa >= 0.0 && fv >= 0.0, "FW {fa} {fv}");
        assert!((fa + fv - 2.0).abs() < 1e-9, "FW sum {}", fa + fv);
        let hist: Vec<u64> = r.method["dsr.copies_hist"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(hist.iter().sum::<u64>(), 480);
        let len = r.method["dsr.epoch_len"].as_u64().unwrap();
        let expect: u64 = hist
            .iter()
            .enumerate()
            .map(|(s, n)| (s as u64 + 1) * n)
            .sum();
        assert_eq!(len, expect);
        let ratio = r.method["dsr.epoch_len_ratio"].as_f64().unwrap();
        assert!((ratio - len as f64 / 480.0).abs() < 1e-12);
        // Selective: most samples get no copy, and the mean is within the closed-form bound.
        assert!(hist[0] > 240, "epoch {}: {hist:?}", r.epoch);
        assert!(
            ratio - 1.0 <= bound + 1e-12,
            "epoch {}: ratio {ratio}",
            r.epoch
        );
    }
    // The FW used in epoch e are the ones valued at the end of epoch e−1.
    for w in train.windows(2) {
        assert_eq!(w[0].method["fw_next.audio"], w[1].method["fw.audio"]);
    }
    for r in &train {
        eprintln!(
            "epoch {}: fw {:.3}/{:.3} phi_cmi {:.3}/{:.3} hist {} acc {:.3}",
            r.epoch,
            r.method["fw.audio"].as_f64().unwrap(),
            r.method["fw.visual"].as_f64().unwrap(),
            r.method["phi_cmi.audio"].as_f64().unwrap(),
            r.method["phi_cmi.visual"].as_f64().unwrap(),
            r.method
                .get("dsr.copies_hist")
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into()),
            r.fusion_acc
        );
    }
    // Same settings with concat, for the record (not asserted: 4 epochs are too few to rank).
    let mut concat = cfg.clone();
    concat.method = modbal::MethodConfig::from_name("concat").unwrap();
    let c = common::train(&concat).summary.unwrap();
    eprintln!(
        "arm test acc {:.3} (val {:.3}, visual slice {:.3}) | concat test acc {:.3} (val {:.3}, visual slice {:.3})",
        summary.test.fusion_acc,
        summary.val.fusion_acc,
        summary.val.modality_acc["visual"],
        c.test.fusion_acc,
        c.val.fusion_acc,
        c.val.modality_acc["visual"]
    );
    assert!(summary.test.fusion_acc > 0.5, "{}", summary.test.fusion_acc);
}

// ---- (2) re-sampling favours low-contribution samples ---------------------------------------

/// `"spread"` (default): `s_n = max(0, round(k (z_n − z_0)))`, `z_n = (φ_n − μ)/σ` (population
/// σ over the epoch), k = −2, z_0 = −1, i.e. `s = round(−2 z − 2)`.
#[test]
fn spread_sampling_matches_the_closed_form() {
    let c = ArmConfig::default();
    assert_eq!(c.sampling, Sampling::Spread);
    // (a) φ = [0, 0.6 × 9]: μ = 0.54, σ² = (0.54² + 9 · 0.06²)/10 = 0.0324, σ = 0.18;
    //     z = [−3, 1/3 × 9] → s = [round(4), round(−2.67) → 0 …] = [4, 0 × 9].
    let mut phi = vec![0.6; 10];
    phi[0] = 0.0;
    let mut expect = vec![0u32; 10];
    expect[0] = 4;
    assert_eq!(c.extra_copies(&phi, 2), expect);
    // (b) φ = [0, 0.2, 0.6 × 8]: μ = 0.5, σ² = (0.25 + 0.09 + 8 · 0.01)/10 = 0.042,
    //     σ = 0.204939; z = [−2.4398, −1.4639, 0.4880 × 8]
    //     → s = [round(2.880) = 3, round(0.928) = 1, 0 × 8].
    let mut phi = vec![0.6; 10];
    phi[0] = 0.0;
    phi[1] = 0.2;
    let mut expect = vec![0u32; 10];
    expect[0] = 3;
    expect[1] = 1;
    assert_eq!(c.extra_copies(&phi, 2), expect);
    // (c) Two points, 20 % at 0 and 80 % at 1: μ = 0.8, σ = 0.4, z = −2 / 0.5 → s = 2 / 0;
    //     mean extra copies 0.4, close to the distribution-free bound
    //     |k| (√(1 + c²) + c)/2 with c = z_0 + 1/(2|k|) = −0.75: 2 · (1.25 − 0.75)/2 = 0.5.
    let phi: Vec<f64> = (0..10).map(|i| if i < 2 { 0.0 } else { 1.0 }).collect();
    let s = c.extra_copies(&phi, 2);
    assert_eq!(s, [2, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!((c.spread_mean_copies_bound() - 0.5).abs() < 1e-12);
    // (d) A spread-out input, φ_i = 2i/1000 on [0, M = 2], i = 0..=1000: μ = 1,
    //     σ² = 1002/3000 (σ = 0.577927). s ≥ 1 ⇔ z ≤ −1.25 ⇔ φ ≤ 1 − 1.25 σ = 0.27759
    //     ⇔ i ≤ 138 (139 samples, i = 138: z = −1.2528 → round(0.506) = 1; i = 139: round(0.499)
    //     = 0); s ≥ 2 ⇔ z ≤ −1.75 ⇔ φ < 0: none. Mean extra copies = 139/1001 = 0.1389.
    //     App. C literally (`"slope"`): round(4 − 2φ) → mean ≈ 2 (every sample but the top ~quarter
    //     gets 2-4 copies).
    let phi: Vec<f64> = (0..=1000).map(|i| 2.0 * i as f64 / 1000.0).collect();
    let s = c.extra_copies(&phi, 2);
    assert_eq!(s.iter().filter(|&&x| x == 1).count(), 139);
    assert!(s[..139].iter().all(|&x| x == 1) && s[139..].iter().all(|&x| x == 0));
    let mean = |s: &[u32]| s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
    assert!((mean(&s) - 139.0 / 1001.0).abs() < 1e-12);
    assert!(mean(&s) <= c.spread_mean_copies_bound());
    let slope = ArmConfig {
        sampling: Sampling::Slope,
        ..Default::default()
    };
    let s_slope = slope.extra_copies(&phi, 2);
    assert!(mean(&s_slope) > 1.9, "{}", mean(&s_slope));
    // (e) The bound holds for any input: skewed, heavy-tailed and clustered vectors.
    for (name, phi) in [
        (
            "squares",
            (0..500)
                .map(|i| (i as f64 / 500.0).powi(2))
                .collect::<Vec<_>>(),
        ),
        (
            "sqrt",
            (0..500).map(|i| (i as f64 / 500.0).sqrt()).collect(),
        ),
        ("inverse", (1..=500).map(|i| 1.0 / i as f64).collect()),
        (
            "two clusters",
            (0..500)
                .map(|i| if i % 7 == 0 { 0.1 } else { 0.9 })
                .collect(),
        ),
    ] {
        for k in [-0.5, -1.0, -2.0, -3.0] {
            let c = ArmConfig {
                slope_k: k,
                ..Default::default()
            };
            let m = mean(&c.extra_copies(&phi, 2));
            assert!(
                m <= c.spread_mean_copies_bound() + 1e-12,
                "{name}, k {k}: {m} > {}",
                c.spread_mean_copies_bound()
            );
        }
    }
    // Non-increasing in φ within an epoch; no spread (σ = 0) or non-finite φ → no copies.
    let phi: Vec<f64> = (0..200)
        .map(|i| ((i * 37 % 200) as f64 / 100.0).sin())
        .collect();
    let s = c.extra_copies(&phi, 2);
    for i in 0..200 {
        for j in 0..200 {
            if phi[i] < phi[j] {
                assert!(s[i] >= s[j]);
            }
        }
    }
    assert_eq!(c.extra_copies(&[0.3; 5], 2), vec![0; 5]);
    assert_eq!(c.extra_copies(&[0.0, f64::NAN, 0.6], 2)[1], 0);
    assert_eq!(c.extra_copies(&[], 2), Vec::<u32>::new());
}

#[test]
fn slope_and_step_sampling_match_app_c_and_the_draft() {
    let slope = ArmConfig {
        sampling: Sampling::Slope,
        ..Default::default()
    }; // k = −2
       // s = max(0, round(k φ − k M)), M = 2, k = −2: round(4 − 2φ).
    let phi = [0.0, 0.5, 0.74, 1.0, 1.2, 1.5, 2.0, 2.7, -0.3, f64::NAN];
    //          4    3    2.52→3 2    1.6→2 1    0    −1.4→0 4.6→5 non-finite→0
    assert_eq!(
        slope.extra_copies(&phi, 2),
        vec![4, 3, 3, 2, 2, 1, 0, 0, 5, 0]
    );
    // Monotonically non-increasing in φ for every k of Table 5.
    for k in [-0.5, -1.0, -1.5, -2.0, -2.5, -3.0] {
        let c = ArmConfig {
            slope_k: k,
            sampling: Sampling::Slope,
            ..Default::default()
        };
        let grid: Vec<f64> = (0..=300).map(|i| i as f64 / 100.0).collect();
        let s = c.extra_copies(&grid, 3);
        assert!(
            s.windows(2).all(|w| w[0] >= w[1]),
            "k {k}: F_s not decreasing"
        );
    }
    // The official draft's step function: c < 0.5 → 3, 0.5–0.9 → 2, else 1.
    let step = ArmConfig {
        sampling: Sampling::Step,
        ..Default::default()
    };
    assert_eq!(
        step.extra_copies(&[0.0, 0.49, 0.5, 0.89, 0.9, 1.7], 2),
        vec![3, 3, 2, 2, 1, 1]
    );
}

#[test]
fn epoch_indices_repeat_low_contribution_samples() {
    let mut a = arm(&[("warm_up_epochs", 0.into()), ("sampling", "slope".into())]);
    // φ^CMI(X) per sample id → extra copies round(4 − 2φ): 3.8→4, 2.2→2, 3.2→3, 0.8→1, 3.2→3.
    let phi = [0.1, 0.9, 0.4, 1.6, 0.4];
    a.set_sample_contributions(&[0, 1, 2, 3, 4], &phi, 2)
        .unwrap();
    assert_eq!(a.extra_copies(), &[4, 2, 3, 1, 3]);
    let mut ctx = ctx_at(0);
    let idx = a.epoch_indices(5, &mut ctx).unwrap().expect("DSR active");
    let count = |i: usize| idx.iter().filter(|&&j| j == i).count();
    assert_eq!((0..5).map(count).collect::<Vec<_>>(), vec![5, 3, 4, 2, 4]);
    for i in 0..5 {
        for j in 0..5 {
            if phi[i] < phi[j] {
                assert!(
                    count(i) >= count(j),
                    "{i} (φ {}) vs {j} (φ {})",
                    phi[i],
                    phi[j]
                );
            }
        }
    }
    let log = ctx.log.take();
    // Samples with 0, 1, 2, 3, 4 extra copies.
    assert_eq!(log["dsr.copies_hist"], serde_json::json!([0, 1, 1, 2, 1]));
    assert_eq!(log["dsr.epoch_len"], serde_json::json!(18));
    assert_eq!(log["dsr.epoch_len_ratio"], serde_json::json!(3.6));
    assert_eq!(log["dsr.mean_extra_copies"], serde_json::json!(2.6));
    // A sample id never valued (6, 7) is trained once.
    let idx = a.epoch_indices(8, &mut ctx_at(0)).unwrap().unwrap();
    assert_eq!(idx.iter().filter(|&&j| j >= 5).count(), 3);

    // Default ("spread") on ids 10..20 with case (b) of `spread_sampling_matches_the_closed_form`:
    // copies [3, 1, 0 × 8] → epoch of 20 + 4 indices, histogram [8, 1, 0, 1] over the 10 valued
    // samples (ids 0..10 were not valued: 10 more with 0 copies).
    let mut a = arm(&[("warm_up_epochs", 0.into())]);
    let mut phi = vec![0.6; 10];
    phi[0] = 0.0;
    phi[1] = 0.2;
    let ids: Vec<usize> = (10..20).collect();
    a.set_sample_contributions(&ids, &phi, 2).unwrap();
    let mut ctx = ctx_at(0);
    let idx = a.epoch_indices(20, &mut ctx).unwrap().unwrap();
    assert_eq!(idx.len(), 24);
    assert_eq!(idx.iter().filter(|&&j| j == 10).count(), 4);
    assert_eq!(idx.iter().filter(|&&j| j == 11).count(), 2);
    let log = ctx.log.take();
    assert_eq!(log["dsr.copies_hist"], serde_json::json!([18, 1, 0, 1]));
    assert_eq!(log["dsr.epoch_len_ratio"], serde_json::json!(1.2));
}

// ---- (3) predict is label-free ---------------------------------------------------------------

#[test]
fn predict_is_label_free() {
    let model = tiny_model();
    let batch = tiny_batch(6, 0);
    let mut a = arm(&[("warm_up_epochs", 0.into())]);
    a.set_fusion_weights(Some(
        ArmFusionWeights::from_phi_cmi(&[0.6, 0.2], 1e-8).unwrap(),
    ));
    let out = model.forward_t(&batch.inputs, false).unwrap();
    let before = vec2(&a.predict(&model, &out).unwrap());
    // The validation hook sees labels, permuted ones here: predictions must not move.
    let labels: Vec<u32> = batch.labels.to_vec1().unwrap();
    let permuted: Vec<u32> = labels.iter().map(|y| (y + 1) % 3).collect();
    for l in [labels, permuted] {
        let eval = EvalOutputs {
            sample_ids: batch.sample_ids.clone(),
            labels: l,
            fused_logits: a.predict(&model, &out).unwrap(),
            per_modality_logits: out.per_modality_logits.clone(),
            features: out.features.clone(),
        };
        a.on_validation(&model, &eval, &mut ctx_at(0)).unwrap();
        assert_eq!(
            vec2(&a.predict(&model, &eval_as_output(&eval)).unwrap()),
            before
        );
    }
    // Two methods with the same stored FW predict the same, whatever labels either was trained on.
    let mut b = arm(&[("warm_up_epochs", 0.into())]);
    b.load_state(&a.state()).unwrap();
    assert_eq!(vec2(&b.predict(&model, &out).unwrap()), before);
}

fn eval_as_output(e: &EvalOutputs) -> modbal::core::MultimodalOutput {
    modbal::core::MultimodalOutput {
        fused_logits: e.fused_logits.clone(),
        per_modality_logits: e.per_modality_logits.clone(),
        features: e.features.clone(),
    }
}

// ---- (4) FW apply to the features as eq 13 says ---------------------------------------------

#[test]
fn fusion_weights_follow_eq13_on_a_hand_computed_case() {
    // φ^CMI(x^a) = 0.6, φ^CMI(x^v) = 0.2 → φ^CMI(X) = 0.4 (eq 12) → FW = (1.5, 0.5) (eq 13).
    let fw = ArmFusionWeights::from_phi_cmi(&[0.6, 0.2], 1e-8).unwrap();
    assert!((fw.weights[0] - 1.5).abs() < 1e-12 && (fw.weights[1] - 0.5).abs() < 1e-12);
    let fa = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
    let fv = Tensor::new(&[[2f32], [-2.0]], &Device::Cpu).unwrap();
    let w = fw.apply_to_features(&[fa, fv]).unwrap();
    assert_eq!(vec2(&w[0]), vec![vec![1.5, 3.0], vec![4.5, 6.0]]);
    assert_eq!(vec2(&w[1]), vec![vec![1.0], vec![-1.0]]);

    // In the method: forward and predict feed FW ⊙ f to the concat head; features stay raw.
    let model = tiny_model();
    let batch = tiny_batch(6, 0);
    let mut a = arm(&[("warm_up_epochs", 0.into())]);
    a.set_fusion_weights(Some(fw.clone()));
    let out = a.forward(&model, &batch, &mut ctx_at(0)).unwrap();
    let raw = model.forward_t(&batch.inputs, true).unwrap();
    for m in 0..2 {
        assert!(max_abs_diff(&out.features[m], &raw.features[m]) < 1e-6);
    }
    let scaled = vec![
        raw.features[0].affine(1.5, 0.0).unwrap(),
        raw.features[1].affine(0.5, 0.0).unwrap(),
    ];
    let (expect, _) = model.head(&scaled).unwrap();
    assert!(max_abs_diff(&out.fused_logits, &expect) < 1e-5);
    assert!(max_abs_diff(&a.predict(&model, &raw).unwrap(), &expect) < 1e-5);
    assert!(
        max_abs_diff(&raw.fused_logits, &expect) > 1e-3,
        "FW had no effect"
    );
}

#[test]
fn fw_valued_at_epoch_end_take_effect_next_epoch() {
    let model = tiny_model();
    let mut a = arm(&[("warm_up_epochs", 1.into())]);
    // Epoch 0 (warm-up): two batches recorded, valued at the end.
    let mut ctx = ctx_at(0);
    a.on_epoch_start(&model, &mut ctx).unwrap();
    for first in [0, 6] {
        let b = tiny_batch(6, first);
        let out = a.forward(&model, &b, &mut ctx).unwrap();
        a.loss(&model, &b, &out, &mut ctx).unwrap();
    }
    a.on_epoch_end(&model, &mut ctx).unwrap();
    assert!(a.fusion_weights().is_none(), "no FW during warm-up");
    let log = ctx.log.take();
    let next = [
        log["fw_next.audio"].as_f64().unwrap(),
        log["fw_next.visual"].as_f64().unwrap(),
    ];
    assert_eq!(log["miv_train.samples"], serde_json::json!(12));
    assert_eq!(a.extra_copies().len(), 12);
    // Epoch 1: promoted.
    let mut ctx = ctx_at(1);
    a.on_epoch_start(&model, &mut ctx).unwrap();
    let fw = a.fusion_weights().expect("FW promoted").weights.clone();
    assert_eq!(fw, next.to_vec());
    assert!((fw[0] + fw[1] - 2.0).abs() < 1e-9 || a.fusion_weights().unwrap().fallback);
    // state() round-trips FW and the per-sample frequencies.
    let mut b = arm(&[("warm_up_epochs", 1.into())]);
    b.load_state(&a.state()).unwrap();
    assert_eq!(b.state(), a.state());
    assert_eq!(b.extra_copies(), a.extra_copies());
}

// ---- (5) ablation switches --------------------------------------------------------------------

#[test]
fn ablation_switches_disable_each_mechanism() {
    let model = tiny_model();
    let batch = tiny_batch(8, 0);
    let fw = ArmFusionWeights::from_phi_cmi(&[0.6, 0.2], 1e-8).unwrap();

    // DSR off: no re-sampling even with contributions.
    let mut a = arm(&[("warm_up_epochs", 0.into()), ("dsr", false.into())]);
    a.set_sample_contributions(&[0, 1], &[0.1, 0.2], 2).unwrap();
    assert!(a.epoch_indices(2, &mut ctx_at(3)).unwrap().is_none());
    // DSR on but still in warm-up: none either.
    let mut a = arm(&[("warm_up_epochs", 5.into())]);
    a.set_sample_contributions(&[0, 1], &[0.1, 0.2], 2).unwrap();
    assert!(a.epoch_indices(2, &mut ctx_at(4)).unwrap().is_none());
    assert!(a.epoch_indices(2, &mut ctx_at(5)).unwrap().is_some());

    // DFE off: FW ignored in forward and predict.
    let mut a = arm(&[("warm_up_epochs", 0.into()), ("dfe", false.into())]);
    a.set_fusion_weights(Some(fw.clone()));
    let out = a.forward(&model, &batch, &mut ctx_at(2)).unwrap();
    let raw = model.forward_t(&batch.inputs, true).unwrap();
    assert!(max_abs_diff(&out.fused_logits, &raw.fused_logits) < 1e-6);
    assert!(max_abs_diff(&a.predict(&model, &raw).unwrap(), &raw.fused_logits) < 1e-6);

    // BMML off: the loss is the CE alone; on: CE + λ1 L_φMI + λ2 L_φCMI (eq 17).
    let scalar = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    for (bmml, epoch) in [(false, 2), (true, 0), (true, 2)] {
        let mut a = arm(&[
            ("warm_up_epochs", 1.into()),
            ("bmml", bmml.into()),
            ("lambda1", 0.5.into()),
            ("lambda2", 0.25.into()),
        ]);
        let mut ctx = ctx_at(epoch);
        let out = a.forward(&model, &batch, &mut ctx).unwrap();
        let l = a.loss(&model, &batch, &out, &mut ctx).unwrap();
        let (total, ce) = (scalar(&l.total), scalar(&l.parts["ce"]));
        if bmml && epoch >= 1 {
            let expect = ce + 0.5 * scalar(&l.parts["phi_mi"]) + 0.25 * scalar(&l.parts["phi_cmi"]);
            assert!((total - expect).abs() < 1e-5, "{total} vs {expect}");
            assert!(total > ce);
            // The BMML terms carry gradient to the encoders.
            let g = l.total.backward().unwrap();
            assert!(model
                .params()
                .trainable_with_prefix("encoder.visual")
                .iter()
                .any(|(_, v)| g.get(v.as_tensor()).is_some()));
        } else {
            assert!((total - ce).abs() < 1e-12, "bmml {bmml} epoch {epoch}");
        }
    }
}

// ---- (6) reproducibility ---------------------------------------------------------------------

#[test]
fn same_seed_gives_identical_metrics() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let r1 = common::train(&arm_run(d1.path(), 3, 3, &[]));
    let r2 = common::train(&arm_run(d2.path(), 3, 3, &[]));
    let m1 = std::fs::read(r1.run_dir.join("metrics.jsonl")).unwrap();
    let m2 = std::fs::read(r2.run_dir.join("metrics.jsonl")).unwrap();
    assert!(!m1.is_empty());
    assert!(m1 == m2, "metrics.jsonl differ for the same seed");
}

// ---- (7) bad options are named ---------------------------------------------------------------

#[test]
fn bad_options_are_named() {
    let err = |k: &str, v: toml::Value| {
        let mut t = toml::Table::new();
        t.insert(k.into(), v);
        common::build_method("arm", &t).unwrap_err().to_string()
    };
    assert!(err("warmup_epochs", 1.into()).contains("warmup_epochs"));
    let e = err("slope_k", 0.5.into());
    assert!(e.contains("slope_k"), "{e}");
    let e = err("lambda1", (-1.0).into());
    assert!(e.contains("lambda1"), "{e}");
    let e = err("phi_cmi_floor", 0.0.into());
    assert!(e.contains("phi_cmi_floor"), "{e}");
    let e = err("spread_zero_point", f64::NAN.into());
    assert!(e.contains("spread_zero_point"), "{e}");
    // A warm-up as long as its schedule never ends.
    let e = err("warm_up_epochs", 80.into());
    assert!(
        e.contains("warm_up_epochs") && e.contains("schedule_epochs"),
        "{e}"
    );
    let e = err("smooth_min_temperature", 0.0.into());
    assert!(e.contains("smooth_min_temperature"), "{e}");
    let e = err("sampling", "cubic".into());
    assert!(
        e.contains("cubic") && e.contains("spread") && e.contains("slope") && e.contains("step"),
        "{e}"
    );
    // Through the run configuration.
    let e = RunConfig::default()
        .with_overrides(&["method.name=arm".into(), "method.dsr_k=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("dsr_k"), "{e}");
    // The resolved options record every default.
    let built = common::build_method("arm", &toml::Table::new()).unwrap();
    for k in [
        "warm_up_epochs",
        "schedule_epochs",
        "spread_zero_point",
        "phi_cmi_floor",
        "lambda1",
        "lambda2",
        "slope_k",
        "sampling",
        "dfe",
        "bmml",
        "dsr",
    ] {
        assert!(built.resolved.contains_key(k), "{k} not resolved");
    }
    assert_eq!(built.resolved["slope_k"], toml::Value::Float(-2.0));
    assert_eq!(
        built.resolved["sampling"],
        toml::Value::String("spread".into())
    );
    assert_eq!(built.resolved["schedule_epochs"], toml::Value::Integer(80));
    assert_eq!(
        built.resolved["spread_zero_point"],
        toml::Value::Float(-1.0)
    );
}

// ---- warm-up on the paper's schedule -------------------------------------------------------

#[test]
fn warm_up_is_scaled_from_the_paper_schedule() {
    // 10 of the paper's 80 epochs (App. B) in a run of E epochs: round(10 E / 80), half up.
    let c = ArmConfig::default();
    assert_eq!((c.warm_up_epochs, c.schedule_epochs), (10, 80));
    for (e, w) in [
        (12, 2),  // 1.5 → 2
        (80, 10), // the paper's schedule: unchanged
        (4, 1),   // 0.5 → 1
        (3, 0),   // 0.375 → 0
        (20, 3),  // 2.5 → 3
        (36, 5),  // 4.5 → 5
        (160, 20),
    ] {
        assert_eq!(c.warm_up_for(e), w, "E = {e}");
    }
    let literal = ArmConfig {
        schedule_epochs: 0,
        ..Default::default()
    };
    assert_eq!(literal.warm_up_for(12), 10);

    // Observable in metrics.jsonl of a tiny 12-epoch run with the defaults: 2 warm-up epochs
    // (plain training), ARM from epoch 2 on.
    let dir = tempfile::tempdir().unwrap();
    let cfg = RunConfig::default()
        .with_overrides(&[
            "dataset.name=synth-vec".into(),
            "dataset.train=96".into(),
            "dataset.val=32".into(),
            "dataset.test=32".into(),
            "train.epochs=12".into(),
            format!("out_dir={:?}", dir.path().display().to_string()),
            "method.name=arm".into(),
        ])
        .unwrap();
    let out = common::train(&cfg);
    let train: Vec<_> = common::read_metrics(&out.run_dir)
        .into_iter()
        .filter(|r| r.split == "train")
        .collect();
    assert_eq!(train.len(), 12);
    for r in &train {
        assert_eq!(r.method["warm_up_epochs_run"], serde_json::json!(2));
        let on = serde_json::json!(r.epoch >= 2);
        for k in ["bmml_active", "fw_active", "dsr.active"] {
            assert_eq!(r.method[k], on, "epoch {}: {k}", r.epoch);
        }
    }
    // The reported model is ARM's: the best validation epoch among epochs 2-11 only (the warm-up
    // epochs are plain joint training and not selectable), recomputed here from the val lines.
    let val: Vec<_> = common::read_metrics(&out.run_dir)
        .into_iter()
        .filter(|r| r.split == "val" && r.epoch >= 2)
        .collect();
    let mut best = &val[0];
    for r in &val {
        if r.fusion_acc > best.fusion_acc {
            best = r;
        }
    }
    assert_eq!(out.summary.as_ref().unwrap().best_epoch, best.epoch);

    // A warm-up that covers the whole run (taken literally here) is an error, named.
    let dir = tempfile::tempdir().unwrap();
    let cfg = arm_run(dir.path(), 0, 4, &["method.warm_up_epochs=4"]);
    let e = modbal::train(&cfg, &common::quiet())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("warm_up_epochs") && e.contains("never activates"),
        "{e}"
    );
}

// ---- checkpoints: FW, pending FW and per-sample frequencies survive a resume -------------------

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = common::train(&arm_run(d1.path(), 5, 4, &[]));
    let opts = common::stop_after(2);
    let part = modbal::train(&arm_run(d2.path(), 5, 4, &[]), &opts).unwrap();
    assert!(part.summary.is_none());
    let resumed = modbal::resume(&part.run_dir, &common::quiet()).unwrap();
    let a = std::fs::read_to_string(full.run_dir.join("metrics.jsonl")).unwrap();
    let b = std::fs::read_to_string(resumed.run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(a, b);
    assert_eq!(full.summary.unwrap().test, resumed.summary.unwrap().test);
}
