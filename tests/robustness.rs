//! The robustness protocol (`[noise]`, `--noise …`; `modbal_data::noise`): corruption statistics
//! against their definitions, which splits and modalities change, determinism across methods and
//! seeds, ε = 0 as the identity, what the run directory records, and the errors for bad values.
//! Everything runs on a small synth-vec (seconds in release mode).

mod common;

use modbal::data::noise::{NoiseConfig, NoiseKind, NoiseOn};
use modbal::data::{Dataset, Splits};
use modbal::{evaluate_test, load_splits, RunConfig};
use std::path::Path;

fn with_noise(cfg: &RunConfig, kind: &str, eps: f64, on: &str, mods: &[&str]) -> RunConfig {
    let list: Vec<String> = mods.iter().map(|m| format!("{m:?}")).collect();
    cfg.with_overrides(&[
        format!("noise.kind={kind:?}"),
        format!("noise.eps={eps:?}"),
        format!("noise.on={on:?}"),
        format!("noise.modalities=[{}]", list.join(", ")),
    ])
    .unwrap()
}

/// Every value of modality `m` of a split, sample after sample.
fn values(ds: &dyn Dataset, m: &str) -> Vec<f32> {
    let j = ds.modalities().iter().position(|x| x == m).unwrap();
    (0..ds.len())
        .flat_map(|i| ds.get(i).unwrap().inputs[j].clone())
        .collect()
}

