//! `chameleon profile export`: a fitted profile as a LoRA adapter or a control vector for stock
//! llama.cpp;
//! `chameleon profile inspect`: how far a profile's edit reaches on a prompt.

use std::sync::Arc;

use clap::{Args, Subcommand};

use super::generate::ProfileArgs;
use super::{Global, ModelArgs};
use crate::adapters::cvec::export_control_vector;
use crate::adapters::lora::export_lora;
use crate::llm::CaptureRequest;
use crate::steer::{NULL_STRENGTH, Reach, median, reach};

#[derive(Debug, Args)]
pub struct ProfileCmdArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Write the profile as a rank-2 LoRA adapter on `ffn_down` (llama.cpp `--lora FILE`).
    Export(ExportLoraArgs),
    /// Show how far the edit reaches on a prompt, per edited layer: how large the MLP output is next to
    /// the residual stream, how much of it lies along the personal and generic directions, how far the
    /// edit moves the residual stream, and how far the last layer's output moves in the end.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// The prompt to read.
    #[arg(long, short)]
    pub prompt: String,
    /// Feed the prompt as is, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `profile inspect` measures.
#[derive(Debug, serde::Serialize)]
struct Inspection {
    tokens: usize,
    layers: Vec<Reach>,
    /// `||h_L(edited) - h_L|| / ||h_L||` at the last layer's output, median over positions.
    output_moved: f32,
    /// The same at strength [`NULL_STRENGTH`], which steers nothing: how far rounding alone moves it.
    output_moved_by_rounding: f32,
}

#[derive(Debug, Args)]
pub struct ExportLoraArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Where to write the paper's projection edit as a LoRA adapter.
    #[arg(
        long,
        value_name = "OUT.gguf",
        required_unless_present = "control_vector",
        conflicts_with = "control_vector"
    )]
    pub lora: Option<std::path::PathBuf>,
    /// Where to write an `align` profile's additive edit as a control vector (llama.cpp
    /// `--control-vector FILE`), at the profile's strength (or `--gamma`).
    #[arg(long, value_name = "OUT.gguf")]
    pub control_vector: Option<std::path::PathBuf>,
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
            if let Some(out) = &a.control_vector {
                let n = export_control_vector(&plan, &model.info().arch, out)?;
                eprintln!(
                    "wrote `{}`: a control vector for {n} layer{}",
                    out.display(),
                    if n == 1 { "" } else { "s" }
                );
                eprintln!(
                    "use it with llama.cpp: `llama-cli -m {} --control-vector {}`",
                    model.path().display(),
                    out.display()
                );
                return Ok(());
            }
            let out = a
                .lora
                .as_ref()
                .expect("clap requires --lora or --control-vector");
            let n = export_lora(
                model.path(),
                &model.info().arch,
                model.mlp_node(),
                &plan,
                out,
            )?;
            eprintln!(
                "wrote `{}`: rank-2 LoRA on `ffn_down` of {n} layers",
                out.display()
            );
            eprintln!(
                "use it with llama.cpp: `llama-cli -m {} --lora {}`",
                model.path().display(),
                out.display()
            );
            Ok(())
        }
        ProfileCommand::Inspect(a) => inspect(&a, global),
    }
}

fn inspect(a: &InspectArgs, global: &Global) -> anyhow::Result<()> {
    if a.profile.no_edit {
        anyhow::bail!("`--no-edit` makes no sense for an inspection");
    }
    let model = a.model.load(global)?;
    let Some(plan) = a.profile.plan(&model, global)? else {
        anyhow::bail!("name the profile with `--user NAME` or `--profile group:NAME`");
    };
    let mut ctx = model.new_context(&a.model.context_params())?;
    let prompt = if a.raw {
        a.prompt.clone()
    } else {
        model.chat_prompt(None, &a.prompt)?
    };
    let tokens = ctx.tokenize_prompt(&prompt)?;
    let layers: Vec<usize> = plan.edits().iter().map(|e| e.layer).collect();
    let last = model.n_layer() - 1;
    let mut names: Vec<String> = layers.iter().map(|l| format!("l_out-{l}")).collect();
    names.push(format!("l_out-{last}"));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    let mlp = ctx.capture(&tokens, &CaptureRequest { layers })?;
    let plain = ctx.probe(&tokens, &names)?;
    ctx.set_plan(plan.clone())?;
    let edited = ctx.probe(&tokens, &names[names.len() - 1..])?;
    ctx.set_plan(Arc::new(plan.at_strength(NULL_STRENGTH)))?;
    let nulled = ctx.probe(&tokens, &names[names.len() - 1..])?;

    let mut reaches = Vec::new();
    for (e, resid) in plan.edits().iter().zip(&plain) {
        let rows = mlp.rows(e.layer).expect("captured above");
        let r = reach(e, rows, resid).ok_or_else(|| {
            anyhow::anyhow!(
                "layer {}: the MLP output and `l_out` disagree in size ({} vs {} values)",
                e.layer,
                rows.len(),
                resid.len()
            )
        })?;
        reaches.push(r);
    }
    let out_plain = plain.last().expect("the last layer was probed");
    let d = model.n_embd();
    // median over positions of ||h_L(edited) - h_L|| / ||h_L||
    let moved = |out_edit: &[f32]| -> anyhow::Result<f32> {
        if out_plain.len() != out_edit.len() || out_plain.is_empty() {
            anyhow::bail!("the last layer's output was not read back");
        }
        Ok(median(
            out_plain
                .chunks_exact(d)
                .zip(out_edit.chunks_exact(d))
                .map(|(h, g)| {
                    let diff: f32 = h.iter().zip(g).map(|(a, b)| (a - b) * (a - b)).sum();
                    let norm: f32 = h.iter().map(|a| a * a).sum();
                    (diff / norm.max(f32::MIN_POSITIVE)).sqrt()
                })
                .collect(),
        ))
    };
    let report = Inspection {
        tokens: tokens.len(),
        layers: reaches,
        output_moved: moved(&edited[0])?,
        output_moved_by_rounding: moved(&nulled[0])?,
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    outln!("{} prompt tokens; medians over positions", report.tokens)?;
    outln!("| layer | ‖x‖/‖h‖ | ‖x·p‖/‖x‖ | ‖x·n‖/‖x‖ | edit moves h by |")?;
    outln!("|---|---|---|---|---|")?;
    for r in &report.layers {
        outln!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.2}% |",
            r.layer,
            r.mlp_share,
            r.along_p,
            r.along_n,
            100.0 * r.moved
        )?;
    }
    outln!(
        "the last layer's output moves by {:.2}%; by {:.2}% under the same edit at strength {NULL_STRENGTH:e}, \
         which steers nothing: rounding alone (x: MLP output, h: residual stream after the layer)",
        100.0 * report.output_moved,
        100.0 * report.output_moved_by_rounding
    )?;
    Ok(())
}
