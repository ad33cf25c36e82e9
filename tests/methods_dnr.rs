//! `dnr` (Wei, Li, Feng & Hu, "Diagnosing and Re-learning for Balanced Multimodal Learning",
//! ECCV 2024; official code GeWu-Lab/Diagnosing_Relearning_ECCV2024, `code/ours.py`): each
//! mechanism against its closed form computed here independently, the official arithmetic,
//! resume, three modalities, bad input and short runs through the registry.
//!
//! Reference numbers were computed with plain Python 3 (`math`, `collections`; neither numpy,
//! scikit-learn nor torch is installed on the development machine), restating the official
//! `purity_score` / `reinit_score` / `reinit` arithmetic:
//!
//! ```python
//! import math
//! from collections import Counter
//! def purity(y, c):   # purity_score: majority label per cluster, accuracy of the vote
//!     return sum(max(Counter(a for a, b in zip(y, c) if b == k).values())
//!                for k in set(c)) / len(y)
//! purity([0,0,0,1, 1,1,2,2, 2,0,0,0], [0]*4 + [1]*4 + [2]*4)          # -> 0.6666666666666666
//! purity([0,1,2,0,1,2,0,1,2,3], [5,5,5,7,7,1,1,1,1,1])                 # -> 0.4
//! # weight = torch.tanh(torch.tensor(move_lambda * |purity_train - purity_val|)), move_lambda 3
//! math.tanh(3 * abs(0.9 - 0.6))     # -> 0.7162978701990246
//! math.tanh(3 * abs(0.5 - 0.75))    # -> 0.6351489523872873
//! # new_weight = weight * init_weight + (1 - weight) * current_weight, init 0.5, current 2.0
//! w = math.tanh(0.9); w * 0.5 + (1 - w) * 2.0                          # -> 0.9255531947014632
//! ```

mod common;

use candle_core::{Device, Tensor};
use modbal::core::{EvalOutputs, Method, MultimodalModel, RunContext};
use modbal::encoders::{FusionConfig, MultimodalNet};
use modbal::methods::dnr::{
    feature_purity, kmeans, minmax_scale, purity, soft_reinit, strength, Dnr, DnrConfig,
    KMeansOptions,
};
use modbal::tensors::SeededRng;
use std::collections::BTreeMap;

fn read(d: &std::path::Path) -> String {
    std::fs::read_to_string(d.join("metrics.jsonl")).unwrap()
}

fn opts() -> KMeansOptions {
    KMeansOptions {
        n_init: 10,
        max_iter: 300,
        tol: 1e-4,
    }
}

/// Three well-separated blobs of four points each (blob b around (10b, −10b)).
fn blobs() -> Vec<Vec<f64>> {
    let mut x = Vec::new();
    for b in 0..3 {
        for i in 0..4 {
            let d = 0.1 * i as f64;
            x.push(vec![10.0 * b as f64 + d, -10.0 * b as f64 - d]);
        }
    }
    x
}

// ---------------------------------------------------------------- the maths

/// Purity against the official `purity_score` (Python numbers in the header).
#[test]
fn purity_matches_the_official_score() {
    let y = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0];
    let c = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
    assert!((purity(&y, &c) - 0.6666666666666666).abs() < 1e-15);
    let y = [0, 1, 2, 0, 1, 2, 0, 1, 2, 3];
    let c = [5, 5, 5, 7, 7, 1, 1, 1, 1, 1];
    assert!((purity(&y, &c) - 0.4).abs() < 1e-15);
    // One cluster per label: 1; all in one cluster: the majority share.
    assert_eq!(purity(&[0, 1, 2, 1], &[4, 3, 2, 3]), 1.0);
    assert_eq!(purity(&[0, 1, 1, 1], &[0, 0, 0, 0]), 0.75);
}

/// `α = tanh(λ|P_D − P_V|)` against the official `reinit_score` (λ = 3).
#[test]
fn strength_matches_the_official_weight() {
    assert!((strength(3.0, 0.9, 0.6) - 0.7162978701990246).abs() < 1e-15);
    assert!((strength(3.0, 0.5, 0.75) - 0.6351489523872873).abs() < 1e-15);
    assert_eq!(strength(3.0, 0.7, 0.7), 0.0);
    assert_eq!(strength(0.0, 1.0, 0.0), 0.0);
}