/// Reference statistics of the clean training split, computed here independently of
/// `ModalityStats::of` (two passes in f64).
fn reference_stats(train: &dyn Dataset, m: &str) -> (f32, f32, f64) {
    let v = values(train, m);
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (lo, hi, var.sqrt())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn clean_and_noisy(cfg: &RunConfig) -> (Splits, Splits) {
    let mut clean = cfg.clone();
    clean.noise = None;
    (load_splits(&clean).unwrap(), load_splits(cfg).unwrap())
}

// Salt-and-pepper at ε = 0.2 on `visual` of the test split: the number of corrupted elements
// is Binomial(n, ε) (pepper and salt Binomial(n, ε/2) each); corrupted elements hold exactly the
// clean training min / max; every other element, the audio modality and the train / val splits
// are bit-identical to the clean data.
#[test]
fn salt_pepper_statistics_match_eps_and_only_the_chosen_modality_changes() {
    let dir = tempfile::tempdir().unwrap();
    let eps = 0.2;
    let cfg = with_noise(
        &common::small_vec(dir.path(), 0, 1),
        "salt-pepper",
        eps,
        "test",
        &["visual"],
    );
    let (clean, noisy) = clean_and_noisy(&cfg);
    let (lo, hi, _) = reference_stats(clean.train.as_ref(), "visual");
    let (c, x) = (
        values(clean.test.as_ref(), "visual"),
        values(noisy.test.as_ref(), "visual"),
    );
    let n = c.len() as f64;
    let (mut pepper, mut salt) = (0.0, 0.0);
    for (a, b) in c.iter().zip(&x) {
        if a.to_bits() == b.to_bits() {
            continue;
        }
        if *b == lo {
            pepper += 1.0;
        } else if *b == hi {
            salt += 1.0;
        } else {
            panic!("a corrupted element holds {b}, neither min {lo} nor max {hi}");
        }
    }
    // An element salted to the value it already had is not seen as changed: impossible here, the
    // test split never holds the training split's exact extremes (checked).
    assert!(!c.contains(&lo) && !c.contains(&hi));
    let bound = |p: f64, k: f64| {
        let sd = (n * p * (1.0 - p)).sqrt();
        eprintln!(
            "n {n}, p {p}: observed {k}, expected {:.1} ± {sd:.1}",
            n * p
        );
        assert!((k - n * p).abs() < 5.0 * sd, "{k} vs {} (sd {sd})", n * p);
    };
    bound(eps, pepper + salt);
    bound(eps / 2.0, pepper);
    bound(eps / 2.0, salt);
    assert_eq!(
        bits(&values(clean.test.as_ref(), "audio")),
        bits(&values(noisy.test.as_ref(), "audio"))
    );
    for (a, b) in [(&clean.train, &noisy.train), (&clean.val, &noisy.val)] {
        for m in ["audio", "visual"] {
            assert_eq!(bits(&values(a.as_ref(), m)), bits(&values(b.as_ref(), m)));
        }
    }
    // ε = 1: every element is corrupted.
    let all = with_noise(&cfg, "salt-pepper", 1.0, "test", &["visual"]);
    let v = values(load_splits(&all).unwrap().test.as_ref(), "visual");
    assert!(v.iter().all(|&b| b == lo || b == hi));
}

// Gaussian noise at ε = 0.5 on `audio`, train+test: the differences noisy − clean have mean 0 and
// standard deviation ε·σ_audio (σ over the clean training split), within 5 standard errors; the
// validation split stays clean, and `visual` is untouched everywhere.
#[test]
fn gaussian_noise_has_the_requested_std_on_train_and_test_only() {
    let dir = tempfile::tempdir().unwrap();
    let eps = 0.5;
    let cfg = with_noise(
        &common::small_vec(dir.path(), 0, 1),
        "gaussian",
        eps,
        "train+test",
        &["audio"],
    );
    let (clean, noisy) = clean_and_noisy(&cfg);
    let (_, _, sigma) = reference_stats(clean.train.as_ref(), "audio");
    let target = eps * sigma;
    for (name, a, b) in [
        ("train", &clean.train, &noisy.train),
        ("test", &clean.test, &noisy.test),
    ] {
        let d: Vec<f64> = values(a.as_ref(), "audio")
            .iter()
            .zip(values(b.as_ref(), "audio"))
            .map(|(x, y)| (y - x) as f64)
            .collect();
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        eprintln!(
            "{name}: n {n}, noise mean {mean:.4}, std {sd:.4}, target {target:.4} (σ_audio {sigma:.4})"
        );
        // Standard errors of a normal sample: mean σ/√n, std σ/√(2n).
        assert!(mean.abs() < 5.0 * target / n.sqrt(), "{name}: mean {mean}");
        assert!(
            (sd - target).abs() < 5.0 * target / (2.0 * n).sqrt(),
            "{name}: std {sd} vs {target}"
        );
        assert_eq!(
            bits(&values(a.as_ref(), "visual")),
            bits(&values(b.as_ref(), "visual"))
        );
    }
    for m in ["audio", "visual"] {
        assert_eq!(
            bits(&values(clean.val.as_ref(), m)),
            bits(&values(noisy.val.as_ref(), m))
        );
    }
}

// The corrupted data depend only on the data and the noise config: two methods with different
// run seeds (and a method that keeps only `visual`) see bit-identical corrupted `visual` test
// inputs; another noise seed gives another corruption.
#[test]
fn corruption_is_the_same_for_every_method_and_run_seed() {
    let dir = tempfile::tempdir().unwrap();
    let base = with_noise(
        &common::small_vec(dir.path(), 0, 1),
        "salt-pepper",
        0.3,
        "train+test",
        &[],
    );
    let runs = [
        base.clone(),
        base.with_overrides(&["method.name=cal".into(), "seed=7".into()])
            .unwrap(),
        base.with_overrides(&[
            "method.name=unimodal".into(),
            "method.modality=visual".into(),
            "seed=3".into(),
        ])
        .unwrap(),
        base.with_overrides(&[
            "method.name=udi".into(),
            "method.modalities=[\"visual\", \"audio\"]".into(),
        ])
        .unwrap(),
    ];
    let splits: Vec<Splits> = runs.iter().map(|c| load_splits(c).unwrap()).collect();
    for split in ["train", "test"] {
        let pick = |s: &Splits| match split {
            "train" => s.train.clone(),
            _ => s.test.clone(),
        };
        let first = bits(&values(pick(&splits[0]).as_ref(), "visual"));
        for s in &splits[1..] {
            assert_eq!(first, bits(&values(pick(s).as_ref(), "visual")), "{split}");
        }
    }
    let t0 = bits(&values(splits[0].test.as_ref(), "visual"));
    let mut clean = base.clone();
    clean.noise = None;
    assert_ne!(
        t0,
        bits(&values(
            load_splits(&clean).unwrap().test.as_ref(),
            "visual"
        ))
    );
    let other = base.with_overrides(&["noise.seed=1".into()]).unwrap();
    assert_ne!(
        t0,
        bits(&values(
            load_splits(&other).unwrap().test.as_ref(),
            "visual"
        ))
    );
    // Sample i's corruption does not depend on which samples are read before it.
    let ds = splits[0].test.clone();
    let once = ds.get(17).unwrap();
    let _ = ds.get(3).unwrap();
    assert_eq!(once, ds.get(17).unwrap());
}

fn strip_noise(metrics: &str) -> Vec<serde_json::Value> {
    metrics
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("noise");
            v
        })
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

