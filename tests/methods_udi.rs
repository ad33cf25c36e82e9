//! UDI (`method.name = "udi"`) end to end on small synthetic runs: the stage schedule, the frozen
//! anchor (parameters and BatchNorm buffers bit-identical), the anchor rule, the controller's
//! α (eq 16), determinism and option errors. Each run takes a few seconds in release mode.

mod common;

use candle_core::{Device, Tensor};
use modbal::core::{Method, MultimodalOutput};
use modbal::methods::udi::{Udi, UdiConfig};
use modbal::train::{resume, train, EpochRecord, RunConfig, TrainOptions};
use std::collections::HashMap;
use std::path::Path;

fn udi_cfg(out: &Path, seed: u64, epochs: usize, options: &[&str]) -> RunConfig {
    let mut sets = vec!["method.name=udi".to_string()];
    sets.extend(options.iter().map(|o| format!("method.{o}")));
    common::small_vec(out, seed, epochs)
        .with_overrides(&sets)
        .unwrap()
}

fn follower_records(h: &[EpochRecord]) -> Vec<&EpochRecord> {
    h.iter()
        .filter(|r| r.split == "train" && r.stage == "follower")
        .collect()
}

fn f(r: &EpochRecord, k: &str) -> f64 {
    r.method
        .get(k)
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| panic!("epoch {}: method.{k} missing in {:?}", r.epoch, r.method))
}

fn s<'a>(r: &'a EpochRecord, k: &str) -> &'a str {
    r.method
        .get(k)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("epoch {}: method.{k} missing in {:?}", r.epoch, r.method))
}

// (1) + (3) + (4): stages in metrics.jsonl, everything logged, anchor rule, α of eq 16.
#[test]
fn udi_runs_stages_logs_and_chooses_the_stronger_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::train(&udi_cfg(dir.path(), 0, 6, &[]));
    let summary = out.summary.expect("complete run");
    assert_eq!(summary.method, "udi");
    let h = common::read_metrics(&out.run_dir);
    let stages: Vec<&str> = h
        .iter()
        .filter(|r| r.split == "train")
        .map(|r| r.stage.as_str())
        .collect();
    // 6 epochs split equally over the 3 stages (audio alone, visual alone, follower).
    assert_eq!(
        stages,
        [
            "unimodal:audio",
            "unimodal:audio",
            "unimodal:visual",
            "unimodal:visual",
            "follower",
            "follower"
        ]
    );
    assert_eq!(s(&h[0], "stage"), "unimodal:audio");
    assert_eq!(s(&h[4], "stage"), "unimodal:visual"); // records alternate train / val
    let fol = follower_records(&h);
    assert_eq!(fol.len(), 2);
    // The anchor follows §3.1: best unimodal validation accuracy at the end of its stage (on
    // synth-vec the audio modality, SNR 4 vs 2, is the stronger one).
    let last = fol[fol.len() - 1];
    let (acc_a, acc_v) = (
        f(last, "unimodal_val_acc.audio"),
        f(last, "unimodal_val_acc.visual"),
    );
    eprintln!("unimodal val acc: audio {acc_a:.3}, visual {acc_v:.3}");
    assert!(acc_a > acc_v);
    assert_eq!(s(last, "anchor"), "audio");
    // The audio accuracy logged is the validation accuracy of the last audio-stage epoch.
    let audio_end = h.iter().find(|r| r.split == "val" && r.epoch == 1).unwrap();
    assert_eq!(acc_a, audio_end.modality_acc["audio"]);
    for r in &fol {
        let (ac, am) = (f(r, "alpha_con"), f(r, "alpha_com"));
        let (xc, xm) = (f(r, "xi_con"), f(r, "xi_com"));
        assert!(f(r, "club").is_finite() && f(r, "js") >= 0.0);
        assert!(f(r, "loss.cls") > 0.0);
        // eq 15-16 (ε = 1e-8): α ≥ 0, Σα ≤ 1, α_k = ReLU(ξ_k) / (ReLU(ξ_con) + ReLU(ξ_com) + ε).
        assert!(ac >= 0.0 && am >= 0.0 && ac + am <= 1.0 + 1e-12);
        let d = xc.max(0.0) + xm.max(0.0) + 1e-8;
        assert!((ac - xc.max(0.0) / d).abs() < 1e-9, "{ac} vs ξ {xc}, {xm}");
        assert!((am - xm.max(0.0) / d).abs() < 1e-9, "{am} vs ξ {xc}, {xm}");
        eprintln!(
            "epoch {}: alpha_con {ac:.4} alpha_com {am:.4} xi_con {xc:.4} xi_com {xm:.4} js {:.4} club {:.4}",
            r.epoch,
            f(r, "js"),
            f(r, "club")
        );
    }
    // No α or anchor before the unimodal stages are over.
    assert!(h[0].method.get("alpha_con").is_none());
    assert!(h[0].method.get("anchor").is_none());
}

