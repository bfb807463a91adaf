//! Reading history files and export files, with errors that name the file and the item.
//!
//! A history file is UTF-8 and one of:
//! - a JSON array of items `{"input", "output", "task"?, "time"?, "id"?}` ([`HistoryRecord`]);
//! - JSON lines, one such item per line (what `chameleon history list` prints);
//! - a LaMP `*_questions.json` file, `[{"id", "input", "profile": [...], "user_id"}]`, of which one user's
//!   profile items are taken ([`ReadOptions::lamp_user_id`]), mapped by their keys:
//!
//! | profile item keys | LaMP task | `input` | `output` | task kind |
//! |---|---|---|---|---|
//! | `description`, `tag` | LaMP-2 movie tagging | description | tag | [`task::LAMP2_MOVIE_TAG`] |
//! | `text`, `score` | LaMP-3 product rating | review | score | [`task::LAMP3_REVIEW_RATING`] |
//! | `text`, `title` | LaMP-4 news headline | article | headline | [`task::LAMP4_NEWS_HEADLINE`] |
//! | `abstract`, `title` | LaMP-1/5 scholarly title | abstract | title | [`task::LAMP5_SCHOLARLY_TITLE`] |
//! | `text` | LaMP-7 tweet paraphrasing | (empty) | tweet | [`task::LAMP7_TWEET`] |
//!
//! Reading checks every item ([`NewItem::check`]) and returns all or an error, so the caller writes all
//! of them in one transaction or nothing.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::history::string_or_number;
use super::{HistoryRecord, ItemError, NewItem, StoreError, TASK_GENERAL, UserExport};

/// Task kinds of the LaMP tasks, as stored with imported items.
pub mod task {
    /// LaMP-2: the tag a user gave a movie, from its description.
    pub const LAMP2_MOVIE_TAG: &str = "lamp-2-movie-tag";
    /// LaMP-3: the star rating (1-5) of a user's product review.
    pub const LAMP3_REVIEW_RATING: &str = "lamp-3-review-rating";
    /// LaMP-4: the headline a user wrote for a news article.
    pub const LAMP4_NEWS_HEADLINE: &str = "lamp-4-news-headline";
    /// LaMP-1 and LaMP-5: the title of a user's paper, from its abstract.
    pub const LAMP5_SCHOLARLY_TITLE: &str = "lamp-5-scholarly-title";
    /// LaMP-7: a user's own tweet.
    pub const LAMP7_TWEET: &str = "lamp-7-tweet";
}

/// How to read a history file.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The LaMP `user_id` whose profile to take from a LaMP questions file (a question without
    /// `user_id` matches on its `id`).
    pub lamp_user_id: Option<String>,
    /// Task kind of items that name none; [`TASK_GENERAL`] when unset. LaMP items always get their
    /// task's kind.
    pub task: Option<String>,
}

/// Where in the input a problem is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputPlace {
    /// The file, if the input is one.
    pub file: Option<PathBuf>,
    /// The line, counted from 1.
    pub line: Option<usize>,
    /// The item, counted from 1.
    pub item: Option<usize>,
    /// A section of the file (`history`, a LaMP question), when items are counted within it.
    pub section: Option<String>,
}

impl InputPlace {
    /// Item `n` (from 1) of a list given in memory.
    pub fn item(n: usize) -> InputPlace {
        InputPlace {
            item: Some(n),
            ..InputPlace::default()
        }
    }

    fn file(path: &Path) -> InputPlace {
        InputPlace {
            file: Some(path.to_path_buf()),
            ..InputPlace::default()
        }
    }

    fn at_line(path: &Path, line: usize) -> InputPlace {
        InputPlace {
            line: Some(line),
            ..InputPlace::file(path)
        }
    }

    fn at_item(path: &Path, item: usize) -> InputPlace {
        InputPlace {
            item: Some(item),
            ..InputPlace::file(path)
        }
    }
}

impl fmt::Display for InputPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(file) = &self.file {
            parts.push(format!("`{}`", file.display()));
        }
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        if let Some(section) = &self.section {
            parts.push(section.clone());
        }
        if let Some(item) = self.item {
            parts.push(format!("item {item}"));
        }
        if parts.is_empty() {
            parts.push("input".into());
        }
        f.write_str(&parts.join(", "))
    }
}

