//! Group commit for [`Store`](super::Store): writers arriving while a batch is being committed
//! queue their changes, and the first of them commits the whole queue in one transaction when
//! that batch is done. Revisions are given in queue order and batches are committed, made
//! visible and broadcast in that order, so revisions grow strictly and watchers see changes in
//! order. Each writer is answered once its change is durable.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use serde_json::Value;

use super::{Change, ChangeKind, Precondition, StorageError};

/// The changes waiting for their commit.
#[derive(Debug)]
pub(super) struct Queue {
    state: Mutex<Waiting>,
    /// Signalled when a batch is done.
    flushed: Condvar,
}

#[derive(Debug)]
struct Waiting {
    /// The revision the next change gets.
    next: i64,
    pending: Vec<Pending>,
    /// Whether a writer is committing a batch now.
    committing: bool,
    /// Keys with changes not yet visible to readers: the revision of the last change, and
    /// whether the object exists after it.
    unseen: HashMap<String, (i64, bool)>,
}

/// The outcome of a batch, shared by its writers: the error is logged once, by the writer that
/// committed it, and shared (a success costs no allocation).
type Outcome = Arc<OnceLock<Result<(), Arc<StorageError>>>>;

/// A change waiting for its commit; `outcome` is set when its batch is done.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) change: Change,
    outcome: Outcome,
}

/// A queued change's place in the queue, to wait on.
#[derive(Debug)]
pub(super) struct Ticket {
    outcome: Outcome,
    /// Whether nobody else was writing when it was queued.
    alone: bool,
}

