//! How often a member's live usage is re-read. LXD builds `/1.0/metrics` by asking every
//! running instance's cgroups afresh (about 44 ms of the member's CPU per running instance,
//! measured on LXD 5.0 here), so reading it on every observation would cost a member with a
//! hundred instances seconds of CPU each time. Usage steers placement only a little (limits
//! decide first), so a reading is kept for a while and reused: at least [`MIN_REUSE`], and
//! longer when the member is slow to answer, so that serving metrics stays a small share of a
//! member's time however many instances it runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::client::LxdClient;
use super::error::Result;
use super::metrics::InstanceMetrics;

/// A reading is reused for at least this long.
pub const MIN_REUSE: Duration = Duration::from_secs(60);

/// A reading that took `t` to answer is reused for at least `t` times this: the member spends
/// at most about 1% of its time answering for metrics.
pub const REUSE_PER_READ_TIME: u32 = 100;

/// Whether a reading of age `age` that took `took` to answer is still good to reuse.
pub fn is_fresh(age: Duration, took: Duration) -> bool {
    age < MIN_REUSE.max(took.saturating_mul(REUSE_PER_READ_TIME))
}

#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    took: Duration,
    instances: Arc<Vec<InstanceMetrics>>,
}

/// The last usage reading of each member. A member's slot is held while it is read, so that
/// callers observing at once share one read.
#[derive(Debug, Default)]
pub(crate) struct UsageCache {
    by_member: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Reading>>>>>,
}

impl UsageCache {
    fn slot(&self, member: &str) -> Arc<tokio::sync::Mutex<Option<Reading>>> {
        match self.by_member.lock() {
            Ok(mut by_member) => by_member.entry(member.to_owned()).or_default().clone(),
            // A panic elsewhere while the map was held: read without sharing rather than fail.
            Err(_) => Arc::default(),
        }
    }
}

impl LxdClient {
    /// What each instance on `member` uses, from a reading at most [`is_fresh`] old; read anew
    /// (from the member's own endpoint) when there is none. A failed read is not kept.
    pub async fn member_usage(&self, member: &str) -> Result<Arc<Vec<InstanceMetrics>>> {
        let slot = self.inner.usage.slot(member);
        let mut last = slot.lock().await;
        if let Some(reading) = last.as_ref()
            && is_fresh(reading.at.elapsed(), reading.took)
        {
            return Ok(reading.instances.clone());
        }
        let started = Instant::now();
        let instances = Arc::new(
            self.on_member(member)
                .member_instance_metrics(member)
                .await?,
        );
        *last = Some(Reading {
            at: Instant::now(),
            took: started.elapsed(),
            instances: instances.clone(),
        });
        Ok(instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_member_is_read_again_after_a_minute() {
        let quick = Duration::from_millis(40);
        assert!(is_fresh(Duration::from_secs(59), quick));
        assert!(!is_fresh(Duration::from_secs(60), quick));
    }

    #[test]
    fn a_slow_member_is_read_a_hundred_read_times_apart() {
        let slow = Duration::from_secs(3);
        assert!(is_fresh(Duration::from_secs(299), slow));
        assert!(!is_fresh(Duration::from_secs(300), slow));
    }

    #[test]
    fn a_read_that_took_forever_does_not_overflow() {
        assert!(is_fresh(Duration::from_secs(3600), Duration::MAX));
    }
}
