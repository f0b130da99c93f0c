//! Releases reported to GitHub as deployments (`spec.github`): GitHub
//! then shows, on each commit and in the repository's environments, what
//! runs where and whether it passed its health gate, and keeps the chain
//! head of ferry's history as a witness outside the cluster.
//!
//! Guarantees: reporting never holds a reconcile back. The reconciler
//! hands steps to [`Reporter::report`], which only queues them; one task
//! per Environment posts them in order, so statuses arrive in the order
//! things happened, and one Environment's failing GitHub does not delay
//! another's. Rate limits, 5xx and network errors are retried with
//! back-off (up to [`ATTEMPTS`] times, about 17 minutes); refusals (bad
//! token, unknown repository or commit) are logged and dropped. Counted in
//! `ferry_github_reports_total{result}`.
//!
//! What GitHub missed is posted later, re-derived from the journal: a
//! worker starts behind (statuses still queued when a controller stopped
//! were lost with it) and falls behind when it drops a status; while
//! behind, at its next step (every reconcile sends one) it reads the
//! newest chain head GitHub holds and posts the last status of each
//! commit the history names after it ([`report::catch_up`]). A catch-up
//! that fails is tried again with back-off, from 10 s up to 10 minutes.

pub mod client;
pub mod report;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;
use tokio::sync::mpsc;

use crate::audit::journal::{self, JournalError};
use crate::crd::{Environment, GitHubReporting};
use crate::telemetry::metrics::Metrics;
use client::{Auth, ClientError, Repository, StatusText};
pub use report::{Post, State, Step};

/// Tries per status before it is dropped; the waits double from
/// [`FIRST_WAIT`] (2 s, 4 s, ... 512 s: about 17 minutes in all).
pub const ATTEMPTS: u32 = 10;
const FIRST_WAIT: Duration = Duration::from_secs(2);
/// The first wait after a failed catch-up, doubled up to [`CATCH_UP_MAX_WAIT`].
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
const CATCH_UP_MAX_WAIT: Duration = Duration::from_secs(600);
/// Deployments whose statuses are read to find the newest head GitHub holds.
const CATCH_UP_DEPLOYMENTS: usize = 10;

/// One step for one Environment.
struct Job {
    /// `namespace/name` of the Environment.
    key: String,
    namespace: String,
    name: String,
    spec: GitHubReporting,
    step: Step,
    /// The newest history entry the Environment's status held when the
    /// step was reported: what a catch-up at this step may post. Entries
    /// sealed later in the same reconcile come as their own steps, after
    /// this one, and posting them here would put them before it.
    acknowledged: u64,
}

/// The handle the reconciler holds; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    queue: mpsc::UnboundedSender<Job>,
}

impl Reporter {
    /// Starts the task that hands steps to one worker per Environment.
    /// `public_url` is the status API's address as GitHub users reach it
    /// (for `log_url`); without it statuses carry no link.
    pub fn start(kube: kube::Client, public_url: Option<String>, metrics: Arc<Metrics>) -> Self {
        let (queue, mut jobs) = mpsc::unbounded_channel::<Job>();
        let shared = Arc::new(Shared {
            kube,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            metrics,
        });
        tokio::spawn(async move {
            let mut workers: HashMap<String, mpsc::UnboundedSender<Job>> = HashMap::new();
            while let Some(job) = jobs.recv().await {
                let worker = workers.entry(job.key.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(Worker::new(shared.clone()).run(rx));
                    tx
                });
                if let Err(mpsc::error::SendError(job)) = worker.send(job) {
                    tracing::warn!(environment = %job.key, "the GitHub reporter of this Environment stopped; dropping a status");
                    shared.metrics.record_github("dropped");
                }
            }
        });
        Reporter { queue }
    }

    /// Queues `step` when the Environment reports to GitHub; returns at
    /// once.
    pub fn report(&self, env: &Environment, step: Step) {
        let Some(spec) = env.spec.github.clone() else {
            return;
        };
        let namespace = env.namespace().unwrap_or_default();
        let name = env.name_any();
        let acknowledged = env
            .status
            .as_ref()
            .and_then(|s| s.history.last())
            .map_or(0, |e| e.sequence);
        let job = Job {
            key: format!("{namespace}/{name}"),
            namespace,
            name,
            spec,
            step,
            acknowledged,
        };
        if self.queue.send(job).is_err() {
            tracing::warn!("the GitHub reporter stopped; a status is lost");
        }
    }
}

struct Shared {
    kube: kube::Client,
    public_url: Option<String>,
    metrics: Arc<Metrics>,
}

