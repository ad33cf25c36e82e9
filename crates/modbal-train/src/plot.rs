//! Learning curves as standalone SVG files (`plots/accuracy.svg`, `plots/loss.svg`), written
//! after every run: fusion and per-modality accuracy on train and val per epoch, and the loss.
//! `plots/method.svg` shows the method's own per-epoch quantities (the numbers under `method` in
//! `metrics.jsonl`: CAL's φ, R, W, a; OGM-GE's k; UDI's α…), one panel per key group (the key up
//! to its first `.`, so `phi.audio` and `phi.visual` share a panel); absent when a method logs
//! no numbers.

use crate::record::EpochRecord;
use modbal_core::{ModbalError, Result};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// One named series of (epoch, value) points; `dashed` for the train split.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

fn svg_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (720.0, 420.0);
    let (l, r, t, b) = (60.0, 170.0, 36.0, 46.0);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (mut y0, mut y1) = ys
        .filter(|y| y.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    if (y1 - y0).abs() < 1e-12 {
        y1 = y0 + 1.0;
    }
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let px = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{title}</text>"#,
        (w - r + l) / 2.0
    );
    // axes and ticks
    let _ = writeln!(
        s,
        r#"<path d="M{l},{t} V{} H{}" stroke="black" fill="none"/>"#,
        h - b,
        w - r
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{py}" y2="{py}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{y:.3}</text>"##,
            w - r,
            l - 6.0,
            py(y) + 4.0,
            py = py(y)
        );
    }
    let n_ticks = ((x1 - x0) as usize).clamp(1, 10);
    for i in 0..=n_ticks {
        let x = x0 + (x1 - x0) * i as f64 / n_ticks as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#,
            px(x),
            h - b + 16.0,
            x
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">epoch</text>"#,
        (w - r + l) / 2.0,
        h - 8.0
    );
    let _ = writeln!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{y_label}</text>"#,
        h / 2.0,
        h / 2.0
    );
    // Train (dashed) / val (solid) pairs share a colour; otherwise one colour per series.
    let paired = series.iter().any(|se| se.dashed);
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[if paired { i / 2 } else { i } % COLORS.len()];
        let d: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            d.join(" ")
        );
        // Markers, so that short runs (one or two epochs) still show their values.
        for p in &d {
            if let Some((x, y)) = p.split_once(',') {
                let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>"#);
            }
        }
        s.push('\n');
        let ly = t + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            w - r + 10.0,
            w - r + 34.0,
            w - r + 40.0,
            ly + 4.0,
            se.name
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Panels of [`svg_chart`]s, two per row, in one SVG.
fn svg_panels(panels: &[(String, Vec<Series>)]) -> String {
    let (w, h) = (720.0, 420.0);
    let cols = 2usize.min(panels.len()).max(1);
    let rows = panels.len().div_ceil(cols);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">"#,
        w * cols as f64,
        h * rows as f64
    );
    for (i, (title, series)) in panels.iter().enumerate() {
        let (x, y) = ((i % cols) as f64 * w, (i / cols) as f64 * h);
        let chart = svg_chart(title, title, series);
        let chart = chart.replacen(
            r#"<svg xmlns="http://www.w3.org/2000/svg" "#,
            &format!(r#"<svg x="{x}" y="{y}" "#),
            1,
        );
        s.push_str(&chart);
    }
    s.push_str("</svg>\n");
    s
}

/// The numeric scalars of the train records' `method` objects, grouped by key prefix.
fn method_panels(history: &[EpochRecord]) -> Vec<(String, Vec<Series>)> {
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>> = BTreeMap::new();
    for r in history.iter().filter(|r| r.split == "train") {
        for (k, v) in &r.method {
            if let Some(y) = v.as_f64() {
                let g = k.split('.').next().unwrap_or(k).to_string();
                groups
                    .entry(g)
                    .or_default()
                    .entry(k.clone())
                    .or_default()
                    .push(((r.epoch + 1) as f64, y));
            }
        }
    }
    groups
        .into_iter()
        .map(|(g, keys)| {
            let series = keys
                .into_iter()
                .map(|(k, points)| Series {
                    name: k,
                    points,
                    dashed: false,
                })
                .collect();
            (g, series)
        })
        .collect()
}

