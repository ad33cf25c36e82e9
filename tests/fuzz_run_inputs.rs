//! Bounded arbitrary-bytes fuzzing of what a run reads back (issue 17): the config TOML
//! (`RunConfig`), and a stopped run's checkpoint files and metrics journal as `resume` reads them.
//! Seeded mutations (bit flips, byte overwrites with extreme values, truncations, insertions,
//! duplicated spans) of valid inputs; every case must end in `Ok` or an error — never a panic.
//! A case that resumes successfully must have produced a complete, well-formed run.
//!
//! `MODBAL_FUZZ_CASES=N` runs N cases per target instead of the default (kept small for CI).

use modbal::RunConfig;
use std::path::Path;

fn cases(default: usize) -> usize {
    std::env::var("MODBAL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a small deterministic generator for the mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four random edits of `input`.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0u8, 0xff, 0x7f, 0x80, b'9', b'"', b'\n', b'['][rng.below(8)];
            }
            2 => v.truncate(rng.below(len + 1)),
            3 => {
                let i = rng.below(len + 1);
                let extra: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                v.splice(i..i, extra);
            }
            4 if len > 1 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                let span = v[a..b].to_vec();
                let i = rng.below(len + 1);
                v.splice(i..i, span);
            }
            _ if len > 0 => {
                // A large decimal number written over some bytes (sizes, epochs, lengths).
                let i = rng.below(len);
                let big = ["18446744073709551615", "4611686018427387904", "1e308", "-1"];
                let s = big[rng.below(big.len())].as_bytes();
                let end = (i + s.len()).min(len);
                v.splice(i..end, s.iter().copied());
            }
            _ => {}
        }
    }
    v
}

fn small_config(out: &Path) -> RunConfig {
    RunConfig::default()
        .with_overrides(&[
            "dataset.name=synth-vec".into(),
            "dataset.train=48".into(),
            "dataset.val=16".into(),
            "dataset.test=16".into(),
            "train.epochs=3".into(),
            "train.batch_size=16".into(),
            "train.optimizer.momentum=0.9".into(),
            format!("out_dir={:?}", out.display().to_string()),
        ])
        .unwrap()
}

#[test]
fn config_toml_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut valid = Vec::new();
    for m in ["concat", "cal", "udi", "arm", "ogm-ge"] {
        let cfg = small_config(dir.path())
            .with_overrides(&[format!("method.name={m:?}")])
            .unwrap();
        valid.push(cfg.to_toml_string().unwrap().into_bytes());
    }
    let mut rng = Rng(0x5eed_c0f1);
    let n = cases(3000);
    let (mut ok, mut err) = (0, 0);
    for i in 0..n {
        let input = mutate(&valid[i % valid.len()], &mut rng);
        let r = std::panic::catch_unwind(|| {
            let text = String::from_utf8_lossy(&input);
            match text.parse::<toml::Table>() {
                Ok(t) => RunConfig::from_toml_value(toml::Value::Table(t)).map(|_| ()),
                Err(_) => Ok(()),
            }
        });
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => err += 1,
            Err(_) => panic!(
                "case {i}: RunConfig panicked on:\n{}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    eprintln!("config TOML: {n} cases, {ok} accepted, {err} rejected");
    assert!(ok > 0 && err > 0);
}

#[test]
fn resume_never_panics_on_damaged_checkpoints_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = modbal::TrainOptions {
        quiet: true,
        stop_after: Some(2),
        ..Default::default()
    };
    let stopped = modbal::train(&small_config(dir.path()), &quiet).unwrap();
    let src = stopped.run_dir;
    // The files resume reads. Checksums are removed in each case (so that the damaged file is
    // parsed rather than rejected by its checksum, as for a checkpoint of an older modbal).
    let targets = [
        "checkpoints/last/model.safetensors",
        "checkpoints/last/optimizer.safetensors",
        "checkpoints/last/optimizer.json",
        "checkpoints/last/state.json",
        "checkpoints/last/metrics.jsonl",
        "metrics.jsonl",
        "checkpoints/best/model.safetensors",
        "checkpoints/best/state.json",
    ];
    let originals: Vec<Vec<u8>> = targets
        .iter()
        .map(|t| std::fs::read(src.join(t)).unwrap())
        .collect();
    let mut rng = Rng(0xdead_beef_1234);
    let n = cases(240);
    let (mut ok, mut err) = (0, 0);
    for i in 0..n {
        let case = tempfile::tempdir().unwrap();
        let run = case.path().join("run");
        copy_dir(&src, &run);
        let k = i % targets.len();
        std::fs::write(run.join(targets[k]), mutate(&originals[k], &mut rng)).unwrap();
        for sealed in ["checkpoints/last", "checkpoints/best"] {
            let _ = std::fs::remove_file(run.join(sealed).join("checksums.json"));
        }
        let r = std::panic::catch_unwind(|| {
            modbal::resume(
                &run,
                &modbal::TrainOptions {
                    quiet: true,
                    ..Default::default()
                },
            )
        });
        match r {
            Ok(Ok(out)) => {
                ok += 1;
                let s = out.summary.expect("a resumed run finishes");
                assert!(s.test.fusion_acc.is_finite(), "case {i} ({})", targets[k]);
                let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
                assert_eq!(lines.lines().count(), 6, "case {i} ({})", targets[k]);
            }
            Ok(Err(_)) => err += 1,
            Err(_) => panic!("case {i}: resume panicked with a damaged {}", targets[k]),
        }
    }
    eprintln!("resume inputs: {n} cases, {ok} resumed, {err} rejected");
    assert!(err > 0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
