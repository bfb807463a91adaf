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

use std::collections::HashMap;

use crate::eval::lamp::{ProfileItem, Task};
use crate::personalize::prompts::clip_chars;

/// Splits text into BM25 terms as LaMP does: on whitespace only, case kept.
pub fn bm25_tokens(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// An Okapi BM25 index over a tokenised corpus, computed exactly as `rank_bm25.BM25Okapi`.
///
/// `idf(t) = ln(N - df + 0.5) - ln(df + 0.5)`; a term whose idf is negative (in more than half the
/// documents) gets `epsilon * mean idf` instead, the mean taken over all terms before that floor.
#[derive(Debug, Clone)]
pub struct Bm25 {
    doc_freqs: Vec<HashMap<String, usize>>,
    doc_len: Vec<usize>,
    avgdl: f64,
    idf: HashMap<String, f64>,
}

impl Bm25 {
    /// Term-frequency saturation.
    pub const K1: f64 = 1.5;
    /// Length normalisation.
    pub const B: f64 = 0.75;
    /// Floor for negative idf, as a share of the mean idf.
    pub const EPSILON: f64 = 0.25;

    /// Indexes `corpus`, one token list per document.
    pub fn new<T: AsRef<str>>(corpus: &[Vec<T>]) -> Bm25 {
        let mut doc_freqs = Vec::with_capacity(corpus.len());
        let mut doc_len = Vec::with_capacity(corpus.len());
        // document frequency per term, in order of first appearance (the order rank_bm25 sums idf in)
        let mut df: HashMap<String, usize> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for doc in corpus {
            doc_len.push(doc.len());
            let mut freqs: HashMap<String, usize> = HashMap::new();
            for t in doc {
                *freqs.entry(t.as_ref().to_owned()).or_default() += 1;
            }
            let mut first_seen: Vec<&str> = Vec::new();
            let mut noted = std::collections::HashSet::new();
            for t in doc {
                if noted.insert(t.as_ref()) {
                    first_seen.push(t.as_ref());
                }
            }
            for t in first_seen {
                let count = df.entry(t.to_owned()).or_insert_with(|| {
                    order.push(t.to_owned());
                    0
                });
                *count += 1;
            }
            doc_freqs.push(freqs);
        }
        let n = corpus.len() as f64;
        let total: usize = doc_len.iter().sum();
        let avgdl = if corpus.is_empty() {
            0.0
        } else {
            total as f64 / n
        };

        let mut idf = HashMap::with_capacity(order.len());
        let mut idf_sum = 0.0;
        let mut negative = Vec::new();
        for term in order {
            let freq = df[&term] as f64;
            let value = (n - freq + 0.5).ln() - (freq + 0.5).ln();
            idf_sum += value;
            if value < 0.0 {
                negative.push(term.clone());
            }
            idf.insert(term, value);
        }
        if !idf.is_empty() {
            let eps = Self::EPSILON * (idf_sum / idf.len() as f64);
            for term in negative {
                idf.insert(term, eps);
            }
        }
        Bm25 {
            doc_freqs,
            doc_len,
            avgdl,
            idf,
        }
    }

    /// The number of documents.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    /// Whether the corpus has no documents.
    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    /// The score of every document for `query`; a term repeated in the query counts each time, as in
    /// `rank_bm25`. All zeros when every document is empty.
    pub fn scores<T: AsRef<str>>(&self, query: &[T]) -> Vec<f64> {
        let mut scores = vec![0.0; self.len()];
        if self.avgdl == 0.0 {
            return scores;
        }
        let (k1, b) = (Self::K1, Self::B);
        for q in query {
            let Some(&idf) = self.idf.get(q.as_ref()) else {
                continue;
            };
            for (d, score) in scores.iter_mut().enumerate() {
                let f = self.doc_freqs[d].get(q.as_ref()).copied().unwrap_or(0) as f64;
                let dl = self.doc_len[d] as f64;
                *score += idf * (f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * dl / self.avgdl)));
            }
        }
        scores
    }

    /// The indices of the `n` best documents for `query`, best first; ties go to the later document.
    pub fn top_n<T: AsRef<str>>(&self, query: &[T], n: usize) -> Vec<usize> {
        let scores = self.scores(query);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&x, &y| scores[y].total_cmp(&scores[x]).then(y.cmp(&x)));
        order.truncate(n);
        order
    }
}

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

    const DOCS: [&str; 6] = [
        "the cat sat on the mat",
        "dogs chase the cat",
        "a bird sings",
        "The mat is red",
        "the dog and the cat sleep",
        "the end",
    ];

    fn index() -> Bm25 {
        let corpus: Vec<Vec<&str>> = DOCS.iter().map(|d| bm25_tokens(d)).collect();
        Bm25::new(&corpus)
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn bm25_idf_by_hand() {
        let bm = index();
        let ln = f64::ln;
        // "mat" is in 2 of 6 documents: ln(4.5) - ln(2.5)
        assert!((bm.idf["mat"] - (ln(4.5) - ln(2.5))).abs() < 1e-12);
        // "cat" is in 3 of 6: ln(3.5) - ln(3.5) = 0, kept as 0 (not negative)
        assert_eq!(bm.idf["cat"], 0.0);
        // "the" is in 4 of 6: negative, floored to 0.25 * the mean idf of all 17 terms before flooring:
        // 14 terms in one document (sat on dogs chase a bird sings The is red dog and sleep end),
        // mat in 2, cat in 3, the in 4; rank_bm25 gives 0.2674994379091714
        assert!(
            (bm.idf["the"] - 0.2674994379091714).abs() < 1e-12,
            "{}",
            bm.idf["the"]
        );
        let one = ln(5.5) - ln(1.5);
        let two = ln(4.5) - ln(2.5);
        let four = ln(2.5) - ln(4.5);
        let mean = (14.0 * one + two + 0.0 + four) / 17.0;
        assert!((bm.idf["the"] - 0.25 * mean).abs() < 1e-12);
        assert!((bm.avgdl - 25.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn bm25_scores_match_rank_bm25() {
        let bm = index();
        // scores as rank_bm25 0.2.2 prints them (BM25Okapi over the same split() tokens); the orders are
        // ours (ties to the later document), which numpy 2.4 on x86 matches except among tied zeros
        let cases: [(&str, [f64; 6], [usize; 6]); 5] = [
            (
                "the mat",
                [
                    0.8254327423803758,
                    0.27240268626188535,
                    0.0,
                    0.5985607585561293,
                    0.33479278837192916,
                    0.34921597638273033,
                ],
                [0, 3, 5, 4, 1, 2],
            ),
            (
                "the cat",
                [
                    0.33479278837192916,
                    0.27240268626188535,
                    0.0,
                    0.0,
                    0.33479278837192916,
                    0.34921597638273033,
                ],
                [5, 4, 0, 1, 3, 2],
            ),
            (
                "mat mat",
                [0.9812799080168934, 0.0, 0.0, 1.1971215171122587, 0.0, 0.0],
                [3, 0, 5, 4, 2, 1],
            ),
            ("zebra", [0.0; 6], [5, 4, 3, 2, 1, 0]),
            (
                "The bird",
                [0.0, 0.0, 1.4865938033527017, 1.3230987618434429, 0.0, 0.0],
                [2, 3, 5, 4, 1, 0],
            ),
        ];
        for (query, scores, order) in cases {
            let q = bm25_tokens(query);
            assert!(
                close(&bm.scores(&q), &scores),
                "{query}: {:?}",
                bm.scores(&q)
            );
            assert_eq!(bm.top_n(&q, 6), order, "{query}");
            assert_eq!(bm.top_n(&q, 2), order[..2], "{query}");
        }
        // "bird" by hand: idf ln(5.5/1.5); doc 2 has 3 tokens, f = 1
        let s = bm.scores(&["bird"])[2];
        let idf = (5.5f64 / 1.5).ln();
        let want = idf * (2.5 / (1.0 + 1.5 * (0.25 + 0.75 * 3.0 / (25.0 / 6.0))));
        assert!((s - want).abs() < 1e-12, "{s} vs {want}");
    }

    #[test]
    fn bm25_degenerate_corpora() {
        let empty: Vec<Vec<&str>> = Vec::new();
        let bm = Bm25::new(&empty);
        assert!(bm.is_empty());
        assert!(bm.top_n(&["x"], 3).is_empty());
        let blank: Vec<Vec<&str>> = vec![vec![], vec![]];
        assert_eq!(Bm25::new(&blank).scores(&["x"]), [0.0, 0.0]);
        assert_eq!(Bm25::new(&blank).top_n(&["x"], 5), [1, 0]);
    }

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
