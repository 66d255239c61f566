//! The git CLI, wrapped: every call is `git -C <dir> ...` with hooks off and the variables that
//! would redirect git to another repository removed; a non-zero exit is an error carrying stderr.
//! This is the one way Ratchet runs git (the coordinator, the substrate, governance and every
//! agent): blocking ([`Git::run`], [`Git::run_bytes`], [`Git::run_input`], [`Git::succeeds`]),
//! started and collected later ([`Git::start`]), or async on tokio ([`Git::run_async`],
//! [`Git::run_bytes_async`], killed when dropped), each with the same environment scrubbing.
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
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

    /// The same, ignoring the user's and the system's git configuration (`GIT_CONFIG_GLOBAL=/dev/null`,
    /// `GIT_CONFIG_NOSYSTEM=1`): tests and benches, whose repositories must not depend on the machine.
    pub fn without_user_config(self) -> Git {
        self.env("GIT_CONFIG_GLOBAL", "/dev/null").env("GIT_CONFIG_NOSYSTEM", "1")
    }

    /// The same, committing as `name <email>` (author and committer).
    pub fn with_identity(self, name: &str, email: &str) -> Git {
        self.env("GIT_AUTHOR_NAME", name)
            .env("GIT_AUTHOR_EMAIL", email)
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", email)
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

    /// `git http-backend` (smart HTTP, as CGI) on tokio with this handle's environment, hooks
    /// off; the caller adds the CGI variables and pipes.
    pub fn http_backend(&self) -> tokio::process::Command {
        let (cmd, _) = self.command(["http-backend"]);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        cmd
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
        finish(command, out)
    }

    /// Runs git with `input` on its stdin (written while its output is read, so neither side
    /// can block the other) and returns its raw stdout.
    pub fn run_input<I, S>(&self, args: I, input: &[u8]) -> Result<Vec<u8>, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use std::io::Write;
        let (mut cmd, command) = self.command(args);
        let spawn_error = |source| GitError::Spawn { command: command.clone(), source };
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(spawn_error)?;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let out = std::thread::scope(|s| {
            // A git that exits without reading all of it closes the pipe: its exit status says why.
            s.spawn(move || pipe.write_all(input));
            child.wait_with_output()
        })
        .map_err(spawn_error)?;
        finish(command, out)
    }

    /// [`Git::run_bytes`] on tokio: the process is killed if the future is dropped.
    pub async fn run_bytes_async<I, S>(&self, args: I) -> Result<Vec<u8>, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut cmd, command) = self.command(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| GitError::Spawn { command: command.clone(), source })?;
        finish(command, out)
    }

    /// [`Git::run`] on tokio: stdout as UTF-8, trimmed at the end.
    pub async fn run_async<I, S>(&self, args: I) -> Result<String, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (_, command) = self.command(std::iter::empty::<&str>());
        let bytes = self.run_bytes_async(args).await?;
        let text = String::from_utf8(bytes).map_err(|_| GitError::NotUtf8 { command })?;
        Ok(text.trim_end().to_string())
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

    /// Makes `dir/.git` a fresh git directory borrowing this repository's objects read-only (git
    /// alternates), with `HEAD` detached at `commit` and the index at `commit`; the files in `dir`
    /// stay as they are. Whatever `.git` was there is removed first: it may have been written by a
    /// program we do not trust (a configuration that runs commands, a `gitdir:` pointing at this
    /// repository), and git calls in `dir` afterwards must run under our own files only.
    ///
    /// Such a self-contained checkout is what sandboxed programs get instead of a linked worktree
    /// (whose git metadata would live in this repository's `.git`): the sandbox shows them the
    /// borrowed object directory, read-only, and nothing else of this repository.
    pub fn fresh_git_dir(&self, dir: &Path, commit: &str) -> Result<Git, GitError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| GitError::Io { what, path, source }
        };
        let dotgit = dir.join(".git");
        match std::fs::symlink_metadata(&dotgit) {
            // remove_dir_all does not follow symlinks, and a symlink itself is a file to remove.
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&dotgit).map_err(io("removing", &dotgit))?,
            Ok(_) => std::fs::remove_file(&dotgit).map_err(io("removing", &dotgit))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspecting", &dotgit)(e)),
        }
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let common = self.run(["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
        let objects = Path::new(&common).join("objects");
        let objects = objects.canonicalize().map_err(io("resolving", &objects))?;
        let format = self.run(["rev-parse", "--show-object-format"])?;
        let git = self.at(dir);
        git.run(["init", "-q", &format!("--object-format={format}")])?;
        let alternates = dotgit.join("objects").join("info").join("alternates");
        let mut line = objects.into_os_string().into_encoded_bytes();
        line.push(b'\n');
        std::fs::write(&alternates, line).map_err(io("writing", &alternates))?;
        git.run(["update-ref", "--no-deref", "HEAD", commit])?;
        git.run(["read-tree", commit])?;
        Ok(git)
    }

    /// A self-contained checkout of `commit` at `dir` (created, or reused with its files reset):
    /// [`Git::fresh_git_dir`], then every tracked file as at `commit` and everything else removed,
    /// ignored files and nested repositories included.
    pub fn scratch_checkout(&self, dir: &Path, commit: &str) -> Result<Git, GitError> {
        let git = self.fresh_git_dir(dir, commit)?;
        git.run(["reset", "-q", "--hard", commit])?;
        git.run(["clean", "-q", "-ffdx"])?;
        Ok(git)
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
        finish(command, out)
    }
}

