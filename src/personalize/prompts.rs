//! Every prompt the pipeline writes, in one place and versioned.
//!
//! Stored insights and pairs are keyed by [`PROMPT_VERSION`]: change any template here and bump it, so
//! that re-runs regenerate instead of mixing texts made by different prompts.
//!
//! The pair prompts are laid out so that all of a user's prompts share one prefix, the history block
//! (stage 3 reuses its KV cache): `[template start] [history] | [instruction with insight] [query]
//! [template end]`. [`split_chat`] renders a chat with the model's own template and cuts it at the `|`.

use crate::store::InsightKind;

/// Version of the templates below; part of the key of stored insights and pairs. 3: insights are
/// started with their lead and tidied ([`tidy_insight`]); pair answers are kept in the task's output
/// space ([`pair_answer`]).
pub const PROMPT_VERSION: u32 = 3;

/// The kind of answer a task wants; each family has its own wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskFamily {
    /// Pick one label from a list (LaMP-2 movie tags).
    Classification,
    /// A 1-5 rating (LaMP-3).
    Rating,
    /// Free text in the user's style (LaMP-7 tweets, notes, answers).
    FreeText,
}

impl TaskFamily {
    /// The family of a stored history item's task kind (`lamp2`, `LaMP_3`, `tags`, `rating`, ...).
    /// Unknown kinds are free text.
    pub fn from_kind(kind: &str) -> TaskFamily {
        let k = kind.to_ascii_lowercase().replace(['-', '_'], "");
        if k.contains("lamp1") || k.contains("lamp2") || k.contains("tag") || k.contains("class") {
            TaskFamily::Classification
        } else if k.contains("lamp3") || k.contains("rating") || k.contains("score") {
            TaskFamily::Rating
        } else {
            TaskFamily::FreeText
        }
    }
}

/// One history item as the prompts show it.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// What the user saw or was asked (a movie description, a product review, a request).
    pub input: &'a str,
    /// What the user answered (a tag, a rating, their text).
    pub output: &'a str,
}

/// Longest item text shown in a prompt, in characters; longer texts are cut with an ellipsis so that a
/// history block fits small context windows.
pub const MAX_ITEM_CHARS: usize = 400;

fn clip(s: &str) -> String {
    clip_chars(s.trim(), MAX_ITEM_CHARS).into_owned()
}

/// `s` cut to its first `max` characters, marked with `...` when cut.
pub fn clip_chars(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(s),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}...", &s[..end])),
    }
}

// The history block's labels, shared with the rules that spot a model copying the block
// ([`tidy_insight`], [`pair_answer`]).
const HEADER: &str = "Here is what this user did before";
const ITEM: &str = "Item:";
const TAG: &str = "The user's tag:";
const REVIEW: &str = "Review:";
const RATING: &str = "The user's rating:";
const WROTE: &str = "The user wrote:";
const REQUEST: &str = "Request:";
const ANSWER: &str = "The user's answer:";

/// Every label of the history block; an insight that writes one has gone back to copying the history.
const BLOCK_LABELS: [&str; 8] = [HEADER, ITEM, TAG, REVIEW, RATING, WROTE, REQUEST, ANSWER];

/// `text` up to the first label of the history block it holds: where a model went back to copying it.
fn before_block_label(text: &str) -> &str {
    let cut = BLOCK_LABELS
        .iter()
        .filter_map(|l| text.find(l))
        .min()
        .unwrap_or(text.len());
    &text[..cut]
}

/// The labels the history block puts before a user's answer; small models often open their answer
/// with one.
const ANSWER_LABELS: [&str; 4] = [TAG, RATING, ANSWER, WROTE];

