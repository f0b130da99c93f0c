//! The audit history: the hash chain ([`chain`], pure) and the journal
//! that keeps it in the cluster ([`journal`], I/O).

pub mod chain;
pub mod journal;
