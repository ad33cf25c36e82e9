//! `cross_entropy_per_sample` / `cross_entropy` against `F.cross_entropy`, and
//! `ops::softmax` / `ops::log_softmax` values and gradients against PyTorch.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use common::{assert_close, assert_tensor_close, formula};
use modbal_tensors::ops::{log_softmax, softmax};
use modbal_tensors::{cross_entropy, cross_entropy_per_sample};

/// PyTorch 2.15 (CPU, float64), snippet:
/// ```python
/// import math, torch, torch.nn.functional as F
/// z = torch.tensor([3*math.sin(0.8*i + 0.3) for i in range(20)],
///                  dtype=torch.float64).reshape(4, 5).requires_grad_()
/// y = torch.tensor([1, 0, 4, 2])
/// ce = F.cross_entropy(z, y, reduction='none')
/// (ce * torch.tensor([1., 2., 3., 4.], dtype=torch.float64)).sum().backward()
/// print(ce.tolist(), ce.mean().item(), z.grad.flatten().tolist())
/// ```
#[test]
fn cross_entropy_matches_pytorch() -> Result<()> {
    let ce_ref = [
        9.631624018059e-01,
        5.768787877243e+00,
        5.514733506296e+00,
        7.221920228969e-01,
    ];
    let mean_ref = 3.242218952061e+00;
    #[rustfmt::skip]
    let gz_ref = [
        6.391355178917e-02, -6.183160625809e-01, 4.502806522615e-01, 9.492721477564e-02,
        9.194643754596e-03,
        -1.993752917328e+00, 6.068845234645e-03, 3.178461596539e-02, 3.287054806996e-01,
        1.627193975428e+00,
        2.501150454208e+00, 4.349737447922e-01, 4.232521061288e-02, 9.469589289429e-03,
        -2.987918998903e+00,
        4.775767270419e-02, 4.838715631640e-01, -2.057254190282e+00, 1.330188055654e+00,
        1.954368987600e-01,
    ];
    let dev = Device::Cpu;
    let z = Var::from_tensor(&formula(&[4, 5], DType::F64, |i| {
        3.0 * (0.8 * i as f64 + 0.3).sin()
    }))?;
    let y = Tensor::new(&[1u32, 0, 4, 2], &dev)?;
    let ce = cross_entropy_per_sample(z.as_tensor(), &y)?;
    assert_eq!(ce.dims(), [4]);
    assert_tensor_close("ce", &ce, &ce_ref, 1e-11, 1e-13);
    let m = cross_entropy(z.as_tensor(), &y)?;
    assert_eq!(m.dims(), [] as [usize; 0]);
    assert_close("mean ce", &[m.to_scalar::<f64>()?], &[mean_ref], 1e-11, 0.0);
    let w = Tensor::new(&[1.0f64, 2.0, 3.0, 4.0], &dev)?;
    let grads = (ce * w)?.sum_all()?.backward()?;
    let gz = grads.get(z.as_tensor()).expect("logit gradient");
    assert_tensor_close("grad", gz, &gz_ref, 1e-10, 1e-13);

    // Labels given as i64 (PyTorch's dtype) or u8 give the same result.
    for yy in [
        Tensor::new(&[1i64, 0, 4, 2], &dev)?,
        Tensor::new(&[1u8, 0, 4, 2], &dev)?,
    ] {
        let ce = cross_entropy_per_sample(z.as_tensor(), &yy)?;
        assert_tensor_close("ce, other label dtype", &ce, &ce_ref, 1e-11, 1e-13);
    }
    // f32 logits.
    let ce32 = cross_entropy_per_sample(&z.as_tensor().to_dtype(DType::F32)?, &y)?;
    assert_eq!(ce32.dtype(), DType::F32);
    assert_tensor_close("ce f32", &ce32, &ce_ref, 1e-6, 1e-6);
    Ok(())
}

#[test]
fn cross_entropy_is_stable_for_large_logits() -> Result<()> {
    // Closed form: logits [1000, 0] and [0, −1000]; label 0 → ce = log(1 + e^{−1000}) ≈ 0,
    // label 1 → ce ≈ 1000.
    let z = Tensor::new(&[[1000.0f32, 0.0], [0.0, -1000.0]], &Device::Cpu)?;
    let ce = cross_entropy_per_sample(&z, &Tensor::new(&[0u32, 1], &Device::Cpu)?)?;
    assert_tensor_close("large logits", &ce, &[0.0, 1000.0], 1e-7, 1e-7);
    Ok(())
}

#[test]
fn cross_entropy_errors() -> Result<()> {
    let dev = Device::Cpu;
    let z = formula(&[4, 5], DType::F64, |i| i as f64);
    let e = cross_entropy_per_sample(&z, &Tensor::new(&[1u32, 0, 5, 2], &dev)?)
        .expect_err("label 5 with 5 classes");
    assert!(e.to_string().contains("out of range"), "{e}");
    let e = cross_entropy_per_sample(&z, &Tensor::new(&[1i64, 0, -1, 2], &dev)?)
        .expect_err("negative label");
    assert!(e.to_string().contains("negative label -1"), "{e}");
    // An empty batch is an empty vector, not an error.
    let empty = cross_entropy_per_sample(
        &Tensor::zeros((0, 5), DType::F64, &dev)?,
        &Tensor::zeros(0, DType::U32, &dev)?,
    )?;
    assert_eq!(empty.dims(), [0]);
    assert!(
        cross_entropy_per_sample(&z, &Tensor::new(&[1u32, 0, 2], &dev)?).is_err(),
        "3 labels for 4 samples"
    );
    assert!(
        cross_entropy_per_sample(&z, &Tensor::new(&[[1u32], [0], [2], [3]], &dev)?).is_err(),
        "labels [4, 1]"
    );
    let z3 = formula(&[2, 2, 5], DType::F64, |i| i as f64);
    assert!(
        cross_entropy_per_sample(&z3, &Tensor::new(&[1u32, 0], &dev)?).is_err(),
        "rank 3 logits"
    );
    assert!(cross_entropy(&z3, &Tensor::new(&[1u32, 0], &dev)?).is_err());
    Ok(())
}

