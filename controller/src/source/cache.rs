//! The source of truth: a git repository, fetched into a cache of bare
//! repositories and read straight from a commit's tree (no worktree), so
//! any past revision can be rendered again, for example to roll back.
//!
//! Guarantees: a fetch either updates the cache's refs or fails with the
//! reason; it never touches the cluster. Reading files never writes.
//! Errors: [`SourceError`] says what failed and, for credentials and host
//! keys, what to check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use git2::{Cred, FetchOptions, Oid, RemoteCallbacks, Repository};
use sha2::{Digest, Sha256};

use super::credentials::Credentials;

pub use ferry_manifests::git::{GitError, GitFiles, Revision, revision};

/// What to fetch.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub url: String,
    /// A branch, a tag, or a full commit id.
    pub reference: String,
    pub credentials: Credentials,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to open the repository cache {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    /// The cause is kept as text, with any credentials in it redacted,
    /// rather than as the `git2::Error` that may quote the URL.
    #[error("failed to fetch {url}: {message}; check the URL, the network and the credentials")]
    Fetch { url: String, message: String },
    #[error(
        "failed to fetch {url}: no answer within {seconds} s; the remote may hang or be slow, retrying"
    )]
    Timeout { url: String, seconds: u64 },
    #[error("{reference:?} is not a branch, tag or commit of {url}")]
    UnknownReference { url: String, reference: String },
    #[error(
        "the host key of {host} is not in known_hosts; add the server's key (ssh-keyscan) to the credentials"
    )]
    UnknownHostKey { host: String },
    #[error("failed to read commit {commit}")]
    Read {
        commit: String,
        #[source]
        source: git2::Error,
    },
    #[error(transparent)]
    Tree(#[from] GitError),
}

/// Bare repositories under a directory, one per URL and credentials (so
/// an Environment without credentials never reads what another one
/// fetched with them).
///
/// Guarantees: one fetch at a time per repository; callers that asked
/// while a fetch was running share its result instead of fetching again.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    /// Per repository: when its last fetch finished.
    fetches: Arc<Mutex<HashMap<PathBuf, LastFetch>>>,
}

/// When a repository's last fetch finished; held while fetching.
type LastFetch = Arc<Mutex<Option<Instant>>>;

/// The callbacks of one fetch: credentials (tried a bounded number of
/// times), the deadline (a transfer past it is cancelled) and, for SSH,
/// the host key checked against `known_hosts` (`unknown_host` tells a
/// refused key from other failures).
fn callbacks(
    spec: &SourceSpec,
    deadline: Instant,
    host: &str,
    unknown_host: std::rc::Rc<std::cell::Cell<bool>>,
) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let credentials = spec.credentials.clone();
    let mut attempts = 0;
    callbacks.credentials(move |_url, username, _allowed| {
        attempts += 1;
        if attempts > MAX_CREDENTIAL_ATTEMPTS {
            return Err(git2::Error::from_str(
                "the remote refused the credentials; check the token or key in the secretRef",
            ));
        }
        match &credentials {
            Credentials::Token(token) => Cred::userpass_plaintext("x-access-token", token.trim()),
            Credentials::Ssh {
                private_key,
                passphrase,
                ..
            } => Cred::ssh_key_from_memory(
                username.unwrap_or("git"),
                None,
                private_key,
                passphrase.as_deref(),
            ),
            Credentials::None => Err(git2::Error::from_str(
                "the repository asks for credentials; set a secretRef",
            )),
        }
    });
    // Returning false cancels the transfer once the deadline passed.
    callbacks.transfer_progress(move |_| Instant::now() < deadline);
    callbacks.sideband_progress(move |_| Instant::now() < deadline);
    if let Credentials::Ssh { known_hosts, .. } = &spec.credentials {
        let known_hosts = known_hosts.clone();
        let host = host.to_owned();
        callbacks.certificate_check(move |cert, _| {
            let known = cert
                .as_hostkey()
                .and_then(|k| k.hostkey())
                .is_some_and(|key| {
                    use base64::Engine;
                    host_key_known(
                        &known_hosts,
                        &host,
                        &base64::engine::general_purpose::STANDARD.encode(key),
                    )
                });
            if known {
                Ok(git2::CertificateCheckStatus::CertificateOk)
            } else {
                unknown_host.set(true);
                Err(git2::Error::from_str("unknown host key"))
            }
        });
    }
    callbacks
}

/// `url` with any user and password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Replaces every occurrence of `url`'s credentials in `text`.
fn sanitize(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact(url));
    if let Some((_, rest)) = url.split_once("://")
        && let Some(at) = rest[..rest.find('/').unwrap_or(rest.len())].rfind('@')
    {
        let userinfo = &rest[..at];
        if !userinfo.is_empty() {
            out = out.replace(userinfo, "***");
        }
    }
    out
}

