//! Pacing creates per member: a rollout hands LXD every create at once, and a member that
//! unpacks dozens of images at the same time finishes each later than it would have one after
//! another in small groups. Creates beyond the limit wait here for their turn, first come first
//! served, holding nothing else (no request slot, no connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The create turns of every member.
#[derive(Debug)]
pub(crate) struct CreateSlots {
    per_member: usize,
    by_member: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A create's turn on a member; the next create there goes when it is dropped.
#[derive(Debug)]
pub(crate) struct CreateTurn {
    _permit: Option<OwnedSemaphorePermit>,
}

impl CreateSlots {
    /// At most `per_member` creates at once on each member (0: no limit).
    pub(crate) fn new(per_member: usize) -> Self {
        CreateSlots {
            per_member,
            by_member: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a turn to create on `member`.
    pub(crate) async fn turn(&self, member: &str) -> CreateTurn {
        if self.per_member == 0 {
            return CreateTurn { _permit: None };
        }
        let slots = match self.by_member.lock() {
            Ok(mut by_member) => by_member
                .entry(member.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_member)))
                .clone(),
            // A poisoned map only loses pacing, never a create.
            Err(_) => return CreateTurn { _permit: None },
        };
        CreateTurn {
            // The semaphore is never closed, so acquiring cannot fail.
            _permit: slots.acquire_owned().await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn creates_beyond_the_limit_on_one_member_wait_and_other_members_do_not() {
        let slots = Arc::new(CreateSlots::new(2));
        let first = slots.turn("node1").await;
        let _second = slots.turn("node1").await;
        let third = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.turn("node1").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "a third create on node1 waits");
        let _elsewhere = tokio::time::timeout(Duration::from_secs(1), slots.turn("node2"))
            .await
            .expect("node2 has turns of its own");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .expect("the third goes when the first is done")
            .unwrap();
    }

    #[tokio::test]
    async fn no_limit_never_waits() {
        let slots = CreateSlots::new(0);
        let turns: Vec<_> = futures::future::join_all((0..100).map(|_| slots.turn("node1"))).await;
        assert_eq!(turns.len(), 100);
    }
}
