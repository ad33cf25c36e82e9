//! The robust-fusion rows of CAL Tables 2-3 on the layouts of their datasets: MVSA-Single (raw
//! layout: `data/<id>.jpg`, `data/<id>.txt`, `labelResultAll.txt`; text as GloVe vectors of the
//! tiny GloVe fixture) and NYU Depth v2 (list layout, `modbal::data::real::fixtures::write_nyu`),
//! both written by the test. Each method trains one epoch through the registry, then its
//! selected model is evaluated on the test split under QMF-scale noise (`--noise-scale qmf`),
//! and the text of MVSA's noisy test split is checked to be masked.

mod common;

use modbal::data::noise::{NoiseConfig, NoiseKind, NoiseOn};
use modbal::data::real::fixtures;
use modbal::{evaluate_test, load_splits, RunConfig};
use std::path::{Path, PathBuf};

/// The rows of CAL Tables 2-3 (concat, the robust-fusion methods TMC, QMF, EAU, and CAL) and
/// the fusion-head baselines of CAL Table 1 / ARM Table 2 (block, film, gated) that run on any
/// two-modality dataset.
const METHODS: &[&str] = &[
    "concat", "tmc", "qmf", "eau", "cal", "block", "film", "gated",
];

fn glove() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/modbal-encoders/tests/fixtures/glove_tiny.txt")
}

/// An MVSA-Single raw layout with `n` tweets: label pairs cycling through the three agreeing
/// classes, images whose red channel and tweets whose words depend on the label.
fn write_mvsa(root: &Path, n: usize) {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let labels = ["positive,positive", "negative,negative", "neutral,neutral"];
    let words = ["the cat sat", "a dog ran", "the sun"];
    let mut list = String::from("ID\ttext,image\n");
    for id in 1..=n {
        let c = id % 3;
        list.push_str(&format!("{id}\t{}\n", labels[c]));
        let shade = (60 * c + (id * 7) % 40) as u8;
        fixtures::write_image(&data.join(format!("{id}.jpg")), 20, 16, 3, |x, y, ch| {
            if ch == 0 {
                shade
            } else {
                (x * 9 + y * 5) as u8
            }
        })
        .unwrap();
        std::fs::write(data.join(format!("{id}.txt")), words[c]).unwrap();
    }
    std::fs::write(root.join("labelResultAll.txt"), list).unwrap();
}

fn base(dataset: &str, root: &Path, out: &Path, extra: &[String]) -> RunConfig {
    let mut sets = vec![
        format!("dataset.name={dataset:?}"),
        format!("dataset.root={:?}", root.display().to_string()),
        "dataset.image_size=16".into(),
        "dataset.workers=1".into(),
        "train.epochs=1".into(),
        "train.batch_size=8".into(),
        format!("out_dir={:?}", out.display().to_string()),
    ];
    sets.extend(extra.iter().cloned());
    RunConfig::default().with_overrides(&sets).unwrap()
}

fn mvsa(root: &Path, out: &Path) -> RunConfig {
    base(
        "mvsa",
        root,
        out,
        &[
            "dataset.text.kind=\"glove_vectors\"".into(),
            format!("dataset.text.glove={:?}", glove().display().to_string()),
            "dataset.text.max_len=6".into(),
            "model.encoders.image.kind=\"small_cnn\"".into(),
        ],
    )
}

fn nyu(root: &Path, out: &Path) -> RunConfig {
    base(
        "nyu-depth",
        root,
        out,
        &[
            "model.encoders.rgb.kind=\"small_cnn\"".into(),
            "model.encoders.depth.kind=\"small_cnn\"".into(),
        ],
    )
}

