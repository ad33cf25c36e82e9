//! Tests of `modbal_info::club`. Every reference number names its source: a closed form derived
//! in the comment next to it, or a plain-Rust re-implementation of the official CLUB code
//! (`Linear95/CLUB`, `mi_estimators.py`).
//!
//! Closed forms used below, for x ~ N(0, I_d), y = ρ·x + √(1−ρ²)·ε (per dimension):
//! * true MI: `I = −(d/2)·ln(1−ρ²)`.
//! * CLUB with q = N(μ = ρx, σ²) (μ is the MLE's conditional mean whatever σ²):
//!   `E(y_i − μ_i)² = 1−ρ²`, `E(y_j − μ_i)² = 1+ρ²` for j ≠ i (independent), so
//!   `I_CLUB = d·[(1+ρ²) − (1−ρ²)]/(2σ²) = d·ρ²/σ²`. With the exact σ² = 1−ρ² this is
//!   `d·ρ²/(1−ρ²) ≥ I`; q's tanh keeps σ² > e⁻¹, so the reachable optimum is σ² = max(1−ρ², e⁻¹).
//! * expected log-likelihood of that q: `−(d/2)·[ln 2π + ln σ² + (1−ρ²)/σ²]` (= −h(Y|X) when
//!   σ² = 1−ρ²).

use candle_core::{DType, Device, Tensor, Var};
use modbal_info::club::{Club, ClubConfig};
use modbal_info::InfoError;
use modbal_tensors::{AdamWConfig, Linear, OptimizerConfig, ParamStore, SeededRng};

fn cpu() -> Device {
    Device::Cpu
}

/// `n` samples of x ~ N(0, I_d), y = ρ·x + √(1−ρ²)·ε, as the official `sample_correlated_gaussian`.
fn correlated(rng: &mut SeededRng, n: usize, d: usize, rho: f64, dtype: DType) -> (Tensor, Tensor) {
    let x = rng.normal_vec(n * d, 0.0, 1.0);
    let e = rng.normal_vec(n * d, 0.0, 1.0);
    let s = (1.0 - rho * rho).sqrt();
    let y: Vec<f64> = x.iter().zip(&e).map(|(a, b)| rho * a + s * b).collect();
    let x = Tensor::from_vec(x, (n, d), &cpu())
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let y = Tensor::from_vec(y, (n, d), &cpu())
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    (x, y)
}

