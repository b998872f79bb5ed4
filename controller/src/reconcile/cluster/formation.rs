//! Forming the cluster from `spec.servers`, and keeping each member as written there, as the
//! LxdCluster reconciler's first step: look at every server ([`look`]), decide the next step
//! ([`decide`], pure), take it (trust, bootstrap, join), set each member's failure domain,
//! groups and labels ([`wanted_settings`], pure), and report each server in `status.servers`.
//!
//! One step a reconcile: a bootstrap or a join is followed at once by another reconcile, which
//! finds out from LXD what was done. A SIGKILL at any moment therefore costs nothing but the
//! step in flight, which the next look sees as done or not done.
//!
//! LXD makes a new certificate for a cluster when it bootstraps one. The operator learns it
//! over the connection it opened, pinned to the server's own certificate, before the bootstrap:
//! LXD keeps open connections when it changes its certificate. The learned fingerprint is the
//! pin from then on (`status.clusterCertificateFingerprint`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use lxd_operator_crds::LxdCluster;
use lxd_operator_crds::cluster::{ClusterServer, LxdClusterStatus, ServerPhase, ServerStatus};
use lxd_operator_crds::shared::{CONDITION_FORMED, CONDITION_VERSION_SKEW};

use super::super::connections::{ConnectionError, read_identity};
use super::super::context::Context;
use crate::lxd::membership::{JoinRequest, MemberConfigEntry, MemberSettings};
use crate::lxd::trust::{TrustToken, redeem};
use crate::lxd::types::ClusterMember;
use crate::lxd::{ClientConfig, ClientIdentity, Endpoint, LxdClient, LxdError, ServerTrust};

/// How soon to look again after a step (the next server joins at once).
const AFTER_A_STEP: Duration = Duration::from_millis(200);
/// How soon to look again while a server cannot go on (unreachable, no token).
const WHILE_WAITING: Duration = Duration::from_secs(10);
/// The LXD group every member is in.
const DEFAULT_GROUP: &str = "default";
/// Member config keys that carry labels.
const LABEL_PREFIX: &str = "user.";

/// What one server looks like from the operator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seen {
    /// It does not answer, or not with a certificate the operator may trust.
    Unreachable(String),
    /// It does not trust the operator, and its token could not make it.
    Untrusted {
        /// One word: NoToken, TokenSecret, TokenRejected.
        reason: &'static str,
        /// What went wrong, with LXD's own message.
        message: String,
    },
    /// It trusts the operator.
    Trusted(ServerFacts),
}

/// What a server that trusts the operator says of itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ServerFacts {
    /// Whether it is a cluster member.
    pub(crate) clustered: bool,
    /// Whether it is bootstrapping or joining now (an operation begun, perhaps by a process
    /// that was killed since).
    pub(crate) busy: bool,
    /// SHA-256 of the certificate it serves (the cluster's, once it is a member).
    pub(crate) fingerprint: String,
    /// Its LXD version.
    pub(crate) version: String,
}

/// The next step of forming the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Make this server (by name) the cluster: none is clustered yet.
    Bootstrap(String),
    /// Have this server join the cluster.
    Join(String),
    /// Nothing to form now.
    Rest,
}

/// Decides the next step (pure). `servers` in spec order; `cluster` is the fingerprint of the
/// formed cluster when known; `bootstrapping` a server a bootstrap was begun on, whose new
/// certificate the operator may never have learned.
pub(crate) fn decide(
    servers: &[(&str, &Seen)],
    cluster: Option<&str>,
    bootstrapping: Option<&str>,
) -> Step {
    let trusted = |seen: &&Seen| match seen {
        Seen::Trusted(facts) => Some(facts.clone()),
        _ => None,
    };
    // A bootstrap or a join under way is waited for: one at a time, never begun twice.
    if servers
        .iter()
        .any(|(_, seen)| trusted(seen).is_some_and(|f| f.busy))
    {
        return Step::Rest;
    }
    match cluster {
        // A bootstrap was begun on one server: only that one may be the cluster, whatever
        // became of it (tried again while it is not clustered; see `report` otherwise).
        None => match bootstrapping {
            Some(begun) => servers
                .iter()
                .find(|(name, seen)| *name == begun && trusted(seen).is_some_and(|f| !f.clustered))
                .map_or(Step::Rest, |(name, _)| Step::Bootstrap((*name).to_owned())),
            None => servers
                .iter()
                .find(|(_, seen)| trusted(seen).is_some_and(|f| !f.clustered))
                .map_or(Step::Rest, |(name, _)| Step::Bootstrap((*name).to_owned())),
        },
        Some(cluster) => {
            let any_member = servers.iter().any(|(_, seen)| {
                trusted(seen).is_some_and(|f| f.clustered && f.fingerprint == cluster)
            });
            if !any_member {
                return Step::Rest;
            }
            servers
                .iter()
                .find(|(_, seen)| trusted(seen).is_some_and(|f| !f.clustered))
                .map_or(Step::Rest, |(name, _)| Step::Join((*name).to_owned()))
        }
    }
}

