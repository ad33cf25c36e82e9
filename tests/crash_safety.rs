//! Crash safety of the run directory (issue 17): a training run killed at any point — inside a
//! metrics append, an atomic file write, the checkpoint swap, the best-model promotion, or at a
//! random moment — resumes to exactly the metrics, test curve, summary and selected model of an
//! uninterrupted run; damaged checkpoints are reported, not trained on; two processes never
//! share a run directory.
//!
//! Kills are injected with the test hook `MODBAL_TEST_CRASH=<point>:<n>` (the process aborts the
//! n-th time it reaches `point`, see `modbal_train`'s `run_dir` module) and, for random moments,
//! with SIGKILL after a delay.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_modbal");

fn args(out: &Path, name: &str) -> Vec<String> {
    [
        "train",
        "--dataset",
        "synth-vec",
        "--epochs",
        "4",
        "--seed",
        "5",
        "--set",
        "dataset.train=240",
        "--set",
        "dataset.val=80",
        "--set",
        "dataset.test=80",
        "--set",
        "train.optimizer.momentum=0.9",
        "--report-test-curve",
        "--quiet",
        "--no-progress",
        "--name",
        name,
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

fn run(args: &[String], crash: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("MODBAL_TEST_CRASH");
    if let Some(spec) = crash {
        c.env("MODBAL_TEST_CRASH", spec);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What an interrupted run must end with: its metrics, test curve, summary (without the run's
/// name) and selected model (a hash of the file's bytes).
#[derive(Debug, PartialEq)]
struct Finished {
    metrics: String,
    test_curve: String,
    summary: String,
    best_model: u64,
}

fn finished(dir: &Path) -> Finished {
    use std::hash::{Hash, Hasher};
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let mut summary: serde_json::Value = serde_json::from_str(&read("summary.json")).unwrap();
    summary.as_object_mut().unwrap().remove("run");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(dir.join("checkpoints/best/model.safetensors"))
        .unwrap()
        .hash(&mut h);
    Finished {
        metrics: read("metrics.jsonl"),
        test_curve: read("test_curve.jsonl"),
        summary: summary.to_string(),
        best_model: h.finish(),
    }
}

/// Resume (or, when nothing was checkpointed, start again under the same name) until the run
/// has finished; panics if it takes more than a few tries.
fn complete(out: &Path, name: &str) -> PathBuf {
    let dir = out.join(name);
    for _ in 0..4 {
        if dir.join("summary.json").exists() {
            return dir;
        }
        let o = run(
            &[
                "resume".to_string(),
                dir.display().to_string(),
                "--no-progress".into(),
            ],
            None,
        );
        if !o.status.success() {
            let t = text(&o);
            assert!(
                t.contains("nothing was checkpointed"),
                "resume failed:\n{t}"
            );
            let o = run(&args(out, name), None);
            assert!(o.status.success(), "{}", text(&o));
        }
    }
    assert!(
        dir.join("summary.json").exists(),
        "{} never finished",
        dir.display()
    );
    dir
}

/// No temporary file or directory is left behind once the run has finished.
fn assert_clean(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !n.ends_with(".tmp") && !n.ends_with(".old") && !n.ends_with(".pending"),
                "left over: {}",
                p.display()
            );
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}

#[test]
fn a_run_killed_anywhere_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let o = run(&args(out, "reference"), None);
    assert!(o.status.success(), "{}", text(&o));
    let want = finished(&out.join("reference"));

    // (crash point, on the n-th pass): inside appends, atomic writes, the checkpoint protocol,
    // the best-model promotion, between epochs; the first checkpoint included.
    let points = [
        "append:1",
        "append:3",
        "append:6",
        "atomic-write:1",
        "atomic-write:4",
        "atomic-write:9",
        "atomic-write:15",
        "checkpoint-files:1",
        "checkpoint-files:3",
        "checkpoint-complete:1",
        "checkpoint-complete:2",
        "checkpoint-swap:2",
        "checkpoint-swap:3",
        "checkpoint-renamed:2",
        "best-pending:1",
        "best-pending:2",
        "best-swap:1",
        "best-swap:2",
        "epoch-end:1",
        "epoch-end:3",
    ];
    let mut crashed = 0;
    for (i, spec) in points.iter().enumerate() {
        let name = format!("crash-{i}");
        let o = run(&args(out, &name), Some(spec));
        if !o.status.success() {
            crashed += 1;
            assert!(
                !out.join(&name).join("summary.json").exists(),
                "{spec}: killed but finished?"
            );
        }
        let dir = complete(out, &name);
        assert_eq!(finished(&dir), want, "{spec}");
        assert_clean(&dir);
        // The run kept its name: no `<name>-1` was created by a restart.
        assert!(!out.join(format!("{name}-1")).exists(), "{spec}");
    }
    // Every point was reached (the list exercises the code, not a no-op).
    assert_eq!(crashed, points.len());

    // Killed again while resuming, then resumed.
    let name = "twice";
    assert!(!run(&args(out, name), Some("epoch-end:1")).status.success());
    let dir = out.join(name);
    let resume = |crash| {
        run(
            &[
                "resume".to_string(),
                dir.display().to_string(),
                "--no-progress".into(),
            ],
            crash,
        )
    };
    assert!(!resume(Some("checkpoint-swap:1")).status.success());
    assert!(!resume(Some("append:2")).status.success());
    assert_eq!(finished(&complete(out, name)), want);

    // SIGKILL at moments chosen by the clock, not by the code.
    for (i, ms) in [40u64, 120, 250, 400, 700].into_iter().enumerate() {
        let name = format!("sigkill-{i}");
        let mut child = Command::new(BIN)
            .args(args(out, &name))
            .env_remove("MODBAL_TEST_CRASH")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        let dir = complete(out, &name);
        assert_eq!(finished(&dir), want, "SIGKILL after {ms} ms");
        assert_clean(&dir);
    }
}

#[test]
fn damaged_run_directories_are_reported_or_repaired_never_trained_on() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let o = run(&args(out, "reference"), None);
    assert!(o.status.success(), "{}", text(&o));
    let want = finished(&out.join("reference"));
    let stop = |name: &str| {
        let mut a = args(out, name);
        a.extend(["--stop-after".into(), "2".into()]);
        let o = run(&a, None);
        assert!(o.status.success(), "{}", text(&o));
        out.join(name)
    };
    let resume = |dir: &Path| {
        run(
            &[
                "resume".to_string(),
                dir.display().to_string(),
                "--no-progress".into(),
            ],
            None,
        )
    };

    // A garbled tensor body: corruption named, not a NaN three epochs later.
    let dir = stop("garbled");
    let model = dir.join("checkpoints/last/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x55;
    std::fs::write(&model, bytes).unwrap();
    let t = text(&resume(&dir));
    assert!(
        t.contains("checkpoint corrupt") && t.contains("model.safetensors"),
        "{t}"
    );

    // A missing optimizer state: an error, not momentum silently restarting from zero.
    let dir = stop("no-optimizer");
    std::fs::remove_file(dir.join("checkpoints/last/optimizer.safetensors")).unwrap();
    let t = text(&resume(&dir));
    assert!(
        t.contains("optimizer.safetensors") && t.contains("missing"),
        "{t}"
    );

    // An empty config.toml: an error, not the default config.
    let dir = stop("empty-config");
    std::fs::write(dir.join("config.toml"), "").unwrap();
    let t = text(&resume(&dir));
    assert!(t.contains("config.toml is empty"), "{t}");

    // A damaged line of a completed epoch in metrics.jsonl: rebuilt from the checkpoint's copy
    // (with a warning), so the finished run has exactly the uninterrupted metrics.
    let dir = stop("damaged-metrics");
    let m = dir.join("metrics.jsonl");
    let body = std::fs::read_to_string(&m).unwrap();
    let mut lines: Vec<String> = body.lines().map(String::from).collect();
    lines[1] = lines[1][..lines[1].len() / 2].to_string();
    lines.remove(2);
    std::fs::write(&m, lines.join("\n") + "\n").unwrap();
    let o = resume(&dir);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("differs from the checkpoint's copy at line 2"));
    assert_eq!(finished(&dir), want);

    // Nothing checkpointed: resume says how to restart.
    let name = "early";
    assert!(!run(&args(out, name), Some("checkpoint-files:1"))
        .status
        .success());
    let t = text(&resume(&out.join(name)));
    assert!(
        t.contains("nothing was checkpointed") && t.contains("--name"),
        "{t}"
    );
}

#[test]
fn two_processes_never_share_a_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    // A long first run holds `busy`.
    let mut long = args(out, "busy");
    let i = long.iter().position(|a| a == "4").unwrap();
    long[i] = "400".into();
    let mut first = Command::new(BIN)
        .args(&long)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = out.join("busy");
    for _ in 0..200 {
        if dir.join("checkpoints/last").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    // A second run under the same name gets its own directory; resume of the busy one is refused.
    let o = run(&args(out, "busy"), None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("busy-1/summary.json").exists());
    let o = run(
        &[
            "resume".to_string(),
            dir.display().to_string(),
            "--no-progress".into(),
        ],
        None,
    );
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("in use by another process"),
        "{t}"
    );
    let _ = first.kill();
    let _ = first.wait();
    // Once the holder is gone (killed: the OS released its lock), the run resumes.
    let o = run(
        &[
            "resume".to_string(),
            dir.display().to_string(),
            "--no-progress".into(),
            // a 400-epoch run: only check that the lock is free, stop at once
        ],
        Some("epoch-end:1"),
    );
    assert!(!text(&o).contains("in use"), "{}", text(&o));

    // --name cannot escape --out.
    let o = run(&args(out, "../../escaped"), None);
    assert!(!o.status.success() && text(&o).contains("one directory name"));
    assert!(!out.parent().unwrap().join("escaped").exists());
}
