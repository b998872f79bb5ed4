//! lxd-operator: runs LXD containers declaratively.
//!
//! The binary (`main.rs`) is a thin command line over this library and over the embedded API
//! server of standalone mode, a crate of its own (`lxd-operator-apiserver`, in `apiserver/`).
//! Each module is one concern:
//! - [`admission_webhook`]: the validating admission webhook Kubernetes calls, deciding as the
//!   embedded API server admits.
//! - [`lxd`]: the client of LXD clusters.
//! - [`reconcile`]: one reconciler per kind.
//! - [`leader`]: leader election among replicas.
//! - [`kubernetes_nodes`]: LXD beside Kubernetes on the same hosts (Pods' requests, Node taints).
//! - [`jitter`]: random spread for retry delays.
//! - [`placement`]: the placement engine (pure: no kube, tokio or HTTP).
//! - [`quantity`]: quantities read in one place: Kubernetes' in our specs, LXD's in instance limits.
//! - [`telemetry`]: logging and its format.

#![forbid(unsafe_code)]

pub mod admission_webhook;
pub mod jitter;
pub mod kubernetes_nodes;
pub mod leader;
pub mod lxd;
pub mod placement;
pub mod quantity;
pub mod reconcile;
pub mod telemetry;
