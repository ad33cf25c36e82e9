//! `ops::logdet` (Cholesky custom op, backward A⁻¹) and `ops::spd_inv` against closed forms and
//! central finite differences.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, assert_tensor_close, values};
use modbal_tensors::ops::{logdet, spd_inv};

fn mat(v: &[f64], d: usize) -> Tensor {
    Tensor::from_slice(v, (d, d), &Device::Cpu).expect("matrix")
}

/// det of a 3×3 matrix by cofactor expansion along the first row.
fn det3(a: &[f64]) -> f64 {
    a[0] * (a[4] * a[8] - a[5] * a[7]) - a[1] * (a[3] * a[8] - a[5] * a[6])
        + a[2] * (a[3] * a[7] - a[4] * a[6])
}

/// A⁻¹ = adj(A) / det A for a 3×3 matrix (adj = transposed cofactor matrix).
fn inv3(a: &[f64]) -> Vec<f64> {
    let d = det3(a);
    let c = |r0: usize, r1: usize, c0: usize, c1: usize| {
        a[r0 * 3 + c0] * a[r1 * 3 + c1] - a[r0 * 3 + c1] * a[r1 * 3 + c0]
    };
    // inv[i][j] = cofactor(j, i) / det
    let adj = [
        c(1, 2, 1, 2),
        -c(0, 2, 1, 2),
        c(0, 1, 1, 2),
        -c(1, 2, 0, 2),
        c(0, 2, 0, 2),
        -c(0, 1, 0, 2),
        c(1, 2, 0, 1),
        -c(0, 2, 0, 1),
        c(0, 1, 0, 1),
    ];
    adj.iter().map(|v| v / d).collect()
}

const A3: [f64; 9] = [4.0, 1.0, 0.5, 1.0, 3.0, 1.0, 0.5, 1.0, 2.0];

/// `M Mᵀ + shift·I` with `M[i][j] = sin(i·d + j + 1)`: symmetric positive definite.
fn spd(d: usize, shift: f64) -> Vec<f64> {
    let m: Vec<f64> = (0..d * d).map(|i| ((i + 1) as f64).sin()).collect();
    let mut a = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            a[i * d + j] = (0..d).map(|k| m[i * d + k] * m[j * d + k]).sum::<f64>();
        }
        a[i * d + i] += shift;
    }
    a
}

#[test]
fn closed_forms() -> Result<()> {
    // diag(2, 3, 5): log det = ln 30.
    let d = mat(&[2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 5.0], 3);
    let v = logdet(&d)?;
    assert_eq!(v.dims(), [] as [usize; 0]);
    assert_close("diag", &[v.to_scalar::<f64>()?], &[30f64.ln()], 1e-14, 0.0);
    // [[a, b], [b, c]]: log det = ln(ac − b²) = ln(3·2 − 1.2²) = ln 4.56.
    let v = logdet(&mat(&[3.0, 1.2, 1.2, 2.0], 2))?.to_scalar::<f64>()?;
    assert_close("2x2", &[v], &[4.56f64.ln()], 1e-14, 0.0);
    // 3×3 by cofactor expansion: det A3 = 4·5 − 1·1.5 + 0.5·(−0.5) = 18.25.
    assert_close("det3", &[det3(&A3)], &[18.25], 1e-15, 0.0);
    let v = logdet(&mat(&A3, 3))?.to_scalar::<f64>()?;
    assert_close("3x3", &[v], &[18.25f64.ln()], 1e-14, 0.0);
    // 1×1: log a.
    let v = logdet(&mat(&[7.0], 1))?.to_scalar::<f64>()?;
    assert_close("1x1", &[v], &[7f64.ln()], 1e-15, 0.0);
    Ok(())
}

#[test]
fn batched_matches_closed_forms_and_single_matrices() -> Result<()> {
    let diag = [2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 5.0];
    let b = spd(3, 0.5);
    let all: Vec<f64> = diag.iter().chain(&A3).chain(&b).copied().collect();
    let a = Tensor::from_vec(all, (3, 3, 3), &Device::Cpu)?;
    let v = logdet(&a)?;
    assert_eq!(v.dims(), [3]);
    let want = [30f64.ln(), 18.25f64.ln(), det3(&b).ln()];
    assert_tensor_close("batched", &v, &want, 1e-12, 0.0);
    // f32 storage: computed in f64 inside, returned as f32.
    let v32 = logdet(&a.to_dtype(DType::F32)?)?;
    assert_eq!(v32.dtype(), DType::F32);
    assert_tensor_close("batched f32", &v32, &want, 1e-6, 1e-6);
    Ok(())
}

