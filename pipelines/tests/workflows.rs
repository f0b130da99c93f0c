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

/// The steps of `job` that use `action` (any version).
fn using<'a>(doc: &'a Value, job: &str, action: &str) -> Vec<&'a Value> {
    doc["jobs"][job]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("{action}@")))
        })
        .collect()
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
fn a_release_only_follows_a_green_ci_or_a_person_and_only_on_main() {
    let (text, doc) = workflow("release.yml");
    // serde_norway reads the key `on` as a string.
    let on = &doc["on"];
    assert!(
        on.get("push").is_none(),
        "release must not run on a bare push"
    );
    assert_eq!(on["workflow_run"]["workflows"], serde_json::json!(["ci"]));
    assert_eq!(on["workflow_run"]["branches"], serde_json::json!(["main"]));
    assert!(on.get("workflow_dispatch").is_some());
    let job = &doc["jobs"]["release"];
    let condition = job["if"].as_str().unwrap();
    assert!(
        condition.starts_with("github.ref == 'refs/heads/main' &&")
            && condition.contains("workflow_run.conclusion == 'success'")
            && condition.contains("workflow_run.head_branch == 'main'")
            && condition.contains("workflow_dispatch"),
        "{condition}"
    );
    // The App's key is readable only through the environment main may use.
    assert_eq!(job["environment"], "release");
    // The commit CI checked is the one released.
    assert!(text.contains("ref: ${{ github.event.workflow_run.head_sha || github.sha }}"));
    assert!(text.contains("echo \"inference=$model-$SHORT\""));
    let steps = steps(&doc, "release");
    let position = |needle: &str| {
        steps
            .iter()
            .position(|s| s.1.contains(needle) || s.0.contains(needle))
            .unwrap_or_else(|| panic!("no step with {needle}"))
    };
    // A fork that kept the upstream's image names fails before any push.
    assert!(position("--tag check --dry-run") < position("scripts/images publish"));
    // Images: built by the script (which never pushes over a tag), then
    // attested when pushed by this run.
    let publish = &steps[position("scripts/images publish")].1;
    assert!(publish.contains("published=$(scripts/images publish inference \"$IMAGE\""));
    assert!(
        !text.contains("docker buildx build"),
        "builds go through scripts/images"
    );
    for (image, output) in [("IMAGE", "inference"), ("CONTROLLER_IMAGE", "controller")] {
        let attest = using(&doc, "release", "actions/attest-build-provenance")
            .into_iter()
            .find(|s| s["with"]["subject-name"] == format!("${{{{ env.{image} }}}}"))
            .unwrap_or_else(|| panic!("no attestation of {image}"));
        assert_eq!(
            attest["with"]["subject-digest"],
            format!("${{{{ steps.images.outputs.{output} }}}}")
        );
        assert_eq!(attest["with"]["push-to-registry"], true);
        assert_eq!(
            attest["if"],
            format!("steps.images.outputs.{output}_pushed == 'true'")
        );
    }
    for permission in ["id-token", "attestations", "actions", "statuses"] {
        assert_eq!(doc["permissions"][permission], "write", "{permission}");
    }
    // The bump lands on the tip of main, or as an auto-merging pull request
    // whose checks this job starts when no App opened it.
    let bump = &steps[position("release-bump")];
    assert!(
        bump.1.contains("--pull-request-if-protected")
            && bump.1.contains("| tee -a \"$GITHUB_OUTPUT\""),
        "{}",
        bump.1
    );
    let checks = &steps[position("start-checks")];
    assert_eq!(
        checks.2,
        "steps.app.outputs.token == '' && steps.bump.outputs.branch != ''"
    );
    assert!(
        !steps.iter().any(|s| s.1.contains("git push")),
        "no bare push"
    );
    assert!(text.contains("gh attestation verify oci://"));
}

/// Every `run:` gets bash with `-o pipefail` (a workflow's own default is
/// `bash -e`, under which `ferry-pipelines ... | tee` hides a failure).
#[test]
fn every_workflow_runs_bash_with_pipefail() {
    for file in workflows() {
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(
            doc["defaults"]["run"]["shell"],
            "bash",
            "{}",
            file.display()
        );
    }
}