/// A finished git's stdout, or the error carrying its stderr.
fn finish(command: String, out: std::process::Output) -> Result<Vec<u8>, GitError> {
    if !out.status.success() {
        return Err(GitError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
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

    fn hermetic(dir: &Path) -> Git {
        Git::new(dir).without_user_config().with_identity("t", "t@t")
    }

    #[test]
    fn a_scratch_checkout_borrows_objects_and_distrusts_what_a_program_left_in_its_git_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo_dir, scratch) = (tmp.path().join("repo"), tmp.path().join("scratch"));
        std::fs::create_dir_all(&repo_dir).unwrap();
        let repo = hermetic(&repo_dir);
        repo.run(["init", "-q", "-b", "main"]).unwrap();
        std::fs::write(repo_dir.join("f"), "one\n").unwrap();
        repo.run(["add", "f"]).unwrap();
        repo.run(["commit", "-qm", "one"]).unwrap();
        let first = repo.run(["rev-parse", "HEAD"]).unwrap();
        std::fs::write(repo_dir.join("f"), "two\n").unwrap();
        repo.run(["commit", "-qam", "two"]).unwrap();

        let git = repo.scratch_checkout(&scratch, &first).unwrap();
        assert_eq!(std::fs::read_to_string(scratch.join("f")).unwrap(), "one\n");
        assert_eq!(git.run(["rev-parse", "HEAD"]).unwrap(), first);
        assert!(scratch.join(".git").is_dir(), "the git directory lives inside the checkout");
        let alternates = std::fs::read_to_string(scratch.join(".git/objects/info/alternates")).unwrap();
        assert_eq!(alternates.trim(), repo_dir.join(".git/objects").canonicalize().unwrap().to_str().unwrap());
        assert!(repo.worktrees().unwrap().len() == 1, "no worktree registered in the repository");
        assert_eq!(git.run(["for-each-ref"]).unwrap(), "", "none of the repository's refs");

        // A program edits, commits, plants a config that would run a command, then replaces .git by a
        // pointer to the repository itself.
        std::fs::write(scratch.join("f"), "edited\n").unwrap();
        std::fs::write(scratch.join("junk"), "x").unwrap();
        git.run(["commit", "-qam", "edit"]).unwrap();
        let marker = tmp.path().join("fsmonitor-ran");
        let hostile = format!("[core]\n\tfsmonitor = touch {}\n", marker.display());
        std::fs::write(scratch.join(".git/config"), hostile).unwrap();
        std::fs::remove_dir_all(scratch.join(".git")).unwrap();
        std::fs::write(scratch.join(".git"), format!("gitdir: {}\n", repo_dir.join(".git").display())).unwrap();

        let git = repo.fresh_git_dir(&scratch, &first).unwrap();
        git.run(["add", "-A"]).unwrap();
        let diff = git.run(["diff", "--cached", "--name-only", &first]).unwrap();
        assert_eq!(diff, "f\njunk", "the work tree against the base, whatever the program did to .git");
        assert!(!marker.exists(), "a planted configuration ran");
        assert_eq!(repo.run(["rev-parse", "main"]).unwrap(), repo.run(["rev-parse", "HEAD"]).unwrap());
        assert_eq!(std::fs::read_to_string(repo_dir.join("f")).unwrap(), "two\n", "the repository is untouched");

        // Reused: back to the commit, untracked and ignored files gone.
        repo.scratch_checkout(&scratch, &first).unwrap();
        assert_eq!(std::fs::read_to_string(scratch.join("f")).unwrap(), "one\n");
        assert!(!scratch.join("junk").exists());
    }

    /// stdin (sync, larger than a pipe's buffer) and async runs go through the same wrapper and
    /// report failures the same way.
    #[test]
    fn input_and_async_runs() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let git = Git::new(tmp.path()).without_user_config();
        git.run(["init", "-q"]).expect("git init");
        let big = vec![b'x'; 1 << 20];
        let id = git.run_input(["hash-object", "-w", "--stdin"], &big).expect("hash-object");
        let id = String::from_utf8(id).expect("utf-8").trim().to_string();
        assert_eq!(git.run_bytes(["cat-file", "blob", id.as_str()]).expect("cat-file"), big);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let kind = rt.block_on(git.run_async(["cat-file", "-t", id.as_str()])).expect("cat-file -t");
        assert_eq!(kind, "blob");
        let e = rt.block_on(git.run_async(["cat-file", "-t", "0000000000000000000000000000000000000001"]));
        let e = e.expect_err("no such object");
        assert!(matches!(e, GitError::Failed { .. }) && !e.stderr().is_empty(), "{e}");
        let e = git.run_input(["hash-object", "--no-such-option", "--stdin"], b"x").expect_err("bad option");
        assert!(e.to_string().contains("--no-such-option"), "{e}");
    }
}
