//! `chameleon export` and `chameleon import`: everything stored about one user, as JSON.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::Global;
use crate::store::read_export_file;

/// Print everything stored about a user as JSON on stdout: the user, their groups, history, insights,
/// pairs and profiles with their vectors.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The user.
    #[arg(long, short, value_name = "NAME")]
    user: String,
}

/// Store a user from a file written by `chameleon export`, all of it or nothing.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file.
    file: PathBuf,
    /// Replace a stored user of the same name (everything stored about them is removed first).
    #[arg(long)]
    replace: bool,
}

/// Run `chameleon export`.
///
/// # Errors
/// An unknown user; a database that cannot be opened; a closed stdout.
pub fn run_export(args: ExportArgs, global: &Global) -> anyhow::Result<()> {
    let store = global.open_store()?;
    let doc = store.export_user(&args.user)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, &doc)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Run `chameleon import`.
///
/// # Errors
/// A file that is not a valid export (nothing is stored then); a user that exists without `--replace`.
pub fn run_import(args: ImportArgs, global: &Global) -> anyhow::Result<()> {
    let doc = read_export_file(&args.file)?;
    let store = global.open_store()?;
    let imported = store
        .import_user(&doc, args.replace)
        .map_err(|e| e.in_file(&args.file))?;
    if let Some(forgotten) = &imported.replaced {
        eprintln!("{forgotten}");
    }
    eprintln!("{imported}");
    Ok(())
}
