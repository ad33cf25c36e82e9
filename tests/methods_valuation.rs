//! `sample-valuation` and `modality-valuation` (Wei et al., "Enhancing Multimodal Cooperation
//! via Sample-level Modality Valuation", CVPR 2024; official code
//! GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation): each mechanism against its closed form
//! computed here independently, the official arithmetic, resume, three modalities, one and five
//! modalities (errors) and short runs through the registry.
//!
//! Reference numbers restate the official arithmetic in plain Python 3 (no torch needed: the
//! official valuation and re-sampling are scalar code; `sample_level.py` `execute_modulation`,
//! `dataloader.py` `AV_KS_Dataset_sample_level` / `_modality_level`):
//!
//! ```python
//! def contrib(c_all, c_a, c_v):             # execute_modulation, per sample
//!     va, vv, vall = float(c_a), float(c_v), 2.0 * c_all
//!     return (va + vall - vv) / 2.0, (vv + vall - va) / 2.0
//! def copies(c):                           # AV_KS_Dataset_sample_level, per modality
//!     if 0.4 < c < 1: return 1
//!     if -0.1 < c < 0.4: return 2
//!     if c < -0.1: return 3
//!     return 0
//! for c_all in (0, 1):
//!     for c_a in (0, 1):
//!         for c_v in (0, 1):
//!             a, v = contrib(c_all, c_a, c_v); print(c_all, c_a, c_v, a, v, copies(a), copies(v))
//! # (all, a, v) -> (φ_a, φ_v) -> copies (a, v):
//! # (0,0,0) -> ( 0.0, 0.0) -> (2, 2)     (1,0,0) -> (1.0, 1.0) -> (0, 0)
//! # (0,0,1) -> (-0.5, 0.5) -> (3, 1)     (1,0,1) -> (0.5, 1.5) -> (1, 0)
//! # (0,1,0) -> ( 0.5,-0.5) -> (1, 3)     (1,1,0) -> (1.5, 0.5) -> (0, 1)
//! # (0,1,1) -> ( 0.0, 0.0) -> (2, 2)     (1,1,1) -> (1.0, 1.0) -> (0, 0)
//! gap_a, gap_v = 1 - 0.8, 1 - 0.2          # AV_KS_Dataset_modality_level, cona = 0.8, conv = 0.2
//! d = abs(gap_a - gap_v) / 3 * 2 * 1.0     # linear, alpha = 1 -> 0.4; int(0.4 * 50) = 20 copies
//! math.tanh(abs(gap_a - gap_v) / 3 * 2)    # tanh   -> 0.37994896225522495
//! (abs(gap_a - gap_v) / 3 * 2) ** 1.5      # square -> 0.25298221281347033
//! # gap_a > gap_v is False -> drop = 1 (audio zeroed): the copies train visual
//! ```

mod common;

use candle_core::{Device, Tensor};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{FusionConfig, MultimodalNet};
use modbal::methods::valuation::{
    plan_copies, sample_contributions, ModalityRule, ResampleFunc, Rule, SampleRule, Valuation,
    WarmUp,
};
use modbal::tensors::SeededRng;

// ---------------------------------------------------------------- helpers

fn tiny(modalities: usize, b: usize) -> (MultimodalNet, Batch) {
    let mut rng = SeededRng::new(7);
    let net = common::tiny_mlp_net(modalities, &FusionConfig::Concat, &mut rng);
    let batch = common::audio_label_batch(modalities, b, &mut rng);
    (net, batch)
}

fn features(net: &MultimodalNet, batch: &Batch) -> Vec<Tensor> {
    (0..batch.inputs.len())
        .map(|m| net.encode(m, &batch.inputs[m], true).unwrap())
        .collect()
}

