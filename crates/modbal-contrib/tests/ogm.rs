//! OGM-GE scores and ratios against hand-computed values.

mod common;

use candle_core::DType;
use common::{assert_all_close, assert_close, t2};
use modbal_contrib::ogm::{
    discrepancy_ratio, modality_scores, ogm_scores, pair_ratio, score_ratios, OgmReport,
    RATIO_FLOOR,
};
use modbal_contrib::ContribError;

const LN3: f64 = 1.098_612_288_668_109_8; // ln 3

/// 2 samples × 2 classes, labels [1, 0].
/// a: rows [0, ln3] → softmax [1/4, 3/4], p[y=1] = 3/4; [ln3, 0] → p[y=0] = 3/4 → s_a = 1.5
/// v: rows [0, 0] → p[y=1] = 1/2; [0, ln3] → p[y=0] = 1/4 → s_v = 0.75
/// ρ = s_a / s_v = 2; ρ_m = s_m / min s = [2, 1]; max/min = 2; mean label prob [0.75, 0.375].
#[test]
fn two_modalities_by_hand() {
    let a = t2(&[&[0.0, LN3], &[LN3, 0.0]]);
    let v = t2(&[&[0.0, 0.0], &[0.0, LN3]]);
    let labels = [1u32, 0];
    let r = ogm_scores(&[a.clone(), v.clone()], &labels).unwrap();
    assert_all_close(&r.scores, &[1.5, 0.75], 1e-12, "scores");
    assert_all_close(&r.mean_label_prob, &[0.75, 0.375], 1e-12, "mean label prob");
    assert_all_close(&r.ratios, &[2.0, 1.0], 1e-12, "ratios");
    assert_close(r.pair_ratio.unwrap(), 2.0, 1e-12, "pair ratio s_a/s_v");
    assert_close(r.discrepancy, 2.0, 1e-12, "max/min");
    assert_eq!(r.num_samples, 2);
    // The official code's ρ_v = s_v / s_a is the reciprocal.
    assert_close(pair_ratio(&r.scores, 1, 0).unwrap(), 0.5, 1e-12, "rho_v");
    // f32 logits give the same scores.
    let s32 = modality_scores(
        &[
            a.to_dtype(DType::F32).unwrap(),
            v.to_dtype(DType::F32).unwrap(),
        ],
        &labels,
    )
    .unwrap();
    assert_all_close(&s32, &[1.5, 0.75], 1e-6, "f32 scores");
}

/// Three modalities: add t with rows [ln3, 0] → p[y=1] = 1/4, [0, 0] → p[y=0] = 1/2 → s_t = 0.75.
/// ρ_m = [1.5, 0.75, 0.75] / 0.75 = [2, 1, 1]; max/min = 2; no pair ratio for M ≠ 2.
#[test]
fn three_modalities_by_hand() {
    let a = t2(&[&[0.0, LN3], &[LN3, 0.0]]);
    let v = t2(&[&[0.0, 0.0], &[0.0, LN3]]);
    let t = t2(&[&[LN3, 0.0], &[0.0, 0.0]]);
    let r = ogm_scores(&[a, v, t], &[1, 0]).unwrap();
    assert_all_close(&r.scores, &[1.5, 0.75, 0.75], 1e-12, "scores");
    assert_all_close(&r.ratios, &[2.0, 1.0, 1.0], 1e-12, "ratios");
    assert!(r.pair_ratio.is_none());
    assert_close(r.discrepancy, 2.0, 1e-12, "max/min");
}

/// Zero scores (underflow) are floored at 1e-12: finite ratios, weakest ρ = 1.
#[test]
fn ratio_floor() {
    let r = score_ratios(&[0.0, 1.0]).unwrap();
    assert_all_close(&r, &[1.0, 1.0 / RATIO_FLOOR], 1e-3, "floored ratios");
    assert_close(
        discrepancy_ratio(&[0.0, 0.0]).unwrap(),
        1.0,
        0.0,
        "all zero",
    );
    assert!(discrepancy_ratio(&[0.0, 2.0]).unwrap().is_finite());
}

#[test]
fn input_errors_are_named() {
    let a = t2(&[&[0.0, LN3], &[LN3, 0.0]]);
    let v3 = t2(&[&[0.0, 0.0], &[0.0, LN3], &[0.0, 1.0]]);
    let e = ogm_scores(&[a.clone(), v3], &[1, 0]).unwrap_err();
    assert!(
        matches!(e, ContribError::Input(ref m) if m.contains("[3, 2]")),
        "{e}"
    );
    let e = ogm_scores(std::slice::from_ref(&a), &[1, 2]).unwrap_err();
    assert!(
        matches!(e, ContribError::Input(ref m) if m.contains("out of range")),
        "{e}"
    );
    let nan = t2(&[&[f64::NAN, 0.0], &[0.0, 0.0]]);
    assert!(matches!(
        ogm_scores(&[nan], &[0, 0]),
        Err(ContribError::Input(_))
    ));
    assert!(matches!(ogm_scores(&[], &[0]), Err(ContribError::Input(_))));
    assert!(matches!(score_ratios(&[-1.0]), Err(ContribError::Input(_))));
    assert!(matches!(
        pair_ratio(&[1.0, 2.0], 0, 2),
        Err(ContribError::Input(_))
    ));
    assert!(matches!(
        OgmReport::from_scores(vec![1.0], 0),
        Err(ContribError::Input(_))
    ));
}
