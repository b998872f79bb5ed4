//! The embedded API server's store: objects and their change log in SQLite, after kine (the
//! SQL store of k3s). One global, strictly increasing revision numbers every change and is the
//! objects' `resourceVersion`. A write is committed (WAL, `synchronous=FULL`) before it is
//! answered, and then broadcast to watchers.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::broadcast;

/// Changes kept for watches that resume from an older revision, by default.
pub const DEFAULT_HISTORY: i64 = 20_000;

/// The size the WAL file is given on open: what it holds before SQLite checkpoints it (its
/// default, 1,000 pages of 4 KiB) and a margin. SQLite then writes it over from the start, in
/// place: a sync of a file that grows must also write its inode (the new size), one more disk
/// write on every commit; a sync of a file written in place mostly need not.
const WAL_RESERVE_BYTES: u64 = 4_300_000;

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
    /// The batch this change was committed in failed (the error is logged once, by the
    /// writer that committed it).
    #[error("storage: commit failed: {0}")]
    Batch(String),
    /// The key is not in the state the write expected: another write came first.
    #[error("storage: {key} was changed by another write")]
    Precondition { key: String },
}

/// What a write expects of its key, checked against every change before it (committed or
/// queued), so that of two writers that read the same state only the first one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing is expected.
    None,
    /// The key holds no object (a create).
    Absent,
    /// The key holds the object at this revision (an update or delete of what was read).
    Revision(i64),
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
    /// The object after the change (before it, for a delete), as stored (JSON). Only text:
    /// the last changes are kept for watchers that lag, and decoded they would take ten times
    /// the memory.
    pub text: Arc<str>,
}

/// The store. Reads are answered from memory (the committed objects' JSON text, as stored);
/// writes go to SQLite, concurrent writers' changes committed together in one transaction (group commit),
/// each writer answered once its change is durable.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Only the writer of a batch (and reads of the log) use it.
    connection: Mutex<Connection>,
    /// What is committed, as readers see it.
    view: RwLock<View>,
    /// Changes waiting for their commit.
    queue: Mutex<Queue>,
    /// Signalled when a batch is done.
    flushed: Condvar,
    changes: broadcast::Sender<Change>,
    history: i64,
}

#[derive(Debug, Default)]
struct View {
    /// The newest committed revision.
    revision: i64,
    /// Every object's revision and JSON, by key. Text costs a tenth of the memory of decoded
    /// values, and lists copy it into answers as it is.
    objects: BTreeMap<String, (i64, Arc<str>)>,
}

#[derive(Debug)]
struct Queue {
    /// The revision the next change gets.
    next: i64,
    pending: Vec<Pending>,
    /// Whether a writer is committing a batch now.
    committing: bool,
    /// Keys with changes not yet visible to readers: the revision of the last change, and
    /// whether the object exists after it.
    unseen: HashMap<String, (i64, bool)>,
}

