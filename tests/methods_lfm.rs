//! `lfm` (Yang, Wan, Jiang & Xu, "Facilitating Multimodal Classification via Dynamically
//! Learning Modality Gap", NeurIPS 2024; official code njustkmg/NeurIPS24-LFM): each mechanism
//! against its closed form computed here independently, the official arithmetic, resume, three
//! modalities, bad input and short runs through the registry.
//!
//! Reference numbers were computed with plain Python 3 (`math` only; neither numpy nor torch is
//! installed on the development machine), restating the official `Alignment`, the fused
//! `criterion(0.5 * o_v + 0.5 * o_a, y)` and `getAlpha_Learnable_Fitted`:
//!
//! ```python
//! import math
//! def sm(r): m = max(r); e = [math.exp(x - m) for x in r]; s = sum(e); return [x / s for x in e]
//! def align(P, Q):   # 0.5*(kl_div(p.log(), m, 'batchmean') + kl_div(q.log(), m, 'batchmean'))
//!     t = 0
//!     for zp, zq in zip(P, Q):
//!         p, q = sm(zp), sm(zq); m = [(a + b) / 2 for a, b in zip(p, q)]
//!         t += 0.5 * (sum(mi * (math.log(mi) - math.log(pi)) for mi, pi in zip(m, p))
//!                     + sum(mi * (math.log(mi) - math.log(qi)) for mi, qi in zip(m, q)))
//!     return t / len(P)
//! def ce(Z, y): return sum(-math.log(sm(z)[c]) for z, c in zip(Z, y)) / len(Z)
//! P = [[1, 0, -1], [0.5, 0.5, 0]]; Q = [[0, 1, 0], [2, 0, 0]]; R = [[0, 0, 3], [1, -1, 0]]; y = [0, 2]
//! align(P, Q)                                                      # -> 0.10744536583792519
//! ce([[(a + b) / 2 for a, b in zip(p, q)] for p, q in zip(P, Q)], y)   # -> 1.3077118410214381
//! (align(P, Q) + align(P, R) + align(Q, R)) / 3                    # -> 0.21078251450553057
//! ce([[(a + b + c) / 3 for a, b, c in zip(p, q, r)] for p, q, r in zip(P, Q, R)], y)
//!                                                                  # -> 1.421703151926113
//! c = [2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08,
//!      -5.39717505e-11]
//! f = lambda e: sum(ci * e ** i for i, ci in enumerate(c))
//! f(0), f(7), f(150), f(50)   # -> 0.204623704, 0.23318130934309797, 0.8213142121562482,
//!                             #    0.43668069671874993
//! ```

mod common;

use candle_core::{Device, Tensor};
use modbal::core::{Method, MultimodalModel, RunContext};
use modbal::encoders::{FusionConfig, MultimodalNet};
use modbal::methods::lfm::{alignment, fitted_alpha_cls, hvp, losses, Lfm, LfmConfig, LfmStrategy};
use modbal::tensors::SeededRng;

fn t(rows: &[[f32; 3]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), 3), &Device::Cpu).unwrap()
}

fn scalar(x: &Tensor) -> f64 {
    common::v64(x)[0]
}

fn read(d: &std::path::Path) -> String {
    std::fs::read_to_string(d.join("metrics.jsonl")).unwrap()
}

// ---------------------------------------------------------------- the maths

/// The official `Alignment` (KL(m̄‖p), KL(m̄‖q), batch mean) and the CE of the mean logits.
#[test]
fn losses_match_the_official_arithmetic() {
    let p = t(&[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]);
    let q = t(&[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]);
    let r = t(&[[0.0, 0.0, 3.0], [1.0, -1.0, 0.0]]);
    let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    assert!((scalar(&alignment(&p, &q).unwrap()) - 0.10744536583792519).abs() < 1e-6);
    let (cls, align) = losses(&[p.clone(), q.clone()], &y).unwrap();
    assert!((scalar(&cls) - 1.3077118410214381).abs() < 1e-6);
    assert!((scalar(&align) - 0.10744536583792519).abs() < 1e-6);
    // Three modalities: the mean over the three pairs, CE of the mean of the three logits.
    let (cls, align) = losses(&[p.clone(), q, r], &y).unwrap();
    assert!((scalar(&cls) - 1.421703151926113).abs() < 1e-6);
    assert!((scalar(&align) - 0.21078251450553057).abs() < 1e-6);
    // Identical predictions do not diverge.
    assert!(scalar(&alignment(&p, &p).unwrap()).abs() < 1e-7);
    // One modality has no pair: a clear error.
    let err = losses(&[p], &y).unwrap_err().to_string();
    assert!(err.contains("at least two modalities"), "{err}");
}

