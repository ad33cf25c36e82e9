//! IBML ρ̃ (eq 13) from recorded previous-epoch predictions, ā and the indicators (eq 12, 15-16).

mod common;

use common::{assert_all_close, assert_close, t2};
use modbal_contrib::ibml::ibml_balance;
use modbal_contrib::{ContribError, IbmlConfig, IbmlRecorder};

const LN3: f64 = 1.098_612_288_668_109_8; // ln 3

/// Epoch 0 records, labels [1, 0, 1] for ids [10, 11, 12]:
/// a: [0, ln3] → p_y = 3/4 correct; [ln3, 0] → p_y = 3/4 correct; [0, 0] → p_y = 1/2, the tie
///    predicts class 0 → wrong
/// v: [0, 0] → 1/2 wrong (tie); [0, ln3] → p_y(0) = 1/4 wrong; [ln3, 0] → p_y(1) = 1/4 wrong
fn recorder_after_epoch0() -> IbmlRecorder {
    let mut rec = IbmlRecorder::new(2).unwrap();
    let a = t2(&[&[0.0, LN3], &[LN3, 0.0], &[0.0, 0.0]]);
    let v = t2(&[&[0.0, 0.0], &[0.0, LN3], &[LN3, 0.0]]);
    rec.record(&[10, 11, 12], &[1, 0, 1], &[a, v]).unwrap();
    rec
}

#[test]
fn epoch0_is_one_hot() {
    let rec = recorder_after_epoch0();
    // Still in epoch 0: nothing rolled yet, every lookup is the one-hot convention.
    let r = rec.balance(&[10, 11, 12], &IbmlConfig::default()).unwrap();
    assert_all_close(&r.strengths, &[3.0, 3.0], 0.0, "rho in epoch 0");
    assert_all_close(&r.normalized, &[1.0, 1.0], 0.0, "a-bar");
    assert_eq!(r.under_optimized, vec![false, false]);
    assert_eq!(r.over_optimized, vec![false, false]);
    assert_close(r.fused_weight, 1.0, 0.0, "I-hat");
    assert_all_close(&r.noise_probability, &[0.0, 0.0], 0.0, "p^m");
    assert_close(r.pair_ratio.unwrap(), 1.0, 0.0, "pair ratio");
    assert!(rec.previous_correct(0, 12).unwrap());
    assert_close(rec.previous_label_prob(1, 11).unwrap(), 1.0, 0.0, "one-hot");
}

/// Epoch 1, batch [10, 12]: ρ̃_a = 3/4 + 1/2 = 1.25, ρ̃_v = 1/2 + 1/4 = 0.75, Σ = 2;
/// ā = 2·ρ̃/Σ = [1.25, 0.75] → v under-optimised (𝕀_v = 1), a over-optimised;
/// Î = max(1 − 1, 0) = 0; p_a = min(1.25, 10)/10 = 0.125; ρ_a/ρ_v = 5/3.
/// Batch [10, 99] (99 never recorded → one-hot 1): ρ̃ = [3/4 + 1, 1/2 + 1] = [1.75, 1.5].
#[test]
fn epoch1_from_records() {
    let mut rec = recorder_after_epoch0();
    rec.end_epoch();
    assert_eq!(rec.epochs(), 1);
    let cfg = IbmlConfig::default();
    let r = rec.balance(&[10, 12], &cfg).unwrap();
    assert_all_close(&r.strengths, &[1.25, 0.75], 1e-12, "rho");
    assert_all_close(&r.normalized, &[1.25, 0.75], 1e-12, "a-bar");
    assert_eq!(r.under_optimized, vec![false, true]);
    assert_eq!(r.over_optimized, vec![true, false]);
    assert_close(r.fused_weight, 0.0, 0.0, "I-hat");
    assert_all_close(&r.noise_probability, &[0.125, 0.0], 1e-12, "p^m");
    assert_close(r.pair_ratio.unwrap(), 5.0 / 3.0, 1e-12, "rho_a / rho_v");
    assert_close(r.discrepancy, 5.0 / 3.0, 1e-12, "max/min");
    assert_eq!(r.num_samples, 2);

    assert_all_close(&rec.strengths(&[10, 99]), &[1.75, 1.5], 1e-12, "unseen id");
    assert!(rec.previous_correct(0, 10).unwrap());
    assert!(!rec.previous_correct(0, 12).unwrap());
    assert!(!rec.previous_correct(1, 10).unwrap());
    assert!(rec.previous_correct(0, 99).unwrap());
    assert_close(
        rec.previous_label_prob(1, 11).unwrap(),
        0.25,
        1e-12,
        "p_v(11)",
    );

    // λ = 1 saturates the noise probability: min(1.25, 1)/1 = 1.
    let r1 = rec.balance(&[10, 12], &IbmlConfig { lambda: 1.0 }).unwrap();
    assert_all_close(&r1.noise_probability, &[1.0, 0.0], 1e-12, "p^m, lambda 1");
}