/// How long libgit2 waits to connect, and for any answer on a connection.
/// Process-wide; set once at start, before any fetch.
pub fn set_network_timeouts(connect: Duration, read: Duration) -> Result<(), git2::Error> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: libgit2 reads these options at connection time; they are set
    // once, at start, before any thread fetches.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect))?;
        git2::opts::set_server_timeout_in_milliseconds(millis(read))?;
    }
    Ok(())
}

/// What a fetch brings: every branch (as remote-tracking refs, pruned when
/// deleted upstream) and every tag.
const BRANCHES_AND_TAGS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

/// Credential prompts libgit2 may make per fetch before it gives up (it
/// asks again after each refusal).
const MAX_CREDENTIAL_ATTEMPTS: usize = 3;

/// `known_hosts` says this host has this key (plain host names, with or
/// without a `[host]:port` form; hashed entries are not supported).
pub fn host_key_known(known_hosts: &str, host: &str, key_base64: &str) -> bool {
    known_hosts
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|line| {
            let mut fields = line.split_whitespace();
            let (Some(hosts), Some(_kind), Some(key)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return false;
            };
            key == key_base64
                && hosts.split(',').any(|h| {
                    h == host || h.strip_prefix('[').and_then(|h| h.split(']').next()) == Some(host)
                })
        })
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or("").to_owned()
}

impl Cache {
    pub fn new(dir: &Path) -> Self {
        Cache {
            dir: dir.to_owned(),
            fetches: Arc::default(),
        }
    }

