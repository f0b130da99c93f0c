//! The cluster side of a sync, over server-side apply: clients
//! ([`client`], writing only while [`leadership`] allows), discovery ([`discovery`]), where objects go
//! ([`target`]), whose they are ([`ownership`]), what would change
//! ([`plan`], with [`drift`]), and applying and pruning it ([`apply`]),
//! in stages ([`sync`]).

pub mod apply;
pub mod client;
pub mod discovery;
pub mod drift;
pub mod leadership;
pub mod owned;
pub mod ownership;
pub mod plan;
pub mod ssa;
pub mod sync;
pub mod target;
