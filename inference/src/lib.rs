//! ferry-inference: the campus-placement model (a bagged forest of linfa
//! decision trees) and the HTTP service that serves it.
//!
//! The model side is pure functions ([`features`], [`forest`], [`metrics`],
//! [`evaluation`], [`train`], [`artifact`]); the serving side is the axum
//! application in [`server`].

pub mod artifact;
pub mod data;
pub mod evaluation;
pub mod features;
pub mod forest;
pub mod metrics;
pub mod server;
pub mod serving;
pub mod train;