// ε = 0 is the identity: a run with zero noise on every split has the clean run's metrics and
// test accuracy bit for bit. With ε > 0 on the test split only, training and validation (so the
// selected model and metrics.jsonl) are byte-identical to the clean run and only the test
// metrics move. The run directory records the settings.
#[test]
fn eps_zero_is_the_clean_run_and_test_noise_changes_only_the_test_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::small_vec(dir.path(), 4, 2);
    let clean = common::train(&base);
    let cs = clean.summary.unwrap();
    let clean_metrics = read(&clean.run_dir.join("metrics.jsonl"));
    for (kind, on) in [
        ("gaussian", "train+val+test"),
        ("salt-pepper", "train+test"),
    ] {
        let out = common::train(&with_noise(&base, kind, 0.0, on, &[]));
        let s = out.summary.unwrap();
        assert_eq!(s.test, cs.test, "{kind} ε = 0");
        assert_eq!(s.test.fusion_acc.to_bits(), cs.test.fusion_acc.to_bits());
        let m = read(&out.run_dir.join("metrics.jsonl"));
        assert_eq!(strip_noise(&m), strip_noise(&clean_metrics));
        // Recorded on the corrupted splits' lines only.
        for v in m
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        {
            let split = v["split"].as_str().unwrap();
            let covered = NoiseOn::from_name(on).unwrap().covers(split);
            assert_eq!(v.get("noise").is_some(), covered, "{on}: {v}");
            if covered {
                assert_eq!(v["noise"]["kind"], kind);
            }
        }
    }

    let noisy = with_noise(&base, "salt-pepper", 0.5, "test", &[]);
    let out = common::train(&noisy);
    let s = out.summary.unwrap();
    assert_eq!(read(&out.run_dir.join("metrics.jsonl")), clean_metrics);
    assert_eq!(s.val, cs.val);
    assert_eq!(s.best_epoch, cs.best_epoch);
    eprintln!(
        "test fusion accuracy: clean {:.4}, salt-pepper 0.5 on test {:.4}",
        cs.test.fusion_acc, s.test.fusion_acc
    );
    assert!(s.test.fusion_acc < cs.test.fusion_acc - 0.05);
    // Re-evaluating the clean run's selected model on the corrupted test split (no retraining)
    // gives the same test metrics; without noise it gives the clean ones.
    let re = evaluate_test(&clean.run_dir, noisy.noise.as_ref()).unwrap();
    assert_eq!(re, s.test);
    assert_eq!(evaluate_test(&clean.run_dir, None).unwrap(), cs.test);
    let mut tt = noisy.noise.clone().unwrap();
    tt.on = NoiseOn::TrainTest;
    let e = evaluate_test(&clean.run_dir, Some(&tt))
        .unwrap_err()
        .to_string();
    assert!(e.contains("noise.on"), "{e}");
    // summary.json and config.toml record the settings; config.toml reloads to the same config.
    let summary: serde_json::Value =
        serde_json::from_str(&read(&out.run_dir.join("summary.json"))).unwrap();
    assert_eq!(summary["noise"]["kind"], "salt-pepper");
    assert_eq!(summary["noise"]["eps"], 0.5);
    assert_eq!(summary["noise"]["on"], "test");
    assert_eq!(summary["noise"]["seed"], 0);
    let back = RunConfig::from_file(&out.run_dir.join("config.toml")).unwrap();
    assert_eq!(back.noise, noisy.noise);
    assert!(out
        .run_dir
        .to_string_lossy()
        .ends_with("synth-vec-concat-s4-salt-pepper0.5-test"));
    // A clean run's config.toml and summary.json have no noise entry.
    assert!(!read(&clean.run_dir.join("config.toml")).contains("noise"));
    assert!(!read(&clean.run_dir.join("summary.json")).contains("noise"));
}