/// The official fitted polynomial, and its scaling to the run (epoch 3 of 12 = 50 of 200).
#[test]
fn fitted_schedule_matches_the_official_polynomial() {
    assert!((fitted_alpha_cls(0.0) - 0.204623704).abs() < 1e-15);
    assert!((fitted_alpha_cls(7.0) - 0.23318130934309797).abs() < 1e-12);
    assert!((fitted_alpha_cls(150.0) - 0.8213142121562482).abs() < 1e-12);
    let m = Lfm::new(LfmConfig::default()).unwrap();
    let (c, a) = m.weights_at(3, 12);
    assert!((c - 0.43668069671874993).abs() < 1e-12);
    assert!((a - (1.0 - 0.43668069671874993)).abs() < 1e-12);
    // A run as long as the schedule uses the official epochs.
    assert!((m.weights_at(7, 200).0 - 0.23318130934309797).abs() < 1e-12);
    let fixed = Lfm::new(LfmConfig {
        strategy: LfmStrategy::Fixed,
        alpha_cls: 0.3,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(fixed.weights_at(5, 10), (0.3, 0.7));
}

/// The learned step size halves every 20 schedule epochs (official `epoch % 20 == 0`).
#[test]
fn learned_step_size_halves_every_twenty_schedule_epochs() {
    let c = LfmConfig::default();
    assert_eq!(c.lr_at(19, 200), 1e-4);
    assert_eq!(c.lr_at(20, 200), 5e-5);
    assert_eq!(c.lr_at(45, 200), 2.5e-5);
    assert_eq!(c.lr_at(2, 20), 5e-5); // 2 of 20 = 20 of 200
}

// ---------------------------------------------------------------- the hooks

fn net(m: usize) -> MultimodalNet {
    common::tiny_mlp_net(m, &FusionConfig::Sum, &mut SeededRng::new(3))
}

/// The loss through the hook is `s·(α_cls·CE(mean z) + α_align·A)`, recomputed in f64 from the
/// net's logits.
#[test]
fn loss_is_the_weighted_sum_of_the_two_losses() {
    let net = net(2);
    let batch = common::audio_label_batch(2, 12, &mut SeededRng::new(4));
    let mut m = Lfm::new(LfmConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 12);
    ctx.epoch = 3;
    m.on_epoch_start(&net, &mut ctx).unwrap();
    let out = m.forward(&net, &batch, &mut ctx).unwrap();
    let l = m.loss(&net, &batch, &out, &mut ctx).unwrap();
    let za = common::rows(&out.per_modality_logits[0]);
    let zv = common::rows(&out.per_modality_logits[1]);
    let y: Vec<usize> = batch
        .labels
        .to_vec1::<u32>()
        .unwrap()
        .iter()
        .map(|c| *c as usize)
        .collect();
    let sm = |r: &[f64]| -> Vec<f64> {
        let mx = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = r.iter().map(|x| (x - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    };
    let n = y.len() as f64;
    let (mut ce, mut al) = (0.0, 0.0);
    for i in 0..y.len() {
        let mean: Vec<f64> = za[i]
            .iter()
            .zip(&zv[i])
            .map(|(a, b)| (a + b) / 2.0)
            .collect();
        ce -= sm(&mean)[y[i]].ln() / n;
        let (p, q) = (sm(&za[i]), sm(&zv[i]));
        for k in 0..p.len() {
            let mk = (p[k] + q[k]) / 2.0;
            al += 0.5 * (mk * (mk.ln() - p[k].ln()) + mk * (mk.ln() - q[k].ln())) / n;
        }
    }
    let a = fitted_alpha_cls(50.0);
    let want = 2.0 * (a * ce + (1.0 - a) * al);
    assert!(
        (scalar(&l.total) - want).abs() < 1e-5 * want.abs().max(1.0),
        "{want}"
    );
    assert!((scalar(&l.parts["cls"]) - ce).abs() < 1e-5);
    assert!((scalar(&l.parts["align"]) - al).abs() < 1e-6);
}

/// The central-difference HVP satisfies `vᵀ(Hv) = d²/dt² L_total(θ + t·v)` at t = 0, the
/// latter from loss values alone (a second difference, computed here); parameters restored.
#[test]
fn hvp_is_the_hessian_along_the_classification_gradient() {
    let net = net(2);
    let batch = common::audio_label_batch(2, 12, &mut SeededRng::new(5));
    let before: Vec<Vec<f64>> = net
        .params()
        .trainable()
        .iter()
        .map(|(_, v)| common::v64(v.as_tensor()))
        .collect();
    let a = 0.4;
    let (v, hv) = hvp(&net, &batch, a, 1e-2).unwrap();
    let after: Vec<Vec<f64>> = net
        .params()
        .trainable()
        .iter()
        .map(|(_, v)| common::v64(v.as_tensor()))
        .collect();
    assert_eq!(before, after, "parameters restored");
    let mut vhv = 0.0;
    let mut vv = 0.0;
    for ((nv, tv), (nh, th)) in v.iter().zip(&hv) {
        assert_eq!(nv, nh);
        vhv += common::v64(tv)
            .iter()
            .zip(common::v64(th))
            .map(|(x, y)| x * y)
            .sum::<f64>();
        vv += common::v64(tv).iter().map(|x| x * x).sum::<f64>();
    }
    // L_total(θ + t·v/‖v‖) at t = −h, 0, h.
    let vars = net.params().trainable();
    let originals: Vec<Tensor> = vars
        .iter()
        .map(|(_, v)| v.as_tensor().copy().unwrap())
        .collect();
    let dir: std::collections::BTreeMap<_, _> = v.iter().cloned().collect();
    let norm = vv.sqrt();
    let loss_at = |tt: f64| -> f64 {
        for ((n, var), o) in vars.iter().zip(&originals) {
            let new = match dir.get(n) {
                Some(d) => (o + (d * (tt / norm)).unwrap()).unwrap(),
                None => o.clone(),
            };
            var.set(&new).unwrap();
        }
        let out = net.forward_t(&batch.inputs, false).unwrap();
        let (c, al) = losses(&out.per_modality_logits, &batch.labels).unwrap();
        (1.0 - a) * scalar(&c) + a * scalar(&al)
    };
    let h = 0.05;
    let second = (loss_at(h) - 2.0 * loss_at(0.0) + loss_at(-h)) / (h * h);
    for ((_, var), o) in vars.iter().zip(&originals) {
        var.set(o).unwrap();
    }
    let curvature = vhv / vv; // (v/‖v‖)ᵀ H (v/‖v‖)
    assert!(
        (curvature - second).abs() < 0.05 * second.abs().max(1e-3),
        "vᵀHv/‖v‖² {curvature} vs second difference {second}"
    );
}

/// The learned update through `train_step`: α_align moves by `−η·mean(h)` (h of the first
/// encoder weight tensor on the first half of the epoch's first batch), once per epoch.
#[test]
fn learned_update_moves_alpha_by_the_hypergradient() {
    let net = net(2);
    let batch = common::audio_label_batch(2, 12, &mut SeededRng::new(6));
    let cfg = LfmConfig {
        strategy: LfmStrategy::Learned,
        lr_alpha: 10.0,
        ..Default::default()
    };
    let mut m = Lfm::new(cfg.clone()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 4);
    m.on_epoch_start(&net, &mut ctx).unwrap();
    // The expected step, computed before the update at the same parameters.
    let half = modbal::core::Batch {
        inputs: batch
            .inputs
            .iter()
            .map(|t| t.narrow(0, 0, 6).unwrap())
            .collect(),
        labels: batch.labels.narrow(0, 0, 6).unwrap(),
        sample_ids: (0..6).collect(),
    };
    let h = m.hvp_entry(&net, &half).unwrap();
    let (_, hv) = hvp(&net, &half, 0.95, cfg.hvp_eps).unwrap();
    let first = net
        .params()
        .trainable()
        .into_iter()
        .find(|(n, v)| n.starts_with("encoder.audio") && v.rank() >= 2)
        .unwrap()
        .0;
    let hf = hv.iter().find(|(n, _)| *n == first).unwrap();
    let mean = common::v64(&hf.1).iter().sum::<f64>() / hf.1.elem_count() as f64;
    assert!(
        (h - mean).abs() < 1e-9 * mean.abs().max(1.0),
        "{h} vs {mean}"
    );
    let mut opt = modbal::tensors::Sgd::new(
        net.params().trainable(),
        modbal::tensors::SgdConfig {
            lr: 0.0,
            ..Default::default()
        },
    );
    m.train_step(&net, batch.clone(), &mut opt, &mut ctx)
        .unwrap();
    let want = (0.95 - 10.0 * h).clamp(0.05, 0.95);
    assert!(
        (m.weights().1 - want).abs() < 1e-12,
        "{:?} vs {want}",
        m.weights()
    );
    assert!((m.weights().0 - (1.0 - want)).abs() < 1e-12);
    // A second step of the same epoch does not move α again.
    m.train_step(&net, batch, &mut opt, &mut ctx).unwrap();
    assert!((m.weights().1 - want).abs() < 1e-12);
}

/// One modality is a clear error at the stage start.
#[test]
fn one_modality_is_an_error() {
    let net = net(1);
    let mut m = Lfm::new(LfmConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 2);
    let err = m.on_stage_start(&net, &mut ctx).unwrap_err().to_string();
    assert!(err.contains("at least two modalities"), "{err}");
}

/// Bad options are errors naming the key.
#[test]
fn bad_options_are_clear_errors() {
    for (k, v, want) in [
        ("alpha_cls", "1.5", "alpha_cls"),
        ("alpha_align_init", "0.99", "alpha_align_init"),
        ("lr_alpha", "0.0", "lr_alpha"),
        ("hvp_eps", "-1.0", "hvp_eps"),
        ("strategy", "\"heuristics\"", "heuristics"),
    ] {
        let t: toml::Table = toml::from_str(&format!("{k} = {v}")).unwrap();
        let err = common::build_method("lfm", &t).unwrap_err().to_string();
        assert!(err.contains(want), "{k}: {err}");
    }
    let b = common::build_method("lfm", &toml::Table::new()).unwrap();
    assert_eq!(b.fusion, FusionConfig::Sum);
    assert_eq!(b.resolved["strategy"].as_str(), Some("fitted"));
}

// ---------------------------------------------------------------- runs

fn run(out: &std::path::Path, seed: u64, epochs: usize, extra: &[&str]) -> modbal::RunOutcome {
    common::run_method(out, "lfm", seed, epochs, extra)
}

/// The default (fitted) run logs the scaled official α of every epoch.
#[test]
fn fitted_run_logs_the_scaled_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), 1, 4, &[]);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 4);
    for r in &train {
        let want = fitted_alpha_cls(r.epoch as f64 * 50.0);
        assert!((r.method["alpha_cls"].as_f64().unwrap() - want).abs() < 1e-12);
        assert!(r.method["loss.align"].as_f64().is_some(), "{:?}", r.method);
    }
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.4);
}

