//! `inforeg` (Huang, Wei, Yang & Hu, "Adaptive Unimodal Regulation for Balanced Multimodal
//! Information Acquisition", CVPR 2025; official code GeWu-Lab/InfoReg_CVPR2025): each mechanism
//! against its closed form computed here independently, the official `train_epoch` arithmetic,
//! resume, three modalities, bad input and short runs through the registry.
//!
//! Reference numbers were computed with Python 3's `math` module (no torch on the development
//! machine), restating the official code's arithmetic:
//!
//! ```python
//! import math
//! # if score_a > score_v and k > 0.05: beta = 0.95 * exp(tanh(score_a - score_v))
//! 0.95 * math.exp(math.tanh(20.5 - 12.25))   # -> 2.582367384511782
//! # elif score_a < score_v and k > 0.05: beta2 = 0.1 * exp(tanh(score_v - score_a))
//! 0.1 * math.exp(math.tanh(13.0 - 12.5))     # -> 0.15874312714298353
//! # audio_trace_list = [0]*10, then the epochs' traces 4.0, 6.0, 7.0, 7.5 appended
//! # k = 1 at epoch 0; else tr1 = sum(l[-10:])/10, tr2 = sum(l[-11:-1])/10, k = (tr1-tr2)/tr1
//! # epochs 0..4 -> 1, 1.0, 0.6, 0.4117647058823529, 0.3061224489795919
//! ```

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{FusionConfig, MultimodalNet};
use modbal::methods::inforeg::{regulation, window_value, InfoReg, InfoRegConfig};
use modbal::tensors::{cross_entropy, SeededRng};
use std::collections::BTreeMap;

// ---------------------------------------------------------------- helpers

/// A two- or three-modality MLP net and a batch in which `audio` carries the label (so audio
/// is the information-sufficient modality).
fn tiny(modalities: usize, b: usize) -> (MultimodalNet, Batch) {
    let mut rng = SeededRng::new(3);
    let net = common::tiny_mlp_net(modalities, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(modalities, b, &mut rng);
    // An untrained net scores the modalities at random: fit the audio head slice first (plain
    // gradient descent on CE(z_audio)), so that audio is the information-sufficient modality.
    for _ in 0..40 {
        let out = net.forward_t(&batch.inputs, true).unwrap();
        let grads = cross_entropy(&out.per_modality_logits[0], &batch.labels)
            .unwrap()
            .backward()
            .unwrap();
        for (_, v) in net.params().trainable() {
            if let Some(g) = grads.get(v.as_tensor()) {
                v.set(&(v.as_tensor() - (g * 0.5).unwrap()).unwrap())
                    .unwrap();
            }
        }
    }
    (net, batch)
}

fn labels(b: &Batch) -> Vec<usize> {
    b.labels
        .to_vec1::<u32>()
        .unwrap()
        .iter()
        .map(|x| *x as usize)
        .collect()
}

/// `Σ_i softmax(z_i)[y_i]` in f64.
fn score(z: &[Vec<f64>], y: &[usize]) -> f64 {
    z.iter()
        .zip(y)
        .map(|(r, &c)| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|x| (x - m).exp()).collect();
            e[c] / e.iter().sum::<f64>()
        })
        .sum()
}

/// Move every encoder parameter by a fixed, parameter-dependent offset (so `θ − θ̄ ≠ 0`).
fn perturb(net: &MultimodalNet) {
    for (i, (n, v)) in net.params().trainable().into_iter().enumerate() {
        if n.starts_with("encoder.") {
            let d = 0.01 * (i as f64 + 1.0);
            v.set(&(v.as_tensor() + d).unwrap()).unwrap();
        }
    }
}

/// The plain gradients of `CE(z) + w·Σ_m CE(z_m)` at the net's current parameters.
fn plain_grads(
    net: &MultimodalNet,
    batch: &Batch,
    w: f64,
) -> (candle_core::backprop::GradStore, Vec<f64>) {
    let out = net.forward_t(&batch.inputs, true).unwrap();
    let mut total = cross_entropy(&out.fused_logits, &batch.labels).unwrap();
    for z in &out.per_modality_logits {
        total = (total + (cross_entropy(z, &batch.labels).unwrap() * w).unwrap()).unwrap();
    }
    let y = labels(batch);
    let s = out
        .per_modality_logits
        .iter()
        .map(|z| score(&common::rows(z), &y))
        .collect();
    (total.backward().unwrap(), s)
}

