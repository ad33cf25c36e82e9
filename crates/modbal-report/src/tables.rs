//! The two tables of a report — every run ([`RunsTable`]) and the mean ± sample standard
//! deviation over seeds per (dataset, method, variant) ([`SummaryTable`]) — and their CSV
//! ([RFC 4180](https://www.rfc-editor.org/rfc/rfc4180)) and Markdown forms.

use crate::runs::{Run, RunStatus};
use std::collections::{BTreeMap, BTreeSet};

/// The numeric columns of both tables, in order: `selected_epoch` (best_epoch + 1, selected on
/// validation fusion accuracy), `test_fusion_acc`, `test_acc_<modality>` per modality (sorted),
/// `test_macro_f1`, `test_discrepancy_ratio`, `wall_seconds` (sum of `timing.jsonl`).
pub fn metric_columns(modalities: &[String]) -> Vec<String> {
    let mut c = vec!["selected_epoch".to_string(), "test_fusion_acc".into()];
    c.extend(modalities.iter().map(|m| format!("test_acc_{m}")));
    c.extend([
        "test_macro_f1".into(),
        "test_discrepancy_ratio".into(),
        "wall_seconds".into(),
    ]);
    c
}

/// The modalities of the runs (from their records and summaries), sorted.
pub fn modalities(runs: &[&Run]) -> Vec<String> {
    let mut s = BTreeSet::new();
    for r in runs {
        if let Some(sm) = &r.summary {
            s.extend(sm.test.modality_acc.keys().cloned());
        }
        for rec in &r.records {
            s.extend(rec.modality_acc.keys().cloned());
        }
    }
    s.into_iter().collect()
}

/// One row of [`RunsTable`].
#[derive(Clone, Debug)]
pub struct RunRow {
    pub run: String,
    pub dataset: String,
    pub method: String,
    pub variant: String,
    pub seed: Option<u64>,
    pub status: String,
    pub finished: bool,
    /// `train.epochs`.
    pub epochs: Option<usize>,
    /// Aligned with [`RunsTable::columns`]; `None` where the run has no such value (an
    /// interrupted run has no test metrics).
    pub values: Vec<Option<f64>>,
}

/// Every run, one row each.
#[derive(Clone, Debug)]
pub struct RunsTable {
    pub modalities: Vec<String>,
    /// The numeric columns ([`metric_columns`]).
    pub columns: Vec<String>,
    pub rows: Vec<RunRow>,
}

impl RunsTable {
    pub fn new(runs: &[&Run]) -> Self {
        let modalities = modalities(runs);
        let columns = metric_columns(&modalities);
        let rows = runs
            .iter()
            .map(|r| {
                let mut values = Vec::with_capacity(columns.len());
                let s = r.summary.as_ref();
                values.push(s.map(|s| (s.best_epoch + 1) as f64));
                values.push(s.map(|s| s.test.fusion_acc));
                for m in &modalities {
                    values.push(s.and_then(|s| s.test.modality_acc.get(m).copied()));
                }
                values.push(s.map(|s| s.test.macro_f1));
                values.push(s.and_then(|s| s.test.discrepancy_ratio));
                values.push(r.wall_seconds);
                RunRow {
                    run: r.name.clone(),
                    dataset: r.dataset.clone(),
                    method: r.method.clone(),
                    variant: r.variant.clone(),
                    seed: r.seed,
                    status: r.status.label(),
                    finished: matches!(r.status, RunStatus::Finished),
                    epochs: r.epochs,
                    values,
                }
            })
            .collect();
        Self {
            modalities,
            columns,
            rows,
        }
    }

    /// CSV: `run,dataset,method,variant,seed,status,epochs,` then [`Self::columns`]; empty cells
    /// where a value is missing.
    pub fn to_csv(&self) -> String {
        let mut header: Vec<String> = ["run", "dataset", "method", "variant", "seed", "status"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        header.push("epochs".into());
        header.extend(self.columns.iter().cloned());
        let mut out = csv_line(&header);
        for r in &self.rows {
            let mut cells = vec![
                r.run.clone(),
                r.dataset.clone(),
                r.method.clone(),
                r.variant.clone(),
                opt(r.seed),
                r.status.clone(),
                opt(r.epochs),
            ];
            cells.extend(r.values.iter().map(|v| num(*v)));
            out.push_str(&csv_line(&cells));
        }
        out
    }

    /// The header and the cells as displayed (Markdown and HTML): accuracies with 4 decimals,
    /// the selected epoch as `10/12`, wall time in seconds with 1 decimal.
    pub fn display(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header: Vec<String> = ["run", "method", "variant", "seed", "status", "epoch"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        header.extend(self.columns[1..].iter().map(|c| display_name(c)));
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut cells = vec![
                    r.run.clone(),
                    r.method.clone(),
                    r.variant.clone(),
                    opt(r.seed),
                    r.status.clone(),
                    match (r.values[0], r.epochs) {
                        (Some(s), Some(e)) => format!("{s}/{e}"),
                        (Some(s), None) => format!("{s}"),
                        _ => String::new(),
                    },
                ];
                for (c, v) in self.columns[1..].iter().zip(&r.values[1..]) {
                    cells.push(v.map(|v| fmt_value(c, v)).unwrap_or_default());
                }
                cells
            })
            .collect();
        (header, rows)
    }
}

