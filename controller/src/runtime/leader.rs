//! Leader election on a `coordination.k8s.io` Lease, so two replicas can
//! run and only one reconciles and writes (both serve the status API).
//!
//! Written here rather than taken from a crate: the kept crates for it
//! follow kube releases at their own pace (none targets kube 5 yet), and
//! the protocol is small: read the Lease, and write it back with the
//! resourceVersion read, either renewing our own hold or taking one that
//! expired. The API server's optimistic concurrency makes two candidates
//! race safely: one write wins, the other gets a conflict.
//!
//! Guarantees: at most one holder at a time, as long as clocks agree to
//! within the lease duration; a leader that cannot renew before its lease
//! runs out stops leading (the process exits, and its pod restarts as a
//! follower), so two replicas never reconcile at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// How long a hold lasts without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and a candidate looks.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it (or the hold expired): take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it until then.
    Wait { holder: String },
}

/// Decides from the Lease (pure).
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Step {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Step::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    let duration = spec.lease_duration_seconds.map_or(LEASE_DURATION, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    let expires = spec
        .renew_time
        .as_ref()
        .and_then(|t| t.0.checked_add(duration).ok());
    match expires {
        Some(expires) if !holder.is_empty() && expires > now => Step::Wait { holder },
        _ => Step::Acquire,
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
pub async fn round(api: &Api<Lease>, name: &str, identity: &str) -> Result<bool, kube::Error> {
    let current = api.get_opt(name).await?;
    let now = Timestamp::now();
    let step = decide(current.as_ref(), identity, now);
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
        Ok(_) => Ok(true),
        // Another candidate wrote first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election for ever, publishing whether we lead. A leader that
/// has not renewed for a whole lease duration publishes `false`.
pub async fn run(api: Api<Lease>, name: String, identity: String, leading: watch::Sender<bool>) {
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        match round(&api, &name, &identity).await {
            Ok(true) => {
                if !*leading.borrow() {
                    tracing::info!(%identity, lease = %name, "leading");
                }
                last_renewal = Some(tokio::time::Instant::now());
                let _ = leading.send(true);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(%identity, lease = %name, "lost the lease");
                }
                let _ = leading.send(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %name, "failed to read or write the lease");
                let expired = last_renewal.is_none_or(|t| t.elapsed() >= LEASE_DURATION);
                if *leading.borrow() && expired {
                    let _ = leading.send(false);
                }
            }
        }
        tokio::time::sleep(RETRY_PERIOD).await;
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
    fn a_lease_is_taken_when_free_or_expired_and_renewed_by_its_holder() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ago = |s: i64| Timestamp::from_second(1_800_000_000 - s).unwrap();
        assert_eq!(decide(None, "a", now), Step::Acquire);
        assert_eq!(decide(Some(&lease("a", ago(3))), "a", now), Step::Renew);
        assert_eq!(
            decide(Some(&lease("b", ago(3))), "a", now),
            Step::Wait { holder: "b".into() }
        );
        assert_eq!(decide(Some(&lease("b", ago(16))), "a", now), Step::Acquire);
        assert_eq!(decide(Some(&lease("", ago(1))), "a", now), Step::Acquire);
        assert_eq!(decide(Some(&Lease::default()), "a", now), Step::Acquire);
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
