//! Fusion heads against closed forms computed by hand.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{randn, to_vec};
use modbal_encoders::{ConcatHead, FusionConfig, FusionHead, SumHead};
use modbal_tensors::{ParamStore, SeededRng};

const B: usize = 4;
const C: usize = 3;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

/// Give every head parameter non-trivial values (biases start at zero) and return them by name.
fn randomise(
    store: &ParamStore,
    rng: &mut SeededRng,
) -> std::collections::BTreeMap<String, Vec<f32>> {
    store
        .trainable()
        .into_iter()
        .map(|(n, v)| {
            let t = randn(rng, v.dims());
            v.set(&t).unwrap();
            (n, to_vec(&t))
        })
        .collect()
}

/// `y[b][c] = Σ_j w[c][off + j] · f[b][j] + bias[c] · scale`, with `w` row-major `[C, ld]`.
fn affine(
    f: &[f32],
    d: usize,
    w: &[f32],
    ld: usize,
    off: usize,
    bias: &[f32],
    scale: f32,
) -> Vec<f32> {
    let mut y = vec![0.0; B * C];
    for b in 0..B {
        for c in 0..C {
            let mut s = bias[c] * scale;
            for j in 0..d {
                s += w[c * ld + off + j] * f[b * d + j];
            }
            y[b * C + c] = s;
        }
    }
    y
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn concat_per_modality_logits_are_weight_slices_and_sum_to_fused() {
    let dims = [3usize, 5, 2];
    let total: usize = dims.iter().sum();
    let mut rng = SeededRng::new(11);
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu).pp("head");
    let head = ConcatHead::new(&pb, &dims, C, &mut rng).unwrap();
    assert_eq!(head.fc.weight.dims(), &[C, total]);
    let p = randomise(&store, &mut rng);
    let (w, bias) = (&p["head.fc.weight"], &p["head.fc.bias"]);
    let feats: Vec<Tensor> = dims.iter().map(|&d| randn(&mut rng, &[B, d])).collect();
    let (fused, per) = head.forward(&feats).unwrap();
    assert_eq!(fused.dims(), &[B, C]);

    // Closed form: z = W·[f_1; f_2; f_3] + b.
    let mut cat = vec![0.0; B * total];
    let mut off = 0;
    for (f, &d) in feats.iter().zip(&dims) {
        let v = to_vec(f);
        for b in 0..B {
            cat[b * total + off..b * total + off + d].copy_from_slice(&v[b * d..(b + 1) * d]);
        }
        off += d;
    }
    assert_close(
        &to_vec(&fused),
        &affine(&cat, total, w, total, 0, bias, 1.0),
        1e-5,
        "fused",
    );

    // z_m = W[:, slice_m]·f_m + b/M, and Σ_m z_m = z.
    let mut sum = vec![0.0f32; B * C];
    let mut off = 0;
    for (m, (f, &d)) in feats.iter().zip(&dims).enumerate() {
        assert_eq!(head.slice(m), (off, d));
        let expect = affine(&to_vec(f), d, w, total, off, bias, 1.0 / 3.0);
        let got = to_vec(&per[m]);
        assert_close(&got, &expect, 1e-5, &format!("z_{m}"));
        for (s, g) in sum.iter_mut().zip(&got) {
            *s += g;
        }
        off += d;
    }
    assert_close(&sum, &to_vec(&fused), 1e-5, "sum of per-modality logits");
}

#[test]
fn concat_with_one_modality_is_a_linear_classifier() {
    let mut rng = SeededRng::new(3);
    let store = ParamStore::new();
    let head = FusionConfig::Concat
        .build(
            &store.root(DType::F32, &Device::Cpu).pp("head"),
            &names(1),
            &[4],
            C,
            &mut rng,
        )
        .unwrap();
    let p = randomise(&store, &mut rng);
    let f = randn(&mut rng, &[B, 4]);
    let (fused, per) = head.forward(std::slice::from_ref(&f)).unwrap();
    let expect = affine(
        &to_vec(&f),
        4,
        &p["head.fc.weight"],
        4,
        0,
        &p["head.fc.bias"],
        1.0,
    );
    assert_close(&to_vec(&fused), &expect, 1e-5, "fused");
    assert_close(&to_vec(&per[0]), &expect, 1e-5, "z_0");
}

#[test]
fn sum_head_is_sum_of_per_modality_linears() {
    let dims = [3usize, 6];
    let mut rng = SeededRng::new(5);
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu).pp("head");
    let head = SumHead::new(&pb, &names(2), &dims, C, &mut rng).unwrap();
    let p = randomise(&store, &mut rng);
    assert_eq!(
        p.keys().cloned().collect::<Vec<_>>(),
        [
            "head.m0.bias",
            "head.m0.weight",
            "head.m1.bias",
            "head.m1.weight"
        ]
    );
    let feats: Vec<Tensor> = dims.iter().map(|&d| randn(&mut rng, &[B, d])).collect();
    let (fused, per) = head.forward(&feats).unwrap();
    let mut sum = vec![0.0f32; B * C];
    for (m, (f, &d)) in feats.iter().zip(&dims).enumerate() {
        let expect = affine(
            &to_vec(f),
            d,
            &p[&format!("head.m{m}.weight")],
            d,
            0,
            &p[&format!("head.m{m}.bias")],
            1.0,
        );
        assert_close(&to_vec(&per[m]), &expect, 1e-5, &format!("z_{m}"));
        for (s, e) in sum.iter_mut().zip(&expect) {
            *s += e;
        }
    }
    assert_close(&to_vec(&fused), &sum, 1e-5, "fused");
}

#[test]
fn heads_reject_wrong_features_naming_shapes() {
    for fusion in [FusionConfig::Concat, FusionConfig::Sum] {
        let mut rng = SeededRng::new(0);
        let store = ParamStore::new();
        let head = fusion
            .build(
                &store.root(DType::F32, &Device::Cpu).pp("head"),
                &names(2),
                &[3, 4],
                C,
                &mut rng,
            )
            .unwrap();
        let a = randn(&mut rng, &[B, 3]);
        let bad = randn(&mut rng, &[B, 5]);
        let err = head.forward(&[a.clone(), bad]).unwrap_err().to_string();
        assert!(
            err.contains("[B, 3], [B, 4]") && err.contains("[4, 5]"),
            "{err}"
        );
        let err = head
            .forward(std::slice::from_ref(&a))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[[4, 3]]"), "{err}");
        let other_batch = randn(&mut rng, &[B + 1, 4]);
        let err = head.forward(&[a, other_batch]).unwrap_err().to_string();
        assert!(err.contains("[5, 4]"), "{err}");
    }
}
