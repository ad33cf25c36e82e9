//! `modbal prepare` against bad clips and interruptions (issue 17), end to end on the built binary
//! and small raw trees written by the tests (forged WAV headers byte by byte, a folder named like
//! a WAV):
//!
//! * one bad clip (sample rate 0 or 4·10⁹, a data chunk longer than the file, zero channels, a
//!   directory `X.wav`) is a skipped clip with its reason in `manifest.json`; the run finishes
//!   with exit status 3;
//! * temporaries left by a killed run are removed by the next one (not those of a process that
//!   still runs);
//! * a run killed at every durable step (`MODBAL_PREPARE_CRASH_AT=N`: the N-th write, rename or
//!   removal aborts the process — deterministic, so every step is covered), killed again while
//!   resuming, or killed with SIGKILL after a spread of delays (real timing, a sample of points),
//!   then rerun, ends with outputs byte-identical to an uninterrupted run and no temporaries.

use modbal_audio::npy::read_npy_f32;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn modbal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modbal"))
}

/// A canonical 44-byte-header 16-bit PCM WAV with the given header fields, written unchecked.
fn wav(rate: u32, channels: u16, data_len: Option<u32>, samples: &[i16]) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&rate.wrapping_mul(2).to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.unwrap_or(data.len() as u32).to_le_bytes());
    v.extend_from_slice(&data);
    v
}

fn tone(freq: f64, secs: f64) -> Vec<i16> {
    (0..(16000.0 * secs) as usize)
        .map(|i| {
            let t = i as f64 / 16000.0;
            (0.4 * (2.0 * std::f64::consts::PI * freq * t).sin() * 32767.0) as i16
        })
        .collect()
}

fn write_frames(dir: &Path, count: usize, seed: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 1..=count {
        let img = image::RgbImage::from_fn(16, 12, |x, y| {
            image::Rgb([
                seed.wrapping_mul(40),
                (x * 10) as u8 + k as u8,
                (y * 15) as u8,
            ])
        });
        img.save_with_format(dir.join(format!("frame_{k}.jpg")), image::ImageFormat::Jpeg)
            .unwrap();
    }
}

/// A CREMA-D tree (actor-disjoint layout): `good` clips of clean audio, then `bad` clips with the
/// given WAV bytes (`None`: a directory named `<clip>.wav`); every clip has 2 frames.
fn crema_tree(raw: &Path, good: usize, bad: &[(&str, Option<Vec<u8>>)]) -> Vec<String> {
    let emotions = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"];
    let audio = raw.join("AudioWAV");
    std::fs::create_dir_all(&audio).unwrap();
    let mut ids = Vec::new();
    for i in 0..good {
        let id = format!("10{:02}_DFA_{}_XX", i / 6 + 1, emotions[i % 6]);
        std::fs::write(
            audio.join(format!("{id}.wav")),
            wav(16000, 1, None, &tone(300.0 + 70.0 * i as f64, 0.4)),
        )
        .unwrap();
        write_frames(&raw.join("frames").join(&id), 2, i as u8);
        ids.push(id);
    }
    for (j, (id, bytes)) in bad.iter().enumerate() {
        let p = audio.join(format!("{id}.wav"));
        match bytes {
            Some(b) => std::fs::write(&p, b).unwrap(),
            None => std::fs::create_dir_all(&p).unwrap(),
        }
        write_frames(&raw.join("frames").join(id), 2, 100 + j as u8);
    }
    ids
}

fn prepare(raw: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = modbal();
    c.args(["prepare", "crema-d", "--raw"])
        .arg(raw)
        .arg("--out")
        .arg(out)
        .args(["--no-progress"])
        .args(extra)
        // an aborted child never drops a core file into the package folder
        .current_dir(raw.parent().unwrap())
        .env_remove("MODBAL_PREPARE_CRASH_AT");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run modbal")
}