/// The settings a member must get so that it is as `server` asks, or `None` when it is so
/// already (pure). Labels are its `user.*` keys, exactly; other keys are left as they are.
/// The failure domain is set only when the spec names one.
pub(crate) fn wanted_settings(
    server: &ClusterServer,
    member: &ClusterMember,
) -> Option<MemberSettings> {
    let current = MemberSettings::of(member);
    let mut wanted = current.clone();
    if let Some(domain) = &server.failure_domain {
        wanted.failure_domain.clone_from(domain);
    }
    wanted
        .config
        .retain(|key, _| !key.starts_with(LABEL_PREFIX));
    for (key, value) in &server.labels {
        wanted
            .config
            .insert(format!("{LABEL_PREFIX}{key}"), value.clone());
    }
    let mut groups: Vec<String> = std::iter::once(DEFAULT_GROUP.to_owned())
        .chain(server.groups.iter().cloned())
        .collect();
    groups.sort();
    groups.dedup();
    wanted.groups = groups;
    let mut sorted_current = current.groups.clone();
    sorted_current.sort();
    let same = wanted.failure_domain == current.failure_domain
        && wanted.config == current.config
        && wanted.groups == sorted_current;
    (!same).then_some(wanted)
}

/// What forming came to in this reconcile.
#[derive(Debug, Default)]
pub(crate) struct Formation {
    /// How soon to look again, when sooner than the sync interval.
    pub(crate) requeue: Option<Duration>,
    /// A bootstrap or a join was made: the next step should follow at once.
    pub(crate) step_taken: bool,
}

/// One server, the operator's client of it, and what it looks like.
struct Server<'a> {
    spec: &'a ClusterServer,
    client: Option<LxdClient>,
    seen: Seen,
}