/// What is wrong with an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputProblem {
    /// A history item that cannot be stored.
    #[error(transparent)]
    Item(ItemError),
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// Bytes that are not UTF-8.
    #[error("invalid UTF-8 at byte {0}")]
    Utf8(usize),
    /// Neither a JSON array nor JSON lines.
    #[error("expected a JSON array or JSON lines of history items")]
    NotHistory,
    /// A file with no items.
    #[error("no history items")]
    NoItems,
    /// A LaMP questions file read without a user to pick.
    #[error(
        "this is a LaMP questions file, and no `--lamp-user-id` picks a user's profile from it"
    )]
    LampNeedsUser,
    /// `--lamp-user-id` given for a file that is not LaMP.
    #[error("`--lamp-user-id` applies to LaMP questions files only, and this is not one")]
    NotLamp,
    /// No question of the LaMP file has this user.
    #[error("no question has `user_id` `{0}`")]
    LampNoUser(String),
    /// A LaMP profile item of a kind this reader does not know.
    #[error("unrecognised LaMP profile item with keys {0}")]
    LampShape(String),
    /// An export file of a format or version this binary does not read.
    #[error(
        "not a chameleon export of version {expected} (found format `{format}`, version {version})"
    )]
    ExportVersion {
        format: String,
        version: u32,
        expected: u32,
    },
}

impl InputProblem {
    /// A `hint:` line for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            InputProblem::Item(e) => e.hint(),
            InputProblem::Json(_) | InputProblem::NotHistory => Some(
                "a history file is a JSON array or JSON lines of `{\"input\": ..., \"output\": ...}` items, \
                 or a LaMP `*_questions.json` file"
                    .into(),
            ),
            InputProblem::Utf8(_) => Some("convert the file to UTF-8, for example with `iconv -t UTF-8`".into()),
            InputProblem::NoItems => None,
            InputProblem::LampNeedsUser | InputProblem::LampNoUser(_) => {
                Some("pick the user whose profile to import with `--lamp-user-id ID` (a question's `user_id`)".into())
            }
            InputProblem::NotLamp => Some("leave out `--lamp-user-id`".into()),
            InputProblem::LampShape(_) => Some(
                "known LaMP profile items: `{description, tag}`, `{text, score}`, `{text, title}`, \
                 `{abstract, title}`, `{text}`"
                    .into(),
            ),
            InputProblem::ExportVersion { .. } => {
                Some("import files written by `chameleon export` of this or an older version".into())
            }
        }
    }
}

fn bad(place: InputPlace, problem: InputProblem) -> StoreError {
    StoreError::BadInput { place, problem }
}

/// Read a file as UTF-8 text, naming the place of the first invalid byte.
fn read_utf8(path: &Path) -> Result<String, StoreError> {
    let bytes = crate::files::read_limited(
        path,
        crate::files::MAX_HISTORY_BYTES,
        "a history or export file",
    )?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        bad(InputPlace::at_line(path, line), InputProblem::Utf8(at))
    })
}

fn json_error(path: &Path, e: &serde_json::Error) -> StoreError {
    bad(
        InputPlace::at_line(path, e.line().max(1)),
        InputProblem::Json(strip_position(e)),
    )
}

/// serde_json's message without its " at line L column C" suffix (the place says where).
fn strip_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// Read a history file (see the module documentation for the formats).
///
/// # Errors
/// [`StoreError::File`] when the file cannot be read (not regular, over [`crate::files::MAX_HISTORY_BYTES`]); [`StoreError::BadInput`] naming the file and the
/// line or item of the first problem: invalid UTF-8, malformed JSON, an item that fails
/// [`NewItem::check`], no items, a LaMP file without a user to pick.
pub fn read_history_file(path: &Path, options: &ReadOptions) -> Result<Vec<NewItem>, StoreError> {
    let text = read_utf8(path)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let default_task = options.task.as_deref().unwrap_or(TASK_GENERAL);
    let body = text.trim_start();
    let items = if body.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
        if values.first().is_some_and(is_lamp_question) {
            let user = options
                .lamp_user_id
                .as_deref()
                .ok_or_else(|| bad(InputPlace::file(path), InputProblem::LampNeedsUser))?;
            return read_lamp(path, values, user);
        }
        let mut items = Vec::with_capacity(values.len());
        for (i, value) in values.into_iter().enumerate() {
            let record: HistoryRecord = serde_json::from_value(value).map_err(|e| {
                bad(
                    InputPlace::at_item(path, i + 1),
                    InputProblem::Json(strip_position(&e)),
                )
            })?;
            let item = record.into_item(default_task);
            item.check()
                .map_err(|e| bad(InputPlace::at_item(path, i + 1), InputProblem::Item(e)))?;
            items.push(item);
        }
        items
    } else if body.starts_with('{') || body.is_empty() {
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let place = || InputPlace::at_line(path, i + 1);
            let record: HistoryRecord = serde_json::from_str(line)
                .map_err(|e| bad(place(), InputProblem::Json(strip_position(&e))))?;
            let item = record.into_item(default_task);
            item.check()
                .map_err(|e| bad(place(), InputProblem::Item(e)))?;
            items.push(item);
        }
        items
    } else {
        return Err(bad(InputPlace::file(path), InputProblem::NotHistory));
    };
    if options.lamp_user_id.is_some() {
        return Err(bad(InputPlace::file(path), InputProblem::NotLamp));
    }
    if items.is_empty() {
        return Err(bad(InputPlace::file(path), InputProblem::NoItems));
    }
    Ok(items)
}