/// Posts one Environment's statuses in order.
struct Worker {
    shared: Arc<Shared>,
    /// The client, and what it was made from.
    repository: Option<((String, Auth, String), Arc<Repository>)>,
    /// The latest deployment of each commit.
    deployments: HashMap<String, u64>,
    /// The last status posted for each commit: a step repeated by a
    /// reconcile that is retried (queued again after a failed apply) is
    /// not posted twice.
    last_posted: HashMap<String, (State, String)>,
    /// GitHub may lack statuses the history has (see the module's doc).
    behind: bool,
    /// When the next catch-up may run, and the wait after that one fails.
    catch_up_at: tokio::time::Instant,
    catch_up_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error(transparent)]
    GitHub(#[from] ClientError),
    #[error("failed to read Secret {namespace}/{name}")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} {problem}")]
    Secret {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("failed to read the history to post what GitHub missed")]
    Journal(#[source] JournalError),
}

impl ReportError {
    fn is_retryable(&self) -> bool {
        match self {
            ReportError::GitHub(e) => e.is_retryable(),
            ReportError::ReadSecret { source, .. } => {
                crate::failure::of_error(source) == crate::failure::FailureClass::Transient
            }
            ReportError::Secret { .. } => false,
            ReportError::Journal(_) => true,
        }
    }
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Self {
        Worker {
            shared,
            repository: None,
            deployments: HashMap::new(),
            last_posted: HashMap::new(),
            behind: true,
            catch_up_at: tokio::time::Instant::now(),
            catch_up_wait: CATCH_UP_WAIT,
        }
    }

    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            if self.behind && tokio::time::Instant::now() >= self.catch_up_at {
                self.catch_up(&job).await;
            }
            for post in report::posts(&job.step) {
                if !self.post_with_retries(&job, &post).await {
                    self.behind = true;
                }
            }
        }
    }

    /// Posts what GitHub missed before `job`'s own statuses.
    #[tracing::instrument(skip_all, fields(environment = %job.key))]
    async fn catch_up(&mut self, job: &Job) {
        let missed = match self.missed(job).await {
            Ok(missed) => missed,
            Err(e) => {
                tracing::info!(error = %crate::failure::describe(&e), wait_s = self.catch_up_wait.as_secs(), "could not find what GitHub missed; trying again later");
                self.catch_up_at = tokio::time::Instant::now() + self.catch_up_wait;
                self.catch_up_wait = (self.catch_up_wait * 2).min(CATCH_UP_MAX_WAIT);
                return;
            }
        };
        if !missed.is_empty() {
            tracing::info!(
                statuses = missed.len(),
                "posting the statuses GitHub missed"
            );
        }
        let mut dropped = false;
        for post in &missed {
            if self.post_with_retries(job, post).await {
                self.shared.metrics.record_github("caught_up");
            } else {
                dropped = true;
            }
        }
        // What was dropped again is not retried at once: a later status
        // witnesses it, or the next catch-up after the wait tries it.
        self.behind = dropped;
        if dropped {
            self.catch_up_at = tokio::time::Instant::now() + self.catch_up_wait;
            self.catch_up_wait = (self.catch_up_wait * 2).min(CATCH_UP_MAX_WAIT);
        } else {
            self.catch_up_wait = CATCH_UP_WAIT;
        }
    }

    /// The statuses the history has after the newest head GitHub holds,
    /// before `job`'s own entry.
    async fn missed(&mut self, job: &Job) -> Result<Vec<Post>, ReportError> {
        let repository = self.repository(job).await?;
        let environment = job.spec.environment.clone().unwrap_or(job.name.clone());
        let (heads, _) = repository
            .witnessed_heads(&environment, CATCH_UP_DEPLOYMENTS)
            .await?;
        let newest = heads.iter().map(|h| h.sequence).max().unwrap_or(0);
        let before = match &job.step {
            Step::Recorded(entry) => entry.sequence,
            _ => job.acknowledged + 1,
        };
        let entries = journal::read(&self.shared.kube, &job.namespace, &job.name)
            .await
            .map_err(ReportError::Journal)?;
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|e| e.sequence < before)
            .collect();
        Ok(report::catch_up(&entries, newest))
    }

    /// Posts one status, trying again on failures worth it; false when it
    /// was dropped.
    #[tracing::instrument(skip_all, fields(environment = %job.key, commit = %post.commit, state = post.state.deployment()))]
    async fn post_with_retries(&mut self, job: &Job, post: &Post) -> bool {
        let this = (post.state, post.description.clone());
        if !post.new_deployment && self.last_posted.get(&post.commit) == Some(&this) {
            return true;
        }
        let mut wait = FIRST_WAIT;
        // A rollback's deployment is opened once, even when its status is
        // posted again.
        let mut opened: Option<u64> = None;
        for attempt in 1..=ATTEMPTS {
            match self.post(job, post, &mut opened).await {
                Ok(()) => {
                    self.shared.metrics.record_github("posted");
                    self.last_posted.insert(post.commit.clone(), this);
                    return true;
                }
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    tracing::info!(error = %crate::failure::describe(&e), attempt, wait_s = wait.as_secs(), "GitHub did not take the status; trying again");
                    self.shared.metrics.record_github("retried");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::failure::describe(&e), "dropping a GitHub deployment status; it is posted again once GitHub takes statuses");
                    self.shared.metrics.record_github("dropped");
                    return false;
                }
            }
        }
        false
    }

    async fn post(
        &mut self,
        job: &Job,
        post: &Post,
        opened: &mut Option<u64>,
    ) -> Result<(), ReportError> {
        let repository = self.repository(job).await?;
        let environment = job.spec.environment.clone().unwrap_or(job.name.clone());
        let deployment = match (*opened, post.new_deployment) {
            (Some(id), _) => id,
            (None, true) => {
                let id = self.create(&repository, job, post, &environment).await?;
                *opened = Some(id);
                id
            }
            (None, false) => match self.deployments.get(&post.commit) {
                Some(id) => *id,
                None => match repository
                    .find_deployment(&post.commit, &environment)
                    .await?
                {
                    Some(id) => id,
                    None => self.create(&repository, job, post, &environment).await?,
                },
            },
        };
        self.deployments.insert(post.commit.clone(), deployment);
        let log_url = match (&self.shared.public_url, post.sequence) {
            (Some(base), Some(sequence)) => Some(format!(
                "{base}/api/v1/environments/{}/{}/history?before={}&limit=1",
                job.namespace,
                job.name,
                sequence.saturating_add(1)
            )),
            _ => None,
        };
        let text = StatusText {
            description: &post.description,
            environment_url: job.spec.environment_url.as_deref(),
            log_url: log_url.as_deref(),
        };
        repository
            .deployment_status(deployment, post.state, &text)
            .await?;
        if job.spec.commit_status {
            repository
                .commit_status(
                    &post.commit,
                    post.state,
                    &format!("ferry/{environment}"),
                    &text,
                )
                .await?;
        }
        Ok(())
    }

    async fn create(
        &mut self,
        repository: &Repository,
        job: &Job,
        post: &Post,
        environment: &str,
    ) -> Result<u64, ReportError> {
        let payload = json!({"ferry": {"environment": job.key}});
        let id = repository
            .create_deployment(&post.commit, environment, &post.description, payload)
            .await?;
        tracing::info!(deployment = id, "opened a GitHub deployment");
        self.deployments.insert(post.commit.clone(), id);
        Ok(id)
    }

    /// The client for the Environment's Secret as it is now (a rotated
    /// token is picked up at the next status).
    async fn repository(&mut self, job: &Job) -> Result<Arc<Repository>, ReportError> {
        let auth = self.auth(job).await?;
        let key = (job.spec.api_url.clone(), auth, job.spec.repository.clone());
        if let Some((made_from, repository)) = &self.repository
            && *made_from == key
        {
            return Ok(repository.clone());
        }
        let repository = Arc::new(Repository::new(&key.0, &key.1, &key.2)?);
        self.repository = Some((key, repository.clone()));
        Ok(repository)
    }

    async fn auth(&self, job: &Job) -> Result<Auth, ReportError> {
        let name = &job.spec.secret_ref.name;
        let secrets: Api<Secret> = Api::namespaced(self.shared.kube.clone(), &job.namespace);
        let problem = |problem: &str| ReportError::Secret {
            namespace: job.namespace.clone(),
            name: name.clone(),
            problem: problem.to_owned(),
        };
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|source| ReportError::ReadSecret {
                namespace: job.namespace.clone(),
                name: name.clone(),
                source,
            })?
            .ok_or_else(|| problem("does not exist; create it with `token`, or with githubAppID, githubAppInstallationID and githubAppPrivateKey"))?;
        auth_from(&secret.data.unwrap_or_default()).map_err(|p| problem(&p))
    }
}