/// `[argmax head(f^S) = y]` per sample, with the modalities outside `keep` zeroed here.
fn correct_with(net: &MultimodalNet, feats: &[Tensor], labels: &[u32], keep: &[bool]) -> Vec<f64> {
    let (fused, _) = net.head(&common::mask_features(feats, keep)).unwrap();
    common::rows(&fused)
        .iter()
        .zip(labels)
        .map(|(r, &y)| {
            let mut arg = 0;
            for (c, &z) in r.iter().enumerate() {
                if z > r[arg] {
                    arg = c;
                }
            }
            if arg == y as usize {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

fn sample_method(warm_up: usize) -> Valuation {
    Valuation::new(
        "sample-valuation",
        WarmUp {
            epochs: warm_up,
            schedule_epochs: 0,
        },
        Rule::Sample(SampleRule {
            thresholds: vec![1.0, 0.4, -0.1],
        }),
    )
}

// ---------------------------------------------------------------- the maths

/// The official copy table (module docs) for every attainable pair of two-modality values.
#[test]
fn sample_rule_matches_the_official_copy_table() {
    let rule = SampleRule {
        thresholds: vec![1.0, 0.4, -0.1],
    };
    for (phi, copies) in [(-0.5, 3), (0.0, 2), (0.5, 1), (1.0, 0), (1.5, 0)] {
        assert_eq!(rule.copies(phi), copies, "φ = {phi}");
    }
    // Three modalities: values are multiples of 1/6 (never on a threshold).
    for (phi, copies) in [
        (-1.0 / 6.0, 3),
        (1.0 / 6.0, 2),
        (5.0 / 6.0, 1),
        (7.0 / 6.0, 0),
    ] {
        assert_eq!(rule.copies(phi), copies, "φ = {phi}");
    }
    assert_eq!(rule.copies(f64::NAN), 0);
}

/// Two modalities: the Shapley values are the official `(value_a + value_all − value_v) / 2`
/// with `value_all = 2`, from the correctness of the three coalitions evaluated here.
#[test]
fn two_modality_contributions_are_the_official_formula() {
    let (net, batch) = tiny(2, 12);
    let feats = features(&net, &batch);
    let labels: Vec<u32> = batch.labels.to_vec1().unwrap();
    let got = sample_contributions(&net, &feats, &labels).unwrap();
    let all = correct_with(&net, &feats, &labels, &[true, true]);
    let a = correct_with(&net, &feats, &labels, &[true, false]);
    let v = correct_with(&net, &feats, &labels, &[false, true]);
    for i in 0..labels.len() {
        let (ca, cv) = (
            (a[i] + 2.0 * all[i] - v[i]) / 2.0,
            (v[i] + 2.0 * all[i] - a[i]) / 2.0,
        );
        assert_eq!(got[i], vec![ca, cv], "sample {i}");
        assert_eq!(got[i][0] + got[i][1], 2.0 * all[i], "efficiency");
    }
}

/// Three modalities: φ_a = 1/3 [v(a) − 0] + 1/6 [v(ab) − v(b)] + 1/6 [v(ac) − v(c)] +
/// 1/3 [v(abc) − v(bc)] with v(S) = |S|·[correct], and Σ_m φ_m = 3·[full correct].
#[test]
fn three_modality_contributions_are_the_shapley_closed_form() {
    let (net, batch) = tiny(3, 12);
    let feats = features(&net, &batch);
    let labels: Vec<u32> = batch.labels.to_vec1().unwrap();
    let got = sample_contributions(&net, &feats, &labels).unwrap();
    let v = |keep: [bool; 3]| -> Vec<f64> {
        let size = keep.iter().filter(|&&k| k).count() as f64;
        correct_with(&net, &feats, &labels, &keep)
            .into_iter()
            .map(|c| size * c)
            .collect()
    };
    let (va, vb, vc) = (
        v([true, false, false]),
        v([false, true, false]),
        v([false, false, true]),
    );
    let (vab, vac, vbc, vabc) = (
        v([true, true, false]),
        v([true, false, true]),
        v([false, true, true]),
        v([true, true, true]),
    );
    for i in 0..labels.len() {
        let phi_a = va[i] / 3.0
            + (vab[i] - vb[i]) / 6.0
            + (vac[i] - vc[i]) / 6.0
            + (vabc[i] - vbc[i]) / 3.0;
        let phi_b = vb[i] / 3.0
            + (vab[i] - va[i]) / 6.0
            + (vbc[i] - vc[i]) / 6.0
            + (vabc[i] - vac[i]) / 3.0;
        assert!((got[i][0] - phi_a).abs() < 1e-12, "sample {i}");
        assert!((got[i][1] - phi_b).abs() < 1e-12, "sample {i}");
        let sum: f64 = got[i].iter().sum();
        assert!((sum - vabc[i]).abs() < 1e-12, "efficiency, sample {i}");
    }
}

/// The modality-level arithmetic of the module docs: d for the three functions, the enhanced
/// modality (the larger gap), and ⌊d N⌋ copies all for it.
#[test]
fn modality_rule_matches_the_official_arithmetic() {
    let rule = |func| ModalityRule {
        part_ratio: 1.0,
        alpha: 1.0,
        func,
    };
    let (d, arg) = rule(ResampleFunc::Linear).difference(&[0.8, 0.2]);
    assert!((d - 0.4).abs() < 1e-12 && arg == 1, "{d} {arg}");
    let (d, _) = rule(ResampleFunc::Tanh).difference(&[0.8, 0.2]);
    assert!((d - 0.379_948_962_255_224_95).abs() < 1e-12, "{d}");
    let (d, _) = rule(ResampleFunc::Square).difference(&[0.8, 0.2]);
    assert!((d - 0.252_982_212_813_470_33).abs() < 1e-12, "{d}");
    // No gap, no copies.
    assert_eq!(rule(ResampleFunc::Linear).difference(&[0.5, 0.5]).0, 0.0);
    // Three modalities: gaps (0.1, 0.7, 0.4) → x = (0.7 − 0.1)·2/3 = 0.4, the second enhanced.
    let (d, arg) = rule(ResampleFunc::Linear).difference(&[0.9, 0.3, 0.6]);
    assert!((d - 0.4).abs() < 1e-12 && arg == 1, "{d} {arg}");
    // 50 samples, every one valued (0.8, 0.2): any subset has these means.
    let contrib = vec![vec![0.8, 0.2]; 50];
    let mut rng = SeededRng::new(1);
    let (extra, plan) = plan_copies(
        &Rule::Modality(ModalityRule {
            part_ratio: 0.2,
            ..rule(ResampleFunc::Linear)
        }),
        &contrib,
        2,
        &mut rng,
    );
    let plan = plan.unwrap();
    assert_eq!(plan.resample_num, 20);
    assert_eq!(plan.enhanced, 1);
    assert_eq!(extra.iter().map(|r| r[1]).sum::<u32>(), 20);
    assert_eq!(extra.iter().map(|r| r[0]).sum::<u32>(), 0);
}

/// Sample rule: copies per sample and modality are `s(φ_{i,m})`.
#[test]
fn sample_plan_gives_each_modality_its_copies() {
    let contrib = vec![
        vec![0.0, 0.0],
        vec![-0.5, 0.5],
        vec![1.5, 0.5],
        vec![1.0, 1.0],
    ];
    let mut rng = SeededRng::new(0);
    let (extra, plan) = plan_copies(
        &Rule::Sample(SampleRule {
            thresholds: vec![1.0, 0.4, -0.1],
        }),
        &contrib,
        2,
        &mut rng,
    );
    assert!(plan.is_none());
    assert_eq!(extra, vec![vec![2, 2], vec![3, 1], vec![0, 1], vec![0, 0]]);
}

/// The epoch order holds every sample `1 + Σ_m extra` times in active epochs, once otherwise.
#[test]
fn epoch_indices_repeat_samples_after_the_warm_up() {
    let mut method = sample_method(1);
    method.set_extra_copies(vec![vec![2, 0], vec![0, 1], vec![0, 0]]);
    let mut ctx = RunContext::new(0, Device::Cpu, 4);
    ctx.epoch = 0;
    assert_eq!(method.epoch_indices(3, &mut ctx).unwrap(), None);
    ctx.epoch = 1;
    let order = method.epoch_indices(3, &mut ctx).unwrap().unwrap();
    assert_eq!(order, vec![0, 0, 0, 1, 1, 2]);
    assert!(!method.selectable(&RunContext::new(0, Device::Cpu, 4), &[]));
}

/// A copy for modality m is the head on the features with every other modality zeroed; the
/// first occurrence of a sample is the full input; the unmasked features are returned.
#[test]
fn copies_zero_the_other_modalities_before_the_head() {
    let (net, batch) = tiny(2, 3);
    let mut method = sample_method(0);
    // Sample 0: once full, once audio only, once visual only.
    method.set_extra_copies(vec![vec![1, 1], vec![0, 0], vec![0, 0]]);
    let mut ctx = RunContext::new(0, Device::Cpu, 2);
    method.epoch_indices(3, &mut ctx).unwrap().unwrap();
    let pick = |rows: &[usize]| Batch {
        inputs: batch
            .inputs
            .iter()
            .map(|t| {
                t.index_select(
                    &Tensor::new(
                        &[
                            rows[0] as u32,
                            rows[1] as u32,
                            rows[2] as u32,
                            rows[3] as u32,
                        ],
                        &Device::Cpu,
                    )
                    .unwrap(),
                    0,
                )
                .unwrap()
            })
            .collect(),
        labels: batch
            .labels
            .index_select(&Tensor::new(&[0u32, 0, 1, 0], &Device::Cpu).unwrap(), 0)
            .unwrap(),
        sample_ids: vec![0, 0, 1, 0],
    };
    let b = pick(&[0, 0, 1, 0]);
    let out = method.forward(&net, &b, &mut ctx).unwrap();
    let feats = features(&net, &b);
    let full = common::rows(&net.head(&feats).unwrap().0);
    let zero = |k: usize| -> Vec<Tensor> {
        feats
            .iter()
            .enumerate()
            .map(|(m, f)| {
                if m == k {
                    f.zeros_like().unwrap()
                } else {
                    f.clone()
                }
            })
            .collect()
    };
    let audio_only = common::rows(&net.head(&zero(1)).unwrap().0);
    let visual_only = common::rows(&net.head(&zero(0)).unwrap().0);
    let got = common::rows(&out.fused_logits);
    let close = |x: &[f64], y: &[f64]| x.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-6);
    assert!(close(&got[0], &full[0]), "first occurrence: full");
    assert!(close(&got[1], &audio_only[1]), "second: audio copy");
    assert!(close(&got[2], &full[2]), "other sample: full");
    assert!(close(&got[3], &visual_only[3]), "third: visual copy");
    assert!(!close(&audio_only[1], &full[1]), "the mask is visible");
    assert_eq!(common::v64(&out.features[1]), common::v64(&feats[1]));
}

#[test]
fn one_and_five_modalities_are_errors_naming_the_method() {
    let (net, _) = tiny(1, 4);
    let mut method = sample_method(0);
    let mut ctx = RunContext::new(0, Device::Cpu, 2);
    let e = method
        .on_epoch_start(&net, &mut ctx)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample-valuation") && e.contains("at least 2"),
        "{e}"
    );
    use modbal::encoders::{EncoderConfig, ModalitySpec};
    let specs: Vec<_> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| ModalitySpec::new(*n, EncoderConfig::Mlp { hidden: vec![4] }, &[4]))
        .collect();
    let mut rng = SeededRng::new(0);
    let net5 =
        MultimodalNet::new(&specs, &FusionConfig::Concat, 3, &mut rng, &Device::Cpu).unwrap();
    let e = method
        .on_epoch_start(&net5, &mut ctx)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample-valuation") && e.contains("limited to 4"),
        "{e}"
    );
}

