//! ferry-manifests: what ferry knows about manifests without a cluster.
//! The controller applies what this crate renders, and the pipelines show
//! reviewers the same render and the same diff text, so a pull request's
//! diff is what the controller will apply.
//!
//! - [`render`]: a kustomize-compatible build of an environment, from a
//!   folder or a commit's tree ([`render::Files`]);
//! - [`policy`]: the rules every rendered environment must pass;
//! - [`object`]: object identities and inventories, [`order`]: the order
//!   kinds are applied in;
//! - [`diff`]: `kubectl diff`-style text, Secret values redacted;
//! - [`image`]: image references split into repository, tag and digest;
//! - [`readiness`]: the readiness gate of `healthCheck.beforeTraffic`;
//! - [`git`] (feature `git`): a commit's tree as [`render::Files`].
//!
//! No Kubernetes client and no async runtime: everything here is a plain
//! function of its input.

pub mod diff;
#[cfg(feature = "git")]
pub mod git;
pub mod image;
pub mod object;
pub mod order;
pub mod policy;
pub mod readiness;
pub mod render;
