//! ARM's MIV (eq 5-13, 16) on (numerically) one-hot predictions, where the soft estimators
//! reduce to the plug-in NMI / NCMI of the argmax labels and the quantities have closed forms.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{assert_all_close, assert_close, col, LinearConcat};
use modbal_contrib::arm::{cmi_gap_loss, smooth_min};
use modbal_contrib::{ArmConfig, ArmFusionWeights, ArmMiv, ContribError};
use modbal_info::discrete::{ncmi, normalized_mutual_information, Normalization};

/// Logit margin: softmax of (±L) rows is one-hot up to e^{−2L} ≈ 1e-52.
const L: f64 = 60.0;
const TOL: f64 = 1e-9;

/// `[N, 2]` logits whose softmax is the one-hot of `classes`.
fn one_hot_logits(classes: &[u32]) -> Tensor {
    let v: Vec<f64> = classes
        .iter()
        .flat_map(|&c| if c == 0 { [L, -L] } else { [-L, L] })
        .collect();
    Tensor::from_vec(v, (classes.len(), 2), &Device::Cpu).unwrap()
}

fn to2(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_vec2::<f64>().unwrap()
}

/// f = a = [0, 0, 1, 1] (fused and audio agree), v = [0, 1, 0, 1] (independent of f),
/// labels = f. p_f(y) = 1 for every sample.
/// NMI(f; a) = 1, NMI(f; v) = 0.
/// NCMI(f; v | a) = 0 (f is a function of a, H(f|a) = 0);
/// NCMI(f; a | v) = CMI / √(H(f|v) H(a|v)) = ln2 / √(ln2 · ln2) = 1.
/// II(f; v; a) = 0 − 0 = 0; II(f; a; v) = 1 − 1 = 0.
/// φ^MI = [1, 0]; φ^MI(X) = 1·min(1, 0) = 0; smooth: −ln((e^{−1} + e^{0})/2) = 0.3799.
/// φ^CMI(a) = 1·1 + p_v(y)·0 = 1, φ^CMI(v) = 1·0 + p_a(y)·0 = 0; φ^CMI(X) = ½; FW = [2, 0].
#[test]
fn informative_and_independent_modality() {
    let f = [0u32, 0, 1, 1];
    let a = [0u32, 0, 1, 1];
    let v = [0u32, 1, 0, 1];
    let miv = ArmMiv::new(
        &one_hot_logits(&f),
        &[one_hot_logits(&a), one_hot_logits(&v)],
        &f,
        ArmConfig::default(),
    )
    .unwrap();
    assert_eq!((miv.num_modalities(), miv.num_samples()), (2, 4));
    let r = miv.report().unwrap();
    assert_all_close(&r.nmi, &[1.0, 0.0], TOL, "NMI");
    assert_eq!((r.pairs[0].j, r.pairs[0].i), (0, 1));
    assert_close(r.pairs[0].ncmi, 1.0, TOL, "NCMI(f; a | v)");
    assert_close(r.pairs[1].ncmi, 0.0, TOL, "NCMI(f; v | a)");
    assert_close(r.pairs[0].interaction, 0.0, TOL, "II(f; a; v)");
    assert_close(r.pairs[1].interaction, 0.0, TOL, "II(f; v; a)");
    assert_all_close(&r.phi_mi, &[1.0, 0.0], TOL, "phi_MI");
    assert_close(r.phi_mi_joint, 0.0, TOL, "phi_MI(X)");
    let smooth = -(((-1.0f64).exp() + 1.0) / 2.0).ln();
    assert_close(r.phi_mi_joint_smooth, smooth, TOL, "phi_MI(X), smooth");
    assert_all_close(&r.phi_cmi, &[1.0, 0.0], TOL, "phi_CMI");
    assert_close(r.phi_cmi_joint, 0.5, TOL, "phi_CMI(X)");
    assert_all_close(&r.fusion_weights.weights, &[2.0, 0.0], TOL, "FW");
    assert!(!r.fusion_weights.fallback);
}