// Library-level and config-level errors name the key and the bad value.
#[test]
fn bad_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::small_vec(dir.path(), 0, 1);
    let set = |sets: &[&str]| {
        base.with_overrides(&sets.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    };
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["noise.kind=\"salt-pepper\"", "noise.eps=1.5"],
            &["noise.eps", "[0, 1]", "1.5"],
        ),
        (
            &["noise.kind=\"gaussian\"", "noise.eps=-0.1"],
            &["noise.eps", ">= 0", "-0.1"],
        ),
        (&["noise.kind=\"speckle\"", "noise.eps=0.1"], &["speckle"]),
        (
            &[
                "noise.kind=\"gaussian\"",
                "noise.eps=0.1",
                "noise.on=\"val\"",
            ],
            &["val"],
        ),
        (&["noise.eps=0.1"], &["kind"]),
        (
            &["noise.kind=\"gaussian\"", "noise.epsilon=0.1"],
            &["epsilon"],
        ),
    ];
    for (sets, needles) in cases {
        let e = set(sets).unwrap_err().to_string();
        eprintln!("{sets:?}: {e}");
        for n in *needles {
            assert!(e.contains(n), "{sets:?}: {e:?} should mention {n:?}");
        }
    }
    // Unknown modality: known only once the dataset is loaded.
    let cfg = with_noise(&base, "gaussian", 0.1, "test", &["depth"]);
    let e = modbal::train(&cfg, &common::quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("depth") && e.contains("audio, visual"), "{e}");
    // Direct construction is validated when applied.
    let mut n = NoiseConfig::new(NoiseKind::SaltPepper, 2.0, NoiseOn::Test);
    let splits = load_splits(&base).unwrap();
    assert!(n.apply(&splits).is_err());
    n.eps = f64::NAN;
    n.kind = NoiseKind::Gaussian;
    assert!(n
        .apply(&splits)
        .unwrap_err()
        .to_string()
        .contains("noise.eps"));
}

