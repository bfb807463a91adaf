//! LaMP-format data: the questions, each user's profile, and the gold outputs.
//!
//! A LaMP split is two files in one folder: `<split>_questions.json`, an array of
//! `{"id", "input", "profile": [...]}` (our own sets add `"user_id"`), and `<split>_outputs.json`,
//! `{"task": "LaMP_2", "golds": [{"id", "output"}]}`. The official LaMP download and the sets under
//! `shared/data/` read the same way. Loading checks the whole split once, so that later stages can trust it:
//! every question has exactly one gold and every gold a question, every profile item carries the keys of its
//! task, and an error names the file, the record (0-based index in its JSON array) and the key at fault.
//!
//! Values are typed but read flexibly: ids, scores and gold outputs may be JSON strings or numbers (both are
//! kept as text); each profile item also keeps its raw JSON object, so keys this module does not know
//! (LaMP's time-based splits add `"date"`) stay at hand.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value};

/// One of the seven LaMP tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// Personalised citation identification: which of two references the author would cite (`[1]`/`[2]`).
    LaMP1,
    /// Personalised movie tagging: one of 15 tags for a movie description.
    LaMP2,
    /// Personalised product rating: a 1-5 score for a review.
    LaMP3,
    /// Personalised news headline generation.
    LaMP4,
    /// Personalised scholarly title generation.
    LaMP5,
    /// Personalised email subject generation.
    LaMP6,
    /// Personalised tweet paraphrasing.
    LaMP7,
}

/// How a task is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// A label from [`label_set`]; accuracy and macro-F1 (LaMP-1, LaMP-2).
    Classification,
    /// A number 1-5; MAE and RMSE (LaMP-3).
    Rating,
    /// Free text; ROUGE-1 and ROUGE-L (LaMP-4 to LaMP-7).
    Generation,
}

impl Task {
    /// All tasks, in order.
    pub const ALL: [Task; 7] = [
        Task::LaMP1,
        Task::LaMP2,
        Task::LaMP3,
        Task::LaMP4,
        Task::LaMP5,
        Task::LaMP6,
        Task::LaMP7,
    ];

    /// The task's number, 1 to 7.
    pub fn number(self) -> u8 {
        match self {
            Task::LaMP1 => 1,
            Task::LaMP2 => 2,
            Task::LaMP3 => 3,
            Task::LaMP4 => 4,
            Task::LaMP5 => 5,
            Task::LaMP6 => 6,
            Task::LaMP7 => 7,
        }
    }

    /// The name LaMP's outputs files use in `"task"`, e.g. `LaMP_2`.
    pub fn file_name(self) -> &'static str {
        match self {
            Task::LaMP1 => "LaMP_1",
            Task::LaMP2 => "LaMP_2",
            Task::LaMP3 => "LaMP_3",
            Task::LaMP4 => "LaMP_4",
            Task::LaMP5 => "LaMP_5",
            Task::LaMP6 => "LaMP_6",
            Task::LaMP7 => "LaMP_7",
        }
    }

    /// How the task is scored.
    pub fn kind(self) -> TaskKind {
        match self {
            Task::LaMP1 | Task::LaMP2 => TaskKind::Classification,
            Task::LaMP3 => TaskKind::Rating,
            Task::LaMP4 | Task::LaMP5 | Task::LaMP6 | Task::LaMP7 => TaskKind::Generation,
        }
    }
}

impl fmt::Display for Task {
    /// `LaMP-2`, the name the LaMP paper and its code (`prompts.py`) use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LaMP-{}", self.number())
    }
}

/// A task name that is not `LaMP_1` .. `LaMP_7`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown LaMP task `{0}` (expected `LaMP_1` .. `LaMP_7`)")]
pub struct UnknownTask(pub String);

impl FromStr for Task {
    type Err = UnknownTask;

    /// Parses `LaMP_2` (the outputs files' spelling) or `LaMP-2` (the paper's); the `lamp` part in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownTask(s.to_owned());
        let (prefix, rest) = s.split_at_checked(4).ok_or_else(unknown)?;
        let number = rest
            .strip_prefix('_')
            .or_else(|| rest.strip_prefix('-'))
            .ok_or_else(unknown)?;
        if !prefix.eq_ignore_ascii_case("lamp") {
            return Err(unknown());
        }
        Task::ALL
            .into_iter()
            .find(|t| number.len() == 1 && number.as_bytes()[0] == b'0' + t.number())
            .ok_or_else(unknown)
    }
}