/// `θ ← (1 − α)θ + αθ_init` against the official `reinit` arithmetic.
#[test]
fn soft_reinit_is_the_convex_combination() {
    let theta = candle_core::Var::from_tensor(&Tensor::new(&[2.0f32, -1.0], &Device::Cpu).unwrap())
        .unwrap();
    let init = Tensor::new(&[0.5f32, 1.0], &Device::Cpu).unwrap();
    let a = 0.9f64.tanh();
    soft_reinit(&theta, &init, a).unwrap();
    let got = common::v64(theta.as_tensor());
    assert!((got[0] - 0.9255531947014632).abs() < 1e-6, "{got:?}");
    assert!((got[1] - (a - (1.0 - a))).abs() < 1e-6, "{got:?}");
    // α = 1 resets to θ_init, α = 0 keeps θ.
    soft_reinit(&theta, &init, 1.0).unwrap();
    assert_eq!(common::v64(theta.as_tensor()), vec![0.5, 1.0]);
    soft_reinit(
        &theta,
        &Tensor::new(&[9.0f32, 9.0], &Device::Cpu).unwrap(),
        0.0,
    )
    .unwrap();
    assert_eq!(common::v64(theta.as_tensor()), vec![0.5, 1.0]);
}

/// MinMaxScaler(−1, 1) per column; a constant column maps to −1 (scikit-learn's zero-range
/// handling): `[[1, 2], [3, 2], [5, 2]] → [[−1, −1], [0, −1], [1, −1]]`.
#[test]
fn minmax_scaling_matches_the_closed_form() {
    let mut x = vec![vec![1.0, 2.0], vec![3.0, 2.0], vec![5.0, 2.0]];
    minmax_scale(&mut x);
    assert_eq!(x, vec![vec![-1.0, -1.0], vec![0.0, -1.0], vec![1.0, -1.0]]);
}

/// k-means finds well-separated blobs (same seed ⇒ same assignment), so the purity of a
/// labelling is its closed form (8/12 for the header's labels).
#[test]
fn kmeans_recovers_separated_blobs() {
    let x = blobs();
    let (c, inertia) = kmeans(&x, 3, &opts(), &mut SeededRng::new(1)).unwrap();
    for b in 0..3 {
        let first = c[4 * b];
        assert!(c[4 * b..4 * b + 4].iter().all(|&k| k == first), "{c:?}");
    }
    assert_ne!(c[0], c[4]);
    assert_ne!(c[4], c[8]);
    assert_ne!(c[0], c[8]);
    // Inertia: per blob Σ_i 2·(0.1 i − 0.15)² = 2·(0.0225 + 0.0025 + 0.0025 + 0.0225) = 0.1.
    assert!((inertia - 0.3).abs() < 1e-9, "{inertia}");
    let (c2, _) = kmeans(&x, 3, &opts(), &mut SeededRng::new(1)).unwrap();
    assert_eq!(c, c2);
    let y = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0];
    let p = feature_purity(x, &y, 3, true, &opts(), &mut SeededRng::new(2)).unwrap();
    assert!((p - 8.0 / 12.0).abs() < 1e-15);
}

