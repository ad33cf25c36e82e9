//! `BatchNorm2d` and `LayerNorm` against PyTorch (forward, running statistics, gradients), and
//! gradients reaching every parameter of `Linear` / `Conv2d`.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, assert_tensor_close, formula, values};
use modbal_tensors::{BatchNorm2d, Conv2d, Conv2dConfig, LayerNorm, Linear, ParamStore, SeededRng};

fn var(v: &[f64]) -> Result<Var> {
    Var::from_tensor(&Tensor::new(v, &Device::Cpu)?)
}

/// A `BatchNorm2d` with weight [0.5, 1, 1.5], bias [0.1, −0.2, 0.3], fresh running stats.
fn bn3() -> Result<(BatchNorm2d, Var, Var)> {
    let w = var(&[0.5, 1.0, 1.5])?;
    let b = var(&[0.1, -0.2, 0.3])?;
    let bn = BatchNorm2d {
        weight: w.as_tensor().clone(),
        bias: b.as_tensor().clone(),
        running_mean: var(&[0.0; 3])?,
        running_var: var(&[1.0; 3])?,
        momentum: 0.1,
        eps: 1e-5,
    };
    Ok((bn, w, b))
}

/// PyTorch 2.15 (CPU, float64), snippet:
/// ```python
/// import math, torch
/// def f(shape, fn):
///     n = math.prod(shape)
///     return torch.tensor([fn(i) for i in range(n)], dtype=torch.float64).reshape(shape)
/// bn = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5).double()
/// with torch.no_grad():
///     bn.weight.copy_(torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64))
///     bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
/// x = f((2,3,3,2), lambda i: math.sin(0.7*i) + 0.05*i).requires_grad_()
/// y = bn(x)                                   # training mode
/// r = f(y.shape, lambda i: math.cos(0.3*i))
/// (y*r).sum().backward()
/// print(y, bn.running_mean, bn.running_var, x.grad, bn.weight.grad, bn.bias.grad)
/// bn.eval(); print(bn(x))                     # evaluation mode, after the one update
/// ```
#[test]
fn batch_norm_matches_pytorch() -> Result<()> {
    #[rustfmt::skip]
    let y_ref = [
        -6.706849560484e-01, -1.283253132097e-01, 1.773258893946e-01, 1.208878896437e-01,
        -2.527238649157e-01, -7.494221538737e-01, -1.576410492518e+00, -1.640078999706e+00,
        -1.220495591162e+00, -4.904027410743e-01, 2.314196341673e-01, 6.300813517232e-01,
        1.451657601203e+00, 4.587027645771e-01, -8.411922610307e-01, -1.788571616040e+00,
        -1.889773068961e+00, -1.049105077551e+00, 5.871083974537e-02, 5.946087607862e-01,
        8.844829895605e-01, 8.103729212616e-01, 4.255054534081e-01, -7.073845575256e-02,
        -6.518632172776e-01, -6.916674830168e-01, -2.515777262643e-01, 4.860191228091e-01,
        1.198813899838e+00, 1.576162242481e+00, 3.255656596391e+00, 2.233859181548e+00,
        9.359462943536e-01, 2.044156372233e-02, -3.398391275664e-02, 8.463619345439e-01,
    ];
    let rm_ref = [9.864729701799e-02, 7.444833802021e-02, 8.915014002616e-02];
    let rv_ref = [9.446822035992e-01, 9.997329536031e-01, 9.586791019726e-01];
    #[rustfmt::skip]
    let gx_ref = [
        3.780109697075e-01, 2.131365531351e-01, 3.832117617030e-02, -1.073142668094e-01,
        -2.203167271636e-01, -3.291083564880e-01, -3.813402005032e-02, -3.388495101216e-01,
        -5.139233515520e-01, -5.696825184819e-01, -5.423233164970e-01, -4.749550709140e-01,
        -1.595492515736e-01, -2.509679400988e-01, -3.460214591736e-01, -1.950178053138e-01,
        3.701346385434e-01, 1.337419087091e+00, -8.219196858600e-02, -5.435812785036e-02,
        -2.581480454893e-02, 2.295292005438e-02, 7.641905455377e-02, 9.026357782527e-02,
        9.858768567289e-01, 7.056952114758e-01, 4.710616691596e-01, 2.797008127763e-01,
        1.070649572646e-01, -7.153171978833e-02, 6.118937753819e-01, -7.562717254318e-03,
        -5.683202890152e-01, -7.794222186377e-01, -4.458220179837e-01, 4.332361980345e-01,
    ];
    let gw_ref = [1.840567644530e+00, -1.863282892075e+00, -3.906972472620e+00];
    let gb_ref = [9.030769304350e+00, -4.853523723881e+00, -6.825307790933e+00];
    #[rustfmt::skip]
    let y_eval_ref = [
        4.925304027011e-02, 4.063782538642e-01, 6.076390822770e-01, 5.704765961259e-01,
        3.244660763352e-01, -2.592702610018e-03, -8.461071555289e-01, -9.069918213346e-01,
        -5.057542749355e-01, 1.924160002650e-01, 8.826774188065e-01, 1.263908054094e+00,
        2.391836678822e+00, 1.648060806069e+00, 6.743704412141e-01, -3.526697693317e-02,
        -1.110722363405e-01, 5.186327068683e-01, 5.295351423899e-01, 8.824055339158e-01,
        1.073277766452e+00, 1.024478829584e+00, 7.710568088322e-01, 4.442972233914e-01,
        3.801522084180e-02, -4.864344885094e-05, 4.207986317272e-01, 1.126144801112e+00,
        1.807773344084e+00, 2.168622510322e+00, 3.743127671725e+00, 2.977747177095e+00,
        2.005541539112e+00, 1.319779906338e+00, 1.279012335876e+00, 1.938438099011e+00,
    ];

    let (bn, w, b) = bn3()?;
    let x = Var::from_tensor(&formula(&[2, 3, 3, 2], DType::F64, |i| {
        (0.7 * i as f64).sin() + 0.05 * i as f64
    }))?;
    let y = bn.forward_t(x.as_tensor(), true)?;
    assert_tensor_close("train y", &y, &y_ref, 1e-10, 1e-12);
    assert_tensor_close(
        "running_mean",
        bn.running_mean.as_tensor(),
        &rm_ref,
        1e-10,
        1e-12,
    );
    assert_tensor_close(
        "running_var",
        bn.running_var.as_tensor(),
        &rv_ref,
        1e-10,
        1e-12,
    );

    let r = formula(&[2, 3, 3, 2], DType::F64, |i| (0.3 * i as f64).cos());
    let grads = (&y * &r)?.sum_all()?.backward()?;
    assert_tensor_close(
        "gx",
        grads.get(x.as_tensor()).expect("x grad"),
        &gx_ref,
        1e-9,
        1e-12,
    );
    assert_tensor_close(
        "gw",
        grads.get(w.as_tensor()).expect("w grad"),
        &gw_ref,
        1e-10,
        1e-12,
    );
    assert_tensor_close(
        "gb",
        grads.get(b.as_tensor()).expect("b grad"),
        &gb_ref,
        1e-10,
        1e-12,
    );
    // Running statistics are buffers: no gradient flows into them.
    assert!(grads.get(bn.running_mean.as_tensor()).is_none());
    assert!(grads.get(bn.running_var.as_tensor()).is_none());

    let y_eval = bn.forward_t(x.as_tensor(), false)?;
    assert_tensor_close("eval y", &y_eval, &y_eval_ref, 1e-10, 1e-12);
    // Evaluation mode leaves the running statistics alone.
    assert_tensor_close(
        "running_mean after eval",
        bn.running_mean.as_tensor(),
        &rm_ref,
        1e-10,
        1e-12,
    );
    Ok(())
}

