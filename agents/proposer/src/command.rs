//! The `command` strategy: run a configured program (a coding-agent CLI or a script) in a scratch
//! checkout of the baseline and take the diff it leaves as the proposal.
//!
//! The program gets, as text on stdin and in its environment:
//! - on stdin: the goal, where the metric stands, what was tried with its outcome, reason and
//!   numbers, and the banned approaches ([`crate::brief`], the same text the `openai` strategy's
//!   model gets), then the governance context;
//! - `RATCHET_GOAL`: the goal (ethos.md `goal`);
//! - `RATCHET_BANNED`: the hard-banned approaches, one a line, by their summary with why;
//! - `RATCHET_CONTEXT_FILE`: the absolute path of a file holding the context (governance texts,
//!   history) and how to declare the change. The file is written inside the checkout as
//!   [`CONTEXT_FILE`], so that every sandbox mode can read it, and removed before the diff is
//!   taken;
//! - `RATCHET_DECLARATION_FILE`: the absolute path where the program declares its change
//!   ([`protocol::rails::DECLARATION_FILE`], `.ratchet/proposal.toml` in the checkout: the files
//!   it touches, a one-line rationale, optionally the tests it adds and the effect it expects;
//!   the text on stdin shows an example). The proposer reads and removes it before it takes the
//!   diff, and the diff never includes that path. No file: the proposal carries no declaration
//!   (the critic reports its scope unverified); a file that is not a valid declaration (or not
//!   a regular file) is a proposal failure naming the field and the fix.
//!
//! The program runs through [`kit::exec`]: `sh -c`, its own process group killed at the end, a
//! cleared environment, the sandbox and limits of [`CommandLimits`]: it may write its checkout
//! (`.git` included: it may commit) and its own home directory (`HOME`, kept from one run to the
//! next, for a CLI's configuration and caches), nothing else; the swarm's repository is hidden
//! from it except the objects the checkout borrows.
//!
//! The checkout is self-contained (`kit::git::Git::scratch_checkout`: its git directory inside it,
//! borrowing the repository's objects read-only). Whatever the program leaves in that git
//! directory is not trusted: before the proposer runs git there again it replaces the git
//! directory with a fresh one at the base commit (`kit::git::Git::fresh_git_dir`), so a planted
//! configuration or a `gitdir:` pointing elsewhere never reaches a git call outside the sandbox.
//! Then every change (including new files, and what commits the program made) is staged with
//! `git add -A` and diffed against the base commit; the checkout is then reset to it
//! (`git reset --hard`, `git clean -fd`: ignored files such as build outputs are kept).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kit::exec::{RunSpec, SandboxMode};
use protocol::rails::{DECLARATION_ENV, DECLARATION_FILE, Declaration};
use serde_json::json;

use crate::brief::Brief;
use crate::{Proposal, ProposalError, slug};

/// The name of the context file written at the checkout's root for the program's run.
pub const CONTEXT_FILE: &str = ".ratchet-proposer-context.md";

/// Longest summary taken from the program's output, in characters.
const MAX_SUMMARY: usize = 200;

/// How the program runs. `From<Duration>` gives the defaults for that timeout.
#[derive(Debug, Clone)]
pub struct CommandLimits {
    pub timeout: Duration,
    pub sandbox: SandboxMode,
    /// constitution.md `weak_sandbox = "allow"`: the program may run in a sandbox that does not
    /// confine it.
    pub allow_weak: bool,
    /// The swarm's repository, hidden from the program (but the objects the checkout borrows).
    pub repository: Option<PathBuf>,
    /// The program's own home directory (`HOME`, writable, kept between runs); created when
    /// missing. Without one, `HOME` is the proposer's own, read-only to a confined program.
    pub home: Option<PathBuf>,
    /// cadence.md `[proposer] allow_network` (default false): a coding-agent CLI that reaches
    /// its model over the network needs it, and the approved document says so.
    pub allow_network: bool,
    pub memory_limit_bytes: Option<u64>,
    /// Added to the program's (otherwise cleared) environment, e.g. the API key its CLI needs.
    pub env: Vec<(String, String)>,
}

