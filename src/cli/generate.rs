//! `chameleon generate`: answer one prompt.

use std::io::Write;

use clap::Args;

use std::sync::Arc;

use super::{Global, ModelArgs};
use crate::llm::{GenerateOptions, Model};
use crate::personalize::profile_plan;
use crate::steer::EditPlan;
use crate::store::{ModelIdentity, Owner, Store};

/// Whose profile edits the model, shared by `generate` and `chat`.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Answer as personalised for this user (their fitted profile).
    #[arg(long, short)]
    pub user: Option<String>,
    /// The profile to use: `user:NAME` or `group:NAME` [default: the `--user`'s own].
    #[arg(long, value_name = "OWNER")]
    pub profile: Option<String>,
    /// Answer without any edit (for comparison).
    #[arg(long)]
    pub no_edit: bool,
    /// Override the profile's personal strength.
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Override the profile's generic strength.
    #[arg(long)]
    pub beta: Option<f32>,
}

impl ProfileArgs {
    fn owner(&self) -> anyhow::Result<Option<Owner>> {
        if let Some(p) = &self.profile {
            return match p.split_once(':') {
                Some(("user", name)) => Ok(Some(Owner::User(name.to_string()))),
                Some(("group", name)) => Ok(Some(Owner::Group(name.to_string()))),
                _ => anyhow::bail!("`--profile` takes `user:NAME` or `group:NAME`, not `{p}`"),
            };
        }
        Ok(self.user.clone().map(Owner::User))
    }

    /// The edit plan these flags ask for (`None`: answer unedited).
    ///
    /// # Errors
    /// An unknown owner, a missing profile, or a profile fitted on another model.
    pub fn plan(&self, model: &Model, global: &Global) -> anyhow::Result<Option<Arc<EditPlan>>> {
        if self.no_edit {
            return Ok(None);
        }
        let Some(owner) = self.owner()? else {
            return Ok(None);
        };
        let store = Store::open(&global.db_path())?;
        let identity = ModelIdentity {
            fingerprint: model.fingerprint()?.to_string(),
            n_layer: model.n_layer(),
            hidden: model.n_embd(),
        };
        let Some(profile) = store.load_profile(&owner, &identity)? else {
            let fit = match &owner {
                Owner::User(u) => format!("--user {u}"),
                Owner::Group(g) => format!("--group {g}"),
            };
            anyhow::bail!(
                "{owner} has no profile for this model\nhint: fit one with `chameleon fit {fit}` (same `--model`)"
            );
        };
        Ok(Some(Arc::new(profile_plan(
            &profile, self.alpha, self.beta,
        )?)))
    }
}

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
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Print the unedited answer and the personalised one, one after the other.
    #[arg(long)]
    pub compare: bool,
}

pub fn run(args: GenerateArgs, global: &Global) -> anyhow::Result<()> {
    let model = args.model.load(global)?;
    let plan = args.profile.plan(&model, global)?;
    let mut ctx = model.new_context(&args.model.context_params())?;
    let prompt = if args.raw {
        args.prompt.clone()
    } else {
        model.chat_prompt(args.system.as_deref(), &args.prompt)?
    };
    if args.compare {
        let Some(plan) = plan else {
            anyhow::bail!("`--compare` needs a profile (`--user NAME` or `--profile group:NAME`)");
        };
        let opts = args.sampling.options();
        let plain = ctx.generate(&prompt, &opts, |_| {})?;
        ctx.set_plan(plan)?;
        let edited = ctx.generate(&prompt, &opts, |_| {})?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "--- without profile\n{}\n--- with profile\n{}",
            plain.text.trim(),
            edited.text.trim()
        )?;
        return Ok(());
    }
    if let Some(plan) = plan {
        ctx.set_plan(plan)?;
    }
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
