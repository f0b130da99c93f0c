//! Fetch and render: the branch head, or a given commit (for a rollback),
//! read from the repository cache and rendered; bounded by the
//! Environment's source timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_manifests::{readiness, render};
use serde_json::Value;

use crate::crd::{Environment, parse_interval, reason};
use crate::failure::{self, FailureClass};
use crate::source::cache::{Revision, SourceError, SourceSpec, redact};
use crate::source::credentials;

use super::context::Context;
use super::outcome::{Outcome, failed, message_of};

/// Milliseconds per phase, for the history.
pub type Durations = BTreeMap<String, u64>;

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a fetch and render gave: the revision, its rendered objects with
/// their origins, the time each phase took, and the source it came from.
pub struct Fetched {
    pub revision: Revision,
    pub desired: Vec<(Value, String)>,
    pub durations: Durations,
    pub source: SourceSpec,
}

/// The repository of an Environment, with its credentials.
pub async fn source_of(env: &Environment, ctx: &Context) -> Result<SourceSpec, Outcome> {
    let credentials = credentials::read(&ctx.client, env)
        .await
        .map_err(|message| {
            failed(
                None,
                FailureClass::Transient,
                reason::CREDENTIALS_MISSING,
                message,
            )
        })?;
    Ok(SourceSpec {
        url: env.spec.source.url.clone(),
        reference: env.spec.source.reference.clone(),
        credentials,
    })
}

/// Fetches and renders the branch head (`commit: None`) or a given commit
/// of the Environment's reference (for a rollback), from `path`.
pub async fn fetch_and_render(
    env: &Environment,
    ctx: &Context,
    commit: Option<String>,
    path: &str,
) -> Result<Fetched, Outcome> {
    use FailureClass::{Terminal, Transient};
    let spec = &env.spec;
    let Some(timeout) = parse_interval(&spec.source.timeout) else {
        let message = format!(
            "spec.source.timeout {:?} is not a duration of at most 168h such as 60s or 2m",
            spec.source.timeout
        );
        return Err(failed(None, Terminal, reason::INVALID_SPEC, message));
    };
    let source = source_of(env, ctx).await?;
    let fetched_from = source.clone();
    let cache = ctx.cache.clone();
    let path = path.to_owned();
    let fetch = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (revision, files) = match commit {
            None => {
                let revision = cache.fetch(&source, timeout)?;
                let files = cache.files(&source, &revision.commit)?;
                (revision, files)
            }
            Some(commit) => {
                let files = cache.files_at(&source, &commit, timeout)?;
                (files.revision(&source.reference)?, files)
            }
        };
        let fetched = Instant::now();
        let rendered = render::render_with_origins(&files, &path);
        let durations = Durations::from([
            ("fetch".to_owned(), millis(fetched - started)),
            ("render".to_owned(), millis(fetched.elapsed())),
        ]);
        Ok::<_, SourceError>((revision, rendered, durations))
    });
    // The fetch stops itself at the timeout; this bounds the wait even
    // when libgit2 blocks somewhere its callbacks do not reach.
    let fetched = tokio::time::timeout(timeout + Duration::from_secs(5), fetch).await;
    let (revision, rendered, durations) = match fetched {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(e))) => {
            return Err(failed(
                None,
                Transient,
                reason::FETCH_FAILED,
                failure::describe(&e),
            ));
        }
        Ok(Err(e)) => return Err(failed(None, Transient, reason::FETCH_FAILED, e)),
        Err(_) => {
            let message = format!(
                "failed to fetch {}: no answer within {} s",
                redact(&spec.source.url),
                timeout.as_secs()
            );
            return Err(failed(None, Transient, reason::FETCH_FAILED, message));
        }
    };
    match rendered {
        Ok(mut desired) => {
            if spec.health_check.before_traffic {
                readiness::add_verified_gate(desired.iter_mut().map(|(object, _)| object));
            }
            Ok(Fetched {
                revision,
                desired,
                durations,
                source: fetched_from,
            })
        }
        Err(e) => Err(failed(
            Some(&revision),
            Terminal,
            reason::RENDER_FAILED,
            failure::describe(&e),
        )),
    }
}

/// The file at `path` (from the repository's root) in the commit of
/// `revision` (`ref@sha1:commit`), read from the repository cache (fetched
/// by id when the cache lacks it). `None` when the commit has no such
/// file.
pub async fn read_at(
    env: &Environment,
    ctx: &Context,
    revision: &str,
    path: &str,
) -> Result<Option<Vec<u8>>, String> {
    use ferry_manifests::render::Files;
    let commit = revision
        .split_once("@sha1:")
        .map(|(_, c)| c.to_owned())
        .ok_or_else(|| format!("{revision} is not a revision id"))?;
    let timeout = parse_interval(&env.spec.source.timeout).unwrap_or(Duration::from_secs(60));
    let source = source_of(env, ctx).await.map_err(|o| message_of(&o))?;
    let cache = ctx.cache.clone();
    let path = path.trim_start_matches('/').to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let files = cache
            .files_at(&source, &commit, timeout)
            .map_err(|e| failure::describe(&e))?;
        files
            .read(&path)
            .map_err(|e| format!("failed to read {path} at {commit}: {e}"))
    });
    match tokio::time::timeout(timeout + Duration::from_secs(5), read).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from git within {} s", timeout.as_secs())),
    }
}