/// Redundant modalities with label noise: f = a = [0, 0, 1, 1], v = [1, 1, 0, 0] (a relabelling
/// of f), labels y = [0, 1, 1, 1] (sample 1 is mislabelled for every prediction).
/// NMI(f; a) = NMI(f; v) = 1; NCMI(f; · | ·) = 0 (f is a function of either) → II = 1 both ways.
/// p_f(y) = p_a(y) = [1, 0, 1, 1]; p_v(y) = [0, 1, 0, 0].
/// φ^MI_n(i) = p_f(y)·1 = [1, 0, 1, 1]; φ^MI_n(X) = same; smooth = p_f(y)·(−ln(2e^{−1}/2)) = p_f(y).
/// φ^CMI_n(a) = p_f(y)·1 + p_v(y)·1 = [1, 1, 1, 1]
/// φ^CMI_n(v) = p_f(y)·1 + p_a(y)·1 = [2, 0, 2, 2]
/// φ^CMI_n(X) = [1.5, 0.5, 1.5, 1.5]; FW_n = [[2/3, 4/3], [2, 0], [2/3, 4/3], [2/3, 4/3]]
/// batch: φ^CMI = [1, 1.5], φ^CMI(X) = 1.25, FW = [0.8, 1.2].
#[test]
fn interaction_terms_weighted_by_modality_label_probabilities() {
    let f = [0u32, 0, 1, 1];
    let v = [1u32, 1, 0, 0];
    let y = [0u32, 1, 1, 1];
    let miv = ArmMiv::new(
        &one_hot_logits(&f),
        &[one_hot_logits(&f), one_hot_logits(&v)],
        &y,
        ArmConfig::default(),
    )
    .unwrap();
    assert_all_close(
        &to2(&miv.interaction).concat(),
        &[0.0, 1.0, 1.0, 0.0],
        TOL,
        "II matrix",
    );
    let ps = miv.per_sample().unwrap();
    let pfy = [1.0, 0.0, 1.0, 1.0];
    for n in 0..4 {
        assert_all_close(&ps.phi_mi[n], &[pfy[n], pfy[n]], TOL, "phi_MI_n");
    }
    assert_all_close(&ps.phi_mi_joint, &pfy, TOL, "phi_MI_n(X)");
    let s = 1.0;
    assert_all_close(
        &ps.phi_mi_joint_smooth,
        &pfy.map(|p| p * s),
        TOL,
        "phi_MI_n(X), smooth",
    );
    let cmi: Vec<f64> = ps.phi_cmi.concat();
    assert_all_close(
        &cmi,
        &[1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 2.0],
        TOL,
        "phi_CMI_n",
    );
    assert_all_close(
        &ps.phi_cmi_joint,
        &[1.5, 0.5, 1.5, 1.5],
        TOL,
        "phi_CMI_n(X)",
    );
    let fw: Vec<f64> = ps.fusion_weights.concat();
    let (t, f43) = (2.0 / 3.0, 4.0 / 3.0);
    assert_all_close(&fw, &[t, f43, 2.0, 0.0, t, f43, t, f43], 1e-8, "FW_n");

    let r = miv.report().unwrap();
    assert_all_close(&r.phi_cmi, &[1.0, 1.5], TOL, "phi_CMI");
    assert_close(r.phi_cmi_joint, 1.25, TOL, "phi_CMI(X)");
    assert_all_close(&r.fusion_weights.weights, &[0.8, 1.2], 1e-8, "FW");
    assert_close(r.phi_mi_joint, 0.75, TOL, "mean phi_MI(X)");
    assert_close(
        r.phi_mi_joint_smooth,
        0.75 * s,
        TOL,
        "mean smooth phi_MI(X)",
    );
}

