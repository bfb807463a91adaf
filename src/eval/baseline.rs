//! `no-model`: the answer a user's profile gives without any language model, the floor every method
//! has to clear to be worth its cost.
//!
//! | task | answer |
//! |---|---|
//! | LaMP-1 | the candidate reference BM25 scores higher against the author's papers (ties: `[1]`) |
//! | LaMP-2 | the tag the user gave most often (ties: the one given first) |
//! | LaMP-3 | the median of the user's scores, a half rounded up (`4.5` gives `5`) |
//! | LaMP-4..7 | the input's own text, as LaMP cuts it for retrieval (LaMP-7: the tweet to paraphrase) |
//!
//! A profile with nothing to count (no tag, no parsable score) answers the label list's first label or
//! the middle rating `3`; no task reads the gold.

use std::collections::HashMap;

use super::lamp::{ProfileItem, Task, label_set};
use super::metrics::first_rating;
use super::prompts::{Bm25, bm25_tokens, quoted_strings, retrieval_document, retrieval_query};

/// The `no-model` answer to a question with `input`, asked of the user whose profile is `profile`.
pub fn no_model_answer(task: Task, input: &str, profile: &[ProfileItem]) -> String {
    match task {
        Task::LaMP1 => likelier_reference(input, profile).to_owned(),
        Task::LaMP2 => most_frequent_tag(profile)
            .or_else(|| label_set(task).map(|l| l[0]))
            .unwrap_or_default()
            .to_owned(),
        Task::LaMP3 => median_score(profile).unwrap_or(3).to_string(),
        Task::LaMP4 | Task::LaMP5 | Task::LaMP6 | Task::LaMP7 => retrieval_query(task, input),
    }
}

/// The tag given most often in `profile`, compared case-insensitively, in the spelling first seen;
/// among equally frequent tags the one given first.
fn most_frequent_tag(profile: &[ProfileItem]) -> Option<&str> {
    // per tag (lower case): count, first position, first spelling
    let mut counts: HashMap<String, (usize, usize, &str)> = HashMap::new();
    for (i, tag) in profile.iter().filter_map(|p| p.field("tag")).enumerate() {
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        counts.entry(tag.to_lowercase()).or_insert((0, i, tag)).0 += 1;
    }
    counts
        .into_values()
        .max_by_key(|&(n, first, _)| (n, std::cmp::Reverse(first)))
        .map(|(.., tag)| tag)
}

/// The median of the profile's 1-5 scores (read as `extract_answer` reads a rating), an even count's
/// middle pair averaged and a half rounded up; `None` when no score parses.
fn median_score(profile: &[ProfileItem]) -> Option<u8> {
    let mut scores: Vec<u8> = profile
        .iter()
        .filter_map(|p| p.field("score"))
        .filter_map(first_rating)
        .filter_map(|s| s.parse().ok())
        .collect();
    if scores.is_empty() {
        return None;
    }
    scores.sort_unstable();
    let n = scores.len();
    Some(if n % 2 == 1 {
        scores[n / 2]
    } else {
        (scores[n / 2 - 1] + scores[n / 2]).div_ceil(2)
    })
}

