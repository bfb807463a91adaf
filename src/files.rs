//! Reading the files a user names: regular files only, opened without blocking, read up to a stated
//! limit.
//!
//! A path can name anything: a FIFO (whose `open` waits forever for a writer), a character device such
//! as `/dev/zero` (endless), a directory, or a symlink to any of them. Every file chameleon reads goes
//! through [`read_limited`] or [`check_regular`], so a wrong path is a one-line error, never a hang or
//! an exhausted memory.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most a history or export file may hold (a history of a million short items fits).
pub const MAX_HISTORY_BYTES: u64 = 256 << 20;
/// The most a LaMP data file may hold (LaMP's largest questions file is under 1 GiB).
pub const MAX_DATA_BYTES: u64 = 2 << 30;

/// Why a named file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Nothing at the path.
    #[error("`{path}` does not exist")]
    NotFound { path: PathBuf },
    /// A directory, FIFO, device or socket (after following symlinks).
    #[error("`{path}` is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    /// Larger than the limit for what it is read as.
    #[error("`{path}` is larger than {limit}, the limit for {what}")]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        limit: Size,
    },
    /// Opening or reading failed.
    #[error("cannot read `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// A `hint:` line for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            FileError::NotFound { .. } => Some("check the path".into()),
            FileError::NotRegular { .. } => Some(
                "name a regular file (write a pipe's or a device's contents to a file first)"
                    .into(),
            ),
            FileError::TooLarge { .. } => Some("split the file and import the parts".into()),
            FileError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some("check the file's permissions".into())
            }
            FileError::Io { .. } => None,
        }
    }
}

/// A byte count, printed in the largest binary unit that keeps it whole (`256 MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let units = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (unit, name) in units {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{} {name}", self.0 / unit);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

/// What a file that is not regular is, in words.
fn kind_of(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    "not a plain file"
}

fn io_error(path: &Path, source: std::io::Error) -> FileError {
    if source.kind() == std::io::ErrorKind::NotFound {
        FileError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        FileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The size of the regular file at `path` (symlinks followed), without opening it.
///
/// # Errors
/// [`FileError::NotFound`], [`FileError::NotRegular`] or [`FileError::Io`].
pub fn check_regular(path: &Path) -> Result<u64, FileError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    Ok(meta.len())
}

/// Open the regular file at `path` for reading. The open itself never blocks (on Unix it is
/// non-blocking, so a FIFO swapped in after a check cannot hang it), and what was opened is checked
/// again.
///
/// # Errors
/// As [`check_regular`].
pub fn open_regular(path: &Path) -> Result<(File, u64), FileError> {
    check_regular(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| io_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    Ok((file, meta.len()))
}

/// The bytes of the regular file at `path`, at most `limit` of them (`what` names the file's role in
/// the error). A file that grows while it is read is cut off at the limit and refused too.
///
/// # Errors
/// [`FileError::TooLarge`] over the limit; otherwise as [`check_regular`].
pub fn read_limited(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let too_large = || FileError::TooLarge {
        path: path.to_path_buf(),
        what,
        limit: Size(limit),
    };
    let (file, len) = open_regular(path)?;
    if len > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_whole_units() {
        assert_eq!(Size(256 << 20).to_string(), "256 MiB");
        assert_eq!(Size(2 << 30).to_string(), "2 GiB");
        assert_eq!(Size(1536).to_string(), "1536 bytes");
        assert_eq!(Size(3 << 10).to_string(), "3 KiB");
    }

    #[test]
    fn limits_and_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_limited(&f, 5, "a test").unwrap(), b"12345");
        let e = read_limited(&f, 4, "a test").unwrap_err();
        assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
        assert!(
            e.to_string().contains("4 bytes, the limit for a test"),
            "{e}"
        );
        let e = read_limited(dir.path(), 10, "a test").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = read_limited(&dir.path().join("missing"), 10, "a test").unwrap_err();
        assert!(matches!(e, FileError::NotFound { .. }), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_links_to_them_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("z.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read_limited(&link, 1 << 20, "a test").unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
    }
}
