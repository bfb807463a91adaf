//! `chameleon generate`: answer one prompt.

use std::io::Write;

use clap::Args;

use super::{Global, ModelArgs};
use crate::llm::GenerateOptions;

/// Options of one generation, shared by `generate` and `chat`.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Stop before this string (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The prompt.
    #[arg(long, short)]
    pub prompt: String,
    /// A system message (ignored with `--raw`).
    #[arg(long)]
    pub system: Option<String>,
    /// Feed the prompt as is, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
}

pub fn run(args: GenerateArgs, global: &Global) -> anyhow::Result<()> {
    let model = args.model.load(global)?;
    let mut ctx = model.new_context(&args.model.context_params())?;
    let prompt = if args.raw {
        args.prompt.clone()
    } else {
        model.chat_prompt(args.system.as_deref(), &args.prompt)?
    };
    let mut out = std::io::stdout().lock();
    let mut io_err = None;
    ctx.generate(&prompt, &args.sampling.options(), |piece| {
        if io_err.is_none()
            && let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush())
        {
            io_err = Some(e);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    writeln!(out)?;
    Ok(())
}