    fn path_for(&self, spec: &SourceSpec) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(spec.url.as_bytes());
        match &spec.credentials {
            Credentials::None => {}
            Credentials::Token(token) => hasher.update(format!("\0token\0{token}")),
            Credentials::Ssh { private_key, .. } => hasher.update(format!("\0ssh\0{private_key}")),
        }
        let digest = hex::encode(hasher.finalize());
        self.dir.join(format!("{}.git", &digest[..16]))
    }

    fn open(&self, spec: &SourceSpec) -> Result<Repository, SourceError> {
        let path = self.path_for(spec);
        let result = if path.exists() {
            Repository::open_bare(&path)
        } else {
            Repository::init_bare(&path)
        };
        result.map_err(|source| SourceError::Cache { path, source })
    }

    /// Fetches branches and tags of `spec.url` (at most `timeout`) and
    /// resolves `spec.reference`. When another caller's fetch of the same
    /// repository finished after this one asked, that fetch is used.
    pub fn fetch(&self, spec: &SourceSpec, timeout: Duration) -> Result<Revision, SourceError> {
        let asked = Instant::now();
        let slot = {
            let mut fetches = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
            fetches.entry(self.path_for(spec)).or_default().clone()
        };
        let mut last = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let repo = self.open(spec)?;
        if !last.is_some_and(|finished| finished >= asked) {
            self.fetch_now(&repo, spec, timeout, &BRANCHES_AND_TAGS)?;
            *last = Some(Instant::now());
        }
        drop(last);
        let commit = self.resolve(&repo, spec)?;
        Ok(revision(&repo, &spec.reference, commit)?)
    }

    /// Keeps `commit` reachable in the cache under a ref of ferry's own
    /// (`refs/ferry/healthy/<commit>`), whatever happens to the branch: a
    /// rollback renders it again.
    pub fn pin(&self, spec: &SourceSpec, commit: &str) -> Result<(), SourceError> {
        let repo = self.open(spec)?;
        let read = |source| SourceError::Read {
            commit: commit.to_owned(),
            source,
        };
        let oid = Oid::from_str(commit).map_err(read)?;
        repo.reference(
            &format!("refs/ferry/healthy/{commit}"),
            oid,
            true,
            "ferry: passed its health gate",
        )
        .map_err(read)?;
        Ok(())
    }

    /// The files of `commit`; when the cache does not hold it (a new
    /// controller, a lost volume), it is fetched by its id first.
    pub fn files_at(
        &self,
        spec: &SourceSpec,
        commit: &str,
        timeout: Duration,
    ) -> Result<GitFiles, SourceError> {
        let repo = self.open(spec)?;
        let present = Oid::from_str(commit).is_ok_and(|oid| repo.find_commit(oid).is_ok());
        if !present {
            let slot = {
                let mut fetches = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
                fetches.entry(self.path_for(spec)).or_default().clone()
            };
            let _fetching = slot.lock().unwrap_or_else(PoisonError::into_inner);
            let refspec = format!("+{commit}:refs/ferry/healthy/{commit}");
            self.fetch_now(&repo, spec, timeout, &[refspec.as_str()])?;
        }
        self.files(spec, commit)
    }

    fn fetch_now(
        &self,
        repo: &Repository,
        spec: &SourceSpec,
        timeout: Duration,
        refspecs: &[&str],
    ) -> Result<(), SourceError> {
        let deadline = Instant::now() + timeout;
        let url = redact(&spec.url);
        let fetch_error = |source: git2::Error| {
            if Instant::now() >= deadline {
                SourceError::Timeout {
                    url: url.clone(),
                    seconds: timeout.as_secs(),
                }
            } else {
                SourceError::Fetch {
                    url: url.clone(),
                    message: sanitize(source.message(), &spec.url),
                }
            }
        };
        let mut remote = repo.remote_anonymous(&spec.url).map_err(fetch_error)?;
        let host = host_of(&spec.url);
        let unknown_host = std::rc::Rc::new(std::cell::Cell::new(false));
        {
            let callbacks = callbacks(spec, deadline, &host, unknown_host.clone());
            let mut options = FetchOptions::new();
            options.remote_callbacks(callbacks);
            options.download_tags(git2::AutotagOption::All);
            // Branches deleted on the remote go from the cache too.
            options.prune(git2::FetchPrune::On);
            let fetched = remote.fetch(refspecs, Some(&mut options), None);
            let _ = remote.disconnect();
            if let Err(source) = fetched {
                return Err(if unknown_host.get() {
                    SourceError::UnknownHostKey { host }
                } else {
                    fetch_error(source)
                });
            }
        }
        Ok(())
    }

    fn resolve(&self, repo: &Repository, spec: &SourceSpec) -> Result<Oid, SourceError> {
        let reference = spec.reference.as_str();
        let unknown = || SourceError::UnknownReference {
            url: redact(&spec.url),
            reference: reference.to_owned(),
        };
        let candidates = [
            format!("refs/remotes/origin/{reference}"),
            format!("refs/tags/{reference}"),
        ];
        for name in &candidates {
            if let Ok(r) = repo.find_reference(name) {
                return r.peel_to_commit().map(|c| c.id()).map_err(|_| unknown());
            }
        }
        if reference.len() == 40 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
            let oid = Oid::from_str(reference).map_err(|_| unknown())?;
            return repo.find_commit(oid).map(|c| c.id()).map_err(|_| unknown());
        }
        Err(unknown())
    }

    /// The commits reachable from `to` and not from `from`, other than `to`
    /// itself, oldest first, at most `limit` (the newest of them): the
    /// commits a sync to `to` skips over. Empty when `from` is unknown to
    /// the cache (a force-push, a first sync) or not an ancestor's id.
    pub fn commits_between(
        &self,
        spec: &SourceSpec,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Revision>, SourceError> {
        let repo = self.open(spec)?;
        fn read(commit: &str) -> impl FnOnce(git2::Error) -> SourceError + '_ {
            move |source| SourceError::Read {
                commit: commit.to_owned(),
                source,
            }
        }
        let (Ok(from_oid), Ok(to_oid)) = (Oid::from_str(from), Oid::from_str(to)) else {
            return Ok(Vec::new());
        };
        if repo.find_commit(from_oid).is_err() || from_oid == to_oid {
            return Ok(Vec::new());
        }
        let mut walk = repo.revwalk().map_err(read(to))?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL)
            .map_err(read(to))?;
        walk.push(to_oid).map_err(read(to))?;
        walk.hide(from_oid).map_err(read(from))?;
        let mut skipped = Vec::new();
        for oid in walk {
            let oid = oid.map_err(read(to))?;
            if oid == to_oid {
                continue;
            }
            if skipped.len() == limit {
                break;
            }
            skipped.push(revision(&repo, &spec.reference, oid)?);
        }
        skipped.reverse();
        Ok(skipped)
    }

    /// The files of `commit` in the cached repository of `spec`.
    pub fn files(&self, spec: &SourceSpec, commit: &str) -> Result<GitFiles, SourceError> {
        Ok(GitFiles::open(&self.path_for(spec), commit)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_matching() {
        let known = "# comment\ngithub.com ssh-ed25519 AAAAkey1\n[git.example.com]:2222,other ssh-rsa AAAAkey2\n";
        assert!(host_key_known(known, "github.com", "AAAAkey1"));
        assert!(!host_key_known(known, "github.com", "AAAAkey2"));
        assert!(host_key_known(known, "git.example.com", "AAAAkey2"));
        assert!(!host_key_known(known, "evil.example.com", "AAAAkey1"));
    }

    #[test]
    fn hosts_from_urls() {
        assert_eq!(host_of("https://github.com/acme/app.git"), "github.com");
        assert_eq!(host_of("ssh://git@github.com/acme/app.git"), "github.com");
        assert_eq!(host_of("git@github.com:acme/app.git"), "github.com");
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact("https://x-access-token:ghp_s3cr3t@github.com/acme/app.git"),
            "https://***@github.com/acme/app.git"
        );
        assert_eq!(redact("https://github.com/a@b"), "https://github.com/a@b");
        assert_eq!(redact("file:///srv/repo"), "file:///srv/repo");
        let url = "https://bot:ghp_s3cr3t@github.com/acme/app.git";
        let message = sanitize(
            &format!("could not read from {url}: bot:ghp_s3cr3t refused"),
            url,
        );
        assert!(!message.contains("ghp_s3cr3t"), "{message}");
    }
}