use crate::answer::{LAMP1_LABELS, LAMP2_LABELS, LAMP3_LABELS};

/// The label list of a classification or rating task, in LaMP's order (`get_all_labels` in LaMP's
/// `data/datasets.py`); `None` for the generation tasks LaMP-4 to LaMP-7.
///
/// The order matters: macro-F1 indexes labels by position. LaMP's `eval/evaluation.py` still carries the
/// news categories of the retired LaMP-2 (news) for `LaMP_2`; the movie tags here are those of the current
/// LaMP-2, as its training code lists them.
pub fn label_set(task: Task) -> Option<&'static [&'static str]> {
    match task {
        Task::LaMP1 => Some(LAMP1_LABELS),
        Task::LaMP2 => Some(LAMP2_LABELS),
        Task::LaMP3 => Some(LAMP3_LABELS),
        Task::LaMP4 | Task::LaMP5 | Task::LaMP6 | Task::LaMP7 => None,
    }
}

/// The task-specific content of a profile item (the item's `id` is in [`ProfileItem`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileBody {
    /// LaMP-1 and LaMP-5: one of the author's papers, `{title, abstract}`.
    Paper {
        title: String,
        abstract_text: String,
    },
    /// LaMP-2: a movie the user tagged, `{description, tag}`.
    Movie { description: String, tag: String },
    /// LaMP-3: a review and the user's score, `{text, score}` (the score as text, e.g. `"4"`).
    Review { text: String, score: String },
    /// LaMP-4 (news article and headline) and LaMP-6 (email and subject): `{text, title}`.
    Titled { text: String, title: String },
    /// LaMP-7: one of the user's tweets, `{text}`.
    Tweet { text: String },
}

/// One item of a user's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileItem {
    /// The item's `id` (a JSON string or number, kept as text).
    pub id: String,
    /// The typed fields of the item's task.
    pub body: ProfileBody,
    /// The item's JSON object as read, every key included.
    pub raw: Map<String, Value>,
}

/// A profile item seen as an earlier (input, output) exchange of the user, the shape the history takes in
/// the personalisation pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryView<'a> {
    /// What the user was given.
    pub input: &'a str,
    /// What the user produced.
    pub output: &'a str,
}

impl ProfileItem {
    /// An item built in code; `raw` holds the same fields under LaMP's keys.
    pub fn new(id: impl Into<String>, body: ProfileBody) -> ProfileItem {
        let id = id.into();
        let mut raw = Map::new();
        raw.insert("id".to_owned(), Value::String(id.clone()));
        let mut put = |key: &str, value: &str| {
            raw.insert(key.to_owned(), Value::String(value.to_owned()));
        };
        match &body {
            ProfileBody::Paper {
                title,
                abstract_text,
            } => {
                put("title", title);
                put("abstract", abstract_text);
            }
            ProfileBody::Movie { description, tag } => {
                put("description", description);
                put("tag", tag);
            }
            ProfileBody::Review { text, score } => {
                put("text", text);
                put("score", score);
            }
            ProfileBody::Titled { text, title } => {
                put("text", text);
                put("title", title);
            }
            ProfileBody::Tweet { text } => put("text", text),
        }
        ProfileItem { id, body, raw }
    }

    /// The typed field stored under LaMP's key `key` (`title`, `abstract`, `description`, `tag`, `text`,
    /// `score`); `None` when the item's task has no such key.
    pub fn field(&self, key: &str) -> Option<&str> {
        let value = match (&self.body, key) {
            (ProfileBody::Paper { title, .. } | ProfileBody::Titled { title, .. }, "title") => {
                title
            }
            (ProfileBody::Paper { abstract_text, .. }, "abstract") => abstract_text,
            (ProfileBody::Movie { description, .. }, "description") => description,
            (ProfileBody::Movie { tag, .. }, "tag") => tag,
            (ProfileBody::Review { score, .. }, "score") => score,
            (
                ProfileBody::Review { text, .. }
                | ProfileBody::Titled { text, .. }
                | ProfileBody::Tweet { text },
                "text",
            ) => text,
            _ => return None,
        };
        Some(value)
    }

