//! Real-data loaders end to end: `modbal train` on tiny generated CGMNIST and CREMA-D trees.
//! (The loaders themselves are tested in `crates/modbal-data/tests/loaders.rs`.)

mod common;

use modbal::data::real::fixtures::{self, AvFixture};

/// `modbal train ARGS… --set dataset.root=DATA` for one epoch with small conv4 encoders on both
/// CGMNIST views, into `out`.
fn train_tiny_cgmnist(
    data: &std::path::Path,
    out: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let root = format!("dataset.root={:?}", data.display().to_string());
    let mut all = vec!["train"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--set",
        &root,
        "--set",
        "model.encoders.gray.kind=conv4",
        "--set",
        "model.encoders.gray.channels=[8, 8, 16, 16]",
        "--set",
        "model.encoders.color.kind=conv4",
        "--set",
        "model.encoders.color.channels=[8, 8, 16, 16]",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    common::modbal_cli(&all)
}

#[test]
fn train_one_epoch_on_tiny_cgmnist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    fixtures::write_mnist(&data, 300, 100, 1).unwrap();
    let out = dir.path().join("runs");
    let (code, stdout, stderr) = train_tiny_cgmnist(&data, &out, &["--dataset", "cgmnist"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let run = out.join("cgmnist-concat-s0");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["dataset"], "cgmnist");
    let acc = summary["test"]["fusion_acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(summary["test"]["modality_acc"]["color"].is_number());
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        cfg.contains("color_correlation = 1.0") && cfg.contains("kind = \"conv4\""),
        "{cfg}"
    );
    // The default encoders for cgmnist are conv4 (resolved into config.toml).
    let (code, _, stderr) = common::modbal_cli(&[
        "train",
        "--set",
        "dataset.name=cgmnist",
        "--set",
        &format!("dataset.root={:?}", data.display().to_string()),
        "--set",
        "dataset.limit_train=40",
        "--set",
        "dataset.limit_test=20",
        "--set",
        "dataset.val_fraction=0.25",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "defaults",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let cfg = std::fs::read_to_string(out.join("defaults/config.toml")).unwrap();
    assert!(
        cfg.contains("[model.encoders.gray]\nkind = \"conv4\""),
        "{cfg}"
    );
}

#[test]
fn train_one_epoch_on_a_tiny_prepared_crema_d_tree() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("crema");
    AvFixture {
        jpeg: true,
        texture: true,
        ..Default::default()
    }
    .write_prepared(&data)
    .unwrap();
    let out = dir.path().join("runs");
    let (code, stdout, stderr) = common::modbal_cli(&[
        "train",
        "--set",
        "dataset.name=crema-d",
        "--set",
        &format!("dataset.root={:?}", data.display().to_string()),
        "--set",
        "dataset.image_size=32",
        "--set",
        "dataset.frames=2",
        "--set",
        "dataset.val_fraction=0.25",
        "--set",
        "train.batch_size=9",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let cfg = std::fs::read_to_string(out.join("crema-d-concat-s0/config.toml")).unwrap();
    // Audio spectrogram → ResNet18 on [1, F, T]; T-frame clip → ResNet18 with frame pooling.
    assert!(
        cfg.contains("[model.encoders.audio]\nkind = \"resnet18\"\nframes_pooling = false")
            && cfg.contains("[model.encoders.visual]\nkind = \"resnet18\"\nframes_pooling = true"),
        "{cfg}"
    );
    // A missing root is an error naming it.
    let (code, _, stderr) = common::modbal_cli(&[
        "train",
        "--dataset",
        "crema-d",
        "--set",
        "dataset.root=/nonexistent/crema",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/crema"), "{stderr}");
}

#[test]
fn a_paper_preset_sets_the_protocol_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    fixtures::write_mnist(&data, 200, 60, 2).unwrap();
    let out = dir.path().join("runs");
    // The UDI CGMNIST protocol with another method: protocol kept, method's own defaults.
    let (code, stdout, stderr) = train_tiny_cgmnist(
        &data,
        &out,
        &["--preset", "udi/cgmnist", "--method", "concat"],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let cfg: toml::Table = std::fs::read_to_string(out.join("cgmnist-concat-s0/config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cfg["preset"].as_str(), Some("udi/cgmnist"));
    assert_eq!(cfg["method"]["name"].as_str(), Some("concat"));
    let train = &cfg["train"];
    // Values of modbal::presets "udi/cgmnist" (UDI A.6), --epochs wins over the preset.
    assert_eq!(train["epochs"].as_integer(), Some(1));
    assert_eq!(train["batch_size"].as_integer(), Some(64));
    assert_eq!(train["optimizer"]["lr"].as_float(), Some(0.001));
    assert_eq!(train["optimizer"]["weight_decay"].as_float(), Some(0.0001));
    assert_eq!(cfg["dataset"]["validation"].as_str(), Some("ood"));
    // A dataset that contradicts the preset is an error naming both.
    let (code, _, stderr) = common::modbal_cli(&[
        "train",
        "--preset",
        "udi/cgmnist",
        "--dataset",
        "synth-av",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("synth-av") && stderr.contains("udi/cgmnist"),
        "{stderr}"
    );
    let (code, _, stderr) = common::modbal_cli(&["train", "--preset", "udi/mnist"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("udi/cgmnist"), "{stderr}");
    // `modbal presets` lists them; one preset shows each value with its source.
    let (code, list, _) = common::modbal_cli(&["presets"]);
    assert_eq!(code, 0);
    for p in [
        "udi/crema-d",
        "udi/cgmnist",
        "cal/ave",
        "ibml/crema-d",
        "arm/kinetics-sounds",
        "ogm-ge/crema-d",
        "mmcosine/crema-d",
    ] {
        assert!(list.contains(p), "{p} missing from\n{list}");
    }
    let (code, one, _) = common::modbal_cli(&["presets", "arm/kinetics-sounds"]);
    assert_eq!(code, 0);
    assert!(
        one.contains("train.epochs = 80") && one.contains("ARM App. B"),
        "{one}"
    );
}