/// A learned run: each epoch's α_align = clip(previous − η_e·hvp_e) from the logged values.
#[test]
fn learned_run_follows_its_logged_hypergradients() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        dir.path(),
        2,
        3,
        &["method.strategy=\"learned\"", "method.lr_alpha=5.0"],
    );
    let c = LfmConfig {
        lr_alpha: 5.0,
        ..Default::default()
    };
    let mut prev = 0.95;
    let mut moved = false;
    for r in o.history.iter().filter(|r| r.split == "train") {
        let h = r.method["hvp"].as_f64().unwrap();
        let a = r.method["alpha_align"].as_f64().unwrap();
        let want = (prev - c.lr_at(r.epoch, 3) * h).clamp(0.05, 0.95);
        assert!((a - want).abs() < 1e-12, "epoch {}: {a} vs {want}", r.epoch);
        moved |= a != 0.95;
        prev = a;
    }
    assert!(moved, "α never moved");
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let set = ["method.strategy=\"learned\""];
    let ra = run(a.path(), 5, 2, &set);
    let rb = run(b.path(), 5, 2, &set);
    assert_eq!(read(&ra.run_dir), read(&rb.run_dir));
}

/// A learned run stopped after an epoch and resumed writes the same metrics (α_align is in the
/// checkpoint's method state).
#[test]
fn resumed_runs_match_uninterrupted_ones() {
    let sets = [
        "method.name=lfm".to_string(),
        "method.strategy=\"learned\"".to_string(),
        "method.lr_alpha=5.0".to_string(),
    ];
    common::assert_resume_matches(&sets, 3, 3, 1, "lfm");
}

