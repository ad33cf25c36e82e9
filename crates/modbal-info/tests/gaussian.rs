//! Gaussian entropy / MI (CAL eq 10-12) against closed forms and NumPy.

use candle_core::{DType, Device, Tensor, Var};
use modbal_info::gaussian::{covariance, gaussian_entropy, gaussian_mi, GaussianConfig};
use modbal_tensors::SeededRng;

const NO_REG: GaussianConfig = GaussianConfig {
    ridge: 0.0,
    shrinkage: 0.0,
};

fn scalar(t: Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Samples z = L·ε of a joint Gaussian with covariance L Lᵀ, rows [N, D].
fn sample(l: &[Vec<f64>], n: usize, rng: &mut SeededRng) -> Tensor {
    let d = l.len();
    let mut v = Vec::with_capacity(n * d);
    for _ in 0..n {
        let e = rng.normal_vec(d, 0.0, 1.0);
        for row in l {
            v.push(row.iter().zip(&e).map(|(a, b)| a * b).sum::<f64>());
        }
    }
    Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
}

/// log det of a small SPD matrix by Gaussian elimination (independent of modbal's Cholesky op).
fn logdet_ge(a: &[Vec<f64>]) -> f64 {
    let mut m: Vec<Vec<f64>> = a.to_vec();
    let d = m.len();
    let mut s = 0.0;
    for k in 0..d {
        s += m[k][k].ln();
        for i in k + 1..d {
            let f = m[i][k] / m[k][k];
            for j in k..d {
                m[i][j] -= f * m[k][j];
            }
        }
    }
    s
}

fn cov_of(l: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let d = l.len();
    (0..d)
        .map(|i| {
            (0..d)
                .map(|j| (0..d).map(|k| l[i][k] * l[j][k]).sum())
                .collect()
        })
        .collect()
}

fn block(s: &[Vec<f64>], a: usize, b: usize) -> Vec<Vec<f64>> {
    s[a..b].iter().map(|r| r[a..b].to_vec()).collect()
}

#[test]
fn matches_numpy_on_a_fixed_dataset() {
    // NumPy 2.4.6:
    //   i = np.arange(12)
    //   x = np.stack([np.sin(0.7*i), np.cos(1.3*i) + 0.1*i], 1)
    //   y = np.stack([np.sin(0.7*i) + 0.5*np.cos(2.1*i), np.sin(0.3*i*i)], 1)
    //   cz = np.cov(np.concatenate([x, y], 1), rowvar=False); cx, cy = cz[:2, :2], cz[2:, 2:]
    //   mi = 0.5*(slogdet(cx)[1] + slogdet(cy)[1] - slogdet(cz)[1])  -> 0.9876358336793549
    //   h  = 0.5*(2*np.log(2*np.pi*np.e) + slogdet(cx)[1])           -> 2.296200424097623
    let mut xv = Vec::new();
    let mut yv = Vec::new();
    for i in 0..12 {
        let i = i as f64;
        xv.extend([(0.7 * i).sin(), (1.3 * i).cos() + 0.1 * i]);
        yv.extend([(0.7 * i).sin() + 0.5 * (2.1 * i).cos(), (0.3 * i * i).sin()]);
    }
    let x = Tensor::from_vec(xv, (12, 2), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(yv, (12, 2), &Device::Cpu).unwrap();
    let mi = scalar(gaussian_mi(&x, &y, &NO_REG).unwrap());
    assert!((mi - 0.9876358336793549).abs() < 1e-10, "{mi}");
    let h = scalar(gaussian_entropy(&x, &NO_REG).unwrap());
    assert!((h - 2.296200424097623).abs() < 1e-10, "{h}");
    // The default ridge (1e-6 of each variance) moves the value only slightly.
    let mi_r = scalar(gaussian_mi(&x, &y, &GaussianConfig::default()).unwrap());
    assert!((mi_r - mi).abs() < 1e-4);
}

#[test]
fn converges_to_the_closed_form_for_jointly_gaussian_data() {
    // Closed form: I(X;Y) = ½ log(det Σ_X det Σ_Y / det Σ), H(X) = ½ (D log 2πe + log det Σ_X).
    let mut rng = SeededRng::new(42);
    for (dx, dy, scale) in [(1, 1, 0.9), (2, 3, 0.6), (4, 4, 0.4), (8, 4, 0.25)] {
        let d = dx + dy;
        // Random lower-triangular factor with a strong diagonal.
        let l: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| match j.cmp(&i) {
                        std::cmp::Ordering::Less => scale * rng.normal(),
                        std::cmp::Ordering::Equal => 1.0,
                        std::cmp::Ordering::Greater => 0.0,
                    })
                    .collect()
            })
            .collect();
        let s = cov_of(&l);
        let true_mi =
            0.5 * (logdet_ge(&block(&s, 0, dx)) + logdet_ge(&block(&s, dx, d)) - logdet_ge(&s));
        let true_hx = 0.5
            * (dx as f64 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln()
                + logdet_ge(&block(&s, 0, dx)));
        let n = 40_000;
        let z = sample(&l, n, &mut rng);
        let x = z.narrow(1, 0, dx).unwrap();
        let y = z.narrow(1, dx, dy).unwrap();
        let mi = scalar(gaussian_mi(&x, &y, &GaussianConfig::default()).unwrap());
        let hx = scalar(gaussian_entropy(&x, &GaussianConfig::default()).unwrap());
        // Tolerance: plug-in bias ≈ dx·dy/(2n) plus a few standard errors (≈ sqrt(2·true_mi/n) + 1/sqrt(n)).
        let tol = (dx * dy) as f64 / (2.0 * n as f64)
            + 4.0 * ((2.0 * true_mi / n as f64).sqrt() + 1.0 / (n as f64).sqrt());
        assert!(
            (mi - true_mi).abs() < tol,
            "dx {dx} dy {dy}: mi {mi} vs {true_mi} (tol {tol})"
        );
        assert!(
            (hx - true_hx).abs() < 4.0 * dx as f64 / (n as f64).sqrt() + 1e-3,
            "H {hx} vs {true_hx}"
        );
    }
}

