//! The stores' base: a real SQLite file (rusqlite, bundled) in WAL mode that syncs every commit
//! (`synchronous=FULL`), so a commit survives a process crash and a power loss; made readable by
//! its owner only; failing as busy when the simulation's disk is (`probes::disk_busy`). An
//! application keeps its own schema and statements on a [`Db`].
//!
//! ```
//! use framework::store::Db;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = Db::open(&dir.path().join("counts.db"), false, "CREATE TABLE IF NOT EXISTS n (k TEXT PRIMARY KEY, v INTEGER);").unwrap();
//! db.with(|c| c.execute("INSERT INTO n VALUES ('a', 1)", [])).unwrap();
//! let v: i64 = db.with(|c| c.query_row("SELECT v FROM n WHERE k = 'a'", [], |r| r.get(0))).unwrap();
//! assert_eq!(v, 1);
//! ```

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use crate::mutants::{self, Mutant};

pub use rusqlite;

/// A state store failure.
#[derive(Debug, thiserror::Error)]
#[error("state store {path}")]
pub struct StoreError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

impl StoreError {
    /// A failure of the store at `path`.
    pub fn new(path: &str, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: path.to_owned(),
            source,
        }
    }

    /// Whether another connection holds a lock (worth retrying).
    pub fn is_busy(&self) -> bool {
        matches!(
            self.source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// One SQLite connection behind a mutex; statements are short, so tasks take turns.
pub struct Db {
    path: String,
    conn: Mutex<Connection>,
}

/// Makes `dir` (and its parents) if missing, readable by its owner only (0700): the SQLite files
/// in it are the installation's. A directory that exists already is left as it is (it may be the
/// user's own, shared on purpose), with a warning if others can enter it; the files themselves
/// are 0600 either way.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "the data directory is open to others; its files are not, but consider chmod 700");
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Creates the database file (0600) before SQLite does (which would make it as the umask says);
/// SQLite gives its `-wal` and `-shm` files the same permissions.
#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_file(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

impl Db {
    /// Opens (or makes, 0600) the database at `path` and runs `schema` on it (statements that
    /// make what is missing); `read_only` opens an existing one for reading alone.
    pub fn open(path: &Path, read_only: bool, schema: &str) -> Result<Db, StoreError> {
        let name = path.display().to_string();
        let err = |source| StoreError::new(&name, source);
        if !read_only {
            private_file(path).map_err(|e| {
                err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot create the file: {e}")),
                ))
            })?;
        }
        let conn = if read_only {
            Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        } else {
            Connection::open(path)
        }
        .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        if !read_only {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
            // FULL: every commit is synced before it returns. Under NORMAL, in WAL mode, the last
            // commits may roll back on a power loss, after what they allowed happened (offsets
            // committed, a reader shown the state): the simulation's power loss shows it.
            let synchronous = if mutants::on(Mutant::StoreSyncNormal) {
                "NORMAL"
            } else {
                "FULL"
            };
            conn.pragma_update(None, "synchronous", synchronous)
                .map_err(err)?;
            conn.execute_batch(schema).map_err(err)?;
            let synchronous: i64 = conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .map_err(err)?;
            crate::probes::store_opened(path, synchronous);
        }
        Ok(Db {
            path: name,
            conn: Mutex::new(conn),
        })
    }

    /// Where the database is.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Runs `f` on the connection (the simulation's busy disk fails it first, as a lock held
    /// elsewhere would).
    pub fn with<R>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
        if crate::probes::disk_busy() {
            return Err(StoreError::new(
                &self.path,
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("database is locked (the simulation's busy disk)".into()),
                ),
            ));
        }
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| StoreError::new(&self.path, source))
    }
}

impl Db {
    /// Replaces every row of `tables` with those of the same tables of the database at `other`
    /// (a view folded aside), in one transaction: a reader sees the rows before or the rows
    /// after, never some of each.
    pub fn replace_tables_from(&self, other: &Path, tables: &[&str]) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute("ATTACH DATABASE ?1 AS other", [other.to_string_lossy()])?;
            let copied = (|| {
                let tx = conn.transaction()?;
                for table in tables {
                    tx.execute(&format!("DELETE FROM main.{table}"), [])?;
                    tx.execute(
                        &format!("INSERT INTO main.{table} SELECT * FROM other.{table}"),
                        [],
                    )?;
                }
                tx.commit()
            })();
            conn.execute("DETACH DATABASE other", [])?;
            copied
        })
    }
}

/// Removes a SQLite database and its `-wal` and `-shm` files, as far as they exist.
pub fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut f = path.as_os_str().to_owned();
        f.push(suffix);
        let _ = std::fs::remove_file(f);
    }
}
