//! `chameleon profile export`: a fitted profile as a LoRA adapter for stock llama.cpp.

use clap::{Args, Subcommand};

use super::generate::ProfileArgs;
use super::{Global, ModelArgs};
use crate::steer::lora::export_lora;

#[derive(Debug, Args)]
pub struct ProfileCmdArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Write the profile as a rank-2 LoRA adapter on `ffn_down` (llama.cpp `--lora FILE`).
    Export(ExportLoraArgs),
}

#[derive(Debug, Args)]
pub struct ExportLoraArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Where to write the adapter.
    #[arg(long, value_name = "OUT.gguf")]
    pub lora: std::path::PathBuf,
}

pub fn run(args: ProfileCmdArgs, global: &Global) -> anyhow::Result<()> {
    match args.command {
        ProfileCommand::Export(a) => {
            if a.profile.no_edit {
                anyhow::bail!("`--no-edit` makes no sense for an export");
            }
            let model = a.model.load(global)?;
            let Some(plan) = a.profile.plan(&model, global)? else {
                anyhow::bail!("name the profile with `--user NAME` or `--profile group:NAME`");
            };
            let n = export_lora(
                model.path(),
                &model.info().arch,
                model.mlp_node(),
                &plan,
                &a.lora,
            )?;
            eprintln!(
                "wrote `{}`: rank-2 LoRA on `ffn_down` of {n} layers",
                a.lora.display()
            );
            eprintln!(
                "use it with llama.cpp: `llama-cli -m {} --lora {}`",
                model.path().display(),
                a.lora.display()
            );
            Ok(())
        }
    }
}
