//! The train/test-shift benchmark (`synth-shift`), OOD validation, and the summary's test
//! numbers (`test`, `test_last`, the opt-in labelled `test_curve`).
//!
//! Reference facts are closed forms of the protocol: with OOD validation the validation split
//! is distributed as the test split, so the selected model's validation and test accuracies
//! agree within sampling error (600 / 1000 samples: a binomial sd of ≈0.02 each); with IID
//! validation the colour shortcut is rewarded (validation ≈ 1.0) while test collapses.

mod common;

use modbal::{MethodConfig, RunConfig, Summary};
use std::path::Path;

fn shift(out: &Path, name: &str, sets: &[&str]) -> RunConfig {
    let mut all: Vec<String> = vec![
        "dataset.name=synth-shift".into(),
        "dataset.train=2000".into(),
        "train.epochs=6".into(),
        format!("out_dir={:?}", out.display().to_string()),
        format!("name={name:?}"),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    RunConfig::default().with_overrides(&all).unwrap()
}

fn summary(cfg: &RunConfig) -> Summary {
    common::train(cfg).summary.unwrap()
}

#[test]
fn shift_benchmark_punishes_the_shortcut_and_ood_validation_does_not_reward_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut gray = shift(dir.path(), "gray", &[]);
    gray.method = MethodConfig::unimodal("gray");
    let gray = summary(&gray);
    let concat_ood = summary(&shift(dir.path(), "concat-ood", &[]));
    let concat_iid = summary(&shift(
        dir.path(),
        "concat-iid",
        &["dataset.validation=\"iid\""],
    ));
    eprintln!(
        "gray alone test {:.3}; concat test {:.3} (ood val {:.3}); concat iid-selected val {:.3} test {:.3}",
        gray.test.fusion_acc,
        concat_ood.test.fusion_acc,
        concat_ood.val.fusion_acc,
        concat_iid.val.fusion_acc,
        concat_iid.test.fusion_acc
    );
    // The bar: concat at least 30 points below the better modality alone on test.
    assert!(
        concat_ood.test.fusion_acc < gray.test.fusion_acc - 0.30,
        "concat {:.3} vs gray alone {:.3}",
        concat_ood.test.fusion_acc,
        gray.test.fusion_acc
    );
    // IID validation rewards the shortcut: near-perfect validation, collapsed test.
    assert!(concat_iid.val.fusion_acc > 0.9, "{:?}", concat_iid.val);
    assert!(concat_iid.test.fusion_acc < 0.5, "{:?}", concat_iid.test);
    // OOD validation predicts test (same distribution): within 0.08 (≈ 3 combined sd).
    for s in [&gray, &concat_ood] {
        assert!(
            (s.val.fusion_acc - s.test.fusion_acc).abs() < 0.08,
            "{}: val {:.3} test {:.3}",
            s.run,
            s.val.fusion_acc,
            s.test.fusion_acc
        );
    }
}

#[test]
fn the_test_curve_is_opt_in_labelled_and_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut plain = common::small_vec(dir.path(), 3, 5);
    plain.name = "plain".into();
    let mut curve = plain.clone();
    curve.name = "curve".into();
    curve.train.report_test_curve = true;
    let a = common::train(&plain);
    let b = common::train(&curve);
    // Same decisions: metrics.jsonl byte-identical, same headline.
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        read(&a.run_dir.join("metrics.jsonl")),
        read(&b.run_dir.join("metrics.jsonl"))
    );
    let (sa, sb) = (a.summary.unwrap(), b.summary.unwrap());
    assert_eq!(sa.test, sb.test);
    assert_eq!(sa.best_epoch, sb.best_epoch);
    assert!(sa.test_curve.is_none());
    assert!(!a.run_dir.join(modbal::TEST_CURVE_FILE).exists());
    // The curve: one test line per epoch; its best epoch is the argmax (first on ties); the
    // last line is the summary's test_last.
    let lines: Vec<modbal::EpochRecord> = read(&b.run_dir.join("test_curve.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|r| r.split == "test"));
    let mut best = 0;
    for (i, r) in lines.iter().enumerate() {
        if r.fusion_acc > lines[best].fusion_acc {
            best = i;
        }
    }
    let c = sb.test_curve.as_ref().unwrap();
    assert_eq!(c.best_epoch, best);
    assert_eq!(c.test.fusion_acc, lines[best].fusion_acc);
    assert!(c.warning.contains("TEST split"), "{}", c.warning);
    assert_eq!(sb.test_last.fusion_acc, lines[4].fusion_acc);
    assert_eq!(sb.test_last.modality_acc, lines[4].modality_acc);
    // The selected model's test metrics are those of its epoch on the curve.
    assert_eq!(sb.test.fusion_acc, lines[sb.best_epoch].fusion_acc);
    let json = read(&b.run_dir.join("summary.json"));
    assert!(json.contains("\"test_curve\"") && json.contains("\"test_last\""));
}

#[test]
fn udi_on_the_shift_benchmark_anchors_on_the_modality_without_the_cue() {
    // With OOD validation the colour view's unimodal validation accuracy is near chance (its
    // shortcut does not transfer), so UDI's anchor rule (best unimodal validation accuracy,
    // §3.2) must pick `gray`; the reported epoch must be a follower-stage epoch.
    let dir = tempfile::tempdir().unwrap();
    let cfg = shift(dir.path(), "udi", &["method.name=\"udi\""]);
    let out = common::train(&cfg);
    let s = out.summary.unwrap();
    let history = common::read_metrics(&out.run_dir);
    let anchors: Vec<&str> = history
        .iter()
        .filter_map(|r| r.method.get("anchor").and_then(|v| v.as_str()))
        .collect();
    assert!(!anchors.is_empty(), "UDI logged no anchor");
    assert!(anchors.iter().all(|a| *a == "gray"), "{anchors:?}");
    let stage = &history
        .iter()
        .find(|r| r.epoch == s.best_epoch)
        .unwrap()
        .stage;
    assert!(
        !stage.starts_with("unimodal"),
        "best epoch {} is in stage {stage}",
        s.best_epoch
    );
}

#[test]
fn a_resumed_run_keeps_its_test_curve_and_summary() {
    // Stopped after 2 of 5 epochs, a run with the test curve resumes to the same curve file and
    // the same summary (test, test_last, test_curve) as an uninterrupted one.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::small_vec(dir.path(), 4, 5);
    cfg.train.report_test_curve = true;
    cfg.name = "full".into();
    let full = common::train(&cfg);
    cfg.name = "part".into();
    let part = modbal::train(&cfg, &common::stop_after(2)).unwrap();
    assert!(part.summary.is_none());
    let curve = |p: &Path| std::fs::read_to_string(p.join("test_curve.jsonl")).unwrap();
    assert_eq!(curve(&part.run_dir).lines().count(), 2);
    let resumed = modbal::resume(&part.run_dir, &common::quiet()).unwrap();
    assert_eq!(curve(&full.run_dir), curve(&resumed.run_dir));
    let (a, b) = (full.summary.unwrap(), resumed.summary.unwrap());
    assert_eq!(
        (a.test, a.test_last, a.test_curve, a.best_epoch),
        (b.test, b.test_last, b.test_curve, b.best_epoch)
    );
}
