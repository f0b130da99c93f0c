//! GitHub's Deployments and Statuses APIs through octocrab: the I/O edge
//! of reporting. Tested against a local server that records requests
//! (`controller/tests/github.rs`).

use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use serde_json::{Value, json};

use super::report::{State, witnessed};
use crate::audit::chain::Witnessed;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to set up the GitHub client for {url}: {detail}")]
    Setup { url: String, detail: String },
    #[error("{0:?} is not OWNER/NAME")]
    Repository(String),
    #[error(
        "failed to {what} on {repository}; check that the token may write deployments (and statuses) there"
    )]
    Request {
        what: &'static str,
        repository: String,
        /// Worth trying again later (rate limit, 5xx, network).
        retry: bool,
        #[source]
        source: Box<octocrab::Error>,
    },
}

impl ClientError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Request { retry: true, .. })
    }
}

/// How the controller signs in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Auth {
    /// A personal access token or an installation token.
    Token(String),
    /// A GitHub App; octocrab mints (and renews) installation tokens.
    App {
        app_id: u64,
        installation_id: u64,
        private_key: String,
    },
}

/// A repository on a GitHub API, signed in.
pub struct Repository {
    client: Octocrab,
    owner: String,
    name: String,
}

/// What a deployment status carries besides its state.
pub struct StatusText<'a> {
    pub description: &'a str,
    pub environment_url: Option<&'a str>,
    pub log_url: Option<&'a str>,
}

fn retryable(error: &octocrab::Error) -> bool {
    match error {
        octocrab::Error::GitHub { source, .. } => {
            let status = source.status_code.as_u16();
            status == 429
                || status >= 500
                || (status == 403 && source.message.to_lowercase().contains("rate limit"))
        }
        octocrab::Error::Serde { .. }
        | octocrab::Error::Json { .. }
        | octocrab::Error::Uri { .. }
        | octocrab::Error::UriParse { .. } => false,
        _ => true,
    }
}

