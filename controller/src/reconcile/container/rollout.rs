//! The stages of a new container's first rollout, timed for the metrics
//! (`lxd_operator_container_stage_seconds`): how long from its first reconcile until it was
//! placed, created, started and Ready. A rollout's time is spent in these, and `hack/bench
//! rollout` prints them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::telemetry::Metrics;

/// A stage of a first rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A member was chosen.
    Placed,
    /// LXD created the instance.
    Created,
    /// LXD started it.
    Started,
    /// The instance is as the spec asks (Ready).
    Ready,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Placed => "placed",
            Stage::Created => "created",
            Stage::Started => "started",
            Stage::Ready => "ready",
        }
    }
}

/// When each container in its first rollout was first reconciled, by uid.
#[derive(Debug, Default)]
pub struct RolloutClock {
    began: Mutex<HashMap<String, Instant>>,
}

impl RolloutClock {
    /// A new container (never reconciled before) is first seen; later calls change nothing.
    pub fn begin(&self, uid: &str) {
        if let Ok(mut began) = self.began.lock() {
            began.entry(uid.to_owned()).or_insert_with(Instant::now);
        }
    }

    /// The container reached `stage`; Ready ends its first rollout. Containers not in their
    /// first rollout are not timed.
    pub fn reached(&self, uid: &str, stage: Stage, metrics: &Metrics) {
        let Ok(mut began) = self.began.lock() else {
            return;
        };
        let since = if stage == Stage::Ready {
            began.remove(uid)
        } else {
            began.get(uid).copied()
        };
        if let Some(since) = since {
            metrics.observe_stage(stage.label(), since);
        }
    }

    /// The container is gone before it was Ready.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut began) = self.began.lock() {
            began.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_first_rollout_is_timed_and_ready_ends_it() {
        let metrics = Metrics::new();
        let clock = RolloutClock::default();
        clock.begin("new");
        clock.reached("new", Stage::Placed, &metrics);
        clock.reached("new", Stage::Ready, &metrics);
        // After Ready, and for a container never begun: nothing.
        clock.reached("new", Stage::Started, &metrics);
        clock.reached("old", Stage::Ready, &metrics);
        let text = metrics.encode();
        assert!(
            text.contains(r#"lxd_operator_container_stage_seconds_count{stage="placed"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"lxd_operator_container_stage_seconds_count{stage="ready"} 1"#));
        assert!(!text.contains(r#"stage="started""#));
    }
}
