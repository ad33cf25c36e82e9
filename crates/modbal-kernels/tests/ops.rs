//! Every op against an independent reference, per device: `per_device!` runs each case on the
//! CPU always and on CUDA only with the `cuda` feature (skipping with a message when no device
//! can be opened at run time).

use candle_core::{DType, Device, Tensor, Var};
use modbal_info::club::{Club, ClubConfig};
use modbal_kernels::rng::{normal_f32, normal_f64, salt_pepper_uniform};
use modbal_kernels::{
    club_log_prob_matrix, salt_pepper, scale_add_noise, standard_normal, SaltPepper, ScaleAddNoise,
};
use modbal_tensors::SeededRng;

macro_rules! per_device {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[test]
                fn cpu() {
                    super::$case(&candle_core::Device::Cpu);
                }

                #[cfg(feature = "cuda")]
                #[test]
                fn cuda() {
                    match modbal_kernels::cuda_device() {
                        Some(dev) => super::$case(&dev),
                        None => eprintln!(
                            "skipping {}::cuda: no CUDA device could be opened",
                            stringify!($case)
                        ),
                    }
                }
            }
        )*
    };
}

per_device!(
    club_matrix_equals_modbal_info_f64,
    club_matrix_equals_modbal_info_f32,
    club_matrix_equals_brute_force_rectangular,
    club_backward_equals_autograd_of_the_formula,
    noise_is_standard_normal_f64,
    noise_is_standard_normal_f32,
    noise_is_reproducible_by_seed_and_index,
    scale_add_noise_is_k_x_plus_sigma_z,
    salt_pepper_rate_within_binomial_bound,
    salt_pepper_is_reproducible_by_seed_and_index,
    bad_inputs_are_errors,
);

fn tensor(
    rng: &mut SeededRng,
    dims: (usize, usize),
    scale: f64,
    dtype: DType,
    dev: &Device,
) -> Tensor {
    let v = rng.normal_vec(dims.0 * dims.1, 0.0, scale);
    Tensor::from_vec(v, dims, dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// `max_i |a_i − b_i| / max(1, |b_i|)`.
fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// `modbal_info::Club::log_prob_matrix` for a q-network with random weights, against our op on
/// the same `(μ, logvar)`; and vCLUB from our matrix against `Club::vclub`.
fn club_vs_info(dev: &Device, dtype: DType) -> (f64, f64) {
    let mut rng = SeededRng::new(11);
    let (n, dx, dy) = (37, 6, 9);
    let club = Club::with_dtype(ClubConfig::new(dx, dy), &mut rng, dev, dtype).unwrap();
    let x = tensor(&mut rng, (n, dx), 1.0, dtype, dev);
    let y = tensor(&mut rng, (n, dy), 1.5, dtype, dev);
    let (mu, lv) = club.mu_logvar(&x).unwrap();
    let ours = club_log_prob_matrix(&mu, &lv, &y).unwrap();
    assert_eq!(ours.dims(), &[n, n]);
    assert_eq!(ours.dtype(), dtype);
    let reference = club.log_prob_matrix(&x, &y).unwrap();
    let diff = max_rel(&f64s(&ours), &f64s(&reference));
    // vCLUB = mean_i L_ii − mean_ij L_ij (UDI eq 8).
    let l = f64s(&ours);
    let diag: f64 = (0..n).map(|i| l[i * n + i]).sum::<f64>() / n as f64;
    let all: f64 = l.iter().sum::<f64>() / (n * n) as f64;
    let vclub = f64s(&club.vclub(&x, &y).unwrap())[0];
    (diff, ((diag - all) - vclub).abs() / vclub.abs().max(1.0))
}

fn club_matrix_equals_modbal_info_f64(dev: &Device) {
    let (diff, vdiff) = club_vs_info(dev, DType::F64);
    assert!(diff <= 1e-12, "max relative difference {diff:e}");
    assert!(vdiff <= 1e-12, "vCLUB relative difference {vdiff:e}");
}

fn club_matrix_equals_modbal_info_f32(dev: &Device) {
    let (diff, vdiff) = club_vs_info(dev, DType::F32);
    assert!(diff <= 1e-5, "max relative difference {diff:e}");
    assert!(vdiff <= 1e-4, "vCLUB relative difference {vdiff:e}");
}

/// `N ≠ M` and `D` not a multiple of the CUDA tile (16), against a triple loop in f64.
fn club_matrix_equals_brute_force_rectangular(dev: &Device) {
    let mut rng = SeededRng::new(5);
    let (n, m, d) = (21, 34, 19);
    let mu = tensor(&mut rng, (n, d), 1.0, DType::F64, dev);
    let lv = tensor(&mut rng, (n, d), 0.5, DType::F64, dev);
    let y = tensor(&mut rng, (m, d), 2.0, DType::F64, dev);
    let (vm, vl, vy) = (f64s(&mu), f64s(&lv), f64s(&y));
    let mut expect = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            let mut s = 0.0;
            for e in 0..d {
                let (mu, lv, y) = (vm[i * d + e], vl[i * d + e], vy[j * d + e]);
                s += -(y - mu).powi(2) / (2.0 * lv.exp())
                    - 0.5 * lv
                    - 0.5 * (2.0 * std::f64::consts::PI).ln();
            }
            expect[i * m + j] = s;
        }
    }
    let got = club_log_prob_matrix(&mu, &lv, &y).unwrap();
    assert_eq!(got.dims(), &[n, m]);
    let diff = max_rel(&f64s(&got), &expect);
    assert!(diff <= 1e-12, "max relative difference {diff:e}");
    // Strided inputs (a transposed view) give the same matrix.
    let mu_t = mu.t().unwrap().contiguous().unwrap().t().unwrap();
    assert!(!mu_t.is_contiguous());
    let got_t = club_log_prob_matrix(&mu_t, &lv, &y).unwrap();
    assert_eq!(f64s(&got_t), f64s(&got));
}

