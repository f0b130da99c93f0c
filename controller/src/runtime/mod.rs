//! Wiring at run time: the process ([`run`]) and leader election
//! ([`leader`]).

pub mod leader;
pub mod run;
