//! The source of truth: git repositories fetched into a cache
//! ([`cache`]), with the credentials an Environment names
//! ([`credentials`]).

pub mod cache;
pub mod credentials;