/// Gradients of `Σ R ⊙ L` through our op's backward vs candle's autograd through the
/// broadcast (N×M×D) formula.
fn club_backward_equals_autograd_of_the_formula(dev: &Device) {
    let mut rng = SeededRng::new(9);
    let (n, m, d) = (13, 17, 5);
    let mu = Var::from_tensor(&tensor(&mut rng, (n, d), 1.0, DType::F64, dev)).unwrap();
    let lv = Var::from_tensor(&tensor(&mut rng, (n, d), 0.5, DType::F64, dev)).unwrap();
    let y = Var::from_tensor(&tensor(&mut rng, (m, d), 1.5, DType::F64, dev)).unwrap();
    let r = tensor(&mut rng, (n, m), 1.0, DType::F64, dev);
    let ours = club_log_prob_matrix(&mu, &lv, &y).unwrap();
    let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    // Reference: L_ij = Σ_d −(y_jd − μ_id)²·½e^{−lv_id} − ½ lv_id − ½ log 2π.
    let diff = y
        .unsqueeze(0)
        .unwrap()
        .broadcast_sub(&mu.unsqueeze(1).unwrap())
        .unwrap(); // [N, M, D]
    let w = (lv.neg().unwrap().exp().unwrap() * 0.5)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    let quad = diff
        .sqr()
        .unwrap()
        .broadcast_mul(&w)
        .unwrap()
        .sum(2)
        .unwrap();
    let norm = ((lv.sum_keepdim(1).unwrap() * 0.5).unwrap()
        + d as f64 * 0.5 * (2.0 * std::f64::consts::PI).ln())
    .unwrap();
    let reference = quad.neg().unwrap().broadcast_sub(&norm).unwrap();
    let g2 = (reference * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, v) in [("mu", &mu), ("logvar", &lv), ("y", &y)] {
        let a = f64s(g1.get(v.as_tensor()).expect("gradient from our op"));
        let b = f64s(g2.get(v.as_tensor()).expect("gradient from the formula"));
        let e = max_rel(&a, &b);
        assert!(e <= 1e-10, "d/d{name}: max relative difference {e:e}");
    }
}

/// Φ(x) by the Abramowitz–Stegun 7.1.26 erfc approximation (|error| ≤ 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-z * z).exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// Mean, variance, the Kolmogorov–Smirnov distance to Φ and the two-sided 3σ tail frequency
/// against their sampling bounds (all at ≈ 5 standard errors or α ≈ 1e-3 for KS).
fn assert_standard_normal(z: &mut [f64]) {
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(), "variance {var}");
    z.sort_by(f64::total_cmp);
    let ks = z
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let f = normal_cdf(v);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max);
    assert!(
        ks < 1.95 / n.sqrt(),
        "KS distance {ks} (bound {})",
        1.95 / n.sqrt()
    );
    let p = 2.0 * normal_cdf(-3.0);
    let tail = z.iter().filter(|v| v.abs() > 3.0).count() as f64;
    assert!(
        (tail - n * p).abs() < 5.0 * (n * p * (1.0 - p)).sqrt(),
        "{tail} beyond 3σ, expected {}",
        n * p
    );
}

fn noise_is_standard_normal_f64(dev: &Device) {
    let z = standard_normal(200_000, DType::F64, dev, 42, 0).unwrap();
    assert_standard_normal(&mut f64s(&z));
}