impl Repository {
    pub fn new(api_url: &str, auth: &Auth, repository: &str) -> Result<Self, ClientError> {
        let (owner, name) = repository
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| ClientError::Repository(repository.to_owned()))?;
        let setup = |detail: String| ClientError::Setup {
            url: api_url.to_owned(),
            detail,
        };
        let builder = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| setup(e.to_string()))?;
        let client = match auth {
            Auth::Token(token) => builder
                .personal_token(token.clone())
                .build()
                .map_err(|e| setup(e.to_string()))?,
            Auth::App {
                app_id,
                installation_id,
                private_key,
            } => builder
                .app_from_rsa_pem(AppId(*app_id), private_key.as_bytes())
                .map_err(|e| setup(format!("githubAppPrivateKey is not an RSA key in PEM: {e}")))?
                .build()
                .map_err(|e| setup(e.to_string()))?
                .installation(InstallationId(*installation_id))
                .map_err(|e| setup(e.to_string()))?,
        };
        Ok(Repository {
            client,
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    fn failed(&self, what: &'static str) -> impl Fn(octocrab::Error) -> ClientError + '_ {
        move |source| ClientError::Request {
            what,
            repository: format!("{}/{}", self.owner, self.name),
            retry: retryable(&source),
            source: Box::new(source),
        }
    }

    fn route(&self, rest: &str) -> String {
        format!("/repos/{}/{}/{rest}", self.owner, self.name)
    }

    /// The newest deployment of `sha` to `environment`, if any (after a
    /// restart, so a commit keeps one deployment).
    pub async fn find_deployment(
        &self,
        sha: &str,
        environment: &str,
    ) -> Result<Option<u64>, ClientError> {
        let found: Value = self
            .client
            .get(
                self.route("deployments"),
                Some(&json!({"sha": sha, "environment": environment, "per_page": 1})),
            )
            .await
            .map_err(self.failed("list deployments"))?;
        Ok(found
            .as_array()
            .and_then(|list| list.first())
            .and_then(|d| d.get("id"))
            .and_then(Value::as_u64))
    }

    /// A deployment of `sha` that merges nothing and waits for no checks
    /// (the controller reports what it already did).
    pub async fn create_deployment(
        &self,
        sha: &str,
        environment: &str,
        description: &str,
        payload: Value,
    ) -> Result<u64, ClientError> {
        let created: Value = self
            .client
            .post(
                self.route("deployments"),
                Some(&json!({
                    "ref": sha,
                    "environment": environment,
                    "auto_merge": false,
                    "required_contexts": [],
                    "description": description,
                    "payload": payload,
                    "transient_environment": false,
                })),
            )
            .await
            .map_err(self.failed("create a deployment"))?;
        created
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| ClientError::Setup {
                url: self.route("deployments"),
                detail: format!("the answer to creating a deployment has no id: {created}"),
            })
    }

    pub async fn deployment_status(
        &self,
        deployment: u64,
        state: State,
        text: &StatusText<'_>,
    ) -> Result<(), ClientError> {
        let mut body = json!({
            "state": state.deployment(),
            "description": text.description,
            "auto_inactive": true,
        });
        if let Some(object) = body.as_object_mut() {
            if let Some(url) = text.environment_url {
                object.insert("environment_url".into(), url.into());
            }
            if let Some(url) = text.log_url {
                object.insert("log_url".into(), url.into());
            }
        }
        let _: Value = self
            .client
            .post(
                self.route(&format!("deployments/{deployment}/statuses")),
                Some(&body),
            )
            .await
            .map_err(self.failed("set a deployment status"))?;
        Ok(())
    }

    /// Sets the commit status that says what `state` says; a state with no
    /// commit status (`inactive`) sets none.
    pub async fn commit_status(
        &self,
        sha: &str,
        state: State,
        context: &str,
        text: &StatusText<'_>,
    ) -> Result<(), ClientError> {
        let Some(commit_state) = state.commit() else {
            return Ok(());
        };
        let mut body = json!({
            "state": commit_state,
            "context": context,
            "description": text.description,
        });
        if let (Some(object), Some(url)) = (body.as_object_mut(), text.log_url) {
            object.insert("target_url".into(), url.into());
        }
        let _: Value = self
            .client
            .post(self.route(&format!("statuses/{sha}")), Some(&body))
            .await
            .map_err(self.failed("set a commit status"))?;
        Ok(())
    }

    /// The ids of `environment`'s deployments, newest first, one page of
    /// at most 100.
    pub async fn deployments(
        &self,
        environment: &str,
        page: u32,
        per_page: u8,
    ) -> Result<Vec<u64>, ClientError> {
        let found: Value = self
            .client
            .get(
                self.route("deployments"),
                Some(&json!({"environment": environment, "per_page": per_page.min(100), "page": page})),
            )
            .await
            .map_err(self.failed("list deployments"))?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.get("id").and_then(Value::as_u64))
            .collect())
    }

    /// The descriptions of a deployment's newest statuses (at most 100),
    /// newest first.
    pub async fn status_descriptions(&self, deployment: u64) -> Result<Vec<String>, ClientError> {
        let found: Value = self
            .client
            .get(
                self.route(&format!("deployments/{deployment}/statuses")),
                Some(&json!({"per_page": 100})),
            )
            .await
            .map_err(self.failed("list deployment statuses"))?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("description").and_then(Value::as_str))
            .map(str::to_owned)
            .collect())
    }

    /// The chain heads named by the statuses of `environment`'s newest
    /// `limit` deployments, and how many deployments were read. A commit
    /// deployed again gets statuses on its older deployment, so the newest
    /// head is looked for in several.
    pub async fn witnessed_heads(
        &self,
        environment: &str,
        limit: usize,
    ) -> Result<(Vec<Witnessed>, usize), ClientError> {
        let mut ids = Vec::new();
        for page in 1.. {
            let found = self.deployments(environment, page, 100).await?;
            let last_page = found.len() < 100;
            ids.extend(found);
            if last_page || ids.len() >= limit {
                break;
            }
        }
        ids.truncate(limit);
        let mut heads = Vec::new();
        for id in &ids {
            let by = format!("GitHub deployment {id} ({environment})");
            for description in self.status_descriptions(*id).await? {
                heads.extend(witnessed(&description, &by));
            }
        }
        Ok((heads, ids.len()))
    }
}