/// The actions are releases that run on Node 24 (a Node 20 action is
/// forced onto Node 24 with a warning), pinned by commit.
#[test]
fn actions_are_node_24_releases() {
    let oldest = [
        ("actions/checkout", 5),
        ("actions/cache", 5),
        ("actions/create-github-app-token", 3),
        ("actions/attest-build-provenance", 3),
    ];
    for file in workflows() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("uses: ") || l.starts_with("- uses: "))
        {
            let (reference, comment) = line.split_once(" # ").unwrap_or((line, ""));
            let action = reference
                .split("uses: ")
                .nth(1)
                .unwrap()
                .split('@')
                .next()
                .unwrap();
            let (_, major) = oldest
                .iter()
                .find(|(a, _)| *a == action)
                .unwrap_or_else(|| {
                    panic!("{}: {action} is not a known Node 24 action", file.display())
                });
            let version: u32 = comment
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("{}: {line} says no version", file.display()));
            assert!(version >= *major, "{}: {line}", file.display());
        }
    }
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
    let checkout = using(&doc, "policy", "actions/checkout")[0];
    assert_eq!(
        checkout["with"]["ref"],
        "${{ github.event.pull_request.base.sha }}"
    );
    assert_eq!(checkout["with"]["persist-credentials"], false);
    let fetch = steps.iter().find(|s| s.0.starts_with("Fetch")).unwrap();
    assert!(
        fetch.1.contains(".extraheader=AUTHORIZATION: basic"),
        "{}",
        fetch.1
    );
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
    assert_eq!(doc["jobs"]["promote"]["environment"], "release");
    assert!(text.contains("create-github-app-token@"));
    let steps = steps(&doc, "promote");
    let checks = steps.iter().find(|s| s.1.contains("start-checks")).unwrap();
    assert_eq!(
        checks.2,
        "steps.app.outputs.token == '' && steps.promote.outputs.branch != ''"
    );
}

#[test]
fn ci_caches_by_the_compiler_it_uses_and_builds_both_images() {
    let (text, doc) = workflow("ci.yml");
    assert!(text.contains("~/.cache/ferry/bin"));
    assert!(text.contains("~/.cache/ferry/target"));
    assert!(text.contains("hashFiles('lab/controlplane/go.mod'"));
    assert!(
        !text.contains("rust-toolchain.toml"),
        "no such file: the toolchain is installed by the workflow"
    );
    let toolchain = steps(&doc, "test")
        .into_iter()
        .find(|s| s.0 == "Rust toolchain")
        .unwrap();
    assert!(
        toolchain.1.contains("rustc -vV | sha256sum"),
        "{}",
        toolchain.1
    );
    let cargo = doc["jobs"]["test"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Cache cargo's registry and target directory")
        .unwrap();
    let key = cargo["with"]["key"].as_str().unwrap();
    let restore = cargo["with"]["restore-keys"].as_str().unwrap();
    assert!(
        key.contains("${{ steps.toolchain.outputs.key }}")
            && restore.contains("${{ steps.toolchain.outputs.key }}"),
        "{key} {restore}"
    );
    let build = steps(&doc, "images")
        .into_iter()
        .map(|s| s.1)
        .collect::<String>();
    assert!(build.contains("scripts/images build") && !build.contains("publish"));
}

/// A directory with an executable `docker` that answers `imagetools
/// inspect` with the lines of `answers` in turn (`exit CODE: OUTPUT`), and
/// logs every call to `calls`.
fn fake_docker(name: &str, answers: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-fake-docker-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("answers"), answers.join("\n") + "\n").unwrap();
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> {dir}/calls
case "$*" in
  "buildx imagetools inspect"*)
    line=$(head -n 1 {dir}/answers); sed -i 1d {dir}/answers
    code=${{line%%:*}}; echo "${{line#*: }}"; exit "${{code#exit }}" ;;
  "buildx build"*)
    for a in "$@"; do [ "$prev" = --metadata-file ] && echo '{{"containerimage.digest": "sha256:new"}}' > "$a"; prev=$a; done ;;
esac
"#,
        dir = dir.display()
    );
    let docker = dir.join("docker");
    std::fs::write(&docker, script).unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