    /// The item as an (input, output) exchange:
    ///
    /// | task | input | output |
    /// |---|---|---|
    /// | LaMP-1, LaMP-5 | abstract | title (the author's own title for it) |
    /// | LaMP-2 | description | tag |
    /// | LaMP-3 | review text | score |
    /// | LaMP-4, LaMP-6 | article / email text | headline / subject |
    /// | LaMP-7 | tweet text | the same tweet text |
    ///
    /// LaMP-7 keeps no neutral version of a past tweet, only the user's words, so input and output are the
    /// same text: the tweet is both something to paraphrase (a query) and an example of the user's style (an
    /// answer). A consumer that needs a distinct input must make one, e.g. by having the model paraphrase it.
    pub fn history(&self) -> HistoryView<'_> {
        let (input, output) = match &self.body {
            ProfileBody::Paper {
                title,
                abstract_text,
            } => (abstract_text, title),
            ProfileBody::Movie { description, tag } => (description, tag),
            ProfileBody::Review { text, score } => (text, score),
            ProfileBody::Titled { text, title } => (text, title),
            ProfileBody::Tweet { text } => (text, text),
        };
        HistoryView { input, output }
    }
}

/// One question of a split with its gold output.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The question's `id` (a JSON string or number, kept as text).
    pub id: String,
    /// The task input, in LaMP's per-task wording.
    pub input: String,
    /// The user's earlier items.
    pub profile: Vec<ProfileItem>,
    /// `user_id` when the file has it (our sets do, the official LaMP files do not).
    pub user_id: Option<String>,
    /// The gold output from `<split>_outputs.json`.
    pub gold: String,
    /// Keys of the question object other than `id`, `input`, `profile` and `user_id`.
    pub extra: Map<String, Value>,
}

impl Question {
    /// The key that groups questions by user: `user_id` when present, otherwise the question's own id (the
    /// official LaMP files give every question its own profile, so each question is its own user).
    pub fn user_key(&self) -> &str {
        self.user_id.as_deref().unwrap_or(&self.id)
    }
}

/// A loaded LaMP split: its task and its questions, in file order, each with its gold.
#[derive(Debug, Clone, PartialEq)]
pub struct LampSet {
    /// The task named in the outputs file.
    pub task: Task,
    /// The split's name, e.g. `dev`.
    pub split: String,
    /// The questions in the order of the questions file.
    pub questions: Vec<Question>,
}

/// Where in a file a problem lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The file's top-level value.
    Top,
    /// Record `index` (0-based) of the file's array (`golds` in an outputs file).
    Record(usize),
    /// Profile item `item` of question record `record` (both 0-based).
    ProfileItem { record: usize, item: usize },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Top => write!(f, "top level"),
            Location::Record(i) => write!(f, "record {i}"),
            Location::ProfileItem { record, item } => {
                write!(f, "record {record}, profile item {item}")
            }
        }
    }
}

/// Why a LaMP split could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LampError {
    /// A file of the split does not exist.
    #[error("`{}` does not exist (a LaMP split needs `<split>_questions.json` and `<split>_outputs.json`)", path.display())]
    NotFound { path: PathBuf },
    /// A file exists but is not a regular file, is too large or cannot be read.
    #[error(transparent)]
    File(crate::files::FileError),
    /// A file is not valid JSON.
    #[error("`{}` is not valid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A value has the wrong JSON type (e.g. the questions file is not an array).
    #[error("`{}`, {at}: {what} should be {expected}", path.display())]
    WrongType {
        path: PathBuf,
        at: Location,
        /// The key, or `value` for the record itself.
        what: String,
        expected: &'static str,
    },
    /// A record lacks a key its task needs.
    #[error("`{}`, {at}: missing key `{key}`", path.display())]
    MissingKey {
        path: PathBuf,
        at: Location,
        key: &'static str,
    },
    /// The outputs file names a task this module does not know.
    #[error("`{}`: {source}", path.display())]
    UnknownTask {
        path: PathBuf,
        #[source]
        source: UnknownTask,
    },
    /// Two records of one file share an id.
    #[error("`{}`, {at}: id `{id}` already used by record {first}", path.display())]
    DuplicateId {
        path: PathBuf,
        at: Location,
        id: String,
        first: usize,
    },
    /// A question has no gold output.
    #[error("question `{id}` (record {index} of `{}`) has no gold output in `{}`", questions.display(), outputs.display())]
    NoGold {
        questions: PathBuf,
        outputs: PathBuf,
        index: usize,
        id: String,
    },
    /// A gold output has no question.
    #[error("gold `{id}` (record {index} of `{}`) has no question in `{}`", outputs.display(), questions.display())]
    NoQuestion {
        questions: PathBuf,
        outputs: PathBuf,
        index: usize,
        id: String,
    },
}