/// Forms and keeps the cluster; writes `status.servers` and the learned cluster certificate
/// into `status` (the caller writes status).
pub(crate) async fn form(
    cluster: &LxdCluster,
    status: &mut LxdClusterStatus,
    ctx: &Context,
) -> Result<Formation, ConnectionError> {
    let spec = &cluster.spec;
    let Some(reference) = &spec.client_cert_secret_ref else {
        return Err(ConnectionError::InvalidSpec {
            field: "spec.clientCertSecretRef".to_owned(),
            rule: "forming a cluster from servers needs the operator's client certificate Secret"
                .to_owned(),
        });
    };
    check_servers(&spec.servers)?;
    let (identity, _) =
        read_identity(&ctx.client, reference, ctx.connections.secret_scope()).await?;
    let pinned_cluster = match &spec.server_certificate {
        Some(pin) => pin.fingerprint.clone().map(|f| normalise(&f)),
        None => status.cluster_certificate_fingerprint.clone(),
    };
    let previous: BTreeMap<String, ServerStatus> = status
        .servers
        .iter()
        .map(|s| (s.name.clone(), s.clone()))
        .collect();

    // Every server at once: each look is a TLS handshake or two, and a token to redeem.
    let mut servers: Vec<Server<'_>> = futures::future::join_all(
        spec.servers
            .iter()
            .enumerate()
            .map(|(index, server)| look(index, server, &identity, pinned_cluster.as_deref(), ctx)),
    )
    .await;
    let mut bootstrapping = previous
        .values()
        .find(|s| {
            matches!(
                s.reason.as_str(),
                "Bootstrapping" | "BootstrapFailed" | "CertificateUnknown"
            )
        })
        .map(|s| s.name.clone())
        .filter(|_| pinned_cluster.is_none());
    let mut known_cluster = pinned_cluster.clone();

    let mut outcome = Formation::default();
    let mut notes: BTreeMap<String, (ServerPhase, &'static str, String)> = BTreeMap::new();
    // Step after step (bootstrap, then each join in turn) while each succeeds; every step is
    // recorded in status before it is taken.
    loop {
        let views: Vec<(&str, &Seen)> = servers
            .iter()
            .map(|s| (s.spec.name.as_str(), &s.seen))
            .collect();
        let (name, bootstraps) =
            match decide(&views, known_cluster.as_deref(), bootstrapping.as_deref()) {
                Step::Rest => break,
                Step::Bootstrap(name) => (name, true),
                Step::Join(name) => (name, false),
            };
        let Some(index) = servers.iter().position(|s| s.spec.name == name) else {
            break;
        };
        let Some(client) = servers[index].client.clone() else {
            break;
        };
        let spec_of = servers[index].spec;
        outcome.requeue = Some(AFTER_A_STEP);
        outcome.step_taken = true;
        let fingerprint = match bootstraps {
            true => {
                // Recorded before it is done: should the process die before the new
                // certificate is learned, the next one must not bootstrap a second cluster.
                set_server(
                    status,
                    spec_of,
                    ServerPhase::Joining,
                    "Bootstrapping",
                    "bootstrapping the cluster on this server".to_owned(),
                );
                write_now(cluster, status, ctx).await;
                match bootstrap(spec_of, &client).await {
                    Ok(fingerprint) => {
                        status.cluster_certificate_fingerprint = Some(fingerprint.clone());
                        let prepared = match cluster_client(&[spec_of], &identity, &fingerprint) {
                            Ok(new_cluster) => prepare_storage(&new_cluster, cluster).await,
                            Err(error) => Err(error),
                        };
                        let message = match prepared {
                            Ok(()) => format!(
                                "the cluster was bootstrapped on this server; its certificate is sha256:{fingerprint}"
                            ),
                            Err(error) => format!(
                                "the cluster was bootstrapped on this server (certificate sha256:{fingerprint}), but its storage pools could not be made: {error}"
                            ),
                        };
                        notes.insert(name.clone(), (ServerPhase::Online, "Bootstrapped", message));
                        announce(ctx, cluster, EventType::Normal, "Bootstrapped", format!("server {name} bootstrapped the cluster (certificate sha256:{fingerprint})")).await;
                        bootstrapping = None;
                        known_cluster = Some(fingerprint.clone());
                        fingerprint
                    }
                    Err(error) => {
                        notes.insert(
                            name.clone(),
                            (
                                ServerPhase::Failed,
                                "BootstrapFailed",
                                format!("bootstrapping failed: {error}"),
                            ),
                        );
                        announce(
                            ctx,
                            cluster,
                            EventType::Warning,
                            "BootstrapFailed",
                            format!("server {name}: {error}"),
                        )
                        .await;
                        break;
                    }
                }
            }
            false => {
                let Some(fingerprint) = known_cluster.clone() else {
                    break;
                };
                let members: Vec<&ClusterServer> = servers
                    .iter()
                    .filter(|s| is_member(&s.seen, &fingerprint))
                    .map(|s| s.spec)
                    .collect();
                set_server(
                    status,
                    spec_of,
                    ServerPhase::Joining,
                    "Joining",
                    "joining the cluster".to_owned(),
                );
                write_now(cluster, status, ctx).await;
                let result = match cluster_client(&members, &identity, &fingerprint) {
                    Ok(cluster_access) => join(spec_of, &client, &cluster_access, &members).await,
                    Err(error) => Err(error),
                };
                match result {
                    Ok(()) => {
                        notes.insert(
                            name.clone(),
                            (
                                ServerPhase::Online,
                                "Joined",
                                "joined the cluster".to_owned(),
                            ),
                        );
                        announce(
                            ctx,
                            cluster,
                            EventType::Normal,
                            "Joined",
                            format!("server {name} joined the cluster"),
                        )
                        .await;
                        fingerprint
                    }
                    Err(error) => {
                        notes.insert(
                            name.clone(),
                            (
                                ServerPhase::Failed,
                                "JoinFailed",
                                format!("joining failed: {error}"),
                            ),
                        );
                        announce(
                            ctx,
                            cluster,
                            EventType::Warning,
                            "JoinFailed",
                            format!("server {name}: {error}"),
                        )
                        .await;
                        break;
                    }
                }
            }
        };
        // It is a member now: the next step counts it as one.
        if let Seen::Trusted(facts) = &mut servers[index].seen {
            facts.clustered = true;
            facts.busy = false;
            facts.fingerprint = fingerprint;
        }
    }

    // Members as the cluster lists them, and each one's settings.
    let mut listed: BTreeMap<String, ClusterMember> = BTreeMap::new();
    let mut cluster_access: Option<LxdClient> = None;
    if let Some(fingerprint) = known_cluster.clone() {
        let members: Vec<&ClusterServer> = servers
            .iter()
            .filter(|s| is_member(&s.seen, &fingerprint))
            .map(|s| s.spec)
            .collect();
        if let Ok(client) = cluster_client(&members, &identity, &fingerprint)
            && let Ok(found) = client.members().await
        {
            for member in found {
                if let Some(server) = spec.servers.iter().find(|s| s.name == member.server_name)
                    && member.status == "Online"
                    && let Some(settings) = wanted_settings(server, &member)
                {
                    let applied = apply_settings(&client, server, &settings).await;
                    match applied {
                        Ok(()) => {
                            announce(ctx, cluster, EventType::Normal, "MemberSettings", format!("member {}: failure domain {:?}, groups {:?} and labels set as spec.servers says", member.server_name, settings.failure_domain, settings.groups)).await;
                        }
                        Err(error) => {
                            notes.insert(member.server_name.clone(), (ServerPhase::Failed, "SettingsFailed", format!("setting its failure domain, groups and labels failed: {error}")));
                        }
                    }
                }
                listed.insert(member.server_name.clone(), member);
            }
            cluster_access = Some(client);
        }
    }

    // Servers the operator joined that left spec.servers: emptied of our containers, then
    // removed from the cluster.
    let mut leaving = Vec::new();
    for before in previous
        .values()
        .filter(|b| b.joined_by_operator && !spec.servers.iter().any(|s| s.name == b.name))
    {
        let Some(client) = &cluster_access else {
            // The cluster cannot be asked now: nothing is concluded.
            leaving.push(before.clone());
            continue;
        };
        let Some(member) = listed.get(&before.name) else {
            announce_removed(
                ctx,
                cluster,
                &before.name,
                "is no member of the cluster any more",
            )
            .await;
            continue;
        };
        let mut entry = before.clone();
        entry.roles.clone_from(&member.roles);
        let ours = containers_on(ctx, cluster, &before.name);
        let members: Vec<ClusterMember> = listed.values().cloned().collect();
        if ours > 0 {
            entry.phase = ServerPhase::Draining;
            entry.reason = "Draining".to_owned();
            entry.message = format!(
                "left spec.servers: {ours} of our containers are moved off it before it is removed from the cluster"
            );
        } else if let Err(why) = removal_keeps_quorum(&members, &before.name) {
            entry.phase = ServerPhase::Draining;
            entry.reason = "QuorumAtRisk".to_owned();
            entry.message = format!("left spec.servers, but it stays a member: {why}");
        } else {
            match client.remove_cluster_member(&before.name).await {
                Ok(()) => {
                    announce_removed(
                        ctx,
                        cluster,
                        &before.name,
                        "left spec.servers and was removed from the cluster",
                    )
                    .await;
                    outcome.step_taken = true;
                    outcome.requeue = Some(AFTER_A_STEP);
                    continue;
                }
                Err(error) => {
                    entry.phase = ServerPhase::Removing;
                    entry.reason = "RemoveFailed".to_owned();
                    entry.message = format!("removing it from the cluster failed: {error}");
                }
            }
        }
        if outcome.requeue.is_none() {
            outcome.requeue = Some(WHILE_WAITING);
        }
        leaving.push(entry);
    }

    // Report each server.
    let mut reported = Vec::new();
    for server in &servers {
        let before = previous.get(&server.spec.name);
        let mut entry = report(
            server.spec,
            &server.seen,
            listed.get(&server.spec.name),
            known_cluster.as_deref(),
            bootstrapping.as_deref(),
        );
        if let Some((phase, reason, message)) = notes.remove(&server.spec.name) {
            if phase == ServerPhase::Failed || entry.phase != ServerPhase::Online {
                entry.phase = phase;
            }
            entry.reason = reason.to_owned();
            entry.message = message;
        }
        entry.joined_by_operator = before.is_some_and(|b| b.joined_by_operator)
            || matches!(entry.reason.as_str(), "Bootstrapped" | "Joined");
        if entry.phase != ServerPhase::Online && outcome.requeue.is_none() {
            outcome.requeue = Some(WHILE_WAITING);
        }
        reported.push(entry);
    }
    reported.extend(leaving);
    status.servers = reported;
    Ok(outcome)
}

