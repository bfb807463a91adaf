//! `chameleon history` (placeholder; the store work fills it in).

use clap::Args;

use super::Global;

#[derive(Debug, Args)]
pub struct HistoryArgs {}

pub fn run(_args: HistoryArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
