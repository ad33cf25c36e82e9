//! `modbal prepare` end to end on tiny synthetic raw trees: CREMA-D (OGM-GE split CSVs with a
//! corrupt and a missing wav; actor-disjoint split), VGGSound-style CSV, AVE, the missing-ffmpeg
//! error, resuming, and refusing to mix recipes in one output folder.
//!
//! Audio arrays are compared with the library (`modbal_audio::Recipe::compute` on the decoded
//! wav, whose numbers `crates/modbal-audio/tests/reference.rs` checks against librosa, torchaudio
//! and scipy).

use modbal_audio::npy::read_npy_f32;
use modbal_audio::{decode_file, Recipe};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn modbal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modbal"))
}

fn run(args: &[&str]) -> Output {
    modbal().args(args).output().expect("run modbal")
}

fn wav_bytes(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * 2).to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(&data);
    v
}

/// A tone at `freq` Hz with a little deterministic noise, `secs` long at 16 kHz.
fn write_wav(path: &Path, freq: f64, secs: f64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let n = (16000.0 * secs) as usize;
    let s: Vec<i16> = (0..n)
        .map(|i| {
            let t = i as f64 / 16000.0;
            let noise = ((i * 40503) % 65536) as f64 / 32768.0 - 1.0;
            ((0.4 * (2.0 * std::f64::consts::PI * freq * t).sin() + 0.02 * noise) * 32767.0) as i16
        })
        .collect();
    std::fs::write(path, wav_bytes(16000, &s)).unwrap();
}

fn write_frames(dir: &Path, count: usize, seed: u8) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (1..=count)
        .map(|k| {
            let img = image::RgbImage::from_fn(24, 16, |x, y| {
                image::Rgb([
                    seed.wrapping_mul(40),
                    (x * 10) as u8 + k as u8,
                    (y * 15) as u8,
                ])
            });
            // natural-order names: frame_2 must come before frame_10
            let p = dir.join(format!("frame_{k}.jpg"));
            img.save_with_format(&p, image::ImageFormat::Jpeg).unwrap();
            p
        })
        .collect()
}

fn manifest(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

fn read_split(out: &Path, split: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(out.join("splits").join(format!("{split}.csv"))).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,label"));
    lines
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect()
}

fn mtimes(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut v = Vec::new();
    for sub in ["audio", "visual"] {
        let mut stack = vec![dir.join(sub)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().to_string();
                assert!(!name.starts_with('.'), "leftover temporary {}", p.display());
                if p.is_dir() {
                    stack.push(p);
                } else {
                    v.push((p.clone(), e.metadata().unwrap().modified().unwrap()));
                }
            }
        }
    }
    v.sort();
    v
}

const GOOD: &[(&str, f64, usize)] = &[
    ("1001_DFA_ANG_XX", 2.1, 3),
    ("1001_DFA_HAP_XX", 1.6, 2),
    ("1001_IEO_NEU_XX", 2.4, 3),
    ("1002_DFA_SAD_XX", 1.3, 2),
    ("1002_DFA_FEA_XX", 2.0, 11),
    ("1002_IEO_DIS_XX", 2.6, 3),
];
const CORRUPT: &str = "1002_ITS_ANG_XX";
const MISSING: &str = "1001_ITS_SAD_XX";

fn crema_tree(raw: &Path, with_csv: bool) {
    for (i, (clip, secs, frames)) in GOOD.iter().enumerate() {
        write_wav(
            &raw.join("AudioWAV").join(format!("{clip}.wav")),
            200.0 + 150.0 * i as f64,
            *secs,
        );
        write_frames(&raw.join("Image-01-FPS").join(clip), *frames, i as u8);
    }
    // truncated: the data chunk claims more samples than the file holds
    let p = raw.join("AudioWAV").join(format!("{CORRUPT}.wav"));
    write_wav(&p, 300.0, 1.0);
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    write_frames(&raw.join("Image-01-FPS").join(CORRUPT), 2, 9);
    write_frames(&raw.join("Image-01-FPS").join(MISSING), 2, 8);
    if with_csv {
        let train = [GOOD[0], GOOD[1], GOOD[3], GOOD[4]]
            .iter()
            .map(|g| format!("{},{}\n", g.0, &g.0[9..12]))
            .collect::<String>()
            + &format!("{CORRUPT},ANG\n{MISSING},SAD\n");
        std::fs::write(raw.join("train.csv"), train).unwrap();
        let test = [GOOD[2], GOOD[5]]
            .iter()
            .map(|g| format!("{},{}\n", g.0, &g.0[9..12]))
            .collect::<String>();
        std::fs::write(raw.join("test.csv"), test).unwrap();
    }
}