/// One training step through the method's hooks: the gradients it hands the optimizer.
fn step(
    m: &mut InfoReg,
    net: &MultimodalNet,
    batch: &Batch,
    ctx: &mut RunContext,
) -> candle_core::backprop::GradStore {
    let out = m.forward(net, batch, ctx).unwrap();
    let loss = m.loss(net, batch, &out, ctx).unwrap();
    m.backward(net, batch, &out, &loss, ctx).unwrap()
}

/// Checks `grads = plain + β(θ − θ̄)` on the encoder `reg` (all its tensors) and `= plain`
/// elsewhere; returns how many tensors were compared.
fn check_grads(
    net: &MultimodalNet,
    method: &InfoReg,
    grads: &candle_core::backprop::GradStore,
    plain: &candle_core::backprop::GradStore,
    reg: Option<(&str, f64)>,
) -> usize {
    let mut checked = 0;
    for (name, v) in net.params().trainable() {
        let (Some(g), Some(p)) = (grads.get(v.as_tensor()), plain.get(v.as_tensor())) else {
            continue;
        };
        let theta = common::v64(v.as_tensor());
        let want: Vec<f64> = match reg {
            Some((prefix, beta)) if name.starts_with(prefix) => {
                let anchor = common::v64(method.anchor(&name).expect("anchor"));
                common::v64(p)
                    .iter()
                    .zip(theta.iter().zip(&anchor))
                    .map(|(g, (t, a))| g + beta * (t - a))
                    .collect()
            }
            _ => common::v64(p),
        };
        let scale = want.iter().map(|x| x.abs()).fold(1e-6, f64::max);
        for (a, b) in common::v64(g).iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * scale, "{name}: {a} vs {b}");
        }
        checked += 1;
    }
    checked
}

fn run(out: &std::path::Path, seed: u64, epochs: usize, extra: &[&str]) -> modbal::RunOutcome {
    common::run_method(out, "inforeg", seed, epochs, extra)
}

// ---------------------------------------------------------------- the maths

