//! Reading a commit's tree straight from a git repository (no worktree),
//! as [`Files`], so any past revision renders the same as it did then.
//!
//! Guarantees: reading never writes to the repository.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use crate::render::RenderError;
use crate::render::files::{Entry, Files};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("failed to read commit {commit}")]
    Read {
        commit: String,
        #[source]
        source: git2::Error,
    },
}

/// A resolved commit and what it says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub reference: String,
    pub commit: String,
    pub author: String,
    pub email: String,
    /// Who committed it (a bot, for commits of the release pipeline).
    pub committer: String,
    /// Commit time, seconds since the epoch.
    pub time: i64,
    pub message: String,
}

impl Revision {
    /// `main@sha1:<commit>`, the form the status and history record.
    pub fn id(&self) -> String {
        format!("{}@sha1:{}", self.reference, self.commit)
    }

    /// The first line of the message.
    pub fn subject(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

pub fn revision(repo: &Repository, reference: &str, oid: Oid) -> Result<Revision, GitError> {
    let commit = repo.find_commit(oid).map_err(|source| GitError::Read {
        commit: oid.to_string(),
        source,
    })?;
    let author = commit.author();
    Ok(Revision {
        reference: reference.to_owned(),
        commit: oid.to_string(),
        author: author.name().unwrap_or("").to_owned(),
        email: author.email().unwrap_or("").to_owned(),
        committer: commit.committer().name().unwrap_or("").to_owned(),
        time: commit.time().seconds(),
        message: commit.message().unwrap_or("").to_owned(),
    })
}

/// The tree of one commit, readable as [`Files`].
pub struct GitFiles {
    repo: Repository,
    tree: Oid,
    commit: String,
}

impl GitFiles {
    /// Opens `commit` (anything `git rev-parse` takes) in the repository at `path`.
    pub fn open(path: &Path, commit: &str) -> Result<Self, GitError> {
        let read = |source| GitError::Read {
            commit: commit.to_owned(),
            source,
        };
        let repo = Repository::open(path).map_err(read)?;
        let tree = repo
            .revparse_single(commit)
            .and_then(|o| o.peel_to_tree())
            .map_err(read)?
            .id();
        Ok(GitFiles {
            repo,
            tree,
            commit: commit.to_owned(),
        })
    }

    /// The repository that contains `dir` (for `render --revision`).
    pub fn discover(dir: &Path, revision: &str) -> Result<(Self, PathBuf), GitError> {
        let repo = Repository::discover(dir).map_err(|source| GitError::Read {
            commit: revision.to_owned(),
            source,
        })?;
        let root = repo.workdir().unwrap_or_else(|| repo.path()).to_owned();
        Ok((GitFiles::open(repo.path(), revision)?, root))
    }

    /// The revision this tree belongs to.
    pub fn revision(&self, reference: &str) -> Result<Revision, GitError> {
        let oid = self
            .repo
            .revparse_single(&self.commit)
            .and_then(|o| o.peel_to_commit())
            .map_err(|source| GitError::Read {
                commit: self.commit.clone(),
                source,
            })?
            .id();
        revision(&self.repo, reference, oid)
    }

    fn object(&self, path: &str) -> Result<Option<git2::Object<'_>>, RenderError> {
        let git_error = |e: git2::Error| RenderError::Read {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        };
        let tree = self.repo.find_tree(self.tree).map_err(git_error)?;
        if path.is_empty() {
            return Ok(Some(tree.into_object()));
        }
        match tree.get_path(Path::new(path)) {
            Ok(entry) => entry.to_object(&self.repo).map(Some).map_err(git_error),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(git_error(e)),
        }
    }
}

impl Files for GitFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, RenderError> {
        Ok(self
            .object(path)?
            .and_then(|o| o.into_blob().ok())
            .map(|b| b.content().to_vec()))
    }

    fn list(&self, path: &str) -> Result<Option<Vec<Entry>>, RenderError> {
        let Some(tree) = self.object(path)?.and_then(|o| o.into_tree().ok()) else {
            return Ok(None);
        };
        let mut entries: Vec<Entry> = tree
            .iter()
            .map(|e| Entry {
                name: e.name().unwrap_or("").to_owned(),
                is_dir: e.kind() == Some(ObjectType::Tree),
            })
            .collect();
        entries.sort();
        Ok(Some(entries))
    }
}
