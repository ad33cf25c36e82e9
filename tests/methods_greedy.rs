//! `greedy` (Wu, Jastrzębski, Cho & Geras, "Characterizing and overcoming the greedy nature of
//! learning in multi-modal deep neural networks", ICML 2022; official code
//! nyukat/greedy_multimodal_learning): the parameter groups and μ against closed forms, the
//! conditional learning speed and the re-balancing state machine on scripted values, the
//! constant excitation of a re-balancing step, gradients of every parameter, evaluation in
//! regular mode, resume, three modalities and runs through the registry.
//!
//! The official arithmetic restated (`src/callbacks.py`, `on_backward_end`; no torch here):
//!
//! ```python
//! # mu(group) = sum(p.grad.norm()**2 for p in group) / sum(p.norm()**2 for p in group)
//! # M_bypass_m += mu(bypass_m); M_main_m += mu(main_m)   (regular steps only)
//! # s_m = log10(M_bypass_m / M_main_m); d = s_0 - s_1
//! # if epoch >= starting_epoch and abs(d) > epsilon:
//! #     curation_mode, caring = True, (0 if d > 0 else 1); window = Q
//! import math
//! (9 + 16 + 0.25) / (1 + 4 + 4)          # 2.8055...: mu of {w1 = [1, 2], w2 = [2]}, g = [3, 4], [0.5]
//! math.log10(1 / 10) - math.log10(2 / 10) # -0.30103: d for M_bypass = [1, 2], M_main = [10, 10]
//! ```

mod common;

use candle_core::{Device, Tensor, Var};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::greedy::{
    group_speed, param_groups, spread, Greedy, GreedyConfig, GreedyState,
};
use modbal::tensors::{cross_entropy, SeededRng};

fn mmtm_net(m: usize, enc: EncoderConfig, shape: &[usize]) -> MultimodalNet {
    let specs: Vec<_> = ["audio", "visual", "text"][..m]
        .iter()
        .map(|n| ModalitySpec::new(*n, enc.clone(), shape))
        .collect();
    MultimodalNet::new(
        &specs,
        &FusionConfig::Mmtm { ratio: 4 },
        3,
        &mut SeededRng::new(11),
        &Device::Cpu,
    )
    .unwrap()
}

fn mlp_net(m: usize) -> MultimodalNet {
    mmtm_net(m, EncoderConfig::Mlp { hidden: vec![8, 6] }, &[4])
}

fn greedy(cfg: GreedyConfig) -> Greedy {
    Greedy::new(cfg).unwrap()
}

/// forward → loss → backward (which runs modulate_grads), no optimizer step.
fn step(
    g: &mut Greedy,
    model: &dyn MultimodalModel,
    batch: &Batch,
    ctx: &mut RunContext,
) -> candle_core::backprop::GradStore {
    let out = g.forward(model, batch, ctx).unwrap();
    let loss = g.loss(model, batch, &out, ctx).unwrap();
    g.backward(model, batch, &out, &loss, ctx).unwrap()
}

