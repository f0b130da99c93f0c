//! ferry-inference: the campus-placement model (a bagged forest of linfa
//! decision trees) and the HTTP service that serves it.
//!
//! The model side is pure functions ([`features`], [`forest`], [`metrics`],
//! [`evaluation`], [`train`], [`artifact`]) and the compiled layout that
//! predicts fast ([`serving`]); the axum application is `server`, behind
//! the `server` feature (on by default), so the pipelines train and gate
//! without an HTTP stack.

pub mod artifact;
pub mod data;
pub mod evaluation;
pub mod features;
pub mod forest;
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
pub mod serving;
pub mod train;