/// PyTorch 2.15 (CPU, float64), snippet:
/// ```python
/// import math, torch, torch.nn.functional as F
/// x = torch.tensor([2*math.cos(0.9*i) + 0.1*i for i in range(8)],
///                  dtype=torch.float64).reshape(2, 4).requires_grad_()
/// r = torch.tensor([math.sin(0.5*i + 1) for i in range(8)], dtype=torch.float64).reshape(2, 4)
/// s = F.softmax(x, dim=1); ls = F.log_softmax(x, dim=1); s0 = F.softmax(x, dim=0)
/// gs, = torch.autograd.grad((s*r).sum(), x)
/// gls, = torch.autograd.grad((ls*r).sum(), x)
/// gs0, = torch.autograd.grad((s0*r).sum(), x)
/// print(s, ls, gs, gls, s0, gs0)   # each .flatten().tolist()
/// ```
#[test]
fn softmax_and_log_softmax_match_pytorch() -> Result<()> {
    #[rustfmt::skip]
    let s_ref = [
        6.048118570761e-01, 3.136059828213e-01, 6.346656553590e-02, 1.811559456663e-02,
        1.093897012442e-02, 4.766783671855e-02, 2.857834163887e-01, 6.556097767683e-01,
    ];
    #[rustfmt::skip]
    let ls_ref = [
        -5.028378493550e-01, -1.159617912814e+00, -2.757242038741e+00, -4.010982133389e+00,
        -4.515423624955e+00, -3.043498391149e+00, -1.252521040402e+00, -4.221895195203e-01,
    ];
    #[rustfmt::skip]
    let gs_ref = [
        -2.953459795443e-02, 3.361583252230e-02, 1.205467364625e-03, -5.286701932494e-03,
        1.108617894107e-02, 2.486135316405e-02, 3.301792403392e-02, -6.896545613904e-02,
    ];
    #[rustfmt::skip]
    let gls_ref = [
        -1.182674353698e+00, -5.206130239506e-02, 6.968916161963e-01, 5.378440398972e-01,
        1.623853203947e-01, -2.581171517596e-01, -2.012407248213e-01, 2.969725561862e-01,
    ];
    #[rustfmt::skip]
    let s0_ref = [
        9.675013047991e-01, 7.798532747010e-01, 1.068059767732e-01, 1.466003619968e-02,
        3.249869520087e-02, 2.201467252990e-01, 8.931940232268e-01, 9.853399638003e-01,
    ];
    #[rustfmt::skip]
    let gs0_ref = [
        2.202080660471e-02, 2.314752954001e-01, 1.589433669421e-01, 2.276554106389e-02,
        -2.202080660471e-02, -2.314752954001e-01, -1.589433669421e-01, -2.276554106389e-02,
    ];
    let x = Var::from_tensor(&formula(&[2, 4], DType::F64, |i| {
        2.0 * (0.9 * i as f64).cos() + 0.1 * i as f64
    }))?;
    let r = formula(&[2, 4], DType::F64, |i| (0.5 * i as f64 + 1.0).sin());
    let xt = x.as_tensor();

    let s = softmax(xt, D::Minus1)?;
    assert_tensor_close("softmax", &s, &s_ref, 1e-11, 1e-13);
    let g = (&s * &r)?.sum_all()?.backward()?;
    assert_tensor_close("softmax grad", g.get(xt).unwrap(), &gs_ref, 1e-9, 1e-13);

    let ls = log_softmax(xt, 1)?;
    assert_tensor_close("log_softmax", &ls, &ls_ref, 1e-11, 1e-13);
    let g = (&ls * &r)?.sum_all()?.backward()?;
    assert_tensor_close(
        "log_softmax grad",
        g.get(xt).unwrap(),
        &gls_ref,
        1e-10,
        1e-13,
    );

    let s0 = softmax(xt, 0)?;
    assert_tensor_close("softmax dim 0", &s0, &s0_ref, 1e-11, 1e-13);
    let g = (&s0 * &r)?.sum_all()?.backward()?;
    assert_tensor_close(
        "softmax dim 0 grad",
        g.get(xt).unwrap(),
        &gs0_ref,
        1e-9,
        1e-13,
    );
    Ok(())
}

#[test]
fn softmax_is_stable_and_normalised() -> Result<()> {
    // Closed forms: softmax([1000, 1000]) = [½, ½] (log: −ln 2);
    // log_softmax([−1000, 0]) = [−1000, 0] (to within e^{−1000}); rows sum to one.
    let x = Tensor::new(&[[1000.0f32, 1000.0], [-1000.0, 0.0]], &Device::Cpu)?;
    assert_tensor_close(
        "softmax",
        &softmax(&x, 1)?,
        &[0.5, 0.5, 0.0, 1.0],
        0.0,
        1e-7,
    );
    assert_tensor_close(
        "log_softmax",
        &log_softmax(&x, 1)?,
        &[
            -std::f64::consts::LN_2,
            -std::f64::consts::LN_2,
            -1000.0,
            0.0,
        ],
        1e-6,
        1e-6,
    );
    let y = formula(&[3, 7], DType::F64, |i| 5.0 * (i as f64).sin());
    let sums = softmax(&y, 1)?.sum(1)?;
    assert_tensor_close("row sums", &sums, &[1.0; 3], 0.0, 1e-14);
    Ok(())
}
