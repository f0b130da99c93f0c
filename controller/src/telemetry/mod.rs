//! What the controller tells about itself: the `ferry_*` metrics.

pub mod metrics;
