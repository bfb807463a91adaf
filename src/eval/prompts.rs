//! The "history-prompt" baseline: LaMP's retrieval-augmented prompts.
//!
//! For a question, LaMP (`LaMP/prompts/prompts.py`) ranks the user's profile items against the question
//! with BM25 (`rank_bm25.BM25Okapi`, k1 = 1.5, b = 0.75, epsilon = 0.25), keeps the top k, and folds them
//! into the input with a per-task template. This module does the same:
//!
//! - documents and query are split on whitespace and nothing else (Python's `str.split()`, what LaMP
//!   does): no lower-casing, punctuation stays attached, so `The` and `the` are different terms;
//! - the document of an item and the query drawn from the input follow LaMP's per-task
//!   `*_query_corpus_maker` functions ([`retrieval_document`], [`retrieval_query`]);
//! - the templates are LaMP's `create_*_prompt` ones ([`fold_items`]), including their quirks: each item
//!   ends in a space before the `, and ` that joins items, and LaMP-1 inserts the items right after the first
//!   word `title` of the input.
//!
//! Where we differ from LaMP, on purpose or by necessity:
//! - LaMP truncates each item so the prompt fits FlanT5's 512 tokens; we do not truncate here (the caller
//!   knows its model's context and can cut the items it passes to [`fold_items`]);
//! - ties in BM25 score are broken towards the later profile item, which is what numpy's `argsort(...)[::-1]`
//!   gives with its classic sort; numpy builds with SIMD sorting can order tied items differently, which
//!   changes the chosen items only when a tie straddles the k-th place;
//! - where LaMP would crash (an input without the keyword its query is cut from, fewer than three quoted
//!   strings in a LaMP-1 input, a profile of only empty items), we fall back to the whole input as query,
//!   or to zero scores.

use crate::eval::lamp::{ProfileItem, Task};
use crate::personalize::prompts::clip_chars;

pub use crate::retrieval::{Bm25, bm25_tokens};

/// The text LaMP indexes a profile item by: LaMP-1/5 `title abstract`, LaMP-2 `description`, LaMP-3
/// `text`, LaMP-4 `title text`, LaMP-6/7 `text`. A key the item lacks counts as empty.
pub fn retrieval_document(task: Task, item: &ProfileItem) -> String {
    let f = |key| item.field(key).unwrap_or("");
    match task {
        Task::LaMP1 | Task::LaMP5 => format!("{} {}", f("title"), f("abstract")),
        Task::LaMP2 => f("description").to_owned(),
        Task::LaMP3 | Task::LaMP6 | Task::LaMP7 => f("text").to_owned(),
        Task::LaMP4 => format!("{} {}", f("title"), f("text")),
    }
}

/// The part of a question's input LaMP retrieves with: LaMP-1 the two candidate references (the second
/// and third quoted strings, joined by a space), LaMP-2 what follows `description:`, LaMP-3 `review:`,
/// LaMP-4 `article:`, LaMP-5 `paper:`, LaMP-6/7 the first `:`; trimmed. The whole input when the
/// keyword (or, for LaMP-1, the quotes) is missing.
pub fn retrieval_query(task: Task, input: &str) -> String {
    let after = |keyword: &str| {
        input
            .find(keyword)
            .map(|i| input[i + keyword.len()..].trim())
    };
    let query = match task {
        Task::LaMP1 => {
            let quoted = quoted_strings(input);
            return if quoted.len() >= 3 {
                format!("{} {}", quoted[1], quoted[2])
            } else {
                input.to_owned()
            };
        }
        Task::LaMP2 => after("description:"),
        Task::LaMP3 => after("review:"),
        Task::LaMP4 => after("article:"),
        Task::LaMP5 => after("paper:"),
        Task::LaMP6 | Task::LaMP7 => after(":"),
    };
    query.unwrap_or(input).to_owned()
}

/// The strings between successive pairs of `"` (LaMP's `extract_strings_between_quotes`).
pub(crate) fn quoted_strings(input: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for (i, c) in input.char_indices() {
        if c == '"' {
            match open.take() {
                Some(start) => out.push(&input[start..i]),
                None => open = Some(i + 1),
            }
        }
    }
    out
}

/// The `k` profile items that BM25 ranks highest against the question, best first.
pub fn retrieve<'a>(
    task: Task,
    input: &str,
    profile: &'a [ProfileItem],
    k: usize,
) -> Vec<&'a ProfileItem> {
    if k == 0 || profile.is_empty() {
        return Vec::new();
    }
    let documents: Vec<String> = profile
        .iter()
        .map(|p| retrieval_document(task, p))
        .collect();
    let corpus: Vec<Vec<&str>> = documents.iter().map(|d| bm25_tokens(d)).collect();
    let query = retrieval_query(task, input);
    Bm25::new(&corpus)
        .top_n(&bm25_tokens(&query), k)
        .into_iter()
        .map(|i| &profile[i])
        .collect()
}

