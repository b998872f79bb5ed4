//! Leader election through a `coordination.k8s.io/v1` Lease: with several replicas, only the
//! holder of the lease reconciles. The holder renews it; the others take it over once it has
//! not changed for its duration; a holder that stops gracefully hands it over at once by
//! releasing it.
//!
//! Time is judged as client-go judges it, by this process's own monotonic clock, never by the
//! timestamps another replica wrote: a standby counts how long it has seen the lease unchanged,
//! and the holder counts from its last renewal that went through. The holder gives up when a
//! renewal has not gone through for `renew_deadline` (shorter than the lease), and from that
//! moment [`Leadership::holds`] is false, so that nothing more is written to LXD even by work
//! already under way, and even when the process was paused past its lease (SIGSTOP, a stalled
//! VM) and wakes up believing it still leads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// Which lease, held by whom, for how long.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This process's identity (the pod name).
    pub identity: String,
    /// How long the lease holds without renewal.
    pub duration: Duration,
    /// How long the holder keeps acting without a renewal that went through; shorter than
    /// `duration`, so that it has stopped before a standby may take over.
    pub renew_deadline: Duration,
    /// How often the holder renews it (and a standby looks at it).
    pub renew_interval: Duration,
}

/// Why a lease configuration cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--lease-renew-seconds ({renew:?}) < --lease-renew-deadline-seconds ({deadline:?}) < --lease-duration-seconds ({duration:?}) must hold: a holder must stop acting before a standby may take over"
)]
pub struct LeaseConfigError {
    renew: Duration,
    deadline: Duration,
    duration: Duration,
}

impl LeaseConfig {
    /// Checks that renewals come before the deadline, and the deadline before expiry.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        if self.renew_interval < self.renew_deadline && self.renew_deadline < self.duration {
            Ok(())
        } else {
            Err(LeaseConfigError {
                renew: self.renew_interval,
                deadline: self.renew_deadline,
                duration: self.duration,
            })
        }
    }
}

/// Whether this replica may act now. Without leader election it always may; with it, only
/// until the renew deadline after its last renewal that went through.
#[derive(Debug, Clone, Default)]
pub struct Leadership {
    /// Until when it may act (None: no election).
    until: Option<Arc<Mutex<Instant>>>,
}

impl Leadership {
    /// Leadership that is never lost (one replica, no election).
    pub fn unconditional() -> Self {
        Leadership::default()
    }

    fn elected(until: Instant) -> Self {
        Leadership {
            until: Some(Arc::new(Mutex::new(until))),
        }
    }

    /// Whether this replica may act now.
    pub fn holds(&self) -> bool {
        match &self.until {
            None => true,
            Some(until) => until.lock().is_ok_and(|until| Instant::now() < *until),
        }
    }

    fn extend_to(&self, until: Instant) {
        if let Some(held) = &self.until
            && let Ok(mut held) = held.lock()
        {
            *held = until;
        }
    }

    fn end(&self) {
        self.extend_to(Instant::now());
    }
}

/// A lease this process holds.
#[derive(Debug)]
pub struct LeaderLease {
    api: Api<Lease>,
    config: LeaseConfig,
    leadership: Leadership,
    /// When the last renewal that went through was sent.
    renewed_at: Instant,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// What a standby has seen of the lease: the last record, and when (by its own clock) it
/// changed. The lease is expired once it has stayed the same for its duration.
#[derive(Debug, Default)]
struct Observed {
    last: Option<(LeaseSpec, Instant)>,
}

impl Observed {
    /// Records `spec` as seen at `seen_at`; whether it has not changed for its duration.
    fn expired(&mut self, spec: &LeaseSpec, default_duration: Duration, seen_at: Instant) -> bool {
        let changed_at = match &self.last {
            Some((previous, changed_at)) if previous == spec => *changed_at,
            _ => {
                self.last = Some((spec.clone(), seen_at));
                seen_at
            }
        };
        let duration = spec.lease_duration_seconds.map_or(default_duration, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        });
        seen_at.saturating_duration_since(changed_at) > duration
    }
}

