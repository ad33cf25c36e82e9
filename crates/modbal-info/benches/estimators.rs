//! Criterion benchmarks of every estimator of `modbal-info`, over N ∈ {64, 512, 4096} samples
//! and D ∈ {16, 128, 512}, in f64 on the CPU.
//!
//! Run with `just bench-estimators` (which also times the NumPy equivalents of
//! `bench/numpy_estimators.py` and prints the ratio side by side), or directly with
//! `RAYON_NUM_THREADS=2 cargo bench -p modbal-info --bench estimators`. Results land in
//! `target/criterion/<estimator>/N{n}_D{d}/new/estimates.json`.
//!
//! What D means per estimator:
//! * `gaussian-mi`: x, y both `[N, D]` (the joint covariance is `2D × 2D`);
//!   `gaussian-entropy`: x `[N, D]`;
//! * `club`, `club-sample`: x, y both `[N, D]`, q built with `x_dim = y_dim = D` and the default
//!   hidden size (15, i.e. 7 units per network), estimate only (no q-step);
//! * `mi`, `nmi`, `cmi`, `ncmi` (plug-in on labels): **D is the alphabet size**, the N labels of
//!   each variable are drawn from `0..D` (y and z partly copy x, so the MI is not ~0);
//! * `kl`, `js`: probability rows `[N, D]` (softmax of normal logits), probability forms,
//!   mean reduction; `softmax-bound`: logits `[N, D]` and N labels in `0..D`, mean reduction;
//! * `soft-mi`: probabilities `[N, D]` against N labels in `0..D`
//!   (`soft_mutual_information_labels`).
//!
//! Every timed call includes the input validation the estimator does and reading the result
//! back as an `f64`.
//!
//! Before the benchmarks, the binary writes `numeric-check.json` next to criterion's output
//! (`target/criterion/`, or `$MODBAL_BENCH_CHECK` if set): a few small cases with their inputs
//! (including CLUB's weights and CLUBSample's permutation) and modbal's results, which
//! `bench/numpy_estimators.py --check` recomputes with the NumPy implementations.

use candle_core::{DType, Device, Tensor};
use criterion::{black_box, criterion_group, BenchmarkId, Criterion};
use modbal_info::club::{Club, ClubConfig};
use modbal_info::discrete::{
    conditional_mutual_information, mutual_information, ncmi, normalized_mutual_information,
    soft_mutual_information_labels, Normalization,
};
use modbal_info::divergence::{js_divergence, kl_divergence, softmax_mi_lower_bound, Reduction};
use modbal_info::gaussian::{gaussian_entropy, gaussian_mi, GaussianConfig};
use modbal_tensors::SeededRng;
use std::fmt::Write as _;
use std::time::Duration;

const NS: [usize; 3] = [64, 512, 4096];
const DS: [usize; 3] = [16, 128, 512];

fn id(n: usize, d: usize) -> BenchmarkId {
    BenchmarkId::from_parameter(format!("N{n}_D{d}"))
}

/// Inputs of one (N, D) cell, all generated from one seed.
struct Inputs {
    x: Tensor,
    y: Tensor,
    lx: Vec<u32>,
    ly: Vec<u32>,
    lz: Vec<u32>,
    p: Tensor,
    q: Tensor,
    logits: Tensor,
    labels: Tensor,
}

/// Rows of `softmax(z)` for `z ~ N(0, 1)`, `[n, d]` row-major.
fn softmax_rows(z: &[f64], d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(z.len());
    for row in z.chunks_exact(d) {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| v / s));
    }
    out
}

/// Labels in `0..d` that copy `src` with probability `keep`, else uniform.
fn noisy_copy(rng: &mut SeededRng, src: &[u32], d: usize, keep: f64) -> Vec<u32> {
    src.iter()
        .map(|&v| {
            if rng.uniform() < keep {
                v
            } else {
                rng.below(d) as u32
            }
        })
        .collect()
}