/// Fractional values: on one-hot predictions the soft terms equal modbal-info's plug-in
/// estimators on the argmax labels (an independent code path), and φ follows eq 6, 11-13.
#[test]
fn matches_plug_in_estimators_on_argmax_labels() {
    let f = [0u32, 0, 1, 1, 0, 1];
    let a = [0u32, 0, 1, 0, 0, 1];
    let v = [0u32, 1, 1, 1, 0, 0];
    let y = [0u32, 0, 1, 1, 1, 0];
    let miv = ArmMiv::new(
        &one_hot_logits(&f),
        &[one_hot_logits(&a), one_hot_logits(&v)],
        &y,
        ArmConfig::default(),
    )
    .unwrap();
    let g = Normalization::Geometric;
    let nmi = [
        normalized_mutual_information(&f, &a, g).unwrap(),
        normalized_mutual_information(&f, &v, g).unwrap(),
    ];
    let nc_va = ncmi(&f, &v, &a).unwrap(); // (j = v, i = a)
    let nc_av = ncmi(&f, &a, &v).unwrap(); // (j = a, i = v)
    assert!(
        nmi.iter()
            .chain([&nc_va, &nc_av])
            .all(|&x| x > 0.01 && x < 0.99),
        "the case must be non-degenerate: {nmi:?} {nc_va} {nc_av}"
    );
    let r = miv.report().unwrap();
    assert_all_close(&r.nmi, &nmi, 1e-9, "NMI vs plug-in");
    assert_close(r.pairs[0].ncmi, nc_av, 1e-9, "NCMI(f; a | v) vs plug-in");
    assert_close(r.pairs[1].ncmi, nc_va, 1e-9, "NCMI(f; v | a) vs plug-in");
    let ii_va = nmi[1] - nc_va;
    let ii_av = nmi[0] - nc_av;
    let ind = |p: &[u32], n: usize| if p[n] == y[n] { 1.0 } else { 0.0 };
    let ps = miv.per_sample().unwrap();
    for n in 0..6 {
        let pf = ind(&f, n);
        let phi_a = pf * nmi[0] + ind(&v, n) * ii_va;
        let phi_v = pf * nmi[1] + ind(&a, n) * ii_av;
        assert_all_close(
            &ps.phi_cmi[n],
            &[phi_a, phi_v],
            1e-9,
            &format!("phi_CMI_{n}"),
        );
        assert_close(
            ps.phi_mi_joint[n],
            pf * nmi[0].min(nmi[1]),
            1e-9,
            "phi_MI(X)",
        );
    }
}

/// Label-free inference: fixed weights scale the features; nothing else is needed.
#[test]
fn fusion_weights_apply_without_labels() {
    let fw = ArmFusionWeights::from_phi_cmi(&[1.0, 1.5], 1e-8).unwrap();
    assert_all_close(&fw.weights, &[0.8, 1.2], 1e-12, "FW");
    let feats = vec![
        Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(),
        Tensor::ones((2, 1), DType::F32, &Device::Cpu).unwrap(),
    ];
    let out = fw.apply_to_features(&feats).unwrap();
    assert_eq!(out[0].dims(), &[2, 3]);
    let a: Vec<f32> = out[0].flatten_all().unwrap().to_vec1().unwrap();
    let v: Vec<f32> = out[1].flatten_all().unwrap().to_vec1().unwrap();
    assert!(a.iter().all(|x| (x - 0.8).abs() < 1e-6), "{a:?}");
    assert!(v.iter().all(|x| (x - 1.2).abs() < 1e-6), "{v:?}");
    // Every contribution ≤ 0: uniform fallback.
    let fb = ArmFusionWeights::from_phi_cmi(&[-0.5, -0.7], 1e-8).unwrap();
    assert!(fb.fallback);
    assert_all_close(&fb.weights, &[1.0, 1.0], 0.0, "fallback");
    assert!(matches!(
        fw.apply_to_features(&feats[..1]),
        Err(ContribError::Input(_))
    ));
}

/// Corrected eq 16 in log-mean-exp form: smin_τ(v) = −τ ln((1/M) Σ exp(−v/τ));
/// [1, 0] at τ = 1 → ln 2 − ln(1 + e^{−1}) = 0.3799; at τ = 0.01 → 0.01 ln 2 (→ the minimum 0);
/// equal values → that value; always in [min v, min(min v + τ ln M, mean v)], so ≥ 0 for NMI
/// values (the paper's φ^MI ∈ [0, 1]); the sign-corrected log-sum-exp form would be ≤ 0 here.
#[test]
fn smooth_min_values() {
    let v = Tensor::new(&[1.0f64, 0.0], &Device::Cpu).unwrap();
    let s = smooth_min(&v, 1.0).unwrap().to_scalar::<f64>().unwrap();
    assert_close(s, 2f64.ln() - (1.0 + (-1.0f64).exp()).ln(), 1e-15, "tau 1");
    let s = smooth_min(&v, 0.01).unwrap().to_scalar::<f64>().unwrap();
    assert_close(s, 0.01 * 2f64.ln(), 1e-12, "tau 0.01");
    let eq = Tensor::new(&[0.3f64, 0.3, 0.3], &Device::Cpu).unwrap();
    let s = smooth_min(&eq, 1.0).unwrap().to_scalar::<f64>().unwrap();
    assert_close(s, 0.3, 1e-15, "equal values");
    for (vals, tau) in [
        (vec![0.0, 0.0002], 1.0),
        (vec![0.05, 0.3], 1.0),
        (vec![0.9, 0.1, 0.4], 0.5),
        (vec![0.2, 0.7, 0.7, 0.01], 0.1),
    ] {
        let t = Tensor::from_slice(&vals, vals.len(), &Device::Cpu).unwrap();
        let s = smooth_min(&t, tau).unwrap().to_scalar::<f64>().unwrap();
        let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min);
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let hi = mean.min(lo + tau * (vals.len() as f64).ln());
        assert!(
            s >= lo - 1e-15 && s <= hi + 1e-15,
            "{vals:?}: {s} not in [{lo}, {hi}]"
        );
    }
    assert!(matches!(smooth_min(&v, 0.0), Err(ContribError::Param(_))));
}