/// The `Formed` and `VersionSkew` conditions of the servers as reported (pure).
pub(crate) fn conditions(
    cluster: &LxdCluster,
    status: &LxdClusterStatus,
) -> Vec<(&'static str, bool, &'static str, String)> {
    let listed: Vec<&ServerStatus> = status
        .servers
        .iter()
        .filter(|s| cluster.spec.servers.iter().any(|w| w.name == s.name))
        .collect();
    let online = listed
        .iter()
        .filter(|s| s.phase == ServerPhase::Online)
        .count();
    let wanted = cluster.spec.servers.len();
    let formed = if online == wanted {
        (
            CONDITION_FORMED,
            true,
            "Formed",
            format!("all {wanted} servers are online members"),
        )
    } else {
        // Each server that is not there yet, by name, with its phase and why.
        let waiting: Vec<String> = cluster
            .spec
            .servers
            .iter()
            .filter_map(
                |wanted| match listed.iter().find(|s| s.name == wanted.name) {
                    Some(seen) if seen.phase == ServerPhase::Online => None,
                    Some(seen) => Some(format!("{} {:?} ({})", seen.name, seen.phase, seen.reason)),
                    None => Some(format!("{} Pending", wanted.name)),
                },
            )
            .collect();
        (
            CONDITION_FORMED,
            false,
            "Forming",
            format!(
                "{online} of {wanted} servers are online members; not yet: {}",
                waiting.join(", ")
            ),
        )
    };
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for server in &listed {
        if !server.lxd_version.is_empty() {
            versions
                .entry(server.lxd_version.as_str())
                .or_default()
                .push(server.name.as_str());
        }
    }
    let skew = if versions.len() > 1 {
        let named: Vec<String> = versions
            .iter()
            .map(|(version, names)| format!("{version} on {}", names.join(", ")))
            .collect();
        (
            CONDITION_VERSION_SKEW,
            true,
            "MixedVersions",
            format!(
                "the servers run different LXD versions: {}",
                named.join("; ")
            ),
        )
    } else {
        (
            CONDITION_VERSION_SKEW,
            false,
            "SameVersion",
            "every server runs the same LXD version".to_owned(),
        )
    };
    vec![formed, skew]
}

/// Names and addresses must each be unique in `spec.servers` (the API refuses a name twice;
/// an address twice is refused here, before anything is done).
fn check_servers(servers: &[ClusterServer]) -> Result<(), ConnectionError> {
    let address = |server: &ClusterServer| host_port(&server.address).to_lowercase();
    for (index, server) in servers.iter().enumerate() {
        let earlier = &servers[..index];
        let repeated = if let Some(first) = earlier.iter().position(|e| e.name == server.name) {
            Some(("name", first))
        } else {
            earlier
                .iter()
                .position(|e| address(e) == address(server))
                .map(|first| ("address", first))
        };
        if let Some((field, first)) = repeated {
            return Err(ConnectionError::InvalidSpec {
                field: format!("spec.servers[{index}].{field}"),
                rule: format!("must be unique: spec.servers[{first}].{field} is the same"),
            });
        }
    }
    Ok(())
}

/// Whether removing `removed` leaves the cluster's database a majority of its voters online
/// (pure): LXD's database (dqlite) stops when fewer than half of its voters answer.
pub(crate) fn removal_keeps_quorum(members: &[ClusterMember], removed: &str) -> Result<(), String> {
    if members.iter().all(|m| m.server_name == removed) {
        return Err("it is the cluster's last member".to_owned());
    }
    let is_voter = |m: &&ClusterMember| m.roles.iter().any(|r| r == "database");
    if !members
        .iter()
        .filter(is_voter)
        .any(|m| m.server_name == removed)
    {
        return Ok(());
    }
    let remaining: Vec<&ClusterMember> = members
        .iter()
        .filter(is_voter)
        .filter(|m| m.server_name != removed)
        .collect();
    let online = remaining.iter().filter(|m| m.status == "Online").count();
    if remaining.is_empty() {
        // LXD promotes another member to the database when the only voter leaves.
        return if members
            .iter()
            .any(|m| m.server_name != removed && m.status == "Online")
        {
            Ok(())
        } else {
            Err("no other member is online to take over the database".to_owned())
        };
    }
    if online * 2 > remaining.len() {
        Ok(())
    } else {
        Err(format!(
            "removing it would leave {online} of the {} other database members online, less than a majority; bring the offline ones back first",
            remaining.len()
        ))
    }
}

