//! `ibml` through the registry and the training loop, plus direct checks of its hooks.
//!
//! Reference values are closed forms: eq 12 (`Î·CE(z) + Σ 𝕀_m (CE(z) + CE_m)`, `𝕀_m = [ā_m < 1]`,
//! `ā_m = M ρ̃^m / Σ ρ̃`), eq 16 (`p^m = min(ā_m, λ)/λ`), and the official warm-up
//! (`lr(e) = min(lr·((e−1)/2 + 1), 10·lr)` for `e − 1 < 35`, `lr` below 70, `0.1·lr` after, on
//! 100 epochs), scaled to the run's N epochs: thresholds `round(35·N/100)`, `round(70·N/100)`,
//! the ramp at `t = e·100/N`; window `[max(1, round(N/100)), round(90·N/100))`.

mod common;

use candle_core::{DType, Device, Tensor};
use modbal::contrib::IbmlRecorder;
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::ibml::{Ibml, IbmlMethodConfig, IbmlWarmup};
use modbal::tensors::{cross_entropy, SeededRng};

fn ibml_run(out: &std::path::Path, seed: u64, extra: &[&str]) -> modbal::RunConfig {
    let mut sets = vec!["method.name=ibml".to_string()];
    sets.extend(extra.iter().map(|s| s.to_string()));
    common::small_vec(out, seed, 3)
        .with_overrides(&sets)
        .unwrap()
}

fn get(rec: &modbal::EpochRecord, key: &str, m: &str) -> f64 {
    rec.method[key][m]
        .as_f64()
        .unwrap_or_else(|| panic!("method.{key}.{m} missing in {:?}", rec.method))
}

fn train_records(extra: &[&str]) -> Vec<modbal::EpochRecord> {
    let dir = tempfile::tempdir().unwrap();
    let out = common::train(&ibml_run(dir.path(), 0, extra));
    common::read_metrics(&out.run_dir)
        .into_iter()
        .filter(|r| r.split == "train")
        .collect()
}

#[test]
fn full_run_perturbs_only_the_over_optimised_modality() {
    let recs = train_records(&[]);
    assert_eq!(recs.len(), 3);
    for r in &recs {
        eprintln!(
            "epoch {}: lr {:?} rho {:?} abar {:?} bio {:?} noise_batches {:?} perturbed {:?} pair {:?}",
            r.epoch,
            r.method["lr"],
            r.method["rho"],
            r.method["abar"],
            r.method["bio"],
            r.method["noise_batches"],
            r.method["perturbed"],
            r.method.get("pair_ratio")
        );
        for m in ["audio", "visual"] {
            // Noise only where the modality was over-optimised in some batch, BIO only where it
            // was under-optimised in some batch.
            if get(r, "perturbed", m) > 0.0 {
                assert!(get(r, "noise_batches", m) > 0.0);
            }
            if get(r, "noise_batches", m) > 0.0 || get(r, "bio", m) > 0.0 {
                assert_eq!(r.method["active"].as_f64(), Some(1.0));
            }
        }
    }
    // Epoch 0: outside the window ([1, 90) of 100 scaled to 3 epochs: [1, 3)) and no records yet
    // (ā = 1): nothing happens.
    let e0 = &recs[0];
    assert_eq!(e0.method["active"].as_f64(), Some(0.0));
    for m in ["audio", "visual"] {
        assert_eq!(get(e0, "perturbed", m), 0.0);
        assert_eq!(get(e0, "bio", m), 0.0);
        assert!((get(e0, "abar", m) - 1.0).abs() < 1e-12);
    }
    // With two modalities every active batch has exactly one over-optimised modality (noise)
    // and one under-optimised (BIO), unless tied.
    for r in &recs[1..] {
        for (a, b) in [("audio", "visual"), ("visual", "audio")] {
            assert!((get(r, "noise_batches", a) - get(r, "bio", b)).abs() < 1e-12);
        }
    }
    // By the last epoch synth-vec's audio dominates in every batch: it alone gets the noise,
    // visual alone the BIO term.
    let last = &recs[2];
    assert!(get(last, "abar", "audio") > 1.0);
    assert!(get(last, "perturbed", "audio") > 0.0);
    assert_eq!(get(last, "perturbed", "visual"), 0.0);
    assert_eq!(get(last, "bio", "visual"), 1.0);
    assert_eq!(get(last, "bio", "audio"), 0.0);
    // Warm-up scaled to 3 epochs: R = round(1.05) = 1, D = round(2.1) = 2; epoch 1 (e − 1 = 0 < R)
    // ramps at t = 100/3: min(1 + 0.5·(33.3 − 1), 10) = 10; epoch 2 (1 ≤ e − 1 < D): 1.
    // Factors 1, 10, 1 on the loop's 0.01.
    let lrs: Vec<f64> = recs
        .iter()
        .map(|r| r.method["lr"].as_f64().unwrap())
        .collect();
    for (got, want) in lrs.iter().zip([0.01, 0.1, 0.01]) {
        assert!((got - want).abs() < 1e-12, "{lrs:?}");
    }
}

