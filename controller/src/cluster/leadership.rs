//! The right of this replica to write to the cluster, as its own
//! monotonic clock tells: with leader election, until the renew deadline
//! after the start of its last successful renewal of the Lease
//! ([`crate::runtime::leader`]); without, always.
//!
//! The reconcile's clients check it before sending every request that
//! changes something ([`crate::cluster::client::guarded`]), so a leader
//! that was paused (SIGSTOP, a frozen VM) or cut off past its deadline
//! sends nothing when it resumes, before its election loop has even run.
//! Another replica takes the Lease only after it saw the Lease unchanged
//! for a whole lease duration on its own clock, which starts after the
//! renewal did: the lease duration minus the renew deadline is the margin
//! for a write sent just before the deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;

/// See the module docs. Clones share the same state.
#[derive(Clone, Debug)]
pub struct Leadership {
    elected: bool,
    until: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// A replica that takes part in no election (the only one): it may
    /// always write.
    pub fn unelected() -> Self {
        Leadership {
            elected: false,
            until: Arc::default(),
        }
    }

    /// A replica that may write only while it leads; it does not yet.
    pub fn elected() -> Self {
        Leadership {
            elected: true,
            until: Arc::default(),
        }
    }

    /// Whether this replica may write now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// Whether this replica may write at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        !self.elected || self.deadline().is_some_and(|until| now < until)
    }

    /// Until when it may write, when it leads.
    pub fn deadline(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A renewal that started at `started` succeeded: writes are allowed
    /// until `started + renew_deadline`.
    pub fn renewed(&self, started: Instant, renew_deadline: Duration) {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        *until = started.checked_add(renew_deadline);
    }

    /// The Lease is someone else's: no more writes.
    pub fn revoke(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Whether an HTTP method only reads (watches are GETs).
pub fn reads_only(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_elected_replica_writes_only_until_its_renew_deadline() {
        let now = Instant::now();
        let elected = Leadership::elected();
        assert!(!elected.holds_at(now), "not before it leads");
        elected.renewed(now, Duration::from_secs(10));
        let shared = elected.clone();
        assert!(shared.holds_at(now + Duration::from_secs(9)));
        assert!(!shared.holds_at(now + Duration::from_secs(10)));
        elected.revoke();
        assert!(!shared.holds_at(now));
        assert!(Leadership::unelected().holds_at(now + Duration::from_secs(3600)));
    }

    #[test]
    fn only_reads_pass_without_the_lease() {
        assert!(reads_only(&Method::GET));
        for write in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(!reads_only(&write), "{write}");
        }
    }
}
