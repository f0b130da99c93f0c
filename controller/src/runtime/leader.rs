//! Leader election on a `coordination.k8s.io` Lease, so two replicas can
//! run and only one reconciles and writes (both serve the status API).
//!
//! Done as client-go's leaderelection does it, written here rather than
//! taken from a crate: the kept crates for it follow kube releases at
//! their own pace (none targets kube 5 yet), and several judge expiry by
//! comparing the holder's `renewTime` with the local clock, which is what
//! this module must not do. The protocol is small: read the Lease, and
//! write it back with the resourceVersion read, either renewing our own
//! hold or taking one that expired; the API server's optimistic
//! concurrency makes two candidates race safely (one write wins, the
//! other gets a conflict).
//!
//! Guarantees, with no assumption about clocks agreeing between nodes:
//! - a candidate takes the Lease only after it saw the Lease unchanged for
//!   a whole [`LEASE_DURATION`] by its own monotonic clock (the holder's
//!   `renewTime` is written for people and never compared);
//! - a leader that has not renewed within [`RENEW_DEADLINE`] (shorter
//!   than the lease) of the start of its last successful renewal stops
//!   leading; every Lease request has a timeout that ends by then, so a
//!   hung request cannot hold it past the deadline;
//! - from that deadline on, the reconcile's clients refuse to send any
//!   write ([`Leadership`]), even in a process that was paused and has
//!   just resumed, and the process stops (in-flight reconciles are
//!   dropped) so its pod restarts as a follower.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::cluster::leadership::Leadership;

/// How long a hold lasts without renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader keeps leading without a successful renewal
/// (client-go's default); shorter than [`LEASE_DURATION`].
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews, and a candidate looks.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// The most one Lease request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it (or the hold expired): take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it.
    Wait { holder: String },
}

/// The Lease as last seen, and when (by this replica's clock) it was
/// first seen so: expiry is measured from then.
#[derive(Debug, Clone, Default)]
pub struct Observed(Option<(LeaseSpec, Instant)>);

/// Decides from the Lease as read at `now` (pure but for `observed`,
/// which it brings up to date).
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    observed: &mut Observed,
    now: Instant,
) -> Step {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Step::Acquire;
    };
    let unchanged_since = match &observed.0 {
        Some((seen, at)) if seen == spec => *at,
        _ => {
            observed.0 = Some((spec.clone(), now));
            now
        }
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::Acquire;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(LEASE_DURATION, |s| Duration::from_secs(s.clamp(1, 3600)));
    if now.saturating_duration_since(unchanged_since) >= duration {
        Step::Acquire
    } else {
        Step::Wait { holder }
    }
}

