//! Differentiable special functions: digamma `ψ(x)` and the log-gamma function `lnΓ(x)`, for
//! `x > 0`, built from candle ops so that autograd differentiates them (candle 0.11 has neither
//! op; PyTorch's `torch.digamma` / `torch.lgamma` are what the evidential losses of TMC use).
//!
//! # Method
//! Both shift the argument by `N = 6` with the recurrences (exact), then evaluate the
//! asymptotic (Stirling) series at `z = x + N ≥ 6`:
//!
//! ```text
//! ψ(x)   = ψ(x + N) − Σ_{k=0}^{N−1} 1/(x + k)
//! ψ(z)   ≈ ln z − 1/(2z) − 1/(12z²) + 1/(120z⁴) − 1/(252z⁶) + 1/(240z⁸) − 1/(132z¹⁰)
//! lnΓ(x) = lnΓ(x + N) − Σ_{k=0}^{N−1} ln(x + k)
//! lnΓ(z) ≈ (z − ½) ln z − z + ½ ln 2π + 1/(12z) − 1/(360z³) + 1/(1260z⁵) − 1/(1680z⁷) + 1/(1188z⁹)
//! ```
//!
//! The first omitted terms are `691/(32760 z¹²)` and `−3617/(122400 z¹¹)`: below 2e-11 and
//! 1e-10 at `z ≥ 6`, so the results are exact to f64 rounding noise of ~1e-10 (tests compare
//! against ψ(1) = −γ, ψ(½) = −γ − 2 ln 2, lnΓ(½) = ½ ln π, integer factorials). The arithmetic
//! runs in f64 whatever the input dtype (the result is cast back), so that `lnΓ` of large
//! arguments (Dirichlet strengths in the thousands) keeps its precision in f32 models.
//!
//! Gradients are those of the formulas, i.e. `d lnΓ/dx` is the series of `ψ` (up to the same
//! truncation) and `dψ/dx` the trigamma series; tests check them against finite differences.
//!
//! # Domain
//! `x > 0` (every value): the functions return an error naming the smallest value otherwise (the
//! recurrence would silently give wrong values through the poles at 0, −1, …).

use candle_core::{DType, Result, Tensor};

/// The recurrence shift `N`.
const SHIFT: usize = 6;

/// Checks `x > 0` everywhere (NaN fails too); `what` names the function.
fn check_positive(x: &Tensor, what: &str) -> Result<()> {
    if x.elem_count() == 0 {
        return Ok(());
    }
    let min = x
        .flatten_all()?
        .to_dtype(DType::F64)?
        .min(0)?
        .to_scalar::<f64>()?;
    // The sum also catches NaN anywhere (min may skip it).
    let sum = x
        .flatten_all()?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    if min.is_nan() || min <= 0.0 || sum.is_nan() {
        candle_core::bail!("{what}: the argument must be > 0 everywhere, got a minimum of {min}");
    }
    Ok(())
}

/// Digamma `ψ(x)`, element-wise, for `x > 0`; differentiable (see the [module docs](self)).
pub fn digamma(x: &Tensor) -> Result<Tensor> {
    check_positive(x, "digamma")?;
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F64)?;
    let mut shifted = x.recip()?;
    for k in 1..SHIFT {
        shifted = (shifted + (&x + k as f64)?.recip()?)?;
    }
    let z = (&x + SHIFT as f64)?;
    let zi = z.recip()?;
    let zi2 = zi.sqr()?;
    // −zi2·(1/12 − zi2·(1/120 − zi2·(1/252 − zi2·(1/240 − zi2/132))))
    let mut poly = (&zi2 * (-1.0 / 132.0))?.affine(1.0, 1.0 / 240.0)?;
    poly = (&zi2 * &poly)?.neg()?.affine(1.0, 1.0 / 252.0)?;
    poly = (&zi2 * &poly)?.neg()?.affine(1.0, 1.0 / 120.0)?;
    poly = (&zi2 * &poly)?.neg()?.affine(1.0, 1.0 / 12.0)?;
    let tail = (&zi2 * &poly)?.neg()?;
    let asym = ((z.log()? - (zi * 0.5)?)? + tail)?;
    (asym - shifted)?.to_dtype(dtype)
}

