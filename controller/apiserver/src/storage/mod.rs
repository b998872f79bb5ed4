//! The embedded API server's store, after kine (the SQL store of k3s): the log of changes is
//! the interface. One global, strictly increasing revision numbers every change and is the
//! objects' `resourceVersion`. Handlers see only the [`Storage`] trait, so that another backend
//! can be added without touching them; [`Store`] is the SQLite one, in three layers:
//! - [`sqlite`]: the tables (the objects and the log), durable commits, the log read back;
//! - [`queue`]: group commit, concurrent writers' changes committed in one transaction;
//! - [`view`]: what is committed, in memory, as readers see it.
//!
//! A write is committed (WAL, `synchronous=FULL`) before it is answered, and then broadcast to
//! watchers.

pub mod queue;
pub mod sqlite;
pub mod view;

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use queue::{Pending, Queue};
use sqlite::Database;
use view::View;

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
    /// Code the store ran for a write panicked (a bug); the write is refused and the store
    /// goes on serving.
    #[error("storage: a bug while {during}: {message}")]
    Panicked {
        during: &'static str,
        message: String,
    },
    /// The batch this change was committed in failed (the error is logged once, by the
    /// writer that committed it); every writer of the batch shares it.
    #[error("storage: commit failed: {0}")]
    Batch(#[source] Arc<StorageError>),
    /// The key is not in the state the write expected: another write came first.
    #[error("storage: {key} was changed by another write")]
    Precondition { key: String },
    /// The changes after `revision` are no longer all kept: the oldest kept is `oldest`.
    #[error("storage: changes after {revision} are compacted (the oldest kept is {oldest})")]
    Compacted { revision: i64, oldest: i64 },
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

/// Which resourceVersion a deleted object's last state carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletedVersion {
    /// The one it was read at (a delete of what was read).
    AsRead,
    /// The delete's own revision (a write that ended its life: its last finalizer removed).
    OfDelete,
}

/// The store as handlers use it, in kine's shape: reads of the newest revision, writes at a
/// revision, the log from a revision, compaction. Every write sets the object's
/// `metadata.resourceVersion` to its change's revision (a delete as [`DeletedVersion`] says),
/// is durable before it returns, and returns the object as stored.
pub trait Storage: std::fmt::Debug + Send + Sync {
    /// The newest revision.
    fn current_revision(&self) -> Result<i64, StorageError>;

    /// The object at `key`.
    fn get(&self, key: &str) -> Result<Option<Value>, StorageError>;

    /// Whether an object is stored at `key` (nothing is decoded).
    fn contains(&self, key: &str) -> Result<bool, StorageError>;

    /// The stored JSON text of every object whose key starts with `prefix`, in key order, and
    /// the revision the list was read at (the newest).
    fn list_text(&self, prefix: &str) -> Result<(Vec<Arc<str>>, i64), StorageError>;

    /// [`Storage::list_text`] decoded.
    fn list(&self, prefix: &str) -> Result<(Vec<Value>, i64), StorageError> {
        let (texts, revision) = self.list_text(prefix)?;
        // Decoded outside the lock: writers wait only for the pointers to be taken.
        let objects = texts
            .iter()
            .map(|text| parse(prefix, text))
            .collect::<Result<_, _>>()?;
        Ok((objects, revision))
    }

    /// Stores a new object at `key`; [`StorageError::Precondition`] when one is there.
    fn create(&self, key: &str, object: Value) -> Result<Value, StorageError>;

    /// Replaces the object at `key`, which must be at `revision`.
    fn update(&self, key: &str, revision: i64, object: Value) -> Result<Value, StorageError>;

    /// Removes the object at `key`, which must be at `revision`; `last` is its last state, as
    /// watchers see it.
    fn delete(
        &self,
        key: &str,
        revision: i64,
        last: Value,
        version: DeletedVersion,
    ) -> Result<Value, StorageError>;

    /// Changes after `revision` under `prefix`, oldest first; [`StorageError::Compacted`] when
    /// some of them are no longer kept. With [`Storage::subscribe`] first, a watch from a
    /// revision misses nothing.
    fn changes_since(&self, prefix: &str, revision: i64) -> Result<Vec<Change>, StorageError>;

    /// Live changes from now on.
    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// Forgets the changes up to `revision` (the store also compacts as it writes, keeping its
    /// history).
    fn compact(&self, revision: i64) -> Result<(), StorageError>;

    /// Waits until every write under way to `key` is visible to reads, so that a writer that
    /// lost a race reads the state that won it.
    fn settle(&self, key: &str) -> Result<(), StorageError>;
}

/// The SQLite store. Reads are answered from memory (the committed objects' JSON text, as
/// stored); writes go to SQLite, concurrent writers' changes committed together in one
/// transaction (group commit), each writer answered once its change is durable.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    database: Database,
    view: View,
    queue: Queue,
    changes: broadcast::Sender<Change>,
}

