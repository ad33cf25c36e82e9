//! `opm` and `opm-ge` (Wei, Hu, Du & Wen, "On-the-fly Modulation for Balanced Multimodal
//! Learning", TPAMI 2024; official code GeWu-Lab/BML_TPAMI2024): each mechanism against its
//! closed form computed here independently, the official `calcu_q` arithmetic, resume, three
//! modalities and short runs through the registry.
//!
//! Reference numbers (`calcu_q`, `θ`) were computed with Python 3's `math` module (no torch or
//! numpy on the development machine), restating the official code's arithmetic:
//!
//! ```python
//! import math
//! # calcu_q(performance_1=12, performance_2=8, q_base=0.5, fix_lambda=0.5)
//! r1 = math.tanh(max(12/8 - 1, 0)); r2 = math.tanh(max(8/12 - 1, 0))
//! q = [0.5*(1 + 0.5*r1) if r1 > 0 else 0, 0.5*(1 + 0.5*r2) if r2 > 0 else 0]
//! # -> [0.6155292893150024, 0]
//! theta = (512*q[0] + 512*q[1]) / 1024        # Modality_drop: sum(d*q)/sum(d)
//! # -> 0.3077646446575012, 1/(1 - theta) = 1.4445953854888383
//! min(0.9*(1 + 0.5*math.tanh(30/10 - 1)), 1)  # q_base 0.9: clipped, 1.3338… -> 1.0
//! ```

mod common;

