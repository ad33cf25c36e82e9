//! The report's plots, drawn with plotters' SVG backend as layers: a base SVG (background, axes,
//! grid, tick labels, axis descriptions) and one transparent SVG per run drawn on a chart built
//! with the same size, margins, label areas and ranges — so the same pixel mapping — to be
//! stacked on the base and toggled per run.

use crate::runs::Run;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Width and height of every plot, in pixels.
pub const PLOT_SIZE: (u32, u32) = (390, 240);

/// The colour of the `i`-th run of a dataset section: ten distinct hues (the "tableau10"
/// palette's values), then hues stepped by the golden angle.
pub fn run_colour(i: usize) -> (u8, u8, u8) {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    if i < TAB10.len() {
        return TAB10[i];
    }
    let h = ((i - TAB10.len()) as f64 * 137.508 + 15.0) % 360.0;
    hsl(h, 0.65, 0.42)
}

fn hsl(h: f64, s: f64, l: f64) -> (u8, u8, u8) {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = h / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    (to(r), to(g), to(b))
}

/// One line of a plot: points (epoch counted from 1, value), dashed or solid, and a marker.
#[derive(Clone, Debug)]
pub struct Line {
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Index into the marker shapes (circle, triangle, square, cross, none…); `None`: no marker.
    pub marker: Option<usize>,
}

/// What one run draws in one plot.
#[derive(Clone, Debug, Default)]
pub struct RunLayer {
    pub lines: Vec<Line>,
    /// A band per epoch (epoch, low, high), shaded.
    pub band: Vec<(f64, f64, f64)>,
}

/// One plot: title, axis descriptions, the layers of the runs that have data for it (run index
/// into the section's runs → layer), and a legend of the line styles.
#[derive(Clone, Debug)]
pub struct Plot {
    pub title: String,
    pub y_desc: String,
    pub layers: BTreeMap<usize, RunLayer>,
    /// (marker index or None, dashed, text) explaining the line styles.
    pub styles: Vec<(Option<usize>, bool, String)>,
}

/// Rendered SVGs of one plot.
#[derive(Clone, Debug)]
pub struct RenderedPlot {
    pub title: String,
    pub base: String,
    /// (run index, SVG) per layer.
    pub layers: Vec<(usize, String)>,
    pub styles: Vec<(Option<usize>, bool, String)>,
}

/// Marker glyphs as shown in the HTML legends, in the order of the marker indices.
pub const MARKER_GLYPHS: [&str; 5] = ["●", "▲", "■", "✕", "◆"];

fn ranges(p: &Plot) -> ((f64, f64), (f64, f64)) {
    let mut xmax: f64 = 2.0;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for l in p.layers.values() {
        for line in &l.lines {
            for &(x, y) in &line.points {
                xmax = xmax.max(x);
                if y.is_finite() {
                    lo = lo.min(y);
                    hi = hi.max(y);
                }
            }
        }
        for &(x, a, b) in &l.band {
            xmax = xmax.max(x);
            lo = lo.min(a);
            hi = hi.max(b);
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            0.5
        };
        (lo, hi) = (lo - pad, hi + pad);
    } else {
        let pad = (hi - lo) * 0.05;
        (lo, hi) = (lo - pad, hi + pad);
    }
    ((0.8, xmax + 0.2), (lo, hi))
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    x: (f64, f64),
    y: (f64, f64),
) -> Result<Chart<'a, 'b>, String> {
    ChartBuilder::on(root)
        .margin_top(8)
        .margin_right(14)
        .margin_left(4)
        .margin_bottom(4)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(|e| e.to_string())
}