impl LampSet {
    /// The questions file of `split` in `dir`: `<dir>/<split>_questions.json`.
    pub fn questions_path(dir: &Path, split: &str) -> PathBuf {
        dir.join(format!("{split}_questions.json"))
    }

    /// The outputs file of `split` in `dir`: `<dir>/<split>_outputs.json`.
    pub fn outputs_path(dir: &Path, split: &str) -> PathBuf {
        dir.join(format!("{split}_outputs.json"))
    }

    /// Loads split `split` (e.g. `dev`) from folder `dir` and checks it whole.
    ///
    /// # Errors
    /// [`LampError`] when a file is missing, unreadable or not JSON; when a record lacks a key of its task or
    /// has one of the wrong type; when the task is unknown; when ids repeat within a file; when a question
    /// has no gold or a gold no question. Each names the file and, for a record, its index and key.
    pub fn load(dir: &Path, split: &str) -> Result<LampSet, LampError> {
        let outputs_path = Self::outputs_path(dir, split);
        let questions_path = Self::questions_path(dir, split);
        let (task, golds) = read_outputs(&outputs_path)?;
        let questions = read_questions(&questions_path, task)?;

        let mut by_id: HashMap<String, (usize, String)> = HashMap::with_capacity(golds.len());
        for (index, (id, output)) in golds.into_iter().enumerate() {
            match by_id.entry(id) {
                Entry::Occupied(e) => {
                    return Err(LampError::DuplicateId {
                        path: outputs_path,
                        at: Location::Record(index),
                        id: e.key().clone(),
                        first: e.get().0,
                    });
                }
                Entry::Vacant(e) => {
                    e.insert((index, output));
                }
            }
        }

        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(questions.len());
        for (index, q) in questions.iter().enumerate() {
            if let Some(&first) = seen.get(q.id.as_str()) {
                return Err(LampError::DuplicateId {
                    path: questions_path,
                    at: Location::Record(index),
                    id: q.id.clone(),
                    first,
                });
            }
            seen.insert(&q.id, index);
        }

        let mut out = Vec::with_capacity(questions.len());
        for (index, q) in questions.into_iter().enumerate() {
            let Some((_, gold)) = by_id.remove(&q.id) else {
                return Err(LampError::NoGold {
                    questions: questions_path,
                    outputs: outputs_path,
                    index,
                    id: q.id,
                });
            };
            out.push(Question { gold, ..q });
        }
        if let Some((id, (index, _))) = by_id.into_iter().min_by_key(|(_, (index, _))| *index) {
            return Err(LampError::NoQuestion {
                questions: questions_path,
                outputs: outputs_path,
                index,
                id,
            });
        }
        Ok(LampSet {
            task,
            split: split.to_owned(),
            questions: out,
        })
    }

    /// The distinct [`Question::user_key`]s, in order of first appearance.
    pub fn users(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.questions
            .iter()
            .map(Question::user_key)
            .filter(|k| seen.insert(*k))
            .collect()
    }

    /// The question with id `id`.
    pub fn question(&self, id: &str) -> Option<&Question> {
        self.questions.iter().find(|q| q.id == id)
    }
}