/// How many of our containers are on `member` of `cluster` (or moving off it).
fn containers_on(ctx: &Context, cluster: &LxdCluster, member: &str) -> usize {
    let name = cluster.name_any();
    ctx.containers
        .state_filter(|c| c.spec.cluster_ref.name == name)
        .iter()
        .filter(|c| {
            c.status.as_ref().is_some_and(|s| {
                s.member.as_deref() == Some(member)
                    || s.moving.as_ref().is_some_and(|m| m.from == member)
            })
        })
        .count()
}

/// A server's entry in status, from what it looks like and the cluster's list (pure).
fn report(
    server: &ClusterServer,
    seen: &Seen,
    member: Option<&ClusterMember>,
    cluster: Option<&str>,
    bootstrapping: Option<&str>,
) -> ServerStatus {
    let mut entry = ServerStatus {
        name: server.name.clone(),
        address: server.address.clone(),
        ..ServerStatus::default()
    };
    let (phase, reason, message) = match seen {
        Seen::Unreachable(message)
            if bootstrapping == Some(server.name.as_str()) && cluster.is_none() =>
        {
            (
                ServerPhase::Failed,
                "CertificateUnknown",
                format!(
                    "the cluster was being bootstrapped on this server when the operator stopped, and the new cluster certificate it serves was never learned over a pinned connection ({message}); set spec.serverCertificate.fingerprint to the fingerprint `lxc info` shows there"
                ),
            )
        }
        Seen::Unreachable(message) => match member {
            Some(member) => (
                ServerPhase::Offline,
                "Unreachable",
                format!("the cluster lists it {}: {message}", member.status),
            ),
            None => (ServerPhase::Pending, "Unreachable", message.clone()),
        },
        Seen::Untrusted { reason, message } => (ServerPhase::Failed, *reason, message.clone()),
        Seen::Trusted(facts) => {
            entry.lxd_version.clone_from(&facts.version);
            if facts.clustered && Some(facts.fingerprint.as_str()) != cluster {
                (
                    ServerPhase::Failed,
                    "OtherCluster",
                    format!(
                        "the server is a member of another cluster (certificate sha256:{}); remove it from that cluster first",
                        facts.fingerprint
                    ),
                )
            } else if facts.clustered {
                match member {
                    Some(member) => {
                        entry.roles.clone_from(&member.roles);
                        let phase = if member.status == "Online" {
                            ServerPhase::Online
                        } else {
                            ServerPhase::Offline
                        };
                        (
                            phase,
                            "Member",
                            format!("a member of the cluster ({})", member.status),
                        )
                    }
                    None => (
                        ServerPhase::Online,
                        "Member",
                        "a member of the cluster".to_owned(),
                    ),
                }
            } else if facts.busy {
                (
                    ServerPhase::Joining,
                    "Joining",
                    "joining the cluster (LXD's operation is under way)".to_owned(),
                )
            } else if cluster.is_some() {
                (
                    ServerPhase::Pending,
                    "WaitingToJoin",
                    "trusted; waits for its turn to join".to_owned(),
                )
            } else {
                (
                    ServerPhase::Pending,
                    "WaitingForCluster",
                    "trusted; waits for a server to bootstrap the cluster".to_owned(),
                )
            }
        }
    };
    entry.phase = phase;
    entry.reason = reason.to_owned();
    entry.message = message;
    entry
}

