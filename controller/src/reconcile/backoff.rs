//! Failed reconciles come back later and later, per object, with jitter: a container that
//! fails the same way every time (an image that does not exist, a member that refuses) must
//! not cost LXD and the API a retry every few seconds forever, nor repeat the same Warning
//! Event every minute, and many containers failing at once must not all retry in step.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How a kind of failure backs off: the first delay, doubled per failure up to the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` failures in a row (1: the first), before jitter.
    pub fn delay(self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[derive(Debug, Default)]
struct Record {
    failures: u32,
    /// The reason and message of the last Warning published.
    warned: Option<(String, String)>,
}

/// Failures in a row of each object, by uid.
#[derive(Debug, Default)]
pub struct Backoffs {
    by_uid: Mutex<HashMap<String, Record>>,
}

impl Backoffs {
    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Record) -> T) -> T {
        let mut by_uid = self
            .by_uid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(by_uid.entry(uid.to_owned()).or_default())
    }

    /// Counts a failure of `uid`; when to try again (the backoff's delay, jittered by ±20%).
    pub fn failed(&self, uid: &str, backoff: Backoff) -> Duration {
        let failures = self.with(uid, |record| {
            record.failures = record.failures.saturating_add(1);
            record.failures
        });
        crate::jitter::jittered(backoff.delay(failures), 0.2)
    }

    /// Whether a Warning with this reason and message is news for `uid` (the same one again
    /// is not published); remembers it.
    pub fn warn_once(&self, uid: &str, reason: &str, message: &str) -> bool {
        self.with(uid, |record| {
            let warning = (reason.to_owned(), message.to_owned());
            if record.warned.as_ref() == Some(&warning) {
                false
            } else {
                record.warned = Some(warning);
                true
            }
        })
    }

    /// `uid` reconciled without failing: its next failure starts afresh.
    pub fn succeeded(&self, uid: &str) {
        if let Ok(mut by_uid) = self.by_uid.lock() {
            by_uid.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LXD_REFUSED: Backoff = Backoff {
        first: Duration::from_secs(60),
        max: Duration::from_secs(1800),
    };

    #[test]
    fn delays_double_per_failure_up_to_the_longest() {
        let delays: Vec<u64> = (1..=7).map(|n| LXD_REFUSED.delay(n).as_secs()).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1800, 1800]);
        assert_eq!(LXD_REFUSED.delay(u32::MAX).as_secs(), 1800);
    }

    #[test]
    fn each_object_backs_off_on_its_own_with_jitter_and_a_success_starts_afresh() {
        let backoffs = Backoffs::default();
        let first = backoffs.failed("a", LXD_REFUSED);
        assert!(first >= Duration::from_secs(48) && first <= Duration::from_secs(72));
        let second = backoffs.failed("a", LXD_REFUSED);
        assert!(second >= Duration::from_secs(96), "{second:?}");
        let other = backoffs.failed("b", LXD_REFUSED);
        assert!(other <= Duration::from_secs(72), "b has its own count");
        backoffs.succeeded("a");
        assert!(backoffs.failed("a", LXD_REFUSED) <= Duration::from_secs(72));
        let many: Vec<Duration> = (0..20)
            .map(|i| backoffs.failed(&format!("c{i}"), LXD_REFUSED))
            .collect();
        assert!(many.iter().any(|d| *d != many[0]), "no jitter: {many:?}");
    }

    #[test]
    fn the_same_warning_is_published_once() {
        let backoffs = Backoffs::default();
        assert!(backoffs.warn_once("a", "LxdRefused", "Image alias not found"));
        assert!(!backoffs.warn_once("a", "LxdRefused", "Image alias not found"));
        assert!(backoffs.warn_once("a", "LxdRefused", "another reason"));
        assert!(backoffs.warn_once("b", "LxdRefused", "another reason"));
    }
}
