//! The git CLI, wrapped: every call is `git -C <dir> ...` with hooks off and the variables that
//! would redirect git to another repository removed; a non-zero exit is an error carrying stderr.
//!
//! The substrate uses the CLI rather than a library so that what it does to a repository is
//! exactly what a user would do by hand (and can be replayed from the error message).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Variables that would point `git -C` at another repository, index or object store.
const REDIRECTING_ENV: [&str; 6] =
    ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR", "GIT_PREFIX"];

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not run `{command}`: {source}; install git and make sure it is on PATH")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error("`{command}` printed something that is not UTF-8")]
    NotUtf8 { command: String },
}

impl GitError {
    /// The stderr of a failed command (empty for other errors).
    pub fn stderr(&self) -> &str {
        match self {
            GitError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// A repository (or worktree) directory to run git in, with extra environment variables
/// (tests pass `GIT_CONFIG_GLOBAL=/dev/null` and friends this way).
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
    envs: Vec<(OsString, OsString)>,
}

impl Git {
    pub fn new(dir: impl Into<PathBuf>) -> Git {
        Git { dir: dir.into(), envs: Vec::new() }
    }

    /// The same environment, another directory.
    pub fn at(&self, dir: impl Into<PathBuf>) -> Git {
        Git { dir: dir.into(), envs: self.envs.clone() }
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Git {
        self.envs.push((key.into(), value.into()));
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command<I, S>(&self, args: I) -> (Command, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(&self.dir).args(["-c", "core.hooksPath=/dev/null", "-c", "core.quotePath=false"]);
        cmd.args(&args);
        for var in REDIRECTING_ENV {
            cmd.env_remove(var);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let words: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        (cmd, format!("git -C {} {}", self.dir.display(), words.join(" ")))
    }

    /// Starts git without waiting for it (so the caller can do other work meanwhile);
    /// [`Running::wait`] collects it.
    pub fn start<I, S>(&self, args: I) -> Result<Running, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut cmd, command) = self.command(args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GitError::Spawn { command: command.clone(), source })?;
        Ok(Running { child, command })
    }

    /// Runs git and returns its raw stdout.
    pub fn run_bytes<I, S>(&self, args: I) -> Result<Vec<u8>, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut cmd, command) = self.command(args);
        let out = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| GitError::Spawn { command: command.clone(), source })?;
        if !out.status.success() {
            return Err(GitError::Failed {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// Runs git and returns its stdout, trimmed.
    pub fn run<I, S>(&self, args: I) -> Result<String, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (_, command) = self.command(std::iter::empty::<&str>());
        let bytes = self.run_bytes(args)?;
        let text = String::from_utf8(bytes).map_err(|_| GitError::NotUtf8 { command })?;
        Ok(text.trim_end().to_string())
    }

    /// Runs git and reports only whether it exited 0 (for predicates such as
    /// `merge-base --is-ancestor`); failing to start git is still an error.
    pub fn succeeds<I, S>(&self, args: I) -> Result<bool, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut cmd, command) = self.command(args);
        let status = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| GitError::Spawn { command, source })?;
        Ok(status.success())
    }

