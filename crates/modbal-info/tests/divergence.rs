//! KL / JS (UDI eq 4-5) and the softmax MI bound (IBML eq 10-11).

use candle_core::{Device, Tensor, Var};
use modbal_info::divergence::{
    js_divergence, js_divergence_logits, kl_divergence, kl_divergence_logits,
    softmax_mi_lower_bound, Reduction,
};
use modbal_tensors::{ops::softmax, SeededRng};

fn v1(t: Tensor) -> Vec<f64> {
    t.to_vec1().unwrap()
}
fn s(t: Tensor) -> f64 {
    t.to_scalar().unwrap()
}
fn probs(rows: &[&[f64]]) -> Tensor {
    let c = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), c), &Device::Cpu).unwrap()
}

#[test]
fn kl_and_js_match_scipy() {
    // SciPy 1.17.1:
    //   p = [0.1, 0.2, 0.7]; q = [0.3, 0.3, 0.4]
    //   scipy.stats.entropy(p, q)                            -> 0.20077680106635193
    //   scipy.spatial.distance.jensenshannon(p, q)**2        -> 0.05191225923810343
    //   jensenshannon([0.5, 0.5, 0], [0, 0.25, 0.75])**2     -> 0.45445436744939044
    let p = probs(&[&[0.1, 0.2, 0.7], &[0.5, 0.5, 0.0]]);
    let q = probs(&[&[0.3, 0.3, 0.4], &[0.0, 0.25, 0.75]]);
    let kl = v1(kl_divergence(&p, &q, Reduction::None).unwrap());
    assert!((kl[0] - 0.20077680106635193).abs() < 1e-12);
    let js = v1(js_divergence(&p, &q, Reduction::None).unwrap());
    assert!((js[0] - 0.05191225923810343).abs() < 1e-12);
    assert!((js[1] - 0.45445436744939044).abs() < 1e-12);
    let sum = s(js_divergence(&p, &q, Reduction::Sum).unwrap());
    assert!((sum - js[0] - js[1]).abs() < 1e-12);
}

#[test]
fn js_is_symmetric_zero_iff_equal_and_at_most_log2() {
    let mut rng = SeededRng::new(5);
    let dev = Device::Cpu;
    let za = rng
        .randn((200, 7), 0.0, 3.0, candle_core::DType::F64, &dev)
        .unwrap();
    let zb = rng
        .randn((200, 7), 0.0, 3.0, candle_core::DType::F64, &dev)
        .unwrap();
    let ab = v1(js_divergence_logits(&za, &zb, Reduction::None).unwrap());
    let ba = v1(js_divergence_logits(&zb, &za, Reduction::None).unwrap());
    for (x, y) in ab.iter().zip(&ba) {
        assert!((x - y).abs() < 1e-12);
        assert!(*x > 0.0 && *x <= std::f64::consts::LN_2 + 1e-12);
    }
    let aa = v1(js_divergence_logits(&za, &za, Reduction::None).unwrap());
    assert!(aa.iter().all(|x| x.abs() < 1e-12));
    // Disjoint supports attain log 2 (closed form).
    let p = probs(&[&[1.0, 0.0]]);
    let q = probs(&[&[0.0, 1.0]]);
    assert!(
        (s(js_divergence(&p, &q, Reduction::Mean).unwrap()) - std::f64::consts::LN_2).abs() < 1e-12
    );
    // Probability and logits forms agree.
    let pa = softmax(&za, 1).unwrap();
    let pb = softmax(&zb, 1).unwrap();
    let viaprob = v1(js_divergence(&pa, &pb, Reduction::None).unwrap());
    for (x, y) in ab.iter().zip(&viaprob) {
        assert!((x - y).abs() < 1e-9);
    }
    let kl_l = s(kl_divergence_logits(&za, &zb, Reduction::Mean).unwrap());
    let kl_p = s(kl_divergence(&pa, &pb, Reduction::Mean).unwrap());
    assert!((kl_l - kl_p).abs() < 1e-9 && kl_l > 0.0);
}

#[test]
fn gradients_reach_both_arguments() {
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::new(&[[0.3f64, -1.0, 2.0]], &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[[1.0f64, 0.5, -0.5]], &dev).unwrap()).unwrap();
    let js = js_divergence_logits(a.as_tensor(), b.as_tensor(), Reduction::Sum).unwrap();
    let g = js.backward().unwrap();
    for v in [&a, &b] {
        let gv: Vec<f64> = g
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(gv.iter().all(|x| x.is_finite()) && gv.iter().any(|x| x.abs() > 1e-6));
    }
}

#[test]
fn softmax_bound_closed_forms() {
    let dev = Device::Cpu;
    let labels = Tensor::new(&[0u32, 2, 1], &dev).unwrap();
    // Uniform logits: log(1/C) + log C = 0 exactly.
    let z0 = Tensor::zeros((3, 4), candle_core::DType::F64, &dev).unwrap();
    assert!(s(softmax_mi_lower_bound(&z0, &labels, Reduction::Mean).unwrap()).abs() < 1e-12);
    // Confident correct logits approach log C from below.
    let mut v = vec![0.0f64; 12];
    for (i, &y) in [0usize, 2, 1].iter().enumerate() {
        v[i * 4 + y] = 30.0;
    }
    let z = Tensor::from_vec(v, (3, 4), &dev).unwrap();
    let b = s(softmax_mi_lower_bound(&z, &labels, Reduction::Mean).unwrap());
    assert!(b < 4f64.ln() && b > 4f64.ln() - 1e-9, "{b}");
    // Errors name the shapes.
    let e = softmax_mi_lower_bound(&z, &Tensor::new(&[0u32], &dev).unwrap(), Reduction::Mean)
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels"), "{e}");
}

#[test]
fn bad_probabilities_are_rejected() {
    let p = probs(&[&[0.5, 0.6]]);
    let q = probs(&[&[0.5, 0.5]]);
    assert!(kl_divergence(&p, &q, Reduction::Mean)
        .unwrap_err()
        .to_string()
        .contains("sums to"));
    let n = probs(&[&[f64::NAN, 1.0]]);
    assert!(js_divergence(&n, &q, Reduction::Mean)
        .unwrap_err()
        .to_string()
        .contains("NaN"));
    let w = probs(&[&[0.5, 0.5, 0.0]]);
    assert!(js_divergence(&w, &q, Reduction::Mean).is_err());
}
