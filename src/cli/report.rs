//! `modbal report RUNS... [--out DIR] [--title TEXT]`: tables (CSV, Markdown) and a
//! self-contained HTML page over run directories; see [`modbal_report`] and docs/report.md.

use anyhow::{Context, Result};
use modbal_report::ReportOptions;
use std::path::PathBuf;

/// `modbal report` arguments.
#[derive(clap::Args)]
pub(crate) struct ReportArgs {
    /// Run directories or folders that hold them (searched recursively), e.g. a sweep folder.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output folder (created): `<PATH>/report` for a single path, else `./report`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Title of report.md and report.html.
    #[arg(long, default_value = "modbal report")]
    pub title: String,
}

/// The output folder: `--out`, else `<path>/report` for one path, else `./report`.
fn out_dir(a: &ReportArgs) -> PathBuf {
    match (&a.out, a.paths.as_slice()) {
        (Some(o), _) => o.clone(),
        (None, [one]) => one.join("report"),
        (None, _) => PathBuf::from("report"),
    }
}

pub(crate) fn run(a: &ReportArgs) -> Result<()> {
    let out = out_dir(a);
    let runs = modbal_report::load_runs(&a.paths, std::slice::from_ref(&out))?;
    let mut command = String::from("modbal report");
    for p in &a.paths {
        command.push_str(&format!(" {}", p.display()));
    }
    if let Some(o) = &a.out {
        command.push_str(&format!(" --out {}", o.display()));
    }
    let opts = ReportOptions {
        title: a.title.clone(),
        command: Some(command),
        ..ReportOptions::default()
    };
    let written = modbal_report::write_report(&runs, &out, &opts)
        .with_context(|| format!("writing the report into {}", out.display()))?;
    for r in &runs {
        if let modbal_report::RunStatus::Unreadable(why) = &r.status {
            eprintln!("warning: run {} is unreadable: {why}", r.dir.display());
        }
    }
    for w in modbal_report::duplicate_seeds(&runs) {
        eprintln!("warning: {w}; the summary counts each run");
    }
    println!("{} runs", runs.len());
    print!("{}", written.summary_markdown);
    println!("wrote:");
    for f in &written.files {
        println!("  {}", f.display());
    }
    Ok(())
}
