//! Learning curves as standalone SVG files (`plots/accuracy.svg`, `plots/loss.svg`), written
//! after every run: fusion and per-modality accuracy on train and val per epoch, and the loss.

use crate::trainer::EpochRecord;
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
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[(i / 2) % COLORS.len()];
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

/// Write `plots/accuracy.svg` and `plots/loss.svg` for a run's history.
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
        std::fs::write(&p, body).map_err(|e| ModbalError::io("writing", &p, e))?;
    }
    Ok(())
}