/// LaMP-1: `[1]` or `[2]`, whichever candidate reference (the input's second and third quoted strings)
/// BM25 scores higher summed over the author's papers; `[1]` on a tie or an input without both.
fn likelier_reference(input: &str, profile: &[ProfileItem]) -> &'static str {
    let quoted = quoted_strings(input);
    if quoted.len() < 3 {
        return "[1]";
    }
    let documents: Vec<String> = profile
        .iter()
        .map(|p| retrieval_document(Task::LaMP1, p))
        .collect();
    let corpus: Vec<Vec<&str>> = documents.iter().map(|d| bm25_tokens(d)).collect();
    if corpus.is_empty() {
        return "[1]";
    }
    let index = Bm25::new(&corpus);
    let total = |text: &str| index.scores(&bm25_tokens(text)).iter().sum::<f64>();
    if total(quoted[2]) > total(quoted[1]) {
        "[2]"
    } else {
        "[1]"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lamp::ProfileBody;

    fn movie(tag: &str) -> ProfileItem {
        ProfileItem::new(
            "m",
            ProfileBody::Movie {
                description: "a film".into(),
                tag: tag.into(),
            },
        )
    }

    fn review(score: &str) -> ProfileItem {
        ProfileItem::new(
            "r",
            ProfileBody::Review {
                text: "fine".into(),
                score: score.into(),
            },
        )
    }

    fn paper(title: &str) -> ProfileItem {
        ProfileItem::new(
            "p",
            ProfileBody::Paper {
                title: title.into(),
                abstract_text: String::new(),
            },
        )
    }

    #[test]
    fn lamp2_answers_the_users_most_frequent_tag() {
        let p = [
            movie("comedy"),
            movie("sci-fi"),
            movie("Sci-Fi"),
            movie("comedy"),
        ];
        // a tie between comedy and sci-fi (twice each, case folded): the tag given first
        assert_eq!(no_model_answer(Task::LaMP2, "q", &p), "comedy");
        let p = [movie("comedy"), movie("sci-fi"), movie("sci-fi")];
        assert_eq!(no_model_answer(Task::LaMP2, "q", &p), "sci-fi");
        // nothing to count: the list's first label
        let first = label_set(Task::LaMP2).unwrap()[0];
        assert_eq!(no_model_answer(Task::LaMP2, "q", &[]), first);
        assert_eq!(no_model_answer(Task::LaMP2, "q", &[movie(" ")]), first);
    }

    #[test]
    fn lamp3_answers_the_median_score_rounding_a_half_up() {
        let scores = |s: &[&str]| s.iter().map(|s| review(s)).collect::<Vec<_>>();
        assert_eq!(
            no_model_answer(Task::LaMP3, "q", &scores(&["5", "1", "4"])),
            "4"
        );
        // even count: (4 + 5) / 2 = 4.5 -> 5; (2 + 3) / 2 -> 3; (1 + 5) / 2 = 3
        assert_eq!(no_model_answer(Task::LaMP3, "q", &scores(&["5", "4"])), "5");
        assert_eq!(
            no_model_answer(Task::LaMP3, "q", &scores(&["3", "2", "1", "5"])),
            "3"
        );
        assert_eq!(no_model_answer(Task::LaMP3, "q", &scores(&["1", "5"])), "3");
        // scores read as ratings ("4.0" is 4); unparsable ones are skipped; none at all: 3
        assert_eq!(
            no_model_answer(Task::LaMP3, "q", &scores(&["4.0", "x", "2"])),
            "3"
        );
        assert_eq!(no_model_answer(Task::LaMP3, "q", &scores(&["x"])), "3");
    }

    #[test]
    fn text_tasks_echo_the_input() {
        let tweet = "Paraphrase the following tweet without any explanation before or after it: \
                     flight late again";
        assert_eq!(
            no_model_answer(Task::LaMP7, tweet, &[]),
            "flight late again"
        );
        let article = "Generate a headline for the following article: markets rose";
        assert_eq!(no_model_answer(Task::LaMP4, article, &[]), "markets rose");
    }

    #[test]
    fn lamp1_picks_the_reference_closer_to_the_authors_papers() {
        // three papers: with two, a term in one of them has an idf of zero (rank_bm25's formula)
        let profile = [
            paper("sparse matrix solvers"),
            paper("graph coloring"),
            paper("type systems"),
        ];
        let input = |a: &str, b: &str| {
            format!(
                "For an author who has written the paper with the title \"T\", which reference is \
                 related? Just answer with [1] or [2] without explanation. [1]: \"{a}\" [2]: \"{b}\""
            )
        };
        let closer_second = input("protein folding", "fast sparse solvers");
        assert_eq!(
            no_model_answer(Task::LaMP1, &closer_second, &profile),
            "[2]"
        );
        let closer_first = input("graph coloring bounds", "protein folding");
        assert_eq!(no_model_answer(Task::LaMP1, &closer_first, &profile), "[1]");
        // no overlap either way, no profile, or no candidates: [1]
        assert_eq!(
            no_model_answer(Task::LaMP1, &input("a", "b"), &profile),
            "[1]"
        );
        assert_eq!(no_model_answer(Task::LaMP1, &closer_second, &[]), "[1]");
        assert_eq!(no_model_answer(Task::LaMP1, "no quotes", &profile), "[1]");
    }
}