/// Render the base SVG and one SVG per run layer (`colour(run index)` gives the colour).
pub fn render(p: &Plot, colour: &dyn Fn(usize) -> (u8, u8, u8)) -> Result<RenderedPlot, String> {
    let (x, y) = ranges(p);
    let xmax = x.1.floor() as usize;
    let mut base = String::new();
    {
        let root = SVGBackend::with_string(&mut base, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut c = chart(&root, x, y)?;
        c.configure_mesh()
            .x_desc("epoch")
            .y_desc(p.y_desc.as_str())
            .x_labels(xmax.min(12) + 1)
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-9 && *v >= 1.0 {
                    format!("{}", v.round() as i64)
                } else {
                    String::new()
                }
            })
            .y_labels(6)
            .y_label_formatter(&|v| tick(*v, y))
            .max_light_lines(1)
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut layers = vec![];
    for (&i, layer) in &p.layers {
        let (r, g, b) = colour(i);
        let col = RGBColor(r, g, b);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
            let mut c = chart(&root, x, y)?;
            if layer.band.len() > 1 {
                let mut poly: Vec<(f64, f64)> =
                    layer.band.iter().map(|&(x, _, h)| (x, h)).collect();
                poly.extend(layer.band.iter().rev().map(|&(x, l, _)| (x, l)));
                c.draw_series(std::iter::once(Polygon::new(poly, col.mix(0.16).filled())))
                    .map_err(|e| e.to_string())?;
            }
            for line in &layer.lines {
                let style = col.stroke_width(2);
                let pts = line.points.clone();
                if line.dashed {
                    c.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                        .map_err(|e| e.to_string())?;
                } else {
                    c.draw_series(LineSeries::new(pts.clone(), style))
                        .map_err(|e| e.to_string())?;
                }
                if let Some(m) = line.marker {
                    draw_markers(&mut c, &pts, m, col)?;
                }
            }
            root.present().map_err(|e| e.to_string())?;
        }
        layers.push((i, svg));
    }
    Ok(RenderedPlot {
        title: p.title.clone(),
        base,
        layers,
        styles: p.styles.clone(),
    })
}

/// A y tick label with as many decimals as the axis range needs (`-0.0` printed as `0.0`).
fn tick(v: f64, (lo, hi): (f64, f64)) -> String {
    let span = (hi - lo).abs().max(1e-300);
    let big = lo.abs().max(hi.abs());
    if big >= 1e5 || big < 1e-4 && big > 0.0 {
        return format!("{v:.2e}");
    }
    let d = (-(span / 5.0).log10()).ceil().clamp(0.0, 6.0) as usize;
    let s = format!("{v:.d$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').into()
    } else {
        s
    }
}

fn draw_markers(
    c: &mut Chart<'_, '_>,
    pts: &[(f64, f64)],
    m: usize,
    col: RGBColor,
) -> Result<(), String> {
    let filled = col.filled();
    let r = match m % MARKER_GLYPHS.len() {
        0 => c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, filled))),
        1 => c.draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 4, filled))),
        2 => c.draw_series(
            pts.iter()
                .map(|&p| EmptyElement::at(p) + Rectangle::new([(-3, -3), (3, 3)], filled)),
        ),
        3 => c.draw_series(pts.iter().map(|&p| Cross::new(p, 3, col.stroke_width(2)))),
        _ => c.draw_series(pts.iter().map(|&p| {
            EmptyElement::at(p) + Polygon::new(vec![(0, -4), (4, 0), (0, 4), (-4, 0)], filled)
        })),
    };
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// (a) Validation accuracy of each modality per epoch (one marker per modality), with the
/// imbalance gap (best minus worst modality of the run) shaded.
pub fn modality_plot(runs: &[&Run], modalities: &[String]) -> Plot {
    let mut layers = BTreeMap::new();
    for (i, r) in runs.iter().enumerate() {
        let val: Vec<_> = r.split("val").collect();
        if val.is_empty() {
            continue;
        }
        let mut l = RunLayer::default();
        for (mi, m) in modalities.iter().enumerate() {
            let pts: Vec<(f64, f64)> = val
                .iter()
                .filter_map(|rec| {
                    rec.modality_acc
                        .get(m)
                        .map(|&a| (rec.epoch as f64 + 1.0, a))
                })
                .collect();
            if !pts.is_empty() {
                l.lines.push(Line {
                    points: pts,
                    dashed: false,
                    marker: Some(mi),
                });
            }
        }
        for rec in &val {
            let accs: Vec<f64> = rec.modality_acc.values().copied().collect();
            if accs.len() >= 2 {
                let lo = accs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                l.band.push((rec.epoch as f64 + 1.0, lo, hi));
            }
        }
        layers.insert(i, l);
    }
    let mut styles: Vec<_> = modalities
        .iter()
        .enumerate()
        .map(|(i, m)| (Some(i), false, m.clone()))
        .collect();
    styles.push((
        None,
        false,
        "shaded: gap between best and worst modality".into(),
    ));
    Plot {
        title: "Validation accuracy per modality (imbalance gap shaded)".into(),
        y_desc: "val accuracy".into(),
        layers,
        styles,
    }
}