fn is_lamp_question(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|q| q.contains_key("profile") && q.contains_key("input"))
}

/// One question of a LaMP questions file; only what picks the user and their profile.
#[derive(Deserialize)]
struct LampQuestion {
    #[serde(deserialize_with = "string_or_number")]
    id: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    user_id: Option<String>,
    profile: Vec<Map<String, Value>>,
}

/// The profile items of `user`'s questions, each once (questions of one user share their profile).
fn read_lamp(path: &Path, values: Vec<Value>, user: &str) -> Result<Vec<NewItem>, StoreError> {
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut found = false;
    for (q, value) in values.into_iter().enumerate() {
        let question: LampQuestion = serde_json::from_value(value).map_err(|e| {
            bad(
                InputPlace {
                    section: Some(format!("question {}", q + 1)),
                    ..InputPlace::file(path)
                },
                InputProblem::Json(strip_position(&e)),
            )
        })?;
        let matches = match &question.user_id {
            Some(id) => id == user,
            None => question.id.as_deref() == Some(user),
        };
        if !matches {
            continue;
        }
        found = true;
        let section = format!(
            "question {} (`id` `{}`), profile",
            q + 1,
            question.id.as_deref().unwrap_or("?")
        );
        for (i, entry) in question.profile.iter().enumerate() {
            let place = || InputPlace {
                section: Some(section.clone()),
                item: Some(i + 1),
                ..InputPlace::file(path)
            };
            let item = lamp_item(entry).map_err(|problem| bad(place(), problem))?;
            if let Some(id) = &item.source_id
                && !seen.insert(id.clone())
            {
                continue;
            }
            item.check()
                .map_err(|e| bad(place(), InputProblem::Item(e)))?;
            items.push(item);
        }
    }
    if !found {
        return Err(bad(
            InputPlace::file(path),
            InputProblem::LampNoUser(user.to_string()),
        ));
    }
    if items.is_empty() {
        return Err(bad(InputPlace::file(path), InputProblem::NoItems));
    }
    Ok(items)
}

/// Map one LaMP profile item (its JSON object) to a history item by its keys, as `history import` does.
///
/// # Errors
/// [`InputProblem`] when the object has none of the known LaMP shapes or a field is not text.
pub fn lamp_item(entry: &Map<String, Value>) -> Result<NewItem, InputProblem> {
    let text = |key: &str| -> Result<Option<String>, InputProblem> {
        match entry.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(InputProblem::Json(format!(
                "`{key}` is `{other}`, expected a string"
            ))),
        }
    };
    let has = |key: &str| entry.contains_key(key);
    let (task, input, output) = if has("tag") && has("description") {
        (task::LAMP2_MOVIE_TAG, text("description")?, text("tag")?)
    } else if has("score") && has("text") {
        (task::LAMP3_REVIEW_RATING, text("text")?, text("score")?)
    } else if has("title") && has("abstract") {
        (
            task::LAMP5_SCHOLARLY_TITLE,
            text("abstract")?,
            text("title")?,
        )
    } else if has("title") && has("text") {
        (task::LAMP4_NEWS_HEADLINE, text("text")?, text("title")?)
    } else if has("text") {
        (task::LAMP7_TWEET, Some(String::new()), text("text")?)
    } else {
        let keys: Vec<String> = entry.keys().map(|k| format!("`{k}`")).collect();
        return Err(InputProblem::LampShape(keys.join(", ")));
    };
    Ok(NewItem {
        task: task.to_string(),
        input: input.unwrap_or_default(),
        output: output.unwrap_or_default(),
        time: None,
        source_id: text("id")?,
    })
}

/// Read a file written by `chameleon export`.
///
/// Only the file's shape is checked here; [`Store::import_user`](super::Store::import_user) checks
/// the contents before it writes anything.
///
/// # Errors
/// [`StoreError::File`]; [`StoreError::BadInput`] for invalid UTF-8, malformed JSON, or another format
/// or version.
pub fn read_export_file(path: &Path) -> Result<UserExport, StoreError> {
    let text = read_utf8(path)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // the header first, so that a newer format is named as such rather than as a field error
    #[derive(Deserialize)]
    struct Header {
        format: String,
        version: u32,
    }
    let header: Header = serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
    if header.format != super::EXPORT_FORMAT || header.version > super::EXPORT_VERSION {
        return Err(bad(
            InputPlace::file(path),
            InputProblem::ExportVersion {
                format: header.format,
                version: header.version,
                expected: super::EXPORT_VERSION,
            },
        ));
    }
    serde_json::from_str(text).map_err(|e| json_error(path, &e))
}