fn held_by(identity: &str, now: Timestamp, previous: Option<&Lease>, acquire: bool) -> Lease {
    let mut lease = previous.cloned().unwrap_or_default();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if acquire {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions =
            Some(spec.lease_transitions.unwrap_or(0) + i32::from(previous.is_some()));
    }
    spec.holder_identity = Some(identity.to_owned());
    spec.lease_duration_seconds = Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15));
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// One round: read, then acquire or renew when allowed. True when we hold
/// the Lease afterwards.
pub async fn round(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(name).await?;
    let step = decide(current.as_ref(), identity, observed, Instant::now());
    let now = Timestamp::now();
    let written = match (&step, &current) {
        (Step::Wait { .. }, _) => return Ok(false),
        (_, None) => {
            let mut lease = held_by(identity, now, None, true);
            lease.metadata = ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            };
            api.create(&PostParams::default(), &lease).await
        }
        (step, Some(current)) => {
            let lease = held_by(identity, now, Some(current), *step == Step::Acquire);
            api.replace(name, &PostParams::default(), &lease).await
        }
    };
    match written {
        Ok(lease) => {
            observed.0 = lease.spec.map(|spec| (spec, Instant::now()));
            Ok(true)
        }
        // Another candidate wrote first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election for ever: `leadership` says until when this replica
/// may write, `leading` whether it leads (false once the renew deadline
/// passed without a renewal, or another holds the Lease).
pub async fn run(
    api: Api<Lease>,
    name: String,
    identity: String,
    leadership: Leadership,
    leading: watch::Sender<bool>,
) {
    let mut observed = Observed::default();
    loop {
        let started = Instant::now();
        let led = *leading.borrow();
        // A leader's request may not outlive its deadline.
        let budget = match leadership.deadline().filter(|_| led) {
            Some(until) => until
                .saturating_duration_since(started)
                .min(REQUEST_TIMEOUT),
            None => REQUEST_TIMEOUT,
        };
        let result = tokio::time::timeout(budget, round(&api, &name, &identity, &mut observed))
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("the Lease request timed out".into())));
        match result {
            Ok(true) => {
                leadership.renewed(started, RENEW_DEADLINE);
                if !led {
                    tracing::info!(%identity, lease = %name, "leading");
                }
                let _ = leading.send(true);
            }
            Ok(false) => {
                leadership.revoke();
                if led {
                    tracing::warn!(%identity, lease = %name, "lost the lease");
                }
                let _ = leading.send(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %name, "failed to read or write the lease");
            }
        }
        // Sleep, but wake at the deadline: a leader that could not renew
        // stops leading then, not a retry period later.
        let mut pause = RETRY_PERIOD;
        if let Some(until) = leadership.deadline().filter(|_| *leading.borrow()) {
            pause = pause.min(until.saturating_duration_since(Instant::now()));
        }
        tokio::time::sleep(pause).await;
        if *leading.borrow() && !leadership.holds() {
            tracing::warn!(%identity, lease = %name, deadline_s = RENEW_DEADLINE.as_secs(), "could not renew the lease by the renew deadline");
            let _ = leading.send(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: Timestamp) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_or_seen_unchanged_for_its_duration() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let renewed = Timestamp::from_second(1_800_000_000).unwrap();
        let mut seen = Observed::default();
        assert_eq!(decide(None, "a", &mut seen, t0), Step::Acquire);
        assert_eq!(
            decide(Some(&lease("a", renewed)), "a", &mut seen, t0),
            Step::Renew
        );
        let b = lease("b", renewed);
        let mut seen = Observed::default();
        let wait = Step::Wait { holder: "b".into() };
        assert_eq!(decide(Some(&b), "a", &mut seen, at(0)), wait);
        assert_eq!(decide(Some(&b), "a", &mut seen, at(14)), wait);
        assert_eq!(decide(Some(&b), "a", &mut seen, at(15)), Step::Acquire);
        // A renewal seen restarts the wait.
        let renewed_again = lease("b", Timestamp::from_second(1_800_000_010).unwrap());
        assert_eq!(decide(Some(&renewed_again), "a", &mut seen, at(16)), wait);
        assert_eq!(decide(Some(&renewed_again), "a", &mut seen, at(30)), wait);
        assert_eq!(
            decide(Some(&renewed_again), "a", &mut seen, at(31)),
            Step::Acquire
        );
        assert_eq!(
            decide(Some(&lease("", renewed)), "a", &mut seen, t0),
            Step::Acquire
        );
        assert_eq!(
            decide(Some(&Lease::default()), "a", &mut seen, t0),
            Step::Acquire
        );
    }

    #[test]
    fn the_holder_s_clock_is_never_compared_with_ours() {
        let t0 = Instant::now();
        // Renewed "an hour ago" or "in an hour" by the holder's clock:
        // only how long we saw it unchanged counts.
        for skew in [-3600, 3600] {
            let renewed = Timestamp::from_second(1_800_000_000 + skew).unwrap();
            let mut seen = Observed::default();
            let b = lease("b", renewed);
            assert_eq!(
                decide(Some(&b), "a", &mut seen, t0),
                Step::Wait { holder: "b".into() },
                "skew {skew}"
            );
            assert_eq!(
                decide(Some(&b), "a", &mut seen, t0 + LEASE_DURATION),
                Step::Acquire,
                "skew {skew}"
            );
        }
        assert!(RENEW_DEADLINE < LEASE_DURATION);
        assert!(REQUEST_TIMEOUT < RENEW_DEADLINE);
    }

    #[test]
    fn taking_a_lease_counts_a_transition() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let first = held_by("a", now, None, true);
        assert_eq!(first.spec.as_ref().unwrap().lease_transitions, Some(0));
        let taken = held_by("b", now, Some(&first), true);
        let spec = taken.spec.unwrap();
        assert_eq!(
            (spec.holder_identity.as_deref(), spec.lease_transitions),
            (Some("b"), Some(1))
        );
        let renewed = held_by("a", now, Some(&first), false);
        assert_eq!(renewed.spec.unwrap().lease_transitions, Some(0));
    }
}