fn inputs(n: usize, d: usize) -> Inputs {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(((n as u64) << 32) ^ d as u64);
    let xv = rng.normal_vec(n * d, 0.0, 1.0);
    let ev = rng.normal_vec(n * d, 0.0, 1.0);
    // y = 0.6 x + 0.8 ε: correlated, unit variance.
    let yv: Vec<f64> = xv.iter().zip(&ev).map(|(a, e)| 0.6 * a + 0.8 * e).collect();
    let lx: Vec<u32> = (0..n).map(|_| rng.below(d) as u32).collect();
    let ly = noisy_copy(&mut rng, &lx, d, 0.5);
    let lz = noisy_copy(&mut rng, &lx, d, 0.3);
    let p = softmax_rows(&rng.normal_vec(n * d, 0.0, 1.0), d);
    let q = softmax_rows(&rng.normal_vec(n * d, 0.0, 1.0), d);
    let logits = rng.normal_vec(n * d, 0.0, 2.0);
    let t = |v: Vec<f64>| Tensor::from_vec(v, (n, d), &dev).unwrap();
    Inputs {
        x: t(xv),
        y: t(yv),
        labels: Tensor::from_vec(ly.clone(), n, &dev).unwrap(),
        lx,
        ly,
        lz,
        p: t(p),
        q: t(q),
        logits: t(logits),
    }
}

fn club_for(d: usize) -> Club {
    let mut rng = SeededRng::new(1000 + d as u64);
    Club::with_dtype(ClubConfig::new(d, d), &mut rng, &Device::Cpu, DType::F64).unwrap()
}

fn scalar(t: Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}

