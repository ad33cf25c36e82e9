//! `g-blending` (Wang, Tran & Feiszli, "What Makes Training Multi-modal Classification Networks
//! Hard?", CVPR 2020; no official release; BalanceBenchmark's port
//! `balancemm/trainer/GBlending_trainer.py` cross-checked): the weight formula against its
//! closed form, the blended loss, the super-epoch bookkeeping (online / offline), errors, resume
//! and short runs through the registry.
//!
//! Reference numbers (plain Python 3, `w_k = max(ΔG_k, 0) / (ΔO_k² + 1e-12)`, normalised):
//!
//! ```python
//! pre_t = [1.0, 1.2, 1.5]; pre_v = [1.1, 1.3, 1.6]; now_t = [0.4, 0.6, 1.2]; now_v = [0.7, 0.9, 1.4]
//! dG = [0.4, 0.4, 0.2]; dO = [0.2, 0.2, 0.1]       # (now_v − now_t) − (pre_v − pre_t)
//! w  = [0.25, 0.25, 0.5]                           # dG / dO² = [10, 10, 20] / 40
//! ```
//!
//! BalanceBenchmark's `abs(g / o**2)` on the same numbers gives the same weights (its `g` is
//! `now − pre`, the negative of ΔG, removed by `abs`); it differs only when a head's held-out
//! loss rose, which it weights by `|ΔG|` and modbal by 0.

mod common;

use candle_core::Device;
use modbal::core::{EvalOutputs, Method, MultimodalModel, RunContext};
use modbal::encoders::FusionConfig;
use modbal::methods::g_blending::{blend_weights, GBlendMode, GBlending, GBlendingConfig};
use modbal::tensors::SeededRng;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn weights_match_the_closed_form() {
    let (w, dg, d_o) = blend_weights(
        &[1.0, 1.2, 1.5],
        &[1.1, 1.3, 1.6],
        &[0.4, 0.6, 1.2],
        &[0.7, 0.9, 1.4],
    );
    let w = w.unwrap();
    for (got, want) in w.iter().zip([0.25, 0.25, 0.5]) {
        assert!(close(*got, want, 1e-9), "{w:?}");
    }
    for (got, want) in dg.iter().zip([0.4, 0.4, 0.2]) {
        assert!(close(*got, want, 1e-12));
    }
    for (got, want) in d_o.iter().zip([0.2, 0.2, 0.1]) {
        assert!(close(*got, want, 1e-12));
    }
    // A head whose held-out loss rose gets weight 0; if none generalised: no estimate.
    let (w, _, _) = blend_weights(&[1.0, 1.0], &[1.0, 1.0], &[0.5, 0.5], &[0.8, 1.2]);
    let w = w.unwrap();
    assert_eq!(w[1], 0.0);
    assert!(close(w[0], 1.0, 1e-12));
    let (w, _, _) = blend_weights(&[1.0, 1.0], &[1.0, 1.0], &[0.5, 0.5], &[1.1, 1.2]);
    assert!(w.is_none());
}