// The CLI flags: a tiny run records [noise] in config.toml; bad flags fail naming the problem.
#[test]
fn cli_noise_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let small = [
        "train",
        "--dataset",
        "synth-vec",
        "--epochs",
        "1",
        "--set",
        "dataset.train=120",
        "--set",
        "dataset.val=60",
        "--set",
        "dataset.test=60",
        "--quiet",
        "--no-progress",
        "--out",
        d,
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = small.to_vec();
        a.extend_from_slice(extra);
        common::modbal_cli(&a)
    };
    let (code, _, err) = run(&[
        "--noise",
        "gaussian",
        "--noise-eps",
        "0.75",
        "--noise-on",
        "train+test",
        "--noise-modality",
        "visual",
        "--noise-seed",
        "9",
    ]);
    assert_eq!(code, 0, "{err}");
    let run_dir = dir
        .path()
        .join("synth-vec-concat-s0-gaussian0.75-train-test-visual");
    let cfg = RunConfig::from_file(&run_dir.join("config.toml")).unwrap();
    assert_eq!(
        cfg.noise,
        Some(NoiseConfig {
            kind: NoiseKind::Gaussian,
            eps: 0.75,
            on: NoiseOn::TrainTest,
            modalities: vec!["visual".into()],
            seed: 9,
            ..NoiseConfig::new(NoiseKind::Gaussian, 0.0, NoiseOn::Test)
        })
    );
    let bad: &[(&[&str], &[&str])] = &[
        (&["--noise", "gaussian"], &["--noise-eps"]),
        (&["--noise-eps", "0.1"], &["--noise"]),
        (
            &["--noise", "speckle", "--noise-eps", "0.1"],
            &["speckle", "salt-pepper, gaussian"],
        ),
        (
            &["--noise", "salt-pepper", "--noise-eps", "1.2"],
            &["noise.eps", "[0, 1]"],
        ),
        (
            &["--noise", "gaussian", "--noise-eps", "-1"],
            &["noise.eps"],
        ),
        (
            &[
                "--noise",
                "gaussian",
                "--noise-eps",
                "0.1",
                "--noise-on",
                "val",
            ],
            &["val", "train+test"],
        ),
        (
            &[
                "--noise",
                "gaussian",
                "--noise-eps",
                "0.1",
                "--noise-modality",
                "depth",
            ],
            &["depth", "audio, visual"],
        ),
    ];
    for (extra, needles) in bad {
        let (code, _, err) = run(extra);
        eprintln!("{extra:?}: {}", err.trim());
        assert_ne!(code, 0, "{extra:?} was accepted");
        for n in *needles {
            assert!(err.contains(n), "{extra:?}: {err:?} should mention {n:?}");
        }
    }
}

/// A tiny image + text dataset whose text modality has a [`TextSource`]: the text of sample `i`
/// is ten words, encoded as `[number of "_" words, number of words]`; the image is `[3, 2, 2]`
/// with channel ranges [0, 1], [10, 20], [-1, 1] spanned by sample 0 and 1.
struct Tweets {
    n: usize,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
}

struct TweetText;

fn tweet(_i: usize) -> String {
    "a b c d e f g h i j".to_string()
}

impl modbal::data::TextSource for TweetText {
    fn text(&self, i: usize) -> modbal::core::Result<String> {
        Ok(tweet(i))
    }
    fn encode(&self, text: &str) -> modbal::core::Result<Vec<f32>> {
        let w: Vec<&str> = text.split(' ').collect();
        Ok(vec![
            w.iter().filter(|x| **x == "_").count() as f32,
            w.len() as f32,
        ])
    }
}

impl Tweets {
    fn new(n: usize) -> Self {
        Self {
            n,
            names: vec!["image".into(), "text".into()],
            shapes: vec![vec![3, 2, 2], vec![2]],
        }
    }
    fn image(i: usize) -> Vec<f32> {
        let (lo, hi) = ([0.0f32, 10.0, -1.0], [1.0f32, 20.0, 1.0]);
        (0..12)
            .map(|e| {
                let c = e / 4;
                match i {
                    0 => lo[c],
                    1 => hi[c],
                    _ => (lo[c] + hi[c]) / 2.0,
                }
            })
            .collect()
    }
}

impl Dataset for Tweets {
    fn len(&self) -> usize {
        self.n
    }
    fn modalities(&self) -> &[String] {
        &self.names
    }
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
    fn num_classes(&self) -> usize {
        2
    }
    fn get(&self, i: usize) -> modbal::core::Result<modbal::data::Sample> {
        use modbal::data::TextSource;
        Ok(modbal::data::Sample {
            inputs: vec![Self::image(i), TweetText.encode(&tweet(i))?],
            label: (i % 2) as u32,
        })
    }
    fn text_source(&self, m: usize) -> Option<std::sync::Arc<dyn modbal::data::TextSource>> {
        (m == 1)
            .then(|| std::sync::Arc::new(TweetText) as std::sync::Arc<dyn modbal::data::TextSource>)
    }
}

fn tweet_splits(n: usize) -> Splits {
    let ds: std::sync::Arc<dyn Dataset> = std::sync::Arc::new(Tweets::new(n));
    Splits {
        train: ds.clone(),
        val: ds.clone(),
        test: ds,
    }
}

