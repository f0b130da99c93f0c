//! The git source against real repositories: a local one over file://, and
//! one served by a `git daemon` the test starts. Fetch, resolve branches,
//! tags and commits, read any revision's tree, render it, and fail cleanly
//! when the remote is gone.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_controller::source::cache::{Cache, SourceError, SourceSpec};
use ferry_controller::source::credentials::Credentials;
use ferry_lab_testkit::{copy_dir, git};
use ferry_manifests::render::{self, Disk};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-source-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A repository holding this project's environments, one commit on main.
fn upstream(name: &str) -> PathBuf {
    let dir = temp_dir(name).join("placement.git");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    copy_dir(&repo_root().join("environments"), &dir.join("environments"));
    git(&dir, &["add", "."]);
    git(
        &dir,
        &[
            "commit",
            "-q",
            "-m",
            "environments: first release\n\nwith a body",
        ],
    );
    dir
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn spec(url: &str, reference: &str) -> SourceSpec {
    SourceSpec {
        url: url.to_owned(),
        reference: reference.to_owned(),
        credentials: Credentials::None,
    }
}

#[test]
fn fetches_resolves_and_renders_any_revision() {
    let upstream = upstream("local");
    let url = format!("file://{}", upstream.display());
    let cache = Cache::new(&temp_dir("local-cache"));

    let first = cache.fetch(&spec(&url, "main"), TIMEOUT).unwrap();
    assert_eq!(first.commit, git(&upstream, &["rev-parse", "HEAD"]));
    assert_eq!(
        (first.author.as_str(), first.email.as_str()),
        ("Ada Lovelace", "ada@example.com")
    );
    assert_eq!(first.subject(), "environments: first release");
    assert_eq!(first.id(), format!("main@sha1:{}", first.commit));

    // What is read from the commit renders exactly as the files on disk.
    let from_git = render::render(
        &cache.files(&spec(&url, "main"), &first.commit).unwrap(),
        "environments/dev",
    )
    .unwrap();
    let from_disk = render::render(&Disk::new(&repo_root()), "environments/dev").unwrap();
    assert_eq!(render::digest(&from_git), render::digest(&from_disk));

    // A new commit and a tag.
    let patch = upstream.join("environments/dev/replicas.yaml");
    let text = std::fs::read_to_string(&patch)
        .unwrap()
        .replace("maxReplicas: 4", "maxReplicas: 6");
    std::fs::write(&patch, text).unwrap();
    git(&upstream, &["commit", "-q", "-am", "dev: allow 6 replicas"]);
    git(&upstream, &["tag", "v2"]);
    let second = cache.fetch(&spec(&url, "main"), TIMEOUT).unwrap();
    assert_ne!(second.commit, first.commit);
    assert_eq!(
        cache.fetch(&spec(&url, "v2"), TIMEOUT).unwrap().commit,
        second.commit
    );
    assert_eq!(
        cache
            .fetch(&spec(&url, &first.commit), TIMEOUT)
            .unwrap()
            .commit,
        first.commit
    );

    // Both revisions stay renderable: a rollback renders the old one again.
    let old = render::render(
        &cache.files(&spec(&url, "main"), &first.commit).unwrap(),
        "environments/dev",
    )
    .unwrap();
    let new = render::render(
        &cache.files(&spec(&url, "main"), &second.commit).unwrap(),
        "environments/dev",
    )
    .unwrap();
    assert_eq!(render::digest(&old), render::digest(&from_disk));
    assert_ne!(render::digest(&old), render::digest(&new));

    let err = cache
        .fetch(&spec(&url, "no-such-branch"), TIMEOUT)
        .unwrap_err();
    assert!(matches!(err, SourceError::UnknownReference { .. }), "{err}");
}

struct Daemon(Child);

impl Drop for Daemon {
    /// Stops the daemon and the children it forked for connections (its
    /// process group), which keep its listening socket open otherwise.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn git_daemon(base: &Path) -> (Daemon, u16) {
    git_daemon_logging(base, None)
}

/// A `git daemon` serving `base`; with `log`, it logs each request there.
fn git_daemon_logging(base: &Path, log: Option<&Path>) -> (Daemon, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new("git");
    command.args([
        "daemon",
        "--reuseaddr",
        "--listen=127.0.0.1",
        &format!("--port={port}"),
        "--export-all",
    ]);
    let stderr = match log {
        Some(path) => {
            command.arg("--verbose");
            Stdio::from(std::fs::File::create(path).unwrap())
        }
        None => Stdio::null(),
    };
    let child = command
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .expect("git daemon runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "git daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Daemon(child), port)
}

#[test]
fn fetches_over_the_git_protocol_and_keeps_the_cache_when_the_remote_is_gone() {
    let upstream = upstream("daemon");
    let (daemon, port) = git_daemon(upstream.parent().unwrap());
    let url = format!("git://127.0.0.1:{port}/placement.git");
    let cache = Cache::new(&temp_dir("daemon-cache"));
    let revision = cache.fetch(&spec(&url, "main"), TIMEOUT).unwrap();
    assert_eq!(revision.commit, git(&upstream, &["rev-parse", "HEAD"]));

    drop(daemon);
    let err = cache.fetch(&spec(&url, "main"), TIMEOUT).unwrap_err();
    assert!(matches!(err, SourceError::Fetch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("check the URL, the network and the credentials"),
        "{err}"
    );
    // What was fetched before is still there to render.
    let objects = render::render(
        &cache.files(&spec(&url, "main"), &revision.commit).unwrap(),
        "environments/prod",
    )
    .unwrap();
    assert_eq!(objects.len(), 5);
}

/// A remote that accepts connections and never answers: the fetch gives up
/// at its timeout with a message saying so, instead of hanging.
#[test]
fn a_remote_that_never_answers_times_out() {
    ferry_controller::source::cache::set_network_timeouts(
        Duration::from_secs(2),
        Duration::from_secs(2),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Accept and hold the connections, answering nothing.
        let mut open = Vec::new();
        for _ in 0..2 {
            if let Ok((stream, _)) = listener.accept() {
                open.push(stream);
            }
        }
        std::thread::sleep(Duration::from_secs(12));
    });
    let cache = Cache::new(&temp_dir("hung-cache"));
    for url in [
        format!("git://127.0.0.1:{port}/placement.git"),
        format!("http://127.0.0.1:{port}/placement.git"),
    ] {
        let started = Instant::now();
        let err = cache
            .fetch(&spec(&url, "main"), Duration::from_secs(4))
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{url}: gave up only after {took:?}"
        );
        assert!(
            matches!(err, SourceError::Timeout { .. } | SourceError::Fetch { .. }),
            "{url}: {err}"
        );
    }
    drop(held);
}

