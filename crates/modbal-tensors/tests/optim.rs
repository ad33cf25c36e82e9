//! `Sgd` and `AdamW` against `torch.optim.SGD` / `torch.optim.AdamW`, their state round-trip
//! through `OptimizerState::save/load`, and `clip_grad_norm` against
//! `torch.nn.utils.clip_grad_norm_`.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, assert_tensor_close, formula, values};
use modbal_tensors::{
    clip_grad_norm, global_grad_norm, AdamW, AdamWConfig, Optimizer, OptimizerConfig,
    OptimizerState, Sgd, SgdConfig,
};

/// The fixed problem: W ∈ R^{3×2}, X ∈ R^{4×2}, Y ∈ R^{4×3}, loss = Σ (X Wᵀ − Y)².
struct Problem {
    x: Tensor,
    y: Tensor,
}

impl Problem {
    fn new(dtype: DType) -> Self {
        Self {
            x: formula(&[4, 2], dtype, |i| (i as f64 + 1.0).sin()),
            y: formula(&[4, 3], dtype, |i| (0.7 * i as f64).cos()),
        }
    }
    fn w0(dtype: DType) -> Result<Var> {
        Var::from_tensor(&formula(&[3, 2], dtype, |i| 0.3 * i as f64 - 0.5))
    }
    fn step(&self, w: &Var, opt: &mut dyn Optimizer) -> Result<()> {
        let r = (self.x.matmul(&w.as_tensor().t()?)? - &self.y)?;
        let grads = r.sqr()?.sum_all()?.backward()?;
        opt.step(&grads)
    }
}

/// Runs 5 steps and returns W after each (flattened, 5 × 6 values).
fn run(dtype: DType, make: impl Fn(Vec<(String, Var)>) -> Box<dyn Optimizer>) -> Result<Vec<f64>> {
    let p = Problem::new(dtype);
    let w = Problem::w0(dtype)?;
    let mut opt = make(vec![("w".into(), w.clone())]);
    let mut out = Vec::new();
    for _ in 0..5 {
        p.step(&w, opt.as_mut())?;
        out.extend(values(w.as_tensor()));
    }
    Ok(out)
}

fn sgd(momentum: f64, dampening: f64, nesterov: bool) -> SgdConfig {
    SgdConfig {
        lr: 0.01,
        momentum,
        dampening,
        nesterov,
        weight_decay: 1e-4,
    }
}

