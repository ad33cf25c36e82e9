//! Recorded `metrics.jsonl` of every built-in method for a fixed seed, kept for the reshaping of
//! the workspace (issue 15: "metrics byte-identical for the same seed before and after").
//!
//! The files in `tests/golden/` were written by this test with `MODBAL_RECORD_GOLDEN=1` at the
//! end of issue 14 (every method's fidelity fixes in), before the workspace was reshaped into a
//! generic loop and a registry (issue 15); the reshaped code reproduces them byte for byte.
//! Bit-identity holds per machine type only (the matrix-product kernels are chosen at run time
//! per CPU: AVX-512 and AVX2 accumulate in different orders), so `tests/golden/MACHINE` records
//! the recording machine's instruction set and the comparison runs where it matches (CI and the
//! development machines); elsewhere the test says so and checks nothing.
//!
//! ```sh
//! cargo test --release --test golden_metrics                                  # compare
//! MODBAL_RECORD_GOLDEN=1 cargo test --release --test golden_metrics          # re-record
//! ```
//!
//! Setting: synth-vec, 480/160/160 samples, 4 epochs (UDI: 6, so its stages are 2/2/2), seed 7.

mod common;

use modbal::RunConfig;
use std::path::{Path, PathBuf};

/// (file stem, config overrides) for every built-in method; `unimodal` once per modality.
fn cases() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for m in common::method_names() {
        let m = m.as_str();
        if m == "unimodal" {
            for modality in ["audio", "visual"] {
                out.push((
                    format!("unimodal-{modality}"),
                    vec![
                        "method.name=\"unimodal\"".into(),
                        format!("method.modality={modality:?}"),
                    ],
                ));
            }
        } else {
            let mut sets = vec![format!("method.name={m:?}")];
            if m == "udi" {
                sets.push("train.epochs=6".into());
            }
            out.push((m.to_string(), sets));
        }
    }
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

/// The instruction set the matrix-product and SIMD kernels dispatch to on this CPU.
fn machine() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            _ => false,
        };
        if has("avx512f") && has("avx512vl") {
            return "x86_64 avx512f avx512vl".into();
        }
        if has("avx2") && has("fma") {
            return "x86_64 avx2 fma".into();
        }
    }
    format!("{} baseline", std::env::consts::ARCH)
}

#[test]
fn every_method_reproduces_its_recorded_metrics() {
    let record = std::env::var_os("MODBAL_RECORD_GOLDEN").is_some();
    let tag = golden_dir().join("MACHINE");
    if record {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&tag, machine() + "\n").unwrap();
    } else {
        let recorded = std::fs::read_to_string(&tag).unwrap();
        if recorded.trim() != machine() {
            eprintln!(
                "golden metrics recorded on {:?}, this machine is {:?}: not compared",
                recorded.trim(),
                machine()
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut mismatches = Vec::new();
    for (stem, sets) in cases() {
        let base = common::small_vec(dir.path(), 7, 4);
        let mut all = sets.clone();
        all.push(format!("name={stem:?}"));
        let cfg: RunConfig = base.with_overrides(&all).unwrap();
        let out = common::train(&cfg);
        let got = std::fs::read_to_string(out.run_dir.join("metrics.jsonl")).unwrap();
        let file = golden_dir().join(format!("{stem}.jsonl"));
        if record {
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (record with MODBAL_RECORD_GOLDEN=1)",
                file.display()
            )
        });
        if got != want {
            let line = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .map(|i| i + 1)
                .unwrap_or(got.lines().count().min(want.lines().count()) + 1);
            mismatches.push(format!("{stem}: first difference at line {line}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
