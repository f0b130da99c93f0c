//! Landing a generated change (an image bump) on a branch that others push
//! to: fetch the branch's tip, make the change there, commit, push; when
//! the push loses a race, start again from the new tip. Generated files
//! are made again, never rebased. When the branch is protected and the
//! token may not bypass it, the change goes through a pull request
//! instead (see [`Outcome::Protected`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Why an edit could not be made (the edit's own error).
pub type EditError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("failed to run git {args}")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git {args} failed: {stderr}")]
    Git { args: String, stderr: String },
    #[error("failed to make the change on {tip}")]
    Change {
        tip: String,
        #[source]
        source: EditError,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{branch} kept moving: the push lost the race {attempts} times; run the release again")]
    Raced { branch: String, attempts: u32 },
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The branch already had the change: nothing was pushed.
    Unchanged,
    /// Pushed as this commit after this many lost races.
    Pushed { commit: String, retries: u32 },
    /// The remote refused the branch as protected (GitHub's GH006 or a
    /// ruleset's GH013): the change is committed locally at `commit`,
    /// on top of the branch's tip, for a pull request.
    Protected { commit: String, message: String },
}

/// Whether a refused push says the branch is protected (no retry helps).
pub fn is_protected_refusal(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("gh006")
        || s.contains("gh013")
        || s.contains("protected branch")
        || s.contains("repository rule violations")
}

fn git(dir: &Path, args: &[&str]) -> Result<String, PublishError> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|source| PublishError::Spawn {
            args: args.join(" "),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(PublishError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// One file a change writes.
pub struct FileEdit<'a> {
    /// Relative to the working tree; a file that does not exist yet reads
    /// as empty.
    pub file: &'a Path,
    /// The new content of `file` from its current one (pure; called again
    /// on every new tip).
    pub edit: &'a dyn Fn(&str) -> Result<String, EditError>,
}

/// What to land.
pub struct Change<'a> {
    /// The repository's working tree.
    pub dir: &'a Path,
    pub remote: &'a str,
    pub branch: &'a str,
    /// The files the change writes, in one commit.
    pub files: &'a [FileEdit<'a>],
    pub message: &'a str,
    pub attempts: u32,
    /// Waited after the n-th lost race: n × this.
    pub pause: Duration,
}

/// Lands `change` on `remote/branch` (see the module's description). The
/// working tree ends on a detached HEAD at the last commit made or fetched.
pub fn publish(change: &Change) -> Result<Outcome, PublishError> {
    let dir = change.dir;
    for attempt in 0..change.attempts.max(1) {
        git(dir, &["fetch", "-q", change.remote, change.branch])?;
        git(dir, &["checkout", "-q", "--detach", "FETCH_HEAD"])?;
        let tip = git(dir, &["rev-parse", "HEAD"])?;
        let mut changed = Vec::new();
        for FileEdit { file, edit } in change.files {
            let path = dir.join(file);
            let current = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(source) => return Err(PublishError::Write { path, source }),
            };
            let edited = edit(&current).map_err(|source| PublishError::Change {
                tip: tip.clone(),
                source,
            })?;
            if edited != current {
                changed.push((path, file.to_string_lossy().into_owned(), edited));
            }
        }
        if changed.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        for (path, _, edited) in &changed {
            std::fs::write(path, edited).map_err(|source| PublishError::Write {
                path: path.clone(),
                source,
            })?;
        }
        let mut paths: Vec<&str> = vec!["--"];
        paths.extend(changed.iter().map(|(_, file, _)| file.as_str()));
        git(dir, &[&["add"][..], &paths].concat())?;
        git(
            dir,
            &[&["commit", "-q", "-m", change.message][..], &paths].concat(),
        )?;
        let commit = git(dir, &["rev-parse", "HEAD"])?;
        let target = format!("HEAD:refs/heads/{}", change.branch);
        match git(dir, &["push", "-q", change.remote, &target]) {
            Ok(_) => {
                return Ok(Outcome::Pushed {
                    commit,
                    retries: attempt,
                });
            }
            Err(PublishError::Git { stderr, .. }) if is_protected_refusal(&stderr) => {
                return Ok(Outcome::Protected {
                    commit,
                    message: stderr,
                });
            }
            Err(PublishError::Git { stderr, .. }) => {
                eprintln!(
                    "push to {} {} lost a race (attempt {}): {}",
                    change.remote,
                    change.branch,
                    attempt + 1,
                    stderr.lines().last().unwrap_or("")
                );
                std::thread::sleep(change.pause * (attempt + 1));
            }
            Err(other) => return Err(other),
        }
    }
    Err(PublishError::Raced {
        branch: change.branch.to_owned(),
        attempts: change.attempts.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_is_told_apart_from_a_lost_race() {
        let gh006 = "remote: error: GH006: Protected branch update failed for refs/heads/main.\n ! [remote rejected] HEAD -> main (protected branch hook declined)";
        let gh013 = "remote: error: GH013: Repository rule violations found for refs/heads/main.";
        let race =
            " ! [rejected]        HEAD -> main (fetch first)\nerror: failed to push some refs";
        let lock = " ! [remote rejected] HEAD -> main (failed to update ref)";
        assert!(is_protected_refusal(gh006));
        assert!(is_protected_refusal(gh013));
        assert!(!is_protected_refusal(race));
        assert!(!is_protected_refusal(lock));
    }
}
