//! `chameleon group`: groups of users, pooled into one profile by the personalize stage.

use std::io::Write;

use clap::{Args, Subcommand};

use super::Global;

/// Add users to groups, remove them, list groups.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Add users to a group, creating the group if needed.
    Add {
        /// The group.
        group: String,
        /// The users.
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
    },
    /// List groups: one per line, the name, a tab, the members separated by spaces.
    List,
    /// Remove users from a group (the group stays).
    Remove {
        /// The group.
        group: String,
        /// The users.
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
    },
    /// Delete a group, its memberships and its profiles (the users stay).
    Delete {
        /// The group.
        group: String,
    },
}

/// Run `chameleon group`.
///
/// # Errors
/// Store errors: an unknown user or group, an invalid name, a database that cannot be opened.
pub fn run(args: GroupArgs, global: &Global) -> anyhow::Result<()> {
    let store = global.open_store()?;
    match args.command {
        GroupCommand::Add { group, users } => {
            let added = store.add_to_group(&group, &users)?;
            let n = users.len();
            eprintln!(
                "added {added} of {n} {} to group `{group}`",
                plural(n, "user")
            );
        }
        GroupCommand::List => {
            let mut out = std::io::stdout().lock();
            for group in store.groups()? {
                writeln!(out, "{}\t{}", group.name, group.members.join(" "))?;
            }
            out.flush()?;
        }
        GroupCommand::Remove { group, users } => {
            let removed = store.remove_from_group(&group, &users)?;
            let n = users.len();
            eprintln!(
                "removed {removed} of {n} {} from group `{group}`",
                plural(n, "user")
            );
        }
        GroupCommand::Delete { group } => {
            let members = store.delete_group(&group)?;
            let noun = plural(members, "membership");
            eprintln!("deleted group `{group}`, its {members} {noun} and its profiles");
        }
    }
    Ok(())
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        noun.to_string()
    } else {
        format!("{noun}s")
    }
}
