//! `ops::max_pool2d` (ResNet's 3×3 / stride 2 / pad 1 among others) against a direct loop, the
//! first-arg-max gradient rule, and PyTorch's `F.max_pool2d` on an input full of ties.

mod common;

use candle_core::{DType, Result, Var};
use common::{assert_close, assert_tensor_close, formula, values};
use modbal_tensors::ops::max_pool2d;

/// Direct max-pooling of a `[B, C, H, W]` array: for each output, the maximum over the window
/// cells inside the input (padding never wins), and the flat index of the FIRST cell in
/// row-major window order that attains it (PyTorch's rule: a later cell replaces the running
/// maximum only if strictly greater). Returns (values, arg-max flat indices, Ho, Wo).
fn direct_pool(
    x: &[f64],
    d: [usize; 4],
    k: usize,
    s: usize,
    p: usize,
) -> (Vec<f64>, Vec<usize>, usize, usize) {
    let [b, c, h, w] = d;
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (w + 2 * p - k) / s + 1;
    let mut y = Vec::new();
    let mut arg = Vec::new();
    for bc in 0..b * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best = f64::NEG_INFINITY;
                let mut best_i = usize::MAX;
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        let ix = (ox * s + kx) as isize - p as isize;
                        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                            continue;
                        }
                        let i = bc * h * w + iy as usize * w + ix as usize;
                        if best_i == usize::MAX || x[i] > best {
                            best = x[i];
                            best_i = i;
                        }
                    }
                }
                y.push(best);
                arg.push(best_i);
            }
        }
    }
    (y, arg, ho, wo)
}

fn check_case(d: [usize; 4], k: usize, s: usize, p: usize, f: impl Fn(usize) -> f64) -> Result<()> {
    let what = format!("max_pool2d {d:?} k{k} s{s} p{p}");
    let xt = formula(&d, DType::F64, f);
    let xv = values(&xt);
    let (y_ref, arg, ho, wo) = direct_pool(&xv, d, k, s, p);
    let x = Var::from_tensor(&xt)?;
    let y = max_pool2d(x.as_tensor(), k, s, p)?;
    assert_eq!(y.dims(), [d[0], d[1], ho, wo], "{what}: shape");
    assert_tensor_close(&format!("{what}: forward"), &y, &y_ref, 0.0, 0.0);

    // Backward of Σ y ⊙ r: each r routed to its output's first arg-max (summed on overlaps).
    let r = formula(&[d[0], d[1], ho, wo], DType::F64, |i| 1.0 + 0.25 * i as f64);
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let gx = grads.get(x.as_tensor()).expect("input gradient");
    let mut gx_ref = vec![0.0; xv.len()];
    for (o, &i) in arg.iter().enumerate() {
        gx_ref[i] += 1.0 + 0.25 * o as f64;
    }
    assert_tensor_close(&format!("{what}: backward"), gx, &gx_ref, 0.0, 0.0);

    // f32 gives the same values and routing.
    let y32 = max_pool2d(&xt.to_dtype(DType::F32)?, k, s, p)?;
    assert_eq!(y32.dtype(), DType::F32);
    let y_ref32: Vec<f64> = y_ref.iter().map(|&v| v as f32 as f64).collect();
    assert_tensor_close(&format!("{what}: f32 forward"), &y32, &y_ref32, 0.0, 0.0);
    Ok(())
}

#[test]
fn matches_direct_loop_on_non_square_inputs() -> Result<()> {
    let smooth = |i: usize| (0.37 * i as f64 + 0.1).sin() + 0.01 * i as f64;
    // Ties everywhere: values in {−1, −½, 0, ½, 1}.
    let ties = |i: usize| (2.0 * (0.9 * i as f64).sin()).round() / 2.0;
    for (d, k, s, p) in [
        ([2, 3, 7, 5], 3, 2, 1), // ResNet stem pool
        ([2, 3, 9, 6], 3, 2, 1), // H and W of different parity w.r.t. the stride
        ([1, 2, 6, 9], 3, 2, 1),
        ([2, 2, 8, 5], 2, 2, 0),  // the kernel == stride case candle supports
        ([1, 2, 7, 9], 2, 2, 0),  // 2×2 / stride 2 (its own fast path) with odd H and W
        ([2, 2, 5, 41], 2, 2, 0), // 2×2 rows of 20 outputs: two blocks of 8 and 4 single ones
        ([2, 3, 7, 6], 3, 1, 0),  // unpadded windows other than 2×2 (the general kernel)
        ([1, 2, 7, 9], 3, 3, 0),
        ([1, 3, 5, 7], 3, 1, 1),
        ([1, 2, 7, 4], 2, 1, 1),
        ([1, 1, 33, 24], 3, 2, 1),
    ] {
        check_case(d, k, s, p, smooth)?;
        check_case(d, k, s, p, ties)?;
    }
    Ok(())
}