/// Write `plots/accuracy.svg`, `plots/loss.svg` and (if the method logs numbers)
/// `plots/method.svg` for a run's history.
pub fn write_plots(dir: &Path, history: &[EpochRecord]) -> Result<()> {
    if history.is_empty() {
        return Ok(());
    }
    let pdir = dir.join("plots");
    std::fs::create_dir_all(&pdir).map_err(|e| ModbalError::io("creating", &pdir, e))?;
    let mut acc: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut loss: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in history {
        let e = (r.epoch + 1) as f64;
        acc.entry(("fusion".into(), r.split.clone()))
            .or_default()
            .push((e, r.fusion_acc));
        for (m, a) in &r.modality_acc {
            acc.entry((m.clone(), r.split.clone()))
                .or_default()
                .push((e, *a));
        }
        loss.entry(r.split.clone()).or_default().push((e, r.loss));
    }
    let mut order: Vec<(String, String)> = acc.keys().cloned().collect();
    // fusion first, then modalities; val (solid) before train (dashed) for each.
    order.sort_by_key(|(n, s)| (n != "fusion", n.clone(), s != "val"));
    let acc_series: Vec<Series> = order
        .iter()
        .map(|k| Series {
            name: format!("{} ({})", k.0, k.1),
            points: acc[k].clone(),
            dashed: k.1 == "train",
        })
        .collect();
    let loss_series: Vec<Series> = ["val", "train"]
        .iter()
        .filter_map(|s| {
            loss.get(*s).map(|p| Series {
                name: s.to_string(),
                points: p.clone(),
                dashed: *s == "train",
            })
        })
        .collect();
    for (file, body) in [
        (
            "accuracy.svg",
            svg_chart("Accuracy per epoch", "accuracy", &acc_series),
        ),
        (
            "loss.svg",
            svg_chart("Loss per epoch", "loss", &loss_series),
        ),
    ] {
        let p = pdir.join(file);
        crate::run_dir::write_atomic(&p, body.as_bytes())?;
    }
    let panels = method_panels(history);
    if !panels.is_empty() {
        let p = pdir.join("method.svg");
        crate::run_dir::write_atomic(&p, svg_panels(&panels).as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: usize, split: &str, method: serde_json::Value) -> EpochRecord {
        EpochRecord {
            epoch,
            stage: "train".into(),
            split: split.into(),
            loss: 1.0,
            fusion_acc: 0.5,
            modality_acc: BTreeMap::new(),
            macro_f1: 0.5,
            discrepancy_ratio: None,
            lr: 0.1,
            method: method.as_object().unwrap().clone(),
            noise: None,
        }
    }

    #[test]
    fn method_quantities_are_grouped_by_key_prefix() {
        let h = vec![
            rec(
                0,
                "train",
                serde_json::json!({"phi.audio": 0.7, "phi.visual": 0.2, "k": 1.0, "stage": "a"}),
            ),
            rec(0, "val", serde_json::json!({"ignored": 3.0})),
            rec(
                1,
                "train",
                serde_json::json!({"phi.audio": 0.6, "phi.visual": 0.3, "k": 0.9, "flag": true}),
            ),
        ];
        let p = method_panels(&h);
        let names: Vec<(&str, Vec<&str>)> = p
            .iter()
            .map(|(g, s)| (g.as_str(), s.iter().map(|x| x.name.as_str()).collect()))
            .collect();
        // Strings, booleans and the val records' keys are not plotted.
        assert_eq!(
            names,
            [("k", vec!["k"]), ("phi", vec!["phi.audio", "phi.visual"])]
        );
        assert_eq!(p[1].1[0].points, [(1.0, 0.7), (2.0, 0.6)]);
        let svg = svg_panels(&p);
        assert_eq!(svg.matches("<svg").count(), 3);
        assert!(svg.contains(r#"<svg x="720" y="0" "#));
    }
}