// (3) Table 4: a forced anchor is honoured even when it is the weaker modality.
#[test]
fn forced_anchor_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::train(&udi_cfg(dir.path(), 0, 3, &["anchor=\"visual\""]));
    let h = common::read_metrics(&out.run_dir);
    let fol = follower_records(&h);
    assert_eq!(fol.len(), 1);
    assert_eq!(s(fol[0], "anchor"), "visual");
    assert!(f(fol[0], "unimodal_val_acc.audio") > f(fol[0], "unimodal_val_acc.visual"));
}

// (4) Table 3: fixed weights stay constant and no controller runs.
#[test]
fn fixed_alphas_stay_constant() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = udi_cfg(
        dir.path(),
        0,
        5,
        &[
            "controller=false",
            "alpha_con=0.25",
            "alpha_com=0.5",
            "stage_epochs=[1,1,3]",
        ],
    );
    let h = common::read_metrics(&common::train(&cfg).run_dir);
    let fol = follower_records(&h);
    assert_eq!(fol.len(), 3);
    for r in fol {
        assert_eq!(f(r, "alpha_con"), 0.25);
        assert_eq!(f(r, "alpha_com"), 0.5);
        assert!(r.method.get("xi_con").is_none());
    }
}

// (5) Same seed ⇒ byte-identical metrics.jsonl (also with q updated after the step).
#[test]
fn same_seed_gives_identical_metrics() {
    for opts in [
        &[][..],
        &["q_update=\"after_step\"", "js_reduction=\"mean\""][..],
    ] {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = common::train(&udi_cfg(d1.path(), 3, 4, opts));
        let b = common::train(&udi_cfg(d2.path(), 3, 4, opts));
        let ra = std::fs::read_to_string(a.run_dir.join("metrics.jsonl")).unwrap();
        let rb = std::fs::read_to_string(b.run_dir.join("metrics.jsonl")).unwrap();
        assert!(ra.contains("\"follower\""));
        assert_eq!(ra, rb, "options {opts:?}");
    }
}

fn load(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("checkpoints/last/model.safetensors"), &Device::Cpu)
        .unwrap()
}

/// Names under `prefix` whose tensors differ bit-wise between two snapshots.
fn changed(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>, prefix: &str) -> Vec<String> {
    let mut names: Vec<&String> = a.keys().filter(|k| k.starts_with(prefix)).collect();
    names.sort();
    assert!(!names.is_empty(), "no tensors under {prefix}");
    names
        .into_iter()
        .filter(|k| {
            let x: Vec<f32> = a[*k].flatten_all().unwrap().to_vec1().unwrap();
            let y: Vec<f32> = b[*k].flatten_all().unwrap().to_vec1().unwrap();
            x.iter()
                .map(|v| v.to_bits())
                .ne(y.iter().map(|v| v.to_bits()))
        })
        .cloned()
        .collect()
}

