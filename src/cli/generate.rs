//! `chameleon generate`: answer one prompt.

use std::io::Write;

use clap::Args;

use std::sync::Arc;

use super::{Global, ModelArgs};
use crate::adapters::lora::export_lora;
use crate::llm::{Context, GenerateOptions, LoraId, Model};
use crate::personalize::{
    PromptPart, Strengths, Way, profile_plan, prompt_part_for, stored_profile,
};
use crate::steer::EditPlan;
use crate::store::{Owner, Profile};

/// How a profile's edit runs (`--apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Apply {
    /// `lora` when the model's layers run on a GPU and its architecture allows it, else `hook`.
    Auto,
    /// The eval callback edits the MLP outputs: every architecture. On a GPU it copies each edited
    /// output to host memory and back and splits llama.cpp's graph: about 1 ms a token on an H100,
    /// most of a small model's decode time there (docs/measured.md).
    Hook,
    /// Inside llama.cpp's own graph, with no callback: the paper's projection edit as a rank-2 LoRA
    /// adapter on `ffn_down` (not for architectures with a norm after the MLP: gemma2/3), an `align`
    /// profile's additive edit as a control vector (every architecture).
    Lora,
}

impl Apply {
    /// Whether an edit that only adds vectors runs as llama.cpp's control vector (in the graph)
    /// rather than through the hook: `lora` always, `auto` when the layers run on a GPU.
    pub fn vectors_in_graph(self, on_gpu: bool) -> bool {
        match self {
            Apply::Hook => false,
            Apply::Lora => true,
            Apply::Auto => on_gpu,
        }
    }

    /// Whether to run the edit as an adapter, for a model whose MLP output is (not) followed by a
    /// norm, with layers (not) on a GPU.
    ///
    /// # Errors
    /// `lora` asked for an architecture where the edit is not a weight update.
    pub fn use_lora(self, post_norm: bool, on_gpu: bool) -> anyhow::Result<bool> {
        match self {
            Apply::Hook => Ok(false),
            Apply::Lora if post_norm => anyhow::bail!(
                "`--apply lora`: this architecture has a norm after the MLP output, so the edit is \
                 not a weight update and cannot run as an adapter\nhint: use `--apply hook`"
            ),
            Apply::Lora => Ok(true),
            Apply::Auto => Ok(on_gpu && !post_norm),
        }
    }
}

/// `--apply`, shared by `generate` and `chat` (not by `profile export` / `inspect`, which need one way).
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// How the edit runs: `hook` (eval callback, every architecture), `lora` (the same edit as a rank-2
    /// adapter inside llama.cpp's graph; not gemma2/3), `auto` (`lora` on a GPU where possible).
    #[arg(long, value_enum, default_value_t = Apply::Auto)]
    pub apply: Apply,
}

/// A profile's edit, ready to install in a context.
#[derive(Debug)]
pub enum Edit {
    /// Through the eval callback.
    Hook(Arc<EditPlan>),
    /// As an adapter loaded into the model.
    Lora(LoraId),
    /// As llama.cpp's control vector ([`EditPlan::control_vector`]).
    ControlVector(Vec<f32>),
}

impl Edit {
    /// Prepare `plan` the way `apply` asks: for `lora`, export it as an adapter to a private temporary
    /// directory, load it into `model` and delete the file.
    ///
    /// # Errors
    /// See [`Apply::use_lora`]; export or load failures.
    pub fn prepare(model: &mut Model, plan: Arc<EditPlan>, apply: Apply) -> anyhow::Result<Edit> {
        // an additive edit alone is a control vector: in the graph on every architecture
        if plan.adds() && !plan.projects() {
            let in_graph = apply.vectors_in_graph(model.on_gpu());
            return match (in_graph, plan.control_vector()) {
                (false, _) => Ok(Edit::Hook(plan)),
                (true, Some(v)) => Ok(Edit::ControlVector(v)),
                (true, None) if apply == Apply::Auto => Ok(Edit::Hook(plan)),
                (true, None) => anyhow::bail!(
                    "`--apply lora`: the profile adds a vector at layer 0, which a control vector \
                     cannot steer\nhint: use `--apply hook`"
                ),
            };
        }
        if !apply.use_lora(model.mlp_node().post_norm, model.on_gpu())? {
            return Ok(Edit::Hook(plan));
        }
        let dir = private_temp_dir()?;
        let file = dir.join("profile.gguf");
        let arch = model.info().arch.clone();
        let loaded = export_lora(model.path(), &arch, model.mlp_node(), &plan, &file)
            .map_err(anyhow::Error::from)
            .and_then(|_| Ok(model.load_lora(&file)?));
        let _ = std::fs::remove_dir_all(&dir);
        match loaded {
            Ok(id) => Ok(Edit::Lora(id)),
            // `auto` only chose the adapter for speed: a model it cannot be written for (a mixture of
            // experts has no single `ffn_down`, say) still gets the edit, through the hook
            Err(e) if apply == Apply::Auto => {
                eprintln!(
                    "note: the profile cannot run as an adapter here ({e:#}); using the hook"
                );
                Ok(Edit::Hook(plan))
            }
            Err(e) => Err(e.context("`--apply lora`")),
        }
    }