/// Connects to one server (pinned to its token's certificate and to the cluster's), has its
/// token redeemed when it does not trust the operator yet, and says what it looks like.
async fn look<'a>(
    index: usize,
    server: &'a ClusterServer,
    identity: &ClientIdentity,
    cluster: Option<&str>,
    ctx: &Context,
) -> Server<'a> {
    let unusable = |seen: Seen| Server {
        spec: server,
        client: None,
        seen,
    };
    let endpoint = match Endpoint::parse(&server.address) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            return unusable(Seen::Untrusted {
                reason: "InvalidSpec",
                message: format!("spec.servers[{index}].address: {error}"),
            });
        }
    };
    let token = match &server.trust_token_secret_ref {
        Some(reference) => Some(read_token(ctx, reference, index).await),
        None => None,
    };
    let mut pins = Vec::new();
    if let Some(Ok(token)) = &token
        && let Ok(ServerTrust::Pinned(pin)) = ServerTrust::from_fingerprint(&token.fingerprint)
    {
        pins.push(pin);
    }
    if let Some(cluster) = cluster
        && let Ok(ServerTrust::Pinned(pin)) = ServerTrust::from_fingerprint(cluster)
    {
        pins.push(pin);
    }
    if pins.is_empty() {
        let message = match token {
            Some(Err(message)) => message,
            _ => format!(
                "spec.servers[{index}].trustTokenSecretRef: a trust token is needed to trust this server (none is given, and the cluster's certificate is not known yet)"
            ),
        };
        return unusable(Seen::Untrusted {
            reason: "NoToken",
            message,
        });
    }
    let config = ClientConfig::new(
        vec![endpoint],
        Some(identity.clone()),
        ServerTrust::PinnedOneOf(pins),
    );
    let client = match LxdClient::new(config) {
        Ok(client) => client,
        Err(error) => return unusable(Seen::Unreachable(error.to_string())),
    };
    let mut info = match client.server_info().await {
        Ok(info) => info,
        Err(error) => {
            return Server {
                spec: server,
                client: Some(client),
                seen: Seen::Unreachable(error.to_string()),
            };
        }
    };
    if !info.is_trusted() {
        let seen = match token {
            Some(Ok(token)) => match redeem(&token, identity.clone(), None).await {
                Ok(_) => match client.server_info().await {
                    Ok(again) if again.is_trusted() => {
                        info = again;
                        None
                    }
                    Ok(_) => Some(Seen::Untrusted { reason: "TokenRejected", message: "the token was accepted, but the server still does not trust the operator's certificate".to_owned() }),
                    Err(error) => Some(Seen::Unreachable(error.to_string())),
                },
                Err(error) => Some(Seen::Untrusted { reason: "TokenRejected", message: format!("the server refused the trust token: {error}") }),
            },
            Some(Err(message)) => Some(Seen::Untrusted { reason: "TokenSecret", message }),
            None => Some(Seen::Untrusted { reason: "NoToken", message: format!("the server does not trust the operator's certificate, and spec.servers[{index}].trustTokenSecretRef names no token") }),
        };
        if let Some(seen) = seen {
            return Server {
                spec: server,
                client: Some(client),
                seen,
            };
        }
    }
    let busy = !info.environment.server_clustered
        && client.operations().await.is_ok_and(|operations| {
            operations.iter().any(|operation| {
                !operation.is_done()
                    && matches!(
                        operation.description.as_str(),
                        "Joining cluster" | "Creating bootstrap node"
                    )
            })
        });
    let facts = ServerFacts {
        clustered: info.environment.server_clustered,
        busy,
        fingerprint: normalise(&info.environment.certificate_fingerprint),
        version: info.environment.server_version.clone(),
    };
    Server {
        spec: server,
        client: Some(client),
        seen: Seen::Trusted(facts),
    }
}

/// The trust token in a server's Secret.
async fn read_token(
    ctx: &Context,
    reference: &lxd_operator_crds::cluster::SecretKeyReference,
    index: usize,
) -> Result<TrustToken, String> {
    let field = format!("spec.servers[{index}].trustTokenSecretRef");
    ctx.connections
        .secret_scope()
        .check(&reference.namespace)
        .map_err(|rule| format!("{field}.namespace: {rule}"))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &reference.namespace);
    let secret = secrets.get(&reference.name).await.map_err(|error| {
        format!(
            "{field}: Secret {}/{}: {error}",
            reference.namespace, reference.name
        )
    })?;
    let text = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(&reference.key).cloned())
        })
        .ok_or_else(|| {
            format!(
                "{field}: Secret {}/{} has no key {}",
                reference.namespace, reference.name, reference.key
            )
        })?;
    TrustToken::decode(&text).map_err(|error| format!("{field}: {error}"))
}

/// Bootstraps the cluster on `server`, and learns its new certificate over the same (pinned)
/// connection. Returns the cluster certificate's fingerprint.
async fn bootstrap(server: &ClusterServer, client: &LxdClient) -> Result<String, LxdError> {
    let begun = client.bootstrap_cluster(&server.name).await;
    // Whatever the answer, the server says whether it is the cluster now.
    let info = client.server_info().await?;
    if let Err(error) = begun
        && !info.environment.server_clustered
    {
        return Err(error);
    }
    let fingerprint = normalise(&info.environment.certificate_fingerprint);
    if !info.environment.server_clustered || fingerprint.is_empty() {
        return Err(LxdError::UnexpectedResponse {
            endpoint: server.address.clone(),
            status: 200,
            detail: "the server does not say it is clustered after the bootstrap".to_owned(),
            body: String::new(),
        });
    }
    Ok(fingerprint)
}

/// Makes the cluster's storage pools and puts the default profile's root disk on the first,
/// as `lxd init` does, on a cluster of one just bootstrapped.
async fn prepare_storage(client: &LxdClient, cluster: &LxdCluster) -> Result<(), LxdError> {
    let existing = client.storage_pool_names().await?;
    for pool in &cluster.spec.storage_pools {
        if !existing.contains(&pool.name) {
            client
                .create_storage_pool(&pool.name, &pool.driver, &pool.config)
                .await?;
        }
    }
    if let Some(first) = cluster.spec.storage_pools.first() {
        client.ensure_default_root_disk(&first.name).await?;
    }
    Ok(())
}

/// Has `server` join: trusts its server certificate on the cluster (which `lxd init` does on
/// the joiner with its own key), issues a join token for its name, and has it redeem the
/// token with the member config the cluster's storage pools need.
async fn join(
    server: &ClusterServer,
    joiner: &LxdClient,
    cluster: &LxdClient,
    members: &[&ClusterServer],
) -> Result<(), LxdError> {
    let own = joiner.server_info().await?;
    cluster
        .trust_server_certificate(&server.name, &own.environment.certificate)
        .await?;
    let token = cluster.join_token(&server.name).await?;
    let cluster_info = cluster.server_info().await?;
    let member_config = cluster
        .storage_pool_names()
        .await?
        .into_iter()
        .map(|pool| MemberConfigEntry {
            entity: "storage-pool".to_owned(),
            value: server
                .storage_pools
                .iter()
                .find(|p| p.name == pool)
                .map(|p| p.source.clone())
                .unwrap_or_default(),
            name: pool,
            key: "source".to_owned(),
        })
        .collect();
    let cluster_address = members
        .first()
        .map(|m| host_port(&m.address))
        .unwrap_or_default();
    let request = JoinRequest {
        server_name: server.name.clone(),
        server_address: host_port(&server.address),
        enabled: true,
        cluster_address,
        cluster_certificate: cluster_info.environment.certificate,
        cluster_token: token,
        member_config,
    };
    if let Err(error) = joiner.join_cluster(&request).await {
        // A failed join burns the token; a pending one would block the next.
        let _ = cluster.revoke_join_tokens(&server.name).await;
        return Err(error);
    }
    Ok(())
}