fn manifest(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout {}\nstderr {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn each_bad_clip_is_skipped_with_its_reason_and_the_run_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, out) = (tmp.path().join("raw"), tmp.path().join("out"));
    let s = tone(440.0, 0.3);
    let bad: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        // panicked inside symphonia before (no manifest at all)
        (
            "1003_DFA_NEU_XX",
            Some(wav(0, 1, None, &s)),
            "sample rate 0",
        ),
        // allocated an 86 GB resampling table before (abort)
        (
            "1003_DFA_HAP_XX",
            Some(wav(4_000_000_000, 1, None, &s)),
            "sample rate 4000000000 Hz",
        ),
        // a data chunk that claims 4 GB: no buffer sized from it
        (
            "1003_DFA_SAD_XX",
            Some(wav(16000, 1, Some(u32::MAX), &s)),
            "truncated",
        ),
        (
            "1003_DFA_FEA_XX",
            Some(wav(16000, 0, None, &s)),
            "0 channels",
        ),
        // silently ignored before (not listed anywhere)
        ("1003_DFA_DIS_XX", None, "is a directory, not an audio file"),
    ];
    let list: Vec<(&str, Option<Vec<u8>>)> =
        bad.iter().map(|(id, b, _)| (*id, b.clone())).collect();
    let good = crema_tree(&raw, 3, &list);
    let t = Instant::now();
    let o = run(&mut prepare(&raw, &out, &[]));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let m = manifest(&out);
    assert_eq!(m["total"], good.len());
    assert_eq!(m["skipped_count"], bad.len(), "{m}");
    for (id, _, why) in &bad {
        let s = m["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == *id)
            .unwrap_or_else(|| panic!("{id} not in skipped: {m}"));
        let reason = s["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{id}: {reason}");
        assert!(reason.contains(&format!("{id}.wav")), "{id}: {reason}");
        assert!(!out.join("audio").join(format!("{id}.npy")).exists());
        assert!(!out.join("visual").join(id).exists());
    }
    for id in &good {
        let (shape, _) = read_npy_f32(&out.join("audio").join(format!("{id}.npy"))).unwrap();
        assert_eq!(shape, vec![257, 188]);
    }
}

