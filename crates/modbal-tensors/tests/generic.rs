//! The device-generic paths of the ops (what a GPU runs), forced on the CPU with
//! `ops::force_generic(true)`, against the fast CPU kernels: forward values and the gradients of
//! every operand of `L = Σ out ⊙ r` (fixed pseudo-random `r`), on odd shapes (non-square and
//! 1-wide planes, stride 2, padding, dilation 2, batch 1 and 3), f32 and f64, and max-pool ties
//! and NaN routed to the same cell. Each comparison also checks which path ran (the generic-path
//! counter moves on the generic run only).

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{formula, values};
use modbal_tensors::ops::{
    self, add_relu, batch_norm_train, conv2d, conv2d_bias, conv2d_bias_relu, conv2d_relu,
    force_generic, generic_forced, generic_path_count, global_avg_pool, linear, logdet, max_pool2d,
    spd_inv, ConvGeometry,
};

/// Pseudo-random values in (−1, 1), fixed by `seed`.
fn rnd(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    formula(shape, dtype, |i| {
        let t = ((i as f64 + 1.0) * 12.9898 + seed as f64 * 78.233).sin() * 43_758.545_3;
        2.0 * (t - t.floor()) - 1.0
    })
}

/// Outputs and operand gradients of one run, and how many generic dispatches it made.
struct Run {
    outs: Vec<Vec<f64>>,
    grads: Vec<Option<Vec<f64>>>,
    generic_calls: u64,
}

type OpFn<'a> = &'a dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>;

/// Runs `f` on fresh copies of `inputs` (tracked where the flag says so) with the generic paths
/// forced on or off, and back-propagates `Σ_k Σ out_k ⊙ r_k`.
fn run(generic: bool, inputs: &[(Tensor, bool)], f: OpFn) -> Result<Run> {
    let _guard = force_generic(generic);
    let mut vars = Vec::new();
    let mut ts = Vec::new();
    for (t, track) in inputs {
        if *track {
            let v = Var::from_tensor(t)?;
            ts.push(v.as_tensor().clone());
            vars.push(Some(v));
        } else {
            ts.push(t.clone());
            vars.push(None);
        }
    }
    let before = generic_path_count();
    let outs = f(&ts)?;
    let generic_calls = generic_path_count() - before;
    let mut loss: Option<Tensor> = None;
    for (k, o) in outs.iter().enumerate() {
        let r = rnd(o.dims(), o.dtype(), 1000 + k as u64);
        let term = (o * r)?.sum_all()?;
        loss = Some(match loss {
            Some(l) => (l + term)?,
            None => term,
        });
    }
    let gs = loss.expect("at least one output").backward()?;
    let grads = vars
        .iter()
        .map(|v| v.as_ref().and_then(|v| gs.get(v.as_tensor())).map(values))
        .collect();
    Ok(Run {
        outs: outs.iter().map(values).collect(),
        grads,
        generic_calls,
    })
}

/// Largest absolute difference and the same relative to the largest reference magnitude.
fn diff(got: &[f64], want: &[f64]) -> (f64, f64) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let abs = got.iter().zip(want).fold(0.0f64, |m, (g, w)| {
        if g.is_nan() && w.is_nan() {
            m
        } else {
            m.max((g - w).abs())
        }
    });
    (abs, if scale > 0.0 { abs / scale } else { abs })
}

/// Relative tolerance (to the largest magnitude of the compared array) for a dtype.
fn tol(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        1e-10
    } else {
        1e-4
    }
}

/// Compares the generic path with the fast CPU path; returns the largest relative difference.
#[track_caller]
fn check(what: &str, inputs: &[(Tensor, bool)], f: OpFn) -> Result<f64> {
    let dtype = inputs[0].0.dtype();
    let fast = run(false, inputs, f)?;
    let generic = run(true, inputs, f)?;
    assert_eq!(
        fast.generic_calls, 0,
        "{what}: the fast run took a generic path"
    );
    assert!(
        generic.generic_calls > 0,
        "{what}: the forced run did not take the generic path"
    );
    let mut worst: f64 = 0.0;
    let mut cmp = |part: String, got: &[f64], want: &[f64]| {
        assert_eq!(got.len(), want.len(), "{what} {part}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                g.is_nan(),
                w.is_nan(),
                "{what} {part}[{i}]: generic {g}, fast {w}"
            );
        }
        let (abs, rel) = diff(got, want);
        assert!(
            rel <= tol(dtype),
            "{what} {part}: generic differs from fast by {abs:e} (relative {rel:e})"
        );
        worst = worst.max(rel);
    };
    for (k, (g, w)) in generic.outs.iter().zip(&fast.outs).enumerate() {
        cmp(format!("output {k}"), g, w);
    }
    for (k, (g, w)) in generic.grads.iter().zip(&fast.grads).enumerate() {
        match (g, w) {
            (Some(g), Some(w)) => cmp(format!("gradient of operand {k}"), g, w),
            (None, None) => {}
            _ => panic!(
                "{what}: operand {k} has a gradient on one path only (generic {}, fast {})",
                g.is_some(),
                w.is_some()
            ),
        }
    }
    Ok(worst)
}