#[test]
fn registry_builds_with_the_official_defaults_and_rejects_bad_values() {
    let b = common::build_method("sample-valuation", &toml::Table::new()).unwrap();
    assert_eq!(b.fusion, FusionConfig::Concat);
    assert_eq!(b.resolved["warm_up_epochs"].as_integer(), Some(5));
    assert_eq!(b.resolved["schedule_epochs"].as_integer(), Some(60));
    let t: Vec<f64> = b.resolved["copy_thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_float().unwrap())
        .collect();
    assert_eq!(t, vec![1.0, 0.4, -0.1]);
    for (opts, key) in [
        ("copy_thresholds = [0.4, 1.0]", "copy_thresholds"),
        ("copy_thresholds = [1.0, nan]", "copy_thresholds"),
        ("warm_up_epochs = 60", "warm_up_epochs"),
        ("warmup = 3", "warmup"),
    ] {
        let t: toml::Table = toml::from_str(opts).unwrap();
        let e = common::build_method("sample-valuation", &t)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{opts}: {e}");
    }
}

// ---------------------------------------------------------------- runs

const SHORT: [&str; 2] = ["method.warm_up_epochs=1", "method.schedule_epochs=0"];

/// A short run values the training set every epoch, re-samples after the warm-up (the epoch
/// grows by the planned copies) and learns.
#[test]
fn sample_valuation_runs_log_the_mechanism_and_learn() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(dir.path(), "sample-valuation", 0, 4, &SHORT);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 4);
    let mut planned_prev: Option<u64> = None;
    for r in &train {
        let m = &r.method;
        eprintln!(
            "sample-valuation {}: contrib {} / {} copies {} / {} epoch_len {}",
            r.epoch,
            m["contrib.audio"],
            m["contrib.visual"],
            m["resample.copies.audio"],
            m["resample.copies.visual"],
            m["resample.epoch_len"]
        );
        let (ca, cv) = (
            m["contrib.audio"].as_f64().unwrap(),
            m["contrib.visual"].as_f64().unwrap(),
        );
        assert!((-0.5..=1.5).contains(&ca) && (-0.5..=1.5).contains(&cv));
        let copies = m["resample.copies.audio"].as_u64().unwrap()
            + m["resample.copies.visual"].as_u64().unwrap();
        assert_eq!(m["resample.epoch_len"].as_u64().unwrap(), 480 + copies);
        if r.epoch == 0 {
            assert_eq!(copies, 0, "warm-up");
            assert_eq!(m["resample.active"].as_bool(), Some(false));
        } else {
            // The copies trained are those planned at the end of the previous epoch.
            assert_eq!(Some(copies), planned_prev, "epoch {}", r.epoch);
            assert_eq!(m["resample.active"].as_bool(), Some(true));
        }
        planned_prev = Some(
            m["next_copies.audio"].as_u64().unwrap() + m["next_copies.visual"].as_u64().unwrap(),
        );
    }
    assert!(planned_prev.unwrap() > 0);
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.5);
}

