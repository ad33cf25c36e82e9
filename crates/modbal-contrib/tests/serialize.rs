//! Every report, config and state serialises to JSON (for `metrics.jsonl` and checkpoints), with
//! finite numbers only.

mod common;

use common::{col, LinearConcat};
use modbal_contrib::cal::marginal_contribution;
use modbal_contrib::ogm::ogm_scores;
use modbal_contrib::shapley::{modality_shapley, modality_shapley_per_sample};
use modbal_contrib::{
    ArmConfig, ArmFusionWeights, ArmMiv, CalConfig, CalContribution, CalEpochStats, IbmlConfig,
    IbmlRecorder, ShapleyConfig,
};
use modbal_core::MethodLog;
use serde::Serialize;

/// JSON of `v`: an object containing every key in `keys`, no NaN/Inf (serde_json would write
/// `null` for them), and accepted by `MethodLog::set`.
fn check<T: Serialize>(v: &T, keys: &[&str], what: &str) -> serde_json::Value {
    let j = serde_json::to_value(v).unwrap_or_else(|e| panic!("{what}: {e}"));
    let obj = j
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {j}"));
    for k in keys {
        assert!(obj.contains_key(*k), "{what}: missing key {k:?} in {j}");
    }
    fn finite(v: &serde_json::Value, path: &str) {
        match v {
            serde_json::Value::Number(n) => {
                assert!(n.as_f64().unwrap().is_finite(), "{path}: {n}")
            }
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| finite(x, &format!("{path}[{i}]"))),
            serde_json::Value::Object(o) => o
                .iter()
                .for_each(|(k, x)| finite(x, &format!("{path}.{k}"))),
            _ => {}
        }
    }
    finite(&j, what);
    let mut log = MethodLog::default();
    log.set(what, j.clone());
    assert!(log.take().contains_key(what));
    j
}

#[test]
fn every_report_serialises() {
    const LN3: f64 = 1.098_612_288_668_109_8;
    let model = LinearConcat::new(&[1, 1], &[&[0.0, 0.0], &[1.0, 1.0]], &[0.0, 0.0]);
    let feats = vec![col(&[LN3, LN3, 0.2]), col(&[LN3, -LN3, -0.4])];
    let labels = [1u32, 1, 0];
    let eval = model.eval_outputs(&feats, &labels);

    // OGM
    let ogm = ogm_scores(&eval.per_modality_logits, &labels).unwrap();
    check(
        &ogm,
        &[
            "scores",
            "mean_label_prob",
            "ratios",
            "pair_ratio",
            "discrepancy",
            "num_samples",
        ],
        "ogm",
    );

    // CAL
    let mc = marginal_contribution(&model, &feats, &labels).unwrap();
    check(
        &mc,
        &["phi", "full_log_likelihood", "ablated_log_likelihood"],
        "cal_phi",
    );
    let stats = CalEpochStats::from_eval(&model, &eval).unwrap();
    check(&stats, &["phi", "performance"], "cal_stats");
    let mut cal = CalContribution::new(CalConfig::default(), 2).unwrap();
    cal.update(&stats).unwrap();
    let rep = cal.update(&stats).unwrap();
    let j = check(
        &rep,
        &[
            "epoch",
            "variant",
            "phi",
            "performance",
            "smoothed",
            "trend",
            "potential",
            "contribution",
            "modulation",
        ],
        "cal",
    );
    assert_eq!(j["variant"], "phi_times_r");
    check(
        cal.state(),
        &["epoch", "smoothed_history", "modulation"],
        "cal_state",
    );
    check(
        cal.config(),
        &["gamma", "window", "temperature_form", "variant"],
        "cal_config",
    );

    // ARM
    let miv = ArmMiv::new(
        &eval.fused_logits,
        &eval.per_modality_logits,
        &labels,
        ArmConfig::default(),
    )
    .unwrap();
    check(
        &miv.report().unwrap(),
        &[
            "nmi",
            "pairs",
            "phi_mi",
            "phi_mi_joint",
            "phi_mi_joint_smooth",
            "phi_cmi",
            "phi_cmi_joint",
            "fusion_weights",
            "num_samples",
        ],
        "arm",
    );
    check(
        &miv.per_sample().unwrap(),
        &[
            "phi_mi",
            "phi_mi_joint",
            "phi_cmi",
            "phi_cmi_joint",
            "fusion_weights",
        ],
        "arm_per_sample",
    );
    check(
        &ArmFusionWeights::uniform(2),
        &["weights", "fallback"],
        "arm_fw",
    );
    check(
        &ArmConfig::default(),
        &["smooth_min_temperature", "fw_epsilon"],
        "arm_config",
    );

    // IBML
    let mut rec = IbmlRecorder::new(2).unwrap();
    rec.record(&eval.sample_ids, &labels, &eval.per_modality_logits)
        .unwrap();
    rec.end_epoch();
    let ib = rec
        .balance(&eval.sample_ids, &IbmlConfig::default())
        .unwrap();
    check(
        &ib,
        &[
            "strengths",
            "normalized",
            "under_optimized",
            "over_optimized",
            "fused_weight",
            "noise_probability",
            "pair_ratio",
            "discrepancy",
            "num_samples",
        ],
        "ibml",
    );
    check(
        &rec,
        &["num_modalities", "previous", "current", "epochs"],
        "ibml_recorder",
    );
    check(&IbmlConfig::default(), &["lambda"], "ibml_config");

    // Shapley
    let cfg = ShapleyConfig::default();
    let sh = modality_shapley(&model, &feats, &labels, &cfg).unwrap();
    let j = check(
        &sh,
        &["value_fn", "values", "subsets", "num_samples"],
        "shapley",
    );
    assert_eq!(j["value_fn"], "log_likelihood");
    check(
        &modality_shapley_per_sample(&model, &feats, &labels, &cfg).unwrap(),
        &["value_fn", "values"],
        "shapley_per_sample",
    );
    check(&cfg, &["value"], "shapley_config");

    // Configs round-trip through JSON with their defaults.
    let back: CalConfig =
        serde_json::from_value(serde_json::to_value(CalConfig::default()).unwrap()).unwrap();
    assert_eq!(back, CalConfig::default());
}

/// Errors convert into the core error with the same category.
#[test]
fn errors_convert_into_modbal_error() {
    use modbal_contrib::ContribError;
    use modbal_core::ModbalError;
    let e: ModbalError = ContribError::Param("x".into()).into();
    assert!(matches!(e, ModbalError::Config(_)));
    let e: ModbalError = ContribError::Input("x".into()).into();
    assert!(matches!(e, ModbalError::Data(_)));
    let info = modbal_info::InfoError::Input("y".into());
    assert!(matches!(ContribError::from(info), ContribError::Input(_)));
}
