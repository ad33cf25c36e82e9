//! Reports over modbal run directories: what `modbal report RUNS...` writes.
//!
//! * [`load_runs`] finds the run directories under some paths (a folder with `config.toml` and
//!   `metrics.jsonl`; folders are searched recursively, skipping `checkpoints/`, `plots/`,
//!   `tensorboard/` and report outputs) and loads each one, finished (`summary.json` present)
//!   or interrupted. A path that does not exist or holds no run is an error naming it. A run
//!   whose files cannot be parsed is *listed* with the status `unreadable: <file> line <n>: …`
//!   and left out of the summary and the plots, so that one broken run does not hide the others.
//! * [`RunsTable`] (every run) and [`SummaryTable`] (mean ± sample std over the finished seeds of
//!   each dataset, method and variant), written as CSV ([`RunsTable::to_csv`]) and Markdown.
//! * [`html_page`]: one self-contained HTML file (inline CSS, inline SVG drawn with plotters,
//!   a small inline script; nothing fetched at view time) with, per dataset, the tables and the
//!   plots — per-modality validation accuracy with the imbalance gap shaded, fusion accuracy and
//!   loss (train dashed, val solid), and each method's logged mechanism — where the runs are
//!   layers that checkboxes overlay or hide.
//! * [`write_report`] writes `runs.csv`, `summary.csv`, `report.md` and `report.html`.
//!
//! The test metrics shown are those of the epoch selected on validation fusion accuracy
//! (`summary.json`'s `best_epoch`); the test split never takes part in the selection.

pub mod plots;
pub mod runs;
pub mod tables;

pub use plots::{run_colour, PLOT_SIZE};
pub use runs::{
    assign_variants, find_runs, load_run, load_runs, Run, RunStatus, REPORT_MARKER, SKIPPED_DIRS,
};
pub use tables::{csv_field, csv_line, MeanStd, RunRow, RunsTable, SummaryRow, SummaryTable};

use modbal_core::{ModbalError, Result};
use std::path::{Path, PathBuf};

/// What to write and how.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Page title (default `modbal report`).
    pub title: String,
    /// The command line shown in the report (e.g. `modbal report runs/sweep`); `None`: not shown.
    pub command: Option<String>,
    /// With more runs than this in a dataset section, the overlay starts with only the first
    /// seed of each (method, variant) shown (the others one click away). Default 10.
    pub max_default_layers: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            title: "modbal report".into(),
            command: None,
            max_default_layers: 10,
        }
    }
}

/// The files [`write_report`] wrote, and the summary tables as Markdown (what the CLI prints).
#[derive(Clone, Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub summary_markdown: String,
}

/// Runs grouped by dataset (in order of their datasets' names), each group sorted by method,
/// variant, seed, name. Unreadable runs form the group `?`.
pub fn by_dataset(runs: &[Run]) -> Vec<(String, Vec<&Run>)> {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.dataset, &a.method, &a.variant, a.seed, &a.name)
            .cmp(&(&b.dataset, &b.method, &b.variant, b.seed, &b.name))
    });
    let mut out: Vec<(String, Vec<&Run>)> = vec![];
    for r in sorted {
        match out.last_mut() {
            Some((d, v)) if *d == r.dataset => v.push(r),
            _ => out.push((r.dataset.clone(), vec![r])),
        }
    }
    out
}

const SELECTION_NOTE: &str = "Test metrics are those of the epoch selected on the validation \
split (highest validation fusion accuracy, `best_epoch` of summary.json; `epoch` = selected / \
trained epochs); the test split is never used for selection. Mean ± sample standard deviation \
(n − 1) over the finished runs (seeds) of each method and variant. A variant lists the config \
keys that differ between runs of one dataset and method (seed, name, out_dir aside).";

