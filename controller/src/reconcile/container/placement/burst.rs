//! A burst's decisions, largest first: containers applied together reach placement within
//! milliseconds of each other; each waits a short gathering window, then while a larger one is
//! pending beside it ([`engine::burst::burst_order`]), as the engine's simulations show a burst
//! balances best that way.

use std::time::Duration;

use crate::placement::model::Request;
use crate::placement::{self as engine};

/// How long a decision waits for others of the same burst before it is made: reconciles of
/// containers applied together arrive within a few milliseconds of each other.
const BURST_WINDOW: Duration = Duration::from_millis(100);

/// The longest a decision waits for larger ones pending beside it.
const BURST_PATIENCE: Duration = Duration::from_secs(10);

/// Containers of one cluster waiting for their decision, by uid. A decision waits while a
/// larger one is pending, so that a burst is decided largest first
/// ([`engine::burst::burst_order`]), as the engine's simulations show it balances best.
#[derive(Debug, Default)]
pub(super) struct Pending {
    waiting: std::sync::Mutex<std::collections::BTreeMap<String, Request>>,
    decided: tokio::sync::Notify,
}

impl Pending {
    fn larger_than(&self, uid: &str, request: &Request) -> bool {
        self.waiting.lock().is_ok_and(|waiting| {
            waiting.iter().any(|(other_uid, other)| {
                other_uid != uid
                    && engine::burst::burst_order(other, request) == std::cmp::Ordering::Less
            })
        })
    }
}

/// A container's place among the pending decisions; leaving it (decided, or failed) wakes the
/// others.
pub(super) struct PendingEntry<'a> {
    pending: &'a Pending,
    uid: String,
    /// When the burst it arrived in is gathered.
    gathered: tokio::time::Instant,
}

impl<'a> PendingEntry<'a> {
    pub(super) fn join(pending: &'a Pending, uid: &str, request: &Request) -> Self {
        if let Ok(mut waiting) = pending.waiting.lock() {
            waiting.insert(uid.to_owned(), request.clone());
        }
        PendingEntry {
            pending,
            uid: uid.to_owned(),
            gathered: tokio::time::Instant::now() + BURST_WINDOW,
        }
    }

    /// Waits until the burst it arrived in is gathered. Its turn then comes when no larger
    /// decision is pending ([`PendingEntry::wait_for_larger`]).
    pub(super) async fn gathered(&self) {
        tokio::time::sleep_until(self.gathered).await;
    }

    /// Waits until no larger decision is pending (or patience runs out).
    pub(super) async fn wait_for_larger(&self, request: &Request) {
        let deadline = tokio::time::Instant::now() + BURST_PATIENCE;
        loop {
            let decided = self.pending.decided.notified();
            tokio::pin!(decided);
            decided.as_mut().enable();
            if !self.pending.larger_than(&self.uid, request) {
                return;
            }
            if tokio::time::timeout_at(deadline, decided).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.pending.waiting.lock() {
            waiting.remove(&self.uid);
        }
        self.pending.decided.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::placement::plugins::testing::request;

    #[tokio::test]
    async fn a_smaller_decision_waits_for_a_larger_one_pending_beside_it() {
        let pending = Arc::new(Pending::default());
        let small = request(0.5, 0.5);
        let large = request(2.0, 4.0);
        let large_entry = PendingEntry::join(&pending, "large", &large);
        let waiter = {
            let pending = pending.clone();
            tokio::spawn(async move {
                let entry = PendingEntry::join(&pending, "small", &small);
                entry.wait_for_larger(&small).await;
                tokio::time::Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the small one waits");
        // The large one does not wait for the small one.
        large_entry.wait_for_larger(&large).await;
        let decided = tokio::time::Instant::now();
        drop(large_entry);
        let went = waiter.await.unwrap();
        assert!(went >= decided);
    }
}