/// The history block: the selected items, numbered.
pub fn history_block(family: TaskFamily, items: &[Item<'_>]) -> String {
    let mut s = format!("{HEADER}:\n");
    for (i, it) in items.iter().enumerate() {
        let n = i + 1;
        let line = match family {
            TaskFamily::Classification => {
                format!(
                    "{n}. {ITEM} {}\n   {TAG} {}\n",
                    clip(it.input),
                    clip(it.output)
                )
            }
            TaskFamily::Rating => {
                format!(
                    "{n}. {REVIEW} {}\n   {RATING} {}\n",
                    clip(it.input),
                    clip(it.output)
                )
            }
            TaskFamily::FreeText => {
                if it.input.trim().is_empty() || it.input.trim() == it.output.trim() {
                    format!("{n}. {WROTE} {}\n", clip(it.output))
                } else {
                    format!(
                        "{n}. {REQUEST} {}\n   {ANSWER} {}\n",
                        clip(it.input),
                        clip(it.output)
                    )
                }
            }
        };
        s.push_str(&line);
    }
    s
}

/// Stage 2, personal insight: what characterises this user.
pub fn personal_insight_request(family: TaskFamily) -> String {
    let what = match family {
        TaskFamily::Classification => {
            "which kinds of items they like and which labels they tend to choose"
        }
        TaskFamily::Rating => {
            "what they value, what annoys them, and how generous or strict their ratings are"
        }
        TaskFamily::FreeText => {
            "their interests, their tastes, and the tone and style of their writing"
        }
    };
    format!(
        "From the history above, describe this user's personal characteristics and preferences: {what}. \
         Write two or three sentences that start with \"{}\".",
        insight_lead(InsightKind::Personal)
    )
}

/// What a generic assistant does for a task family, in the words of the neutral insight request.
fn generic_behaviour(family: TaskFamily) -> &'static str {
    match family {
        TaskFamily::Classification => "pick the most common, obvious label for an item",
        TaskFamily::Rating => "rate an item the way an average customer would",
        TaskFamily::FreeText => "answer in a plain, standard, impersonal way",
    }
}

/// Stage 2, neutral insight: what a generic, impersonal answer looks like.
pub fn neutral_insight_request(family: TaskFamily) -> String {
    let what = generic_behaviour(family);
    format!(
        "Ignore this user's personal preferences and history entirely. Describe in two or three sentences \
         how a generic assistant that knows nothing about the user would {what}. Start with \"{}\".",
        insight_lead(InsightKind::Neutral)
    )
}

/// The words each insight opens with, as its request asks. The model's reply is started with them and
/// the model goes on from there: small models otherwise often carry on with the numbered history list
/// instead of writing the insight (SmolLM2-135M did so in half of its neutral insights).
pub fn insight_lead(kind: InsightKind) -> &'static str {
    match kind {
        InsightKind::Personal => "This user",
        InsightKind::Neutral => "A generic answer",
    }
}

/// An insight as stored and used: `text` (the lead and the model's continuation) cut where the model
/// starts copying the history block (one of its labels, or a numbered list item at the start of a line
/// or after a colon), without repeated sentences, and without an unfinished last sentence when a
/// finished one comes before it; then [`settled_insight`]: a neutral insight with nothing left after
/// its lead, or a refusal, becomes the generic behaviour the request described; a personal one keeps
/// what is left, however short.
pub fn tidy_insight(kind: InsightKind, family: TaskFamily, text: &str) -> String {
    let text = text.trim();
    // a list the model wrote about the user is the insight in points, not the history copied
    let listed;
    let text = match list_item_start(text) {
        Some(i) if about_the_user(&text[i..]) => {
            listed = format!(
                "{} {}",
                text[..i].trim_end(),
                points_as_sentences(&text[i..])
            );
            listed.as_str()
        }
        _ => text,
    };
    let mut cut = before_block_label(text).len();
    if let Some(i) = list_item_start(text) {
        cut = cut.min(i);
    }
    if let Some(i) = loop_start(text) {
        cut = cut.min(i);
    }
    let lead = insight_lead(kind);
    if kind == InsightKind::Neutral {
        // "A generic answer: "A generic answer..." (a personal insight may say "This user" often)
        if let Some(i) = text.get(lead.len()..).and_then(|rest| rest.find(lead)) {
            cut = cut.min(lead.len() + i);
        }
    }
    settled_insight(kind, family, &once_each(&text[..cut]))
}

/// Whether a numbered list speaks of the user ("1. They enjoy slow films"), as an insight written in
/// points does, rather than copying history items ("1. Three people in Mexico City ...").
fn about_the_user(list: &str) -> bool {
    let first = without_list_number(list);
    ["They ", "The user", "This user", "He ", "She "]
        .iter()
        .any(|p| first.starts_with(p))
}

/// `text` without the list number that opens it ("1. Solaris" gives "Solaris").
fn without_list_number(text: &str) -> &str {
    text.trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start_matches('.')
        .trim_start()
}

