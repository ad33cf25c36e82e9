//! Exact modality Shapley values against closed forms and the Shapley axioms.

mod common;

use candle_core::Tensor;
use common::{assert_all_close, assert_close, col, LinearConcat};
use modbal_contrib::shapley::{
    modality_shapley, modality_shapley_per_sample, shapley_from_subset_values,
};
use modbal_contrib::{ContribError, ShapleyConfig, ShapleyValueFn};

const LN3: f64 = 1.098_612_288_668_109_8; // ln 3

fn ll() -> ShapleyConfig {
    ShapleyConfig::default()
}

fn acc() -> ShapleyConfig {
    ShapleyConfig {
        value: ShapleyValueFn::Accuracy,
    }
}

/// The model of the CAL test: logit(1) = a + v, logit(0) = 0; a = [ln3, ln3], v = [ln3, −ln3],
/// labels [1, 1].
fn tiny() -> (LinearConcat, Vec<Tensor>, Vec<u32>) {
    let model = LinearConcat::new(&[1, 1], &[&[0.0, 0.0], &[1.0, 1.0]], &[0.0, 0.0]);
    (model, vec![col(&[LN3, LN3]), col(&[LN3, -LN3])], vec![1, 1])
}

/// Log-likelihood value:
/// v(∅) = ln ½ (logits [0, 0]); v({a}) = ln ¾ (both [0, ln3]);
/// v({v}) = ½(ln ¾ + ln ¼); v(all) = ½(ln 0.9 + ln ½).
/// Closed form for M = 2: φ_a = ½[v(a) − v(∅)] + ½[v(av) − v(v)], φ_v symmetric.
#[test]
fn two_modalities_log_likelihood() {
    let (model, f, y) = tiny();
    let v0 = 0.5f64.ln();
    let va = 0.75f64.ln();
    let vv = 0.5 * (0.75f64.ln() + 0.25f64.ln());
    let vav = 0.5 * (0.9f64.ln() + 0.5f64.ln());
    let r = modality_shapley(&model, &f, &y, &ll()).unwrap();
    let subset_values: Vec<f64> = r.subsets.iter().map(|s| s.value).collect();
    assert_all_close(
        &subset_values,
        &[v0, va, vv, vav],
        1e-12,
        "v(S) in mask order",
    );
    assert_eq!(r.subsets[3].modalities, vec![0, 1]);
    let phi_a = 0.5 * (va - v0) + 0.5 * (vav - vv);
    let phi_v = 0.5 * (vv - v0) + 0.5 * (vav - va);
    assert_all_close(&r.values, &[phi_a, phi_v], 1e-12, "phi");
    assert_close(r.values.iter().sum(), vav - v0, 1e-12, "efficiency");
}

/// Accuracy value (ties → class 0):
/// v(∅) = 0 ([0, 0] predicts 0 ≠ 1); v({a}) = 1; v({v}) = ½ (second sample [0, −ln3] wrong);
/// v(all) = ½ (second sample [0, 0] ties → 0, wrong).
/// φ_a = ½(1 − 0) + ½(½ − ½) = ½; φ_v = ½(½ − 0) + ½(½ − 1) = 0.
#[test]
fn two_modalities_accuracy() {
    let (model, f, y) = tiny();
    let r = modality_shapley(&model, &f, &y, &acc()).unwrap();
    let subset_values: Vec<f64> = r.subsets.iter().map(|s| s.value).collect();
    assert_all_close(&subset_values, &[0.0, 1.0, 0.5, 0.5], 0.0, "v(S)");
    assert_all_close(&r.values, &[0.5, 0.0], 1e-15, "phi");
    assert_eq!(r.value_fn, ShapleyValueFn::Accuracy);
}

/// v(S) = (Σ_{i∈S} w_i)² with w = (1, 2, 3): expanding, each player gets its own w_i² plus half
/// of every pair term 2 w_i w_j, i.e. φ_i = w_i · Σ_j w_j = 6 w_i → (6, 12, 18); Σ = 36 = v(all).
#[test]
fn three_players_quadratic_game() {
    let w = [1.0, 2.0, 3.0];
    let v: Vec<f64> = (0..8usize)
        .map(|s| {
            let t: f64 = (0..3).filter(|i| s & (1 << i) != 0).map(|i| w[i]).sum();
            t * t
        })
        .collect();
    let phi = shapley_from_subset_values(3, &v).unwrap();
    assert_all_close(&phi, &[6.0, 12.0, 18.0], 1e-12, "phi");
}

