//! The operator's only door to LXD: a client of one LXD cluster over HTTPS (mutual TLS, the
//! server pinned by certificate) or a local unix socket.
//!
//! - [`client`]: endpoints, failover between members, request/answer mapping to [`LxdError`].
//! - [`tls`]: client identity and server pinning.
//! - [`cluster`], [`instances`]: typed calls ([`types`] holds the shapes).
//! - [`operations`]: waiting where an operation lives; settling lost operations; create-or-adopt.
//! - [`events`]: the cluster's event stream, reconnecting.
//! - [`metrics`]: per-instance usage from `/1.0/metrics`.
//! - [`observe`]: what each member has, holds and does (status and placement read it).
//! - [`usage`]: how often a member's usage is re-read (metrics cost LXD CPU per instance).
//! - [`trust`]: redeeming trust tokens.
//! - [`membership`]: forming a cluster and changing its members.
//! - [`projects`]: a namespace's own project, made and kept at its limits.
//! - `routes` and `pacing`: calls about an instance go to its member's own endpoint, and creates
//!   take turns per member.

pub mod client;
pub mod cluster;
pub mod error;
pub mod events;
pub mod instances;
pub mod membership;
pub mod metrics;
pub mod observe;
pub mod operations;
mod pacing;
pub mod projects;
mod routes;
pub mod tls;
pub mod trust;
pub mod types;
pub mod usage;

pub use client::{ClientConfig, Endpoint, LxdClient};
pub use error::{LxdError, Result};
pub use operations::{CreateOutcome, Intent, OperationHandle, Settlement};
pub use tls::{ClientIdentity, ServerTrust};
