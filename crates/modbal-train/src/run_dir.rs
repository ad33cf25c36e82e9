//! The run directory's files, written so that a kill at any point loses no completed epoch and
//! leaves no silently wrong state (see the crate docs for the layout):
//!
//! * every file written whole (`config.toml`, `meta.json`, `summary.json`, states, the rebuilt
//!   metrics files) goes through [`write_atomic`]: a temporary file next to it, fsync, rename,
//!   fsync of the directory; JSONL lines are appended in one write and fsync'd;
//! * a checkpoint is written complete into `checkpoints/last.tmp/` — model, optimizer, method
//!   tensors, state, a copy of the metrics files (the journal resume rebuilds them from) and,
//!   last, `checksums.json` (length and CRC-32 of every file) — and then swapped in:
//!   `last → last.old`, `last.tmp → last`, `last.old` removed. Resume takes the newest complete
//!   one of `last`, `last.tmp`, `last.old` ([`recover_checkpoint`]); a `last/` whose checksums
//!   do not verify is reported as corruption (a kill cannot produce one);
//! * the best-on-validation model goes to `checkpoints/best.pending/` when selected and becomes
//!   `checkpoints/best/` when the checkpoint of its epoch is committed, so that `best/` never
//!   belongs to an epoch that resume will train again;
//! * `run.lock` is held with an OS file lock (released when the process ends, also by a kill)
//!   while a process trains in the directory: two processes never share a run directory.

use candle_core::Tensor;
use modbal_core::{Method, ModbalError, MultimodalModel, Result};
use modbal_tensors::{Optimizer, ParamStore, RngState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// File of `checkpoints/last` holding [`Method::state_tensors`] (absent when a method has none).
pub(crate) const METHOD_TENSORS: &str = "method.safetensors";

#[derive(Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    /// Epochs completed.
    pub(crate) epochs_done: usize,
    pub(crate) step: usize,
    pub(crate) rng: RngState,
    pub(crate) method: serde_json::Value,
    pub(crate) best_epoch: Option<usize>,
    /// Validation accuracy of `best_epoch`; `None` (JSON `null`) while no selectable epoch has
    /// been validated (e.g. UDI inside its unimodal stages). Older checkpoints hold a number.
    pub(crate) best_val_acc: Option<f64>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct BestState {
    pub(crate) epoch: usize,
    pub(crate) method: serde_json::Value,
}

/// The files of a run directory that hold one line per (epoch, split), rebuilt on resume from
/// the checkpoint's copies.
pub(crate) const JOURNALED: [&str; 3] = ["metrics.jsonl", "timing.jsonl", "test_curve.jsonl"];

/// The manifest written last into a checkpoint directory: length and CRC-32 of every other file.
const CHECKSUMS: &str = "checksums.json";

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct FileSum {
    len: u64,
    crc32: u32,
}

// ------------------------------------------------------------------------------- test hook

/// Fault injection for the crash-safety tests: with `MODBAL_TEST_CRASH=<point>[:<n>]` in the
/// environment the process aborts (as a kill would stop it) the `n`-th time (default 1) it
/// reaches `point`. Points: `append` (half a JSONL line written), `atomic-write` (temporary file
/// written, not renamed), `checkpoint-files`, `checkpoint-complete`, `checkpoint-swap`,
/// `checkpoint-renamed`, `best-pending`, `epoch-end`. Unset (always, outside tests): nothing.
pub(crate) fn crash_due(point: &str) -> bool {
    static SPEC: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("MODBAL_TEST_CRASH").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((a, b)) => (a.to_string(), b.parse().ok()?),
            None => (v, 1),
        };
        Some((name, n))
    });
    match spec {
        Some((name, n)) if name == point => SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n,
        _ => false,
    }
}

/// Abort here if the crash-safety test asked for it (see [`crash_due`]).
pub(crate) fn crash_point(point: &str) {
    if crash_due(point) {
        std::process::abort();
    }
}