#[test]
fn mu_is_a_ratio_of_sums_over_the_group() {
    let w1 = Var::from_tensor(&Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap()).unwrap();
    let w2 = Var::from_tensor(&Tensor::new(&[2.0f32], &Device::Cpu).unwrap()).unwrap();
    let c1 = Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
    let loss = ((w1.as_tensor() * &c1).unwrap().sum_all().unwrap()
        + (w2.as_tensor() * 0.5).unwrap().sum_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let group = vec![("w1".to_string(), w1.clone()), ("w2".to_string(), w2)];
    let mu = group_speed(&grads, &group).unwrap();
    assert!((mu - 25.25 / 9.0).abs() < 1e-12, "{mu}");
    // Not the sum of per-tensor ratios (25/5 + 0.25/4).
    assert!((mu - (5.0 + 0.0625)).abs() > 1.0);
    // A parameter without gradient counts in the denominator only.
    let w3 = Var::from_tensor(&Tensor::new(&[3.0f32], &Device::Cpu).unwrap()).unwrap();
    let mut g2 = group.clone();
    g2.push(("w3".to_string(), w3));
    let mu3 = group_speed(&grads, &g2).unwrap();
    assert!((mu3 - 25.25 / 18.0).abs() < 1e-12, "{mu3}");
}

#[test]
fn parameter_groups_and_speeds_match_the_closed_form() {
    let model = mlp_net(2);
    let (main, bypass) = param_groups(&model).unwrap();
    let names = |g: &Vec<(String, Var)>| -> Vec<String> {
        let mut v: Vec<String> = g.iter().map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&main[0]),
        [
            "encoder.audio.layers.0.bias",
            "encoder.audio.layers.0.weight",
            "encoder.audio.layers.1.bias",
            "encoder.audio.layers.1.weight",
            "head.audio.bias",
            "head.audio.weight"
        ]
    );
    assert_eq!(
        names(&bypass[1]),
        [
            "fusion.mmtm.0.excite.visual.bias",
            "fusion.mmtm.0.excite.visual.weight",
            "fusion.mmtm.0.squeeze.bias",
            "fusion.mmtm.0.squeeze.weight"
        ]
    );
    // Every trainable parameter is in exactly one main group or in a bypass group (the
    // squeeze layer in both).
    let all = model.params().trainable();
    for (n, _) in &all {
        let k = main
            .iter()
            .chain(&bypass)
            .filter(|g| g.iter().any(|(x, _)| x == n))
            .count();
        let want = if n.contains(".squeeze.") { 2 } else { 1 };
        assert_eq!(k, want, "{n}");
    }
    // One regular step: the accumulators hold μ computed here independently from the names.
    let mut rng = SeededRng::new(2);
    let batch = common::audio_label_batch(2, 6, &mut rng);
    let mut g = greedy(GreedyConfig::default());
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    let before: Vec<(String, Tensor)> = all
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let grads = step(&mut g, &model, &batch, &mut ctx);
    let sq = |t: &Tensor| common::v64(t).iter().map(|x| x * x).sum::<f64>();
    let mu = |pred: &dyn Fn(&str) -> bool| {
        let (mut gs, mut ws) = (0.0, 0.0);
        for ((n, v), (_, w)) in all.iter().zip(&before) {
            if pred(n) {
                gs += grads.get(v.as_tensor()).map(sq).unwrap_or(0.0);
                ws += sq(w);
            }
        }
        gs / ws
    };
    let st = g.greedy_state();
    for (m, name) in ["audio", "visual"].iter().enumerate() {
        let enc = format!("encoder.{name}.");
        let head = format!("head.{name}.");
        let exc = format!(".excite.{name}.");
        let main_mu = mu(&|n: &str| n.starts_with(&enc) || n.starts_with(&head));
        let byp_mu = mu(&|n: &str| n.contains(&exc) || n.contains(".squeeze."));
        assert!(main_mu > 0.0 && byp_mu > 0.0);
        assert!(
            (st.acc_main[m] - main_mu).abs() <= 1e-9 * main_mu,
            "{name} main"
        );
        assert!(
            (st.acc_bypass[m] - byp_mu).abs() <= 1e-9 * byp_mu,
            "{name} bypass"
        );
    }
    let s = st.speeds();
    let want0 = (st.acc_bypass[0] / st.acc_main[0]).log10();
    assert_eq!(s[0], want0);
    // Closed form of s and d.
    let st = GreedyState {
        acc_bypass: vec![1.0, 2.0],
        acc_main: vec![10.0, 10.0],
        remaining: 0,
        caring: None,
    };
    let s = st.speeds();
    assert!((s[0] - s[1] - (-std::f64::consts::LOG10_2)).abs() < 1e-12);
    assert!((spread(&s).unwrap() - std::f64::consts::LOG10_2).abs() < 1e-12);
}

