//! `chameleon chat`: an interactive conversation, personalised for a user.

use std::io::{BufRead, Write};

use clap::Args;

use super::generate::{ApplyArgs, Edit, ProfileArgs, SamplingArgs};
use super::{Global, ModelArgs};
use crate::llm::{ChatMessage, GenerateOptions};

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub apply: ApplyArgs,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
}

pub fn run(args: ChatArgs, global: &Global) -> anyhow::Result<()> {
    let mut model = args.model.load(global)?;
    let edit = args.profile.edit(&mut model, &args.apply, global)?;
    // the way's history block and insight open the conversation's first user turn
    let mut part = args.profile.prompt_part(&model, global)?;
    let mut params = args.model.context_params();
    params.hook = edit.as_ref().is_none_or(Edit::needs_hook);
    let mut ctx = model.new_context(&params)?;
    let personalised = edit.is_some() || part.is_some();
    // the `words` way's bias, in every reply (each entry until its token is in that reply)
    let opts = GenerateOptions {
        logit_bias: part.as_ref().map(|p| p.logit_bias()).unwrap_or_default(),
        bias_until_used: true,
        ..args.sampling.options()
    };
    if let Some(edit) = &edit {
        edit.install(&mut ctx)?;
    }
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    eprintln!(
        "chat with {}{}; an empty line or Ctrl-D ends it",
        model.info().name.as_deref().unwrap_or(&model.info().arch),
        if personalised { " (personalised)" } else { "" }
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let content = match part.take() {
            Some(p) => p.content(line.trim()),
            None => line.trim().to_string(),
        };
        messages.push(ChatMessage::new("user", content));
        let prompt = model.apply_chat_template(&messages, true)?;
        let g = ctx.generate(&prompt, &opts, |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        })?;
        writeln!(out)?;
        messages.push(ChatMessage::new("assistant", g.text));
    }
    Ok(())
}
