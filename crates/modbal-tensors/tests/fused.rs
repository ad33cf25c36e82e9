//! The fused training ops against closed forms and central finite differences: batch norm in
//! training mode followed by ReLU, the global average pool, the residual `relu(a + b)`, the
//! max-pool backward reusing its forward's arg-max, the in-place SGD state, the fused linear
//! (+ ReLU) layer and the fused softmax cross-entropy.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, formula, values};
use modbal_tensors::ops::{add_relu, global_avg_pool, linear, max_pool2d};
use modbal_tensors::{
    cross_entropy, cross_entropy_unfused, BatchNorm2d, Linear, Optimizer, Sgd, SgdConfig,
};

/// Central differences of `loss` at `v` for every `every`-th entry.
fn finite_diff(
    v: &[f64],
    dims: &[usize],
    every: usize,
    loss: impl Fn(&Tensor) -> Result<f64>,
) -> Result<Vec<(usize, f64)>> {
    let h = 1e-6;
    let mut out = Vec::new();
    for i in (0..v.len()).step_by(every) {
        let (mut p, mut m) = (v.to_vec(), v.to_vec());
        p[i] += h;
        m[i] -= h;
        let lp = loss(&Tensor::from_slice(&p, dims, &Device::Cpu)?)?;
        let lm = loss(&Tensor::from_slice(&m, dims, &Device::Cpu)?)?;
        out.push((i, (lp - lm) / (2.0 * h)));
    }
    Ok(out)
}

/// BN (training mode) + ReLU: forward equals `relu(forward_t)`, the gradients of
/// `L = Σ relu(BN(x))·r` for x, weight and bias equal central finite differences (the batch
/// statistics depend on x), and the running statistics are updated as by `forward_t`.
#[test]
fn batch_norm_relu_matches_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    for xdims in [vec![3usize, 2, 4, 5], vec![6, 3]] {
        let c = xdims[1];
        let make = || -> Result<(BatchNorm2d, Var, Var)> {
            let w = Var::from_tensor(&formula(&[c], DType::F64, |i| 0.5 + 0.5 * i as f64))?;
            let b = Var::from_tensor(&formula(&[c], DType::F64, |i| 0.1 - 0.2 * i as f64))?;
            let bn = BatchNorm2d {
                weight: w.as_tensor().clone(),
                bias: b.as_tensor().clone(),
                running_mean: Var::zeros(c, DType::F64, &dev)?,
                running_var: Var::ones(c, DType::F64, &dev)?,
                momentum: 0.1,
                eps: 1e-5,
            };
            Ok((bn, w, b))
        };
        let xv: Vec<f64> = (0..xdims.iter().product::<usize>())
            .map(|i| (0.7 * i as f64).sin() + 0.05 * i as f64)
            .collect();
        let x = Var::from_tensor(&Tensor::from_slice(&xv, xdims.as_slice(), &dev)?)?;
        let (bn, w, b) = make()?;
        let y = bn.forward_relu_t(x.as_tensor(), true)?;
        let (bn2, _, _) = make()?;
        let y_plain = bn2.forward_t(x.as_tensor(), true)?.relu()?;
        assert_close(
            "bn relu forward",
            &values(&y),
            &values(&y_plain),
            1e-14,
            1e-14,
        );
        assert_close(
            "running mean",
            &values(bn.running_mean.as_tensor()),
            &values(bn2.running_mean.as_tensor()),
            1e-15,
            1e-15,
        );
        assert!(values(&y).contains(&0.0), "some units inactive");
        let r = formula(y.dims(), DType::F64, |i| (0.3 * i as f64).cos());
        let grads = (&y * &r)?.sum_all()?.backward()?;
        let loss_x = |xt: &Tensor| -> Result<f64> {
            let (bn, _, _) = make()?;
            (bn.forward_relu_t(xt, true)? * &r)?
                .sum_all()?
                .to_scalar::<f64>()
        };
        let gx = values(grads.get(x.as_tensor()).expect("x grad"));
        for (i, fd) in finite_diff(&xv, &xdims, 1, loss_x)? {
            assert_close(&format!("bn relu dx[{i}]"), &[gx[i]], &[fd], 1e-6, 1e-7);
        }
        for (what, var, is_weight) in [("weight", &w, true), ("bias", &b, false)] {
            let g = values(grads.get(var.as_tensor()).expect("param grad"));
            let pv = values(var.as_tensor());
            let loss_p = |pt: &Tensor| -> Result<f64> {
                let (mut bn, _, _) = make()?;
                if is_weight {
                    bn.weight = pt.clone();
                } else {
                    bn.bias = pt.clone();
                }
                (bn.forward_relu_t(x.as_tensor(), true)? * &r)?
                    .sum_all()?
                    .to_scalar::<f64>()
            };
            for (i, fd) in finite_diff(&pv, &[c], 1, loss_p)? {
                assert_close(&format!("bn relu d{what}[{i}]"), &[g[i]], &[fd], 1e-6, 1e-7);
            }
        }
    }
    Ok(())
}