/// Environments on one repository that fetch at the same time share one
/// fetch (the daemon sees one request) and all get the same revision.
#[test]
fn simultaneous_fetches_of_one_repository_share_one_fetch() {
    let upstream = upstream("shared");
    let base = upstream.parent().unwrap().to_owned();
    let log = base.join("daemon.log");
    let (daemon, port) = git_daemon_logging(&base, Some(&log));
    let requests = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("Request upload-pack")
            .count()
    };
    let url = format!("git://127.0.0.1:{port}/placement.git");
    let cache = Cache::new(&temp_dir("shared-cache"));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (cache, url, barrier) = (cache.clone(), url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache.fetch(&spec(&url, "main"), TIMEOUT).map(|r| r.commit)
            })
        })
        .collect();
    let commits: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    assert!(commits.iter().all(|c| *c == commits[0]), "{commits:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(requests(), 1, "{}", std::fs::read_to_string(&log).unwrap());
    // A later fetch goes to the remote again.
    cache.fetch(&spec(&url, "main"), TIMEOUT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(requests(), 2);
    drop(daemon);
}

/// A branch deleted on the remote is gone from the cache after the next
/// fetch: an Environment following it reports it instead of applying a
/// stale commit for ever.
#[test]
fn deleted_branches_are_pruned_from_the_cache() {
    let upstream = upstream("prune");
    git(&upstream, &["branch", "feature"]);
    let url = format!("file://{}", upstream.display());
    let cache = Cache::new(&temp_dir("prune-cache"));
    cache.fetch(&spec(&url, "feature"), TIMEOUT).unwrap();
    git(&upstream, &["branch", "-D", "feature"]);
    cache.fetch(&spec(&url, "main"), TIMEOUT).unwrap();
    let err = cache.fetch(&spec(&url, "feature"), TIMEOUT).unwrap_err();
    assert!(matches!(err, SourceError::UnknownReference { .. }), "{err}");
}

/// A token in the URL never reaches a message.
#[test]
fn credentials_in_the_url_stay_out_of_errors() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://bot:ghp_s3cr3tt0ken@127.0.0.1:{port}/placement.git");
    let cache = Cache::new(&temp_dir("redact-cache"));
    let err = cache.fetch(&spec(&url, "main"), TIMEOUT).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("http://***@127.0.0.1"), "{text}");
}

/// The commits a sync skips over: after the last one tried, before the
/// one applied, oldest first, the newest `limit` of them.
#[test]
fn the_commits_between_two_revisions_are_the_skipped_ones() {
    let upstream = upstream("between");
    let url = format!("file://{}", upstream.display());
    let cache = Cache::new(&temp_dir("between-cache"));
    let first = git(&upstream, &["rev-parse", "HEAD"]);
    for n in 1..=3 {
        git(
            &upstream,
            &["commit", "-q", "--allow-empty", "-m", &format!("step {n}")],
        );
    }
    let head = cache.fetch(&spec(&url, "main"), TIMEOUT).unwrap();
    let source = spec(&url, "main");
    let titles = |from: &str, limit: usize| -> Vec<String> {
        cache
            .commits_between(&source, from, &head.commit, limit)
            .unwrap()
            .iter()
            .map(|r| r.subject().to_owned())
            .collect()
    };
    assert_eq!(titles(&first, 20), ["step 1", "step 2"]);
    assert_eq!(titles(&first, 1), ["step 2"]);
    assert!(titles(&head.commit, 20).is_empty());
    // Unknown to the cache (a force-push, say): nothing can be told.
    assert!(titles("0123456789012345678901234567890123456789", 20).is_empty());
    assert!(titles("not a commit", 20).is_empty());
    let skipped = cache
        .commits_between(&source, &first, &head.commit, 20)
        .unwrap();
    assert_eq!(skipped[0].id(), format!("main@sha1:{}", skipped[0].commit));
}