impl From<Duration> for CommandLimits {
    fn from(timeout: Duration) -> CommandLimits {
        CommandLimits {
            timeout,
            sandbox: SandboxMode::Auto,
            allow_weak: false,
            repository: None,
            home: None,
            allow_network: false,
            memory_limit_bytes: None,
            env: vec![],
        }
    }
}

/// The text given on stdin: the goal, the briefing, how to declare, the context.
fn stdin_text(goal: &str, context: &str, brief: &Brief) -> String {
    let mut s = format!("# Goal\n\n{}\n\n", goal.trim_end());
    s.push_str(brief.text.trim_end());
    s.push('\n');
    s.push_str(&declare_text());
    s.push_str(&format!("\n# Context\n\n{}\n", context.trim_end()));
    s
}

/// How to declare, with the example: on stdin, and at the end of the context file.
fn declare_text() -> String {
    format!("{DECLARE_TEXT}{}```\n", protocol::rails::EXAMPLE_TOML)
}

/// How to declare, on stdin (the example follows it, then the closing fence).
const DECLARE_TEXT: &str = "\n# Declare your change\n\n\
Edit the files in this directory, then write what your change touches and why to the file named in \
RATCHET_DECLARATION_FILE (.ratchet/proposal.toml here; it is read and removed before your diff is taken, \
and is never part of it). Ratchet's critic compares your diff with it: a changed file you did not declare \
rejects the change, and so does a change without a declaration (unless constitution.md says \
unverified_scope = \"warn\"). Declare every file (globs allowed), one line of rationale, and optionally the \
tests you add or change (each must fail on the code before your change) and the effect you expect \
(better, same or worse). Existing tests may grow but not shrink or change where constitution.md lists \
append_only_paths. Your last line of output is the change's summary. TOML, for example:\n\n```toml\n";

/// Read the program's declaration at `dir/.ratchet/proposal.toml` and remove it. Never through
/// a symlink, at most 64 KiB; the program has ended (nothing it started outlives its sandbox), so
/// nothing changes between the checks and the read. `Ok(None)`: the program wrote none.
fn take_declaration(dir: &Path) -> Result<Option<Declaration>, ProposalError> {
    let parent = dir.join(".ratchet");
    let path = dir.join(DECLARATION_FILE);
    let refused = |problem: String| {
        ProposalError::Declaration(protocol::rails::DeclarationError {
            source_name: DECLARATION_FILE.into(),
            field: "file".into(),
            problem,
            fix: "write the declaration as a regular file at the path RATCHET_DECLARATION_FILE names".into(),
        })
    };
    match std::fs::symlink_metadata(&parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refused(".ratchet is not a directory (a symlink or a file)".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ProposalError::Io { path: parent, source }),
    }
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ProposalError::Io { path, source }),
    };
    if !meta.is_file() || meta.len() > 64 * 1024 {
        let _ = std::fs::remove_file(&path);
        let kind = if meta.file_type().is_symlink() { "a symlink" } else { "not a regular file of at most 64 KiB" };
        return Err(refused(format!("it is {kind} ({} bytes)", meta.len())));
    }
    let bytes = std::fs::read(&path).map_err(|source| ProposalError::Io { path: path.clone(), source })?;
    std::fs::remove_file(&path).map_err(|source| ProposalError::Io { path: path.clone(), source })?;
    let text = String::from_utf8(bytes).map_err(|_| refused("it is not UTF-8 text".into()))?;
    Declaration::from_toml(DECLARATION_FILE, &text).map(Some).map_err(ProposalError::Declaration)
}

