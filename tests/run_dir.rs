//! The run directory: files, determinism, model selection on validation, reload, resume.

mod common;

use modbal::RunConfig;

#[test]
fn run_writes_everything_and_same_seed_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::train(&common::small_vec(dir.path(), 7, 3));
    let b = common::train(&common::small_vec(dir.path(), 7, 3));
    assert_ne!(
        a.run_dir, b.run_dir,
        "a second run must not overwrite the first"
    );
    for f in [
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "meta.json",
        "timing.jsonl",
        "plots/accuracy.svg",
        "plots/loss.svg",
        "checkpoints/last/model.safetensors",
        "checkpoints/last/optimizer.safetensors",
        "checkpoints/last/optimizer.json",
        "checkpoints/last/state.json",
        "checkpoints/best/model.safetensors",
    ] {
        assert!(a.run_dir.join(f).exists(), "missing {f}");
    }
    let ma = std::fs::read(a.run_dir.join("metrics.jsonl")).unwrap();
    let mb = std::fs::read(b.run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(ma, mb, "same seed must give byte-identical metrics.jsonl");
    let c = common::train(&common::small_vec(dir.path(), 8, 3));
    let mc = std::fs::read(c.run_dir.join("metrics.jsonl")).unwrap();
    assert_ne!(ma, mc, "a different seed should change the run");

    // Required keys on every line.
    for line in String::from_utf8(ma).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for k in [
            "epoch",
            "split",
            "loss",
            "fusion_acc",
            "modality_acc",
            "macro_f1",
            "discrepancy_ratio",
            "lr",
            "method",
        ] {
            assert!(v.get(k).is_some(), "metrics line lacks {k}: {line}");
        }
        assert!(v["modality_acc"].get("audio").is_some());
    }
}

#[test]
fn best_epoch_is_selected_on_validation_and_reported_on_test() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::train(&common::small_vec(dir.path(), 3, 4));
    let s = out.summary.unwrap();
    let recs = common::read_metrics(&out.run_dir);
    let val: Vec<_> = recs.iter().filter(|r| r.split == "val").collect();
    assert_eq!(val.len(), 4);
    assert!(
        recs.iter().all(|r| r.split != "test"),
        "test must not be evaluated per epoch"
    );
    // First epoch with the maximal validation accuracy.
    let best = val
        .iter()
        .fold(None::<&&modbal::EpochRecord>, |b, r| match b {
            Some(b) if b.fusion_acc >= r.fusion_acc => Some(b),
            _ => Some(r),
        })
        .unwrap();
    assert_eq!(s.best_epoch, best.epoch);
    assert_eq!(s.selected_on, "val.fusion_acc");
    // The summary's val metrics are those of the restored best model.
    assert!((s.val.fusion_acc - best.fusion_acc).abs() < 1e-12);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.run_dir.join("summary.json")).unwrap())
            .unwrap();
    for k in [
        "fusion_acc",
        "modality_acc",
        "macro_f1",
        "discrepancy_ratio",
        "loss",
    ] {
        assert!(summary["test"].get(k).is_some(), "summary.test lacks {k}");
    }
}

#[test]
fn resolved_config_reloads_to_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::train(&common::small_vec(dir.path(), 11, 2));
    let cfg = RunConfig::from_file(&a.run_dir.join("config.toml")).unwrap();
    assert!(
        !cfg.model.encoders.is_empty(),
        "config.toml must be fully resolved"
    );
    let b = common::train(&cfg);
    assert_eq!(
        std::fs::read(a.run_dir.join("metrics.jsonl")).unwrap(),
        std::fs::read(b.run_dir.join("metrics.jsonl")).unwrap()
    );
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let full = common::train(&common::small_vec(dir.path(), 5, 4));
    let cfg = common::small_vec(dir.path(), 5, 4);
    let part = modbal::train(&cfg, &common::stop_after(2)).unwrap();
    assert!(part.summary.is_none());
    assert_eq!(common::read_metrics(&part.run_dir).len(), 4);
    let resumed = modbal::resume(&part.run_dir, &common::quiet()).unwrap();
    assert_eq!(
        std::fs::read_to_string(full.run_dir.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(resumed.run_dir.join("metrics.jsonl")).unwrap()
    );
    assert_eq!(full.summary.unwrap().test, resumed.summary.unwrap().test);
}

#[test]
fn divergence_stops_with_a_clear_error_and_keeps_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_vec(dir.path(), 0, 3)
        .with_overrides(&[
            "train.optimizer.lr=1e12".into(),
            "train.optimizer.momentum=0.0".into(),
        ])
        .unwrap();
    let err = modbal::train(&cfg, &common::quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-finite"), "{err}");
    let run = dir.path().join(cfg.run_name());
    assert!(run.join("config.toml").exists());
    assert!(run.join("metrics.jsonl").exists());
}

#[test]
fn sum_fusion_with_a_third_modality_and_unimodal_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_vec(dir.path(), 1, 3)
        .with_overrides(&[
            "method.name=sum".into(),
            "dataset.third_modality=true".into(),
        ])
        .unwrap();
    let s = common::train(&cfg).summary.unwrap();
    let names: Vec<&String> = s.val.modality_acc.keys().collect();
    assert_eq!(names, ["audio", "text", "visual"]);
    assert!(s.val.discrepancy_ratio.unwrap() >= 1.0);
    // Chance is 1/6; three informative modalities must do far better after 3 epochs.
    assert!(s.test.fusion_acc > 0.6, "{}", s.test.fusion_acc);

    let cfg = common::small_vec(dir.path(), 1, 2)
        .with_overrides(&[
            "method.name=unimodal".into(),
            "method.modality=visual".into(),
        ])
        .unwrap();
    let out = common::train(&cfg);
    let s = out.summary.unwrap();
    assert_eq!(s.val.modality_acc.keys().collect::<Vec<_>>(), ["visual"]);
    assert_eq!(s.val.discrepancy_ratio, None);
    // A unimodal head maps only its modality: fusion and slice accuracy coincide.
    assert_eq!(s.val.fusion_acc, s.val.modality_acc["visual"]);
    let written = std::fs::read_to_string(out.run_dir.join("config.toml")).unwrap();
    assert!(
        written.contains("modality = \"visual\"") && !written.contains("[model.encoders.audio]")
    );
}

/// A method that lists the modalities in another order than the dataset gets its inputs in its
/// own order (regression: the selection used to be skipped when only the order differed).
#[test]
fn a_reordered_modality_list_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_vec(dir.path(), 2, 3)
        .with_overrides(&[
            "method.name=udi".into(),
            "method.modalities=[\"visual\", \"audio\"]".into(),
        ])
        .unwrap();
    let out = common::train(&cfg);
    let s = out.summary.unwrap();
    // Both modalities end clearly above chance (1/6) with their own encoder; paired wrongly,
    // the 16-d audio encoder would be handed the 32-d visual input and the run would fail.
    assert!(
        s.val.modality_acc["audio"] > 0.4 && s.val.modality_acc["visual"] > 0.22,
        "{:?}",
        s.val.modality_acc
    );
}