// (2) The anchor's parameters AND BatchNorm buffers are bit-identical before and after the
// follower stage; the modality not trained in a unimodal stage is untouched too. synth-av with
// small CNN encoders (BatchNorm), tiny sizes; the run is cut with stop_after and resumed (which
// also checks that the anchor survives a checkpoint).
#[test]
fn anchor_parameters_and_buffers_stay_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RunConfig::default()
        .with_overrides(&[
            "dataset.name=synth-av".into(),
            "dataset.train=128".into(),
            "dataset.val=64".into(),
            "dataset.test=64".into(),
            "dataset.spec_size=8".into(),
            "dataset.image_size=8".into(),
            "model.encoders.audio.kind=\"small_cnn\"".into(),
            "model.encoders.audio.channels=[4, 8]".into(),
            "model.encoders.visual.kind=\"small_cnn\"".into(),
            "model.encoders.visual.channels=[4, 8]".into(),
            "train.epochs=3".into(),
            "train.batch_size=32".into(),
            "method.name=udi".into(),
            format!("out_dir={:?}", dir.path().display().to_string()),
        ])
        .unwrap();
    let step = |n| TrainOptions {
        quiet: true,
        stop_after: Some(n),
        ..Default::default()
    };
    let run = train(&cfg, &step(1)).unwrap().run_dir;
    let after_audio = load(&run);
    resume(&run, &step(1)).unwrap();
    let after_visual = load(&run);
    let done = resume(
        &run,
        &TrainOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(done.summary.is_some());
    let after_follower = load(&run);
    let h = common::read_metrics(&run);
    let anchor = s(follower_records(&h)[0], "anchor").to_string();
    let follower = if anchor == "audio" { "visual" } else { "audio" };
    let buffers: Vec<&String> = after_visual
        .keys()
        .filter(|k| k.starts_with(&format!("encoder.{anchor}")) && k.contains("running"))
        .collect();
    assert!(
        !buffers.is_empty(),
        "the anchor encoder has BatchNorm buffers"
    );
    // Stage 2 (visual alone) leaves audio, encoder and head, untouched — buffers included.
    assert_eq!(
        changed(&after_audio, &after_visual, "encoder.audio"),
        Vec::<String>::new()
    );
    assert_eq!(
        changed(&after_audio, &after_visual, "head.audio"),
        Vec::<String>::new()
    );
    assert!(!changed(&after_audio, &after_visual, "encoder.visual").is_empty());
    // The follower stage leaves the anchor bit-identical and trains the follower.
    for p in [format!("encoder.{anchor}"), format!("head.{anchor}")] {
        assert_eq!(
            changed(&after_visual, &after_follower, &p),
            Vec::<String>::new()
        );
    }
    let moved = changed(
        &after_visual,
        &after_follower,
        &format!("encoder.{follower}"),
    );
    assert!(moved.iter().any(|k| k.contains("running")), "{moved:?}");
    assert!(!changed(&after_visual, &after_follower, &format!("head.{follower}")).is_empty());
}

// (6) Bad options give errors that name them.
#[test]
fn bad_options_are_named() {
    let err = |opts: &[&str], epochs: usize| -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut sets = vec!["method.name=udi".to_string()];
        sets.extend(opts.iter().map(|o| format!("method.{o}")));
        // Options are checked when the config is built (--set) or when the run starts.
        let cfg = match common::small_vec(dir.path(), 0, epochs).with_overrides(&sets) {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        match train(&cfg, &common::quiet()) {
            Ok(_) => panic!("options {opts:?} were accepted"),
            Err(e) => e.to_string(),
        }
    };
    let cases: &[(&[&str], usize, &[&str])] = &[
        (&["alpha_conn=1.0"], 3, &["alpha_conn"]),
        (&["js_reduction=\"max\""], 3, &["max"]),
        (&["stage_epochs=[1, 2]"], 3, &["stage_epochs", "3 entries"]),
        (&["stage_epochs=[1, 0, 2]"], 3, &["stage_epochs"]),
        (&["alpha_con=-1.0", "controller=false"], 3, &["alpha_con"]),
        (&["eps=0.0"], 3, &["eps"]),
        (&["club_q_steps=0"], 3, &["club_q_steps"]),
        // synth-vec has no `text` unless dataset.third_modality = true.
        (
            &["modalities=[\"audio\", \"visual\", \"text\"]"],
            3,
            &["text", "audio, visual"],
        ),
        (&["anchor=\"video\""], 3, &["video", "audio, visual"]),
        (&["controller_batch=100"], 3, &["controller_batch"]),
        // The stage plan must fit train.epochs (checked by the trainer).
        (&["stage_epochs=[1, 1, 1]"], 4, &["udi", "3 epochs"]),
        (&[], 2, &["udi", "3 epochs"]),
    ];
    for (opts, epochs, needles) in cases {
        let e = err(opts, *epochs);
        eprintln!("{opts:?} (epochs {epochs}): {e}");
        for n in *needles {
            assert!(
                e.contains(n),
                "options {opts:?}: error {e:?} should mention {n:?}"
            );
        }
    }
}

