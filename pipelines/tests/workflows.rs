//! The GitHub Actions workflows: they lint clean with actionlint, pin every
//! action to a commit, and declare their permissions.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workflows() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

#[test]
fn actionlint_finds_nothing() {
    // scripts/test builds actionlint from the Go module proxy and says where.
    let Ok(actionlint) = std::env::var("FERRY_ACTIONLINT") else {
        eprintln!("skipped: FERRY_ACTIONLINT is not set (scripts/test sets it)");
        return;
    };
    let out = Command::new(actionlint)
        .arg("-no-color")
        .args(workflows())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn actions_are_pinned_and_permissions_declared() {
    for file in workflows() {
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        assert!(
            doc.get("permissions").is_some(),
            "{} declares no permissions",
            file.display()
        );
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("- uses:") || l.starts_with("uses:"))
        {
            let reference = line
                .split("uses:")
                .nth(1)
                .unwrap()
                .split('#')
                .next()
                .unwrap()
                .trim();
            let (_, sha) = reference.split_once('@').unwrap_or((reference, ""));
            assert!(
                sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
                "{}: {reference} is not pinned to a commit",
                file.display()
            );
        }
    }
}

fn workflow(name: &str) -> (String, Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.github/workflows")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();
    (text, doc)
}

/// The steps of `job`, as (name or uses, run, if).
fn steps(doc: &Value, job: &str) -> Vec<(String, String, String)> {
    doc["jobs"][job]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let name = if field("name").is_empty() {
                field("uses")
            } else {
                field("name")
            };
            (name, field("run"), field("if"))
        })
        .collect()
}

#[test]
fn a_release_only_follows_a_green_ci_or_a_person() {
    let (text, doc) = workflow("release.yml");
    // serde_norway reads the key `on` as a string.
    let on = &doc["on"];
    assert!(
        on.get("push").is_none(),
        "release must not run on a bare push"
    );
    assert_eq!(on["workflow_run"]["workflows"], serde_json::json!(["ci"]));
    assert!(on.get("workflow_dispatch").is_some());
    let condition = doc["jobs"]["release"]["if"].as_str().unwrap();
    assert!(
        condition.contains("workflow_run.conclusion == 'success'")
            && condition.contains("workflow_dispatch"),
        "{condition}"
    );
    // The commit CI checked is the one released.
    assert!(text.contains("ref: ${{ github.event.workflow_run.head_sha || github.sha }}"));
    // Tags name the commit; pushed tags are reused, never moved.
    assert!(text.contains("echo \"inference=$model-$SHORT\""));
    assert!(text.contains("docker buildx imagetools inspect \"$image:$tag\""));
    assert!(text.contains("org.opencontainers.image.source=$SOURCE"));
    assert!(text.contains("publish controller \"$CONTROLLER_IMAGE\""));
    // The bump lands on the tip of main, or as an auto-merging pull request.
    let runs: Vec<String> = steps(&doc, "release").into_iter().map(|s| s.1).collect();
    let bump = runs.iter().find(|r| r.contains("release-bump")).unwrap();
    assert!(bump.contains("--pull-request-if-protected"), "{bump}");
    assert!(!runs.iter().any(|r| r.contains("git push")), "no bare push");
}

#[test]
fn the_policy_status_is_always_reported_and_never_runs_a_forks_code() {
    let (_, doc) = workflow("environments-pr.yml");
    let on = &doc["on"];
    assert!(on.get("pull_request").is_none());
    let target = &on["pull_request_target"];
    assert!(
        target.get("paths").is_none(),
        "a required check cannot be path-filtered"
    );
    let steps = steps(&doc, "policy");
    assert_eq!(steps[0].0, "Pending", "pending before anything can fail");
    assert!(steps[0].1.contains("state=pending"));
    let checkout = doc["jobs"]["policy"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .unwrap_or("")
                .starts_with("actions/checkout@")
        })
        .unwrap();
    assert_eq!(
        checkout["with"]["ref"],
        "${{ github.event.pull_request.base.sha }}"
    );
    assert_eq!(checkout["with"]["persist-credentials"], false);
    let review = steps.iter().find(|s| s.0.contains("Review")).unwrap();
    assert!(review.1.contains("git merge-base"), "{}", review.1);
    let error = steps.iter().find(|s| s.0 == "Error").unwrap();
    assert!(error.2.starts_with("failure()") && error.1.contains("state=error"));
}

#[test]
fn a_promotion_gets_its_checks_run() {
    let (_, ci) = workflow("ci.yml");
    assert!(ci["on"].get("workflow_dispatch").is_some());
    let (text, doc) = workflow("promote.yml");
    assert_eq!(doc["permissions"]["actions"], "write");
    assert!(text.contains("create-github-app-token@"));
    assert!(text.contains("gh workflow run ci.yml --ref \"$BRANCH\""));
    assert!(text.contains("--context ferry/policy"));
}

#[test]
fn ci_caches_the_lab_and_builds_both_images() {
    let (text, doc) = workflow("ci.yml");
    assert!(text.contains("~/.cache/ferry/bin"));
    assert!(text.contains("~/.cache/ferry/target"));
    assert!(text.contains("hashFiles('lab/controlplane/go.mod'"));
    let images = &doc["jobs"]["images"];
    let files = images["strategy"]["matrix"]["dockerfile"]
        .as_array()
        .unwrap();
    assert_eq!(files.len(), 2);
    let build = steps(&doc, "images")
        .into_iter()
        .map(|s| s.1)
        .collect::<String>();
    assert!(build.contains("linux/amd64,linux/arm64") && !build.contains("--push"));
}
