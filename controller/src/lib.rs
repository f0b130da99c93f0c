//! ferry-controller: pulls an environment from git, renders it, applies it
//! to the cluster, judges its health and rolls it back when it is not
//! healthy.
//!
//! The folders, bottom first (a module imports only from its own folder
//! and those listed before it; `tests/architecture.rs` checks it):
//! - [`crd`]: the `Environment` resource, its history entries and names;
//! - [`failure`]: the failure classes (terminal, transient) of any error;
//! - [`telemetry`]: the `ferry_*` metrics;
//! - [`source`]: git: fetching into a cache, credentials;
//! - [`cluster`]: server-side apply: plan, apply, prune, drift, ownership,
//!   target namespace, discovery, clients;
//! - [`gate`]: the health gate: rules (pure), observation, HTTP checks;
//! - [`audit`]: the hash-chained history and its journal in the cluster;
//! - [`github`]: releases reported as GitHub deployments;
//! - [`reconcile`]: the conductor: one step per reconcile, the outcome,
//!   the decisions, the status;
//! - [`serve`]: the status API and page, the push webhook;
//! - [`runtime`]: the process: watches, leader election, the loop;
//! - [`cli`]: the command line.
//!
//! Rendering, policy, diffs and object references are `ferry_manifests`'.

pub mod audit;
pub mod cli;
pub mod cluster;
pub mod crd;
pub mod failure;
pub mod gate;
pub mod github;
pub mod reconcile;
pub mod runtime;
pub mod serve;
pub mod source;
pub mod telemetry;