#[test]
fn leftover_temporaries_are_removed_but_not_a_running_process_s() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, out) = (tmp.path().join("raw"), tmp.path().join("out"));
    let ids = crema_tree(&raw, 2, &[]);
    let o = run(&mut prepare(&raw, &out, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = snapshot(&out);
    // what runs killed at various points leave (pids of processes that are gone)
    let gone = u32::MAX;
    let leftovers = [
        out.join(format!(".manifest.json.tmp-{gone}")),
        out.join(format!("splits/.train.csv.tmp-{gone}")),
        out.join(format!("audio/.{}.npy.tmp-{gone}", ids[0])),
        out.join(format!("audio/.1001_DFA_FEA_XX.wav.tmp-{gone}")),
    ];
    for p in &leftovers {
        std::fs::write(p, b"half").unwrap();
    }
    let vtmp = out.join(format!("visual/.{}.tmp-{gone}", ids[1]));
    std::fs::create_dir_all(&vtmp).unwrap();
    std::fs::write(vtmp.join("00001.jpg"), b"half").unwrap();
    // not ours, and a temporary of a process that still runs (this test): both kept
    std::fs::write(out.join(".notes"), b"not ours").unwrap();
    let live = out.join(format!(".classes.txt.tmp-{}", std::process::id()));
    std::fs::write(&live, b"being written").unwrap();
    let o = run(&mut prepare(&raw, &out, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("removed 5 temporary file(s)"),
        "{}",
        text(&o)
    );
    for p in leftovers.iter().chain([&vtmp]) {
        assert!(!p.exists(), "{} left", p.display());
    }
    assert!(out.join(".notes").exists(), "only temporaries are removed");
    if Path::new("/proc/self").exists() {
        assert!(live.exists(), "a running process's temporary is kept");
    }
    std::fs::remove_file(out.join(".notes")).unwrap();
    std::fs::remove_file(&live).ok();
    assert_eq!(
        without_run_counts(snapshot(&out)),
        without_run_counts(before)
    );
}

/// Every file under `out` (relative path → bytes; none if `out` does not exist yet).
fn snapshot(out: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Err(e) if d == out && e.kind() == std::io::ErrorKind::NotFound => break,
            rd => rd.unwrap(),
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                m.insert(
                    p.strip_prefix(out).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    m
}

/// The snapshot with `manifest.json` parsed and its per-run counts (`prepared_this_run`,
/// `reused`) removed: what must not depend on how often the run was interrupted.
fn without_run_counts(mut s: BTreeMap<PathBuf, Vec<u8>>) -> BTreeMap<PathBuf, Vec<u8>> {
    if let Some(b) = s.get_mut(Path::new("manifest.json")) {
        let mut m: Value = serde_json::from_slice(b).unwrap();
        let o = m.as_object_mut().unwrap();
        let (p, r) = (o["prepared_this_run"].as_u64(), o["reused"].as_u64());
        assert_eq!(
            p.unwrap() + r.unwrap(),
            o["total"].as_u64().unwrap(),
            "prepared + reused = total"
        );
        o.remove("prepared_this_run");
        o.remove("reused");
        *b = serde_json::to_vec_pretty(&m).unwrap();
    }
    s
}

fn assert_no_temporaries(s: &BTreeMap<PathBuf, Vec<u8>>, out: &Path, when: &str) {
    for p in s.keys() {
        assert!(
            !p.to_string_lossy().contains(".tmp-"),
            "{when}: temporary {} left",
            p.display()
        );
    }
    for sub in ["audio", "visual", "splits"] {
        if let Ok(rd) = std::fs::read_dir(out.join(sub)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                assert!(!n.contains(".tmp-"), "{when}: temporary {sub}/{n} left");
            }
        }
    }
}

/// What an interrupted run may leave besides temporaries: only whole outputs.
fn assert_only_whole_outputs(out: &Path, reference: &BTreeMap<PathBuf, Vec<u8>>, when: &str) {
    for (p, bytes) in snapshot(out) {
        if p.to_string_lossy().contains(".tmp-") {
            continue;
        }
        if p.starts_with("audio") || p.starts_with("visual") {
            // an array or a frame in place is the finished one
            assert_eq!(Some(&bytes), reference.get(&p), "{when}: {}", p.display());
        } else if p == Path::new("manifest.json") {
            serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|e| panic!("{when}: manifest.json is not JSON: {e}"));
        }
    }
    // a frame folder in place is complete
    if let Ok(rd) = std::fs::read_dir(out.join("visual")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let n = std::fs::read_dir(e.path()).unwrap().count();
            let want = reference
                .keys()
                .filter(|k| k.starts_with(Path::new("visual").join(&name)))
                .count();
            assert_eq!(n, want, "{when}: visual/{name} holds {n} of {want} frames");
        }
    }
}

