//! Writing the status: computed by [`super::status::status_after`] from
//! the status it replaces, and written with that status's
//! resourceVersion, so a newer status is never overwritten.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::crd::history::Entry;
use crate::crd::{Environment, EnvironmentStatus, REQUESTED_AT, RETRY};

use super::outcome::Outcome;
use super::status::status_after;

/// Status writes that lose a race are recomputed and retried this often.
const STATUS_ATTEMPTS: usize = 3;

/// Writes the status `outcome` leads to, over `stored` (the Environment
/// as the step's own status patch left it, if it made one; else `env` as
/// read); when someone else wrote in between (a status write or a change
/// of the spec or annotations), reads again and recomputes. The request
/// and retry handled are those of `env`, which the step acted on.
pub async fn write_status(
    api: &Api<Environment>,
    env: &Environment,
    stored: Option<&Environment>,
    outcome: &Outcome,
    sealed: &[Entry],
) -> Result<EnvironmentStatus, kube::Error> {
    let name = env.name_any();
    let mut current = stored.unwrap_or(env).clone();
    for attempt in 1..=STATUS_ATTEMPTS {
        let previous = current.status.clone().unwrap_or_default();
        let status = status_after(
            &previous,
            env.metadata.generation.unwrap_or(0),
            outcome,
            &Time(Timestamp::now()),
            env.annotations().get(REQUESTED_AT).cloned(),
            env.annotations().get(RETRY).cloned(),
            sealed,
        );
        if status == previous {
            return Ok(status);
        }
        // A replace (not a merge patch): fields that became empty go,
        // and the resourceVersion makes a concurrent write a conflict.
        let mut object = current.clone();
        object.status = Some(status.clone());
        match api
            .replace_status(&name, &PostParams::default(), &object)
            .await
        {
            Ok(_) => return Ok(status),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < STATUS_ATTEMPTS => {
                tracing::debug!(attempt, "status changed meanwhile; recomputing");
                current = api.get_status(&name).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(current.status.unwrap_or_default())
}