#[test]
fn independent_variables_tend_to_zero_as_n_grows() {
    // Bias of the plug-in Gaussian MI for independent X, Y: ≈ dx·dy/(2N). The bound 2·dx·dy/N
    // shrinks with N.
    let mut rng = SeededRng::new(7);
    let (dx, dy) = (4, 4);
    let eye: Vec<Vec<f64>> = (0..dx + dy)
        .map(|i| {
            (0..dx + dy)
                .map(|j| if i == j { 1.0 } else { 0.0 })
                .collect()
        })
        .collect();
    for n in [1000usize, 4000, 16000] {
        let z = sample(&eye, n, &mut rng);
        let mi = scalar(
            gaussian_mi(
                &z.narrow(1, 0, dx).unwrap(),
                &z.narrow(1, dx, dy).unwrap(),
                &GaussianConfig::default(),
            )
            .unwrap(),
        );
        let bound = 2.0 * (dx * dy) as f64 / n as f64;
        assert!(
            mi >= -1e-9 && mi < bound,
            "N {n}: mi {mi} not in [0, {bound})"
        );
    }
}

#[test]
fn n_smaller_than_d_needs_and_gets_regularisation() {
    let mut rng = SeededRng::new(3);
    let x = rng
        .randn((5, 16), 0.0, 1.0, DType::F64, &Device::Cpu)
        .unwrap();
    let y = rng
        .randn((5, 16), 0.0, 1.0, DType::F64, &Device::Cpu)
        .unwrap();
    // Singular without regularisation: a named error, never NaN.
    let e = gaussian_mi(&x, &y, &NO_REG).unwrap_err().to_string();
    assert!(e.contains("singular"), "{e}");
    // Shrinkage towards the diagonal: finite and >= 0; λ = 1 removes all correlation → 0.
    for lambda in [0.5, 0.9] {
        let cfg = GaussianConfig {
            ridge: 1e-3,
            shrinkage: lambda,
        };
        let mi = scalar(gaussian_mi(&x, &y, &cfg).unwrap());
        assert!(mi.is_finite() && mi >= -1e-9, "λ {lambda}: {mi}");
    }
    let full = GaussianConfig {
        ridge: 1e-3,
        shrinkage: 1.0,
    };
    assert!(scalar(gaussian_mi(&x, &y, &full).unwrap()).abs() < 1e-9);
    let c = covariance(&x, &full).unwrap();
    assert_eq!(c.dims(), &[16, 16]);
}

#[test]
fn gradient_matches_finite_differences() {
    // d MI / d x by central differences (f64), MI as a function of the data.
    let mut rng = SeededRng::new(11);
    let xv = rng.normal_vec(8 * 2, 0.0, 1.0);
    let yv: Vec<f64> = xv.iter().map(|v| 0.7 * v + 0.5 * rng.normal()).collect();
    let y = Tensor::from_vec(yv, (8, 2), &Device::Cpu).unwrap();
    let f = |xv: &[f64]| {
        let x = Tensor::from_vec(xv.to_vec(), (8, 2), &Device::Cpu).unwrap();
        scalar(gaussian_mi(&x, &y, &NO_REG).unwrap())
    };
    let xvar =
        Var::from_tensor(&Tensor::from_vec(xv.clone(), (8, 2), &Device::Cpu).unwrap()).unwrap();
    let mi = gaussian_mi(xvar.as_tensor(), &y, &NO_REG).unwrap();
    let g: Vec<f64> = mi
        .backward()
        .unwrap()
        .get(xvar.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let h = 1e-6;
    for k in 0..xv.len() {
        let mut a = xv.clone();
        a[k] += h;
        let mut b = xv.clone();
        b[k] -= h;
        let fd = (f(&a) - f(&b)) / (2.0 * h);
        assert!(
            (fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()),
            "element {k}: {} vs fd {fd}",
            g[k]
        );
    }
}