// Equal split of the epochs (remainder to the last stages) and explicit stage epochs.
#[test]
fn stage_plan() {
    let c = UdiConfig::default();
    assert_eq!(c.plan(6, 2), [2, 2, 2]);
    assert_eq!(c.plan(7, 2), [2, 2, 3]);
    assert_eq!(c.plan(8, 2), [2, 3, 3]);
    // Three modalities: 5 stages (3 unimodal, 2 follower).
    assert_eq!(c.plan(7, 3), [1, 1, 1, 2, 2]);
    assert_eq!(c.plan(10, 3), [2, 2, 2, 2, 2]);
    let c = UdiConfig {
        stage_epochs: vec![5, 3, 4],
        ..Default::default()
    };
    assert_eq!(c.plan(12, 2), [5, 3, 4]);
    assert!(c.check_plan(2).is_ok());
    let e = c.check_plan(3).unwrap_err().to_string();
    assert!(e.contains("stage_epochs") && e.contains("5 entries"), "{e}");
    // The stage names come from the model's modalities (Method::stages sees them).
    let udi = Udi::new(UdiConfig::default()).unwrap();
    let names = |mods: &[&str]| -> Vec<(String, usize)> {
        let mods: Vec<String> = mods.iter().map(|m| m.to_string()).collect();
        udi.stages(7, &mods)
            .into_iter()
            .map(|s| (s.name, s.epochs))
            .collect()
    };
    let want = |v: &[(&str, usize)]| -> Vec<(String, usize)> {
        v.iter().map(|(n, e)| (n.to_string(), *e)).collect()
    };
    assert_eq!(
        names(&["audio", "visual"]),
        want(&[
            ("unimodal:audio", 2),
            ("unimodal:visual", 2),
            ("follower", 3)
        ])
    );
    assert_eq!(
        names(&["visual", "text", "audio"]),
        want(&[
            ("unimodal:visual", 1),
            ("unimodal:text", 1),
            ("unimodal:audio", 1),
            ("follower:1", 2),
            ("follower:2", 2)
        ])
    );
}

// predict: mean of the modalities' probabilities, returned as its log (closed form).
#[test]
fn predict_averages_probabilities() {
    let udi = Udi::new(UdiConfig::default()).unwrap();
    let za = Tensor::new(&[[0.0f32, 1.0, 2.0]], &Device::Cpu).unwrap();
    let zv = Tensor::new(&[[3.0f32, 0.0, 0.0]], &Device::Cpu).unwrap();
    let out = MultimodalOutput {
        fused_logits: (&za + &zv).unwrap(),
        per_modality_logits: vec![za, zv],
        features: vec![],
    };
    // predict only reads the outputs; the model argument is a tiny sum-fusion net.
    let model = tiny_model();
    let p: Vec<f32> = udi
        .predict(&model, &out)
        .unwrap()
        .exp()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let sm = |z: [f64; 3]| {
        let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
        let t: f64 = e.iter().sum();
        e.into_iter().map(move |v| v / t)
    };
    let want: Vec<f64> = sm([0.0, 1.0, 2.0])
        .zip(sm([3.0, 0.0, 0.0]))
        .map(|(a, b)| (a + b) / 2.0)
        .collect();
    for (g, w) in p.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{p:?} vs {want:?}");
    }
}

fn tiny_model() -> modbal::encoders::MultimodalNet {
    use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
    let specs = [
        ModalitySpec::new("audio", EncoderConfig::Mlp { hidden: vec![] }, &[2]),
        ModalitySpec::new("visual", EncoderConfig::Mlp { hidden: vec![] }, &[2]),
    ];
    let mut rng = modbal::tensors::SeededRng::new(0);
    MultimodalNet::new(&specs, &FusionConfig::Sum, 3, &mut rng, &Device::Cpu).unwrap()
}