fn estimators(c: &mut Criterion) {
    let cells: Vec<(usize, usize, Inputs)> = NS
        .iter()
        .flat_map(|&n| DS.iter().map(move |&d| (n, d)))
        .map(|(n, d)| (n, d, inputs(n, d)))
        .collect();
    let cfg = GaussianConfig::default();

    let mut g = c.benchmark_group("gaussian-mi");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| scalar(gaussian_mi(black_box(&v.x), black_box(&v.y), &cfg).unwrap()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("gaussian-entropy");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| scalar(gaussian_entropy(black_box(&v.x), &cfg).unwrap()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("club");
    for (n, d, v) in &cells {
        let club = club_for(*d);
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| scalar(club.club(black_box(&v.x), black_box(&v.y)).unwrap()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("club-sample");
    for (n, d, v) in &cells {
        let club = club_for(*d);
        let mut rng = SeededRng::new(7);
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| {
                scalar(
                    club.club_sample(black_box(&v.x), black_box(&v.y), &mut rng)
                        .unwrap(),
                )
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("mi");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| mutual_information(black_box(&v.lx), black_box(&v.ly)).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("nmi");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| {
                normalized_mutual_information(
                    black_box(&v.lx),
                    black_box(&v.ly),
                    Normalization::Geometric,
                )
                .unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("cmi");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| {
                conditional_mutual_information(black_box(&v.lx), black_box(&v.ly), black_box(&v.lz))
                    .unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ncmi");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| ncmi(black_box(&v.lx), black_box(&v.ly), black_box(&v.lz)).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("kl");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| {
                scalar(kl_divergence(black_box(&v.p), black_box(&v.q), Reduction::Mean).unwrap())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("js");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| {
                scalar(js_divergence(black_box(&v.p), black_box(&v.q), Reduction::Mean).unwrap())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("softmax-bound");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| {
                scalar(
                    softmax_mi_lower_bound(
                        black_box(&v.logits),
                        black_box(&v.labels),
                        Reduction::Mean,
                    )
                    .unwrap(),
                )
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("soft-mi");
    for (n, d, v) in &cells {
        g.bench_function(id(*n, *d), |b| {
            b.iter(|| {
                scalar(soft_mutual_information_labels(black_box(&v.p), black_box(&v.ly)).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = estimators
}

// ---------------------------------------------------------------------------------------------
// numeric check file for bench/numpy_estimators.py --check
// ---------------------------------------------------------------------------------------------

/// A JSON array of f64 (Rust's `{:?}` prints the shortest round-trip decimal).
fn json_f64s(out: &mut String, v: &[f64]) {
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(out, "{x:?}").unwrap();
    }
    out.push(']');
}

fn json_u32s(out: &mut String, v: &[u32]) {
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(out, "{x}").unwrap();
    }
    out.push(']');
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// One check case per estimator on small inputs: inputs, shapes and modbal's value.
fn numeric_check() -> String {
    let mut out = String::from("[\n");
    let mut first = true;
    for &(n, d) in &[(64usize, 16usize), (512, 16), (512, 128), (64, 512)] {
        let v = inputs(n, d);
        let cfg = GaussianConfig::default();
        let club = club_for(d);
        let mut rng = SeededRng::new(11);
        let perm: Vec<u32> = rng
            .clone()
            .permutation(n)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let vals: Vec<(&str, f64)> = vec![
            (
                "gaussian-mi",
                scalar(gaussian_mi(&v.x, &v.y, &cfg).unwrap()),
            ),
            (
                "gaussian-entropy",
                scalar(gaussian_entropy(&v.x, &cfg).unwrap()),
            ),
            ("club", scalar(club.club(&v.x, &v.y).unwrap())),
            (
                "club-sample",
                scalar(club.club_sample(&v.x, &v.y, &mut rng).unwrap()),
            ),
            ("mi", mutual_information(&v.lx, &v.ly).unwrap()),
            (
                "nmi",
                normalized_mutual_information(&v.lx, &v.ly, Normalization::Geometric).unwrap(),
            ),
            (
                "cmi",
                conditional_mutual_information(&v.lx, &v.ly, &v.lz).unwrap(),
            ),
            ("ncmi", ncmi(&v.lx, &v.ly, &v.lz).unwrap()),
            (
                "kl",
                scalar(kl_divergence(&v.p, &v.q, Reduction::Mean).unwrap()),
            ),
            (
                "js",
                scalar(js_divergence(&v.p, &v.q, Reduction::Mean).unwrap()),
            ),
            (
                "softmax-bound",
                scalar(softmax_mi_lower_bound(&v.logits, &v.labels, Reduction::Mean).unwrap()),
            ),
            (
                "soft-mi",
                scalar(soft_mutual_information_labels(&v.p, &v.ly).unwrap()),
            ),
        ];
        if !first {
            out.push_str(",\n");
        }
        first = false;
        write!(out, "{{\"n\":{n},\"d\":{d},\"modbal\":{{").unwrap();
        for (i, (k, x)) in vals.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write!(out, "\"{k}\":{x:?}").unwrap();
        }
        out.push_str("},\"x\":");
        json_f64s(&mut out, &flat(&v.x));
        out.push_str(",\"y\":");
        json_f64s(&mut out, &flat(&v.y));
        out.push_str(",\"lx\":");
        json_u32s(&mut out, &v.lx);
        out.push_str(",\"ly\":");
        json_u32s(&mut out, &v.ly);
        out.push_str(",\"lz\":");
        json_u32s(&mut out, &v.lz);
        out.push_str(",\"p\":");
        json_f64s(&mut out, &flat(&v.p));
        out.push_str(",\"q\":");
        json_f64s(&mut out, &flat(&v.q));
        out.push_str(",\"logits\":");
        json_f64s(&mut out, &flat(&v.logits));
        out.push_str(",\"perm\":");
        json_u32s(&mut out, &perm);
        out.push_str(",\"club\":{");
        for (i, (name, var)) in club.params().all().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write!(out, "\"{name}\":").unwrap();
            json_f64s(&mut out, &flat(var.as_tensor()));
        }
        out.push_str("}}");
    }
    out.push_str("\n]\n");
    out
}

/// `$MODBAL_BENCH_CHECK`, else `numeric-check.json` in criterion's output directory
/// (`$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, or `<target>/criterion` from this binary's
/// path `<target>/release/deps/estimators-*`).
fn check_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("MODBAL_BENCH_CHECK") {
        return Some(p.into());
    }
    let dir = if let Some(h) = std::env::var_os("CRITERION_HOME") {
        std::path::PathBuf::from(h)
    } else if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        std::path::PathBuf::from(t).join("criterion")
    } else {
        std::env::current_exe()
            .ok()?
            .parent()?
            .parent()?
            .parent()?
            .join("criterion")
    };
    Some(dir.join("numeric-check.json"))
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent: skip the check file then.
    let benching = std::env::args().any(|a| a == "--bench");
    if benching {
        if let Some(path) = check_path() {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::write(&path, numeric_check()) {
                Ok(()) => eprintln!("numeric check cases written to {}", path.display()),
                Err(e) => eprintln!("could not write {}: {e}", path.display()),
            }
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
