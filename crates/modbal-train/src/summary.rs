//! `summary.json` ([`Summary`]), the opt-in test curve's summary and the results table printed at
//! the end of a run.

use crate::metrics::SplitMetrics;
use crate::record::EpochRecord;
use modbal_core::{ModbalError, Result};
use modbal_data::noise::NoiseConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub run: String,
    pub method: String,
    pub dataset: String,
    pub seed: u64,
    pub epochs: usize,
    pub best_epoch: usize,
    pub selected_on: String,
    /// Validation metrics of the selected model.
    pub val: SplitMetrics,
    /// The headline: test metrics of the model selected on validation (`best_epoch`).
    pub test: SplitMetrics,
    /// Test metrics of the model after the last epoch (no selection at all).
    pub test_last: SplitMetrics,
    /// Only with `train.report_test_curve = true` (`--report-test-curve`): the test curve's best
    /// epoch, i.e. test-set selection as some papers report it. Never used for any decision;
    /// present so that a run can be set beside such a published number like for like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_curve: Option<TestCurveSummary>,
    /// The robustness protocol's corruption (`noise.on` says which splits); absent when clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseConfig>,
}

/// `summary.json`'s `test_curve` (see [`Summary::test_curve`]); the per-epoch values are in
/// `test_curve.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TestCurveSummary {
    /// Always [`TEST_CURVE_WARNING`].
    pub warning: String,
    /// The epoch with the highest test fusion accuracy (first one on ties).
    pub best_epoch: usize,
    /// The test metrics at that epoch.
    pub test: SplitMetrics,
}

/// What `summary.json` says next to the test-selected numbers.
pub const TEST_CURVE_WARNING: &str = "selected on the TEST split: not a valid model selection; \
     for comparison with papers that report the best test epoch only (the headline is `test`)";

/// File of the per-epoch test metrics written with `train.report_test_curve`.
pub const TEST_CURVE_FILE: &str = "test_curve.jsonl";

/// The best test epoch of `test_curve.jsonl` (one line per epoch `0..epochs`, checked).
pub(crate) fn test_curve_summary(path: &Path, epochs: usize) -> Result<TestCurveSummary> {
    let text = std::fs::read_to_string(path).map_err(|e| ModbalError::io("reading", path, e))?;
    let mut best: Option<EpochRecord> = None;
    let mut seen = vec![false; epochs];
    for (i, line) in text.lines().enumerate() {
        let r: EpochRecord = serde_json::from_str(line)
            .map_err(|e| ModbalError::Data(format!("{} line {}: {e}", path.display(), i + 1)))?;
        if r.epoch >= epochs {
            return Err(ModbalError::Data(format!(
                "{} line {}: epoch {} of a {epochs}-epoch run",
                path.display(),
                i + 1,
                r.epoch
            )));
        }
        seen[r.epoch] = true;
        if best.as_ref().is_none_or(|b| r.fusion_acc > b.fusion_acc) {
            best = Some(r);
        }
    }
    if let Some(missing) = seen.iter().position(|x| !x) {
        return Err(ModbalError::Data(format!(
            "{} has no line for epoch {missing} (was train.report_test_curve switched on \
             after the run started?)",
            path.display()
        )));
    }
    let b = best.expect("epochs > 0 lines");
    Ok(TestCurveSummary {
        warning: TEST_CURVE_WARNING.into(),
        best_epoch: b.epoch,
        test: SplitMetrics {
            loss: b.loss,
            fusion_acc: b.fusion_acc,
            modality_acc: b.modality_acc,
            macro_f1: b.macro_f1,
            discrepancy_ratio: b.discrepancy_ratio,
        },
    })
}

/// The results table printed at the end of a run.
pub fn format_table(summary: &Summary) -> String {
    let mods: Vec<&String> = summary.val.modality_acc.keys().collect();
    let mut out = String::new();
    out.push_str(&format!(
        "{} on {} (seed {}): best epoch {} of {}, selected on validation fusion accuracy\n",
        summary.method,
        summary.dataset,
        summary.seed,
        summary.best_epoch + 1,
        summary.epochs
    ));
    if let Some(n) = &summary.noise {
        out.push_str(&format!(
            "noise: {} eps {} on {} (modalities: {}; noise seed {})\n",
            n.kind.name(),
            n.eps,
            n.on.name(),
            if n.modalities.is_empty() {
                "all".to_string()
            } else {
                n.modalities.join(", ")
            },
            n.seed
        ));
    }
    let mut header = format!("{:<6} {:>10} {:>9}", "split", "fusion_acc", "macro_f1");
    for m in &mods {
        header.push_str(&format!(" {:>10}", format!("{m}_acc")));
    }
    header.push_str(&format!(" {:>10} {:>8}", "disc_ratio", "loss"));
    out.push_str(&header);
    out.push('\n');
    let mut rows = vec![
        ("val", &summary.val),
        ("test", &summary.test),
        ("last", &summary.test_last),
    ];
    if let Some(c) = &summary.test_curve {
        rows.push(("test*", &c.test));
    }
    for (name, m) in rows {
        let mut row = format!("{name:<6} {:>10.4} {:>9.4}", m.fusion_acc, m.macro_f1);
        for k in &mods {
            row.push_str(&format!(" {:>10.4}", m.modality_acc[*k]));
        }
        let dr = m
            .discrepancy_ratio
            .map(|d| format!("{d:.3}"))
            .unwrap_or_else(|| "-".into());
        row.push_str(&format!(" {dr:>10} {:>8.4}", m.loss));
        out.push_str(&row);
        out.push('\n');
    }
    out.push_str(&format!(
        "(val, test: the model of epoch {}; last: test after the last epoch",
        summary.best_epoch + 1
    ));
    if let Some(c) = &summary.test_curve {
        out.push_str(&format!(
            "; test*: epoch {} {}",
            c.best_epoch + 1,
            "selected on the TEST split, for comparison with papers that do so only"
        ));
    }
    out.push_str(")\n");
    out
}

pub(crate) fn print_table(summary: &Summary, dir: &Path) {
    println!();
    print!("{}", format_table(summary));
    println!("run directory: {}", dir.display());
}