/// `report.md`: the command, the selection rule, and per dataset the summary and runs tables.
pub fn markdown(runs: &[Run], opts: &ReportOptions) -> String {
    let mut out = format!("# {}\n\n", opts.title);
    if let Some(c) = &opts.command {
        out.push_str(&format!("Command: `{c}`\n\n"));
    }
    out.push_str(SELECTION_NOTE);
    out.push_str("\n\n");
    for (ds, rs) in by_dataset(runs) {
        let t = RunsTable::new(&rs);
        let s = SummaryTable::new(&t);
        out.push_str(&format!("## {ds}\n\n### Summary\n\n"));
        let (h, rows) = s.display();
        if rows.is_empty() {
            out.push_str("(no finished run)\n\n");
        } else {
            out.push_str(&tables::markdown_table(&h, &rows));
            out.push('\n');
        }
        out.push_str("### Runs\n\n");
        let (h, rows) = t.display();
        out.push_str(&tables::markdown_table(&h, &rows));
        out.push('\n');
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut t = String::from("<table><thead><tr>");
    for h in header {
        t.push_str(&format!("<th>{}</th>", esc(h)));
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            t.push_str(&format!("<td>{}</td>", esc(c)));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

const CSS: &str = "body{font-family:sans-serif;margin:16px 24px;color:#222;background:#fff}\
h1{font-size:22px;margin:4px 0}h2{font-size:19px;margin:22px 0 6px;border-bottom:1px solid #ccc}\
h3{font-size:15px;margin:12px 0 4px}p.note{font-size:12px;color:#555;max-width:1100px}\
code{background:#f3f3f3;padding:1px 3px}\
table{border-collapse:collapse;font-size:12px;margin-bottom:6px}\
th,td{border:1px solid #ddd;padding:2px 6px;text-align:right;white-space:nowrap}\
th{background:#f4f4f4}td:nth-child(-n+3){text-align:left}\
details summary{cursor:pointer;font-size:14px;font-weight:bold;margin:8px 0}\
.runs{position:sticky;top:0;background:#fff;z-index:5;padding:4px 0;border-bottom:1px solid #eee;\
font-size:12px;display:flex;flex-wrap:wrap;gap:2px 12px;align-items:center}\
.runs label{cursor:pointer;white-space:nowrap}.runs button{font-size:12px}\
.sw{display:inline-block;width:14px;height:4px;margin:0 4px 3px 2px;vertical-align:middle}\
.runs label.off{color:#aaa}.runs label.off .sw{opacity:.2}\
.plots{display:flex;flex-wrap:wrap;gap:10px 14px}\
figure{margin:0}figcaption{font-size:13px;font-weight:bold;margin:4px 0}\
.stack{position:relative}.stack svg{position:absolute;left:0;top:0}\
.styles{font-size:11px;color:#444;max-width:390px}.sub{font-weight:normal;font-size:12px;color:#666}";

const SCRIPT: &str = r#"(function(){
document.querySelectorAll("section.dataset").forEach(function(sec){
  function set(run,on){
    sec.querySelectorAll('svg.layer[data-run="'+run+'"]').forEach(function(s){s.style.display=on?"":"none";});
    sec.querySelectorAll('input[data-run="'+run+'"]').forEach(function(cb){cb.checked=on;cb.parentNode.classList.toggle("off",!on);});
  }
  var boxes=sec.querySelectorAll("input[data-run]");
  boxes.forEach(function(cb){
    cb.addEventListener("change",function(){set(cb.dataset.run,cb.checked);});
    set(cb.dataset.run,cb.checked);
  });
  sec.querySelectorAll("button[data-act]").forEach(function(b){
    b.addEventListener("click",function(){
      var on=b.dataset.act==="all";
      boxes.forEach(function(cb){set(cb.dataset.run,on);});
    });
  });
});
document.body.dataset.status="ok";
})();"#;

const ONERROR: &str = "window.onerror=function(msg,src,line,col){var b=document.body||\
document.documentElement;b.dataset.errors=(b.dataset.errors?b.dataset.errors+'\\n':'')+msg+\
' (line '+line+':'+col+')';};";

/// Whether run `i` of a section starts shown: all when the section has at most `max` runs, else
/// the first run (lowest seed) of each (method, variant).
fn shown_by_default(rs: &[&Run], i: usize, max: usize) -> bool {
    if rs.len() <= max {
        return true;
    }
    i == 0 || (&rs[i - 1].method, &rs[i - 1].variant) != (&rs[i].method, &rs[i].variant)
}

/// `report.html`: one self-contained page (see the crate docs). Each plot is a stack of SVGs:
/// the base (axes, grid, labels) and one layer per run with the same pixel mapping.
pub fn html_page(runs: &[Run], opts: &ReportOptions) -> Result<String> {
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!("<title>{}</title>", esc(&opts.title)));
    h.push_str(&format!(
        "<style>{CSS}</style><script>{ONERROR}</script></head>\n"
    ));
    h.push_str("<body data-status=\"loading\">\n");
    h.push_str(&format!("<h1>{}</h1>\n", esc(&opts.title)));
    if let Some(c) = &opts.command {
        h.push_str(&format!(
            "<p class=\"note\">Command: <code>{}</code></p>\n",
            esc(c)
        ));
    }
    h.push_str(&format!(
        "<p class=\"note\">{}</p>\n",
        esc(SELECTION_NOTE).replace('`', "")
    ));
    for (si, (ds, rs)) in by_dataset(runs).into_iter().enumerate() {
        let t = RunsTable::new(&rs);
        let s = SummaryTable::new(&t);
        h.push_str(&format!(
            "<section class=\"dataset\" id=\"dataset-{si}\"><h2>{}</h2>\n",
            esc(&ds)
        ));
        h.push_str("<h3>Summary</h3>");
        let (hd, rows) = s.display();
        if rows.is_empty() {
            h.push_str("<p>(no finished run)</p>");
        } else {
            h.push_str(&html_table(&hd, &rows));
        }
        let (hd, rows) = t.display();
        h.push_str(&format!(
            "<details><summary>Runs ({})</summary>{}</details>\n",
            rows.len(),
            html_table(&hd, &rows)
        ));
        let plotted: Vec<&Run> = rs
            .iter()
            .copied()
            .filter(|r| !matches!(r.status, RunStatus::Unreadable(_)))
            .collect();
        if plotted.is_empty() {
            h.push_str("</section>\n");
            continue;
        }
        h.push_str(
            "<h3>Plots</h3><div class=\"runs\">runs: <button data-act=\"all\">all</button>\
             <button data-act=\"none\">none</button>",
        );
        for (i, r) in plotted.iter().enumerate() {
            let on = shown_by_default(&plotted, i, opts.max_default_layers);
            h.push_str(&format!(
                "<label title=\"{}\"><input type=\"checkbox\" data-run=\"r{si}-{i}\" \
                 data-colour=\"{c}\"{}><span class=\"sw\" style=\"background:{c}\"></span>{}</label>",
                esc(&r.dir.display().to_string()),
                if on { " checked" } else { "" },
                esc(&r.name),
                c = hex(run_colour(i)),
            ));
        }
        h.push_str("</div>\n<h3>Curves</h3><div class=\"plots\">\n");
        let mods = tables::modalities(&plotted);
        let curves = [
            plots::modality_plot(&plotted, &mods),
            plots::train_val_plot(&plotted, "fusion_acc"),
            plots::train_val_plot(&plotted, "loss"),
        ];
        for p in &curves {
            h.push_str(&figure(p, si)?);
        }
        h.push_str("</div>\n");
        for (method, ps) in plots::mechanism_plots(&plotted) {
            h.push_str(&format!(
                "<h3>Mechanism: {} <span class=\"sub\">(the method's logged values, train \
                 records)</span></h3><div class=\"plots\">\n",
                esc(&method)
            ));
            for p in &ps {
                h.push_str(&figure(p, si)?);
            }
            h.push_str("</div>\n");
        }
        h.push_str("</section>\n");
    }
    h.push_str(&format!("<script>{SCRIPT}</script>\n</body></html>\n"));
    Ok(h)
}

