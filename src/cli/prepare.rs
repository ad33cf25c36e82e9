//! `modbal prepare`: raw audio-visual datasets to the layout the loaders read (crate
//! `modbal-prepare`; layout and recipes in its docs and in `datasets/<name>/README.md`).

use anyhow::Result;
use modbal_prepare::{default_recipe, prepare, PrepareOptions, DATASET_NAMES, EXIT_SKIPPED};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// Dataset: crema-d, kinetics-sounds, ave or vggsound.
    pub dataset: String,
    /// Folder holding the raw data (layouts: datasets/<dataset>/README.md).
    #[arg(long)]
    pub raw: PathBuf,
    /// Output folder (created; re-running with the same one resumes).
    #[arg(long)]
    pub out: PathBuf,
    /// Audio recipe: ogm-ge (257×188 log-STFT), fbank (1024×128 Kaldi fbank) or ave (257×1004).
    /// Default: ogm-ge for crema-d, ave for ave, fbank for kinetics-sounds and vggsound.
    #[arg(long)]
    pub recipe: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs the command; exits with status 3 (after printing the summary) when clips were skipped.
pub fn run(a: &PrepareArgs) -> Result<()> {
    if !DATASET_NAMES.contains(&a.dataset.as_str()) {
        anyhow::bail!(
            "unknown dataset {:?}; valid choices: {}",
            a.dataset,
            DATASET_NAMES.join(", ")
        );
    }
    let opts = PrepareOptions {
        dataset: a.dataset.clone(),
        raw: a.raw.clone(),
        out: a.out.clone(),
        recipe: a.recipe.clone(),
        jobs: a.jobs,
        progress: !a.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let r = prepare(&opts)?;
    let recipe = a.recipe.as_deref().unwrap_or(default_recipe(&a.dataset));
    println!(
        "{}: {} clips ready in {} ({} prepared now, {} reused), recipe {recipe}, {:.1} s ({:.1} clips/s)",
        a.dataset,
        r.total,
        a.out.display(),
        r.prepared,
        r.reused,
        r.seconds,
        r.prepared as f64 / r.seconds.max(1e-9)
    );
    if r.cleaned > 0 {
        eprintln!(
            "removed {} temporary file(s) left in {} by an interrupted run",
            r.cleaned,
            a.out.display()
        );
    }
    if !r.skipped.is_empty() {
        eprintln!(
            "skipped {} clip(s) (listed with reasons in {}):",
            r.skipped.len(),
            r.manifest.display()
        );
        for s in r.skipped.iter().take(10) {
            eprintln!(
                "  {}: {}{}",
                s.id,
                s.file
                    .as_deref()
                    .map(|f| format!("{f}: "))
                    .unwrap_or_default(),
                s.reason
            );
        }
        if r.skipped.len() > 10 {
            eprintln!("  ... and {} more", r.skipped.len() - 10);
        }
        std::process::exit(EXIT_SKIPPED);
    }
    Ok(())
}