// PyTorch 2.15 (CPU, float64), snippet producing every `*_REF` below (W after each of 5 steps):
// ```python
// import math, torch
// def f(shape, fn):
//     n = math.prod(shape)
//     return torch.tensor([fn(i) for i in range(n)], dtype=torch.float64).reshape(shape)
// X = f((4,2), lambda i: math.sin(i + 1.0)); Y = f((4,3), lambda i: math.cos(0.7*i))
// W0 = f((3,2), lambda i: 0.3*i - 0.5)
// def run(make):
//     W = W0.clone().requires_grad_(); opt = make([W]); out = []
//     for _ in range(5):
//         opt.zero_grad(); ((X @ W.T - Y)**2).sum().backward(); opt.step()
//         out.append(W.detach().clone())
//     return torch.stack(out).flatten().tolist()
// SGD_REF = run(lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=1e-4))
// NESTEROV_REF = run(lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=1e-4,
//                                               nesterov=True))
// DAMPENING_REF = run(lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, dampening=0.1,
//                                                weight_decay=1e-4))
// ADAMW_REF = run(lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01))
// ```
#[rustfmt::skip]
const SGD_REF: [f64; 30] = [
    -4.349579458215e-01, -1.260596716937e-01, 9.977291288745e-02,
    4.192414459591e-01, 6.267240125349e-01, 9.447675767185e-01,
    -3.164137731840e-01, 8.743736521220e-03, 9.874429213665e-02,
    4.548620106405e-01, 4.922879891839e-01, 8.448496393026e-01,
    -1.588970082748e-01, 1.879637807558e-01, 9.591410511589e-02,
    5.035061542160e-01, 3.115483103384e-01, 7.138619351241e-01,
    2.149487298107e-02, 3.933878153302e-01, 9.004666262639e-02,
    5.615708314924e-01, 1.007807081509e-01, 5.670448610372e-01,
    2.084968039700e-01, 6.066158920483e-01, 7.985915781499e-02,
    6.254462176945e-01, -1.236189433658e-01, 4.198391277434e-01,
];
#[rustfmt::skip]
const NESTEROV_REF: [f64; 30] = [
    -3.764200970608e-01, -5.951337621801e-02, 9.956853448615e-02,
    4.365587473223e-01, 5.607756238163e-01, 8.950583957652e-01,
    -2.183351166262e-01, 1.203485052949e-01, 9.679739800575e-02,
    4.853162265379e-01, 3.794836515119e-01, 7.635139658888e-01,
    -4.384821915523e-02, 3.191076018977e-01, 9.024013181560e-02,
    5.422714341993e-01, 1.743459396300e-01, 6.225750718516e-01,
    1.307284935223e-01, 5.183072938361e-01, 7.866158284929e-02,
    6.037580234426e-01, -3.812029032334e-02, 4.876646258025e-01,
    2.918306673170e-01, 7.025910738748e-01, 6.116631624307e-02,
    6.666091136690e-01, -2.439906033186e-01, 3.714474983453e-01,
];
#[rustfmt::skip]
const DAMPENING_REF: [f64; 30] = [
    -4.349579458215e-01, -1.260596716937e-01, 9.977291288745e-02,
    4.192414459591e-01, 6.267240125349e-01, 9.447675767185e-01,
    -3.224144055717e-01, 1.918025247297e-03, 9.882671637160e-02,
    4.530316843087e-01, 4.991367526471e-01, 8.498705149489e-01,
    -1.749626666286e-01, 1.696773034211e-01, 9.631000116220e-02,
    4.984485643714e-01, 3.301369093687e-01, 7.270914242785e-01,
    -6.371876322991e-03, 3.616384621362e-01, 9.118539330971e-02,
    5.523926105887e-01, 1.336742960003e-01, 5.894425268594e-01,
    1.694879077099e-01, 5.621098460371e-01, 8.237491670598e-02,
    6.117712393597e-01, -7.624654030807e-02, 4.500715301444e-01,
];
#[rustfmt::skip]
const ADAMW_REF: [f64; 30] = [
    -4.989950000015e-01, -1.989980000014e-01, 9.899900044055e-02,
    4.009959999948e-01, 6.989930000014e-01, 9.989900000018e-01,
    -4.979900396362e-01, -1.979960387112e-01, 9.799947722255e-02,
    4.019919663790e-01, 6.979860364347e-01, 9.979800488036e-01,
    -4.969851385957e-01, -1.969941352246e-01, 9.700249753206e-02,
    4.029878833326e-01, 6.969791268431e-01, 9.969701721838e-01,
    -4.959803164940e-01, -1.959923085600e-01, 9.600918741797e-02,
    4.039837349682e-01, 6.959722886969e-01, 9.959603958324e-01,
    -4.949755928238e-01, -1.949905776175e-01, 9.502072188311e-02,
    4.049795053038e-01, 6.949655393551e-01, 9.949507452940e-01,
];

fn adamw() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-3,
        weight_decay: 0.01,
        ..AdamWConfig::default()
    }
}

