//! Wiring at run time: the process ([`run`]), leader election
//! ([`leader`]) and the split of the Environments between controllers
//! ([`shard`]).

pub mod leader;
pub mod run;
pub mod shard;