/// Three modalities end to end (synth-vec with its text modality), both strategies (learned
/// from BalanceBenchmark's α_align = 0.05: the official 0.95 leaves α_cls = 0.05, too little
/// supervision to learn in four epochs).
#[test]
fn three_modality_runs_train() {
    for (strategy, init) in [("fitted", "0.95"), ("learned", "0.05")] {
        let dir = tempfile::tempdir().unwrap();
        let o = run(
            dir.path(),
            1,
            4,
            &[
                "dataset.third_modality=true",
                &format!("method.strategy=\"{strategy}\""),
                &format!("method.alpha_align_init={init}"),
            ],
        );
        assert_eq!(o.history[0].modality_acc.len(), 3);
        let acc = o.summary.as_ref().unwrap().test.fusion_acc;
        assert!(acc > 0.5, "{strategy}: {acc}");
    }
}

/// The presets carry the official protocol (crema-d) and UDI's (the others).
#[test]
fn presets_carry_the_official_choices() {
    let p = modbal::presets::find("lfm/crema-d").unwrap();
    assert_eq!(p.method(), Some("lfm"));
    let get = |k: &str| p.values.iter().find(|v| v.key == k).unwrap().value;
    assert_eq!(get("method.strategy"), "\"fitted\"");
    assert_eq!(get("train.epochs"), "200");
    assert_eq!(get("train.schedule.schedule.step_size"), "70");
    for name in ["lfm/kinetics-sounds", "lfm/cgmnist", "lfm/ucf101"] {
        assert_eq!(modbal::presets::find(name).unwrap().method(), Some("lfm"));
    }
}
