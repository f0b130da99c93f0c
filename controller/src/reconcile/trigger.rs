//! What started a reconcile, for the history: the health gate of a
//! release being judged, a retry or reconcile asked for by annotation
//! (naming who pushed, through the webhook), a change of the spec, the
//! controller's start, or the interval.

use kube::ResourceExt;

use crate::crd::{Environment, EnvironmentStatus, REQUESTED_AT, REQUESTED_BY, RETRY};

/// Whether `ferry.dev/requested-at` (set by the webhook or by hand) asks
/// for a reconcile that `status` has not handled yet.
pub fn requested(env: &Environment, status: &EnvironmentStatus) -> bool {
    let at = env.annotations().get(REQUESTED_AT);
    at.is_some() && at != status.last_handled_request.as_ref()
}

/// The trigger of a reconcile of `env`; `first_since_start`: whether the
/// controller has not reconciled it since it started; `changed`: the
/// object whose change in the cluster (by someone else) woke it.
pub fn trigger(env: &Environment, first_since_start: bool, changed: Option<&str>) -> String {
    let status = env.status.clone().unwrap_or_default();
    let annotation = |key: &str| env.annotations().get(key).cloned();
    let requested = requested(env, &status);
    let trigger = if status.rollout.is_some() {
        "gate"
    } else if annotation(RETRY).is_some() && annotation(RETRY) != status.last_handled_retry {
        "retry"
    } else if env.metadata.generation != status.observed_generation {
        "spec"
    } else if requested {
        // A push through the webhook names itself, tied to this stamp.
        let stamp = annotation(REQUESTED_AT).unwrap_or_default();
        let by = annotation(REQUESTED_BY)
            .and_then(|by| by.strip_prefix(&format!("{stamp} ")).map(str::to_owned));
        match by {
            Some(by) => return format!("webhook: {by}"),
            None => "requested",
        }
    } else if let Some(object) = changed {
        return format!("changed in the cluster: {object}");
    } else if first_since_start {
        "start"
    } else {
        "interval"
    };
    trigger.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Rollout;

    fn environment(annotations: &[(&str, &str)], status: EnvironmentStatus) -> Environment {
        let mut env: Environment = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": "dev", "namespace": "ferry-system", "generation": 1},
            "spec": {"source": {"url": "file:///r", "path": "environments/dev"}}
        }))
        .unwrap();
        env.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        env.status = Some(status);
        env
    }

    fn seen() -> EnvironmentStatus {
        EnvironmentStatus {
            observed_generation: Some(1),
            ..EnvironmentStatus::default()
        }
    }

    #[test]
    fn each_trigger_is_told_apart() {
        assert_eq!(trigger(&environment(&[], seen()), false, None), "interval");
        assert_eq!(trigger(&environment(&[], seen()), true, None), "start");
        assert_eq!(
            trigger(
                &environment(&[], seen()),
                true,
                Some("Deployment.apps a/web")
            ),
            "changed in the cluster: Deployment.apps a/web"
        );
        assert_eq!(
            trigger(&environment(&[], EnvironmentStatus::default()), false, None),
            "spec"
        );
        assert_eq!(
            trigger(&environment(&[(RETRY, "1")], seen()), false, None),
            "retry"
        );
        let handled = EnvironmentStatus {
            last_handled_retry: Some("1".into()),
            ..seen()
        };
        assert_eq!(
            trigger(&environment(&[(RETRY, "1")], handled), false, None),
            "interval"
        );
        assert_eq!(
            trigger(&environment(&[(REQUESTED_AT, "t1")], seen()), false, None),
            "requested"
        );
        let pushed = [
            (REQUESTED_AT, "t1"),
            (REQUESTED_BY, "t1 github push by ada (delivery 72d3)"),
        ];
        assert_eq!(
            trigger(&environment(&pushed, seen()), false, None),
            "webhook: github push by ada (delivery 72d3)"
        );
        // A name tied to an older stamp is not this push's.
        let stale = [
            (REQUESTED_AT, "t2"),
            (REQUESTED_BY, "t1 github push by ada"),
        ];
        assert_eq!(
            trigger(&environment(&stale, seen()), false, None),
            "requested"
        );
        let judging = EnvironmentStatus {
            rollout: Some(Rollout {
                revision: "main@sha1:a".into(),
                ..Rollout::default()
            }),
            ..seen()
        };
        assert_eq!(
            trigger(&environment(&[(RETRY, "1")], judging), false, None),
            "gate"
        );
    }
}