/// k is capped at the row count; bad features are errors, not panics.
#[test]
fn kmeans_edge_cases_are_handled() {
    let x = vec![vec![0.0], vec![1.0]];
    let (c, inertia) = kmeans(&x, 6, &opts(), &mut SeededRng::new(0)).unwrap();
    assert_ne!(c[0], c[1]);
    assert_eq!(inertia, 0.0);
    assert!(kmeans(&[], 3, &opts(), &mut SeededRng::new(0)).is_err());
    let err = kmeans(&[vec![f64::NAN]], 1, &opts(), &mut SeededRng::new(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-finite"), "{err}");
    let err = feature_purity(
        vec![vec![0.0]],
        &[0, 1],
        2,
        true,
        &opts(),
        &mut SeededRng::new(0),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("1 feature rows for 2 labels"), "{err}");
}

/// The diagnosis epochs: the official 20, 40, 60 of 90, scaled to the run, never the first
/// or the last epoch.
#[test]
fn diagnosis_epochs_follow_the_official_schedule() {
    let c = DnrConfig::default();
    assert_eq!(c.reinit_epochs(90), vec![20, 40, 60]);
    assert_eq!(c.reinit_epochs(6), vec![1, 3, 4]); // round(1.33), round(2.67), round(4)
    assert_eq!(c.reinit_epochs(2), Vec::<usize>::new()); // 0, 0.89→1 = last, 1.33→1 = last
    let lit = DnrConfig {
        reinit_every: 2,
        reinit_num: 10,
        schedule_epochs: 0,
        ..Default::default()
    };
    assert_eq!(lit.reinit_epochs(9), vec![2, 4, 6]); // 8 is the last epoch
}

// ---------------------------------------------------------------- the hooks

fn net(m: usize) -> MultimodalNet {
    common::tiny_mlp_net(m, &FusionConfig::Concat, &mut SeededRng::new(3))
}

fn encoder_values(net: &MultimodalNet) -> BTreeMap<String, Vec<f64>> {
    net.params()
        .trainable()
        .into_iter()
        .map(|(n, v)| (n, common::v64(v.as_tensor())))
        .collect()
}

/// One diagnosis through the hooks on an `m`-modality net whose audio carries the label:
/// returns (θ_init, θ before the re-initialisation, θ after, the epoch's log).
#[allow(clippy::type_complexity)]
fn diagnose_once(
    m: usize,
) -> (
    BTreeMap<String, Vec<f64>>,
    BTreeMap<String, Vec<f64>>,
    BTreeMap<String, Vec<f64>>,
    serde_json::Map<String, serde_json::Value>,
) {
    let net = net(m);
    let mut rng = SeededRng::new(9);
    let train = common::audio_label_batch(m, 30, &mut rng);
    let val = common::audio_label_batch(m, 30, &mut rng);
    let cfg = DnrConfig {
        reinit_every: 1,
        reinit_num: 1,
        schedule_epochs: 0,
        ..Default::default()
    };
    let mut method = Dnr::new(cfg).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    method.on_epoch_start(&net, &mut ctx).unwrap();
    let init = encoder_values(&net);
    // Training moved every parameter away from θ_init.
    for (i, (_, v)) in net.params().trainable().into_iter().enumerate() {
        v.set(&(v.as_tensor() + 0.05 * (i as f64 + 1.0)).unwrap())
            .unwrap();
    }
    method.on_epoch_end(&net, &mut ctx).unwrap();
    let log0 = ctx.log.take();
    assert!(log0.get("alpha").is_none(), "epoch 0 diagnoses nothing");
    ctx.epoch = 1;
    method.on_epoch_start(&net, &mut ctx).unwrap();
    let out = net.forward_t(&train.inputs, true).unwrap();
    method.after_step(&net, &train, &out, &mut ctx).unwrap();
    let vo = net.forward_t(&val.inputs, false).unwrap();
    let eval = EvalOutputs {
        sample_ids: val.sample_ids.clone(),
        labels: val.labels.to_vec1::<u32>().unwrap(),
        fused_logits: vo.fused_logits.clone(),
        per_modality_logits: vo.per_modality_logits.clone(),
        features: vo.features.clone(),
    };
    method.on_validation(&net, &eval, &mut ctx).unwrap();
    let before = encoder_values(&net);
    method.on_epoch_end(&net, &mut ctx).unwrap();
    (init, before, encoder_values(&net), ctx.log.take())
}

/// Each encoder moves to `(1 − α_m)θ + α_m θ_init` with `α_m = tanh(3|P_D − P_V|)` from its
/// logged purities; the head is untouched; the label-carrying audio (purity equal on both
/// sets: same class shares, same features per class) has α = 0 and stays.
#[test]
fn diagnosis_softly_reinitialises_each_encoder_by_its_purity_gap() {
    let (init, before, after, log) = diagnose_once(2);
    let f = |k: &str, m: &str| log[k][m].as_f64().unwrap();
    for m in ["audio", "visual"] {
        let (pt, pv) = (f("purity_train", m), f("purity_val", m));
        // Purities are vote shares of 30 samples.
        assert!(((pt * 30.0).round() - pt * 30.0).abs() < 1e-9, "{pt}");
        assert!((f("gap", m) - (pt - pv).abs()).abs() < 1e-15);
        assert!((f("alpha", m) - (3.0 * (pt - pv).abs()).tanh()).abs() < 1e-15);
    }
    assert_eq!(f("alpha", "audio"), 0.0);
    assert_eq!(log["reinits"].as_f64(), Some(1.0));
    let mut checked = 0;
    for (name, th) in &before {
        let a = if name.starts_with("encoder.audio") {
            f("alpha", "audio")
        } else if name.starts_with("encoder.visual") {
            f("alpha", "visual")
        } else {
            0.0 // the head is not re-initialised
        };
        for ((t, i), n) in th.iter().zip(&init[name]).zip(&after[name]) {
            let want = (1.0 - a) * t + a * i;
            assert!((n - want).abs() < 1e-5, "{name}: {n} vs {want} (α {a})");
        }
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
    // dist_init is ‖θ − θ_init‖ of each encoder after the re-initialisation.
    let d: f64 = after
        .iter()
        .filter(|(n, _)| n.starts_with("encoder.visual"))
        .flat_map(|(n, v)| v.iter().zip(&init[n]).map(|(a, b)| (a - b).powi(2)))
        .sum::<f64>()
        .sqrt();
    assert!((f("dist_init", "visual") - d).abs() < 1e-4 * d.max(1.0));
}

/// Three modalities: every encoder is diagnosed and re-initialised by its own gap.
#[test]
fn three_modalities_are_diagnosed_alike() {
    let (_, before, after, log) = diagnose_once(3);
    for key in ["purity_train", "purity_val", "gap", "alpha", "dist_init"] {
        assert_eq!(log[key].as_object().unwrap().len(), 3, "{key}");
    }
    let a = log["alpha"]["text"].as_f64().unwrap();
    let moved = before
        .iter()
        .filter(|(n, _)| n.starts_with("encoder.text"))
        .any(|(n, v)| v != &after[n]);
    assert_eq!(moved, a > 0.0, "text α {a}");
}

/// Bad options are errors naming the key.
#[test]
fn bad_options_are_clear_errors() {
    for (k, v, want) in [
        ("lambda", "-1.0", "lambda"),
        ("reinit_every", "0", "reinit_every"),
        ("kmeans_init", "0", "kmeans_init"),
        ("clusters", "1", "clusters"),
        ("kmeans_tol", "nan", "kmeans_tol"),
        ("lambdaa", "1.0", "lambdaa"),
    ] {
        let t: toml::Table = toml::from_str(&format!("{k} = {v}")).unwrap();
        let err = common::build_method("dnr", &t).unwrap_err().to_string();
        assert!(err.contains(want), "{k}: {err}");
    }
}

/// A checkpoint without θ_init past epoch 0 is an error, not a silent re-anchoring.
#[test]
fn missing_initial_weights_after_epoch_zero_is_an_error() {
    let net = net(2);
    let mut m = Dnr::new(DnrConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 10);
    ctx.epoch = 4;
    m.load_state_tensors(&BTreeMap::new()).unwrap();
    let err = m.on_epoch_start(&net, &mut ctx).unwrap_err().to_string();
    assert!(err.contains("θ_init"), "{err}");
}

// ---------------------------------------------------------------- runs

fn run(out: &std::path::Path, seed: u64, epochs: usize, extra: &[&str]) -> modbal::RunOutcome {
    common::run_method(out, "dnr", seed, epochs, extra)
}

/// A 6-epoch run diagnoses after epochs 1, 3, 4 (20, 40, 60 of 90 scaled) and logs the mechanism.
#[test]
fn run_diagnoses_at_the_scaled_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), 1, 6, &[]);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 6);
    let mut diagnosed = Vec::new();
    for r in &train {
        assert!(!r.method["dist_init"].is_null(), "{:?}", r.method);
        if !r.method.get("alpha").is_none_or(|v| v.is_null()) {
            diagnosed.push(r.epoch);
            for key in ["purity_train", "purity_val", "gap"] {
                assert_eq!(r.method[key].as_object().unwrap().len(), 2, "{key}");
            }
        }
    }
    assert_eq!(diagnosed, vec![1, 3, 4]);
    let reinits: Vec<f64> = train
        .iter()
        .map(|r| r.method["reinits"].as_f64().unwrap())
        .collect();
    assert_eq!(reinits, vec![0.0, 1.0, 1.0, 2.0, 3.0, 3.0]);
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.4);
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = run(
        a.path(),
        5,
        3,
        &["method.schedule_epochs=0", "method.reinit_every=1"],
    );
    let rb = run(
        b.path(),
        5,
        3,
        &["method.schedule_epochs=0", "method.reinit_every=1"],
    );
    assert_eq!(read(&ra.run_dir), read(&rb.run_dir));
}

