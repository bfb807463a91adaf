//! `chameleon user`: add, list or forget users.

use std::io::Write;

use clap::{Args, Subcommand};

use super::Global;

/// Add, list or forget users.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user.
    Add {
        /// The user's name.
        name: String,
    },
    /// List users: one per line, the name, a tab, the number of history items.
    List {
        /// A JSON array instead: each user's name, history count, groups and creation time.
        #[arg(long)]
        json: bool,
    },
    /// Remove every row about a user (history, insights, pairs, profiles, group memberships, and the
    /// profiles of their groups), in one transaction, and say what was removed.
    Forget {
        /// The user's name.
        name: String,
    },
}

/// Run `chameleon user`.
///
/// # Errors
/// Store errors: an unknown or existing user, an invalid name, a database that cannot be opened.
pub fn run(args: UserArgs, global: &Global) -> anyhow::Result<()> {
    let store = global.open_store()?;
    match args.command {
        UserCommand::Add { name } => {
            store.create_user(&name)?;
            eprintln!("added user `{name}`");
        }
        UserCommand::List { json } => {
            let mut out = std::io::stdout().lock();
            let users = store.users()?;
            if json {
                let list: Vec<serde_json::Value> = users
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "name": s.user.name,
                            "history": s.history,
                            "groups": s.groups,
                            "created": s.user.created,
                        })
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut out, &list)?;
                writeln!(out)?;
            } else {
                for summary in users {
                    writeln!(out, "{}\t{}", summary.user.name, summary.history)?;
                }
            }
            out.flush()?;
        }
        UserCommand::Forget { name } => {
            let forgotten = store.forget_user(&name)?;
            eprintln!("{forgotten}");
        }
    }
    Ok(())
}