/// Most characters of one profile field in LaMP's retrieval prompt. LaMP cuts its prompts to the model's
/// input length; here each field is cut so that k items fit a 4096-token context (LaMP-3 reviews run to
/// 10,000 characters). No LaMP-2 description or LaMP-7 tweet of the shared sets is that long.
pub const LAMP_ITEM_CHARS: usize = 1000;

/// Folds `items` (in the given order) into `input` with LaMP's template for `task`:
///
/// | task | one item | prompt |
/// |---|---|---|
/// | LaMP-1 | `"{title}"` | items inserted after the input's first `title`, as `title, and {items}` |
/// | LaMP-2 | `the tag for the movie: "{description}" is "{tag}" ` | `{items}. {input}` |
/// | LaMP-3 | `{score} is the score for "{text}" ` | `{items}. {input}` |
/// | LaMP-4 | `"{title}" is the title for "{text}" ` | `{items}. {input}` |
/// | LaMP-5 | `"{title}" is a title for "{abstract}" ` | `{items}. Following the given patterns {input}` |
/// | LaMP-6 | `"{title}" is the title for "{text}" ` | `{items}. {input}` |
/// | LaMP-7 | `"{text}" ` | `{items} are written by a person. Following the given patterns {input}` |
///
/// Items are joined with `, and `. With no items the input comes back unchanged (LaMP's fallback too).
/// Each field is cut to [`LAMP_ITEM_CHARS`].
pub fn fold_items(task: Task, input: &str, items: &[&ProfileItem]) -> String {
    if items.is_empty() {
        return input.to_owned();
    }
    let render = |item: &ProfileItem| {
        let f = |key| clip_chars(item.field(key).unwrap_or(""), LAMP_ITEM_CHARS);
        match task {
            Task::LaMP1 => format!("\"{}\"", f("title")),
            Task::LaMP2 => format!(
                "the tag for the movie: \"{}\" is \"{}\" ",
                f("description"),
                f("tag")
            ),
            Task::LaMP3 => format!("{} is the score for \"{}\" ", f("score"), f("text")),
            Task::LaMP4 | Task::LaMP6 => {
                format!("\"{}\" is the title for \"{}\" ", f("title"), f("text"))
            }
            Task::LaMP5 => format!("\"{}\" is a title for \"{}\" ", f("title"), f("abstract")),
            Task::LaMP7 => format!("\"{}\" ", f("text")),
        }
    };
    let joined = items
        .iter()
        .map(|i| render(i))
        .collect::<Vec<_>>()
        .join(", and ");
    match task {
        Task::LaMP1 => match input.find("title") {
            Some(i) => {
                let (head, tail) = input.split_at(i + "title".len());
                format!("{head}, and {joined}{tail}")
            }
            None => input.to_owned(),
        },
        Task::LaMP2 | Task::LaMP3 | Task::LaMP4 | Task::LaMP6 => format!("{joined}. {input}"),
        Task::LaMP5 => format!("{joined}. Following the given patterns {input}"),
        Task::LaMP7 => {
            format!("{joined} are written by a person. Following the given patterns {input}")
        }
    }
}

