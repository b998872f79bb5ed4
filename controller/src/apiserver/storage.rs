//! The embedded API server's store: objects and their change log in SQLite, after kine (the
//! SQL store of k3s). One global, strictly increasing revision numbers every change and is the
//! objects' `resourceVersion`. A write is committed (WAL, `synchronous=FULL`) before it is
//! answered, and then broadcast to watchers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::broadcast;

/// Changes kept for watches that resume from an older revision, by default.
pub const DEFAULT_HISTORY: i64 = 20_000;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// SQLite failed.
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value is not JSON (never written by this server).
    #[error("storage: corrupt value at {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    /// The store's lock was poisoned by a panic elsewhere.
    #[error("storage lock poisoned")]
    Poisoned,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
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

    /// The watch event type.
    pub fn watch_type(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its revision.
    pub revision: i64,
    /// The object's key: `<resource prefix>/<namespace>/<name>`.
    pub key: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The object after the change (before it, for a delete).
    pub object: Arc<Value>,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
    changes: broadcast::Sender<Change>,
    history: i64,
}

impl Store {
    /// Opens (or creates) the store in `path`, keeping the default history.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        Self::open_with_history(path, DEFAULT_HISTORY)
    }

    /// Opens the store keeping the last `history` changes for watches (compacted in steps of a
    /// tenth of it).
    pub fn open_with_history(path: &Path, history: i64) -> Result<Store, StorageError> {
        let connection = Connection::open(path)?;
        connection.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, revision INTEGER NOT NULL, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS log (revision INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, kind INTEGER NOT NULL, value TEXT NOT NULL);",
        )?;
        let (changes, _) = broadcast::channel(16_384);
        Ok(Store {
            connection: Arc::new(Mutex::new(connection)),
            changes,
            history: history.max(10),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StorageError> {
        self.connection.lock().map_err(|_| StorageError::Poisoned)
    }

    /// The newest revision.
    pub fn current_revision(&self) -> Result<i64, StorageError> {
        let connection = self.lock()?;
        current_revision(&connection)
    }

    /// The oldest revision a watch can resume from.
    pub fn oldest_revision(&self) -> Result<i64, StorageError> {
        let connection = self.lock()?;
        Ok(
            connection.query_row("SELECT COALESCE(MIN(revision), 0) FROM log", [], |row| {
                row.get(0)
            })?,
        )
    }

    /// One object.
    pub fn get(&self, key: &str) -> Result<Option<Value>, StorageError> {
        let connection = self.lock()?;
        let text: Option<String> = connection
            .query_row(
                "SELECT value FROM objects WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?;
        text.map(|text| parse(key, &text)).transpose()
    }

    /// Every object whose key starts with `prefix`, in key order, and the revision the list
    /// was read at.
    pub fn list(&self, prefix: &str) -> Result<(Vec<Value>, i64), StorageError> {
        let connection = self.lock()?;
        let revision = current_revision(&connection)?;
        let mut statement = connection.prepare_cached(
            "SELECT key, value FROM objects WHERE key >= ?1 AND key < ?2 ORDER BY key",
        )?;
        let end = format!("{prefix}\u{10FFFF}");
        let rows = statement.query_map(params![prefix, end], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut objects = Vec::new();
        for row in rows {
            let (key, text) = row?;
            objects.push(parse(&key, &text)?);
        }
        Ok((objects, revision))
    }

    /// Applies one change, committed before it returns. `write` gets the revision the change
    /// will have and returns the object to store (with that revision as its resourceVersion);
    /// for a delete, the object as it was.
    pub fn commit(
        &self,
        key: &str,
        kind: ChangeKind,
        write: impl FnOnce(i64) -> Value,
    ) -> Result<Value, StorageError> {
        let mut connection = self.lock()?;
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let revision = current_revision(&transaction)? + 1;
        let object = write(revision);
        let text = object.to_string();
        transaction.execute(
            "INSERT INTO log (revision, key, kind, value) VALUES (?1, ?2, ?3, ?4)",
            params![revision, key, kind.code(), text],
        )?;
        match kind {
            ChangeKind::Deleted => {
                transaction.execute("DELETE FROM objects WHERE key = ?1", params![key])?;
            }
            ChangeKind::Added | ChangeKind::Modified => {
                transaction.execute(
                    "INSERT INTO objects (key, revision, value) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET revision = ?2, value = ?3",
                    params![key, revision, text],
                )?;
            }
        }
        if revision % (self.history / 10) == 0 {
            transaction.execute(
                "DELETE FROM log WHERE revision <= ?1",
                params![revision - self.history],
            )?;
        }
        transaction.commit()?;
        let object = Arc::new(object);
        // Nobody listening is fine.
        let _ = self.changes.send(Change {
            revision,
            key: key.to_owned(),
            kind,
            object: object.clone(),
        });
        Ok(Arc::unwrap_or_clone(object))
    }

    /// Changes after `revision` under `prefix`, oldest first.
    pub fn changes_since(&self, prefix: &str, revision: i64) -> Result<Vec<Change>, StorageError> {
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
            let object = Arc::new(parse(&key, &text)?);
            changes.push(Change {
                revision,
                key,
                kind: ChangeKind::from_code(kind),
                object,
            });
        }
        Ok(changes)
    }

    /// Live changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

fn current_revision(connection: &Connection) -> Result<i64, StorageError> {
    // The log's autoincrement sequence survives compaction and restarts.
    let sequence: Option<i64> = connection
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'log'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(sequence.unwrap_or(0))
}

fn parse(key: &str, text: &str) -> Result<Value, StorageError> {
    serde_json::from_str(text).map_err(|source| StorageError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn revisions_grow_across_writes_deletes_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path).unwrap();
        store
            .commit("/a/default/x", ChangeKind::Added, |rv| json!({"rv": rv}))
            .unwrap();
        store
            .commit("/a/default/y", ChangeKind::Added, |rv| json!({"rv": rv}))
            .unwrap();
        store
            .commit("/a/default/x", ChangeKind::Deleted, |rv| json!({"rv": rv}))
            .unwrap();
        assert_eq!(store.current_revision().unwrap(), 3);
        let (objects, revision) = store.list("/a/").unwrap();
        assert_eq!((objects, revision), (vec![json!({"rv": 2})], 3));
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.current_revision().unwrap(), 3);
        store
            .commit("/a/default/z", ChangeKind::Added, |rv| json!({"rv": rv}))
            .unwrap();
        assert_eq!(store.current_revision().unwrap(), 4);
        let kinds: Vec<ChangeKind> = store
            .changes_since("/a/", 1)
            .unwrap()
            .iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(
            kinds,
            [ChangeKind::Added, ChangeKind::Deleted, ChangeKind::Added]
        );
    }

    #[test]
    fn a_prefix_does_not_match_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store
            .commit("/lxdcontainers/default/a", ChangeKind::Added, |_| json!(1))
            .unwrap();
        store
            .commit("/lxdcontainers/defaults/b", ChangeKind::Added, |_| json!(2))
            .unwrap();
        assert_eq!(store.list("/lxdcontainers/default/").unwrap().0, [json!(1)]);
    }
}
