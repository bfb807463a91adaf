//! `chameleon export` and `chameleon import` (placeholder; the store work fills it in).

use clap::Args;

use super::Global;

#[derive(Debug, Args)]
pub struct ExportArgs {}

#[derive(Debug, Args)]
pub struct ImportArgs {}

pub fn run_export(_args: ExportArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub fn run_import(_args: ImportArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