/// `[B, C, H, W]`, `[O, kh, kw]`, stride, padding, dilation.
type ConvCase = (
    [usize; 4],
    [usize; 3],
    (usize, usize),
    (usize, usize),
    (usize, usize),
);

const CONV_CASES: &[ConvCase] = &[
    ([1, 2, 9, 7], [3, 3, 3], (1, 1), (0, 0), (1, 1)),
    ([3, 2, 9, 7], [4, 3, 3], (2, 2), (1, 1), (1, 1)),
    // The 257×188 parity situation (odd × even with stride 2) at a small size.
    ([2, 3, 13, 10], [2, 3, 3], (2, 2), (1, 1), (1, 1)),
    ([3, 2, 13, 10], [2, 7, 7], (2, 2), (3, 3), (1, 1)),
    ([2, 3, 11, 12], [4, 3, 3], (1, 1), (2, 2), (2, 2)),
    ([1, 2, 13, 10], [3, 3, 2], (2, 1), (1, 0), (2, 1)),
    ([3, 3, 9, 7], [4, 1, 1], (2, 2), (0, 0), (1, 1)),
    // 1-wide planes.
    ([3, 1, 1, 7], [2, 1, 3], (1, 2), (0, 1), (1, 2)),
    ([1, 2, 8, 1], [2, 3, 1], (2, 1), (1, 0), (2, 1)),
    // The kernel covers the whole (padded) input.
    ([1, 1, 5, 4], [2, 5, 4], (1, 1), (0, 0), (1, 1)),
    ([3, 2, 6, 5], [3, 3, 3], (3, 2), (2, 1), (2, 1)),
];

#[test]
fn conv2d_variants_match_the_fast_path() -> Result<()> {
    let mut worst = [0.0f64; 2];
    for (n, &(xd, [o, kh, kw], stride, padding, dilation)) in CONV_CASES.iter().enumerate() {
        let g = ConvGeometry {
            stride,
            padding,
            dilation,
        };
        for (di, dtype) in [DType::F64, DType::F32].into_iter().enumerate() {
            let seed = 10 * n as u64;
            let x = rnd(&xd, dtype, seed);
            let w = rnd(&[o, xd[1], kh, kw], dtype, seed + 1);
            let b = rnd(&[o], dtype, seed + 2);
            let what = format!("conv {xd:?} w[{o},{kh},{kw}] {g:?} {dtype:?}");
            let two = [(x.clone(), true), (w.clone(), true)];
            let three = [(x.clone(), true), (w.clone(), true), (b.clone(), true)];
            let rel = [
                check(&format!("{what} conv2d"), &two, &|t| {
                    Ok(vec![conv2d(&t[0], &t[1], g)?])
                })?,
                check(&format!("{what} conv2d_relu"), &two, &|t| {
                    Ok(vec![conv2d_relu(&t[0], &t[1], g)?])
                })?,
                check(&format!("{what} conv2d_bias"), &three, &|t| {
                    Ok(vec![conv2d_bias(&t[0], &t[1], &t[2], g)?])
                })?,
                check(&format!("{what} conv2d_bias_relu"), &three, &|t| {
                    Ok(vec![conv2d_bias_relu(&t[0], &t[1], &t[2], g)?])
                })?,
                // An untracked input (a network's first layer): gradients of w and b only.
                check(
                    &format!("{what} untracked input"),
                    &[(x, false), (w, true), (b, true)],
                    &|t| Ok(vec![conv2d_bias(&t[0], &t[1], &t[2], g)?]),
                )?,
            ];
            worst[di] = rel.into_iter().fold(worst[di], f64::max);
        }
    }
    eprintln!(
        "conv2d generic vs fast: max relative difference f64 {:.2e}, f32 {:.2e}",
        worst[0], worst[1]
    );
    Ok(())
}