/// A 12-epoch run on the official 100-epoch schedule scaled to the run, every number by hand:
/// ramp end R = round(35·12/100) = round(4.2) = 4, decay start D = round(70·12/100) = round(8.4)
/// = 8, ramp at t = e·100/12: epoch 1 → 1 + 0.5·(8.333 − 1) = 4.6667, epoch 2 → 1 + 0.5·(16.667
/// − 1) = 8.8333, epochs 3, 4 → 10 (capped); epochs 5-8 (R ≤ e − 1 < D) → 1; epochs 9-11 → 0.1.
/// Window [1, 90) of 100 → [max(1, round(0.12)), round(10.8)) = [1, 11): epochs 0 and 11 inactive.
#[test]
fn twelve_epoch_run_follows_the_scaled_schedule() {
    let recs = train_records(&["train.epochs=12"]);
    assert_eq!(recs.len(), 12);
    let factors = [
        1.0,
        1.0 + 0.5 * (100.0 / 12.0 - 1.0),
        1.0 + 0.5 * (200.0 / 12.0 - 1.0),
        10.0,
        10.0,
        1.0,
        1.0,
        1.0,
        1.0,
        0.1,
        0.1,
        0.1,
    ];
    for (r, f) in recs.iter().zip(factors) {
        let lr = r.method["lr"].as_f64().unwrap();
        eprintln!(
            "epoch {}: lr {lr} factor {:?} active {:?}",
            r.epoch, r.method["warmup_factor"], r.method["active"]
        );
        assert!((lr - 0.01 * f).abs() < 1e-12, "epoch {}: {lr}", r.epoch);
        let wf = r.method["warmup_factor"].as_f64().unwrap();
        assert!((wf - f).abs() < 1e-12, "epoch {}: {wf}", r.epoch);
        assert_eq!(r.method["window.start"].as_f64(), Some(1.0));
        assert_eq!(r.method["window.end"].as_f64(), Some(11.0));
        let active = (1..11).contains(&r.epoch);
        assert_eq!(
            r.method["active"].as_f64(),
            Some(if active { 1.0 } else { 0.0 }),
            "epoch {}",
            r.epoch
        );
        if !active {
            for m in ["audio", "visual"] {
                assert_eq!(get(r, "perturbed", m) + get(r, "bio", m), 0.0);
            }
        }
    }
    // The peak is max_factor × the loop's rate: with the official base rate 1e-3 it would be
    // 1e-2, the official peak; here (modbal's default 0.01) it is 0.1.
    assert!((recs[3].method["lr"].as_f64().unwrap() - 0.1).abs() < 1e-12);
    // schedule_epochs = 0: thresholds and window taken literally; on 12 epochs the ramp never
    // ends (e − 1 < 35): 1, 1, 1.5, 2, …, 6.
    let literal = train_records(&["train.epochs=12", "method.schedule_epochs=0"]);
    for r in &literal {
        let want = if r.epoch == 0 {
            1.0
        } else {
            1.0 + 0.5 * (r.epoch as f64 - 1.0)
        };
        let wf = r.method["warmup_factor"].as_f64().unwrap();
        assert!((wf - want).abs() < 1e-12, "literal epoch {}: {wf}", r.epoch);
        assert_eq!(r.method["window.end"].as_f64(), Some(90.0));
    }
}