// ---------------------------------------------------------------------------- durable files

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ModbalError + 'a {
    move |e| ModbalError::io(what, path, e)
}

/// fsync a directory, so that a rename or a new file in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", path))
}

/// Write `bytes` to `path` so that a kill leaves either the old file or the new one: a
/// temporary file in the same directory, fsync, rename over `path`, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
    }
    crash_point("atomic-write");
    std::fs::rename(&tmp, path).map_err(io("renaming", &tmp))?;
    sync_dir(dir)
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)? + "\n";
    write_atomic(path, s.as_bytes())
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
    serde_json::from_str(&s)
        .map_err(|e| ModbalError::Serde(format!("parsing {}: {e}", path.display())))
}

/// Append one line (in one write) and fsync it.
pub(crate) fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io("opening", path))?;
    let bytes = format!("{line}\n").into_bytes();
    if crash_due("append") {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        let _ = f.sync_data();
        std::process::abort();
    }
    f.write_all(&bytes).map_err(io("writing", path))?;
    f.sync_data().map_err(io("syncing", path))
}

pub(crate) fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

// ------------------------------------------------------------------------ directory and lock

/// The lock of a run directory (`run.lock`), held while a process trains in it; the OS releases
/// it when the process ends, however it ends.
#[derive(Debug)]
pub(crate) struct RunLock {
    _file: File,
}

/// Lock `dir` for this process, or say which process holds it.
pub(crate) fn lock_run_dir(dir: &Path) -> Result<RunLock> {
    let path = dir.join("run.lock");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io("opening", &path))?;
    // A lock can outlive its holder's `File` for a moment: a child process forked by another
    // thread (e.g. for `git rev-parse`) holds a copy of the descriptor until it execs. Retry
    // for up to two seconds before calling the directory busy.
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if tries < 40 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(ModbalError::Config(format!(
                    "run directory {} is in use by another process ({}): two runs never share \
                     a directory; choose another --name or wait for it to finish",
                    dir.display(),
                    match holder.trim() {
                        "" => "unknown pid".to_string(),
                        pid => format!("pid {pid}"),
                    }
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(ModbalError::io("locking", &path, e))
            }
        }
    }
    file.set_len(0).map_err(io("writing", &path))?;
    write!(file, "{}", std::process::id()).map_err(io("writing", &path))?;
    Ok(RunLock { _file: file })
}

/// Remove the temporary files of [`write_atomic`] that a kill left in `dir` and `dir/plots`.
pub(crate) fn remove_temporaries(dir: &Path) -> Result<()> {
    for d in [dir.to_path_buf(), dir.join("plots")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') && n.ends_with(".tmp") && e.path().is_file() {
                std::fs::remove_file(e.path()).map_err(io("removing", &e.path()))?;
            }
        }
    }
    Ok(())
}

/// Whether the run directory `dir` holds a complete checkpoint that
/// [`crate::Learner::resume`] continues from (its checksums verified): the rule that resume and
/// a new run's claim of a directory use, for callers that decide between resuming and starting
/// again (`modbal sweep`).
pub fn is_resumable(dir: &Path) -> bool {
    has_checkpoint(dir)
}

/// Whether `dir` holds a complete checkpoint (something to resume).
fn has_checkpoint(dir: &Path) -> bool {
    let ck = dir.join("checkpoints");
    let last = ck.join("last");
    if last.join("state.json").exists() && !last.join(CHECKSUMS).exists() {
        return true; // written by a modbal version without checksums
    }
    ["last", "last.tmp", "last.old"]
        .iter()
        .any(|n| ck.join(n).is_dir() && verify(&ck.join(n)).is_ok())
}

/// The files a run writes (what a restart of a run killed before its first checkpoint clears).
const RUN_FILES: [&str; 6] = [
    "config.toml",
    "meta.json",
    "metrics.jsonl",
    "timing.jsonl",
    "test_curve.jsonl",
    "summary.json",
];