    /// Whether a context for this edit needs the eval callback.
    pub fn needs_hook(&self) -> bool {
        matches!(self, Edit::Hook(_))
    }

    /// Install the edit in `ctx` (clears its KV cache when that changes what it holds).
    ///
    /// # Errors
    /// As [`Context::set_plan`] and [`Context::set_lora`].
    pub fn install(&self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        match self {
            Edit::Hook(plan) => ctx.set_plan(plan.clone())?,
            Edit::Lora(id) => ctx.set_lora(Some((*id, 1.0)))?,
            Edit::ControlVector(v) => ctx.set_control_vector(Some(v))?,
        }
        Ok(())
    }
}

/// A new directory only this user can read, under the system's temporary directory: the adapter
/// holds the user's personal directions and lives there only until llama.cpp has read it.
fn private_temp_dir() -> anyhow::Result<std::path::PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("chameleon-{}-{nanos}", std::process::id()));
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&dir)
        .map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

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
    /// Override the additive strength of a profile fitted with `--route align` or `auto`.
    #[arg(long)]
    pub gamma: Option<f32>,
    /// Answer this way instead of the one the profile's policy chose (`--route auto`): `none`,
    /// `insight`, `retrieval`, `align@G`, `insight+align@G`, `words@S`, `prior@P`,
    /// `words@S+prior@P`, `labels@P`, `labels@P+words@S`, `frequent` (the last three answer with one
    /// of the user's own answers; `chat` and `serve` answer them as `prior@P`).
    #[arg(long, value_name = "WAY")]
    pub way: Option<Way>,
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
        let Some((_, profile)) = self.profile(model, global)? else {
            return Ok(None);
        };
        let strengths = Strengths {
            alpha: self.alpha,
            beta: self.beta,
            gamma: self.gamma,
            way: self.way,
        };
        Ok(Some(Arc::new(profile_plan(&profile, &strengths)?)))
    }

    /// What the profile's way adds to the request's text: `None` for the paper's profiles (an edit
    /// only), a group's, and `--no-edit`.
    ///
    /// # Errors
    /// As [`ProfileArgs::plan`]; a store that cannot be read.
    pub fn prompt_part(
        &self,
        model: &Model,
        global: &Global,
    ) -> anyhow::Result<Option<PromptPart>> {
        let Some((owner, profile)) = self.profile(model, global)? else {
            return Ok(None);
        };
        let Owner::User(name) = &owner else {
            return Ok(None);
        };
        let store = global.open_store()?;
        Ok(prompt_part_for(&store, model, name, &profile, self.way)?)
    }

    /// The owner and the stored profile these flags name (`None`: no profile asked for).
    fn profile(&self, model: &Model, global: &Global) -> anyhow::Result<Option<(Owner, Profile)>> {
        if self.no_edit {
            return Ok(None);
        }
        let Some(owner) = self.owner()? else {
            return Ok(None);
        };
        let store = global.open_store()?;
        let Some(profile) = stored_profile(&store, model, &owner)? else {
            let fit = match &owner {
                Owner::User(u) => format!("--user {u}"),
                Owner::Group(g) => format!("--group {g}"),
            };
            anyhow::bail!(
                "{owner} has no profile for this model\nhint: fit one with `chameleon fit {fit}` (same `--model`)"
            );
        };
        Ok(Some((owner, profile)))
    }

    /// The edit these flags ask for, prepared for `model` (`None`: answer unedited).
    ///
    /// # Errors
    /// As [`ProfileArgs::plan`] and [`Edit::prepare`].
    pub fn edit(
        &self,
        model: &mut Model,
        apply: &ApplyArgs,
        global: &Global,
    ) -> anyhow::Result<Option<Edit>> {
        self.plan(model, global)?
            .map(|plan| Edit::prepare(model, plan, apply.apply))
            .transpose()
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
            logit_bias: Vec::new(),
            ..Default::default()
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
    #[command(flatten)]
    pub apply: ApplyArgs,
    /// Print the unedited answer and the personalised one, one after the other.
    #[arg(long)]
    pub compare: bool,
}