#[test]
fn ablation_switches_turn_each_part_off() {
    let no_tcm = train_records(&["method.tcm=false"]);
    let no_bio = train_records(&["method.bio=false"]);
    let no_warm = train_records(&["method.warmup=false"]);
    for r in &no_tcm {
        assert_eq!(
            get(r, "perturbed", "audio") + get(r, "perturbed", "visual"),
            0.0
        );
    }
    assert!(no_tcm[1..].iter().any(|r| get(r, "bio", "visual") > 0.0));
    for r in &no_bio {
        assert_eq!(get(r, "bio", "audio") + get(r, "bio", "visual"), 0.0);
    }
    assert!(no_bio[1..]
        .iter()
        .any(|r| get(r, "perturbed", "audio") > 0.0));
    for r in &no_warm {
        assert_eq!(r.method["lr"].as_f64(), Some(0.01));
        assert_eq!(r.method["warmup_factor"].as_f64(), Some(1.0));
    }
    let none = train_records(&[
        "method.tcm=false",
        "method.bio=false",
        "method.warmup=false",
    ]);
    for r in &none {
        for m in ["audio", "visual"] {
            assert_eq!(get(r, "perturbed", m) + get(r, "bio", m), 0.0);
        }
    }
    // With all three switched off IBML is concat training, step for step (same seed).
    let dir = tempfile::tempdir().unwrap();
    let concat = common::train(&common::small_vec(dir.path(), 0, 3));
    let concat: Vec<_> = common::read_metrics(&concat.run_dir)
        .into_iter()
        .filter(|r| r.split == "train")
        .collect();
    assert_eq!(none.len(), concat.len());
    for (a, b) in none.iter().zip(&concat) {
        assert_eq!((a.loss, a.fusion_acc), (b.loss, b.fusion_acc));
        assert_eq!(a.modality_acc, b.modality_acc);
    }
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = common::train(&ibml_run(a.path(), 5, &[]));
    let rb = common::train(&ibml_run(b.path(), 5, &[]));
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(read(&ra.run_dir), read(&rb.run_dir));
}

#[test]
fn bad_options_are_named() {
    let err = |opts: &str| {
        let t: toml::Table = toml::from_str(opts).unwrap();
        common::build_method("ibml", &t).unwrap_err().to_string()
    };
    let e = err("lamda = 10.0");
    assert!(e.contains("lamda"), "{e}");
    let e = err("lambda = 0.5");
    assert!(e.contains("lambda"), "{e}");
    let e = err("window = { start = 9, end = 3 }");
    assert!(e.contains("window"), "{e}");
    let e = err("[warmup_schedule]\nsloap = 1.0");
    assert!(e.contains("sloap"), "{e}");
    let e = err("[warmup_schedule]\nmax_factor = 0.0");
    assert!(e.contains("max_factor"), "{e}");
    let e = err("[warmup_schedule]\nramp_end = 80");
    assert!(e.contains("ramp_end"), "{e}");
    // The options removed with issue 14 (scaling is `schedule_epochs` now) are unknown keys.
    let e = err("[warmup_schedule]\nscale_to_run = false");
    assert!(e.contains("scale_to_run"), "{e}");
    let e = err("noise = \"pink\"");
    assert!(e.contains("pink"), "{e}");
    let b = common::build_method("ibml", &toml::Table::new()).unwrap();
    assert_eq!(b.resolved["lambda"].as_float(), Some(10.0));
    assert_eq!(b.resolved["window"]["start"].as_integer(), Some(1));
    assert_eq!(b.resolved["window"]["end"].as_integer(), Some(90));
    assert_eq!(b.resolved["schedule_epochs"].as_integer(), Some(100));
    for k in ["bio", "tcm", "warmup"] {
        assert_eq!(b.resolved[k].as_bool(), Some(true), "{k}");
    }
}