/// The MIV tensors are differentiable w.r.t. the logits (ARM's eq 14-15 losses).
#[test]
fn gradients_flow_to_logits() {
    let fused = Var::from_tensor(
        &Tensor::new(&[[1.0f64, -0.5], [0.2, 0.3], [-1.0, 2.0]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let a = Var::from_tensor(
        &Tensor::new(&[[0.5f64, 0.1], [-0.3, 0.9], [0.0, 1.0]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let v = Var::from_tensor(
        &Tensor::new(&[[0.1f64, 0.2], [1.3, -0.4], [0.7, 0.6]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let miv = ArmMiv::new(
        fused.as_tensor(),
        &[a.as_tensor().clone(), v.as_tensor().clone()],
        &[0, 1, 1],
        ArmConfig::default(),
    )
    .unwrap();
    let loss = (miv.phi_mi_joint_smooth.mean_all().unwrap()
        + miv.phi_cmi_joint.mean_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in [("fused", &fused), ("a", &a), ("v", &v)] {
        let g = grads.get(var.as_tensor()).expect(name);
        let s: f64 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(s.is_finite() && s > 0.0, "{name}: |grad| = {s}");
    }
}

/// From the model's head: same numbers as from its logits.
#[test]
fn from_model_matches_logits() {
    let model = LinearConcat::new(&[1, 1], &[&[0.0, 0.0], &[1.0, 2.0]], &[0.1, 0.0]);
    let feats = vec![col(&[0.5, -1.0, 2.0, 0.3]), col(&[-0.2, 0.4, 1.0, -1.5])];
    let y = [1u32, 0, 1, 0];
    let eval = model.eval_outputs(&feats, &y);
    let m1 = ArmMiv::from_model(&model, &feats, &y, ArmConfig::default()).unwrap();
    let m2 = ArmMiv::new(
        &eval.fused_logits,
        &eval.per_modality_logits,
        &y,
        ArmConfig::default(),
    )
    .unwrap();
    assert_eq!(m1.report().unwrap(), m2.report().unwrap());
}

#[test]
fn shape_errors_are_named() {
    let f = one_hot_logits(&[0, 1]);
    let bad = one_hot_logits(&[0, 1, 1]);
    let e = ArmMiv::new(&f, &[bad], &[0, 1], ArmConfig::default()).unwrap_err();
    assert!(
        matches!(e, ContribError::Input(ref m) if m.contains("[3, 2]")),
        "{e}"
    );
    let e = ArmMiv::new(&f, &[], &[0, 1], ArmConfig::default()).unwrap_err();
    assert!(matches!(e, ContribError::Input(_)), "{e}");
    let e = ArmMiv::new(&f, std::slice::from_ref(&f), &[0], ArmConfig::default()).unwrap_err();
    assert!(matches!(e, ContribError::Input(_)), "{e}");
    let cfg = ArmConfig {
        smooth_min_temperature: -1.0,
        ..ArmConfig::default()
    };
    assert!(matches!(
        ArmMiv::new(&f, std::slice::from_ref(&f), &[0, 1], cfg),
        Err(ContribError::Param(_))
    ));
}

/// Eq 13 with negative contributions: φ is projected onto the paper's range [0, m] (clamped at
/// 0) before eq 12-13, so FW ≥ 0 and Σ FW = M (FW/M sums to 1); on the range eq 13 is unchanged.
/// Hand-computed:
/// * (0.5, −0.1): unclamped eq 13 gives mean 0.2 → (2.5, −0.5); clamped (0.5, 0) → mean 0.25 →
///   FW = (2, 0).
/// * (0.9, −0.3, 0.3): clamped (0.9, 0, 0.3) → mean 0.4 → FW = (2.25, 0, 0.75).
/// * (−0.2, 0.1): clamped (0, 0.1) → mean 0.05 → FW = (0, 2).
/// * (0.6, 0.2) (on the range): mean 0.4 → (1.5, 0.5), as eq 13.
#[test]
fn fusion_weights_are_non_negative_with_negative_contributions() {
    for (phi, expect) in [
        (vec![0.5, -0.1], vec![2.0, 0.0]),
        (vec![0.9, -0.3, 0.3], vec![2.25, 0.0, 0.75]),
        (vec![-0.2, 0.1], vec![0.0, 2.0]),
        (vec![0.6, 0.2], vec![1.5, 0.5]),
    ] {
        let fw = ArmFusionWeights::from_phi_cmi(&phi, 1e-8).unwrap();
        assert!(!fw.fallback, "{phi:?}");
        assert_all_close(&fw.weights, &expect, 1e-12, &format!("FW of {phi:?}"));
        assert!(
            fw.weights.iter().all(|&w| w >= 0.0),
            "{phi:?}: {:?}",
            fw.weights
        );
        let m = phi.len() as f64;
        let normalised: f64 = fw.weights.iter().map(|w| w / m).sum();
        assert_close(normalised, 1.0, 1e-12, "Σ FW / M");
    }
    // Negative contributions are real: synergy (f = a XOR v, labels = f). NMI(f; a) = NMI(f; v)
    // = 0, NCMI(f; a | v) = NCMI(f; v | a) = 1 → II = −1 both ways, so (eq 11)
    // φ^CMI_n(a) = −p_v(y_n) = −[1, 1, 0, 0], φ^CMI_n(v) = −p_a(y_n) = −[1, 0, 1, 0]: every
    // contribution ≤ 0 → uniform fallback, never negative weights.
    let (fx, ax, vx) = ([0u32, 1, 1, 0], [0u32, 0, 1, 1], [0u32, 1, 0, 1]);
    let miv = ArmMiv::new(
        &one_hot_logits(&fx),
        &[one_hot_logits(&ax), one_hot_logits(&vx)],
        &fx,
        ArmConfig::default(),
    )
    .unwrap();
    let ps = miv.per_sample().unwrap();
    assert_all_close(
        &ps.phi_cmi.concat(),
        &[-1.0, -1.0, -1.0, 0.0, 0.0, -1.0, 0.0, 0.0],
        1e-9,
        "phi_CMI_n with synergy",
    );
    assert!(ps.fusion_weights.iter().flatten().all(|&w| w == 1.0));
    let r = miv.report().unwrap();
    assert!(r.fusion_weights.fallback);
    assert_all_close(&r.fusion_weights.weights, &[1.0, 1.0], 0.0, "fallback");

    // Per-sample FW from ArmMiv apply the same rule to each row of φ^CMI_n (soft predictions).
    let fused = Tensor::new(
        &[
            [1.0f64, -0.5],
            [0.2, 0.3],
            [-1.0, 2.0],
            [0.4, 0.1],
            [2.0, -1.0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let a = Tensor::new(
        &[
            [0.5f64, 0.1],
            [-0.3, 0.9],
            [0.0, 1.0],
            [1.5, -1.5],
            [0.3, 0.2],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let v = Tensor::new(
        &[
            [0.1f64, 0.2],
            [1.3, -0.4],
            [0.7, 0.6],
            [-2.0, 2.0],
            [0.0, 0.9],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let miv = ArmMiv::new(&fused, &[a, v], &[0, 1, 1, 0, 1], ArmConfig::default()).unwrap();
    let ps = miv.per_sample().unwrap();
    for (row, fw) in ps.phi_cmi.iter().zip(&ps.fusion_weights) {
        let expect = ArmFusionWeights::from_phi_cmi(row, 1e-8).unwrap().weights;
        assert_all_close(fw, &expect, 1e-12, "per-sample FW");
        assert!(fw.iter().all(|&w| w >= 0.0));
        assert_close(fw.iter().sum::<f64>(), 2.0, 1e-9, "Σ FW_n");
    }
    let r = miv.report().unwrap();
    assert!(r.fusion_weights.weights.iter().all(|&w| w >= 0.0));
}

/// Eq 15 per sample, `Σ_i |φ_i − φ̄| / max((1/M) Σ_i |φ_i|, floor)`, hand-computed:
/// * (0.6, 0.2) (on the paper's range): φ̄ = 0.4, numerator 0.4, denominator 0.4 → 1 (= eq 15).
/// * (0.5, −0.5): φ̄ = 0 — the paper's ratio is 1/0; here numerator 1, denominator 0.5 → 2.
/// * (0.5, −0.49): φ̄ = 0.005 — the paper's ratio is 0.99/0.005 = 198; here 0.99/0.495 = 2.
/// * (1, 0, 0): φ̄ = 1/3, numerator 4/3, denominator 1/3 → 4 = 2(M − 1), the bound, attained.
/// * (1e-4, 3e-4) below the floor 1e-3: numerator 2e-4 / 1e-3 = 0.2 (paper: 1).
/// * (0, 0): 0 / floor = 0.
#[test]
fn cmi_gap_loss_is_eq15_on_the_range_and_bounded_off_it() {
    let row = |v: &[f64]| Tensor::from_slice(v, (1, v.len()), &Device::Cpu).unwrap();
    let val = |v: &[f64], floor: f64| -> f64 {
        cmi_gap_loss(&row(v), floor)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0]
    };
    assert_close(val(&[0.6, 0.2], 1e-3), 1.0, 1e-12, "in range");
    assert_close(val(&[0.5, -0.5], 1e-3), 2.0, 1e-12, "cancelling");
    assert_close(val(&[0.5, -0.49], 1e-3), 2.0, 1e-12, "near-zero mean");
    let paper = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - m).abs()).sum::<f64>() / m
    };
    assert!(paper(&[0.5, -0.49]) > 197.0, "{}", paper(&[0.5, -0.49]));
    assert_close(val(&[1.0, 0.0, 0.0], 1e-3), 4.0, 1e-12, "vertex");
    assert_close(val(&[1e-4, 3e-4], 1e-3), 0.2, 1e-9, "below the floor");
    assert_close(val(&[0.0, 0.0], 1e-3), 0.0, 0.0, "all zero");
    // Equal to the paper's eq 15 wherever every φ ≥ 0 and φ̄ ≥ floor.
    for v in [[0.3, 0.9, 0.0], [1.2, 0.4, 0.8], [2.5, 0.01, 0.3]] {
        assert_close(val(&v, 1e-3), paper(&v), 1e-12, "eq 15 on the range");
    }
    // The bound 2(M − 1) for arbitrary signs (a deterministic spread of rows, M = 2, 3, 4).
    for m in 2..=4usize {
        let n = 200;
        let v: Vec<f64> = (0..n * m)
            .map(|i| ((i * 7919 % 1009) as f64 / 1009.0 - 0.5) * 3.0)
            .collect();
        let t = Tensor::from_vec(v, (n, m), &Device::Cpu).unwrap();
        let l: Vec<f64> = cmi_gap_loss(&t, 1e-3).unwrap().to_vec1().unwrap();
        let bound = 2.0 * (m as f64 - 1.0);
        assert!(
            l.iter().all(|&x| (0.0..=bound + 1e-12).contains(&x)),
            "M = {m}: max {}",
            l.iter().cloned().fold(0.0, f64::max)
        );
    }
    // Differentiable; errors are named.
    let var = Var::from_tensor(&row(&[0.6, 0.2])).unwrap();
    let g = cmi_gap_loss(var.as_tensor(), 1e-3)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    // d/dφ_a of (φ_a − φ_v)/((φ_a + φ_v)/2) = 4 φ_v / (φ_a + φ_v)² = 0.8 / 0.64 = 1.25; −3.75 for φ_v.
    let grad: Vec<Vec<f64>> = g.get(var.as_tensor()).unwrap().to_vec2().unwrap();
    assert_all_close(&grad[0], &[1.25, -3.75], 1e-9, "gradient");
    assert!(matches!(
        cmi_gap_loss(&row(&[0.1]).squeeze(0).unwrap(), 1e-3),
        Err(ContribError::Input(_))
    ));
    assert!(matches!(
        cmi_gap_loss(&row(&[0.1, 0.2]), 0.0),
        Err(ContribError::Param(_))
    ));
}
