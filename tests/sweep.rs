//! `modbal sweep` end to end, through the real binary: a 3-method × 2-seed grid on synth-vec
//! with 2 parallel jobs, killed mid-way and resumed (the resumed cell's metrics byte-identical
//! to an uninterrupted run), the Slurm job-array script run as a fake array (bash with
//! SLURM_ARRAY_TASK_ID) and gathered with --collect, and the errors that must come before any
//! training.

use modbal::sweep::{is_busy, CellStatus, Manifest};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_modbal");

fn modbal(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("running modbal")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The grid of the issue's acceptance test: 3 methods × 2 seeds on synth-vec.
fn grid(out: &Path, epochs: &str) -> Vec<String> {
    [
        "sweep",
        "--datasets",
        "synth-vec",
        "--methods",
        "concat,ogm-ge,cal",
        "--seeds",
        "0,1",
        "--epochs",
        epochs,
        "--jobs",
        "2",
        "--threads",
        "2",
        "--no-progress",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

#[test]
fn a_killed_sweep_resumes_and_matches_uninterrupted_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let args = grid(&out, "12");
    // The sweep in its own process group (cleaned up at the end whatever happens).
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(BIN)
            .args(&args)
            .current_dir(tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let pgid = child.id();
    let started = Instant::now();
    let (mut max_busy, mut interrupted) = (0usize, None);
    while started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(40));
        let Ok(m) = Manifest::load(&out) else {
            continue;
        };
        let dirs: Vec<_> = m.cells.iter().map(|c| out.join(&c.name)).collect();
        max_busy = max_busy.max(dirs.iter().filter(|d| is_busy(d)).count());
        interrupted = m.cells.iter().find(|c| {
            matches!(CellStatus::of(&out.join(&c.name)), CellStatus::Interrupted { epochs_done } if (2..c.epochs - 1).contains(&epochs_done))
        }).cloned();
        if max_busy >= 2 && interrupted.is_some() {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
    }
    // Only the sweep's own process: its jobs end with it (PR_SET_PDEATHSIG on Linux).
    child.kill().unwrap();
    let _ = child.wait();
    // The ended jobs release their run directories when the OS has ended them.
    let m = Manifest::load(&out).unwrap();
    let t0 = Instant::now();
    while m.cells.iter().any(|c| is_busy(&out.join(&c.name))) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "killed jobs still hold their locks"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
    assert_eq!(max_busy, 2, "two jobs never trained at the same time");
    let cell = interrupted.expect("no cell was caught between checkpoints");
    let cell_dir = out.join(&cell.name);
    assert!(
        !cell_dir.join("summary.json").exists(),
        "{} finished before the kill",
        cell.name
    );
    // The same command again: finished cells are skipped, the interrupted one resumed.
    let again = modbal(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    let log = text(&again);
    assert!(again.status.success(), "{log}");
    assert!(log.contains("6 of 6 cells finished"), "{log}");
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.cells.len(), 6);
    for c in &m.cells {
        assert_eq!(CellStatus::of(&out.join(&c.name)), CellStatus::Finished);
    }
    let cell_log =
        std::fs::read_to_string(out.join("logs").join(format!("{}.log", cell.name))).unwrap();
    assert!(cell_log.contains("resuming"), "{cell_log}");
    // Same seed, same metrics: the resumed cell equals an uninterrupted run of its command.
    let reference = tmp.path().join("ref");
    let mut train: Vec<String> = vec!["train".into()];
    train.extend(cell.args.iter().cloned());
    train.extend([
        "--out".into(),
        reference.display().to_string(),
        "--name".into(),
        "r".into(),
        "--quiet".into(),
    ]);
    let r = modbal(
        &train.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(
        std::fs::read_to_string(reference.join("r/metrics.jsonl")).unwrap(),
        std::fs::read_to_string(cell_dir.join("metrics.jsonl")).unwrap(),
        "resumed cell {} differs from an uninterrupted run",
        cell.name
    );
}

#[test]
fn slurm_array_script_runs_as_a_fake_array_and_collects() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let mut args = grid(&out, "2");
    args.extend(
        [
            "--set",
            "dataset.train=240",
            "--slurm",
            "--time",
            "00:10:00",
            "--mem",
            "2G",
            "--max-parallel",
            "3",
        ]
        .map(String::from),
    );
    let o = modbal(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let script = out.join("sweep.sbatch");
    let s = std::fs::read_to_string(&script).unwrap();
    // bash accepts it; the array has one task per cell; nothing ran yet.
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax));
    for d in [
        "#SBATCH --array=0-5%3",
        "#SBATCH --time=00:10:00",
        "#SBATCH --mem=2G",
    ] {
        assert!(s.lines().any(|l| l == d), "{d} missing:\n{s}");
    }
    let m = Manifest::load(&out).unwrap();
    assert!(m
        .cells
        .iter()
        .all(|c| CellStatus::of(&out.join(&c.name)) == CellStatus::NotStarted));
    // A fake array: every task but 4, as Slurm would run them (another working directory).
    let task = |i: usize| {
        let o = Command::new("bash")
            .arg(&script)
            .current_dir("/")
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .env("SLURM_CPUS_PER_TASK", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "task {i}: {}", text(&o));
    };
    for i in [0, 1, 2, 3, 5] {
        task(i);
    }
    let c = modbal(
        &["sweep", "--collect", &out.display().to_string()],
        tmp.path(),
    );
    let t = text(&c);
    assert_eq!(c.status.code(), Some(3), "{t}");
    assert!(t.contains("5 of 6 cells finished"), "{t}");
    assert!(t.contains("sbatch --array=4 "), "{t}");
    task(4);
    // A task of a finished cell is a no-op (resubmitting is safe).
    task(0);
    let c = modbal(
        &["sweep", "--collect", &out.display().to_string()],
        tmp.path(),
    );
    assert!(c.status.success(), "{}", text(&c));
    let collected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("collected.json")).unwrap()).unwrap();
    let rows = collected.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows {
        assert_eq!(r["status"], "finished", "{r}");
        assert!(r["test_fusion_acc"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn grid_errors_come_before_any_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let o = modbal(
        &[
            "sweep",
            "--datasets",
            "synth-vec",
            "--methods",
            "concat,no-such-method",
            "--out",
            &out.display().to_string(),
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("no-such-method"), "{}", text(&o));
    assert!(!out.exists(), "a run started before the grid was checked");
    let o = modbal(
        &["sweep", "--datasets", "synth-vec", "--out", "x"],
        tmp.path(),
    );
    assert!(text(&o).contains("no method"), "{}", text(&o));
    // An existing run with another configuration is never reused.
    let small = [
        "sweep",
        "--datasets",
        "synth-vec",
        "--methods",
        "concat",
        "--set",
        "dataset.train=120",
        "--no-progress",
        "--out",
    ];
    let mut a: Vec<String> = small.iter().map(|s| s.to_string()).collect();
    a.extend([out.display().to_string(), "--epochs".into(), "1".into()]);
    let o = modbal(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    *a.last_mut().unwrap() = "2".into();
    let o = modbal(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        t.contains("synth-vec-concat-s0") && t.contains("train.epochs = 2 (the run has 1)"),
        "{t}"
    );
    // A sweep folder is needed for --collect.
    let o = modbal(&["sweep", "--collect", "/nonexistent-sweep"], tmp.path());
    assert!(text(&o).contains("not a sweep folder"), "{}", text(&o));
}

#[test]
fn dry_run_lists_unimodal_per_modality_and_axis_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("g.toml");
    std::fs::write(
        &grid,
        "methods = [\"unimodal\", \"cal\"]\nseeds = [3]\ndatasets = [\"synth-vec\"]\n\
         [axes]\n\"train.optimizer.lr\" = [0.01, 0.05]\n",
    )
    .unwrap();
    let o = modbal(
        &[
            "sweep",
            "--grid",
            &grid.display().to_string(),
            "--dry-run",
            "--out",
            "sw",
        ],
        tmp.path(),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for name in [
        "synth-vec-unimodal-audio-lr0.01-s3",
        "synth-vec-unimodal-audio-lr0.05-s3",
        "synth-vec-unimodal-visual-lr0.01-s3",
        "synth-vec-unimodal-visual-lr0.05-s3",
        "synth-vec-cal-lr0.01-s3",
        "synth-vec-cal-lr0.05-s3",
    ] {
        assert!(t.contains(name), "{name} missing:\n{t}");
    }
    assert!(t.contains("6 cells"), "{t}");
    assert!(
        t.contains(
            "modbal train --dataset synth-vec --method cal --seed 3 --set train.optimizer.lr=0.05"
        ),
        "{t}"
    );
    assert!(
        !tmp.path().join("sw").exists(),
        "--dry-run wrote the folder"
    );
}

/// A cell that fails (a diverging learning rate) does not stop the others; the sweep exits 1
/// naming it and its log, and --collect shows its error line and exits 3.
#[test]
fn a_failed_cell_is_reported_and_the_others_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let o = modbal(
        &[
            "sweep",
            "--datasets",
            "synth-vec",
            "--methods",
            "concat",
            "--epochs",
            "2",
            "--set",
            "dataset.train=240",
            "--set",
            "train.optimizer.lr=0.01,1e30",
            "--jobs",
            "2",
            "--no-progress",
            "--out",
            &out.display().to_string(),
        ],
        tmp.path(),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("1 cell(s) failed: synth-vec-concat-lr1e30-s0"),
        "{t}"
    );
    assert!(t.contains("logs/synth-vec-concat-lr1e30-s0.log"), "{t}");
    assert_eq!(
        CellStatus::of(&out.join("synth-vec-concat-lr0.01-s0")),
        CellStatus::Finished
    );
    let c = modbal(
        &["sweep", "--collect", &out.display().to_string()],
        tmp.path(),
    );
    let t = text(&c);
    assert_eq!(c.status.code(), Some(3), "{t}");
    assert!(t.contains("error: training failed: non-finite loss"), "{t}");
}
