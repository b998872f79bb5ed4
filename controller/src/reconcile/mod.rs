//! One reconciler per kind, and what they share.
//!
//! - [`context`]: the [`Context`] every reconcile gets, and the [`Error`] of a reconcile.
//! - [`run`]: the loop that runs them, and the router of LXD events to reconciles.
//! - [`cluster`], [`container`], [`set`], [`policy`]: the reconcilers of LxdCluster,
//!   LxdContainer, LxdContainerSet and LxdPlacementPolicy, each a pipeline (resolve, validate,
//!   decide, apply, status).
//! - [`connections`]: one LXD client per LxdCluster, made from its spec and Secret.
//! - [`status`]: conditions and status writes.
//! - [`backoff`]: retries of failed reconciles, later and later per object, with jitter.
//!
//! LXD is outside Kubernetes' watches, so reconcilers requeue on success with a resync
//! interval, and each cluster's LXD event stream wakes the container whose instance changed
//! (within a second of a `lxc stop` behind our back), and every container of a cluster when the
//! stream reconnects (events may have been missed).

pub mod backoff;
pub mod cluster;
pub mod connections;
pub mod container;
pub mod context;
pub mod policy;
pub mod run;
pub mod secrets;
pub mod set;
pub mod status;

pub use context::{Context, Error, RESYNC_INTERVAL};
pub use run::run;
