//! `modbal report RUNS...`: see [`modbal_report`].

use anyhow::Result;
use std::path::PathBuf;

/// `modbal report` arguments.
#[derive(clap::Args)]
pub(crate) struct ReportArgs {
    /// Run directories or folders that hold them (searched recursively), e.g. a sweep folder.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub(crate) fn run(_a: &ReportArgs) -> Result<()> {
    anyhow::bail!("modbal report is not built yet")
}