/// LaMP's retrieval-augmented prompt: the `k` profile items BM25 ranks highest against the question,
/// folded into `input` with the task's template ([`retrieve`], then [`fold_items`]).
pub fn history_prompt(task: Task, input: &str, profile_items: &[ProfileItem], k: usize) -> String {
    fold_items(task, input, &retrieve(task, input, profile_items, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lamp::ProfileBody;

    fn movie(id: &str, description: &str, tag: &str) -> ProfileItem {
        ProfileItem::new(
            id,
            ProfileBody::Movie {
                description: description.into(),
                tag: tag.into(),
            },
        )
    }

    #[test]
    fn lamp2_prompt_retrieves_and_folds_like_lamp() {
        let profile = [
            movie("1", "robots fight on a space station", "sci-fi"),
            movie("2", "a family bakes bread", "comedy"),
            movie("3", "space pirates steal a moon", "action"),
        ];
        let input = "Which tag does this movie relate to? description: pirates in space";
        let q = retrieval_query(Task::LaMP2, input);
        assert_eq!(q, "pirates in space");
        let chosen = retrieve(Task::LaMP2, input, &profile, 2);
        assert_eq!(
            chosen.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["3", "1"]
        );
        assert_eq!(
            history_prompt(Task::LaMP2, input, &profile, 2),
            "the tag for the movie: \"space pirates steal a moon\" is \"action\" , and \
             the tag for the movie: \"robots fight on a space station\" is \"sci-fi\" . \
             Which tag does this movie relate to? description: pirates in space"
        );
        // no items, or k = 0: the input unchanged
        assert_eq!(history_prompt(Task::LaMP2, input, &profile, 0), input);
        assert_eq!(history_prompt(Task::LaMP2, input, &[], 3), input);
        // k larger than the profile takes everything
        assert_eq!(retrieve(Task::LaMP2, input, &profile, 10).len(), 3);
    }

    #[test]
    fn long_fields_are_cut() {
        let long = "é".repeat(LAMP_ITEM_CHARS + 5);
        let review = ProfileItem::new(
            "r",
            ProfileBody::Review {
                text: long.clone(),
                score: "4".into(),
            },
        );
        let cut = format!("{}...", "é".repeat(LAMP_ITEM_CHARS));
        assert_eq!(
            fold_items(Task::LaMP3, "review: x", &[&review]),
            format!("4 is the score for \"{cut}\" . review: x")
        );
    }

    #[test]
    fn templates_of_every_task() {
        let review = ProfileItem::new(
            "r",
            ProfileBody::Review {
                text: "too loud".into(),
                score: "2".into(),
            },
        );
        assert_eq!(
            fold_items(Task::LaMP3, "review: fine", &[&review, &review]),
            "2 is the score for \"too loud\" , and 2 is the score for \"too loud\" . review: fine"
        );
        let tweet = ProfileItem::new(
            "t",
            ProfileBody::Tweet {
                text: "gm @ada".into(),
            },
        );
        assert_eq!(
            fold_items(
                Task::LaMP7,
                "Paraphrase the following tweet: hello",
                &[&tweet]
            ),
            "\"gm @ada\"  are written by a person. Following the given patterns \
             Paraphrase the following tweet: hello"
        );
        let paper = ProfileItem::new(
            "p",
            ProfileBody::Paper {
                title: "On X".into(),
                abstract_text: "We X.".into(),
            },
        );
        assert_eq!(
            fold_items(Task::LaMP5, "paper: Y", &[&paper]),
            "\"On X\" is a title for \"We X.\" . Following the given patterns paper: Y"
        );
        let news = ProfileItem::new(
            "n",
            ProfileBody::Titled {
                text: "Rain fell.".into(),
                title: "Wet".into(),
            },
        );
        assert_eq!(
            fold_items(Task::LaMP4, "article: Sun", &[&news]),
            "\"Wet\" is the title for \"Rain fell.\" . article: Sun"
        );
        assert_eq!(
            fold_items(Task::LaMP6, "email: hi", &[&news]),
            "\"Wet\" is the title for \"Rain fell.\" . email: hi"
        );
        let input = "For an author who has written the paper with the title \"A\", which reference is related? \
                     Just answer with [1] or [2] without explanation. [1]: \"B\" [2]: \"C\"";
        let other = ProfileItem::new(
            "q",
            ProfileBody::Paper {
                title: "On Z".into(),
                abstract_text: "".into(),
            },
        );
        assert_eq!(
            fold_items(Task::LaMP1, input, &[&paper, &other]),
            "For an author who has written the paper with the title, and \"On X\", and \"On Z\" \"A\", which \
             reference is related? Just answer with [1] or [2] without explanation. [1]: \"B\" [2]: \"C\""
        );
        assert_eq!(
            fold_items(Task::LaMP1, "no keyword", &[&paper]),
            "no keyword"
        );
    }

    #[test]
    fn queries_per_task() {
        let lamp1 = "with the title \"A b\", which reference? [1]: \"C d\" [2]: \"E\"";
        assert_eq!(retrieval_query(Task::LaMP1, lamp1), "C d E");
        assert_eq!(
            retrieval_query(Task::LaMP1, "only \"one\" quote"),
            "only \"one\" quote"
        );
        assert_eq!(
            retrieval_query(Task::LaMP3, "score this review:  Great amp. "),
            "Great amp."
        );
        assert_eq!(
            retrieval_query(Task::LaMP4, "headline for this article: Rain"),
            "Rain"
        );
        assert_eq!(
            retrieval_query(
                Task::LaMP5,
                "title for the following abstract of a paper: We"
            ),
            "We"
        );
        assert_eq!(
            retrieval_query(Task::LaMP7, "Paraphrase the following tweet: a: b"),
            "a: b"
        );
        assert_eq!(
            retrieval_query(Task::LaMP2, "no keyword here"),
            "no keyword here"
        );
        let paper = ProfileItem::new(
            "p",
            ProfileBody::Paper {
                title: "T".into(),
                abstract_text: "A".into(),
            },
        );
        assert_eq!(retrieval_document(Task::LaMP1, &paper), "T A");
        let news = ProfileItem::new(
            "n",
            ProfileBody::Titled {
                text: "X".into(),
                title: "T".into(),
            },
        );
        assert_eq!(retrieval_document(Task::LaMP4, &news), "T X");
        assert_eq!(retrieval_document(Task::LaMP6, &news), "X");
    }

    #[test]
    fn retrieval_is_case_sensitive_like_lamp() {
        let profile = [
            movie("1", "Space war", "action"),
            movie("2", "space garden", "comedy"),
            movie("3", "a quiet farm", "romance"),
        ];
        // with only two documents a term in one of them has idf ln(1.5) - ln(1.5) = 0: hence three
        let chosen = retrieve(Task::LaMP2, "description: space", &profile, 1);
        assert_eq!(chosen[0].id, "2");
        let chosen = retrieve(Task::LaMP2, "description: Space", &profile, 1);
        assert_eq!(chosen[0].id, "1");
    }
}
