//! A burst's decisions, largest first: containers applied together reach placement a few
//! milliseconds apart (`kubectl apply` of sixty objects takes a second or more); a burst is
//! gathered until no container has arrived for a short window, then each decision waits while
//! a larger one is pending beside it ([`engine::burst::burst_order`]), as the engine's
//! simulations show a burst balances best that way. Decided one by one as they arrive, the
//! largest ones can come last and leave members a whole container apart.

use std::time::Duration;

use crate::placement::model::Request;
use crate::placement::{self as engine};

/// A burst is gathered once no container has arrived for this long: reconciles of containers
/// applied together arrive a few milliseconds apart.
const BURST_WINDOW: Duration = Duration::from_millis(100);

/// The longest a decision waits for its burst to be gathered, however long arrivals go on.
const BURST_MAX_GATHERING: Duration = Duration::from_secs(2);

/// The longest a decision waits for larger ones pending beside it.
const BURST_PATIENCE: Duration = Duration::from_secs(10);

/// Containers of one cluster waiting for their decision, by uid. A decision waits while a
/// larger one is pending, so that a burst is decided largest first
/// ([`engine::burst::burst_order`]), as the engine's simulations show it balances best.
#[derive(Debug, Default)]
pub(super) struct Pending {
    waiting: std::sync::Mutex<std::collections::BTreeMap<String, Request>>,
    decided: tokio::sync::Notify,
    /// When the last container arrived.
    last_arrival: std::sync::Mutex<Option<tokio::time::Instant>>,
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
    /// When it arrived.
    arrived: tokio::time::Instant,
}

impl<'a> PendingEntry<'a> {
    pub(super) fn join(pending: &'a Pending, uid: &str, request: &Request) -> Self {
        if let Ok(mut waiting) = pending.waiting.lock() {
            waiting.insert(uid.to_owned(), request.clone());
        }
        let arrived = tokio::time::Instant::now();
        if let Ok(mut last) = pending.last_arrival.lock() {
            *last = Some(arrived);
        }
        PendingEntry {
            pending,
            uid: uid.to_owned(),
            arrived,
        }
    }

    /// Waits until the burst it arrived in is gathered: no arrival for [`BURST_WINDOW`], or
    /// [`BURST_MAX_GATHERING`] since its own. Its turn then comes when no larger decision is
    /// pending ([`PendingEntry::wait_for_larger`]).
    pub(super) async fn gathered(&self) {
        let latest = self.arrived + BURST_MAX_GATHERING;
        loop {
            let last = self
                .pending
                .last_arrival
                .lock()
                .ok()
                .and_then(|last| *last)
                .unwrap_or(self.arrived);
            let quiet = (last + BURST_WINDOW).min(latest);
            if tokio::time::Instant::now() >= quiet {
                return;
            }
            tokio::time::sleep_until(quiet).await;
        }
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

    /// `count` containers named `prefix0`, `prefix1`, … join the burst, one every 50 ms.
    fn arrive_every_50ms(
        pending: &Arc<Pending>,
        prefix: &'static str,
        count: usize,
    ) -> tokio::task::JoinHandle<()> {
        let pending = pending.clone();
        tokio::spawn(async move {
            for i in 0..count {
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(PendingEntry::join(
                    &pending,
                    &format!("{prefix}{i}"),
                    &request(1.0, 1.0),
                ));
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_gathered_while_arrivals_go_on_and_at_most_for_the_longest_wait() {
        let pending = Arc::new(Pending::default());
        let first = PendingEntry::join(&pending, "first", &request(0.5, 0.5));
        let started = tokio::time::Instant::now();
        // One arrival every 50 ms for 600 ms, as a slow apply sends them.
        let arrivals = arrive_every_50ms(&pending, "c", 12);
        first.gathered().await;
        let gathered = started.elapsed();
        assert_eq!(
            gathered,
            Duration::from_millis(700),
            "quiet for 100 ms after the last arrival"
        );
        arrivals.await.unwrap();

        // Arrivals that never stop: gathered after the longest wait.
        let late = PendingEntry::join(&pending, "late", &request(0.5, 0.5));
        let started = tokio::time::Instant::now();
        let endless = arrive_every_50ms(&pending, "e", usize::MAX);
        late.gathered().await;
        assert_eq!(started.elapsed(), BURST_MAX_GATHERING);
        endless.abort();
    }

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