/// The loss is `CE(z) + λ·Σ_m CE(z_m)` (the official three backward passes, λ = 1).
#[test]
fn loss_is_fused_plus_unimodal_cross_entropies() {
    let (net, batch) = tiny(2, 12);
    for w in [1.0, 0.5, 0.0] {
        let mut m = InfoReg::new(InfoRegConfig {
            unimodal_weight: w,
            ..Default::default()
        })
        .unwrap();
        let mut ctx = RunContext::new(1, Device::Cpu, 4);
        let out = net.forward_t(&batch.inputs, true).unwrap();
        let loss = m.loss(&net, &batch, &out, &mut ctx).unwrap();
        let ce = |z: &Tensor| {
            cross_entropy(z, &batch.labels)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let want = ce(&out.fused_logits)
            + w * (ce(&out.per_modality_logits[0]) + ce(&out.per_modality_logits[1]));
        let got = loss
            .total
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((got - want).abs() < 1e-5, "w {w}: {got} vs {want}");
        assert_eq!(loss.parts.len(), 3);
    }
}

/// The official coefficient arithmetic (module docs' Python): β = β_m·exp(tanh(gap)).
#[test]
fn coefficient_matches_the_official_arithmetic() {
    let (m, b) = regulation(&[20.5, 12.25], |m| [0.95, 0.1][m]).unwrap();
    assert_eq!(m, 0);
    assert!((b - 2.582367384511782).abs() < 1e-12, "{b}");
    let (m, b) = regulation(&[12.5, 13.0], |m| [0.95, 0.1][m]).unwrap();
    assert_eq!(m, 1);
    assert!((b - 0.15874312714298353).abs() < 1e-12, "{b}");
    // A tie regulates nobody (the official if / elif / else).
    assert!(regulation(&[7.0, 7.0], |_| 1.0).is_none());
    // Three modalities: the gap is to the runner-up.
    let (m, b) = regulation(&[3.0, 9.0, 8.5], |_| 1.0).unwrap();
    assert_eq!(m, 1);
    assert!((b - 0.5f64.tanh().exp()).abs() < 1e-12);
}

/// The window value from the trace history, as the official `tr1`, `tr2` lines.
#[test]
fn window_value_matches_the_official_trace_means() {
    let traces = [4.0, 6.0, 7.0, 7.5];
    let want = [1.0, 1.0, 0.6, 0.4117647058823529, 0.3061224489795919];
    for (e, w) in want.iter().enumerate() {
        let mut h = vec![0.0; 10];
        h.extend_from_slice(&traces[..e]);
        let k = window_value(&h, 10);
        assert!((k - w).abs() < 1e-12, "epoch {e}: {k} vs {w}");
    }
    // A flat trace has left the window; a zero trace gives 0 (the official code divides by 0).
    let flat = vec![5.0; 11];
    assert_eq!(window_value(&flat, 10), 0.0);
    assert_eq!(window_value(&[0.0; 12], 10), 0.0);
    // Other history lengths: (last − the one `h` before) / Σ last h.
    let h = [1.0, 2.0, 4.0, 8.0];
    assert!((window_value(&h, 2) - (8.0 - 2.0) / 12.0).abs() < 1e-12);
}

/// Inside the window the information-sufficient encoder's gradients gain `β(θ − θ̄)` (θ̄ the
/// epoch-start parameters, β from the batch's scores); the other encoder and the head keep the
/// plain gradient of the three CE terms.
#[test]
fn proximal_term_is_added_to_the_sufficient_encoder_only() {
    let (net, batch) = tiny(2, 24);
    let mut m = InfoReg::new(InfoRegConfig::default()).unwrap();
    let mut ctx = RunContext::new(5, Device::Cpu, 10);
    m.on_epoch_start(&net, &mut ctx).unwrap();
    assert_eq!(m.window_values(), &[1.0, 1.0]);
    perturb(&net);
    let (plain, s) = plain_grads(&net, &batch, 1.0);
    assert!(s[0] > s[1], "audio carries the label: {s:?}");
    let beta = 0.95 * (s[0] - s[1]).tanh().exp();
    let grads = step(&mut m, &net, &batch, &mut ctx);
    let n = check_grads(&net, &m, &grads, &plain, Some(("encoder.audio", beta)));
    assert!(n >= 6, "{n}");
    // The anchor really is the epoch start: θ − θ̄ is the perturbation.
    let (name, v) = net.params().trainable()[0].clone();
    assert!(name.starts_with("encoder."), "{name}");
    let d: Vec<f64> = common::v64(v.as_tensor())
        .iter()
        .zip(common::v64(m.anchor(&name).unwrap()))
        .map(|(a, b)| a - b)
        .collect();
    assert!(d.iter().all(|x| (x - 0.01).abs() < 1e-5), "{d:?}");
}

/// Outside the window (k ≤ threshold) nothing is regulated; the official `window_trace =
/// "audio"` makes the audio trace decide for every modality, with the per-modality β.
#[test]
fn window_and_official_audio_trace_gate_the_regulation() {
    let (net, batch) = tiny(2, 24);
    // Audio trace flat (k = 0), visual rising (k > 0.05).
    let mut flat = vec![0.0; 10];
    flat.push(3.0);
    flat.extend(vec![3.0; 10]);
    let mut rising = vec![0.0; 10];
    rising.extend((1..=11).map(|x| x as f64));
    let state = serde_json::json!({ "traces": [flat, rising], "anchor_epoch": null });

    // Own trace: audio (sufficient) is outside its window -> plain gradients.
    let mut own = InfoReg::new(InfoRegConfig::default()).unwrap();
    own.load_state(&state).unwrap();
    let mut ctx = RunContext::new(5, Device::Cpu, 30);
    ctx.epoch = 11;
    own.on_epoch_start(&net, &mut ctx).unwrap();
    assert_eq!(own.window_values()[0], 0.0);
    assert!(own.window_values()[1] > 0.05);
    assert!(!own.in_window(0) && own.in_window(1));
    perturb(&net);
    let (plain, _) = plain_grads(&net, &batch, 1.0);
    let grads = step(&mut own, &net, &batch, &mut ctx);
    assert!(check_grads(&net, &own, &grads, &plain, None) >= 6);

    // Official choices with the visual trace rising and audio flat: audio decides -> off for
    // both; with the traces swapped, audio's rising trace lets the (sufficient) audio encoder
    // be regulated with its 0.95.
    let official = InfoRegConfig {
        window_trace: "audio".into(),
        beta_modality: BTreeMap::from([("visual".to_string(), 0.1)]),
        ..Default::default()
    };
    let mut off = InfoReg::new(official.clone()).unwrap();
    off.load_state(&state).unwrap();
    off.on_epoch_start(&net, &mut ctx).unwrap();
    assert!(!off.in_window(0) && !off.in_window(1));
    let mut on = InfoReg::new(official).unwrap();
    let t = state["traces"].as_array().unwrap().clone();
    let swapped = serde_json::json!({ "traces": [t[1].clone(), t[0].clone()] });
    on.load_state(&swapped).unwrap();
    on.on_epoch_start(&net, &mut ctx).unwrap();
    assert!(on.in_window(0) && on.in_window(1));
    perturb(&net);
    let (plain, s) = plain_grads(&net, &batch, 1.0);
    let beta = 0.95 * (s[0] - s[1]).tanh().exp();
    let grads = step(&mut on, &net, &batch, &mut ctx);
    assert!(check_grads(&net, &on, &grads, &plain, Some(("encoder.audio", beta))) >= 6);
}

/// The epoch's FIM trace is Σ over the encoder's weight matrices of mean(Σ_batches g²), with g
/// the gradient after the regulation, and it is appended to the history.
#[test]
fn fisher_trace_is_the_layer_sum_of_mean_squared_gradients() {
    let (net, batch) = tiny(2, 24);
    let mut m = InfoReg::new(InfoRegConfig::default()).unwrap();
    let mut ctx = RunContext::new(5, Device::Cpu, 10);
    m.on_epoch_start(&net, &mut ctx).unwrap();
    let mut acc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..2 {
        perturb(&net);
        let grads = step(&mut m, &net, &batch, &mut ctx);
        for (name, v) in net.params().trainable() {
            if !name.starts_with("encoder.") || v.rank() < 2 {
                continue;
            }
            let g = common::v64(grads.get(v.as_tensor()).unwrap());
            let e = acc.entry(name).or_insert(vec![0.0; g.len()]);
            for (a, x) in e.iter_mut().zip(&g) {
                *a += x * x;
            }
        }
    }
    m.on_epoch_end(&net, &mut ctx).unwrap();
    let log = ctx.log.take();
    for (i, modality) in ["audio", "visual"].iter().enumerate() {
        let want: f64 = acc
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("encoder.{modality}.")))
            .map(|(_, v)| v.iter().sum::<f64>() / v.len() as f64)
            .sum();
        let got = log["trace"][*modality].as_f64().unwrap();
        assert!(want > 0.0);
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{modality}: {got} vs {want}"
        );
        assert_eq!(m.traces()[i].len(), 11);
        assert!((m.traces()[i][10] - got).abs() <= 1e-12);
    }
    assert_eq!(log["active"].as_f64(), Some(1.0));
    assert_eq!(log["regulated"]["audio"].as_f64(), Some(1.0));
}

