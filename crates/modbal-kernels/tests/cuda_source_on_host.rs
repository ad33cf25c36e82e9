//! The CUDA C source (`src/kernels.cu`) run on the host: `tests/host/harness.cpp` includes it with
//! the CUDA keywords stubbed out and runs the grid-stride kernels with one thread, compiled by
//! the system C++ compiler with `-ffp-contract=off` (nvrtc's `--fmad=false`). Its outputs must be
//! bit-identical to the Rust CPU paths: this checks, without a GPU, that the two implementations
//! of Philox4x32-10, the uniform/normal mappings and the element formulas are the same. (On a GPU
//! only `ln`/`cos`/`exp` may differ, by a few ulp: CUDA's math library instead of the host's.)
//! Skipped with a message when no C++ compiler (`$CXX`, else `c++`) is available.

use candle_core::{DType, Device, Tensor};
use modbal_kernels::{club_log_prob_matrix, salt_pepper, scale_add_noise};
use std::path::PathBuf;
use std::process::Command;

fn harness() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("modbal-kernels-host-harness");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = Command::new(&cxx)
        .args(["-O2", "-ffp-contract=off", "-std=c++17", "-o"])
        .arg(&exe)
        .arg(dir.join("tests/host/harness.cpp"))
        .status();
    match status {
        Ok(s) if s.success() => Some(exe),
        Ok(s) => panic!("{cxx} could not compile tests/host/harness.cpp with src/kernels.cu: {s}"),
        Err(e) => {
            eprintln!("skipping: no C++ compiler ({cxx}: {e})");
            None
        }
    }
}

fn run(exe: &PathBuf, args: &[&str]) -> Vec<u64> {
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("run the harness");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| u64::from_str_radix(l, 16).unwrap())
        .collect()
}

#[test]
fn cuda_source_matches_the_rust_paths_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let n = 3000usize;
    let (seed, offset, k) = (987_654_321_012u64, 5u64 << 33, 0.75);
    let x64: Vec<f64> = (0..n).map(|i| i as f64 / 1000.0 - 1.0).collect();
    let x = Tensor::from_vec(x64.clone(), n, &Device::Cpu).unwrap();
    let args = [n.to_string(), seed.to_string(), offset.to_string()];
    let common = [args[0].as_str(), args[1].as_str(), args[2].as_str()];

    let host = run(
        &exe,
        &[&["scale_add_noise_f64"], &common[..], &["0.75"]].concat(),
    );
    let ours = scale_add_noise(&x, k, 0.25, seed, offset).unwrap();
    let ours: Vec<u64> = ours
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(host, ours, "scale_add_noise_f64");

    let host = run(
        &exe,
        &[&["scale_add_noise_f32"], &common[..], &["0.75"]].concat(),
    );
    let x32 = x.to_dtype(DType::F32).unwrap();
    let ours = scale_add_noise(&x32, k, 0.25, seed, offset).unwrap();
    let ours: Vec<u64> = ours
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits() as u64)
        .collect();
    assert_eq!(host, ours, "scale_add_noise_f32");

    let host = run(
        &exe,
        &[&["salt_pepper_f64"], &common[..], &["0.4"]].concat(),
    );
    let ours = salt_pepper(&x, 0.4, -7.0, 9.0, seed, offset).unwrap();
    let ours: Vec<u64> = ours
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(host, ours, "salt_pepper_f64");
    let replaced = ours
        .iter()
        .zip(&x64)
        .filter(|(a, b)| **a != b.to_bits())
        .count();
    assert!(
        replaced > 1000 && replaced < 1400,
        "{replaced} of {n} replaced at ε = 0.4"
    );

    // club_prep_f64: w = ½e^{−lv} and c_i = ½Σ lv + D·½ log 2π. With y_j = μ_i the op's entry
    // is exactly −c_i (every difference is 0), so c is compared bit for bit through the op.
    let (rows, d) = (7usize, 5usize);
    let host = run(&exe, &["club_prep_f64", &rows.to_string(), "0", "0", "0"]);
    let lv: Vec<f64> = (0..rows * d)
        .map(|k| k as f64 / (rows * d) as f64 * 2.0 - 1.0)
        .collect();
    let w: Vec<u64> = lv.iter().map(|v| (0.5 * (-v).exp()).to_bits()).collect();
    assert_eq!(&host[..rows * d], &w[..], "club_prep_f64: w");
    let mu = Tensor::zeros((rows, d), DType::F64, &Device::Cpu).unwrap();
    let lv_t = Tensor::from_vec(lv, (rows, d), &Device::Cpu).unwrap();
    let l = club_log_prob_matrix(&mu, &lv_t, &mu).unwrap();
    let l = l.to_vec2::<f64>().unwrap();
    for i in 0..rows {
        assert_eq!(
            host[rows * d + i],
            (-l[i][i]).to_bits(),
            "club_prep_f64: c[{i}]"
        );
    }
}