/// Against the explicit M = 3 formula
/// φ_i = ⅓[v(i) − v(∅)] + ⅙[v(ij) − v(j)] + ⅙[v(ik) − v(k)] + ⅓[v(ijk) − v(jk)]
/// on arbitrary subset values.
#[test]
fn three_players_explicit_formula() {
    let v = [0.3, -1.2, 0.7, 2.5, 0.1, 1.9, -0.4, 3.3];
    let phi = shapley_from_subset_values(3, &v).unwrap();
    let bit = |i: usize| 1usize << i;
    for i in 0..3 {
        let (j, k) = ((i + 1) % 3, (i + 2) % 3);
        let expect = (v[bit(i)] - v[0]) / 3.0
            + (v[bit(i) | bit(j)] - v[bit(j)]) / 6.0
            + (v[bit(i) | bit(k)] - v[bit(k)]) / 6.0
            + (v[7] - v[bit(j) | bit(k)]) / 3.0;
        assert_close(phi[i], expect, 1e-12, &format!("phi_{i}"));
    }
    assert_close(phi.iter().sum(), v[7] - v[0], 1e-12, "efficiency");
}

/// Three modalities on a model whose head ignores modality 2 (zero weights: null player) and
/// treats modalities 0 and 1 alike with identical features (symmetry).
#[test]
fn three_modalities_axioms_on_a_model() {
    let model = LinearConcat::new(
        &[1, 1, 1],
        &[&[0.0, 0.0, 0.0], &[1.0, 1.0, 0.0]],
        &[0.3, 0.0],
    );
    let same = col(&[LN3, -LN3, 0.5]);
    let f = vec![same.clone(), same, col(&[5.0, -2.0, 1.0])];
    let y = [1u32, 0, 1];
    for cfg in [ll(), acc()] {
        let r = modality_shapley(&model, &f, &y, &cfg).unwrap();
        let all = r.subsets[7].value;
        let empty = r.subsets[0].value;
        assert_close(r.values.iter().sum(), all - empty, 1e-12, "efficiency");
        assert_close(r.values[0], r.values[1], 1e-12, "symmetry");
        assert_close(r.values[2], 0.0, 1e-12, "null player");

        let per = modality_shapley_per_sample(&model, &f, &y, &cfg).unwrap();
        assert_eq!(per.values.len(), 3);
        for (i, row) in per.values.iter().enumerate() {
            assert_close(row[2], 0.0, 1e-12, &format!("null player, sample {i}"));
            assert_close(row[0], row[1], 1e-12, &format!("symmetry, sample {i}"));
        }
        // Linearity: the split-level φ is the mean of the per-sample φ.
        for m in 0..3 {
            let mean = per.values.iter().map(|r| r[m]).sum::<f64>() / 3.0;
            assert_close(
                mean,
                r.values[m],
                1e-12,
                &format!("mean of per-sample, m = {m}"),
            );
        }
    }
}

/// Per-sample efficiency on the 2-modality model: Σ_m φ_{i,m} = v_i(all) − v_i(∅).
/// sample 1: ln 0.9 − ln ½; sample 2: ln ½ − ln ½ = 0.
#[test]
fn per_sample_efficiency() {
    let (model, f, y) = tiny();
    let per = modality_shapley_per_sample(&model, &f, &y, &ll()).unwrap();
    assert_close(
        per.values[0].iter().sum(),
        0.9f64.ln() - 0.5f64.ln(),
        1e-12,
        "sample 1",
    );
    assert_close(per.values[1].iter().sum(), 0.0, 1e-12, "sample 2");
}

/// One modality: φ = v(all) − v(∅).
#[test]
fn single_modality() {
    let phi = shapley_from_subset_values(1, &[0.25, 1.0]).unwrap();
    assert_all_close(&phi, &[0.75], 0.0, "phi");
}

#[test]
fn more_than_four_modalities_is_an_error() {
    let model = LinearConcat::new(&[1; 5], &[&[0.0; 5], &[1.0; 5]], &[0.0, 0.0]);
    let f: Vec<Tensor> = (0..5).map(|_| col(&[1.0])).collect();
    let e = modality_shapley(&model, &f, &[1], &ll()).unwrap_err();
    assert!(
        matches!(e, ContribError::Param(ref m) if m.contains("M = 5")),
        "{e}"
    );
    assert!(matches!(
        shapley_from_subset_values(5, &[0.0; 32]),
        Err(ContribError::Param(_))
    ));
    assert!(matches!(
        shapley_from_subset_values(2, &[0.0; 3]),
        Err(ContribError::Input(_))
    ));
}