fn images(fake: &Path, builder: &str, args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/images");
    // Binaries to stage, so the script builds without cross-compiling.
    let binaries = fake.join("binaries");
    for arch in ["amd64", "arm64"] {
        std::fs::create_dir_all(binaries.join(arch)).unwrap();
        for name in ["ferry-inference", "ferry-controller"] {
            std::fs::write(binaries.join(arch).join(name), format!("{arch} {name}")).unwrap();
        }
    }
    Command::new(script)
        .args(args)
        .env(
            "PATH",
            format!("{}:{}", fake.display(), std::env::var("PATH").unwrap()),
        )
        .env("FERRY_IMAGES_DIR", fake.join("stage"))
        .env("FERRY_IMAGES_BINARIES", &binaries)
        .env("FERRY_IMAGES_PAUSE", "0")
        .env("FERRY_IMAGES_BUILDER", builder)
        .output()
        .unwrap()
}

/// Tags are never moved: a tag the registry has is reused; one it says it
/// does not have is built; a failed answer is asked again, and when the
/// registry never answers, nothing is built or pushed (exit 3).
#[test]
fn images_are_never_pushed_over_an_existing_tag() {
    let timeout = "exit 1: ERROR: failed to do request: Head \"https://ghcr.io/v2/acme/placement/manifests/1\": dial tcp: i/o timeout";
    // name, the registry's answers, exit code, stdout, whether it built.
    type Case<'a> = (&'a str, Vec<&'a str>, Option<i32>, &'a str, bool);
    let cases: [Case; 4] = [
        (
            "present",
            vec!["exit 0: \"sha256:old\""],
            Some(0),
            "sha256:old reused",
            false,
        ),
        (
            "absent-after-a-timeout",
            vec![
                timeout,
                "exit 1: ERROR: ghcr.io/acme/placement:1: not found",
            ],
            Some(0),
            "sha256:new pushed",
            true,
        ),
        (
            "denied",
            vec!["exit 1: ERROR: denied: denied"; 5],
            Some(3),
            "",
            false,
        ),
        ("never-answers", vec![timeout; 5], Some(3), "", false),
    ];
    for (name, answers, code, stdout, built) in cases {
        let fake = fake_docker(name, &answers);
        let out = images(
            &fake,
            "buildx",
            &["publish", "inference", "ghcr.io/acme/placement", "1"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), code, "{name}: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            stdout,
            "{name}"
        );
        let calls = std::fs::read_to_string(fake.join("calls")).unwrap();
        assert_eq!(calls.contains("buildx build"), built, "{name}: {calls}");
        if code == Some(3) {
            assert_eq!(
                calls.matches("imagetools inspect").count(),
                5,
                "{name}: asked 5 times"
            );
            assert!(stderr.contains("refusing to push"), "{name}: {stderr}");
        }
        if built {
            assert!(
                calls.contains("--sbom=true --provenance=mode=max"),
                "{calls}"
            );
            assert!(calls.contains("-f inference/Dockerfile"), "{calls}");
        }
        let _ = std::fs::remove_dir_all(&fake);
    }
}

fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Serves the bare repository `root` over git's dumb HTTP protocol at
/// `/acme/placement/`, as a private repository does: 401 unless the
/// request carries `Authorization: <authorization>`.
fn private_origin(root: PathBuf, authorization: String) -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode, header};
    let serve = move |axum::extract::Path(path): axum::extract::Path<String>,
                      headers: HeaderMap| {
        let (root, authorization) = (root.clone(), authorization.clone());
        async move {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if given != Some(authorization.as_str()) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"GitHub\"")],
                    Vec::new(),
                );
            }
            match std::fs::read(root.join(&path)) {
                Ok(bytes) if !path.contains("..") => {
                    (StatusCode::OK, [(header::WWW_AUTHENTICATE, "")], bytes)
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    [(header::WWW_AUTHENTICATE, "")],
                    Vec::new(),
                ),
            }
        }
    };
    let app = axum::Router::new().route("/acme/placement/{*path}", axum::routing::get(serve));
    ferry_lab_testkit::serve(app)
}