/// A run stopped before its diagnoses and resumed writes the same metrics as an uninterrupted
/// one: θ_init travels in the checkpoint's method tensors (a resume that re-took it from the
/// resumed weights would re-initialise toward them and differ).
#[test]
fn resumed_runs_match_uninterrupted_ones() {
    let sets = ["method.name=dnr".to_string()];
    common::assert_resume_matches(&sets, 3, 6, 2, "dnr");
}

/// Three modalities end to end (synth-vec with its text modality).
#[test]
fn three_modality_run_trains() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), 1, 4, &["dataset.third_modality=true"]);
    let diag = o
        .history
        .iter()
        .find(|r| r.split == "train" && r.method.contains_key("alpha"))
        .expect("a diagnosis epoch");
    assert_eq!(diag.method["alpha"].as_object().unwrap().len(), 3);
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.4);
}

/// The presets carry the official options; the official schedule resolves to epochs 20, 40, 60.
#[test]
fn presets_carry_the_official_choices() {
    let p = modbal::presets::find("dnr/crema-d").unwrap();
    assert_eq!(p.method(), Some("dnr"));
    let get = |k: &str| p.values.iter().find(|v| v.key == k).unwrap().value;
    assert_eq!(get("method.lambda"), "3.0");
    assert_eq!(get("train.epochs"), "90");
    assert_eq!(get("train.optimizer.lr"), "0.002");
    for name in ["dnr/kinetics-sounds", "dnr/ucf101", "dnr/ave"] {
        assert_eq!(modbal::presets::find(name).unwrap().method(), Some("dnr"));
    }
    let b = common::build_method("dnr", &toml::Table::new()).unwrap();
    assert_eq!(b.resolved["reinit_every"].as_integer(), Some(20));
    assert_eq!(b.fusion, FusionConfig::Concat);
}
