//! modbal-text datasets end to end: `modbal train` on the tiny committed CMU-MOSEI pickle
//! (`crates/modbal-text/tests/fixtures/mosei_tiny.pkl`: 4 / 3 / 3 samples, text `[5, 6]`,
//! audio `[5, 4]`, vision `[5, 3]`), and the option errors of the `[dataset]` table.

mod common;

fn mosei_fixture() -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/modbal-text/tests/fixtures/mosei_tiny.pkl");
    format!("dataset.path={:?}", p.display().to_string())
}

#[test]
fn train_one_epoch_on_tiny_cmu_mosei() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let path = mosei_fixture();
    let (code, stdout, stderr) = common::modbal_cli(&[
        "train",
        "--dataset",
        "cmu-mosei",
        "--set",
        &path,
        "--set",
        "train.batch_size=2",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let run = out.join("cmu-mosei-concat-s0");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["dataset"], "cmu-mosei");
    let acc = summary["test"]["fusion_acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    for m in ["text", "audio", "vision"] {
        assert!(
            summary["test"]["modality_acc"][m].is_number(),
            "{m}: {summary}"
        );
    }
    // The options' defaults and the default encoders (MulT's sequence Transformer) are
    // resolved into config.toml.
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        cfg.contains("name = \"cmu-mosei\"")
            && cfg.contains("labels = \"binary\"")
            && cfg.contains("kind = \"seq_transformer\""),
        "{cfg}"
    );
}

#[test]
fn text_dataset_option_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let path = mosei_fixture();
    let run = |sets: &[&str]| {
        let mut args = vec!["train", "--dataset", "cmu-mosei", "--epochs", "1"];
        for s in sets {
            args.extend(["--set", s]);
        }
        args.extend(["--out", out.to_str().unwrap(), "--quiet"]);
        let (code, _, stderr) = common::modbal_cli(&args);
        assert_ne!(code, 0);
        stderr
    };
    let e = run(&[&path, "dataset.lables=\"seven\""]);
    assert!(e.contains("lables"), "{e}");
    let e = run(&[&path, "dataset.labels=\"five\""]);
    assert!(e.contains("five"), "{e}");
    let e = run(&[]);
    assert!(e.contains("dataset.path is required"), "{e}");
    // Food-101 / MVSA need a text encoding.
    let (code, _, e) = common::modbal_cli(&[
        "train",
        "--dataset",
        "food101",
        "--set",
        "dataset.root=/nonexistent",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_ne!(code, 0);
    assert!(e.contains("dataset.text is required"), "{e}");
    let (code, _, e) = common::modbal_cli(&[
        "train",
        "--dataset",
        "mvsa",
        "--set",
        "dataset.root=/nonexistent",
        "--set",
        "dataset.text.kind=glove_vectors",
        "--set",
        "dataset.text.glove=g.txt",
        "--set",
        "dataset.text.max_lenn=8",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_ne!(code, 0);
    assert!(e.contains("max_lenn"), "{e}");
}