// Appendix A.2, eq 26-27: three modalities, ordered a, b, c; follower stage 2 trains c guided by
// a and b, which stay bit-identical. The plan is made for the model's three modalities without
// listing them; a resume inside the last follower stage is exact.
#[test]
fn three_modalities_follow_the_sequential_extension() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_vec(dir.path(), 0, 5)
        .with_overrides(&[
            "dataset.third_modality=true".into(),
            "method.name=udi".into(),
        ])
        .unwrap();
    let step = |n| TrainOptions {
        quiet: true,
        stop_after: Some(n),
        ..Default::default()
    };
    let run = train(&cfg, &step(4)).unwrap().run_dir;
    let before = load(&run);
    let done = resume(
        &run,
        &TrainOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(done.summary.is_some());
    let after = load(&run);
    let h = common::read_metrics(&run);
    let stages: Vec<&str> = h
        .iter()
        .filter(|r| r.split == "train")
        .map(|r| r.stage.as_str())
        .collect();
    assert_eq!(
        stages,
        [
            "unimodal:audio",
            "unimodal:visual",
            "unimodal:text",
            "follower:1",
            "follower:2"
        ]
    );
    let last = h.iter().rev().find(|r| r.split == "train").unwrap();
    let order: Vec<String> = last.method["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    eprintln!("order {order:?}, method log {:?}", last.method);
    assert_eq!(order.len(), 3);
    assert_eq!(s(last, "anchor"), order[0]);
    // The order is by decreasing unimodal validation accuracy.
    let acc = |m: &str| f(last, &format!("unimodal_val_acc.{m}"));
    assert!(acc(&order[0]) >= acc(&order[1]) && acc(&order[1]) >= acc(&order[2]));
    assert_eq!(s(last, "follower"), order[2]);
    let first = h.iter().find(|r| r.stage == "follower:1").unwrap();
    assert_eq!(s(first, "follower"), order[1]);
    for m in &order[..2] {
        for p in [format!("encoder.{m}"), format!("head.{m}")] {
            assert_eq!(changed(&before, &after, &p), Vec::<String>::new());
        }
    }
    assert!(!changed(&before, &after, &format!("encoder.{}", order[2])).is_empty());
    assert!(f(last, "club").is_finite() && f(last, "js") >= 0.0);
}

// §3.1 on hand-made validation outputs: best accuracy wins even with a higher entropy; within
// `tie_tolerance` the lower mean predictive entropy wins.
#[test]
fn anchor_rule_accuracy_then_entropy() {
    use modbal::core::{EvalOutputs, RunContext};
    let model = tiny_model();
    // 4 samples, labels 0,1,2,0. Audio: 3/4 correct, soft logits (high entropy). Visual: given
    // accuracy, sharp logits (low entropy).
    let labels = vec![0u32, 1, 2, 0];
    let logits = |rows: [[f32; 3]; 4]| Tensor::new(&rows, &Device::Cpu).unwrap();
    let audio = logits([[1., 0., 0.], [0., 1., 0.], [0., 0., 1.], [0., 1., 0.]]);
    let visual_tied = logits([[9., 0., 0.], [0., 9., 0.], [0., 0., 9.], [0., 9., 0.]]);
    let visual_worse = logits([[9., 0., 0.], [0., 9., 0.], [9., 0., 0.], [0., 9., 0.]]);
    let pick = |visual: &Tensor, tol: f64| {
        let mut udi = Udi::new(UdiConfig {
            tie_tolerance: tol,
            ..Default::default()
        })
        .unwrap();
        let mut ctx = RunContext::new(0, Device::Cpu, 3); // plan 1/1/1
        for (stage, per) in [(0, &audio), (1, visual)] {
            ctx.stage = stage;
            ctx.stage_epoch = 0;
            let val = EvalOutputs {
                sample_ids: (0..4).collect(),
                labels: labels.clone(),
                fused_logits: per.clone(),
                per_modality_logits: vec![audio.clone(), (*per).clone()],
                features: vec![],
            };
            udi.on_validation(&model, &val, &mut ctx).unwrap();
        }
        udi.anchor().unwrap().to_string()
    };
    assert_eq!(pick(&visual_tied, 0.0), "visual"); // 0.75 = 0.75, visual sharper
    assert_eq!(pick(&visual_worse, 0.0), "audio"); // 0.75 > 0.50 despite higher entropy
    assert_eq!(pick(&visual_worse, 0.3), "visual"); // within tolerance: lower entropy
}

// A run cut at the stage boundary (anchor chosen, follower not started) and resumed reproduces
// the uninterrupted run exactly (the anchor and α travel in the method state).
#[test]
fn resume_at_the_stage_boundary_is_exact() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = common::train(&udi_cfg(d1.path(), 5, 4, &[])); // plan 1/1/2
    let cut = train(
        &udi_cfg(d2.path(), 5, 4, &[]),
        &TrainOptions {
            quiet: true,
            stop_after: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(cut.summary.is_none());
    resume(&cut.run_dir, &common::quiet()).unwrap();
    let a = std::fs::read_to_string(full.run_dir.join("metrics.jsonl")).unwrap();
    let b = std::fs::read_to_string(cut.run_dir.join("metrics.jsonl")).unwrap();
    assert!(a.contains("\"follower\""));
    assert_eq!(a, b);
}

// The CLUB q-network (parameters and Adam moments) travels in checkpoints/last/method.safetensors:
// a run stopped inside the follower stage and resumed is byte-identical to an uninterrupted one.
// Control: the same resume with the q-network dropped from the checkpoint (a fresh q, as before
// q was checkpointed) gives different metrics, so the equality is not vacuous.
#[test]
fn resume_inside_the_follower_stage_is_exact() {
    for q_update in ["before_estimate", "after_step"] {
        let opt = format!("q_update=\"{q_update}\"");
        let (d1, d2, d3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        // plan 2/2/2: epochs 4 and 5 are the follower stage; stop after epoch 4 (its first).
        let full = common::train(&udi_cfg(d1.path(), 3, 6, &[&opt]));
        let stop = |dir: &Path| {
            train(
                &udi_cfg(dir, 3, 6, &[&opt]),
                &TrainOptions {
                    quiet: true,
                    stop_after: Some(5),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let cut = stop(d2.path());
        assert!(cut.summary.is_none());
        let last = cut.run_dir.join("checkpoints/last");
        let saved = candle_core::safetensors::load(last.join("method.safetensors"), &Device::Cpu)
            .expect("the follower stage's q-network is checkpointed");
        let mut keys: Vec<&String> = saved.keys().collect();
        keys.sort();
        eprintln!("{q_update}: method.safetensors holds {keys:?}");
        assert!(keys.iter().any(|k| k.starts_with("q0.param.club.mu")));
        assert!(keys.iter().any(|k| k.starts_with("q0.opt.")));
        resume(&cut.run_dir, &common::quiet()).unwrap();
        let a = std::fs::read_to_string(full.run_dir.join("metrics.jsonl")).unwrap();
        let b = std::fs::read_to_string(cut.run_dir.join("metrics.jsonl")).unwrap();
        assert_eq!(a.lines().count(), 12);
        assert_eq!(
            a, b,
            "{q_update}: resumed run differs from the uninterrupted one"
        );
        let sa = std::fs::read_to_string(full.run_dir.join("summary.json")).unwrap();
        let sb = std::fs::read_to_string(cut.run_dir.join("summary.json")).unwrap();
        let test = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["test"].clone();
        assert_eq!(test(&sa), test(&sb));

        // Control: drop q from the checkpoint; the resumed follower epoch must differ.
        let ctl = stop(d3.path());
        let last = ctl.run_dir.join("checkpoints/last");
        std::fs::remove_file(last.join("method.safetensors")).unwrap();
        let sp = last.join("state.json");
        let mut st: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sp).unwrap()).unwrap();
        st["method"]["q_networks"] = serde_json::json!([]);
        std::fs::write(&sp, st.to_string()).unwrap();
        resume(&ctl.run_dir, &common::quiet()).unwrap();
        let c = std::fs::read_to_string(ctl.run_dir.join("metrics.jsonl")).unwrap();
        assert_eq!(
            a.lines().take(10).collect::<Vec<_>>(),
            c.lines().take(10).collect::<Vec<_>>()
        );
        assert_ne!(
            a, c,
            "{q_update}: a fresh q-network should change the last follower epoch"
        );
    }
}

// A checkpoint that names a q-network but lacks its tensors is a clear error, not a silent
// fresh q.
#[test]
fn missing_q_network_tensors_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cut = train(
        &udi_cfg(dir.path(), 1, 4, &[]), // plan 1/1/2
        &TrainOptions {
            quiet: true,
            stop_after: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::remove_file(cut.run_dir.join("checkpoints/last/method.safetensors")).unwrap();
    let e = resume(&cut.run_dir, &common::quiet())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q-network") && e.contains("method.safetensors"),
        "{e}"
    );
}