#[test]
fn gradient_is_the_inverse() -> Result<()> {
    // ∂ log det A / ∂A = A⁻ᵀ = A⁻¹ (A symmetric); closed-form inverse by the adjugate.
    let a = Var::from_tensor(&mat(&A3, 3))?;
    let g = logdet(a.as_tensor())?.backward()?;
    let ga = g.get(a.as_tensor()).expect("gradient");
    assert_tensor_close("grad = inv", ga, &inv3(&A3), 1e-12, 1e-14);
    assert_tensor_close("spd_inv", &spd_inv(&mat(&A3, 3))?, &inv3(&A3), 1e-12, 1e-14);

    // Batched, with upstream weights: L = Σ_n w_n log det A_n → ∂L/∂A_n = w_n A_n⁻¹.
    let b = spd(3, 0.5);
    let all: Vec<f64> = A3.iter().chain(&b).copied().collect();
    let av = Var::from_tensor(&Tensor::from_vec(all, (2, 3, 3), &Device::Cpu)?)?;
    let w = Tensor::new(&[2.0f64, -0.5], &Device::Cpu)?;
    let g = (logdet(av.as_tensor())? * &w)?.sum_all()?.backward()?;
    let ga = g.get(av.as_tensor()).expect("gradient");
    let want: Vec<f64> = inv3(&A3)
        .iter()
        .map(|v| 2.0 * v)
        .chain(inv3(&b).iter().map(|v| -0.5 * v))
        .collect();
    assert_tensor_close("batched grad", ga, &want, 1e-12, 1e-14);

    // f32 gradient.
    let a32 = Var::from_tensor(&mat(&A3, 3).to_dtype(DType::F32)?)?;
    let g = logdet(a32.as_tensor())?.backward()?;
    let ga = g.get(a32.as_tensor()).expect("f32 gradient");
    assert_eq!(ga.dtype(), DType::F32);
    assert_tensor_close("f32 grad", ga, &inv3(&A3), 1e-6, 1e-7);
    Ok(())
}

#[test]
fn gradient_matches_finite_differences() -> Result<()> {
    // Symmetric perturbation E = e_i e_jᵀ + e_j e_iᵀ (i ≠ j) or e_i e_iᵀ keeps A symmetric;
    // d/dh log det(A + hE) = ⟨G, E⟩ = G_ij + G_ji (or G_ii) with G the returned gradient.
    let d = 4;
    let a = spd(d, 4.0);
    let av = Var::from_tensor(&mat(&a, d))?;
    let grads = logdet(av.as_tensor())?.backward()?;
    let g = values(grads.get(av.as_tensor()).expect("gradient"));
    let f = |m: &[f64]| -> Result<f64> { logdet(&mat(m, d))?.to_scalar::<f64>() };
    let h = 1e-6;
    let (mut an, mut fd) = (Vec::new(), Vec::new());
    for i in 0..d {
        for j in 0..=i {
            let (mut p, mut m) = (a.clone(), a.clone());
            p[i * d + j] += h;
            m[i * d + j] -= h;
            if i != j {
                p[j * d + i] += h;
                m[j * d + i] -= h;
                an.push(g[i * d + j] + g[j * d + i]);
            } else {
                an.push(g[i * d + i]);
            }
            fd.push((f(&p)? - f(&m)?) / (2.0 * h));
        }
    }
    assert_close("finite differences", &an, &fd, 1e-6, 1e-9);
    // The gradient is symmetric.
    for i in 0..d {
        for j in 0..d {
            assert!((g[i * d + j] - g[j * d + i]).abs() < 1e-14);
        }
    }
    Ok(())
}

