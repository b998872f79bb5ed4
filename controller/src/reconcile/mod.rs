//! One reconciler per kind.

pub mod container;