/// The directory of a new run, locked: `base`, or `base-1`, `base-2`… if it already holds a run
/// (earlier results are never overwritten) or another process is using it. A directory left by
/// a run killed before its first checkpoint (nothing to resume) is reused: the run starts again
/// under its name.
pub(crate) fn claim_run_dir(base: &Path) -> Result<(PathBuf, RunLock)> {
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    for i in 0usize.. {
        let dir = if i == 0 {
            base.to_path_buf()
        } else {
            PathBuf::from(format!("{}-{i}", base.display()))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
                let lock = lock_run_dir(&dir)?;
                return Ok((dir, lock));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
                if has_checkpoint(&dir) || dir.join("summary.json").exists() {
                    continue;
                }
                let Ok(lock) = lock_run_dir(&dir) else {
                    continue;
                };
                for f in RUN_FILES {
                    let p = dir.join(f);
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(io("removing", &p))?;
                    }
                }
                remove_temporaries(&dir)?;
                for d in ["plots", "checkpoints", crate::tensorboard::TENSORBOARD_DIR] {
                    let p = dir.join(d);
                    if p.exists() {
                        std::fs::remove_dir_all(&p).map_err(io("removing", &p))?;
                    }
                }
                return Ok((dir, lock));
            }
            Err(e) => return Err(ModbalError::io("creating", &dir, e)),
        }
    }
    unreachable!("the loop returns")
}

// ------------------------------------------------------------------------------ checksums

fn crc_of(path: &Path) -> Result<FileSum> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    Ok(FileSum {
        len: bytes.len() as u64,
        crc32: crc32fast::hash(&bytes),
    })
}

/// fsync every file of `dir` and write its manifest last.
fn seal(dir: &Path) -> Result<()> {
    let mut sums = BTreeMap::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io("reading", dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != CHECKSUMS && !n.starts_with('.'))
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        sync_file(&p)?;
        sums.insert(n, crc_of(&p)?);
    }
    write_json(&dir.join(CHECKSUMS), &sums)?;
    sync_dir(dir)
}

/// Check a sealed directory against its manifest; the error names the file.
fn verify(dir: &Path) -> Result<()> {
    let manifest = dir.join(CHECKSUMS);
    if !manifest.exists() {
        return Err(ModbalError::Data(format!(
            "{}: incomplete (no {CHECKSUMS}: the writer stopped before it finished)",
            dir.display()
        )));
    }
    let sums: BTreeMap<String, FileSum> = read_json(&manifest)?;
    for (name, want) in &sums {
        let p = dir.join(name);
        if !p.exists() {
            return Err(ModbalError::Data(format!(
                "checkpoint corrupt: {} is missing (listed in {})",
                p.display(),
                manifest.display()
            )));
        }
        let got = crc_of(&p)?;
        if &got != want {
            return Err(ModbalError::Data(format!(
                "checkpoint corrupt: {} does not match its checksum in {} ({} bytes, crc32 {:08x}; \
                 recorded {} bytes, crc32 {:08x})",
                p.display(),
                manifest.display(),
                got.len,
                got.crc32,
                want.len,
                want.crc32
            )));
        }
    }
    Ok(())
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ModbalError::io("removing", dir, e)),
    }
}

/// `from → to`, replacing `to` (via `to.old`) so that one of them is complete at any time.
fn swap_in(from: &Path, to: &Path, point: &str) -> Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    let old = PathBuf::from(format!("{}.old", to.display()));
    if to.exists() {
        remove_dir_if_exists(&old)?;
        std::fs::rename(to, &old).map_err(io("renaming", to))?;
        sync_dir(parent)?;
    }
    crash_point(point);
    std::fs::rename(from, to).map_err(io("renaming", from))?;
    sync_dir(parent)?;
    remove_dir_if_exists(&old)
}

// ----------------------------------------------------------------------------- checkpoints

