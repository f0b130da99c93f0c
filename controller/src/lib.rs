//! ferry-controller: pulls an environment from git, renders it, applies it
//! to the cluster, judges its health and rolls it back when it is not
//! healthy.
//!
//! The reconcile loop ([`reconcile`]) conducts: [`source`] (git: fetch,
//! resolve, read a commit's tree), [`render`] (kustomize-compatible),
//! [`plan`] and [`apply`] (server-side apply with [`ownership`] rules,
//! [`drift`] correction and [`target`] namespace placement), the health
//! gate ([`health`] rules, read by [`gate`]) and [`rollout`] decisions,
//! and the [`status`] they lead to. [`policy`] holds the rules every
//! rendered environment must pass. [`history`] and [`journal`] keep the
//! audit log; [`github`] reports releases as GitHub deployments; [`api`]
//! and [`page`] serve status, [`webhook`] and [`leader`] the rest.

pub mod api;
pub mod apply;
pub mod counting;
pub mod drift;
pub mod environment;
pub mod failure;
pub mod gate;
pub mod github;
pub mod health;
pub mod history;
pub mod inventory;
pub mod journal;
pub mod leader;
pub mod metrics;
pub mod ownership;
pub mod page;
pub mod plan;
pub mod policy;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod source;
pub mod status;
pub mod sync;
pub mod target;
pub mod webhook;