#[test]
fn state_machine_on_a_scripted_sequence() {
    let (eps, q) = (0.01, 5);
    let mut st = GreedyState::new(2);
    // Warm-up: never triggers.
    assert_eq!(st.decide(&[0.5, 0.0], false, eps, q), None);
    assert_eq!(st.mode(), None);
    // Below the threshold (and at it: strict).
    assert_eq!(st.decide(&[0.005, 0.0], true, eps, q), None);
    assert_eq!(st.decide(&[0.0, 0.01], true, eps, q), None);
    // d = 0.02 > α: the next Q steps re-balance branch 0 (the larger s).
    assert_eq!(st.decide(&[0.02, 0.0], true, eps, q), Some(0));
    let mut modes = Vec::new();
    for _ in 0..q {
        modes.push(st.mode());
        st.rebalance_step();
    }
    assert_eq!(modes, vec![Some(0); q]);
    assert_eq!(st.mode(), None);
    // d = −0.03: branch 1.
    assert_eq!(st.decide(&[0.1, 0.13], true, eps, q), Some(1));
    assert_eq!(st.mode(), Some(1));
    // Non-finite speeds (an empty accumulator) never trigger.
    let mut st = GreedyState::new(2);
    assert_eq!(st.decide(&[f64::NAN, 0.0], true, eps, q), None);
    assert_eq!(st.decide(&[f64::NEG_INFINITY, 0.0], true, eps, q), None);
    // Three branches: trigger on max − min, caring = argmax.
    let mut st = GreedyState::new(3);
    assert_eq!(st.decide(&[0.1, 0.3, 0.295], true, eps, q), Some(1));
    // regular_step accumulates, then decides: M_bypass = [1, 2], M_main = [10, 10] → d < 0.
    let mut st = GreedyState::new(2);
    let (s, trig) = st.regular_step(&[1.0, 2.0], &[10.0, 10.0], true, eps, q);
    assert_eq!(trig, Some(1));
    assert!((s[1] - s[0] - std::f64::consts::LOG10_2).abs() < 1e-12);
    st.regular_step(&[1.0, 0.0], &[0.0, 10.0], true, eps, q);
    assert_eq!(st.acc_bypass, vec![2.0, 2.0]);
    assert_eq!(st.acc_main, vec![10.0, 20.0]);
}

/// Through the hooks: accumulators grow on regular steps only, a trigger makes the next
/// `window` steps re-balancing steps (the forward's mode), then regular again; the warm-up
/// epoch never triggers.
#[test]
fn method_pauses_accumulators_during_rebalancing_and_respects_the_warmup() {
    let model = mlp_net(2);
    let mut rng = SeededRng::new(5);
    let batch = common::audio_label_batch(2, 6, &mut rng);
    let cfg = GreedyConfig {
        epsilon: 0.0,
        window: 2,
        ..Default::default()
    };
    let mut g = greedy(cfg);
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    // Epoch 0 is the warm-up: regular steps only, accumulators grow.
    step(&mut g, &model, &batch, &mut ctx);
    let a1 = g.greedy_state().clone();
    assert!(a1.acc_main[0] > 0.0 && a1.remaining == 0);
    step(&mut g, &model, &batch, &mut ctx);
    assert!(g.greedy_state().acc_main[0] > a1.acc_main[0]);
    assert_eq!(g.greedy_state().mode(), None);
    // Epoch 1: the first regular step triggers (ε = 0, the speeds differ).
    ctx.epoch = 1;
    step(&mut g, &model, &batch, &mut ctx);
    let st = g.greedy_state().clone();
    let c = st.mode().expect("a trigger");
    let s = st.speeds();
    assert_eq!(c, if s[0] > s[1] { 0 } else { 1 });
    assert_eq!(st.remaining, 2);
    // Two re-balancing steps: accumulators unchanged.
    step(&mut g, &model, &batch, &mut ctx);
    assert_eq!(g.greedy_state().acc_main, st.acc_main);
    assert_eq!(g.greedy_state().remaining, 1);
    step(&mut g, &model, &batch, &mut ctx);
    assert_eq!(g.greedy_state().acc_bypass, st.acc_bypass);
    assert_eq!(g.greedy_state().mode(), None);
    // Regular again.
    step(&mut g, &model, &batch, &mut ctx);
    assert!(g.greedy_state().acc_main[0] > st.acc_main[0]);
    // The logged mechanism: 6 steps this "epoch" (no epoch end called in between), 2
    // re-balancing; the log names every modality.
    g.on_epoch_end(&model, &mut ctx).unwrap();
    let log = ctx.log.take();
    assert!((log["rebalance_frac"].as_f64().unwrap() - 2.0 / 6.0).abs() < 1e-12);
    assert_eq!(log["caring"][["audio", "visual"][c]].as_f64(), Some(2.0));
    assert_eq!(log["triggers"].as_f64(), Some(2.0));
    assert!(log["s"]["audio"].as_f64().unwrap().is_finite());
    assert!(log["d"].as_f64().unwrap().is_finite());
}