/// Mean and sample standard deviation (n − 1 in the denominator; `None` for n < 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanStd {
    pub n: usize,
    pub mean: f64,
    pub std: Option<f64>,
}

impl MeanStd {
    /// `None` for no values.
    pub fn of(v: &[f64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = (n > 1)
            .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt());
        Some(Self { n, mean, std })
    }
}

/// One row of [`SummaryTable`].
#[derive(Clone, Debug)]
pub struct SummaryRow {
    pub dataset: String,
    pub method: String,
    pub variant: String,
    /// Finished runs (seeds) in the group.
    pub n: usize,
    /// Aligned with [`SummaryTable::columns`].
    pub stats: Vec<Option<MeanStd>>,
}

/// Mean ± sample std over the finished runs of each (dataset, method, variant).
#[derive(Clone, Debug)]
pub struct SummaryTable {
    pub columns: Vec<String>,
    pub rows: Vec<SummaryRow>,
}

impl SummaryTable {
    /// Groups in the order of their first run in `table`; groups without a finished run are
    /// left out.
    pub fn new(table: &RunsTable) -> Self {
        let mut order: Vec<(String, String, String)> = vec![];
        let mut groups: BTreeMap<(String, String, String), Vec<&RunRow>> = BTreeMap::new();
        for r in table.rows.iter().filter(|r| r.finished) {
            let k = (r.dataset.clone(), r.method.clone(), r.variant.clone());
            if !groups.contains_key(&k) {
                order.push(k.clone());
            }
            groups.entry(k).or_default().push(r);
        }
        let rows = order
            .into_iter()
            .map(|k| {
                let rs = &groups[&k];
                let stats = (0..table.columns.len())
                    .map(|c| {
                        let v: Vec<f64> = rs.iter().filter_map(|r| r.values[c]).collect();
                        MeanStd::of(&v)
                    })
                    .collect();
                SummaryRow {
                    dataset: k.0,
                    method: k.1,
                    variant: k.2,
                    n: rs.len(),
                    stats,
                }
            })
            .collect();
        Self {
            columns: table.columns.clone(),
            rows,
        }
    }

    /// CSV: `dataset,method,variant,n`, then `<column>_mean,<column>_std` per column; the std
    /// cell is empty for one seed.
    pub fn to_csv(&self) -> String {
        let mut header: Vec<String> = ["dataset", "method", "variant", "n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for c in &self.columns {
            header.push(format!("{c}_mean"));
            header.push(format!("{c}_std"));
        }
        let mut out = csv_line(&header);
        for r in &self.rows {
            let mut cells = vec![
                r.dataset.clone(),
                r.method.clone(),
                r.variant.clone(),
                r.n.to_string(),
            ];
            for s in &r.stats {
                cells.push(num(s.map(|s| s.mean)));
                cells.push(num(s.and_then(|s| s.std)));
            }
            out.push_str(&csv_line(&cells));
        }
        out
    }

    /// Header and cells as displayed: `mean ± std` (the mean alone for one seed).
    pub fn display(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header: Vec<String> = ["method", "variant", "n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        header.extend(self.columns.iter().map(|c| display_name(c)));
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut cells = vec![r.method.clone(), r.variant.clone(), r.n.to_string()];
                for (c, s) in self.columns.iter().zip(&r.stats) {
                    cells.push(match s {
                        None => String::new(),
                        Some(MeanStd {
                            mean,
                            std: Some(sd),
                            ..
                        }) => format!("{} ± {}", fmt_value(c, *mean), fmt_value(c, *sd)),
                        Some(MeanStd { mean, .. }) => fmt_value(c, *mean),
                    });
                }
                cells
            })
            .collect();
        (header, rows)
    }
}

fn display_name(col: &str) -> String {
    match col {
        "selected_epoch" => "sel. epoch".into(),
        "test_fusion_acc" => "test acc".into(),
        "test_macro_f1" => "macro-F1".into(),
        "test_discrepancy_ratio" => "disc. ratio".into(),
        "wall_seconds" => "wall s".into(),
        c => match c.strip_prefix("test_acc_") {
            Some(m) => format!("{m} acc"),
            None => c.into(),
        },
    }
}

fn fmt_value(col: &str, v: f64) -> String {
    match col {
        "wall_seconds" | "selected_epoch" => format!("{v:.1}"),
        "test_discrepancy_ratio" => format!("{v:.3}"),
        _ => format!("{v:.4}"),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// A number as plain CSV text: Rust's shortest round-trip form (`0.1`, `12`, `1e-7`), empty for
/// `None` or a non-finite value.
fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => String::new(),
    }
}

/// One CSV field (RFC 4180 §2.6–2.7): quoted when it holds a comma, a double quote, CR or LF,
/// with each double quote doubled; leading/trailing spaces are kept as they are.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One CSV record ending with CRLF (RFC 4180 §2.1).
pub fn csv_line(cells: &[String]) -> String {
    let f: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
    f.join(",") + "\r\n"
}

/// A Markdown (GFM) table; `|` in cells escaped, line breaks replaced by spaces.
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    let mut out = String::new();
    out.push_str(&format!(
        "| {} |\n",
        header
            .iter()
            .map(|h| esc(h))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    out.push_str(&format!(
        "|{}\n",
        header.iter().map(|_| "---|").collect::<String>()
    ));
    for r in rows {
        out.push_str(&format!(
            "| {} |\n",
            r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}
