//! `chameleon history`: add one item, import a file, list a user's history.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Global;
use crate::store::{
    HistoryRecord, InputPlace, InputProblem, NewItem, ReadOptions, StoreError, TASK_GENERAL,
    read_history_file,
};

/// Add, import or list a user's history.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    command: HistoryCommand,
}

#[derive(Debug, Subcommand)]
enum HistoryCommand {
    /// Add one item to a user's history.
    Add {
        /// The user.
        #[arg(long, short, value_name = "NAME")]
        user: String,
        /// What the user was given (may be empty).
        #[arg(long, value_name = "TEXT")]
        input: String,
        /// What the user answered.
        #[arg(long, value_name = "TEXT")]
        output: String,
        /// Task kind.
        #[arg(long, value_name = "KIND", default_value = TASK_GENERAL)]
        task: String,
    },
    /// Import a history file: a JSON array or JSON lines of `{input, output, [task], [time], [id]}`
    /// items, or a LaMP `*_questions.json` file with `--lamp-user-id`. All items or none are stored;
    /// `input` and `output` are limited to 64 KiB each.
    Import {
        /// The user.
        #[arg(long, short, value_name = "NAME")]
        user: String,
        /// The file.
        file: PathBuf,
        /// Take the profile of this LaMP `user_id` from a LaMP questions file.
        #[arg(long, value_name = "ID")]
        lamp_user_id: Option<String>,
        /// Task kind of items that name none [default: `general`]; LaMP items get their task's kind.
        #[arg(long, value_name = "KIND")]
        task: Option<String>,
    },
    /// Print a user's history as JSON lines (oldest first), in the format `history import` reads.
    List {
        /// The user.
        #[arg(long, short, value_name = "NAME")]
        user: String,
    },
}

/// Run `chameleon history`.
///
/// # Errors
/// Store errors: an unknown user, a bad item or file (nothing is stored then), a database that cannot
/// be opened.
pub fn run(args: HistoryArgs, global: &Global) -> anyhow::Result<()> {
    match args.command {
        HistoryCommand::Add {
            user,
            input,
            output,
            task,
        } => {
            let store = global.open_store()?;
            let user = store.require_user(&user)?;
            let item = NewItem {
                task,
                input,
                output,
                time: None,
                source_id: None,
            };
            item.check().map_err(|problem| StoreError::BadInput {
                place: InputPlace {
                    section: Some("the new item".into()),
                    ..InputPlace::default()
                },
                problem: InputProblem::Item(problem),
            })?;
            store.add_history(user.id, &[item])?;
            eprintln!("added 1 item to the history of `{}`", user.name);
        }
        HistoryCommand::Import {
            user,
            file,
            lamp_user_id,
            task,
        } => {
            let store = global.open_store()?;
            // the user first: a misspelt name should not wait for a large file to be read
            let user = store.require_user(&user)?;
            let items = read_history_file(&file, &ReadOptions { lamp_user_id, task })?;
            let n = store.add_history(user.id, &items)?;
            eprintln!(
                "imported {n} items from `{}` into the history of `{}`",
                file.display(),
                user.name
            );
        }
        HistoryCommand::List { user } => {
            let store = global.open_store()?;
            let user = store.require_user(&user)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for item in store.history(user.id)? {
                serde_json::to_writer(&mut out, &HistoryRecord::from(&item))?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