#[test]
fn warmup_factor_matches_the_official_schedule() {
    // Official main_AV.py, lr set at the end of epoch p for epoch p + 1 (100 epochs):
    // p < 35: min(p/2 + 1, 10); p < 70: 1; else 0.1. A 100-epoch run on the 100-epoch schedule
    // and a literal schedule (0) give exactly these factors.
    let w = IbmlWarmup::default();
    for (e, want) in [
        (0, 1.0),
        (1, 1.0),
        (2, 1.5),
        (10, 5.5),
        (19, 10.0),
        (35, 10.0),
        (36, 1.0),
        (70, 1.0),
        (71, 0.1),
        (99, 0.1),
    ] {
        assert!((w.factor(e, 100, 100) - want).abs() < 1e-12, "epoch {e}");
        assert!(
            (w.factor(e, 0, 100) - want).abs() < 1e-12,
            "literal epoch {e}"
        );
    }
    // 10 epochs: R = round(3.5) = 4, D = 7, ramp at t = 10e.
    assert!((w.factor(1, 100, 10) - 5.5).abs() < 1e-12); // 1 + 0.5·(10 − 1)
    assert_eq!(w.factor(3, 100, 10), 10.0); // 1 + 0.5·29 capped
    assert_eq!(w.factor(4, 100, 10), 10.0); // e − 1 = 3 < R = 4
    assert_eq!(w.factor(5, 100, 10), 1.0); // e − 1 = 4 ≥ R
    assert_eq!(w.factor(7, 100, 10), 1.0); // e − 1 = 6 < D = 7
    assert_eq!(w.factor(8, 100, 10), 0.1); // e − 1 = 7 ≥ D
                                           // 200 epochs (longer than the schedule): t = e/2, the ramp starts at 1 (never below).
    assert_eq!(w.factor(1, 100, 200), 1.0);
    assert!((w.factor(4, 100, 200) - 1.5).abs() < 1e-12); // 1 + 0.5·(2 − 1)
    assert_eq!(w.factor(70, 100, 200), 10.0); // e − 1 = 69 < R = 70
    assert_eq!(w.factor(71, 100, 200), 1.0);
    assert_eq!(w.factor(141, 100, 200), 0.1); // e − 1 = 140 ≥ D = 140
                                              // The method's window: [1, 90) of 100 → [max(1, round(e/100·N)), round(90·N/100)).
    let cfg = IbmlMethodConfig::default();
    let win = |n: usize| {
        let w = cfg.run_window(n);
        (w.start, w.end)
    };
    assert_eq!(win(100), (1, 90));
    assert_eq!(win(12), (1, 11));
    assert_eq!(win(3), (1, 3));
    assert_eq!(win(1), (1, 1));
    let literal = IbmlMethodConfig {
        schedule_epochs: 0,
        ..Default::default()
    };
    assert_eq!(literal.run_window(12).end, 90);
}

/// Two MLP modalities, a batch of 12 whose labels cycle 0, 1, 2, and a recorder in which audio
/// predicted samples 0-9 confidently right and 10-11 wrong, visual uniformly (1/3 each).
fn setup() -> (MultimodalNet, Batch, IbmlRecorder) {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(11);
    let specs = [
        ModalitySpec::new("audio", EncoderConfig::Mlp { hidden: vec![8] }, &[4]),
        ModalitySpec::new("visual", EncoderConfig::Mlp { hidden: vec![8] }, &[4]),
    ];
    let net = MultimodalNet::new(&specs, &FusionConfig::Concat, 3, &mut rng, &dev).unwrap();
    let b = 12;
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
    let batch = Batch {
        inputs: vec![
            rng.randn((b, 4), 0.0, 1.0, DType::F32, &dev).unwrap(),
            rng.randn((b, 4), 0.0, 1.0, DType::F32, &dev).unwrap(),
        ],
        labels: Tensor::from_vec(labels.clone(), b, &dev).unwrap(),
        sample_ids: (100..100 + b).collect(),
    };
    let za: Vec<f32> = labels
        .iter()
        .enumerate()
        .flat_map(|(i, &y)| {
            let target = if i < 10 { y } else { (y + 1) % 3 };
            (0..3u32).map(move |c| if c == target { 4.0 } else { 0.0 })
        })
        .collect();
    let mut rec = IbmlRecorder::new(2).unwrap();
    rec.record(
        &batch.sample_ids,
        &labels,
        &[
            Tensor::from_vec(za, (b, 3), &dev).unwrap(),
            Tensor::zeros((b, 3), DType::F32, &dev).unwrap(),
        ],
    )
    .unwrap();
    rec.end_epoch();
    (net, batch, rec)
}