async fn apply_settings(
    client: &LxdClient,
    server: &ClusterServer,
    settings: &MemberSettings,
) -> Result<(), LxdError> {
    for group in &settings.groups {
        if group != DEFAULT_GROUP {
            client.ensure_cluster_group(group).await?;
        }
    }
    client.update_cluster_member(&server.name, settings).await
}

/// A client of the formed cluster, through the servers that are its members.
fn cluster_client(
    members: &[&ClusterServer],
    identity: &ClientIdentity,
    fingerprint: &str,
) -> Result<LxdClient, LxdError> {
    let endpoints = members
        .iter()
        .map(|m| Endpoint::parse(&m.address))
        .collect::<Result<Vec<_>, _>>()?;
    LxdClient::new(ClientConfig::new(
        endpoints,
        Some(identity.clone()),
        ServerTrust::from_fingerprint(fingerprint)?,
    ))
}

fn is_member(seen: &Seen, cluster: &str) -> bool {
    matches!(seen, Seen::Trusted(facts) if facts.clustered && facts.fingerprint == cluster)
}

/// `host:port` of `https://host:port/`.
fn host_port(address: &str) -> String {
    address
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

fn normalise(fingerprint: &str) -> String {
    fingerprint
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .replace(':', "")
        .to_lowercase()
}

fn set_server(
    status: &mut LxdClusterStatus,
    server: &ClusterServer,
    phase: ServerPhase,
    reason: &str,
    message: String,
) {
    let entry = match status.servers.iter_mut().find(|s| s.name == server.name) {
        Some(entry) => entry,
        None => {
            status.servers.push(ServerStatus {
                name: server.name.clone(),
                address: server.address.clone(),
                ..ServerStatus::default()
            });
            let last = status.servers.len() - 1;
            &mut status.servers[last]
        }
    };
    entry.phase = phase;
    entry.reason = reason.to_owned();
    entry.message = message;
}

/// Writes the status as it is now, before a step whose outcome a crash could hide.
async fn write_now(cluster: &LxdCluster, status: &LxdClusterStatus, ctx: &Context) {
    let api: Api<LxdCluster> = Api::all(ctx.client.clone());
    match super::super::status::write_status(&api, cluster, cluster.status.as_ref(), status).await {
        Ok(()) => ctx.cluster_statuses.remember(cluster, status),
        Err(error) => tracing::warn!(%error, "cannot record a forming step in status"),
    }
}

async fn announce_removed(ctx: &Context, cluster: &LxdCluster, server: &str, how: &str) {
    announce(
        ctx,
        cluster,
        EventType::Normal,
        "Removed",
        format!("server {server} {how}"),
    )
    .await;
}

async fn announce(
    ctx: &Context,
    cluster: &LxdCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    tracing::info!(cluster = %cluster.name_any(), reason, %note, "forming the cluster");
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "FormCluster".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "cannot publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(clustered: bool, fingerprint: &str) -> Seen {
        Seen::Trusted(ServerFacts {
            clustered,
            busy: false,
            fingerprint: fingerprint.to_owned(),
            version: "5.0.2".to_owned(),
        })
    }

    fn server(name: &str) -> ClusterServer {
        ClusterServer {
            name: name.to_owned(),
            address: format!("https://{name}:8443"),
            trust_token_secret_ref: None,
            failure_domain: None,
            groups: Vec::new(),
            labels: BTreeMap::new(),
            storage_pools: Vec::new(),
        }
    }

    fn member(name: &str, status: &str, roles: &[&str]) -> ClusterMember {
        ClusterMember {
            server_name: name.to_owned(),
            status: status.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            failure_domain: "default".to_owned(),
            groups: vec!["default".to_owned()],
            ..ClusterMember::default()
        }
    }

    #[test]
    fn the_first_trusted_server_bootstraps_and_the_others_join_one_at_a_time() {
        let unreachable = Seen::Unreachable("refused".to_owned());
        let bare = trusted(false, "aa");
        assert_eq!(
            decide(
                &[("a", &unreachable), ("b", &bare), ("c", &bare)],
                None,
                None
            ),
            Step::Bootstrap("b".to_owned())
        );
        let member = trusted(true, "cc");
        assert_eq!(
            decide(
                &[("a", &member), ("b", &bare), ("c", &bare)],
                Some("cc"),
                None
            ),
            Step::Join("b".to_owned())
        );
        // A member of another cluster is nobody to join with.
        let stranger = trusted(true, "ff");
        assert_eq!(
            decide(&[("a", &stranger), ("b", &bare)], Some("cc"), None),
            Step::Rest
        );
        // A join under way is waited for.
        let joining = Seen::Trusted(ServerFacts {
            busy: true,
            ..ServerFacts::default()
        });
        assert_eq!(
            decide(
                &[("a", &member), ("b", &joining), ("c", &bare)],
                Some("cc"),
                None
            ),
            Step::Rest
        );
    }

    #[test]
    fn a_bootstrap_begun_is_only_ever_tried_again_on_the_same_server() {
        let bare = trusted(false, "aa");
        let unknown = Seen::Unreachable("certificate mismatch".to_owned());
        assert_eq!(
            decide(&[("a", &bare), ("b", &bare)], None, Some("b")),
            Step::Bootstrap("b".to_owned())
        );
        assert_eq!(
            decide(&[("a", &bare), ("b", &unknown)], None, Some("b")),
            Step::Rest
        );
        let reported = report(&server("b"), &unknown, None, None, Some("b"));
        assert_eq!(reported.phase, ServerPhase::Failed);
        assert_eq!(reported.reason, "CertificateUnknown");
        assert!(
            reported
                .message
                .contains("spec.serverCertificate.fingerprint")
        );
    }

    #[test]
    fn settings_are_changed_only_where_they_differ_from_the_spec() {
        let mut wanted = server("b");
        wanted.failure_domain = Some("rack-b".to_owned());
        wanted.groups = vec!["fast".to_owned()];
        wanted.labels = BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]);
        let mut current = member("b", "Online", &["database"]);
        current
            .config
            .insert("scheduler.instance".to_owned(), "all".to_owned());
        current
            .config
            .insert("user.stale".to_owned(), "x".to_owned());
        let settings = wanted_settings(&wanted, &current).unwrap();
        assert_eq!(settings.failure_domain, "rack-b");
        assert_eq!(settings.groups, ["default", "fast"]);
        assert_eq!(
            settings.config,
            BTreeMap::from([
                ("scheduler.instance".to_owned(), "all".to_owned()),
                ("user.disk".to_owned(), "ssd".to_owned()),
            ])
        );
        assert_eq!(settings.roles, ["database"]);
        // Once set, nothing more to do; a failure domain the spec leaves out is left alone.
        let mut done = current.clone();
        done.failure_domain = "rack-b".to_owned();
        done.groups = vec!["fast".to_owned(), "default".to_owned()];
        done.config = settings.config.clone();
        assert_eq!(wanted_settings(&wanted, &done), None);
        wanted.failure_domain = None;
        done.failure_domain = "rack-z".to_owned();
        assert_eq!(wanted_settings(&wanted, &done), None);
    }

    #[test]
    fn the_formed_condition_names_each_server_not_there_yet_and_why() {
        let mut cluster = LxdCluster::new(
            "formed",
            serde_json::from_value(serde_json::json!({})).unwrap(),
        );
        cluster.spec.servers = vec![server("a"), server("b"), server("c")];
        let status = LxdClusterStatus {
            servers: vec![
                ServerStatus {
                    name: "a".to_owned(),
                    phase: ServerPhase::Online,
                    lxd_version: "5.0.2".to_owned(),
                    ..ServerStatus::default()
                },
                ServerStatus {
                    name: "b".to_owned(),
                    phase: ServerPhase::Failed,
                    reason: "TokenRejected".to_owned(),
                    lxd_version: "5.21".to_owned(),
                    ..ServerStatus::default()
                },
            ],
            ..LxdClusterStatus::default()
        };
        let conditions = conditions(&cluster, &status);
        assert_eq!(
            conditions[0],
            (
                CONDITION_FORMED,
                false,
                "Forming",
                "1 of 3 servers are online members; not yet: b Failed (TokenRejected), c Pending"
                    .to_owned()
            )
        );
        assert_eq!(
            conditions[1],
            (
                CONDITION_VERSION_SKEW,
                true,
                "MixedVersions",
                "the servers run different LXD versions: 5.0.2 on a; 5.21 on b".to_owned()
            )
        );
    }

    #[test]
    fn a_server_address_listed_twice_is_refused_naming_both_entries() {
        let mut servers = vec![server("a"), server("b")];
        assert!(check_servers(&servers).is_ok());
        servers[1].address = "https://A:8443/".to_owned();
        let error = check_servers(&servers).unwrap_err().to_string();
        assert_eq!(
            error,
            "spec.servers[1].address: must be unique: spec.servers[0].address is the same"
        );
    }

    #[test]
    fn a_removal_that_would_cost_the_database_its_majority_is_refused() {
        let voters = |statuses: [&str; 3]| -> Vec<ClusterMember> {
            ["a", "b", "c"]
                .iter()
                .zip(statuses)
                .map(|(name, status)| member(name, status, &["database"]))
                .collect()
        };
        assert_eq!(removal_keeps_quorum(&voters(["Online"; 3]), "c"), Ok(()));
        let refused = removal_keeps_quorum(&voters(["Online", "Offline", "Online"]), "c");
        assert!(
            refused
                .unwrap_err()
                .contains("1 of the 2 other database members")
        );
        // A member without the database role goes whatever the others do.
        let mut members = voters(["Online", "Offline", "Online"]);
        members.push(member("d", "Online", &[]));
        assert_eq!(removal_keeps_quorum(&members, "d"), Ok(()));
        // The only voter may go while another member is online to take over.
        let pair = vec![
            member("a", "Online", &["database"]),
            member("b", "Online", &[]),
        ];
        assert_eq!(removal_keeps_quorum(&pair, "a"), Ok(()));
        assert!(removal_keeps_quorum(&pair[..1], "a").is_err());
    }
}