fn noise_is_standard_normal_f32(dev: &Device) {
    let z = standard_normal((400, 500), DType::F32, dev, 7, 1 << 40).unwrap();
    assert_eq!(z.dtype(), DType::F32);
    assert_standard_normal(&mut f64s(&z));
}

fn noise_is_reproducible_by_seed_and_index(dev: &Device) {
    let (seed, n) = (1234, 50_000);
    // Element i is normal(seed, offset + i): against the scalar functions.
    let z64 = f64s(&standard_normal(n, DType::F64, dev, seed, 3).unwrap());
    let z32 = f64s(&standard_normal(n, DType::F32, dev, seed, 3).unwrap());
    let e64: Vec<f64> = (0..n as u64).map(|i| normal_f64(seed, 3 + i)).collect();
    let e32: Vec<f64> = (0..n as u64)
        .map(|i| normal_f32(seed, 3 + i) as f64)
        .collect();
    if dev.is_cpu() {
        assert_eq!(z64, e64);
        assert_eq!(z32, e32);
    } else {
        // Different math libraries (ln, cos): a few ulp.
        assert!(max_rel(&z64, &e64) <= 1e-13, "{:e}", max_rel(&z64, &e64));
        assert!(max_rel(&z32, &e32) <= 2e-6, "{:e}", max_rel(&z32, &e32));
    }
    // Two blocks drawn with consecutive offsets are the one block.
    let a = f64s(&standard_normal(20_000, DType::F64, dev, seed, 3).unwrap());
    let b = f64s(&standard_normal(30_000, DType::F64, dev, seed, 20_003).unwrap());
    assert_eq!([a, b].concat(), z64);
    // Another seed gives other numbers; the shape does not matter, only the element index.
    let other = f64s(&standard_normal(n, DType::F64, dev, seed + 1, 3).unwrap());
    assert!(other.iter().zip(&z64).filter(|(a, b)| a == b).count() < 5);
    let shaped = f64s(&standard_normal((250, 200), DType::F64, dev, seed, 3).unwrap());
    assert_eq!(shaped, z64);
    if dev.is_cpu() {
        // The CPU path's task size and thread count change nothing.
        let op = ScaleAddNoise {
            k: 0.5,
            sigma: 2.0,
            seed,
            offset: 3,
        };
        let x: Vec<f64> = (0..n).map(|i| i as f64 * 1e-3).collect();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let reference = one.install(|| op.cpu_f64(&x, n));
        for chunk in [1, 7, 4096, n + 1] {
            assert_eq!(
                four.install(|| op.cpu_f64(&x, chunk)),
                reference,
                "chunk {chunk}"
            );
        }
        let x32: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let r32 = one.install(|| op.cpu_f32(&x32, n));
        assert_eq!(four.install(|| op.cpu_f32(&x32, 13)), r32);
    }
}

