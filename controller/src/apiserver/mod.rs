//! The embedded Kubernetes-compatible API server of standalone mode.

pub mod validation;
