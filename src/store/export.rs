//! Everything stored about one user, as one JSON document, and back.
//!
//! The document ([`UserExport`]) holds the user, the groups they are in, their history (items in the
//! history file format, [`HistoryRecord`]), insights, pairs and their own profiles with every direction.
//! Vectors are JSON numbers written as the shortest decimal that reads back as the same `f32`, and read
//! back exactly, so a profile survives export and import bit for bit. Group profiles are the group's,
//! not the user's, and are not exported.

use std::fmt;

use rusqlite::{Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::group::group_or_create;
use super::history::insert_history;
use super::insight::{put_insight, put_pair};
use super::profile::insert_profile;
use super::user::{create_user, find_user, forget};
use super::{
    Forgotten, HistoryRecord, InputPlace, InputProblem, InsightKey, InsightKind, Owner, Pair,
    PairKey, Profile, Store, StoreError, TASK_GENERAL, check_name,
};

/// The `format` field of an export.
pub const EXPORT_FORMAT: &str = "chameleon-user";
/// The version of the export format this binary writes; it reads this and older ones.
pub const EXPORT_VERSION: u32 = 1;

/// Everything stored about one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserExport {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// [`EXPORT_VERSION`] when written by this binary.
    pub version: u32,
    /// The user.
    pub user: ExportedUser,
    /// Names of the groups the user is a member of.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The history, in order.
    #[serde(default)]
    pub history: Vec<HistoryRecord>,
    /// The insights.
    #[serde(default)]
    pub insights: Vec<ExportedInsight>,
    /// The pairs.
    #[serde(default)]
    pub pairs: Vec<ExportedPair>,
    /// The user's own profiles, with their directions.
    #[serde(default)]
    pub profiles: Vec<Profile>,
}

/// The user of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedUser {
    /// Name.
    pub name: String,
    /// When the user was added, seconds since the Unix epoch.
    pub created: i64,
}

/// An insight of an export, with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedInsight {
    /// The model that wrote it.
    pub fingerprint: String,
    /// Personal or neutral.
    pub kind: InsightKind,
    /// Version of the prompt template.
    pub prompt_version: u32,
    /// Hash of the history items the prompt showed.
    pub history_hash: String,
    /// The insight.
    pub text: String,
    /// When it was stored.
    pub created: i64,
}

/// A pair of an export, with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedPair {
    /// The model that wrote it.
    pub fingerprint: String,
    /// Version of the prompt templates.
    pub prompt_version: u32,
    /// Hash of the history items the prompts showed.
    pub history_hash: String,
    /// The query.
    pub query: String,
    /// The personalised answer.
    pub personal: String,
    /// The neutral answer.
    pub neutral: String,
    /// When it was stored.
    pub created: i64,
}

/// What [`Store::import_user`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The user's name.
    pub name: String,
    /// What was removed first, when an existing user was replaced.
    pub replaced: Option<Forgotten>,
    /// Counts written.
    pub history: usize,
    /// Insights written.
    pub insights: usize,
    /// Pairs written.
    pub pairs: usize,
    /// Profiles written.
    pub profiles: usize,
    /// Group memberships written.
    pub groups: usize,
}

impl fmt::Display for Imported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.replaced.is_some() {
            "replaced"
        } else {
            "imported"
        };
        write!(
            f,
            "{verb} user `{}`: {} into `history`, {} into `insights`, {} into `pairs`, {} into `profiles`, \
             {} into `group_members`",
            self.name, self.history, self.insights, self.pairs, self.profiles, self.groups
        )
    }
}