impl Queue {
    /// An empty queue after `revision`.
    pub(super) fn new(revision: i64) -> Queue {
        Queue {
            state: Mutex::new(Waiting {
                next: revision + 1,
                pending: Vec::new(),
                committing: false,
                unseen: HashMap::new(),
            }),
            flushed: Condvar::new(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Waiting>, StorageError> {
        // The callers' code runs under the lock only through `guarded`, so a panic cannot
        // leave `Waiting` half-changed: a poisoned lock is as good as a clean one, and one bug
        // must not refuse every later write.
        Ok(self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Queues one change to `key` if `precondition` holds against every change before it,
    /// committed (`committed` tells the revision readers see) or queued. `write` gets the
    /// revision the change will have and returns the object to store; it is stored as JSON
    /// text, made here, once.
    pub(super) fn enqueue(
        &self,
        key: &str,
        kind: ChangeKind,
        precondition: Precondition,
        committed: impl FnOnce(&str) -> Result<Option<i64>, StorageError>,
        write: impl FnOnce(i64) -> Value,
    ) -> Result<(Value, Ticket), StorageError> {
        let outcome = Outcome::default();
        let mut waiting = self.lock()?;
        if precondition != Precondition::None {
            let current = match waiting.unseen.get(key) {
                Some(&(revision, exists)) => exists.then_some(revision),
                None => guarded("reading the committed revision", || committed(key))??,
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
        let revision = waiting.next;
        let object = guarded("building the object to store", || write(revision))?;
        let text: Arc<str> = serde_json::to_string(&object)
            .map_err(|source| StorageError::Corrupt {
                key: key.to_owned(),
                source,
            })?
            .into();
        waiting.next += 1;
        waiting
            .unseen
            .insert(key.to_owned(), (revision, kind != ChangeKind::Deleted));
        waiting.pending.push(Pending {
            change: Change {
                revision,
                key: key.to_owned(),
                kind,
                text,
            },
            outcome: outcome.clone(),
        });
        let alone = waiting.pending.len() == 1 && !waiting.committing;
        Ok((object, Ticket { outcome, alone }))
    }

    /// Waits until the ticket's change is durable (or its batch failed), committing the queued
    /// batch with `commit` whenever nobody else is.
    pub(super) fn wait(
        &self,
        ticket: &Ticket,
        commit: impl Fn(&[Pending]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        if ticket.alone {
            // Nobody else writing: committing here costs one disk sync, less than handing the
            // thread's other tasks over to another thread.
            self.wait_or_commit(&ticket.outcome, commit)
        } else {
            // Waiting for other writers' commits must not stall the other requests served by
            // this thread.
            blocking(|| self.wait_or_commit(&ticket.outcome, commit))
        }
    }

    fn wait_or_commit(
        &self,
        outcome: &OnceLock<Result<(), Arc<StorageError>>>,
        commit: impl Fn(&[Pending]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut waiting = self.lock()?;
        loop {
            if let Some(result) = outcome.get() {
                return result.clone().map_err(StorageError::Batch);
            }
            if !waiting.committing {
                waiting.committing = true;
                let batch = std::mem::take(&mut waiting.pending);
                drop(waiting);
                // A panicking commit must still end the batch, or every writer waits forever.
                let result = guarded("committing a batch", || commit(&batch))
                    .and_then(|committed| committed)
                    .map_err(Arc::new);
                for pending in &batch {
                    let _ = pending.outcome.set(result.clone());
                }
                waiting = self.lock()?;
                // The batch is visible now (or failed, and the view still shows what was
                // before): what later changes did stays.
                if let Some(last) = batch.last() {
                    let last = last.change.revision;
                    waiting.unseen.retain(|_, (revision, _)| *revision > last);
                }
                waiting.committing = false;
                self.flushed.notify_all();
                continue;
            }
            waiting = self
                .flushed
                .wait(waiting)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until every change queued for `key` is visible to reads.
    pub(super) fn settle(&self, key: &str) -> Result<(), StorageError> {
        blocking(|| {
            let mut waiting = self.lock()?;
            while waiting.unseen.contains_key(key) {
                waiting = self
                    .flushed
                    .wait(waiting)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            Ok(())
        })
    }
}

/// Runs `f`, turning a panic in it into [`StorageError::Panicked`].
fn guarded<R>(during: &'static str, f: impl FnOnce() -> R) -> Result<R, StorageError> {
    crate::panics::catch(during, f).map_err(|message| StorageError::Panicked { during, message })
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Adds an empty object at `key` to the queue, with nothing committed before it.
    fn add(queue: &Queue, key: &str, precondition: Precondition) -> Ticket {
        queue
            .enqueue(
                key,
                ChangeKind::Added,
                precondition,
                |_| Ok(None),
                |_| json!({}),
            )
            .unwrap()
            .1
    }

    #[test]
    fn a_write_that_panics_is_refused_and_the_next_write_goes_through() {
        let queue = Queue::new(0);
        let panicked = queue.enqueue(
            "/a/-/x",
            ChangeKind::Added,
            Precondition::Absent,
            |_| Ok(None),
            |_| -> Value { panic!("index into a number") },
        );
        match panicked {
            Err(StorageError::Panicked { message, .. }) => {
                assert_eq!(message, "index into a number")
            }
            other => panic!("{other:?}"),
        }
        let ticket = add(&queue, "/a/-/x", Precondition::Absent);
        let panicking_commit = |_: &[Pending]| -> Result<(), StorageError> { panic!("disk bug") };
        assert!(matches!(
            queue.wait(&ticket, panicking_commit),
            Err(StorageError::Batch(source)) if matches!(*source, StorageError::Panicked { .. })
        ));
        let ticket = add(&queue, "/a/-/y", Precondition::None);
        assert!(queue.wait(&ticket, |_| Ok(())).is_ok());
    }

    #[test]
    fn a_failed_commit_is_shared_by_every_writer_of_its_batch() {
        let queue = Queue::new(0);
        let (first, second) = (
            add(&queue, "/a/-/x", Precondition::None),
            add(&queue, "/a/-/y", Precondition::None),
        );
        let fail = |_: &[Pending]| Err(StorageError::Poisoned);
        let errors = [&first, &second].map(|ticket| match queue.wait(ticket, fail) {
            Err(StorageError::Batch(source)) => source,
            other => panic!("{other:?}"),
        });
        assert!(Arc::ptr_eq(&errors[0], &errors[1]));
        let error = StorageError::Batch(errors[0].clone());
        assert_eq!(
            error.to_string(),
            "storage: commit failed: storage lock poisoned"
        );
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("storage lock poisoned"));
    }
}
