//! The SQLite layer of [`Store`](super::Store): the `objects` table (every object's newest
//! state, read once on open) and the `log` table (every change, its revision the primary key),
//! in WAL mode with `synchronous=FULL`, a busy timeout and immediate transactions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use super::queue::Pending;
use super::{Change, ChangeKind, StorageError, parse};

/// The size the WAL file is given on open: what it holds before SQLite checkpoints it (its
/// default, 1,000 pages of 4 KiB) and a margin. SQLite then writes it over from the start, in
/// place: a sync of a file that grows must also write its inode (the new size), one more disk
/// write on every commit; a sync of a file written in place mostly need not.
pub const WAL_RESERVE_BYTES: u64 = 4_300_000;

/// The statement that forgets changes up to a revision, shared by [`Database::compact`] and
/// the compaction each batch does as it goes.
const COMPACT: &str = "DELETE FROM log WHERE revision <= ?1";

/// What a store holds when it is opened: its newest revision and every object's revision and
/// JSON, by key.
pub(super) type Loaded = (i64, BTreeMap<String, (i64, Arc<str>)>);

/// The database: one connection, used by the writer of a batch and by reads of the log.
#[derive(Debug)]
pub(super) struct Database {
    connection: Mutex<Connection>,
    /// Changes kept in the log (compacted in steps of a tenth of it).
    history: i64,
}

impl ChangeKind {
    fn code(self) -> i64 {
        match self {
            ChangeKind::Added => 0,
            ChangeKind::Modified => 1,
            ChangeKind::Deleted => 2,
        }
    }

    fn from_code(code: i64) -> ChangeKind {
        match code {
            0 => ChangeKind::Added,
            1 => ChangeKind::Modified,
            _ => ChangeKind::Deleted,
        }
    }
}

impl Database {
    /// Opens (or creates) the database in `path`, and reads what it holds.
    pub(super) fn open(path: &Path, history: i64) -> Result<(Database, Loaded), StorageError> {
        let connection = Connection::open(path)?;
        connection.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, revision INTEGER NOT NULL, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS log (revision INTEGER PRIMARY KEY, key TEXT NOT NULL, kind INTEGER NOT NULL, value TEXT NOT NULL);",
        )?;
        reserve_wal(&connection, path)?;
        let revision = current_revision(&connection)?;
        let mut objects = BTreeMap::new();
        {
            let mut statement = connection.prepare("SELECT key, revision, value FROM objects")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let key: String = row.get(0)?;
                let revision: i64 = row.get(1)?;
                let text: String = row.get(2)?;
                parse(&key, &text)?;
                objects.insert(key, (revision, text.into()));
            }
        }
        let database = Database {
            connection: Mutex::new(connection),
            history: history.max(10),
        };
        Ok((database, (revision, objects)))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StorageError> {
        self.connection.lock().map_err(|_| StorageError::Poisoned)
    }

    /// The oldest revision the log still holds (0 when it is empty).
    pub(super) fn oldest_revision(&self) -> Result<i64, StorageError> {
        Ok(self
            .lock()?
            .query_row("SELECT COALESCE(MIN(revision), 0) FROM log", [], |row| {
                row.get(0)
            })?)
    }

    /// Changes after `revision` under `prefix`, oldest first.
    pub(super) fn changes_since(
        &self,
        prefix: &str,
        revision: i64,
    ) -> Result<Vec<Change>, StorageError> {
        let connection = self.lock()?;
        let mut statement = connection.prepare_cached("SELECT revision, key, kind, value FROM log WHERE revision > ?1 AND key >= ?2 AND key < ?3 ORDER BY revision")?;
        let end = format!("{prefix}\u{10FFFF}");
        let rows = statement.query_map(params![revision, prefix, end], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut changes = Vec::new();
        for row in rows {
            let (revision, key, kind, text) = row?;
            changes.push(Change {
                revision,
                key,
                kind: ChangeKind::from_code(kind),
                text: text.into(),
            });
        }
        Ok(changes)
    }

    /// Forgets the changes up to `revision`.
    pub(super) fn compact(&self, revision: i64) -> Result<(), StorageError> {
        self.lock()?.execute(COMPACT, params![revision])?;
        Ok(())
    }

    /// Writes a batch of changes in one immediate transaction, committed (durable) on return;
    /// the log is compacted to the history kept as it goes.
    pub(super) fn write_batch(&self, batch: &[Pending]) -> Result<(), StorageError> {
        let mut connection = self.lock()?;
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut log = transaction.prepare_cached(
                "INSERT INTO log (revision, key, kind, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut upsert = transaction.prepare_cached(
                "INSERT INTO objects (key, revision, value) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET revision = ?2, value = ?3",
            )?;
            let mut remove = transaction.prepare_cached("DELETE FROM objects WHERE key = ?1")?;
            let mut compact = transaction.prepare_cached(COMPACT)?;
            for Pending { change, .. } in batch {
                let text: &str = &change.text;
                log.execute(params![
                    change.revision,
                    change.key,
                    change.kind.code(),
                    text
                ])?;
                match change.kind {
                    ChangeKind::Deleted => {
                        remove.execute(params![change.key])?;
                    }
                    ChangeKind::Added | ChangeKind::Modified => {
                        upsert.execute(params![change.key, change.revision, text])?;
                    }
                }
                if change.revision % (self.history / 10) == 0 {
                    compact.execute(params![change.revision - self.history])?;
                }
            }
        }
        Ok(transaction.commit()?)
    }
}

/// Grows the WAL file to [`WAL_RESERVE_BYTES`] unless it is that large already (SQLite removes
/// it when the store is closed): a blob that size is written and removed, and the WAL
/// checkpointed, so that the next commit starts it over. Its pages stay in the store's free
/// list, used again the next time.
fn reserve_wal(connection: &Connection, path: &Path) -> Result<(), StorageError> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if size >= WAL_RESERVE_BYTES {
        return Ok(());
    }
    connection.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS wal_reserve (filler BLOB);
         INSERT INTO wal_reserve VALUES (zeroblob({WAL_RESERVE_BYTES}));
         DELETE FROM wal_reserve;
         PRAGMA wal_checkpoint(PASSIVE);"
    ))?;
    Ok(())
}

fn current_revision(connection: &Connection) -> Result<i64, StorageError> {
    // Compaction never removes the newest change, so the log's highest revision is the
    // current one. Stores made before the log lost AUTOINCREMENT (an extra page written by
    // every commit) also have its sequence, which is never lower.
    let newest: i64 =
        connection.query_row("SELECT COALESCE(MAX(revision), 0) FROM log", [], |row| {
            row.get(0)
        })?;
    let has_sequence: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
        [],
        |row| row.get(0),
    )?;
    let sequence: Option<i64> = if has_sequence {
        connection
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'log'",
                [],
                |row| row.get(0),
            )
            .optional()?
    } else {
        None
    };
    Ok(newest.max(sequence.unwrap_or(0)))
}