#[test]
fn same_seed_gives_identical_metrics() {
    for method in ["sample-valuation", "modality-valuation"] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ra = common::run_method(a.path(), method, 5, 3, &SHORT);
        let rb = common::run_method(b.path(), method, 5, 3, &SHORT);
        let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        assert_eq!(read(&ra.run_dir), read(&rb.run_dir), "{method}");
    }
}

/// A short `modality-valuation` run: the subset means, d and the enhanced modality are logged;
/// the copies planned are `⌊d N⌋`, all for the enhanced modality (the one with the lower subset
/// contribution), and the next epoch trains exactly them.
#[test]
fn modality_valuation_runs_log_the_mechanism_and_learn() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::run_method(dir.path(), "modality-valuation", 0, 4, &SHORT);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.len(), 4);
    let mut planned_prev: Option<(u64, u64)> = None;
    for r in &train {
        let m = &r.method;
        eprintln!(
            "modality-valuation {}: contrib {} / {} subset {} / {} d {} enhanced {} num {}",
            r.epoch,
            m["contrib.audio"],
            m["contrib.visual"],
            m["subset_contrib.audio"],
            m["subset_contrib.visual"],
            m["difference"],
            m["enhanced"],
            m["resample_num"]
        );
        let (sa, sv) = (
            m["subset_contrib.audio"].as_f64().unwrap(),
            m["subset_contrib.visual"].as_f64().unwrap(),
        );
        let d = m["difference"].as_f64().unwrap();
        // Closed form: d = |(1 − c_a) − (1 − c_v)| · 2/3 (linear, α = 1).
        assert!((d - (sa - sv).abs() * 2.0 / 3.0).abs() < 1e-12, "{d}");
        let num = m["resample_num"].as_u64().unwrap();
        assert_eq!(num, (d * 480.0) as u64);
        let enhanced = m["enhanced"].as_str().unwrap();
        if sa != sv {
            assert_eq!(enhanced, if sa < sv { "audio" } else { "visual" });
        }
        let (na, nv) = (
            m["next_copies.audio"].as_u64().unwrap(),
            m["next_copies.visual"].as_u64().unwrap(),
        );
        assert_eq!(na + nv, num);
        assert!(if enhanced == "audio" {
            nv == 0
        } else {
            na == 0
        });
        let trained = (
            m["resample.copies.audio"].as_u64().unwrap(),
            m["resample.copies.visual"].as_u64().unwrap(),
        );
        if r.epoch == 0 {
            assert_eq!(trained, (0, 0), "warm-up");
        } else {
            assert_eq!(Some(trained), planned_prev, "epoch {}", r.epoch);
        }
        planned_prev = Some((na, nv));
    }
    assert!(o.summary.as_ref().unwrap().test.fusion_acc > 0.5);
}