impl LeaseConfig {
    fn spec(&self, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(self, client: kube::Client) -> LeaderLease {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        let mut observed = Observed::default();
        loop {
            let sent_at = Instant::now();
            match self.try_acquire(&api, &mut observed).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    let leadership = Leadership::elected(sent_at + self.renew_deadline);
                    return LeaderLease {
                        api,
                        config: self,
                        leadership,
                        renewed_at: sent_at,
                    };
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "leader election: cannot read or write the lease")
                }
            }
            tokio::time::sleep(self.renew_interval).await;
        }
    }

    async fn try_acquire(
        &self,
        api: &Api<Lease>,
        observed: &mut Observed,
    ) -> Result<bool, kube::Error> {
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = observed.expired(&spec, self.duration, Instant::now());
        let free = holder.is_empty() || holder == self.identity || expired;
        if !free {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity);
        lease.spec = Some(self.spec(transitions));
        // The resourceVersion read above makes this a compare-and-swap: of two standbys, one wins.
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

impl LeaderLease {
    /// Whether this replica may act, for everything that writes (the LXD client checks it
    /// before every change it sends).
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Renews the lease until it is lost (taken over, or not renewed within the renew
    /// deadline), and then returns; leadership has ended by then.
    pub async fn hold(&mut self) {
        loop {
            tokio::time::sleep(self.config.renew_interval).await;
            let deadline = self.renewed_at + self.config.renew_deadline;
            let sent_at = Instant::now();
            // A renewal that answers after the deadline is no use: give up waiting for it then.
            let left = deadline.saturating_duration_since(sent_at);
            match tokio::time::timeout(left, self.renew()).await {
                Ok(Ok(true)) => {
                    self.renewed_at = sent_at;
                    self.leadership
                        .extend_to(sent_at + self.config.renew_deadline);
                }
                Ok(Ok(false)) => {
                    self.leadership.end();
                    tracing::error!(lease = %self.config.name, "leadership lost: another replica holds the lease");
                    return;
                }
                Ok(Err(error)) => tracing::warn!(%error, "cannot renew the lease"),
                Err(_) => {
                    tracing::warn!("renewing the lease did not answer before the renew deadline")
                }
            }
            if !self.leadership.holds() {
                self.leadership.end();
                tracing::error!(lease = %self.config.name, "leadership lost: the lease was not renewed within the renew deadline");
                return;
            }
        }
    }

    async fn renew(&self) -> Result<bool, kube::Error> {
        let mut lease = self.api.get(&self.config.name).await?;
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the lease up so that a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        let result = async {
            let mut lease = self.api.get(&self.config.name).await?;
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() == Some(self.config.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                lease.spec = Some(spec);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await?;
            }
            Ok::<(), kube::Error>(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(lease = %self.config.name, "lease released"),
            Err(error) => tracing::warn!(%error, "cannot release the lease; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewed(seconds_ago: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some("other".to_owned()),
            renew_time: Some(MicroTime(
                jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds_ago),
            )),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_after_staying_unchanged_for_its_duration_by_our_own_clock() {
        let mut observed = Observed::default();
        let start = Instant::now();
        let default = Duration::from_secs(15);
        // Written by a replica whose clock is an hour behind: stale by its timestamp, but it
        // was just seen, so it counts from now.
        let behind = renewed(3600);
        assert!(!observed.expired(&behind, default, start));
        assert!(!observed.expired(&behind, default, start + Duration::from_secs(14)));
        assert!(observed.expired(&behind, default, start + Duration::from_secs(16)));
    }

    #[test]
    fn a_lease_that_keeps_changing_never_expires_whatever_its_timestamps_say() {
        let mut observed = Observed::default();
        let start = Instant::now();
        let default = Duration::from_secs(15);
        for step in 0..10u64 {
            // A renewing holder whose clock is an hour ahead or behind.
            let spec = renewed(if step % 2 == 0 { 3600 } else { -3600 } + step as i64);
            let seen = start + Duration::from_secs(10 * step);
            assert!(!observed.expired(&spec, default, seen), "step {step}");
        }
    }

    #[test]
    fn leadership_ends_at_its_deadline_and_when_ended() {
        assert!(Leadership::unconditional().holds());
        let leadership = Leadership::elected(Instant::now() + Duration::from_secs(60));
        assert!(leadership.holds());
        leadership.extend_to(Instant::now() - Duration::from_millis(1));
        assert!(!leadership.holds());
        let leadership = Leadership::elected(Instant::now() + Duration::from_secs(60));
        leadership.end();
        assert!(!leadership.holds());
    }

    #[test]
    fn the_renew_deadline_must_fall_between_renewals_and_expiry() {
        let config = |renew, deadline, duration| LeaseConfig {
            name: "l".to_owned(),
            namespace: "default".to_owned(),
            identity: "me".to_owned(),
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(deadline),
            renew_interval: Duration::from_secs(renew),
        };
        assert!(config(2, 10, 15).validate().is_ok());
        assert!(config(2, 15, 15).validate().is_err());
        assert!(config(10, 10, 15).validate().is_err());
    }
}
