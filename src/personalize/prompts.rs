//! Every prompt the pipeline writes, in one place and versioned.
//!
//! Stored insights and pairs are keyed by [`PROMPT_VERSION`]: change any template here and bump it, so
//! that re-runs regenerate instead of mixing texts made by different prompts.
//!
//! The pair prompts are laid out so that all of a user's prompts share one prefix, the history block
//! (stage 3 reuses its KV cache): `[template start] [history] | [instruction with insight] [query]
//! [template end]`. [`split_chat`] renders a chat with the model's own template and cuts it at the `|`.

/// Version of the templates below; part of the key of stored insights and pairs.
pub const PROMPT_VERSION: u32 = 2;

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

/// The history block: the selected items, numbered.
pub fn history_block(family: TaskFamily, items: &[Item<'_>]) -> String {
    let mut s = String::from("Here is what this user did before:\n");
    for (i, it) in items.iter().enumerate() {
        let line = match family {
            TaskFamily::Classification => {
                format!(
                    "{}. Item: {}\n   The user's tag: {}\n",
                    i + 1,
                    clip(it.input),
                    clip(it.output)
                )
            }
            TaskFamily::Rating => {
                format!(
                    "{}. Review: {}\n   The user's rating: {}\n",
                    i + 1,
                    clip(it.input),
                    clip(it.output)
                )
            }
            TaskFamily::FreeText => {
                if it.input.trim().is_empty() || it.input.trim() == it.output.trim() {
                    format!("{}. The user wrote: {}\n", i + 1, clip(it.output))
                } else {
                    format!(
                        "{}. Request: {}\n   The user's answer: {}\n",
                        i + 1,
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
         Write two or three sentences that start with \"This user\"."
    )
}

/// Stage 2, neutral insight: what a generic, impersonal answer looks like.
pub fn neutral_insight_request(family: TaskFamily) -> String {
    let what = match family {
        TaskFamily::Classification => "pick the most common, obvious label for an item",
        TaskFamily::Rating => "rate an item the way an average customer would",
        TaskFamily::FreeText => "answer in a plain, standard, impersonal way",
    };
    format!(
        "Ignore this user's personal preferences and history entirely. Describe in two or three sentences \
         how a generic assistant that knows nothing about the user would {what}. Start with \"A generic answer\"."
    )
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
pub fn labels_for_kind(kind: &str) -> Option<&'static [&'static str]> {
    use crate::eval::lamp::{Task, label_set};
    let k = kind.to_ascii_lowercase().replace(['-', '_'], "");
    if k.contains("lamp2") {
        label_set(Task::LaMP2)
    } else if k.contains("lamp1") {
        label_set(Task::LaMP1)
    } else {
        None
    }
}

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
    fn split_chat_cuts_at_the_marker() {
        let render = |s: &str| Ok::<_, ()>(format!("<start>{s}<end>"));
        let (p, s) = split_chat("HISTORY", "QUERY", render, || ()).unwrap();
        assert_eq!(p, "<start>HISTORY");
        assert_eq!(s, "QUERY<end>");
        let bad = |_: &str| Ok::<_, ()>("nothing".to_string());
        assert!(split_chat("a", "b", bad, || ()).is_err());
    }
}
