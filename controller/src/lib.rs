//! ferry-controller: pulls an environment from git, renders it, applies it
//! to the cluster, judges its health and rolls it back when it is not
//! healthy.
//!
//! So far: [`source`] (git: fetch, resolve, read a commit's tree),
//! [`render`], the kustomize-compatible renderer, and [`policy`],
//! the rules every rendered environment must pass (shared by the
//! environments tests and, next, by the controller and the pull-request
//! review).

pub mod apply;
pub mod drift;
pub mod environment;
pub mod failure;
pub mod inventory;
pub mod metrics;
pub mod ownership;
pub mod plan;
pub mod policy;
pub mod reconcile;
pub mod render;
pub mod source;
pub mod sync;
pub mod target;