/// Run `cmd` in `worktree` (a scratch checkout of the baseline made by
/// `kit::git::Git::scratch_checkout`, reset before and after) and return the diff it leaves as a
/// proposal.
///
/// Errors: [`ProposalError::CommandFailed`] for a non-zero exit, [`ProposalError::EmptyDiff`]
/// when it exits 0 having changed nothing, [`ProposalError::CommandInfra`] for a timeout, a
/// spawn error, a signal or running out of memory.
pub async fn propose_command(
    cmd: &str,
    worktree: &Path,
    goal: &str,
    context: &str,
    brief: &Brief,
    limits: impl Into<CommandLimits>,
) -> Result<Proposal, ProposalError> {
    let limits = limits.into();
    let worktree =
        std::path::absolute(worktree).map_err(|source| ProposalError::Io { path: worktree.into(), source })?;
    let base = git(&worktree, &["rev-parse", "--verify", "HEAD^{commit}"]).await?.trim().to_string();
    reset(&worktree, &base).await?;
    // What the checkout borrows, read while its git directory is still ours.
    let objects = borrowed_objects(&worktree)?;

    let context_path = worktree.join(CONTEXT_FILE);
    std::fs::write(&context_path, format!("{}\n{}", context.trim_end(), declare_text()))
        .map_err(|source| ProposalError::Io { path: context_path.clone(), source })?;
    // The declaration's place: a file there now is the baseline's, not the program's.
    let declaration_path = worktree.join(DECLARATION_FILE);
    let _ = std::fs::remove_file(&declaration_path);
    let _ = std::fs::create_dir_all(worktree.join(".ratchet"));
    let mut spec = RunSpec::new(cmd, &worktree)
        .with_stdin(stdin_text(goal, context, brief))
        .with_env("RATCHET_GOAL", goal)
        .with_env("RATCHET_BANNED", brief.banned.join("\n"))
        .with_env("RATCHET_CONTEXT_FILE", context_path.to_string_lossy())
        .with_env(DECLARATION_ENV, declaration_path.to_string_lossy())
        .with_timeout(limits.timeout)
        .with_sandbox(limits.sandbox)
        .with_weak_sandbox_allowed(limits.allow_weak)
        .with_network(limits.allow_network)
        .with_writable_git();
    if let Some(bytes) = limits.memory_limit_bytes {
        spec = spec.with_memory_limit(bytes);
    }
    if let Some(repository) = &limits.repository {
        spec = spec.with_repository(repository);
    }
    if let Some(home) = &limits.home {
        std::fs::create_dir_all(home).map_err(|source| ProposalError::Io { path: home.clone(), source })?;
        spec = spec.with_writable(home).with_env("HOME", home.to_string_lossy());
    }
    for (k, v) in &limits.env {
        spec = spec.with_env(k, v);
    }
    let outcome = kit::exec::run(&spec).await;
    let _ = std::fs::remove_file(&context_path);
    // Read (and removed) before the diff is taken; only a successful run's counts.
    let declaration = if outcome.success() { Some(take_declaration(&worktree)) } else { None };
    // The program may have written anything into .git: from here on git runs under our own.
    let (dir, b) = (worktree.clone(), base.clone());
    tokio::task::spawn_blocking(move || kit::git::Git::new(objects).fresh_git_dir(&dir, &b))
        .await
        .map_err(|e| ProposalError::Git { args: "init".into(), dir: worktree.clone(), stderr: e.to_string() })?
        .map_err(|e| ProposalError::Git {
            args: "init (a fresh git directory)".into(),
            dir: worktree.clone(),
            stderr: e.to_string(),
        })?;

    let taken = if outcome.success() { take_diff(&worktree, &base).await.map(Some) } else { Ok(None) };
    let reset_result = reset(&worktree, &base).await;
    let tail = || tail_of(&outcome.stderr);
    if outcome.is_infra_failure() {
        return Err(ProposalError::CommandInfra {
            command: cmd.into(),
            status: outcome.describe(),
            stderr_tail: tail(),
        });
    }
    if !outcome.success() {
        return Err(ProposalError::CommandFailed {
            command: cmd.into(),
            status: outcome.describe(),
            stderr_tail: tail(),
        });
    }
    let (patch, files) = taken?.expect("taken after a successful run");
    reset_result?;
    let declaration = declaration.expect("read after a successful run")?;
    if patch.is_empty() {
        return Err(ProposalError::EmptyDiff { command: cmd.into(), worktree });
    }

    let summary = outcome
        .stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(MAX_SUMMARY).collect())
        .or_else(|| declaration.as_ref().map(|d| d.rationale.chars().take(MAX_SUMMARY).collect()))
        .unwrap_or_else(|| format!("`{cmd}` changed {}", files.join(", ")));
    let hash = protocol::governance::hash(&patch);
    Ok(Proposal {
        id: format!("command-{}-{}", slug(&summary, 32), &hash[..8]),
        strategy: "command".into(),
        summary,
        files,
        params: json!({}),
        patch: Some(patch),
        edits: vec![],
        model: None,
        declaration,
    })
}