/// Three modalities: the argmax modality is regulated with the gap to the runner-up.
#[test]
fn three_modalities_regulate_the_best_scored_encoder() {
    let (net, batch) = tiny(3, 24);
    let mut m = InfoReg::new(InfoRegConfig::default()).unwrap();
    let mut ctx = RunContext::new(5, Device::Cpu, 10);
    m.on_epoch_start(&net, &mut ctx).unwrap();
    perturb(&net);
    let (plain, s) = plain_grads(&net, &batch, 1.0);
    let best = (0..3).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
    let second = (0..3)
        .filter(|&k| k != best)
        .map(|k| s[k])
        .fold(f64::NEG_INFINITY, f64::max);
    let beta = 0.95 * (s[best] - second).tanh().exp();
    let prefix = format!("encoder.{}", ["audio", "visual", "text"][best]);
    let grads = step(&mut m, &net, &batch, &mut ctx);
    // Three encoders (weight and bias each) and the head's weight and bias.
    assert!(check_grads(&net, &m, &grads, &plain, Some((&prefix, beta))) >= 8);
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_options_and_models_are_clear_errors() {
    for (k, v) in [
        ("beta", toml::Value::Float(-1.0)),
        ("history", toml::Value::Integer(0)),
        ("threshold", toml::Value::Float(f64::NAN)),
        ("unimodal_weight", toml::Value::Float(-0.5)),
    ] {
        let t = toml::Table::from_iter([(k.to_string(), v)]);
        let e = common::build_method("inforeg", &t).unwrap_err().to_string();
        assert!(e.contains(k), "{k}: {e}");
    }
    let b = common::build_method("inforeg", &toml::Table::new()).unwrap();
    assert_eq!(b.resolved["beta"].as_float(), Some(0.95));
    assert_eq!(b.resolved["window_trace"].as_str(), Some("own"));

    // One modality: nothing to compare.
    let (net, _) = tiny(1, 6);
    let mut m = InfoReg::new(InfoRegConfig::default()).unwrap();
    let mut ctx = RunContext::new(1, Device::Cpu, 2);
    let e = m.on_epoch_start(&net, &mut ctx).unwrap_err().to_string();
    assert!(e.contains("at least two modalities"), "{e}");
    // Unknown modality names.
    let (net, _) = tiny(2, 6);
    for cfg in [
        InfoRegConfig {
            window_trace: "depth".into(),
            ..Default::default()
        },
        InfoRegConfig {
            beta_modality: BTreeMap::from([("depth".to_string(), 0.1)]),
            ..Default::default()
        },
    ] {
        let mut m = InfoReg::new(cfg).unwrap();
        let e = m.on_epoch_start(&net, &mut ctx).unwrap_err().to_string();
        assert!(e.contains("depth"), "{e}");
    }
}

// ---------------------------------------------------------------- runs

/// A short run through the registry logs the mechanism and differs from concat.
#[test]
fn run_logs_the_mechanism_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), 1, 3, &[]);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 3);
    for key in ["s", "k", "regulated", "beta", "trace", "drift", "active"] {
        assert!(
            !train[2].method[key].is_null(),
            "{key}: {:?}",
            train[2].method
        );
    }
    assert_eq!(train[0].method["k"]["audio"].as_f64(), Some(1.0));
    assert!(train[0].method["active"].as_f64().unwrap() > 0.0);
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.4);
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = run(a.path(), 5, 2, &[]);
    let rb = run(b.path(), 5, 2, &[]);
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(read(&ra.run_dir), read(&rb.run_dir));
}