#[test]
fn batch_norm_rank2_equals_rank4_with_1x1_maps() -> Result<()> {
    // [B, C] is the [B, C, 1, 1] case (BatchNorm1d semantics).
    let x2 = formula(&[5, 3], DType::F64, |i| (1.1 * i as f64).sin() * 2.0 + 0.3);
    let x4 = x2.reshape((5, 3, 1, 1))?;
    let (bn_a, _, _) = bn3()?;
    let (bn_b, _, _) = bn3()?;
    let ya = bn_a.forward_t(&x2, true)?;
    let yb = bn_b.forward_t(&x4, true)?;
    assert_eq!(ya.dims(), [5, 3]);
    assert_close("rank 2 vs 4", &values(&ya), &values(&yb), 1e-14, 1e-14);
    assert_close(
        "running var",
        &values(bn_a.running_var.as_tensor()),
        &values(bn_b.running_var.as_tensor()),
        1e-14,
        0.0,
    );
    // Closed form with weight 1, bias 0: each column has mean 0 and biased variance
    // σ²/(σ² + eps) ≈ 1.
    let mut bn = bn3()?.0;
    bn.weight = Tensor::ones(3, DType::F64, &Device::Cpu)?;
    bn.bias = Tensor::zeros(3, DType::F64, &Device::Cpu)?;
    let y = bn.forward_t(&x2, true)?;
    let mean = values(&y.mean(0)?);
    let var = values(&y.sqr()?.mean(0)?);
    assert_close("column means", &mean, &[0.0; 3], 0.0, 1e-12);
    assert_close("column variances", &var, &[1.0; 3], 1e-4, 0.0);
    Ok(())
}

