//! `examples/custom-method/`: a crate outside the workspace (its own Cargo.toml, depending on
//! `modbal` by path as it would on crates.io) adds a method, a dataset and an encoder to the
//! registry and gets the `modbal` command line for them. Built and run here with the
//! workspace's target directory (its compiled dependencies are reused).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target directory and profile this test was built in (`<target>/<profile>/deps/<exe>`).
fn target_and_profile() -> (PathBuf, String) {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (profile_dir.parent().unwrap().to_path_buf(), profile)
}

/// `cargo build` the example once, from a copy in `scratch` (its path dependency made absolute,
/// the workspace's Cargo.lock as its lock file, so that the build needs no network and leaves
/// the repository untouched); the path of its binary.
fn build(scratch: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("examples/custom-method");
    let krate = scratch.join("custom-method");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    let manifest = std::fs::read_to_string(example.join("Cargo.toml"))
        .unwrap()
        .replace(
            "path = \"../..\"",
            &format!("path = {:?}", root.display().to_string()),
        );
    assert!(manifest.contains(&root.display().to_string()), "{manifest}");
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    for f in ["lib.rs", "main.rs"] {
        std::fs::copy(example.join("src").join(f), krate.join("src").join(f)).unwrap();
    }
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let (target, profile) = target_and_profile();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--offline", "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target);
    if profile == "release" {
        cmd.arg("--release");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "building examples/custom-method failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join(profile).join("custom-method")
}

fn run(bin: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_program_outside_the_workspace_trains_its_own_method_dataset_and_encoder() {
    let scratch = tempfile::tempdir().unwrap();
    let bin = build(scratch.path());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let common = [
        "train",
        "--dataset",
        "quadrants",
        "--method",
        "aux-ce",
        "--epochs",
        "8",
        "--seed",
        "3",
        "--out",
        out,
        "--quiet",
        "--no-progress",
    ];
    let train = |name: &str, extra: &[&str]| {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(["--name", name]);
        args.extend(extra);
        let (ok, text) = run(&bin, &args);
        assert!(ok, "{args:?}:\n{text}");
        dir.path().join(name)
    };

    // The full run: the user's dataset, method and default encoder, modbal's run directory.
    let full = train("full", &[]);
    for f in [
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "meta.json",
        "plots",
    ] {
        assert!(full.join(f).exists(), "{f} missing");
    }
    assert!(full.join("checkpoints/best/model.safetensors").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["method"], "aux-ce");
    assert_eq!(summary["dataset"], "quadrants");
    // Only fusion can name all four classes: a single modality tells one bit of the label, so
    // it is right at most half of the time (the strong one: Φ(2.5)/2 = 0.497); the Bayes
    // accuracy of both is Φ(2.5)·Φ(1.0) = 0.836 (closed form of the generator).
    let acc = summary["test"]["fusion_acc"].as_f64().unwrap();
    assert!(
        acc > 0.7 && acc < 0.836 + 0.06,
        "test fusion accuracy {acc}"
    );
    // The method's own log (auxiliary losses per modality) is in metrics.jsonl.
    let metrics = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for m in ["strong", "weak"] {
        let v = first["method"][format!("loss.aux.{m}")].as_f64();
        assert!(v.is_some_and(|v| v > 0.0), "{first}");
    }
    // config.toml records the user's encoder with its defaults, and reloads.
    let cfg = std::fs::read_to_string(full.join("config.toml")).unwrap();
    assert!(
        cfg.contains("kind = \"tanh-mlp\"") && cfg.contains("hidden = 16"),
        "{cfg}"
    );
    assert!(
        cfg.contains("weight = 1.0") && cfg.contains("strong_margin = 2.5"),
        "{cfg}"
    );

    // Stopped after 3 epochs and resumed: the same metrics as the uninterrupted run.
    let cut = train("cut", &["--stop-after", "3"]);
    assert!(!cut.join("summary.json").exists());
    let (ok, text) = run(&bin, &["resume", cut.to_str().unwrap(), "--no-progress"]);
    assert!(ok, "{text}");
    assert_eq!(
        std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap(),
        metrics
    );

    // Every flag of `modbal train` applies to the user's things too.
    let small = train(
        "small",
        &[
            "--set",
            "model.encoders.weak.kind=tanh-mlp",
            "--set",
            "model.encoders.weak.hidden=4",
            "--set",
            "method.weight=0.5",
        ],
    );
    let cfg = std::fs::read_to_string(small.join("config.toml")).unwrap();
    assert!(
        cfg.contains("hidden = 4") && cfg.contains("weight = 0.5"),
        "{cfg}"
    );

    // Errors name the culprit and list what is registered (built-in and the user's).
    let (ok, text) = run(&bin, &["train", "--method", "aux", "--out", out]);
    assert!(
        !ok && text.contains("aux-ce") && text.contains("ogm-ge"),
        "{text}"
    );
    let mut args = common.to_vec();
    args.extend(["--set", "method.weight=-1"]);
    let (ok, text) = run(&bin, &args);
    assert!(!ok && text.contains("weight"), "{text}");
    let mut args = common.to_vec();
    args.extend(["--set", "model.encoders.weak.kind=tanh-mlp"]);
    args.extend(["--set", "model.encoders.weak.hiden=4"]);
    let (ok, text) = run(&bin, &args);
    assert!(!ok && text.contains("hiden"), "{text}");
}