/// The generic convolution's gradients are those of the definition, not only of the fast
/// kernel: a 1×1 input with a 3×3 kernel and padding 1 has `∂x = Σ_o gy·w[o, c, 1, 1]` (the
/// centre tap) and `∂w[o, c, 1, 1] = gy·x`, other taps 0.
#[test]
fn conv2d_generic_gradient_on_a_single_pixel() -> Result<()> {
    let _g = force_generic(true);
    let x = Var::from_tensor(&Tensor::new(&[[[[2.0f64]], [[-3.0]]]], &Device::Cpu)?)?;
    let w = Var::from_tensor(&rnd(&[2, 2, 3, 3], DType::F64, 5))?;
    let g = ConvGeometry {
        padding: (1, 1),
        ..Default::default()
    };
    let y = conv2d(x.as_tensor(), w.as_tensor(), g)?;
    assert_eq!(y.dims(), [1, 2, 1, 1]);
    let gy = [0.5, -1.5];
    let loss = (y.flatten_all()? * Tensor::new(&gy, &Device::Cpu)?)?.sum_all()?;
    let grads = loss.backward()?;
    let wv = values(w.as_tensor());
    let gx = values(grads.get(x.as_tensor()).expect("x gradient"));
    for (c, got) in gx.iter().enumerate() {
        let want: f64 = (0..2).map(|o| gy[o] * wv[(o * 2 + c) * 9 + 4]).sum();
        assert!((got - want).abs() < 1e-14, "dx[{c}] {got} vs {want}");
    }
    let gw = values(grads.get(w.as_tensor()).expect("w gradient"));
    for (i, got) in gw.iter().enumerate() {
        let (o, c, tap) = (i / 18, (i / 9) % 2, i % 9);
        let want = if tap == 4 {
            gy[o] * [2.0, -3.0][c]
        } else {
            0.0
        };
        assert!((got - want).abs() < 1e-14, "dw[{i}] {got} vs {want}");
    }
    Ok(())
}

#[test]
fn max_pool_matches_the_fast_path() -> Result<()> {
    let cases: &[([usize; 4], usize, usize, usize)] = &[
        ([1, 1, 9, 7], 3, 2, 1),
        ([3, 2, 13, 10], 3, 2, 1),
        ([3, 2, 9, 7], 3, 1, 1),
        ([1, 2, 8, 6], 2, 2, 0),
        ([2, 1, 7, 9], 4, 3, 2),
        ([3, 1, 1, 7], 1, 1, 0),
        ([1, 2, 6, 1], 2, 1, 1),
        ([2, 2, 5, 5], 5, 1, 2),
    ];
    let mut worst = [0.0f64; 2];
    for (n, &(d, k, s, p)) in cases.iter().enumerate() {
        for (di, dtype) in [DType::F64, DType::F32].into_iter().enumerate() {
            let x = rnd(&d, dtype, 50 + n as u64);
            let what = format!("max_pool2d {d:?} k{k} s{s} p{p} {dtype:?}");
            let rel = check(&what, &[(x, true)], &|t| {
                Ok(vec![max_pool2d(&t[0], k, s, p)?])
            })?;
            worst[di] = worst[di].max(rel);
        }
    }
    eprintln!(
        "max_pool2d generic vs fast: max relative difference f64 {:.2e}, f32 {:.2e}",
        worst[0], worst[1]
    );
    Ok(())
}

/// An input pattern: flat index → value.
type Pattern = dyn Fn(usize) -> f64;