    /// The full commit id `rev` names, or `None` when it names no commit.
    pub fn resolve_commit(&self, rev: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{rev}^{{commit}}");
        match self.run(["rev-parse", "--verify", "--quiet", "--end-of-options", spec.as_str()]) {
            Ok(id) if !id.is_empty() => Ok(Some(id)),
            Ok(_) => Ok(None),
            Err(GitError::Failed { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
        self.succeeds(["merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant])
    }

    /// `git worktree list --porcelain`, parsed.
    pub fn worktrees(&self) -> Result<Vec<WorktreeEntry>, GitError> {
        let out = self.run_bytes(["worktree", "list", "--porcelain", "-z"])?;
        Ok(parse_worktree_list(&out))
    }

    /// Tracked files with uncommitted changes (staged or not), repository-relative.
    pub fn dirty_paths(&self) -> Result<Vec<String>, GitError> {
        let out = self.run_bytes(["status", "--porcelain", "--untracked-files=no", "-z"])?;
        Ok(out
            .split(|b| *b == 0)
            .filter(|e| e.len() > 3)
            .map(|e| String::from_utf8_lossy(&e[3..]).into_owned())
            .collect())
    }

    /// Whether the checkout has changes to tracked files (staged or not).
    pub fn is_dirty(&self) -> Result<bool, GitError> {
        let out = self.run_bytes(["status", "--porcelain", "--untracked-files=no"])?;
        Ok(!out.is_empty())
    }
}

/// A git command started by [`Git::start`].
#[derive(Debug)]
pub struct Running {
    child: std::process::Child,
    command: String,
}

impl Running {
    /// Waits for the command; its stdout, or an error carrying stderr.
    pub fn wait(self) -> Result<Vec<u8>, GitError> {
        let command = self.command;
        let out =
            self.child.wait_with_output().map_err(|source| GitError::Spawn { command: command.clone(), source })?;
        if !out.status.success() {
            return Err(GitError::Failed {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }
}

/// One registered worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeEntry {
    pub path: PathBuf,
    /// `None` for a bare repository.
    pub head: Option<String>,
    /// `refs/heads/...` when a branch is checked out, `None` when detached.
    pub branch: Option<String>,
    pub bare: bool,
    pub prunable: bool,
}

/// Parses `git worktree list --porcelain -z` (NUL-terminated attribute lines, an empty
/// attribute between records).
pub fn parse_worktree_list(out: &[u8]) -> Vec<WorktreeEntry> {
    let mut entries = Vec::new();
    let mut cur: Option<WorktreeEntry> = None;
    for field in out.split(|b| *b == 0) {
        if field.is_empty() {
            if let Some(e) = cur.take() {
                entries.push(e);
            }
            continue;
        }
        let text = String::from_utf8_lossy(field);
        let (key, value) = text.split_once(' ').unwrap_or((&text, ""));
        match key {
            "worktree" => {
                if let Some(e) = cur.take() {
                    entries.push(e);
                }
                cur = Some(WorktreeEntry {
                    path: PathBuf::from(path_from_bytes(&field["worktree ".len()..])),
                    head: None,
                    branch: None,
                    bare: false,
                    prunable: false,
                });
            }
            "HEAD" => {
                if let Some(e) = cur.as_mut() {
                    e.head = Some(value.to_string());
                }
            }
            "branch" => {
                if let Some(e) = cur.as_mut() {
                    e.branch = Some(value.to_string());
                }
            }
            "bare" => {
                if let Some(e) = cur.as_mut() {
                    e.bare = true;
                }
            }
            "prunable" => {
                if let Some(e) = cur.as_mut() {
                    e.prunable = true;
                }
            }
            _ => {}
        }
    }
    if let Some(e) = cur.take() {
        entries.push(e);
    }
    entries
}

#[cfg(unix)]
fn path_from_bytes(b: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(b.to_vec())
}

#[cfg(not(unix))]
fn path_from_bytes(b: &[u8]) -> OsString {
    OsString::from(String::from_utf8_lossy(b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_worktree_list() {
        let out = b"worktree /r\0HEAD abc\0branch refs/heads/main\0\0worktree /r/worktrees/c1/tree\0HEAD def\0detached\0\0worktree /gone\0HEAD 123\0branch refs/heads/x\0prunable gitdir file points to non-existent location\0\0";
        let list = parse_worktree_list(out);
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].path, PathBuf::from("/r"));
        assert_eq!(list[0].branch.as_deref(), Some("refs/heads/main"));
        assert_eq!(list[1].branch, None);
        assert_eq!(list[1].head.as_deref(), Some("def"));
        assert!(list[2].prunable);
    }
}
