//! `agm` (Li et al., "Boosting Multi-modal Model Performance with Adaptive Gradient
//! Modulation", ICCV 2023; official code lihongcs/AGM): the Shapley responses, the scores, the
//! ratio/coefficient arithmetic, the gradient modulation and the clipping against closed forms
//! computed here independently; the official loop's arithmetic over five steps; resume, three
//! modalities, one and five modalities (errors) and short runs through the registry.
//!
//! The reference numbers restate the official CREMA-D training loop (two modalities,
//! `alpha = 1.5`, `min(·, 10)`) in plain Python 3 (`math` only; no torch here), with the
//! per-step scores given instead of computed from a network:
//!
//! ```python
//! import math
//! alpha = 1.5; ta = tv = 0.0                     # train_score_a / _v start at 0
//! for it, (sa, sv) in enumerate([(0.9, 1.3), (0.5, 1.4), (1.2, 1.0), (0.05, 6.0), (0.3, 0.2)], 1):
//!     ratio_a = math.exp(sv - sa); ratio_v = math.exp(sa - sv)
//!     optimal_ratio_a = math.exp(tv - ta); optimal_ratio_v = math.exp(ta - tv)
//!     coeff_a = math.exp(alpha * min(optimal_ratio_a - ratio_a, 10))
//!     coeff_v = math.exp(alpha * min(optimal_ratio_v - ratio_v, 10))
//!     ta = ta * (it - 1) / it + sa / it; tv = tv * (it - 1) / it + sv / it
//! # coeff_a: 0.4781948247065955, 0.23417943990956297, 5.182124534097187,
//! #          8.851969324666522e-250, 1608.7678803709546
//! # coeff_v: 1.639710875629748, 1.4853130816728015, 0.3502754366622332,
//! #          2.8169427604312043, 0.24651475141298307
//! # (ta, tv) after step 5: 0.59, 1.98
//! ```

mod common;

use candle_core::{Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, MultimodalOutput, RunContext};
use modbal::encoders::{FusionConfig, MultimodalNet};
use modbal::methods::agm::{
    check_modalities, coefficients, modulated_output, ratios, scores, shapley_responses, Agm,
    AgmConfig, AgmRunning, AgmSign, SCORE_FLOOR,
};
use modbal::tensors::SeededRng;

// ---------------------------------------------------------------- helpers

/// An MLP net with `m` modalities (non-zero head bias) and a batch in which `audio` carries
/// the label.
fn tiny(m: usize, b: usize, fusion: FusionConfig) -> (MultimodalNet, Batch) {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(11);
    let net = common::tiny_mlp_net(m, &fusion, &mut rng);
    for (name, v) in net.params().trainable() {
        if name.starts_with("head") && name.ends_with("bias") {
            let n = v.as_tensor().elem_count();
            let vals: Vec<f32> = (0..n).map(|i| 0.2 * (i as f32 + 1.0)).collect();
            v.set(&Tensor::from_vec(vals, v.as_tensor().shape(), &dev).unwrap())
                .unwrap();
        }
    }
    let batch = common::audio_label_batch(m, b, &mut rng);
    (net, batch)
}

fn param(net: &MultimodalNet, name: &str) -> Tensor {
    net.params()
        .trainable()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .1
        .as_tensor()
        .clone()
}

fn forward(net: &MultimodalNet, batch: &Batch) -> MultimodalOutput {
    net.forward_t(&batch.inputs, true).unwrap()
}

