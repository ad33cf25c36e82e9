//! `modbal sweep`: see [`crate::sweep`].

use crate::registry::Registry;
use anyhow::Result;

/// `modbal sweep` arguments.
#[derive(clap::Args)]
pub(crate) struct SweepArgs {}

pub(crate) fn run(_reg: &Registry, _a: &SweepArgs) -> Result<()> {
    anyhow::bail!("modbal sweep is not built yet")
}