impl Store {
    /// Everything stored about a user, read in one transaction (a consistent snapshot).
    ///
    /// # Errors
    /// [`StoreError::UnknownUser`]; [`StoreError::CorruptProfile`].
    pub fn export_user(&self, name: &str) -> Result<UserExport, StoreError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?;
        let user =
            find_user(&tx, name)?.ok_or_else(|| StoreError::UnknownUser(name.to_string()))?;
        let groups = tx
            .prepare_cached(
                "SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id
                 WHERE m.user_id = ?1 ORDER BY g.name",
            )?
            .query_map([user.id], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let history = self
            .history(user.id)?
            .iter()
            .map(HistoryRecord::from)
            .collect();
        let insights = tx
            .prepare_cached(
                "SELECT fingerprint, kind, prompt_version, history_hash, text, created FROM insights
                 WHERE user_id = ?1 ORDER BY id",
            )?
            .query_map([user.id], |row| {
                Ok(ExportedInsight {
                    fingerprint: row.get(0)?,
                    kind: row.get(1)?,
                    prompt_version: row.get(2)?,
                    history_hash: row.get(3)?,
                    text: row.get(4)?,
                    created: row.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let pairs = tx
            .prepare_cached(
                "SELECT fingerprint, prompt_version, history_hash, query, personal, neutral, created FROM pairs
                 WHERE user_id = ?1 ORDER BY id",
            )?
            .query_map([user.id], |row| {
                Ok(ExportedPair {
                    fingerprint: row.get(0)?,
                    prompt_version: row.get(1)?,
                    history_hash: row.get(2)?,
                    query: row.get(3)?,
                    personal: row.get(4)?,
                    neutral: row.get(5)?,
                    created: row.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let profiles = self.profiles(&Owner::User(user.name.clone()))?;
        tx.commit()?;
        Ok(UserExport {
            format: EXPORT_FORMAT.to_string(),
            version: EXPORT_VERSION,
            user: ExportedUser {
                name: user.name,
                created: user.created,
            },
            groups,
            history,
            insights,
            pairs,
            profiles,
        })
    }

    /// Store an exported user, in one transaction: everything in it or nothing.
    ///
    /// The whole document is checked before anything is written. An existing user of the same name is
    /// refused unless `replace`, which first forgets them (as [`Store::forget_user`]). Groups the user
    /// was in are created when missing.
    ///
    /// # Errors
    /// [`StoreError::ImportWouldReplace`]; [`StoreError::BadInput`] for a bad history item or another
    /// format version; [`StoreError::InvalidName`]; [`StoreError::InvalidProfile`].
    pub fn import_user(&self, doc: &UserExport, replace: bool) -> Result<Imported, StoreError> {
        if doc.format != EXPORT_FORMAT || doc.version > EXPORT_VERSION {
            return Err(StoreError::BadInput {
                place: InputPlace::default(),
                problem: InputProblem::ExportVersion {
                    format: doc.format.clone(),
                    version: doc.version,
                    expected: EXPORT_VERSION,
                },
            });
        }
        let name = &doc.user.name;
        check_name("user", name)?;
        for group in &doc.groups {
            check_name("group", group)?;
        }
        let items: Vec<_> = doc
            .history
            .iter()
            .map(|r| r.clone().into_item(TASK_GENERAL))
            .collect();
        for (i, item) in items.iter().enumerate() {
            item.check().map_err(|problem| StoreError::BadInput {
                place: InputPlace {
                    section: Some("history".into()),
                    ..InputPlace::item(i + 1)
                },
                problem: InputProblem::Item(problem),
            })?;
        }
        let owner = Owner::User(name.clone());
        for profile in &doc.profiles {
            profile
                .check()
                .map_err(|problem| StoreError::InvalidProfile {
                    owner: owner.clone(),
                    problem,
                })?;
        }

        let tx = self.begin_write()?;
        let replaced = match find_user(&tx, name)? {
            Some(_) if !replace => return Err(StoreError::ImportWouldReplace(name.clone())),
            Some(old) => Some(forget(&tx, &old)?),
            None => None,
        };
        let user = create_user(&tx, name, doc.user.created)?;
        insert_history(&tx, user.id, &items)?;
        for group in &doc.groups {
            let group_id = group_or_create(&tx, group)?;
            tx.execute(
                "INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?1, ?2)",
                params![group_id, user.id],
            )?;
        }
        for i in &doc.insights {
            let key = InsightKey {
                user: user.id,
                fingerprint: i.fingerprint.clone(),
                kind: i.kind,
                prompt_version: i.prompt_version,
                history_hash: i.history_hash.clone(),
            };
            put_insight(&tx, &key, &i.text, i.created)?;
        }
        for p in &doc.pairs {
            let key = PairKey {
                user: user.id,
                fingerprint: p.fingerprint.clone(),
                prompt_version: p.prompt_version,
                history_hash: p.history_hash.clone(),
            };
            let pair = Pair {
                query: p.query.clone(),
                personal: p.personal.clone(),
                neutral: p.neutral.clone(),
            };
            put_pair(&tx, &key, &pair, p.created)?;
        }
        for profile in &doc.profiles {
            insert_profile(&tx, &owner, profile)?;
        }
        // what was written, counted where it was written: a file may repeat an insight, a pair or a
        // profile, and the repeat replaces the first
        let count = |table: &str, column: &str, id: i64| -> rusqlite::Result<usize> {
            tx.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?1"),
                [id],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| usize::try_from(n).unwrap_or(0))
        };
        let written = Imported {
            name: name.clone(),
            replaced: None,
            history: count("history", "user_id", user.id.get())?,
            insights: count("insights", "user_id", user.id.get())?,
            pairs: count("pairs", "user_id", user.id.get())?,
            profiles: count("profiles", "user_id", user.id.get())?,
            groups: count("group_members", "user_id", user.id.get())?,
        };
        tx.commit()?;
        if replaced.is_some() {
            let _ = self.truncate_wal();
        }
        Ok(Imported {
            replaced,
            ..written
        })
    }
}