/// A re-balancing step caring for branch c: c's logits do not depend on the other modality's
/// input (its excitation is the running average), the other branch's still do; a regular
/// forward mixes both; evaluation (`forward_t`) is regular whatever the method's mode.
#[test]
fn constant_excitation_isolates_the_caring_branch() {
    for caring in 0..2 {
        let model = mlp_net(2);
        let mut rng = SeededRng::new(7);
        let batch = common::audio_label_batch(2, 5, &mut rng);
        // Give the running averages content with a training forward.
        model.forward_t(&batch.inputs, true).unwrap();
        let mut other = batch.clone();
        let o = 1 - caring;
        other.inputs[o] = (&other.inputs[o] * -2.0).unwrap();
        let mut g = greedy(GreedyConfig::default());
        let state = serde_json::json!({
            "acc_bypass": [1.0, 1.0], "acc_main": [1.0, 1.0], "remaining": 3, "caring": caring
        });
        g.load_state(&state).unwrap();
        let mut ctx = RunContext::new(0, Device::Cpu, 1);
        let a = g.forward(&model, &batch, &mut ctx).unwrap();
        let b = g.forward(&model, &other, &mut ctx).unwrap();
        // BatchNorm-free MLPs: the training forward is deterministic in its inputs.
        assert_eq!(
            common::rows(&a.per_modality_logits[caring]),
            common::rows(&b.per_modality_logits[caring]),
            "caring {caring}"
        );
        assert_ne!(
            common::rows(&a.per_modality_logits[o]),
            common::rows(&b.per_modality_logits[o])
        );
        // Regular forwards: the caring branch does see the other modality.
        let ra = model.forward_t(&batch.inputs, false).unwrap();
        let rb = model.forward_t(&other.inputs, false).unwrap();
        assert_ne!(
            common::rows(&ra.per_modality_logits[caring]),
            common::rows(&rb.per_modality_logits[caring])
        );
        // The branch's own input still matters.
        let mut own = batch.clone();
        own.inputs[caring] = (&own.inputs[caring] + 1.0).unwrap();
        let c = g.forward(&model, &own, &mut ctx).unwrap();
        assert_ne!(
            common::rows(&a.per_modality_logits[caring]),
            common::rows(&c.per_modality_logits[caring])
        );
    }
}

/// The loss is Σ_m CE(z_m, y); the fused CE is logged only. Every trainable parameter
/// (encoders, heads, MMTM squeeze and excitations) receives a non-zero gradient in a regular
/// step, with MLP and small-CNN encoders.
#[test]
fn loss_and_every_parameter_gets_a_gradient() {
    let nets = [
        mlp_net(2),
        mmtm_net(
            2,
            EncoderConfig::SmallCnn {
                channels: vec![4, 6, 8],
            },
            &[1, 8, 8],
        ),
    ];
    for model in &nets {
        let mut rng = SeededRng::new(3);
        let x_shape: Vec<usize> = std::iter::once(6)
            .chain(model.encoder(0).input_shape().iter().copied())
            .collect();
        let batch = Batch {
            inputs: (0..2)
                .map(|_| {
                    rng.randn(
                        x_shape.clone(),
                        0.0,
                        1.0,
                        candle_core::DType::F32,
                        &Device::Cpu,
                    )
                    .unwrap()
                })
                .collect(),
            labels: Tensor::new(&[0u32, 1, 2, 0, 1, 2], &Device::Cpu).unwrap(),
            sample_ids: (0..6).collect(),
        };
        let mut g = greedy(GreedyConfig::default());
        let mut ctx = RunContext::new(0, Device::Cpu, 1);
        let out = g.forward(model, &batch, &mut ctx).unwrap();
        let loss = g.loss(model, &batch, &out, &mut ctx).unwrap();
        let want = common::v64(&cross_entropy(&out.per_modality_logits[0], &batch.labels).unwrap())
            [0]
            + common::v64(&cross_entropy(&out.per_modality_logits[1], &batch.labels).unwrap())[0];
        let got = common::v64(&loss.total)[0];
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(loss.parts.contains_key("fused"));
        let grads = loss.total.backward().unwrap();
        for (n, v) in model.params().trainable() {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{n}: no gradient"));
            let s: f64 = common::v64(g).iter().map(|x| x.abs()).sum();
            assert!(s > 0.0 && s.is_finite(), "{n}: gradient {s}");
        }
    }
}

