//! Leader election through a `coordination.k8s.io/v1` Lease: with several replicas, only the
//! holder of the lease reconciles. The holder renews it; the others take it over once it has
//! not been renewed for its duration; a holder that stops gracefully hands it over at once by
//! releasing it.

use std::time::Duration;

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
    /// How often the holder renews it.
    pub renew_interval: Duration,
}

/// A lease this process holds.
#[derive(Debug)]
pub struct LeaderLease {
    api: Api<Lease>,
    config: LeaseConfig,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn expired(spec: &LeaseSpec, default_duration: Duration) -> bool {
    let duration = spec.lease_duration_seconds.map_or(default_duration, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    match &spec.renew_time {
        Some(renewed) => {
            jiff::Timestamp::now()
                .duration_since(renewed.0)
                .unsigned_abs()
                > duration
        }
        None => true,
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
        loop {
            match self.try_acquire(&api).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return LeaderLease { api, config: self };
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "leader election: cannot read or write the lease")
                }
            }
            tokio::time::sleep(self.renew_interval).await;
        }
    }

    async fn try_acquire(&self, api: &Api<Lease>) -> Result<bool, kube::Error> {
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
        let free = holder.is_empty() || holder == self.identity || expired(&spec, self.duration);
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
    /// Renews the lease until it is lost (taken over, or not renewable for its duration), and
    /// then returns.
    pub async fn hold(&self) {
        let mut last_renewal = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_interval).await;
            match self.renew().await {
                Ok(true) => last_renewal = std::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.config.name, "leadership lost: another replica holds the lease");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot renew the lease");
                    if last_renewal.elapsed() >= self.config.duration {
                        tracing::error!(lease = %self.config.name, "leadership lost: the lease could not be renewed in time");
                        return;
                    }
                }
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

    #[test]
    fn a_lease_expires_after_its_duration_without_renewal() {
        let fresh = LeaseSpec {
            renew_time: Some(now()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!expired(&fresh, Duration::from_secs(15)));
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(20);
        let stale = LeaseSpec {
            renew_time: Some(MicroTime(old)),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(expired(&stale, Duration::from_secs(15)));
        assert!(
            expired(&LeaseSpec::default(), Duration::from_secs(15)),
            "never renewed: free"
        );
    }
}
