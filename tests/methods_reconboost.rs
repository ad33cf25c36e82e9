//! `reconboost` (Hua et al., "ReconBoost: Boosting Can Achieve Modality Reconcilement", ICML 2024;
//! official code huacong/ReconBoost): the stage plan, the boosting weights and the gradient of the
//! reconcilement loss against their closed forms, memory consolidation, the learned boost rate β,
//! the selection rule, resume, three modalities and runs through the registry.
//!
//! Reference numbers come from Python 3's `math` module (no torch here), restating the official
//! `train.py` phase-1 arithmetic: `q = softmax(β·ensemble_others)`, sample weight
//! `(w1 − w2·q_y)/C`, loss `mean(−(w1/C)·log p_y + (w2/C)·q_y·log p_y)`:
//!
//! ```python
//! import math
//! others = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]; y = [0, 2]; beta = 2.0; w1, w2, C = 5, 1, 3
//! for o, t in zip(others, y):
//!     e = [math.exp(beta * x) for x in o]; q = [x / sum(e) for x in e]
//!     print(q[t], (w1 - w2 * q[t]) / C)
//! # 0.8668133321973349 1.377728889267555
//! # 0.15536240349696362 1.6148791988343454
//! ```

mod common;

use candle_core::{DType, Device, Tensor, Var};
use modbal::core::{Batch, Method, MultimodalModel, MultimodalOutput, RunContext, StageSpec};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::params::MethodParams;
use modbal::methods::reconboost::{
    boost_weights, Memory, Phase, ReconBoost, ReconBoostConfig, BETA_MOMENTUM, BETA_WEIGHT_DECAY,
};
use modbal::tensors::SeededRng;