#[test]
fn sgd_matches_pytorch() -> Result<()> {
    for (what, cfg, want) in [
        ("sgd momentum", sgd(0.9, 0.0, false), &SGD_REF),
        ("sgd nesterov", sgd(0.9, 0.0, true), &NESTEROV_REF),
        ("sgd dampening", sgd(0.9, 0.1, false), &DAMPENING_REF),
    ] {
        let got = run(DType::F64, |v| Box::new(Sgd::new(v, cfg.clone())))?;
        assert_close(what, &got, want, 1e-10, 1e-12);
        // f32 parameters follow within single-precision rounding.
        let got = run(DType::F32, |v| Box::new(Sgd::new(v, cfg.clone())))?;
        assert_close(&format!("{what} f32"), &got, want, 1e-5, 1e-6);
    }
    Ok(())
}

#[test]
fn adamw_matches_pytorch() -> Result<()> {
    let got = run(DType::F64, |v| Box::new(AdamW::new(v, adamw())))?;
    assert_close("adamw", &got, &ADAMW_REF, 1e-10, 1e-12);
    let got = run(DType::F32, |v| Box::new(AdamW::new(v, adamw())))?;
    assert_close("adamw f32", &got, &ADAMW_REF, 1e-6, 1e-7);
    // Built through the config enum: the same optimizer.
    let cfg = OptimizerConfig::Adamw(adamw());
    let got = run(DType::F64, |v| cfg.build(v).expect("valid config"))?;
    assert_close("adamw via config", &got, &ADAMW_REF, 1e-10, 1e-12);
    let cfg = OptimizerConfig::Sgd(sgd(0.9, 0.0, true));
    let got = run(DType::F64, |v| cfg.build(v).expect("valid config"))?;
    assert_close("sgd via config", &got, &NESTEROV_REF, 1e-10, 1e-12);
    Ok(())
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = [
        OptimizerConfig::Sgd(SgdConfig {
            lr: 0.0,
            ..SgdConfig::default()
        }),
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 1.0,
            ..SgdConfig::default()
        }),
        OptimizerConfig::Sgd(sgd(0.0, 0.0, true)),
        OptimizerConfig::Sgd(sgd(0.9, 0.1, true)),
        OptimizerConfig::Adamw(AdamWConfig {
            beta2: 1.0,
            ..AdamWConfig::default()
        }),
        OptimizerConfig::Adamw(AdamWConfig {
            eps: 0.0,
            ..AdamWConfig::default()
        }),
    ];
    for c in bad {
        assert!(c.validate().is_err(), "{c:?}");
        assert!(c.build(Vec::new()).is_err(), "{c:?}");
    }
    // Non-finite values are named (issue 17: `weight_decay = nan` used to be accepted).
    for wd in [f64::NAN, f64::INFINITY, -1.0] {
        let e = OptimizerConfig::Sgd(SgdConfig {
            weight_decay: wd,
            ..SgdConfig::default()
        })
        .validate()
        .unwrap_err();
        assert!(
            e.contains("weight_decay") && e.contains(&wd.to_string()),
            "{e}"
        );
        let e = OptimizerConfig::Adamw(AdamWConfig {
            weight_decay: wd,
            ..AdamWConfig::default()
        })
        .validate()
        .unwrap_err();
        assert!(
            e.contains("weight_decay") && e.contains(&wd.to_string()),
            "{e}"
        );
    }
    for eps in [f64::NAN, f64::INFINITY] {
        let e = OptimizerConfig::Adamw(AdamWConfig {
            eps,
            ..AdamWConfig::default()
        })
        .validate()
        .unwrap_err();
        assert!(e.contains("eps"), "{e}");
    }
    for d in [f64::NAN, -0.5, 1.5] {
        let e = OptimizerConfig::Sgd(SgdConfig {
            dampening: d,
            ..SgdConfig::default()
        })
        .validate()
        .unwrap_err();
        assert!(e.contains("dampening"), "{e}");
    }
}

/// A unique, fresh directory under the system temp dir (removed by the caller).
fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "modbal-tensors-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("creating a temp dir");
    d
}