fn scalar(t: &Tensor) -> f64 {
    assert_eq!(t.rank(), 0, "estimates are scalars, got {:?}", t.dims());
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// q trained with the default configuration (hidden 15, Adam lr 5e-3, k = 1) by `steps` calls of
/// `q_update` on fresh batches of 256.
fn trained_club(d: usize, rho: f64, seed: u64, steps: usize) -> Club {
    let mut rng = SeededRng::new(seed);
    let mut club = Club::new(ClubConfig::new(d, d), &mut rng, &cpu()).unwrap();
    for _ in 0..steps {
        let (x, y) = correlated(&mut rng, 256, d, rho, DType::F32);
        let loss = club.q_update(&x, &y).unwrap();
        assert!(loss.is_finite());
    }
    club
}

fn f64_club(d: usize, seed: u64) -> Club {
    let mut rng = SeededRng::new(seed);
    Club::with_dtype(ClubConfig::new(d, d), &mut rng, &cpu(), DType::F64).unwrap()
}

#[test]
fn club_upper_bounds_gaussian_mi_and_matches_its_closed_form() {
    for (k, &(d, rho)) in [(2usize, 0.5f64), (2, 0.8), (3, 0.5), (4, 0.8)]
        .iter()
        .enumerate()
    {
        let club = trained_club(d, rho, 10 + k as u64, 2000);
        let mut rng = SeededRng::new(100 + k as u64);
        // Fresh samples, never seen by q. At N = 4096 the estimate's sample std is ~1.7% of the
        // value (measured over 20 batches); at N = 16384 about 0.9%.
        let (x, y) = correlated(&mut rng, 16384, d, rho, DType::F32);
        let est = scalar(&club.club(&x, &y).unwrap());
        let ll = scalar(&club.log_likelihood(&x, &y).unwrap());
        let df = d as f64;
        let true_mi = -df / 2.0 * (1.0 - rho * rho).ln();
        let sigma2 = (1.0 - rho * rho).max((-1.0f64).exp());
        let closed_club = df * rho * rho / sigma2;
        let closed_ll = -df / 2.0
            * ((2.0 * std::f64::consts::PI).ln() + sigma2.ln() + (1.0 - rho * rho) / sigma2);
        println!(
            "d={d} rho={rho}: true MI {true_mi:.4}, CLUB {est:.4} (closed form with exact q \
             {closed_club:.4}), log-lik {ll:.4} (closed form {closed_ll:.4})"
        );
        // Upper bound: the gap I_CLUB − I = d·[ρ²/(1−ρ²) + ½ln(1−ρ²)] is ≥ 0.12·d here, far
        // beyond the sampling error.
        assert!(
            est >= true_mi,
            "d={d} rho={rho}: CLUB {est} < true MI {true_mi}"
        );
        // Tightness w.r.t. the best reachable q: 5% (sampling ~1%, finite training ~2-4%).
        assert!(
            (est - closed_club).abs() <= 0.05 * closed_club,
            "d={d} rho={rho}: CLUB {est} vs closed form {closed_club}"
        );
        // q has learned the conditional (log-likelihood within 0.02 nats per dimension).
        assert!(
            (ll - closed_ll).abs() <= 0.02 * df,
            "d={d} rho={rho}: log-likelihood {ll} vs closed form {closed_ll}"
        );
        // CLUBSample and vCLUB estimate the same quantity (vCLUB on a sub-batch: it is N×N).
        let mut prng = SeededRng::new(7);
        let s = scalar(&club.club_sample(&x, &y, &mut prng).unwrap());
        assert!(
            (s - est).abs() <= 0.05 * closed_club,
            "CLUBSample {s} vs CLUB {est}"
        );
        let xs = x.narrow(0, 0, 512).unwrap();
        let ys = y.narrow(0, 0, 512).unwrap();
        let v = scalar(&club.vclub(&xs, &ys).unwrap());
        let c = scalar(&club.club(&xs, &ys).unwrap());
        assert!(
            (v - c).abs() <= 1e-4 * c.abs().max(1.0),
            "vCLUB {v} vs CLUB {c}"
        );
    }
}

#[test]
fn club_of_independent_variables_is_zero() {
    // Closed form: for independent x, y, E(y_j − μ_i)² = E(y_i − μ_i)² for ANY q, so the expected
    // CLUB is 0 exactly; sampling std at N = 16384 measured ≈ 1.5e-4.
    let d = 3;
    let club = trained_club(d, 0.0, 3, 1000);
    let mut rng = SeededRng::new(33);
    let (x, y) = correlated(&mut rng, 16384, d, 0.0, DType::F32);
    let est = scalar(&club.club(&x, &y).unwrap());
    println!("independent d={d}: true MI 0, CLUB {est:.6}");
    assert!(est.abs() < 2e-3, "CLUB of independent variables {est}");
}

#[test]
fn club_matches_the_official_formula() {
    // Reference: the official `CLUB.forward` and `loglikeli` (mi_estimators.py), re-implemented
    // with plain loops over the N×N×D terms from this q's μ and logvar:
    //   positive = -(mu - y)**2 / 2. / logvar.exp()
    //   negative = -((y[None] - mu[:, None])**2).mean(dim=1) / 2. / logvar.exp()
    //   club     = (positive.sum(-1) - negative.sum(-1)).mean()
    //   loglikeli = (-(mu - y)**2 / logvar.exp() - logvar).sum(1).mean(0)
    let (n, d) = (16, 3);
    let club = f64_club(d, 4);
    let mut rng = SeededRng::new(5);
    let (x, y) = correlated(&mut rng, n, d, 0.7, DType::F64);
    let (mu, lv) = club.mu_logvar(&x).unwrap();
    let (mu, lv, yv) = (values(&mu), values(&lv), values(&y));
    assert!(
        lv.iter().all(|v| v.abs() < 1.0),
        "tanh keeps logvar in (-1, 1)"
    );
    let mut official_club = 0.0;
    let mut official_ll = 0.0;
    for i in 0..n {
        for k in 0..d {
            let var = lv[i * d + k].exp();
            let m = mu[i * d + k];
            let pos = -(m - yv[i * d + k]).powi(2) / 2.0 / var;
            let neg =
                -(0..n).map(|j| (yv[j * d + k] - m).powi(2)).sum::<f64>() / n as f64 / 2.0 / var;
            official_club += (pos - neg) / n as f64;
            official_ll += (-(m - yv[i * d + k]).powi(2) / var - lv[i * d + k]) / n as f64;
        }
    }
    let est = scalar(&club.club(&x, &y).unwrap());
    assert!(
        (est - official_club).abs() < 1e-10,
        "{est} vs {official_club}"
    );
    // Ours = official loglikeli / 2 − (D/2)·ln 2π (documented convention).
    let ll = scalar(&club.log_likelihood(&x, &y).unwrap());
    let expected = official_ll / 2.0 - d as f64 / 2.0 * (2.0 * std::f64::consts::PI).ln();
    assert!((ll - expected).abs() < 1e-10, "{ll} vs {expected}");
    let loss = scalar(&club.learning_loss(&x, &y).unwrap());
    assert!((loss + ll).abs() < 1e-12);
}

#[test]
fn vclub_equals_club() {
    // UDI eq 8 with the Gaussian q: the normalisers of log q(y_i|x_i) and log q(y_j|x_i) cancel,
    // so vCLUB = CLUB exactly (up to rounding).
    let (n, d) = (64, 3);
    for dtype in [DType::F64, DType::F32] {
        let mut rng = SeededRng::new(8);
        let club = Club::with_dtype(ClubConfig::new(d, d), &mut rng, &cpu(), dtype).unwrap();
        let (x, y) = correlated(&mut rng, n, d, 0.6, dtype);
        let c = scalar(&club.club(&x, &y).unwrap());
        let v = scalar(&club.vclub(&x, &y).unwrap());
        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        assert!((c - v).abs() < tol, "{dtype:?}: club {c} vs vclub {v}");
        // The pairwise matrix's diagonal is log q(y_i|x_i).
        let m = club.log_prob_matrix(&x, &y).unwrap();
        assert_eq!(m.dims(), &[n, n]);
        let lp = values(&club.log_prob(&x, &y).unwrap());
        let mv = values(&m);
        for i in 0..n {
            assert!(
                (mv[i * n + i] - lp[i]).abs() < tol * 10.0,
                "{dtype:?} row {i}"
            );
        }
    }
}

#[test]
fn club_sample_is_unbiased_for_club() {
    // E_π[CLUBSample] = CLUB exactly (π(i) is uniform over 0..N). Average over 2000 permutations
    // and compare within 4 standard errors (sample std / √2000).
    let (n, d) = (16, 2);
    let club = f64_club(d, 9);
    let mut rng = SeededRng::new(10);
    let (x, y) = correlated(&mut rng, n, d, 0.8, DType::F64);
    let c = scalar(&club.club(&x, &y).unwrap());
    let draws: Vec<f64> = (0..2000u64)
        .map(|seed| scalar(&club.club_sample(&x, &y, &mut SeededRng::new(seed)).unwrap()))
        .collect();
    let m = draws.iter().sum::<f64>() / draws.len() as f64;
    let sd = (draws.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (draws.len() - 1) as f64).sqrt();
    let se = sd / (draws.len() as f64).sqrt();
    println!("CLUBSample mean {m:.5} ± {se:.5} (sd {sd:.4}) vs CLUB {c:.5}");
    assert!(sd > 1e-3, "club_sample should vary with the permutation");
    assert!((m - c).abs() <= 4.0 * se, "mean {m} vs club {c} (se {se})");
}

/// Every gradient in `grads` for `t` exists, is finite and not all zero.
fn assert_useful_grad(grads: &candle_core::backprop::GradStore, t: &Tensor, what: &str) {
    let g = grads
        .get(t)
        .unwrap_or_else(|| panic!("no gradient for {what}"));
    let v = values(g);
    assert!(
        v.iter().all(|a| a.is_finite()),
        "{what}: non-finite gradient"
    );
    assert!(v.iter().any(|a| *a != 0.0), "{what}: zero gradient");
}

#[test]
fn estimates_have_gradients_wrt_inputs_and_q() {
    let (n, d) = (12, 3);
    let club = f64_club(d, 11);
    let mut rng = SeededRng::new(12);
    let (x0, y0) = correlated(&mut rng, n, d, 0.5, DType::F64);
    let x = Var::from_tensor(&x0).unwrap();
    let y = Var::from_tensor(&y0).unwrap();
    let q_vars = club.params().trainable();
    assert_eq!(q_vars.len(), 8, "mu/logvar x fc1/fc2 x weight/bias");
    let estimates: Vec<(&str, Tensor)> = vec![
        ("club", club.club(x.as_tensor(), y.as_tensor()).unwrap()),
        (
            "club_sample",
            club.club_sample(x.as_tensor(), y.as_tensor(), &mut SeededRng::new(1))
                .unwrap(),
        ),
        ("vclub", club.vclub(x.as_tensor(), y.as_tensor()).unwrap()),
        (
            "learning_loss",
            club.learning_loss(x.as_tensor(), y.as_tensor()).unwrap(),
        ),
    ];
    for (name, est) in &estimates {
        let grads = est.backward().unwrap();
        assert_useful_grad(&grads, x.as_tensor(), &format!("{name} / x"));
        assert_useful_grad(&grads, y.as_tensor(), &format!("{name} / y"));
        for (pname, v) in &q_vars {
            assert_useful_grad(&grads, v.as_tensor(), &format!("{name} / {pname}"));
        }
    }
    // The O(N·D) rewrite's gradients against central finite differences (f64, h = 1e-6).
    let grads = estimates[0].1.backward().unwrap();
    for (var, base, name) in [(&x, &x0, "x"), (&y, &y0, "y")] {
        let g = values(grads.get(var.as_tensor()).unwrap());
        let b = values(base);
        for idx in [0, 5, 17, n * d - 1] {
            let h = 1e-6;
            let eval = |delta: f64| {
                let mut v = b.clone();
                v[idx] += delta;
                let t = Tensor::from_vec(v, (n, d), &cpu()).unwrap();
                let (xx, yy) = if name == "x" {
                    (t, y0.clone())
                } else {
                    (x0.clone(), t)
                };
                scalar(&club.club(&xx, &yy).unwrap())
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            assert!(
                (fd - g[idx]).abs() <= 1e-6 * fd.abs().max(1.0),
                "d club / d {name}[{idx}]: autodiff {} vs finite difference {fd}",
                g[idx]
            );
        }
    }
}

#[test]
fn q_update_moves_only_q_and_model_steps_never_move_q() {
    let d = 3;
    let mut rng = SeededRng::new(13);
    let cfg = ClubConfig {
        q_steps: 3,
        ..ClubConfig::new(d, d)
    };
    let mut club = Club::new(cfg, &mut rng, &cpu()).unwrap();
    // A stand-in "follower model": f_m = Linear(input), with its own store and optimizer.
    let model_store = ParamStore::new();
    let layer = Linear::new(
        &model_store.root(DType::F32, &cpu()).pp("follower"),
        d,
        d,
        &mut rng,
    )
    .unwrap();
    let mut model_opt = OptimizerConfig::Sgd(Default::default())
        .build(model_store.trainable())
        .unwrap();
    let (f_a, input) = correlated(&mut rng, 64, d, 0.9, DType::F32);
    let f_a = Var::from_tensor(&f_a).unwrap();
    let model_before = model_store.snapshot().unwrap();
    let fa_before = values(f_a.as_tensor());
    let q_before = club.params().snapshot().unwrap();

    // k q-steps on (detached) features: q moves, the model and the features do not.
    let f_m = layer.forward(&input).unwrap();
    let loss = club.q_update(f_a.as_tensor(), &f_m).unwrap();
    assert!(loss.is_finite());
    for (name, t) in model_store.snapshot().unwrap() {
        assert_eq!(values(&t), values(&model_before[&name]), "{name} moved");
    }
    assert_eq!(values(f_a.as_tensor()), fa_before);
    let q_after = club.params().snapshot().unwrap();
    for (name, t) in &q_after {
        assert_ne!(values(t), values(&q_before[name]), "{name} did not move");
    }
    let steps = club.optimizer().state().steps;
    assert!(steps.values().all(|&s| s == 3), "q_steps = 3: {steps:?}");

    // A model step on the estimate: its GradStore holds q's gradients too, but the model's
    // optimizer only knows the model's vars, so q stays put while the model moves.
    let f_m = layer.forward(&input).unwrap();
    let est = club.vclub(&f_a.as_tensor().detach(), &f_m).unwrap();
    let grads = est.backward().unwrap();
    let (_, qv) = &club.params().trainable()[0];
    assert!(
        grads.get(qv.as_tensor()).is_some(),
        "estimate has q gradients"
    );
    model_opt.step(&grads).unwrap();
    for (name, t) in club.params().snapshot().unwrap() {
        assert_eq!(
            values(&t),
            values(&q_after[&name]),
            "model step moved {name}"
        );
    }
    assert_ne!(
        values(&model_store.snapshot().unwrap()["follower.weight"]),
        values(&model_before["follower.weight"]),
        "the model should have moved"
    );
}

#[test]
fn same_seed_same_init_and_same_club_sample() {
    let d = 4;
    let make = |seed| Club::new(ClubConfig::new(d, d), &mut SeededRng::new(seed), &cpu()).unwrap();
    let (a, b, c) = (make(21), make(21), make(22));
    let (sa, sb, sc) = (
        a.params().snapshot().unwrap(),
        b.params().snapshot().unwrap(),
        c.params().snapshot().unwrap(),
    );
    let names: Vec<&String> = sa.keys().collect();
    assert_eq!(
        names,
        [
            "club.logvar.fc1.bias",
            "club.logvar.fc1.weight",
            "club.logvar.fc2.bias",
            "club.logvar.fc2.weight",
            "club.mu.fc1.bias",
            "club.mu.fc1.weight",
            "club.mu.fc2.bias",
            "club.mu.fc2.weight"
        ]
    );
    // hidden 15 → 7 units: fc1 weight [7, d].
    assert_eq!(sa["club.mu.fc1.weight"].dims(), &[7, d]);
    assert_eq!(sa["club.logvar.fc2.weight"].dims(), &[d, 7]);
    for (name, t) in &sa {
        assert_eq!(values(t), values(&sb[name]), "{name}");
    }
    assert!(sa.iter().any(|(n, t)| values(t) != values(&sc[n])));
    let (x, y) = correlated(&mut SeededRng::new(23), 32, d, 0.5, DType::F32);
    let s1 = scalar(&a.club_sample(&x, &y, &mut SeededRng::new(5)).unwrap());
    let s2 = scalar(&b.club_sample(&x, &y, &mut SeededRng::new(5)).unwrap());
    assert_eq!(s1, s2);
    let s3 = scalar(&a.club_sample(&x, &y, &mut SeededRng::new(6)).unwrap());
    assert_ne!(s1, s3);
}

fn expect_input(r: modbal_info::Result<Tensor>, needles: &[&str]) {
    match r {
        Err(InfoError::Input(m)) => {
            for n in needles {
                assert!(m.contains(n), "message {m:?} lacks {n:?}");
            }
        }
        Err(e) => panic!("expected InfoError::Input, got {e:?}"),
        Ok(t) => panic!("expected an error, got {t:?}"),
    }
}

#[test]
fn bad_input_and_config_are_errors() {
    let club = Club::new(ClubConfig::new(3, 2), &mut SeededRng::new(1), &cpu()).unwrap();
    let t = |n: usize, d: usize| Tensor::zeros((n, d), DType::F32, &cpu()).unwrap();
    // Different N.
    expect_input(club.club(&t(8, 3), &t(7, 2)), &["[8, 3]", "[7, 2]"]);
    expect_input(
        club.learning_loss(&t(8, 3), &t(7, 2)),
        &["[8, 3]", "[7, 2]"],
    );
    // Dimensions that disagree with the configuration.
    expect_input(club.club(&t(8, 4), &t(8, 2)), &["[8, 4]", "x_dim"]);
    expect_input(club.vclub(&t(8, 3), &t(8, 3)), &["[8, 3]", "y_dim"]);
    expect_input(
        club.club(&Tensor::zeros(8, DType::F32, &cpu()).unwrap(), &t(8, 2)),
        &["[8]"],
    );
    // N = 1: fine for the likelihood, an error for the contrastive estimators.
    assert!(club.log_likelihood(&t(1, 3), &t(1, 2)).is_ok());
    expect_input(club.club(&t(1, 3), &t(1, 2)), &["at least 2", "[1, 3]"]);
    expect_input(
        club.club_sample(&t(1, 3), &t(1, 2), &mut SeededRng::new(0)),
        &["at least 2"],
    );
    expect_input(club.vclub(&t(1, 3), &t(1, 2)), &["at least 2"]);
    expect_input(club.club(&t(0, 3), &t(0, 2)), &["empty"]);
    // NaN / Inf.
    let nan_x = Tensor::new(&[[0f32, f32::NAN, 1.0], [1.0, 2.0, 3.0]], &cpu()).unwrap();
    expect_input(club.club(&nan_x, &t(2, 2)), &["x", "NaN"]);
    let inf_y = Tensor::new(&[[0f32, f32::INFINITY], [1.0, 2.0]], &cpu()).unwrap();
    expect_input(club.club(&t(2, 3), &inf_y), &["y", "NaN or infinite"]);
    let mut club_mut = Club::new(ClubConfig::new(3, 2), &mut SeededRng::new(1), &cpu()).unwrap();
    assert!(matches!(
        club_mut.q_update(&nan_x, &t(2, 2)),
        Err(InfoError::Input(_))
    ));
    // Wrong dtype.
    let x64 = Tensor::zeros((4, 3), DType::F64, &cpu()).unwrap();
    expect_input(club.club(&x64, &t(4, 2)), &["F64", "F32"]);

    // Configuration errors.
    let param_err = |cfg: ClubConfig| {
        matches!(
            Club::new(cfg, &mut SeededRng::new(0), &cpu()),
            Err(InfoError::Param(_))
        )
    };
    assert!(param_err(ClubConfig::new(0, 2)));
    assert!(param_err(ClubConfig::new(3, 0)));
    assert!(param_err(ClubConfig {
        hidden: 1,
        ..ClubConfig::new(3, 2)
    }));
    assert!(param_err(ClubConfig {
        q_steps: 0,
        ..ClubConfig::new(3, 2)
    }));
    assert!(param_err(ClubConfig {
        q_optimizer: OptimizerConfig::Adamw(AdamWConfig {
            lr: -1.0,
            ..AdamWConfig::default()
        }),
        ..ClubConfig::new(3, 2)
    }));
    assert!(matches!(
        Club::with_dtype(
            ClubConfig::new(3, 2),
            &mut SeededRng::new(0),
            &cpu(),
            DType::U32
        ),
        Err(InfoError::Param(_))
    ));
}

#[test]
fn defaults_are_documented_values() {
    let cfg = ClubConfig::new(5, 6);
    assert_eq!(
        (cfg.x_dim, cfg.y_dim, cfg.hidden, cfg.q_steps),
        (5, 6, 15, 1)
    );
    assert_eq!(
        cfg.q_optimizer,
        OptimizerConfig::Adamw(AdamWConfig {
            lr: 5e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0
        })
    );
    assert!(cfg.validate().is_ok());
}