/// The loss is `Σ_k w_k CE(z_k)` over the fused logits and the per-modality logits, with the
/// initial uniform weights `1/(M+1)`.
#[test]
fn loss_is_the_weighted_sum_of_head_cross_entropies() {
    let mut rng = SeededRng::new(2);
    let net = common::tiny_mlp_net(2, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(2, 6, &mut rng);
    let out = net.forward_t(&batch.inputs, true).unwrap();
    let mut method = GBlending::new(GBlendingConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
    let ce = |z: &candle_core::Tensor| {
        let rows = common::rows(z);
        let y = batch.labels.to_vec1::<u32>().unwrap();
        rows.iter()
            .zip(&y)
            .map(|(r, &y)| {
                let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                m + r.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - r[y as usize]
            })
            .sum::<f64>()
            / rows.len() as f64
    };
    let want =
        (ce(&out.fused_logits) + ce(&out.per_modality_logits[0]) + ce(&out.per_modality_logits[1]))
            / 3.0;
    let got = loss.total.to_scalar::<f32>().unwrap() as f64;
    assert!(close(got, want, 1e-5), "{got} vs {want}");
    assert_eq!(loss.parts.len(), 3);
    assert!(loss.parts.contains_key("fused") && loss.parts.contains_key("audio"));
}

/// Drives the epoch hooks with given validation logits: the weights change at the last epoch of
/// each super-epoch (online) or only at the first one (offline), by the closed form.
#[test]
fn super_epochs_update_the_weights() {
    let mut rng = SeededRng::new(4);
    let net = common::tiny_mlp_net(2, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(2, 6, &mut rng);
    let out = net.forward_t(&batch.inputs, true).unwrap();
    // Validation outputs whose per-head CE we control: zeros (CE = ln 3) or one-hot logits
    // scaled per head (fused, audio, visual), so that every head generalises by its own amount.
    let labels = batch.labels.to_vec1::<u32>().unwrap();
    let one_hot = |a: f32| {
        let v: Vec<f32> = labels
            .iter()
            .flat_map(|&y| (0..3).map(move |c| if c == y { a } else { 0.0 }))
            .collect();
        candle_core::Tensor::from_vec(v, (6, 3), &Device::Cpu).unwrap()
    };
    let val = |a: [f32; 3]| EvalOutputs {
        sample_ids: (0..6).collect(),
        labels: labels.clone(),
        fused_logits: one_hot(a[0]),
        per_modality_logits: vec![one_hot(a[1]), one_hot(a[2])],
        features: vec![],
    };
    for mode in [GBlendMode::Online, GBlendMode::Offline] {
        let mut method = GBlending::new(GBlendingConfig {
            mode,
            super_epoch: 2,
        })
        .unwrap();
        let mut ctx = RunContext::new(0, Device::Cpu, 4);
        method.on_stage_start(&net, &mut ctx).unwrap();
        let mut history = vec![];
        for (epoch, a) in [[0.0; 3], [5.0, 3.0, 2.0], [0.0; 3], [2.0, 5.0, 3.0]]
            .into_iter()
            .enumerate()
        {
            ctx.epoch = epoch;
            method.loss(&net, &batch, &out, &mut ctx).unwrap();
            method.on_validation(&net, &val(a), &mut ctx).unwrap();
            method.on_epoch_end(&net, &mut ctx).unwrap();
            let log = ctx.log.take();
            history.push((method.state_ref().weights.clone(), log));
        }
        // Epoch 0: still uniform; epoch 1 ends the first super-epoch.
        assert_eq!(history[0].0, vec![1.0 / 3.0; 3]);
        assert!(history[0].1.get("dG").is_none());
        let log1 = &history[1].1;
        let heads = ["fused", "audio", "visual"];
        let get = |log: &serde_json::Map<String, serde_json::Value>, key: &str| -> Vec<f64> {
            heads
                .iter()
                .map(|h| log[key][*h].as_f64().unwrap())
                .collect()
        };
        let (t0, v0, t1, v1) = (
            get(&history[0].1, "train_ce"),
            get(&history[0].1, "val_ce"),
            get(log1, "train_ce"),
            get(log1, "val_ce"),
        );
        let (w, _, _) = blend_weights(&t0, &v0, &t1, &v1);
        let w = w.expect("every head generalised");
        assert_eq!(log1["updated"].as_f64(), Some(1.0), "{mode:?}");
        for k in 0..3 {
            assert!(close(history[1].0[k], w[k], 1e-12), "{mode:?}");
        }
        assert!((w[0] - w[2]).abs() > 1e-3, "non-uniform: {w:?}");
        // Second super-epoch (epochs 2-3): online re-estimates, offline keeps the first.
        let (t2, v2, t3, v3) = (
            get(&history[2].1, "train_ce"),
            get(&history[2].1, "val_ce"),
            get(&history[3].1, "train_ce"),
            get(&history[3].1, "val_ce"),
        );
        let (w2, _, _) = blend_weights(&t2, &v2, &t3, &v3);
        let w2 = w2.expect("every head generalised");
        assert!((w2[0] - w[0]).abs() > 1e-3, "the two estimates differ");
        match mode {
            GBlendMode::Online => {
                for k in 0..3 {
                    assert!(close(history[3].0[k], w2[k], 1e-12));
                }
            }
            GBlendMode::Offline => assert_eq!(history[3].0, history[1].0),
        }
    }
}

#[test]
fn one_modality_and_bad_options_are_errors() {
    let mut rng = SeededRng::new(0);
    let net = common::tiny_mlp_net(1, &FusionConfig::Concat, &mut rng);
    let mut method = GBlending::new(GBlendingConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let e = method
        .on_stage_start(&net, &mut ctx)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("g-blending") && e.contains("two modalities"),
        "{e}"
    );
    let b = common::build_method("g-blending", &toml::Table::new()).unwrap();
    assert_eq!(b.resolved["mode"].as_str(), Some("online"));
    assert_eq!(b.resolved["super_epoch"].as_integer(), Some(10));
    for (key, value) in [
        ("super_epoch", toml::Value::Integer(1)),
        ("mode", toml::Value::String("both".into())),
        ("super_epochs", toml::Value::Integer(3)),
    ] {
        let e = common::option_error("g-blending", key, value);
        assert!(e.contains(key) || e.contains("both"), "{key}: {e}");
    }
}

#[test]
fn runs_log_the_weights_and_learn() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(dir.path(), "g-blending", 0, 4, &["method.super_epoch=2"]);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 4);
    for r in &train {
        eprintln!(
            "g-blending {}: w {} dG {:?}",
            r.epoch,
            r.method["w"],
            r.method.get("dG")
        );
        let w = r.method["w"].as_object().unwrap();
        assert_eq!(w.len(), 3);
        let s: f64 = w.values().map(|v| v.as_f64().unwrap()).sum();
        assert!(close(s, 1.0, 1e-9), "{s}");
    }
    assert!(train[1].method.get("dG").is_some());
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.5);
}

#[test]
fn resumed_runs_match_uninterrupted_ones() {
    common::assert_resume_matches(
        &[
            "method.name=g-blending".to_string(),
            "method.super_epoch=2".to_string(),
        ],
        3,
        4,
        1,
        "g_blending",
    );
}

#[test]
fn three_modality_runs_train() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(
        dir.path(),
        "g-blending",
        1,
        2,
        &["dataset.third_modality=true", "method.super_epoch=2"],
    );
    let last = o.history.iter().rfind(|r| r.split == "train").unwrap();
    assert_eq!(last.method["w"].as_object().unwrap().len(), 4);
}
