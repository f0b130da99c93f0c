//! The health gate: kstatus rules and fail-fast evidence ([`health`],
//! pure), reading what they judge from the cluster ([`observe`]), and
//! the HTTP checks ([`checks`]).

pub mod checks;
pub mod health;
pub mod observe;