/// Train `method` for one epoch on `cfg`, then evaluate the selected model on the test split
/// under QMF-scale Gaussian ε = 10 and salt-pepper ε = 5: every accuracy is a probability.
fn train_and_attack(cfg: &RunConfig, method: &str) {
    let c = cfg
        .with_overrides(&[format!("method.name={method:?}")])
        .unwrap();
    let out = modbal::train(&c, &common::quiet())
        .unwrap_or_else(|e| panic!("{method} on {}: {e}", c.dataset.name));
    let acc = out.summary.as_ref().unwrap().test.fusion_acc;
    assert!((0.0..=1.0).contains(&acc), "{method}: {acc}");
    for (kind, eps) in [(NoiseKind::Gaussian, 10.0), (NoiseKind::SaltPepper, 5.0)] {
        let n = NoiseConfig::qmf(kind, eps, NoiseOn::Test);
        let m = evaluate_test(&out.run_dir, Some(&n))
            .unwrap_or_else(|e| panic!("{method} under {}: {e}", n.tag()));
        assert!((0.0..=1.0).contains(&m.fusion_acc), "{method}: {m:?}");
    }
}

#[test]
fn robust_rows_train_on_the_mvsa_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mvsa");
    write_mvsa(&root, 45);
    let cfg = mvsa(&root, &dir.path().join("runs"));
    for m in METHODS {
        train_and_attack(&cfg, m);
    }
    // MMTM needs encoders with the same number of stages: a CNN and a BiGRU do not have them,
    // and the error says so before any training.
    let c = cfg
        .with_overrides(&["method.name=\"mmtm\"".to_string()])
        .unwrap();
    let e = modbal::train(&c, &common::quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("same number of stages"), "{e}");
    // QMF's masking reaches MVSA's text: at ε = 10 a masked tweet is all `_`, whose GloVe
    // vectors (unknown words) differ from the clean ones; about half the tweets are masked.
    let mut noisy = cfg.clone();
    noisy.noise = Some(NoiseConfig::qmf(NoiseKind::Gaussian, 10.0, NoiseOn::Test));
    let (clean, noisy) = (load_splits(&cfg).unwrap(), load_splits(&noisy).unwrap());
    let n = clean.test.len();
    let changed = (0..n)
        .filter(|&i| clean.test.get(i).unwrap().inputs[1] != noisy.test.get(i).unwrap().inputs[1])
        .count();
    assert!(
        changed > 0 && changed < n,
        "{changed} of {n} test tweets masked"
    );
}

#[test]
fn robust_rows_train_on_the_nyu_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nyu");
    fixtures::write_nyu(&root, &["bedroom", "kitchen", "office"], 10, 4).unwrap();
    let cfg = nyu(&root, &dir.path().join("runs"));
    for m in METHODS.iter().chain(&["mmtm"]) {
        train_and_attack(&cfg, m);
    }
}

// A preset on MVSA (CAL Tables 2-3's protocol for EAU) takes the keys only the user knows —
// the data root and the text encoding — from `--set`; without them the error names the key.
#[test]
fn mvsa_preset_applies_with_the_users_root_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mvsa");
    write_mvsa(&root, 30);
    let out = dir.path().join("runs");
    let (code, _, err) = common::modbal_cli(&[
        "train",
        "--preset",
        "eau/mvsa",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("dataset.root"), "{err}");
    let root_set = format!("dataset.root={:?}", root.display().to_string());
    let glove_set = format!("dataset.text.glove={:?}", glove().display().to_string());
    let (code, _, err) = common::modbal_cli(&[
        "train",
        "--preset",
        "eau/mvsa",
        "--set",
        &root_set,
        "--set",
        "dataset.text.kind=\"glove_vectors\"",
        "--set",
        &glove_set,
        "--set",
        "dataset.text.max_len=6",
        "--set",
        "dataset.image_size=16",
        "--set",
        "dataset.workers=1",
        "--set",
        "model.encoders.image.kind=\"small_cnn\"",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let cfg = RunConfig::from_file(&out.join("mvsa-eau-s0/config.toml")).unwrap();
    assert_eq!(cfg.preset.as_deref(), Some("eau/mvsa"));
    assert_eq!(cfg.train.batch_size, 8, "the preset's batch size");
    assert_eq!(cfg.train.epochs, 1, "--epochs after the preset");
}
