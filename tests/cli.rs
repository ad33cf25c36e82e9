//! The `modbal` binary: errors name the culprit; the README's command shape is reproducible.

mod common;

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = common::modbal_cli(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("train") && out.contains("resume"), "{out}");
    let (code, out, _) = common::modbal_cli(&["train", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--dataset",
        "--method",
        "--epochs",
        "--seed",
        "--out",
        "--config",
        "--set",
    ] {
        assert!(out.contains(flag), "train --help lacks {flag}");
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["train", "--method", "magic", "--out", d],
            vec!["unknown method", "magic", "concat"],
        ),
        (
            vec!["train", "--dataset", "cremad", "--out", d],
            vec!["unknown dataset", "cremad", "synth-av"],
        ),
        (
            vec!["train", "--set", "train.epochs", "--out", d],
            vec!["malformed --set", "train.epochs"],
        ),
        (
            vec!["train", "--set", "train.epoks=2", "--out", d],
            vec!["unknown", "epoks"],
        ),
        (
            vec!["train", "--set", "train.epochs=many", "--out", d],
            vec!["epochs"],
        ),
        (
            vec!["train", "--config", "/nonexistent/modbal.toml", "--out", d],
            vec!["/nonexistent/modbal.toml"],
        ),
        (
            vec![
                "train",
                "--method",
                "concat",
                "--modality",
                "visual",
                "--out",
                d,
            ],
            vec!["--modality"],
        ),
        (
            vec![
                "train",
                "--method",
                "unimodal",
                "--modality",
                "smell",
                "--out",
                d,
            ],
            vec!["smell", "audio", "visual"],
        ),
    ];
    for (args, needles) in cases {
        let (code, _, err) = common::modbal_cli(&args);
        assert_eq!(code, 1, "{args:?} should fail");
        for n in needles {
            assert!(err.contains(n), "{args:?}: error {err:?} lacks {n:?}");
        }
    }
    // An unreadable (malformed) config file is named in the error.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "seed = [unclosed").unwrap();
    let (code, _, err) = common::modbal_cli(&["train", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn train_command_writes_the_run_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = [
        "train",
        "--dataset",
        "synth-av",
        "--epochs",
        "1",
        "--seed",
        "3",
        "--out",
        d,
        "--no-progress",
        "--set",
        "dataset.train=96",
        "--set",
        "dataset.val=48",
        "--set",
        "dataset.test=48",
    ];
    let (code, out, err) = common::modbal_cli(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("fusion_acc") && out.contains("test"),
        "no results table: {out}"
    );
    let (code, _, err) = common::modbal_cli(&args);
    assert_eq!(code, 0, "{err}");
    let a = dir.path().join("synth-av-concat-s3");
    let b = dir.path().join("synth-av-concat-s3-1");
    assert_eq!(
        std::fs::read(a.join("metrics.jsonl")).unwrap(),
        std::fs::read(b.join("metrics.jsonl")).unwrap()
    );
    assert!(
        a.join("summary.json").exists() && a.join("checkpoints/last/model.safetensors").exists()
    );
}

#[test]
fn devices_are_chosen_on_the_command_line_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = common::modbal_cli(&["train", "--device", "cuda:1", "--out", d]);
    assert_ne!(code, 0);
    // This CI build has no `cuda` feature: the error says how to get one.
    assert!(
        err.contains("cuda:1") && err.contains("--features cuda"),
        "{err}"
    );
    let (code, _, err) = common::modbal_cli(&["train", "--device", "tpu", "--out", d]);
    assert_ne!(code, 0);
    assert!(err.contains("tpu") && err.contains("cuda:N"), "{err}");
    // Nothing was written for the refused runs.
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
}