#[test]
fn options_errors_and_a_late_fusion_model() {
    for (k, v) in [
        ("epsilon", toml::Value::Float(-1.0)),
        ("window", toml::Value::Integer(0)),
        ("ratio", toml::Value::Integer(0)),
    ] {
        let mut o = toml::Table::new();
        o.insert(k.into(), v);
        let e = common::build_method("greedy", &o).unwrap_err().to_string();
        assert!(e.contains(k), "{e}");
    }
    let d = common::build_method("greedy", &toml::Table::new()).unwrap();
    assert_eq!(d.fusion, FusionConfig::Mmtm { ratio: 4 });
    assert_eq!(d.resolved["epsilon"].as_float(), Some(0.01));
    assert_eq!(d.resolved["window"].as_integer(), Some(5));
    assert_eq!(d.resolved["warmup_epochs"].as_integer(), Some(1));
    // A late-fusion model: a clear error naming the fusion the method needs.
    let mut rng = SeededRng::new(1);
    let model = common::tiny_mlp_net(2, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(2, 3, &mut rng);
    let e = greedy(GreedyConfig::default())
        .forward(&model, &batch, &mut RunContext::new(0, Device::Cpu, 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("mmtm"), "{e}");
    // A bad checkpoint state.
    let mut g = greedy(GreedyConfig::default());
    assert!(g
        .load_state(&serde_json::json!({"acc_bypass": [1.0], "acc_main": [], "remaining": 0, "caring": null}))
        .is_err());
}

#[test]
fn run_learns_and_logs_the_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(dir.path(), "greedy", 0, 3, &[]);
    let recs = common::read_metrics(&out.run_dir);
    let train: Vec<_> = recs.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 3);
    for (e, r) in train.iter().enumerate() {
        for m in ["audio", "visual"] {
            assert!(r.method["s"][m].as_f64().unwrap().is_finite(), "{m}");
            assert!(r.method[&format!("loss.{m}")].as_f64().is_some());
        }
        let frac = r.method["rebalance_frac"].as_f64().unwrap();
        if e == 0 {
            assert_eq!(frac, 0.0, "warm-up epoch");
            assert_eq!(r.method["triggers"].as_f64(), Some(0.0));
        }
    }
    let val = recs.iter().rfind(|r| r.split == "val").unwrap();
    assert!(val.fusion_acc > 0.5, "val accuracy {}", val.fusion_acc);
}

#[test]
fn three_modality_run_logs_every_modality() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_method(
        dir.path(),
        "greedy",
        1,
        2,
        &["dataset.third_modality=true", "method.epsilon=0.0"],
    );
    let recs = common::read_metrics(&out.run_dir);
    let r = recs.iter().rfind(|r| r.split == "train").unwrap();
    assert_eq!(r.method["s"].as_object().unwrap().len(), 3);
    assert_eq!(r.method["caring"].as_object().unwrap().len(), 3);
    assert!(r.method["rebalance_frac"].as_f64().unwrap() > 0.0);
    let val = recs.iter().find(|r| r.split == "val").unwrap();
    assert_eq!(val.modality_acc.len(), 3);
}

/// A run stopped after its first epoch and resumed writes the same metrics as an uninterrupted
/// one (accumulators, window and the MMTM running averages restored); ε = 0 so that the
/// re-balancing windows run in both halves.
#[test]
fn resumed_run_matches_the_uninterrupted_one() {
    common::assert_resume_matches(
        &[
            "method.name=greedy".to_string(),
            "method.epsilon=0.0".to_string(),
        ],
        3,
        3,
        2,
        "greedy",
    );
}

/// synth-av: small CNN encoders, three stages, MMTM blocks after stages 2 and 3.
#[test]
fn short_synth_av_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = modbal::RunConfig::default()
        .with_overrides(&[
            "dataset.name=synth-av".into(),
            "dataset.train=128".into(),
            "dataset.val=64".into(),
            "dataset.test=64".into(),
            "train.epochs=2".into(),
            "method.name=greedy".into(),
            format!("out_dir={:?}", dir.path().display().to_string()),
        ])
        .unwrap();
    let out = common::train(&cfg);
    let recs = common::read_metrics(&out.run_dir);
    let r = recs.iter().rfind(|r| r.split == "train").unwrap();
    assert!(r.method["d"].as_f64().unwrap().is_finite());
    let cfg_text = std::fs::read_to_string(out.run_dir.join("config.toml")).unwrap();
    assert!(cfg_text.contains("epsilon"), "{cfg_text}");
}

/// The presets carry UDI A.6's protocol and the method; their datasets' default encoders
/// (ResNet-18 for spectrograms and clips) are staged.
#[test]
fn presets_carry_udi_protocol() {
    for name in ["greedy/crema-d", "greedy/kinetics-sounds"] {
        let p = modbal::presets::find(name).unwrap();
        assert_eq!(p.method(), Some("greedy"), "{name}");
        let lr = p
            .values
            .iter()
            .find(|v| v.key == "train.optimizer.lr")
            .unwrap();
        assert_eq!(lr.value, "0.01");
        assert!(lr.source.contains("UDI A.6"));
    }
}