/// 5 uninterrupted steps == 3 steps, save, load into a fresh optimizer over fresh variables
/// holding the same values, 2 more steps (bit for bit).
fn check_resume(
    dtype: DType,
    make: impl Fn(Vec<(String, Var)>) -> Box<dyn Optimizer>,
    kind: &str,
) -> Result<()> {
    let p = Problem::new(dtype);
    // A second parameter b, entering the loss as Σ b², makes the state hold two entries.
    let step = |w: &Var, b: &Var, opt: &mut dyn Optimizer| -> Result<()> {
        let r = (p.x.matmul(&w.as_tensor().t()?)? - &p.y)?;
        let loss = (r.sqr()?.sum_all()? + b.as_tensor().sqr()?.sum_all()?)?;
        opt.step(&loss.backward()?)
    };
    let b0 = formula(&[3], dtype, |i| 1.0 - 0.4 * i as f64);

    let w = Problem::w0(dtype)?;
    let b = Var::from_tensor(&b0)?;
    let mut opt = make(vec![("b".into(), b.clone()), ("w".into(), w.clone())]);
    for _ in 0..5 {
        step(&w, &b, opt.as_mut())?;
    }

    let w1 = Problem::w0(dtype)?;
    let b1 = Var::from_tensor(&b0)?;
    let mut opt1 = make(vec![("b".into(), b1.clone()), ("w".into(), w1.clone())]);
    for _ in 0..3 {
        step(&w1, &b1, opt1.as_mut())?;
    }
    let dir = temp_dir(kind);
    opt1.state().save(&dir, "opt")?;
    let st = OptimizerState::load(&dir, "opt", &Device::Cpu)?;
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(st.kind, kind);
    assert_eq!(st.steps.get("w"), Some(&3));
    assert_eq!(st.steps.get("b"), Some(&3));

    let w2 = Var::from_tensor(&w1.as_tensor().copy()?)?;
    let b2 = Var::from_tensor(&b1.as_tensor().copy()?)?;
    let mut opt2 = make(vec![("b".into(), b2.clone()), ("w".into(), w2.clone())]);
    opt2.load_state(&st)?;
    for _ in 0..2 {
        step(&w2, &b2, opt2.as_mut())?;
    }
    assert_close(
        &format!("{kind} {dtype:?} resumed w"),
        &values(w2.as_tensor()),
        &values(w.as_tensor()),
        0.0,
        0.0,
    );
    assert_close(
        &format!("{kind} {dtype:?} resumed b"),
        &values(b2.as_tensor()),
        &values(b.as_tensor()),
        0.0,
        0.0,
    );
    assert_eq!(opt2.state().steps.get("w"), Some(&5));

    // Without loading the state the continuation differs (the check above is not vacuous).
    let w3 = Var::from_tensor(&w1.as_tensor().copy()?)?;
    let b3 = Var::from_tensor(&b1.as_tensor().copy()?)?;
    let mut opt3 = make(vec![("b".into(), b3.clone()), ("w".into(), w3.clone())]);
    for _ in 0..2 {
        step(&w3, &b3, opt3.as_mut())?;
    }
    assert_ne!(values(w3.as_tensor()), values(w.as_tensor()));
    Ok(())
}

#[test]
fn state_save_load_resumes_identically() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        check_resume(dtype, |v| Box::new(Sgd::new(v, sgd(0.9, 0.0, true))), "sgd")?;
        check_resume(dtype, |v| Box::new(AdamW::new(v, adamw())), "adamw")?;
    }
    Ok(())
}

