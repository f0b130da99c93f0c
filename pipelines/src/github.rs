//! What the pipelines tell GitHub: one pull-request comment, found by its
//! hidden marker and updated in place (never duplicated), and commit
//! statuses. The API address is configurable (GITHUB_API_URL in Actions,
//! a local server in tests).

use octocrab::Octocrab;
use octocrab::models::StatusState;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("failed to set up the GitHub client for {url}")]
    Client {
        url: String,
        #[source]
        source: Box<octocrab::Error>,
    },
    #[error(
        "failed to {what} on {repo}; check the token's permissions (pull-requests: write, statuses: write)"
    )]
    Request {
        what: String,
        repo: String,
        #[source]
        source: Box<octocrab::Error>,
    },
    #[error("{0:?} is not OWNER/NAME")]
    Repository(String),
    #[error(
        "failed to {what}: GitHub answered {errors}; allow auto-merge in the repository's settings"
    )]
    GraphQl { what: String, errors: String },
}

/// A pull request opened or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
    /// For the GraphQL API.
    pub node_id: String,
    /// False when an open one from the same branch was updated.
    pub created: bool,
}

/// A repository on a GitHub API.
pub struct GitHub {
    client: Octocrab,
    owner: String,
    name: String,
}

/// What happened to the comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created(u64),
    Updated(u64),
    /// None existed and none was to be created.
    None,
}

impl GitHub {
    /// `repository` is `owner/name`; `api_url` e.g. `https://api.github.com`.
    pub fn new(api_url: &str, token: &str, repository: &str) -> Result<Self, GitHubError> {
        let (owner, name) = repository
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| GitHubError::Repository(repository.to_owned()))?;
        let client_error = |source| GitHubError::Client {
            url: api_url.to_owned(),
            source: Box::new(source),
        };
        let client = Octocrab::builder()
            .personal_token(token.to_owned())
            .base_uri(api_url)
            .map_err(client_error)?
            .build()
            .map_err(client_error)?;
        Ok(GitHub {
            client,
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    fn request_error(&self, what: &str) -> impl Fn(octocrab::Error) -> GitHubError + '_ {
        let what = what.to_owned();
        move |source| GitHubError::Request {
            what: what.clone(),
            repo: format!("{}/{}", self.owner, self.name),
            source: Box::new(source),
        }
    }

    /// Creates the pull request's comment that contains `marker`, or
    /// updates it if one exists (the first one, if several).
    pub async fn upsert_comment(
        &self,
        pull_request: u64,
        marker: &str,
        author: &str,
        body: &str,
        create: bool,
    ) -> Result<Upsert, GitHubError> {
        let issues = self.client.issues(&self.owner, &self.name);
        let mut page = issues
            .list_comments(pull_request)
            .per_page(100)
            .send()
            .await
            .map_err(self.request_error("list the pull request's comments"))?;
        loop {
            if let Some(existing) = page
                .items
                .iter()
                // Ours only: anyone can paste the marker into a comment.
                .find(|c| {
                    c.user.login.eq_ignore_ascii_case(author)
                        && c.body.as_deref().is_some_and(|b| b.contains(marker))
                })
            {
                let id = existing.id;
                issues
                    .update_comment(id, body)
                    .await
                    .map_err(self.request_error("update the comment"))?;
                return Ok(Upsert::Updated(id.into_inner()));
            }
            match self
                .client
                .get_page::<octocrab::models::issues::Comment>(&page.next)
                .await
                .map_err(self.request_error("list the pull request's comments"))?
            {
                Some(next) => page = next,
                None => break,
            }
        }
        if !create {
            return Ok(Upsert::None);
        }
        let created = issues
            .create_comment(pull_request, body)
            .await
            .map_err(self.request_error("create the comment"))?;
        Ok(Upsert::Created(created.id.into_inner()))
    }

    /// Opens a pull request from `head` into `base`, or updates the title
    /// and body of the open one from that branch (a re-run).
    pub async fn open_or_update_pull_request(
        &self,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
    ) -> Result<PullRequest, GitHubError> {
        let route = format!("/repos/{}/{}/pulls", self.owner, self.name);
        let query = format!("{route}?state=open&head={}:{head}&base={base}", self.owner);
        let open: serde_json::Value = self
            .client
            .get(query, None::<&()>)
            .await
            .map_err(self.request_error("list the open pull requests"))?;
        let existing = open.as_array().and_then(|list| list.first()).cloned();
        let (value, created) = match existing {
            Some(pr) => {
                let number = pr["number"].as_u64().unwrap_or(0);
                let request = serde_json::json!({ "title": title, "body": body });
                let updated: serde_json::Value = self
                    .client
                    .patch(format!("{route}/{number}"), Some(&request))
                    .await
                    .map_err(self.request_error("update the pull request"))?;
                (updated, false)
            }
            None => {
                let request =
                    serde_json::json!({ "title": title, "head": head, "base": base, "body": body });
                let created: serde_json::Value = self
                    .client
                    .post(route, Some(&request))
                    .await
                    .map_err(self.request_error("open the pull request"))?;
                (created, true)
            }
        };
        Ok(PullRequest {
            number: value["number"].as_u64().unwrap_or(0),
            url: value["html_url"].as_str().unwrap_or("").to_owned(),
            node_id: value["node_id"].as_str().unwrap_or("").to_owned(),
            created,
        })
    }

    /// Turns on auto-merge (squash): GitHub merges the pull request once
    /// its required checks pass. Needs "Allow auto-merge" in the
    /// repository's settings.
    pub async fn enable_auto_merge(&self, pull_request: &PullRequest) -> Result<(), GitHubError> {
        let query = serde_json::json!({
            "query": "mutation($id: ID!) { enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: SQUASH}) { clientMutationId } }",
            "variables": { "id": pull_request.node_id },
        });
        let answer: serde_json::Value = self
            .client
            .graphql(&query)
            .await
            .map_err(self.request_error("turn on auto-merge"))?;
        if let Some(errors) = answer.get("errors").filter(|e| !e.is_null()) {
            return Err(GitHubError::GraphQl {
                what: "turn on auto-merge".to_owned(),
                errors: errors.to_string(),
            });
        }
        Ok(())
    }

    /// Starts the workflow `workflow` (its file name, e.g. `ci.yml`) on
    /// `branch`, as "Run workflow" does. This is the one event a workflow
    /// token may cause that starts a workflow: the checks of a pull request
    /// it opened run this way. The workflow must allow `workflow_dispatch`.
    pub async fn dispatch_workflow(&self, workflow: &str, branch: &str) -> Result<(), GitHubError> {
        self.client
            .actions()
            .create_workflow_dispatch(&self.owner, &self.name, workflow, branch)
            .send()
            .await
            .map_err(self.request_error(&format!(
                "start the workflow {workflow} on {branch} (the token needs actions: write)"
            )))
    }

    /// Sets a commit status.
    pub async fn set_status(
        &self,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<(), GitHubError> {
        let repos = self.client.repos(&self.owner, &self.name);
        let mut builder = repos
            .create_status(sha.to_owned(), state)
            .context(context.to_owned())
            .description(description.chars().take(140).collect::<String>());
        if let Some(url) = target_url {
            builder = builder.target(url.to_owned());
        }
        builder
            .send()
            .await
            .map_err(self.request_error("set the commit status"))?;
        Ok(())
    }
}
