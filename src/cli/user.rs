//! `chameleon user`: add, list or forget users.

use std::io::Write;

use clap::{Args, Subcommand};

use super::Global;
use crate::store::Store;

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
    List,
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
    let store = Store::open(&global.db_path())?;
    match args.command {
        UserCommand::Add { name } => {
            store.create_user(&name)?;
            eprintln!("added user `{name}`");
        }
        UserCommand::List => {
            let mut out = std::io::stdout().lock();
            for summary in store.users()? {
                writeln!(out, "{}\t{}", summary.user.name, summary.history)?;
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