fn with_recorder(cfg: IbmlMethodConfig, rec: &IbmlRecorder) -> Ibml {
    let mut m = Ibml::new(cfg).unwrap();
    m.load_state(&serde_json::json!({ "recorder": rec }))
        .unwrap();
    m
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

#[test]
fn tcm_perturbs_only_previously_correct_samples_of_the_over_optimised_modality() {
    let (net, batch, rec) = setup();
    // λ = 1: p^audio = min(ā, 1)/1 = 1, so every previously-correct audio sample is perturbed.
    let mut method = with_recorder(
        IbmlMethodConfig {
            lambda: 1.0,
            ..Default::default()
        },
        &rec,
    );
    let report = method.balance(&batch.sample_ids).unwrap();
    // ρ̃_audio = 10·e⁴/(e⁴+2) + 2·1/(e⁴+2), ρ̃_visual = 12/3 = 4.
    let e4 = 4f64.exp();
    let rho_a = (10.0 * e4 + 2.0) / (e4 + 2.0);
    assert!((report.strengths[0] - rho_a).abs() < 1e-5);
    assert!((report.strengths[1] - 4.0).abs() < 1e-5);
    assert!(report.normalized[0] > 1.0 && report.normalized[1] < 1.0);

    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    ctx.epoch = 1;
    let mut noisy = batch.clone();
    method.modulate_inputs(&mut noisy, &mut ctx).unwrap();
    // Visual (under-optimised) untouched, bit for bit; labels and ids too.
    assert_eq!(rows(&noisy.inputs[1]), rows(&batch.inputs[1]));
    assert_eq!(noisy.sample_ids, batch.sample_ids);
    let (before, after) = (rows(&batch.inputs[0]), rows(&noisy.inputs[0]));
    for i in 0..12 {
        // Samples 10 and 11 were predicted wrongly by audio: never perturbed.
        assert_eq!(before[i] != after[i], i < 10, "sample {i}");
    }
    // Shared draw (official): the same noise vector on every perturbed sample.
    let d0: Vec<f32> = after[0]
        .iter()
        .zip(&before[0])
        .map(|(a, b)| a - b)
        .collect();
    let d5: Vec<f32> = after[5]
        .iter()
        .zip(&before[5])
        .map(|(a, b)| a - b)
        .collect();
    for (x, y) in d0.iter().zip(&d5) {
        assert!((x - y).abs() < 1e-5);
    }
    method.on_epoch_end(&net, &mut ctx).unwrap();
    let log = ctx.log.take();
    assert_eq!(log["perturbed"]["audio"].as_f64(), Some(10.0));
    assert_eq!(log["perturbed"]["visual"].as_f64(), Some(0.0));

    // Default λ = 10: p = ā/10 < 1, a subset of the previously-correct samples.
    let mut method = with_recorder(IbmlMethodConfig::default(), &rec);
    let mut noisy = batch.clone();
    method.modulate_inputs(&mut noisy, &mut ctx).unwrap();
    assert_eq!(rows(&noisy.inputs[1]), rows(&batch.inputs[1]));
    let after = rows(&noisy.inputs[0]);
    assert_eq!(after[10], before[10]);
    assert_eq!(after[11], before[11]);
    // Outside the window (epoch 0) and with tcm = false: untouched.
    ctx.epoch = 0;
    let mut same = batch.clone();
    method.modulate_inputs(&mut same, &mut ctx).unwrap();
    assert_eq!(rows(&same.inputs[0]), before);
    ctx.epoch = 1;
    let mut off = with_recorder(
        IbmlMethodConfig {
            tcm: false,
            lambda: 1.0,
            ..Default::default()
        },
        &rec,
    );
    let mut same = batch.clone();
    off.modulate_inputs(&mut same, &mut ctx).unwrap();
    assert_eq!(rows(&same.inputs[0]), before);
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

#[test]
fn bio_adds_the_unimodal_ce_of_the_under_optimised_modality_only() {
    let (net, batch, rec) = setup();
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    ctx.epoch = 1;
    let mut method = with_recorder(IbmlMethodConfig::default(), &rec);
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    let ce_f = scalar(&cross_entropy(&out.fused_logits, &batch.labels).unwrap());
    let ce_a = scalar(&cross_entropy(&out.per_modality_logits[0], &batch.labels).unwrap());
    let ce_v = scalar(&cross_entropy(&out.per_modality_logits[1], &batch.labels).unwrap());
    // ā_visual < 1 ⇒ 𝕀_visual = 1, Î = 0: L = CE(z) + CE_visual (eq 12).
    let l = scalar(&method.loss(&net, &batch, &out, &mut ctx).unwrap().total);
    assert!((l - (ce_f + ce_v)).abs() < 1e-6, "{l} vs {ce_f} + {ce_v}");
    assert!((l - (ce_f + ce_a)).abs() > 1e-6);
    // bio = false: only the fused CE.
    let mut off = with_recorder(
        IbmlMethodConfig {
            bio: false,
            ..Default::default()
        },
        &rec,
    );
    let l = scalar(&off.loss(&net, &batch, &out, &mut ctx).unwrap().total);
    assert!((l - ce_f).abs() < 1e-6);
    // Outside the window: only the fused CE.
    ctx.epoch = 0;
    let mut m0 = with_recorder(IbmlMethodConfig::default(), &rec);
    let l = scalar(&m0.loss(&net, &batch, &out, &mut ctx).unwrap().total);
    assert!((l - ce_f).abs() < 1e-6);
    // No records (balanced, ā = 1 for both): only the fused CE.
    ctx.epoch = 1;
    let mut fresh = Ibml::new(IbmlMethodConfig::default()).unwrap();
    let l = scalar(&fresh.loss(&net, &batch, &out, &mut ctx).unwrap().total);
    assert!((l - ce_f).abs() < 1e-6);
    // The loss recorded this batch's predictions for the next epoch (state round trip).
    let st = fresh.state();
    let mut back = Ibml::new(IbmlMethodConfig::default()).unwrap();
    back.load_state(&st).unwrap();
    assert_eq!(back.recorder(), fresh.recorder());
    fresh.on_epoch_end(&net, &mut ctx).unwrap();
    assert!(fresh.recorder().unwrap().previous(100).is_some());
    let _ = net.modalities();
}

/// The recorder is the method's checkpoint state: a run stopped after 2 epochs and resumed writes
/// the same `metrics.jsonl` as an uninterrupted one (ā and the noise depend on the records).
#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ibml_run(dir.path(), 3, &["train.epochs=4"]);
    let full = common::train(&cfg);
    let part = modbal::train(&cfg, &common::stop_after(2)).unwrap();
    assert!(part.summary.is_none());
    let resumed = modbal::resume(&part.run_dir, &common::quiet()).unwrap();
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(read(&full.run_dir), read(&resumed.run_dir));
}

/// eq 12 with M = 3 and two under-optimised modalities: `Î = max(1 − 2, 0) = 0`, so
/// `L = (CE(z) + CE_1) + (CE(z) + CE_2)` — the paper's sum taken literally.
#[test]
fn bio_with_three_modalities_follows_eq_12_literally() {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(5);
    let specs: Vec<ModalitySpec> = ["a", "b", "c"]
        .iter()
        .map(|n| ModalitySpec::new(*n, EncoderConfig::Mlp { hidden: vec![8] }, &[4]))
        .collect();
    let net = MultimodalNet::new(&specs, &FusionConfig::Concat, 3, &mut rng, &dev).unwrap();
    let b = 6;
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
    let batch = Batch {
        inputs: (0..3)
            .map(|_| rng.randn((b, 4), 0.0, 1.0, DType::F32, &dev).unwrap())
            .collect(),
        labels: Tensor::from_vec(labels.clone(), b, &dev).unwrap(),
        sample_ids: (0..b).collect(),
    };
    let peaked: Vec<f32> = labels
        .iter()
        .flat_map(|&y| (0..3u32).map(move |c| if c == y { 4.0 } else { 0.0 }))
        .collect();
    let flat = Tensor::zeros((b, 3), DType::F32, &dev).unwrap();
    let mut rec = IbmlRecorder::new(3).unwrap();
    rec.record(
        &batch.sample_ids,
        &labels,
        &[
            Tensor::from_vec(peaked, (b, 3), &dev).unwrap(),
            flat.clone(),
            flat,
        ],
    )
    .unwrap();
    rec.end_epoch();
    let mut method = with_recorder(IbmlMethodConfig::default(), &rec);
    let report = method.balance(&batch.sample_ids).unwrap();
    assert_eq!(report.under_optimized, vec![false, true, true]);
    assert_eq!(report.fused_weight, 0.0);
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    ctx.epoch = 1;
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    let ce = |z: &Tensor| scalar(&cross_entropy(z, &batch.labels).unwrap());
    let want = 2.0 * ce(&out.fused_logits)
        + ce(&out.per_modality_logits[1])
        + ce(&out.per_modality_logits[2]);
    let l = scalar(&method.loss(&net, &batch, &out, &mut ctx).unwrap().total);
    assert!((l - want).abs() < 1e-5, "{l} vs {want}");
}
