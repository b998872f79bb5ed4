//! What a CRD's schema does: [`validation`] of custom resources (and the rules of object
//! names), [`structural`] pruning and defaults before it, and the [`openapi`] documents built
//! from the served kinds' schemas; [`object_meta`], the shape every object's `metadata` must have.

pub mod object_meta;
pub mod openapi;
pub mod structural;
pub mod validation;