#[test]
fn modality_valuation_registry_defaults_and_bad_values() {
    let b = common::build_method("modality-valuation", &toml::Table::new()).unwrap();
    assert_eq!(b.fusion, FusionConfig::Concat);
    assert_eq!(b.resolved["warm_up_epochs"].as_integer(), Some(5));
    assert_eq!(b.resolved["schedule_epochs"].as_integer(), Some(60));
    assert_eq!(b.resolved["part_ratio"].as_float(), Some(0.2));
    assert_eq!(b.resolved["alpha"].as_float(), Some(1.0));
    assert_eq!(b.resolved["func"].as_str(), Some("linear"));
    for (opts, key) in [
        ("part_ratio = 0.0", "part_ratio"),
        ("part_ratio = 1.5", "part_ratio"),
        ("alpha = -1.0", "alpha"),
        ("func = \"cubic\"", "cubic"),
        ("copy_thresholds = [1.0]", "copy_thresholds"),
    ] {
        let t: toml::Table = toml::from_str(opts).unwrap();
        let e = common::build_method("modality-valuation", &t)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{opts}: {e}");
    }
}

/// A run stopped after two epochs (the planned copies in the checkpoint) and resumed writes the
/// same metrics as an uninterrupted one.
#[test]
fn resumed_runs_match_uninterrupted_ones() {
    for method in ["sample-valuation", "modality-valuation"] {
        let mut sets = vec![format!("method.name={method}")];
        sets.extend(SHORT.iter().map(|s| s.to_string()));
        common::assert_resume_matches(&sets, 3, 4, 2, method);
    }
}

/// Three modalities end to end (synth-vec with its text modality).
#[test]
fn three_modality_runs_train() {
    for method in ["sample-valuation", "modality-valuation"] {
        let dir = tempfile::tempdir().unwrap();
        let mut extra: Vec<&str> = SHORT.to_vec();
        extra.push("dataset.third_modality=true");
        let o = common::run_method(dir.path(), method, 1, 3, &extra);
        let last = o.history.iter().rfind(|r| r.split == "train").unwrap();
        let sum: f64 = ["audio", "visual", "text"]
            .iter()
            .map(|n| {
                last.method[format!("contrib.{n}").as_str()]
                    .as_f64()
                    .unwrap()
            })
            .sum();
        // Efficiency: the mean of Σ_m φ_m is 3 × the training accuracy of the valued model.
        assert!((0.0..=3.0).contains(&sum), "{method}: {sum}");
        assert!(
            o.summary.as_ref().unwrap().test.fusion_acc > 0.4,
            "{method}"
        );
    }
}