/// A run stopped after its first epoch and resumed writes the same metrics as an uninterrupted
/// one (the trace history is in the checkpoint's method state).
#[test]
fn resumed_runs_match_uninterrupted_ones() {
    // history = 1: the window of epoch 2 depends on the traces of epochs 0 and 1.
    let sets = [
        "method.name=inforeg".to_string(),
        "method.history=1".to_string(),
    ];
    common::assert_resume_matches(&sets, 3, 3, 1, "inforeg");
}

/// Three modalities end to end (synth-vec with its text modality).
#[test]
fn three_modality_run_trains() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), 1, 2, &["dataset.third_modality=true"]);
    let last = o.history.iter().rfind(|r| r.split == "train").unwrap();
    assert_eq!(last.method["trace"].as_object().unwrap().len(), 3);
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.4);
}

/// The official-protocol preset resolves to the method's hard-coded choices.
#[test]
fn preset_carries_the_official_choices() {
    let p = modbal::presets::find("inforeg/crema-d").unwrap();
    assert_eq!(p.method(), Some("inforeg"));
    let get = |k: &str| p.values.iter().find(|v| v.key == k).unwrap().value;
    assert_eq!(get("method.window_trace"), "\"audio\"");
    assert_eq!(get("method.beta_modality"), "{ visual = 0.1 }");
    assert_eq!(get("train.optimizer.lr"), "0.002");
    let t: toml::Table =
        toml::from_str("beta_modality = { visual = 0.1 }\nwindow_trace = \"audio\"").unwrap();
    let b = common::build_method("inforeg", &t).unwrap();
    assert_eq!(b.resolved["beta_modality"]["visual"].as_float(), Some(0.1));
}