/// `lnΓ(x)`, element-wise, for `x > 0`; differentiable (see the [module docs](self)).
pub fn lgamma(x: &Tensor) -> Result<Tensor> {
    check_positive(x, "lgamma")?;
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F64)?;
    let mut logs = x.log()?;
    for k in 1..SHIFT {
        logs = (logs + (&x + k as f64)?.log()?)?;
    }
    let z = (&x + SHIFT as f64)?;
    let zi = z.recip()?;
    let zi2 = zi.sqr()?;
    // zi·(1/12 − zi2·(1/360 − zi2·(1/1260 − zi2·(1/1680 − zi2/1188))))
    let mut poly = (&zi2 * (-1.0 / 1188.0))?.affine(1.0, 1.0 / 1680.0)?;
    poly = (&zi2 * &poly)?.neg()?.affine(1.0, 1.0 / 1260.0)?;
    poly = (&zi2 * &poly)?.neg()?.affine(1.0, 1.0 / 360.0)?;
    poly = (&zi2 * &poly)?.neg()?.affine(1.0, 1.0 / 12.0)?;
    let series = (zi * poly)?;
    let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let stirling = ((&z - 0.5)? * z.log()?)? - &z;
    let asym = ((stirling? + half_ln_2pi)? + series)?;
    (asym - logs)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
    }
    fn v(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
    }

    #[test]
    fn digamma_closed_forms() {
        // ψ(1) = −γ; ψ(n+1) = ψ(n) + 1/n; ψ(½) = −γ − 2 ln 2; ψ(3/2) = ψ(½) + 2.
        let half = -EULER_GAMMA - 2.0 * 2f64.ln();
        let mut expect = vec![-EULER_GAMMA];
        for n in 1..12 {
            expect.push(expect[n - 1] + 1.0 / n as f64);
        }
        expect.push(half);
        expect.push(half + 2.0);
        let mut x: Vec<f64> = (1..=12).map(|n| n as f64).collect();
        x.extend([0.5, 1.5]);
        let got = v(&digamma(&t(&x)).unwrap());
        for (g, e) in got.iter().zip(&expect) {
            assert!((g - e).abs() < 1e-10, "{got:?} vs {expect:?}");
        }
        // Large argument: ψ(1000) ≈ ln 1000 − 1/2000 − 1/(12·10⁶).
        let big = v(&digamma(&t(&[1000.0])).unwrap())[0];
        let e = 1000f64.ln() - 1.0 / 2000.0 - 1.0 / 12e6;
        assert!((big - e).abs() < 1e-12, "{big} vs {e}");
    }

    #[test]
    fn lgamma_closed_forms() {
        // lnΓ(n) = ln (n−1)!; lnΓ(½) = ½ ln π; lnΓ(3/2) = ln(√π/2).
        let mut x: Vec<f64> = (1..=15).map(|n| n as f64).collect();
        let mut expect: Vec<f64> = (1..=15)
            .map(|n| (1..n).map(|k| (k as f64).ln()).sum())
            .collect();
        x.extend([0.5, 1.5, 0.1]);
        expect.extend([
            0.5 * std::f64::consts::PI.ln(),
            (std::f64::consts::PI.sqrt() / 2.0).ln(),
            // lnΓ(0.1) = ln 9.513507698668732
            9.513_507_698_668_732f64.ln(),
        ]);
        let got = v(&lgamma(&t(&x)).unwrap());
        for (g, e) in got.iter().zip(&expect) {
            assert!((g - e).abs() < 1e-9, "{got:?} vs {expect:?}");
        }
    }

    /// Central finite differences of `f` at each `x` against autograd's gradient of `Σ f(x)`.
    fn grad_check(f: fn(&Tensor) -> Result<Tensor>, xs: &[f64]) {
        let var = Var::from_tensor(&t(xs)).unwrap();
        let y = f(var.as_tensor()).unwrap().sum_all().unwrap();
        let g = v(y.backward().unwrap().get(var.as_tensor()).unwrap());
        let h = 1e-5;
        for (i, &x) in xs.iter().enumerate() {
            let hi = v(&f(&t(&[x + h])).unwrap())[0];
            let lo = v(&f(&t(&[x - h])).unwrap())[0];
            let fd = (hi - lo) / (2.0 * h);
            assert!(
                (g[i] - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                "x = {x}: autograd {} vs finite difference {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let xs = [0.3, 1.0, 2.5, 7.0, 40.0];
        grad_check(digamma, &xs);
        grad_check(lgamma, &xs);
        // d lnΓ/dx = ψ(x); dψ/dx (trigamma) at 1 = π²/6.
        let var = Var::from_tensor(&t(&[1.0, 2.5])).unwrap();
        let g = lgamma(var.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = v(g.get(var.as_tensor()).unwrap());
        let psi = v(&digamma(&t(&[1.0, 2.5])).unwrap());
        assert!((d[0] - psi[0]).abs() < 1e-9 && (d[1] - psi[1]).abs() < 1e-9);
        let var = Var::from_tensor(&t(&[1.0])).unwrap();
        let g = digamma(var.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let tri = v(g.get(var.as_tensor()).unwrap())[0];
        let e = std::f64::consts::PI.powi(2) / 6.0;
        assert!((tri - e).abs() < 1e-9, "{tri} vs {e}");
    }

    #[test]
    fn f32_inputs_keep_their_dtype_and_gradients_flow() {
        let var = Var::from_tensor(&t(&[1.0, 3.0]).to_dtype(DType::F32).unwrap()).unwrap();
        let y = (digamma(var.as_tensor()).unwrap() + lgamma(var.as_tensor()).unwrap()).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(var.as_tensor()).unwrap().dtype(), DType::F32);
    }

    #[test]
    fn non_positive_arguments_are_errors() {
        for bad in [0.0, -1.5, f64::NAN] {
            let e = digamma(&t(&[1.0, bad])).unwrap_err().to_string();
            assert!(e.contains("digamma") && e.contains("> 0"), "{e}");
            let e = lgamma(&t(&[bad])).unwrap_err().to_string();
            assert!(e.contains("lgamma"), "{e}");
        }
    }
}