/// Write `checkpoints/last` (see the module docs), then promote a pending best model.
pub(crate) fn save_checkpoint(
    dir: &Path,
    model: &dyn MultimodalModel,
    method: &dyn Method,
    opt: &dyn Optimizer,
    st: &CheckpointState,
) -> Result<()> {
    let ck = dir.join("checkpoints");
    std::fs::create_dir_all(&ck).map_err(io("creating", &ck))?;
    let tmp = ck.join("last.tmp");
    remove_dir_if_exists(&tmp)?;
    std::fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
    model.params().save(tmp.join("model.safetensors"))?;
    let method_tensors: HashMap<String, Tensor> = method.state_tensors()?.into_iter().collect();
    if !method_tensors.is_empty() {
        candle_core::safetensors::save(&method_tensors, tmp.join(METHOD_TENSORS))?;
    }
    opt.state().save(&tmp, "optimizer")?;
    write_json(&tmp.join("state.json"), st)?;
    // The journal: the metrics files as of this checkpoint.
    for f in JOURNALED {
        let src = dir.join(f);
        if src.exists() {
            std::fs::copy(&src, tmp.join(f)).map_err(io("copying", &src))?;
        }
    }
    crash_point("checkpoint-files");
    seal(&tmp)?;
    crash_point("checkpoint-complete");
    swap_in(&tmp, &ck.join("last"), "checkpoint-swap")?;
    crash_point("checkpoint-renamed");
    let pending = ck.join("best.pending");
    if pending.exists() {
        swap_in(&pending, &ck.join("best"), "best-swap")?;
    }
    Ok(())
}

/// Write the model and method state of a newly selected best epoch to
/// `checkpoints/best.pending` (promoted to `best/` by the next [`save_checkpoint`]).
pub(crate) fn save_best(dir: &Path, params: &ParamStore, state: &BestState) -> Result<()> {
    let ck = dir.join("checkpoints");
    std::fs::create_dir_all(&ck).map_err(io("creating", &ck))?;
    let tmp = ck.join("best.pending.tmp");
    remove_dir_if_exists(&tmp)?;
    std::fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
    params.save(tmp.join("model.safetensors"))?;
    write_json(&tmp.join("state.json"), state)?;
    seal(&tmp)?;
    crash_point("best-pending");
    let pending = ck.join("best.pending");
    remove_dir_if_exists(&pending)?;
    std::fs::rename(&tmp, &pending).map_err(io("renaming", &tmp))?;
    sync_dir(&ck)
}

/// What resume starts from: the checkpoint directory (now `checkpoints/last`) and its state.
///
/// Picks the newest complete checkpoint among `last`, `last.tmp` and `last.old` (a kill during
/// the swap leaves the new one in `last.tmp` or the previous one in `last.old`), makes it
/// `last`, and settles `best/`: a pending best model of an epoch the checkpoint covers is
/// promoted, one of a later epoch is dropped (that epoch is trained again). A `last/` that does
/// not verify is an error (corruption; a kill cannot cause it). Checkpoints of modbal versions
/// without checksums are taken as they are.
pub(crate) fn recover_checkpoint(run_dir: &Path) -> Result<(PathBuf, CheckpointState)> {
    remove_temporaries(run_dir)?;
    let ck = run_dir.join("checkpoints");
    let last = ck.join("last");
    let legacy = last.join("state.json").exists() && !last.join(CHECKSUMS).exists();
    let mut best: Option<(PathBuf, CheckpointState)> = None;
    for name in ["last", "last.tmp", "last.old"] {
        let d = ck.join(name);
        if !d.is_dir() {
            continue;
        }
        let ok = if name == "last" && legacy {
            Ok(())
        } else {
            verify(&d)
        };
        match ok {
            Ok(()) => {
                let st: CheckpointState = read_json(&d.join("state.json"))?;
                if best
                    .as_ref()
                    .is_none_or(|(_, b)| st.epochs_done > b.epochs_done)
                {
                    best = Some((d, st));
                }
            }
            Err(e) if name == "last" => return Err(e),
            Err(_) => {}
        }
    }
    let Some((chosen, st)) = best else {
        return Err(ModbalError::Config(format!(
            "nothing was checkpointed in {}: the run stopped before its first checkpoint; start \
             it again with the same command and --name (the directory is reused)",
            run_dir.display()
        )));
    };
    if chosen != last {
        remove_dir_if_exists(&last)?;
        std::fs::rename(&chosen, &last).map_err(io("renaming", &chosen))?;
        sync_dir(&ck)?;
    }
    remove_dir_if_exists(&ck.join("last.tmp"))?;
    remove_dir_if_exists(&ck.join("last.old"))?;
    // best/: promote or drop what a kill left pending.
    remove_dir_if_exists(&ck.join("best.pending.tmp"))?;
    let pending = ck.join("best.pending");
    if pending.is_dir() {
        let usable = verify(&pending).is_ok()
            && read_json::<BestState>(&pending.join("state.json"))
                .is_ok_and(|b| Some(b.epoch) == st.best_epoch);
        if usable {
            swap_in(&pending, &ck.join("best"), "best-swap")?;
        } else {
            remove_dir_if_exists(&pending)?;
        }
    }
    let best_dir = ck.join("best");
    if !best_dir.exists() && best_dir.with_extension("old").is_dir() {
        std::fs::rename(best_dir.with_extension("old"), &best_dir).map_err(io("renaming", &ck))?;
    }
    remove_dir_if_exists(&best_dir.with_extension("old"))?;
    Ok((last, st))
}