/// One plot as a `<figure>`: caption, the stacked SVGs (base, then one layer per run with
/// `data-run="r<section>-<run>"`), and the legend of line styles.
fn figure(p: &plots::Plot, si: usize) -> Result<String> {
    let rp = plots::render(p, &run_colour)
        .map_err(|e| ModbalError::Data(format!("drawing plot {:?}: {e}", p.title)))?;
    let mut h = format!(
        "<figure><figcaption>{}</figcaption><div class=\"stack\" style=\"width:{}px;height:{}px\">",
        esc(&rp.title),
        PLOT_SIZE.0,
        PLOT_SIZE.1
    );
    h.push_str(&rp.base.replacen("<svg ", "<svg class=\"base\" ", 1));
    for (i, svg) in &rp.layers {
        h.push_str(&svg.replacen(
            "<svg ",
            &format!("<svg class=\"layer\" data-run=\"r{si}-{i}\" "),
            1,
        ));
    }
    h.push_str("</div><div class=\"styles\">");
    let legend: Vec<String> = rp
        .styles
        .iter()
        .map(|(m, dashed, text)| {
            let glyph = match (m, dashed) {
                (Some(m), _) => plots::MARKER_GLYPHS[m % plots::MARKER_GLYPHS.len()],
                (None, true) => "╌",
                (None, false) => "─",
            };
            format!("{glyph} {}", esc(text))
        })
        .collect();
    h.push_str(&legend.join(" &nbsp; "));
    h.push_str("</div></figure>\n");
    Ok(h)
}