/// A numbered list's items as sentences: markers dropped, each item ended with a full stop.
fn points_as_sentences(list: &str) -> String {
    list.lines()
        .map(|l| {
            let l = l.trim();
            match list_item_start(l) {
                Some(0) => without_list_number(l),
                _ => l,
            }
        })
        .filter(|l| !l.is_empty())
        .map(|l| {
            if l.ends_with(['.', '!', '?']) {
                l.to_string()
            } else {
                format!("{l}.")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sentences of `text` with repeats left out, and without an unfinished last sentence when a
/// finished one comes before it, joined by single spaces.
fn once_each(text: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut sentences: Vec<&str> = Vec::new();
    for s in split_sentences(text) {
        if seen.insert(s.to_lowercase()) {
            sentences.push(s);
        }
    }
    let finished = |s: &str| s.ends_with(['.', '!', '?']);
    if sentences.len() > 1 && !finished(sentences[sentences.len() - 1]) {
        sentences.pop();
    }
    sentences.join(" ")
}

/// Byte offset where `text` starts to loop, as small models do: the third of three equal words in a
/// row ("classic classic classic" keeps one), or the second occurrence of a run of four words (compared
/// without case and punctuation).
fn loop_start(text: &str) -> Option<usize> {
    let words: Vec<(usize, String)> = text
        .split_whitespace()
        .map(|w| {
            let at = w.as_ptr() as usize - text.as_ptr() as usize;
            let norm: String = w
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect();
            (at, norm)
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for i in 0..words.len() {
        if i >= 2 && words[i].1 == words[i - 1].1 && words[i].1 == words[i - 2].1 {
            return Some(words[i - 1].0);
        }
        if i + 4 <= words.len() {
            let gram: Vec<&str> = words[i..i + 4].iter().map(|(_, w)| w.as_str()).collect();
            if !seen.insert(gram) {
                return Some(words[i].0);
            }
        }
    }
    None
}

/// Sentences of `text`: cut after `.`, `!` or `?` followed by white space, trimmed, empty ones dropped.
fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?')
            && chars.peek().is_some_and(|&(_, next)| next.is_whitespace())
        {
            out.push(text[start..=i].trim());
            start = i + 1;
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// Byte offset of the first numbered list item (`12. `) that opens a line or follows a colon.
fn list_item_start(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if !b.is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            continue;
        }
        let before = text[..i].trim_end_matches([' ', '\t']);
        let opens = before.is_empty() || before.ends_with('\n') || before.ends_with(':');
        if !opens {
            continue;
        }
        let digits = bytes[i..].iter().take_while(|d| d.is_ascii_digit()).count();
        let rest = &bytes[i + digits..];
        if digits <= 3 && rest.len() >= 2 && rest[0] == b'.' && rest[1].is_ascii_whitespace() {
            return Some(i);
        }
    }
    None
}

/// The task wording for one query.
pub fn query_text(family: TaskFamily, input: &str, labels: Option<&[&str]>) -> String {
    match family {
        TaskFamily::Classification => match labels {
            Some(labels) => format!(
                "Which one of these tags fits this item best: {}?\nItem: {}\nAnswer with the tag only.",
                labels.join(", "),
                clip(input)
            ),
            None => format!(
                "Which tag fits this item best?\nItem: {}\nAnswer with the tag only.",
                clip(input)
            ),
        },
        TaskFamily::Rating => {
            format!(
                "How would this user rate this, from 1 to 5?\nReview: {}\nAnswer with one number.",
                clip(input)
            )
        }
        TaskFamily::FreeText => clip(input),
    }
}

/// The label list of a task kind, when the kind is a classification task with a fixed list (LaMP-1/2).
pub use crate::answer::labels_for_kind;

/// The query text for one history item used as an offline query (stage 3), as the model is shown it.
/// An item with no input (a tweet, a note: only the user's own words are known) becomes a request to
/// paraphrase its text, which is what the personalised and the neutral answer then differ on.
pub fn item_query(
    family: TaskFamily,
    item: &crate::store::HistoryItem,
    labels: Option<&[&str]>,
) -> String {
    if item.input.trim().is_empty() {
        return format!(
            "Paraphrase the following text without any explanation before or after it: {}",
            clip(&item.output)
        );
    }
    query_text(family, &item.input, labels)
}

/// The words a pair answer is started with, so that a small model answers in the task's output space
/// (a tag, a rating) instead of describing the item; the same for the personalised and the neutral
/// answer, so only what follows differs. Free text has none.
pub fn answer_lead(family: TaskFamily) -> &'static str {
    match family {
        TaskFamily::Classification => "Tag:",
        TaskFamily::Rating => "Rating:",
        TaskFamily::FreeText => "",
    }
}

/// One answer of a pair as the fit uses it (stage 3): the answer in the task's output space, or an empty
/// string when the reply holds none (the pair is then dropped). Small models answer in the history block's format ("The user's tag:
/// classic"), and a pair "classic" / "The user's tag: classic" differs only in that format; the fit must
/// see pairs whose answers differ in what they say.
///
/// - the reply's opening answer labels are dropped, and it is cut where a block label comes again;
/// - classification: the label of the task's list found first ([`crate::answer::first_label`]),
///   else the reply's first line: a tag in the model's own words ("science fiction") still says which
///   tag the model chose;
/// - rating: the 1-5 rating found first ([`crate::answer::first_rating`]), else nothing;
/// - free text: [`free_text_answer`] of the text that is left.
pub fn pair_answer(family: TaskFamily, labels: Option<&[&str]>, reply: &str) -> String {
    let mut text = reply.trim();
    while let Some(rest) = ANSWER_LABELS
        .iter()
        .find_map(|l| text.strip_prefix(l))
        .map(str::trim_start)
    {
        text = rest;
    }
    let text = before_block_label(text).trim();
    let first_line = || text.lines().next().unwrap_or("").trim().to_string();
    match family {
        TaskFamily::Classification => labels
            .and_then(|labels| crate::answer::first_label(text, labels))
            .map_or_else(first_line, str::to_string),
        TaskFamily::Rating => crate::answer::first_rating(text)
            .unwrap_or_default()
            .to_string(),
        TaskFamily::FreeText => free_text_answer(text),
    }
}

/// Openings of a reply that declines the request, or repeats its instruction, instead of answering it.
const REFUSALS: [&str; 10] = [
    // the instruction said again
    "you are a personalised assistant",
    "you're a personal",
    "i'm unable to",
    "i am unable to",
    "i'm not able to",
    "i am not able to",
    "i cannot provide",
    "i can't provide",
    "i'm not familiar with",
    "as an ai",
];

/// Words that, after an apology at a reply's start, make it a refusal.
const UNABLE: [&str; 6] = [
    "unable",
    "not able",
    "cannot",
    "can't",
    "not familiar",
    "don't have",
];

/// A free-text pair answer (a paraphrase, a reply in the user's style): the text after an opening
/// "This user's answer:" or list number, cut where the next numbered item starts (the history block's
/// format) or where it starts to loop (SmolLM2: "@united @united @united ..."), without repeated
/// sentences or an unfinished end.
pub fn free_text_answer(text: &str) -> String {
    let text = text.trim();
    // "This user's answer: ..." is an answer in the insight's words, as "The user's answer:" is in the
    // history block's (stripped before this)
    let text = text
        .strip_prefix("This user's answer:")
        .map_or(text, str::trim_start);
    // the history block's numbering: "1. The film: Solaris\n2. ..." answers "The film: Solaris"
    let text = match list_item_start(text) {
        Some(0) => without_list_number(text),
        _ => text,
    };
    let mut cut = loop_start(text).unwrap_or(text.len());
    if let Some(i) = list_item_start(text) {
        cut = cut.min(i);
    }
    once_each(&text[..cut])
}

/// Whether a free-text reply is no answer to the request: a refusal ("I'm sorry, but I'm unable to
/// provide ...", "As an AI ...", an apology whose first sentence says it cannot), its instruction said
/// again ("You're a personal assistant for this user. ..."), an insight written again instead of the
/// answer ("This user's personal characteristics and preferences are: ..."), or only an opening that
/// ends in a colon.
/// The fit drops a pair whose personalised reply is one of these: the personal direction is fitted on
/// the personalised replies alone, and would learn "talk about the user" or "decline" rather than the
/// user (SmolLM2 on LaMP-7: docs/evaluation.md). A neutral reply that declines stays: it is what the
/// generic assistant does, and it enters only the generic direction's contrast.
pub fn no_answer(text: &str) -> bool {
    let text = text.trim();
    let refusal = refusal(text);
    let insight = [InsightKind::Personal, InsightKind::Neutral]
        .iter()
        .any(|&k| text.starts_with(insight_lead(k)));
    // only an opening, whatever it opens ("The user's personal characteristics and preferences are:",
    // its list cut by `free_text_answer`)
    let opening = text.ends_with(':');
    refusal || insight || opening
}

/// Whether `text` declines or says its instruction again instead of answering ([`REFUSALS`], or an
/// apology whose first sentence says it cannot); quotes, a colon and the @handles a tweet opens with
/// are ignored.
fn refusal(text: &str) -> bool {
    let mut rest = text.trim_start_matches([':', '"', '\'', '\u{201c}', ' ', '\n']);
    // a reply to a tweet opens with the handles it answers (". @united I'm sorry, but I can't ...")
    loop {
        rest = rest.trim_start_matches(['.', ' ', '\n']);
        match rest.strip_prefix('@') {
            Some(handle) => rest = handle.trim_start_matches(|c: char| !c.is_whitespace()),
            None => break,
        }
    }
    let lower = rest.to_lowercase();
    let first = split_sentences(&lower).first().copied().unwrap_or("");
    let apology = ["i'm sorry", "i am sorry", "i apologize", "sorry,"]
        .iter()
        .any(|a| first.starts_with(a));
    REFUSALS.iter().any(|r| lower.starts_with(r))
        || (apology && UNABLE.iter().any(|u| first.contains(u)))
}

/// An insight as the pipeline uses it: a neutral insight that says nothing (fewer than three words
/// after its lead) or is a refusal (Qwen2.5-Coder-0.5B on LaMP-7: `A generic answer: "I'm sorry, but
/// I can't assist with that request."`) becomes the generic behaviour the request described; put in
/// the neutral instruction, a refusal makes every neutral reply a refusal, so the pairs contrast
/// answering with declining. Applied when an insight is written ([`tidy_insight`]) and when a stored
/// one is read, so insights written before a rule are read as they would be written now (the pairs
/// are keyed by the insights' text, so theirs are written again).
pub fn settled_insight(kind: InsightKind, family: TaskFamily, text: &str) -> String {
    let lead = insight_lead(kind);
    if kind == InsightKind::Neutral {
        let said = text.strip_prefix(lead);
        let words = said
            .unwrap_or(text)
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count();
        if words < 3 || said.is_some_and(refusal) {
            return format!("{lead} would {}.", generic_behaviour(family));
        }
    }
    text.to_string()
}

/// The words between a pair answer and the reason the model gives for it, when pairs carry reasons
/// ([`crate::personalize::PairAnswers::Reasoned`]): the reply is continued after `"{answer}{REASON_LEAD}"`.
pub const REASON_LEAD: &str = ", because";

/// The reason the model wrote after [`REASON_LEAD`], as a pair answer keeps it: its first line, cut where
/// the model copies the history block, its first sentence only. Empty when the model wrote nothing.
pub fn tidy_reason(text: &str) -> String {
    let text = text.trim();
    let line = text.lines().next().unwrap_or("");
    split_sentences(before_block_label(line))
        .first()
        .map_or_else(String::new, |s| s.to_string())
}

/// A pair answer with its reason: `"comedy, because it is light-hearted."`; the answer alone when the
/// reason is empty or copies the task's label list (three labels or more: SmolLM2 often goes on with
/// "because it's a book, comedy, action, twist ending, ..."), and empty (the pair is dropped) when the
/// answer is.
pub fn reasoned_answer(answer: &str, reason: &str, labels: Option<&[&str]>) -> String {
    let (answer, reason) = (answer.trim(), tidy_reason(reason));
    let copies_list = labels.is_some_and(|labels| {
        let named = labels
            .iter()
            .filter(|&l| crate::answer::first_label(&reason, &[l]).is_some())
            .count();
        named >= 3
    });
    if answer.is_empty() || reason.is_empty() || copies_list {
        return answer.to_string();
    }
    format!("{answer}{REASON_LEAD} {reason}")
}

/// The two reasoned answers of a pair as the fit uses them: when only one of them kept a reason, both
/// are cut to their answers, so that a pair never differs in having a reason rather than in what it
/// says (SmolLM2's neutral reasons are often the label list copied, which [`reasoned_answer`] drops).
pub fn reasoned_pair(personal: String, neutral: String) -> (String, String) {
    let split = |a: &str| {
        a.split_once(&format!("{REASON_LEAD} "))
            .map(|(x, _)| x.to_string())
    };
    match (split(&personal), split(&neutral)) {
        (Some(p), None) => (p, neutral),
        (None, Some(n)) => (personal, n),
        _ => (personal, neutral),
    }
}

/// Stage 3: the instruction before the query for the personalised answer.
pub fn personalised_instruction(personal_insight: &str) -> String {
    format!(
        "You are a personalised assistant for this user. What you know about them: {}\n\
         Answer the request below the way this particular user would want.\n\n",
        personal_insight.trim()
    )
}

/// Stage 3: the instruction before the query for the neutral answer.
pub fn neutral_instruction(neutral_insight: &str) -> String {
    format!(
        "You are a generic, impersonal assistant. Your answer should follow this: {}\n\
         Answer the request below without any personal touch.\n\n",
        neutral_insight.trim()
    )
}

/// Marker that [`split_chat`] cuts at; never produced by a tokenizer on its own.
pub const SPLIT: &str = "\u{1F}CHAMELEON-SPLIT\u{1F}";

/// Render `before + SPLIT + after` as one user turn with `render` (the model's chat template) and cut
/// the rendered text at the marker: `(prefix, suffix)`. The prefix ends inside the user turn, so every
/// prompt with the same `before` has the same prefix.
///
/// # Errors
/// Whatever `render` returns; the marker missing from the rendered text is reported as a template error
/// through `missing`.
pub fn split_chat<E>(
    before: &str,
    after: &str,
    render: impl FnOnce(&str) -> Result<String, E>,
    missing: impl FnOnce() -> E,
) -> Result<(String, String), E> {
    let full = render(&format!("{before}{SPLIT}{after}"))?;
    let at = full.find(SPLIT).ok_or_else(missing)?;
    Ok((full[..at].to_string(), full[at + SPLIT.len()..].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip_chars("abc", 3), "abc");
        assert_eq!(clip_chars("abcd", 3), "abc...");
        assert_eq!(clip_chars("ééé€", 2), "éé...");
        assert_eq!(clip_chars("", 0), "");
        assert!(matches!(clip_chars("ab", 5), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn reasons_keep_their_first_sentence() {
        assert_eq!(
            tidy_reason(" it is light. And funny.\nItem: x"),
            "it is light."
        );
        assert_eq!(
            tidy_reason("this user likes heists Item: a film"),
            "this user likes heists"
        );
        assert_eq!(tidy_reason("  \n"), "");
        let labels: &[&str] = &["comedy", "action", "dark comedy", "sci-fi"];
        assert_eq!(
            reasoned_answer("comedy", " it is light-hearted. More", Some(labels)),
            "comedy, because it is light-hearted."
        );
        assert_eq!(
            reasoned_answer("comedy", "\nItem: x", Some(labels)),
            "comedy"
        );
        assert_eq!(reasoned_answer(" ", "a reason.", Some(labels)), "");
        // the label list copied is no reason; naming a label or two is
        let copied = " it's a book, comedy, action, twist ending, sci-fi";
        assert_eq!(reasoned_answer("sci-fi", copied, Some(labels)), "sci-fi");
        assert_eq!(
            reasoned_answer("sci-fi", copied, None),
            format!("sci-fi, because {}", copied.trim())
        );
        assert_eq!(
            reasoned_answer("comedy", " it is a comedy, not sci-fi.", Some(labels)),
            "comedy, because it is a comedy, not sci-fi."
        );
    }

    #[test]
    fn a_pair_keeps_reasons_only_on_both_sides() {
        let s = |a: &str, b: &str| reasoned_pair(a.to_string(), b.to_string());
        let both = s("comedy, because it is fun.", "comedy, because most say so.");
        assert_eq!(both.0, "comedy, because it is fun.");
        assert_eq!(both.1, "comedy, because most say so.");
        assert_eq!(
            s("comedy, because it is fun.", "comedy"),
            s("comedy", "comedy")
        );
        assert_eq!(
            s("action", "comedy, because x."),
            ("action".to_string(), "comedy".to_string())
        );
        assert_eq!(
            s("", "comedy, because x."),
            (String::new(), "comedy".to_string())
        );
    }

    #[test]
    fn families_from_kinds() {
        assert_eq!(TaskFamily::from_kind("LaMP_2"), TaskFamily::Classification);
        assert_eq!(TaskFamily::from_kind("lamp-3"), TaskFamily::Rating);
        assert_eq!(TaskFamily::from_kind("LaMP_7"), TaskFamily::FreeText);
        assert_eq!(TaskFamily::from_kind("note"), TaskFamily::FreeText);
    }

    #[test]
    fn history_block_numbers_and_clips() {
        let long = "x".repeat(MAX_ITEM_CHARS + 50);
        let items = [
            Item {
                input: "a movie",
                output: "comedy",
            },
            Item {
                input: &long,
                output: "sci-fi",
            },
        ];
        let b = history_block(TaskFamily::Classification, &items);
        assert!(b.contains("1. Item: a movie\n   The user's tag: comedy"));
        assert!(b.contains("2. Item: "));
        assert!(b.contains("..."));
        assert!(!b.contains(&long));
    }

    #[test]
    fn a_neutral_insight_that_refuses_becomes_the_generic_behaviour() {
        use InsightKind::{Neutral, Personal};
        let f = TaskFamily::FreeText;
        let generic = "A generic answer would answer in a plain, standard, impersonal way.";
        // as Qwen2.5-Coder-0.5B and SmolLM2-135M wrote them on LaMP-7
        for refused in [
            "A generic answer: \"I'm sorry, but I can't assist with that request.\"",
            "A generic answer:\n\n\"I'm sorry, but as of now, I'm unable to assist you with your request.",
            "A generic answer: I'm not familiar with your request.",
        ] {
            assert_eq!(tidy_insight(Neutral, f, refused), generic, "{refused}");
            // stored before the rule: read as it would be written now
            assert_eq!(settled_insight(Neutral, f, refused), generic, "{refused}");
        }
        // an insight that describes something stays, and so does a personal one (it is not used as
        // an instruction to decline)
        for kept in [
            "A generic answer would restate the tweet politely. It would not mention the user.",
            "A generic answer is short; sorry is a word it avoids.",
        ] {
            assert_eq!(settled_insight(Neutral, f, kept), kept);
        }
        let personal = "This user: I'm sorry, I cannot describe them.";
        assert_eq!(settled_insight(Personal, f, personal), personal);
        // reading again changes nothing
        assert_eq!(settled_insight(Neutral, f, generic), generic);
    }

    #[test]
    fn tidy_insight_cuts_history_echoes() {
        use InsightKind::{Neutral, Personal};
        let c = TaskFamily::Classification;
        // the model went back to the history list (SmolLM2-135M, LaMP-2)
        assert_eq!(
            tidy_insight(
                Personal,
                c,
                "This user likes the following items: 1. Three people in Mexico City are..."
            ),
            "This user likes the following items:"
        );
        assert_eq!(
            tidy_insight(
                Personal,
                c,
                "This user likes comedy. They tag films quickly.\n11. Item: A story"
            ),
            "This user likes comedy. They tag films quickly."
        );
        // nothing left after the lead: the neutral insight falls back to the requested behaviour
        assert_eq!(
            tidy_insight(
                Neutral,
                c,
                "A generic answer: \"The user's tag: classic  A generic answer: \"The user's tag:"
            ),
            "A generic answer would pick the most common, obvious label for an item."
        );
        assert_eq!(
            tidy_insight(Neutral, TaskFamily::Rating, "A generic answer"),
            "A generic answer would rate an item the way an average customer would."
        );
        // a personal insight keeps what is left, however short
        assert_eq!(tidy_insight(Personal, c, "This user Item: x"), "This user");
        // an insight written in points about the user is kept, as sentences, up to where it loops
        // (SmolLM2-135M, the demo user)
        assert_eq!(
            tidy_insight(
                Personal,
                TaskFamily::FreeText,
                "This user's personal characteristics and preferences are:\n1. They are a fan of \
                 science fiction and fantasy.\n2. They enjoy watching movies and TV shows\n3. They \
                 are a fan of horror movies.\n4. They are a fan of science fiction movies.\n5. They"
            ),
            "This user's personal characteristics and preferences are: They are a fan of science \
             fiction and fantasy. They enjoy watching movies and TV shows."
        );
    }

    #[test]
    fn tidy_insight_cuts_loops() {
        use InsightKind::{Neutral, Personal};
        let c = TaskFamily::Classification;
        assert_eq!(
            tidy_insight(
                Personal,
                c,
                "This user is a classic classic classic classic classic"
            ),
            "This user is a classic"
        );
        // a run of four words again: the unfinished rest goes too
        assert_eq!(
            tidy_insight(
                Personal,
                c,
                "This user has a knack for weaving tales. They are skilled and have a knack for weaving"
            ),
            "This user has a knack for weaving tales."
        );
        // the neutral lead again, and nothing said before it
        assert_eq!(
            tidy_insight(Neutral, c, "A generic answer: \"A generic answer\""),
            "A generic answer would pick the most common, obvious label for an item."
        );
        // "This user" again is how personal insights go on
        assert_eq!(
            tidy_insight(
                Personal,
                c,
                "This user likes noir. This user rarely tags comedies."
            ),
            "This user likes noir. This user rarely tags comedies."
        );
    }

    #[test]
    fn loops_start_where_words_repeat() {
        assert_eq!(loop_start("a b c d"), None);
        assert_eq!(loop_start("very very good"), None);
        assert_eq!(loop_start("x y y y"), Some(4));
        assert_eq!(
            loop_start("one two three four, One Two three four"),
            Some(20)
        );
        assert_eq!(loop_start(""), None);
    }

    #[test]
    fn tidy_insight_drops_repeats_and_an_unfinished_end() {
        use InsightKind::Personal;
        let f = TaskFamily::FreeText;
        assert_eq!(
            tidy_insight(
                Personal,
                f,
                "This user is sarcastic. They like jazz. this user is sarcastic. They are also a"
            ),
            "This user is sarcastic. They like jazz."
        );
        // one unfinished sentence is all there is: kept
        assert_eq!(
            tidy_insight(Personal, f, "This user writes short angry"),
            "This user writes short angry"
        );
        // numbers inside a sentence are not list items
        assert_eq!(
            tidy_insight(Personal, f, "This user gives 4. Sometimes 5. Rarely 1."),
            "This user gives 4. Sometimes 5. Rarely 1."
        );
        assert_eq!(
            tidy_insight(Personal, f, "  This user rates high.  "),
            "This user rates high."
        );
    }

    #[test]
    fn list_items_open_lines_or_follow_colons() {
        assert_eq!(list_item_start("1. a"), Some(0));
        assert_eq!(list_item_start("x\n  12. a"), Some(4));
        assert_eq!(list_item_start("items: 3. a"), Some(7));
        assert_eq!(list_item_start("rated 3. a"), None);
        assert_eq!(list_item_start("1.5 stars"), None);
        assert_eq!(list_item_start("x\n1234. a"), None);
        assert_eq!(list_item_start("é: 2. ü"), Some(4));
    }

    #[test]
    fn pair_answers_in_the_output_space() {
        let labels: &[&str] = &["classic", "based on a book", "sci-fi", "comedy"];
        let c = TaskFamily::Classification;
        // the block's format is not part of the answer
        assert_eq!(pair_answer(c, Some(labels), "classic"), "classic");
        assert_eq!(
            pair_answer(c, Some(labels), "The user's tag: classic"),
            "classic"
        );
        assert_eq!(
            pair_answer(
                c,
                Some(labels),
                "The user's tag: based on a book  The user's tag: based on a "
            ),
            "based on a book"
        );
        // no label of the list: the first line, in the model's words; a label after the echo starts
        // is not this reply's answer
        assert_eq!(
            pair_answer(c, Some(labels), " science fiction\nIt is set in space."),
            "science fiction"
        );
        assert_eq!(
            pair_answer(c, Some(labels), "The Matrix. Item: a comedy"),
            "The Matrix."
        );
        assert_eq!(pair_answer(c, Some(labels), "The user's tag:\n"), "");
        // a classification task without a fixed list keeps the first line
        assert_eq!(pair_answer(c, None, "The user's tag:  noir\nnoir"), "noir");
        let r = TaskFamily::Rating;
        assert_eq!(pair_answer(r, None, "The user's rating: 4"), "4");
        assert_eq!(pair_answer(r, None, "1. 5 is the score"), "5");
        assert_eq!(pair_answer(r, None, "Great album!"), "");
        let f = TaskFamily::FreeText;
        assert_eq!(
            pair_answer(f, None, "The user wrote: late again, thanks a lot"),
            "late again, thanks a lot"
        );
        assert_eq!(pair_answer(f, None, "   "), "");
    }

    #[test]
    fn free_text_answers_are_tidied_and_non_answers_known() {
        let f = |t: &str| pair_answer(TaskFamily::FreeText, None, t);
        // the answer, cut where it loops, each sentence once
        assert_eq!(
            f("@united Late again. Thanks a lot. Late again. Thanks a lot. Late"),
            "@united Late again. Thanks a lot."
        );
        assert_eq!(f("@united @united @united @united @united"), "@united");
        assert_eq!(
            f("This user's answer: Solaris, slow and strange."),
            "Solaris, slow and strange."
        );
        assert_eq!(
            f("1. The film: 2001: A Space Odyssey\n2. The Matrix"),
            "The film: 2001: A Space Odyssey"
        );
        assert_eq!(f("Flight 12. Late again."), "Flight 12. Late again.");
        // answers, though they complain or apologise
        for answer in [
            "I can't believe @united lost my bag",
            "Sorry @united, but my flight is late",
            "I'm sorry for your loss. Here are a few ideas that might fit your style.",
        ] {
            assert_eq!(f(answer), answer);
            assert!(!no_answer(answer), "{answer}");
        }
        // no answers: refusals (SmolLM2's own words) and an insight instead of the answer
        for declined in [
            "I'm sorry for your loss, but I'm unable to provide you with the information you're looking for.",
            "I'm sorry, I'm not familiar with your request.\n\nI'm sorry, I'm not familiar with your request.",
            "I'm unable to paraphrase this text.",
            "As an AI, I have no opinion on airlines.",
            "This user's personal characteristics and preferences are:\n1. They're a personal assistant",
            "A generic answer would be polite.",
            "You're a personal assistant for this user. What you know about them: ...",
            "The user's personal characteristics and preferences are:\n1. Loyal\n2. Patient",
            // after the handles the tweet answers (Qwen2.5-Coder-0.5B on LaMP-7)
            "@united I'm sorry, but I can't assist with that request.",
            ". @united @AmericanAir I'm unable to paraphrase this.",
        ] {
            assert!(no_answer(&f(declined)), "{declined}");
        }
    }

    #[test]
    fn split_chat_cuts_at_the_marker() {
        let render = |s: &str| Ok::<_, ()>(format!("<start>{s}<end>"));
        let (p, s) = split_chat("HISTORY", "QUERY", render, || ()).unwrap();
        assert_eq!(p, "<start>HISTORY");
        assert_eq!(s, "QUERY<end>");
        let bad = |_: &str| Ok::<_, ()>("nothing".to_string());
        assert!(split_chat("a", "b", bad, || ()).is_err());
    }
}
