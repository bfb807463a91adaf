//! `chameleon info`.

use clap::Args;

use super::Global;

#[derive(Debug, Args)]
pub struct InfoArgs {}

pub fn run(_args: InfoArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