// QMF scale (QMF's `RandomApply(p=0.5)` and `JsonlDataset` masking): about half the test
// samples' images are corrupted and, independently, half the texts masked; at ε = 10 a masked
// text has every word replaced by `_` (0.1·ε = 1); corrupted images stay within each channel's
// training range; the training split is clean. On the default scale the text is skipped when no
// modality is named and refused when named.
#[test]
fn qmf_scale_masks_text_and_corrupts_half_the_images() {
    use modbal::data::noise::NoiseScale;
    let n = 600;
    let splits = tweet_splits(n);
    let cfg = NoiseConfig::qmf(NoiseKind::Gaussian, 10.0, NoiseOn::Test);
    let noisy = cfg.apply(&splits).unwrap();
    let (mut img_hit, mut txt_hit) = (0usize, 0usize);
    for i in 0..n {
        let s = noisy.test.get(i).unwrap();
        let clean = splits.test.get(i).unwrap();
        assert_eq!(noisy.train.get(i).unwrap(), clean, "train split clean");
        if s.inputs[0] != clean.inputs[0] {
            img_hit += 1;
        }
        let (lo, hi) = ([0.0f32, 10.0, -1.0], [1.0f32, 20.0, 1.0]);
        for (e, &x) in s.inputs[0].iter().enumerate() {
            assert!(
                x >= lo[e / 4] && x <= hi[e / 4],
                "sample {i}: {x} out of range"
            );
        }
        match s.inputs[1].as_slice() {
            [0.0, 10.0] => {}
            [10.0, 10.0] => txt_hit += 1,
            other => panic!("text of sample {i}: {other:?} (ε = 10 masks every word)"),
        }
        // Deterministic: the same corruption on a second read.
        assert_eq!(noisy.test.get(i).unwrap(), s);
    }
    // Binomial(600, 0.5): 5 sd = 61.
    for (what, k) in [("images", img_hit), ("texts", txt_hit)] {
        assert!(
            (k as f64 - 300.0).abs() < 62.0,
            "{what} corrupted: {k} of {n}"
        );
    }

    // The default scale leaves text alone, and refuses to corrupt it when named.
    let mut m = NoiseConfig::new(NoiseKind::Gaussian, 1.0, NoiseOn::Test);
    assert_eq!(m.scale, NoiseScale::Modbal);
    let noisy = m.apply(&splits).unwrap();
    for i in 0..20 {
        let s = noisy.test.get(i).unwrap();
        assert_eq!(s.inputs[1], vec![0.0, 10.0]);
        assert_ne!(s.inputs[0], Tweets::image(i));
    }
    m.modalities = vec!["text".into()];
    let e = m.apply(&splits).err().unwrap().to_string();
    assert!(
        e.contains("\"text\" is a text modality") && e.contains("qmf"),
        "{e}"
    );
}

// `--noise-scale qmf` reaches the run config, the run name and config.toml; ε = 5 is refused on
// the default scale with a message that points to the QMF scale.
#[test]
fn cli_noise_scale_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--dataset",
            "synth-vec",
            "--epochs",
            "1",
            "--set",
            "dataset.train=64",
            "--set",
            "dataset.val=32",
            "--set",
            "dataset.test=32",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--noise",
            "salt-pepper",
            "--noise-eps",
            "5",
        ];
        a.extend_from_slice(extra);
        common::modbal_cli(&a)
    };
    let (code, _, err) = args(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("--noise-scale qmf"), "{err}");
    let (code, _, err) = args(&["--noise-scale", "qmf"]);
    assert_eq!(code, 0, "{err}");
    let run = out.join("synth-vec-concat-s0-qmf-salt-pepper5-test");
    let cfg = RunConfig::from_file(&run.join("config.toml")).unwrap();
    assert_eq!(
        cfg.noise,
        Some(NoiseConfig::qmf(NoiseKind::SaltPepper, 5.0, NoiseOn::Test))
    );
    let (code, _, err) = args(&["--noise-scale", "cal"]);
    assert_ne!(code, 0);
    assert!(err.contains("modbal, qmf"), "{err}");
}