/// environments-pr's fetch of the pull request's head, run as the workflow
/// runs it (the checkout's origin URL, no stored credentials), against an
/// origin that answers 401 without the job's token, as a private
/// repository does: it fetches with the token and fails without it.
#[test]
fn the_pull_requests_head_is_fetched_from_a_private_repository() {
    let base = std::env::temp_dir().join(format!("ferry-private-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (work, origin, checkout) = (
        base.join("work"),
        base.join("origin.git"),
        base.join("checkout"),
    );
    for dir in [&work, &checkout] {
        std::fs::create_dir_all(dir).unwrap();
        run_git(dir, &["init", "-q", "-b", "main"]);
    }
    std::fs::write(work.join("README"), "a pull request\n").unwrap();
    run_git(&work, &["add", "README"]);
    run_git(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "pr",
        ],
    );
    let head = run_git(&work, &["rev-parse", "HEAD"]);
    run_git(
        &base,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            origin.to_str().unwrap(),
        ],
    );
    run_git(&origin, &["update-ref", "refs/pull/7/head", &head]);
    run_git(&origin, &["repack", "-a", "-d", "-q"]);
    run_git(&origin, &["update-server-info"]);
    let encoded = Command::new("sh")
        .args(["-c", "printf 'x-access-token:%s' s3cret | base64 -w0"])
        .output()
        .unwrap();
    let addr = private_origin(
        origin.clone(),
        format!("basic {}", String::from_utf8_lossy(&encoded.stdout)),
    );
    let server = format!("http://{addr}");
    run_git(
        &checkout,
        &[
            "remote",
            "add",
            "origin",
            &format!("{server}/acme/placement"),
        ],
    );

    let (_, doc) = workflow("environments-pr.yml");
    let fetch = steps(&doc, "policy")
        .into_iter()
        .find(|s| s.0.starts_with("Fetch"))
        .unwrap()
        .1;
    let run = |token: &str| {
        Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &fetch])
            .current_dir(&checkout)
            .env("GITHUB_SERVER_URL", &server)
            .env("GITHUB_TOKEN", token)
            .env("PR", "7")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap()
    };
    let refused = run("not-the-token");
    assert!(
        !refused.status.success(),
        "the origin lets anyone in: the test proves nothing"
    );
    let fetched = run("s3cret");
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert_eq!(
        run_git(&checkout, &["rev-parse", "refs/remotes/pull/7/head"]),
        head
    );
    let config = std::fs::read_to_string(checkout.join(".git/config")).unwrap();
    assert!(
        !config.contains("s3cret") && !config.contains("extraheader"),
        "{config}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// `scripts/images ARGS` with buildah in `fake`'s storage; its stdout.
fn run_images(fake: &Path, args: &[&str]) -> String {
    let out = images(fake, "buildah", args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A fresh folder in which `scripts/images build` has built both images
/// with buildah, from fake binaries.
fn built_with_buildah(name: &str) -> PathBuf {
    let fake = std::env::temp_dir().join(format!("ferry-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fake);
    std::fs::create_dir_all(&fake).unwrap();
    run_images(&fake, &["build"]);
    fake
}

/// Both Dockerfiles build with buildah (no Docker here) for both
/// platforms from the context `scripts/images` stages, and each image holds
/// what a pod needs: its platform's binary, the non-root user, the CA
/// bundle, the model, the entrypoint. CI builds the same files with buildx.
#[test]
fn both_images_build_from_the_staged_context_with_buildah() {
    if Command::new("buildah").arg("--version").output().is_err() {
        eprintln!("skipped: buildah is not installed (.ci/run installs it)");
        return;
    }
    let fake = built_with_buildah("buildah");
    let run = |args: &[&str]| run_images(&fake, args);
    let model = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../inference/model/placement.json"),
    )
    .unwrap();
    for (name, entrypoint) in [
        ("inference", "[/usr/local/bin/ferry-inference serve] []"),
        ("controller", "[/usr/local/bin/ferry-controller] [run]"),
    ] {
        let index = run(&[
            "buildah",
            "manifest",
            "inspect",
            &format!("localhost/ferry/{name}:build"),
        ]);
        let index: Value = serde_json::from_str(&index).unwrap();
        let platforms: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(platforms, ["amd64", "arm64"], "{name}");
        for arch in ["amd64", "arm64"] {
            let image = format!("localhost/ferry/{name}:{arch}");
            let config = run(&[
                "buildah",
                "inspect",
                "--type",
                "image",
                "--format",
                "{{.OCIv1.Architecture}}|{{.OCIv1.Config.User}}|{{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}",
                &image,
            ]);
            assert_eq!(
                config,
                format!("{arch}|65532:65532|{entrypoint}"),
                "{image}"
            );
            let container = run(&["buildah", "from", "--quiet", &image]);
            let root = PathBuf::from(run(&["buildah", "mount", &container]));
            let binary =
                std::fs::read_to_string(root.join(format!("usr/local/bin/ferry-{name}"))).unwrap();
            assert_eq!(
                binary,
                format!("{arch} ferry-{name}"),
                "{image}: its platform's binary"
            );
            let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
            assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
            let bundle = std::fs::metadata(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
            assert!(bundle.len() > 1000, "{image}: a CA bundle");
            if name == "inference" {
                assert_eq!(
                    std::fs::read(root.join("model/placement.json")).unwrap(),
                    model
                );
            }
            run(&["buildah", "umount", &container]);
            run(&["buildah", "rm", &container]);
        }
    }
    let _ = std::fs::remove_dir_all(&fake);
}

/// GET `url` with curl, accepting an image index or manifest: status code,
/// the `Docker-Content-Digest` header and the body.
fn registry_get(url: &str, user: Option<&str>) -> (u16, String, String) {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-D",
        "-",
        "-H",
        "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
        url,
    ]);
    if let Some(user) = user {
        command.args(["-u", user]);
    }
    let out = String::from_utf8_lossy(&command.output().unwrap().stdout).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let digest = head
        .lines()
        .find_map(|l| l.strip_prefix("Docker-Content-Digest: "))
        .unwrap_or("")
        .trim()
        .to_owned();
    (code, digest, body.to_owned())
}

/// The images `scripts/images` builds go to the lab's registry as one
/// index each, which resolves to both platforms; the registry behind basic
/// auth serves them only with the lab's credentials (what a pull secret
/// holds).
#[test]
fn both_images_go_to_the_lab_registry_as_one_index_each() {
    if !ferry_lab_testkit::lab_enabled("both_images_go_to_the_lab_registry_as_one_index_each") {
        return;
    }
    let fake = built_with_buildah("registry");
    let run = |args: &[&str]| run_images(&fake, args);
    let lab = std::env::var("FERRY_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ferry/lab"));
    let credentials = std::fs::read_to_string(lab.join("registry/credentials")).unwrap();
    for name in ["inference", "controller"] {
        let pushed = run(&["push", name, &format!("127.0.0.1:5000/ferry-test/{name}:1")]);
        let (code, digest, body) = registry_get(
            &format!("http://127.0.0.1:5000/v2/ferry-test/{name}/manifests/1"),
            None,
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(digest, pushed, "the digest the push reported");
        let index: Value = serde_json::from_str(&body).unwrap();
        let platforms: Vec<(&str, &str)> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["platform"]["architecture"].as_str().unwrap(),
                    m["digest"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            platforms.iter().map(|p| p.0).collect::<Vec<_>>(),
            ["amd64", "arm64"]
        );
        // The arm64 entry is the arm64 image: its config says so.
        let (_, _, manifest) = registry_get(
            &format!(
                "http://127.0.0.1:5000/v2/ferry-test/{name}/manifests/{}",
                platforms[1].1
            ),
            None,
        );
        let manifest: Value = serde_json::from_str(&manifest).unwrap();
        let config = manifest["config"]["digest"].as_str().unwrap();
        let (_, _, config) = registry_get(
            &format!("http://127.0.0.1:5000/v2/ferry-test/{name}/blobs/{config}"),
            None,
        );
        let config: Value = serde_json::from_str(&config).unwrap();
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(config["config"]["User"], "65532:65532");
        // Behind basic auth: the same index, only with the credentials.
        let url = format!("http://127.0.0.1:5001/v2/ferry-test/{name}/manifests/1");
        assert_eq!(registry_get(&url, None).0, 401);
        assert_eq!(registry_get(&url, Some("lab:wrong")).0, 401);
        let (code, digest, _) = registry_get(&url, Some(credentials.trim()));
        assert_eq!((code, digest), (200, pushed));
    }
    let _ = std::fs::remove_dir_all(&fake);
}