fn names(m: usize) -> Vec<String> {
    ["audio", "visual", "text"][..m]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn flat_net(m: usize) -> MultimodalNet {
    let specs: Vec<_> = names(m)
        .iter()
        .map(|n| ModalitySpec::new(n, EncoderConfig::Mlp { hidden: vec![] }, &[3]))
        .collect();
    MultimodalNet::new(
        &specs,
        &FusionConfig::Sum,
        3,
        &mut SeededRng::new(1),
        &Device::Cpu,
    )
    .unwrap()
}

fn t2(rows: &[[f64; 3]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_vec(flat, (rows.len(), 3), &Device::Cpu).unwrap()
}

fn softmax(r: &[f64]) -> Vec<f64> {
    let m = r.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = r.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

#[test]
fn the_plan_alternates_boost_and_rectify_rounds() {
    let cfg = ReconBoostConfig {
        boost_epochs: 4,
        rectify_epochs: 4,
        ..Default::default()
    };
    let plan = cfg.plan(16, &names(2)).unwrap();
    assert_eq!(
        plan,
        vec![
            (
                Phase::Boost {
                    round: 0,
                    modality: 0
                },
                4
            ),
            (Phase::Rectify { round: 0 }, 4),
            (
                Phase::Boost {
                    round: 1,
                    modality: 1
                },
                4
            ),
            (Phase::Rectify { round: 1 }, 4),
        ]
    );
    // 13 epochs of 1 + 1: six rounds, then one trailing rectification epoch.
    let d = ReconBoostConfig::default();
    let plan = d.plan(13, &names(3)).unwrap();
    assert_eq!(plan.len(), 13);
    let boosted: Vec<usize> = plan
        .iter()
        .filter_map(|(p, _)| match p {
            Phase::Boost { modality, .. } => Some(*modality),
            _ => None,
        })
        .collect();
    assert_eq!(boosted, vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(plan[12], (Phase::Rectify { round: 6 }, 1));
    assert_eq!(plan.iter().map(|(_, e)| e).sum::<usize>(), 13);
    // A boosting order by name; errors name the culprit.
    let rev = ReconBoostConfig {
        order: vec!["visual".into(), "audio".into()],
        ..Default::default()
    };
    assert_eq!(
        rev.plan(2, &names(2)).unwrap()[0].0,
        Phase::Boost {
            round: 0,
            modality: 1
        }
    );
    for (order, needle) in [
        (vec!["depth", "audio"], "depth"),
        (vec!["audio", "audio"], "twice"),
        (vec!["audio"], "every modality"),
    ] {
        let c = ReconBoostConfig {
            order: order.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let e = c.plan(4, &names(2)).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    let e = d.plan(4, &names(1)).unwrap_err().to_string();
    assert!(e.contains("alternates"), "{e}");
}

#[test]
fn boost_weights_match_the_official_arithmetic() {
    let others = t2(&[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]);
    let labels = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let (w, q) = boost_weights(&others, 2.0, &labels, 5.0, 1.0).unwrap();
    common::assert_close(
        &common::v64(&q),
        &[0.8668133321973349, 0.15536240349696362],
        1e-6,
    );
    common::assert_close(
        &common::v64(&w),
        &[1.377728889267555, 1.6148791988343454],
        1e-6,
    );
    // β → 0: the others' prediction is uniform, q_y = 1/C.
    let (_, q0) = boost_weights(&others, 1e-9, &labels, 5.0, 1.0).unwrap();
    common::assert_close(&common::v64(&q0), &[1.0 / 3.0, 1.0 / 3.0], 1e-6);
}

/// A context in stage `stage` of a run of `epochs` epochs.
fn ctx_at(epochs: usize, stage: usize) -> RunContext {
    let mut ctx = RunContext::new(0, Device::Cpu, epochs);
    ctx.stage = stage;
    ctx
}

fn output(z: &[Var]) -> MultimodalOutput {
    let mut fused = z[0].as_tensor().clone();
    for v in &z[1..] {
        fused = (fused + v.as_tensor()).unwrap();
    }
    MultimodalOutput {
        fused_logits: fused,
        per_modality_logits: z.iter().map(|v| v.as_tensor().clone()).collect(),
        features: Vec::new(),
    }
}

#[test]
fn boost_gradient_is_the_reweighted_ce_gradient_of_the_boosted_learner_only() {
    let model = flat_net(2);
    let za = [[0.3, -0.2, 0.1], [1.0, 0.0, 0.5]];
    let zv = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]];
    let z = [
        Var::from_tensor(&t2(&za)).unwrap(),
        Var::from_tensor(&t2(&zv)).unwrap(),
    ];
    let batch = Batch {
        inputs: vec![t2(&za), t2(&zv)],
        labels: Tensor::new(&[0u32, 2], &Device::Cpu).unwrap(),
        sample_ids: vec![0, 1],
    };
    let mut m = ReconBoost::new(ReconBoostConfig {
        boost_rate: 2.0,
        ..Default::default()
    })
    .unwrap();
    // Stage 0 of a 4-epoch run: boost audio, round 0 (no memory term yet).
    let mut ctx = ctx_at(4, 0);
    let out = output(&z);
    let loss = m.loss(&model, &batch, &out, &mut ctx).unwrap();
    assert!(!loss.parts.contains_key("memory"));
    let grads = loss.total.backward().unwrap();
    let w = [1.377728889267555, 1.6148791988343454];
    let y = [0, 2];
    let mut expect = Vec::new();
    let mut value = 0.0;
    for i in 0..2 {
        let p = softmax(&za[i]);
        value += w[i] * -p[y[i]].ln() / 2.0;
        for c in 0..3 {
            let onehot = if c == y[i] { 1.0 } else { 0.0 };
            expect.push(w[i] * (p[c] - onehot) / 2.0);
        }
    }
    let total = loss
        .total
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((total - value).abs() < 1e-5, "{total} vs {value}");
    common::assert_close(
        &common::v64(grads.get(z[0].as_tensor()).unwrap()),
        &expect,
        1e-6,
    );
    assert!(
        grads.get(z[1].as_tensor()).is_none(),
        "the other learner must not get a gradient in audio's boost stage"
    );
    let logged = ctx.log.take();
    let q_mean = (0.8668133321973349 + 0.15536240349696362) / 2.0;
    assert!((logged["q_y"].as_f64().unwrap() - q_mean).abs() < 1e-6);
}

#[test]
fn memory_consolidation_is_logged_without_gradient_or_trained_as_mse() {
    let model = flat_net(2);
    let za = [[0.3, -0.2, 0.1]];
    let zv = [[1.0, 0.0, -1.0]];
    let batch = Batch {
        inputs: vec![t2(&za), t2(&zv)],
        labels: Tensor::new(&[1u32], &Device::Cpu).unwrap(),
        sample_ids: vec![0],
    };
    // α·mean_c (softmax(z_v) − softmax(z_a))²: visual is boosted in round 1, audio was before.
    let (pa, pv) = (softmax(&za[0]), softmax(&zv[0]));
    let mem: f64 = 0.5
        * pa.iter()
            .zip(&pv)
            .map(|(a, v)| (v - a).powi(2))
            .sum::<f64>()
        / 3.0;
    let grads_of = |memory: Memory| {
        let z = [
            Var::from_tensor(&t2(&za)).unwrap(),
            Var::from_tensor(&t2(&zv)).unwrap(),
        ];
        let mut m = ReconBoost::new(ReconBoostConfig {
            memory,
            ..Default::default()
        })
        .unwrap();
        let mut ctx = ctx_at(4, 2);
        let loss = m.loss(&model, &batch, &output(&z), &mut ctx).unwrap();
        let logged = loss.parts["memory"]
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((logged - mem).abs() < 1e-7, "{logged} vs {mem}");
        let g = loss.total.backward().unwrap();
        assert!(g.get(z[0].as_tensor()).is_none(), "audio is not boosted");
        common::v64(g.get(z[1].as_tensor()).unwrap())
    };
    let logged = grads_of(Memory::Logged);
    let trained = grads_of(Memory::Mse);
    // Logged: exactly the boost gradient (weights with q from β·z_a, β = 1).
    let q = softmax(&za[0])[1];
    let w = (5.0 - q) / 3.0;
    let expect: Vec<f64> = pv
        .iter()
        .enumerate()
        .map(|(c, p)| w * (p - if c == 1 { 1.0 } else { 0.0 }))
        .collect();
    common::assert_close(&logged, &expect, 1e-6);
    // MSE: the memory term's gradient is added.
    let diff: f64 = logged
        .iter()
        .zip(&trained)
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(diff > 1e-4, "{logged:?} vs {trained:?}");
}

#[test]
fn rectification_trains_beta_by_sgd_with_momentum() {
    let model = flat_net(2);
    let za = [[0.3, -0.2, 0.1], [1.0, 0.0, 0.5]];
    let zv = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]];
    let y = [0usize, 2];
    let batch = Batch {
        inputs: vec![t2(&za), t2(&zv)],
        labels: Tensor::new(&[0u32, 2], &Device::Cpu).unwrap(),
        sample_ids: vec![0, 1],
    };
    let mut m = ReconBoost::new(ReconBoostConfig::default()).unwrap();
    let mut ctx = ctx_at(4, 1);
    m.on_stage_start(&model, &mut ctx).unwrap();
    m.epoch_lr(0.1, &mut ctx).unwrap();
    // dL/dβ of CE(β·F): mean_i Σ_c (softmax(βF_i)_c − y_ic)·F_ic, at β = 1.
    let f: Vec<Vec<f64>> = (0..2)
        .map(|i| (0..3).map(|c| za[i][c] + zv[i][c]).collect())
        .collect();
    let grad_beta = |beta: f64| -> f64 {
        (0..2)
            .map(|i| {
                let p = softmax(&f[i].iter().map(|x| beta * x).collect::<Vec<_>>());
                (0..3)
                    .map(|c| (p[c] - if c == y[i] { 1.0 } else { 0.0 }) * f[i][c])
                    .sum::<f64>()
            })
            .sum::<f64>()
            / 2.0
    };
    let mut beta = 1.0;
    let mut buf = 0.0;
    for _ in 0..2 {
        let z = [
            Var::from_tensor(&t2(&za)).unwrap(),
            Var::from_tensor(&t2(&zv)).unwrap(),
        ];
        let out = output(&z);
        let loss = m.loss(&model, &batch, &out, &mut ctx).unwrap();
        let mut grads = loss.total.backward().unwrap();
        // Both learners get the ensemble CE's gradient.
        assert!(grads.get(z[0].as_tensor()).is_some());
        assert!(grads.get(z[1].as_tensor()).is_some());
        m.modulate_grads(&mut grads, &model, &batch, &out, &mut ctx)
            .unwrap();
        buf = BETA_MOMENTUM * buf + grad_beta(beta) + BETA_WEIGHT_DECAY * beta;
        beta -= 0.1 * buf;
        assert!((m.beta() - beta).abs() < 1e-6, "{} vs {beta}", m.beta());
    }
    assert!(m.beta() != 1.0);
    // learn_beta = false keeps β fixed.
    let mut fixed = ReconBoost::new(ReconBoostConfig {
        learn_beta: false,
        ..Default::default()
    })
    .unwrap();
    let z = [
        Var::from_tensor(&t2(&za)).unwrap(),
        Var::from_tensor(&t2(&zv)).unwrap(),
    ];
    let out = output(&z);
    let loss = fixed.loss(&model, &batch, &out, &mut ctx).unwrap();
    let mut grads = loss.total.backward().unwrap();
    fixed
        .modulate_grads(&mut grads, &model, &batch, &out, &mut ctx)
        .unwrap();
    assert_eq!(fixed.beta(), 1.0);
}

#[test]
fn stages_prefixes_and_selection_follow_the_plan() {
    let model = flat_net(2);
    let m = ReconBoost::new(ReconBoostConfig::default()).unwrap();
    let stages: Vec<StageSpec> = m.stages(12, model.modalities());
    let stage_names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        stage_names[..4],
        ["boost:audio", "rectify", "boost:visual", "rectify"]
    );
    assert_eq!(
        m.trainable_prefixes(0, &model),
        vec!["encoder.audio".to_string(), "head.audio".to_string()]
    );
    assert_eq!(
        m.trainable_prefixes(2, &model),
        vec!["encoder.visual".to_string(), "head.visual".to_string()]
    );
    assert_eq!(m.trainable_prefixes(1, &model), vec![String::new()]);
    // Rounds 3, 4, 5 end at stages 7, 9, 11 (select_from_round = 3).
    let sel: Vec<usize> = (0..12)
        .filter(|&s| m.selectable(&ctx_at(12, s), &stages))
        .collect();
    assert_eq!(sel, vec![7, 9, 11]);
    // A run too short to reach round 3: its last rectification only.
    let short = m.stages(4, model.modalities());
    let sel: Vec<usize> = (0..4)
        .filter(|&s| m.selectable(&ctx_at(4, s), &short))
        .collect();
    assert_eq!(sel, vec![3]);
    // Rectification of 2 epochs: only its last epoch.
    let m2 = ReconBoost::new(ReconBoostConfig {
        rectify_epochs: 2,
        select_from_round: 0,
        ..Default::default()
    })
    .unwrap();
    let st = m2.stages(6, model.modalities());
    let mut c = ctx_at(6, 1);
    assert!(!m2.selectable(&c, &st));
    c.stage_epoch = 1;
    assert!(m2.selectable(&c, &st));
}

#[test]
fn bad_options_are_errors_naming_them() {
    let bad = [
        (
            ReconBoostConfig {
                w1: 0.0,
                ..Default::default()
            },
            "w1",
        ),
        (
            ReconBoostConfig {
                w2: 5.0,
                ..Default::default()
            },
            "w2",
        ),
        (
            ReconBoostConfig {
                alpha: f64::NAN,
                ..Default::default()
            },
            "alpha",
        ),
        (
            ReconBoostConfig {
                boost_rate: -1.0,
                ..Default::default()
            },
            "boost_rate",
        ),
        (
            ReconBoostConfig {
                boost_epochs: 0,
                ..Default::default()
            },
            "boost_epochs",
        ),
    ];
    for (cfg, key) in bad {
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
    let mut o = toml::Table::new();
    o.insert("weight1".into(), toml::Value::Float(5.0));
    let e = common::build_method("reconboost", &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("weight1"), "{e}");
    let d = common::build_method("reconboost", &toml::Table::new()).unwrap();
    assert_eq!(d.fusion, FusionConfig::Sum);
    assert_eq!(d.resolved["w1"].as_float(), Some(5.0));
    // An order naming a modality the data lack: a clear error at the start, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_vec(dir.path(), 0, 2)
        .with_overrides(&[
            "method.name=reconboost".into(),
            "method.order=[\"audio\", \"depth\"]".into(),
        ])
        .unwrap();
    let e = modbal::train(&cfg, &common::quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("depth"), "{e}");
}

#[test]
fn run_alternates_learners_and_selects_a_round_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(dir.path(), "reconboost", 0, 8, &[]);
    let recs = common::read_metrics(&out.run_dir);
    let train: Vec<_> = recs.iter().filter(|r| r.split == "train").collect();
    let stages: Vec<&str> = train
        .iter()
        .map(|r| r.method["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "boost:audio",
            "rectify",
            "boost:visual",
            "rectify",
            "boost:audio",
            "rectify",
            "boost:visual",
            "rectify"
        ]
    );
    for r in &train {
        if r.method["stage"].as_str().unwrap().starts_with("boost") {
            let q = r.method["q_y"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&q));
            let w = r.method["weight"].as_f64().unwrap();
            assert!(w > 0.0 && w <= 5.0 / 3.0 + 1e-9, "{w}");
        }
    }
    // β moves in rectification only.
    let beta: Vec<f64> = train
        .iter()
        .map(|r| r.method["beta"].as_f64().unwrap())
        .collect();
    assert_ne!(beta[1], 1.0);
    assert_eq!(beta[2], beta[1], "β is not trained in a boost stage");
    let s = out.summary.unwrap();
    assert_eq!(
        s.best_epoch, 7,
        "round 3's rectification is the only selectable epoch"
    );
    assert!(s.test.fusion_acc > 0.5, "{}", s.test.fusion_acc);
}

#[test]
fn three_modalities_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(
        dir.path(),
        "reconboost",
        1,
        6,
        &["dataset.third_modality=true"],
    );
    let recs = common::read_metrics(&out.run_dir);
    let boosted: Vec<&str> = recs
        .iter()
        .filter(|r| r.split == "train")
        .filter_map(|r| r.method["stage"].as_str())
        .filter(|s| s.starts_with("boost"))
        .collect();
    assert_eq!(boosted, ["boost:audio", "boost:visual", "boost:text"]);
}

/// A run stopped mid-plan and resumed writes the same metrics as an uninterrupted one (β and its
/// momentum survive).
#[test]
fn resumed_run_matches_the_uninterrupted_one() {
    let sets = [
        "method.name=reconboost".to_string(),
        "method.rectify_epochs=2".to_string(),
    ];
    // Stop inside the first two-epoch rectification.
    common::assert_resume_matches(&sets, 3, 6, 2, "reconboost");
}