fn scale_add_noise_is_k_x_plus_sigma_z(dev: &Device) {
    let mut rng = SeededRng::new(3);
    let (k, sigma, seed, off) = (0.37, 0.021, 99, 1000);
    for dtype in [DType::F64, DType::F32] {
        let x = tensor(&mut rng, (64, 33), 1.0, dtype, dev);
        let out = scale_add_noise(&x, k, sigma, seed, off).unwrap();
        assert_eq!((out.dims(), out.dtype()), (x.dims(), dtype));
        let xs = f64s(&x);
        let got = f64s(&out);
        let expect: Vec<f64> = if dtype == DType::F64 {
            (0..xs.len())
                .map(|i| k * xs[i] + sigma * normal_f64(seed, off + i as u64))
                .collect()
        } else {
            (0..xs.len())
                .map(|i| {
                    let z = normal_f32(seed, off + i as u64);
                    (k as f32 * xs[i] as f32 + sigma as f32 * z) as f64
                })
                .collect()
        };
        let tol = if dev.is_cpu() {
            0.0
        } else if dtype == DType::F64 {
            1e-13
        } else {
            1e-6
        };
        let e = max_rel(&got, &expect);
        assert!(e <= tol, "{dtype:?}: max relative difference {e:e}");
        // The noise is really there (σ·z is not rounded away) and scales with σ.
        let resid: f64 = (0..xs.len())
            .map(|i| (got[i] - k * xs[i]).powi(2))
            .sum::<f64>();
        let sd = (resid / xs.len() as f64).sqrt();
        assert!(
            (sd / sigma - 1.0).abs() < 0.1,
            "{dtype:?}: noise sd {sd}, σ = {sigma}"
        );
    }
    // Gradient: ∂(Σ r ⊙ out)/∂x = k·r.
    let x = Var::from_tensor(&tensor(&mut rng, (8, 5), 1.0, DType::F64, dev)).unwrap();
    let r = tensor(&mut rng, (8, 5), 1.0, DType::F64, dev);
    let out = scale_add_noise(&x, k, sigma, seed, 0).unwrap();
    let g = (out * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = f64s(g.get(x.as_tensor()).unwrap());
    let expect: Vec<f64> = f64s(&r).iter().map(|v| k * v).collect();
    assert!(max_rel(&gx, &expect) <= 1e-15);
}

fn salt_pepper_rate_within_binomial_bound(dev: &Device) {
    let n = 200_000usize;
    for (dtype, eps) in [(DType::F32, 0.1), (DType::F64, 0.37)] {
        let x = (Tensor::ones(n, dtype, dev).unwrap() * 0.5).unwrap();
        let out = f64s(&salt_pepper(&x, eps, -1.0, 2.0, 17, 0).unwrap());
        let lo = out.iter().filter(|v| **v == -1.0).count() as f64;
        let hi = out.iter().filter(|v| **v == 2.0).count() as f64;
        let kept = out.iter().filter(|v| **v == 0.5).count() as f64;
        assert_eq!(lo + hi + kept, n as f64, "every value is x, lo or hi");
        let p = eps / 2.0;
        let bound = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
        for (what, count) in [("pepper (lo)", lo), ("salt (hi)", hi)] {
            assert!(
                (count - n as f64 * p).abs() < bound,
                "{dtype:?} ε = {eps}: {count} {what}, expected {} ± {bound}",
                n as f64 * p
            );
        }
    }
    // ε = 0 leaves x bit-identical; ε = 1 replaces everything.
    let mut rng = SeededRng::new(1);
    let x = tensor(&mut rng, (100, 10), 1.0, DType::F32, dev);
    assert_eq!(
        f64s(&salt_pepper(&x, 0.0, 0.0, 1.0, 5, 0).unwrap()),
        f64s(&x)
    );
    let all = f64s(&salt_pepper(&x, 1.0, -3.0, 3.0, 5, 0).unwrap());
    assert!(all.iter().all(|v| *v == -3.0 || *v == 3.0));
}

fn salt_pepper_is_reproducible_by_seed_and_index(dev: &Device) {
    let mut rng = SeededRng::new(2);
    let (eps, lo, hi, seed, off) = (0.3, -2.5, 4.0, 77, 123);
    let x = tensor(&mut rng, (300, 70), 1.0, DType::F64, dev);
    let xs = f64s(&x);
    let got = f64s(&salt_pepper(&x, eps, lo, hi, seed, off).unwrap());
    let expect: Vec<f64> = (0..xs.len())
        .map(|i| {
            let u = salt_pepper_uniform(seed, off + i as u64);
            if u < eps / 2.0 {
                lo
            } else if u < eps {
                hi
            } else {
                xs[i]
            }
        })
        .collect();
    // Only integer work and comparisons: identical on every device.
    assert_eq!(got, expect);
    let x32 = x.to_dtype(DType::F32).unwrap();
    let got32 = f64s(&salt_pepper(&x32, eps, lo, hi, seed, off).unwrap());
    let x32s = f64s(&x32);
    for i in 0..xs.len() {
        let e = if expect[i] == xs[i] {
            x32s[i]
        } else {
            expect[i]
        };
        assert_eq!(got32[i], e, "element {i}");
    }
    if dev.is_cpu() {
        let op = SaltPepper {
            eps,
            lo,
            hi,
            seed,
            offset: off,
        };
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for chunk in [1, 5, 1000] {
            assert_eq!(four.install(|| op.cpu(&xs, lo, hi, chunk)), expect);
        }
    }
}

fn bad_inputs_are_errors(dev: &Device) {
    let x = Tensor::zeros((4, 3), DType::U8, dev).unwrap();
    let e = scale_add_noise(&x, 1.0, 1.0, 0, 0).unwrap_err().to_string();
    assert!(e.contains("f32 and f64"), "{e}");
    let f = Tensor::zeros((4, 3), DType::F32, dev).unwrap();
    let e = salt_pepper(&f, 1.5, 0.0, 1.0, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[0, 1]"), "{e}");
    assert!(scale_add_noise(&f, f64::NAN, 1.0, 0, 0).is_err());
    let g = Tensor::zeros((4, 2), DType::F32, dev).unwrap();
    let e = club_log_prob_matrix(&f, &g, &f).unwrap_err().to_string();
    assert!(e.contains("logvar [4, 2]"), "{e}");
    let h = Tensor::zeros((4, 3), DType::F64, dev).unwrap();
    assert!(club_log_prob_matrix(&f, &f, &h).is_err());
}