#[test]
fn crema_d_with_split_csvs_corrupt_missing_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, out) = (tmp.path().join("raw"), tmp.path().join("out"));
    crema_tree(&raw, true);
    let args = [
        "prepare",
        "crema-d",
        "--raw",
        raw.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
        "--no-progress",
    ];
    let t0 = std::time::Instant::now();
    let o = run(&args);
    let secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(3),
        "exit status: stdout {} stderr {stderr}",
        String::from_utf8_lossy(&o.stdout)
    );
    eprintln!(
        "prepare crema-d fixture: {} clips in {secs:.2} s ({:.1} clips/s incl. process start)",
        GOOD.len(),
        GOOD.len() as f64 / secs
    );
    assert!(
        stderr.contains(CORRUPT) && stderr.contains(MISSING),
        "{stderr}"
    );

    // manifest: counts, skipped with reasons, recipe, tools
    let m = manifest(&out);
    assert_eq!(m["dataset"], "crema-d");
    assert_eq!(m["recipe"]["name"], "ogm-ge");
    assert_eq!(m["recipe"]["stft"]["hop_length"], 353);
    assert_eq!(m["audio"]["shape"], serde_json::json!([257, 188]));
    assert_eq!(m["total"], 6);
    assert_eq!(m["prepared_this_run"], 6);
    assert_eq!(m["counts"]["train"]["ANG"], 1);
    assert_eq!(m["counts"]["train"]["NEU"], 0);
    assert_eq!(m["counts"]["test"]["NEU"], 1);
    assert_eq!(m["counts"]["test"]["DIS"], 1);
    assert!(m["counts"].get("val").is_none());
    assert_eq!(m["skipped_count"], 2);
    let skipped = m["skipped"].as_array().unwrap();
    let corrupt = skipped
        .iter()
        .find(|s| s["id"] == CORRUPT)
        .expect("corrupt clip listed");
    assert!(corrupt["file"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{CORRUPT}.wav")));
    assert!(
        corrupt["reason"].as_str().unwrap().contains("truncated"),
        "{corrupt}"
    );
    let missing = skipped
        .iter()
        .find(|s| s["id"] == MISSING)
        .expect("missing clip listed");
    assert!(
        missing["reason"]
            .as_str()
            .unwrap()
            .contains("missing audio"),
        "{missing}"
    );
    assert!(
        missing["reason"].as_str().unwrap().contains("AudioWAV"),
        "{missing}"
    );
    assert_eq!(m["tools"]["modbal-audio"], "0.1.0");

    // classes and splits
    let classes = std::fs::read_to_string(out.join("classes.txt")).unwrap();
    assert_eq!(
        classes.lines().collect::<Vec<_>>(),
        vec!["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    );
    let train = read_split(&out, "train");
    assert_eq!(
        train.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        vec![
            "1001_DFA_ANG_XX",
            "1001_DFA_HAP_XX",
            "1002_DFA_FEA_XX",
            "1002_DFA_SAD_XX"
        ]
    );
    assert!(train.iter().all(|(id, label)| &id[9..12] == label));
    assert_eq!(read_split(&out, "test").len(), 2);
    assert!(!out.join("splits/val.csv").exists());

    // audio arrays equal the library's recipe on the same wav; frames copied in natural order
    let recipe = Recipe::from_name("ogm-ge").unwrap();
    for (clip, _, frames) in GOOD {
        let (shape, data) = read_npy_f32(&out.join("audio").join(format!("{clip}.npy"))).unwrap();
        assert_eq!(shape, vec![257, 188]);
        let want = recipe
            .compute(&decode_file(&raw.join("AudioWAV").join(format!("{clip}.wav"))).unwrap())
            .unwrap();
        assert_eq!(data, want.data, "{clip}");
        assert!(data.iter().all(|v| v.is_finite()));
        let vdir = out.join("visual").join(clip);
        let mut names: Vec<String> = std::fs::read_dir(&vdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        let want_names: Vec<String> = (1..=*frames).map(|k| format!("{k:05}.jpg")).collect();
        assert_eq!(names, want_names);
        for k in 1..=*frames {
            let src = std::fs::read(
                raw.join("Image-01-FPS")
                    .join(clip)
                    .join(format!("frame_{k}.jpg")),
            )
            .unwrap();
            assert_eq!(
                std::fs::read(vdir.join(format!("{k:05}.jpg"))).unwrap(),
                src,
                "{clip} frame {k}"
            );
        }
    }
    assert!(!out.join("audio").join(format!("{CORRUPT}.npy")).exists());
    assert!(!out.join("visual").join(CORRUPT).exists());

    // re-run: nothing recomputed (mtimes unchanged), same skips, same exit status
    let before = mtimes(&out);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(3));
    let m = manifest(&out);
    assert_eq!(
        (m["prepared_this_run"].as_u64(), m["reused"].as_u64()),
        (Some(0), Some(6))
    );
    assert_eq!(mtimes(&out), before);

    // the missing clip appears: only it is computed
    write_wav(
        &raw.join("AudioWAV").join(format!("{MISSING}.wav")),
        880.0,
        1.5,
    );
    let o = run(&args);
    assert_eq!(
        o.status.code(),
        Some(3),
        "the corrupt file is still skipped"
    );
    let m = manifest(&out);
    assert_eq!(
        (
            m["prepared_this_run"].as_u64(),
            m["reused"].as_u64(),
            m["skipped_count"].as_u64()
        ),
        (Some(1), Some(6), Some(1))
    );
    assert_eq!(m["counts"]["train"]["SAD"], 2);

    // another recipe into the same folder is refused
    let mut other = args.to_vec();
    other.extend(["--recipe", "fbank"]);
    let o = run(&other);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("use another --out"));
}

#[test]
fn crema_d_actor_disjoint_split_with_fbank() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, out) = (tmp.path().join("raw"), tmp.path().join("out"));
    let emotions = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"];
    for a in 0..10 {
        let clip = format!("10{:02}_DFA_{}_XX", a + 1, emotions[a % 6]);
        write_wav(
            &raw.join("AudioWAV").join(format!("{clip}.wav")),
            300.0 + 40.0 * a as f64,
            1.2,
        );
        write_frames(&raw.join("frames").join(&clip), 2, a as u8);
    }
    let o = run(&[
        "prepare",
        "crema-d",
        "--raw",
        raw.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--recipe",
        "fbank",
        "--no-progress",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (train, test) = (read_split(&out, "train"), read_split(&out, "test"));
    assert_eq!((train.len(), test.len()), (9, 1));
    assert_eq!(
        test[0].0, "1010_DFA_FEA_XX",
        "the 10th actor in sorted order is the test actor"
    );
    let m = manifest(&out);
    assert!(m["split_source"]
        .as_str()
        .unwrap()
        .contains("actor-disjoint"));
    let (shape, data) = read_npy_f32(&out.join("audio/1001_DFA_NEU_XX.npy")).unwrap();
    assert_eq!(shape, vec![1024, 128]);
    // 1.2 s at 10 ms shift = 118 frames; the zero-padded rest holds 4.503877 / (2·5.141276)
    assert!(
        (data[1023 * 128] - 0.438_011_5).abs() < 1e-6,
        "{}",
        data[1023 * 128]
    );
    assert!((data[117 * 128] - 0.438_011_5).abs() > 1e-3);
}

#[test]
fn vggsound_csv_and_ave_lists() {
    let tmp = tempfile::tempdir().unwrap();
    // VGGSound: youtube_id,start,label,split (no header, quoted label with a comma)
    let raw = tmp.path().join("vgg");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(
        raw.join("vggsound.csv"),
        "aaa,30,\"male speech, man speaking\",train\nbbb,0,dog barking,train\nccc,12,dog barking,test\nddd,5,dog barking,test\n",
    )
    .unwrap();
    for (i, id) in ["aaa_000030", "bbb_000000", "ccc_000012"]
        .iter()
        .enumerate()
    {
        write_wav(
            &raw.join("audio").join(format!("{id}.wav")),
            500.0 + 100.0 * i as f64,
            1.0,
        );
        write_frames(&raw.join("frames").join(id), 3, i as u8);
    }
    // a truncated JPEG (no EOI marker) skips its clip, naming the frame
    let bad = raw.join("frames/ccc_000012/frame_2.jpg");
    let b = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &b[..b.len() / 2]).unwrap();
    let out = tmp.path().join("vgg-out");
    let o = run(&[
        "prepare",
        "vggsound",
        "--raw",
        raw.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "ddd has no media: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("classes.txt")).unwrap(),
        "dog barking\nmale speech, man speaking\n"
    );
    let train = std::fs::read_to_string(out.join("splits/train.csv")).unwrap();
    assert!(
        train.contains("aaa_000030,\"male speech, man speaking\""),
        "{train}"
    );
    let m = manifest(&out);
    assert_eq!(m["recipe"]["name"], "fbank");
    let skipped = m["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2);
    let ddd = skipped.iter().find(|s| s["id"] == "ddd_000005").unwrap();
    assert!(
        ddd["reason"].as_str().unwrap().contains("missing audio"),
        "{ddd}"
    );
    let ccc = skipped.iter().find(|s| s["id"] == "ccc_000012").unwrap();
    assert!(
        ccc["file"].as_str().unwrap().ends_with("frame_2.jpg"),
        "{ccc}"
    );
    assert!(
        ccc["reason"].as_str().unwrap().contains("truncated JPEG"),
        "{ccc}"
    );
    assert_eq!(m["counts"]["test"]["dog barking"], 0);
    assert!(!out.join("audio/ccc_000012.npy").exists());

    // AVE: & separated lists, 28-class style categories
    let raw = tmp.path().join("ave");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(raw.join("Annotations.txt"), "Category&VideoID&Quality&StartTime&EndTime\nChurch bell&vid1&good&0&10\nBark&vid2&good&2&8\nBark&vid3&good&0&10\n").unwrap();
    std::fs::write(
        raw.join("trainSet.txt"),
        "Church bell&vid1&good&0&10\nBark&vid2&good&2&8\n",
    )
    .unwrap();
    std::fs::write(raw.join("valSet.txt"), "Bark&vid3&good&0&10\n").unwrap();
    std::fs::write(raw.join("testSet.txt"), "Bark&vid2&good&2&8\n").unwrap();
    for (i, id) in ["vid1", "vid2", "vid3"].iter().enumerate() {
        write_wav(
            &raw.join("audio").join(format!("{id}.wav")),
            700.0 + 50.0 * i as f64,
            0.7,
        );
        write_frames(&raw.join("frames").join(id), 2, i as u8);
    }
    let out = tmp.path().join("ave-out");
    let o = run(&[
        "prepare",
        "ave",
        "--raw",
        raw.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "vid2 is listed twice: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("classes.txt")).unwrap(),
        "Bark\nChurch bell\n"
    );
    assert_eq!(
        read_split(&out, "val"),
        vec![("vid3".to_string(), "Bark".to_string())]
    );
    let (shape, data) = read_npy_f32(&out.join("audio/vid1.npy")).unwrap();
    assert_eq!(shape, vec![257, 1004]);
    let mean = data.iter().map(|&v| v as f64).sum::<f64>() / data.len() as f64;
    assert!(mean.abs() < 1e-4, "per-clip standardised: mean {mean}");
    assert!(manifest(&out)["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("more than once"));
}

#[test]
fn videos_without_ffmpeg_name_the_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    std::fs::create_dir_all(raw.join("VideoFlash")).unwrap();
    std::fs::write(
        raw.join("VideoFlash/1001_DFA_ANG_XX.flv"),
        b"FLV\x01 not really",
    )
    .unwrap();
    let empty = tmp.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let o = modbal()
        .args([
            "prepare",
            "crema-d",
            "--raw",
            raw.to_str().unwrap(),
            "--out",
            tmp.path().join("out").to_str().unwrap(),
            "--no-progress",
        ])
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("ffmpeg not found on PATH") && e.contains("1001_DFA_ANG_XX.flv"),
        "{e}"
    );

    let o = run(&["prepare", "mnist", "--raw", ".", "--out", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("crema-d, kinetics-sounds, ave, vggsound"));
}