/// Global average pool: plane means (closed form) and gradient `r/(H·W)` everywhere.
#[test]
fn global_avg_pool_forward_and_gradient() -> Result<()> {
    let xdims = [2usize, 3, 4, 5];
    let x = Var::from_tensor(&formula(&xdims, DType::F64, |i| (0.37 * i as f64).sin()))?;
    let y = global_avg_pool(x.as_tensor())?;
    assert_eq!(y.dims(), [2, 3]);
    let xv = values(x.as_tensor());
    let want: Vec<f64> = xv
        .chunks(20)
        .map(|p| p.iter().sum::<f64>() / 20.0)
        .collect();
    assert_close("gap forward", &values(&y), &want, 1e-14, 1e-14);
    let r = formula(&[2, 3], DType::F64, |i| i as f64 - 2.5);
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let rv = values(&r);
    let want_g: Vec<f64> = (0..120).map(|i| rv[i / 20] / 20.0).collect();
    assert_close(
        "gap grad",
        &values(grads.get(x.as_tensor()).unwrap()),
        &want_g,
        1e-15,
        1e-15,
    );
    Ok(())
}

/// `relu(a + b)`: forward closed form, gradient `r·[a + b > 0]` to both operands; an untracked
/// operand gets none.
#[test]
fn add_relu_forward_and_gradients() -> Result<()> {
    let d = [2usize, 3, 4, 4];
    let a = Var::from_tensor(&formula(&d, DType::F64, |i| (0.37 * i as f64).sin()))?;
    let bt = formula(&d, DType::F64, |i| 0.6 * (0.21 * i as f64).cos());
    let y = add_relu(a.as_tensor(), &bt)?;
    let s: Vec<f64> = values(a.as_tensor())
        .iter()
        .zip(values(&bt))
        .map(|(u, v)| u + v)
        .collect();
    let want: Vec<f64> = s.iter().map(|&v| v.max(0.0)).collect();
    assert_close("add_relu forward", &values(&y), &want, 0.0, 0.0);
    let r = formula(&d, DType::F64, |i| (0.11 * i as f64).cos());
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let want_g: Vec<f64> = s
        .iter()
        .zip(values(&r))
        .map(|(&v, rv)| if v > 0.0 { rv } else { 0.0 })
        .collect();
    assert_close(
        "add_relu grad",
        &values(grads.get(a.as_tensor()).unwrap()),
        &want_g,
        0.0,
        0.0,
    );
    assert!(grads.get(&bt).is_none());
    assert!(add_relu(a.as_tensor(), &bt.narrow(3, 0, 2)?).is_err());
    Ok(())
}

/// Two backward passes over one max-pool graph give the same gradient (the second finds the
/// forward's arg-max again), equal to the direct routing of r to each window's maximum.
#[test]
fn max_pool_backward_twice() -> Result<()> {
    let x = Var::from_tensor(&formula(&[1, 2, 4, 6], DType::F64, |i| {
        ((i * 7) % 11) as f64
    }))?;
    let y = max_pool2d(x.as_tensor(), 2, 2, 0)?;
    let r = formula(y.dims(), DType::F64, |i| 1.0 + i as f64);
    let g1 = values(
        (&y * &r)?
            .sum_all()?
            .backward()?
            .get(x.as_tensor())
            .unwrap(),
    );
    let g2 = values(
        (&y * &r)?
            .sum_all()?
            .backward()?
            .get(x.as_tensor())
            .unwrap(),
    );
    assert_close("second backward", &g2, &g1, 0.0, 0.0);
    // Direct: each 2×2 window sends its r to its first maximum.
    let xv = values(x.as_tensor());
    let rv = values(&r);
    let mut want = vec![0.0; xv.len()];
    for c in 0..2 {
        for oy in 0..2 {
            for ox in 0..3 {
                let mut best = (f64::NEG_INFINITY, 0);
                for ky in 0..2 {
                    for kx in 0..2 {
                        let i = c * 24 + (2 * oy + ky) * 6 + 2 * ox + kx;
                        if xv[i] > best.0 {
                            best = (xv[i], i);
                        }
                    }
                }
                want[best.1] += rv[c * 6 + oy * 3 + ox];
            }
        }
    }
    assert_close("max-pool grad", &g1, &want, 0.0, 0.0);
    Ok(())
}