/// A change waiting for its commit; `outcome` is set when its batch is done.
#[derive(Debug)]
struct Pending {
    change: Change,
    outcome: Arc<OnceLock<Result<(), String>>>,
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
        let (changes, _) = broadcast::channel(16_384);
        Ok(Store {
            shared: Arc::new(Shared {
                connection: Mutex::new(connection),
                view: RwLock::new(View { revision, objects }),
                queue: Mutex::new(Queue {
                    next: revision + 1,
                    pending: Vec::new(),
                    committing: false,
                    unseen: HashMap::new(),
                }),
                flushed: Condvar::new(),
                changes,
                history: history.max(10),
            }),
        })
    }

    fn view(&self) -> Result<std::sync::RwLockReadGuard<'_, View>, StorageError> {
        self.shared.view.read().map_err(|_| StorageError::Poisoned)
    }

    /// The newest revision.
    pub fn current_revision(&self) -> Result<i64, StorageError> {
        Ok(self.view()?.revision)
    }

    /// The oldest revision a watch can resume from.
    pub fn oldest_revision(&self) -> Result<i64, StorageError> {
        let connection = self
            .shared
            .connection
            .lock()
            .map_err(|_| StorageError::Poisoned)?;
        Ok(
            connection.query_row("SELECT COALESCE(MIN(revision), 0) FROM log", [], |row| {
                row.get(0)
            })?,
        )
    }

    /// Whether an object is stored at `key` (nothing is decoded).
    pub fn contains(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.view()?.objects.contains_key(key))
    }

    /// One object.
    pub fn get(&self, key: &str) -> Result<Option<Value>, StorageError> {
        let text = self.view()?.objects.get(key).map(|(_, text)| text.clone());
        text.map(|text| parse(key, &text)).transpose()
    }

    /// Every object whose key starts with `prefix`, in key order, and the revision the list
    /// was read at.
    pub fn list(&self, prefix: &str) -> Result<(Vec<Value>, i64), StorageError> {
        let (texts, revision) = self.list_text(prefix)?;
        // Decoded outside the lock: writers wait only for the pointers to be taken.
        let objects = texts
            .iter()
            .map(|text| parse(prefix, text))
            .collect::<Result<_, _>>()?;
        Ok((objects, revision))
    }

    /// [`Store::list`] as the stored JSON text of each object.
    pub fn list_text(&self, prefix: &str) -> Result<(Vec<Arc<str>>, i64), StorageError> {
        let view = self.view()?;
        let texts = view
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, (_, text))| text.clone())
            .collect();
        Ok((texts, view.revision))
    }

    /// Applies one change, durable before it returns. `write` gets the revision the change
    /// will have and returns the object to store (with that revision as its resourceVersion);
    /// for a delete, the object as it was.
    ///
    /// Writers arriving while a batch is being committed queue their changes; the first of them
    /// commits the whole queue in one transaction when that batch is done. Revisions are given
    /// in queue order, batches are committed, made visible and broadcast in that order, so
    /// revisions grow strictly and watchers see changes in order.
    pub fn commit(
        &self,
        key: &str,
        kind: ChangeKind,
        precondition: Precondition,
        write: impl FnOnce(i64) -> Value,
    ) -> Result<Value, StorageError> {
        let outcome = Arc::new(OnceLock::new());
        let (object, alone) = {
            let mut queue = self.lock_queue()?;
            if precondition != Precondition::None {
                let current = match queue.unseen.get(key) {
                    Some(&(revision, exists)) => exists.then_some(revision),
                    None => self.view()?.objects.get(key).map(|&(revision, _)| revision),
                };
                let holds = match precondition {
                    Precondition::None => true,
                    Precondition::Absent => current.is_none(),
                    Precondition::Revision(expected) => current == Some(expected),
                };
                if !holds {
                    return Err(StorageError::Precondition {
                        key: key.to_owned(),
                    });
                }
            }
            let revision = queue.next;
            let object = write(revision);
            let text: Arc<str> = serde_json::to_string(&object)
                .map_err(|source| StorageError::Corrupt {
                    key: key.to_owned(),
                    source,
                })?
                .into();
            queue.next += 1;
            queue
                .unseen
                .insert(key.to_owned(), (revision, kind != ChangeKind::Deleted));
            queue.pending.push(Pending {
                change: Change {
                    revision,
                    key: key.to_owned(),
                    kind,
                    text,
                },
                outcome: outcome.clone(),
            });
            (object, queue.pending.len() == 1 && !queue.committing)
        };
        if alone {
            // Nobody else writing: committing here costs one disk sync, less than handing the
            // thread's other tasks over to another thread.
            self.wait_or_commit(&outcome)?;
        } else {
            // Waiting for other writers' commits must not stall the other requests served by
            // this thread.
            blocking(|| self.wait_or_commit(&outcome))?;
        }
        Ok(object)
    }

    /// Waits until every change queued for `key` is visible to reads, so that a writer that
    /// lost a race reads the state that won it.
    pub fn settle(&self, key: &str) -> Result<(), StorageError> {
        blocking(|| {
            let mut queue = self.lock_queue()?;
            while queue.unseen.contains_key(key) {
                queue = self
                    .shared
                    .flushed
                    .wait(queue)
                    .map_err(|_| StorageError::Poisoned)?;
            }
            Ok(())
        })
    }

    fn lock_queue(&self) -> Result<std::sync::MutexGuard<'_, Queue>, StorageError> {
        self.shared.queue.lock().map_err(|_| StorageError::Poisoned)
    }

    /// Waits until `outcome` is known, committing the queued batch when nobody else is.
    fn wait_or_commit(&self, outcome: &OnceLock<Result<(), String>>) -> Result<(), StorageError> {
        let mut queue = self.lock_queue()?;
        loop {
            if let Some(result) = outcome.get() {
                return result.clone().map_err(StorageError::Batch);
            }
            if !queue.committing {
                queue.committing = true;
                let batch = std::mem::take(&mut queue.pending);
                drop(queue);
                let result = self.commit_batch(&batch);
                for pending in &batch {
                    let _ = pending.outcome.set(result.clone());
                }
                queue = self.lock_queue()?;
                // The batch is visible now (or failed, and the view still shows what was
                // before): what later changes did stays.
                if let Some(last) = batch.last() {
                    let last = last.change.revision;
                    queue.unseen.retain(|_, (revision, _)| *revision > last);
                }
                queue.committing = false;
                self.shared.flushed.notify_all();
                continue;
            }
            queue = self
                .shared
                .flushed
                .wait(queue)
                .map_err(|_| StorageError::Poisoned)?;
        }
    }

    /// Commits `batch` in one transaction, then shows it to readers and watchers.
    fn commit_batch(&self, batch: &[Pending]) -> Result<(), String> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let mut connection = self
            .shared
            .connection
            .lock()
            .map_err(|_| StorageError::Poisoned.to_string())?;
        let written = write_batch(&mut connection, batch, self.shared.history);
        drop(connection);
        written.map_err(|error| {
            tracing::error!(%error, first = first.change.revision, last = last.change.revision, "storage: commit failed");
            error.to_string()
        })?;
        {
            let mut view = self
                .shared
                .view
                .write()
                .map_err(|_| StorageError::Poisoned.to_string())?;
            for Pending { change, .. } in batch {
                match change.kind {
                    ChangeKind::Deleted => {
                        view.objects.remove(&change.key);
                    }
                    ChangeKind::Added | ChangeKind::Modified => {
                        view.objects
                            .insert(change.key.clone(), (change.revision, change.text.clone()));
                    }
                }
            }
            view.revision = last.change.revision;
        }
        for Pending { change, .. } in batch {
            // Nobody listening is fine.
            let _ = self.shared.changes.send(change.clone());
        }
        Ok(())
    }

    /// Changes after `revision` under `prefix`, oldest first.
    pub fn changes_since(&self, prefix: &str, revision: i64) -> Result<Vec<Change>, StorageError> {
        let connection = self
            .shared
            .connection
            .lock()
            .map_err(|_| StorageError::Poisoned)?;
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

    /// Live changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }
}

