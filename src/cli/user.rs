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
    /// What is stored about a user, in words: their history, what the model concluded about them
    /// (the insights), and each profile with how it was chosen.
    Show {
        /// The user's name.
        name: String,
        /// As JSON instead.
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
        UserCommand::Show { name, json } => show(&store, &name, json)?,
        UserCommand::Forget { name } => {
            let forgotten = store.forget_user(&name)?;
            eprintln!("{forgotten}");
        }
    }
    Ok(())
}

/// `chameleon user show`: the newest insights per model and kind, and each profile with its route,
/// layers and (for `--route auto`) its way of answering and every candidate's held-out score.
fn show(store: &crate::store::Store, name: &str, json: bool) -> anyhow::Result<()> {
    use crate::store::InsightKind;
    let export = store.export_user(name)?;
    // the newest insight of each model and kind
    let mut insights: Vec<&crate::store::ExportedInsight> = Vec::new();
    for i in &export.insights {
        match insights
            .iter_mut()
            .find(|k| k.fingerprint == i.fingerprint && k.kind == i.kind)
        {
            Some(k) if k.created < i.created => *k = i,
            Some(_) => {}
            None => insights.push(i),
        }
    }
    insights.sort_by_key(|i| {
        (
            i.kind != InsightKind::Personal,
            std::cmp::Reverse(i.created),
        )
    });
    let profiles: Vec<serde_json::Value> = export
        .profiles
        .iter()
        .map(|p| {
            serde_json::json!({
                "model": p.model.fingerprint,
                "created": p.created,
                "route": p.params.pointer("/fit/route"),
                "edited_layers": p.selected_layers,
                "policy": crate::personalize::profile_policy(p),
            })
        })
        .collect();
    if json {
        let value = serde_json::json!({
            "name": export.user.name,
            "created": export.user.created,
            "groups": export.groups,
            "history": export.history.len(),
            "insights": insights,
            "profiles": profiles,
        });
        outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let groups = if export.groups.is_empty() {
        String::new()
    } else {
        format!(", in groups {}", export.groups.join(", "))
    };
    outln!(
        "user `{name}`: {} history items{groups}",
        export.history.len()
    )?;
    if insights.is_empty() {
        outln!("no insights yet: `chameleon fit --user {name}` writes them")?;
    }
    for i in &insights {
        let what = match i.kind {
            InsightKind::Personal => "what the model concluded about them",
            InsightKind::Neutral => "what it would answer anyone",
        };
        outln!("\n{what} (model {}):", short(&i.fingerprint))?;
        for line in i.text.lines().filter(|l| !l.trim().is_empty()) {
            outln!("  {}", line.trim())?;
        }
    }
    if export.profiles.is_empty() {
        outln!("\nno profile yet: `chameleon fit --user {name}`")?;
    }
    for (p, v) in export.profiles.iter().zip(&profiles) {
        let route = v["route"].as_str().unwrap_or("paper");
        let policy = crate::personalize::profile_policy(p);
        let edits = match &policy {
            Some(policy) if policy.way.gamma().is_none() => "its way edits no layer".to_string(),
            _ => format!("editing layers {:?}", p.selected_layers),
        };
        outln!(
            "\nprofile for model {} (route `{route}`), {edits}",
            short(&p.model.fingerprint)
        )?;
        if let Some(policy) = policy {
            super::fit::print_policy(&policy)?;
        }
    }
    Ok(())
}

/// The first 12 characters of a model fingerprint.
fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}
