//! `chameleon fit`: fit a user's (or a group's) profile.

use clap::Args;

use super::{Global, ModelArgs};
use crate::personalize::{
    DEFAULT_GAMMA, FitParams, LayerChoice, Mode, PairAnswers, PersonalDirection, Personalizer,
    Pooling, Route,
};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("owner").required(true).args(["user", "group"])))]
pub struct FitArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Fit this user's profile.
    #[arg(long, short)]
    pub user: Option<String>,
    /// Fit one profile for every member of this group (pairs pooled).
    #[arg(long, short)]
    pub group: Option<String>,
    #[command(flatten)]
    pub fit: FitFlags,
    /// Where pair queries come from.
    #[arg(long, value_enum, default_value_t = Mode::Offline)]
    pub mode: Mode,
    /// A query to add in online mode (repeatable).
    #[arg(long = "query", value_name = "TEXT")]
    pub queries: Vec<String>,
    /// Re-read the history block for every prompt instead of reusing its KV cache (to measure what the
    /// reuse saves).
    #[arg(long)]
    pub no_prefix_reuse: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The fit parameters `fit` and `eval` share.
#[derive(Debug, Clone, Args)]
pub struct FitFlags {
    /// History items kept by the PCA selection.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Layers to edit: `mid:N` (the running-mean rule over the middle half of the layers, at most N),
    /// `auto` (the rule over all layers, as the paper), `max:N`, or a list such as `3,4,10`.
    #[arg(long, default_value = "mid:3")]
    pub layers: LayerChoice,
    /// Strength of the personal direction.
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f32,
    /// Strength of the generic direction's removal.
    #[arg(long, default_value_t = 1.0)]
    pub beta: f32,
    /// Seed of the CCS restarts (generation is greedy, so a seeded fit is reproducible bit for bit).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pooling of each pair text's MLP outputs.
    #[arg(long, value_enum, default_value_t = Pooling::Mean)]
    pub pooling: Pooling,
    /// Most pairs per user whose two answers differ; up to twice as many queries are tried.
    #[arg(long, default_value_t = 12)]
    pub max_queries: usize,
    /// Tokens per generated answer.
    #[arg(long, default_value_t = 48)]
    pub answer_tokens: usize,
    /// What each answer of a pair holds: the answer only (a tag, a rating), or the answer and the
    /// model's one-sentence reason for it.
    #[arg(long, value_enum, default_value_t = PairAnswers::Label)]
    pub pair_answers: PairAnswers,
    /// What the personal direction is the top singular vector of: the personalised answers' MLP
    /// outputs (`svd`, the paper), or each pair's personalised-minus-neutral difference (`contrast`).
    #[arg(long, value_enum, default_value_t = PersonalDirection::Svd)]
    pub personal_direction: PersonalDirection,
    /// Which directions to find: the paper's (synthetic pairs, a projection edit) or `align` (the
    /// user's real answers against the model's own, an additive edit; method.md).
    #[arg(long, value_enum, default_value_t = Route::Paper)]
    pub route: Route,
    /// Strength of the `align` route's additive edit, in units of each layer's typical MLP-output norm.
    #[arg(long, default_value_t = DEFAULT_GAMMA)]
    pub gamma: f32,
    /// Tokens per generated insight.
    #[arg(long, default_value_t = 96)]
    pub insight_tokens: usize,
    /// Centre each set of pair features before CCS, as the CCS reference does (`false`: raw features,
    /// which keeps an offset shared by all personalised-minus-neutral pairs).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub ccs_normalize: bool,
    /// Square the confidence term of the CCS loss, as the CCS reference does (`false`: as the paper
    /// prints it).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub ccs_squared_min: bool,
}

impl FitFlags {
    /// The parameters these flags give, in offline mode.
    pub fn params(&self) -> FitParams {
        let mut p = FitParams {
            k: self.k,
            max_queries: self.max_queries,
            pooling: self.pooling,
            layers: self.layers.clone(),
            alpha: self.alpha,
            beta: self.beta,
            answer_tokens: self.answer_tokens,
            pair_answers: self.pair_answers,
            personal_direction: self.personal_direction,
            insight_tokens: self.insight_tokens,
            route: self.route,
            gamma: self.gamma,
            ..FitParams::default()
        };
        p.ccs.seed = self.seed;
        p.ccs.normalize = self.ccs_normalize;
        p.ccs.squared_min = self.ccs_squared_min;
        p
    }
}

impl FitArgs {
    fn params(&self) -> FitParams {
        FitParams {
            mode: self.mode,
            online_queries: self.queries.clone(),
            ..self.fit.params()
        }
    }
}

pub fn run(args: FitArgs, global: &Global) -> anyhow::Result<()> {
    if args.mode == Mode::Offline && !args.queries.is_empty() {
        anyhow::bail!("`--query` needs `--mode online`");
    }
    let store = global.open_store()?;
    let model = args.model.load(global)?;
    let interrupted = super::interrupt_flag();
    let mut p = Personalizer::new(&model, &store, args.model.context_params())?
        .with_interrupt(interrupted)
        .with_prefix_reuse(!args.no_prefix_reuse);
    let params = args.params();
    let report = match (&args.user, &args.group) {
        (Some(u), _) => p.fit_user(u, &params)?,
        (None, Some(g)) => p.fit_group(g, &params)?,
        (None, None) => unreachable!("clap requires one"),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    outln!("profile of {} fitted", report.owner)?;
    outln!("  edited layers: {:?}", report.selected_layers)?;
    if matches!(params.route, Route::Align | Route::Auto) {
        outln!(
            "  history items: {} read (the model answers differently), {} where the model answers as the user, {} answers reused from the store",
            report.pairs,
            report.dropped_pairs,
            report.reused
        )?;
    } else {
        outln!(
            "  pairs: {} used, {} dropped (identical answers), {} items reused from the store",
            report.pairs,
            report.dropped_pairs,
            report.reused
        )?;
    }
    if let Some(policy) = &report.policy {
        print_policy(policy)?;
    }
    outln!("  history items embedded: {}", report.embedded)?;
    let t = &report.tokens;
    outln!(
        "  tokens processed: {} ({} history prefix, {} prompt, {} generated, {} captured); without prefix reuse: {}",
        t.total(),
        t.prefix,
        t.suffix,
        t.generated,
        t.captured,
        t.total_without_reuse()
    )?;
    let secs: Vec<String> = report
        .seconds
        .iter()
        .map(|(s, v)| format!("{s} {v:.1}s"))
        .collect();
    outln!("  time: {}", secs.join(", "))?;
    Ok(())
}

/// An `auto` profile's way of answering and every candidate's held-out score, indented under a
/// report (`fit`, `user show`).
pub(super) fn print_policy(policy: &crate::personalize::Policy) -> std::io::Result<()> {
    outln!(
        "  answers by way `{}`, chosen on the newest {} history items (held out):",
        policy.way.name(),
        policy.held_out
    )?;
    for s in &policy.scores {
        let metric = s
            .metric
            .map_or(String::new(), |m| format!("metric {m:.3}, "));
        outln!(
            "    {:<18} {metric}log-likelihood {:.3} a token",
            s.way.name(),
            s.log_likelihood
        )?;
    }
    if let Some(why) = &policy.fallback {
        outln!("  {why}")?;
    }
    Ok(())
}