/// The git directory whose objects the scratch checkout `dir` borrows (its alternates' first entry's
/// parent), as a place to run git for [`kit::git::Git::fresh_git_dir`].
fn borrowed_objects(dir: &Path) -> Result<PathBuf, ProposalError> {
    let file = dir.join(".git/objects/info/alternates");
    let text = std::fs::read_to_string(&file).map_err(|source| ProposalError::Io { path: file.clone(), source })?;
    let objects = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).map(PathBuf::from);
    objects.and_then(|o| o.parent().map(Path::to_path_buf)).ok_or_else(|| ProposalError::Git {
        args: "(alternates)".into(),
        dir: dir.to_path_buf(),
        stderr: format!("{} names no object directory: {dir:?} is not a scratch checkout", file.display()),
    })
}

/// The last few lines of stderr, for an error message.
fn tail_of(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() { "(nothing)".into() } else { tail }
}

/// Stage everything and diff it against `base`: (patch, touched files). The declaration's path
/// is never part of the diff, whatever the program did with it.
async fn take_diff(dir: &Path, base: &str) -> Result<(String, Vec<String>), ProposalError> {
    git(dir, &["add", "-A"]).await?;
    let common = ["--cached", "--no-color", "--no-ext-diff", "--no-renames"];
    let not_declaration = format!(":(top,exclude,literal){DECLARATION_FILE}");
    let mut args = vec!["diff"];
    args.extend(common);
    args.extend(["--binary", "--src-prefix=a/", "--dst-prefix=b/", base, "--", ".", &not_declaration]);
    let patch = git(dir, &args).await?;
    let mut args = vec!["diff"];
    args.extend(common);
    args.extend(["--name-only", "-z", base, "--", ".", &not_declaration]);
    let names = git(dir, &args).await?;
    let files = names.split('\0').filter(|f| !f.is_empty()).map(String::from).collect();
    Ok((patch, files))
}

/// Put the checkout back at `base`: tracked files, index, branch, and untracked files (ignored
/// ones are kept).
async fn reset(dir: &Path, base: &str) -> Result<(), ProposalError> {
    git(dir, &["reset", "--quiet", "--hard", base]).await?;
    git(dir, &["clean", "-fdq"]).await?;
    Ok(())
}