/// Reads the sign-in from a Secret's data.
pub fn auth_from(
    data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>,
) -> Result<Auth, String> {
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(token) = text("token") {
        return Ok(Auth::Token(token));
    }
    match (
        text("githubAppID"),
        text("githubAppInstallationID"),
        text("githubAppPrivateKey"),
    ) {
        (Some(app), Some(installation), Some(private_key)) => {
            let number = |key: &str, value: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("has {key} {value:?}, which is not a number"))
            };
            Ok(Auth::App {
                app_id: number("githubAppID", &app)?,
                installation_id: number("githubAppInstallationID", &installation)?,
                private_key,
            })
        }
        _ => Err(
            "has neither `token` nor githubAppID, githubAppInstallationID and githubAppPrivateKey"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn a_secret_holds_a_token_or_an_app() {
        assert_eq!(
            auth_from(&data(&[("token", " ghp_x\n")])),
            Ok(Auth::Token("ghp_x".into()))
        );
        assert_eq!(
            auth_from(&data(&[
                ("githubAppID", "12"),
                ("githubAppInstallationID", "34"),
                ("githubAppPrivateKey", "PEM")
            ])),
            Ok(Auth::App {
                app_id: 12,
                installation_id: 34,
                private_key: "PEM".into()
            })
        );
        let wrong = auth_from(&data(&[
            ("githubAppID", "twelve"),
            ("githubAppInstallationID", "34"),
            ("githubAppPrivateKey", "PEM"),
        ]));
        assert!(wrong.unwrap_err().contains("githubAppID \"twelve\""));
        assert!(auth_from(&data(&[("token", "  ")])).is_err());
    }
}