#[test]
fn saving_an_empty_state_replaces_an_older_one() -> Result<()> {
    // An optimizer that has not stepped yet saves an empty state over an older checkpoint under
    // the same stem: loading must give the empty state, not the older tensors.
    let p = Problem::new(DType::F64);
    let w = Problem::w0(DType::F64)?;
    let mut old = Sgd::new(vec![("w".into(), w.clone())], sgd(0.9, 0.0, false));
    p.step(&w, &mut old)?;
    let dir = temp_dir("empty");
    old.state().save(&dir, "opt")?;
    assert_eq!(
        OptimizerState::load(&dir, "opt", &Device::Cpu)?
            .tensors
            .len(),
        1
    );
    let fresh = Sgd::new(vec![("w".into(), w.clone())], sgd(0.9, 0.0, false));
    fresh.state().save(&dir, "opt")?;
    let st = OptimizerState::load(&dir, "opt", &Device::Cpu)?;
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        st.tensors.is_empty(),
        "stale tensors: {:?}",
        st.tensors.keys()
    );
    assert!(st.steps.is_empty());
    Ok(())
}

#[test]
fn load_state_rejects_mismatches() -> Result<()> {
    let w = Problem::w0(DType::F64)?;
    let p = Problem::new(DType::F64);
    let mut a = AdamW::new(vec![("w".into(), w.clone())], adamw());
    p.step(&w, &mut a)?;
    let st = a.state();
    let mut s = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::default());
    assert!(s.load_state(&st).is_err(), "adamw state into sgd");
    // Same name, different shape.
    let v = Var::from_tensor(&Tensor::zeros((2, 2), DType::F64, &Device::Cpu)?)?;
    let mut a2 = AdamW::new(vec![("w".into(), v)], adamw());
    assert!(a2.load_state(&st).is_err(), "shape mismatch");
    Ok(())
}

#[test]
fn parameters_without_gradient_are_skipped() -> Result<()> {
    // `u` is not in the graph: it must not move (not even by weight decay) and its state and step
    // count must not advance, as PyTorch skips parameters whose .grad is None.
    let p = Problem::new(DType::F64);
    for kind in ["sgd", "adamw"] {
        let w = Problem::w0(DType::F64)?;
        let u = Var::from_tensor(&Tensor::ones(3, DType::F64, &Device::Cpu)?)?;
        let vars = vec![("u".to_string(), u.clone()), ("w".to_string(), w.clone())];
        let mut opt: Box<dyn Optimizer> = if kind == "sgd" {
            Box::new(Sgd::new(vars, SgdConfig::default()))
        } else {
            Box::new(AdamW::new(vars, adamw()))
        };
        p.step(&w, opt.as_mut())?;
        assert_eq!(values(u.as_tensor()), vec![1.0; 3], "{kind}");
        let st = opt.state();
        assert_eq!(st.steps.get("u"), None, "{kind}");
        assert_eq!(st.steps.get("w"), Some(&1), "{kind}");
        assert!(!st.tensors.keys().any(|k| k.starts_with("u.")), "{kind}");
    }
    Ok(())
}

#[test]
fn non_finite_gradient_refuses_the_whole_update() -> Result<()> {
    let a = Var::from_tensor(&Tensor::ones(2, DType::F64, &Device::Cpu)?)?;
    let b = Var::from_tensor(&Tensor::ones(2, DType::F64, &Device::Cpu)?)?;
    let loss = (a.as_tensor().sum_all()? + b.as_tensor().sum_all()?)?;
    let mut grads = loss.backward()?;
    grads.insert(b.as_tensor(), Tensor::new(&[1.0, f64::NAN], &Device::Cpu)?);
    let mut opt = Sgd::new(
        vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        SgdConfig::default(),
    );
    let e = opt.step(&grads).expect_err("NaN gradient");
    assert!(e.to_string().contains("\"b\""), "{e}");
    assert_eq!(values(a.as_tensor()), vec![1.0, 1.0], "a must not move");
    Ok(())
}

/// Gradients that are exactly `ca` and `cb`: the loss Σ a⊙ca + Σ b⊙cb.
fn linear_grads(
    a: &Var,
    b: &Var,
    ca: &Tensor,
    cb: &Tensor,
) -> Result<candle_core::backprop::GradStore> {
    ((a.as_tensor() * ca)?.sum_all()? + (b.as_tensor() * cb)?.sum_all()?)?.backward()
}