/// Constant regions (every window full of ties), negative constants next to the padding, −∞
/// inputs tying with the padding, and NaN: values and the cell that receives each gradient are
/// the fast kernel's (first arg-max in row-major window order, padding never, the first NaN).
#[test]
fn max_pool_ties_nan_and_infinities_route_like_the_fast_path() -> Result<()> {
    let d = [2, 2, 9, 7];
    let inputs: Vec<(&str, Box<Pattern>)> = vec![
        ("constant", Box::new(|_| 1.5)),
        ("negative constant", Box::new(|_| -4.0)),
        ("plateaus", Box::new(|i| ((i / 5) % 3) as f64)),
        ("row plateaus", Box::new(|i| ((i / 7) % 2) as f64 - 1.0)),
        (
            "minus infinity",
            Box::new(|i| if i % 4 == 0 { 0.5 } else { f64::NEG_INFINITY }),
        ),
        ("all minus infinity", Box::new(|_| f64::NEG_INFINITY)),
        (
            "NaN",
            Box::new(|i| {
                if i % 11 == 3 || i % 13 == 0 {
                    f64::NAN
                } else {
                    (i % 4) as f64
                }
            }),
        ),
    ];
    for (name, f) in &inputs {
        for dtype in [DType::F64, DType::F32] {
            for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1), (2, 1, 1)] {
                let x = formula(&d, dtype, f);
                let what = format!("max_pool2d {name} k{k} s{s} p{p} {dtype:?}");
                check(&what, &[(x, true)], &|t| {
                    Ok(vec![max_pool2d(&t[0], k, s, p)?])
                })?;
            }
        }
    }
    Ok(())
}

#[test]
fn fused_ops_fallbacks_match_the_fast_path() -> Result<()> {
    let mut worst = [0.0f64; 2];
    for (di, dtype) in [DType::F64, DType::F32].into_iter().enumerate() {
        let mut rel = Vec::new();
        for (n, xd) in [vec![3usize, 2, 4, 5], vec![6, 3], vec![1, 3, 1, 7]]
            .into_iter()
            .enumerate()
        {
            let c = xd[1];
            let x = rnd(&xd, dtype, 200 + n as u64);
            let w = (rnd(&[c], dtype, 210 + n as u64) + 1.5)?;
            let b = rnd(&[c], dtype, 220 + n as u64);
            for relu in [false, true] {
                let what = format!("batch_norm_train {xd:?} relu {relu} {dtype:?}");
                let inputs = [(x.clone(), true), (w.clone(), true), (b.clone(), true)];
                rel.push(check(&what, &inputs, &|t| {
                    let (y, mean, var) = batch_norm_train(&t[0], &t[1], &t[2], 1e-5, relu)?;
                    Ok(vec![y, mean, var])
                })?);
            }
        }
        for xd in [vec![3usize, 2, 9, 7], vec![1, 3, 1, 1]] {
            let x = rnd(&xd, dtype, 230);
            rel.push(check(
                &format!("global_avg_pool {xd:?} {dtype:?}"),
                &[(x, true)],
                &|t| Ok(vec![global_avg_pool(&t[0])?]),
            )?);
            let (a, b) = (rnd(&xd, dtype, 240), rnd(&xd, dtype, 241));
            rel.push(check(
                &format!("add_relu {xd:?} {dtype:?}"),
                &[(a, true), (b, true)],
                &|t| Ok(vec![add_relu(&t[0], &t[1])?]),
            )?);
        }
        for (n, k, o) in [(5usize, 4usize, 3usize), (1, 7, 1)] {
            let x = rnd(&[n, k], dtype, 250);
            let w = rnd(&[o, k], dtype, 251);
            let b = rnd(&[o], dtype, 252);
            for relu in [false, true] {
                let what = format!("linear [{n},{k}]x[{o},{k}] relu {relu} {dtype:?}");
                rel.push(check(
                    &what,
                    &[(x.clone(), true), (w.clone(), true), (b.clone(), true)],
                    &|t| Ok(vec![linear(&t[0], &t[1], Some(&t[2]), relu)?]),
                )?);
                rel.push(check(
                    &format!("{what} no bias, untracked input"),
                    &[(x.clone(), false), (w.clone(), true)],
                    &|t| Ok(vec![linear(&t[0], &t[1], None, relu)?]),
                )?);
            }
        }
        let logits = (rnd(&[7, 4], dtype, 260) * 3.0)?;
        let labels = Tensor::new(&[0u32, 3, 1, 1, 2, 0, 3], &Device::Cpu)?;
        rel.push(check(
            &format!("cross_entropy {dtype:?}"),
            &[(logits, true), (labels, false)],
            &|t| Ok(vec![modbal_tensors::cross_entropy(&t[0], &t[1])?]),
        )?);
        worst[di] = rel.into_iter().fold(0.0, f64::max);
    }
    eprintln!(
        "batch norm / avg pool / add_relu / linear / cross-entropy generic vs fast: max relative \
         difference f64 {:.2e}, f32 {:.2e}",
        worst[0], worst[1]
    );
    Ok(())
}