#[test]
fn batch_norm_errors() -> Result<()> {
    let (bn, _, _) = bn3()?;
    let dev = Device::Cpu;
    assert!(bn
        .forward_t(&Tensor::zeros((2, 4, 3, 3), DType::F64, &dev)?, true)
        .is_err());
    assert!(bn
        .forward_t(&Tensor::zeros((2, 3, 3), DType::F64, &dev)?, true)
        .is_err());
    // One value per channel: no batch variance in training mode (PyTorch errors too) ...
    assert!(bn
        .forward_t(&Tensor::zeros((1, 3, 1, 1), DType::F64, &dev)?, true)
        .is_err());
    // ... but evaluation mode is fine.
    assert!(bn
        .forward_t(&Tensor::zeros((1, 3, 1, 1), DType::F64, &dev)?, false)
        .is_ok());
    Ok(())
}

/// PyTorch 2.15 (CPU, float64), snippet:
/// ```python
/// import math, torch, torch.nn.functional as F
/// x = torch.tensor([math.sin(1.3*i)*(1 + 0.1*i) for i in range(12)],
///                  dtype=torch.float64).reshape(3, 4).requires_grad_()
/// w = torch.tensor([0.5, 1.0, -1.5, 2.0], dtype=torch.float64, requires_grad=True)
/// b = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64, requires_grad=True)
/// y = F.layer_norm(x, (4,), w, b, eps=1e-5)
/// r = torch.tensor([math.cos(0.7*i) for i in range(12)], dtype=torch.float64).reshape(3, 4)
/// (y*r).sum().backward()
/// print(y.flatten().tolist(), x.grad.flatten().tolist(), w.grad.tolist(), b.grad.tolist())
/// ```
#[test]
fn layer_norm_matches_pytorch_and_has_gradients() -> Result<()> {
    #[rustfmt::skip]
    let y_ref = [
        -3.368944585324e-02, 9.777589711069e-01, -5.640786331794e-01, -2.972865003040e+00,
        -6.617338758648e-01, -1.840233381740e-01, -1.611834018363e+00, 4.658701553233e-01,
        -3.861128201195e-01, -1.144496498236e+00, -5.321521055657e-01, 2.723908136196e+00,
    ];
    #[rustfmt::skip]
    let gx_ref = [
        8.749703976999e-01, 1.912382769917e-01, -7.641643479254e-01, -3.020443267662e-01,
        2.580500198328e-01, -8.573873681733e-01, 2.565606951195e-01, 3.427766532210e-01,
        -8.204357207068e-02, 3.259691930074e-01, -6.941684857037e-01, 4.502428647670e-01,
    ];
    let gw_ref = [
        4.140414264792e-01,
        -5.852468504754e-02,
        -1.087139941630e-01,
        1.002753086742e+00,
    ];
    let gb_ref = [
        8.333435378416e-01,
        8.282441363771e-01,
        4.336085759028e-01,
        -1.649598731394e-01,
    ];
    let w = var(&[0.5, 1.0, -1.5, 2.0])?;
    let b = var(&[0.1, -0.2, 0.3, 0.0])?;
    let ln = LayerNorm {
        weight: w.as_tensor().clone(),
        bias: b.as_tensor().clone(),
        eps: 1e-5,
    };
    let x = Var::from_tensor(&formula(&[3, 4], DType::F64, |i| {
        (1.3 * i as f64).sin() * (1.0 + 0.1 * i as f64)
    }))?;
    let y = ln.forward(x.as_tensor())?;
    assert_tensor_close("y", &y, &y_ref, 1e-10, 1e-12);
    let r = formula(&[3, 4], DType::F64, |i| (0.7 * i as f64).cos());
    let grads = (&y * &r)?.sum_all()?.backward()?;
    // candle-nn's LayerNorm gives no gradient at all; here all three must match PyTorch.
    assert_tensor_close(
        "gx",
        grads.get(x.as_tensor()).expect("x grad"),
        &gx_ref,
        1e-9,
        1e-12,
    );
    assert_tensor_close(
        "gw",
        grads.get(w.as_tensor()).expect("w grad"),
        &gw_ref,
        1e-10,
        1e-12,
    );
    assert_tensor_close(
        "gb",
        grads.get(b.as_tensor()).expect("b grad"),
        &gb_ref,
        1e-10,
        1e-12,
    );

    // Rank 3 normalises the last axis row by row: same numbers.
    let y3 = ln.forward(&x.as_tensor().reshape((3, 1, 4))?)?;
    assert_eq!(y3.dims(), [3, 1, 4]);
    assert_tensor_close("rank 3", &y3, &y_ref, 1e-10, 1e-12);

    // f32: gradients finite and non-zero.
    let ln32 = LayerNorm {
        weight: ln.weight.to_dtype(DType::F32)?,
        bias: ln.bias.to_dtype(DType::F32)?,
        eps: 1e-5,
    };
    let x32 = Var::from_tensor(&x.as_tensor().to_dtype(DType::F32)?)?;
    let y32 = ln32.forward(x32.as_tensor())?;
    assert_tensor_close("f32 y", &y32, &y_ref, 1e-5, 1e-5);
    let g = (y32 * r.to_dtype(DType::F32)?)?.sum_all()?.backward()?;
    assert_tensor_close(
        "f32 gx",
        g.get(x32.as_tensor()).expect("x grad"),
        &gx_ref,
        1e-4,
        1e-5,
    );
    Ok(())
}

