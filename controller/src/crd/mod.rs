//! The API: the `Environment` custom resource, its history entries, the
//! names of its annotations, conditions and reasons, and the durations its
//! spec is written in. The bottom of the crate: nothing here imports the
//! controller, so the types can be read (and the CRD generated) alone.

pub mod duration;
pub mod environment;
pub mod history;
pub mod names;
pub mod number;

pub use duration::{MIN_INTERVAL, parse_interval};
pub use environment::*;
pub use names::{FINALIZER, REQUESTED_AT, REQUESTED_BY, RETRY, condition, reason};