/// Symmetric positive-definite `[n, d, d]` matrices `M Mᵀ + d·I`.
fn spd(n: usize, d: usize, dtype: DType, seed: u64) -> Result<Tensor> {
    let m = rnd(&[n, d, d], DType::F64, seed);
    let a = m.matmul(&m.transpose(1, 2)?)?;
    let eye = Tensor::eye(d, DType::F64, &Device::Cpu)?.unsqueeze(0)?;
    (a.broadcast_add(&(eye * d as f64)?))?.to_dtype(dtype)
}

#[test]
fn logdet_and_spd_inv_match_the_fast_path() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        for (n, d) in [(1usize, 1usize), (3, 4), (2, 9)] {
            let a = spd(n, d, dtype, 300 + d as u64)?;
            let what = format!("[{n}, {d}, {d}] {dtype:?}");
            check(&format!("logdet {what}"), &[(a.clone(), true)], &|t| {
                Ok(vec![logdet(&t[0])?])
            })?;
            let a2 = a.get(0)?;
            check(&format!("logdet 2-D {what}"), &[(a2, true)], &|t| {
                Ok(vec![logdet(&t[0])?])
            })?;
            // spd_inv has no gradient: compare values only (an untracked operand).
            check(&format!("spd_inv {what}"), &[(a, false)], &|t| {
                Ok(vec![spd_inv(&t[0])?])
            })?;
        }
    }
    Ok(())
}

#[test]
fn force_switch_selects_the_path_per_thread() -> Result<()> {
    let x = rnd(&[1, 1, 5, 4], DType::F32, 1);
    let w = rnd(&[1, 1, 3, 3], DType::F32, 2);
    let g = ConvGeometry::default();
    let count_of = |f: &dyn Fn() -> Result<Tensor>| -> Result<u64> {
        let before = generic_path_count();
        f()?;
        Ok(generic_path_count() - before)
    };
    {
        let _off = force_generic(false);
        assert!(!generic_forced());
        assert_eq!(count_of(&|| conv2d(&x, &w, g))?, 0);
        {
            let _on = force_generic(true);
            assert!(generic_forced());
            assert_eq!(count_of(&|| conv2d(&x, &w, g))?, 1);
            assert_eq!(count_of(&|| max_pool2d(&x, 2, 2, 0))?, 1);
            assert_eq!(
                ops::softmax_cross_entropy(
                    &x.reshape((5, 4))?,
                    &Tensor::new(&[0u32, 1, 2, 3, 0], &Device::Cpu)?
                )?
                .map(|_| ()),
                None,
                "the fused cross-entropy declines when forced (its caller composes)"
            );
            // Another thread keeps its own setting.
            let other = std::thread::spawn(|| {
                let _off = force_generic(false);
                generic_forced()
            })
            .join()
            .expect("thread");
            assert!(!other);
            assert!(generic_forced());
        }
        // The inner guard restored the outer setting.
        assert!(!generic_forced());
        assert_eq!(count_of(&|| conv2d(&x, &w, g))?, 0);
        // Integer dtypes have no fast kernel: the generic path (candle's error, not ours).
        assert!(ops::use_fast_cpu(&[&x]));
        assert!(!ops::use_fast_cpu(&[&x.to_dtype(DType::U32)?]));
        assert!(!ops::use_fast_cpu(&[&x, &x.to_dtype(DType::F64)?]));
    }
    Ok(())
}

/// `MODBAL_GENERIC_OPS=1` makes the generic paths the process default: this test re-runs itself
/// in a child process with the variable set, and the child checks the default.
#[test]
fn env_var_sets_the_process_default() {
    const CHILD: &str = "MODBAL_GENERIC_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        assert!(
            generic_forced(),
            "MODBAL_GENERIC_OPS=1 did not force the generic paths"
        );
        let x = rnd(&[1, 1, 4, 4], DType::F64, 3);
        let before = generic_path_count();
        max_pool2d(&x, 2, 2, 0).expect("max pool");
        assert_eq!(generic_path_count() - before, 1);
        let _off = force_generic(false);
        assert!(!generic_forced(), "a thread override beats the variable");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "env_var_sets_the_process_default", "--nocapture"])
        .env(CHILD, "1")
        .env(ops::GENERIC_OPS_ENV, "1")
        .output()
        .expect("running the child");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}