use candle_core::{Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{FusionConfig, MultimodalNet};
use modbal::methods::opm::{OpmConfig, OpmGeConfig, OpmMethod};
use modbal::modulate::{ModulationWindow, Opm, OpmConfig as OpmModConfig};
use modbal::tensors::{cross_entropy, SeededRng};

// ---------------------------------------------------------------- helpers

/// A two- or three-modality MLP net and a batch in which `audio` carries the label.
fn tiny(modalities: usize, b: usize) -> (MultimodalNet, Batch) {
    let mut rng = SeededRng::new(3);
    let net = common::tiny_mlp_net(modalities, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(modalities, b, &mut rng);
    (net, batch)
}

/// `Σ_i softmax(z_i)[y_i]` in f64 (OGM-GE eq 9).
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

/// The closed form `q = clip(q_base(1 + λ tanh(ρ − 1)), 0, 1)` if ρ > 1 else 0, ρ = s / min s.
fn q_closed(scores: &[f64], q_base: f64, lambda: f64) -> Vec<f64> {
    let min = scores.iter().cloned().fold(f64::INFINITY, f64::min);
    scores
        .iter()
        .map(|s| {
            let r = s / min;
            if r > 1.0 {
                (q_base * (1.0 + lambda * (r - 1.0).tanh())).min(1.0)
            } else {
                0.0
            }
        })
        .collect()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{what}: {x} vs {y}");
    }
}

fn opm_literal(p_exe: f64) -> OpmConfig {
    OpmConfig {
        p_exe,
        window: ModulationWindow { start: 0, end: 10 },
        schedule_epochs: 0,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- the maths

/// `q` against the official `calcu_q` (numbers in the module docs): the dominant modality gets
/// `q_base(1 + λ tanh(ρ − 1))`, the weaker 0; ties give 0 to both; `q` is clipped at 1; a zero
/// minimum score gives `ρ = ∞`, `q = q_base(1 + λ)`.
#[test]
fn drop_probabilities_match_the_official_calcu_q() {
    let opm = Opm::new(OpmModConfig::default()).unwrap();
    let (rho, q) = opm.drop_probabilities(&[12.0, 8.0]).unwrap();
    assert_close(&rho, &[1.5, 1.0], 1e-15, "rho");
    assert_close(
        &q,
        &[0.6155292893150024, 0.0],
        1e-15,
        "q (official calcu_q)",
    );
    // Order does not matter: visual dominant.
    let (_, q) = opm.drop_probabilities(&[8.0, 12.0]).unwrap();
    assert_close(&q, &[0.0, 0.6155292893150024], 1e-15, "q swapped");
    // Tie: nobody is dropped.
    assert_eq!(
        opm.drop_probabilities(&[5.0, 5.0]).unwrap().1,
        vec![0.0, 0.0]
    );
    // Clip at 1 (q_base 0.9: 1.3338… before clipping).
    let clip = Opm::new(OpmModConfig {
        q_base: 0.9,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        clip.drop_probabilities(&[30.0, 10.0]).unwrap().1,
        vec![1.0, 0.0]
    );
    // Zero minimum score: ρ = ∞, q = q_base (1 + λ) = 0.75.
    let (rho, q) = opm.drop_probabilities(&[3.0, 0.0]).unwrap();
    assert!(rho[0].is_infinite() && rho[1] == 1.0);
    assert_close(&q, &[0.75, 0.0], 1e-15, "zero min");
    // Three modalities: ratios to the minimum, the weakest never dropped.
    let s = [9.0, 6.0, 3.0];
    let (_, q) = opm.drop_probabilities(&s).unwrap();
    assert_close(&q, &q_closed(&s, 0.5, 0.5), 1e-15, "three modalities");
    assert!(q[0] > q[1] && q[1] > 0.0 && q[2] == 0.0);
    // Bad scores are errors naming OPM.
    let e = opm
        .drop_probabilities(&[f64::NAN, 1.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("OPM"), "{e}");
    let e = opm
        .drop_probabilities(&[-1.0, 1.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("negative"), "{e}");
}

/// `θ = Σ D_m q_m / Σ D_m` (official `Modality_drop`: `sum(dim_list*q)/sum(dim_list)`).
#[test]
fn theta_is_the_dimension_weighted_drop_share() {
    let t = Opm::theta(&[512, 512], &[0.6155292893150024, 0.0]).unwrap();
    assert!((t - 0.3077646446575012).abs() < 1e-15, "{t}");
    let t = Opm::theta(&[4, 12], &[0.5, 0.25]).unwrap();
    assert!((t - (2.0 + 3.0) / 16.0).abs() < 1e-15, "{t}");
    assert!(Opm::theta(&[4], &[0.5, 0.1]).is_err());
}

/// The drop is executed on a share `p_exe` of the batches; when executed, each sample keeps the
/// dominant modality with probability `1 − q` and always keeps the weakest one (4000 batches:
/// binomial standard errors 0.007 and 0.004, tolerances over 4 of them).
#[test]
fn draws_execute_with_p_exe_and_keep_with_one_minus_q() {
    let opm = Opm::new(OpmModConfig::default()).unwrap();
    let q = [0.6155292893150024, 0.0];
    let mut rng = SeededRng::new(11);
    let (mut executed, mut kept, mut total) = (0usize, 0usize, 0usize);
    for _ in 0..4000 {
        let d = opm.draw(&q, 8, &mut rng);
        assert!(
            d.keep[1].iter().all(|k| *k),
            "the weak modality is never dropped"
        );
        if d.executed {
            executed += 1;
            kept += d.keep[0].iter().filter(|k| **k).count();
            total += 8;
        } else {
            assert!(d.keep[0].iter().all(|k| *k));
        }
    }
    let pe = executed as f64 / 4000.0;
    assert!((pe - 0.7).abs() < 0.03, "execution share {pe}");
    let pk = kept as f64 / total as f64;
    assert!((pk - (1.0 - q[0])).abs() < 0.02, "keep share {pk}");
    // p_exe = 0: never; p_exe = 1: always.
    for (p, want) in [(0.0, false), (1.0, true)] {
        let o = Opm::new(OpmModConfig {
            p_exe: p,
            ..Default::default()
        })
        .unwrap();
        assert!(
            (0..50).all(|_| o.draw(&q, 4, &mut rng).executed == want),
            "p_exe {p}"
        );
    }
}

/// One `opm` forward inside the window: the per-modality logits are those of the clean features,
/// and the fused logits are the head applied to `mask · f / (1 − θ)`, with the masks replayed
/// from the same seed (execution draw, then keep draws modality-major); outside the window the
/// fused logits are the clean ones and no random number is drawn.
#[test]
fn forward_drops_whole_features_per_sample_and_rescales_by_theta() {
    let (net, batch) = tiny(2, 24);
    let cfg = opm_literal(1.0);
    let mut method = OpmMethod::new(cfg.clone()).unwrap();
    let seed = 17;
    let mut ctx = RunContext::new(seed, Device::Cpu, 10);
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    // Independent recomputation.
    let f: Vec<Tensor> = (0..2)
        .map(|m| net.encode(m, &batch.inputs[m], true).unwrap())
        .collect();
    let (_, clean) = net.head(&f).unwrap();
    for m in 0..2 {
        assert_close(
            &common::v64(&out.per_modality_logits[m]),
            &common::v64(&clean[m]),
            1e-6,
            "clean per-modality logits",
        );
    }
    let y: Vec<usize> = batch
        .labels
        .to_vec1::<u32>()
        .unwrap()
        .iter()
        .map(|x| *x as usize)
        .collect();
    let s: Vec<f64> = clean.iter().map(|z| score(&common::rows(z), &y)).collect();
    // The untrained net: whichever modality scores higher is the dominant one.
    let (dom, weak) = if s[0] > s[1] { (0, 1) } else { (1, 0) };
    assert!(s[dom] > s[weak], "{s:?}");
    let q = q_closed(&s, cfg.q_base, cfg.lambda);
    let dims = [8.0, 8.0];
    let theta = (dims[0] * q[0] + dims[1] * q[1]) / (dims[0] + dims[1]);
    let mut rng = SeededRng::new(seed);
    assert!(rng.uniform() >= 1.0 - cfg.p_exe);
    let keep: Vec<Vec<bool>> = q
        .iter()
        .map(|qm| (0..24).map(|_| rng.uniform() < 1.0 - qm).collect())
        .collect();
    let dropped = keep[dom].iter().filter(|k| !**k).count();
    assert!(
        dropped > 0 && dropped < 24,
        "some dominant features dropped: {dropped}"
    );
    assert!(keep[weak].iter().all(|k| *k));
    // fused = W·[f̃_a; f̃_v] + b by hand.
    let w = common::rows(common::var(&net, "head.fc.weight").as_tensor());
    let b = common::v64(common::var(&net, "head.fc.bias").as_tensor());
    let fa = common::rows(&f[0]);
    let fv = common::rows(&f[1]);
    let got = common::rows(&out.fused_logits);
    for i in 0..24 {
        let x: Vec<f64> = [(&fa[i], keep[0][i]), (&fv[i], keep[1][i])]
            .iter()
            .flat_map(|(r, k)| {
                r.iter()
                    .map(move |v| if *k { v / (1.0 - theta) } else { 0.0 })
            })
            .collect();
        let want: Vec<f64> = w
            .iter()
            .zip(&b)
            .map(|(wr, bc)| wr.iter().zip(&x).map(|(a, c)| a * c).sum::<f64>() + bc)
            .collect();
        assert_close(&got[i], &want, 1e-5, &format!("fused logits of sample {i}"));
    }
    // The same RNG stream position: the method drew exactly 1 + 2·24 numbers.
    assert_eq!(ctx.rng.uniform(), rng.uniform());

    // Outside the window: clean fused logits, no draws.
    let mut ctx = RunContext::new(seed, Device::Cpu, 10);
    ctx.epoch = 10;
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    let (clean_fused, _) = net.head(&f).unwrap();
    assert_close(
        &common::v64(&out.fused_logits),
        &common::v64(&clean_fused),
        1e-6,
        "no drop outside the window",
    );
    assert_eq!(ctx.rng.uniform(), SeededRng::new(seed).uniform());
}

/// `opm-ge` modulates the encoders' gradients as OGM-GE does (`ge = false` here so the check
/// is exact): with the drop switched off (`p_exe = 0`), the dominant modality's encoder weight
/// gradients are `k = 1 − tanh(α·ρ)` times the plain cross-entropy gradients, the weaker one's
/// (ρ = 1) unchanged, and
/// biases untouched (scope `auto` on MLPs: weight matrices).
#[test]
fn opm_ge_modulates_encoder_gradients_like_ogm_ge() {
    let (net, batch) = tiny(2, 24);
    let cfg = OpmGeConfig {
        p_exe: 0.0,
        window: ModulationWindow { start: 0, end: 10 },
        ogm_window: ModulationWindow { start: 0, end: 10 },
        schedule_epochs: 0,
        ge: false,
        ..Default::default()
    };
    let mut method = OpmMethod::with_ogm_ge(&cfg).unwrap();
    assert_eq!(method.name(), "opm-ge");
    let mut ctx = RunContext::new(5, Device::Cpu, 10);
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
    let grads = method
        .backward(&net, &batch, &out, &loss, &mut ctx)
        .unwrap();
    // Plain gradients of the same loss, recomputed.
    let plain = cross_entropy(
        &net.forward_t(&batch.inputs, true).unwrap().fused_logits,
        &batch.labels,
    )
    .unwrap()
    .backward()
    .unwrap();
    let y: Vec<usize> = batch
        .labels
        .to_vec1::<u32>()
        .unwrap()
        .iter()
        .map(|x| *x as usize)
        .collect();
    let s: Vec<f64> = out
        .per_modality_logits
        .iter()
        .map(|z| score(&common::rows(z), &y))
        .collect();
    let (dom, rho) = if s[0] > s[1] {
        ("encoder.audio", s[0] / s[1])
    } else {
        ("encoder.visual", s[1] / s[0])
    };
    assert!(rho > 1.0, "{s:?}");
    let k = 1.0 - (cfg.alpha * rho).tanh();
    let mut checked = 0;
    for (name, v) in net.params().trainable() {
        let (Some(g), Some(p)) = (grads.get(v.as_tensor()), plain.get(v.as_tensor())) else {
            continue;
        };
        let factor = if name.starts_with(dom) && v.rank() >= 2 {
            k
        } else {
            1.0
        };
        let want: Vec<f64> = common::v64(p).iter().map(|x| x * factor).collect();
        let scale = want.iter().map(|x| x.abs()).fold(1e-12, f64::max);
        for (a, b) in common::v64(g).iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{name}: {a} vs {b} (factor {factor})"
            );
        }
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
}

/// Three modalities: the ratio-to-minimum generalisation (as `ogm-ge`); the weakest modality is
/// never dropped, the others are, and the forward matches its closed form in shape and masks.
#[test]
fn three_modalities_drop_all_but_the_weakest() {
    let (net, batch) = tiny(3, 30);
    let mut method = OpmMethod::new(opm_literal(1.0)).unwrap();
    let mut ctx = RunContext::new(2, Device::Cpu, 10);
    let mut dropped = [0.0; 3];
    for e in 0..3 {
        ctx.epoch = e;
        let out = method.forward(&net, &batch, &mut ctx).unwrap();
        assert_eq!(out.fused_logits.dims(), &[30, 3]);
    }
    method.on_epoch_end(&net, &mut ctx).unwrap();
    let log = ctx.log.take();
    for (m, name) in ["audio", "visual", "text"].iter().enumerate() {
        dropped[m] = log["dropped"][*name].as_f64().unwrap();
    }
    let q = &log["q"];
    let qs: Vec<f64> = ["audio", "visual", "text"]
        .iter()
        .map(|n| q[*n].as_f64().unwrap())
        .collect();
    let weakest = (0..3).min_by(|a, b| qs[*a].total_cmp(&qs[*b])).unwrap();
    assert_eq!(qs[weakest], 0.0, "{qs:?}");
    assert_eq!(dropped[weakest], 0.0, "{dropped:?}");
    assert!(dropped[0] > 0.0, "audio (dominant) dropped: {dropped:?}");
}

// ---------------------------------------------------------------- registry and runs

#[test]
fn registry_builds_opm_and_opm_ge_with_their_defaults_and_rejects_bad_values() {
    let b = common::build_method("opm", &toml::Table::new()).unwrap();
    assert_eq!(b.fusion, FusionConfig::Concat);
    assert_eq!(b.resolved["q_base"].as_float(), Some(0.5));
    assert_eq!(b.resolved["lambda"].as_float(), Some(0.5));
    assert_eq!(b.resolved["p_exe"].as_float(), Some(0.7));
    assert_eq!(b.resolved["window"]["start"].as_integer(), Some(6));
    assert_eq!(b.resolved["window"]["end"].as_integer(), Some(100));
    let b = common::build_method("opm-ge", &toml::Table::new()).unwrap();
    assert_eq!(b.resolved["alpha"].as_float(), Some(0.8));
    assert_eq!(b.resolved["ogm_window"]["end"].as_integer(), Some(61));
    assert_eq!(b.resolved["ge"].as_bool(), Some(true));
    for (name, key, value) in [
        ("opm", "q_base", toml::Value::Float(1.5)),
        ("opm", "p_exe", toml::Value::Float(-0.1)),
        ("opm-ge", "lambda", toml::Value::Float(-1.0)),
        ("opm-ge", "alpha", toml::Value::Float(-1.0)),
        ("opm", "alpha", toml::Value::Float(0.8)),
    ] {
        let e = common::option_error(name, key, value);
        assert!(e.contains(key), "{name}.{key}: {e}");
    }
}

/// Short runs through the registry on synth-vec: every mechanism logged, the drop only inside
/// the scaled window (official [6, 100) of 100 → [1, 12) of 12 epochs), the weaker modality
/// dropped less, OGM's window [6, 61) → [1, 7).
#[test]
fn runs_log_the_mechanism_inside_the_scaled_windows() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["opm", "opm-ge"] {
        let o = common::run_method(dir.path(), name, 0, 12, &[]);
        let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
        assert_eq!(train.len(), 12);
        for r in &train {
            let m = &r.method;
            eprintln!(
                "{name} {}: q {} dropped {} executed {} theta {} k {:?}",
                r.epoch,
                m["q"],
                m["dropped"],
                m["executed"],
                m["theta"],
                m.get("ogm.k")
            );
            assert_eq!(m["window.start"].as_f64(), Some(1.0));
            assert_eq!(m["window.end"].as_f64(), Some(12.0));
            let exe = m["executed"].as_f64().unwrap();
            if r.epoch == 0 {
                assert_eq!(m["active"].as_f64(), Some(0.0));
                assert_eq!(exe, 0.0);
                assert_eq!(m["dropped"]["audio"].as_f64(), Some(0.0));
            } else {
                assert_eq!(m["active"].as_f64(), Some(1.0));
                assert!((0.3..=1.0).contains(&exe), "{exe}");
                assert!(
                    m["q"]["audio"].as_f64().unwrap() >= 0.5,
                    "audio dominates synth-vec"
                );
                assert!(m["dropped"]["audio"].as_f64().unwrap() > 0.0);
                let th = m["theta"].as_f64().unwrap();
                assert!(th > 0.0 && th < 1.0, "{th}");
            }
            // Per batch the weaker modality is never dropped; over the epoch visual (weaker on
            // synth-vec) loses fewer features than audio.
            let (da, dv) = (
                m["dropped"]["audio"].as_f64().unwrap(),
                m["dropped"]["visual"].as_f64().unwrap(),
            );
            assert!(dv <= da, "{dv} vs {da}");
            if name == "opm-ge" {
                assert_eq!(m["ogm.window.end"].as_f64(), Some(7.0));
                let active = m["ogm.active"].as_f64().unwrap();
                assert_eq!(active, if (1..7).contains(&r.epoch) { 1.0 } else { 0.0 });
                if active == 1.0 {
                    assert!(m["ogm.k"]["audio"].as_f64().unwrap() < 1.0);
                }
            } else {
                assert!(m.get("ogm.k").is_none());
            }
        }
        let acc = o.summary.as_ref().unwrap().test.fusion_acc;
        assert!(acc > 0.5, "{name}: {acc}");
    }
}

#[test]
fn same_seed_gives_identical_metrics() {
    for name in ["opm", "opm-ge"] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut extra = vec!["method.schedule_epochs=0", "method.window={start=0,end=2}"];
        if name == "opm-ge" {
            extra.push("method.ogm_window={start=0,end=2}");
        }
        let ra = common::run_method(a.path(), name, 5, 2, &extra);
        let rb = common::run_method(b.path(), name, 5, 2, &extra);
        let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        assert_eq!(read(&ra.run_dir), read(&rb.run_dir), "{name}");
    }
}

/// A run stopped after its first epoch and resumed writes the same metrics as an uninterrupted
/// one (the masks come from the run's RNG, which the checkpoint restores).
#[test]
fn resumed_runs_match_uninterrupted_ones() {
    for name in ["opm", "opm-ge"] {
        let mut sets = vec![
            format!("method.name={name}"),
            "method.schedule_epochs=0".to_string(),
            "method.window={start=0,end=3}".to_string(),
        ];
        if name == "opm-ge" {
            // OGM-GE's noise draws from the same RNG as the masks in every epoch.
            sets.push("method.ogm_window={start=0,end=3}".to_string());
        }
        common::assert_resume_matches(&sets, 3, 3, 1, name);
    }
}

/// Three modalities end to end (synth-vec with its text modality): trains, drops only the
/// non-weakest modalities.
#[test]
fn three_modality_run_trains() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(
        dir.path(),
        "opm",
        1,
        3,
        &[
            "dataset.third_modality=true",
            "method.schedule_epochs=0",
            "method.window={start=0,end=3}",
        ],
    );
    let last = o.history.iter().rfind(|r| r.split == "train").unwrap();
    let d = last.method["dropped"].as_object().unwrap();
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(
        d.values().any(|v| v.as_f64() == Some(0.0)),
        "the weakest is kept: {d:?}"
    );
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.4);
}