/// Runs `f`, which may wait for the disk: on a multi-threaded Tokio runtime, the thread's other
/// tasks move to another thread meanwhile.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Writes a batch of changes in one immediate transaction, committed (durable) on return.
fn write_batch(
    connection: &mut Connection,
    batch: &[Pending],
    history: i64,
) -> Result<(), rusqlite::Error> {
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
        let mut compact = transaction.prepare_cached("DELETE FROM log WHERE revision <= ?1")?;
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
            if change.revision % (history / 10) == 0 {
                compact.execute(params![change.revision - history])?;
            }
        }
    }
    transaction.commit()
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

    /// Commits `{"rv": <its revision>}` at `key`, expecting nothing of it.
    fn record(store: &Store, key: &str, kind: ChangeKind) -> Value {
        store
            .commit(key, kind, Precondition::None, |rv| json!({"rv": rv}))
            .unwrap()
    }

    #[test]
    fn revisions_grow_across_writes_deletes_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path).unwrap();
        record(&store, "/a/default/x", ChangeKind::Added);
        record(&store, "/a/default/y", ChangeKind::Added);
        record(&store, "/a/default/x", ChangeKind::Deleted);
        assert_eq!(store.current_revision().unwrap(), 3);
        let (objects, revision) = store.list("/a/").unwrap();
        assert_eq!((objects, revision), (vec![json!({"rv": 2})], 3));
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.current_revision().unwrap(), 3);
        record(&store, "/a/default/z", ChangeKind::Added);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_are_committed_in_batches_in_revision_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path).unwrap();
        let mut live = store.subscribe();
        let writers: Vec<_> = (0..16)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut revisions = Vec::new();
                    for i in 0..25 {
                        let key = format!("/a/default/{writer}-{i}");
                        let object = record(&store, &key, ChangeKind::Added);
                        // Durable and visible before the answer.
                        assert_eq!(store.get(&key).unwrap(), Some(object.clone()));
                        revisions.push(object["rv"].as_i64().unwrap());
                    }
                    revisions
                })
            })
            .collect();
        let mut all = Vec::new();
        for writer in writers {
            let revisions = writer.await.unwrap();
            assert!(revisions.windows(2).all(|w| w[0] < w[1]));
            all.extend(revisions);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=400).collect::<Vec<i64>>());
        let broadcast: Vec<i64> = (0..400)
            .map(|_| live.try_recv().unwrap().revision)
            .collect();
        assert_eq!(broadcast, (1..=400).collect::<Vec<i64>>());
        assert_eq!(store.list("/a/").unwrap().0.len(), 400);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.current_revision().unwrap(), 400);
        assert_eq!(store.list("/a/").unwrap().0.len(), 400);
        assert_eq!(store.changes_since("/a/", 390).unwrap().len(), 10);
    }

    #[test]
    fn commits_write_the_wal_in_place_without_growing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let wal_size = || {
            std::fs::metadata(dir.path().join("store.db-wal"))
                .unwrap()
                .len()
        };
        let store = Store::open(&path).unwrap();
        let reserved = wal_size();
        assert!(reserved >= WAL_RESERVE_BYTES, "{reserved}");
        // More than SQLite's checkpoint interval of 1,000 pages, in changes of about 1 KiB.
        let text = "x".repeat(1000);
        for i in 0..1500 {
            store
                .commit(
                    &format!("/a/default/{i}"),
                    ChangeKind::Added,
                    Precondition::Absent,
                    |_| json!({"text": text}),
                )
                .unwrap();
        }
        assert_eq!(wal_size(), reserved);
        assert_eq!(store.list("/a/").unwrap().0.len(), 1500);
        drop(store);
        // Closed, the WAL is gone (SQLite checkpoints and removes it); open again, reserved again.
        let store = Store::open(&path).unwrap();
        assert!(wal_size() >= WAL_RESERVE_BYTES);
        assert_eq!(store.list("/a/").unwrap().0.len(), 1500);
    }

    #[test]
    fn a_prefix_does_not_match_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store
            .commit(
                "/lxdcontainers/default/a",
                ChangeKind::Added,
                Precondition::None,
                |_| json!(1),
            )
            .unwrap();
        store
            .commit(
                "/lxdcontainers/defaults/b",
                ChangeKind::Added,
                Precondition::None,
                |_| json!(2),
            )
            .unwrap();
        assert_eq!(store.list("/lxdcontainers/default/").unwrap().0, [json!(1)]);
    }

    #[test]
    fn of_two_writers_that_read_the_same_state_only_the_first_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let key = "/a/default/x";
        let created = store
            .commit(
                key,
                ChangeKind::Added,
                Precondition::Absent,
                |rv| json!({"metadata": {"resourceVersion": rv.to_string()}}),
            )
            .unwrap();
        let twice = store.commit(key, ChangeKind::Added, Precondition::Absent, |_| json!({}));
        assert!(matches!(twice, Err(StorageError::Precondition { .. })));
        let read: i64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let update =
            |value: i64| {
                store.commit(key, ChangeKind::Modified, Precondition::Revision(read), move |rv| {
                json!({"metadata": {"resourceVersion": rv.to_string()}, "value": value})
            })
            };
        update(1).unwrap();
        assert!(matches!(update(2), Err(StorageError::Precondition { .. })));
        assert_eq!(store.get(key).unwrap().unwrap()["value"], 1);
    }
}