/// Warnings for finished runs that repeat a seed within one (dataset, method, variant) — e.g. the
/// same table folder passed twice, or copies of a run — since the summary's `n` then counts a
/// seed more than once: `synth-av concat (no variant): seed 0 appears 2 times (a, b)`.
pub fn duplicate_seeds(runs: &[Run]) -> Vec<String> {
    let mut seen: std::collections::BTreeMap<(&str, &str, &str, Option<u64>), Vec<&str>> =
        Default::default();
    for r in runs.iter().filter(|r| r.status.is_finished()) {
        seen.entry((&r.dataset, &r.method, &r.variant, r.seed))
            .or_default()
            .push(&r.name);
    }
    seen.into_iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|((d, m, v, s), names)| {
            format!(
                "{d} {m} ({}): seed {} appears {} times ({})",
                if v.is_empty() { "no variant" } else { v },
                s.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                names.len(),
                names.join(", ")
            )
        })
        .collect()
}

fn write(path: &Path, text: &str, files: &mut Vec<PathBuf>) -> Result<()> {
    std::fs::write(path, text).map_err(|e| ModbalError::io("writing", path, e))?;
    files.push(path.to_path_buf());
    Ok(())
}

/// Write `runs.csv`, `summary.csv`, `report.md` and `report.html` into `out` (created).
/// `runs.csv`/`summary.csv` hold all datasets, with one column per modality of any run.
pub fn write_report(runs: &[Run], out: &Path, opts: &ReportOptions) -> Result<Written> {
    std::fs::create_dir_all(out).map_err(|e| ModbalError::io("creating", out, e))?;
    let all: Vec<&Run> = by_dataset(runs).into_iter().flat_map(|(_, v)| v).collect();
    let t = RunsTable::new(&all);
    let s = SummaryTable::new(&t);
    let mut files = vec![];
    write(&out.join("runs.csv"), &t.to_csv(), &mut files)?;
    write(&out.join("summary.csv"), &s.to_csv(), &mut files)?;
    write(&out.join("report.md"), &markdown(runs, opts), &mut files)?;
    write(
        &out.join("report.html"),
        &html_page(runs, opts)?,
        &mut files,
    )?;
    let mut summary_markdown = String::new();
    for (ds, rs) in by_dataset(runs) {
        let t = RunsTable::new(&rs);
        let (h, rows) = SummaryTable::new(&t).display();
        summary_markdown.push_str(&format!("{ds}\n"));
        if rows.is_empty() {
            summary_markdown.push_str("(no finished run)\n");
        } else {
            summary_markdown.push_str(&tables::markdown_table(&h, &rows));
        }
        summary_markdown.push('\n');
    }
    Ok(Written {
        files,
        summary_markdown,
    })
}

#[cfg(test)]
mod tests;
