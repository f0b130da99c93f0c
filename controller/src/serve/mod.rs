//! What the controller serves: the status API and probes ([`api`]), the
//! status page ([`page`]) and the GitHub push webhook ([`webhook`]).

pub mod api;
pub mod page;
pub mod webhook;
