//! TensorBoard event files of a run (issue 20): `<run>/tensorboard/` holds the metrics of every
//! epoch as scalars and `config.toml` as text, in files TensorBoard reads; a resumed run purges
//! the orphaned epochs of the interrupted session with `SessionLog START`; `--no-tensorboard`
//! writes none.
//!
//! The Rust checks (files, frames and both checksums, decoded events, tags, values against
//! metrics.jsonl) always run. The checks with TensorBoard's own reader
//! (`scripts/check_tensorboard.py`, `EventAccumulator` of the python package `tensorboard`,
//! checked with tensorboard 2.21) are skipped when python3 lacks the package, unless
//! `MODBAL_REQUIRE_TOOLS=1`.

use modbal::train::tensorboard::{
    config_markdown, event_files, proto, read_events, EventWriter, CONFIG_TAG,
};
use proto::event::What;
use proto::summary::value::Value as ValueKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn train_args(out: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "modbal",
        "train",
        "--dataset",
        "synth-vec",
        "--epochs",
        "2",
        "--seed",
        "4",
        "--set",
        "dataset.train=240",
        "--set",
        "dataset.val=80",
        "--set",
        "dataset.test=80",
        "--report-test-curve",
        "--quiet",
        "--no-progress",
        "--name",
        name,
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn train(out: &Path, name: &str, extra: &[&str]) -> PathBuf {
    modbal::cli::run_from(&modbal::Registry::builtin(), train_args(out, name, extra)).unwrap();
    out.join(name)
}

fn resume(dir: &Path) {
    modbal::cli::run_from(
        &modbal::Registry::builtin(),
        [
            "modbal",
            "resume",
            &dir.display().to_string(),
            "--no-progress",
        ],
    )
    .unwrap();
}

/// Every scalar of `events` as (tag, step) → values, in file order; with `purge`, a
/// `SessionLog START` at step s drops what came before it at steps >= s (TensorBoard's
/// `EventAccumulator._CheckForRestartAndMaybePurge` for file version 2).
fn scalars(events: &[proto::Event], purge: bool) -> BTreeMap<(String, i64), Vec<f32>> {
    let mut out: BTreeMap<(String, i64), Vec<f32>> = BTreeMap::new();
    for ev in events {
        match &ev.what {
            Some(What::SessionLog(l)) if purge && l.status == proto::SESSION_START => {
                out.retain(|(_, step), _| *step < ev.step);
            }
            Some(What::Summary(s)) => {
                for v in &s.value {
                    if let Some(ValueKind::SimpleValue(x)) = v.value {
                        out.entry((v.tag.clone(), ev.step)).or_default().push(x);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The events of every event file of `run`, in name order (TensorBoard's reading order).
fn all_events(run: &Path) -> (Vec<PathBuf>, Vec<Vec<proto::Event>>) {
    let files = event_files(&run.join("tensorboard")).unwrap();
    let events = files.iter().map(|f| read_events(f).unwrap()).collect();
    (files, events)
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Rust-side check of a finished two-epoch run: one value per (tag, step) after purging,
/// the expected tags at steps 0 and 1, values equal (as f32) to metrics.jsonl /
/// test_curve.jsonl, and the config text at step 0.
fn check_decoded(run: &Path) {
    let (files, events) = all_events(run);
    assert!(!files.is_empty());
    for evs in &events {
        assert_eq!(
            evs[0].what,
            Some(What::FileVersion("brain.Event:2".into())),
            "every file starts with its version"
        );
    }
    let flat: Vec<proto::Event> = events.concat();
    let got = scalars(&flat, true);
    for ((tag, step), v) in &got {
        assert_eq!(v.len(), 1, "{tag} at step {step}: {v:?}");
    }
    let mut want = BTreeMap::new();
    for r in records(&run.join("metrics.jsonl"))
        .into_iter()
        .chain(records(&run.join("test_curve.jsonl")))
    {
        let (split, epoch) = (r["split"].as_str().unwrap(), r["epoch"].as_i64().unwrap());
        for k in ["loss", "fusion_acc", "macro_f1"] {
            want.insert((format!("{split}/{k}"), epoch), r[k].as_f64().unwrap());
        }
        for (m, a) in r["modality_acc"].as_object().unwrap() {
            want.insert((format!("{split}/acc/{m}"), epoch), a.as_f64().unwrap());
        }
        if split == "train" {
            want.insert(("lr".into(), epoch), r["lr"].as_f64().unwrap());
        }
    }
    assert!(want.len() > 20, "{want:?}");
    for (key, w) in &want {
        let g = got.get(key).unwrap_or_else(|| panic!("no scalar {key:?}"));
        assert_eq!(g[0], *w as f32, "{key:?}");
    }
    for step in [0, 1] {
        assert!(got.contains_key(&("time/epoch_seconds".into(), step)));
        assert!(got.contains_key(&("test/loss".into(), step)));
    }
    assert!(got.keys().all(|(_, s)| *s == 0 || *s == 1), "{got:?}");
    // The config text, once, at step 0.
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let texts: Vec<(i64, Vec<u8>)> = flat
        .iter()
        .filter_map(|ev| match &ev.what {
            Some(What::Summary(s)) => s.value.iter().find_map(|v| match &v.value {
                Some(ValueKind::Tensor(t)) if v.tag == CONFIG_TAG => {
                    Some((ev.step, t.string_val[0].clone()))
                }
                _ => None,
            }),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec![(0, config_markdown(&cfg).into_bytes())]);
    assert!(cfg.contains("tensorboard = true"), "{cfg}");
}

fn require_tools() -> bool {
    std::env::var("MODBAL_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Run `scripts/check_tensorboard.py` (TensorBoard's EventAccumulator) on `run`: `None` when
/// python3 (or `$MODBAL_PYTHON`) or its tensorboard package is missing (skipped, unless MODBAL_REQUIRE_TOOLS=1),
/// else (success, stdout + stderr).
fn python_check(run: &Path) -> Option<(bool, String)> {
    // CI points MODBAL_PYTHON at a virtual environment with tensorboard (.ci/run).
    let python = std::env::var("MODBAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            !require_tools(),
            "python3 with the tensorboard package is required (MODBAL_REQUIRE_TOOLS=1); \
             install: pip install tensorboard"
        );
        eprintln!("skipped: python tensorboard not found (install: pip install tensorboard)");
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check_tensorboard.py");
    let o = Command::new(&python).arg(script).arg(run).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Some((o.status.success(), text))
}

#[test]
fn a_run_writes_event_files_that_tensorboard_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path(), "tb", &[]);
    let (files, events) = all_events(&run);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("events.out.tfevents.")
            && name.contains(&format!(".{}.", std::process::id())),
        "{name}"
    );
    // No restart marker in a run that was never interrupted.
    assert!(!events[0]
        .iter()
        .any(|e| matches!(e.what, Some(What::SessionLog(_)))));
    check_decoded(&run);
    if let Some((ok, text)) = python_check(&run) {
        assert!(ok, "{text}");
        assert!(text.contains("\"ok\": true"), "{text}");
    }
}

#[test]
fn a_stopped_and_resumed_run_has_one_value_per_step() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path(), "tb", &["--stop-after", "1"]);
    resume(&run);
    let (files, events) = all_events(&run);
    assert_eq!(files.len(), 2, "{files:?}");
    // The resumed session's file: version, START at the first epoch it trains, epoch 1.
    assert!(matches!(
        &events[1][1].what,
        Some(What::SessionLog(l)) if l.status == proto::SESSION_START
    ));
    assert_eq!(events[1][1].step, 1);
    assert!(events[1][2..].iter().all(|e| e.step == 1));
    check_decoded(&run);
    if let Some((ok, text)) = python_check(&run) {
        assert!(ok, "{text}");
    }
}

/// A kill after epoch 1's events were written but before its checkpoint (the test hook
/// `MODBAL_TEST_CRASH`, as in tests/crash_safety.rs) leaves orphaned epoch-1 events; the
/// resumed session trains epoch 1 again. Only the `SessionLog START` of the new file keeps
/// TensorBoard from showing two values at step 1: the same files without it fail the check.
#[test]
fn a_killed_run_resumed_purges_its_orphaned_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = train_args(tmp.path(), "tb", &[]);
    args.remove(0);
    let o = Command::new(env!("CARGO_BIN_EXE_modbal"))
        .args(&args)
        .env("MODBAL_TEST_CRASH", "checkpoint-files:2")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the crash hook did not fire");
    let run = tmp.path().join("tb");
    let (_, before) = all_events(&run);
    let orphaned = scalars(&before.concat(), true);
    assert!(
        orphaned.contains_key(&("val/loss".into(), 1)),
        "the killed session wrote epoch 1: {orphaned:?}"
    );
    resume(&run);
    let (files, events) = all_events(&run);
    assert_eq!(files.len(), 2);
    let unpurged = scalars(&events.concat(), false);
    assert_eq!(unpurged[&("val/loss".to_string(), 1)].len(), 2);
    check_decoded(&run);
    let Some((ok, text)) = python_check(&run) else {
        return;
    };
    assert!(ok, "{text}");
    // The same run without the START event: TensorBoard's reader sees step 1 twice.
    let copy = tmp.path().join("no-start");
    std::fs::create_dir_all(copy.join("tensorboard")).unwrap();
    for f in [
        "config.toml",
        "metrics.jsonl",
        "timing.jsonl",
        "test_curve.jsonl",
    ] {
        std::fs::copy(run.join(f), copy.join(f)).unwrap();
    }
    std::fs::copy(
        &files[0],
        copy.join("tensorboard").join(files[0].file_name().unwrap()),
    )
    .unwrap();
    let mut w = EventWriter::create(&copy.join("tensorboard")).unwrap();
    for ev in &events[1][1..] {
        if !matches!(ev.what, Some(What::SessionLog(_))) {
            w.write(ev.step, ev.what.clone().unwrap()).unwrap();
        }
    }
    w.flush().unwrap();
    drop(w);
    let (ok, text) = python_check(&copy).unwrap();
    assert!(!ok, "{text}");
    assert!(text.contains("more than one value at step 1"), "{text}");
}

#[test]
fn no_tensorboard_writes_no_event_files_and_the_same_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path(), "off", &["--no-tensorboard"]);
    assert!(run.join("metrics.jsonl").exists());
    assert!(!run.join("tensorboard").exists());
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("tensorboard = false"), "{cfg}");
    // Same seed, event files on: byte-identical metrics files.
    let on = train(tmp.path(), "on", &[]);
    assert!(on.join("tensorboard").is_dir());
    for f in ["metrics.jsonl", "test_curve.jsonl"] {
        assert_eq!(
            std::fs::read(run.join(f)).unwrap(),
            std::fs::read(on.join(f)).unwrap(),
            "{f}"
        );
    }
    // The config key turns it off too.
    let set = train(tmp.path(), "set", &["--set", "train.tensorboard=false"]);
    assert!(!set.join("tensorboard").exists());
}

/// Data-parallel ranks (threads on the CPU): the event file is rank 0's, in the run directory.
#[test]
fn a_data_parallel_run_writes_rank_0s_event_file() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path(), "dp", &["--world-size", "2"]);
    let (files, _) = all_events(&run);
    assert_eq!(files.len(), 1, "{files:?}");
    check_decoded(&run);
    if let Some((ok, text)) = python_check(&run) {
        assert!(ok, "{text}");
    }
}
