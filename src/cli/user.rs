//! `chameleon user` (placeholder; the store work fills it in).

use clap::Args;

use super::Global;

#[derive(Debug, Args)]
pub struct UserArgs {}

pub fn run(_args: UserArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