pub fn run(args: GenerateArgs, global: &Global) -> anyhow::Result<()> {
    let mut model = args.model.load(global)?;
    let edit = args.profile.edit(&mut model, &args.apply, global)?;
    let part = args.profile.prompt_part(&model, global)?;
    if let Some(p) = &part {
        eprintln!("personalised: way `{}`", p.way().name());
    }
    let mut params = args.model.context_params();
    params.hook = edit.as_ref().is_none_or(Edit::needs_hook);
    let mut ctx = model.new_context(&params)?;
    let plain_prompt = if args.raw {
        args.prompt.clone()
    } else {
        model.chat_prompt(args.system.as_deref(), &args.prompt)?
    };
    // the way's history block and insight go in the user turn, as its policy was scored
    let prompt = match &part {
        Some(p) if !args.raw => {
            model.chat_prompt(args.system.as_deref(), &p.content(&args.prompt))?
        }
        _ => plain_prompt.clone(),
    };
    // the `words` way's bias; every other way has none
    let personal_opts = GenerateOptions {
        logit_bias: part.as_ref().map(|p| p.logit_bias()).unwrap_or_default(),
        bias_until_used: true,
        ..args.sampling.options()
    };
    // the `labels` way answers with one of the user's own answers, chosen, not generated
    let choose = |ctx: &mut crate::llm::Context<'_>| -> anyhow::Result<Option<String>> {
        let Some(c) = part.as_ref().and_then(|p| p.labels()) else {
            return Ok(None);
        };
        if c.labels.is_empty() {
            anyhow::bail!(
                "the way `{}` chooses among the answers of the user's history, and it has none; \
                 try `--way none`",
                part.as_ref().map(|p| p.way().name()).unwrap_or_default()
            );
        }
        let tokens = ctx.tokenize_prompt(&prompt)?;
        ctx.clear();
        let (chosen, _) = crate::personalize::labels::choose(
            ctx, &model, &tokens, c.labels, c.prior, None, c.words,
        )?;
        Ok(chosen)
    };
    if args.compare {
        if edit.is_none() && part.is_none() {
            anyhow::bail!("`--compare` needs a profile (`--user NAME` or `--profile group:NAME`)");
        }
        let opts = args.sampling.options();
        let plain = ctx.generate(&plain_prompt, &opts, |_| {})?;
        if let Some(edit) = &edit {
            edit.install(&mut ctx)?;
        }
        let edited = match choose(&mut ctx)? {
            Some(label) => label,
            None => ctx.generate(&prompt, &personal_opts, |_| {})?.text,
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "--- without profile\n{}\n--- with profile\n{}",
            plain.text.trim(),
            edited.trim()
        )?;
        return Ok(());
    }
    if let Some(edit) = &edit {
        edit.install(&mut ctx)?;
    }
    let mut out = std::io::stdout().lock();
    if let Some(label) = choose(&mut ctx)? {
        writeln!(out, "{label}")?;
        return Ok(());
    }
    let mut io_err = None;
    ctx.generate(&prompt, &personal_opts, |piece| {
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

#[cfg(test)]
mod tests {
    use super::Apply;

    #[test]
    fn auto_takes_the_adapter_only_on_a_gpu_without_a_post_mlp_norm() {
        assert!(Apply::Auto.use_lora(false, true).unwrap());
        assert!(!Apply::Auto.use_lora(false, false).unwrap());
        assert!(!Apply::Auto.use_lora(true, true).unwrap());
        assert!(!Apply::Hook.use_lora(false, true).unwrap());
        assert!(Apply::Lora.use_lora(false, false).unwrap());
        let e = Apply::Lora.use_lora(true, false).unwrap_err().to_string();
        assert!(e.contains("--apply hook"), "{e}");
    }
}
