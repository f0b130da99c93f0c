//! How the agent's watches retry after the API server went away.
//!
//! kube's default (client-go's: 0.8 s doubling to 30 s) is kind to a
//! struggling shared API server, but in the lab it left the load
//! balancer's EndpointSlice cache up to 30 s stale after `lab/fault
//! apiserver-restart`, while the pod watch, luckier in its timing, had
//! already stopped the pods that cache still listed. The lab's API server
//! is local and serves one agent: retry every 0.2 s doubling to 2 s, so
//! every cache is current a moment after the API server is back.

use std::time::Duration;

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(200);
const MOST: Duration = Duration::from_secs(2);

/// 0.2 s, 0.4 s, ... up to 2 s between attempts; back to 0.2 s once a
/// watch delivers again (the stream resets it).
#[derive(Debug, Clone)]
pub struct LabBackoff {
    next: Duration,
}

impl Default for LabBackoff {
    fn default() -> Self {
        LabBackoff { next: FIRST }
    }
}

impl Iterator for LabBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(MOST);
        Some(now)
    }
}

impl Backoff for LabBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_two_seconds_and_resets() {
        let mut b = LabBackoff::default();
        let waits: Vec<u128> = b.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST));
    }
}
