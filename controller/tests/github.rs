//! The GitHub client against a local server that records what it
//! receives: the requests GitHub's Deployments and Statuses APIs expect,
//! both ways of signing in, and which failures are worth a retry (no lab
//! needed); then, on the lab, GitHub as the history's witness: what it
//! refused is posted later, and `history verify --against-github` catches
//! a tail removed together with the status. The whole release path
//! (history -> statuses) is in rollback.rs.

mod common;
mod fake_github;

use std::time::Duration;

use common::{Lab, edit_chunk};
use fake_github::FakeGitHub;
use ferry_controller::github::State;
use ferry_controller::github::client::{Auth, Repository, StatusText};
use ferry_lab_testkit::{k, lab_enabled, wait_until};
use serde_json::Value;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn text<'a>(description: &'a str) -> StatusText<'a> {
    StatusText {
        description,
        environment_url: Some("http://placement.example"),
        log_url: Some("http://ferry.example/api/v1/environments/s/dev/history?before=3&limit=1"),
    }
}

#[test]
fn a_deployment_and_its_statuses_are_what_github_expects() {
    let github = FakeGitHub::start();
    let rt = runtime();
    let _in_runtime = rt.enter();
    let repo = Repository::new(
        &github.url(),
        &Auth::Token("ghp_test".into()),
        "acme/placement",
    )
    .unwrap();
    rt.block_on(async {
        assert_eq!(repo.find_deployment(SHA, "dev").await.unwrap(), None);
        let id = repo
            .create_deployment(SHA, "dev", "queued", serde_json::json!({"ferry": {}}))
            .await
            .unwrap();
        assert_eq!(repo.find_deployment(SHA, "dev").await.unwrap(), Some(id));
        assert_eq!(repo.find_deployment(SHA, "prod").await.unwrap(), None);
        repo.deployment_status(id, State::InProgress, &text("applying"))
            .await
            .unwrap();
        repo.commit_status(SHA, State::InProgress, "ferry/dev", &text("applying"))
            .await
            .unwrap();
    });
    let requests = github.requests();
    let create = requests
        .iter()
        .find(|r| r.method == "POST" && r.path == "/repos/acme/placement/deployments")
        .unwrap();
    assert_eq!(create.body["ref"], SHA);
    assert_eq!(create.body["auto_merge"], false);
    assert_eq!(create.body["required_contexts"], serde_json::json!([]));
    assert_eq!(create.authorization, "Bearer ghp_test");
    let status = requests
        .iter()
        .find(|r| r.path.ends_with("/statuses") && r.path.contains("/deployments/"))
        .unwrap();
    assert_eq!(status.body["state"], "in_progress");
    assert_eq!(status.body["environment_url"], "http://placement.example");
    assert!(
        status.body["log_url"]
            .as_str()
            .unwrap()
            .contains("before=3")
    );
    let commit = requests
        .iter()
        .find(|r| r.path == format!("/repos/acme/placement/statuses/{SHA}"))
        .unwrap();
    assert_eq!(commit.body["state"], "pending");
    assert_eq!(commit.body["context"], "ferry/dev");
    assert!(commit.body["target_url"].as_str().is_some());
}

#[test]
fn a_github_app_signs_in_with_an_installation_token() {
    let github = FakeGitHub::start();
    let key = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github/test-app-key.pem"),
    )
    .unwrap();
    let auth = Auth::App {
        app_id: 12,
        installation_id: 34,
        private_key: key,
    };
    let rt = runtime();
    let _in_runtime = rt.enter();
    let repo = Repository::new(&github.url(), &auth, "acme/placement").unwrap();
    rt.block_on(async {
        repo.create_deployment(SHA, "dev", "x", serde_json::json!({}))
            .await
            .unwrap();
    });
    let requests = github.requests();
    assert_eq!(requests[0].path, "/app/installations/34/access_tokens");
    assert!(
        requests[0].authorization.starts_with("Bearer ey"),
        "the App's JWT: {}",
        requests[0].authorization
    );
    let create = requests.last().unwrap();
    assert_eq!(create.path, "/repos/acme/placement/deployments");
    assert!(
        create.authorization.ends_with("ghs_installation"),
        "{}",
        create.authorization
    );

    let broken = Auth::App {
        app_id: 12,
        installation_id: 34,
        private_key: "not a key".into(),
    };
    let refused = Repository::new(&github.url(), &broken, "acme/placement")
        .err()
        .unwrap();
    assert!(
        refused.to_string().contains("githubAppPrivateKey"),
        "{refused}"
    );
}

#[test]
fn rate_limits_and_outages_are_retried_refusals_are_not() {
    let github = FakeGitHub::start();
    let rt = runtime();
    let _in_runtime = rt.enter();
    let repo = Repository::new(&github.url(), &Auth::Token("t".into()), "acme/placement").unwrap();
    for (status, retry) in [
        (503, true),
        (429, true),
        (403, true),
        (401, false),
        (422, false),
    ] {
        // octocrab's own retry layer tries 5xx again; fail enough times
        // that the error reaches us.
        github.fail_next(10, status);
        let error = rt
            .block_on(repo.deployment_status(1, State::Success, &text("ok")))
            .unwrap_err();
        assert_eq!(error.is_retryable(), retry, "{status}: {error:?}");
    }
    github.fail_next(0, 200);
    rt.block_on(repo.deployment_status(1, State::Success, &text("ok")))
        .unwrap();

    let nowhere = Repository::new(
        "http://127.0.0.1:9",
        &Auth::Token("t".into()),
        "acme/placement",
    )
    .unwrap();
    let error = rt
        .block_on(nowhere.find_deployment(SHA, "dev"))
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(Repository::new(&github.url(), &Auth::Token("t".into()), "no-slash").is_err());
}

