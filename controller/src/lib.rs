//! lxd-operator: runs LXD containers declaratively.
//!
//! The binary (`main.rs`) is a thin command line over this library. Each module is one concern:
//! - [`apiserver`]: the embedded Kubernetes-compatible API server of standalone mode.
//! - [`lxd`]: the client of LXD clusters.
//! - [`reconcile`]: one reconciler per kind.
//! - [`leader`]: leader election among replicas.
//! - [`placement`]: the placement engine (pure: no kube, tokio or HTTP).
//! - [`quantity`]: quantities read in one place: Kubernetes' in our specs, LXD's in instance limits.
//! - [`telemetry`]: logging and its format.

#![forbid(unsafe_code)]

pub mod apiserver;
pub mod leader;
pub mod lxd;
pub mod placement;
pub mod quantity;
pub mod reconcile;
pub mod telemetry;