#[test]
fn builder_layers_get_gradients_for_every_parameter() -> Result<()> {
    // Layers built through a ParamStore: every trainable parameter receives a finite, non-zero
    // gradient from a loss through BatchNorm2d → Conv2d(bias) → global mean → LayerNorm → Linear
    // (a conv bias right before a training-mode BatchNorm would get an exactly zero gradient).
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu);
    let mut rng = SeededRng::new(7);
    let cfg = Conv2dConfig {
        kernel: 3,
        stride: 2,
        padding: 1,
        dilation: 1,
        bias: true,
    };
    let conv = Conv2d::new(&pb.pp("conv"), 2, 4, cfg, &mut rng)?;
    let bn = BatchNorm2d::new(&pb.pp("bn"), 2, &mut rng)?;
    let ln = LayerNorm::new(&pb.pp("ln"), 4, 1e-5, &mut rng)?;
    let fc = Linear::new(&pb.pp("fc"), 4, 3, &mut rng)?;
    let x = formula(&[3, 2, 9, 6], DType::F32, |i| (0.37 * i as f64).sin());
    let h = conv.forward(&bn.forward_t(&x, true)?)?; // [3, 4, 5, 3]
    let h = h.mean(3)?.mean(2)?; // [3, 4]
    let out = fc.forward(&ln.forward(&h)?)?;
    assert_eq!(out.dims(), [3, 3]);
    let r = formula(&[3, 3], DType::F32, |i| (i as f64 * 0.9).cos());
    let grads = (out * r)?.sum_all()?.backward()?;
    let trainable = store.trainable();
    assert_eq!(trainable.len(), 8, "conv w+b, bn w+b, ln w+b, fc w+b");
    for (name, v) in trainable {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let g = values(g);
        assert!(g.iter().all(|v| v.is_finite()), "{name}: {g:?}");
        assert!(g.iter().any(|&v| v != 0.0), "{name}: all zero");
    }
    Ok(())
}