/// Epoch 1 re-records only id 10 (a: [ln3, 0] → p_y(1) = 1/4 wrong; v: [0, ln3] → 3/4 correct);
/// after rolling, id 10 has the new record and ids 11, 12 keep theirs.
/// Batch [10, 11]: ρ̃_a = 1/4 + 3/4 = 1, ρ̃_v = 3/4 + 1/4 = 1 → balanced.
#[test]
fn rolling_merges_records_and_survives_json() {
    let mut rec = recorder_after_epoch0();
    rec.end_epoch();
    let a = t2(&[&[LN3, 0.0]]);
    let v = t2(&[&[0.0, LN3]]);
    rec.record(&[10], &[1], &[a, v]).unwrap();
    // Not rolled yet: the lookups still see epoch 0.
    assert_close(
        rec.previous_label_prob(0, 10).unwrap(),
        0.75,
        1e-12,
        "before roll",
    );
    rec.end_epoch();
    assert_close(
        rec.previous_label_prob(0, 10).unwrap(),
        0.25,
        1e-12,
        "after roll",
    );
    assert!(rec.previous_correct(1, 10).unwrap());
    assert_close(rec.previous_label_prob(0, 12).unwrap(), 0.5, 1e-12, "kept");
    let r = rec.balance(&[10, 11], &IbmlConfig::default()).unwrap();
    assert_all_close(&r.strengths, &[1.0, 1.0], 1e-12, "rho");
    assert_eq!(r.under_optimized, vec![false, false]);

    let json = serde_json::to_string(&rec).unwrap();
    let back: IbmlRecorder = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rec);
}

/// Three modalities, ρ = [1, 1, 4]: Σ = 6, ā = 3ρ/6 = [0.5, 0.5, 2]; 𝕀 = [1, 1, 0] →
/// Î = max(1 − 2, 0) = 0; only the third is over-optimised, p = min(2, 10)/10 = 0.2;
/// max/min = 4.
#[test]
fn three_modalities() {
    let r = ibml_balance(&[1.0, 1.0, 4.0], 3, &IbmlConfig::default()).unwrap();
    assert_all_close(&r.normalized, &[0.5, 0.5, 2.0], 1e-12, "a-bar");
    assert_eq!(r.under_optimized, vec![true, true, false]);
    assert_eq!(r.over_optimized, vec![false, false, true]);
    assert_close(r.fused_weight, 0.0, 0.0, "I-hat");
    assert_all_close(&r.noise_probability, &[0.0, 0.0, 0.2], 1e-12, "p^m");
    assert!(r.pair_ratio.is_none());
    assert_close(r.discrepancy, 4.0, 1e-12, "max/min");
    // All strengths zero: ā = 1, nothing flagged.
    let z = ibml_balance(&[0.0, 0.0], 2, &IbmlConfig::default()).unwrap();
    assert_all_close(&z.normalized, &[1.0, 1.0], 0.0, "zero strengths");
}

#[test]
fn errors() {
    let mut rec = IbmlRecorder::new(2).unwrap();
    let a = t2(&[&[0.0, LN3]]);
    let e = rec
        .record(&[0], &[1], std::slice::from_ref(&a))
        .unwrap_err();
    assert!(
        matches!(e, ContribError::Input(ref m) if m.contains("2 modalities")),
        "{e}"
    );
    let e = rec
        .record(&[0, 1], &[1], &[a.clone(), a.clone()])
        .unwrap_err();
    assert!(matches!(e, ContribError::Input(_)), "{e}");
    let e = rec.record(&[0], &[2], &[a.clone(), a]).unwrap_err();
    assert!(
        matches!(e, ContribError::Input(ref m) if m.contains("out of range")),
        "{e}"
    );
    assert!(matches!(
        rec.previous_correct(2, 0),
        Err(ContribError::Input(_))
    ));
    assert!(matches!(
        rec.balance(&[], &IbmlConfig::default()),
        Err(ContribError::Input(_))
    ));
    assert!(matches!(
        ibml_balance(&[1.0, 1.0], 2, &IbmlConfig { lambda: 0.0 }),
        Err(ContribError::Param(_))
    ));
    assert!(matches!(IbmlRecorder::new(0), Err(ContribError::Param(_))));
}