/// PyTorch 2.15 (CPU, float64), snippet:
/// ```python
/// import math, torch
/// a = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
/// b = torch.zeros(4, dtype=torch.float64, requires_grad=True)
/// a.grad = torch.tensor([math.sin(i + 0.5) for i in range(6)], dtype=torch.float64).reshape(2, 3)
/// b.grad = torch.tensor([0.5*i - 1.0 for i in range(4)], dtype=torch.float64)
/// n = torch.nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
/// print(n.item(), a.grad.flatten().tolist(), b.grad.tolist())
/// ```
#[test]
fn clip_grad_norm_matches_pytorch() -> Result<()> {
    let norm_ref = 2.158567848693e+00;
    #[rustfmt::skip]
    let ga_ref = [
        2.221034269509e-01, 4.621094143965e-01, 2.772541373727e-01,
        -1.625073149286e-01, -4.528602913254e-01, -3.268556043499e-01,
    ];
    let gb_ref = [
        -4.632699117313e-01,
        -2.316349558657e-01,
        0.0,
        2.316349558657e-01,
    ];
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::zeros((2, 3), DType::F64, &dev)?)?;
    let b = Var::from_tensor(&Tensor::zeros(4, DType::F64, &dev)?)?;
    let ca = formula(&[2, 3], DType::F64, |i| (i as f64 + 0.5).sin());
    let cb = formula(&[4], DType::F64, |i| 0.5 * i as f64 - 1.0);
    let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];

    let mut grads = linear_grads(&a, &b, &ca, &cb)?;
    let n = global_grad_norm(&grads, &vars)?;
    assert_close("global norm", &[n], &[norm_ref], 1e-12, 0.0);
    let n = clip_grad_norm(&mut grads, &vars, 1.0)?;
    assert_close("returned norm", &[n], &[norm_ref], 1e-12, 0.0);
    assert_tensor_close(
        "clipped a",
        grads.get(a.as_tensor()).unwrap(),
        &ga_ref,
        1e-10,
        1e-13,
    );
    assert_tensor_close(
        "clipped b",
        grads.get(b.as_tensor()).unwrap(),
        &gb_ref,
        1e-10,
        1e-13,
    );

    // Below the threshold nothing changes (PyTorch multiplies by clamp(coef, max=1) = 1).
    let mut grads = linear_grads(&a, &b, &ca, &cb)?;
    let n = clip_grad_norm(&mut grads, &vars, 10.0)?;
    assert_close("returned norm (no clip)", &[n], &[norm_ref], 1e-12, 0.0);
    assert_tensor_close(
        "a unchanged",
        grads.get(a.as_tensor()).unwrap(),
        &values(&ca),
        0.0,
        0.0,
    );
    assert_tensor_close(
        "b unchanged",
        grads.get(b.as_tensor()).unwrap(),
        &values(&cb),
        0.0,
        0.0,
    );

    // A parameter without a gradient is ignored; one with NaN is named in the error.
    let c = Var::from_tensor(&Tensor::zeros(2, DType::F64, &dev)?)?;
    let mut vars3 = vars.clone();
    vars3.push(("c".to_string(), c));
    let grads = linear_grads(&a, &b, &ca, &cb)?;
    assert_close(
        "norm, c absent",
        &[global_grad_norm(&grads, &vars3)?],
        &[norm_ref],
        1e-12,
        0.0,
    );
    let mut grads = linear_grads(&a, &b, &ca, &cb)?;
    grads.insert(
        b.as_tensor(),
        Tensor::new(&[0.0, f64::INFINITY, 0.0, 0.0], &dev)?,
    );
    let e = clip_grad_norm(&mut grads, &vars, 1.0).expect_err("infinite gradient");
    assert!(e.to_string().contains("\"b\""), "{e}");
    Ok(())
}
