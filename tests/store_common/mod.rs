//! Helpers shared by the store tests: a raw view of the database file that does not go through the
//! store, so the tests check what is on disk rather than what the store reports.
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;

use rusqlite::types::ValueRef;

/// Every user table of the database, by name, from `sqlite_master`.
pub fn tables(conn: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// One cell as text (blobs as hex), for dumps and searches.
pub fn cell(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => format!("{:?}", r.to_bits()),
        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// Every row of every table, with column names, rows sorted: equal dumps mean equal contents.
pub fn rows(conn: &rusqlite::Connection, table: &str) -> Vec<Vec<(String, String)>> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
    let names: Vec<String> = stmt.column_names().map(String::from).collect();
    let mut rows = Vec::new();
    let mut q = stmt.query([]).unwrap();
    while let Some(row) = q.next().unwrap() {
        let row = (0..names.len())
            .map(|i| (names[i].clone(), cell(row.get_ref(i).unwrap())))
            .collect();
        rows.push(row);
    }
    rows.sort();
    rows
}

/// The whole database as text, schema version included.
pub fn dump(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let mut out = format!("user_version {version}\n");
    for table in tables(&conn) {
        out.push_str(&format!("table {table}\n"));
        for row in rows(&conn, &table) {
            out.push_str(&format!("  {row:?}\n"));
        }
    }
    out
}

/// Rows per table.
pub fn counts(path: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    tables(&conn)
        .into_iter()
        .map(|t| {
            let n = conn
                .query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
                .unwrap();
            (t, n)
        })
        .collect()
}

/// `PRAGMA integrity_check`'s answer.
pub fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Permission bits of a file or directory.
#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// [`dump`] of an encrypted database, opened with `key` (64 hex digits or a passphrase).
pub fn dump_keyed(path: &Path, key: &str) -> String {
    let copy = tempfile::tempdir().unwrap();
    let plain = copy.path().join("plain.db");
    let conn = rusqlite::Connection::open(path).unwrap();
    let key = if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("x'{key}'")
    } else {
        key.to_string()
    };
    conn.pragma_update(None, "key", &key).unwrap();
    // a plaintext copy made by SQLCipher itself, dumped as any other file
    conn.execute(
        "ATTACH DATABASE ?1 AS plain KEY ''",
        [plain.to_string_lossy()],
    )
    .unwrap();
    conn.query_row("SELECT sqlcipher_export('plain')", [], |_| Ok(()))
        .unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    conn.pragma_update(Some("plain"), "user_version", version)
        .unwrap();
    conn.execute("DETACH DATABASE plain", []).unwrap();
    drop(conn);
    dump(&plain)
}

/// Whether `needle` occurs in the bytes of the file at `path` (a missing file holds nothing).
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
}
