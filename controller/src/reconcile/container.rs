//! The LxdContainer reconciler, as a pipeline: resolve the cluster, validate the spec into a
//! [`desired::DesiredInstance`], decide the next step ([`decide::next_step`], pure), apply it
//! to LXD, write status.

pub mod decide;
pub mod desired;
pub mod naming;