/// Rebuild the journaled metrics files of `run_dir` from the checkpoint `ckpt`: their lines
/// are exactly those of the completed epochs. Lines of later epochs (trained after the
/// checkpoint, or half-written by a kill) are dropped; a difference inside the completed epochs
/// (a damaged file) is reported on stderr and repaired. Checkpoints without a journal (older
/// modbal) keep the lines of the completed epochs, checked: a garbled one is an error naming
/// the file and line.
pub(crate) fn restore_journal(run_dir: &Path, ckpt: &Path, epochs_done: usize) -> Result<()> {
    for f in JOURNALED {
        let path = run_dir.join(f);
        let saved = ckpt.join(f);
        if saved.exists() {
            let want = std::fs::read(&saved).map_err(io("reading", &saved))?;
            let have = std::fs::read(&path).unwrap_or_default();
            if !have.starts_with(&want) {
                let line = have
                    .split(|b| *b == b'\n')
                    .zip(want.split(|b| *b == b'\n'))
                    .position(|(a, b)| a != b)
                    .map(|i| i + 1)
                    .unwrap_or(1);
                eprintln!(
                    "warning: {} differs from the checkpoint's copy at line {line} (damaged); \
                     rebuilt from {}",
                    path.display(),
                    saved.display()
                );
            }
            if have != want {
                write_atomic(&path, &want)?;
            }
        } else if path.exists() && f != "timing.jsonl" {
            keep_completed_epochs(&path, epochs_done)?;
        }
    }
    Ok(())
}

/// Rewrite a JSONL file of epoch records keeping the lines of epochs `< epochs_done` (checked:
/// every line before them must parse, and each completed epoch must be there).
fn keep_completed_epochs(path: &Path, epochs_done: usize) -> Result<()> {
    #[derive(Deserialize)]
    struct EpochOnly {
        epoch: usize,
    }
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    let mut kept = Vec::new();
    let mut seen = vec![false; epochs_done];
    for (i, l) in text.lines().enumerate() {
        match serde_json::from_str::<EpochOnly>(l) {
            Ok(r) if r.epoch < epochs_done => {
                seen[r.epoch] = true;
                kept.push(l);
            }
            Ok(_) => {}
            // A kill may leave half of the last line.
            Err(_) if i + 1 == text.lines().count() => {}
            Err(e) => {
                return Err(ModbalError::Data(format!(
                    "{} line {}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(ModbalError::Data(format!(
            "{} has no line of epoch {missing}, which the checkpoint says was completed",
            path.display()
        )));
    }
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    write_atomic(path, body.as_bytes())
}