/// The SGD momentum buffers are updated in place: a state taken earlier must not change with
/// later steps, and a loaded state must not be changed by the optimizer.
#[test]
fn sgd_state_snapshots_are_independent() -> Result<()> {
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 3.0], &dev)?)?;
    let mut opt = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::default());
    let step = |opt: &mut Sgd| -> Result<()> {
        let loss = w.as_tensor().sqr()?.sum_all()?;
        opt.step(&loss.backward()?)
    };
    step(&mut opt)?;
    let st = opt.state();
    let before = values(&st.tensors["w.momentum_buffer"]);
    step(&mut opt)?;
    assert_close(
        "state after a later step",
        &values(&st.tensors["w.momentum_buffer"]),
        &before,
        0.0,
        0.0,
    );
    let mut opt2 = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::default());
    opt2.load_state(&st)?;
    step(&mut opt2)?;
    assert_close(
        "loaded state after a step",
        &values(&st.tensors["w.momentum_buffer"]),
        &before,
        0.0,
        0.0,
    );
    Ok(())
}

/// `relu?(x wᵀ + b)` from candle's own differentiable ops (the reference of the fused op).
fn linear_unfused(x: &Tensor, w: &Tensor, b: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// Fused linear (with/without bias, with/without ReLU, f32 and f64, a small product and one
/// large enough for the multi-threaded gemm path): the forward and the gradients of
/// `L = Σ y·r` for x, w and b equal candle's composition `matmul + broadcast_add + relu`.
#[test]
fn linear_matches_the_unfused_composition() -> Result<()> {
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-12)] {
        for (n, k, o) in [(7usize, 5usize, 4usize), (96, 48, 40)] {
            for relu in [false, true] {
                for with_bias in [false, true] {
                    let what = format!("{dtype:?} {n}x{k}x{o} relu={relu} bias={with_bias}");
                    let x =
                        Var::from_tensor(&formula(&[n, k], dtype, |i| (0.37 * i as f64).sin()))?;
                    let w = Var::from_tensor(&formula(&[o, k], dtype, |i| {
                        0.3 * (0.11 * i as f64 + 0.5).cos()
                    }))?;
                    let b = Var::from_tensor(&formula(&[o], dtype, |i| 0.05 * i as f64 - 0.1))?;
                    let bias = with_bias.then(|| b.as_tensor());
                    let r = formula(&[n, o], dtype, |i| (0.23 * i as f64).cos());
                    let y = linear(x.as_tensor(), w.as_tensor(), bias, relu)?;
                    let y_ref = linear_unfused(x.as_tensor(), w.as_tensor(), bias, relu)?;
                    assert_eq!(y.dims(), &[n, o]);
                    let scale = |v: &[f64]| v.iter().fold(1.0f64, |m, a| m.max(a.abs()));
                    let want = values(&y_ref);
                    let atol = tol * scale(&want);
                    assert_close(&format!("{what} forward"), &values(&y), &want, tol, atol);
                    if relu {
                        assert!(values(&y).contains(&0.0), "{what}: some units inactive");
                    }
                    let g = (&y * &r)?.sum_all()?.backward()?;
                    let g_ref = (&y_ref * &r)?.sum_all()?.backward()?;
                    let mut vars = vec![("x", &x), ("w", &w)];
                    if with_bias {
                        vars.push(("b", &b));
                    } else {
                        assert!(g.get(b.as_tensor()).is_none(), "{what}: unused bias");
                    }
                    for (name, v) in vars {
                        let got = values(g.get(v.as_tensor()).expect("fused gradient"));
                        let want = values(g_ref.get(v.as_tensor()).expect("reference gradient"));
                        let atol = tol * scale(&want);
                        assert_close(&format!("{what} d{name}"), &got, &want, tol, atol);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Fused linear + ReLU (f64): gradients for x, w and b equal central finite differences of
/// `L = Σ relu(x wᵀ + b)·r`.
#[test]
fn linear_relu_matches_finite_differences() -> Result<()> {
    let (n, k, o) = (6usize, 5usize, 4usize);
    let xv: Vec<f64> = (0..n * k).map(|i| (0.37 * i as f64).sin()).collect();
    let wv: Vec<f64> = (0..o * k)
        .map(|i| 0.3 * (0.11 * i as f64 + 0.5).cos())
        .collect();
    let bv: Vec<f64> = (0..o).map(|i| 0.05 * i as f64 - 0.1).collect();
    let dev = Device::Cpu;
    let r = formula(&[n, o], DType::F64, |i| (0.23 * i as f64).cos());
    let x = Var::from_tensor(&Tensor::from_slice(&xv, (n, k), &dev)?)?;
    let w = Var::from_tensor(&Tensor::from_slice(&wv, (o, k), &dev)?)?;
    let b = Var::from_tensor(&Tensor::from_slice(&bv, o, &dev)?)?;
    let y = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), true)?;
    assert!(values(&y).contains(&0.0), "some units inactive");
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<f64> {
        (linear(x, w, Some(b), true)? * &r)?
            .sum_all()?
            .to_scalar::<f64>()
    };
    let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
    let checks = [
        ("x", &x, finite_diff(&xv, &[n, k], 1, |t| loss(t, wt, bt))?),
        ("w", &w, finite_diff(&wv, &[o, k], 1, |t| loss(xt, t, bt))?),
        ("b", &b, finite_diff(&bv, &[o], 1, |t| loss(xt, wt, t))?),
    ];
    for (name, v, fd) in checks {
        let g = values(grads.get(v.as_tensor()).expect("gradient"));
        for (i, want) in fd {
            assert!(
                (g[i] - want).abs() <= 1e-6,
                "d{name}[{i}]: {} vs finite difference {want}",
                g[i]
            );
        }
    }
    Ok(())
}

/// An untracked input (a network's input) gets no gradient; the weights still do. The layer's
/// `forward_relu` equals `forward(..).relu()` also for inputs of rank 3.
#[test]
fn linear_layer_untracked_input_and_rank3() -> Result<()> {
    let w = Var::from_tensor(&formula(&[3, 4], DType::F32, |i| 0.1 * i as f64 - 0.5))?;
    let b = Var::from_tensor(&formula(&[3], DType::F32, |i| 0.2 * i as f64 - 0.2))?;
    let layer = Linear {
        weight: w.as_tensor().clone(),
        bias: Some(b.as_tensor().clone()),
    };
    let x = formula(&[2, 5, 4], DType::F32, |i| (0.4 * i as f64).sin());
    let y = layer.forward_relu(&x)?;
    assert_eq!(y.dims(), &[2, 5, 3]);
    let y_ref = layer.forward(&x)?.relu()?;
    assert_close(
        "rank-3 forward_relu",
        &values(&y),
        &values(&y_ref),
        0.0,
        0.0,
    );
    let grads = y.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none(), "untracked input got a gradient");
    for v in [&w, &b] {
        let g = values(grads.get(v.as_tensor()).expect("weight gradient"));
        assert!(g.iter().any(|&a| a != 0.0), "non-zero weight gradient");
    }
    Ok(())
}

/// Fused mean cross-entropy (f32 and f64, u32 and i64 labels) equals the unfused composition,
/// and its gradient equals the closed form `(softmax(z) − onehot(y))/N` and the composition's.
#[test]
fn softmax_cross_entropy_matches_composition_and_closed_form() -> Result<()> {
    let (n, c) = (9usize, 5usize);
    let yv: Vec<u32> = (0..n).map(|i| ((i * 3 + 1) % c) as u32).collect();
    let zf = |i: usize| 3.0 * (0.71 * i as f64).sin() + 0.1 * i as f64;
    // closed form in f64
    let mut want_g = vec![0.0f64; n * c];
    let mut want_l = 0.0;
    for i in 0..n {
        let row: Vec<f64> = (0..c).map(|j| zf(i * c + j)).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        want_l += m + s.ln() - row[yv[i] as usize];
        for j in 0..c {
            let p = (row[j] - m).exp() / s;
            want_g[i * c + j] = (p - if j == yv[i] as usize { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    want_l /= n as f64;
    let labels_u32 = Tensor::from_slice(&yv, n, &Device::Cpu)?;
    let labels_i64 = labels_u32.to_dtype(DType::I64)?;
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-12)] {
        for labels in [&labels_u32, &labels_i64] {
            let what = format!("{dtype:?} labels {:?}", labels.dtype());
            let z = Var::from_tensor(&formula(&[n, c], dtype, zf))?;
            let l = cross_entropy(z.as_tensor(), labels)?;
            let l_ref = cross_entropy_unfused(z.as_tensor(), labels)?;
            assert_eq!(l.dims(), l_ref.dims(), "{what}: scalar");
            assert_close(
                &format!("{what} loss"),
                &values(&l),
                &values(&l_ref),
                tol,
                tol,
            );
            assert_close(
                &format!("{what} loss closed"),
                &values(&l),
                &[want_l],
                tol,
                tol,
            );
            let g = values(l.backward()?.get(z.as_tensor()).expect("gradient"));
            let g_ref = values(l_ref.backward()?.get(z.as_tensor()).expect("gradient"));
            assert_close(&format!("{what} grad closed"), &g, &want_g, tol, tol);
            assert_close(&format!("{what} grad unfused"), &g, &g_ref, tol, tol);
            // a scaled loss scales the gradient
            let g2 = values((l * 2.5)?.backward()?.get(z.as_tensor()).expect("gradient"));
            let want2: Vec<f64> = want_g.iter().map(|v| 2.5 * v).collect();
            assert_close(&format!("{what} grad scaled"), &g2, &want2, tol, tol);
        }
    }
    let z = formula(&[2, 3], DType::F32, |i| i as f64);
    let bad = Tensor::from_slice(&[0u32, 3], 2, &Device::Cpu)?;
    let err = cross_entropy(&z, &bad).unwrap_err().to_string();
    assert!(err.contains("out of range"), "{err}");
    let neg = Tensor::from_slice(&[0i64, -1], 2, &Device::Cpu)?;
    let err = cross_entropy(&z, &neg).unwrap_err().to_string();
    assert!(err.contains("negative label"), "{err}");
    Ok(())
}

/// `conv2d_bias_relu` / `conv2d_relu` equal `relu(conv2d_bias(...))` / `relu(conv2d(...))`
/// (the unfused composition, candle's ReLU node included) in value and in the gradients of the
/// input, kernel and bias, with some outputs negative so that the mask matters.
#[test]
fn conv_relu_matches_the_unfused_composition() -> Result<()> {
    use modbal_tensors::ops::{conv2d, conv2d_bias, conv2d_bias_relu, conv2d_relu, ConvGeometry};
    let dev = Device::Cpu;
    let (b, c, h, w, o) = (2usize, 3usize, 6usize, 5usize, 4usize);
    let g = ConvGeometry {
        stride: (1, 2),
        padding: (1, 1),
        dilation: (1, 1),
    };
    let xv: Vec<f64> = (0..b * c * h * w)
        .map(|i| (0.37 * i as f64).sin())
        .collect();
    let wv: Vec<f64> = (0..o * c * 9)
        .map(|i| 0.3 * (0.11 * i as f64 + 0.5).cos())
        .collect();
    let bv: Vec<f64> = (0..o).map(|i| 0.1 * i as f64 - 0.15).collect();
    let x = Var::from_tensor(&Tensor::from_slice(&xv, (b, c, h, w), &dev)?)?;
    let k = Var::from_tensor(&Tensor::from_slice(&wv, (o, c, 3, 3), &dev)?)?;
    let bias = Var::from_tensor(&Tensor::from_slice(&bv, o, &dev)?)?;
    for with_bias in [true, false] {
        let (xt, kt, bt) = (x.as_tensor(), k.as_tensor(), bias.as_tensor());
        let (fused, plain) = if with_bias {
            (
                conv2d_bias_relu(xt, kt, bt, g)?,
                conv2d_bias(xt, kt, bt, g)?.relu()?,
            )
        } else {
            (conv2d_relu(xt, kt, g)?, conv2d(xt, kt, g)?.relu()?)
        };
        let (fv, pv) = (values(&fused), values(&plain));
        assert_eq!(fv, pv, "forward, bias {with_bias}");
        let zeros = fv.iter().filter(|&&v| v == 0.0).count();
        assert!(
            zeros > 0 && zeros < fv.len(),
            "some outputs masked: {zeros}"
        );
        let r = formula(fused.dims(), DType::F64, |i| (0.23 * i as f64).cos());
        let gf = (&fused * &r)?.sum_all()?.backward()?;
        let gp = (&plain * &r)?.sum_all()?.backward()?;
        let mut vars = vec![("x", &x), ("w", &k)];
        if with_bias {
            vars.push(("b", &bias));
        }
        for (name, v) in vars {
            let a = values(gf.get(v.as_tensor()).expect("fused gradient"));
            let e = values(gp.get(v.as_tensor()).expect("unfused gradient"));
            assert_close(&format!("d{name}, bias {with_bias}"), &a, &e, 1e-12, 1e-12);
        }
    }
    Ok(())
}