/// A NaN in a window is the window's maximum (PyTorch: `F.max_pool2d` propagates NaN), in the
/// 2×2 / stride-2 fast path and in the general path alike.
#[test]
fn nan_propagates() -> Result<()> {
    for (k, s) in [(2, 2), (3, 1)] {
        let mut v: Vec<f64> = (0..16).map(|i| i as f64).collect();
        v[1] = f64::NAN; // row 0, column 1: in the first window of both poolings, not the last
        let x = candle_core::Tensor::from_vec(v, (1, 1, 4, 4), &candle_core::Device::Cpu)?;
        let y = max_pool2d(&x, k, s, 0)?.flatten_all()?.to_vec1::<f64>()?;
        assert!(y[0].is_nan(), "k{k} s{s}: first window gave {}", y[0]);
        let last = *y.last().unwrap();
        assert_eq!(last, 15.0, "k{k} s{s}: last window has no NaN");
    }
    // The 2×2 kernel's blocks of 8 outputs: a NaN in each of the four taps of some window.
    let mut v: Vec<f64> = (0..2 * 40).map(|i| i as f64).collect();
    for (ox, tap) in [(1, 0), (3, 1), (6, 40), (9, 41)] {
        v[2 * ox + tap] = f64::NAN;
    }
    let x = candle_core::Tensor::from_vec(v, (1, 1, 2, 40), &candle_core::Device::Cpu)?;
    let y = max_pool2d(&x, 2, 2, 0)?.flatten_all()?.to_vec1::<f64>()?;
    for (ox, &yv) in y.iter().enumerate() {
        let nan = [1, 3, 6, 9].contains(&ox);
        assert_eq!(yv.is_nan(), nan, "window {ox}: {yv}");
        if !nan {
            assert_eq!(yv, (40 + 2 * ox + 1) as f64, "window {ox}");
        }
    }
    Ok(())
}

#[test]
fn padding_never_wins_over_negative_values() -> Result<()> {
    // All inputs negative: a zero-padded implementation would return 0 on the border.
    let x = formula(&[1, 1, 3, 4], DType::F64, |i| -1.0 - i as f64);
    let y = max_pool2d(&x, 3, 2, 1)?;
    // x = −1 … −12 row-major; windows clipped to the input, the max is each window's top-left
    // cell: out = [x[0,0], x[0,1], x[1,0], x[1,1]] = [−1, −2, −5, −6].
    assert_tensor_close("negative input", &y, &[-1.0, -2.0, -5.0, -6.0], 0.0, 0.0);
    Ok(())
}

#[test]
fn bad_arguments_are_errors() {
    let x = formula(&[1, 1, 4, 4], DType::F64, |i| i as f64);
    assert!(max_pool2d(&x, 3, 2, 2).is_err(), "padding > kernel / 2");
    assert!(max_pool2d(&x, 3, 0, 1).is_err(), "zero stride");
    assert!(max_pool2d(&x, 0, 1, 0).is_err(), "zero kernel");
    assert!(max_pool2d(&x, 6, 1, 0).is_err(), "window larger than input");
    let xe = candle_core::Tensor::zeros((1, 1, 4, 0), DType::F64, &candle_core::Device::Cpu)
        .expect("empty tensor");
    assert!(max_pool2d(&xe, 2, 1, 1).is_err(), "empty input width");
    let x3 = formula(&[1, 4, 4], DType::F64, |i| i as f64);
    assert!(max_pool2d(&x3, 3, 2, 1).is_err(), "rank 3 input");
}

/// Ties and overlapping windows against PyTorch (the gradient sums integers, so it is exact).
///
/// PyTorch 2.15 (CPU, float64), snippet:
/// ```python
/// import math, torch, torch.nn.functional as F
/// n = 1*2*7*6
/// x = torch.tensor([round(2*math.sin(0.9*i))/2 for i in range(n)],
///                  dtype=torch.float64).reshape(1,2,7,6).requires_grad_()
/// y = F.max_pool2d(x, 3, stride=2, padding=1)
/// r = torch.arange(1, y.numel()+1, dtype=torch.float64).reshape(y.shape)
/// (y*r).sum().backward()
/// print(y.flatten().tolist(), x.grad.flatten().tolist())
/// ```
#[test]
fn matches_pytorch_with_ties() -> Result<()> {
    #[rustfmt::skip]
    let y_ref = [
        1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0,
        1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0,
    ];
    #[rustfmt::skip]
    let gx_ref = [
        0., 3., 0., 0., 0., 0.,
        0., 4., 5., 9., 0., 0.,
        0., 0., 0., 0., 0., 0.,
        0., 0., 0., 0., 9., 0.,
        0., 0., 0., 0., 0., 0.,
        17., 8., 0., 0., 0., 12.,
        0., 11., 0., 0., 0., 0.,
        // channel 1
        0., 27., 0., 0., 0., 0.,
        0., 16., 17., 33., 0., 0.,
        0., 0., 0., 0., 0., 0.,
        0., 0., 0., 0., 21., 0.,
        0., 0., 0., 0., 0., 0.,
        41., 20., 0., 0., 0., 24.,
        0., 23., 0., 0., 0., 0.,
    ];
    let x = Var::from_tensor(&formula(&[1, 2, 7, 6], DType::F64, |i| {
        (2.0 * (0.9 * i as f64).sin()).round() / 2.0
    }))?;
    let y = max_pool2d(x.as_tensor(), 3, 2, 1)?;
    assert_eq!(y.dims(), [1, 2, 4, 3]);
    assert_tensor_close("torch y", &y, &y_ref, 0.0, 0.0);
    let r = formula(&[1, 2, 4, 3], DType::F64, |i| 1.0 + i as f64);
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let gx = values(grads.get(x.as_tensor()).expect("input gradient"));
    assert_close("torch gx", &gx, &gx_ref, 0.0, 0.0);
    Ok(())
}
