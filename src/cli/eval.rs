//! `chameleon eval`: CHAMELEON against its baselines on LaMP-format data.

use std::path::PathBuf;

use clap::Args;

use super::fit::FitFlags;
use super::{Global, ModelArgs};
use crate::eval::run::{default_eval_db, default_out};
use crate::eval::{EvalOptions, Evaluator, GroupSize, Method, WORDS_STRENGTH};
use crate::personalize::LayerChoice;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Directory of a LaMP task: `<split>_questions.json` and `<split>_outputs.json`.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The split to answer.
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// Methods to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "instruct,history-prompt,insight-prompt,chameleon,no-model"
    )]
    pub methods: Vec<Method>,
    /// Answer only the first N questions.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Train users the `chameleon-group` profile is fitted on: a count, or `all`.
    #[arg(long, default_value = "20")]
    pub group_size: GroupSize,
    /// The split the group's users come from.
    #[arg(long, default_value = "train")]
    pub group_split: String,
    /// Most tokens per answer [default: 16 for labels, 8 for ratings, 64 for text].
    #[arg(long, value_name = "N")]
    pub reply_tokens: Option<usize>,
    /// Strength of the `words` and `words-other-user` methods' logit bias.
    #[arg(long, value_name = "S", default_value_t = WORDS_STRENGTH)]
    pub words_strength: f32,
    /// Weight of the user's answer prior (the log of how often their history gives each label or
    /// rating) added to the `words` methods' bias; 0 adds none. The `labels` method's weight of the
    /// user's counts.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub prior_strength: f32,
    /// Strength of the `words` bias the `labels` method scores its answers under; 0 (the default):
    /// none.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub labels_words: f32,
    /// Write the `labels` method's per-answer scores, every question read three ways (after the
    /// user's prompt, after it with the request `N/A`, after the request alone), as JSON lines
    /// appended to FILE: the material for choosing offline how the way scores its answers.
    #[arg(long, value_name = "FILE")]
    pub label_scores: Option<PathBuf>,
    #[command(flatten)]
    pub fit: FitFlags,
    /// Layers of the `align` methods' fits, chosen among the middle half by how well the items agree
    /// (`mid:N`), or a list.
    #[arg(long, default_value = "mid:1")]
    pub align_layers: LayerChoice,
    /// Per-question predictions, as JSON [default: `<set>-<split>.predictions.json`].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: EvalArgs, global: &Global) -> anyhow::Result<()> {
    let db = global.db.clone().unwrap_or_else(default_eval_db);
    let store = Store::open_with(&db, &global.key_options())?;
    let model = args.model.load(global)?;
    let interrupted = super::interrupt_flag();
    let progress = !global.verbose;
    let mut evaluator = Evaluator::new(
        &model,
        &store,
        args.model.context_params(),
        interrupted,
        progress,
    )?;
    let opts = EvalOptions {
        data: args.data.clone(),
        split: args.split.clone(),
        group_split: args.group_split.clone(),
        methods: args.methods.clone(),
        limit: args.limit,
        group_size: args.group_size,
        seed: args.fit.seed,
        fit: args.fit.params(),
        align_layers: args.align_layers.clone(),
        answer_tokens: args.reply_tokens,
        words_strength: args.words_strength,
        prior_strength: args.prior_strength,
        labels_words: args.labels_words,
        label_scores: args.label_scores.clone(),
        progress,
    };
    let report = evaluator.run(&opts)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.data, &args.split));
    let json = serde_json::to_string_pretty(&report)?;
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &out))
        .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", out.display()))?;
    out!("{}", report.markdown())?;
    eprintln!(
        "predictions: {}; answers and fits are kept in {}",
        out.display(),
        db.display()
    );
    Ok(())
}