/// `git -C dir args` through `kit::git` (hooks off, redirecting variables removed, killed when
/// dropped); stdout as UTF-8, untrimmed (a patch keeps its last newline).
async fn git(dir: &Path, args: &[&str]) -> Result<String, ProposalError> {
    let out = kit::git::Git::new(dir).run_bytes_async(args).await.map_err(|e| ProposalError::git(dir, args, e))?;
    String::from_utf8(out).map_err(|_| ProposalError::Git {
        args: args.join(" "),
        dir: dir.into(),
        stderr: "the output is not UTF-8 (a text file with another encoding?)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A temporary repository with one commit holding params.toml, and a scratch checkout of it.
    struct Scratch {
        tmp: tempfile::TempDir,
        repo: PathBuf,
        path: PathBuf,
    }

    impl Scratch {
        fn path(&self) -> &Path {
            &self.path
        }
    }

    fn repo() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (repo, path) = (base.join("repo"), base.join("scratch"));
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("params.toml"), "cutoff = 16\n").unwrap();
        std::fs::write(repo.join(".gitignore"), "/build\n").unwrap();
        sh(&repo, "git init -q -b main && git add -A && git commit -q -m base");
        let head = sh(&repo, "git rev-parse HEAD");
        kit::git::Git::new(&repo).without_user_config().scratch_checkout(&path, head.trim()).unwrap();
        Scratch { tmp, repo, path }
    }

    fn sh(dir: &Path, script: &str) -> String {
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn limits() -> CommandLimits {
        let mut l = CommandLimits::from(Duration::from_secs(60));
        l.sandbox = SandboxMode::Plain;
        l.allow_weak = true;
        l.env = vec![("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()), ("GIT_CONFIG_NOSYSTEM".into(), "1".into())];
        l
    }

    fn pristine(dir: &Path) {
        assert_eq!(sh(dir, "git status --porcelain"), "", "the checkout was not reset");
        assert_eq!(std::fs::read_to_string(dir.join("params.toml")).unwrap(), "cutoff = 16\n");
    }

    #[tokio::test]
    async fn a_script_that_edits_gives_an_applicable_patch() {
        let repo = repo();
        let dir = repo.path();
        let script = "cat > stdin.txt; printf '%s' \"$RATCHET_GOAL\" > goal.txt; \
                      printf '%s' \"$RATCHET_BANNED\" > banned.txt; cp \"$RATCHET_CONTEXT_FILE\" context.txt; \
                      sed -i 's/16/32/' params.toml; mkdir -p build; echo junk > build/out; \
                      echo 'raise the cutoff'";
        let brief = Brief {
            text: "# Banned approaches\n\n- cutoff=8\n".into(),
            banned: vec!["cutoff=8".to_string(), "cutoff=4".to_string()],
        };
        let p = propose_command(script, dir, "be faster", "history: none", &brief, limits()).await.unwrap();
        assert_eq!(p.strategy, "command");
        assert_eq!(p.summary, "raise the cutoff");
        assert_eq!(p.files, ["banned.txt", "context.txt", "goal.txt", "params.toml", "stdin.txt"]);
        protocol::names::check_branch(&p.id).unwrap();
        assert!(p.approach_key().starts_with("command:"), "{}", p.approach_key());
        let patch = p.patch.clone().unwrap();
        assert!(patch.contains("-cutoff = 16\n+cutoff = 32\n"), "{patch}");
        assert!(patch.contains("+be faster") && patch.contains("+cutoff=8\n+cutoff=4"), "{patch}");
        assert!(patch.contains("+history: none"), "{patch}");
        let context_file = patch.split("diff --git").find(|d| d.contains("b/context.txt")).unwrap();
        assert!(context_file.contains("+history: none\n+\n+# Declare your change"), "context file: {context_file}");
        assert!(patch.contains("+# Goal") && patch.contains("+- cutoff=8"), "stdin: {patch}");
        assert!(!patch.contains(CONTEXT_FILE), "the context file leaked into the patch");
        pristine(dir);
        // The ignored build output is kept; the patch applies to the baseline.
        assert!(dir.join("build/out").exists());
        std::fs::write(dir.join("p.diff"), &patch).unwrap();
        sh(dir, "git apply p.diff && rm p.diff");
        assert_eq!(std::fs::read_to_string(dir.join("params.toml")).unwrap(), "cutoff = 32\n");
    }

    #[tokio::test]
    async fn commits_made_by_the_program_are_taken_and_undone() {
        let repo = repo();
        let dir = repo.path();
        let head = sh(dir, "git rev-parse HEAD");
        let script = "echo 'cutoff = 64' > params.toml && git -c user.name=a -c user.email=a@b commit -qam tuned";
        let p = propose_command(script, dir, "g", "c", &Brief::default(), limits()).await.unwrap();
        assert!(p.patch.unwrap().contains("+cutoff = 64"));
        assert_eq!(p.summary, "`".to_string() + script + "` changed params.toml");
        assert_eq!(sh(dir, "git rev-parse HEAD"), head);
        pristine(dir);
    }

    #[tokio::test]
    async fn a_failing_program_is_a_command_failure() {
        let repo = repo();
        let dir = repo.path();
        let e =
            propose_command("echo 32 > params.toml; echo nope >&2; exit 1", dir, "g", "c", &Brief::default(), limits())
                .await
                .unwrap_err();
        assert!(matches!(&e, ProposalError::CommandFailed { stderr_tail, .. } if stderr_tail == "nope"), "{e:?}");
        assert!(!e.is_infra());
        assert!(e.to_string().contains("exited with status 1"), "{e}");
        pristine(dir);
    }

    #[tokio::test]
    async fn no_change_is_an_empty_diff() {
        let repo = repo();
        let dir = repo.path();
        // Touching the file without changing it, and building ignored output, is no change.
        let e = propose_command(
            "touch params.toml; mkdir -p build; echo x > build/y",
            dir,
            "g",
            "c",
            &Brief::default(),
            limits(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ProposalError::EmptyDiff { .. }), "{e:?}");
        assert!(e.to_string().contains("changed nothing"), "{e}");
        pristine(dir);
    }

    #[tokio::test]
    async fn a_timeout_is_an_infrastructure_failure() {
        let repo = repo();
        let dir = repo.path();
        let mut l = limits();
        l.timeout = Duration::from_secs(1);
        let e = propose_command("echo 1 > new.txt; sleep 30", dir, "g", "c", &Brief::default(), l).await.unwrap_err();
        assert!(matches!(e, ProposalError::CommandInfra { .. }) && e.is_infra(), "{e:?}");
        assert!(!dir.join("new.txt").exists());
        pristine(dir);
    }

    /// The program confined as in the swarm (both sandboxes): it commits in its checkout, keeps state
    /// in its home across runs, cannot touch the repository, and what it plants in its `.git` never
    /// runs outside the sandbox.
    #[tokio::test]
    async fn a_confined_program_commits_keeps_its_home_and_cannot_reach_the_repository() {
        for mode in [SandboxMode::Namespaces, SandboxMode::Bwrap] {
            let s = repo();
            let dir = s.path();
            let marker = s.tmp.path().join("fsmonitor-ran");
            let mut l = limits();
            (l.sandbox, l.allow_weak, l.allow_network) = (mode, false, false);
            l.repository = Some(s.repo.clone());
            l.home = Some(s.tmp.path().join("home"));
            let repo_head = sh(&s.repo, "git rev-parse HEAD");
            let script = format!(
                "n=$(cat \"$HOME/count\" 2>/dev/null || echo 0); echo $((n + 1)) > \"$HOME/count\"; \
                 echo \"cutoff = $((n + 40))\" > params.toml && git -c user.name=a -c user.email=a@b commit -qam tuned; \
                 echo x > {repo}/pwned; git -C {repo} update-ref refs/heads/main HEAD; \
                 printf '[core]\\n\\tfsmonitor = touch {marker}\\n' >> .git/config; echo tuned $n",
                repo = s.repo.display(),
                marker = marker.display(),
            );
            let p = propose_command(&script, dir, "g", "c", &Brief::default(), l.clone()).await.unwrap();
            assert_eq!(p.summary, "tuned 0", "{mode}");
            assert!(p.patch.unwrap().contains("+cutoff = 40"), "{mode}: the committed change is the proposal");
            let p = propose_command(&script, dir, "g", "c", &Brief::default(), l).await.unwrap();
            assert_eq!(p.summary, "tuned 1", "{mode}: the home directory keeps the program's state");
            assert!(!s.repo.join("pwned").exists(), "{mode}: the program wrote the repository");
            assert_eq!(sh(&s.repo, "git rev-parse HEAD"), repo_head, "{mode}: the program moved main");
            assert!(!marker.exists(), "{mode}: the configuration the program planted in .git ran outside the sandbox");
            pristine(dir);
        }
    }

    #[test]
    fn stdin_holds_goal_briefing_how_to_declare_and_context() {
        let brief = Brief { text: "# What was tried\n\n- cycle 1: \"x\"\n".into(), banned: vec![] };
        let text = stdin_text("be faster\n", "ctx", &brief);
        assert!(
            text.starts_with(
                "# Goal\n\nbe faster\n\n# What was tried\n\n- cycle 1: \"x\"\n\n# Declare your change\n\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("```\n\n# Context\n\nctx\n"), "{text}");
        assert!(text.contains("RATCHET_DECLARATION_FILE") && text.contains(protocol::rails::EXAMPLE_TOML), "{text}");
        // The example the program is shown is a valid declaration.
        let example = text.split("```toml\n").nth(1).and_then(|t| t.split("```").next()).unwrap();
        Declaration::from_toml("stdin", example).unwrap();
    }

    /// What a program writes at RATCHET_DECLARATION_FILE becomes the proposal's declaration; the
    /// file never reaches the diff, not even when the program commits it.
    #[tokio::test]
    async fn the_declaration_is_read_removed_and_never_in_the_diff() {
        let repo = repo();
        let dir = repo.path();
        let declare = "printf 'files = [\"params.toml\"]\\nrationale = \"a higher cutoff\"\\neffect = \"better\"\\n' > \"$RATCHET_DECLARATION_FILE\"";
        for commit in
            ["", " && git -c user.name=a -c user.email=a@b add -A && git -c user.name=a -c user.email=a@b commit -qm c"]
        {
            let script = format!("sed -i 's/16/32/' params.toml && {declare}{commit}");
            let p = propose_command(&script, dir, "g", "c", &Brief::default(), limits()).await.unwrap();
            let d = p.declaration.clone().expect("the declaration");
            assert_eq!(
                (d.files.as_slice(), d.rationale.as_str()),
                (&["params.toml".to_string()][..], "a higher cutoff")
            );
            assert_eq!(d.effect, Some(protocol::rails::Effect::Better));
            assert_eq!(p.files, ["params.toml"], "{commit}");
            let patch = p.patch.unwrap();
            assert!(!patch.contains(".ratchet") && !patch.contains("rationale"), "{commit}: {patch}");
            assert_eq!(p.summary, "a higher cutoff", "no output: the rationale is the summary");
            pristine(dir);
            assert!(!dir.join(DECLARATION_FILE).exists());
        }
        // No declaration: none is invented.
        let p =
            propose_command("sed -i 's/16/8/' params.toml", dir, "g", "c", &Brief::default(), limits()).await.unwrap();
        assert_eq!(p.declaration, None);
    }

    #[tokio::test]
    async fn a_bad_declaration_is_a_proposal_failure_naming_the_field() {
        let repo = repo();
        let dir = repo.path();
        let cases = [
            (
                "printf 'files = []\\nrationale = \"r\"\\n' > \"$RATCHET_DECLARATION_FILE\"",
                "files: no file is declared",
            ),
            ("printf 'files = [\"a\"]\\n' > \"$RATCHET_DECLARATION_FILE\"", "rationale"),
            ("ln -s /etc/passwd \"$RATCHET_DECLARATION_FILE\"", "it is a symlink"),
        ];
        for (declare, want) in cases {
            let script = format!("sed -i 's/16/32/' params.toml && {declare}");
            let e = propose_command(&script, dir, "g", "c", &Brief::default(), limits()).await.unwrap_err();
            assert!(matches!(e, ProposalError::Declaration(_)) && !e.is_infra(), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains(".ratchet/proposal.toml") && msg.contains(want) && msg.contains("fix:"), "{msg}");
            pristine(dir);
        }
    }
}
