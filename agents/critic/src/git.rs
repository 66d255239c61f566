//! The few git CLI calls the critic makes (`git -C <dir> ...`), read-only except for the scratch checkout.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use kit::git::{Git, GitError};

use crate::CriticError;

impl From<GitError> for CriticError {
    fn from(e: GitError) -> CriticError {
        match e {
            GitError::Failed { command, status, stderr } => CriticError::Git { command, status, stderr },
            other => CriticError::GitRun(other.to_string()),
        }
    }
}

/// Runs `git -C dir <args>` (`kit::git`: hooks off, redirecting variables removed) and returns its
/// stdout; a non-zero exit is an error carrying stderr.
pub(crate) fn git<I, S>(dir: &Path, args: I) -> Result<Vec<u8>, CriticError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Ok(Git::new(dir).run_bytes(args)?)
}

/// Resolves `rev` to a full commit id; refuses anything that is not a commit (and any option-like text).
pub(crate) fn resolve_commit(repo: &Path, rev: &str) -> Result<String, CriticError> {
    let spec = format!("{rev}^{{commit}}");
    let out = git(repo, ["rev-parse", "--verify", "--quiet", "--end-of-options", spec.as_str()])
        .map_err(|_| CriticError::NoSuchCommit { repo: repo.to_path_buf(), rev: rev.to_string() })?;
    let id = String::from_utf8_lossy(&out).trim().to_string();
    if id.is_empty() {
        return Err(CriticError::NoSuchCommit { repo: repo.to_path_buf(), rev: rev.to_string() });
    }
    Ok(id)
}

/// The bytes of `path` at `commit`, or `None` when the file does not exist there.
pub(crate) fn show_file(repo: &Path, commit: &str, path: &str) -> Result<Option<Vec<u8>>, CriticError> {
    let exists = git(repo, ["ls-tree", "--name-only", "-z", commit, "--", path])?;
    if exists.is_empty() {
        return Ok(None);
    }
    git(repo, ["show".to_string(), format!("{commit}:{path}")]).map(Some)
}

/// A self-contained checkout of `repo` at a commit (its git directory inside it, borrowing the
/// repository's objects read-only: `kit::git::Git::scratch_checkout`), in a fresh temporary
/// directory removed when dropped, whatever happened in between. Nothing is registered in the
/// repository, and the sandboxed test command sees none of the repository's git metadata.
pub(crate) struct ScratchCheckout {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ScratchCheckout {
    pub(crate) fn create(repo: &Path, commit: &str) -> Result<ScratchCheckout, CriticError> {
        let dir = tempfile::Builder::new()
            .prefix("ratchet-bite-")
            .tempdir()
            .map_err(|e| CriticError::Io { what: "creating the bite check's scratch directory".into(), source: e })?;
        let path = dir.path().join("checkout");
        kit::git::Git::new(repo).scratch_checkout(&path, commit).map_err(|e| CriticError::Git {
            command: format!("a scratch checkout of {commit} from {}", repo.display()),
            status: "failed".into(),
            stderr: e.to_string(),
        })?;
        Ok(ScratchCheckout { path, _dir: dir })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