fn head_of(net: &MultimodalNet, f: &[Tensor], keep: &[bool]) -> Vec<Vec<f64>> {
    common::rows(&net.head(&common::mask_features(f, keep)).unwrap().0)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

fn labels_u32(batch: &Batch) -> Vec<u32> {
    batch.labels.to_vec1::<u32>().unwrap()
}

// ---------------------------------------------------------------- the maths

/// Concat head, M = 2 and 3: `φ_m = W_m f_m + b/M` (the Shapley split of an additive game with
/// `z(∅) = 0`), and `Σ_m φ_m = z(all)` (efficiency).
#[test]
fn responses_split_the_concat_head_additively() {
    for m in [2usize, 3] {
        let (net, batch) = tiny(m, 5, FusionConfig::Concat);
        let out = forward(&net, &batch);
        let phi = shapley_responses(&net, &out.features, &out.fused_logits).unwrap();
        assert_eq!(phi.len(), m);
        let w = common::rows(&param(&net, "head.fc.weight"));
        let b = common::v64(&param(&net, "head.fc.bias"));
        let fr: Vec<Vec<Vec<f64>>> = out.features.iter().map(common::rows).collect();
        let fused = common::rows(&out.fused_logits);
        let mut sum = vec![vec![0.0; 3]; 5];
        let mut off = 0;
        for (k, p) in phi.iter().enumerate() {
            let got = common::rows(p);
            let d = fr[k][0].len();
            for i in 0..5 {
                for c in 0..3 {
                    let closed =
                        b[c] / m as f64 + (0..d).map(|j| w[c][off + j] * fr[k][i][j]).sum::<f64>();
                    assert!(close(got[i][c], closed, 1e-5), "M={m} k={k} i={i} c={c}");
                    sum[i][c] += got[i][c];
                }
            }
            off += d;
        }
        for i in 0..5 {
            for c in 0..3 {
                assert!(close(sum[i][c], fused[i][c], 1e-5), "efficiency M={m}");
            }
        }
    }
}

/// The official response formulas on a non-additive head would be the same sums of coalition
/// outputs; here they are restated on the coalition outputs of the model's own head:
/// M = 2 (`Modality_Audio`): `½(z(av) − z(v) + z(a))`; M = 3 (`Modality_Audio`, MOSEI):
/// `⅓(z(avt) − z(vt)) + ⅙(z(av) − z(v) + z(at) − z(t)) + ⅓ z(a)`.
#[test]
fn responses_match_the_official_coalition_formulas() {
    let (net, batch) = tiny(2, 4, FusionConfig::Sum);
    let out = forward(&net, &batch);
    let phi = shapley_responses(&net, &out.features, &out.fused_logits).unwrap();
    let f = &out.features;
    let av = head_of(&net, f, &[true, true]);
    let a = head_of(&net, f, &[true, false]);
    let v = head_of(&net, f, &[false, true]);
    let (pa, pv) = (common::rows(&phi[0]), common::rows(&phi[1]));
    for i in 0..4 {
        for c in 0..3 {
            assert!(close(pa[i][c], 0.5 * (av[i][c] - v[i][c] + a[i][c]), 1e-5));
            assert!(close(pv[i][c], 0.5 * (av[i][c] - a[i][c] + v[i][c]), 1e-5));
        }
    }
    let (net, batch) = tiny(3, 4, FusionConfig::Concat);
    let out = forward(&net, &batch);
    let phi = shapley_responses(&net, &out.features, &out.fused_logits).unwrap();
    let f = &out.features;
    let h = |a: bool, v: bool, t: bool| head_of(&net, f, &[a, v, t]);
    let (avt, av, at, vt) = (
        h(true, true, true),
        h(true, true, false),
        h(true, false, true),
        h(false, true, true),
    );
    let (a, v, t) = (
        h(true, false, false),
        h(false, true, false),
        h(false, false, true),
    );
    let pa = common::rows(&phi[0]);
    for i in 0..4 {
        for c in 0..3 {
            let official = (avt[i][c] - vt[i][c]) / 3.0
                + (av[i][c] - v[i][c] + at[i][c] - t[i][c]) / 6.0
                + a[i][c] / 3.0;
            assert!(close(pa[i][c], official, 1e-5), "i={i} c={c}");
        }
    }
}

/// `s_m = mean_i min(−log softmax(φ_m,i)[y_i], −log 1e-8)`, the floor included.
#[test]
fn scores_are_the_floored_mono_modal_cross_entropy() {
    let dev = Device::Cpu;
    let rows_a = [[2.0f32, 0.0, 1.0], [0.0, 40.0, 0.0]]; // second row: p(y=0) ≈ e^-40 < 1e-8
    let rows_v = [[0.5f32, 0.5, 0.0], [1.0, 0.0, 3.0]];
    let t = |r: &[[f32; 3]; 2]| Tensor::from_vec(r.concat(), (2, 3), &dev).unwrap();
    let labels = [0u32, 0];
    let got = scores(&[t(&rows_a), t(&rows_v)], &labels).unwrap();
    let ce = |r: &[f32; 3], y: usize| {
        let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + r.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        lse - r[y] as f64
    };
    let sa = (ce(&rows_a[0], 0) + SCORE_FLOOR) / 2.0;
    let sv = (ce(&rows_v[0], 0) + ce(&rows_v[1], 0)) / 2.0;
    assert!(ce(&rows_a[1], 0) > SCORE_FLOOR, "the floor is exercised");
    assert!(close(got[0], sa, 1e-9), "{} vs {sa}", got[0]);
    assert!(close(got[1], sv, 1e-9), "{} vs {sv}", got[1]);
    assert!(close(SCORE_FLOOR, -(1e-8f64).ln(), 1e-15));
}

/// `r_m = exp(M/(M−1)·(s̄ − s_m))` (official) and its reverse; `c = exp(α·min(r̂ − r, cap))`.
#[test]
fn ratios_and_coefficients_match_their_closed_forms() {
    let r = ratios(&[0.9, 1.3], AgmSign::Official);
    assert!(close(r[0], (1.3f64 - 0.9).exp(), 1e-12) && close(r[1], (0.9f64 - 1.3).exp(), 1e-12));
    let r = ratios(&[0.9, 1.3], AgmSign::Reversed);
    assert!(close(r[0], (0.9f64 - 1.3).exp(), 1e-12));
    // Three modalities: the official MOSEI loop's exp((mean − s)·3/2).
    let s = [0.4, 1.0, 2.2];
    let mean = (0.4 + 1.0 + 2.2) / 3.0;
    let r = ratios(&s, AgmSign::Official);
    for k in 0..3 {
        assert!(close(r[k], ((mean - s[k]) * 1.5).exp(), 1e-12));
    }
    let c = coefficients(&[20.0, 0.5], &[1.0, 0.25], 1.5, 10.0);
    assert!(close(c[0], (1.5f64 * 10.0).exp(), 1e-12), "capped");
    assert!(close(c[1], (1.5f64 * 0.25).exp(), 1e-12));
}

/// The official loop's arithmetic over five steps (numbers in the module docs).
#[test]
fn running_state_reproduces_the_official_loop() {
    let cfg = AgmConfig::default();
    assert_eq!((cfg.alpha, cfg.cap), (1.5, 10.0));
    let mut run = AgmRunning::default();
    let seq = [(0.9, 1.3), (0.5, 1.4), (1.2, 1.0), (0.05, 6.0), (0.3, 0.2)];
    let ca = [
        0.4781948247065955,
        0.23417943990956297,
        5.182124534097187,
        8.851969324666522e-250,
        1608.7678803709546,
    ];
    let cv = [
        1.639710875629748,
        1.4853130816728015,
        0.3502754366622332,
        2.8169427604312043,
        0.24651475141298307,
    ];
    for (t, &(sa, sv)) in seq.iter().enumerate() {
        let step = run.step(&[sa, sv], &cfg, true);
        assert!(
            close(step.coeffs[0], ca[t], 1e-9),
            "step {t}: {:?}",
            step.coeffs
        );
        assert!(
            close(step.coeffs[1], cv[t], 1e-9),
            "step {t}: {:?}",
            step.coeffs
        );
    }
    assert_eq!(run.steps, 5);
    assert!(close(run.means[0], 0.59, 1e-12) && close(run.means[1], 1.98, 1e-12));
    // Outside the window: coefficients 1, the running means still move.
    let step = run.step(&[1.0, 1.0], &cfg, false);
    assert_eq!(step.coeffs, vec![1.0, 1.0]);
    assert!(close(run.means[0], (0.59 * 5.0 + 1.0) / 6.0, 1e-12));
    // The reversed sign flips which modality is slowed (step 1: audio stronger).
    let mut rev = AgmRunning::default();
    let s = rev.step(
        &[0.9, 1.3],
        &AgmConfig {
            sign: AgmSign::Reversed,
            ..cfg
        },
        true,
    );
    assert!(s.coeffs[0] > 1.0 && s.coeffs[1] < 1.0, "{:?}", s.coeffs);
}

/// The straight-through output has the value of `z(all)` and, on the concat head, gives encoder
/// `m` and its head slice `c_m` times their plain gradients and the bias `mean(c)` times.
#[test]
fn gradients_are_scaled_per_modality() {
    let (net, batch) = tiny(2, 6, FusionConfig::Concat);
    let c = [0.5, 2.0];
    let out = forward(&net, &batch);
    let plain = modbal::tensors::cross_entropy(&out.fused_logits, &batch.labels)
        .unwrap()
        .backward()
        .unwrap();
    let phi = shapley_responses(&net, &out.features, &out.fused_logits).unwrap();
    let z = modulated_output(&phi, &c).unwrap();
    let (zr, fr) = (common::rows(&z), common::rows(&out.fused_logits));
    for i in 0..6 {
        for k in 0..3 {
            assert!(close(zr[i][k], fr[i][k], 1e-5));
        }
    }
    let agm = modbal::tensors::cross_entropy(&z, &batch.labels)
        .unwrap()
        .backward()
        .unwrap();
    let d_a = out.features[0].dim(1).unwrap();
    let mut checked = 0;
    for (name, v) in net.params().trainable() {
        let (g0, g1) = (
            common::v64(plain.get(v.as_tensor()).unwrap()),
            common::v64(agm.get(v.as_tensor()).unwrap()),
        );
        let scale_of = |j: usize| -> f64 {
            if name.starts_with("encoder.audio") {
                c[0]
            } else if name.starts_with("encoder.visual") {
                c[1]
            } else if name == "head.fc.bias" {
                (c[0] + c[1]) / 2.0
            } else {
                // head.fc.weight [C, D_a + D_v], row-major: column j % (D_a + D_v).
                let cols = g0.len() / 3;
                if j % cols < d_a {
                    c[0]
                } else {
                    c[1]
                }
            }
        };
        for j in 0..g0.len() {
            assert!(close(g1[j], scale_of(j) * g0[j], 1e-4), "{name}[{j}]");
        }
        checked += 1;
    }
    assert!(checked >= 6, "{checked} tensors");
}

/// Through the `loss` hook: the loss value is the plain fused CE, the first step's targets are
/// 1 (running means 0) and the coefficients follow from the step's own scores.
#[test]
fn loss_hook_applies_the_first_steps_coefficients() {
    let (net, batch) = tiny(2, 6, FusionConfig::Concat);
    let out = forward(&net, &batch);
    let mut method = Agm::new(AgmConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    method.on_stage_start(&net, &mut ctx).unwrap();
    let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
    let plain = modbal::tensors::cross_entropy(&out.fused_logits, &batch.labels).unwrap();
    let (l, p) = (
        loss.total.to_scalar::<f32>().unwrap() as f64,
        plain.to_scalar::<f32>().unwrap() as f64,
    );
    assert!(close(l, p, 1e-5), "{l} vs {p}");
    let phi = shapley_responses(&net, &out.features, &out.fused_logits).unwrap();
    let s = scores(&phi, &labels_u32(&batch)).unwrap();
    let step = method.last_step().unwrap();
    assert_eq!(step.targets, vec![1.0, 1.0]);
    for k in 0..2 {
        let r = (s[1 - k] - s[k]).exp();
        assert!(close(
            step.coeffs[k],
            (1.5 * (1.0 - r).min(10.0)).exp(),
            1e-9
        ));
    }
    assert!(close(method.running().means[0], s[0], 1e-12));
    // Outside the window: coefficient 1.
    let mut off = Agm::new(AgmConfig {
        window: modbal::modulate::ModulationWindow { start: 1, end: 3 },
        ..AgmConfig::default()
    })
    .unwrap();
    off.loss(&net, &batch, &out, &mut ctx).unwrap();
    assert_eq!(off.last_step().unwrap().coeffs, vec![1.0, 1.0]);
}

/// Clipping: when an element of the head's weight gradients exceeds `clip`, the global norm is
/// clipped to `clip`; `clip = 0` leaves the gradients alone.
#[test]
fn head_gradient_peak_triggers_global_clipping() {
    let (net, batch) = tiny(2, 6, FusionConfig::Concat);
    let all = net.params().trainable();
    for (clip, expect_clipped) in [(1e-3, true), (0.0, false), (1e6, false)] {
        let out = forward(&net, &batch);
        let mut grads = modbal::tensors::cross_entropy(&out.fused_logits, &batch.labels)
            .unwrap()
            .backward()
            .unwrap();
        let before = modbal::tensors::clip::global_grad_norm(&grads, &all).unwrap();
        let mut method = Agm::new(AgmConfig {
            clip,
            ..AgmConfig::default()
        })
        .unwrap();
        let mut ctx = RunContext::new(0, Device::Cpu, 1);
        method
            .modulate_grads(&mut grads, &net, &batch, &out, &mut ctx)
            .unwrap();
        let after = modbal::tensors::clip::global_grad_norm(&grads, &all).unwrap();
        if expect_clipped {
            assert!(
                before > clip && close(after, clip, 1e-3),
                "{before} → {after}"
            );
        } else {
            assert!(
                close(after, before, 1e-9),
                "clip={clip}: {before} → {after}"
            );
        }
    }
}

#[test]
fn one_or_five_modalities_are_errors_naming_agm() {
    let e = check_modalities(1).unwrap_err().to_string();
    assert!(e.contains("agm") && e.contains("at least two"), "{e}");
    let e = check_modalities(5).unwrap_err().to_string();
    assert!(e.contains("agm") && e.contains("M <= 4"), "{e}");
    let (net, _) = tiny(1, 4, FusionConfig::Concat);
    let mut method = Agm::new(AgmConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 1);
    let e = method
        .on_stage_start(&net, &mut ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("agm"), "{e}");
    // Five modalities through the model.
    use modbal::encoders::{EncoderConfig, ModalitySpec};
    let specs: Vec<_> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| ModalitySpec::new(*n, EncoderConfig::Mlp { hidden: vec![4] }, &[4]))
        .collect();
    let mut rng = SeededRng::new(0);
    let net5 =
        MultimodalNet::new(&specs, &FusionConfig::Concat, 3, &mut rng, &Device::Cpu).unwrap();
    let e = method
        .on_stage_start(&net5, &mut ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("M <= 4") && e.contains('5'), "{e}");
}

#[test]
fn registry_builds_agm_with_its_defaults_and_rejects_bad_values() {
    let b = common::build_method("agm", &toml::Table::new()).unwrap();
    assert_eq!(b.fusion, FusionConfig::Concat);
    assert_eq!(b.resolved["alpha"].as_float(), Some(1.5));
    assert_eq!(b.resolved["cap"].as_float(), Some(10.0));
    assert_eq!(b.resolved["clip"].as_float(), Some(1.0));
    assert_eq!(b.resolved["sign"].as_str(), Some("official"));
    assert_eq!(b.resolved["window"]["end"].as_integer(), Some(1500));
    assert_eq!(b.resolved["head"].as_str(), Some("concat"));
    let mut t = toml::Table::new();
    t.insert("head".into(), toml::Value::String("sum".into()));
    assert_eq!(
        common::build_method("agm", &t).unwrap().fusion,
        FusionConfig::Sum
    );
    for (key, value) in [
        ("alpha", toml::Value::Float(-1.0)),
        ("cap", toml::Value::Float(0.0)),
        ("clip", toml::Value::Float(f64::NAN)),
        ("sign", toml::Value::String("paper".into())),
        ("alhpa", toml::Value::Float(1.0)),
    ] {
        let e = common::option_error("agm", key, value);
        assert!(e.contains(key) || e.contains("paper"), "{key}: {e}");
    }
}

// ---------------------------------------------------------------- runs

/// A short synth-vec run logs the mechanism every epoch and learns; on synth-vec the audio-like
/// first modality dominates, so it is the one AGM slows on average.
#[test]
fn runs_log_the_mechanism_and_learn() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(dir.path(), "agm", 0, 5, &[]);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 5);
    for r in &train {
        let m = &r.method;
        eprintln!(
            "agm {}: s {} s_avg {} r {} coeff {} clipped {}",
            r.epoch, m["s"], m["s_avg"], m["r"], m["coeff"], m["clipped"]
        );
        assert_eq!(m["coeff"].as_object().unwrap().len(), 2);
        assert_eq!(m["active"].as_f64(), Some(1.0));
        for k in ["s", "s_avg", "r", "r_target", "coeff"] {
            for (_, v) in m[k].as_object().unwrap() {
                assert!(v.as_f64().unwrap().is_finite(), "{k}");
            }
        }
        assert!(m.get("loss.fused").is_some());
    }
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.5);
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = common::run_method(a.path(), "agm", 5, 2, &[]);
    let rb = common::run_method(b.path(), "agm", 5, 2, &[]);
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(read(&ra.run_dir), read(&rb.run_dir));
}

/// A run stopped after its first epoch and resumed writes the same metrics as an uninterrupted
/// one (the running means and step count travel in the checkpoint).
#[test]
fn resumed_runs_match_uninterrupted_ones() {
    common::assert_resume_matches(&["method.name=agm".to_string()], 3, 3, 1, "agm");
}

/// Three modalities end to end (synth-vec with its text modality).
#[test]
fn three_modality_runs_train() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(dir.path(), "agm", 1, 2, &["dataset.third_modality=true"]);
    let last = o.history.iter().rfind(|r| r.split == "train").unwrap();
    assert_eq!(last.method["coeff"].as_object().unwrap().len(), 3);
}