/// (b) fusion accuracy and (c) loss: train dashed, val solid.
pub fn train_val_plot(runs: &[&Run], what: &str) -> Plot {
    let get = |rec: &modbal_train::EpochRecord| match what {
        "loss" => rec.loss,
        _ => rec.fusion_acc,
    };
    let mut layers = BTreeMap::new();
    for (i, r) in runs.iter().enumerate() {
        let mut l = RunLayer::default();
        for (split, dashed) in [("train", true), ("val", false)] {
            let pts: Vec<(f64, f64)> = r
                .split(split)
                .map(|rec| (rec.epoch as f64 + 1.0, get(rec)))
                .filter(|p| p.1.is_finite())
                .collect();
            if !pts.is_empty() {
                l.lines.push(Line {
                    points: pts,
                    dashed,
                    marker: None,
                });
            }
        }
        if !l.lines.is_empty() {
            layers.insert(i, l);
        }
    }
    let (title, y) = match what {
        "loss" => ("Loss", "loss"),
        _ => ("Fusion accuracy", "fusion accuracy"),
    };
    Plot {
        title: title.into(),
        y_desc: y.into(),
        layers,
        styles: vec![
            (None, true, "train (dashed)".into()),
            (None, false, "val (solid)".into()),
        ],
    }
}

/// Flatten a record's `method` object into dotted keys with numeric values (strings, booleans
/// and nulls are left out).
pub fn flatten_method(
    prefix: &str,
    m: &serde_json::Map<String, serde_json::Value>,
    out: &mut BTreeMap<String, f64>,
) {
    for (k, v) in m {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            serde_json::Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    out.insert(key, f);
                }
            }
            serde_json::Value::Object(o) => flatten_method(&key, o, out),
            _ => {}
        }
    }
}

/// The group of a flattened key: its first dotted component (`scale.audio` → `scale`).
pub fn key_group(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// (d) The logged mechanism of each method: one plot per (method, key group) from the `method`
/// values of the train records; keys of a group told apart by markers. Returned per method (the
/// plot titles are the key groups).
pub fn mechanism_plots(runs: &[&Run]) -> BTreeMap<String, Vec<Plot>> {
    // method → group → key set
    let mut groups: BTreeMap<&str, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut flat: Vec<Vec<(f64, BTreeMap<String, f64>)>> = vec![];
    for r in runs {
        let recs: Vec<(f64, BTreeMap<String, f64>)> = r
            .split("train")
            .map(|rec| {
                let mut m = BTreeMap::new();
                flatten_method("", &rec.method, &mut m);
                (rec.epoch as f64 + 1.0, m)
            })
            .collect();
        for (_, m) in &recs {
            for k in m.keys() {
                groups
                    .entry(r.method.as_str())
                    .or_default()
                    .entry(key_group(k).to_string())
                    .or_default()
                    .insert(k.clone());
            }
        }
        flat.push(recs);
    }
    let mut plots: BTreeMap<String, Vec<Plot>> = BTreeMap::new();
    for (method, gs) in groups {
        for (group, keys) in gs {
            let keys: Vec<String> = keys.into_iter().collect();
            let mut layers = BTreeMap::new();
            for (i, r) in runs.iter().enumerate() {
                if r.method != method {
                    continue;
                }
                let mut l = RunLayer::default();
                for (ki, k) in keys.iter().enumerate() {
                    let pts: Vec<(f64, f64)> = flat[i]
                        .iter()
                        .filter_map(|(e, m)| m.get(k).map(|&v| (*e, v)))
                        .filter(|p| p.1.is_finite())
                        .collect();
                    if !pts.is_empty() {
                        l.lines.push(Line {
                            points: pts,
                            dashed: false,
                            marker: (keys.len() > 1).then_some(ki),
                        });
                    }
                }
                if !l.lines.is_empty() {
                    layers.insert(i, l);
                }
            }
            let styles = if keys.len() > 1 {
                keys.iter()
                    .enumerate()
                    .map(|(ki, k)| (Some(ki), false, k.clone()))
                    .collect()
            } else {
                vec![]
            };
            plots.entry(method.to_string()).or_default().push(Plot {
                title: group.clone(),
                y_desc: group.clone(),
                layers,
                styles,
            });
        }
    }
    plots
}