fn read_json(path: &Path) -> Result<Value, LampError> {
    use crate::files::{FileError, MAX_DATA_BYTES, read_limited};
    let bytes = match read_limited(path, MAX_DATA_BYTES, "a LaMP data file") {
        Ok(bytes) => bytes,
        Err(FileError::NotFound { .. }) => {
            return Err(LampError::NotFound {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(LampError::File(e)),
    };
    serde_json::from_slice(&bytes).map_err(|source| LampError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Reads fields of one JSON object, naming the file and record in every error.
struct Fields<'a> {
    path: &'a Path,
    at: Location,
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn of(path: &'a Path, at: Location, value: &'a Value) -> Result<Self, LampError> {
        match value {
            Value::Object(obj) => Ok(Fields { path, at, obj }),
            _ => Err(LampError::WrongType {
                path: path.to_owned(),
                at,
                what: "value".to_owned(),
                expected: "an object",
            }),
        }
    }

    fn wrong(&self, key: &str, expected: &'static str) -> LampError {
        LampError::WrongType {
            path: self.path.to_owned(),
            at: self.at,
            what: format!("`{key}`"),
            expected,
        }
    }

    fn get(&self, key: &'static str) -> Result<&'a Value, LampError> {
        self.obj.get(key).ok_or_else(|| LampError::MissingKey {
            path: self.path.to_owned(),
            at: self.at,
            key,
        })
    }

    /// A JSON string.
    fn text(&self, key: &'static str) -> Result<String, LampError> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.wrong(key, "a string")),
        }
    }

    /// A JSON string or number, as text (ids, scores, gold outputs).
    fn text_or_number(&self, key: &'static str) -> Result<String, LampError> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(self.wrong(key, "a string or a number")),
        }
    }

    fn array(&self, key: &'static str) -> Result<&'a [Value], LampError> {
        match self.get(key)? {
            Value::Array(items) => Ok(items),
            _ => Err(self.wrong(key, "an array")),
        }
    }
}

/// The task and the `(id, output)` golds, in file order.
fn read_outputs(path: &Path) -> Result<(Task, Vec<(String, String)>), LampError> {
    let value = read_json(path)?;
    let top = Fields::of(path, Location::Top, &value)?;
    let task_name = top.text("task")?;
    let task = task_name.parse().map_err(|source| LampError::UnknownTask {
        path: path.to_owned(),
        source,
    })?;
    top.array("golds")?
        .iter()
        .enumerate()
        .map(|(i, gold)| {
            let f = Fields::of(path, Location::Record(i), gold)?;
            Ok((f.text_or_number("id")?, f.text_or_number("output")?))
        })
        .collect::<Result<_, _>>()
        .map(|golds| (task, golds))
}

/// The questions, in file order, with empty golds.
fn read_questions(path: &Path, task: Task) -> Result<Vec<Question>, LampError> {
    let value = read_json(path)?;
    let Value::Array(records) = &value else {
        return Err(LampError::WrongType {
            path: path.to_owned(),
            at: Location::Top,
            what: "value".to_owned(),
            expected: "an array of questions",
        });
    };
    records
        .iter()
        .enumerate()
        .map(|(record, value)| {
            let f = Fields::of(path, Location::Record(record), value)?;
            let id = f.text_or_number("id")?;
            let input = f.text("input")?;
            let profile = f
                .array("profile")?
                .iter()
                .enumerate()
                .map(|(item, value)| {
                    let at = Location::ProfileItem { record, item };
                    read_profile_item(&Fields::of(path, at, value)?, task)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let user_id = match f.obj.get("user_id") {
                None | Some(Value::Null) => None,
                Some(_) => Some(f.text_or_number("user_id")?),
            };
            let extra = f
                .obj
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "id" | "input" | "profile" | "user_id"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(Question {
                id,
                input,
                profile,
                user_id,
                gold: String::new(),
                extra,
            })
        })
        .collect()
}

fn read_profile_item(f: &Fields<'_>, task: Task) -> Result<ProfileItem, LampError> {
    let id = f.text_or_number("id")?;
    let body = match task {
        Task::LaMP1 | Task::LaMP5 => ProfileBody::Paper {
            title: f.text("title")?,
            abstract_text: f.text("abstract")?,
        },
        Task::LaMP2 => ProfileBody::Movie {
            description: f.text("description")?,
            tag: f.text("tag")?,
        },
        Task::LaMP3 => ProfileBody::Review {
            text: f.text("text")?,
            score: f.text_or_number("score")?,
        },
        Task::LaMP4 | Task::LaMP6 => ProfileBody::Titled {
            text: f.text("text")?,
            title: f.text("title")?,
        },
        Task::LaMP7 => ProfileBody::Tweet {
            text: f.text("text")?,
        },
    };
    Ok(ProfileItem {
        id,
        body,
        raw: f.obj.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lamp");

    fn fixture(name: &str) -> PathBuf {
        Path::new(FIXTURES).join(name)
    }

    /// Writes a split into a fresh temporary folder.
    fn split_dir(questions: &str, outputs: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dev_questions.json"), questions).unwrap();
        std::fs::write(dir.path().join("dev_outputs.json"), outputs).unwrap();
        dir
    }

    #[test]
    fn task_names_parse_both_spellings_and_reject_others() {
        assert_eq!("LaMP_2".parse::<Task>().unwrap(), Task::LaMP2);
        assert_eq!("LaMP-7".parse::<Task>().unwrap(), Task::LaMP7);
        assert_eq!("lamp_1".parse::<Task>().unwrap(), Task::LaMP1);
        for bad in [
            "LaMP_8", "LaMP_0", "LaMP_22", "LaMP2", "LaMP_", "", "LaM", "news_2", "LaMP_2N",
        ] {
            assert!(bad.parse::<Task>().is_err(), "{bad} should not parse");
        }
        for t in Task::ALL {
            assert_eq!(t.file_name().parse::<Task>().unwrap(), t);
            assert_eq!(t.to_string().parse::<Task>().unwrap(), t);
        }
    }

    #[test]
    fn label_sets_match_lamp() {
        assert_eq!(label_set(Task::LaMP1).unwrap(), ["[1]", "[2]"]);
        let tags = label_set(Task::LaMP2).unwrap();
        assert_eq!(tags.len(), 15);
        assert_eq!(tags[0], "sci-fi");
        assert_eq!(tags[6], "dark comedy");
        assert_eq!(tags[14], "true story");
        assert_eq!(label_set(Task::LaMP3).unwrap(), ["1", "2", "3", "4", "5"]);
        for t in [Task::LaMP4, Task::LaMP5, Task::LaMP6, Task::LaMP7] {
            assert!(label_set(t).is_none());
            assert_eq!(t.kind(), TaskKind::Generation);
        }
    }

    #[test]
    fn tiny_lamp2_fixture_loads() {
        let set = LampSet::load(&fixture("tiny_lamp2"), "dev").unwrap();
        assert_eq!(set.task, Task::LaMP2);
        assert_eq!(set.split, "dev");
        assert_eq!(set.questions.len(), 4);
        assert_eq!(set.users(), ["u-ada", "u-bo"]);

        let q = &set.questions[0];
        assert_eq!(q.id, "2001");
        assert_eq!(q.user_key(), "u-ada");
        // the gold file lists the golds in another order than the questions: matched by id, not position
        assert_eq!(q.gold, "sci-fi");
        assert_eq!(set.question("2004").unwrap().gold, "true story");
        assert_eq!(q.profile.len(), 3);
        let item = &q.profile[0];
        assert_eq!(item.id, "20011");
        let ProfileBody::Movie { description, tag } = &item.body else {
            panic!("not a movie: {item:?}")
        };
        assert!(description.starts_with("A lighthouse keeper"));
        assert_eq!(tag, "sci-fi");
        assert_eq!(
            item.history(),
            HistoryView {
                input: description,
                output: "sci-fi"
            }
        );
        assert_eq!(item.raw["tag"], "sci-fi");

        // the second user's item ids are JSON numbers in the fixture: read as text
        let bo = set
            .questions
            .iter()
            .find(|q| q.user_key() == "u-bo")
            .unwrap();
        assert_eq!(bo.profile[0].id, "20031");
        assert!(bo.extra.contains_key("note"));
        assert!(
            set.questions
                .iter()
                .all(|q| label_set(Task::LaMP2).unwrap().contains(&q.gold.as_str()))
        );
    }

    #[test]
    fn official_layout_without_user_id_makes_each_question_its_own_user() {
        let dir = split_dir(
            r#"[{"id": "310", "input": "review: fine", "profile": [{"id": "3101", "text": "loud", "score": 2}]},
                {"id": 311, "input": "review: ok", "profile": []}]"#,
            r#"{"task": "LaMP_3", "golds": [{"id": 311, "output": 4}, {"id": "310", "output": "5"}]}"#,
        );
        let set = LampSet::load(dir.path(), "dev").unwrap();
        assert_eq!(set.task, Task::LaMP3);
        assert_eq!(set.users(), ["310", "311"]);
        assert_eq!(set.questions[0].gold, "5");
        assert_eq!(set.questions[1].gold, "4");
        let item = &set.questions[0].profile[0];
        assert_eq!(
            item.body,
            ProfileBody::Review {
                text: "loud".into(),
                score: "2".into()
            }
        );
        assert_eq!(
            item.history(),
            HistoryView {
                input: "loud",
                output: "2"
            }
        );
    }

    #[test]
    fn every_task_reads_its_profile_keys() {
        let cases: [(&str, &str, ProfileBody); 7] = [
            (
                "LaMP_1",
                r#"{"id":"1","title":"T","abstract":"A"}"#,
                ProfileBody::Paper {
                    title: "T".into(),
                    abstract_text: "A".into(),
                },
            ),
            (
                "LaMP_2",
                r#"{"id":"1","description":"D","tag":"comedy"}"#,
                ProfileBody::Movie {
                    description: "D".into(),
                    tag: "comedy".into(),
                },
            ),
            (
                "LaMP_3",
                r#"{"id":"1","text":"X","score":"3"}"#,
                ProfileBody::Review {
                    text: "X".into(),
                    score: "3".into(),
                },
            ),
            (
                "LaMP_4",
                r#"{"id":"1","text":"X","title":"T"}"#,
                ProfileBody::Titled {
                    text: "X".into(),
                    title: "T".into(),
                },
            ),
            (
                "LaMP_5",
                r#"{"id":"1","title":"T","abstract":"A","date":"2001"}"#,
                ProfileBody::Paper {
                    title: "T".into(),
                    abstract_text: "A".into(),
                },
            ),
            (
                "LaMP_6",
                r#"{"id":"1","text":"X","title":"T"}"#,
                ProfileBody::Titled {
                    text: "X".into(),
                    title: "T".into(),
                },
            ),
            (
                "LaMP_7",
                r#"{"id":"1","text":"X"}"#,
                ProfileBody::Tweet { text: "X".into() },
            ),
        ];
        for (task, item, body) in cases {
            let dir = split_dir(
                &format!(r#"[{{"id":"q","input":"i","profile":[{item}]}}]"#),
                &format!(r#"{{"task":"{task}","golds":[{{"id":"q","output":"o"}}]}}"#),
            );
            let set = LampSet::load(dir.path(), "dev").unwrap();
            let got = &set.questions[0].profile[0];
            assert_eq!(got.body, body, "{task}");
            // an item built in code carries the same keys (and values) as one read from a file
            let built = ProfileItem::new("1", body);
            for (k, v) in &built.raw {
                assert_eq!(got.raw.get(k), Some(v), "{task} key {k}");
                if k != "id" {
                    assert_eq!(got.field(k), v.as_str(), "{task} key {k}");
                }
            }
            assert_eq!(got.field("no such key"), None);
        }
        let tweet = ProfileItem::new(
            "t",
            ProfileBody::Tweet {
                text: "@ada gm".into(),
            },
        );
        assert_eq!(
            tweet.history(),
            HistoryView {
                input: "@ada gm",
                output: "@ada gm"
            }
        );
        let paper = ProfileItem::new(
            "p",
            ProfileBody::Paper {
                title: "T".into(),
                abstract_text: "A".into(),
            },
        );
        assert_eq!(
            paper.history(),
            HistoryView {
                input: "A",
                output: "T"
            }
        );
    }

    #[test]
    fn malformed_fixture_names_file_record_and_key() {
        let err = LampSet::load(&fixture("malformed"), "dev").unwrap_err();
        let LampError::MissingKey { path, at, key } = &err else {
            panic!("unexpected error: {err}")
        };
        assert!(path.ends_with("malformed/dev_questions.json"));
        assert_eq!(*at, Location::ProfileItem { record: 1, item: 0 });
        assert_eq!(*key, "tag");
        let msg = err.to_string();
        assert!(
            msg.contains("dev_questions.json") && msg.contains("record 1, profile item 0"),
            "{msg}"
        );
        assert!(msg.contains("missing key `tag`"), "{msg}");
    }

    #[test]
    fn missing_files_are_named() {
        let err = LampSet::load(&fixture("tiny_lamp2"), "test").unwrap_err();
        let LampError::NotFound { path } = &err else {
            panic!("unexpected error: {err}")
        };
        assert!(path.ends_with("tiny_lamp2/test_outputs.json"));
        assert!(err.to_string().contains("test_outputs.json"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("dev_outputs.json"),
            r#"{"task":"LaMP_7","golds":[]}"#,
        )
        .unwrap();
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(
            matches!(&err, LampError::NotFound { path } if path.ends_with("dev_questions.json")),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_is_reported_with_its_path() {
        let dir = split_dir("[{\"id\": \"1\",", r#"{"task":"LaMP_7","golds":[]}"#);
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(
            matches!(&err, LampError::Json { path, .. } if path.ends_with("dev_questions.json")),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn shape_errors_name_record_and_key() {
        let golds = r#"{"task":"LaMP_7","golds":[{"id":"a","output":"o"}]}"#;
        let cases: [(&str, &str, Location, &str); 5] = [
            (r#"{"id":"a"}"#, "an array", Location::Top, "value"),
            (
                r#"[{"id":"a","profile":[]}]"#,
                "missing",
                Location::Record(0),
                "input",
            ),
            (
                r#"[{"id":"a","input":"i"}]"#,
                "missing",
                Location::Record(0),
                "profile",
            ),
            (
                r#"[{"id":"a","input":7,"profile":[]}]"#,
                "a string",
                Location::Record(0),
                "`input`",
            ),
            (
                r#"[{"id":"a","input":"i","profile":[{"text":"t"}]}]"#,
                "missing",
                Location::ProfileItem { record: 0, item: 0 },
                "id",
            ),
        ];
        for (questions, expect, at_expected, key_expected) in cases {
            let dir = split_dir(questions, golds);
            let err = LampSet::load(dir.path(), "dev").unwrap_err();
            match &err {
                LampError::MissingKey { at, key, .. } => {
                    assert_eq!(expect, "missing", "{err}");
                    assert_eq!((*at, *key), (at_expected, key_expected));
                }
                LampError::WrongType {
                    at, what, expected, ..
                } => {
                    assert!(expected.contains(expect), "{err}");
                    assert_eq!((*at, what.as_str()), (at_expected, key_expected));
                }
                other => panic!("unexpected error: {other}"),
            }
        }

        let dir = split_dir("[]", r#"{"task":"LaMP_7","golds":[{"id":"a"}]}"#);
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(
            matches!(&err, LampError::MissingKey { at: Location::Record(0), key: "output", path }
                if path.ends_with("dev_outputs.json")),
            "{err}"
        );
        let dir = split_dir("[]", r#"{"golds":[]}"#);
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(
            matches!(
                &err,
                LampError::MissingKey {
                    at: Location::Top,
                    key: "task",
                    ..
                }
            ),
            "{err}"
        );
        let dir = split_dir("[]", r#"{"task":"LaMP_9","golds":[]}"#);
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(matches!(&err, LampError::UnknownTask { .. }), "{err}");
        assert!(err.to_string().contains("LaMP_9"), "{err}");
    }

    #[test]
    fn golds_and_questions_must_pair_up() {
        let two = r#"[{"id":"a","input":"i","profile":[]},{"id":"b","input":"i","profile":[]}]"#;
        let dir = split_dir(
            two,
            r#"{"task":"LaMP_7","golds":[{"id":"a","output":"o"}]}"#,
        );
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(
            matches!(&err, LampError::NoGold { index: 1, id, .. } if id == "b"),
            "{err}"
        );
        assert!(err.to_string().contains("question `b` (record 1"), "{err}");

        let golds = r#"{"task":"LaMP_7","golds":[{"id":"a","output":"o"},{"id":"c","output":"o"},
                        {"id":"b","output":"o"},{"id":"d","output":"o"}]}"#;
        let dir = split_dir(two, golds);
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(
            matches!(&err, LampError::NoQuestion { index: 1, id, .. } if id == "c"),
            "{err}"
        );

        let dir = split_dir(
            two,
            r#"{"task":"LaMP_7","golds":[{"id":"a","output":"o"},{"id":"a","output":"p"}]}"#,
        );
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(
            matches!(
                &err,
                LampError::DuplicateId {
                    first: 0,
                    at: Location::Record(1),
                    ..
                }
            ),
            "{err}"
        );

        let dir = split_dir(
            r#"[{"id":"a","input":"i","profile":[]},{"id":"a","input":"j","profile":[]}]"#,
            r#"{"task":"LaMP_7","golds":[{"id":"a","output":"o"}]}"#,
        );
        let err = LampSet::load(dir.path(), "dev").unwrap_err();
        assert!(
            matches!(&err, LampError::DuplicateId { path, .. } if path.ends_with("dev_questions.json")),
            "{err}"
        );
    }

    /// The shared LaMP-2-like set (not in CI): its README gives 34 users and 74 questions for `dev`.
    #[test]
    #[ignore = "needs /work/shared/data/lamp2_like_ml10m_tags"]
    fn shared_lamp2_like_dev_split_counts() {
        let dir = Path::new("/work/shared/data/lamp2_like_ml10m_tags");
        if !dir.exists() {
            eprintln!("skipped: `{}` does not exist", dir.display());
            return;
        }
        let set = LampSet::load(dir, "dev").unwrap();
        assert_eq!(set.task, Task::LaMP2);
        assert_eq!(set.questions.len(), 74);
        assert_eq!(set.users().len(), 34);
        let labels = label_set(Task::LaMP2).unwrap();
        for q in &set.questions {
            assert!(
                labels.contains(&q.gold.as_str()),
                "gold `{}` of `{}` is not a LaMP-2 tag",
                q.gold,
                q.id
            );
            assert!(
                q.profile.len() >= 5,
                "question `{}` has {} profile items",
                q.id,
                q.profile.len()
            );
            assert!(
                q.profile
                    .iter()
                    .all(|p| matches!(p.body, ProfileBody::Movie { .. }))
            );
        }
    }
}
