//! The pipelines end to end, as CI runs them: in a temporary git repository
//! a model change is trained, gated and bumped, and `diff` shows exactly the
//! tag change and the metric change; a bad bump and a failing gate fail
//! with their reasons; the review comment is created once and then updated
//! (never duplicated), and commit statuses are set, against a local server
//! that records what GitHub would have been asked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use ferry_lab_testkit::{copy_dir, git};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-pipelines");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn pipelines(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// Fails with the command's stderr unless it succeeded.
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `git ARGS` run on the bare repository `origin` (from `dir`).
fn at_origin(dir: &Path, origin: &Path, args: &[&str]) -> String {
    let mut all = vec!["--git-dir", origin.to_str().unwrap()];
    all.extend_from_slice(args);
    git(dir, &all)
}

/// A repository with this project's data, model and environments.
fn workspace(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-pipelines-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for part in ["inference/data", "inference/model", "environments"] {
        copy_dir(&repo_root().join(part), &dir.join(part));
    }
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-q", "-m", "base"]);
    dir
}

#[test]
fn a_model_change_is_trained_gated_bumped_and_reviewed() {
    let dir = workspace("release");
    // The model change: the last 20 training rows are dropped.
    let data = dir.join("inference/data/Train_Data.csv");
    let text = std::fs::read_to_string(&data).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&data, kept[..kept.len() - 20].join("\n") + "\n").unwrap();

    let out = pipelines(&dir, &["train", "--card", "model-card.md"], &[]);
    assert_ok(&out);
    let model: Value =
        serde_json::from_slice(&std::fs::read(dir.join("inference/model/placement.json")).unwrap())
            .unwrap();
    let version = model["model"]["version"].as_str().unwrap().to_owned();
    assert_eq!(model["model"]["training_data"]["rows"], 650);
    assert!(
        std::fs::read_to_string(dir.join("model-card.md"))
            .unwrap()
            .contains(&version)
    );

    let out = pipelines(&dir, &["gate", "--released-rev", "HEAD"], &[]);
    assert!(
        out.status.success(),
        "the gate closed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let tag = format!("0.1.0-{version}");
    let bump = [
        "bump",
        "--env",
        "dev",
        "--image",
        "ghcr.io/ferry-dev/placement",
        "--tag",
        &tag,
    ];
    assert!(pipelines(&dir, &bump, &[]).status.success());
    let once = std::fs::read(dir.join("environments/dev/kustomization.yaml")).unwrap();
    assert!(pipelines(&dir, &bump, &[]).status.success());
    assert_eq!(
        std::fs::read(dir.join("environments/dev/kustomization.yaml")).unwrap(),
        once,
        "a second bump changed the file"
    );
    let changed = git(&dir, &["diff", "--numstat", "--", "environments"]);
    assert_eq!(
        changed, "1\t1\tenvironments/dev/kustomization.yaml",
        "the bump changed more than the tag line"
    );
    std::fs::remove_file(dir.join("model-card.md")).unwrap();
    git(
        &dir,
        &["commit", "-q", "-am", "release the retrained model"],
    );

    let out = pipelines(
        &dir,
        &[
            "diff",
            "--base",
            "HEAD~1",
            "--head",
            "HEAD",
            "--check-policy",
        ],
        &[],
    );
    assert_ok(&out);
    let review = String::from_utf8(out.stdout).unwrap();
    assert!(
        review.contains("### `dev`: 1 object(s) changed"),
        "{review}"
    );
    assert!(
        review.contains("### `prod`: no changes")
            && review.contains("### `controller`: no changes"),
        "{review}"
    );
    assert!(
        review.contains(&format!(
            "`ghcr.io/ferry-dev/placement:0.1.0-ab4e228d77a7` → `ghcr.io/ferry-dev/placement:{tag}`"
        )),
        "{review}"
    );
    assert!(
        review.contains(&format!("**Model** `ab4e228d77a7` → `{version}`")),
        "{review}"
    );
    assert!(
        review.contains("| cv_unshuffled_accuracy | 0.9597 |"),
        "{review}"
    );
    // Exactly one line of the Deployment changed, in the diffs.
    let mut in_diff = false;
    let mut diff_lines = Vec::new();
    for line in review.lines() {
        match line {
            "```diff" => in_diff = true,
            "```" => in_diff = false,
            l if in_diff
                && (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---") =>
            {
                diff_lines.push(l)
            }
            _ => {}
        }
    }
    assert_eq!(diff_lines.len(), 2, "{diff_lines:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_bump_and_a_failing_gate_say_why() {
    let dir = workspace("failures");
    let out = pipelines(
        &dir,
        &[
            "bump",
            "--env",
            "dev",
            "--image",
            "ghcr.io/acme/unknown",
            "--tag",
            "1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no `images:` entry named ghcr.io/acme/unknown; the entries are: ghcr.io/ferry-dev/placement"), "{stderr}");
    let out = pipelines(
        &dir,
        &["bump", "--env", "staging", "--image", "x", "--tag", "1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(3));

    std::fs::write(
        dir.join("strict.json"),
        r#"{"minimum": {"cv_stratified_accuracy": 0.99}, "max_regression": 0.0}"#,
    )
    .unwrap();
    let out = pipelines(&dir, &["gate", "--thresholds", "strict.json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cv_stratified_accuracy is 0.9537, below the minimum 0.9900 by 0.0363"),
        "{stderr}"
    );
    // No released model: closed, unless this is the first release.
    assert!(
        stderr.contains("no released model to compare with"),
        "{stderr}"
    );
    let out = pipelines(&dir, &["gate"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let out = pipelines(&dir, &["gate", "--first-release"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// What the fake GitHub holds and was asked.
#[derive(Default)]
struct FakeGitHub {
    /// id, body, author's login.
    comments: Vec<(u64, String, String)>,
    requests: Vec<String>,
    statuses: Vec<Value>,
    /// Pull requests as created, then updated.
    pulls: Vec<Value>,
    /// GraphQL queries received.
    graphql: Vec<Value>,
    /// The bare repository behind the fake, when a test models merging.
    origin: Option<PathBuf>,
    /// The token whose events start workflows (a GitHub App's); events
    /// made with any other token (the workflow's own) start none.
    app_token: String,
    /// Passed check runs: (commit, check name).
    checks: Vec<(String, String)>,
    /// The latest `ferry/policy` state per commit.
    policy: std::collections::HashMap<String, String>,
    /// Workflows dispatched: (workflow file, branch).
    dispatches: Vec<(String, String)>,
    /// Node ids of pull requests with auto-merge on.
    auto_merge: Vec<String>,
    /// Numbers of the pull requests merged.
    merged: Vec<u64>,
}

/// The checks main's protection requires besides `ferry/policy`: the jobs
/// of the `ci` workflow.
const CI_CHECKS: [&str; 2] = ["test", "images"];

impl FakeGitHub {
    /// The commit `branch` points at in the origin.
    fn head_of(&self, branch: &str) -> Option<String> {
        let origin = self.origin.as_ref()?;
        let out = Command::new("git")
            .args(["--git-dir", origin.to_str()?, "rev-parse", "--verify", "-q"])
            .arg(format!("refs/heads/{branch}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A run of the `ci` workflow on `branch`: its jobs pass.
    fn run_ci(&mut self, branch: &str) {
        if let Some(sha) = self.head_of(branch) {
            for check in CI_CHECKS {
                self.checks.push((sha.clone(), check.to_owned()));
            }
        }
    }

    /// Merges, as GitHub's auto-merge does, each open pull request with
    /// auto-merge on whose head passed every required check: main moves
    /// to the head (the bump's parent is main's tip).
    fn auto_merge(&mut self) {
        let Some(origin) = self.origin.clone() else {
            return;
        };
        for pr in self.pulls.clone() {
            let number = pr["number"].as_u64().unwrap_or(0);
            let node = pr["node_id"].as_str().unwrap_or("");
            if self.merged.contains(&number) || !self.auto_merge.iter().any(|n| n == node) {
                continue;
            }
            let Some(sha) = self.head_of(pr["head"].as_str().unwrap_or("")) else {
                continue;
            };
            let passed = CI_CHECKS
                .iter()
                .all(|c| self.checks.contains(&(sha.clone(), (*c).to_owned())))
                && self.policy.get(&sha).is_some_and(|s| s == "success");
            if passed {
                let status = Command::new("git")
                    .args(["--git-dir", origin.to_str().unwrap(), "update-ref"])
                    .args(["refs/heads/main", &sha])
                    .status()
                    .unwrap();
                assert!(status.success());
                self.merged.push(number);
            }
        }
    }
}

type Shared = Arc<Mutex<FakeGitHub>>;

fn user(login: &str) -> Value {
    let url = format!("https://api.github.test/users/{login}");
    json!({"login": login, "id": 1, "node_id": "U1", "avatar_url": url, "gravatar_id": "", "url": url,
           "html_url": url, "followers_url": url, "following_url": url, "gists_url": url, "starred_url": url,
           "subscriptions_url": url, "organizations_url": url, "repos_url": url, "events_url": url,
           "received_events_url": url, "type": "Bot", "site_admin": false})
}

fn comment(id: u64, body: &str, login: &str) -> Value {
    let url = format!("https://api.github.test/repos/acme/placement/issues/comments/{id}");
    json!({"id": id, "node_id": format!("C{id}"), "url": url, "html_url": url, "body": body,
           "user": user(login), "created_at": "2026-11-27T00:00:00Z"})
}

async fn list(
    State(s): State<Shared>,
    UrlPath((_, _, pr)): UrlPath<(String, String, u64)>,
) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.requests.push(format!("GET comments of #{pr}"));
    if pr != 12 {
        // The fake's comments are all on #12.
        return Json(json!([]));
    }
    Json(Value::Array(
        s.comments
            .iter()
            .map(|(id, b, a)| comment(*id, b, a))
            .collect(),
    ))
}

async fn create(
    State(s): State<Shared>,
    UrlPath((_, _, pr)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.requests.push(format!("POST comment on #{pr}"));
    let id = 100 + s.comments.len() as u64;
    let text = body["body"].as_str().unwrap_or("").to_owned();
    s.comments.push((id, text.clone(), "ferry-bot".to_owned()));
    Json(comment(id, &text, "ferry-bot"))
}

async fn update(
    State(s): State<Shared>,
    UrlPath((_, _, id)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.requests.push(format!("update comment {id}"));
    let text = body["body"].as_str().unwrap_or("").to_owned();
    let mut author = String::new();
    if let Some(c) = s.comments.iter_mut().find(|(i, _, _)| *i == id) {
        c.1 = text.clone();
        author = c.2.clone();
    }
    Json(comment(id, &text, &author))
}

async fn status(
    State(s): State<Shared>,
    UrlPath((_, _, sha)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.requests.push(format!("POST status on {sha}"));
    s.statuses.push(body.clone());
    if body["context"] == "ferry/policy" {
        let state = body["state"].as_str().unwrap_or("").to_owned();
        s.policy.insert(sha.clone(), state);
        s.auto_merge();
    }
    Json(
        json!({"state": body["state"], "context": body["context"], "description": body["description"]}),
    )
}

async fn pull(
    State(s): State<Shared>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = s.lock().unwrap();
    let head = body["head"].as_str().unwrap_or("").to_owned();
    s.requests.push(format!(
        "POST pull {head} -> {}",
        body["base"].as_str().unwrap_or("")
    ));
    let number = 42 + s.pulls.len() as u64;
    let mut pr = body.clone();
    pr["number"] = json!(number);
    pr["node_id"] = json!(format!("PR_{number}"));
    pr["html_url"] = json!(format!("https://github.test/acme/placement/pull/{number}"));
    s.pulls.push(pr.clone());
    // A pull request opened with an App's token starts its workflows: CI,
    // and environments-pr, which sets ferry/policy.
    let by_app = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !s.app_token.is_empty() && v.ends_with(&s.app_token));
    if by_app {
        s.run_ci(&head);
        if let Some(sha) = s.head_of(&head) {
            s.policy.insert(sha, "success".to_owned());
        }
    }
    Json(pr)
}

async fn dispatch(
    State(s): State<Shared>,
    UrlPath((_, _, workflow)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> axum::http::StatusCode {
    let mut s = s.lock().unwrap();
    let branch = body["ref"].as_str().unwrap_or("").to_owned();
    s.requests.push(format!("dispatch {workflow} on {branch}"));
    s.dispatches.push((workflow, branch.clone()));
    s.run_ci(&branch);
    s.auto_merge();
    axum::http::StatusCode::NO_CONTENT
}

async fn pulls(
    State(s): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let mut s = s.lock().unwrap();
    let head = query.get("head").cloned().unwrap_or_default();
    s.requests.push(format!("GET pulls head={head}"));
    // head is OWNER:BRANCH; the fake's repository is acme/placement.
    let branch = head.strip_prefix("acme:").unwrap_or("");
    Json(Value::Array(
        s.pulls
            .iter()
            .filter(|p| p["head"] == branch)
            .cloned()
            .collect(),
    ))
}

async fn update_pull(
    State(s): State<Shared>,
    UrlPath((_, _, number)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.requests.push(format!("PATCH pull {number}"));
    let pr = s
        .pulls
        .iter_mut()
        .find(|p| p["number"] == number)
        .expect("a known pull request");
    pr["title"] = body["title"].clone();
    pr["body"] = body["body"].clone();
    Json(pr.clone())
}

async fn graphql(State(s): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.requests.push("POST graphql".to_owned());
    if let Some(node) = body["variables"]["id"].as_str() {
        s.auto_merge.push(node.to_owned());
    }
    s.graphql.push(body);
    s.auto_merge();
    Json(json!({"data": {"enablePullRequestAutoMerge": {"clientMutationId": null}}}))
}

fn fake_github() -> (SocketAddr, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/repos/{owner}/{repo}/issues/{pr}/comments",
            get(list).post(create),
        )
        // GitHub documents PATCH; octocrab sends POST, which GitHub accepts too.
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}",
            patch(update).post(update),
        )
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(status))
        .route("/repos/{owner}/{repo}/pulls", post(pull).get(pulls))
        .route("/repos/{owner}/{repo}/pulls/{number}", patch(update_pull))
        .route("/graphql", post(graphql))
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
            post(dispatch),
        )
        .with_state(state.clone());
    let addr = ferry_lab_testkit::serve(app);
    (addr, state)
}

#[test]
fn the_review_comment_is_created_once_then_updated_and_statuses_are_set() {
    let (addr, state) = fake_github();
    state.lock().unwrap().comments.push((
        7,
        "LGTM from a human, quoting <!-- ferry:environment-diff -->".into(),
        "a-human".into(),
    ));
    let dir = std::env::temp_dir().join(format!("ferry-pipelines-comment-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = [
        ("GITHUB_API_URL", format!("http://{addr}")),
        ("GITHUB_TOKEN", "test-token".to_owned()),
        ("GITHUB_REPOSITORY", "acme/placement".to_owned()),
        ("FERRY_COMMENT_AUTHOR", "ferry-bot".to_owned()),
    ];
    for body in ["first review", "second review"] {
        std::fs::write(dir.join("review.md"), body).unwrap();
        let out = pipelines(
            &dir,
            &["comment", "--pr", "12", "--body-file", "review.md"],
            &env,
        );
        assert_ok(&out);
    }
    // A pull request that no longer changes anything: no new comment.
    let out = pipelines(
        &dir,
        &[
            "comment",
            "--pr",
            "13",
            "--body-file",
            "review.md",
            "--update-only",
        ],
        &env,
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("none created"));
    let out = pipelines(
        &dir,
        &[
            "status",
            "--sha",
            "abc123",
            "--state",
            "failure",
            "--context",
            "ferry/policy",
            "--description",
            "2 findings",
        ],
        &env,
    );
    assert_ok(&out);

    let s = state.lock().unwrap();
    assert_eq!(
        s.requests,
        [
            "GET comments of #12",
            "POST comment on #12",
            "GET comments of #12",
            "update comment 101",
            "GET comments of #13",
            "POST status on abc123"
        ]
    );
    assert_eq!(
        s.comments.len(),
        2,
        "the human's comment and ours, nothing more"
    );
    assert_eq!(
        s.comments[0].1, "LGTM from a human, quoting <!-- ferry:environment-diff -->",
        "a comment by someone else, marker and all, is left alone"
    );
    assert!(
        s.comments[1]
            .1
            .starts_with("<!-- ferry:environment-diff -->")
            && s.comments[1].1.ends_with("second review")
    );
    assert_eq!(s.statuses[0]["state"], "failure");
    assert_eq!(s.statuses[0]["context"], "ferry/policy");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn promote_opens_a_pull_request_that_pins_prod_to_devs_digest() {
    let (addr, state) = fake_github();
    let (dir, origin) = with_origin("promote");
    let env = [
        ("GITHUB_API_URL", format!("http://{addr}")),
        ("GITHUB_TOKEN", "test-token".to_owned()),
        ("GITHUB_REPOSITORY", "acme/placement".to_owned()),
    ];
    // dev runs by tag only: nothing to promote by digest.
    let out = pipelines(&dir, &["promote"], &env);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not pinned by digest"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The release pipeline pins dev, with the image's prediction cases;
    // then promote.
    let digest = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    let (model, data) = (
        repo_root().join("inference/model/placement.json"),
        held_out(&dir),
    );
    let bump = [
        "bump",
        "--env",
        "dev",
        "--image",
        "ghcr.io/ferry-dev/placement",
        "--tag",
        "0.2.0-abc",
        "--digest",
        digest,
        "--golden-model",
        model.to_str().unwrap(),
        "--golden-data",
        data.to_str().unwrap(),
    ];
    assert!(pipelines(&dir, &bump, &[]).status.success());
    let cases = std::fs::read_to_string(dir.join("environments/dev/golden.jsonl")).unwrap();
    assert_eq!(cases.lines().count(), 50);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "release 0.2.0-abc"]);
    let out = pipelines(&dir, &["promote"], &env);
    assert_ok(&out);

    let branch = "promote/dev-to-prod-333333333333";
    let prod = at_origin(
        &dir,
        &origin,
        &[
            "show",
            &format!("{branch}:environments/prod/kustomization.yaml"),
        ],
    );
    assert!(
        prod.contains("newTag: 0.2.0-abc") && prod.contains(&format!("digest: {digest}")),
        "{prod}"
    );
    assert_eq!(
        git(&dir, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "main",
        "left the checkout on its branch"
    );
    let changed = at_origin(
        &dir,
        &origin,
        &["diff", "--numstat", &format!("{branch}~1"), branch],
    );
    assert_eq!(
        changed,
        "50\t50\tenvironments/prod/golden.jsonl\n2\t2\tenvironments/prod/kustomization.yaml",
        "the image and its prediction cases"
    );
    // Run again (the pull request not merged yet): the branch is written
    // again and the open pull request updated, not a second one opened.
    let out = pipelines(&dir, &["promote"], &env);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("updated #42"));
    let s = state.lock().unwrap();
    assert_eq!(
        s.requests,
        [
            format!("GET pulls head=acme:{branch}"),
            format!("POST pull {branch} -> main"),
            format!("GET pulls head=acme:{branch}"),
            "PATCH pull 42".to_owned(),
        ]
    );
    assert_eq!(s.pulls.len(), 1);
    assert_eq!(
        s.pulls[0]["title"],
        "prod: promote ghcr.io/ferry-dev/placement 0.2.0-abc from dev"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&origin);
}

/// Held-out rows other than the ones the committed cases were written
/// from (rows 51 to 100 of Test_Data.csv), beside the workspace `dir`.
fn held_out(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("inference/data/Test_Data.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let path = dir.with_extension("held-out.csv");
    std::fs::write(
        &path,
        format!("{}\n{}\n", lines[0], lines[51..101].join("\n")),
    )
    .unwrap();
    path
}

/// A workspace with a bare origin it has pushed main to.
fn with_origin(name: &str) -> (PathBuf, PathBuf) {
    let dir = workspace(name);
    let origin = dir.with_extension("origin.git");
    let _ = std::fs::remove_dir_all(&origin);
    git(
        dir.parent().unwrap(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            origin.to_str().unwrap(),
        ],
    );
    git(&dir, &["remote", "add", "origin", origin.to_str().unwrap()]);
    git(&dir, &["push", "-q", "origin", "main"]);
    (dir, origin)
}

/// `release-bump` of dev's placement image to `tag` and `digest`, then
/// `more` arguments.
fn release_bump<'a>(tag: &'a str, digest: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "release-bump",
        "--env",
        "dev",
        "--image",
        "ghcr.io/ferry-dev/placement",
        "--tag",
        tag,
        "--digest",
        digest,
    ];
    args.extend_from_slice(more);
    args
}

/// Makes `origin` refuse pushes to main as GitHub refuses a protected
/// branch (merges still move it).
fn protect_main(origin: &Path) {
    let hook = origin.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do\n  if [ \"$ref\" = refs/heads/main ]; then\n    echo 'error: GH006: Protected branch update failed for refs/heads/main.' >&2\n    exit 1\n  fi\ndone\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Someone else pushes to origin's main meanwhile: the bump is made again
/// on the new tip and lands on top of their commit, theirs kept.
#[test]
fn a_release_bump_that_loses_a_race_is_made_again_on_the_new_tip() {
    use ferry_pipelines::publish::{Change, FileEdit, Outcome, publish};
    let (dir, origin) = with_origin("race");
    let other = dir.with_extension("other");
    let _ = std::fs::remove_dir_all(&other);
    git(
        dir.parent().unwrap(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    let calls = std::cell::Cell::new(0);
    let edit = |text: &str| -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            // Their push lands between our fetch and our push.
            std::fs::write(other.join("NOTES"), "someone else's change\n").unwrap();
            git(&other, &["add", "NOTES"]);
            git(&other, &["commit", "-q", "-m", "theirs"]);
            git(&other, &["push", "-q", "origin", "main"]);
        }
        Ok(ferry_pipelines::bump::bump(
            text,
            "kustomization.yaml",
            "ghcr.io/ferry-dev/placement",
            "0.3.0-def",
            None,
        )?)
    };
    let file = PathBuf::from("environments/dev/kustomization.yaml");
    let files = [FileEdit {
        file: &file,
        edit: &edit,
    }];
    let outcome = publish(&Change {
        dir: &dir,
        remote: "origin",
        branch: "main",
        files: &files,
        message: "dev: release 0.3.0-def",
        attempts: 3,
        pause: std::time::Duration::from_millis(10),
    })
    .unwrap();
    let Outcome::Pushed { commit, retries } = outcome else {
        panic!("not pushed: {outcome:?}");
    };
    assert_eq!(retries, 1);
    assert_eq!(calls.get(), 2, "made again on the new tip");
    let git_origin = |args: &[&str]| at_origin(&dir, &origin, args);
    assert_eq!(git_origin(&["rev-parse", "main"]), commit);
    assert_eq!(
        git_origin(&["log", "--format=%s", "-3", "main"]),
        "dev: release 0.3.0-def\ntheirs\nbase"
    );
    assert!(
        git_origin(&["show", "main:environments/dev/kustomization.yaml"])
            .contains("newTag: 0.3.0-def")
    );
    // Run again: already there, nothing pushed.
    let again = publish(&Change {
        dir: &dir,
        remote: "origin",
        branch: "main",
        files: &files,
        message: "dev: release 0.3.0-def",
        attempts: 3,
        pause: std::time::Duration::from_millis(10),
    })
    .unwrap();
    assert_eq!(again, Outcome::Unchanged);
    for d in [&dir, &origin, &other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// main is protected (the remote refuses it as GitHub does): the bump goes
/// to a branch and a pull request with auto-merge; a re-run updates them.
#[test]
fn a_protected_main_gets_the_release_as_an_auto_merging_pull_request() {
    let (addr, state) = fake_github();
    let (dir, origin) = with_origin("protected");
    protect_main(&origin);
    let env = [
        ("GITHUB_API_URL", format!("http://{addr}")),
        ("GITHUB_TOKEN", "test-token".to_owned()),
        ("GITHUB_REPOSITORY", "acme/placement".to_owned()),
    ];
    let digest = format!("sha256:{}", "4".repeat(64));
    let args = release_bump("0.4.0-123", &digest, &[]);
    // Without the fallback: refused, and says what to do.
    let out = pipelines(&dir, &args, &env);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused the push to main as protected")
            && stderr.contains("--pull-request-if-protected"),
        "{stderr}"
    );
    // The release's prediction cases land in the same commit.
    let (model, data) = (
        repo_root().join("inference/model/placement.json"),
        held_out(&dir),
    );
    let mut fallback = args.to_vec();
    fallback.extend([
        "--pull-request-if-protected",
        "--golden-model",
        model.to_str().unwrap(),
        "--golden-data",
        data.to_str().unwrap(),
    ]);
    for _ in 0..2 {
        let out = pipelines(&dir, &fallback, &env);
        assert_ok(&out);
    }
    let branch = "release/dev-0.4.0-123";
    let shown = at_origin(
        &dir,
        &origin,
        &[
            "show",
            &format!("{branch}:environments/dev/kustomization.yaml"),
        ],
    );
    assert!(shown.contains("newTag: 0.4.0-123"), "{shown}");
    let changed = at_origin(
        &dir,
        &origin,
        &["diff", "--name-only", &format!("{branch}~1"), branch],
    );
    assert_eq!(
        changed,
        "environments/dev/golden.jsonl\nenvironments/dev/kustomization.yaml"
    );
    let s = state.lock().unwrap();
    assert_eq!(
        s.requests,
        [
            format!("GET pulls head=acme:{branch}"),
            format!("POST pull {branch} -> main"),
            "POST graphql".to_owned(),
            format!("GET pulls head=acme:{branch}"),
            "PATCH pull 42".to_owned(),
            "POST graphql".to_owned(),
        ]
    );
    assert_eq!(s.graphql[0]["variables"]["id"], "PR_42");
    assert!(
        s.graphql[0]["query"]
            .as_str()
            .unwrap()
            .contains("enablePullRequestAutoMerge")
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&origin);
}

/// A protected main, the bump's pull request opened with the workflow's
/// own token: GitHub starts no workflow for it, so nothing merges until
/// `start-checks` dispatches CI and sets `ferry/policy`. With an App's
/// token the pull request starts its checks as any does. Both paths end
/// merged with no person involved.
#[test]
fn a_release_lands_on_a_protected_main_unaided_with_or_without_an_app() {
    for app in [false, true] {
        let (addr, state) = fake_github();
        let (dir, origin) = with_origin(if app { "unaided-app" } else { "unaided" });
        protect_main(&origin);
        {
            let mut s = state.lock().unwrap();
            s.origin = Some(origin.clone());
            s.app_token = "app-token".to_owned();
        }
        let token = if app { "app-token" } else { "workflow-token" };
        let env = [
            ("GITHUB_API_URL", format!("http://{addr}")),
            ("GITHUB_TOKEN", token.to_owned()),
            ("GITHUB_REPOSITORY", "acme/placement".to_owned()),
        ];
        let digest = format!("sha256:{}", "5".repeat(64));
        let args = release_bump("0.5.0-555", &digest, &["--pull-request-if-protected"]);
        let out = pipelines(&dir, &args, &env);
        assert_ok(&out);
        let branch = "release/dev-0.5.0-555";
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("branch={branch}")
        );
        if !app {
            assert!(
                state.lock().unwrap().merged.is_empty(),
                "merged before any check ran"
            );
            let out = pipelines(&dir, &["start-checks", "--branch", branch], &env);
            assert_ok(&out);
            let s = state.lock().unwrap();
            assert_eq!(s.dispatches, [("ci.yml".to_owned(), branch.to_owned())]);
            let policy = s.statuses.last().unwrap();
            assert_eq!(policy["context"], "ferry/policy");
            assert_eq!(policy["state"], "success");
        }
        let s = state.lock().unwrap();
        assert_eq!(s.merged, [42], "app: {app}");
        let main = at_origin(
            &dir,
            &origin,
            &["show", "main:environments/dev/kustomization.yaml"],
        );
        assert!(main.contains("newTag: 0.5.0-555"), "{main}");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&origin);
    }
}

/// A release of a commit older than the one dev's image was built from
/// (a re-run of an old CI run, or a dispatch on an old commit) writes
/// nothing and says why; a newer one goes ahead.
#[test]
fn a_release_never_moves_an_environment_backwards() {
    let (dir, origin) = with_origin("backwards");
    let mut commits = Vec::new();
    for name in ["older", "newer", "newest"] {
        std::fs::write(dir.join("NOTES"), format!("{name}\n")).unwrap();
        git(&dir, &["add", "NOTES"]);
        git(&dir, &["commit", "-q", "-m", name]);
        let sha = git(&dir, &["rev-parse", "HEAD"]);
        commits.push(sha[..12].to_owned());
    }
    git(&dir, &["push", "-q", "origin", "main"]);
    let digest = format!("sha256:{}", "6".repeat(64));
    let release = |tag: &str| pipelines(&dir, &release_bump(tag, &digest, &[]), &[]);
    let dev = || {
        at_origin(
            &dir,
            &origin,
            &["show", "main:environments/dev/kustomization.yaml"],
        )
    };
    let newer = format!("0.5.0-{}", commits[1]);
    assert_ok(&release(&newer));
    assert!(dev().contains(&format!("newTag: {newer}")));
    let tip = at_origin(&dir, &origin, &["rev-parse", "main"]);
    let out = release(&format!("0.4.0-{}", commits[0]));
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("never moves an environment backwards") && stderr.contains(&newer),
        "{stderr}"
    );
    assert_eq!(
        at_origin(&dir, &origin, &["rev-parse", "main"]),
        tip,
        "nothing pushed"
    );
    let newest = format!("0.6.0-{}", commits[2]);
    assert_ok(&release(&newest));
    assert!(dev().contains(&format!("newTag: {newest}")));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&origin);
}

/// `init` in a copy of this repository's environments and workflows: no
/// file a fork releases with names the upstream afterwards, the overlay
/// still pins the base's image (so dev renders by tag and digest), and a
/// second run changes nothing.
#[test]
fn init_leaves_no_upstream_name_in_a_fork() {
    let dir = std::env::temp_dir().join(format!("ferry-pipelines-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for part in ferry_pipelines::init::FOLDERS {
        copy_dir(&repo_root().join(part), &dir.join(part));
    }
    let before: Vec<PathBuf> = ferry_pipelines::init::FOLDERS
        .iter()
        .flat_map(|f| ferry_pipelines::init::files_under(&dir.join(f)).unwrap())
        .filter(|p| {
            ferry_pipelines::init::names_upstream(&std::fs::read_to_string(p).unwrap_or_default())
        })
        .collect();
    assert!(before.len() >= 6, "the copy names the upstream: {before:?}");
    let init = ["init", "--repository", "Acme/placement-fork"];
    let out = pipelines(&dir, &init, &[]);
    assert_ok(&out);
    for file in &before {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            !ferry_pipelines::init::names_upstream(&text),
            "{}:\n{text}",
            file.display()
        );
    }
    let dev = std::fs::read_to_string(dir.join("environments/dev/kustomization.yaml")).unwrap();
    let base = std::fs::read_to_string(dir.join("environments/base/deployment.yaml")).unwrap();
    assert!(
        dev.contains("- name: ghcr.io/acme/placement\n")
            && base.contains("image: ghcr.io/acme/placement\n")
    );
    let environments =
        std::fs::read_to_string(dir.join("environments/controller/environments.yaml")).unwrap();
    assert!(environments.contains("url: https://github.com/Acme/placement-fork.git"));
    let release = std::fs::read_to_string(dir.join(".github/workflows/release.yml")).unwrap();
    assert!(release.contains("ghcr.io/acme/controller"), "{release}");
    let again = pipelines(&dir, &init, &[]);
    assert_ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 files"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // A name it cannot know is refused, nothing written.
    let out = pipelines(&dir, &["init", "--repository", "acme"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not OWNER/NAME"));
    let _ = std::fs::remove_dir_all(&dir);
}
