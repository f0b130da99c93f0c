//! What the controller serves: the status API and probes ([`api`]), the
//! status page ([`page`]), the histories' verifications they show
//! ([`verified`]) and the GitHub push webhook ([`webhook`]).

pub mod api;
pub mod page;
pub mod verified;
pub mod webhook;