#[test]
fn non_spd_inputs_are_errors_not_nan() {
    let cases: [(&str, Vec<f64>, usize); 6] = [
        (
            "indefinite [[1,2],[2,1]] (det −3)",
            vec![1.0, 2.0, 2.0, 1.0],
            2,
        ),
        ("singular [[1,1],[1,1]]", vec![1.0, 1.0, 1.0, 1.0], 2),
        ("negative definite", vec![-2.0, 0.0, 0.0, -3.0], 2),
        ("zero", vec![0.0; 4], 2),
        ("NaN entry", vec![2.0, f64::NAN, f64::NAN, 2.0], 2),
        ("infinite entry", vec![f64::INFINITY, 0.0, 0.0, 1.0], 2),
    ];
    for (what, v, d) in cases {
        let r = logdet(&mat(&v, d));
        assert!(r.is_err(), "{what}: expected an error, got {r:?}");
        assert!(spd_inv(&mat(&v, d)).is_err(), "{what}: spd_inv");
    }
    // One bad matrix in a batch fails the batch, naming it.
    let mut all = A3.to_vec();
    all.extend([1.0, 2.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    let e = logdet(&Tensor::from_vec(all, (2, 3, 3), &Device::Cpu).unwrap())
        .expect_err("batch with an indefinite matrix");
    assert!(e.to_string().contains("matrix 1"), "{e}");
}

#[test]
fn non_symmetric_and_bad_shapes_are_errors() {
    // Cholesky reads one triangle only: a clearly non-symmetric matrix must not be accepted
    // silently. [[2, 1], [0.5, 3]] has det 5.5, but its lower triangle describes the SPD
    // [[2, 0.5], [0.5, 3]] (det 5.75), whose log det would be returned without the check.
    let ns = mat(&[2.0, 1.0, 0.5, 3.0], 2);
    assert!(logdet(&ns).is_err(), "non-symmetric");
    assert!(spd_inv(&ns).is_err(), "non-symmetric spd_inv");
    let dev = Device::Cpu;
    let rect = Tensor::zeros((2, 3), DType::F64, &dev).unwrap();
    assert!(logdet(&rect).is_err(), "[2, 3]");
    let rect3 = Tensor::zeros((2, 2, 3), DType::F64, &dev).unwrap();
    assert!(logdet(&rect3).is_err(), "[2, 2, 3]");
    let v = Tensor::ones(3, DType::F64, &dev).unwrap();
    assert!(logdet(&v).is_err(), "rank 1");
    let i32s = Tensor::ones((2, 2), DType::U32, &dev).unwrap();
    assert!(logdet(&i32s).is_err(), "integer dtype");
}

#[test]
fn symmetric_up_to_rounding_is_accepted() -> Result<()> {
    // A covariance built in f32 by a matrix product: XᵀX/n + ridge, symmetric up to rounding.
    let n = 64;
    let d = 8;
    let x: Vec<f32> = (0..n * d).map(|i| (0.7 * i as f32).sin()).collect();
    let x = Tensor::from_vec(x, (n, d), &Device::Cpu)?;
    let cov = ((x.t()?.matmul(&x)? / n as f64)? + Tensor::eye(d, DType::F32, &Device::Cpu)?)?;
    let v = logdet(&cov)?.to_scalar::<f32>()?;
    assert!(v.is_finite());
    Ok(())
}

/// The blocked path (d > 64 = the block size) against Gaussian elimination without pivoting
/// (valid for SPD matrices; independent of the Cholesky code), and the backward's A⁻¹ against
/// the identity A·A⁻¹ = I.
#[test]
fn blocked_factorisation_matches_elimination_for_large_matrices() {
    use candle_core::{Device, Tensor, Var};
    let mut rng = modbal_tensors::SeededRng::new(9);
    for d in [65usize, 150, 200] {
        let n = 2 * d;
        let x = rng.normal_vec(n * d, 0.0, 1.0);
        let mut a = vec![0.0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                a[i * d + j] = (0..n).map(|r| x[r * d + i] * x[r * d + j]).sum::<f64>() / n as f64
                    + if i == j { 0.5 } else { 0.0 };
            }
        }
        let mut m = a.clone();
        let mut reference = 0.0;
        for k in 0..d {
            reference += m[k * d + k].ln();
            for i in k + 1..d {
                let f = m[i * d + k] / m[k * d + k];
                for j in k..d {
                    m[i * d + j] -= f * m[k * d + j];
                }
            }
        }
        let t =
            Var::from_tensor(&Tensor::from_vec(a.clone(), (d, d), &Device::Cpu).unwrap()).unwrap();
        let ld = modbal_tensors::ops::logdet(t.as_tensor()).unwrap();
        let got = ld.to_scalar::<f64>().unwrap();
        assert!(
            (got - reference).abs() < 1e-9 * reference.abs().max(1.0),
            "d {d}: {got} vs {reference}"
        );
        let inv: Vec<f64> = ld
            .backward()
            .unwrap()
            .get(t.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for i in 0..d {
            for j in 0..d {
                let v: f64 = (0..d).map(|k| a[i * d + k] * inv[k * d + j]).sum();
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((v - e).abs() < 1e-9, "d {d}: (A A⁻¹)[{i},{j}] = {v}");
            }
        }
    }
}
