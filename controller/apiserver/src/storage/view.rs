//! The in-memory view of [`Store`](super::Store): what is committed, as readers see it. Every
//! object is kept as its stored JSON text: text costs a tenth of the memory of decoded values,
//! and lists copy it into answers as it is.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use super::queue::Pending;
use super::sqlite::Loaded;
use super::{ChangeKind, StorageError};

/// The committed state, behind one lock that writers hold only to swap pointers in.
#[derive(Debug)]
pub(super) struct View {
    committed: RwLock<Committed>,
}

#[derive(Debug)]
struct Committed {
    /// The newest committed revision.
    revision: i64,
    /// Every object's revision and JSON, by key.
    objects: BTreeMap<String, (i64, Arc<str>)>,
}

impl View {
    /// The view of what a store held when it was opened.
    pub(super) fn new((revision, objects): Loaded) -> View {
        View {
            committed: RwLock::new(Committed { revision, objects }),
        }
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Committed>, StorageError> {
        self.committed.read().map_err(|_| StorageError::Poisoned)
    }

    /// The newest committed revision.
    pub(super) fn revision(&self) -> Result<i64, StorageError> {
        Ok(self.read()?.revision)
    }

    /// The revision of the object at `key`, if there is one.
    pub(super) fn revision_of(&self, key: &str) -> Result<Option<i64>, StorageError> {
        Ok(self.read()?.objects.get(key).map(|&(revision, _)| revision))
    }

    /// Whether an object is stored at `key`.
    pub(super) fn contains(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.read()?.objects.contains_key(key))
    }

    /// The JSON of the object at `key`.
    pub(super) fn text(&self, key: &str) -> Result<Option<Arc<str>>, StorageError> {
        Ok(self.read()?.objects.get(key).map(|(_, text)| text.clone()))
    }

    /// The JSON of every object whose key starts with `prefix`, in key order, and the revision
    /// it was read at.
    pub(super) fn list_text(&self, prefix: &str) -> Result<(Vec<Arc<str>>, i64), StorageError> {
        let committed = self.read()?;
        let texts = committed
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, (_, text))| text.clone())
            .collect();
        Ok((texts, committed.revision))
    }

    /// Shows a committed batch to readers.
    pub(super) fn apply(&self, batch: &[Pending]) -> Result<(), StorageError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let mut committed = self.committed.write().map_err(|_| StorageError::Poisoned)?;
        for Pending { change, .. } in batch {
            match change.kind {
                ChangeKind::Deleted => {
                    committed.objects.remove(&change.key);
                }
                ChangeKind::Added | ChangeKind::Modified => {
                    committed
                        .objects
                        .insert(change.key.clone(), (change.revision, change.text.clone()));
                }
            }
        }
        committed.revision = last.change.revision;
        Ok(())
    }
}