#[test]
fn a_prepare_killed_at_any_point_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let bad = vec![("1003_DFA_NEU_XX", Some(wav(0, 1, None, &tone(440.0, 0.2))))];
    crema_tree(&raw, 4, &bad);
    let reference_out = tmp.path().join("reference");
    let t = Instant::now();
    let o = run(&mut prepare(&raw, &reference_out, &["--jobs", "1"]));
    let uninterrupted = t.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let reference = snapshot(&reference_out);
    let want = without_run_counts(reference.clone());
    assert_no_temporaries(&reference, &reference_out, "uninterrupted");

    // 1. deterministic: abort at the n-th durable step, for every n until a run gets through;
    //    then once more at an early step of the resumed run; then a clean run.
    let mut steps = 0;
    for n in 1.. {
        let out = tmp.path().join(format!("crash-{n}"));
        let o = run(
            prepare(&raw, &out, &["--jobs", "1"]).env("MODBAL_PREPARE_CRASH_AT", n.to_string())
        );
        if o.status.success() || o.status.code() == Some(3) {
            steps = n - 1;
            break;
        }
        assert_eq!(o.status.code(), None, "crash at step {n}: {}", text(&o));
        let when = format!("after a crash at step {n}");
        assert_only_whole_outputs(&out, &reference, &when);
        let m = 1 + n % 4;
        let o = run(
            prepare(&raw, &out, &["--jobs", "1"]).env("MODBAL_PREPARE_CRASH_AT", m.to_string())
        );
        assert!(
            matches!(o.status.code(), None | Some(3)),
            "{when}, resume crashing at {m}: {}",
            text(&o)
        );
        assert_only_whole_outputs(&out, &reference, &format!("{when} and {m} of the resume"));
        let o = run(&mut prepare(&raw, &out, &["--jobs", "1"]));
        assert_eq!(o.status.code(), Some(3), "{when}: {}", text(&o));
        let got = snapshot(&out);
        assert_no_temporaries(&got, &out, &when);
        assert_eq!(without_run_counts(got), want, "{when}");
        std::fs::remove_dir_all(&out).unwrap();
        assert!(n < 500, "the crash hook never let a run through");
    }
    // 4 prepared clips × 4 steps + classes, train split, manifest × 2 steps
    assert!(steps >= 20, "only {steps} durable steps");

    // 2. real kills: SIGKILL after delays spread over the duration of an uninterrupted run (the
    //    fastest of two, timed now: the machine may be busier or idler than above)
    let mut uninterrupted = uninterrupted;
    for k in 0..2 {
        let out = tmp.path().join(format!("timing-{k}"));
        let t = Instant::now();
        let o = run(&mut prepare(&raw, &out, &["--jobs", "2"]));
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        uninterrupted = uninterrupted.min(t.elapsed());
        std::fs::remove_dir_all(&out).unwrap();
    }
    let trials = 20;
    let mut killed = 0;
    for i in 0..trials {
        let out = tmp.path().join(format!("kill-{i}"));
        let delay = uninterrupted.mul_f64((i as f64 + 0.5) / trials as f64);
        let mut child = prepare(&raw, &out, &["--jobs", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        let status = child.wait().unwrap();
        if !finished && status.code().is_none() {
            killed += 1;
        }
        let when = format!("after SIGKILL at {delay:?}");
        assert_only_whole_outputs(&out, &reference, &when);
        let o = run(&mut prepare(&raw, &out, &["--jobs", "2"]));
        assert_eq!(o.status.code(), Some(3), "{when}: {}", text(&o));
        let got = snapshot(&out);
        assert_no_temporaries(&got, &out, &when);
        assert_eq!(without_run_counts(got), want, "{when}");
        std::fs::remove_dir_all(&out).ok();
    }
    eprintln!(
        "prepare kill test: {steps} durable steps, each crashed at (and the resume crashed again), \
         {killed}/{trials} SIGKILL trials interrupted a run (uninterrupted run {uninterrupted:?}); \
         every resume matched the uninterrupted outputs"
    );
    assert!(killed > 0, "no SIGKILL landed inside a run");
}

/// A CREMA-D tree with fewer than 10 actors has no test actor in the actor-disjoint split:
/// prepare says so on stderr and in manifest.json (the loader then refuses the tree with the
/// same explanation), instead of writing a tree without test split silently.
#[test]
fn fewer_than_ten_actors_is_a_warning_naming_the_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, out) = (tmp.path().join("raw"), tmp.path().join("out"));
    crema_tree(&raw, 12, &[]); // 12 clips of 2 actors
    let o = run(&mut prepare(&raw, &out, &[]));
    let t = text(&o);
    assert!(
        t.contains("warning: only 2 actor(s)") && t.contains("NO test split"),
        "{t}"
    );
    let m = manifest(&out);
    assert!(
        m["split_source"]
            .as_str()
            .unwrap()
            .contains("WARNING: only 2 actor(s)"),
        "{m}"
    );
}

/// Two `modbal prepare` runs never write (or clean) one output folder: while another process
/// holds `out/.prepare.lock`, prepare refuses with a clear error; once it is free, it runs.
#[test]
fn a_second_prepare_into_the_same_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, out) = (tmp.path().join("raw"), tmp.path().join("out"));
    crema_tree(&raw, 6, &[]);
    std::fs::create_dir_all(&out).unwrap();
    // This test process plays the other prepare.
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".prepare.lock"))
        .unwrap();
    held.lock().unwrap();
    let o = run(&mut prepare(&raw, &out, &[]));
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("being prepared by another modbal process"),
        "{t}"
    );
    assert!(!out.join("manifest.json").exists());
    drop(held);
    let o = run(&mut prepare(&raw, &out, &[]));
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(3),
        "{}",
        text(&o)
    );
    assert!(out.join("manifest.json").exists());
}