#[test]
fn what_github_refused_is_posted_later_and_witnesses_a_trimmed_history() {
    if !lab_enabled("what_github_refused_is_posted_later_and_witnesses_a_trimmed_history") {
        return;
    }
    let github = FakeGitHub::start();
    // A bad token at first: every status of the first release is refused.
    github.fail_next(100_000, 401);
    let spec = format!(
        "\n  interval: 1h\n  github: {{repository: acme/placement, secretRef: {{name: github}}, apiUrl: \"{}\"}}",
        github.url()
    );
    let (mut lab, first) =
        Lab::running_with("gh-witness", "ctrl-test", &spec, common::github_secret);
    lab.wait_condition("test", "Healthy", "True", "Healthy", Some(&first));
    wait_until(
        "the statuses to be dropped",
        Duration::from_secs(30),
        || {
            lab.metrics()
                .contains("ferry_github_reports_total{result=\"dropped\"}")
        },
    );
    assert!(github.statuses().is_empty());
    let entries = lab.history("test");
    let head = entries.last().unwrap().clone();
    let witness = format!(
        "[#{} {}]",
        head["sequence"],
        head["sha256"].as_str().unwrap()
    );

    // The token is fixed: a later reconcile posts what GitHub missed, the
    // commit's last status with the newest chain head, once.
    github.fail_next(0, 200);
    wait_until(
        "GitHub to get the missed status",
        Duration::from_secs(60),
        || {
            lab.reconcile_now("test");
            std::thread::sleep(Duration::from_secs(2));
            github
                .statuses()
                .iter()
                .any(|(_, _, d)| d.ends_with(&witness))
        },
    );
    let statuses = github.statuses();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0].1, "success", "{statuses:?}");
    assert_eq!(github.deployments()[0].1, first);

    // A restart finds GitHub up to date: it reads, and posts nothing.
    let reads = |github: &FakeGitHub| {
        github
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/statuses"))
            .count()
    };
    let before = reads(&github);
    lab.start_controller();
    wait_until(
        "the restarted controller to read GitHub",
        Duration::from_secs(60),
        || {
            lab.reconcile_now("test");
            std::thread::sleep(Duration::from_secs(1));
            reads(&github) > before
        },
    );
    assert_eq!(github.statuses().len(), 1, "{:?}", github.statuses());

    // The API's kept verification follows the journal (through its watch
    // of the chunks): a rewrite is seen, and so is its undoing.
    let verified = || {
        lab.http(&format!(
            "/api/v1/environments/{}/test/history/verify",
            lab.system
        ))["verified"]
            .as_bool()
    };
    assert_eq!(verified(), Some(true));
    let chunk = "ferry-history-test-00001";
    let mut summary = Value::Null;
    edit_chunk(&lab.system, chunk, |entries| {
        summary = entries[0]["summary"].take();
        entries[0]["summary"] = "rewritten".into();
    });
    wait_until(
        "the API to see the rewrite",
        Duration::from_secs(20),
        || verified() == Some(false),
    );
    edit_chunk(&lab.system, chunk, |entries| {
        entries[0]["summary"] = summary
    });
    wait_until("the API to see it undone", Duration::from_secs(20), || {
        verified() == Some(true)
    });
    lab.stop_controller();

    let target = format!("{}/test", lab.system);
    let verify = |against_github: bool| {
        let mut args = vec!["history", "verify", &target];
        if against_github {
            args.push("--against-github");
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry-controller"))
            .args(&args)
            .env("GITHUB_TOKEN", "ghp_lab")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), said)
    };
    let (code, said) = verify(true);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!("the newest #{}", head["sequence"])),
        "{said}"
    );

    // Someone removes the newest entry from the journal and from the
    // status: the chain left links and the status agrees; GitHub does not.
    edit_chunk(&lab.system, chunk, |entries| {
        entries.pop();
    });
    let last = lab.status("test")["history"].as_array().unwrap().len() - 1;
    k(&[
        "patch",
        "environment",
        "test",
        "-n",
        &lab.system,
        "--subresource=status",
        "--type=json",
        "-p",
        &format!(r#"[{{"op": "remove", "path": "/status/history/{last}"}}]"#),
    ]);
    let (code, said) = verify(false);
    assert_eq!(code, Some(0), "the status alone cannot tell: {said}");
    let (code, said) = verify(true);
    assert_eq!(code, Some(1), "{said}");
    let n = head["sequence"].as_u64().unwrap();
    assert!(
        said.contains(&format!(
            "entries {n} to {n} are missing at the end: GitHub deployment"
        )),
        "{said}"
    );
}