impl Store {
    /// Opens (or creates) the store in `path`, keeping the default history.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        Self::open_with_history(path, DEFAULT_HISTORY)
    }

    /// Opens the store keeping the last `history` changes for watches (compacted in steps of a
    /// tenth of it).
    pub fn open_with_history(path: &Path, history: i64) -> Result<Store, StorageError> {
        let (database, loaded) = Database::open(path, history)?;
        let queue = Queue::new(loaded.0);
        let (changes, _) = broadcast::channel(16_384);
        Ok(Store {
            shared: Arc::new(Shared {
                database,
                view: View::new(loaded),
                queue,
                changes,
            }),
        })
    }

    /// The oldest revision a watch can resume from.
    pub fn oldest_revision(&self) -> Result<i64, StorageError> {
        self.shared.database.oldest_revision()
    }

    /// Applies one change, durable before it returns. `write` gets the revision the change
    /// will have and returns the object to store; for a delete, the object as it was.
    pub fn commit(
        &self,
        key: &str,
        kind: ChangeKind,
        precondition: Precondition,
        write: impl FnOnce(i64) -> Value,
    ) -> Result<Value, StorageError> {
        let shared = &self.shared;
        let (object, ticket) = shared.queue.enqueue(
            key,
            kind,
            precondition,
            |key| shared.view.revision_of(key),
            write,
        )?;
        shared
            .queue
            .wait(&ticket, |batch| self.commit_batch(batch))?;
        Ok(object)
    }

    /// [`Store::commit`] of `object` with the change's revision as its resourceVersion.
    fn commit_versioned(
        &self,
        key: &str,
        kind: ChangeKind,
        precondition: Precondition,
        mut object: Value,
    ) -> Result<Value, StorageError> {
        self.commit(key, kind, precondition, |revision| {
            object["metadata"]["resourceVersion"] = json!(revision.to_string());
            object
        })
    }

    /// Commits `batch` in one transaction, then shows it to readers and watchers.
    fn commit_batch(&self, batch: &[Pending]) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        self.shared.database.write_batch(batch).inspect_err(|error| {
            tracing::error!(%error, first = first.change.revision, last = last.change.revision, "storage: commit failed");
        })?;
        self.shared.view.apply(batch)?;
        for Pending { change, .. } in batch {
            // Nobody listening is fine.
            let _ = self.shared.changes.send(change.clone());
        }
        Ok(())
    }
}

impl Storage for Store {
    fn current_revision(&self) -> Result<i64, StorageError> {
        self.shared.view.revision()
    }

    fn get(&self, key: &str) -> Result<Option<Value>, StorageError> {
        let text = self.shared.view.text(key)?;
        text.map(|text| parse(key, &text)).transpose()
    }

    fn contains(&self, key: &str) -> Result<bool, StorageError> {
        self.shared.view.contains(key)
    }

    fn list_text(&self, prefix: &str) -> Result<(Vec<Arc<str>>, i64), StorageError> {
        self.shared.view.list_text(prefix)
    }

    fn create(&self, key: &str, object: Value) -> Result<Value, StorageError> {
        self.commit_versioned(key, ChangeKind::Added, Precondition::Absent, object)
    }

    fn update(&self, key: &str, revision: i64, object: Value) -> Result<Value, StorageError> {
        let at = Precondition::Revision(revision);
        self.commit_versioned(key, ChangeKind::Modified, at, object)
    }

    fn delete(
        &self,
        key: &str,
        revision: i64,
        last: Value,
        version: DeletedVersion,
    ) -> Result<Value, StorageError> {
        let at = Precondition::Revision(revision);
        match version {
            DeletedVersion::AsRead => self.commit(key, ChangeKind::Deleted, at, |_| last),
            DeletedVersion::OfDelete => self.commit_versioned(key, ChangeKind::Deleted, at, last),
        }
    }

    fn changes_since(&self, prefix: &str, revision: i64) -> Result<Vec<Change>, StorageError> {
        let oldest = self.oldest_revision()?;
        if revision < oldest.saturating_sub(1) && revision < self.current_revision()? {
            return Err(StorageError::Compacted { revision, oldest });
        }
        self.shared.database.changes_since(prefix, revision)
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    fn compact(&self, revision: i64) -> Result<(), StorageError> {
        self.shared.database.compact(revision)
    }

    fn settle(&self, key: &str) -> Result<(), StorageError> {
        self.shared.queue.settle(key)
    }
}

/// Decodes the stored JSON text at `key`.
fn parse(key: &str, text: &str) -> Result<Value, StorageError> {
    serde_json::from_str(text).map_err(|source| StorageError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::sqlite::WAL_RESERVE_BYTES;
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

    #[test]
    fn a_watch_from_a_compacted_revision_is_refused_and_a_kept_one_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        for name in ["a", "b", "c", "d"] {
            store
                .create(&format!("/a/default/{name}"), json!({}))
                .unwrap();
        }
        store.compact(2).unwrap();
        assert!(matches!(
            store.changes_since("/a/", 1),
            Err(StorageError::Compacted {
                revision: 1,
                oldest: 3
            })
        ));
        let kept: Vec<i64> = store
            .changes_since("/a/", 2)
            .unwrap()
            .iter()
            .map(|c| c.revision)
            .collect();
        assert_eq!(kept, [3, 4]);
        assert_eq!(
            store.get("/a/default/d").unwrap().unwrap()["metadata"]["resourceVersion"],
            "4"
        );
    }
}
